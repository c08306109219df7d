//! What a spool's delivery window and batch cadence let a claim take: the [`Gate`] of each
//! spool, the batch ticks taken, files an operator rushed, and the transitions a window
//! makes (an upload paused at its close, a cadence batch closed once its tick is done).

use rusqlite::{named_params, params, OptionalExtension};

use super::*;

/// How much of a spool's queue a claim may take now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Every due row.
    Open,
    /// Rows queued by the spool's last batch tick (ids up to this one), and rushed rows.
    UpTo(i64),
    /// Rushed rows only: the spool is outside its delivery window.
    Closed,
}

/// Up to `:limit` due rows of a cadence spool's ticks taken, oldest first.
pub(super) const DUE_UP_TO: &str = "SELECT id, next_attempt_at
     FROM files INDEXED BY files_pending_id
     WHERE state = 'pending' AND spool = :spool AND id <= :last_id AND next_attempt_at <= :now
       AND interruptions = 0
       AND (:destinations IS NULL OR destination IN (SELECT value FROM json_each(:destinations)))
     ORDER BY id LIMIT :limit";

/// Up to `:limit` due rushed rows of a spool.
pub(super) const DUE_RUSHED: &str = "SELECT id, next_attempt_at
     FROM files INDEXED BY files_rushed
     WHERE state = 'pending' AND rushed = 1 AND spool = :spool AND next_attempt_at <= :now
       AND interruptions = 0
       AND (:destinations IS NULL OR destination IN (SELECT value FROM json_each(:destinations)))
     ORDER BY next_attempt_at LIMIT :limit";

/// The earliest pending row of a cadence spool's ticks taken.
pub(super) const NEXT_UP_TO: &str = "SELECT MIN(next_attempt_at)
     FROM files INDEXED BY files_pending_id
     WHERE state = 'pending' AND spool = :spool AND id <= :last_id
       AND (:destinations IS NULL OR destination IN (SELECT value FROM json_each(:destinations)))";

/// The earliest pending rushed row of a spool.
pub(super) const NEXT_RUSHED: &str = "SELECT MIN(next_attempt_at)
     FROM files INDEXED BY files_rushed
     WHERE state = 'pending' AND rushed = 1 AND spool = :spool
       AND (:destinations IS NULL OR destination IN (SELECT value FROM json_each(:destinations)))";

/// How long a request of `send` waits for its file to be queued (the daemon may be down
/// meanwhile). An older one is dropped, so it never rushes a later file that happens to
/// get the same name and inode.
const RUSH_REQUEST_LIFE_MS: i64 = 24 * 3600 * 1000;

/// In registration's transaction: if `send` asked for this file (its path and inode) to
/// go now, its row (new, already waiting, or followed here) is rushed and the request is
/// used up. Expired requests go.
pub(super) fn apply_rush_request(
    tx: &rusqlite::Connection,
    file: &NewFile,
    registered: &Registered,
    now_ms: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM rush_requests WHERE requested_at < ?1")?
        .execute([now_ms - RUSH_REQUEST_LIFE_MS])?;
    let id = match registered {
        Registered::Queued(id) | Registered::AlreadyQueued(id) | Registered::Followed(id) => *id,
        _ => return Ok(()),
    };
    let used = tx
        .prepare_cached(
            "DELETE FROM rush_requests WHERE spool = ?1 AND rel_path = ?2 AND inode = ?3",
        )?
        .execute(params![file.spool, file.rel_path, file.stamp.inode as i64])?;
    if used == 1 {
        // Every delivery of the file's source goes ahead.
        tx.prepare_cached(concat!(
            "UPDATE files SET rushed = 1
             WHERE id IN (SELECT f.id FROM files AS d
                          JOIN sources AS s ON s.id = d.source_id ",
            deliveries_of_s!(),
            " WHERE d.id = ?1)
               AND state IN ('pending', 'active')"
        ))?
        .execute([id])?;
    }
    Ok(())
}

impl Queue {
    /// Takes the batch tick at `tick_at` for `spool`: the rows queued up to `queued_by`
    /// (the tick on the queue's clock) belong to the ticks taken, however late the tick is
    /// taken. Rows stamped after `now_ms` were stamped by a clock that ran ahead: they
    /// belong to the tick too, rather than wait for that time to come. The last tick
    /// taken changes nothing; a tick recorded *after* `tick_at` is in the future (the
    /// clock was ahead, and is right again): it is dropped for this one, so the cadence
    /// goes on. Returns the last id the spool's ticks cover, and the dropped tick if any.
    pub fn take_tick(
        &mut self,
        spool: &str,
        tick_at: i64,
        queued_by: i64,
        now_ms: i64,
    ) -> Result<(i64, Option<i64>)> {
        self.in_transaction(|tx| {
            let recorded: Option<i64> = tx
                .query_row("SELECT tick_at FROM ticks WHERE spool = ?1", [spool], |r| {
                    r.get(0)
                })
                .optional()?;
            // Ids grow with queueing time: walk down from the newest to the tick.
            tx.execute(
                "INSERT INTO ticks (spool, tick_at, last_id)
                 VALUES (?1, ?2, COALESCE((SELECT id FROM files WHERE queued_at <= ?3 OR queued_at > ?4
                                           ORDER BY id DESC LIMIT 1), 0))
                 ON CONFLICT (spool) DO UPDATE SET tick_at = excluded.tick_at,
                     last_id = MAX(ticks.last_id, excluded.last_id)
                 WHERE excluded.tick_at != ticks.tick_at",
                params![spool, tick_at, queued_by, now_ms],
            )?;
            let last_id = tx.query_row("SELECT last_id FROM ticks WHERE spool = ?1", [spool], |r| {
                r.get(0)
            })?;
            Ok((last_id, recorded.filter(|&at| at > tick_at)))
        })
    }

    /// Marks the spool's waiting files to go now, outside the spool's window and ahead of
    /// its cadence (`resume --now`). Returns how many were marked.
    pub fn rush(&mut self, spool: &str) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE files SET rushed = 1
                 WHERE spool = ?1 AND rushed = 0 AND state IN ('pending', 'active')",
                [spool],
            )
            .map_err(|e| self.err(e))
    }

    /// `send` is about to place the file `inode` at `rel_path` in `spool`: its row is
    /// rushed when the daemon queues it (see [`apply_rush_request`]).
    pub fn rush_request(
        &mut self,
        spool: &str,
        rel_path: &str,
        inode: u64,
        now_ms: i64,
    ) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO rush_requests (spool, rel_path, inode, requested_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO UPDATE SET inode = excluded.inode,
                     requested_at = excluded.requested_at",
                params![spool, rel_path, inode as i64, now_ms],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Withdraws a request whose file `send` could not place.
    pub fn withdraw_rush_request(&mut self, spool: &str, rel_path: &str) -> Result<()> {
        self.conn
            .execute(
                "DELETE FROM rush_requests WHERE spool = ?1 AND rel_path = ?2",
                params![spool, rel_path],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The spool's window closed during the upload: back to `pending` without counting the
    /// attempt, keeping the parts sent, to go on when the window opens again.
    pub fn pause_for_window(&mut self, ended: Ended, now_ms: i64) -> Result<bool> {
        let id = ended.id;
        self.in_transaction(|tx| {
            let paused = tx.execute(
                "UPDATE files SET state = 'pending', interruptions = 0, next_attempt_at = ?3,
                     attempts = MAX(attempts - 1, 0), lease_until = NULL, updated_at = ?3,
                     maybe_sent = maybe_sent OR ?4
                 WHERE id = ?1 AND state = 'active' AND claim = ?2",
                params![id, ended.claim, now_ms, ended.maybe_sent],
            )?;
            if paused == 1 {
                tx.execute(
                    "INSERT INTO attempts (file_id, attempt, ended_at, outcome, error)
                     SELECT id, attempts + 1, ?2, 'paused', 'outside its delivery window'
                     FROM files WHERE id = ?1",
                    params![id, now_ms],
                )?;
            }
            Ok(paused == 1)
        })
    }

    /// Closes a cadence spool's open manifest batch once no file of the ticks taken is
    /// waiting or in flight: a batch lists a whole tick, never part of one. A file bound
    /// for a destination not in `destinations` (an orphan: it waits for a destination the
    /// config no longer has) does not hold the batch open.
    pub fn close_tick_batch(
        &mut self,
        spool: &str,
        destinations: &[String],
        now_ms: i64,
    ) -> Result<usize> {
        let destinations = serde_json::to_string(destinations).expect("strings serialise");
        self.conn
            .execute(
                "UPDATE batches SET state = 'closed', closed_at = :now
                 WHERE state = 'open' AND spool = :spool
                   AND NOT EXISTS (
                       SELECT 1 FROM files
                       WHERE spool = :spool AND state IN ('pending', 'active')
                         AND destination IN (SELECT value FROM json_each(:destinations))
                         AND id <= COALESCE((SELECT last_id FROM ticks WHERE spool = :spool), 0))",
                named_params! { ":spool": spool, ":now": now_ms, ":destinations": destinations },
            )
            .map_err(|e| self.err(e))
    }
}
