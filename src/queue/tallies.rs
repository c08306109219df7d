//! What the queue holds, counted without a walk over its rows: the `tallies` table (rows
//! and bytes per spool, destination and state, kept by triggers in each write's own
//! transaction, schema 14), and the oldest row waiting in a spool, read from the ends of
//! its indexes. `status`, the metrics and systemd's status line read these, so they
//! answer at once with millions of rows waiting or delivered.

use rusqlite::params;

use super::*;

/// Rows of one spool, destination and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub spool: String,
    pub destination: String,
    pub state: State,
    pub files: u64,
    /// The rows' source sizes.
    pub bytes: u64,
}

impl Counts {
    /// Adds `files` rows in `state`.
    pub(super) fn add(&mut self, state: State, files: u64) {
        match state {
            State::Pending => self.pending += files,
            State::Active => self.active += files,
            State::Done => self.done += files,
            State::Failed => self.failed += files,
        }
    }
}

impl Queue {
    /// Every tally with rows, by spool, destination and state.
    pub fn tallies(&self) -> Result<Vec<Tally>> {
        let rows = self.select(
            "SELECT spool, destination, state, files, bytes FROM tallies WHERE files > 0
             ORDER BY spool, destination, state",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            },
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|(spool, destination, state, files, bytes)| {
                Some(Tally {
                    spool,
                    destination,
                    state: State::parse(&state)?,
                    files: files.max(0) as u64,
                    bytes: bytes.max(0) as u64,
                })
            })
            .collect())
    }

    /// When the oldest row of `spool` in `state` (pending or active) was queued, among
    /// those for `destinations` (all with `None`). Pending: the row that came first (the
    /// lowest id, an end of the `files_pending_id` index), so a clock that jumped back
    /// while later rows came does not make them look older; active: the few in flight.
    pub fn oldest_queued(
        &self,
        spool: &str,
        state: State,
        destinations: Option<&[String]>,
    ) -> Result<Option<i64>> {
        let destinations = destinations.map(|d| serde_json::to_string(d).unwrap_or_default());
        let sql = match state {
            State::Pending => {
                "SELECT queued_at FROM files INDEXED BY files_pending_id
                 WHERE spool = ?1 AND state = 'pending'
                   AND (?2 IS NULL OR destination IN (SELECT value FROM json_each(?2)))
                 ORDER BY id LIMIT 1"
            }
            State::Active => {
                "SELECT MIN(queued_at) FROM files
                 WHERE state = 'active' AND spool = ?1
                   AND (?2 IS NULL OR destination IN (SELECT value FROM json_each(?2)))"
            }
            State::Done | State::Failed => return Ok(None),
        };
        use rusqlite::OptionalExtension;
        let at = self
            .conn
            .query_row(sql, params![spool, destinations], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(at.flatten())
    }

    /// The oldest of [`Queue::oldest_queued`] for pending and active rows.
    pub fn oldest_waiting_in(
        &self,
        spool: &str,
        destinations: Option<&[String]>,
    ) -> Result<Option<i64>> {
        let pending = self.oldest_queued(spool, State::Pending, destinations)?;
        let active = self.oldest_queued(spool, State::Active, destinations)?;
        Ok(match (pending, active) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }
}
