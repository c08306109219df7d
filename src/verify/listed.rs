//! Delivered rows checked against listing pages instead of one HEAD each.
//!
//! The rows are read in key order (per destination and bucket) and walked alongside a
//! ListObjectsV2 listing: one request answers for up to a thousand rows. A listing only
//! ever clears a row: one whose object is not listed, or listed with another size or
//! ETag, is asked again by HEAD, whose answer is the verdict (and names what differs).
//!
//! A destination's walk lists only the prefix its rows' keys share (every key sorted
//! between its first and last starts with what those two share). Where the rows are
//! sparse among the objects (a `--since` range in a bucket of years, another writer's
//! objects between them), walking the listing would read more objects than rows: after a
//! page's worth of objects that no row matched, the walk HEADs the next row and lists
//! again from just after it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::rows::{self, compare, Recorded};
use super::{with_retries, Progress, Report, Target, PAGE};
use crate::queue::{AuditRange, FileRow, Queue};
use crate::s3::{ListFrom, ListedObject, ObjectHead, ObjectStore};

/// Objects passed over without a row before the walk jumps ahead.
pub(super) const JUMP_AFTER: usize = 1000;

/// Checks every delivered row in `range`, most by listing pages.
pub(super) async fn check(
    queue: &mut Queue,
    targets: &HashMap<String, Target>,
    range: &AuditRange,
    report: &mut Report,
    progress: &dyn Progress,
) -> anyhow::Result<()> {
    queue.order_delivered(range)?;
    let mut walk: Option<Walk> = None;
    let mut after: Option<FileRow> = None;
    loop {
        let page = queue.delivered_page_by_key(after.as_ref(), PAGE)?;
        if page.is_empty() {
            break;
        }
        let mut doubtful = Vec::new();
        for row in &page {
            if !walk.as_ref().is_some_and(|w| w.covers(row)) {
                let (first, last) = queue.delivered_key_bounds(&row.destination, &row.bucket)?;
                walk = Some(Walk::new(row, targets, shared_head(&first, &last)));
            }
            let walk = walk.as_mut().expect("just made");
            if walk.clears(row, report).await {
                report.rows += 1;
                report.by_listing += 1;
            } else {
                doubtful.push(row.clone());
            }
        }
        rows::check_page(&doubtful, targets, false, report).await;
        progress.advance(page.len() as u64);
        after = page.into_iter().last();
    }
    Ok(())
}

/// A listing of one destination's bucket, walked in step with its rows.
struct Walk {
    destination: String,
    bucket: String,
    /// `None`: no listing (the destination is gone or its store could not be made, or
    /// listing was refused); every row goes to HEAD, which says why.
    store: Option<Arc<dyn ObjectStore>>,
    /// What every row's key starts with: the listing's prefix.
    prefix: String,
    /// Listed objects not yet passed, in key order.
    listed: VecDeque<ListedObject>,
    /// Where the next page starts; `None` after the last page.
    from: Option<ListFrom>,
    /// Objects passed over since a row last matched one.
    passed_over: usize,
}

impl Walk {
    fn new(row: &FileRow, targets: &HashMap<String, Target>, prefix: String) -> Walk {
        let store = match targets.get(&row.destination).map(|t| &t.store) {
            Some(Ok(store)) if store.bucket() == row.bucket => Some(Arc::clone(store)),
            Some(Ok(store)) => Some(store.with_bucket(&row.bucket)),
            _ => None,
        };
        Walk {
            destination: row.destination.clone(),
            bucket: row.bucket.clone(),
            store,
            prefix,
            listed: VecDeque::new(),
            from: Some(ListFrom::First),
            passed_over: 0,
        }
    }

    fn covers(&self, row: &FileRow) -> bool {
        row.destination == self.destination && row.bucket == self.bucket
    }

    /// Whether the listing shows `row`'s object as recorded. False is no verdict: the
    /// row is then asked by HEAD.
    async fn clears(&mut self, row: &FileRow, report: &mut Report) -> bool {
        let key = row.key.as_deref().unwrap_or_default();
        let Some(store) = self.store.clone() else {
            return false;
        };
        loop {
            while self.listed.front().is_some_and(|o| o.key.as_str() < key) {
                self.listed.pop_front();
                self.passed_over += 1;
            }
            if let Some(object) = self.listed.front() {
                if object.key != key {
                    // Not listed where it would be.
                    return false;
                }
                self.passed_over = 0;
                return row.etag.is_some()
                    && object.etag.is_some()
                    && compare(&Recorded::of(row), &head_of(object)).is_none();
            }
            let Some(from) = self.from.take() else {
                // The listing ended before this key.
                return false;
            };
            if self.passed_over >= JUMP_AFTER {
                self.passed_over = 0;
                self.from = Some(ListFrom::After(key.to_string()));
                return false;
            }
            match with_retries(|| store.list_objects(&self.prefix, from.clone())).await {
                Ok(page) => {
                    report.list_requests += 1;
                    self.listed.extend(page.objects);
                    self.from = page.next.map(ListFrom::Next);
                }
                Err(e) => {
                    report.notes.push(format!(
                        "s3://{}: {}; its rows were checked by HEAD instead",
                        self.bucket,
                        super::refusal("ListObjectsV2", "s3:ListBucket", &e)
                    ));
                    self.store = None;
                    return false;
                }
            }
        }
    }
}

/// What a listing says of an object, as a HEAD would (without its metadata).
fn head_of(object: &ListedObject) -> ObjectHead {
    ObjectHead {
        size: object.size,
        etag: object.etag.clone(),
        ..ObjectHead::default()
    }
}

/// The longest start `first` and `last` share (whole characters): every key sorted
/// between them starts with it too.
fn shared_head(first: &str, last: &str) -> String {
    let mut end = 0;
    for ((i, a), b) in first.char_indices().zip(last.chars()) {
        if a != b {
            break;
        }
        end = i + a.len_utf8();
    }
    first[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::shared_head;

    #[test]
    fn the_shared_head_stops_at_the_first_difference_and_keeps_whole_characters() {
        assert_eq!(shared_head("in/2026/a", "in/2027/b"), "in/202");
        assert_eq!(shared_head("in/a", "in/a"), "in/a");
        assert_eq!(shared_head("a", "b"), "");
        assert_eq!(shared_head("in/é1", "in/è2"), "in/");
        assert_eq!(shared_head("in/", "in/zz"), "in/");
    }
}
