//! The per-spool task: notify events and periodic rescans feed the settle policy, and
//! finished files are registered in the queue in batches.

use notify::{EventKind, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::scan::{self, Looked, Seen};
use super::settle::Settler;
use crate::beneath::{Root, RootMoved};
use crate::clock::now_ms;
use crate::config::{AfterUpload, Bound, Spool};
use crate::queue::{Held, NewFile, Registered, RouteRules, SharedQueue, SpoolRules};

/// Files registered per transaction.
const BATCH: usize = 2000;
/// Event hints buffered before we fall back to a full rescan.
const EVENT_BUFFER: usize = 16_384;

/// What a spool watcher needs besides its spool.
#[derive(Clone)]
pub struct WatchContext {
    pub queue: SharedQueue,
    /// The spool's root, held open: every look starts from it.
    pub root: Arc<Root>,
    /// Where the spool's rows go: what registration records and renders keys with.
    pub bound: Arc<Bound>,
    pub host: Arc<str>,
    pub rescan_interval: Duration,
    /// Poked whenever files were queued, so the uploader need not poll.
    pub wake: Arc<Notify>,
    /// Poked when a file found here was delivered already: the finisher cleans it up.
    pub finisher: Arc<Notify>,
    /// Told once the spool is watched (for systemd's READY=1).
    pub watched: mpsc::Sender<()>,
}

/// Watches one spool until `shutdown`. Errors are logged and the watcher goes on: a spool
/// that cannot be watched is still rescanned.
pub async fn watch_spool(spool: Arc<Spool>, ctx: WatchContext, shutdown: CancellationToken) {
    let (tx, mut events) = mpsc::channel::<PathBuf>(EVENT_BUFFER);
    let overflow = Arc::new(AtomicBool::new(false));
    let _watcher = start_notify(&spool, tx, Arc::clone(&overflow));
    // Watched (or, without inotify, rescanned from now on): the daemon may say it is ready.
    let _ = ctx.watched.send(()).await;
    let mut settler = Settler::new(spool.settle);
    let mut rescan = tokio::time::interval(ctx.rescan_interval);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut moved = None;

    loop {
        let mut finished = Vec::new();
        let mut rescanned = false;
        // A candidate already past due (a slow scan, a busy queue) is looked at now.
        let sleep_until = match settler.next_due() {
            Some(due) => due
                .duration_since(crate::clock::now_system())
                .unwrap_or(Duration::ZERO),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = rescan.tick() => {
                if root_holds(&spool, &ctx, &mut moved).await {
                    full_scan(&spool, &ctx, &mut settler).await;
                }
                rescanned = true;
            }
            Some(path) = events.recv() => {
                let mut paths = vec![path];
                while let Ok(more) = events.try_recv() {
                    paths.push(more);
                }
                if !root_holds(&spool, &ctx, &mut moved).await {
                    // Events of the folder renamed away still arrive under the root's
                    // path: none is looked at.
                } else if overflow.swap(false, Ordering::Relaxed) {
                    tracing::warn!(spool = %spool.name, "file event buffer overflowed; rescanning the spool");
                    full_scan(&spool, &ctx, &mut settler).await;
                    rescanned = true;
                } else {
                    look_at(&spool, &ctx.root, paths, &mut settler, &mut finished).await;
                }
            }
            _ = tokio::time::sleep(sleep_until) => {
                let due = settler.due(crate::clock::now_system());
                if root_holds(&spool, &ctx, &mut moved).await {
                    look_at(&spool, &ctx.root, due, &mut settler, &mut finished).await;
                }
            }
        }
        for batch in finished.chunks(BATCH) {
            register(&spool, &ctx, batch.to_vec()).await;
        }
        if rescanned {
            // What it found is registered: tests wait for this line, not for a time.
            tracing::debug!(spool = %spool.name, "rescan done");
        }
    }
}

/// Whether the spool's root still is the folder opened at start (or reload), saying so
/// when that changes: in the log, and as the condition `spool:NAME` that `status` and the
/// metrics show. A spool whose root moved touches nothing; if the path names the same
/// folder again (renamed back), it goes on.
async fn root_holds(spool: &Spool, ctx: &WatchContext, moved: &mut Option<RootMoved>) -> bool {
    let root = Arc::clone(&ctx.root);
    let found = tokio::task::spawn_blocking(move || root.check())
        .await
        .unwrap_or(Ok(()));
    let condition = Held::Spool(spool.name.clone());
    match (found, moved.is_some()) {
        (Ok(()), false) => true,
        (Ok(()), true) => {
            tracing::info!(spool = %spool.name, path = %ctx.root.path().display(),
                "the spool folder is back where it was: the spool goes on");
            if let Err(e) = ctx.queue.call(move |q| q.clear_condition(&condition)).await {
                tracing::warn!(error = %e, "cannot clear the spool's condition for status");
            }
            *moved = None;
            true
        }
        // Still moved, and as before.
        (Err(e), true) if moved.as_ref() == Some(&e) => false,
        (Err(e), _) => {
            tracing::error!(spool = %spool.name, path = %ctx.root.path().display(), error = %e,
                "spool stopped: its folder was replaced; nothing in it is read, sent or deleted until it is back or the config is fixed and reloaded");
            let reason = format!(
                "the spool folder {e}: the spool stops, touching nothing, until the folder is back (or the config names the right one and the daemon is reloaded)"
            );
            let recorded = ctx
                .queue
                .call(move |q| q.set_condition(&condition, &reason, now_ms()))
                .await;
            if let Err(e) = recorded {
                tracing::warn!(error = %e, "cannot record the spool's condition for status");
            }
            *moved = Some(e);
            false
        }
    }
}

fn start_notify(
    spool: &Spool,
    tx: mpsc::Sender<PathBuf>,
    overflow: Arc<AtomicBool>,
) -> Option<notify::RecommendedWatcher> {
    let name = spool.name.clone();
    let handler = move |result: notify::Result<notify::Event>| match result {
        Ok(event) => {
            // Our own reads of files produce access events: ignore all but close-after-write.
            let relevant = match event.kind {
                EventKind::Access(notify::event::AccessKind::Close(
                    notify::event::AccessMode::Write,
                )) => true,
                EventKind::Access(_) | EventKind::Remove(_) => false,
                _ => true,
            };
            if relevant || event.need_rescan() {
                if event.need_rescan() {
                    overflow.store(true, Ordering::Relaxed);
                }
                for path in event.paths {
                    if tx.try_send(path).is_err() {
                        overflow.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(spool = %name, error = %e, "file watch error; relying on rescans");
            overflow.store(true, Ordering::Relaxed);
        }
    };
    // A symlinked folder inside the spool is never followed: not by the watch either.
    let config = notify::Config::default().with_follow_symlinks(false);
    let watcher = notify::RecommendedWatcher::new(handler, config).and_then(|mut w| {
        w.watch(&spool.path, RecursiveMode::Recursive)?;
        Ok(w)
    });
    match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(spool = %spool.name, path = %spool.path.display(), error = %e,
                "cannot watch the spool for events; new files are found by rescans only");
            None
        }
    }
}

/// Walks the whole spool. Files are observed as the walk hands them over, and those
/// finished are queued at once, while the walk reads on (a start-up scan of a full spool
/// reads and queues at the same time). Candidates the walk did not find are forgotten.
async fn full_scan(spool: &Arc<Spool>, ctx: &WatchContext, settler: &mut Settler) {
    let (tx, mut chunks) = mpsc::channel::<Vec<Seen>>(4);
    let spool_for_walk = Arc::clone(spool);
    let root = Arc::clone(&ctx.root);
    let walker = tokio::task::spawn_blocking(move || {
        let mut on_error = |path: &Path, e: std::io::Error| {
            tracing::warn!(spool = %spool_for_walk.name, path = %path.display(), error = %e, "cannot read in spool");
        };
        scan::walk_in_chunks(
            &spool_for_walk,
            &root,
            root.path(),
            BATCH,
            &mut on_error,
            &mut |chunk| tx.blocking_send(chunk).is_ok(),
        );
    });
    settler.begin_walk();
    let mut finished = Vec::new();
    while let Some(chunk) = chunks.recv().await {
        let now = crate::clock::now_system();
        for seen in chunk {
            finished.extend(settler.observe(seen, now));
        }
        if finished.len() >= BATCH {
            register(spool, ctx, std::mem::take(&mut finished)).await;
        }
    }
    for batch in finished.chunks(BATCH) {
        register(spool, ctx, batch.to_vec()).await;
    }
    if let Err(e) = walker.await {
        // Not an empty spool: what the settler knows stays, and the next rescan tries again.
        tracing::error!(spool = %spool.name, error = %e, "the spool walk failed; trying again at the next rescan");
        return;
    }
    settler.end_walk();
}

/// Looks at single paths (from events or due candidates); folders are walked.
async fn look_at(
    spool: &Arc<Spool>,
    root: &Arc<Root>,
    paths: Vec<PathBuf>,
    settler: &mut Settler,
    finished: &mut Vec<Seen>,
) {
    if paths.is_empty() {
        return;
    }
    let spool_for_look = Arc::clone(spool);
    let root = Arc::clone(root);
    let looked = tokio::task::spawn_blocking(move || {
        let mut results = Vec::with_capacity(paths.len());
        for path in paths {
            match scan::look(&spool_for_look, &root, &path) {
                Looked::Dir => {
                    // A folder moved in arrives as one event: walk it.
                    let files = scan::walk(&spool_for_look, &root, &path, &mut |p, e| {
                        tracing::warn!(path = %p.display(), error = %e, "cannot read in spool");
                    });
                    results.extend(files.into_iter().map(|s| (s.path.clone(), Some(s))));
                }
                Looked::File(seen) => results.push((path, Some(seen))),
                Looked::Nothing => results.push((path, None)),
            }
        }
        results
    })
    .await
    .unwrap_or_default();
    let now = crate::clock::now_system();
    for (path, seen) in looked {
        match seen {
            Some(seen) => finished.extend(settler.observe(seen, now)),
            None => settler.forget(&path),
        }
    }
}

/// Queues finished files; files found delivered already are the finisher's.
async fn register(spool: &Arc<Spool>, ctx: &WatchContext, batch: Vec<Seen>) {
    let mut files: Vec<NewFile> = batch
        .iter()
        .map(|seen| NewFile {
            spool: spool.name.clone(),
            rel_path: seen.rel.clone(),
            path: seen.path.clone(),
            destination: ctx.bound.destination.clone(),
            bucket: ctx.bound.bucket.clone(),
            stamp: seen.stamp,
            birth_ns: seen.birth_ns,
            seen_at_ms: seen.seen_at_ms,
            sha256: None,
        })
        .collect();
    let utf8: Arc<std::collections::HashSet<String>> = Arc::new(
        batch
            .iter()
            .filter(|s| s.utf8)
            .map(|s| s.rel.clone())
            .collect(),
    );
    let mut queued = 0usize;
    let mut delivered_before = false;
    // A second round for kept files found with another inode, hashed in between.
    for round in 0..2 {
        let Some(outcomes) = queue_files(spool, ctx, &files, &utf8).await else {
            return;
        };
        let mut lookalikes = Vec::new();
        for (file, outcome) in files.into_iter().zip(outcomes) {
            match outcome {
                Registered::Queued(id) => {
                    queued += 1;
                    tracing::debug!(spool = %spool.name, id, path = %file.rel_path, "queued");
                }
                Registered::Refused(id) => {
                    tracing::warn!(spool = %spool.name, id, path = %file.rel_path, "file cannot be delivered; see `s3spool show`");
                }
                Registered::AlreadyDone(_) => delivered_before = true,
                Registered::Followed(id) => {
                    queued += 1;
                    tracing::info!(spool = %spool.name, id, path = %file.rel_path, "a queued file moved inside the spool; its row follows it");
                }
                Registered::FollowedFailed(id) => {
                    tracing::info!(spool = %spool.name, id, path = %file.rel_path,
                        "a failed file moved inside the spool; its row follows it and stays failed: `s3spool retry ID` sends it from here");
                }
                Registered::Lookalike(_) if round == 0 => lookalikes.push(file),
                Registered::Restored(id) => {
                    tracing::info!(spool = %spool.name, id, path = %file.rel_path,
                        "a kept file came back with another inode (restored or copied) and the same content: it stays delivered");
                }
                Registered::AlreadyQueued(_)
                | Registered::Kept(_)
                | Registered::Lookalike(_)
                | Registered::CleanedUpSince(_) => {}
            }
        }
        if lookalikes.is_empty() {
            break;
        }
        files = hashed(&ctx.root, lookalikes).await;
    }
    if queued > 0 {
        tracing::info!(spool = %spool.name, files = queued, "queued");
        ctx.wake.notify_one();
    }
    if delivered_before {
        ctx.finisher.notify_one();
    }
}

/// Registers `files` in one transaction; `None` (said in the log) if the queue failed.
async fn queue_files(
    spool: &Arc<Spool>,
    ctx: &WatchContext,
    files: &[NewFile],
    utf8: &Arc<std::collections::HashSet<String>>,
) -> Option<Vec<Registered>> {
    let (spool2, dest, host, root, utf8) = (
        Arc::clone(spool),
        Arc::clone(&ctx.bound),
        Arc::clone(&ctx.host),
        Arc::clone(&ctx.root),
        Arc::clone(utf8),
    );
    let now = crate::clock::now();
    let files_for_db = files.to_vec();
    let rules = SpoolRules {
        keeps: spool.after_upload == AfterUpload::Keep,
        unique_keys: spool.only_route().key.unique_per_row(),
    };
    let routes = [RouteRules {
        destination: dest.destination.clone(),
        bucket: dest.bucket.clone(),
        unique_keys: rules.unique_keys,
    }];
    let result = ctx
        .queue
        .grouped(move |q| {
            q.register_to(&files_for_db, rules, &routes, now.timestamp_millis(), &mut |file, _, id| {
                if !utf8.contains(&file.rel_path) {
                    return Err("the file name is not valid UTF-8, so it cannot be an object key; rename the file".into());
                }
                spool2.only_route().object_key(&spool2.name, &dest.prefix, &host, &file.rel_path, id, now)
            }, |old_path, stamp, likeness| scan::moved_away(&root, old_path, stamp, likeness))
        })
        .await;
    match result {
        Ok(outcomes) => Some(outcomes),
        Err(e) => {
            // Not lost: the files are still in the spool and the next rescan tries again.
            tracing::error!(spool = %spool.name, error = %e, files = files.len(), "cannot queue files; will retry at the next rescan");
            None
        }
    }
}

/// The files with their SHA-256, read beneath the root on a blocking thread. A file that
/// cannot be read, or changed meanwhile, is left out: a later look sees it again.
async fn hashed(root: &Arc<Root>, files: Vec<NewFile>) -> Vec<NewFile> {
    let root = Arc::clone(root);
    tokio::task::spawn_blocking(move || {
        files
            .into_iter()
            .filter_map(|mut file| {
                let (sha256, stamp) = match sha256_of(&root, &file.rel_path) {
                    Ok(read) => read,
                    // Gone meanwhile: nothing to say. Unreadable: said, or it would wait
                    // unseen by `status` (it is neither queued nor failed).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                    Err(e) => {
                        tracing::warn!(path = %file.rel_path, error = %e,
                            "a file like a delivered kept one cannot be read to compare its content; it waits until it can be");
                        return None;
                    }
                };
                (stamp == file.stamp).then(|| {
                    file.sha256 = Some(sha256);
                    file
                })
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// The hex SHA-256 of the file `rel` beneath `root`, and its stamp once read.
fn sha256_of(root: &Root, rel: &str) -> std::io::Result<(String, crate::queue::FileStamp)> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = root.entry(Path::new(rel))?.open_file()?;
    let mut sha256 = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha256.update(&buf[..n]);
    }
    let stamp = crate::queue::FileStamp::of(&file.metadata()?);
    Ok((hex::encode(sha256.finalize()), stamp))
}
