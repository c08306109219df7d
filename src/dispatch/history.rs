//! The queue's bounded history: every few minutes, delivered rows older than `history`
//! that nothing in a spool needs are forgotten, a batch at a time, and the pages they
//! took are given back to the file system (see `queue/history.rs` for which rows).

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::queue::{SharedQueue, FORGET_BATCH};

/// How often the daemon looks for rows past `history`.
const EVERY: Duration = Duration::from_secs(600);
/// A pause between two batches: the daemon's own writes go first.
const BETWEEN_BATCHES: Duration = Duration::from_millis(50);
/// Free pages given back per round (of 4 KiB): 64 MiB.
const RELEASE_PAGES: u32 = 16 * 1024;

/// Keeps the queue's history to `history` until `shutdown`; with `None`, keeps it all.
pub async fn keep_history(
    queue: SharedQueue,
    history: Option<Duration>,
    state_dir: PathBuf,
    shutdown: CancellationToken,
) {
    let Some(history) = history else { return };
    if !give_space_back(&queue, &state_dir).await {
        tracing::debug!("the queue keeps freed pages (no room for its one VACUUM)");
    }
    loop {
        let forgotten = forget_round(&queue, history, &shutdown).await;
        if forgotten > 0 {
            match queue.call(|q| q.release_space(RELEASE_PAGES)).await {
                Ok(size) => tracing::info!(
                    rows = forgotten,
                    queue_bytes = size,
                    "forgot delivered rows older than history"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot give the queue's free pages back"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One round: batches until nothing is left to forget (or a stop); how many went.
async fn forget_round(
    queue: &SharedQueue,
    history: Duration,
    shutdown: &CancellationToken,
) -> usize {
    let now = crate::clock::now_ms();
    let before = now - history.as_millis() as i64;
    let mut total = 0;
    loop {
        match queue
            .call(move |q| q.forget_delivered(before, FORGET_BATCH, now))
            .await
        {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot forget old delivered rows; tried again later");
                break;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(BETWEEN_BATCHES) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    if let Err(e) = queue.call(move |q| q.forget_empty_batches(before)).await {
        tracing::warn!(error = %e, "cannot forget old manifest batches");
    }
    total
}

/// A queue made before bounded histories keeps freed pages until one full VACUUM turns
/// on `auto_vacuum`. Done once, when `state_dir` has room for the copy it writes; the
/// queue waits meanwhile (said in the log).
async fn give_space_back(queue: &SharedQueue, state_dir: &std::path::Path) -> bool {
    let (gives, size) = match queue
        .call(|q| Ok((q.gives_space_back()?, q.file_size()?)))
        .await
    {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the queue's vacuum mode");
            return false;
        }
    };
    if gives {
        return true;
    }
    let free = crate::pressure::free_space(state_dir).unwrap_or(0);
    if free < size.saturating_mul(2) {
        tracing::warn!(
            queue_bytes = size,
            free_bytes = free,
            "the queue cannot give freed space back until state_dir has room for one copy of it (twice its size free); forgotten rows' pages are reused meanwhile"
        );
        return false;
    }
    tracing::info!(
        queue_bytes = size,
        "converting the queue once so it gives the space of forgotten rows back (a VACUUM: the queue waits until it ends)"
    );
    match queue.call(|q| q.convert_to_incremental_vacuum()).await {
        Ok(()) => {
            tracing::info!("the queue now gives freed space back");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot convert the queue; forgotten rows' pages are reused instead");
            false
        }
    }
}
