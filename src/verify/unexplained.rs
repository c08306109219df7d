//! `--unexplained`: the objects under each spool's fixed key prefix that no row or
//! manifest of the queue explains (a second copy, another writer), and each written
//! manifest against the rows of its batch.
//!
//! An object older than the newest delivery a purge removed may be a purged row's: only
//! newer ones are judged (and with `--since`, only those written since), so a queue that
//! keeps a bounded history never makes every old object look unexplained.

use std::collections::{BTreeSet, HashMap};

use serde::Deserialize;

use super::{refusal, with_retries, Kind, Problem, Report, Target, Unchecked};
use crate::queue::{AuditRange, Queue};
use crate::s3::ListFrom;

/// Host and S3 clocks may differ: an object written this long after the purge horizon
/// by the host's clock may still be a purged row's.
const CLOCK_SLACK_MS: i64 = 5 * 60 * 1000;

/// One spool's prefix to list.
#[derive(Debug, Clone)]
pub struct Listing {
    pub spool: String,
    pub destination: String,
    pub bucket: String,
    /// The start of every key the spool writes (destination prefix and the template's
    /// fixed head).
    pub prefix: String,
    /// The prefix is no more than the destination's own: other writers may share it.
    pub shared: bool,
}

pub(super) async fn check(
    queue: &mut Queue,
    targets: &HashMap<String, Target>,
    listings: &[Listing],
    range: &AuditRange,
    report: &mut Report,
) -> anyhow::Result<()> {
    for listing in distinct(listings) {
        list_one(queue, targets, listing, range, report).await?;
    }
    manifests(queue, targets, range, report).await
}

/// The listings with none inside another of the same bucket (one spool's prefix may
/// start with another's): each object is judged once.
fn distinct(listings: &[Listing]) -> Vec<&Listing> {
    listings
        .iter()
        .filter(|l| {
            !listings.iter().any(|other| {
                other.bucket == l.bucket
                    && other.prefix != l.prefix
                    && l.prefix.starts_with(&other.prefix)
            })
        })
        .fold(Vec::new(), |mut kept: Vec<&Listing>, l| {
            if !kept
                .iter()
                .any(|k| k.bucket == l.bucket && k.prefix == l.prefix)
            {
                kept.push(l);
            }
            kept
        })
}

async fn list_one(
    queue: &mut Queue,
    targets: &HashMap<String, Target>,
    listing: &Listing,
    range: &AuditRange,
    report: &mut Report,
) -> anyhow::Result<()> {
    let what = format!("s3://{}/{}", listing.bucket, listing.prefix);
    let store = match targets.get(&listing.destination).map(|t| &t.store) {
        Some(Ok(store)) if store.bucket() == listing.bucket => std::sync::Arc::clone(store),
        Some(Ok(store)) => store.with_bucket(&listing.bucket),
        Some(Err(why)) => {
            report.unchecked.push(Unchecked {
                what,
                reason: why.clone(),
            });
            return Ok(());
        }
        None => return Ok(()),
    };
    if listing.shared {
        report.notes.push(format!(
            "spool {}: its keys start with a placeholder, so its prefix is the destination's own ({what}); other writers may share it, and their objects show as unexplained",
            listing.spool
        ));
    }
    queue.gather_known_keys(&listing.bucket, &listing.prefix)?;
    // Judged: written after the purge horizon (and since the range's start).
    let horizon = queue
        .purge_horizon(&listing.bucket)?
        .map(|ms| ms + CLOCK_SLACK_MS);
    let judged_after = match (horizon, range.since_ms) {
        (Some(h), Some(s)) => Some(h.max(s)),
        (h, s) => h.or(s),
    };
    let mut not_judged = 0u64;
    let mut from = ListFrom::First;
    loop {
        let page = match with_retries(|| store.list_objects(&listing.prefix, from.clone())).await {
            Ok(page) => page,
            Err(e) => {
                report.unchecked.push(Unchecked {
                    what,
                    reason: refusal("ListObjectsV2", "s3:ListBucket (for --unexplained)", &e),
                });
                return Ok(());
            }
        };
        report.listed += page.objects.len() as u64;
        let (judged, older): (Vec<_>, Vec<_>) =
            page.objects
                .iter()
                .partition(|o| match (judged_after, o.last_modified) {
                    (Some(after), Some(at)) => at.timestamp_millis() >= after,
                    (Some(_), None) => false,
                    (None, _) => true,
                });
        not_judged += older.len() as u64;
        let keys: Vec<String> = judged.iter().map(|o| o.key.clone()).collect();
        let unknown: BTreeSet<String> = queue.unknown_keys(&keys)?.into_iter().collect();
        for object in judged.into_iter().filter(|o| unknown.contains(&o.key)) {
            report.problems.push(Problem {
                kind: Kind::Unexplained,
                spool: listing.spool.clone(),
                id: None,
                bucket: listing.bucket.clone(),
                key: object.key.clone(),
                detail: format!(
                    "{} bytes, written {}: no row or manifest of the queue wrote it (a second copy, or another writer)",
                    object.size,
                    object
                        .last_modified
                        .map_or_else(|| "at an unknown time".into(), |t| t.to_rfc3339())
                ),
            });
        }
        match page.next {
            Some(token) => from = ListFrom::Next(token),
            None => break,
        }
    }
    if not_judged > 0 {
        report.notes.push(format!(
            "{what}: {not_judged} object(s) written before the range or before rows were purged were not judged"
        ));
    }
    Ok(())
}

/// The parts of a manifest verify compares.
#[derive(Deserialize)]
struct Manifest {
    files: Vec<ManifestFile>,
}

#[derive(Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct ManifestFile {
    sink_path: String,
    size: u64,
    sha256: String,
}

/// Each written manifest in range lists exactly the delivered rows of its batch.
async fn manifests(
    queue: &mut Queue,
    targets: &HashMap<String, Target>,
    range: &AuditRange,
    report: &mut Report,
) -> anyhow::Result<()> {
    for batch in queue.written_batches(range)? {
        let key = batch.manifest_key.clone().unwrap_or_default();
        let what = format!(
            "manifest of batch {} s3://{}/{key}",
            batch.name, batch.bucket
        );
        let rows = queue.batch_files(batch.id)?;
        if rows.len() as u64 != batch.files {
            report.notes.push(format!(
                "{what}: {} of its {} rows were purged; not compared",
                batch.files - rows.len().min(batch.files as usize) as u64,
                batch.files
            ));
            continue;
        }
        let store = match targets.get(&batch.destination).map(|t| &t.store) {
            Some(Ok(store)) => store.with_bucket(&batch.bucket),
            Some(Err(why)) => {
                report.unchecked.push(Unchecked {
                    what,
                    reason: why.clone(),
                });
                continue;
            }
            None => {
                report.unchecked.push(Unchecked {
                    what,
                    reason: format!(
                        "destination {:?} is not in the config any more",
                        batch.destination
                    ),
                });
                continue;
            }
        };
        let read = fetch(store.as_ref(), &key).await;
        let problem = |kind, detail: String| Problem {
            kind,
            spool: batch.spool.clone(),
            id: None,
            bucket: batch.bucket.clone(),
            key: key.clone(),
            detail,
        };
        let bytes = match read {
            Err(e) => {
                report.unchecked.push(Unchecked {
                    what,
                    reason: refusal("GetObject", "s3:GetObject", &e),
                });
                continue;
            }
            Ok(None) => {
                report.problems.push(problem(
                    Kind::Missing,
                    format!("the manifest of batch {} is not there", batch.name),
                ));
                continue;
            }
            Ok(Some(bytes)) => bytes,
        };
        report.manifests += 1;
        let listed: BTreeSet<ManifestFile> = match serde_json::from_slice::<Manifest>(&bytes) {
            Ok(m) => m.files.into_iter().collect(),
            Err(e) => {
                report.problems.push(problem(
                    Kind::ManifestDiffers,
                    format!("batch {}: not a manifest s3spool wrote ({e})", batch.name),
                ));
                continue;
            }
        };
        let expected: BTreeSet<ManifestFile> = rows
            .iter()
            .map(|row| ManifestFile {
                sink_path: format!("s3://{}/{}", row.bucket, row.key.as_deref().unwrap_or("")),
                size: row.object_size.unwrap_or(row.stamp.size),
                sha256: row.sha256.clone().unwrap_or_default(),
            })
            .collect();
        if listed != expected {
            let extra: Vec<&str> = listed
                .difference(&expected)
                .map(|f| f.sink_path.as_str())
                .collect();
            let absent: Vec<&str> = expected
                .difference(&listed)
                .map(|f| f.sink_path.as_str())
                .collect();
            report.problems.push(problem(
                Kind::ManifestDiffers,
                format!(
                    "batch {}: lists {} file(s), the batch delivered {}; not as delivered: [{}]; delivered but not listed so: [{}]",
                    batch.name,
                    listed.len(),
                    expected.len(),
                    extra.join(", "),
                    absent.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// A manifest's bytes (small), tried again on a transient error.
async fn fetch(
    store: &dyn crate::s3::ObjectStore,
    key: &str,
) -> Result<Option<Vec<u8>>, crate::s3::StoreError> {
    with_retries(|| async move {
        let mut bytes = Vec::new();
        let read = store
            .read_object(key, &mut |chunk| bytes.extend_from_slice(chunk))
            .await?;
        Ok(read.map(|_| bytes))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(bucket: &str, prefix: &str) -> Listing {
        Listing {
            spool: prefix.into(),
            destination: "d".into(),
            bucket: bucket.into(),
            prefix: prefix.into(),
            shared: false,
        }
    }

    #[test]
    fn a_prefix_inside_another_of_its_bucket_is_listed_once() {
        let all = [
            listing("b", "in/a/"),
            listing("b", "in/"),
            listing("b", "in/"),
            listing("c", "in/a/"),
        ];
        let kept: Vec<(&str, &str)> = distinct(&all)
            .iter()
            .map(|l| (l.bucket.as_str(), l.prefix.as_str()))
            .collect();
        assert_eq!(kept, [("b", "in/"), ("c", "in/a/")]);
    }
}
