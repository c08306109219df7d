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

/// The deliveries of a source, as a join from `sources AS s` to `files AS f`: their ids
/// run from the source's for `deliveries` (a range of the primary key, no index needed).
/// The sources are found first (CROSS JOIN keeps that order), through their own indexes;
/// NOT INDEXED keeps SQLite from reading the deliveries through an index of their states
/// (every row waiting) instead of the range.
macro_rules! deliveries_of_s {
    () => {
        "CROSS JOIN files AS f NOT INDEXED
            ON f.id >= s.id AND f.id < s.id + s.deliveries AND f.source_id = s.id"
    };
}

mod audit;
mod batches;
mod folders;
mod gates;
mod history;
mod multipart;
mod register;
mod report;
mod schema;
mod shared;
mod tallies;
mod transitions;

use rusqlite::{Connection, Row};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use audit::AuditRange;
pub use batches::Batch;
pub use batches::Batching;
pub use folders::{FolderChange, Gone, Orphans, SpoolFolder};
pub use gates::Gate;
pub use history::FORGET_BATCH;
pub use multipart::StoredPart;
pub use register::{Likeness, RouteRules, SpoolRules};
pub use schema::latest_version;
pub use shared::SharedQueue;
pub use transitions::{Done, Eligible, Ended};

/// A failed database operation, with the database's path.
#[derive(Debug, thiserror::Error)]
// The cause is part of the message and deliberately not a `source()`: chains printed
// with `{:#}` would show it twice.
#[error("queue database {path}: {cause}")]
pub struct QueueError {
    pub path: PathBuf,
    pub cause: rusqlite::Error,
}

pub type Result<T, E = QueueError> = std::result::Result<T, E>;

/// The four states a row can be in.
/// A type stored as text in a column: read back with its `parse` (an unknown text is an
/// error naming `$what`), and, with `as_str`, written the same way.
macro_rules! column_text {
    ($t:ty, $what:literal) => {
        impl rusqlite::types::FromSql for $t {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                let text = value.as_str()?;
                <$t>::parse(text).ok_or_else(|| {
                    rusqlite::types::FromSqlError::Other(
                        format!(concat!("unknown ", $what, " {:?}"), text).into(),
                    )
                })
            }
        }
    };
    ($t:ty, $what:literal, as_str) => {
        column_text!($t, $what);
        impl rusqlite::types::ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }
    };
}

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

column_text!(State, "state");

/// How a delivered file's source was finished (`source_outcome`): later decisions about
/// the file follow what was done to it, not today's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceOutcome {
    /// `after_upload = "delete"` removed it.
    Deleted,
    /// Moved into `archive_dir`.
    Archived,
    /// Left in place (`after_upload = "keep"`).
    Kept,
    /// Not at its path when it was finished (taken away, or a crash between the step
    /// and the record of it).
    Gone,
    /// Its path held another file then; that file was not touched.
    Replaced,
    /// A later version replaced it during its upload and got a row of its own.
    Superseded,
}

impl SourceOutcome {
    pub const ALL: [SourceOutcome; 6] = [
        SourceOutcome::Deleted,
        SourceOutcome::Archived,
        SourceOutcome::Kept,
        SourceOutcome::Gone,
        SourceOutcome::Replaced,
        SourceOutcome::Superseded,
    ];

    /// How the queue stores it (and the SQL of its queries names it).
    pub fn as_str(self) -> &'static str {
        match self {
            SourceOutcome::Deleted => "deleted",
            SourceOutcome::Archived => "archived",
            SourceOutcome::Kept => "kept",
            SourceOutcome::Gone => "gone",
            SourceOutcome::Replaced => "replaced",
            SourceOutcome::Superseded => "superseded",
        }
    }

    pub fn parse(text: &str) -> Option<SourceOutcome> {
        SourceOutcome::ALL.into_iter().find(|o| o.as_str() == text)
    }
}

impl std::fmt::Display for SourceOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

column_text!(SourceOutcome, "source_outcome", as_str);

/// Why a row is `failed` (`failure`): what the daemon decides by. The words for people
/// are in `last_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// Its source was not at its path at an attempt (deleted, moved, or its way now runs
    /// through a symlink): the file found again in the spool takes the row back.
    Vanished,
    /// It cannot be delivered as it is, whatever is tried (refused by S3, bad input for
    /// its format, a key that cannot be made).
    Refused,
    /// Its attempts were used up on errors that might have passed.
    GaveUp,
    /// The daemon died during its attempts again and again: set aside so others go on.
    SetAside,
    /// Its file moved inside the spool before its upload ended: another row has it.
    Moved,
}

impl Failure {
    pub const ALL: [Failure; 5] = [
        Failure::Vanished,
        Failure::Refused,
        Failure::GaveUp,
        Failure::SetAside,
        Failure::Moved,
    ];

    /// How the queue stores it (and the SQL of its queries names it).
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Vanished => "vanished",
            Failure::Refused => "refused",
            Failure::GaveUp => "gave_up",
            Failure::SetAside => "set_aside",
            Failure::Moved => "moved",
        }
    }

    pub fn parse(text: &str) -> Option<Failure> {
        Failure::ALL.into_iter().find(|f| f.as_str() == text)
    }
}

column_text!(Failure, "failure", as_str);

/// Identity of a file's contents as far as the file system tells: if any of these change,
/// the file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
}

impl FileStamp {
    /// A file's birth time in unix nanoseconds, where the file system keeps one.
    pub fn birth_of(meta: &std::fs::Metadata) -> Option<i64> {
        meta.created()
            .ok()
            .and_then(|t| t.duration_since(std::time::SystemTime::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_nanos()).ok())
    }

    /// A stamp stored as `size, mtime_ns, inode` in consecutive columns from `first`.
    fn from_columns(r: &Row<'_>, first: usize) -> rusqlite::Result<FileStamp> {
        Ok(FileStamp {
            size: r.get::<_, i64>(first)? as u64,
            mtime_ns: r.get(first + 1)?,
            inode: r.get::<_, i64>(first + 2)? as u64,
        })
    }

    /// The same size and mtime, whatever the inode: what a kept file restored with `cp -a`
    /// keeps. Only its content (hashed) can then say whether it is the same file.
    pub fn alike(self, other: FileStamp) -> bool {
        self.size == other.size && self.mtime_ns == other.mtime_ns
    }

    pub fn of(meta: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            size: meta.len(),
            // Saturating: an mtime past 2262 (or before 1677) must not wrap or panic.
            mtime_ns: meta
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec()),
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
    /// Birth time in unix nanoseconds, where the file system keeps one: a file that reuses
    /// a deleted file's inode (and size and mtime) still has another birth time.
    pub birth_ns: Option<i64>,
    /// When its stamp was read (unix milliseconds): a sighting older than the clean-up of
    /// the row it matches is of the file that clean-up removed.
    pub seen_at_ms: i64,
    /// The file's SHA-256, when the registration asked for it ([`Registered::Lookalike`]).
    pub sha256: Option<String>,
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
    /// At a kept row's path, a file with the same size and mtime but another inode (a
    /// restore, a disk move): nothing was written. Hash it and register it again with its
    /// SHA-256: the same content is the kept file (it takes the new inode), another is new.
    Lookalike(i64),
    /// A [`Registered::Lookalike`] with the kept file's content: the row took the new
    /// inode, and the file stays delivered.
    Restored(i64),
    /// This very file, moved inside the spool, was waiting (or had failed because it
    /// vanished) under its old path: the row now follows it.
    Followed(i64),
    /// This very file, moved inside the spool, had failed for another reason after a try
    /// (which may have stored it): the row follows it and stays failed until `retry`.
    FollowedFailed(i64),
    /// This very file was delivered, and deleted or archived after it was seen: nothing
    /// to do (a rescan that was walking while the file was cleaned up). A file at the
    /// path now is judged at the next look.
    CleanedUpSince(i64),
}

/// A file whose deliveries are all settled and which is to be deleted, archived or kept:
/// what the finisher needs of its source.
#[derive(Debug, Clone)]
pub struct SourceRow {
    /// The source's id, its first delivery's: the private names of its clean-up carry it.
    pub id: i64,
    pub spool: String,
    pub rel_path: String,
    pub path: PathBuf,
    pub stamp: FileStamp,
    /// When its last delivery was done (unix milliseconds).
    pub done_at: Option<i64>,
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
    /// Hex SHA-256 of the source as uploaded (set with the multipart upload, or when done).
    pub sha256: Option<String>,
    /// The open multipart upload, while there is one.
    pub upload_id: Option<String>,
    pub part_size: Option<u64>,
    /// Bumped on every claim; outcomes name the claim they belong to.
    pub claim: i64,
    /// Bytes of the object as uploaded (set when done).
    pub object_size: Option<u64>,
    /// Data rows of a converted table (set when done).
    pub rows: Option<u64>,
    /// The output format the object was made in (set when done).
    pub format: Option<String>,
    /// The manifest batch the delivery belongs to.
    pub batch_id: Option<i64>,
    /// How the source was finished.
    pub source_outcome: Option<SourceOutcome>,
    /// For a failed row: the row of a newer file at the same path.
    pub superseded_by: Option<i64>,
    /// Sent by an operator on its own: it goes outside its spool's window and cadence.
    pub rushed: bool,
    /// A request that makes the object may have reached S3 unanswered (or the daemon
    /// stopped mid-attempt): the next attempt asks HEAD before it sends.
    pub maybe_sent: bool,
    /// Why a `failed` row failed (none for rows failed before queue schema 11, unless
    /// their source vanished).
    pub failure: Option<Failure>,
}

/// The columns a [`FileRow`] is read from, named once: the SELECT list and the reader
/// agree by construction, and a reader naming a column not in the list fails to compile.
macro_rules! file_columns {
    ($first:ident $(, $rest:ident)* $(,)?) => {
        const COLUMNS: &str = concat!(stringify!($first) $(, ", ", stringify!($rest))*);
        const COLUMN_NAMES: &[&str] = &[stringify!($first) $(, stringify!($rest))*];
    };
}

file_columns!(
    id,
    spool,
    rel_path,
    path,
    destination,
    bucket,
    key,
    state,
    size,
    mtime_ns,
    inode,
    attempts,
    next_attempt_at,
    last_error,
    etag,
    queued_at,
    updated_at,
    done_at,
    source_finished_at,
    sha256,
    upload_id,
    part_size,
    claim,
    object_size,
    rows,
    format,
    batch_id,
    source_outcome,
    superseded_by,
    rushed,
    maybe_sent,
    failure
);

/// Where column `$name` is in [`COLUMNS`], known at compile time.
macro_rules! at {
    ($name:ident) => {
        const { column(stringify!($name)) }
    };
}

// A stamp is read from three columns side by side.
const _: () = assert!(column("mtime_ns") == column("size") + 1);
const _: () = assert!(column("inode") == column("size") + 2);

/// The position of `name` in [`COLUMNS`], at compile time.
const fn column(name: &str) -> usize {
    let mut i = 0;
    while i < COLUMN_NAMES.len() {
        let (a, b) = (COLUMN_NAMES[i].as_bytes(), name.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return i;
            }
        }
        i += 1;
    }
    panic!("not a column of FileRow");
}

impl FileRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<FileRow> {
        Ok(FileRow {
            id: r.get(at!(id))?,
            spool: r.get(at!(spool))?,
            rel_path: r.get(at!(rel_path))?,
            path: PathBuf::from(r.get::<_, String>(at!(path))?),
            destination: r.get(at!(destination))?,
            bucket: r.get(at!(bucket))?,
            key: r.get(at!(key))?,
            state: r.get(at!(state))?,
            stamp: FileStamp::from_columns(r, at!(size))?,
            attempts: r.get(at!(attempts))?,
            next_attempt_at: r.get(at!(next_attempt_at))?,
            last_error: r.get(at!(last_error))?,
            etag: r.get(at!(etag))?,
            queued_at: r.get(at!(queued_at))?,
            updated_at: r.get(at!(updated_at))?,
            done_at: r.get(at!(done_at))?,
            source_finished_at: r.get(at!(source_finished_at))?,
            sha256: r.get(at!(sha256))?,
            upload_id: r.get(at!(upload_id))?,
            part_size: r.get::<_, Option<i64>>(at!(part_size))?.map(|p| p as u64),
            claim: r.get(at!(claim))?,
            object_size: r.get::<_, Option<i64>>(at!(object_size))?.map(|n| n as u64),
            rows: r.get::<_, Option<i64>>(at!(rows))?.map(|n| n as u64),
            format: r.get(at!(format))?,
            batch_id: r.get(at!(batch_id))?,
            source_outcome: r.get(at!(source_outcome))?,
            superseded_by: r.get(at!(superseded_by))?,
            rushed: r.get(at!(rushed))?,
            maybe_sent: r.get(at!(maybe_sent))?,
            failure: r.get(at!(failure))?,
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

/// One spool's line in `s3spool status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SpoolLine {
    pub spool: String,
    pub counts: Counts,
    /// Unix milliseconds: when the oldest file waiting or in flight was queued.
    pub oldest_waiting_queued_at: Option<i64>,
    /// Files and object bytes delivered in the report's window.
    pub delivered_recently: u64,
    pub bytes_recently: u64,
    /// The latest error of a file not delivered.
    pub last_error: Option<String>,
    pub paused: bool,
}

/// One ended delivery attempt of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRecord {
    /// The file's attempt count after it.
    pub attempt: u32,
    /// Unix milliseconds.
    pub ended_at: i64,
    /// done, retry, failed, changed, held back, paused, stopped or interrupted.
    pub outcome: String,
    pub error: Option<String>,
}

/// What a condition holds back (stored, shown and labelled in metrics as `disk`,
/// `destination:NAME` or `spool:NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Held {
    /// Every claim: `state_dir` is low on space.
    Disk,
    /// The files of a destination that is failing.
    Destination(String),
    /// A spool whose folder was replaced: nothing of it moves.
    Spool(String),
}

impl Held {
    pub fn parse(text: &str) -> Option<Held> {
        match text.split_once(':') {
            None if text == "disk" => Some(Held::Disk),
            Some(("destination", name)) => Some(Held::Destination(name.to_string())),
            Some(("spool", name)) => Some(Held::Spool(name.to_string())),
            _ => None,
        }
    }
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Held::Disk => f.write_str("disk"),
            Held::Destination(name) => write!(f, "destination:{name}"),
            Held::Spool(name) => write!(f, "spool:{name}"),
        }
    }
}

impl Serialize for Held {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl rusqlite::types::ToSql for Held {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.to_string().into())
    }
}

column_text!(Held, "condition");

/// Something holding work back, as the daemon last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    pub name: Held,
    pub reason: String,
    /// Unix milliseconds.
    pub since: i64,
}

/// Queue depth of one spool in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Depth {
    pub spool: String,
    pub state: String,
    pub files: u64,
    /// Unix milliseconds; not for failed rows.
    pub oldest_queued_at: Option<i64>,
    /// The sum of the rows' source sizes.
    pub bytes: u64,
}

/// Filters for `s3spool list`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<State>,
    pub spool: Option<String>,
    /// Only the deliveries to this destination.
    pub destination: Option<String>,
    pub limit: Option<u64>,
    /// Leave `done` rows out (when no state is asked for).
    pub not_done: bool,
    /// Newest first; oldest first by default.
    pub newest_first: bool,
}

/// An open queue database.
pub struct Queue {
    conn: Connection,
    path: PathBuf,
    /// This queue's UUID, made with it: objects name it with the row that wrote them.
    identity: String,
}

/// Creates the database file 0600 whatever the umask, if it does not exist: the queue names
/// every file the host ships. SQLite gives its WAL and shared-memory files the mode of the
/// database file.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The UUID the queue was made with (schema 7).
fn read_identity(conn: &Connection) -> rusqlite::Result<String> {
    conn.query_row("SELECT uuid FROM queue_identity LIMIT 1", [], |r| r.get(0))
}

/// What an object written by row `id` of the queue `identity` carries as its writer
/// (`x-amz-meta-s3spool-row`).
pub fn writer_of(identity: &str, id: i64) -> String {
    format!("{identity}/{id}")
}

/// Prepared statements kept per connection (room for every statement of the queue).
const STATEMENT_CACHE: usize = 128;

impl Queue {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Queue> {
        let err = |cause| QueueError {
            path: path.to_path_buf(),
            cause,
        };
        create_private(path).map_err(|e| QueueError {
            path: path.to_path_buf(),
            cause: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!("cannot create the queue file: {e}")),
            ),
        })?;
        let mut conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        // A new queue gives the pages of forgotten rows back to the file system (a bounded
        // history); on an existing one this does nothing until a VACUUM (see `history`).
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        // FULL: a commit is on disk before we act on it (e.g. delete the source).
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        // 16 MiB of pages (SQLite's default is 2 MiB): a backlog of 100,000 rows and its
        // indexes stay in memory instead of being read again from the file at every look-up.
        conn.pragma_update(None, "cache_size", -16 * 1024)
            .map_err(err)?;
        schema::migrate(&mut conn).map_err(err)?;
        // Every statement of the queue stays prepared: it has about sixty, rusqlite keeps
        // 16 by default.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let identity = read_identity(&conn).map_err(err)?;
        Ok(Queue {
            conn,
            path: path.to_path_buf(),
            identity,
        })
    }

    /// Opens an existing database for reading only (`status`, `list`, `show`): no write
    /// lock, no migration, so it works for a user who may only read the queue.
    pub fn open_read_only(path: &Path) -> Result<Queue> {
        use rusqlite::OpenFlags;
        let err = |cause| QueueError {
            path: path.to_path_buf(),
            cause,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        // A daemon starting right now may have created the file but not yet its schema
        // (it does so within milliseconds): wait a little rather than fail.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let version: usize = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(err)?;
            if version == latest_version() {
                break;
            }
            // A newer s3spool's queue is never waited for: this build cannot read it.
            if version > latest_version() || std::time::Instant::now() >= deadline {
                let advice = if version > latest_version() {
                    "a newer s3spool wrote it: use that s3spool, or one at least as new"
                } else {
                    "start the daemon of this version once (it upgrades the queue), or use the s3spool that wrote it"
                };
                return Err(err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
                    Some(format!(
                        "schema version {version}, this s3spool reads version {}: {advice}",
                        latest_version()
                    )),
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let identity = read_identity(&conn).map_err(err)?;
        Ok(Queue {
            conn,
            path: path.to_path_buf(),
            identity,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This queue's UUID (see [`Queue::writer_of`]).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Runs `f` in an immediate transaction and commits it. Inside a transaction already
    /// open (a group, see [`SharedQueue::grouped`]) it runs in a savepoint instead: its
    /// changes are undone alone if it fails (all of the group's, if SQLite rolled back
    /// the whole transaction: a full disk, no memory), and made durable by the group's
    /// commit.
    ///
    /// Because a failure here undoes the whole of `f`, the writes to `files` made once per
    /// file (registration, claim, done) are `OR FAIL`: with ABORT, a write that fires the
    /// tally triggers makes SQLite copy every page it touches into a statement journal
    /// first, to undo that one statement alone, which doubled the cost of each. Only a
    /// statement that always runs inside this may be OR FAIL (in autocommit, FAIL would
    /// keep a multi-row statement's first rows), and it calls no SQL function (a call may
    /// abort too, and brings the journal back). The triggers' own steps are OR FAIL for
    /// every write, autocommit too: they cannot fail on a constraint (the insert is
    /// guarded by NOT EXISTS, and nothing they write is NULL).
    fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let path = self.path.clone();
        let err = |cause| QueueError {
            path: path.clone(),
            cause,
        };
        if !self.conn.is_autocommit() {
            let savepoint = self.conn.savepoint().map_err(err)?;
            let out = f(&savepoint).map_err(err)?;
            savepoint.commit().map_err(err)?;
            return Ok(out);
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let out = f(&tx).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(out)
    }

    /// A number that changes whenever another connection (another process: the CLI's
    /// `retry`, `resume`, `send`) commits a change to the queue. This connection's own
    /// commits leave it as it is.
    pub fn changes_by_others(&self) -> Result<i64> {
        self.conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(|e| self.err(e))
    }

    /// Runs one cached query and collects every row it returns.
    fn select<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params, map)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        drop(stmt);
        rows.map_err(|e| self.err(e))
    }

    fn err(&self, cause: rusqlite::Error) -> QueueError {
        QueueError {
            path: self.path.clone(),
            cause,
        }
    }
}

#[cfg(test)]
mod batches_tests;
#[cfg(test)]
mod gates_tests;
#[cfg(test)]
mod history_tests;
#[cfg(test)]
mod maybe_sent_tests;
#[cfg(test)]
mod mod_tests;
#[cfg(test)]
mod multipart_tests;
#[cfg(test)]
mod register_tests;
#[cfg(test)]
mod report_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod transitions_tests;
