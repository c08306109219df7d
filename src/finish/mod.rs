//! The finisher, sole owner of `after_upload`: it takes `done` rows whose source is not
//! finished yet from the queue, deletes, archives or keeps each source (see [`source`])
//! and records how.
//!
//! It is poked when a row turns `done` (by the uploader) and when a watcher finds a
//! delivered file still in its spool; nobody else touches a delivered source, so no two
//! actors ever finish one row at once. Its first pass finishes what the last run left,
//! including sources cut off under their private names, which no scan sees. A source
//! that cannot be finished now (permissions, a full archive disk) is tried again after
//! `retry_after`. At a stop it runs once more, after the uploads drained, so what they
//! delivered is cleaned up before the daemon goes.

mod source;

use futures::StreamExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::beneath;
use crate::clock::now_ms;
use crate::config::Spool;
use crate::queue::{FileRow, SharedQueue};
pub use source::{finish_source, Finished};

/// Rows read per query.
const PAGE: usize = 500;
/// Sources finished at once: a delete is quick, an archive on another file system copies.
const AT_ONCE: usize = 4;

/// Finishes the sources of delivered rows, for one config's spools.
pub struct Finisher {
    queue: SharedQueue,
    spools: BTreeMap<String, Arc<Spool>>,
    /// Poked when there may be something to finish.
    wake: Arc<Notify>,
    retry_after: Duration,
    /// The daemon just started: what the first pass finds, the last run left.
    after_start: bool,
}

/// Rows the finisher leaves alone for now.
#[derive(Default)]
struct Waiting {
    /// Failed; tried again at the instant given.
    until: HashMap<i64, Instant>,
    /// Of a spool this config does not have: another config's finisher has them.
    elsewhere: HashSet<i64>,
}

impl Finisher {
    pub fn new(
        queue: SharedQueue,
        spools: BTreeMap<String, Arc<Spool>>,
        wake: Arc<Notify>,
        retry_after: Duration,
        after_start: bool,
    ) -> Finisher {
        Finisher {
            queue,
            spools,
            wake,
            retry_after,
            after_start,
        }
    }

    /// Finishes sources until `stop`, then once more for what is left.
    pub async fn run(self, stop: CancellationToken) {
        let mut waiting = Waiting::default();
        let mut first = self.after_start;
        loop {
            self.pass(&mut waiting, first).await;
            first = false;
            let retry = waiting.until.values().min().copied();
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep_until(retry.unwrap_or(far)) => {}
            }
        }
        self.pass(&mut waiting, false).await;
    }

    /// Finishes every unfinished row not waiting, a page at a time.
    async fn pass(&self, waiting: &mut Waiting, first: bool) {
        let now = Instant::now();
        waiting.until.retain(|_, at| *at > now);
        let mut after = 0;
        loop {
            let rows = match self
                .queue
                .call(move |q| q.unfinished_done(after, PAGE))
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look for delivered files to clean up; trying again later");
                    waiting.until.insert(0, now + self.retry_after);
                    return;
                }
            };
            let Some(last) = rows.last() else { return };
            after = last.id;
            let full = rows.len() == PAGE;
            let due: Vec<FileRow> = rows
                .into_iter()
                .filter(|r| {
                    !waiting.until.contains_key(&r.id) && !waiting.elsewhere.contains(&r.id)
                })
                .collect();
            let results: Vec<_> = futures::stream::iter(due)
                .map(|row| async move {
                    let result = self.finish(&row).await;
                    (row, result)
                })
                .buffer_unordered(AT_ONCE)
                .collect()
                .await;
            let mut finished = Vec::new();
            for (row, result) in results {
                match result {
                    Some(Ok(outcome)) => {
                        log_finished(&row, &outcome, first);
                        finished.push((row.id, outcome.as_str()));
                    }
                    Some(Err(e)) => {
                        tracing::warn!(spool = %row.spool, id = row.id, path = %row.path.display(), error = %e,
                            retry_in_s = self.retry_after.as_secs(), "cannot delete or archive a delivered file; will try again");
                        waiting.until.insert(row.id, now + self.retry_after);
                    }
                    None => {
                        waiting.elsewhere.insert(row.id);
                    }
                }
            }
            if !finished.is_empty() {
                let recorded = self
                    .queue
                    .call(move |q| q.mark_sources_finished(&finished, now_ms()))
                    .await;
                if let Err(e) = recorded {
                    // Not lost: the rows stay unfinished, and finishing again is safe (the
                    // source is gone, or the one there is another file).
                    tracing::warn!(error = %e, "cannot record clean-ups; they are looked at again");
                }
            }
            if !full {
                return;
            }
        }
    }

    /// Finishes one row's source on a blocking thread; `None` if its spool is not this
    /// config's.
    async fn finish(&self, row: &FileRow) -> Option<std::io::Result<Finished>> {
        let spool = self.spools.get(&row.spool)?;
        let root = beneath::root_of(&row.path, &row.rel_path)?;
        let after = spool.after_upload.clone();
        let (id, rel, stamp) = (row.id, row.rel_path.clone(), row.stamp);
        let finished =
            tokio::task::spawn_blocking(move || finish_source(&after, &root, &rel, stamp, id))
                .await;
        Some(finished.unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic())))
    }
}

fn log_finished(row: &FileRow, outcome: &Finished, first: bool) {
    if *outcome == Finished::Replaced {
        tracing::info!(spool = %row.spool, id = row.id, path = %row.path.display(),
            "a new file took the uploaded one's place; it will be queued on its own");
    } else if first {
        tracing::info!(spool = %row.spool, id = row.id, path = %row.rel_path, outcome = outcome.as_str(),
            "cleaned up a file delivered before a restart");
    } else {
        tracing::debug!(spool = %row.spool, id = row.id, outcome = outcome.as_str(), "source finished");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::State;
    use crate::testing::Fixture;

    const WITHIN: Duration = Duration::from_secs(600);

    /// Delivers `rel` with the real uploader (to the fixture's memory store).
    async fn delivered(f: &Fixture, rel: &str) -> i64 {
        let id = f.drop_and_queue(rel, b"payload").await;
        let token = CancellationToken::new();
        let uploader = tokio::spawn(f.uploader(f.target()).run(token.clone()));
        f.wait_row(id, WITHIN, |r| r.state == State::Done).await;
        token.cancel();
        uploader.await.unwrap();
        id
    }

    fn finisher(f: &Fixture) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let finisher = Finisher::new(
            f.queue.clone(),
            f.config.spools.clone(),
            Arc::clone(&f.finished),
            Duration::from_secs(30),
            false,
        );
        let stop = CancellationToken::new();
        (stop.clone(), tokio::spawn(finisher.run(stop)))
    }

    #[tokio::test(start_paused = true)]
    async fn delivered_sources_are_deleted_and_how_is_recorded() {
        let f = Fixture::new("", "");
        let a = delivered(&f, "a.csv").await;
        let b = delivered(&f, "sub/b.csv").await;
        let (stop, task) = finisher(&f);
        for id in [a, b] {
            f.wait_row(id, WITHIN, |r| {
                r.source_outcome.as_deref() == Some("deleted")
            })
            .await;
        }
        stop.cancel();
        task.await.unwrap();
        assert!(!f.spool().join("a.csv").exists());
        assert!(!f.spool().join("sub/b.csv").exists());
        assert!(f.row(a).await.source_finished_at.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_up_that_fails_is_tried_again_later_and_others_go_on() {
        let f = Fixture::new(
            "",
            "after_upload = \"archive\"\narchive_dir = \"{root}/archive\"",
        );
        let id = delivered(&f, "a.csv").await;
        // The archive's folder cannot be made: a file has its name.
        let archive = f.dir.path().join("archive");
        std::fs::write(&archive, b"in the way").unwrap();
        let (stop, task) = finisher(&f);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let row = f.row(id).await;
        assert_eq!(row.source_outcome, None, "{row:?}");
        assert!(f.spool().join("a.csv").exists(), "the source stays");

        // Fixed: the next try (30 s later, no poke needed) archives it.
        std::fs::remove_file(&archive).unwrap();
        f.wait_row(id, WITHIN, |r| {
            r.source_outcome.as_deref() == Some("archived")
        })
        .await;
        assert_eq!(std::fs::read(archive.join("a.csv")).unwrap(), b"payload");
        // A poke runs a pass at once.
        let next = f.drop_and_queue("b.csv", b"second").await;
        let token = CancellationToken::new();
        let uploader = tokio::spawn(f.uploader(f.target()).run(token.clone()));
        f.wait_row(next, Duration::from_secs(1), |r| {
            r.source_outcome.as_deref() == Some("archived")
        })
        .await;
        token.cancel();
        uploader.await.unwrap();
        stop.cancel();
        task.await.unwrap();
    }
}
