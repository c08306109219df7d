//! Registering finished files: one row per file, its key rendered once.

use rusqlite::{params, OptionalExtension};

use super::*;

impl Queue {
    /// Queues a batch of finished files of one spool in one transaction. `render_key` makes
    /// each new row's key from its id; an error there stores the row as `failed` with the
    /// reason. `source_kept` is true for spools with `after_upload = "keep"`: there a file
    /// that matches a finished `done` row is the kept file; elsewhere it is a new file that
    /// happens to look the same (a reused inode), and is queued.
    pub fn register<F>(
        &mut self,
        files: &[NewFile],
        source_kept: bool,
        now_ms: i64,
        mut render_key: F,
    ) -> Result<Vec<Registered>>
    where
        F: FnMut(&NewFile, i64) -> std::result::Result<String, String>,
    {
        self.in_transaction(|tx| {
        let mut outcomes = Vec::with_capacity(files.len());
        {
            let mut latest = tx
                .prepare_cached(
                    "SELECT id, state, size, mtime_ns, inode, source_finished_at IS NOT NULL FROM files
                     WHERE spool = ?1 AND rel_path = ?2 ORDER BY id DESC LIMIT 1",
                )
                ?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO files (spool, rel_path, path, destination, bucket, state, size,
                         mtime_ns, inode, next_attempt_at, queued_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?8, ?9, ?9, ?9)",
                )
                ?;
            let mut set_key = tx
                .prepare_cached("UPDATE files SET key = ?2 WHERE id = ?1")
                ?;
            let mut refuse = tx
                .prepare_cached("UPDATE files SET state = 'failed', last_error = ?2 WHERE id = ?1")
                ?;
            let mut restamp = tx
                .prepare_cached(
                    // The file was rewritten: an upload started for the old bytes must not
                    // be resumed with the new ones. Its record goes (the start-up sweep
                    // aborts the upload itself, its key being ours).
                    "UPDATE files SET size = ?2, mtime_ns = ?3, inode = ?4, updated_at = ?5,
                         upload_id = NULL, part_size = NULL, sha256 = NULL
                     WHERE id = ?1 AND state = 'pending'",
                )
                ?;
            let mut forget_parts = tx
                .prepare_cached("DELETE FROM parts WHERE file_id = ?1")
                ?;
            for file in files {
                let existing = latest
                    .query_row(params![file.spool, file.rel_path], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            FileStamp {
                                size: r.get::<_, i64>(2)? as u64,
                                mtime_ns: r.get(3)?,
                                inode: r.get::<_, i64>(4)? as u64,
                            },
                            r.get::<_, bool>(5)?,
                        ))
                    })
                    .optional()
                    ?;
                match existing {
                    Some((id, state, stamp, finished))
                        if state == "done" && stamp == file.stamp =>
                    {
                        if !finished {
                            outcomes.push(Registered::AlreadyDone(id));
                            continue;
                        }
                        if source_kept {
                            outcomes.push(Registered::Kept(id));
                            continue;
                        }
                    }
                    Some((id, state, stamp, _)) if state != "done" => {
                        if state == "pending" && stamp != file.stamp {
                            restamp
                                .execute(params![
                                    id,
                                    file.stamp.size as i64,
                                    file.stamp.mtime_ns,
                                    file.stamp.inode as i64,
                                    now_ms
                                ])
                                ?;
                            forget_parts.execute([id])?;
                        }
                        outcomes.push(Registered::AlreadyQueued(id));
                        continue;
                    }
                    _ => {}
                }
                insert
                    .execute(params![
                        file.spool,
                        file.rel_path,
                        file.path.to_string_lossy(),
                        file.destination,
                        file.bucket,
                        file.stamp.size as i64,
                        file.stamp.mtime_ns,
                        file.stamp.inode as i64,
                        now_ms
                    ])
                    ?;
                let id = tx.last_insert_rowid();
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
        }
        Ok(outcomes)
        })
    }
}
