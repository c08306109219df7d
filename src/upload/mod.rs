//! The uploader: claims due rows from the queue and delivers each file — upload, verify,
//! mark done, then delete/archive/keep the source.
//!
//! One dispatcher loop claims work while file slots are free and spawns a task per file;
//! requests per destination are bounded separately (see [`transfer`]). On shutdown the
//! dispatcher stops claiming, and in-flight files get `drain_timeout` to finish; a file cut
//! off then stays `active` and returns to `pending` at the next start.

pub mod backoff;
mod deliver;
pub mod limit;
mod multipart;
mod sweep;
pub mod transfer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::finish::Finishing;
use crate::queue::{Eligible, SharedQueue};
use crate::service::Heartbeat;
pub use sweep::{sweep_orphan_uploads, sweep_periodically};
pub use transfer::Target;

/// How long a claim lasts unless renewed; a worker renews it every quarter of that.
const LEASE: Duration = Duration::from_secs(120);
/// How often the dispatcher returns rows with expired leases to `pending`.
const REAP_EVERY: Duration = Duration::from_secs(30);
/// How often an idle dispatcher looks for rows made due by the CLI (`s3spool retry`), and
/// the longest it goes without a turn of its loop.
pub const IDLE_POLL: Duration = Duration::from_secs(2);

/// Everything a file delivery needs, shared by all tasks.
pub struct Uploader {
    pub config: Arc<Config>,
    pub queue: SharedQueue,
    pub targets: HashMap<String, Arc<Target>>,
    pub wake: Arc<Notify>,
    pub finishing: Finishing,
    /// This machine's name, recorded in manifest batches.
    pub host: Arc<str>,
    /// Conversions running at once (see [`Uploader::conversion_slots`]).
    pub converting: Arc<Semaphore>,
    /// The dispatcher's sign of life, for systemd's watchdog.
    pub heartbeat: Heartbeat,
    /// The rows this config may claim: its spools' and destinations'.
    pub eligible: Eligible,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Uploader {
    /// Conversions that may run at once: one per core, since each is CPU work holding up
    /// to a row group.
    pub fn conversion_slots() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }

    /// Files in flight at once: enough to keep every destination's requests busy.
    fn file_slots(&self) -> usize {
        self.targets
            .values()
            .map(|t| t.settings.concurrency)
            .sum::<usize>()
            .max(1)
            * 2
    }

    /// Runs until `shutdown`, then drains.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.file_slots()));
        let mut tasks = JoinSet::new();
        let mut last_reap = std::time::Instant::now();
        loop {
            if last_reap.elapsed() >= REAP_EVERY {
                last_reap = std::time::Instant::now();
                match self.queue.call(|q| q.reap_expired(now_ms())).await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(
                        files = n,
                        "leases ran out (a worker stopped); the files are queued again"
                    ),
                    Err(e) => tracing::warn!(error = %e, "cannot check leases"),
                }
            }
            while let Some(done) = tasks.try_join_next() {
                if let Err(e) = done {
                    tracing::error!(error = %e, "a delivery task panicked; its file returns to pending at restart");
                }
            }
            let first = tokio::select! {
                permit = Arc::clone(&slots).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                // Every slot busy: turn anyway now and then, to show the loop is alive.
                _ = tokio::time::sleep(IDLE_POLL) => {
                    self.heartbeat.beat();
                    continue;
                }
                _ = shutdown.cancelled() => break,
            };
            let want = 1 + slots.available_permits();
            let now = now_ms();
            let eligible = self.eligible.clone();
            let claimed = self
                .queue
                .call(move |q| q.claim_for(want, now, LEASE, &eligible))
                .await;
            let rows = match claimed {
                // A turn counts as healthy once the queue answered.
                Ok(rows) => {
                    self.heartbeat.beat();
                    rows
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim work from the queue; retrying in 1s");
                    drop(first);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            };
            if rows.is_empty() {
                drop(first);
                let eligible = self.eligible.clone();
                let wait = match self.queue.call(move |q| q.next_due_for(&eligible)).await {
                    Ok(Some(due)) => {
                        Duration::from_millis((due - now_ms()).max(0) as u64).min(IDLE_POLL)
                    }
                    _ => IDLE_POLL,
                };
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            let mut permits = vec![first];
            for _ in 1..rows.len() {
                match Arc::clone(&slots).try_acquire_owned() {
                    Ok(permit) => permits.push(permit),
                    // Only this loop takes slots, so the ones counted above are still free.
                    Err(_) => unreachable!("file slots counted before claiming"),
                }
            }
            for (row, permit) in rows.into_iter().zip(permits) {
                let me = Arc::clone(&self);
                tasks.spawn(async move {
                    me.deliver(row).await;
                    drop(permit);
                });
            }
        }
        self.drain(tasks).await;
    }

    async fn drain(&self, mut tasks: JoinSet<()>) {
        // Finished tasks stay in the set until joined: count only those still running.
        while tasks.try_join_next().is_some() {}
        if tasks.is_empty() {
            return;
        }
        tracing::info!(
            files = tasks.len(),
            timeout_s = self.config.drain_timeout.as_secs(),
            "stopping: letting uploads in flight finish"
        );
        let all = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(self.config.drain_timeout, all)
            .await
            .is_err()
        {
            tracing::warn!(
                files = tasks.len(),
                "drain timeout: stopping uploads still in flight; they resume at the next start"
            );
            tasks.shutdown().await;
        }
    }
}

/// Wall-clock now in unix milliseconds, the queue's time unit.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
