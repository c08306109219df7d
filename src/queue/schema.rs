//! Append-only migrations keyed by `PRAGMA user_version`. Never edit a shipped entry: add one.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: the file queue.
    r#"
    CREATE TABLE files (
        id              INTEGER PRIMARY KEY,
        spool           TEXT    NOT NULL,
        rel_path        TEXT    NOT NULL,          -- relative to the spool, '/'-separated
        path            TEXT    NOT NULL,          -- absolute source path when queued
        destination     TEXT    NOT NULL,
        bucket          TEXT    NOT NULL,
        key             TEXT,                      -- rendered once at queue time; NULL if it could not be
        state           TEXT    NOT NULL CHECK (state IN ('pending', 'active', 'done', 'failed')),
        size            INTEGER NOT NULL,
        mtime_ns        INTEGER NOT NULL,
        inode           INTEGER NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,          -- unix milliseconds
        lease_until     INTEGER,                   -- unix milliseconds, while active
        last_error      TEXT,
        etag            TEXT,
        queued_at       INTEGER NOT NULL,          -- unix milliseconds
        updated_at      INTEGER NOT NULL,
        done_at         INTEGER,
        source_finished_at INTEGER                 -- after_upload applied (deleted/archived/kept)
    );
    CREATE INDEX files_due  ON files (state, next_attempt_at);
    CREATE INDEX files_path ON files (spool, rel_path, id);
    CREATE VIEW files_readable AS
        SELECT id, state, spool, rel_path, key, size, attempts, last_error,
               strftime('%Y-%m-%dT%H:%M:%fZ', queued_at / 1000.0, 'unixepoch')       AS queued,
               strftime('%Y-%m-%dT%H:%M:%fZ', next_attempt_at / 1000.0, 'unixepoch') AS next_attempt,
               strftime('%Y-%m-%dT%H:%M:%fZ', done_at / 1000.0, 'unixepoch')         AS done
        FROM files;
    "#,
    // 2: crash-resumable multipart uploads, the source's SHA-256, claim tokens.
    r#"
    ALTER TABLE files ADD COLUMN sha256 TEXT;        -- of the source as uploaded
    ALTER TABLE files ADD COLUMN upload_id TEXT;     -- open multipart upload, while one exists
    ALTER TABLE files ADD COLUMN part_size INTEGER;  -- of that upload
    ALTER TABLE files ADD COLUMN claim INTEGER NOT NULL DEFAULT 0; -- bumped on every claim
    CREATE TABLE parts (
        file_id INTEGER NOT NULL,
        number  INTEGER NOT NULL,
        size    INTEGER NOT NULL,
        etag    TEXT    NOT NULL,
        md5     TEXT    NOT NULL,                    -- hex, for the multipart ETag check
        PRIMARY KEY (file_id, number)
    ) WITHOUT ROWID;
    DROP VIEW files_readable;
    CREATE VIEW files_readable AS
        SELECT id, state, spool, rel_path, key, size, attempts, last_error,
               (SELECT COUNT(*) FROM parts WHERE file_id = files.id) AS parts_done,
               CASE WHEN part_size > 0 THEN (size + part_size - 1) / part_size END AS parts_total,
               strftime('%Y-%m-%dT%H:%M:%fZ', queued_at / 1000.0, 'unixepoch')       AS queued,
               strftime('%Y-%m-%dT%H:%M:%fZ', next_attempt_at / 1000.0, 'unixepoch') AS next_attempt,
               strftime('%Y-%m-%dT%H:%M:%fZ', done_at / 1000.0, 'unixepoch')         AS done
        FROM files;
    "#,
    // 3: what was delivered (object size, rows, format) and manifest batches.
    r#"
    ALTER TABLE files ADD COLUMN object_size INTEGER;  -- bytes of the object as uploaded
    ALTER TABLE files ADD COLUMN rows INTEGER;         -- data rows of a converted table
    ALTER TABLE files ADD COLUMN format TEXT;          -- raw, gzip, parquet, jsonl (+ '+pgp')
    ALTER TABLE files ADD COLUMN batch_id INTEGER;     -- manifest batch the delivery is in
    CREATE TABLE batches (
        id          INTEGER PRIMARY KEY,
        name        TEXT    NOT NULL UNIQUE,           -- {batch} in the manifest key
        spool       TEXT    NOT NULL,
        destination TEXT    NOT NULL,
        bucket      TEXT    NOT NULL,
        host        TEXT    NOT NULL,
        state       TEXT    NOT NULL CHECK (state IN ('open', 'closed', 'written')),
        files       INTEGER NOT NULL DEFAULT 0,
        opened_at   INTEGER NOT NULL,                  -- unix milliseconds
        closed_at   INTEGER,
        manifest_key TEXT,                             -- fixed before the first write attempt
        written_at  INTEGER,
        attempts    INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL DEFAULT 0,
        last_error  TEXT
    );
    CREATE INDEX batches_state ON batches (state, spool);
    CREATE INDEX files_batch ON files (batch_id) WHERE batch_id IS NOT NULL;
    "#,
    // 4: conditions that hold work back (state_dir low on space, a destination failing),
    // written by the daemon for `status`; spools an operator paused; attempt history.
    r#"
    CREATE TABLE conditions (
        name   TEXT    PRIMARY KEY,                    -- 'disk' or 'destination:NAME'
        reason TEXT    NOT NULL,
        since  INTEGER NOT NULL                        -- unix milliseconds
    ) WITHOUT ROWID;
    CREATE TABLE paused (
        spool  TEXT    PRIMARY KEY,
        since  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE attempts (
        file_id  INTEGER NOT NULL,
        attempt  INTEGER NOT NULL,                     -- the file's attempt count then
        ended_at INTEGER NOT NULL,                     -- unix milliseconds
        outcome  TEXT    NOT NULL,                     -- done, retry, failed, changed, held back
        error    TEXT
    );
    CREATE INDEX attempts_file ON attempts (file_id, ended_at);
    "#,
];

/// Brings the schema up to date. Safe to run on every open, by the daemon and the CLI alike.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: usize = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index + 1)?;
    }
    tx.commit()
}

/// The schema version this build writes.
pub fn latest_version() -> usize {
    MIGRATIONS.len()
}
