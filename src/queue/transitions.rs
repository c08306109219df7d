//! Claims, leases and the outcome transitions of a delivery attempt.
//!
//! Every claim bumps the row's `claim` token, and every outcome names the token it was
//! claimed with: a worker whose lease was taken back (it hung) can no longer change a row
//! that another worker now holds.

use rusqlite::{named_params, params, OptionalExtension};
use std::collections::HashMap;
use std::time::Duration;

use super::batches::{join_batch, Batching};
use super::gates::{Gate, DUE_RUSHED, DUE_UP_TO, NEXT_RUSHED, NEXT_UP_TO};
use super::*;

/// Which rows a daemon may claim: those of its configured (and not paused) spools and
/// destinations. Rows of a spool or destination removed by a reload wait in the queue
/// instead of failing. `None` allows all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Eligible {
    /// The spools' names.
    spool_names: Option<Vec<String>>,
    /// The same, as a JSON array (for the suspect's claim).
    spools: Option<String>,
    /// The gated spools as a JSON object, spool → the last id it may take (-1 outside
    /// its window): rushed rows excepted (for the suspect's claim).
    held: Option<String>,
    /// A JSON array of destination names.
    destinations: Option<String>,
    /// What each spool's window and cadence let through; a spool not named is open.
    gates: HashMap<String, Gate>,
}

impl Eligible {
    #[cfg(test)]
    pub fn only(spools: &[&str], destinations: &[&str]) -> Eligible {
        Eligible::gated(spools, destinations, HashMap::new())
    }

    /// [`Eligible::only`], each spool taking what its gate lets through.
    pub fn gated(spools: &[&str], destinations: &[&str], gates: HashMap<String, Gate>) -> Eligible {
        let held: serde_json::Map<String, serde_json::Value> = gates
            .iter()
            .filter_map(|(spool, gate)| match gate {
                Gate::Open => None,
                Gate::UpTo(last_id) => Some((spool.clone(), (*last_id).into())),
                Gate::Closed => Some((spool.clone(), (-1).into())),
            })
            .collect();
        Eligible {
            spool_names: Some(spools.iter().map(|s| s.to_string()).collect()),
            spools: Some(serde_json::to_string(spools).expect("strings serialise")),
            held: Some(serde_json::Value::Object(held).to_string()),
            destinations: Some(serde_json::to_string(destinations).expect("strings serialise")),
            gates,
        }
    }

    fn gate(&self, spool: &str) -> Gate {
        self.gates.get(spool).copied().unwrap_or(Gate::Open)
    }
}

/// The queries that read a spool's claimable rows (id, due time) under `gate`, in claim
/// order, with the id the gate allows up to.
fn due_queries(gate: Gate) -> (&'static [&'static str], i64) {
    match gate {
        Gate::Open => (&[DUE_IN_SPOOL], 0),
        Gate::UpTo(last_id) => (&[DUE_UP_TO, DUE_RUSHED], last_id),
        Gate::Closed => (&[DUE_RUSHED], 0),
    }
}

/// [`due_queries`] for the earliest pending row.
fn next_queries(gate: Gate) -> (&'static [&'static str], i64) {
    match gate {
        Gate::Open => (&[NEXT_IN_SPOOL], 0),
        Gate::UpTo(last_id) => (&[NEXT_UP_TO, NEXT_RUSHED], last_id),
        Gate::Closed => (&[NEXT_RUSHED], 0),
    }
}

/// The condition on `spool` and `destination`, with named parameters.
const ELIGIBLE: &str = "(:spools IS NULL OR spool IN (SELECT value FROM json_each(:spools)))
     AND (:destinations IS NULL OR destination IN (SELECT value FROM json_each(:destinations)))
     AND spool NOT IN (SELECT spool FROM paused)";

/// What a spool's window and cadence let through (see [`Gate`]): a rushed row, or one
/// with an id its gate allows.
const GATE_ALLOWS: &str = "(rushed = 1 OR NOT EXISTS (
         SELECT 1 FROM json_each(:held) AS gate WHERE gate.key = files.spool AND files.id > gate.value))";

/// A suspected poison file is due or in flight (among the rows the claim may take). One in
/// flight counts whatever its gate says now: it runs alone even if its window closed.
const SUSPECT_WAITING: &str = "SELECT 1 FROM files
     WHERE interruptions > 0
       AND (state = 'active' OR (state = 'pending' AND next_attempt_at <= :now AND {GATE_ALLOWS}))
       AND (:spools IS NULL OR spool IN (SELECT value FROM json_each(:spools)))
       AND (:destinations IS NULL OR destination IN (SELECT value FROM json_each(:destinations)))
       AND spool NOT IN (SELECT spool FROM paused)";

/// Up to `:limit` due rows of one spool, in claim order. Claims read each open spool's own
/// range of `files_spool_due`, so the backlog of a paused or removed spool is never walked
/// (one range over every spool's due rows read it on every turn).
pub(super) const DUE_IN_SPOOL: &str = "SELECT id, next_attempt_at
     FROM files INDEXED BY files_spool_due
     WHERE state = 'pending' AND spool = :spool AND next_attempt_at <= :now
       AND interruptions = 0
       AND (:destinations IS NULL OR destination IN (SELECT value FROM json_each(:destinations)))
     ORDER BY next_attempt_at, id LIMIT :limit";

/// The earliest pending row of one spool (see [`Queue::next_due_for`]).
pub(super) const NEXT_IN_SPOOL: &str = "SELECT next_attempt_at
     FROM files INDEXED BY files_spool_due
     WHERE state = 'pending' AND spool = :spool
       AND (:destinations IS NULL OR destination IN (SELECT value FROM json_each(:destinations)))
     ORDER BY next_attempt_at LIMIT 1";

/// The claim of the rows chosen (a JSON array `:ids`), unless a suspected poison file
/// must run alone first.
pub(super) fn claim_sql() -> String {
    format!(
        "UPDATE OR FAIL files SET state = 'active', attempts = attempts + 1, claim = claim + 1,
             lease_until = :lease_until, updated_at = :now
         WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'pending'
           AND NOT EXISTS ({})
         RETURNING {COLUMNS}",
        SUSPECT_WAITING.replace("{GATE_ALLOWS}", GATE_ALLOWS)
    )
}

/// The claim of a suspected poison file, alone (see [`Queue::claim_suspect`]).
pub(super) fn suspect_sql() -> String {
    format!(
        "UPDATE files SET state = 'active', attempts = attempts + 1, claim = claim + 1,
             lease_until = :lease_until, updated_at = :now
         WHERE id = (SELECT id FROM files WHERE state = 'pending' AND interruptions > 0
                     AND next_attempt_at <= :now AND {ELIGIBLE} AND {GATE_ALLOWS}
                     ORDER BY next_attempt_at, id LIMIT 1)
           AND NOT EXISTS (SELECT 1 FROM files WHERE state = 'active')
         RETURNING {COLUMNS}"
    )
}

/// One ended attempt, for `s3spool show`.
struct History<'a> {
    outcome: &'static str,
    error: Option<&'a str>,
    now_ms: i64,
}

/// The spools whose rows `eligible` allows to be claimed now: its own, or those with
/// pending rows when it names none, less the paused ones.
fn open_spools(conn: &rusqlite::Connection, eligible: &Eligible) -> rusqlite::Result<Vec<String>> {
    let paused: Vec<String> = conn
        .prepare_cached("SELECT spool FROM paused")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let spools = match &eligible.spool_names {
        Some(names) => names.clone(),
        None => conn
            .prepare_cached(
                "SELECT DISTINCT spool FROM files INDEXED BY files_spool_due WHERE state = 'pending'",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?,
    };
    Ok(spools.into_iter().filter(|s| !paused.contains(s)).collect())
}

/// Appends an ended attempt to the file's history, in the transition's transaction.
fn record_attempt(tx: &rusqlite::Connection, id: i64, h: &History<'_>) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO attempts (file_id, attempt, ended_at, outcome, error)
         SELECT id, attempts, ?2, ?3, ?4 FROM files WHERE id = ?1",
    )?
    .execute(params![id, h.now_ms, h.outcome, h.error])?;
    Ok(())
}

/// What a finished delivery put in S3.
#[derive(Debug, Clone, Default)]
pub struct Done {
    pub etag: String,
    /// Hex SHA-256 of the object's bytes.
    pub sha256: String,
    /// Hex SHA-256 of the source delivered (the same as `sha256` for raw objects).
    pub source_sha256: Option<String>,
    pub object_size: u64,
    /// Data rows, when a table was converted.
    pub rows: Option<u64>,
    /// The output format's name.
    pub format: String,
}

/// An attempt that ended without delivering: the row and claim it held, and whether a
/// request that makes the object may have reached S3 without an answer. Every transition
/// that puts the row back records that in the same statement, so the next attempt asks
/// HEAD first, whatever put the row back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub id: i64,
    pub claim: i64,
    pub maybe_sent: bool,
}

impl Ended {
    /// An attempt that sent nothing that could have made the object.
    pub fn unsent(id: i64, claim: i64) -> Ended {
        Ended {
            id,
            claim,
            maybe_sent: false,
        }
    }
}

impl Queue {
    /// Returns every `active` row to `pending`; run when no worker exists (a stop or a
    /// reload cut them off). Their requests may have reached S3: the next attempt asks
    /// HEAD first.
    pub fn recover_active(&mut self, now_ms: i64) -> Result<usize> {
        self.in_transaction(|tx| {
            let stopped: Vec<i64> = tx
                .prepare_cached("SELECT id FROM files WHERE state = 'active'")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for &id in &stopped {
                // Recorded before the attempt is given back, under the number it ran as.
                let history = History {
                    outcome: "stopped",
                    error: Some("the daemon stopped (or reloaded) during this attempt"),
                    now_ms,
                };
                record_attempt(tx, id, &history)?;
            }
            // A stop is not a try that failed: it gives its attempt back, so an operator's
            // restarts never use up `max_attempts`.
            tx.prepare_cached(
                "UPDATE files SET state = 'pending', lease_until = NULL, updated_at = ?1,
                     maybe_sent = 1, attempts = MAX(attempts - 1, 0)
                 WHERE state = 'active'",
            )?
            .execute([now_ms])?;
            Ok(stopped.len())
        })
    }

    /// At start: rows still `active` belong to a daemon that died with them (killed, out
    /// of memory). Each such attempt counts (its claim counted it), and so does the
    /// interruption: a row the daemon died with `max_attempts(destination)` times in a
    /// row (twice at least: one power cut proves nothing) is set aside as `failed` with
    /// the reason, rather than claimed again to take the daemon down once more (its
    /// multipart upload record goes; the sweep aborts the upload).
    /// The others return to `pending`, and are claimed alone next time (see
    /// [`Queue::claim_suspect`]), so a file that was merely in flight beside a poison file
    /// is not set aside with it. Returns how many were requeued, and the (id, path) of
    /// those set aside.
    pub fn recover_after_crash(
        &mut self,
        now_ms: i64,
        max_attempts: impl Fn(&str) -> u32,
    ) -> Result<(usize, Vec<(i64, String)>)> {
        self.in_transaction(|tx| {
            let interrupted: Vec<(i64, u32, String, String)> = tx
                .prepare(
                    "UPDATE files SET state = 'pending', lease_until = NULL, updated_at = ?1,
                         interruptions = interruptions + 1, maybe_sent = 1,
                         last_error = 'the daemon stopped during this attempt'
                     WHERE state = 'active' RETURNING id, interruptions, rel_path, destination",
                )?
                .query_map([now_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut requeued = 0;
            let mut set_aside = Vec::new();
            for (id, interruptions, rel_path, destination) in interrupted {
                if interruptions >= max_attempts(&destination).max(2) {
                    let reason = format!(
                        "the daemon stopped {interruptions} times in a row while delivering this file (killed, or out of memory?): \
                         set aside so that the other files go on; find the cause in the system log, then `s3spool retry {id}`"
                    );
                    tx.execute(
                        "UPDATE files SET state = 'failed', last_error = ?2, upload_id = NULL,
                             part_size = NULL, failure = 'set_aside'
                         WHERE id = ?1",
                        params![id, reason],
                    )?;
                    tx.execute("DELETE FROM parts WHERE file_id = ?1", [id])?;
                    let history = History {
                        outcome: "failed",
                        error: Some(&reason),
                        now_ms,
                    };
                    record_attempt(tx, id, &history)?;
                    set_aside.push((id, rel_path));
                } else {
                    let history = History {
                        outcome: "interrupted",
                        error: Some("the daemon stopped during this attempt"),
                        now_ms,
                    };
                    record_attempt(tx, id, &history)?;
                    requeued += 1;
                }
            }
            Ok((requeued, set_aside))
        })
    }

    /// Records how the sources of `spool`'s rows finished before outcomes were recorded
    /// (queue schema 5) were finished: by `after_upload` as it is at the first start since,
    /// which is what finished them. Returns the rows updated.
    pub fn backfill_outcomes(&mut self, spool: &str, outcome: SourceOutcome) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE sources SET outcome = ?2
                 WHERE id IN (SELECT source_id FROM files INDEXED BY files_outcome_unknown
                              WHERE spool = ?1 AND source_finished_at IS NOT NULL
                                AND source_outcome IS NULL)",
                params![spool, outcome],
            )
            .map_err(|e| self.err(e))
    }

    /// Returns `active` rows whose lease ran out to `pending`: their worker stopped.
    pub fn reap_expired(&mut self, now_ms: i64) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE files SET state = 'pending', lease_until = NULL, updated_at = ?1,
                     last_error = 'the worker stopped renewing its lease; queued again',
                     maybe_sent = 1
                 WHERE state = 'active' AND lease_until < ?1",
                [now_ms],
            )
            .map_err(|e| self.err(e))
    }

    #[cfg(test)]
    /// Atomically claims up to `limit` due rows for a worker, counting an attempt on each.
    pub fn claim(&mut self, limit: usize, now_ms: i64, lease: Duration) -> Result<Vec<FileRow>> {
        self.claim_for(limit, now_ms, lease, &Eligible::default())
    }

    /// [`Queue::claim`], of the rows `eligible` allows only: the earliest due rows of its
    /// open spools, taken from each spool's range and merged.
    pub fn claim_for(
        &mut self,
        limit: usize,
        now_ms: i64,
        lease: Duration,
        eligible: &Eligible,
    ) -> Result<Vec<FileRow>> {
        let lease_until = now_ms + lease.as_millis() as i64;
        self.in_transaction(|tx| {
            let mut due: Vec<(i64, i64)> = Vec::new();
            for spool in open_spools(tx, eligible)? {
                let (queries, last_id) = due_queries(eligible.gate(&spool));
                for sql in queries {
                    let mut stmt = tx.prepare_cached(sql)?;
                    let mut params = vec![
                        (":spool", &spool as &dyn rusqlite::ToSql),
                        (":now", &now_ms),
                        (":destinations", &eligible.destinations),
                    ];
                    let limit = limit as i64;
                    params.push((":limit", &limit));
                    if sql.contains(":last_id") {
                        params.push((":last_id", &last_id));
                    }
                    let rows = stmt.query_map(params.as_slice(), |r| Ok((r.get(1)?, r.get(0)?)))?;
                    for row in rows {
                        due.push(row?);
                    }
                }
            }
            if due.is_empty() {
                return Ok(Vec::new());
            }
            // A rushed row of a tick taken is read twice.
            due.sort_unstable();
            due.dedup();
            due.truncate(limit);
            let ids = serde_json::to_string(&due.iter().map(|(_, id)| id).collect::<Vec<_>>())
                .expect("numbers serialise");
            let mut stmt = tx.prepare_cached(&claim_sql())?;
            let mut rows = stmt
                .query_map(
                    named_params! {
                        ":ids": ids,
                        ":now": now_ms,
                        ":lease_until": lease_until,
                        ":spools": eligible.spools,
                        ":held": eligible.held,
                        ":destinations": eligible.destinations,
                    },
                    FileRow::from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.sort_by_key(|r| (r.next_attempt_at, r.id));
            Ok(rows)
        })
    }

    /// Claims one row the daemon died with (a suspected poison file), alone: only when no
    /// other row is in flight. Other claims wait while it is due or in flight
    /// ([`Queue::claim_for`]), so it runs by itself, and a file that kills the daemon
    /// takes no other file's attempts with it.
    pub fn claim_suspect(
        &mut self,
        now_ms: i64,
        lease: Duration,
        eligible: &Eligible,
    ) -> Result<Vec<FileRow>> {
        self.select(
            &suspect_sql(),
            named_params! {
                ":now": now_ms,
                ":lease_until": now_ms + lease.as_millis() as i64,
                ":spools": eligible.spools,
                ":held": eligible.held,
                ":destinations": eligible.destinations,
            },
            FileRow::from_row,
        )
    }

    /// Extends the lease of a row this worker still holds.
    pub fn renew_lease(&mut self, id: i64, claim: i64, lease_until: i64) -> Result<bool> {
        self.transition(
            "UPDATE files SET lease_until = ?3 WHERE id = ?1 AND state = 'active' AND claim = ?2",
            params![id, claim, lease_until],
            false,
            None,
        )
    }

    #[cfg(test)]
    /// The earliest `next_attempt_at` among pending rows.
    pub fn next_due(&self) -> Result<Option<i64>> {
        self.next_due_for(&Eligible::default())
    }

    /// [`Queue::next_due`], among the rows `eligible` allows.
    pub fn next_due_for(&self, eligible: &Eligible) -> Result<Option<i64>> {
        let next = || -> rusqlite::Result<Option<i64>> {
            let mut earliest: Option<i64> = None;
            for spool in open_spools(&self.conn, eligible)? {
                let (queries, last_id) = next_queries(eligible.gate(&spool));
                for sql in queries {
                    let mut params = vec![
                        (":spool", &spool as &dyn rusqlite::ToSql),
                        (":destinations", &eligible.destinations),
                    ];
                    if sql.contains(":last_id") {
                        params.push((":last_id", &last_id));
                    }
                    let due: Option<i64> = self
                        .conn
                        .prepare_cached(sql)?
                        .query_row(params.as_slice(), |r| r.get(0))
                        .optional()?
                        .flatten();
                    earliest = match (earliest, due) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
            }
            Ok(earliest)
        };
        next().map_err(|e| self.err(e))
    }

    /// S3 confirmed the object: the row is done, with what was delivered. With `batch`, the
    /// delivery joins its spool's open manifest batch in the same transaction (opening one
    /// if needed, closing it when full), so a crash never loses or doubles a membership.
    /// This and the other transitions return false when the row is no longer held by this
    /// claim (an operator purged it, or the lease ran out) and nothing changed.
    pub fn mark_done(
        &mut self,
        id: i64,
        claim: i64,
        done: &Done,
        batch: Option<&Batching>,
        now_ms: i64,
    ) -> Result<bool> {
        self.in_transaction(|tx| done_in(tx, id, claim, done, batch, now_ms))
    }

    /// HEAD found at the row's key an object this row wrote, holding an earlier version of
    /// its file (an answer was lost, then the file was replaced): that version *was*
    /// delivered. In one transaction, the row is done with what S3 holds, its source is
    /// finished as `superseded` (nothing touches the file now at its path: it is a later
    /// version), and that file, `later`, is registered as a new row with its own key.
    /// Returns the new row's registration, or `None` when the row is no longer this
    /// attempt's.
    pub fn mark_earlier_delivered<F>(
        &mut self,
        ended: Ended,
        done: &Done,
        batch: Option<&Batching>,
        later: (&NewFile, SpoolRules),
        now_ms: i64,
        mut render_key: F,
    ) -> Result<Option<Registered>>
    where
        F: FnMut(&NewFile, i64) -> std::result::Result<String, String>,
    {
        self.in_transaction(|tx| {
            if !done_in(tx, ended.id, ended.claim, done, batch, now_ms)? {
                return Ok(None);
            }
            tx.execute(
                "UPDATE sources SET finished_at = ?2, outcome = ?3
                 WHERE id = (SELECT source_id FROM files WHERE id = ?1 AND state = 'done')",
                params![ended.id, now_ms, SourceOutcome::Superseded],
            )?;
            let (file, rules) = later;
            super::register::register_one_in(tx, file, rules, now_ms, &mut render_key).map(Some)
        })
    }

    /// A transient failure: try again at `next_attempt_at`. An open multipart upload is
    /// kept, so the next attempt resumes it.
    pub fn retry_later(
        &mut self,
        ended: Ended,
        error: &str,
        next_attempt_at: i64,
        now_ms: i64,
    ) -> Result<bool> {
        self.back_to_pending(ended, error, (next_attempt_at, now_ms), true)
    }

    /// The destination, not the file, failed: back to `pending` at `next_attempt_at`,
    /// with the attempt not counted (the file was never really tried).
    pub fn release(
        &mut self,
        ended: Ended,
        error: &str,
        next_attempt_at: i64,
        now_ms: i64,
    ) -> Result<bool> {
        self.back_to_pending(ended, error, (next_attempt_at, now_ms), false)
    }

    fn back_to_pending(
        &mut self,
        ended: Ended,
        error: &str,
        (next_attempt_at, now_ms): (i64, i64),
        counted: bool,
    ) -> Result<bool> {
        let uncount = if counted { 0 } else { 1 };
        self.transition(
            "UPDATE files SET state = 'pending', interruptions = 0, last_error = ?3, next_attempt_at = ?4,
                 attempts = MAX(attempts - ?6, 0), lease_until = NULL, updated_at = ?5,
                 maybe_sent = maybe_sent OR ?7
             WHERE id = ?1 AND state = 'active' AND claim = ?2",
            params![
                ended.id,
                ended.claim,
                error,
                next_attempt_at,
                now_ms,
                uncount,
                ended.maybe_sent
            ],
            false,
            Some(History {
                outcome: if counted { "retry" } else { "held back" },
                error: Some(error),
                now_ms,
            }),
        )
    }

    /// A permanent failure, or attempts used up: wait for an operator. The caller aborted
    /// any multipart upload; its record goes. Whether the object may be in S3 stays
    /// recorded, for the attempt after `s3spool retry`.
    pub fn mark_failed(
        &mut self,
        ended: Ended,
        error: &str,
        failure: Failure,
        now_ms: i64,
    ) -> Result<bool> {
        self.transition(
            "UPDATE files SET state = 'failed', interruptions = 0, last_error = ?3, lease_until = NULL,
                 upload_id = NULL, part_size = NULL, updated_at = ?4, maybe_sent = maybe_sent OR ?5,
                 failure = ?6
             WHERE id = ?1 AND state = 'active' AND claim = ?2",
            params![ended.id, ended.claim, error, now_ms, ended.maybe_sent, failure],
            true,
            Some(History {
                outcome: "failed",
                error: Some(error),
                now_ms,
            }),
        )
    }

    /// The source changed since it was queued or while it was uploaded: upload it again
    /// (same key) once it has settled, without using up an attempt. The caller aborted any
    /// multipart upload; its record goes. The caller also made sure no earlier version
    /// of the file is at the key, if one may be (see [`Queue::mark_earlier_delivered`]).
    pub fn requeue_changed(
        &mut self,
        ended: Ended,
        stamp: FileStamp,
        birth_ns: Option<i64>,
        next_attempt_at: i64,
        now_ms: i64,
    ) -> Result<bool> {
        self.in_transaction(|tx| {
            let requeued = tx
                .prepare_cached(
                    "UPDATE files SET state = 'pending', interruptions = 0,
                         attempts = MAX(attempts - 1, 0), next_attempt_at = ?3,
                         lease_until = NULL, upload_id = NULL, part_size = NULL, sha256 = NULL,
                         maybe_sent = maybe_sent OR ?5,
                         last_error = 'source changed; will upload again once it settles',
                         updated_at = ?4
                     WHERE id = ?1 AND state = 'active' AND claim = ?2
                     RETURNING source_id",
                )?
                .query_row(
                    params![
                        ended.id,
                        ended.claim,
                        next_attempt_at,
                        now_ms,
                        ended.maybe_sent
                    ],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?;
            let Some(source) = requeued else {
                return Ok(false);
            };
            // Another inode is another file: its birth time, where known, is the caller's.
            tx.prepare_cached(
                "UPDATE sources SET size = ?2, mtime_ns = ?3, inode = ?4,
                     birth_ns = CASE WHEN inode = ?4 THEN COALESCE(?5, birth_ns) ELSE ?5 END
                 WHERE id = ?1",
            )?
            .execute(params![
                source,
                stamp.size as i64,
                stamp.mtime_ns,
                stamp.inode as i64,
                birth_ns
            ])?;
            tx.execute("DELETE FROM parts WHERE file_id = ?1", [ended.id])?;
            record_attempt(
                tx,
                ended.id,
                &History {
                    outcome: "changed",
                    error: Some("source changed; uploaded again once it settles"),
                    now_ms,
                },
            )?;
            Ok(true)
        })
    }

    /// The source's `after_upload` step has run: a later file at the same path with the
    /// same stamp is a new file (or, for kept spools, the kept one), never "clean me up".
    /// `outcome` says how: later decisions about the file follow what was done, not
    /// today's config.
    #[cfg(test)]
    pub fn mark_source_finished(
        &mut self,
        id: i64,
        outcome: SourceOutcome,
        now_ms: i64,
    ) -> Result<bool> {
        self.transition(
            "UPDATE sources SET finished_at = ?2, outcome = ?3
             WHERE id = (SELECT source_id FROM files WHERE id = ?1 AND state = 'done')",
            params![id, now_ms, outcome],
            false,
            None,
        )
    }

    /// Records how many sources were finished, in one transaction: each `(source id,
    /// path, outcome)` only if the source still waits for its clean-up at `path`, with
    /// every delivery settled. A source a rescan moved, or reopened, meanwhile is finished
    /// again where its file is now. Returns how many sources it applied to.
    pub fn mark_sources_finished(
        &mut self,
        finished: &[(i64, String, SourceOutcome)],
        now_ms: i64,
    ) -> Result<usize> {
        self.in_transaction(|tx| {
            let mut update = tx.prepare_cached(
                "UPDATE sources SET finished_at = ?2, outcome = ?3
                 WHERE id = ?1 AND finished_at IS NULL AND unsettled = 0
                   AND superseded_by IS NULL AND path = ?4",
            )?;
            let mut applied = 0;
            for (id, path, outcome) in finished {
                applied += update.execute(params![id, now_ms, outcome, path])?;
            }
            Ok(applied)
        })
    }

    /// Runs one guarded update of row `id` (its first parameter); with `clear_parts`, also
    /// drops the row's recorded parts in the same transaction when the update applied.
    fn transition(
        &mut self,
        sql: &str,
        params: impl rusqlite::Params,
        clear_parts: bool,
        history: Option<History<'_>>,
    ) -> Result<bool> {
        self.in_transaction(|tx| {
            let id_changed = tx
                .prepare_cached(&format!("{sql} RETURNING id"))?
                .query_row(params, |r| r.get::<_, i64>(0));
            match id_changed {
                Ok(id) => {
                    if clear_parts {
                        tx.execute("DELETE FROM parts WHERE file_id = ?1", [id])?;
                    }
                    if let Some(h) = history {
                        record_attempt(tx, id, &h)?;
                    }
                    Ok(true)
                }
                Err(rusqlite::Error::QueryReturnedNoRows) => Ok(false),
                Err(e) => Err(e),
            }
        })
    }
}

/// The row is done with what was delivered (see [`Queue::mark_done`]), in `tx`.
fn done_in(
    tx: &rusqlite::Connection,
    id: i64,
    claim: i64,
    done: &Done,
    batch: Option<&Batching>,
    now_ms: i64,
) -> rusqlite::Result<bool> {
    let updated = tx
            .prepare_cached(
                "UPDATE OR FAIL files SET state = 'done', interruptions = 0, maybe_sent = 0, etag = ?3, sha256 = ?4, object_size = ?5,
                     rows = ?6, format = ?7, last_error = NULL, lease_until = NULL,
                     upload_id = NULL, part_size = NULL, done_at = ?8, updated_at = ?8,
                     source_sha256 = ?9
                 WHERE id = ?1 AND state = 'active' AND claim = ?2
                 RETURNING spool, destination, bucket",
            )?
            .query_row(
                params![
                    id,
                    claim,
                    done.etag,
                    done.sha256,
                    done.object_size as i64,
                    done.rows.map(|n| n as i64),
                    done.format,
                    now_ms,
                    done.source_sha256
                ],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            );
    let (spool, destination, bucket) = match updated {
        Ok(found) => found,
        Err(rusqlite::Error::QueryReturnedNoRows) => return Ok(false),
        Err(e) => return Err(e),
    };
    tx.execute("DELETE FROM parts WHERE file_id = ?1", [id])?;
    let done = History {
        outcome: "done",
        error: None,
        now_ms,
    };
    record_attempt(tx, id, &done)?;
    if let Some(batching) = batch {
        join_batch(tx, id, &spool, &destination, &bucket, batching, now_ms)?;
    }
    Ok(true)
}
