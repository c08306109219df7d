//! The permission probe behind `s3spool check`: every action the daemon needs, tried
//! against a store, each on its own where it can be, so one run shows every missing
//! permission. It leaves nothing behind but what it cannot delete (said in the result).

use bytes::Bytes;
use sha2::Digest;

use super::{CompletedPart, ObjectMeta, ObjectStore, PutBody, StoreError};

/// How one action fared.
#[derive(Debug)]
pub enum Probed {
    Allowed,
    Refused(StoreError),
    /// Not tried, for this reason (an action it needs was refused).
    Skipped(&'static str),
}

/// One action's result.
#[derive(Debug)]
pub struct ActionResult {
    pub action: &'static str,
    pub outcome: Probed,
    /// Only `check` needs it: a refusal is worth knowing, not a failure.
    pub optional: bool,
}

fn result(action: &'static str, outcome: Result<(), StoreError>) -> ActionResult {
    ActionResult {
        action,
        outcome: match outcome {
            Ok(()) => Probed::Allowed,
            Err(e) => Probed::Refused(e),
        },
        optional: false,
    }
}

fn skipped(action: &'static str, why: &'static str) -> ActionResult {
    ActionResult {
        action,
        outcome: Probed::Skipped(why),
        optional: false,
    }
}

/// The actions probed, in order.
pub const ACTIONS: [&str; 9] = [
    "PutObject",
    "HeadObject",
    "CreateMultipartUpload",
    "UploadPart",
    "ListParts",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "ListMultipartUploads",
    "DeleteObject",
];

/// Writes `body` under `key` (the `--challenge` object, and the probe's own).
pub async fn put(store: &dyn ObjectStore, key: &str, body: Bytes) -> Result<(), StoreError> {
    let md5: [u8; 16] = md5::Md5::digest(&body).into();
    let sha256 = hex::encode(sha2::Sha256::digest(&body));
    store
        .put_object(key, PutBody::Memory(body), md5, &probe_meta(sha256))
        .await
        .map(drop)
}

/// Every action the daemon needs, each on its own where it can be, under `prefix`.
pub async fn probe_actions(store: &dyn ObjectStore, prefix: &str) -> Vec<ActionResult> {
    let key = format!("{prefix}s3spool-check-{}", uuid::Uuid::new_v4());
    let body = Bytes::from_static(b"s3spool connection check\n");
    let mut checks = Vec::new();
    let put_result = put(store, &key, body.clone()).await;
    let written = put_result.is_ok();
    checks.push(result("PutObject", put_result));
    if written {
        let head = match store.head_object(&key).await {
            Ok(Some(h)) if h.size == body.len() as u64 => Ok(()),
            Ok(Some(h)) => Err(StoreError::permanent(
                "HeadObject",
                "WrongSize",
                format!("object has {} bytes, {} were written", h.size, body.len()),
            )),
            Ok(None) => Err(StoreError::permanent(
                "HeadObject",
                "NotFound",
                "the object just written is not there".into(),
            )),
            Err(e) => Err(e),
        };
        checks.push(result("HeadObject", head));
    } else {
        checks.push(skipped("HeadObject", "needs PutObject"));
    }

    checks.extend(probe_multipart(store, &format!("{key}-multipart"), &body).await);
    let listed = store.list_uploads(prefix).await.map(drop);
    checks.push(result("ListMultipartUploads", listed));
    let deleted = store.delete_object(&key).await.map_err(|mut e| {
        if written {
            e.message = format!("{} (the probe object {key} was left behind)", e.message);
        }
        e
    });
    // Only `check` deletes: a failure here is worth knowing, not a reason to fail.
    let mut delete = result("DeleteObject", deleted);
    delete.optional = true;
    checks.push(delete);
    checks
}

/// The multipart set: a one-part upload completed for real (so SSE-KMS or a policy on
/// Complete shows up here, not on the first large file), then a second one aborted.
async fn probe_multipart(store: &dyn ObjectStore, key: &str, body: &Bytes) -> Vec<ActionResult> {
    let sha256 = hex::encode(sha2::Sha256::digest(body));
    let md5: [u8; 16] = md5::Md5::digest(body).into();
    let mut checks = Vec::new();
    let upload_id = match store
        .create_multipart(key, &probe_meta(sha256.clone()))
        .await
    {
        Ok(upload_id) => {
            checks.push(result("CreateMultipartUpload", Ok(())));
            upload_id
        }
        Err(e) => {
            checks.push(result("CreateMultipartUpload", Err(e)));
            for action in [
                "UploadPart",
                "ListParts",
                "CompleteMultipartUpload",
                "AbortMultipartUpload",
            ] {
                checks.push(skipped(action, "needs CreateMultipartUpload"));
            }
            return checks;
        }
    };
    let part = store
        .upload_part(key, &upload_id, 1, body.clone(), md5)
        .await;
    let etag = part.as_ref().ok().map(|w| w.etag.clone());
    checks.push(result("UploadPart", part.map(drop)));
    let listed = match (store.list_parts(key, &upload_id).await, &etag) {
        (Ok(Some(parts)), Some(etag)) if !parts.iter().any(|p| &p.etag == etag) => {
            Err(StoreError::permanent(
                "ListParts",
                "MissingPart",
                "the part just uploaded is not listed".into(),
            ))
        }
        (Ok(Some(_)), _) => Ok(()),
        (Ok(None), _) => Err(StoreError::permanent(
            "ListParts",
            "NoSuchUpload",
            "the upload just created is unknown".into(),
        )),
        (Err(e), _) => Err(e),
    };
    checks.push(result("ListParts", listed));
    match etag {
        Some(etag) => {
            let parts = [CompletedPart { number: 1, etag }];
            let completed = store
                .complete_multipart(key, &upload_id, &parts)
                .await
                .map(drop);
            let done = completed.is_ok();
            checks.push(result("CompleteMultipartUpload", completed));
            if done {
                let _ = store.delete_object(key).await;
            } else {
                let _ = store.abort_multipart(key, &upload_id).await;
            }
        }
        None => {
            checks.push(skipped("CompleteMultipartUpload", "needs UploadPart"));
            let _ = store.abort_multipart(key, &upload_id).await;
        }
    }
    // Abort on an upload of its own: the daemon aborts uploads it no longer needs.
    let aborted = match store
        .create_multipart(key, &probe_meta(sha256.clone()))
        .await
    {
        Ok(second) => store.abort_multipart(key, &second).await,
        Err(e) => Err(e),
    };
    checks.push(result("AbortMultipartUpload", aborted));
    checks
}

fn probe_meta(sha256: String) -> ObjectMeta {
    ObjectMeta {
        sha256: Some(sha256),
        content_type: "text/plain",
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::memory::MemoryStore;

    fn denied(operation: &'static str) -> StoreError {
        StoreError::from_response(operation, 403, Some("AccessDenied".into()), String::new())
    }

    fn summary(results: &[ActionResult]) -> Vec<String> {
        results
            .iter()
            .map(|r| match &r.outcome {
                Probed::Allowed => format!("{} ok", r.action),
                Probed::Refused(e) => format!("{} {}", r.action, e.code),
                Probed::Skipped(why) => format!("{} skipped: {why}", r.action),
            })
            .collect()
    }

    #[tokio::test]
    async fn every_action_is_tried_and_nothing_is_left_behind() {
        let store = MemoryStore::new("acme");
        let results = probe_actions(&store, "in/").await;
        assert_eq!(
            results.iter().map(|r| r.action).collect::<Vec<_>>(),
            ACTIONS
        );
        assert!(
            summary(&results).iter().all(|s| s.ends_with(" ok")),
            "{:?}",
            summary(&results)
        );
        assert!(store.keys().is_empty(), "{:?}", store.keys());
        assert_eq!(store.open_uploads(), 0);
    }

    #[tokio::test]
    async fn each_refusal_is_its_own_row_and_what_needs_it_is_skipped() {
        let store = MemoryStore::new("acme");
        store.fail_next("CreateMultipartUpload", denied("CreateMultipartUpload"));
        let results = summary(&probe_actions(&store, "in/").await);
        assert_eq!(
            results,
            [
                "PutObject ok",
                "HeadObject ok",
                "CreateMultipartUpload AccessDenied",
                "UploadPart skipped: needs CreateMultipartUpload",
                "ListParts skipped: needs CreateMultipartUpload",
                "CompleteMultipartUpload skipped: needs CreateMultipartUpload",
                "AbortMultipartUpload skipped: needs CreateMultipartUpload",
                "ListMultipartUploads ok",
                "DeleteObject ok",
            ]
        );

        // Abort is tried on an upload of its own: refused alone, the rest goes through.
        let store = MemoryStore::new("acme");
        store.fail_next("AbortMultipartUpload", denied("AbortMultipartUpload"));
        let results = summary(&probe_actions(&store, "in/").await);
        let refused: Vec<&String> = results.iter().filter(|r| !r.ends_with(" ok")).collect();
        assert_eq!(refused, ["AbortMultipartUpload AccessDenied"]);
    }
}
