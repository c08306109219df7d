//! Moving one file's bytes: a single PUT, or a multipart upload with parts in parallel.
//!
//! Memory stays bounded by the destination's `concurrency × part_size`: a request holds a
//! permit of the destination's semaphore from before its bytes are read until S3 answered,
//! and no request body is larger than one part. Files between `part_size` and
//! `multipart_threshold` are hashed in one pass and streamed from disk in a second. Every
//! body is sent with its Content-MD5, so S3 refuses bytes that changed between hashing and
//! sending.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5 as Hasher};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

use super::backoff;
use crate::config::UploadSettings;
use crate::queue::FileStamp;
use crate::s3::{
    bare_etag, multipart_etag, CompletedPart, ErrorClass, Md5, ObjectStore, PutBody, StoreError,
    Written,
};

/// S3 allows at most this many parts.
const MAX_PARTS: u64 = 10_000;
/// Tries per part before the whole file attempt fails.
const PART_TRIES: u32 = 3;
/// Read size while hashing a streamed file.
const HASH_CHUNK: usize = 1 << 20;

/// A destination's store and the limits shared by every upload to it.
pub struct Target {
    pub store: Arc<dyn ObjectStore>,
    pub settings: UploadSettings,
    /// One permit per request in flight.
    pub requests: Arc<Semaphore>,
}

/// Uploads the file opened as `file` (stamped `stamp` when opened) under `key` and returns
/// the ETag S3 confirmed.
pub async fn upload(
    target: &Target,
    file: Arc<File>,
    key: &str,
    stamp: FileStamp,
) -> Result<String, StoreError> {
    let size = stamp.size;
    if size <= target.settings.part_size {
        let permit = acquire(&target.requests).await;
        let (bytes, md5) = read_range(Arc::clone(&file), 0, size).await?;
        let body = PutBody::Memory(bytes);
        let written = target.store.put_object(key, body, md5).await?;
        drop(permit);
        check_etag("PutObject", &written, &hex::encode(md5))
    } else if size < target.settings.multipart_threshold {
        let md5 = hash_file(Arc::clone(&file), size).await?;
        let permit = acquire(&target.requests).await;
        let clone = file.try_clone().map_err(|e| local("PutObject", e))?;
        let body = PutBody::File {
            file: clone,
            len: size,
        };
        let written = target.store.put_object(key, body, md5).await?;
        drop(permit);
        check_etag("PutObject", &written, &hex::encode(md5))
    } else {
        multipart(target, file, key, stamp).await
    }
}

/// Part size for a file: the configured one, raised if the file would need too many parts.
pub fn part_size_for(size: u64, configured: u64) -> u64 {
    configured.max(size.div_ceil(MAX_PARTS))
}

async fn multipart(
    target: &Target,
    file: Arc<File>,
    key: &str,
    stamp: FileStamp,
) -> Result<String, StoreError> {
    let size = stamp.size;
    let part_size = part_size_for(size, target.settings.part_size);
    let count = size.div_ceil(part_size) as u32;
    let upload_id = {
        let _permit = acquire(&target.requests).await;
        target.store.create_multipart(key).await?
    };
    let parts = futures::stream::iter(1..=count)
        .map(|number| {
            let offset = u64::from(number - 1) * part_size;
            let len = part_size.min(size - offset);
            upload_part(
                target,
                Arc::clone(&file),
                key,
                &upload_id,
                number,
                offset,
                len,
            )
        })
        .buffer_unordered(target.settings.concurrency)
        .try_collect::<Vec<(CompletedPart, Md5)>>()
        .await;
    let mut parts = match parts {
        Ok(parts) => parts,
        Err(e) => {
            abort(target, key, &upload_id).await;
            return Err(e);
        }
    };
    // Parts read from a file that changed meanwhile would make a mixed object: check
    // before completing, and abort instead.
    let now = file.metadata().map(|m| FileStamp::of(&m));
    if now.as_ref().ok() != Some(&stamp) {
        abort(target, key, &upload_id).await;
        return Err(StoreError::transport(
            "CompleteMultipartUpload",
            SOURCE_CHANGED,
            "the source changed during the upload; the upload was aborted".into(),
        ));
    }
    parts.sort_by_key(|(p, _)| p.number);
    let (completed, md5s): (Vec<CompletedPart>, Vec<Md5>) = parts.into_iter().unzip();
    let result = {
        let _permit = acquire(&target.requests).await;
        target
            .store
            .complete_multipart(key, &upload_id, &completed)
            .await
    };
    match result {
        Ok(written) => check_etag("CompleteMultipartUpload", &written, &multipart_etag(&md5s)),
        Err(e) => {
            abort(target, key, &upload_id).await;
            Err(e)
        }
    }
}

/// The code of the error [`upload`] returns when the source changed under a multipart
/// upload (which is then aborted, so no mixed object ever becomes visible).
pub const SOURCE_CHANGED: &str = "SourceChanged";

async fn upload_part(
    target: &Target,
    file: Arc<File>,
    key: &str,
    upload_id: &str,
    number: u32,
    offset: u64,
    len: u64,
) -> Result<(CompletedPart, Md5), StoreError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let permit = acquire(&target.requests).await;
        let (bytes, md5) = read_range(Arc::clone(&file), offset, len).await?;
        let result = target
            .store
            .upload_part(key, upload_id, number, bytes, md5)
            .await;
        drop(permit);
        match result {
            Ok(written) => {
                let etag = check_etag("UploadPart", &written, &hex::encode(md5))?;
                return Ok((CompletedPart { number, etag }, md5));
            }
            Err(e) if e.class == ErrorClass::Transient && tries < PART_TRIES => {
                let s = &target.settings;
                let wait = backoff::delay(
                    tries,
                    s.backoff_initial,
                    s.backoff_max,
                    &mut rand::thread_rng(),
                );
                tracing::debug!(part = number, error = %e, wait_ms = wait.as_millis() as u64, "part failed; retrying it");
                tokio::time::sleep(wait.min(Duration::from_secs(30))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Best effort: an upload we give up on should not keep costing storage.
async fn abort(target: &Target, key: &str, upload_id: &str) {
    if let Err(e) = target.store.abort_multipart(key, upload_id).await {
        tracing::warn!(key, upload_id, error = %e, "cannot abort a multipart upload");
    }
}

async fn acquire(requests: &Arc<Semaphore>) -> tokio::sync::OwnedSemaphorePermit {
    // The semaphore is never closed: acquiring cannot fail.
    Arc::clone(requests)
        .acquire_owned()
        .await
        .unwrap_or_else(|_| unreachable!("request semaphore is never closed"))
}

/// Reads `len` bytes at `offset` on a blocking thread and hashes them.
async fn read_range(file: Arc<File>, offset: u64, len: u64) -> Result<(Bytes, Md5), StoreError> {
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)?;
        let md5: Md5 = Hasher::digest(&buf).into();
        Ok::<_, std::io::Error>((Bytes::from(buf), md5))
    })
    .await
    .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
    .map_err(|e| local("ReadSource", e))
}

/// Hashes the first `len` bytes of a file on a blocking thread, one chunk at a time.
async fn hash_file(file: Arc<File>, len: u64) -> Result<Md5, StoreError> {
    tokio::task::spawn_blocking(move || {
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; HASH_CHUNK];
        let mut offset = 0;
        while offset < len {
            let n = (len - offset).min(HASH_CHUNK as u64) as usize;
            file.read_exact_at(&mut buf[..n], offset)?;
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        Ok::<_, std::io::Error>(hasher.finalize().into())
    })
    .await
    .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
    .map_err(|e| local("ReadSource", e))
}

fn local(operation: &'static str, e: std::io::Error) -> StoreError {
    // A short read means the file shrank under us: transient, the next try sees the change.
    let class = if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    };
    StoreError {
        operation,
        code: "SourceUnreadable".into(),
        status: None,
        message: e.to_string(),
        class,
    }
}

/// S3 computed the ETag from the bytes it stored; it must be what we computed from ours.
/// Not compared where S3 says the ETag is no MD5 (SSE-KMS, SSE-C) or where a store uses
/// another form altogether; Content-MD5 still guarded those bytes. Returns the ETag.
fn check_etag(
    operation: &'static str,
    written: &Written,
    want: &str,
) -> Result<String, StoreError> {
    let got = bare_etag(&written.etag);
    let md5_shaped = got.len() >= 32 && got[..32].chars().all(|c| c.is_ascii_hexdigit());
    if written.etag_is_md5 && md5_shaped && !got.eq_ignore_ascii_case(want) {
        return Err(StoreError::transport(
            operation,
            "ETagMismatch",
            format!("S3 stored ETag {got} but the data sent has {want}"),
        ));
    }
    Ok(written.etag.clone())
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
    fn etag_check() {
        let md5 = "5d41402abc4b2a76b9719d911017c592";
        let w = |etag: &str, etag_is_md5| Written {
            etag: etag.into(),
            etag_is_md5,
        };
        let good = format!("\"{md5}\"");
        assert_eq!(check_etag("PutObject", &w(&good, true), md5).unwrap(), good);
        let zeros = "\"00000000000000000000000000000000\"";
        let err = check_etag("PutObject", &w(zeros, true), md5).unwrap_err();
        assert_eq!(err.code, "ETagMismatch");
        assert!(
            check_etag("PutObject", &w(zeros, false), md5).is_ok(),
            "SSE-KMS ETags are no MD5"
        );
        assert!(check_etag("PutObject", &w("opaque-etag", true), md5).is_ok());
    }
}
