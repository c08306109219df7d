//! Resumable multipart uploads. The upload id and every confirmed part (number, size,
//! ETag, MD5) are committed to the queue before the next step relies on them. A later
//! attempt — after a transient error, a restart, a `SIGKILL` or a power loss — asks S3
//! which parts it holds (ListParts), keeps those it and the queue agree on, uploads the
//! rest and completes. If S3 no longer knows the upload, the object may already be
//! complete (HEAD decides, by the SHA-256 metadata or the parts' ETag); otherwise the file
//! starts over.
//!
//! With `large_file_sha256 = "metadata"` the file is hashed before the upload begins (S3
//! takes metadata then) and read again to be sent; with `"manifest"` it is read once,
//! hashed while sent ([`one_pass`](super::one_pass)), and its SHA-256 recorded in the
//! queue before the upload is completed.

use futures::{StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::sync::Arc;

use super::error::TransferError;
use super::job::{check_etag, hash_file, read_range, Job, Uploaded};
use super::one_pass;
use super::part::{record, send_part, Open};
use crate::config::LargeFileSha256;
use crate::queue::{FileStamp, StoredPart};
use crate::s3::{bare_etag, multipart_etag, CompletedPart, ErrorClass, Md5};

/// S3 allows at most this many parts.
const MAX_PARTS: u64 = 10_000;

/// Part size for a file: the configured one, raised if the file would need too many parts.
pub fn part_size_for(size: u64, configured: u64) -> u64 {
    configured.max(size.div_ceil(MAX_PARTS))
}

pub async fn upload(job: &Job<'_>) -> Result<Uploaded, TransferError> {
    let open = match resume(job).await? {
        Resumed::Complete(uploaded) => return Ok(uploaded),
        Resumed::Open(open) => open,
        Resumed::Fresh => match start(job).await? {
            Resumed::Complete(uploaded) => return Ok(uploaded),
            Resumed::Open(open) => open,
            Resumed::Fresh => unreachable!("start always opens or finds the object"),
        },
    };
    let result = finish(job, &open).await;
    if let Err(e) = &result {
        // A transient failure keeps the upload for the next attempt; anything else means
        // it is no longer needed.
        // A worker that lost its claim touches nothing: the row and the upload are
        // another worker's now.
        if e.class() == ErrorClass::Permanent && !matches!(e, TransferError::ClaimLost) {
            abort(job, &open.upload_id).await;
        }
    }
    result
}

enum Resumed {
    /// The object is already complete.
    Complete(Uploaded),
    /// An upload to continue.
    Open(Open),
    /// Nothing to continue.
    Fresh,
}

/// Picks up the upload recorded for the row, if there is one S3 still knows.
async fn resume(job: &Job<'_>) -> Result<Resumed, TransferError> {
    let row = job.row;
    let (Some(upload_id), Some(part_size)) = (&row.upload_id, row.part_size) else {
        return Ok(Resumed::Fresh);
    };
    let listed = job
        .request(job.store.list_parts(job.key, upload_id))
        .await?;
    let Some(listed) = listed else {
        // Completed just before a crash, or aborted/expired. HEAD tells which. A file
        // hashed while sent has its SHA-256 recorded before the upload is completed: none
        // means it never was.
        if let Some(sha256) = &row.sha256 {
            if let Some(etag) = completed_before(job, sha256, part_size).await? {
                return Ok(Resumed::Complete(Uploaded {
                    etag,
                    sha256: sha256.clone(),
                    sent: false,
                }));
            }
        }
        tracing::info!(
            id = row.id,
            key = job.key,
            "S3 no longer knows the multipart upload; starting the file over"
        );
        record(job, move |q, id, claim| q.forget_upload(id, claim)).await?;
        return Ok(Resumed::Fresh);
    };
    if job.remade {
        let same = match &row.sha256 {
            Some(sha256) => &hash_file(Arc::clone(&job.file), job.stamp.size).await?.1 == sha256,
            // Hashed while sent: not known before the end. A remade work file is new bytes.
            None => false,
        };
        if !same {
            tracing::info!(
                id = row.id,
                key = job.key,
                "the work file was made again with other bytes (encryption); starting the upload over"
            );
            abort(job, upload_id).await;
            record(job, move |q, id, claim| q.forget_upload(id, claim)).await?;
            return Ok(Resumed::Fresh);
        }
    }
    let in_s3: HashMap<u32, (u64, String)> = listed
        .into_iter()
        .map(|p| (p.number, (p.size, p.etag)))
        .collect();
    let id = row.id;
    let recorded = job.queue.call(move |q| q.parts(id)).await?;
    let size = job.stamp.size;
    let count = size.div_ceil(part_size);
    // Kept: parts S3 and the queue agree on, that belong to this file's layout.
    let expected_len = |n: u32| part_size.min(size - (u64::from(n) - 1) * part_size);
    let done: Vec<StoredPart> = recorded
        .into_iter()
        .filter(|p| u64::from(p.number) <= count && p.size == expected_len(p.number))
        .filter(|p| {
            in_s3
                .get(&p.number)
                .is_some_and(|(size, etag)| *size == p.size && *etag == p.etag)
        })
        .collect();
    tracing::info!(
        id,
        key = job.key,
        parts_done = done.len(),
        parts = job.stamp.size.div_ceil(part_size),
        "resuming multipart upload"
    );
    Ok(Resumed::Open(Open {
        upload_id: upload_id.clone(),
        part_size,
        sha256: row.sha256.clone(),
        done,
    }))
}

/// The ETag of the object at the key if an earlier attempt completed this very upload:
/// the same size, and the SHA-256 in its metadata or, on an object without it (hashed
/// while sent), the ETag S3 makes of the parts the queue recorded.
async fn completed_before(
    job: &Job<'_>,
    sha256: &str,
    part_size: u64,
) -> Result<Option<String>, TransferError> {
    let id = job.row.id;
    let parts = job.queue.call(move |q| q.parts(id)).await?;
    let size = job.stamp.size;
    let whole = parts.len() as u64 == size.div_ceil(part_size)
        && parts.iter().enumerate().all(|(i, p)| {
            let offset = i as u64 * part_size;
            p.number as usize == i + 1 && p.size == part_size.min(size - offset)
        });
    let parts_etag = if whole {
        let md5s: Vec<Md5> = parts
            .iter()
            .map(|p| parse_md5(&p.md5))
            .collect::<Result<_, _>>()?;
        Some(multipart_etag(&md5s))
    } else {
        None
    };
    let head = match job.request(job.store.head_object(job.key)).await {
        Ok(head) => head,
        Err(e) if e.status == Some(403) => None,
        Err(e) => return Err(e.into()),
    };
    Ok(head.and_then(|h| {
        let same = h.size == size
            && match (&h.sha256, &h.etag, &parts_etag) {
                (Some(stored), _, _) => stored == sha256,
                (None, Some(etag), Some(parts)) => bare_etag(etag).eq_ignore_ascii_case(parts),
                _ => false,
            };
        same.then(|| h.etag.unwrap_or_default())
    }))
}

/// Hashes the file (its SHA-256 goes into the object's metadata), and creates and records
/// a new upload. A file hashed while sent skips the hashing. An earlier attempt that may
/// have completed the object was looked for before (see [`super::earlier`]).
async fn start(job: &Job<'_>) -> Result<Resumed, TransferError> {
    let part_size = part_size_for(job.stamp.size, job.target.settings.part_size);
    if job.target.settings.large_file_sha256 == LargeFileSha256::Manifest {
        return open_upload(job, part_size, None).await;
    }
    let (_, sha256) = hash_file(Arc::clone(&job.file), job.stamp.size).await?;
    open_upload(job, part_size, Some(sha256)).await
}

/// Creates a multipart upload (with the SHA-256 as metadata, if known) and records it.
async fn open_upload(
    job: &Job<'_>,
    part_size: u64,
    sha256: Option<String>,
) -> Result<Resumed, TransferError> {
    let upload_id = job
        .request(
            job.store
                .create_multipart(job.key, &job.meta(sha256.as_deref())),
        )
        .await?;
    let (uid, sha) = (upload_id.clone(), sha256.clone());
    let recorded = record(job, move |q, id, claim| {
        q.start_upload(id, claim, &uid, part_size, sha.as_deref())
    })
    .await;
    if let Err(e) = recorded {
        abort(job, &upload_id).await;
        return Err(e);
    }
    Ok(Resumed::Open(Open {
        upload_id,
        part_size,
        sha256,
        done: Vec::new(),
    }))
}

/// Uploads the missing parts, checks the source is unchanged, completes and verifies.
async fn finish(job: &Job<'_>, open: &Open) -> Result<Uploaded, TransferError> {
    let size = job.stamp.size;
    let count = size.div_ceil(open.part_size) as u32;
    let (uploaded, sha256) = match &open.sha256 {
        Some(sha256) => {
            let have: HashMap<u32, &StoredPart> = open.done.iter().map(|p| (p.number, p)).collect();
            let missing: Vec<u32> = (1..=count).filter(|n| !have.contains_key(n)).collect();
            let wanted = missing.len();
            // Parts start only while the window is open; those in flight when it closes
            // finish, and the rest wait for the next window.
            let uploaded: Vec<StoredPart> = futures::stream::iter(missing)
                .take_while(|_| futures::future::ready(!job.window.closed()))
                .map(|number| {
                    let offset = u64::from(number - 1) * open.part_size;
                    let len = open.part_size.min(size - offset);
                    upload_part(job, &open.upload_id, number, offset, len)
                })
                .buffer_unordered(job.target.settings.concurrency)
                .try_collect()
                .await?;
            if uploaded.len() < wanted {
                return Err(TransferError::OutsideWindow);
            }
            (uploaded, sha256.clone())
        }
        None => match one_pass::send_and_hash(job, open).await {
            Ok(sent) => sent,
            Err(TransferError::SourceChanged) => {
                // A part S3 has is not the file's now: the upload can only make a mixed object.
                abort(job, &open.upload_id).await;
                return Err(TransferError::SourceChanged);
            }
            Err(e) => return Err(e),
        },
    };

    // Parts read from a file that changed meanwhile would make a mixed object: check
    // before completing, and abort instead.
    let now = job
        .file
        .metadata()
        .map(|m| FileStamp::of(&m))
        .map_err(TransferError::read)?;
    if now != job.stamp {
        abort(job, &open.upload_id).await;
        return Err(TransferError::SourceChanged);
    }
    if open.sha256.is_none() {
        // Before completing: an upload found complete after a crash has its SHA-256.
        let sha = sha256.clone();
        record(job, move |q, id, claim| q.record_sha256(id, claim, &sha)).await?;
    }
    let mut parts: Vec<&StoredPart> = open.done.iter().chain(uploaded.iter()).collect();
    parts.sort_by_key(|p| p.number);
    let completed: Vec<CompletedPart> = parts
        .iter()
        .map(|p| CompletedPart {
            number: p.number,
            etag: p.etag.clone(),
        })
        .collect();
    let md5s: Vec<Md5> = parts
        .iter()
        .map(|p| parse_md5(&p.md5))
        .collect::<Result<_, _>>()?;
    let written = job
        .request(
            job.making(
                job.store
                    .complete_multipart(job.key, &open.upload_id, &completed),
            ),
        )
        .await?;
    let etag = check_etag("CompleteMultipartUpload", &written, &multipart_etag(&md5s))?;
    Ok(Uploaded {
        etag,
        sha256,
        sent: true,
    })
}

/// Reads and uploads one part (retrying it on its own) and records it in the queue.
async fn upload_part(
    job: &Job<'_>,
    upload_id: &str,
    number: u32,
    offset: u64,
    len: u64,
) -> Result<StoredPart, TransferError> {
    let mut permit = job.target.limit.acquire(len).await;
    let (bytes, md5) = read_range(Arc::clone(&job.file), offset, len).await?;
    send_part(job, upload_id, number, (bytes, md5), &mut permit).await
}

/// Best effort: an upload we give up on should not keep costing storage.
pub async fn abort(job: &Job<'_>, upload_id: &str) {
    if let Err(e) = job
        .request(job.store.abort_multipart(job.key, upload_id))
        .await
    {
        tracing::warn!(key = job.key, upload_id, error = %e, "cannot abort a multipart upload");
    }
}

fn parse_md5(text: &str) -> Result<Md5, TransferError> {
    let bytes = hex::decode(text).ok().and_then(|b| <Md5>::try_from(b).ok());
    bytes.ok_or_else(|| {
        TransferError::Refused(format!(
            "CompleteMultipartUpload failed: BadRecord: bad part MD5 {text:?} in the queue"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_grows_for_huge_files() {
        let mib = 1 << 20;
        assert_eq!(part_size_for(100 * mib, 16 * mib), 16 * mib);
        let huge = 16 * mib * 20_000;
        assert_eq!(part_size_for(huge, 16 * mib), 32 * mib);
        assert!(huge.div_ceil(part_size_for(huge, 16 * mib)) <= MAX_PARTS);
    }

    #[test]
    fn md5_records_round_trip() {
        use md5::Digest;
        let md5: Md5 = md5::Md5::digest(b"x").into();
        assert_eq!(parse_md5(&hex::encode(md5)).unwrap(), md5);
        assert!(parse_md5("zz").is_err());
    }
}
