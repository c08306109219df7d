//! The durable queue: one SQLite row per file moving from a spool to S3.
//!
//! ## States
//! `pending` (waiting for its next attempt) → `active` (claimed by a worker) → `done`
//! (S3 confirmed the object) or back to `pending` (retry later, or the file changed) or
//! `failed` (permanent error or attempts exhausted; waits for `s3spool retry`).
//!
//! ## Invariants
//! - The object key is rendered once, when the row is inserted, and never changes: every
//!   attempt writes the same key, so retries cannot create a second object.
//! - At most one row per (spool, path) is not `done`. A `done` row whose `after_upload` step
//!   has not run yet (`source_finished_at` NULL) and whose size, mtime and inode match the
//!   file on disk means "delivered, clean it up": the daemon died between the two steps.
//! - `attempts` counts tries that ended in an upload error; a file that changed under us
//!   is re-queued without using up an attempt.
//!
//! ## Locking
//! The database is in WAL mode, so the CLI reads while the daemon writes. Writers serialise
//! on SQLite's own lock (busy timeout 10 s). Each transition is one statement or one
//! immediate transaction; claims are a single `UPDATE … RETURNING`, so two claimers can
//! never take the same row. The daemon holds an exclusive lock file in `state_dir`, so only
//! one daemon works on a queue.
//!
//! ## Crash recovery
//! Every transition is committed with `synchronous = FULL` before the step that relies on it
//! (the source is deleted only after its row is `done` on disk). At start the daemon returns
//! `active` rows to `pending`: no worker can still hold them.

mod schema;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use schema::latest_version;

/// A failed database operation, with the database's path.
#[derive(Debug, thiserror::Error)]
#[error("queue database {path}: {source}")]
pub struct QueueError {
    pub path: PathBuf,
    #[source]
    pub source: rusqlite::Error,
}

pub type Result<T, E = QueueError> = std::result::Result<T, E>;

/// The four states a row can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Active,
    Done,
    Failed,
}

impl State {
    pub const ALL: [State; 4] = [State::Pending, State::Active, State::Done, State::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Active => "active",
            State::Done => "done",
            State::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Identity of a file's contents as far as the file system tells: if any of these change,
/// the file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
}

impl FileStamp {
    pub fn of(meta: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            inode: meta.ino(),
        }
    }
}

/// A finished file found in a spool, about to be queued.
#[derive(Debug, Clone)]
pub struct NewFile {
    pub spool: String,
    pub rel_path: String,
    pub path: PathBuf,
    pub destination: String,
    pub bucket: String,
    pub stamp: FileStamp,
}

/// What registering a file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// A new row, ready for upload.
    Queued(i64),
    /// A new row that failed at once (its key could not be made).
    Refused(i64),
    /// A row for this very file is already waiting, in flight, or failed.
    AlreadyQueued(i64),
    /// This very file was delivered, but its `after_upload` step has not run: run it.
    AlreadyDone(i64),
    /// This very file was delivered and kept (`after_upload = "keep"`): nothing to do.
    Kept(i64),
}

/// One row of the queue.
#[derive(Debug, Clone, Serialize)]
pub struct FileRow {
    pub id: i64,
    pub spool: String,
    pub rel_path: String,
    pub path: PathBuf,
    pub destination: String,
    pub bucket: String,
    pub key: Option<String>,
    pub state: State,
    #[serde(flatten)]
    pub stamp: FileStamp,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub etag: Option<String>,
    pub queued_at: i64,
    pub updated_at: i64,
    pub done_at: Option<i64>,
    pub source_finished_at: Option<i64>,
}

const COLUMNS: &str =
    "id, spool, rel_path, path, destination, bucket, key, state, size, mtime_ns, \
     inode, attempts, next_attempt_at, last_error, etag, queued_at, updated_at, done_at, \
     source_finished_at";

impl FileRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<FileRow> {
        let state: String = r.get(7)?;
        Ok(FileRow {
            id: r.get(0)?,
            spool: r.get(1)?,
            rel_path: r.get(2)?,
            path: PathBuf::from(r.get::<_, String>(3)?),
            destination: r.get(4)?,
            bucket: r.get(5)?,
            key: r.get(6)?,
            state: State::parse(&state).unwrap_or(State::Failed),
            stamp: FileStamp {
                size: r.get::<_, i64>(8)? as u64,
                mtime_ns: r.get(9)?,
                inode: r.get::<_, i64>(10)? as u64,
            },
            attempts: r.get(11)?,
            next_attempt_at: r.get(12)?,
            last_error: r.get(13)?,
            etag: r.get(14)?,
            queued_at: r.get(15)?,
            updated_at: r.get(16)?,
            done_at: r.get(17)?,
            source_finished_at: r.get(18)?,
        })
    }
}

/// Counts and ages for `s3spool status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub counts: Counts,
    /// When the oldest row still waiting (pending or active) was queued, unix ms.
    pub oldest_waiting_queued_at: Option<i64>,
    pub bytes_waiting: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub pending: u64,
    pub active: u64,
    pub done: u64,
    pub failed: u64,
}

/// Filters for `s3spool list`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<State>,
    pub spool: Option<String>,
    pub limit: Option<u64>,
}

/// An open queue database.
pub struct Queue {
    conn: Connection,
    path: PathBuf,
}

impl Queue {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Queue> {
        let err = |source| QueueError {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        // FULL: a commit is on disk before we act on it (e.g. delete the source).
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        schema::migrate(&mut conn).map_err(err)?;
        Ok(Queue {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing database for reading only (`status`, `list`, `show`): no write
    /// lock, no migration, so it works for a user who may only read the queue.
    pub fn open_read_only(path: &Path) -> Result<Queue> {
        use rusqlite::OpenFlags;
        let err = |source| QueueError {
            path: path.to_path_buf(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        let version: usize = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        if version != latest_version() {
            return Err(err(rusqlite::Error::InvalidParameterName(format!(
                "schema version {version}, this s3spool reads version {}: run the daemon of this version once, or use the s3spool that wrote it",
                latest_version()
            ))));
        }
        Ok(Queue {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> QueueError {
        QueueError {
            path: self.path.clone(),
            source,
        }
    }

    /// Queues a batch of finished files of one spool in one transaction. `render_key` makes
    /// each new row's key from its id; an error there stores the row as `failed` with the
    /// reason. `source_kept` is true for spools with `after_upload = "keep"`: there a file
    /// that matches a finished `done` row is the kept file; elsewhere it is a new file that
    /// happens to look the same (a reused inode), and is queued.
    pub fn register<F>(
        &mut self,
        files: &[NewFile],
        source_kept: bool,
        now_ms: i64,
        mut render_key: F,
    ) -> Result<Vec<Registered>>
    where
        F: FnMut(&NewFile, i64) -> std::result::Result<String, String>,
    {
        let path = self.path.clone();
        let err = |source| QueueError {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut outcomes = Vec::with_capacity(files.len());
        {
            let mut latest = tx
                .prepare_cached(
                    "SELECT id, state, size, mtime_ns, inode, source_finished_at IS NOT NULL FROM files
                     WHERE spool = ?1 AND rel_path = ?2 ORDER BY id DESC LIMIT 1",
                )
                .map_err(err)?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO files (spool, rel_path, path, destination, bucket, state, size,
                         mtime_ns, inode, next_attempt_at, queued_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?8, ?9, ?9, ?9)",
                )
                .map_err(err)?;
            let mut set_key = tx
                .prepare_cached("UPDATE files SET key = ?2 WHERE id = ?1")
                .map_err(err)?;
            let mut refuse = tx
                .prepare_cached("UPDATE files SET state = 'failed', last_error = ?2 WHERE id = ?1")
                .map_err(err)?;
            let mut restamp = tx
                .prepare_cached(
                    "UPDATE files SET size = ?2, mtime_ns = ?3, inode = ?4, updated_at = ?5
                     WHERE id = ?1 AND state = 'pending'",
                )
                .map_err(err)?;
            for file in files {
                let existing = latest
                    .query_row(params![file.spool, file.rel_path], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            FileStamp {
                                size: r.get::<_, i64>(2)? as u64,
                                mtime_ns: r.get(3)?,
                                inode: r.get::<_, i64>(4)? as u64,
                            },
                            r.get::<_, bool>(5)?,
                        ))
                    })
                    .optional()
                    .map_err(err)?;
                match existing {
                    Some((id, state, stamp, finished))
                        if state == "done" && stamp == file.stamp =>
                    {
                        if !finished {
                            outcomes.push(Registered::AlreadyDone(id));
                            continue;
                        }
                        if source_kept {
                            outcomes.push(Registered::Kept(id));
                            continue;
                        }
                    }
                    Some((id, state, stamp, _)) if state != "done" => {
                        if state == "pending" && stamp != file.stamp {
                            restamp
                                .execute(params![
                                    id,
                                    file.stamp.size as i64,
                                    file.stamp.mtime_ns,
                                    file.stamp.inode as i64,
                                    now_ms
                                ])
                                .map_err(err)?;
                        }
                        outcomes.push(Registered::AlreadyQueued(id));
                        continue;
                    }
                    _ => {}
                }
                insert
                    .execute(params![
                        file.spool,
                        file.rel_path,
                        file.path.to_string_lossy(),
                        file.destination,
                        file.bucket,
                        file.stamp.size as i64,
                        file.stamp.mtime_ns,
                        file.stamp.inode as i64,
                        now_ms
                    ])
                    .map_err(err)?;
                let id = tx.last_insert_rowid();
                match render_key(file, id) {
                    Ok(key) => {
                        set_key.execute(params![id, key]).map_err(err)?;
                        outcomes.push(Registered::Queued(id));
                    }
                    Err(reason) => {
                        refuse.execute(params![id, reason]).map_err(err)?;
                        outcomes.push(Registered::Refused(id));
                    }
                }
            }
        }
        tx.commit().map_err(err)?;
        Ok(outcomes)
    }

    /// Returns every `active` row to `pending`; run at daemon start, when no worker exists.
    pub fn recover_active(&mut self, now_ms: i64) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE files SET state = 'pending', lease_until = NULL, updated_at = ?1
                 WHERE state = 'active'",
                [now_ms],
            )
            .map_err(|e| self.err(e))
    }

    /// Atomically claims up to `limit` due rows for a worker, counting an attempt on each.
    pub fn claim(&mut self, limit: usize, now_ms: i64, lease: Duration) -> Result<Vec<FileRow>> {
        let lease_until = now_ms + lease.as_millis() as i64;
        let sql = format!(
            "UPDATE files SET state = 'active', attempts = attempts + 1, lease_until = ?3, updated_at = ?1
             WHERE id IN (SELECT id FROM files WHERE state = 'pending' AND next_attempt_at <= ?1
                          ORDER BY next_attempt_at, id LIMIT ?2)
             RETURNING {COLUMNS}"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![now_ms, limit as i64, lease_until],
                FileRow::from_row,
            )
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        drop(stmt);
        let mut rows = rows.map_err(|e| self.err(e))?;
        rows.sort_by_key(|r| (r.next_attempt_at, r.id));
        Ok(rows)
    }

    /// The earliest `next_attempt_at` among pending rows.
    pub fn next_due(&self) -> Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT MIN(next_attempt_at) FROM files WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// S3 confirmed the object: the row is done. This and the other transitions return
    /// false when the row was not `active` (an operator purged it?) and nothing changed.
    pub fn mark_done(&mut self, id: i64, etag: &str, now_ms: i64) -> Result<bool> {
        self.transition(
            "UPDATE files SET state = 'done', etag = ?2, last_error = NULL, lease_until = NULL,
                 done_at = ?3, updated_at = ?3 WHERE id = ?1 AND state = 'active'",
            params![id, etag, now_ms],
        )
    }

    /// A transient failure: try again at `next_attempt_at`.
    pub fn retry_later(
        &mut self,
        id: i64,
        error: &str,
        next_attempt_at: i64,
        now_ms: i64,
    ) -> Result<bool> {
        self.transition(
            "UPDATE files SET state = 'pending', last_error = ?2, next_attempt_at = ?3,
                 lease_until = NULL, updated_at = ?4 WHERE id = ?1 AND state = 'active'",
            params![id, error, next_attempt_at, now_ms],
        )
    }

    /// A permanent failure, or attempts used up: wait for an operator.
    pub fn mark_failed(&mut self, id: i64, error: &str, now_ms: i64) -> Result<bool> {
        self.transition(
            "UPDATE files SET state = 'failed', last_error = ?2, lease_until = NULL, updated_at = ?3
             WHERE id = ?1 AND state = 'active'",
            params![id, error, now_ms],
        )
    }

    /// The source changed since it was queued or while it was uploaded: upload it again
    /// (same key) once it has settled, without using up an attempt.
    pub fn requeue_changed(
        &mut self,
        id: i64,
        stamp: FileStamp,
        next_attempt_at: i64,
        now_ms: i64,
    ) -> Result<bool> {
        self.transition(
            "UPDATE files SET state = 'pending', attempts = MAX(attempts - 1, 0), size = ?2,
                 mtime_ns = ?3, inode = ?4, next_attempt_at = ?5, lease_until = NULL,
                 last_error = 'source changed; will upload again once it settles', updated_at = ?6
             WHERE id = ?1 AND state = 'active'",
            params![
                id,
                stamp.size as i64,
                stamp.mtime_ns,
                stamp.inode as i64,
                next_attempt_at,
                now_ms
            ],
        )
    }

    /// The source's `after_upload` step has run: a later file at the same path with the
    /// same stamp is a new file (or, for kept spools, the kept one), never "clean me up".
    pub fn mark_source_finished(&mut self, id: i64, now_ms: i64) -> Result<bool> {
        self.transition(
            "UPDATE files SET source_finished_at = ?2 WHERE id = ?1 AND state = 'done'",
            params![id, now_ms],
        )
    }

    fn transition(&mut self, sql: &str, params: impl rusqlite::Params) -> Result<bool> {
        let changed = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute(params))
            .map_err(|e| self.err(e))?;
        Ok(changed == 1)
    }

    /// One row by id.
    pub fn get(&self, id: i64) -> Result<Option<FileRow>> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM files WHERE id = ?1"),
                [id],
                FileRow::from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Rows matching `filter`, oldest first.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<FileRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM files
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR spool = ?2)
             ORDER BY id LIMIT ?3"
        );
        let limit = filter.limit.map(|l| l as i64).unwrap_or(-1);
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![filter.state.map(State::as_str), filter.spool, limit],
                FileRow::from_row,
            )
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(|e| self.err(e))
    }

    /// Counts per state, the oldest waiting row and the bytes waiting.
    pub fn summary(&self) -> Result<Summary> {
        let mut summary = Summary::default();
        let mut stmt = self
            .conn
            .prepare("SELECT state, COUNT(*), SUM(size), MIN(queued_at) FROM files GROUP BY state")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        for (state, count, bytes, oldest) in rows {
            let count = count as u64;
            match State::parse(&state) {
                Some(State::Pending) => summary.counts.pending = count,
                Some(State::Active) => summary.counts.active = count,
                Some(State::Done) => summary.counts.done = count,
                Some(State::Failed) => summary.counts.failed = count,
                None => continue,
            }
            if matches!(state.as_str(), "pending" | "active") {
                summary.bytes_waiting += bytes.unwrap_or(0) as u64;
                summary.oldest_waiting_queued_at = match (summary.oldest_waiting_queued_at, oldest)
                {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        Ok(summary)
    }

    /// The most recently updated rows that carry an error.
    pub fn latest_errors(&self, limit: u64) -> Result<Vec<FileRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM files WHERE last_error IS NOT NULL AND state != 'done'
             ORDER BY updated_at DESC, id DESC LIMIT ?1"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([limit as i64], FileRow::from_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(|e| self.err(e))
    }

    /// Makes `failed` or `pending` rows due now with a fresh attempt count. Returns the ids
    /// that were reset; `active` and `done` rows are left alone.
    pub fn retry(&mut self, ids: Option<&[i64]>, now_ms: i64) -> Result<Vec<i64>> {
        let sql = "UPDATE files SET state = 'pending', attempts = 0, next_attempt_at = ?2, updated_at = ?2
                   WHERE state IN ('failed', 'pending') AND key IS NOT NULL AND (?1 IS NULL OR id = ?1)
                   RETURNING id";
        let path = self.path.clone();
        let err = |source| QueueError {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let mut reset = Vec::new();
        {
            let mut stmt = tx.prepare(sql).map_err(err)?;
            let targets: Vec<Option<i64>> = match ids {
                Some(ids) => ids.iter().copied().map(Some).collect(),
                None => vec![None],
            };
            for target in targets {
                let rows = stmt
                    .query_map(params![target, now_ms], |r| r.get::<_, i64>(0))
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(err)?;
                reset.extend(rows);
            }
        }
        tx.commit().map_err(err)?;
        reset.sort_unstable();
        Ok(reset)
    }

    /// Like [`Queue::retry`] for every failed row.
    pub fn retry_failed(&mut self, now_ms: i64) -> Result<Vec<i64>> {
        let ids: Vec<i64> = self
            .list(&ListFilter {
                state: Some(State::Failed),
                ..ListFilter::default()
            })?
            .into_iter()
            .map(|r| r.id)
            .collect();
        self.retry(Some(&ids), now_ms)
    }

    /// Deletes `done` rows finished before `before_ms`, except those for which `keep` says
    /// yes (a row is the only record that a kept source file was delivered). Returns
    /// (deleted, kept).
    pub fn purge_done(
        &mut self,
        before_ms: i64,
        keep: impl Fn(&FileRow) -> bool,
    ) -> Result<(usize, usize)> {
        let sql = format!("SELECT {COLUMNS} FROM files WHERE state = 'done' AND done_at < ?1");
        let candidates: Vec<FileRow> = {
            let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map([before_ms], FileRow::from_row)
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
            rows.map_err(|e| self.err(e))?
        };
        // Look at the file system before taking the write lock, and delete in chunks, so
        // the daemon is never kept waiting on a long purge.
        let (kept, doomed): (Vec<&FileRow>, Vec<&FileRow>) =
            candidates.iter().partition(|row| keep(row));
        let path = self.path.clone();
        let err = |source| QueueError {
            path: path.clone(),
            source,
        };
        let mut deleted = 0;
        for chunk in doomed.chunks(1000) {
            let tx = self.conn.transaction().map_err(err)?;
            {
                let mut delete = tx
                    .prepare_cached("DELETE FROM files WHERE id = ?1 AND state = 'done'")
                    .map_err(err)?;
                for row in chunk {
                    deleted += delete.execute([row.id]).map_err(err)?;
                }
            }
            tx.commit().map_err(err)?;
        }
        Ok((deleted, kept.len()))
    }
}

/// A queue shared by the daemon's tasks. Every call runs on a blocking thread, so the async
/// runtime never waits on SQLite.
#[derive(Clone)]
pub struct SharedQueue(Arc<Mutex<Queue>>);

impl SharedQueue {
    pub fn new(queue: Queue) -> Self {
        SharedQueue(Arc::new(Mutex::new(queue)))
    }

    /// Runs `f` with the queue on a blocking thread.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Queue) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the connection usable: SQLite
            // rolled back whatever transaction was open.
            let mut queue = inner
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut queue)
        })
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
    }
}

#[cfg(test)]
mod tests;
