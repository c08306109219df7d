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
    // 5: ids are never reused (AUTOINCREMENT: a purge of the newest rows must not hand
    // their ids, and so `{id}` keys, out again); how each source was finished; which
    // failed row a newer file at its path superseded; the source's birth time (tells a
    // moved file from a new one that reuses an inode); attempts the daemon died during
    // (poison files). SQLite cannot add AUTOINCREMENT to a table, so the table is made
    // anew and its rows copied with their ids.
    r#"
    DROP VIEW files_readable;
    CREATE TABLE files_v5 (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        spool           TEXT    NOT NULL,
        rel_path        TEXT    NOT NULL,
        path            TEXT    NOT NULL,
        destination     TEXT    NOT NULL,
        bucket          TEXT    NOT NULL,
        key             TEXT,
        state           TEXT    NOT NULL CHECK (state IN ('pending', 'active', 'done', 'failed')),
        size            INTEGER NOT NULL,
        mtime_ns        INTEGER NOT NULL,
        inode           INTEGER NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        lease_until     INTEGER,
        last_error      TEXT,
        etag            TEXT,
        queued_at       INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL,
        done_at         INTEGER,
        source_finished_at INTEGER,
        sha256          TEXT,
        upload_id       TEXT,
        part_size       INTEGER,
        claim           INTEGER NOT NULL DEFAULT 0,
        object_size     INTEGER,
        rows            INTEGER,
        format          TEXT,
        batch_id        INTEGER,
        source_outcome  TEXT,                      -- deleted, archived, kept, gone, replaced
        superseded_by   INTEGER,                   -- a failed row: the newer row for its path
        birth_ns        INTEGER,                   -- the source's birth time, where the file system keeps one
        interruptions   INTEGER NOT NULL DEFAULT 0 -- attempts in a row the daemon died during
    );
    INSERT INTO files_v5 (id, spool, rel_path, path, destination, bucket, key, state, size,
        mtime_ns, inode, attempts, next_attempt_at, lease_until, last_error, etag, queued_at,
        updated_at, done_at, source_finished_at, sha256, upload_id, part_size, claim,
        object_size, rows, format, batch_id)
    SELECT id, spool, rel_path, path, destination, bucket, key, state, size,
        mtime_ns, inode, attempts, next_attempt_at, lease_until, last_error, etag, queued_at,
        updated_at, done_at, source_finished_at, sha256, upload_id, part_size, claim,
        object_size, rows, format, batch_id FROM files;
    -- Ids of rows purged before this version are known only where their attempt history
    -- survived (purge deleted it with the row); skip those too.
    INSERT INTO sqlite_sequence (name, seq)
    SELECT 'files_v5', MAX(COALESCE((SELECT MAX(id) FROM files), 0),
                           COALESCE((SELECT MAX(file_id) FROM attempts), 0))
    WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'files_v5');
    UPDATE sqlite_sequence
    SET seq = MAX(seq, COALESCE((SELECT MAX(file_id) FROM attempts), 0))
    WHERE name = 'files_v5';
    DROP TABLE files;
    ALTER TABLE files_v5 RENAME TO files;
    CREATE INDEX files_due  ON files (state, next_attempt_at);
    CREATE INDEX files_path ON files (spool, rel_path, id);
    CREATE INDEX files_batch ON files (batch_id) WHERE batch_id IS NOT NULL;
    CREATE INDEX files_inode ON files (spool, inode);
    -- Multipart uploads no row needs any more (the file was rewritten before its upload,
    -- or moved and given a row of its own): the running daemon aborts them.
    CREATE TABLE abandoned_uploads (
        upload_id   TEXT    PRIMARY KEY,
        destination TEXT    NOT NULL,
        bucket      TEXT    NOT NULL,
        key         TEXT    NOT NULL
    ) WITHOUT ROWID;
    CREATE VIEW files_readable AS
        SELECT id, state, spool, rel_path, key, size, attempts, last_error,
               (SELECT COUNT(*) FROM parts WHERE file_id = files.id) AS parts_done,
               CASE WHEN part_size > 0 THEN (size + part_size - 1) / part_size END AS parts_total,
               strftime('%Y-%m-%dT%H:%M:%fZ', queued_at / 1000.0, 'unixepoch')       AS queued,
               strftime('%Y-%m-%dT%H:%M:%fZ', next_attempt_at / 1000.0, 'unixepoch') AS next_attempt,
               strftime('%Y-%m-%dT%H:%M:%fZ', done_at / 1000.0, 'unixepoch')         AS done
        FROM files;
    "#,
    // 6: delivery windows and batch cadence. `rushed` marks files an operator sent on
    // their own (`send`, `resume --now`): they go outside their spool's window and ahead
    // of its cadence. `ticks` holds each cadence spool's last batch tick: its rows up to
    // `last_id` were queued by then and may go. `rush_requests` names files `send` is
    // placing in a spool: their rows are rushed as they are queued.
    r#"
    ALTER TABLE files ADD COLUMN rushed INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE rush_requests (
        spool        TEXT    NOT NULL,
        rel_path     TEXT    NOT NULL,
        inode        INTEGER NOT NULL,
        requested_at INTEGER NOT NULL,
        PRIMARY KEY (spool, rel_path)
    ) WITHOUT ROWID;
    CREATE TABLE ticks (
        spool   TEXT    PRIMARY KEY,
        tick_at INTEGER NOT NULL,
        last_id INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 7: what S3 may hold of a row, and whose objects they are. `maybe_sent` is set, in
    // the transaction that puts a row back, when a request that makes its object (a PUT,
    // a CompleteMultipartUpload) went out and got no answer, or the daemon stopped or died
    // with the row in flight: the next attempt asks HEAD first. Rows back in the queue
    // that the earlier rule (an attempt before, an upload, an error) would have checked
    // keep being checked. `queue_identity` names this queue in the metadata of the
    // objects its rows write (`x-amz-meta-s3spool-row: UUID/ID`), so an object found at a
    // row's key is known to be that row's, whatever bytes it holds. Any row ever claimed
    // counts: a stop before this version put rows back with their attempt counted and no
    // error, the same as a row that was never sent.
    r#"
    ALTER TABLE files ADD COLUMN maybe_sent INTEGER NOT NULL DEFAULT 0;
    UPDATE files SET maybe_sent = 1
    WHERE state != 'done'
      AND (attempts >= 1 OR claim > 0 OR upload_id IS NOT NULL OR last_error IS NOT NULL
           OR state = 'active');
    CREATE TABLE queue_identity (
        uuid TEXT NOT NULL
    );
    INSERT INTO queue_identity (uuid) VALUES (lower(hex(randomblob(16))));
    "#,
    // 8: a spool is its folder. Each folder a config has named (its canonical path), the
    // name its rows carry now, and `spools.NAME.path` as the config said it: a table
    // renamed in the config carries its rows over, and a name given to another folder
    // leaves the old folder's rows orphaned (see queue/folders.rs).
    r#"
    CREATE TABLE spool_folders (
        root       TEXT    PRIMARY KEY,
        spool      TEXT    NOT NULL UNIQUE,
        configured TEXT    NOT NULL,
        seen_at    INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 9: the source's SHA-256 as delivered, whatever the format (`sha256` is the
    // object's). A kept file found again with another inode but the same size and mtime
    // (a restore, a disk move, a mount without stable inodes) is hashed and taken for the
    // delivered one if this matches. Raw rows delivered before have it in `sha256`.
    r#"
    ALTER TABLE files ADD COLUMN source_sha256 TEXT;
    UPDATE files SET source_sha256 = sha256 WHERE state = 'done' AND format = 'raw';
    "#,
    // 10: the spools and destinations the daemon runs with, written at each start and
    // reload: `status` and `purge --orphaned` judge orphans by them while it runs, not by
    // a config file that may have been edited, or be another one.
    r#"
    CREATE TABLE running_names (
        kind TEXT NOT NULL,            -- spool or destination
        name TEXT NOT NULL,
        PRIMARY KEY (kind, name)
    ) WITHOUT ROWID;
    "#,
    // 11: why a failed row failed, as a code ([`super::Failure`]): the daemon decides by
    // it (a row whose source vanished follows the file found again), never by the words
    // of `last_error`, which are for people. Rows failed before this version are read
    // once, here, by the words their version wrote.
    r#"
    ALTER TABLE files ADD COLUMN failure TEXT;
    UPDATE files SET failure = 'vanished'
        WHERE state = 'failed' AND instr(last_error, 'source disappeared') = 1;
    "#,
    // 12: the keys of rows `purge` dropped, until a sweep that could abort every upload
    // under them has run: an upload whose creation was answered too late for its row to
    // record it is s3spool's, and must not pass for another tool's once the row is gone.
    r#"
    CREATE TABLE purged_keys (
        destination TEXT    NOT NULL,
        key         TEXT    NOT NULL,
        purged_at   INTEGER NOT NULL,
        PRIMARY KEY (destination, key)
    ) WITHOUT ROWID;
    "#,
    // 13: per bucket, the newest delivery whose row a purge removed: `verify --unexplained`
    // judges only objects written after it (an older object may be a purged row's).
    r#"
    CREATE TABLE purge_horizons (
        bucket      TEXT    NOT NULL PRIMARY KEY,
        done_before INTEGER NOT NULL           -- unix milliseconds
    ) WITHOUT ROWID;
    "#,
    // 14: rows per spool, destination and state, kept by triggers in the writes' own
    // transactions: `status` and the metrics count without a walk over millions of rows.
    // Superseded rows (failed rows a newer row of their file replaced) are not counted.
    // No upsert and every step OR FAIL: a trigger step that may abort makes SQLite copy
    // every page a write to `files` touches into a statement journal first (an upsert's
    // DO UPDATE always may), which doubled the cost of registering a file. The hot writes
    // to `files` are OR FAIL too (see `Queue::in_transaction`).
    r#"
    CREATE TABLE tallies (
        spool       TEXT    NOT NULL,
        destination TEXT    NOT NULL,
        state       TEXT    NOT NULL,
        files       INTEGER NOT NULL,
        bytes       INTEGER NOT NULL,          -- the rows' source sizes
        PRIMARY KEY (spool, destination, state)
    ) WITHOUT ROWID;
    INSERT INTO tallies (spool, destination, state, files, bytes)
        SELECT spool, destination, state, COUNT(*), SUM(size) FROM files
        WHERE superseded_by IS NULL GROUP BY spool, destination, state;
    CREATE TRIGGER tally_insert AFTER INSERT ON files WHEN NEW.superseded_by IS NULL
    BEGIN
        INSERT OR FAIL INTO tallies (spool, destination, state, files, bytes)
            SELECT NEW.spool, NEW.destination, NEW.state, 0, 0
            WHERE NOT EXISTS (SELECT 1 FROM tallies WHERE spool = NEW.spool
                              AND destination = NEW.destination AND state = NEW.state);
        UPDATE OR FAIL tallies SET files = files + 1, bytes = bytes + NEW.size
            WHERE spool = NEW.spool AND destination = NEW.destination AND state = NEW.state;
    END;
    CREATE TRIGGER tally_delete AFTER DELETE ON files WHEN OLD.superseded_by IS NULL
    BEGIN
        UPDATE OR FAIL tallies SET files = files - 1, bytes = bytes - OLD.size
            WHERE spool = OLD.spool AND destination = OLD.destination AND state = OLD.state;
    END;
    CREATE TRIGGER tally_update
        AFTER UPDATE OF spool, destination, state, size, superseded_by ON files
        WHEN OLD.spool IS NOT NEW.spool OR OLD.destination IS NOT NEW.destination
          OR OLD.state IS NOT NEW.state OR OLD.size IS NOT NEW.size
          OR OLD.superseded_by IS NOT NEW.superseded_by
    BEGIN
        UPDATE OR FAIL tallies SET files = files - 1, bytes = bytes - OLD.size
            WHERE OLD.superseded_by IS NULL
              AND spool = OLD.spool AND destination = OLD.destination AND state = OLD.state;
        INSERT OR FAIL INTO tallies (spool, destination, state, files, bytes)
            SELECT NEW.spool, NEW.destination, NEW.state, 0, 0
            WHERE NEW.superseded_by IS NULL
              AND NOT EXISTS (SELECT 1 FROM tallies WHERE spool = NEW.spool
                              AND destination = NEW.destination AND state = NEW.state);
        UPDATE OR FAIL tallies SET files = files + 1, bytes = bytes + NEW.size
            WHERE NEW.superseded_by IS NULL
              AND spool = NEW.spool AND destination = NEW.destination AND state = NEW.state;
    END;
    "#,
    // 15: per destination, how far the last clean orphan sweep reached: every upload
    // begun before it under a key the queue knew then is aborted. A row forgotten by
    // `history` whose uploads all began before that needs no entry in `purged_keys`,
    // so a long history keeps no key of its forgotten rows at all.
    r#"
    CREATE TABLE sweep_horizons (
        destination  TEXT    NOT NULL PRIMARY KEY,
        swept_before INTEGER NOT NULL          -- unix milliseconds
    ) WITHOUT ROWID;
    "#,
    // 16: a file and its deliveries apart (fan-out, issue 26): `sources` holds what belongs
    // to the file (its path and stamp, and how it was cleaned up), `files` one delivery of
    // it to one destination. The file's columns stay on `files` as copies, written only by
    // the trigger `source_copies`, so every reader of one flat row (tallies, views, `list`,
    // operators' `sqlite3` queries) keeps working and `files` is not rebuilt. A source's
    // id is the id of its first delivery (ids are never reused), so names made from a row
    // id (`.s3spool-finishing-ID`, `a.restored-ID.csv`) carry over; every row today is one
    // source with one delivery. `unsettled` counts the deliveries neither done nor
    // superseded: the file is cleaned up only at 0. Registration sets it for the rows it
    // inserts (a trigger on every insert cost the intake); triggers keep it after that.
    // A source's deliveries are made together, in one transaction, so their ids run from
    // its id for `deliveries`: the triggers find them by that range of the primary key,
    // and `files` needs no index by `source_id` (one cost the intake 14 % of its CPU).
    // Trigger steps take no SQL function and are OR FAIL (see 14).
    r#"
    CREATE TABLE sources (
        id          INTEGER PRIMARY KEY,       -- its first delivery's id
        spool       TEXT    NOT NULL,
        rel_path    TEXT    NOT NULL,
        path        TEXT    NOT NULL,
        size        INTEGER NOT NULL,
        mtime_ns    INTEGER NOT NULL,
        inode       INTEGER NOT NULL,
        birth_ns    INTEGER,
        queued_at   INTEGER NOT NULL,
        finished_at INTEGER,                   -- after_upload ran (unix milliseconds)
        outcome     TEXT,                      -- how: deleted archived kept gone replaced superseded
        unsettled   INTEGER NOT NULL DEFAULT 0, -- deliveries neither done nor superseded
        deliveries  INTEGER NOT NULL DEFAULT 1  -- their ids: id .. id + deliveries - 1
    );
    INSERT INTO sources (id, spool, rel_path, path, size, mtime_ns, inode, birth_ns,
        queued_at, finished_at, outcome, unsettled)
    SELECT id, spool, rel_path, path, size, mtime_ns, inode, birth_ns, queued_at,
        source_finished_at, source_outcome, state != 'done' AND superseded_by IS NULL
    FROM files;
    ALTER TABLE files ADD COLUMN source_id INTEGER;
    UPDATE files SET source_id = id;
    -- After the UPDATE above, or it would count every row twice.
    CREATE TRIGGER settle_delete AFTER DELETE ON files
        WHEN OLD.state != 'done' AND OLD.superseded_by IS NULL
    BEGIN
        UPDATE OR FAIL sources SET unsettled = unsettled - 1 WHERE id = OLD.source_id;
    END;
    CREATE TRIGGER settle_update AFTER UPDATE OF state, superseded_by, source_id ON files
        WHEN OLD.source_id IS NOT NEW.source_id
          OR (OLD.state != 'done' AND OLD.superseded_by IS NULL)
             IS NOT (NEW.state != 'done' AND NEW.superseded_by IS NULL)
    BEGIN
        UPDATE OR FAIL sources SET unsettled = unsettled - 1
            WHERE id = OLD.source_id AND OLD.state != 'done' AND OLD.superseded_by IS NULL;
        UPDATE OR FAIL sources SET unsettled = unsettled + 1
            WHERE id = NEW.source_id AND NEW.state != 'done' AND NEW.superseded_by IS NULL;
    END;
    -- A source whose last delivery is forgotten (history, purge) goes with it.
    CREATE TRIGGER source_forgotten AFTER DELETE ON files
    BEGIN
        DELETE FROM sources WHERE id = OLD.source_id
            AND NOT EXISTS (SELECT 1 FROM files WHERE files.id >= sources.id
                            AND files.id < sources.id + sources.deliveries);
    END;
    CREATE TRIGGER source_copies
        AFTER UPDATE OF spool, rel_path, path, size, mtime_ns, inode, birth_ns,
                        finished_at, outcome
        ON sources
    BEGIN
        UPDATE OR FAIL files SET spool = NEW.spool, rel_path = NEW.rel_path, path = NEW.path,
            size = NEW.size, mtime_ns = NEW.mtime_ns, inode = NEW.inode,
            birth_ns = NEW.birth_ns, source_finished_at = NEW.finished_at,
            source_outcome = NEW.outcome
        WHERE id >= NEW.id AND id < NEW.id + NEW.deliveries AND source_id = NEW.id;
    END;
    "#,
    // 17: a file is found by its source, not by a delivery: registration looks up the
    // sources at a path and of an inode, and their deliveries by their range of ids.
    // The deliveries' indexes by path and inode go (each file kept four entries in them,
    // and now keeps two). A version, not an index made on open: an older s3spool would
    // find its files by a walk over every row without them, so it must refuse this queue.
    r#"
    CREATE INDEX sources_path ON sources (spool, rel_path, id);
    CREATE INDEX sources_inode ON sources (spool, inode);
    DROP INDEX files_path;
    DROP INDEX files_inode;
    "#,
    // 18: the finisher works on sources. A source is ready to be deleted, archived or kept
    // when no delivery of it is left to do (`unsettled = 0`), it is not finished yet, and
    // it was not superseded: `superseded_by` is set, by a trigger, once every delivery of
    // it is superseded (a failed file replaced at its path, or moved while it failed); it
    // never had one done, and its file is the newer source's now. `sources_ready` holds
    // just the ready ones, so a pass never walks the sources finished long ago, nor those
    // whose deliveries are still to do.
    r#"
    ALTER TABLE sources ADD COLUMN superseded_by INTEGER;
    UPDATE sources SET superseded_by = (SELECT MAX(f.superseded_by) FROM files AS f
            WHERE f.id >= sources.id AND f.id < sources.id + sources.deliveries)
        WHERE NOT EXISTS (SELECT 1 FROM files AS f
            WHERE f.id >= sources.id AND f.id < sources.id + sources.deliveries
              AND f.superseded_by IS NULL);
    CREATE TRIGGER source_superseded AFTER UPDATE OF superseded_by ON files
        WHEN NEW.superseded_by IS NOT NULL AND OLD.superseded_by IS NULL
    BEGIN
        UPDATE OR FAIL sources SET superseded_by = NEW.superseded_by
            WHERE id = NEW.source_id AND superseded_by IS NULL
              AND NOT EXISTS (SELECT 1 FROM files WHERE files.id >= sources.id
                              AND files.id < sources.id + sources.deliveries
                              AND files.superseded_by IS NULL);
    END;
    CREATE INDEX sources_ready ON sources (id)
        WHERE unsettled = 0 AND finished_at IS NULL AND superseded_by IS NULL;
    "#,
];

/// Indexes that change no meaning: made on every open when missing, without a new schema
/// version, so the s3spool that came before can still open the queue (it ignores them).
const INDEXES: &str = "
    -- Delivered rows whose source is not finished yet, for the finisher's query (a range
    -- of this index, not a walk over every done row ever kept).
    CREATE INDEX IF NOT EXISTS files_unfinished ON files (id)
        WHERE state = 'done' AND source_finished_at IS NULL;
    -- Rows the daemon died with (rare): every claim asks whether one is due or in flight,
    -- which without this walks every due row of a backlog.
    CREATE INDEX IF NOT EXISTS files_suspect ON files (state, next_attempt_at)
        WHERE interruptions > 0;
    -- Each spool's due rows in claim order: a claim reads only the ranges of the spools it
    -- may take, never the backlog of a paused one.
    CREATE INDEX IF NOT EXISTS files_spool_due ON files (state, spool, next_attempt_at);
    -- A spool outside its window claims only its rushed rows, and one with a cadence only
    -- the rows of ticks taken: neither walks the rest of its backlog.
    CREATE INDEX IF NOT EXISTS files_rushed ON files (spool, next_attempt_at)
        WHERE state = 'pending' AND rushed = 1;
    CREATE INDEX IF NOT EXISTS files_pending_id ON files (spool, id) WHERE state = 'pending';
    -- Kept files by size and mtime (kept, or taken away or put back with another inode
    -- while their upload ran): one restored with another inode and moved is found by its
    -- content, without a walk over the spool's rows. (files_kept, its first form, took
    -- only the kept; files_kept_or_gone, its second, not the replaced.)
    DROP INDEX IF EXISTS files_kept;
    DROP INDEX IF EXISTS files_kept_or_gone;
    CREATE INDEX IF NOT EXISTS files_done_alike ON files (spool, size, mtime_ns)
        WHERE source_outcome IN ('kept', 'gone', 'replaced');
    -- Delivered rows the daemon may forget once older than `history`, oldest first:
    -- retention takes a range of this index, never a walk over the rows that stay.
    CREATE INDEX IF NOT EXISTS files_forgettable ON files (done_at)
        WHERE state = 'done' AND source_outcome IN ('deleted', 'archived', 'superseded');
    CREATE INDEX IF NOT EXISTS files_waiting_alike ON files (spool, size, mtime_ns)
        WHERE state IN ('pending', 'active');
    -- Rows failed because their file vanished, by size and mtime: a file restored with
    -- another inode and moved is found without a walk.
    CREATE INDEX IF NOT EXISTS files_vanished_alike ON files (spool, size, mtime_ns)
        WHERE state = 'failed' AND failure = 'vanished';
    -- Rows with an open multipart upload (few): the sweeps ask for them every hour.
    CREATE INDEX IF NOT EXISTS files_uploading ON files (id) WHERE upload_id IS NOT NULL;
    -- Sources finished before outcomes were recorded (schema 5; none since): each start
    -- fills them in without a walk over every row.
    CREATE INDEX IF NOT EXISTS files_outcome_unknown ON files (spool)
        WHERE source_finished_at IS NOT NULL AND source_outcome IS NULL;
    -- Delivered rows by when: `status` counts the last hour's without a walk.
    CREATE INDEX IF NOT EXISTS files_done_at ON files (done_at) WHERE state = 'done';
    -- Rows not delivered that carry an error, latest first: `status` names the latest
    -- without a walk over every row waiting.
    CREATE INDEX IF NOT EXISTS files_erring ON files (updated_at)
        WHERE last_error IS NOT NULL AND state != 'done';
";

/// Brings the schema up to date. Safe to run on every open, by the daemon and the CLI alike.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: usize = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > MIGRATIONS.len() {
        // A newer s3spool wrote this queue: its rows may mean things this build does not
        // know. Reading or writing them could lose files.
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
            Some(format!(
                "schema version {current}, newer than this s3spool knows ({}): run the \
                 s3spool that wrote it, or a newer one",
                MIGRATIONS.len()
            )),
        ));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index + 1)?;
    }
    tx.execute_batch(INDEXES)?;
    tx.commit()
}

/// The schema version this build writes.
pub fn latest_version() -> usize {
    MIGRATIONS.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue made by the first `version` migrations, as that release left it.
    fn at_version(version: usize) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..version] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", version).unwrap();
        conn
    }

    #[test]
    fn version_5_keeps_rows_and_never_hands_out_an_id_seen_before() {
        let mut conn = at_version(4);
        conn.execute_batch(
            "INSERT INTO files (id, spool, rel_path, path, destination, bucket, key, state, size,
                 mtime_ns, inode, next_attempt_at, queued_at, updated_at)
             VALUES (3, 's', 'a', '/s/a', 'd', 'b', 'k3', 'pending', 1, 1, 1, 0, 0, 0);
             -- Row 9 was purged; only its history is left.
             INSERT INTO attempts (file_id, attempt, ended_at, outcome) VALUES (9, 1, 0, 'done');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let key: String = conn
            .query_row("SELECT key FROM files WHERE id = 3", [], |r| r.get(0))
            .unwrap();
        assert_eq!(key, "k3");
        conn.execute(
            "INSERT INTO files (spool, rel_path, path, destination, bucket, state, size,
                 mtime_ns, inode, next_attempt_at, queued_at, updated_at)
             VALUES ('s', 'b', '/s/b', 'd', 'b', 'pending', 1, 1, 1, 0, 0, 0)",
            [],
        )
        .unwrap();
        assert_eq!(conn.last_insert_rowid(), 10);
        // The readable view still works.
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM files_readable", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn version_7_asks_head_first_of_every_row_ever_claimed_and_names_the_queue() {
        let mut conn = at_version(6);
        let row = |id: i64, state: &str, attempts: i64, error: Option<&str>| {
            conn.execute(
                "INSERT INTO files (id, spool, rel_path, path, destination, bucket, key, state,
                     size, mtime_ns, inode, attempts, last_error, next_attempt_at, queued_at,
                     updated_at)
                 VALUES (?1, 's', ?1, '/s', 'd', 'b', 'k', ?2, 1, 1, 1, ?3, ?4, 0, 0, 0)",
                rusqlite::params![id, state, attempts, error],
            )
            .unwrap();
        };
        row(1, "pending", 1, None);
        row(2, "pending", 2, None);
        row(3, "failed", 1, Some("denied"));
        row(4, "active", 1, None);
        row(5, "done", 3, None);
        row(6, "pending", 0, None);
        row(7, "pending", 0, None);
        // Held back once: its attempt was given back, but it was claimed.
        conn.execute("UPDATE files SET claim = 1 WHERE id = 7", [])
            .unwrap();
        migrate(&mut conn).unwrap();
        let flagged: Vec<i64> = conn
            .prepare("SELECT id FROM files WHERE maybe_sent = 1 ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(flagged, [1, 2, 3, 4, 7]);
        let uuid: String = conn
            .query_row("SELECT uuid FROM queue_identity", [], |r| r.get(0))
            .unwrap();
        assert_eq!(uuid.len(), 32);
        assert!(uuid.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn version_14_tallies_the_rows_it_finds_and_the_triggers_keep_them() {
        let mut conn = at_version(13);
        let row = |id: i64, state: &str, size: i64, superseded_by: Option<i64>| {
            conn.execute(
                "INSERT INTO files (id, spool, rel_path, path, destination, bucket, key, state,
                     size, mtime_ns, inode, next_attempt_at, queued_at, updated_at,
                     superseded_by)
                 VALUES (?1, 's', ?1, '/s', 'd', 'b', 'k', ?2, ?3, 1, 1, 0, 0, 0, ?4)",
                rusqlite::params![id, state, size, superseded_by],
            )
            .unwrap();
        };
        row(1, "pending", 10, None);
        row(2, "pending", 20, None);
        row(3, "done", 30, None);
        row(4, "failed", 40, Some(2));
        migrate(&mut conn).unwrap();
        let tallies = |conn: &Connection| -> Vec<(String, i64, i64)> {
            conn.prepare("SELECT state, files, bytes FROM tallies WHERE files > 0 ORDER BY state")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        assert_eq!(
            tallies(&conn),
            [("done".into(), 1, 30), ("pending".into(), 2, 30)],
            "the superseded row is not counted"
        );
        conn.execute_batch(
            "UPDATE files SET state = 'done' WHERE id = 1;
             UPDATE files SET superseded_by = NULL WHERE id = 4;
             DELETE FROM files WHERE id = 3;",
        )
        .unwrap();
        assert_eq!(
            tallies(&conn),
            [
                ("done".into(), 1, 10),
                ("failed".into(), 1, 40),
                ("pending".into(), 1, 20)
            ]
        );
    }

    #[test]
    fn version_11_reads_the_words_of_rows_that_vanished_once_and_never_again() {
        let mut conn = at_version(10);
        let row = |id: i64, state: &str, error: &str| {
            conn.execute(
                "INSERT INTO files (id, spool, rel_path, path, destination, bucket, key, state,
                     size, mtime_ns, inode, last_error, next_attempt_at, queued_at, updated_at)
                 VALUES (?1, 's', ?1, '/s', 'd', 'b', 'k', ?2, 1, 1, 1, ?3, 0, 0, 0)",
                rusqlite::params![id, state, error],
            )
            .unwrap();
        };
        row(1, "failed", "source disappeared: /s/1 no longer exists");
        row(
            2,
            "failed",
            "AccessDenied: source disappeared: a policy's words",
        );
        row(3, "pending", "source disappeared: /s/3 no longer exists");
        migrate(&mut conn).unwrap();
        let failures: Vec<(i64, Option<String>)> = conn
            .prepare("SELECT id, failure FROM files ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            failures,
            [(1, Some("vanished".to_string())), (2, None), (3, None)]
        );
    }

    #[test]
    fn version_16_makes_each_row_a_source_with_one_delivery_and_the_triggers_keep_them() {
        let mut conn = at_version(15);
        let row = |id: i64, state: &str, superseded_by: Option<i64>, outcome: Option<&str>| {
            conn.execute(
                "INSERT INTO files (id, spool, rel_path, path, destination, bucket, key, state,
                     size, mtime_ns, inode, birth_ns, superseded_by, source_finished_at,
                     source_outcome, next_attempt_at, queued_at, updated_at)
                 VALUES (?1, 's', 'r' || ?1, '/s/r' || ?1, 'd', 'b', 'k' || ?1, ?2, ?1, 2, 3,
                         4, ?3, CASE WHEN ?4 IS NOT NULL THEN 50 END, ?4, 0, 7, 0)",
                rusqlite::params![id, state, superseded_by, outcome],
            )
            .unwrap();
        };
        row(1, "pending", None, None);
        row(2, "active", None, None);
        row(3, "done", None, Some("kept"));
        row(4, "done", None, None);
        row(5, "failed", Some(6), None);
        row(6, "failed", None, None);
        migrate(&mut conn).unwrap();
        let sources: Vec<(i64, String, i64, Option<String>, i64)> = conn
            .prepare("SELECT id, rel_path, size, outcome, unsettled FROM sources ORDER BY id")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let unsettled: Vec<i64> = sources.iter().map(|s| s.4).collect();
        assert_eq!(
            unsettled,
            [1, 1, 0, 0, 0, 1],
            "waiting and failed rows, not superseded"
        );
        assert_eq!(sources[2], (3, "r3".into(), 3, Some("kept".into()), 0));
        let linked: i64 = conn
            .query_row("SELECT COUNT(*) FROM files WHERE source_id = id", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(
            linked, 6,
            "each row is its own source's delivery, ids unchanged"
        );
        assert!(super::super::tests::sources_disagree(&conn).is_empty());

        // The triggers keep them from here: a delivery done, one superseded, a source's
        // path moved, a delivery forgotten.
        conn.execute_batch(
            "UPDATE files SET state = 'done' WHERE id = 1;
             UPDATE files SET superseded_by = 1 WHERE id = 6;
             UPDATE sources SET path = '/s/moved', outcome = 'deleted' WHERE id = 3;
             DELETE FROM files WHERE id = 2;",
        )
        .unwrap();
        assert!(super::super::tests::sources_disagree(&conn).is_empty());
        let gone: i64 = conn
            .query_row("SELECT COUNT(*) FROM sources WHERE id = 2", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(gone, 0, "a source goes with its last delivery");
        let copied: (String, String) = conn
            .query_row(
                "SELECT path, source_outcome FROM files WHERE id = 3",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(copied, ("/s/moved".into(), "deleted".into()));
    }

    #[test]
    fn version_17_finds_files_by_their_sources_and_drops_the_deliveries_indexes() {
        let mut conn = at_version(16);
        let indexes = |conn: &Connection| -> Vec<String> {
            conn.prepare("SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        assert!(indexes(&conn).contains(&"files_path".to_string()));
        migrate(&mut conn).unwrap();
        let now = indexes(&conn);
        for made in ["sources_path", "sources_inode"] {
            assert!(now.contains(&made.to_string()), "{made} in {now:?}");
        }
        for gone in ["files_path", "files_inode"] {
            assert!(!now.contains(&gone.to_string()), "{gone} in {now:?}");
        }
    }

    #[test]
    fn version_18_marks_sources_every_delivery_of_which_was_superseded_and_finds_the_ready() {
        let mut conn = at_version(17);
        let row = |id: i64, state: &str, superseded_by: Option<i64>, finished: Option<i64>| {
            conn.execute(
                "INSERT INTO files (id, spool, rel_path, path, destination, bucket, key, state,
                     size, mtime_ns, inode, superseded_by, source_finished_at, source_id,
                     next_attempt_at, queued_at, updated_at)
                 VALUES (?1, 's', 'a', '/s/a', 'd', 'b', 'k' || ?1, ?2, 1, 2, 3, ?3, ?4, ?1,
                         0, 0, 0)",
                rusqlite::params![id, state, superseded_by, finished],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO sources (id, spool, rel_path, path, size, mtime_ns, inode,
                     queued_at, finished_at, unsettled)
                 VALUES (?1, 's', 'a', '/s/a', 1, 2, 3, 0, ?2,
                         ?3 != 'done' AND ?4 IS NULL)",
                rusqlite::params![id, finished, state, superseded_by],
            )
            .unwrap();
        };
        // A failed file replaced at its path by one delivered and finished, then by one
        // delivered and not finished yet.
        row(1, "failed", Some(2), None);
        row(2, "done", None, Some(9));
        row(3, "done", None, None);
        row(4, "pending", None, None);
        migrate(&mut conn).unwrap();
        let superseded: Vec<Option<i64>> = conn
            .prepare("SELECT superseded_by FROM sources ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(superseded, [Some(2), None, None, None]);
        let ready = |conn: &Connection| -> Vec<i64> {
            conn.prepare(
                "SELECT id FROM sources INDEXED BY sources_ready
                 WHERE unsettled = 0 AND finished_at IS NULL AND superseded_by IS NULL",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
        };
        assert_eq!(ready(&conn), [3], "delivered, not finished, not superseded");
        assert!(super::super::tests::sources_disagree(&conn).is_empty());

        // The trigger from here: the waiting file fails and is replaced in turn.
        conn.execute_batch(
            "UPDATE files SET state = 'failed' WHERE id = 4;
             UPDATE files SET superseded_by = 3 WHERE id = 4;",
        )
        .unwrap();
        let by: Option<i64> = conn
            .query_row("SELECT superseded_by FROM sources WHERE id = 4", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(by, Some(3));
        assert_eq!(ready(&conn), [3], "a superseded source is never cleaned up");
        assert!(super::super::tests::sources_disagree(&conn).is_empty());
    }
}
