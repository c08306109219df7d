//! systemd integration: `READY=1` once the daemon works, `STATUS=` kept current,
//! `WATCHDOG=1` only while the main loop is healthy, `RELOADING=1` and `STOPPING=1`.
//!
//! Everything here is a no-op unless systemd set `NOTIFY_SOCKET` (a `Type=notify` unit),
//! so the daemon behaves the same in a terminal.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::queue::SharedQueue;

/// How often STATUS is refreshed when systemd asks for no watchdog.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Talks to systemd's notification socket, if there is one.
#[derive(Clone, Debug)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// Asks systemd for more time to start (the start-up sweep may wait on slow servers).
    pub fn extend_start(&self, by: Duration) {
        let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
        self.send(&[
            NotifyState::ExtendTimeoutUsec(usec),
            NotifyState::Status("starting: sweeping unfinished uploads"),
        ]);
    }

    pub fn stopping(&self) {
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: draining uploads"),
        ]);
    }

    fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
}

/// The main loop's sign of life (unix milliseconds of its last turn) and the time of the
/// last delivery, for the watchdog and STATUS.
#[derive(Clone, Debug, Default)]
pub struct Heartbeat {
    beat: Arc<AtomicI64>,
    delivered: Arc<AtomicI64>,
    /// A reload is draining and restarting the tasks: progress, though the main loop
    /// does not turn.
    reloading: Arc<std::sync::atomic::AtomicBool>,
}

impl Heartbeat {
    pub fn set_reloading(&self, reloading: bool) {
        self.reloading.store(reloading, Ordering::Relaxed);
        self.beat();
    }

    pub fn beat(&self) {
        self.beat.store(now_ms(), Ordering::Relaxed);
    }

    pub fn delivered(&self) {
        self.delivered.store(now_ms(), Ordering::Relaxed);
    }

    fn age(&self, now: i64) -> Duration {
        Duration::from_millis((now - self.beat.load(Ordering::Relaxed)).max(0) as u64)
    }
}

/// "42 pending, 3 uploading, 1 failed, last upload 2s ago".
fn status_line(pending: u64, active: u64, failed: u64, last_delivery_ms: i64, now: i64) -> String {
    let mut line = format!("{pending} pending, {active} uploading");
    if failed > 0 {
        line.push_str(&format!(", {failed} failed"));
    }
    if last_delivery_ms > 0 {
        let ago = (now - last_delivery_ms).max(0) / 1000;
        line.push_str(&format!(", last upload {ago}s ago"));
    } else {
        line.push_str(", nothing uploaded yet");
    }
    line
}

/// The current status, read from the queue (an indexed count, cheap on a large queue).
pub async fn current_status(queue: &SharedQueue, heartbeat: &Heartbeat) -> Option<String> {
    let counts = queue.call(|q| q.waiting_counts()).await.ok()?;
    Some(status_of(counts, heartbeat))
}

/// [`current_status`], read in a write transaction: `None` unless the daemon could write
/// to the queue now. An idle daemon writes nothing for long stretches, so the watchdog's
/// check proves the queue writable itself (a stuck writer elsewhere holding its lock
/// stops the feeding, as it would stop every claim and registration).
async fn status_if_writable(queue: &SharedQueue, heartbeat: &Heartbeat) -> Option<String> {
    let counts = queue.grouped(|q| q.waiting_counts()).await.ok()?;
    Some(status_of(counts, heartbeat))
}

fn status_of(counts: crate::queue::Counts, heartbeat: &Heartbeat) -> String {
    status_line(
        counts.pending,
        counts.active,
        counts.failed,
        heartbeat.delivered.load(Ordering::Relaxed),
        now_ms(),
    )
}

/// Keeps STATUS current and, when systemd asked for one, feeds the watchdog at half its
/// interval, but only while the main loop turns and the queue answers. A daemon that hangs
/// is then restarted by systemd instead of sitting on a full spool.
pub async fn report(
    notifier: Notifier,
    queue: SharedQueue,
    heartbeat: Heartbeat,
    loop_period: Duration,
    shutdown: CancellationToken,
) {
    if !notifier.enabled {
        return;
    }
    let watchdog = sd_notify::watchdog_enabled();
    let every = watchdog.map_or(STATUS_EVERY, |w| (w / 2).max(Duration::from_millis(100)));
    // A main loop that has not turned for this long is stuck.
    let stuck_after = (loop_period * 3).max(every);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let status = status_if_writable(&queue, &heartbeat).await;
        if shutdown.is_cancelled() {
            return;
        }
        let looping =
            heartbeat.age(now_ms()) < stuck_after || heartbeat.reloading.load(Ordering::Relaxed);
        match (&status, looping) {
            (Some(status), true) => {
                notifier.status(status);
                if watchdog.is_some() {
                    notifier.watchdog();
                }
            }
            (None, _) => tracing::warn!("the queue does not answer; the watchdog is not fed"),
            (_, false) => tracing::warn!(
                stuck_s = heartbeat.age(now_ms()).as_secs(),
                "the main loop is stuck; the watchdog is not fed"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reads_like_a_sentence() {
        assert_eq!(
            status_line(42, 3, 0, 10_000, 12_500),
            "42 pending, 3 uploading, last upload 2s ago"
        );
        assert_eq!(
            status_line(0, 0, 1, 0, 5),
            "0 pending, 0 uploading, 1 failed, nothing uploaded yet"
        );
    }
}
