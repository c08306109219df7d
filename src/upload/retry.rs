//! What becomes of a file whose attempt failed: tried again after a backoff while its
//! attempts last and the error may pass, else failed with the reason and why
//! ([`Failure`]), its multipart upload aborted. (A failure that is the destination's, not
//! the file's, holds the destination back instead: see `hold.rs`.)

use super::Uploader;
use crate::backoff;
use crate::queue::{Ended, Failure, FileRow, State};
use crate::s3::ErrorClass;

impl Uploader {
    /// Decides, and records, what follows a failed attempt at `row`: a retry at its
    /// backoff, or `failed` (a permanent error says `failure`; attempts used up say
    /// [`Failure::GaveUp`]).
    pub(super) async fn after_error(
        &self,
        row: &FileRow,
        ended: Ended,
        error: String,
        class: ErrorClass,
        failure: Failure,
    ) {
        let id = ended.id;
        self.metrics.attempt_failed(&row.destination, class);
        let target = self.targets.get(&row.destination);
        let max_attempts = target.map_or(1, |t| t.settings.max_attempts);
        match target {
            Some(t) if class == ErrorClass::Transient && row.attempts < max_attempts => {
                let s = &t.settings;
                let wait = backoff::delay(
                    row.attempts,
                    s.backoff_initial,
                    s.backoff_max,
                    &mut rand::thread_rng(),
                );
                tracing::warn!(spool = %row.spool, id, path = %row.rel_path, attempt = row.attempts,
                    retry_in_ms = wait.as_millis() as u64, error = %error, "upload failed; will retry");
                let delay = wait.as_millis() as i64;
                self.record(id, move |q, now| {
                    q.retry_later(ended, &error, now + delay, now)
                })
                .await;
            }
            _ => {
                let (reason, failure) = if class == ErrorClass::Permanent {
                    (error, failure)
                } else {
                    let reason = format!("{error} (gave up after {} attempts)", row.attempts);
                    (reason, Failure::GaveUp)
                };
                // The upload is no longer needed: it must not keep costing storage.
                self.abort_recorded_upload(row).await;
                tracing::error!(spool = %row.spool, id, path = %row.rel_path, error = %reason,
                    "file failed; fix the cause, then `s3spool retry {id}`");
                self.record(id, move |q, now| {
                    q.mark_failed(ended, &reason, failure, now)
                })
                .await;
            }
        }
    }

    /// Aborts the multipart upload recorded for the row, if any (reading the queue, since
    /// this attempt may have started one).
    pub(super) async fn abort_recorded_upload(&self, row: &FileRow) {
        let id = row.id;
        let Ok(Some(current)) = self.queue.call(move |q| q.get(id)).await else {
            return;
        };
        // Only an upload of the row as this worker holds it.
        if current.state != State::Active || current.claim != row.claim {
            return;
        }
        let (Some(upload_id), Some(key), Some(target)) = (
            current.upload_id,
            current.key,
            self.targets.get(&row.destination),
        ) else {
            return;
        };
        let store = target.store_for(&current.bucket);
        match store.abort_multipart(&key, &upload_id).await {
            Ok(()) => tracing::info!(id, key, "aborted the multipart upload of a failed file"),
            Err(e) if e.is_no_such_upload() => {}
            Err(e) => tracing::warn!(id, key, error = %e, "cannot abort a multipart upload"),
        }
    }
}
