//! One file's upload as the transfer code sees it: the destination's
//! [`crate::outbound::Target`], the [`Job`] (row, key, open file, stamp) and what S3 confirmed ([`Uploaded`]), with the
//! helpers both a single PUT ([`super::transfer`]) and a multipart upload
//! ([`super::multipart`]) use: reading and hashing ranges of the open file, and checking
//! an ETag against the bytes sent.

use bytes::Bytes;
use md5::{Digest, Md5 as Hasher};
use sha2::Sha256;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::error::TransferError;
use crate::queue::{FileRow, FileStamp, SharedQueue};
use crate::s3::{bare_etag, Md5, ObjectMeta, ObjectStore, StoreError, Written};

/// Read size while hashing a file.
const HASH_CHUNK: usize = 1 << 20;

/// One file being uploaded: its row (as claimed), the open file and its stamp.
pub struct Job<'a> {
    pub target: &'a crate::outbound::Target,
    /// The store for the bucket the row was queued for.
    pub store: Arc<dyn ObjectStore>,
    pub queue: &'a SharedQueue,
    pub row: &'a FileRow,
    pub key: &'a str,
    pub file: Arc<File>,
    pub stamp: FileStamp,
    /// The object's Content-Type.
    pub content_type: &'static str,
    /// The file is a work file made again by this attempt. Encryption makes new bytes
    /// each time, so an upload recorded by an earlier attempt is only resumed if the
    /// bytes are the same.
    pub remade: bool,
    /// The source's SHA-256, for a converted work file: what the object is recognised by,
    /// since the work file's own bytes may differ at every attempt.
    pub source_sha256: Option<String>,
    /// For an encrypted work file, the source's keyed hash in its place (see
    /// [`super::source_tag`]).
    pub source_tag: Option<String>,
    /// The row, as the object names its writer (`x-amz-meta-s3spool-row`).
    pub written_by: String,
    /// A request that makes the object went out and got no answer: S3 may hold it.
    pub unanswered: AtomicBool,
    /// Whether the spool's delivery window closed: a multipart upload stops between parts.
    pub window: super::window::WindowCheck<'a>,
}

/// A confirmed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub etag: String,
    pub sha256: String,
    /// False when the object was found already in place (a crash came after S3 confirmed
    /// it and before the queue recorded it): nothing was sent.
    pub sent: bool,
}

impl Job<'_> {
    /// The metadata the object is written with: `sha256` (`x-amz-meta-sha256`) if known,
    /// the source's SHA-256 (or keyed hash) for a work file, and the row that wrote it.
    pub fn meta(&self, sha256: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            sha256: sha256.map(str::to_string),
            source_sha256: self.source_sha256.clone(),
            source_tag: self.source_tag.clone(),
            written_by: Some(self.written_by.clone()),
            content_type: self.content_type,
        }
    }

    /// Runs one request under the destination's adaptive limit.
    pub async fn request<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        let permit = self.target.limit.acquire(0).await;
        let result = call.await;
        drop(permit);
        self.observe(&result);
        result
    }

    /// Runs a request that makes the object (PutObject, CompleteMultipartUpload), noting
    /// when it ends without an answer that rules out a write: then S3 may hold the object,
    /// and the row must ask HEAD before its next attempt sends.
    pub async fn making<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        let result = call.await;
        if let Err(e) = &result {
            if !e.refused_unwritten() {
                self.unanswered.store(true, Ordering::Relaxed);
            }
        }
        result
    }

    /// Whether a request that makes the object went unanswered in this attempt.
    pub fn maybe_sent(&self) -> bool {
        self.unanswered.load(Ordering::Relaxed)
    }

    /// Feeds an outcome to the adaptive limit, saying so when the limit moves.
    pub fn observe<T>(&self, result: &Result<T, StoreError>) {
        if let Some(now) = self.target.limit.observe(result) {
            tracing::info!(destination = %self.target.name, concurrency = now, "request concurrency adjusted");
        }
    }
}

/// Reads `len` bytes at `offset` on a blocking thread and hashes them.
pub async fn read_range(
    file: Arc<File>,
    offset: u64,
    len: u64,
) -> Result<(Bytes, Md5), TransferError> {
    let (bytes, md5, _) = read_range_hashing(file, offset, len, None).await?;
    Ok((bytes, md5))
}

/// [`read_range`], adding the bytes to a running SHA-256 too, if one is given.
pub async fn read_range_hashing(
    file: Arc<File>,
    offset: u64,
    len: u64,
    mut sha256: Option<Sha256>,
) -> Result<(Bytes, Md5, Option<Sha256>), TransferError> {
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)?;
        let md5: Md5 = Hasher::digest(&buf).into();
        if let Some(sha256) = &mut sha256 {
            sha256.update(&buf);
        }
        Ok::<_, std::io::Error>((Bytes::from(buf), md5, sha256))
    })
    .await
    .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
    .map_err(TransferError::read)
}

/// MD5 and hex SHA-256 of the first `len` bytes of a file, one chunk at a time, on a
/// blocking thread.
pub async fn hash_file(file: Arc<File>, len: u64) -> Result<(Md5, String), TransferError> {
    tokio::task::spawn_blocking(move || {
        let mut md5 = Hasher::new();
        let mut sha256 = Sha256::new();
        let mut buf = vec![0u8; HASH_CHUNK];
        let mut offset = 0;
        while offset < len {
            let n = (len - offset).min(HASH_CHUNK as u64) as usize;
            file.read_exact_at(&mut buf[..n], offset)?;
            md5.update(&buf[..n]);
            sha256.update(&buf[..n]);
            offset += n as u64;
        }
        Ok::<_, std::io::Error>((md5.finalize().into(), hex::encode(sha256.finalize())))
    })
    .await
    .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
    .map_err(TransferError::read)
}

/// S3 computed the ETag from the bytes it stored; it must be what we computed from ours.
/// Not compared where S3 says the ETag is no MD5 (SSE-KMS, SSE-C) or where a store uses
/// another form altogether; Content-MD5 still guarded those bytes. Returns the ETag.
pub fn check_etag(
    operation: &'static str,
    written: &Written,
    want: &str,
) -> Result<String, TransferError> {
    let got = bare_etag(&written.etag);
    // By bytes: a server's ETag may hold any text, and slicing text at byte 32 can panic.
    let md5_shaped = got
        .as_bytes()
        .get(..32)
        .is_some_and(|head| head.iter().all(u8::is_ascii_hexdigit));
    if written.etag_is_md5 && md5_shaped && !got.eq_ignore_ascii_case(want) {
        return Err(TransferError::ETagMismatch {
            operation,
            stored: got.to_string(),
            sent: want.to_string(),
        });
    }
    Ok(written.etag.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(matches!(err, TransferError::ETagMismatch { .. }), "{err}");
        assert!(
            check_etag("PutObject", &w(zeros, false), md5).is_ok(),
            "SSE-KMS ETags are no MD5"
        );
        assert!(check_etag("PutObject", &w("opaque-etag", true), md5).is_ok());
        // Non-ASCII text across byte 32 is no MD5, and no reason to panic.
        let odd = format!("\"{}é{}\"", "a".repeat(31), "b".repeat(8));
        assert!(check_etag("PutObject", &w(&odd, true), md5).is_ok());
    }
}
