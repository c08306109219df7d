//! Registering finished files: one row per file, its key rendered once.
//!
//! What a file found in a spool is follows from what the queue recorded, never from
//! today's config alone:
//! - the latest row of its path is `done` with the same stamp: delivered. If its source
//!   was not finished yet, or was kept and the spool no longer keeps sources, it is to be
//!   cleaned up ([`Registered::AlreadyDone`]); if it was kept, it stays kept. A file that
//!   looks the same after a delete or archive (a reused inode) is new.
//! - the latest row is `pending` or `active`: already queued (a pending row follows a
//!   rewrite). A `failed` row yields its path to a file with another stamp: that file gets
//!   a row of its own, and the failed row is marked superseded (it can no longer be retried).
//! - no row at this path, but a row for the very same file (inode, size, mtime) at another
//!   path of the spool that no longer holds it: the file was moved inside the spool. It is
//!   that row's file, never a second object. A row delivered or in flight stays as it is
//!   (the next look cleans the file up where it is now); a row still waiting, or failed
//!   because its source disappeared, follows the file to its new path (its key stays: an
//!   earlier attempt may have put the object in place already, and the HEAD check finds it).

use rusqlite::{params, OptionalExtension};

use super::*;

/// How a row's `last_error` begins when its source vanished before an attempt (the
/// uploader writes it; a moved file found later revives the row).
pub const VANISHED: &str = "source disappeared";

/// The latest row of a path, as registration needs it.
struct Latest {
    id: i64,
    state: String,
    stamp: FileStamp,
    finished: bool,
    outcome: Option<String>,
}

impl Queue {
    /// Queues a batch of finished files of one spool in one transaction. `render_key` makes
    /// each new row's key from its id; an error there stores the row as `failed` with the
    /// reason. `keeps` is true when the spool's `after_upload` is `keep` today. `moved_from`
    /// says whether a file is no longer at the old path of a row that matches it (given
    /// the row's absolute path): only then is it taken as moved.
    pub fn register<F, G>(
        &mut self,
        files: &[NewFile],
        keeps: bool,
        now_ms: i64,
        mut render_key: F,
        mut moved_from: G,
    ) -> Result<Vec<Registered>>
    where
        F: FnMut(&NewFile, i64) -> std::result::Result<String, String>,
        G: FnMut(&Path, FileStamp) -> bool,
    {
        self.in_transaction(|tx| {
            let mut outcomes = Vec::with_capacity(files.len());
            let mut latest = tx.prepare_cached(
                "SELECT id, state, size, mtime_ns, inode, source_finished_at IS NOT NULL,
                        source_outcome
                 FROM files WHERE spool = ?1 AND rel_path = ?2 ORDER BY id DESC LIMIT 1",
            )?;
            let mut same_file_elsewhere = tx.prepare_cached(
                "SELECT id, path, state, source_finished_at IS NOT NULL, source_outcome
                 FROM files
                 WHERE spool = ?1 AND inode = ?2 AND size = ?3 AND mtime_ns = ?4
                   AND rel_path != ?5
                   AND (state IN ('pending', 'active')
                        OR (state = 'failed' AND superseded_by IS NULL
                            AND last_error LIKE ?6)
                        OR (state = 'done' AND (source_finished_at IS NULL
                            OR source_outcome IN ('gone', 'kept', 'replaced'))))
                 ORDER BY id DESC LIMIT 1",
            )?;
            let vanished = format!("{VANISHED}%");
            let mut follow = tx.prepare_cached(
                "UPDATE files SET rel_path = ?2, path = ?3, state = 'pending',
                     next_attempt_at = MIN(next_attempt_at, ?4), updated_at = ?4,
                     last_error = CASE WHEN state = 'failed' THEN 'moved inside the spool; following it'
                                       ELSE last_error END
                 WHERE id = ?1 AND state IN ('pending', 'failed')",
            )?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO files (spool, rel_path, path, destination, bucket, state, size,
                     mtime_ns, inode, next_attempt_at, queued_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?8, ?9, ?9, ?9)",
            )?;
            let mut set_key = tx.prepare_cached("UPDATE files SET key = ?2 WHERE id = ?1")?;
            let mut refuse = tx.prepare_cached(
                "UPDATE files SET state = 'failed', last_error = ?2 WHERE id = ?1",
            )?;
            let mut supersede = tx.prepare_cached(
                "UPDATE files SET superseded_by = ?2 WHERE id = ?1 AND state = 'failed'",
            )?;
            let mut restamp = tx.prepare_cached(
                // The file was rewritten: an upload started for the old bytes must not
                // be resumed with the new ones. Its record goes (the start-up sweep
                // aborts the upload itself, its key being ours).
                "UPDATE files SET size = ?2, mtime_ns = ?3, inode = ?4, updated_at = ?5,
                     upload_id = NULL, part_size = NULL, sha256 = NULL
                 WHERE id = ?1 AND state = 'pending'",
            )?;
            let mut forget_parts = tx.prepare_cached("DELETE FROM parts WHERE file_id = ?1")?;
            for file in files {
                let existing = latest
                    .query_row(params![file.spool, file.rel_path], |r| {
                        Ok(Latest {
                            id: r.get(0)?,
                            state: r.get(1)?,
                            stamp: FileStamp {
                                size: r.get::<_, i64>(2)? as u64,
                                mtime_ns: r.get(3)?,
                                inode: r.get::<_, i64>(4)? as u64,
                            },
                            finished: r.get(5)?,
                            outcome: r.get(6)?,
                        })
                    })
                    .optional()?;
                let mut superseded = None;
                match existing {
                    Some(row) if row.state == "done" && row.stamp == file.stamp => {
                        // None: a lookalike after a delete or archive, so a new file.
                        let decided = decide_done(row.finished, row.outcome.as_deref(), keeps);
                        if let Some(outcome) = decided {
                            outcomes.push(outcome(row.id));
                            continue;
                        }
                    }
                    Some(row) if row.state == "failed" && row.stamp != file.stamp => {
                        superseded = Some(row.id);
                    }
                    Some(row) if row.state != "done" => {
                        if row.state == "pending" && row.stamp != file.stamp {
                            restamp.execute(params![
                                row.id,
                                file.stamp.size as i64,
                                file.stamp.mtime_ns,
                                file.stamp.inode as i64,
                                now_ms
                            ])?;
                            forget_parts.execute([row.id])?;
                        }
                        outcomes.push(Registered::AlreadyQueued(row.id));
                        continue;
                    }
                    _ => {}
                }
                let elsewhere = same_file_elsewhere
                    .query_row(
                        params![
                            file.spool,
                            file.stamp.inode as i64,
                            file.stamp.size as i64,
                            file.stamp.mtime_ns,
                            file.rel_path,
                            vanished
                        ],
                        |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                PathBuf::from(r.get::<_, String>(1)?),
                                r.get::<_, String>(2)?,
                                r.get::<_, bool>(3)?,
                                r.get::<_, Option<String>>(4)?,
                            ))
                        },
                    )
                    .optional()?;
                if let Some((id, old_path, state, finished, outcome)) = elsewhere {
                    if moved_from(&old_path, file.stamp) {
                        let moved = match state.as_str() {
                            // Being uploaded from its open file: once done, the next look
                            // finds the done row and cleans the file up here.
                            "active" => Some(Registered::AlreadyQueued(id)),
                            "pending" | "failed" => {
                                follow.execute(params![
                                    id,
                                    file.rel_path,
                                    file.path.to_string_lossy(),
                                    now_ms
                                ])?;
                                Some(Registered::Followed(id))
                            }
                            _ => decide_done(finished, outcome.as_deref(), keeps).map(|f| f(id)),
                        };
                        if let Some(moved) = moved {
                            outcomes.push(moved);
                            continue;
                        }
                    }
                }
                insert.execute(params![
                    file.spool,
                    file.rel_path,
                    file.path.to_string_lossy(),
                    file.destination,
                    file.bucket,
                    file.stamp.size as i64,
                    file.stamp.mtime_ns,
                    file.stamp.inode as i64,
                    now_ms
                ])?;
                let id = tx.last_insert_rowid();
                if let Some(old) = superseded {
                    supersede.execute(params![old, id])?;
                }
                match render_key(file, id) {
                    Ok(key) => {
                        set_key.execute(params![id, key])?;
                        outcomes.push(Registered::Queued(id));
                    }
                    Err(reason) => {
                        refuse.execute(params![id, reason])?;
                        outcomes.push(Registered::Refused(id));
                    }
                }
            }
            Ok(outcomes)
        })
    }
}

/// What a file matching a `done` row is, from how the row's source was finished:
/// `None` when it is a new file that merely looks the same.
fn decide_done(
    finished: bool,
    outcome: Option<&str>,
    keeps: bool,
) -> Option<fn(i64) -> Registered> {
    if !finished {
        return Some(Registered::AlreadyDone);
    }
    match outcome {
        // Kept when it was delivered: still kept, or cleaned up now that the spool no
        // longer keeps files. Never uploaded again.
        Some("kept") if keeps => Some(Registered::Kept),
        Some("kept") => Some(Registered::AlreadyDone),
        // Not touched then (it was not where it had been): it is the delivered file.
        Some("gone") | Some("replaced") => Some(Registered::AlreadyDone),
        // Rows finished before outcomes were recorded: today's config decides.
        None if keeps => Some(Registered::Kept),
        _ => None,
    }
}
