//! `s3spool verify`: the bucket audited against the queue.
//!
//! Every delivered row in range is checked against S3: its object must be at the
//! recorded bucket and key, with the recorded size and ETag ([`listed`]: by listing
//! pages, a HEAD for each row they do not clear). `--deep` asks each row by HEAD
//! (concurrently under each destination's `concurrency`), compares its SHA-256 metadata
//! too, and reads the object back and hashes it.
//! [`unexplained`] lists the objects under each spool's fixed key prefix that no row or
//! manifest explains, and checks each written manifest against its batch's rows.
//!
//! Read-only: nothing here writes to the queue (but a temporary table of its own
//! connection) or to S3. The room knows the queue and the S3 interface, never the config:
//! the command line hands it [`Target`]s and [`Listing`]s.

mod listed;
mod rows;
#[cfg(test)]
mod tests;
pub mod unexplained;

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use crate::queue::{AuditRange, Queue};
use crate::s3::{ObjectStore, StoreError};

pub use unexplained::Listing;

/// Rows read from the queue at a time: memory stays flat whatever the queue holds.
const PAGE: usize = 1000;

/// A destination as verify reaches it.
pub struct Target {
    /// The store, or why it could not be made (every row of it is then unchecked).
    pub store: Result<Arc<dyn ObjectStore>, String>,
    /// Requests in flight at once.
    pub concurrency: usize,
}

/// What to verify.
pub struct Plan {
    pub range: AuditRange,
    /// Read every object back and hash it.
    pub deep: bool,
    /// List the spools' prefixes for objects nothing explains, and check manifests.
    pub listings: Option<Vec<Listing>>,
}

/// What a problem is, in the words the output uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Missing,
    SizeDiffers,
    /// The ETag differs: something wrote the key again.
    Overwritten,
    Sha256Differs,
    Unexplained,
    ManifestDiffers,
}

impl Kind {
    pub fn words(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::SizeDiffers => "size differs",
            Kind::Overwritten => "overwritten",
            Kind::Sha256Differs => "sha256 differs",
            Kind::Unexplained => "unexplained",
            Kind::ManifestDiffers => "manifest differs",
        }
    }
}

/// One discrepancy between the queue and the bucket.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub kind: Kind,
    pub spool: String,
    /// The row it concerns (none for an unexplained object; a manifest's batch is named
    /// in `detail`).
    pub id: Option<i64>,
    pub bucket: String,
    pub key: String,
    pub detail: String,
}

/// Something that could not be checked, and why (a permission, an error, a destination
/// the config no longer has).
#[derive(Debug, Clone, Serialize)]
pub struct Unchecked {
    pub what: String,
    pub reason: String,
}

/// What a verification found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Delivered rows checked against their objects.
    pub rows: u64,
    /// Of those, the rows a listing page cleared (the others were asked by HEAD).
    pub by_listing: u64,
    /// ListObjectsV2 requests made to check rows.
    pub list_requests: u64,
    /// Objects read back and hashed (`--deep`).
    pub read_back: u64,
    /// Objects listed under the spools' prefixes (`--unexplained`).
    pub listed: u64,
    /// Manifests compared with their batches.
    pub manifests: u64,
    pub problems: Vec<Problem>,
    pub unchecked: Vec<Unchecked>,
    /// What the verification could not judge, and why (said, not counted as problems).
    pub notes: Vec<String>,
}

impl Report {
    /// The exit code: 0 all good, 1 discrepancies, 2 something could not be checked.
    pub fn exit_code(&self) -> u8 {
        if !self.unchecked.is_empty() {
            2
        } else if !self.problems.is_empty() {
            1
        } else {
            0
        }
    }
}

/// Told of the progress (a bar on a terminal).
pub trait Progress {
    /// `total` rows to check, known before the first.
    fn start(&self, total: u64);
    /// `n` more rows checked.
    fn advance(&self, n: u64);
    fn finish(&self);
}

/// Runs the verification `plan` against `targets` (by destination name).
pub async fn verify(
    queue: &mut Queue,
    targets: &HashMap<String, Target>,
    plan: &Plan,
    progress: &dyn Progress,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    progress.start(queue.delivered_count(&plan.range)?);
    if plan.deep {
        let mut after = 0;
        loop {
            let page = queue.delivered_page(&plan.range, after, PAGE)?;
            let Some(last) = page.last() else { break };
            after = last.id;
            rows::check_page(&page, targets, true, &mut report).await;
            progress.advance(page.len() as u64);
        }
    } else {
        listed::check(queue, targets, &plan.range, &mut report, progress).await?;
    }
    progress.finish();
    if let Some(listings) = &plan.listings {
        unexplained::check(queue, targets, listings, &plan.range, &mut report).await?;
    }
    Ok(report)
}

/// Why a request was refused, naming the permission it needs.
fn refusal(action: &str, permission: &str, e: &StoreError) -> String {
    if e.status == Some(403) || e.is_denied() {
        format!("{action} was refused (403): the credentials need {permission}")
    } else {
        format!("{action} failed: {}", e.reason())
    }
}

/// A store's request, tried again on a transient error (twice, after a short wait).
async fn with_retries<T, F, Fut>(mut request: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut waits = [200u64, 1000].into_iter();
    loop {
        match request().await {
            Err(e) if e.class == crate::s3::ErrorClass::Transient && !e.is_denied() => {
                match waits.next() {
                    Some(ms) => tokio::time::sleep(std::time::Duration::from_millis(ms)).await,
                    None => return Err(e),
                }
            }
            done => return done,
        }
    }
}
