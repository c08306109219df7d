//! Moving one file's bytes: a single PUT, or a multipart upload with parts in parallel.
//!
//! Memory stays bounded by the destination's `concurrency × part_size`: a request holds a
//! permit of the destination's semaphore from before its bytes are read until S3 answered,
//! and no request body is larger than one part. Files between `part_size` and
//! `multipart_threshold` are hashed in one pass and streamed from disk in a second.

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
use crate::s3::{
    bare_etag, multipart_etag, CompletedPart, ErrorClass, Md5, ObjectStore, PutBody, StoreError,
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

/// Uploads `size` bytes of `file` under `key` and returns the ETag S3 confirmed.
pub async fn upload(
    target: &Target,
    file: Arc<File>,
    key: &str,
    size: u64,
) -> Result<String, StoreError> {
    let settings = &target.settings;
    if size <= settings.part_size {
        let permit = acquire(&target.requests).await;
        let (bytes, md5) = read_range(Arc::clone(&file), 0, size).await?;
        let etag = target
            .store
            .put_object(key, PutBody::Memory(bytes), md5)
            .await?;
        drop(permit);
        check_etag("PutObject", &etag, &hex::encode(md5))?;
        Ok(etag)
    } else if size < settings.multipart_threshold {
        let md5 = hash_file(Arc::clone(&file), size).await?;
        let permit = acquire(&target.requests).await;
        let clone = file.try_clone().map_err(|e| local("PutObject", e))?;
        let etag = target
            .store
            .put_object(
                key,
                PutBody::File {
                    file: clone,
                    len: size,
                },
                md5,
            )
            .await?;
        drop(permit);
        check_etag("PutObject", &etag, &hex::encode(md5))?;
        Ok(etag)
    } else {
        multipart(target, file, key, size).await
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
    size: u64,
) -> Result<String, StoreError> {
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
        Ok(etag) => {
            check_etag("CompleteMultipartUpload", &etag, &multipart_etag(&md5s))?;
            Ok(etag)
        }
        Err(e) => {
            abort(target, key, &upload_id).await;
            Err(e)
        }
    }
}

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
            Ok(etag) => {
                check_etag("UploadPart", &etag, &hex::encode(md5))?;
                return Ok((CompletedPart { number, etag }, md5));
            }
            Err(e) if e.class == ErrorClass::Transient && tries < PART_TRIES => {
                let wait = backoff::delay(
                    tries,
                    target.settings.backoff_initial,
                    target.settings.backoff_max,
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
/// Stores that use other ETag forms (e.g. with SSE-KMS) are not compared.
fn check_etag(operation: &'static str, got: &str, want: &str) -> Result<(), StoreError> {
    let got = bare_etag(got);
    let comparable = got.len() >= 32 && got[..32].chars().all(|c| c.is_ascii_hexdigit());
    if comparable && !got.eq_ignore_ascii_case(want) {
        return Err(StoreError::transport(
            operation,
            "ETagMismatch",
            format!("S3 stored ETag {got} but the data sent has {want}"),
        ));
    }
    Ok(())
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
        assert!(check_etag(
            "PutObject",
            "\"5d41402abc4b2a76b9719d911017c592\"",
            "5d41402abc4b2a76b9719d911017c592"
        )
        .is_ok());
        assert!(check_etag(
            "PutObject",
            "\"00000000000000000000000000000000\"",
            "5d41402abc4b2a76b9719d911017c592"
        )
        .is_err());
        assert!(check_etag(
            "PutObject",
            "opaque-etag",
            "5d41402abc4b2a76b9719d911017c592"
        )
        .is_ok());
    }
}
