//! A request timeout that counts silence, not time: under a bandwidth limit a request body
//! may take far longer than `request_timeout` to send, and waiting for the limit is not
//! the server's silence. A stalled connection is still caught, `request_timeout` after
//! the last byte moved.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
// tokio's clock: the tests run on a paused clock.
use tokio::time::Instant;

/// When a request body last moved: a piece handed to the connection, or a wait for the
/// bandwidth limit begun or ended.
#[derive(Debug, Clone)]
pub struct Progress(Arc<Mutex<Moved>>);

#[derive(Debug)]
struct Moved {
    at: Instant,
    /// Waiting for the limit: the time is the limit's, not the server's.
    waiting: bool,
}

impl Default for Progress {
    fn default() -> Self {
        Progress(Arc::new(Mutex::new(Moved {
            at: Instant::now(),
            waiting: false,
        })))
    }
}

impl Progress {
    /// A wait for the limit begins (`true`) or ends (`false`); either is a sign of life.
    pub fn waiting(&self, waiting: bool) {
        let mut moved = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *moved = Moved {
            at: Instant::now(),
            waiting,
        };
    }

    /// When the silence that counts began: `None` while waiting for the limit.
    fn silent_since(&self) -> Option<Instant> {
        let moved = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (!moved.waiting).then_some(moved.at)
    }
}

/// Runs `request` until it ends, or until `timeout` passed with no sign of life from
/// `progress` (then `None`).
pub async fn within_progress<F: Future>(
    timeout: Duration,
    progress: &Progress,
    request: F,
) -> Option<F::Output> {
    tokio::pin!(request);
    let mut deadline = Instant::now() + timeout;
    loop {
        tokio::select! {
            out = &mut request => return Some(out),
            () = tokio::time::sleep_until(deadline) => {
                deadline = match progress.silent_since() {
                    None => Instant::now() + timeout,
                    Some(since) if since + timeout > Instant::now() => since + timeout,
                    Some(_) => return None,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_moving_is_never_timed_out() {
        let progress = Progress::default();
        let body = {
            let progress = progress.clone();
            async move {
                // A minute of pieces every 5s, some after long waits for the limit.
                for n in 0..12 {
                    if n % 4 == 0 {
                        progress.waiting(true);
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        progress.waiting(false);
                    }
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    progress.waiting(false);
                }
                "answered"
            }
        };
        assert_eq!(
            within_progress(TIMEOUT, &progress, body).await,
            Some("answered")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn silence_is_timed_out_after_the_last_sign_of_life() {
        let progress = Progress::default();
        let start = Instant::now();
        let body = {
            let progress = progress.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(25)).await;
                progress.waiting(false);
                // Stalled: the connection takes no more bytes, the server says nothing.
                std::future::pending::<()>().await;
            }
        };
        assert_eq!(within_progress(TIMEOUT, &progress, body).await, None);
        // Nothing moved in the first 10 s: cut then, before the late piece.
        assert_eq!(start.elapsed(), TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_after_some_progress_is_cut_timeout_after_it() {
        let progress = Progress::default();
        let start = Instant::now();
        let body = {
            let progress = progress.clone();
            async move {
                for _ in 0..3 {
                    tokio::time::sleep(Duration::from_secs(6)).await;
                    progress.waiting(false);
                }
                std::future::pending::<()>().await;
            }
        };
        assert_eq!(within_progress(TIMEOUT, &progress, body).await, None);
        assert_eq!(start.elapsed(), Duration::from_secs(18) + TIMEOUT);
    }
}
