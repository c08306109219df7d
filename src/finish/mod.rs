//! The finisher, sole owner of `after_upload`: it takes the sources whose deliveries are
//! all settled and which are not finished yet from the queue, deletes, archives or keeps
//! each (see [`source`]) and records how.
//!
//! It is poked when a delivery turns `done` (by the uploader) and when a watcher finds a
//! delivered file still in its spool; nobody else touches a delivered source, so no two
//! actors ever finish one source at once. Its first pass finishes what the last run left,
//! including sources cut off under their private names, which no scan sees. A source
//! that cannot be finished now (permissions, a full archive disk) is tried again after
//! `retry_after`. At a stop it runs once more, after the uploads drained and within the
//! same deadline, so what they delivered is cleaned up before the daemon goes; what that
//! pass does not start, the next start's first pass finishes. It is never cut off
//! mid-row: the next generation's finisher must not find a row half finished by this one.

mod source;

use futures::StreamExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::beneath;
use crate::clock::now_ms;
use crate::config::{AfterUpload, Spool};
use crate::queue::{SharedQueue, SourceOutcome, SourceRow};
pub use source::{finish_source, Finish, Finished};
use std::path::{Path, PathBuf};

/// Rows read per query.
const PAGE: usize = 500;
/// Sources finished at once: a delete is quick, an archive on another file system copies.
const AT_ONCE: usize = 4;

/// Finishes the sources of delivered rows, for one config's spools.
pub struct Finisher {
    queue: SharedQueue,
    spools: BTreeMap<String, Arc<Spool>>,
    /// The spools' roots, held open: every source is reached beneath one.
    roots: beneath::Roots,
    /// The archive folders, by `archive_dir`: made and opened at their first use, then held
    /// (an archive is reached beneath its handle, never through a symlink put on its way).
    archives: Arc<std::sync::Mutex<HashMap<PathBuf, Arc<beneath::Root>>>>,
    /// Poked when there may be something to finish.
    wake: Arc<Notify>,
    retry_after: Duration,
    /// When this finisher began: rows delivered before were delivered by a previous run or
    /// config, and their clean-up is said at info.
    started_ms: i64,
}

/// Rows the finisher leaves alone for now.
#[derive(Default)]
struct Waiting {
    /// Failed; tried again at the instant given.
    until: HashMap<i64, Instant>,
    /// Of a spool this config does not have: another config's finisher has them.
    elsewhere: HashSet<i64>,
    /// Finished, but the queue did not take the record: written again before anything
    /// else (finishing them again would record "gone" instead of what was done).
    unrecorded: Vec<Record>,
    /// The queue failed: the next pass is due then.
    queue_retry: Option<Instant>,
}

impl Waiting {
    fn next_retry(&self) -> Option<Instant> {
        self.until.values().copied().chain(self.queue_retry).min()
    }

    fn holds(&self, id: i64) -> bool {
        self.until.contains_key(&id)
            || self.elsewhere.contains(&id)
            || self.unrecorded.iter().any(|r| r.id == id)
    }
}

/// How a source was finished, to record: the path it was finished at guards the
/// record (a source a rescan moved meanwhile is finished again where it is now).
struct Record {
    /// The source's id.
    id: i64,
    path: String,
    outcome: SourceOutcome,
}

/// What became of one source in a pass.
enum Step {
    Finished(Finished),
    Failed(String),
    /// Its spool is not this config's.
    NotOurs,
    /// The stop's deadline came before it was started.
    Late,
}

impl Finisher {
    pub fn new(
        queue: SharedQueue,
        spools: BTreeMap<String, Arc<Spool>>,
        roots: beneath::Roots,
        wake: Arc<Notify>,
        retry_after: Duration,
    ) -> Finisher {
        // Archive folders are held from the start of the generation, right after the
        // daemon checked where they resolve; one that cannot be opened now is tried again
        // at its first use (and says why there).
        let mut archives = HashMap::new();
        for spool in spools.values() {
            if let AfterUpload::Archive(dir) = &spool.after_upload {
                if let Ok(root) = beneath::Root::open(dir) {
                    archives.insert(dir.clone(), Arc::new(root));
                }
            }
        }
        Finisher {
            queue,
            spools,
            roots,
            archives: Arc::new(std::sync::Mutex::new(archives)),
            wake,
            retry_after,
            started_ms: now_ms(),
        }
    }

    /// Finishes sources until `stop` brings the stop's deadline, then once more, starting
    /// no row after the deadline.
    pub async fn run(self, mut stop: oneshot::Receiver<Instant>) {
        let mut waiting = Waiting::default();
        let deadline = loop {
            if let Ok(deadline) = stop.try_recv() {
                break deadline;
            }
            self.pass(&mut waiting, None).await;
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                deadline = &mut stop => break deadline.unwrap_or_else(|_| Instant::now()),
                () = self.wake.notified() => {}
                () = tokio::time::sleep_until(waiting.next_retry().unwrap_or(far)) => {}
            }
        };
        self.pass(&mut waiting, Some(deadline)).await;
    }

    /// Finishes every ready source not waiting, a page at a time.
    async fn pass(&self, waiting: &mut Waiting, deadline: Option<Instant>) {
        let now = Instant::now();
        waiting.until.retain(|_, at| *at > now);
        waiting.queue_retry = None;
        if !waiting.unrecorded.is_empty() {
            let records = std::mem::take(&mut waiting.unrecorded);
            if !self.record(records, waiting).await {
                return;
            }
        }
        let mut after = 0;
        loop {
            let rows = match self
                .queue
                .call(move |q| q.unfinished_sources(after, PAGE))
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look for delivered files to clean up; trying again later");
                    waiting.queue_retry = Some(Instant::now() + self.retry_after);
                    return;
                }
            };
            let Some(last) = rows.last() else { return };
            after = last.id;
            let full = rows.len() == PAGE;
            let due: Vec<SourceRow> = rows.into_iter().filter(|r| !waiting.holds(r.id)).collect();
            let steps: Vec<_> = futures::stream::iter(due)
                .map(|row| async move {
                    let step = self.finish(&row, deadline).await;
                    (row, step)
                })
                .buffer_unordered(AT_ONCE)
                .collect()
                .await;
            let mut records = Vec::new();
            let mut late = false;
            for (row, step) in steps {
                match step {
                    Step::Finished(outcome) => {
                        self.log_finished(&row, &outcome);
                        records.push(Record {
                            id: row.id,
                            path: row.path.to_string_lossy().into_owned(),
                            outcome: outcome.outcome(),
                        });
                    }
                    Step::Failed(error) => {
                        tracing::warn!(spool = %row.spool, id = row.id, path = %row.path.display(), error = %error,
                            retry_in_s = self.retry_after.as_secs(), "cannot delete or archive a delivered file; will try again");
                        waiting
                            .until
                            .insert(row.id, Instant::now() + self.retry_after);
                    }
                    Step::NotOurs => {
                        waiting.elsewhere.insert(row.id);
                    }
                    Step::Late => late = true,
                }
            }
            if !records.is_empty() && !self.record(records, waiting).await {
                return;
            }
            if late {
                tracing::warn!("the stop's deadline came before every delivered file was cleaned up; the next start finishes them");
                return;
            }
            if !full {
                return;
            }
        }
    }

    /// Records how sources were finished; on failure keeps the records to write again
    /// and returns false.
    async fn record(&self, records: Vec<Record>, waiting: &mut Waiting) -> bool {
        let rows: Vec<(i64, String, SourceOutcome)> = records
            .iter()
            .map(|r| (r.id, r.path.clone(), r.outcome))
            .collect();
        let recorded = self
            .queue
            .grouped(move |q| q.mark_sources_finished(&rows, now_ms()))
            .await;
        match recorded {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, files = records.len(), "cannot record clean-ups; trying again later");
                waiting.unrecorded.extend(records);
                waiting.queue_retry = Some(Instant::now() + self.retry_after);
                false
            }
        }
    }

    /// Finishes one source on a blocking thread, unless the stop's deadline passed.
    async fn finish(&self, row: &SourceRow, deadline: Option<Instant>) -> Step {
        // A source of this spool's folder (a reload may have changed the folder: its
        // sources are the old folder's, not this one's).
        let (Some(spool), Some(root)) = (
            self.spools.get(&row.spool),
            self.roots.get(&row.spool).filter(|root| {
                beneath::root_of(&row.path, &row.rel_path).as_deref() == Some(root.path())
            }),
        ) else {
            return Step::NotOurs;
        };
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Step::Late;
        }
        if let Err(moved) = root.check() {
            return Step::Failed(format!(
                "the spool folder {moved}: nothing in it is deleted or archived until it is back"
            ));
        }
        let root = Arc::clone(root);
        let after = spool.after_upload.clone();
        let archives = Arc::clone(&self.archives);
        let (id, rel, stamp) = (row.id, row.rel_path.clone(), row.stamp);
        let finished = tokio::task::spawn_blocking(move || {
            let archive = match &after {
                AfterUpload::Archive(dir) => Some(held_archive(&archives, dir)?),
                _ => None,
            };
            let how = match (&after, &archive) {
                (AfterUpload::Archive(_), Some(archive)) => Finish::Archive(archive),
                (AfterUpload::Keep, _) => Finish::Keep,
                _ => Finish::Delete,
            };
            finish_source(how, &root, &rel, stamp, id)
        })
        .await;
        match finished {
            Ok(Ok(outcome)) => Step::Finished(outcome),
            Ok(Err(e)) => Step::Failed(e.to_string()),
            Err(join) => {
                tracing::error!(id, error = %join, "a clean-up crashed (a bug in s3spool: please report it)");
                Step::Failed("the clean-up crashed".into())
            }
        }
    }

    fn log_finished(&self, row: &SourceRow, outcome: &Finished) {
        if *outcome == Finished::Replaced {
            tracing::info!(spool = %row.spool, id = row.id, path = %row.path.display(),
                "the uploaded file is not at its path as it was (a new file took its place, or a symlink stands on the way): nothing was touched, and a file there is judged on its own");
        } else if row.done_at.is_some_and(|at| at < self.started_ms) {
            tracing::info!(spool = %row.spool, id = row.id, path = %row.rel_path, outcome = %outcome.outcome(),
                "cleaned up a file delivered before a restart");
        } else {
            tracing::debug!(spool = %row.spool, id = row.id, outcome = %outcome.outcome(), "source finished");
        }
    }
}

/// The archive folder `dir`, held open: opened when the finisher starts (or made and opened
/// at its first use if it could not be then; resolved, so a symlink the operator put on its
/// way is kept), then checked at every use to still be the folder opened: one put in its
/// place later is refused, never written into.
fn held_archive(
    archives: &std::sync::Mutex<HashMap<PathBuf, Arc<beneath::Root>>>,
    dir: &Path,
) -> std::io::Result<Arc<beneath::Root>> {
    let mut held = archives.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(root) = held.get(dir) {
        root.check().map_err(|moved| {
            std::io::Error::other(format!(
                "archive_dir {moved}: nothing is archived into it until it is back (or the config is fixed and reloaded)"
            ))
        })?;
        return Ok(Arc::clone(root));
    }
    std::fs::create_dir_all(dir)?;
    let root = Arc::new(beneath::Root::open(&std::fs::canonicalize(dir)?)?);
    held.insert(dir.to_path_buf(), Arc::clone(&root));
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::State;
    use crate::testing::Fixture;
    use tokio_util::sync::CancellationToken;

    const WITHIN: Duration = Duration::from_secs(600);

    /// Delivers `rel` with the real uploader (to the fixture's memory store).
    async fn delivered(f: &Fixture, rel: &str) -> i64 {
        let id = f.drop_and_queue(rel, b"payload").await;
        let token = CancellationToken::new();
        let uploader = tokio::spawn(
            f.dispatcher(f.target())
                .run(token.clone(), Fixture::drain_as_stop()),
        );
        f.wait_row(id, WITHIN, |r| r.state == State::Done).await;
        token.cancel();
        uploader.await.unwrap();
        id
    }

    fn finisher(f: &Fixture) -> (oneshot::Sender<Instant>, tokio::task::JoinHandle<()>) {
        let finisher = Finisher::new(
            f.queue.clone(),
            f.config.spools.clone(),
            f.roots(),
            Arc::clone(&f.finished),
            Duration::from_secs(30),
        );
        let (stop, stopped) = oneshot::channel();
        (stop, tokio::spawn(finisher.run(stopped)))
    }

    #[tokio::test(start_paused = true)]
    async fn delivered_sources_are_deleted_and_how_is_recorded() {
        let f = Fixture::new("", "");
        let a = delivered(&f, "a.csv").await;
        let b = delivered(&f, "sub/b.csv").await;
        let (stop, task) = finisher(&f);
        for id in [a, b] {
            f.wait_row(id, WITHIN, |r| {
                r.source_outcome == Some(SourceOutcome::Deleted)
            })
            .await;
        }
        stop.send(Instant::now()).unwrap();
        task.await.unwrap();
        assert!(!f.spool().join("a.csv").exists());
        assert!(!f.spool().join("sub/b.csv").exists());
        assert!(f.row(a).await.source_finished_at.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_past_its_deadline_starts_no_clean_up_and_the_next_start_does_it() {
        let f = Fixture::new("", "");
        let id = delivered(&f, "a.csv").await;
        // Stopped before it ran, with a deadline already past: the uploads used it all.
        let (stop, task) = finisher(&f);
        let past = Instant::now() - Duration::from_secs(1);
        stop.send(past).unwrap();
        task.await.unwrap();
        assert_eq!(f.row(id).await.source_outcome, None);
        assert!(f.spool().join("a.csv").exists());

        let g = Finisher::new(
            f.queue.clone(),
            f.config.spools.clone(),
            f.roots(),
            Arc::new(Notify::new()),
            Duration::from_secs(30),
        );
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(g.run(stopped));
        f.wait_row(id, WITHIN, |r| {
            r.source_outcome == Some(SourceOutcome::Deleted)
        })
        .await;
        stop.send(Instant::now() + WITHIN).unwrap();
        task.await.unwrap();
        assert!(!f.spool().join("a.csv").exists());
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
            r.source_outcome == Some(SourceOutcome::Archived)
        })
        .await;
        assert_eq!(std::fs::read(archive.join("a.csv")).unwrap(), b"payload");
        // A poke runs a pass at once.
        let next = f.drop_and_queue("b.csv", b"second").await;
        let token = CancellationToken::new();
        let uploader = tokio::spawn(
            f.dispatcher(f.target())
                .run(token.clone(), Fixture::drain_as_stop()),
        );
        f.wait_row(next, Duration::from_secs(1), |r| {
            r.source_outcome == Some(SourceOutcome::Archived)
        })
        .await;
        token.cancel();
        uploader.await.unwrap();
        stop.send(Instant::now()).unwrap();
        task.await.unwrap();
    }

    #[test]
    fn an_archive_folder_replaced_after_its_first_use_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        let held = std::sync::Mutex::new(HashMap::new());
        let first = held_archive(&held, &archive).expect("made and opened");
        assert_eq!(first.path(), archive.canonicalize().unwrap());
        std::fs::rename(&archive, dir.path().join("away")).unwrap();
        std::os::unix::fs::symlink(dir.path(), &archive).unwrap();
        let e = held_archive(&held, &archive).unwrap_err();
        assert!(e.to_string().contains("archive_dir"), "{e}");
        assert!(e.to_string().contains("is now a symlink"), "{e}");
    }
}
