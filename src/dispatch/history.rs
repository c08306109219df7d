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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;
    use crate::dispatch::{sweep_orphan_uploads, sweep_periodically, SweepSchedule};
    use crate::queue::{Done, FileStamp, NewFile, Queue, SourceOutcome, SpoolRules};
    use crate::testing::Fixture;

    const HISTORY: Duration = Duration::from_secs(3600);
    const FILES_A_MINUTE: usize = 20;
    const HOURS: usize = 8;

    /// Queues, delivers and cleans up `files` at once, as the pipeline would.
    fn deliver(q: &mut Queue, files: &[NewFile]) -> crate::queue::Result<()> {
        let now = crate::clock::now_ms();
        q.register(
            files,
            SpoolRules::default(),
            now,
            |f, id| Ok(format!("in/{}-{id}", f.rel_path)),
            |_, _, _| false,
        )?;
        for row in q.claim(files.len(), now, Duration::from_secs(60))? {
            let done = Done {
                etag: format!("\"{:032x}\"", row.id),
                sha256: format!("{:064x}", row.id),
                source_sha256: None,
                object_size: row.stamp.size,
                rows: None,
                format: "raw".into(),
            };
            assert!(q.mark_done(row.id, row.claim, &done, None, now)?);
            q.mark_source_finished(row.id, SourceOutcome::Deleted, now)?;
        }
        Ok(())
    }

    fn new_file(spool: &Path, n: usize) -> NewFile {
        let rel_path = format!("d{}/orders-{n:08}.csv", n % 10);
        NewFile {
            spool: "orders".into(),
            path: spool.join(&rel_path),
            rel_path,
            destination: "lake".into(),
            bucket: "acme".into(),
            stamp: FileStamp {
                size: 100 + (n % 900) as u64,
                mtime_ns: n as i64,
                inode: n as u64,
            },
            birth_ns: None,
            seen_at_ms: crate::clock::now_ms(),
            sha256: None,
        }
    }

    /// What the queue holds at one look, read by a connection of its own.
    #[derive(Debug, Clone, Copy)]
    struct Look {
        file_bytes: i64,
        rows: i64,
        kept_keys: i64,
    }

    fn look(db: &Path) -> Look {
        let conn = rusqlite::Connection::open(db).unwrap();
        let count = |table: &str| -> i64 {
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .unwrap()
        };
        Look {
            file_bytes: std::fs::metadata(db).unwrap().len() as i64,
            rows: count("files"),
            kept_keys: count("purged_keys"),
        }
    }

    /// Eight hours of a steady load, on a paused clock, with the daemon's own history
    /// and sweep tasks (the shortest history allowed, where forgotten rows' keys are kept
    /// longest): once the history and two sweeps are reached, the queue file, its rows
    /// and its kept keys stop growing.
    #[tokio::test(start_paused = true)]
    async fn with_a_steady_load_the_queue_file_stops_growing_once_history_is_reached() {
        let f = Fixture::new("", "");
        let targets = HashMap::from([("lake".to_string(), f.target())]);
        let spools = vec!["orders".to_string()];
        sweep_orphan_uploads(&f.queue, &spools, &targets).await;
        let token = CancellationToken::new();
        let tasks = [
            tokio::spawn(keep_history(
                f.queue.clone(),
                Some(HISTORY),
                f.config.state_dir.clone(),
                token.clone(),
            )),
            tokio::spawn(sweep_periodically(
                f.queue.clone(),
                spools,
                targets,
                SweepSchedule::default(),
                token.clone(),
            )),
        ];
        let (db, spool) = (f.config.queue_path(), f.spool());
        let mut samples = Vec::new();
        let mut n = 0;
        for minute in 1..=HOURS * 60 {
            let files: Vec<NewFile> = (0..FILES_A_MINUTE)
                .map(|_| {
                    n += 1;
                    new_file(&spool, n)
                })
                .collect();
            f.queue.call(move |q| deliver(q, &files)).await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
            if minute % 10 == 0 {
                samples.push((minute, look(&db)));
            }
        }
        token.cancel();
        for task in tasks {
            task.await.unwrap();
        }
        // Steady from three hours on (history, a round of forgetting, two sweeps); the
        // rest in two halves, each compared by its highest sample (the hourly saw-tooth
        // of kept keys). The file may differ by a few pages, as SQLite fills its pages:
        // 2 % (it grew several times over until then).
        let steady: Vec<Look> = samples
            .iter()
            .filter(|(m, _)| *m > 180)
            .map(|s| s.1)
            .collect();
        let (first, last) = steady.split_at(steady.len() / 2);
        let highest = |part: &[Look], pick: fn(&Look) -> i64| part.iter().map(pick).max().unwrap();
        let report = format!("(minute, look): {samples:?}");
        assert!(
            highest(last, |l| l.file_bytes) * 100 <= highest(first, |l| l.file_bytes) * 102,
            "the queue file grew: {report}"
        );
        assert!(
            highest(last, |l| l.rows) <= highest(first, |l| l.rows),
            "{report}"
        );
        assert!(
            highest(last, |l| l.kept_keys) <= highest(first, |l| l.kept_keys),
            "{report}"
        );
        // Bounded by the rules: the history and a round of forgetting of rows; the keys
        // of rows forgotten since a sweep could reach them (delivery, ten minutes'
        // margin, the sweep's hour of young uploads and its own hour).
        let per_minute = FILES_A_MINUTE as i64;
        assert!(
            highest(&steady, |l| l.rows) <= (60 + 10 + 1) * per_minute,
            "{report}"
        );
        assert!(
            highest(&steady, |l| l.kept_keys) <= (10 + 60 + 60) * per_minute,
            "{report}"
        );
        assert!(
            highest(first, |l| l.file_bytes) * 2 > samples[2].1.file_bytes * 3,
            "the file did grow until the history was reached (minute 30 against the steady peak): {report}"
        );
    }
}
