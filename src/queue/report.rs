//! What operators read and change: rows, summaries, retry, purge.

use rusqlite::{params, OptionalExtension};

use super::*;

/// The sources ready to be cleaned up, after an id: a range of the partial index
/// `sources_ready`, however many finished sources the queue keeps, and none whose
/// deliveries are still to do.
pub(super) const READY_SOURCES: &str = "SELECT s.id, s.spool, s.rel_path, s.path, s.size,
         s.mtime_ns, s.inode,
         (SELECT MAX(f.done_at) FROM files AS f NOT INDEXED
          WHERE f.id >= s.id AND f.id < s.id + s.deliveries AND f.source_id = s.id)
     FROM sources AS s INDEXED BY sources_ready
     WHERE s.unsettled = 0 AND s.finished_at IS NULL AND s.superseded_by IS NULL
       AND s.id > ?1
     ORDER BY s.id LIMIT ?2";

impl Queue {
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

    /// The newest row of the file at `rel_path` in `spool` with this inode, queued after
    /// row `after_id`.
    pub fn find(
        &self,
        spool: &str,
        rel_path: &str,
        inode: u64,
        after_id: i64,
    ) -> Result<Option<FileRow>> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM files WHERE id = (
                         SELECT f.id FROM sources AS s INDEXED BY sources_path {}
                         WHERE s.spool = ?1 AND s.rel_path = ?2 AND s.inode = ?3
                           AND f.id > ?4 ORDER BY f.id DESC LIMIT 1)",
                    deliveries_of_s!()
                ),
                params![spool, rel_path, inode as i64, after_id],
                FileRow::from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The highest row id so far (0 for an empty queue).
    pub fn last_id(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM files", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Up to `limit` sources after `after_id` ready to be cleaned up (every delivery done
    /// or superseded, not finished yet: just delivered, or a stop came between `done` and
    /// the clean-up, perhaps with the file under its private claim name), by id.
    pub fn unfinished_sources(&self, after_id: i64, limit: usize) -> Result<Vec<SourceRow>> {
        self.select(READY_SOURCES, [after_id, limit as i64], |r| {
            Ok(SourceRow {
                id: r.get(0)?,
                spool: r.get(1)?,
                rel_path: r.get(2)?,
                path: PathBuf::from(r.get::<_, String>(3)?),
                stamp: FileStamp::from_columns(r, 4)?,
                done_at: r.get(7)?,
            })
        })
    }

    /// Rows matching `filter`, oldest first.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<FileRow>> {
        let order = if filter.newest_first { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT {COLUMNS} FROM files
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR spool = ?2)
               AND (?4 = 0 OR state != 'done') AND (?5 IS NULL OR destination = ?5)
             ORDER BY id {order} LIMIT ?3"
        );
        let limit = filter.limit.map(|l| l as i64).unwrap_or(-1);
        self.select(
            &sql,
            params![
                filter.state.map(State::as_str),
                filter.spool,
                limit,
                filter.not_done,
                filter.destination
            ],
            FileRow::from_row,
        )
    }

    /// Pending, active and failed counts (from the tallies: cheap however many rows the
    /// queue holds, for systemd's STATUS every few seconds).
    pub fn waiting_counts(&self) -> Result<Counts> {
        let mut counts = Counts::default();
        for t in self.tallies()? {
            if t.state != State::Done {
                counts.add(t.state, t.files);
            }
        }
        Ok(counts)
    }

    /// Files waiting, in flight or failed, per spool and state, with the oldest queue time
    /// of those waiting or in flight (for metrics).
    pub fn depth_by_spool(&self) -> Result<Vec<Depth>> {
        let mut depths: Vec<Depth> = Vec::new();
        for t in self.tallies()? {
            if t.state == State::Done {
                continue;
            }
            match depths
                .iter_mut()
                .find(|d| d.spool == t.spool && d.state == t.state.as_str())
            {
                Some(d) => {
                    d.files += t.files;
                    d.bytes += t.bytes;
                }
                None => depths.push(Depth {
                    spool: t.spool.clone(),
                    state: t.state.as_str().to_string(),
                    files: t.files,
                    oldest_queued_at: self.oldest_queued(&t.spool, t.state, None)?,
                    bytes: t.bytes,
                }),
            }
        }
        Ok(depths)
    }

    /// Per destination, when its latest delivery the queue still holds was done (Unix
    /// milliseconds). Once, at start: the deliveries newest first (the `files_done_at`
    /// index) until every destination with one is found.
    pub fn last_done_by_destination(&self) -> Result<Vec<(String, i64)>> {
        let wanted: std::collections::BTreeSet<String> = self
            .tallies()?
            .into_iter()
            .filter(|t| t.state == State::Done)
            .map(|t| t.destination)
            .collect();
        let mut found: Vec<(String, i64)> = Vec::new();
        if wanted.is_empty() {
            return Ok(found);
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT destination, done_at FROM files INDEXED BY files_done_at
                 WHERE state = 'done' AND done_at IS NOT NULL ORDER BY done_at DESC",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let destination: String = row.get(0).map_err(|e| self.err(e))?;
            if !found.iter().any(|(d, _)| *d == destination) {
                found.push((destination, row.get(1).map_err(|e| self.err(e))?));
                if found.len() == wanted.len() {
                    break;
                }
            }
        }
        Ok(found)
    }

    /// The ended attempts of file `id`, oldest first.
    pub fn attempts_of(&self, id: i64) -> Result<Vec<AttemptRecord>> {
        self.select(
            "SELECT attempt, ended_at, outcome, error FROM attempts WHERE file_id = ?1
             ORDER BY ended_at, rowid",
            [id],
            |r| {
                Ok(AttemptRecord {
                    attempt: r.get(0)?,
                    ended_at: r.get(1)?,
                    outcome: r.get(2)?,
                    error: r.get(3)?,
                })
            },
        )
    }

    /// Per spool: counts per state, oldest waiting, deliveries since `since_ms`, the
    /// latest error of a file not done. For `status`: tallies and index ranges, never a
    /// walk over every row.
    pub fn spool_report(&self, since_ms: i64) -> Result<Vec<SpoolLine>> {
        let mut lines: std::collections::BTreeMap<String, SpoolLine> = Default::default();
        let line = |lines: &mut std::collections::BTreeMap<String, SpoolLine>, spool: &str| {
            lines.entry(spool.to_string()).or_insert_with(|| SpoolLine {
                spool: spool.to_string(),
                ..SpoolLine::default()
            });
        };
        for t in self.tallies()? {
            line(&mut lines, &t.spool);
            lines
                .get_mut(&t.spool)
                .expect("just made")
                .counts
                .add(t.state, t.files);
        }
        for l in lines.values_mut() {
            l.oldest_waiting_queued_at = self.oldest_waiting_in(&l.spool, None)?;
        }
        // The deliveries of the window: a range of the `files_done_at` index.
        let recent = self.select(
            "SELECT spool, COUNT(*), SUM(COALESCE(object_size, size))
             FROM files INDEXED BY files_done_at
             WHERE state = 'done' AND done_at >= ?1 AND superseded_by IS NULL GROUP BY spool",
            [since_ms],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            },
        )?;
        for (spool, files, bytes) in recent {
            line(&mut lines, &spool);
            let l = lines.get_mut(&spool).expect("just made");
            l.delivered_recently += files;
            l.bytes_recently += bytes;
        }
        // The rows that carry an error (the `files_erring` index), however many wait.
        let errors = self.select(
            "SELECT spool, last_error FROM (
                 SELECT spool, last_error, ROW_NUMBER() OVER (
                     PARTITION BY spool ORDER BY updated_at DESC, id DESC) AS n
                 FROM files INDEXED BY files_erring
                 WHERE last_error IS NOT NULL AND state != 'done')
             WHERE n = 1",
            [],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        )?;
        for (spool, error) in errors {
            line(&mut lines, &spool);
            lines.get_mut(&spool).expect("just made").last_error = Some(error);
        }
        for (spool, _) in self.paused()? {
            line(&mut lines, &spool);
            lines.get_mut(&spool).expect("just made").paused = true;
        }
        Ok(lines.into_values().collect())
    }

    /// Pauses a spool: its files are still queued, but none is taken until it resumes.
    /// Returns false if it was paused already.
    pub fn pause(&mut self, spool: &str, now_ms: i64) -> Result<bool> {
        self.conn
            .execute(
                "INSERT INTO paused (spool, since) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![spool, now_ms],
            )
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    /// Resumes a paused spool. Returns false if it was not paused.
    pub fn resume(&mut self, spool: &str) -> Result<bool> {
        self.conn
            .execute("DELETE FROM paused WHERE spool = ?1", [spool])
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    /// Paused spools, with when they were paused.
    pub fn paused(&self) -> Result<Vec<(String, i64)>> {
        self.select("SELECT spool, since FROM paused ORDER BY spool", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
    }

    /// Records a condition holding work back (kept since its first report).
    pub fn set_condition(&mut self, name: &Held, reason: &str, now_ms: i64) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO conditions (name, reason, since) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET reason = excluded.reason",
                params![name, reason, now_ms],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// The condition is gone.
    pub fn clear_condition(&mut self, name: &Held) -> Result<()> {
        self.conn
            .execute("DELETE FROM conditions WHERE name = ?1", [name])
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Forgets every condition (at daemon start).
    pub fn clear_conditions(&mut self) -> Result<()> {
        self.conn
            .execute("DELETE FROM conditions", [])
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Every condition holding work back now.
    pub fn conditions(&self) -> Result<Vec<Condition>> {
        self.select(
            "SELECT name, reason, since FROM conditions ORDER BY name",
            [],
            |r| {
                Ok(Condition {
                    name: r.get(0)?,
                    reason: r.get(1)?,
                    since: r.get(2)?,
                })
            },
        )
    }

    pub fn summary(&self) -> Result<Summary> {
        let mut summary = Summary::default();
        let mut spools = std::collections::BTreeSet::new();
        for t in self.tallies()? {
            summary.counts.add(t.state, t.files);
            if matches!(t.state, State::Pending | State::Active) {
                summary.bytes_waiting += t.bytes;
                spools.insert(t.spool);
            }
        }
        for spool in spools {
            summary.oldest_waiting_queued_at = match (
                summary.oldest_waiting_queued_at,
                self.oldest_waiting_in(&spool, None)?,
            ) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(summary)
    }

    /// The most recently updated rows that carry an error.
    pub fn latest_errors(&self, limit: u64) -> Result<Vec<FileRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM files INDEXED BY files_erring
             WHERE last_error IS NOT NULL AND state != 'done'
             AND superseded_by IS NULL ORDER BY updated_at DESC, id DESC LIMIT ?1"
        );
        self.select(&sql, [limit as i64], FileRow::from_row)
    }

    /// Makes `failed` or `pending` rows due now with a fresh attempt count. Returns the ids
    /// that were reset; `active` and `done` rows are left alone.
    pub fn retry(&mut self, ids: Option<&[i64]>, now_ms: i64) -> Result<Vec<i64>> {
        let sql = "UPDATE files SET state = 'pending', attempts = 0, interruptions = 0,
                       next_attempt_at = ?2, updated_at = ?2, failure = NULL
                   WHERE state IN ('failed', 'pending') AND key IS NOT NULL AND superseded_by IS NULL
                     AND (?1 IS NULL OR id = ?1)
                   RETURNING id";
        let targets: Vec<Option<i64>> = match ids {
            Some(ids) => ids.iter().copied().map(Some).collect(),
            None => vec![None],
        };
        let mut reset = self.in_transaction(|tx| {
            let mut stmt = tx.prepare(sql)?;
            let mut reset = Vec::new();
            for target in targets {
                let rows = stmt.query_map(params![target, now_ms], |r| r.get::<_, i64>(0))?;
                for id in rows {
                    reset.push(id?);
                }
            }
            Ok(reset)
        })?;
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
        dry_run: bool,
        now_ms: i64,
    ) -> Result<(usize, usize)> {
        // A file listed in a manifest not yet written stays: the manifest is built from it.
        // A page of rows at a time, by id: a queue of millions is never held whole.
        let sql = format!(
            "SELECT {COLUMNS} FROM files WHERE id > ?2 AND state = 'done' AND done_at < ?1
             AND (batch_id IS NULL
                  OR batch_id IN (SELECT id FROM batches WHERE state = 'written'))
             ORDER BY id LIMIT 1000"
        );
        let (mut deleted, mut kept) = (0, 0);
        let mut after = 0;
        loop {
            let page = self.select(&sql, params![before_ms, after], FileRow::from_row)?;
            let Some(last) = page.last() else { break };
            after = last.id;
            // Look at the file system before taking the write lock, and delete a page per
            // transaction, so the daemon is never kept waiting on a long purge.
            let (keeping, doomed): (Vec<&FileRow>, Vec<&FileRow>) =
                page.iter().partition(|row| keep(row));
            kept += keeping.len();
            deleted += if dry_run {
                doomed.len()
            } else {
                self.forget(&doomed, now_ms)?
            };
        }
        Ok((deleted, kept))
    }
}
