//! What a destination may have in flight: requests, and the file data they hold.
//!
//! Requests are adaptive, like AWS's adaptive retry mode: a SlowDown or 503 halves the
//! number in flight; each run of successes as long as the current limit raises it by one
//! again, up to the configured `concurrency`. Memory is a budget of bytes (`memory`) that
//! each request takes as much of as its body holds: many small files can be in flight at
//! once, while big parts are bounded by the budget, not by the request count.

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

/// The request limit and memory budget of one destination.
#[derive(Debug)]
pub struct AdaptiveLimit {
    permits: Arc<Semaphore>,
    max: usize,
    /// The memory budget, in KiB (a permit per KiB: one acquisition takes at most u32).
    memory: Arc<Semaphore>,
    memory_kib: u32,
    state: Mutex<State>,
}

/// Held while a request is in flight (and its body in memory).
pub struct RequestPermit {
    permit: Option<OwnedSemaphorePermit>,
    _memory: OwnedSemaphorePermit,
    limit: Arc<AdaptiveLimit>,
}

impl AdaptiveLimit {
    /// At most `max` requests in flight, holding at most `memory` bytes of file data.
    pub fn new(max: usize, memory: u64) -> Arc<Self> {
        let memory_kib = u32::try_from(memory.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        Arc::new(AdaptiveLimit {
            permits: Arc::new(Semaphore::new(max)),
            max,
            memory: Arc::new(Semaphore::new(memory_kib as usize)),
            memory_kib,
            state: Mutex::new(State {
                limit: max,
                debt: 0,
                streak: 0,
            }),
        })
    }

    /// Waits for room for one request whose body holds `bytes` of file data (0 for a
    /// request without a body). The memory comes first: a request waiting for it holds no
    /// request slot that small files could use meanwhile. A body larger than the whole
    /// budget takes all of it.
    pub async fn acquire(self: &Arc<Self>, bytes: u64) -> RequestPermit {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(self.memory_kib);
        let memory = Arc::clone(&self.memory)
            .acquire_many_owned(kib)
            .await
            .unwrap_or_else(|_| unreachable!("the memory semaphore is never closed"));
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the request semaphore is never closed"));
        RequestPermit {
            permit: Some(permit),
            _memory: memory,
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

impl RequestPermit {
    /// Gives the request slot back while the body waits for a retry (a backoff), keeping
    /// its memory: the bytes are still held, the request is not in flight.
    pub fn release_slot(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.limit.give_back(permit);
        }
    }

    /// Takes a request slot again after [`RequestPermit::release_slot`].
    pub async fn take_slot(&mut self) {
        if self.permit.is_none() {
            let permit = Arc::clone(&self.limit.permits)
                .acquire_owned()
                .await
                .unwrap_or_else(|_| unreachable!("the request semaphore is never closed"));
            self.permit = Some(permit);
        }
    }
}

impl AdaptiveLimit {
    /// A slot given back: kept out of use while the limit is lowered (its debt).
    fn give_back(&self, permit: OwnedSemaphorePermit) {
        let mut s = self.lock();
        if s.debt > 0 {
            s.debt -= 1;
            permit.forget();
        }
    }
}

impl Drop for RequestPermit {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.limit.give_back(permit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_waiting_to_retry_gives_its_slot_back_and_keeps_its_memory() {
        use std::time::Duration;
        let limit = AdaptiveLimit::new(1, 4096);
        let mut part = limit.acquire(4096).await;
        part.release_slot();
        // A request without a body gets the slot; one with a body waits for the memory.
        let head = tokio::time::timeout(Duration::from_secs(1), limit.acquire(0))
            .await
            .expect("the slot is free");
        let body = tokio::time::timeout(Duration::from_millis(100), limit.acquire(1024)).await;
        assert!(body.is_err(), "the memory is still held");
        // The retry waits for the slot, then goes.
        let retry = tokio::time::timeout(Duration::from_millis(100), part.take_slot()).await;
        assert!(retry.is_err(), "the slot is taken");
        drop(head);
        tokio::time::timeout(Duration::from_secs(1), part.take_slot())
            .await
            .expect("the slot came back");
    }

    fn slow_down() -> Result<(), StoreError> {
        Err(StoreError::from_response(
            "UploadPart",
            503,
            Some("SlowDown".into()),
            String::new(),
        ))
    }

    #[tokio::test]
    async fn memory_bounds_big_bodies_and_not_small_ones() {
        let mib = 1 << 20;
        let limit = AdaptiveLimit::new(64, 32 * mib);
        // Two 16 MiB parts fill the budget: a third waits, small bodies do not.
        let a = limit.acquire(16 * mib).await;
        let b = limit.acquire(16 * mib).await;
        let wait = std::time::Duration::from_millis(50);
        assert!(tokio::time::timeout(wait, limit.acquire(16 * mib))
            .await
            .is_err());
        assert!(tokio::time::timeout(wait, limit.acquire(0)).await.is_ok());
        drop(a);
        let c = tokio::time::timeout(wait, limit.acquire(16 * mib)).await;
        assert!(c.is_ok(), "room again once a part is sent");
        drop((b, c));
        // Many small bodies at once, up to the request limit.
        let small: Vec<_> = futures::future::join_all((0..64).map(|_| limit.acquire(4096))).await;
        assert_eq!(small.len(), 64);
        assert!(tokio::time::timeout(wait, limit.acquire(4096))
            .await
            .is_err());
        drop(small);
        // A body over the whole budget takes all of it rather than waiting forever.
        assert!(tokio::time::timeout(wait, limit.acquire(64 * mib))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn slow_down_halves_and_successes_restore() {
        let limit = AdaptiveLimit::new(8, 1 << 30);
        let held: Vec<_> = futures::future::join_all((0..8).map(|_| limit.acquire(0))).await;
        assert_eq!(limit.observe(&slow_down()), Some(4));
        assert_eq!(limit.observe(&slow_down()), Some(2));
        drop(held);
        // Only two requests may now be in flight.
        let a = limit.acquire(0).await;
        let b = limit.acquire(0).await;
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), limit.acquire(0))
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
        let all: Vec<_> = futures::future::join_all((0..8).map(|_| limit.acquire(0))).await;
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
