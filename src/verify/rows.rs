//! Each delivered row against its object: HEAD, and with `--deep` the bytes read back.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::{refusal, with_retries, Kind, Problem, Report, Target, Unchecked};
use crate::queue::FileRow;
use crate::s3::{bare_etag, ObjectHead, ObjectStore};

/// What became of one row.
enum Verdict {
    Good { read_back: bool },
    Problem(Problem),
    Unchecked(Unchecked),
}

/// Checks a page of rows, each destination's at most `concurrency` at once.
pub(super) async fn check_page(
    page: &[FileRow],
    targets: &HashMap<String, Target>,
    deep: bool,
    report: &mut Report,
) {
    let limits: HashMap<&str, Arc<Semaphore>> = targets
        .iter()
        .map(|(name, t)| {
            (
                name.as_str(),
                Arc::new(Semaphore::new(t.concurrency.max(1))),
            )
        })
        .collect();
    let verdicts = futures::future::join_all(page.iter().map(|row| {
        let limits = &limits;
        async move {
            let Some(target) = targets.get(&row.destination) else {
                return Verdict::Unchecked(Unchecked {
                    what: what(row),
                    reason: format!(
                        "destination {:?} is not in the config any more",
                        row.destination
                    ),
                });
            };
            let store = match &target.store {
                Ok(store) if store.bucket() == row.bucket => Arc::clone(store),
                Ok(store) => store.with_bucket(&row.bucket),
                Err(why) => {
                    return Verdict::Unchecked(Unchecked {
                        what: what(row),
                        reason: why.clone(),
                    })
                }
            };
            let _slot = limits[row.destination.as_str()].acquire().await;
            check_row(store.as_ref(), row, deep).await
        }
    }))
    .await;
    for verdict in verdicts {
        report.rows += 1;
        match verdict {
            Verdict::Good { read_back } => report.read_back += u64::from(read_back),
            Verdict::Problem(p) => report.problems.push(p),
            Verdict::Unchecked(u) => report.unchecked.push(u),
        }
    }
}

fn what(row: &FileRow) -> String {
    format!(
        "row {} ({}) s3://{}/{}",
        row.id,
        row.spool,
        row.bucket,
        row.key.as_deref().unwrap_or_default()
    )
}

async fn check_row(store: &dyn ObjectStore, row: &FileRow, deep: bool) -> Verdict {
    let key = row.key.as_deref().unwrap_or_default();
    let problem = |kind, detail: String| {
        Verdict::Problem(Problem {
            kind,
            spool: row.spool.clone(),
            id: Some(row.id),
            bucket: row.bucket.clone(),
            key: key.to_string(),
            detail,
        })
    };
    let head = match with_retries(|| store.head_object(key)).await {
        Ok(head) => head,
        Err(e) => {
            return Verdict::Unchecked(Unchecked {
                what: what(row),
                reason: refusal(
                    "HeadObject",
                    "s3:GetObject (and s3:ListBucket, without which S3 answers 403 for a missing object too)",
                    &e,
                ),
            })
        }
    };
    let Some(head) = head else {
        return problem(Kind::Missing, "no object at the recorded key".into());
    };
    if let Some((kind, detail)) = compare(&Recorded::of(row), &head) {
        return problem(kind, detail);
    }
    if !deep {
        return Verdict::Good { read_back: false };
    }
    let Some(recorded) = recorded_sha256(row).or(head.sha256.as_deref()) else {
        // Nothing to compare the bytes with (a row from before SHA-256s were recorded).
        return Verdict::Good { read_back: false };
    };
    match read_back(store, key).await {
        Ok(None) => problem(Kind::Missing, "the object went while it was read".into()),
        Ok(Some(found)) if found == recorded => Verdict::Good { read_back: true },
        Ok(Some(found)) => problem(
            Kind::Sha256Differs,
            format!("its bytes hash to {found}; the queue recorded {recorded}"),
        ),
        Err(e) => Verdict::Unchecked(Unchecked {
            what: what(row),
            reason: refusal("GetObject", "s3:GetObject", &e),
        }),
    }
}

/// The SHA-256 of the object's bytes, read back (tried again on a transient error).
async fn read_back(
    store: &dyn ObjectStore,
    key: &str,
) -> Result<Option<String>, crate::s3::StoreError> {
    with_retries(|| async move {
        let mut sha256 = Sha256::new();
        let read = store
            .read_object(key, &mut |bytes| sha256.update(bytes))
            .await?;
        Ok(read.map(|_| hex::encode(sha256.finalize())))
    })
    .await
}

/// The SHA-256 the row recorded for its object's bytes, if any.
fn recorded_sha256(row: &FileRow) -> Option<&str> {
    row.sha256.as_deref().filter(|s| !s.is_empty())
}

/// What the queue recorded of a row's object.
pub(super) struct Recorded<'a> {
    etag: Option<&'a str>,
    size: u64,
    sha256: Option<&'a str>,
}

impl<'a> Recorded<'a> {
    pub(super) fn of(row: &'a FileRow) -> Recorded<'a> {
        Recorded {
            etag: row.etag.as_deref(),
            size: row.object_size.unwrap_or(row.stamp.size),
            sha256: recorded_sha256(row),
        }
    }
}

/// The first way `head` differs from what was recorded, most telling first: another
/// ETag means the key was written again, whatever else differs with it.
pub(super) fn compare(recorded: &Recorded<'_>, head: &ObjectHead) -> Option<(Kind, String)> {
    let size = recorded.size;
    if let (Some(etag), Some(found)) = (recorded.etag, head.etag.as_deref()) {
        if bare_etag(etag) != bare_etag(found) {
            return Some((
                Kind::Overwritten,
                format!(
                    "ETag {} (the queue recorded {}), {} bytes (recorded {size})",
                    bare_etag(found),
                    bare_etag(etag),
                    head.size
                ),
            ));
        }
    }
    if head.size != size {
        return Some((
            Kind::SizeDiffers,
            format!("{} bytes; the queue recorded {size}", head.size),
        ));
    }
    if let (Some(sha256), Some(found)) = (recorded.sha256, head.sha256.as_deref()) {
        if sha256 != found {
            return Some((
                Kind::Sha256Differs,
                format!("its x-amz-meta-sha256 is {found}; the queue recorded {sha256}"),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(etag: &str, size: u64, sha256: Option<&str>) -> ObjectHead {
        ObjectHead {
            size,
            etag: Some(etag.into()),
            sha256: sha256.map(str::to_string),
            ..ObjectHead::default()
        }
    }

    #[test]
    fn the_most_telling_difference_is_named() {
        let recorded = Recorded {
            etag: Some("\"abc\""),
            size: 10,
            sha256: Some("s1"),
        };
        let kind = |h: ObjectHead| compare(&recorded, &h).map(|(k, _)| k);
        assert_eq!(
            kind(head("abc", 10, Some("s1"))),
            None,
            "quotes aside, the same"
        );
        assert_eq!(
            kind(head("abc", 10, None)),
            None,
            "no SHA-256 on the object"
        );
        assert_eq!(kind(head("xyz", 11, Some("s2"))), Some(Kind::Overwritten));
        assert_eq!(kind(head("abc", 11, Some("s1"))), Some(Kind::SizeDiffers));
        assert_eq!(kind(head("abc", 10, Some("s2"))), Some(Kind::Sha256Differs));
    }
}
