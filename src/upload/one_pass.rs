//! Sending a file in parts while hashing it (`large_file_sha256 = "manifest"`): each byte
//! is read once. One reader goes through the file in order, so the SHA-256 sees the
//! bytes in order, and hands each part it read to the uploads in flight; the part's
//! buffer is the request body (no copy), held under a memory permit until it is sent.
//! Parts an earlier attempt put in S3 are read and hashed only, and must be the bytes
//! that were sent (their MD5s recorded in the queue), or the file changed.

use futures::stream::{FuturesUnordered, StreamExt};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

use super::error::TransferError;
use super::job::{read_range_hashing, Job};
use super::part::{send_part, Open};
use crate::outbound::limit::RequestPermit;
use crate::queue::StoredPart;
use crate::s3::Md5;

/// Sends the parts `open` lacks, hashing the whole file on the way. Returns the parts
/// sent and the file's hex SHA-256.
pub async fn send_and_hash(
    job: &Job<'_>,
    open: &Open,
) -> Result<(Vec<StoredPart>, String), TransferError> {
    let size = job.stamp.size;
    let part_size = open.part_size;
    let count = size.div_ceil(part_size) as u32;
    let done: HashMap<u32, &StoredPart> = open.done.iter().map(|p| (p.number, p)).collect();
    let concurrency = job.target.settings.concurrency.max(1);
    let mut in_flight = FuturesUnordered::new();
    let mut sent = Vec::new();
    let mut hasher = Sha256::new();
    for number in 1..=count {
        while in_flight.len() >= concurrency {
            sent.push(in_flight.next().await.expect("parts in flight")?);
        }
        if job.window.closed() {
            // The parts in flight finish and are recorded; the rest wait for the window.
            while let Some(one) = in_flight.next().await {
                sent.push(one?);
            }
            return Err(TransferError::OutsideWindow);
        }
        // While this part waits for memory and is read, the parts in flight go on.
        let offset = u64::from(number - 1) * part_size;
        let len = part_size.min(size - offset);
        let read = read_part(job, offset, len, hasher);
        tokio::pin!(read);
        let (bytes, md5, permit, hashed) = loop {
            tokio::select! {
                read = &mut read => break read?,
                Some(one) = in_flight.next() => sent.push(one?),
            }
        };
        hasher = hashed;
        match done.get(&number) {
            // In S3 already: hashed, not sent.
            Some(part) if part.md5 == hex::encode(md5) => {}
            Some(_) => return Err(TransferError::SourceChanged),
            None => in_flight.push(send(job, &open.upload_id, number, bytes, md5, permit)),
        }
    }
    while let Some(one) = in_flight.next().await {
        sent.push(one?);
    }
    Ok((sent, hex::encode(hasher.finalize())))
}

/// Waits for memory for a part, then reads it, adding it to the file's SHA-256.
async fn read_part(
    job: &Job<'_>,
    offset: u64,
    len: u64,
    hasher: Sha256,
) -> Result<(bytes::Bytes, Md5, RequestPermit, Sha256), TransferError> {
    let permit = job.target.limit.acquire(len).await;
    let (bytes, md5, hasher) =
        read_range_hashing(Arc::clone(&job.file), offset, len, Some(hasher)).await?;
    Ok((bytes, md5, permit, hasher.expect("given")))
}

/// Sends a part read, then gives its memory back.
async fn send(
    job: &Job<'_>,
    upload_id: &str,
    number: u32,
    bytes: bytes::Bytes,
    md5: Md5,
    mut permit: RequestPermit,
) -> Result<StoredPart, TransferError> {
    send_part(job, upload_id, number, (bytes, md5), &mut permit).await
}
