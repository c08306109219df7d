//! Multipart state: the open upload of a row and the parts S3 confirmed, each committed
//! before the next step relies on it, so an upload resumes after a crash.

use rusqlite::params;

use super::*;

/// A part S3 confirmed, as recorded in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredPart {
    pub number: u32,
    pub size: u64,
    pub etag: String,
    /// Hex MD5 of the part's bytes.
    pub md5: String,
}

/// A multipart upload no row needs any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbandonedUpload {
    pub upload_id: String,
    pub destination: String,
    pub bucket: String,
    pub key: String,
}

/// An open multipart upload recorded in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedUpload {
    pub id: i64,
    pub destination: String,
    pub key: String,
    pub upload_id: String,
}

impl Queue {
    /// Records a new multipart upload for the row (and the source's SHA-256 when the
    /// upload carries it as metadata: none when it is hashed while sent); forgets any
    /// parts of an earlier one.
    pub fn start_upload(
        &mut self,
        id: i64,
        claim: i64,
        upload_id: &str,
        part_size: u64,
        sha256: Option<&str>,
    ) -> Result<bool> {
        self.in_transaction(|tx| {
            let changed = tx.execute(
                "UPDATE files SET upload_id = ?3, part_size = ?4, sha256 = ?5
                 WHERE id = ?1 AND state = 'active' AND claim = ?2",
                params![id, claim, upload_id, part_size as i64, sha256],
            )?;
            if changed == 1 {
                tx.execute("DELETE FROM parts WHERE file_id = ?1", [id])?;
            }
            Ok(changed == 1)
        })
    }

    /// Records the SHA-256 of a file hashed while its parts were sent, before the upload
    /// is completed: an upload found complete after a crash then has it.
    pub fn record_sha256(&mut self, id: i64, claim: i64, sha256: &str) -> Result<bool> {
        let changed = self
            .conn
            .execute(
                "UPDATE files SET sha256 = ?3
                 WHERE id = ?1 AND state = 'active' AND claim = ?2 AND upload_id IS NOT NULL",
                params![id, claim, sha256],
            )
            .map_err(|e| self.err(e))?;
        Ok(changed == 1)
    }

    /// Records a part S3 confirmed.
    pub fn record_part(&mut self, id: i64, claim: i64, part: &StoredPart) -> Result<bool> {
        let changed = self
            .conn
            .prepare_cached(
                "INSERT OR REPLACE INTO parts (file_id, number, size, etag, md5)
                 SELECT ?1, ?3, ?4, ?5, ?6
                 WHERE EXISTS (SELECT 1 FROM files WHERE id = ?1 AND state = 'active' AND claim = ?2)",
            )
            .and_then(|mut s| {
                s.execute(params![id, claim, part.number, part.size as i64, part.etag, part.md5])
            })
            .map_err(|e| self.err(e))?;
        Ok(changed == 1)
    }

    /// The parts recorded for a row, by number.
    pub fn parts(&self, id: i64) -> Result<Vec<StoredPart>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT number, size, etag, md5 FROM parts WHERE file_id = ?1 ORDER BY number",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(StoredPart {
                    number: r.get(0)?,
                    size: r.get::<_, i64>(1)? as u64,
                    etag: r.get(2)?,
                    md5: r.get(3)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(|e| self.err(e))
    }

    /// Forgets the row's upload (after it was aborted, or S3 no longer knows it).
    pub fn forget_upload(&mut self, id: i64, claim: i64) -> Result<bool> {
        self.in_transaction(|tx| {
            let changed = tx.execute(
                "UPDATE files SET upload_id = NULL, part_size = NULL
                 WHERE id = ?1 AND state = 'active' AND claim = ?2",
                params![id, claim],
            )?;
            if changed == 1 {
                tx.execute("DELETE FROM parts WHERE file_id = ?1", [id])?;
            }
            Ok(changed == 1)
        })
    }

    /// Every open upload the queue knows of, for the start-up sweep.
    pub fn recorded_uploads(&self) -> Result<Vec<RecordedUpload>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, destination, key, upload_id FROM files INDEXED BY files_uploading
                 WHERE upload_id IS NOT NULL",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RecordedUpload {
                    id: r.get(0)?,
                    destination: r.get(1)?,
                    key: r.get(2)?,
                    upload_id: r.get(3)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(|e| self.err(e))
    }

    /// Up to `limit` multipart uploads that no row needs any more, to abort.
    pub fn abandoned_uploads(&self, limit: usize) -> Result<Vec<AbandonedUpload>> {
        self.select(
            "SELECT upload_id, destination, bucket, key FROM abandoned_uploads LIMIT ?1",
            [limit as i64],
            |r| {
                Ok(AbandonedUpload {
                    upload_id: r.get(0)?,
                    destination: r.get(1)?,
                    bucket: r.get(2)?,
                    key: r.get(3)?,
                })
            },
        )
    }

    /// An abandoned upload was aborted (or S3 no longer knew it).
    pub fn forget_abandoned(&mut self, upload_id: &str) -> Result<()> {
        self.conn
            .execute(
                "DELETE FROM abandoned_uploads WHERE upload_id = ?1",
                [upload_id],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Which of `keys` some row of `destination` has, or had until a purge not long ago
    /// (an upload under one is ours). All at once: the rows hold no index by key, and a
    /// sweep walks them once however many uploads it asks about.
    pub fn known_keys(
        &self,
        destination: &str,
        keys: &[String],
    ) -> Result<std::collections::HashSet<String>> {
        if keys.is_empty() {
            return Ok(Default::default());
        }
        let keys = serde_json::to_string(keys).expect("strings serialise");
        let known = self.select(
            "SELECT DISTINCT key FROM files
             WHERE destination = ?1 AND key IN (SELECT value FROM json_each(?2))
             UNION
             SELECT key FROM purged_keys
             WHERE destination = ?1 AND key IN (SELECT value FROM json_each(?2))",
            params![destination, keys],
            |r| r.get::<_, String>(0),
        )?;
        Ok(known.into_iter().collect())
    }

    /// Records a clean sweep of `destination` that aborted every orphan begun before
    /// `before_ms`: the keys purged before then are forgotten (returns how many), and
    /// rows forgotten later whose uploads all began before then keep no key (the horizon
    /// only moves forward).
    pub fn swept(&mut self, destination: &str, before_ms: i64) -> Result<usize> {
        self.in_transaction(|tx| {
            tx.execute(
                "INSERT INTO sweep_horizons (destination, swept_before) VALUES (?1, ?2)
                 ON CONFLICT (destination) DO UPDATE
                 SET swept_before = MAX(swept_before, excluded.swept_before)",
                params![destination, before_ms],
            )?;
            tx.execute(
                "DELETE FROM purged_keys WHERE destination = ?1 AND purged_at < ?2",
                params![destination, before_ms],
            )
        })
    }

    /// (parts done, parts in all) of the row's open upload, if it has one.
    pub fn progress(&self, row: &FileRow) -> Result<Option<(u64, u64)>> {
        let Some(part_size) = row.part_size.filter(|p| *p > 0) else {
            return Ok(None);
        };
        let done: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM parts WHERE file_id = ?1",
                [row.id],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        Ok(Some((done as u64, row.stamp.size.div_ceil(part_size))))
    }
}
