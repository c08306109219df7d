//! The start-up sweep: abort multipart uploads that s3spool started and no longer needs,
//! so none is left open to cost storage. An upload counts as ours when its key is the key
//! of a queue row; it is still needed only when it is the upload recorded for a row that
//! is not done. Uploads under keys the queue does not know are another tool's: left alone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::Target;
use crate::queue::SharedQueue;

/// How long the sweep may take per destination before the daemon starts without it.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn sweep_orphan_uploads(queue: &SharedQueue, targets: &HashMap<String, Arc<Target>>) {
    let recorded = match queue.call(|q| q.recorded_uploads()).await {
        Ok(recorded) => recorded,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read recorded uploads; skipping the orphan sweep");
            return;
        }
    };
    // Upload ids identify the uploads still needed.
    let needed: HashSet<String> = recorded.iter().map(|r| r.upload_id.clone()).collect();
    for (name, target) in targets {
        // Every key s3spool writes for this destination starts with its prefix.
        let prefix = target.prefix.clone();
        let listed = tokio::time::timeout(SWEEP_TIMEOUT, target.store.list_uploads(&prefix)).await;
        let uploads = match listed {
            Ok(Ok(uploads)) => uploads,
            Ok(Err(e)) => {
                tracing::warn!(destination = %name, error = %e, "cannot list open multipart uploads; skipping the orphan sweep");
                continue;
            }
            Err(_) => {
                tracing::warn!(destination = %name, "listing open multipart uploads timed out; skipping the orphan sweep");
                continue;
            }
        };
        for upload in uploads {
            if needed.contains(&upload.upload_id) {
                continue;
            }
            let (dest, key) = (name.clone(), upload.key.clone());
            let ours = queue
                .call(move |q| q.has_key(&dest, &key))
                .await
                .unwrap_or(false);
            if !ours {
                continue;
            }
            match target
                .store
                .abort_multipart(&upload.key, &upload.upload_id)
                .await
            {
                Ok(()) => {
                    tracing::info!(destination = %name, key = %upload.key, "aborted a multipart upload left by an earlier run")
                }
                Err(e) => {
                    tracing::warn!(destination = %name, key = %upload.key, error = %e, "cannot abort an orphaned multipart upload")
                }
            }
        }
    }
}
