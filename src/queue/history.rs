//! A bounded history: delivered rows older than `history` go, a small batch at a time,
//! and the space they took is given back to the file system.
//!
//! Only rows whose source s3spool itself deleted or archived (or that a newer row of the
//! same file took over) are forgotten by the daemon: nothing of their file is left in a
//! spool for the row to stand for. Rows of kept files, of files not found at clean-up, and
//! of manifests not yet written stay; `purge --done`, which looks at the spools' files,
//! judges those.

use rusqlite::{params, OptionalExtension};

use super::*;

/// The rows forgotten in one transaction: short enough that the daemon's own writes
/// never wait long for the lock.
pub const FORGET_BATCH: usize = 500;

/// How long after its row was done a request of the row may still reach S3 (a request
/// times out well within this).
const IN_FLIGHT_MARGIN_MS: i64 = 10 * 60 * 1000;

impl Queue {
    /// Forgets up to `limit` delivered rows finished before `before_ms` that nothing in a
    /// spool needs (see the module doc); returns how many went. Their keys are kept for
    /// the sweep, and the newest delivery forgotten per bucket for `verify`, as `purge`
    /// does.
    pub fn forget_delivered(&mut self, before_ms: i64, limit: usize, now_ms: i64) -> Result<usize> {
        let sql = format!(
            "SELECT {COLUMNS} FROM files INDEXED BY files_forgettable
             WHERE state = 'done' AND source_outcome IN ('deleted', 'archived', 'superseded')
               AND done_at < ?1
               AND (batch_id IS NULL
                    OR batch_id IN (SELECT id FROM batches WHERE state = 'written'))
             ORDER BY done_at LIMIT ?2"
        );
        let rows = self.select(&sql, params![before_ms, limit as i64], FileRow::from_row)?;
        if rows.is_empty() {
            return Ok(0);
        }
        self.forget(&rows.iter().collect::<Vec<_>>(), now_ms)
    }

    /// Deletes `rows` (delivered) and their history in one transaction, remembering each
    /// key for the sweep and each bucket's newest delivery for `verify`.
    pub(super) fn forget(&mut self, rows: &[&FileRow], now_ms: i64) -> Result<usize> {
        self.in_transaction(|tx| {
            let mut delete =
                tx.prepare_cached("DELETE FROM files WHERE id = ?1 AND state = 'done'")?;
            let mut history = tx.prepare_cached("DELETE FROM attempts WHERE file_id = ?1")?;
            let mut remember = tx.prepare_cached(
                "INSERT OR REPLACE INTO purged_keys (destination, key, purged_at)
                 SELECT ?1, ?2, ?3 WHERE NOT EXISTS (
                     SELECT 1 FROM sweep_horizons
                     WHERE destination = ?1 AND swept_before > ?3 AND swept_before <= ?4)",
            )?;
            let mut horizon = tx.prepare_cached(
                "INSERT INTO purge_horizons (bucket, done_before) VALUES (?1, ?2)
                 ON CONFLICT (bucket) DO UPDATE
                 SET done_before = MAX(done_before, excluded.done_before)",
            )?;
            let mut n = 0;
            for row in rows {
                let gone = delete.execute([row.id])?;
                if gone == 1 {
                    history.execute([row.id])?;
                    if let Some(key) = &row.key {
                        // Dated by the delivery, not now: a delivered row makes no upload
                        // after it, so an orphan under its key was made before then (give
                        // or take a request still on its way: the margin), and the next
                        // hourly sweep, which leaves younger uploads alone, can abort it
                        // and forget the key. Dated now, the keys `history` forgets waited
                        // up to two sweeps and piled up in the queue meanwhile. A clean
                        // sweep that already reached past that date aborted every such
                        // orphan: the key is not kept at all.
                        let made_by = row
                            .done_at
                            .map_or(now_ms, |done| done + IN_FLIGHT_MARGIN_MS)
                            .min(now_ms);
                        // A horizon ahead of now was reached by a clock that has jumped
                        // back since: not trusted.
                        remember.execute(params![row.destination, key, made_by, now_ms])?;
                    }
                    horizon.execute(params![row.bucket, row.done_at.unwrap_or(now_ms)])?;
                }
                n += gone;
            }
            Ok(n)
        })
    }

    /// Written manifest batches older than `before_ms` whose rows are all gone: removed.
    pub fn forget_empty_batches(&mut self, before_ms: i64) -> Result<usize> {
        self.in_transaction(|tx| {
            tx.execute(
                "DELETE FROM batches WHERE state = 'written' AND written_at < ?1
                 AND NOT EXISTS (SELECT 1 FROM files WHERE batch_id = batches.id)",
                [before_ms],
            )
        })
    }

    /// Whether the file gives freed pages back (`auto_vacuum = INCREMENTAL`), as every
    /// queue made since bounded histories does.
    pub fn gives_space_back(&self) -> Result<bool> {
        self.conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get::<_, i64>(0))
            .map(|mode| mode == 2)
            .map_err(|e| self.err(e))
    }

    /// Makes an older queue give freed pages back: `auto_vacuum` takes effect only through
    /// a full VACUUM, which writes a copy of the file (room for it is the caller's check).
    pub fn convert_to_incremental_vacuum(&mut self) -> Result<()> {
        self.conn
            .execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
            .map_err(|e| self.err(e))
    }

    /// Gives up to `pages` free pages back to the file system; returns the file's size
    /// in bytes after.
    pub fn release_space(&mut self, pages: u32) -> Result<u64> {
        // The pages leave the file at the checkpoint; TRUNCATE also empties the log (it
        // does what it can while a reader holds an older snapshot, and never waits).
        // The pragma frees one page per step: stepped to its end, not run once.
        let freed = (|| {
            let mut stmt = self
                .conn
                .prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
            let mut steps = stmt.query([])?;
            while steps.next()?.is_some() {}
            Ok(())
        })();
        freed.map_err(|e| self.err(e))?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| self.err(e))?;
        self.file_size()
    }

    /// The queue's size on disk: its file and its write-ahead log.
    pub fn file_size(&self) -> Result<u64> {
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        Ok(size(&self.path) + size(Path::new(&wal)))
    }

    /// When the oldest row still in the queue was queued (unix milliseconds).
    pub fn oldest_row_at(&self) -> Result<Option<i64>> {
        self.conn
            // The lowest id: rows are numbered as they come (no walk over the table).
            .query_row("SELECT queued_at FROM files ORDER BY id LIMIT 1", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }
}
