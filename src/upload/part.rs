//! One part of a multipart upload: sending its bytes (retried on their own, with the same
//! bytes) and recording it in the queue before anything relies on it. Shared by the
//! uploads that read a file twice ([`multipart`](super::multipart)) and once
//! ([`one_pass`](super::one_pass)).

use std::time::Duration;

use super::error::TransferError;
use super::job::{check_etag, Job};
use crate::backoff;
use crate::outbound::limit::RequestPermit;
use crate::queue::StoredPart;
use crate::s3::{ErrorClass, Md5};

/// Tries per part before the whole file attempt fails.
const PART_TRIES: u32 = 3;

/// An upload to continue: its id, part size, the source's SHA-256 (none while the file
/// is hashed as it is sent) and the parts done.
pub(super) struct Open {
    pub upload_id: String,
    pub part_size: u64,
    pub sha256: Option<String>,
    pub done: Vec<StoredPart>,
}

/// Uploads one part's bytes, read already and held under the caller's `permit`
/// (retrying it on its own with the same bytes), and records it in the queue. While it
/// waits to retry, the permit's request slot is given back; its memory is kept.
pub(super) async fn send_part(
    job: &Job<'_>,
    upload_id: &str,
    number: u32,
    (bytes, md5): (bytes::Bytes, Md5),
    permit: &mut RequestPermit,
) -> Result<StoredPart, TransferError> {
    let len = bytes.len() as u64;
    let mut tries = 0;
    let etag = loop {
        tries += 1;
        let result = job
            .store
            .upload_part(job.key, upload_id, number, bytes.clone(), md5)
            .await;
        job.observe(&result);
        match result {
            Ok(written) => break check_etag("UploadPart", &written, &hex::encode(md5))?,
            Err(e) if e.class == ErrorClass::Transient && tries < PART_TRIES => {
                let s = &job.target.settings;
                let wait = backoff::delay(
                    tries,
                    s.backoff_initial,
                    s.backoff_max,
                    &mut rand::thread_rng(),
                );
                tracing::debug!(part = number, error = %e, wait_ms = wait.as_millis() as u64, "part failed; retrying it");
                permit.release_slot();
                tokio::time::sleep(wait.min(Duration::from_secs(30))).await;
                permit.take_slot().await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let part = StoredPart {
        number,
        size: len,
        etag,
        md5: hex::encode(md5),
    };
    let stored = part.clone();
    record(job, move |q, id, claim| q.record_part(id, claim, &stored)).await?;
    Ok(part)
}

/// Writes multipart progress for the job's row; a row no longer held by this claim stops
/// the upload.
pub(super) async fn record<F>(job: &Job<'_>, write: F) -> Result<(), TransferError>
where
    F: FnOnce(&mut crate::queue::Queue, i64, i64) -> crate::queue::Result<bool> + Send + 'static,
{
    let (id, claim) = (job.row.id, job.row.claim);
    match job.queue.call(move |q| write(q, id, claim)).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(TransferError::ClaimLost),
        Err(e) => Err(e.into()),
    }
}
