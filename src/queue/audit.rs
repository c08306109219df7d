//! What `s3spool verify` reads: the delivered rows in a range, a page at a time, the keys
//! the queue knows under a prefix, the written manifests, and how far purges reached.

use rusqlite::{params, OptionalExtension};

use super::batches::BATCH_COLUMNS;
use super::*;

/// Which delivered rows a verification covers.
#[derive(Debug, Clone, Default)]
pub struct AuditRange {
    /// Delivered at or after this time (unix milliseconds); `None` for all.
    pub since_ms: Option<i64>,
    /// Only this spool's rows.
    pub spool: Option<String>,
}

impl Queue {
    /// Up to `limit` delivered rows in `range` after row `after_id`, by id: a page at a
    /// time, so a queue of millions is never held whole.
    pub fn delivered_page(
        &self,
        range: &AuditRange,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<FileRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM files
             WHERE id > ?1 AND state = 'done' AND key IS NOT NULL
               AND (?2 IS NULL OR done_at >= ?2) AND (?3 IS NULL OR spool = ?3)
             ORDER BY id LIMIT ?4"
        );
        self.select(
            &sql,
            params![after_id, range.since_ms, range.spool, limit as i64],
            FileRow::from_row,
        )
    }

    /// Sorts the delivered rows in `range` by destination, bucket and key, in a temporary
    /// table of this connection (on disk if it must be), for
    /// [`Queue::delivered_page_by_key`]: rows in the order a listing returns objects.
    pub fn order_delivered(&mut self, range: &AuditRange) -> Result<()> {
        self.conn
            .execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS delivered_order (
                     o_destination TEXT, o_bucket TEXT, o_key TEXT, o_id INTEGER,
                     PRIMARY KEY (o_destination, o_bucket, o_key, o_id)) WITHOUT ROWID;
                 DELETE FROM temp.delivered_order;",
            )
            .map_err(|e| self.err(e))?;
        self.conn
            .execute(
                "INSERT INTO temp.delivered_order
                 SELECT destination, bucket, key, id FROM files
                 WHERE state = 'done' AND key IS NOT NULL
                   AND (?1 IS NULL OR done_at >= ?1) AND (?2 IS NULL OR spool = ?2)",
                params![range.since_ms, range.spool],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Up to `limit` of the rows [`Queue::order_delivered`] sorted, after `after` (a row
    /// of the page before) in that order.
    pub fn delivered_page_by_key(
        &self,
        after: Option<&FileRow>,
        limit: usize,
    ) -> Result<Vec<FileRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM temp.delivered_order JOIN files ON id = o_id
             WHERE (o_destination, o_bucket, o_key, o_id) > (?2, ?3, ?4, ?1)
             ORDER BY o_destination, o_bucket, o_key, o_id LIMIT ?5"
        );
        let (id, destination, bucket, key) = match after {
            Some(row) => (
                row.id,
                row.destination.as_str(),
                row.bucket.as_str(),
                row.key.as_deref().unwrap_or_default(),
            ),
            // Before every row: a destination's name is never empty.
            None => (i64::MIN, "", "", ""),
        };
        self.select(
            &sql,
            params![id, destination, bucket, key, limit as i64],
            FileRow::from_row,
        )
    }

    /// The first and last key, in byte order, of the rows [`Queue::order_delivered`]
    /// sorted for `destination` and `bucket` (empty if none).
    pub fn delivered_key_bounds(
        &self,
        destination: &str,
        bucket: &str,
    ) -> Result<(String, String)> {
        self.conn
            .query_row(
                "SELECT COALESCE((SELECT o_key FROM temp.delivered_order
                                  WHERE o_destination = ?1 AND o_bucket = ?2
                                  ORDER BY o_key LIMIT 1), ''),
                        COALESCE((SELECT o_key FROM temp.delivered_order
                                  WHERE o_destination = ?1 AND o_bucket = ?2
                                  ORDER BY o_key DESC LIMIT 1), '')",
                params![destination, bucket],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.err(e))
    }

    /// How many delivered rows `range` holds (for a progress bar).
    pub fn delivered_count(&self, range: &AuditRange) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM files
                 WHERE state = 'done' AND key IS NOT NULL
                   AND (?1 IS NULL OR done_at >= ?1) AND (?2 IS NULL OR spool = ?2)",
                params![range.since_ms, range.spool],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// Gathers, in a temporary table of this connection, every key the queue knows in
    /// `bucket` starting with `prefix`: the keys of its rows (in any state: a waiting row
    /// may have written its object before an answer was lost) and of its manifests.
    /// [`Queue::unknown_keys`] then asks it. Sorted once, on disk if it must be.
    pub fn gather_known_keys(&mut self, bucket: &str, prefix: &str) -> Result<()> {
        self.conn
            .execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS known_keys (key TEXT PRIMARY KEY) WITHOUT ROWID;
                 DELETE FROM temp.known_keys;",
            )
            .map_err(|e| self.err(e))?;
        // `substr` rather than LIKE: a prefix may hold `%` or `_`.
        self.conn
            .execute(
                "INSERT OR IGNORE INTO temp.known_keys (key)
                 SELECT key FROM files
                 WHERE bucket = ?1 AND key IS NOT NULL AND substr(key, 1, length(?2)) = ?2
                 UNION
                 SELECT manifest_key FROM batches
                 WHERE bucket = ?1 AND manifest_key IS NOT NULL
                   AND substr(manifest_key, 1, length(?2)) = ?2",
                params![bucket, prefix],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The keys of `keys` that [`Queue::gather_known_keys`] did not gather.
    pub fn unknown_keys(&self, keys: &[String]) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM temp.known_keys WHERE key = ?1)")
            .map_err(|e| self.err(e))?;
        let mut unknown = Vec::new();
        for key in keys {
            let known: bool = stmt
                .query_row([key], |r| r.get(0))
                .map_err(|e| self.err(e))?;
            if !known {
                unknown.push(key.clone());
            }
        }
        Ok(unknown)
    }

    /// The newest delivery in `bucket` whose row a purge removed (unix milliseconds).
    pub fn purge_horizon(&self, bucket: &str) -> Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT done_before FROM purge_horizons WHERE bucket = ?1",
                [bucket],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Manifests written at or after `since_ms` (all with `None`), of `spool` if given.
    pub fn written_batches(&self, range: &AuditRange) -> Result<Vec<Batch>> {
        let sql = format!(
            "SELECT {BATCH_COLUMNS} FROM batches
             WHERE state = 'written' AND manifest_key IS NOT NULL
               AND (?1 IS NULL OR written_at >= ?1) AND (?2 IS NULL OR spool = ?2)
             ORDER BY id"
        );
        self.select(&sql, params![range.since_ms, range.spool], Batch::from_row)
    }
}
