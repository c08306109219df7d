//! Moving one file's bytes: a single PUT, or (see [`super::multipart`]) a resumable
//! multipart upload with parts in parallel.
//!
//! Memory stays bounded by the destination's `memory`: a request holds its body's size of
//! that budget (and a request slot) from before its bytes are read until S3 answered, and
//! no request body is larger than one part. Files between `part_size` and
//! `multipart_threshold` are hashed in one pass and streamed from disk in a second. Every
//! body carries its Content-MD5, so S3 refuses bytes that changed between hashing and
//! sending; every object carries its SHA-256 as `x-amz-meta-sha256` and the row that
//! wrote it. An attempt that may have sent before asked HEAD first (see
//! [`super::earlier`]), so these only send.

use md5::Digest;
use sha2::Sha256;
use std::sync::Arc;

use super::error::TransferError;
use super::job::{check_etag, hash_file, read_range, Job, Uploaded};
use crate::s3::PutBody;

/// Uploads the job's file under its key and returns what S3 confirmed.
pub async fn upload(job: &Job<'_>) -> Result<Uploaded, TransferError> {
    let size = job.stamp.size;
    let settings = &job.target.settings;
    if size <= settings.part_size {
        // Read and send under one permit: the bytes in memory count against the limit.
        let permit = job.target.limit.acquire(size).await;
        let (bytes, md5) = read_range(Arc::clone(&job.file), 0, size).await?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let result = job
            .making(job.store.put_object(
                job.key,
                PutBody::Memory(bytes),
                md5,
                &job.meta(Some(&sha256)),
            ))
            .await;
        drop(permit);
        job.observe(&result);
        let etag = check_etag("PutObject", &result?, &hex::encode(md5))?;
        Ok(Uploaded {
            etag,
            sha256,
            sent: true,
        })
    } else if size < settings.multipart_threshold {
        let (md5, sha256) = hash_file(Arc::clone(&job.file), size).await?;
        let clone = job.file.try_clone().map_err(TransferError::read)?;
        let body = PutBody::File {
            file: clone,
            len: size,
        };
        let written = job
            .request(
                job.making(
                    job.store
                        .put_object(job.key, body, md5, &job.meta(Some(&sha256))),
                ),
            )
            .await?;
        let etag = check_etag("PutObject", &written, &hex::encode(md5))?;
        Ok(Uploaded {
            etag,
            sha256,
            sent: true,
        })
    } else {
        super::multipart::upload(job).await
    }
}
