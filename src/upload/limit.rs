//! Adaptive request concurrency per destination, like AWS's adaptive retry mode: a
//! SlowDown or 503 halves the number of requests in flight; each run of successes as long
//! as the current limit raises it by one again, up to the configured `concurrency`.

use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::s3::StoreError;

#[derive(Debug)]
struct State {
    limit: usize,
    /// Permits to retire as they come back, after the limit was lowered.
    debt: usize,
    /// Successes since the limit last changed.
    streak: usize,
}

/// The request limit of one destination.
#[derive(Debug)]
pub struct AdaptiveLimit {
    permits: Arc<Semaphore>,
    max: usize,
    state: Mutex<State>,
}

/// Held while a request is in flight.
pub struct RequestPermit {
    permit: Option<OwnedSemaphorePermit>,
    limit: Arc<AdaptiveLimit>,
}

impl AdaptiveLimit {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(AdaptiveLimit {
            permits: Arc::new(Semaphore::new(max)),
            max,
            state: Mutex::new(State {
                limit: max,
                debt: 0,
                streak: 0,
            }),
        })
    }

    pub async fn acquire(self: &Arc<Self>) -> RequestPermit {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the request semaphore is never closed"));
        RequestPermit {
            permit: Some(permit),
            limit: Arc::clone(self),
        }
    }

    #[cfg(test)]
    /// The number of requests allowed in flight now.
    pub fn current(&self) -> usize {
        self.lock().limit
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Feeds a request's outcome to the limit; returns the new limit if it changed.
    pub fn observe<T>(&self, result: &Result<T, StoreError>) -> Option<usize> {
        match result {
            Err(e) if e.is_throttled() => self.throttled(),
            Ok(_) => self.succeeded(),
            Err(_) => None,
        }
    }

    fn throttled(&self) -> Option<usize> {
        let mut s = self.lock();
        s.streak = 0;
        let lowered = (s.limit / 2).max(1);
        if lowered == s.limit {
            return None;
        }
        s.debt += s.limit - lowered;
        s.limit = lowered;
        let retired = self.permits.forget_permits(s.debt);
        s.debt -= retired;
        Some(lowered)
    }

    fn succeeded(&self) -> Option<usize> {
        let mut s = self.lock();
        s.streak += 1;
        if s.streak < s.limit || s.limit >= self.max {
            return None;
        }
        s.streak = 0;
        s.limit += 1;
        if s.debt > 0 {
            s.debt -= 1;
        } else {
            self.permits.add_permits(1);
        }
        Some(s.limit)
    }
}

impl Drop for RequestPermit {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let mut s = self.limit.lock();
        if s.debt > 0 {
            s.debt -= 1;
            permit.forget();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slow_down() -> Result<(), StoreError> {
        Err(StoreError::from_response(
            "UploadPart",
            503,
            Some("SlowDown".into()),
            String::new(),
        ))
    }

    #[tokio::test]
    async fn slow_down_halves_and_successes_restore() {
        let limit = AdaptiveLimit::new(8);
        let held: Vec<_> = futures::future::join_all((0..8).map(|_| limit.acquire())).await;
        assert_eq!(limit.observe(&slow_down()), Some(4));
        assert_eq!(limit.observe(&slow_down()), Some(2));
        drop(held);
        // Only two requests may now be in flight.
        let a = limit.acquire().await;
        let b = limit.acquire().await;
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), limit.acquire())
                .await
                .is_err()
        );
        drop((a, b));
        // Two successes at limit 2 raise it to 3, three more to 4, and so on up to 8.
        let ok: Result<(), StoreError> = Ok(());
        let mut seen = Vec::new();
        for _ in 0..40 {
            if let Some(n) = limit.observe(&ok) {
                seen.push(n);
            }
        }
        assert_eq!(seen, vec![3, 4, 5, 6, 7, 8]);
        let all: Vec<_> = futures::future::join_all((0..8).map(|_| limit.acquire())).await;
        assert_eq!(all.len(), 8);
        assert_eq!(limit.observe(&slow_down()), Some(4));
        assert_eq!(
            limit.observe(&Err::<(), _>(StoreError::transport(
                "PutObject",
                "Timeout",
                String::new()
            ))),
            None
        );
    }
}
