//! Manifest batches: which deliveries a manifest lists, and whether it was written.
//!
//! A delivery joins its spool's open batch in the transaction that marks it done. A batch
//! closes when full (same transaction), when old enough, or at shutdown; its manifest is
//! written once closed, and the batch becomes `written` only after S3 confirmed the
//! manifest. The manifest is built from these rows alone, so writing it again after a
//! crash gives the same bytes under the same key.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::*;

/// How a spool groups its deliveries into manifest batches.
#[derive(Debug, Clone)]
pub struct Batching {
    /// A batch closes once it holds this many files.
    pub max_files: u64,
    /// Recorded in the batch, for the manifest.
    pub host: String,
}

/// A manifest batch.
#[derive(Debug, Clone, Serialize)]
pub struct Batch {
    pub id: i64,
    pub name: String,
    pub spool: String,
    pub destination: String,
    pub bucket: String,
    pub host: String,
    pub state: String,
    pub files: u64,
    pub opened_at: i64,
    pub closed_at: Option<i64>,
    pub manifest_key: Option<String>,
    pub written_at: Option<i64>,
    pub attempts: u32,
    pub last_error: Option<String>,
}

pub(super) const BATCH_COLUMNS: &str = "id, name, spool, destination, bucket, host, state, files, \
    opened_at, closed_at, manifest_key, written_at, attempts, last_error";

impl Batch {
    pub(super) fn from_row(r: &Row<'_>) -> rusqlite::Result<Batch> {
        Ok(Batch {
            id: r.get(0)?,
            name: r.get(1)?,
            spool: r.get(2)?,
            destination: r.get(3)?,
            bucket: r.get(4)?,
            host: r.get(5)?,
            state: r.get(6)?,
            files: r.get::<_, i64>(7)? as u64,
            opened_at: r.get(8)?,
            closed_at: r.get(9)?,
            manifest_key: r.get(10)?,
            written_at: r.get(11)?,
            attempts: r.get(12)?,
            last_error: r.get(13)?,
        })
    }
}

/// A new batch's name: its opening time (so names sort by time) and a random part (so a
/// rebuilt queue never reuses one).
fn batch_name(now_ms: i64) -> String {
    let at = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", at.format("%Y%m%dT%H%M%SZ"), &random[..8])
}

/// Puts file `id` into its spool's open batch; run inside `mark_done`'s transaction.
pub(super) fn join_batch(
    tx: &Connection,
    id: i64,
    spool: &str,
    destination: &str,
    bucket: &str,
    batching: &Batching,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let open: Option<i64> = tx
        .prepare_cached(
            "SELECT id FROM batches WHERE state = 'open' AND spool = ?1 AND destination = ?2
             AND bucket = ?3 ORDER BY id LIMIT 1",
        )?
        .query_row(params![spool, destination, bucket], |r| r.get(0))
        .optional()?;
    let batch = match open {
        Some(batch) => batch,
        None => tx
            .prepare_cached(
                "INSERT INTO batches (name, spool, destination, bucket, host, state, opened_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'open', ?6) RETURNING id",
            )?
            .query_row(
                params![
                    batch_name(now_ms),
                    spool,
                    destination,
                    bucket,
                    batching.host,
                    now_ms
                ],
                |r| r.get(0),
            )?,
    };
    tx.execute(
        "UPDATE files SET batch_id = ?2 WHERE id = ?1",
        params![id, batch],
    )?;
    tx.execute(
        "UPDATE batches SET files = files + 1,
             state = CASE WHEN files + 1 >= ?2 THEN 'closed' ELSE state END,
             closed_at = CASE WHEN files + 1 >= ?2 THEN ?3 ELSE closed_at END
         WHERE id = ?1",
        params![batch, batching.max_files as i64, now_ms],
    )?;
    Ok(())
}

impl Queue {
    /// Closes the spool's open batch if it was opened at or before `opened_before`.
    pub fn close_batches_opened_before(
        &mut self,
        spool: &str,
        opened_before: i64,
        now_ms: i64,
    ) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE batches SET state = 'closed', closed_at = ?3
                 WHERE state = 'open' AND spool = ?1 AND opened_at <= ?2",
                params![spool, opened_before, now_ms],
            )
            .map_err(|e| self.err(e))
    }

    /// Closes the open batches of every spool not in `spools`.
    pub fn close_open_batches_except(&mut self, spools: &[String], now_ms: i64) -> Result<usize> {
        // One statement, no write lock taken when nothing is open: this runs every tick.
        let spools = serde_json::to_string(spools).expect("strings serialise");
        self.conn
            .execute(
                "UPDATE batches SET state = 'closed', closed_at = ?2
                 WHERE state = 'open' AND spool NOT IN (SELECT value FROM json_each(?1))",
                params![spools, now_ms],
            )
            .map_err(|e| self.err(e))
    }

    /// Closed batches whose manifest is due to be written.
    pub fn batches_to_write(&self, now_ms: i64) -> Result<Vec<Batch>> {
        let sql = format!(
            "SELECT {BATCH_COLUMNS} FROM batches
             WHERE state = 'closed' AND next_attempt_at <= ?1 ORDER BY id"
        );
        self.select(&sql, [now_ms], Batch::from_row)
    }

    /// The delivered files of a batch, in delivery order.
    pub fn batch_files(&self, batch: i64) -> Result<Vec<FileRow>> {
        let sql = format!("SELECT {COLUMNS} FROM files WHERE batch_id = ?1 ORDER BY done_at, id");
        self.select(&sql, [batch], FileRow::from_row)
    }

    /// Fixes the manifest key before the first write, so a retry after a config change
    /// still writes (or overwrites) the same object. Returns the key in force.
    pub fn fix_manifest_key(&mut self, batch: i64, key: &str) -> Result<String> {
        self.in_transaction(|tx| {
            tx.execute(
                "UPDATE batches SET manifest_key = ?2 WHERE id = ?1 AND manifest_key IS NULL",
                params![batch, key],
            )?;
            tx.query_row(
                "SELECT manifest_key FROM batches WHERE id = ?1",
                [batch],
                |r| r.get(0),
            )
        })
    }

    /// S3 confirmed the manifest.
    pub fn mark_batch_written(&mut self, batch: i64, now_ms: i64) -> Result<bool> {
        self.conn
            .execute(
                "UPDATE batches SET state = 'written', written_at = ?2, last_error = NULL,
                     attempts = attempts + 1
                 WHERE id = ?1 AND state = 'closed'",
                params![batch, now_ms],
            )
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    /// Writing the manifest failed: try again at `next_attempt_at`.
    pub fn batch_retry_later(
        &mut self,
        batch: i64,
        error: &str,
        next_attempt_at: i64,
    ) -> Result<()> {
        self.conn
            .execute(
                "UPDATE batches SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3
                 WHERE id = ?1 AND state = 'closed'",
                params![batch, error, next_attempt_at],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}
