//! The queue as the daemon's tasks share it: one connection behind a mutex, every call on
//! a blocking thread so the async runtime never waits on SQLite, and group commit.
//!
//! Each state change is committed with `synchronous = FULL` before anything relies on it,
//! and each commit costs an fsync. When many uploads end at once (small files, a fast
//! link) their outcomes are written by [`SharedQueue::grouped`] in one transaction: each
//! in a savepoint of its own (a failing one is undone alone), one commit and one fsync for
//! all, and each caller hears back only once that commit is durable. Nobody waits for a
//! group to fill: a group is whatever arrived while the one before was being committed.

use std::sync::{Arc, Mutex};

use super::{Queue, QueueError, Result};

/// A change waiting for the next group: runs inside the group's transaction (or is given
/// the error that kept the group from beginning) and returns how to answer its caller
/// once the commit is known.
type Job = Box<dyn FnOnce(std::result::Result<&mut Queue, &QueueError>) -> Reply + Send>;
/// Answers a caller: with `Some(error)` when the group's commit failed.
type Reply = Box<dyn FnOnce(Option<&QueueError>) + Send>;

/// A queue shared by the daemon's tasks.
#[derive(Clone)]
pub struct SharedQueue {
    queue: Arc<Mutex<Queue>>,
    /// The queue's UUID (it never changes).
    identity: Arc<str>,
    /// Changes waiting for the next group commit.
    waiting: Arc<Mutex<Vec<Job>>>,
}

impl SharedQueue {
    pub fn new(queue: Queue) -> Self {
        SharedQueue {
            identity: Arc::from(queue.identity()),
            queue: Arc::new(Mutex::new(queue)),
            waiting: Arc::default(),
        }
    }

    /// What an object written by row `id` carries as its writer (see
    /// [`super::writer_of`]).
    pub fn writer_of(&self, id: i64) -> String {
        super::writer_of(&self.identity, id)
    }

    /// Runs `f` with the queue on a blocking thread.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Queue) -> Result<T> + Send + 'static,
    {
        let queue = Arc::clone(&self.queue);
        tokio::task::spawn_blocking(move || f(&mut lock(&queue)))
            .await
            .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
    }

    /// Runs `f` like [`SharedQueue::call`], in a transaction shared with the other grouped
    /// changes made meanwhile, and returns once that transaction is committed (durable).
    /// `f`'s writes must each be one statement or one of the queue's own transactions
    /// (`in_transaction`), which become savepoints of the group: a failure then undoes
    /// only its own changes. Used for every state change of the daemon's hot path:
    /// claims, outcomes, registrations, clean-ups.
    pub async fn grouped<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Queue) -> Result<T> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |queue| {
            let result = match queue {
                Ok(queue) => f(queue),
                Err(cannot_begin) => Err(cannot_begin.again()),
            };
            Box::new(move |commit: Option<&QueueError>| {
                let result = match (result, commit) {
                    (Ok(_), Some(failed)) => Err(failed.again()),
                    (result, _) => result,
                };
                let _ = answer.send(result);
            })
        });
        lock(&self.waiting).push(job);
        let (queue, waiting) = (Arc::clone(&self.queue), Arc::clone(&self.waiting));
        tokio::task::spawn_blocking(move || {
            let mut queue = lock(&queue);
            // Whatever arrived until the queue was free: perhaps this job and others, or
            // nothing (an earlier group took this job along).
            let jobs = std::mem::take(&mut *lock(&waiting));
            if !jobs.is_empty() {
                queue.commit_group(jobs);
            }
        })
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()));
        answered
            .await
            .unwrap_or_else(|_| unreachable!("a group answers each of its jobs"))
    }
}

/// A poisoned lock is taken over: a panic inside a call leaves the connection usable
/// (SQLite rolled back, or [`Group`] did, whatever transaction was open).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An open group transaction: rolled back if dropped uncommitted (a job panicked).
struct Group<'q> {
    queue: &'q mut Queue,
    open: bool,
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.queue.run_cached("ROLLBACK");
        }
    }
}

impl Queue {
    /// Runs a statement kept prepared (a group's BEGIN and COMMIT: parsing them for every
    /// group showed in profiles).
    fn run_cached(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(|_| ())
    }

    /// Runs `jobs` in one transaction, commits it, then answers each job.
    fn commit_group(&mut self, jobs: Vec<Job>) {
        if let Err(e) = self.run_cached("BEGIN IMMEDIATE") {
            // The database is locked or failing: every caller hears it now and tries again
            // as it would after its own failed write (running each alone would wait the
            // busy timeout once per job, holding the queue all that while).
            let cannot_begin = self.err(e);
            let replies: Vec<Reply> = jobs
                .into_iter()
                .map(|job| job(Err(&cannot_begin)))
                .collect();
            replies.into_iter().for_each(|reply| reply(None));
            return;
        }
        let mut group = Group {
            queue: self,
            open: true,
        };
        let mut lost: Option<QueueError> = None;
        let replies: Vec<Reply> = jobs
            .into_iter()
            .map(|job| {
                // A full disk, no memory or an I/O error makes SQLite roll back the whole
                // transaction, not just the savepoint of the job that met it. The jobs
                // after it must not run in transactions of their own (they would commit
                // while the group's COMMIT fails, and their callers hear of a failure).
                if lost.is_none() && group.queue.conn.is_autocommit() {
                    lost = Some(group.queue.err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                        Some("an earlier change of its group ended the transaction".into()),
                    )));
                }
                match &lost {
                    Some(lost) => job(Err(lost)),
                    None => job(Ok(&mut *group.queue)),
                }
            })
            .collect();
        let committed = match lost {
            Some(lost) => Err(lost.cause),
            None => group.queue.run_cached("COMMIT"),
        };
        let failed = match committed {
            Ok(()) => {
                group.open = false;
                None
            }
            Err(e) => Some(group.queue.err(e)),
        };
        drop(group);
        replies.into_iter().for_each(|reply| reply(failed.as_ref()));
    }
}

impl QueueError {
    /// The same failure again, for another caller (a rusqlite error cannot be cloned).
    fn again(&self) -> QueueError {
        QueueError {
            path: self.path.clone(),
            cause: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
                Some(self.cause.to_string()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::tests::file;
    use crate::queue::{NewFile, SpoolRules};

    /// A queue at `path` with `n` pending rows (ids 1 to n).
    fn queue_of(path: &std::path::Path, n: usize) -> Queue {
        let mut queue = Queue::open(path).unwrap();
        let files: Vec<NewFile> = (0..n).map(|i| file(&format!("f{i}"), 1)).collect();
        queue
            .register(
                &files,
                SpoolRules::default(),
                1,
                |f, _| Ok(f.rel_path.clone()),
                |_, _, _| false,
            )
            .unwrap();
        queue
    }

    /// The rows the tests' changes reached, as another connection sees them (durable).
    fn rows_changed(other: &rusqlite::Connection) -> i64 {
        other
            .query_row("SELECT COUNT(*) FROM files WHERE attempts = 7", [], |r| {
                r.get(0)
            })
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grouped_changes_commit_together_and_a_failing_one_alone_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        let queue = SharedQueue::new(queue_of(&path, 50));
        // Fifty changes at once, one of them failing after a write of its own.
        let changes = (1..=50).map(|id| {
            let queue = queue.clone();
            async move {
                queue
                    .grouped(move |q| {
                        q.in_transaction(|c| {
                            c.execute("UPDATE files SET attempts = 7 WHERE id = ?1", [id])?;
                            if id == 13 {
                                c.execute("INSERT INTO no_such_table VALUES (1)", [])?;
                            }
                            Ok(())
                        })
                    })
                    .await
            }
        });
        let results = futures::future::join_all(changes).await;
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
        assert!(results[12].is_err());
        // Durable, as another connection sees them; the failing one's write is undone.
        let other = rusqlite::Connection::open(&path).unwrap();
        let changed = rows_changed(&other);
        assert_eq!(changed, 49);
        let untouched: i64 = other
            .query_row("SELECT attempts FROM files WHERE id = 13", [], |r| r.get(0))
            .unwrap();
        assert_eq!(untouched, 0);
        assert!(
            queue.call(|q| Ok(q.conn.is_autocommit())).await.unwrap(),
            "no transaction left open"
        );
    }

    /// Job `n` of a group: sets `attempts` of row `n` to 7, and row 2's job writes a
    /// megabyte more than the disk has room for; its result lands in `results[n - 1]`.
    fn job(n: i64, results: &Arc<Mutex<Vec<Option<bool>>>>) -> Job {
        let results = Arc::clone(results);
        Box::new(move |queue| {
            let outcome = queue.map_err(|e| e.again()).and_then(|q| {
                q.in_transaction(|c| {
                    c.execute("UPDATE files SET attempts = 7 WHERE id = ?1", [n])?;
                    if n == 2 {
                        c.execute(
                            "UPDATE files SET last_error = ?2 WHERE id = ?1",
                            rusqlite::params![n, vec![b'x'; 1 << 20]],
                        )?;
                    }
                    Ok(())
                })
            });
            Box::new(move |commit: Option<&QueueError>| {
                lock(&results)[n as usize - 1] = Some(outcome.is_ok() && commit.is_none());
            })
        })
    }

    #[test]
    fn a_full_disk_in_a_group_fails_every_change_of_it_and_commits_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        let mut queue = queue_of(&path, 3);
        // The disk is full: the database may not grow by one page. SQLite then rolls back
        // the whole group transaction when job 2 writes, not only job 2's savepoint.
        let pages: i64 = queue
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        queue
            .conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .unwrap();
        let results = Arc::new(Mutex::new(vec![None; 3]));
        queue.commit_group((1..=3).map(|n| job(n, &results)).collect());
        // Every caller hears of a failure, and none of the changes is in the queue: job 3
        // did not commit on its own after the group's transaction was gone.
        assert_eq!(*lock(&results), vec![Some(false); 3]);
        let changed = rows_changed(&rusqlite::Connection::open(&path).unwrap());
        assert_eq!(changed, 0);
        assert!(queue.conn.is_autocommit(), "no transaction left open");
        // Room again: the next group commits.
        queue
            .conn
            .query_row("PRAGMA max_page_count = 1073741823", [], |_| Ok(()))
            .unwrap();
        let results = Arc::new(Mutex::new(vec![None; 3]));
        queue.commit_group(vec![job(1, &results), job(3, &results)]);
        assert_eq!(*lock(&results), vec![Some(true), None, Some(true)]);
    }
}
