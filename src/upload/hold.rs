//! Back-pressure as a delivery sees it: a destination-wide error holds the destination's
//! files back (see [`crate::pressure`]), and the first success opens it again. Both are
//! recorded in the queue for `status` and said in the log.

use super::Uploader;
use crate::clock::now_ms;
use crate::pressure::{Cause, Verdict};
use crate::queue::{Ended, Failure, FileRow, Held};
use crate::s3::ErrorClass;

impl Uploader {
    /// A destination-wide error: block the destination (its files wait in the queue) and
    /// put this file back untouched; or, if the destination works for other files, retry
    /// this one like a transient error.
    pub(super) async fn hold_back(&self, row: &FileRow, ended: Ended, error: String, cause: Cause) {
        let now = tokio::time::Instant::now();
        match self.pressure.failed(&row.destination, &error, cause, now) {
            // A blip (one connection lost, others getting through): retried after the
            // usual backoff. It uses attempts, but never the last one: a lost connection
            // says nothing about the file. Should it be an outage, the next failure holds
            // the files back.
            Verdict::FileOnly if cause == Cause::NoAnswer => self.blip(row, ended, error).await,
            // Bounded by max_attempts: a key the policy really denies fails in the end,
            // with the reason; a destination that just lost access holds files back on the
            // next failure.
            Verdict::FileOnly => {
                self.after_error(row, ended, error, ErrorClass::Transient, Failure::Refused)
                    .await
            }
            Verdict::Blocked { wait, newly, probe } => {
                let class = match cause {
                    Cause::NoAnswer | Cause::TimedOut => ErrorClass::Transient,
                    Cause::Destination | Cause::MaybeKey => ErrorClass::Permanent,
                };
                self.metrics.attempt_failed(&row.destination, class);
                if newly {
                    tracing::error!(destination = %row.destination, error = %error,
                        "destination failing for every file: holding its files back (they wait in the queue and are retried by themselves); fix the cause");
                    let (name, reason) =
                        (Held::Destination(row.destination.clone()), error.clone());
                    let recorded = self
                        .queue
                        .call(move |q| q.set_condition(&name, &reason, now_ms()))
                        .await;
                    if let Err(e) = recorded {
                        tracing::warn!(error = %e, "cannot record the destination condition for status");
                    }
                } else if probe {
                    tracing::warn!(destination = %row.destination, retry_in_s = wait.as_secs(), error = %error,
                        "probe failed: destination still failing");
                } else {
                    tracing::warn!(destination = %row.destination, retry_in_s = wait.as_secs(), error = %error,
                        "destination still failing");
                }
                let next = wait.as_millis() as i64;
                self.record(ended.id, move |q, now| {
                    q.release(ended, &error, now + next, now)
                })
                .await;
            }
        }
    }

    /// Requeues a file whose request got no answer, after a backoff; its last attempt is
    /// not used up by it.
    async fn blip(&self, row: &FileRow, ended: Ended, error: String) {
        let Some(target) = self
            .targets
            .get(&row.destination)
            .filter(|t| row.attempts >= t.settings.max_attempts)
        else {
            return self
                .after_error(row, ended, error, ErrorClass::Transient, Failure::Refused)
                .await;
        };
        self.metrics
            .attempt_failed(&row.destination, ErrorClass::Transient);
        let s = &target.settings;
        let wait = crate::backoff::delay(
            row.attempts,
            s.backoff_initial,
            s.backoff_max,
            &mut rand::thread_rng(),
        );
        tracing::warn!(spool = %row.spool, id = row.id, path = %row.rel_path,
            retry_in_ms = wait.as_millis() as u64, error = %error, "no answer from the destination; will retry");
        let delay = wait.as_millis() as i64;
        self.record(ended.id, move |q, now| {
            q.release(ended, &error, now + delay, now)
        })
        .await;
    }

    /// A file reached `destination`: if it was held back, it is open again.
    pub(super) async fn reopened(&self, destination: &str) {
        let Some(reason) = self
            .pressure
            .succeeded(destination, tokio::time::Instant::now())
        else {
            return;
        };
        tracing::info!(destination, was = %reason, "destination works again: its files go on");
        let name = Held::Destination(destination.to_string());
        if let Err(e) = self.queue.call(move |q| q.clear_condition(&name)).await {
            tracing::warn!(error = %e, "cannot clear the destination condition");
        }
    }
}
