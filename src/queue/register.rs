//! Registering finished files: one row per file, its key rendered once.
//!
//! What a file found in a spool is follows from what the queue recorded, never from
//! today's config alone. First the row of its path (one still waiting or in flight, else
//! the newest):
//! - `pending` or `active`: already queued (a pending row follows a rewrite).
//! - `failed`: the same file stays failed, unless its source had vanished (it is back: the
//!   row waits again). A file with another stamp gets a row of its own, and the failed row
//!   is marked superseded (it can no longer be retried).
//! - `done` with the same stamp and birth time: delivered. If its source was not finished
//!   yet, or was kept and the spool no longer keeps sources, it is to be cleaned up
//!   ([`Registered::AlreadyDone`]); if it was kept, it stays kept. A kept file found with
//!   another inode (a restore, a disk move) but the same size and mtime is hashed
//!   ([`Registered::Lookalike`]): the same SHA-256 is the kept file, under its new inode;
//!   another is a new file. A file that looks the same
//!   after a delete or archive (a reused inode) is new.
//!
//! Then, for a file no row of its path claims: a row for the very same file (inode, size,
//! mtime, birth time) at another path of the spool that no longer holds it means the file
//! was moved inside the spool. It is that row's file, never a second object:
//! - in flight: left alone (the next look, once it is done, cleans the file up here);
//! - delivered: its row moves to the new path and the file is cleaned up there;
//! - waiting, or failed because its source vanished: the row follows the file, when that
//!   cannot put two files under one key. Never tried, it takes the key of its new path.
//!   Tried, it keeps its key (an earlier try may have put the object there, and HEAD finds
//!   it) if keys are unique per row (`{id}`, `{uuid}`) or do not depend on the path.
//!   Otherwise a new file at the old path would take the same key, so the moved file gets
//!   a row of its own and the old row is superseded.
//! - in a spool that keeps files, no row of the same inode, but a kept row of the same
//!   size and mtime whose path no longer holds its file: a kept file restored with another
//!   inode and moved. Hashed, the same SHA-256 is that file (the row follows it), another
//!   is a new file.
//! - failed for another reason after a try: the row follows the file in the same way and
//!   stays failed (a try may have put the file in S3; `retry` asks HEAD first).

use rusqlite::{params, Connection, OptionalExtension};

use super::*;

/// The row that claims a path, as registration needs it.
struct AtPath {
    id: i64,
    state: State,
    stamp: FileStamp,
    birth_ns: Option<i64>,
    /// When its source was finished, if it was.
    finished_at: Option<i64>,
    outcome: Option<SourceOutcome>,
    vanished: bool,
    /// S3 may hold an earlier version of the file under the row's key.
    maybe_sent: bool,
    /// The source's SHA-256 as delivered, for a done row.
    source_sha256: Option<String>,
}

/// A row for the same file at another path.
struct Elsewhere {
    id: i64,
    path: PathBuf,
    state: State,
    finished: bool,
    outcome: Option<SourceOutcome>,
    claimed: bool,
    key: Option<String>,
    /// Failed because its source vanished.
    vanished: bool,
}

impl Elsewhere {
    /// Reads the columns of [`ELSEWHERE`] (and of [`VANISHED_ALIKE`], which has the same).
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Elsewhere> {
        Ok(Elsewhere {
            id: r.get(0)?,
            path: PathBuf::from(r.get::<_, String>(1)?),
            state: r.get(2)?,
            finished: r.get(3)?,
            outcome: r.get(4)?,
            claimed: r.get(5)?,
            key: r.get(6)?,
            vanished: r.get(7)?,
        })
    }
}

/// The delivery that claims a path: of the sources at the path, one still waiting or in
/// flight, else the newest, never a superseded one.
pub(super) const AT_PATH: &str = concat!(
    "SELECT f.id, f.state, s.size, s.mtime_ns, s.inode, s.birth_ns, s.finished_at, s.outcome,
        f.state = 'failed' AND f.superseded_by IS NULL AND IFNULL(f.failure = 'vanished', 0),
        f.maybe_sent, COALESCE(f.source_sha256, CASE WHEN f.format = 'raw' THEN f.sha256 END)
     FROM sources AS s INDEXED BY sources_path ",
    deliveries_of_s!(),
    " WHERE s.spool = ?1 AND s.rel_path = ?2 AND f.superseded_by IS NULL
     ORDER BY f.state IN ('pending', 'active') DESC, f.id DESC LIMIT 1"
);

/// A delivery of the very same file (inode, size, mtime, birth time) at another path.
pub(super) const ELSEWHERE: &str = concat!(
    "SELECT f.id, s.path, f.state, s.finished_at IS NOT NULL,
        s.outcome, f.claim > 0, f.key, IFNULL(f.failure = 'vanished', 0)
     FROM sources AS s INDEXED BY sources_inode ",
    deliveries_of_s!(),
    " WHERE s.spool = ?1 AND s.inode = ?2 AND s.size = ?3 AND s.mtime_ns = ?4
       AND s.rel_path != ?5
       AND (?6 IS NULL OR s.birth_ns IS NULL OR s.birth_ns = ?6)
       AND (f.state IN ('pending', 'active')
            OR (f.state = 'failed' AND f.superseded_by IS NULL
                AND (f.claim > 0 OR IFNULL(f.failure = 'vanished', 0)))
            OR (f.state = 'done' AND (s.finished_at IS NULL OR s.outcome = 'kept'
                OR (s.outcome IN ('gone', 'replaced') AND s.birth_ns = ?6))))
     ORDER BY f.id DESC LIMIT 1"
);

/// The kept rows of the spool with a file's size and mtime at other paths (newest first,
/// a bounded few: identical stamps are rare outside one unpacked archive), and the
/// source's SHA-256 each was delivered with.
pub(super) const KEPT_ELSEWHERE: &str = "SELECT id, path, size, mtime_ns, inode,
        COALESCE(source_sha256, CASE WHEN format = 'raw' THEN sha256 END) AS kept_sha256
     FROM files
     WHERE spool = ?1 AND size = ?2 AND mtime_ns = ?3 AND rel_path != ?4
       AND state = 'done' AND source_outcome IN ('kept', 'gone', 'replaced')
       AND superseded_by IS NULL
       AND kept_sha256 IS NOT NULL
     ORDER BY id DESC LIMIT 64";

/// How alike a file at a row's old path must be to the row's to be its file still.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Likeness {
    /// The very file: inode, size and mtime.
    Exact,
    /// Any file of the same size and mtime: a kept row's inode may be out of date.
    SizeAndMtime,
}

/// A row of the spool waiting or in flight with a file's size and mtime at another path.
pub(super) const IN_FLIGHT_ALIKE: &str = "SELECT id, path, size, mtime_ns, inode FROM files
     WHERE spool = ?1 AND size = ?2 AND mtime_ns = ?3 AND rel_path != ?4
       AND state IN ('pending', 'active')
     ORDER BY id DESC LIMIT 1";

/// A row of the spool delivered but not cleaned up yet, with a file's size and mtime at
/// another path (a range of `files_unfinished`: few rows, whatever the queue holds).
pub(super) const UNFINISHED_ALIKE: &str = "SELECT id, path, size, mtime_ns, inode
     FROM files INDEXED BY files_unfinished
     WHERE state = 'done' AND source_finished_at IS NULL
       AND spool = ?1 AND size = ?2 AND mtime_ns = ?3 AND rel_path != ?4
     ORDER BY id DESC LIMIT 1";

/// A row of the spool that failed because its file vanished, with a file's size and
/// mtime, at another path (its columns as [`ELSEWHERE`]'s).
pub(super) const VANISHED_ALIKE: &str = "SELECT id, path, state, source_finished_at IS NOT NULL,
        source_outcome, claim > 0, key, 1
     FROM files
     WHERE spool = ?1 AND size = ?2 AND mtime_ns = ?3 AND rel_path != ?4
       AND state = 'failed' AND failure = 'vanished' AND superseded_by IS NULL
     ORDER BY id DESC LIMIT 1";

/// What registration needs to know of the spool, as configured today.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpoolRules {
    /// `after_upload = "keep"`.
    pub keeps: bool,
    /// The key template gives every row a key of its own (`{id}` or `{uuid}`).
    pub unique_keys: bool,
}

/// One destination of a spool, as registration needs it: each file gets a delivery to each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRules {
    pub destination: String,
    pub bucket: String,
    /// The route's key template gives every delivery a key of its own (`{id}` or `{uuid}`).
    pub unique_keys: bool,
}

/// Makes a delivery's key from the file, its route and the delivery's id (or says why it
/// cannot be made).
type RenderKey<'a> =
    dyn FnMut(&NewFile, &RouteRules, i64) -> std::result::Result<String, String> + 'a;

impl Queue {
    /// Queues a batch of finished files of one spool in one transaction, each with one
    /// delivery, to the destination and bucket the file names. `render_key` makes a row's
    /// key from the file and the row's id; an error there stores the row as `failed` with
    /// the reason. `moved_from` says whether a file is no longer at the old path of a row
    /// that matches it (given the row's absolute path, its stamp, and how alike the file
    /// there must be to count): only then is it taken as moved.
    #[cfg(test)]
    pub fn register<F, G>(
        &mut self,
        files: &[NewFile],
        rules: SpoolRules,
        now_ms: i64,
        mut render_key: F,
        moved_from: G,
    ) -> Result<Vec<Registered>>
    where
        F: FnMut(&NewFile, i64) -> std::result::Result<String, String>,
        G: FnMut(&Path, FileStamp, Likeness) -> bool,
    {
        self.register_batch(
            files,
            rules,
            None,
            now_ms,
            &mut |file, _, id| render_key(file, id),
            moved_from,
        )
    }

    /// Queues a batch of finished files of one spool in one transaction, each as a source
    /// with one delivery per route (in the routes' order, with consecutive ids from the
    /// source's). `render_key` makes each delivery's key; a route whose key cannot be made
    /// fails that delivery alone, with the reason. See [`Queue::register`].
    pub fn register_to<G>(
        &mut self,
        files: &[NewFile],
        rules: SpoolRules,
        routes: &[RouteRules],
        now_ms: i64,
        render_key: &mut RenderKey<'_>,
        moved_from: G,
    ) -> Result<Vec<Registered>>
    where
        G: FnMut(&Path, FileStamp, Likeness) -> bool,
    {
        assert!(
            !routes.is_empty(),
            "a spool goes to one destination at least"
        );
        self.register_batch(files, rules, Some(routes), now_ms, render_key, moved_from)
    }

    fn register_batch<G>(
        &mut self,
        files: &[NewFile],
        rules: SpoolRules,
        routes: Option<&[RouteRules]>,
        now_ms: i64,
        render_key: &mut RenderKey<'_>,
        mut moved_from: G,
    ) -> Result<Vec<Registered>>
    where
        G: FnMut(&Path, FileStamp, Likeness) -> bool,
    {
        self.in_transaction(|tx| {
            // Requests are rare (`send`): one look per batch, none per file without.
            let rushing: bool =
                tx.query_row("SELECT EXISTS (SELECT 1 FROM rush_requests)", [], |r| {
                    r.get(0)
                })?;
            let mut registrar = Registrar {
                tx,
                rules,
                routes: routes.map(<[RouteRules]>::to_vec).unwrap_or_default(),
                now_ms,
                render_key,
                moved_from: &mut moved_from,
            };
            files
                .iter()
                .map(|file| {
                    if routes.is_none() {
                        registrar.route_of(file);
                    }
                    let registered = registrar.one(file)?;
                    if rushing {
                        super::gates::apply_rush_request(tx, file, &registered, now_ms)?;
                    }
                    Ok(registered)
                })
                .collect()
        })
    }
}

/// Registers one file in the open transaction `tx`, as [`Queue::register`] would (a file
/// at the path of a row it follows is never taken as moved: it is known to be new).
pub(super) fn register_one_in(
    tx: &Connection,
    file: &NewFile,
    rules: SpoolRules,
    now_ms: i64,
    render_key: &mut dyn FnMut(&NewFile, i64) -> std::result::Result<String, String>,
) -> rusqlite::Result<Registered> {
    let mut registrar = Registrar {
        tx,
        rules,
        routes: Vec::new(),
        now_ms,
        render_key: &mut |file, _, id| render_key(file, id),
        moved_from: &mut |_, _, _| false,
    };
    registrar.route_of(file);
    registrar.one(file)
}

/// One batch's registration: its transaction, and what each file of it is decided with.
struct Registrar<'a> {
    tx: &'a Connection,
    rules: SpoolRules,
    /// Where each file goes: a delivery to each route.
    routes: Vec<RouteRules>,
    now_ms: i64,
    /// Makes a delivery's key from the file, its route and the delivery's id.
    render_key: &'a mut RenderKey<'a>,
    /// Whether a file is no longer at the old path of a row that matches it.
    moved_from: &'a mut dyn FnMut(&Path, FileStamp, Likeness) -> bool,
}

impl Registrar<'_> {
    /// The one route of a file that names its destination and bucket itself.
    fn route_of(&mut self, file: &NewFile) {
        let same = self
            .routes
            .first()
            .is_some_and(|r| r.destination == file.destination && r.bucket == file.bucket);
        if !same || self.routes.len() != 1 {
            self.routes = vec![RouteRules {
                destination: file.destination.clone(),
                bucket: file.bucket.clone(),
                unique_keys: self.rules.unique_keys,
            }];
        }
    }

    /// What one file is, recorded.
    fn one(&mut self, file: &NewFile) -> rusqlite::Result<Registered> {
        let (tx, rules, now_ms) = (self.tx, self.rules, self.now_ms);
        let at_path = tx
            .prepare_cached(AT_PATH)?
            .query_row(params![file.spool, file.rel_path], |r| {
                Ok(AtPath {
                    id: r.get(0)?,
                    state: r.get(1)?,
                    stamp: FileStamp::from_columns(r, 2)?,
                    birth_ns: r.get(5)?,
                    finished_at: r.get(6)?,
                    outcome: r.get(7)?,
                    vanished: r.get(8)?,
                    maybe_sent: r.get(9)?,
                    source_sha256: r.get(10)?,
                })
            })
            .optional()?;
        let mut superseded = None;
        if let Some(row) = at_path {
            let same = row.stamp == file.stamp && same_birth(row.birth_ns, file.birth_ns);
            // The same inode at the path of a row whose file was not touched at clean-up,
            // with no birth time to tell: the delivered file put back, or a reused inode.
            let unsure =
                same && matches!(
                    row.outcome,
                    Some(SourceOutcome::Gone | SourceOutcome::Replaced)
                ) && (row.birth_ns.is_none() || file.birth_ns.is_none());
            match row.state {
                State::Pending | State::Active => {
                    // A row whose earlier attempt may have put the old version in S3 keeps
                    // the old version's stamp: its next attempt sees the change and asks
                    // HEAD what is under its key before anything else (a delivered old
                    // version must stay delivered, and the new one get a row of its own).
                    if row.state == State::Pending && row.stamp != file.stamp && !row.maybe_sent {
                        restamp(tx, row.id, file, now_ms)?;
                    }
                    return Ok(Registered::AlreadyQueued(row.id));
                }
                State::Failed if same && row.vanished => {
                    follow(tx, row.id, file, None, now_ms, true)?;
                    return Ok(Registered::Followed(row.id));
                }
                State::Failed if same => return Ok(Registered::AlreadyQueued(row.id)),
                State::Failed => superseded = Some(row.id),
                // A file we did not touch when cleaning up (gone or replaced then) is taken for
                // the delivered one only on a birth time that says so: without one, an inode
                // reused with the same size and mtime would be deleted without upload. (In a
                // spool that keeps files, nothing is deleted: the content decides, below.)
                _ if unsure && !rules.keeps => {}
                // A kept file with another inode (or birth time) but the same size and
                // mtime: restored, copied back, or on a mount whose inodes change. Its
                // content decides.
                _ if (!same || unsure)
                    && row.stamp.alike(file.stamp)
                    && kept_then(row.finished_at.is_some(), row.outcome, rules.keeps) =>
                {
                    match (&file.sha256, &row.source_sha256) {
                        (None, Some(_)) => return Ok(Registered::Lookalike(row.id)),
                        (Some(now), Some(then)) if now == then => {
                            tx.prepare_cached(
                                "UPDATE sources SET inode = ?2, birth_ns = ?3, outcome = 'kept'
                                 WHERE id = (SELECT source_id FROM files
                                             WHERE id = ?1 AND state = 'done')",
                            )?
                            .execute(params![
                                row.id,
                                file.stamp.inode as i64,
                                file.birth_ns
                            ])?;
                            return Ok(Registered::Restored(row.id));
                        }
                        // Other content, or none recorded to compare with: a new file.
                        _ => {}
                    }
                }
                _ if same => {
                    // None: a lookalike after a delete or archive, so a new file.
                    let finished = row.finished_at.is_some();
                    if let Some(decided) = decide_done(finished, row.outcome, rules.keeps) {
                        let decided = decided(row.id);
                        if finished && matches!(decided, Registered::AlreadyDone(_)) {
                            // Finished before (kept, or not there then): the finisher takes
                            // unfinished rows, so it is one again.
                            found_done(tx, row.id, file, true)?;
                        }
                        return Ok(decided);
                    }
                    // Seen before its clean-up deleted or archived it (a rescan walking
                    // while the finisher ran): the file seen is gone, not a new one.
                    if row.finished_at.is_some_and(|at| file.seen_at_ms <= at) {
                        return Ok(Registered::CleanedUpSince(row.id));
                    }
                }
                _ => {}
            }
        }
        if let Some(moved) = self.moved_here(file, superseded)? {
            return Ok(moved);
        }
        self.insert(file, superseded)
    }

    /// The file as the moved file of a row at another path, if it is one (see the module doc).
    fn moved_here(
        &mut self,
        file: &NewFile,
        superseded: Option<i64>,
    ) -> rusqlite::Result<Option<Registered>> {
        let (tx, rules, now_ms) = (self.tx, self.rules, self.now_ms);
        let found = tx
            .prepare_cached(ELSEWHERE)?
            .query_row(
                params![
                    file.spool,
                    file.stamp.inode as i64,
                    file.stamp.size as i64,
                    file.stamp.mtime_ns,
                    file.rel_path,
                    file.birth_ns
                ],
                Elsewhere::from_row,
            )
            .optional()?;
        // Else a row that failed because its file vanished, with this file's size and
        // mtime: the file may be that one, restored with another inode (`cp -a`) and moved
        // while its row was tried. Following it is safe either way: the row asks HEAD
        // before it sends again, so an object an earlier try stored is found, and one
        // holding other bytes stays delivered while this file gets a row of its own.
        let (row, likeness) = match found {
            Some(row) => (row, Likeness::Exact),
            None => match self.vanished_alike(file)? {
                Some(row) => (row, Likeness::SizeAndMtime),
                None => return self.kept_elsewhere(file),
            },
        };
        if !(self.moved_from)(&row.path, file.stamp, likeness) {
            return match likeness {
                // A second name of the same file (a hard link): a file of its own.
                Likeness::Exact => Ok(None),
                // A copy of a file still where it was.
                Likeness::SizeAndMtime => self.kept_elsewhere(file),
            };
        }
        match row.state {
            State::Active => Ok(Some(Registered::AlreadyQueued(row.id))),
            State::Done => {
                let Some(decided) = decide_done(row.finished, row.outcome, rules.keeps) else {
                    return Ok(None);
                };
                let decided = decided(row.id);
                // The row follows the file, so the clean-up (and a restart's repair of one cut
                // off, and purge) look for it where it is now.
                found_done(
                    tx,
                    row.id,
                    file,
                    matches!(decided, Registered::AlreadyDone(_)),
                )?;
                Ok(Some(decided))
            }
            _ => {
                // Waiting, or failed because it vanished. Following keeps one row per file; it
                // must not put two files under one key (a new file at the old path would get
                // the old key again), nor lose track of an object an earlier try may have
                // put under the old key.
                // A row that failed for another reason stays failed where its file is now:
                // its tries may have put the file in S3 (a lost answer, then an outage),
                // and only its retry asks HEAD; a row of its own would send it again.
                let stays_failed = row.state == State::Failed && !row.vanished;
                // The file's first route: a source has one delivery until the decisions
                // look at each delivery of a source (fan-out, C5).
                let route = self.routes[0].clone();
                let rendered = (self.render_key)(file, &route, row.id).ok();
                // Some(new key, or None to keep the old one) when the row may follow.
                let follows = match rendered {
                    // Never tried: nothing can be under the old key.
                    Some(key) if !row.claimed => Some(Some(key)),
                    // Tried: the old key, where no other file can ever go, or which is the same.
                    Some(key) if row.key.as_deref() == Some(key.as_str()) => Some(None),
                    _ if route.unique_keys && row.claimed => Some(None),
                    _ => None,
                };
                if let Some(key) = follows {
                    follow(tx, row.id, file, key, now_ms, !stays_failed)?;
                    if likeness == Likeness::SizeAndMtime {
                        // Another inode (a restore): the row is this file's now, so its
                        // clean-up and rescans know it as the row's.
                        tx.prepare_cached(
                            "UPDATE sources SET inode = ?2, birth_ns = ?3
                             WHERE id = (SELECT source_id FROM files WHERE id = ?1)",
                        )?
                        .execute(params![
                            row.id,
                            file.stamp.inode as i64,
                            file.birth_ns
                        ])?;
                    }
                    if let Some(old) = superseded {
                        supersede(tx, old, row.id)?;
                    }
                    return Ok(Some(if stays_failed {
                        Registered::FollowedFailed(row.id)
                    } else {
                        Registered::Followed(row.id)
                    }));
                }
                let new = self.insert(file, superseded)?;
                if let Registered::Queued(id) | Registered::Refused(id) = new {
                    tx.prepare_cached(
                    // Its upload, if any, is no row's now: the daemon aborts it.
                    "INSERT OR IGNORE INTO abandoned_uploads (upload_id, destination, bucket, key)
                     SELECT upload_id, destination, bucket, key FROM files
                     WHERE id = ?1 AND upload_id IS NOT NULL AND key IS NOT NULL",
                )?
                .execute([row.id])?;
                    tx.prepare_cached(
                    "UPDATE files SET state = 'failed', superseded_by = ?2, updated_at = ?3,
                         failure = 'moved',
                         upload_id = NULL, part_size = NULL,
                         last_error = 'moved inside the spool before its upload ended; the file is row ' || ?2
                     WHERE id = ?1 AND state IN ('pending', 'failed')",
                )?
                .execute(params![row.id, id, now_ms])?;
                    tx.prepare_cached("DELETE FROM parts WHERE file_id = ?1")?
                        .execute([row.id])?;
                }
                Ok(Some(new))
            }
        }
    }

    /// The newest row of the spool that failed because its file vanished, with `file`'s
    /// size and mtime at another path.
    fn vanished_alike(&mut self, file: &NewFile) -> rusqlite::Result<Option<Elsewhere>> {
        self.tx
            .prepare_cached(VANISHED_ALIKE)?
            .query_row(
                params![
                    file.spool,
                    file.stamp.size as i64,
                    file.stamp.mtime_ns,
                    file.rel_path
                ],
                Elsewhere::from_row,
            )
            .optional()
    }

    /// In a spool that keeps its files: the file as a kept file restored with another
    /// inode (`cp -a` out and back) and moved inside the spool before a rescan saw it at
    /// its old path. Only the content tells: a kept row of the same size and mtime whose
    /// path holds no file of that size and mtime any more (whatever its inode: a restore
    /// leaves every kept row's inode out of date), with the same SHA-256 (hashed first, as
    /// for a [`Registered::Lookalike`] at the row's own path), is this file.
    fn kept_elsewhere(&mut self, file: &NewFile) -> rusqlite::Result<Option<Registered>> {
        if !self.rules.keeps {
            return Ok(None);
        }
        let candidates: Vec<(i64, PathBuf, FileStamp, String)> = self
            .tx
            .prepare_cached(KEPT_ELSEWHERE)?
            .query_map(
                params![
                    file.spool,
                    file.stamp.size as i64,
                    file.stamp.mtime_ns,
                    file.rel_path
                ],
                |r| {
                    let (id, path, stamp) = alike_row(r)?;
                    Ok((id, path, stamp, r.get(5)?))
                },
            )?
            .collect::<rusqlite::Result<_>>()?;
        // A row of the same size and mtime still waiting, in flight or not cleaned up yet,
        // whose file is no longer at its path: this may be that file, restored and moved
        // while its upload ran. Decided once that row is finished (the next look hashes
        // it against it).
        for query in [IN_FLIGHT_ALIKE, UNFINISHED_ALIKE] {
            let in_flight: Option<(i64, PathBuf, FileStamp)> = self
                .tx
                .prepare_cached(query)?
                .query_row(
                    params![
                        file.spool,
                        file.stamp.size as i64,
                        file.stamp.mtime_ns,
                        file.rel_path
                    ],
                    alike_row,
                )
                .optional()?;
            if let Some((id, path, stamp)) = in_flight {
                if (self.moved_from)(&path, stamp, Likeness::SizeAndMtime) {
                    return Ok(Some(Registered::AlreadyQueued(id)));
                }
            }
        }
        // A kept file still at its path makes this one a copy of it, a file of its own.
        let gone = candidates
            .into_iter()
            .filter(|(_, path, stamp, _)| (self.moved_from)(path, *stamp, Likeness::SizeAndMtime));
        let mut lookalike = None;
        for (id, _, _, kept_sha256) in gone {
            match &file.sha256 {
                None => {
                    lookalike = Some(id);
                    break;
                }
                Some(now) if *now == kept_sha256 => {
                    let restored = self
                        .tx
                        .prepare_cached(
                            "UPDATE files SET updated_at = ?2 WHERE id = ?1 AND state = 'done'",
                        )?
                        .execute(params![id, self.now_ms])?;
                    if restored > 0 {
                        self.tx
                            .prepare_cached(
                                "UPDATE sources SET rel_path = ?2, path = ?3, inode = ?4,
                                     birth_ns = ?5, outcome = 'kept'
                                 WHERE id = (SELECT source_id FROM files WHERE id = ?1)",
                            )?
                            .execute(params![
                                id,
                                file.rel_path,
                                file.path.to_string_lossy(),
                                file.stamp.inode as i64,
                                file.birth_ns
                            ])?;
                    }
                    return Ok(Some(Registered::Restored(id)));
                }
                Some(_) => {}
            }
        }
        Ok(lookalike.map(Registered::Lookalike))
    }

    /// A new row for the file, with its key rendered now (or refused with the reason).
    /// The row's id is known before it is written (the table's AUTOINCREMENT sequence, in
    /// this transaction), so the key goes in with the row: one statement, not two.
    fn insert(&mut self, file: &NewFile, superseded: Option<i64>) -> rusqlite::Result<Registered> {
        let (tx, now_ms) = (self.tx, self.now_ms);
        let id: i64 = tx
            .prepare_cached(
                "SELECT max(IFNULL((SELECT seq FROM sqlite_sequence WHERE name = 'files'), 0),
                            IFNULL((SELECT max(id) FROM files), 0)) + 1",
            )?
            .query_row([], |r| r.get(0))?;
        let deliveries = self.routes.len() as i64;
        // The source first (its id is its first delivery's), with every delivery
        // unsettled: waiting, or failed with a key refused. Its deliveries take the ids
        // that follow, in this transaction (nothing else inserts meanwhile): the triggers
        // and readers find them by that range.
        tx.prepare_cached(
            "INSERT OR FAIL INTO sources (id, spool, rel_path, path, size, mtime_ns, inode,
                 birth_ns, queued_at, unsettled, deliveries)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
        )?
        .execute(params![
            id,
            file.spool,
            file.rel_path,
            file.path.to_string_lossy(),
            file.stamp.size as i64,
            file.stamp.mtime_ns,
            file.stamp.inode as i64,
            file.birth_ns,
            now_ms,
            deliveries,
        ])?;
        let mut sent = false;
        for (k, route) in self.routes.iter().enumerate() {
            let delivery = id + k as i64;
            let (key, refusal) = match (self.render_key)(file, route, delivery) {
                Ok(key) => (Some(key), None),
                Err(reason) => (None, Some(reason)),
            };
            sent |= refusal.is_none();
            tx.prepare_cached(
                "INSERT OR FAIL INTO files (id, spool, rel_path, path, destination, bucket, state,
                     size, mtime_ns, inode, birth_ns, next_attempt_at, queued_at, updated_at, key,
                     last_error, failure, source_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, IIF(?12 IS NULL, 'pending', 'failed'), ?7, ?8,
                         ?9, ?10, ?11, ?11, ?11, ?13, ?12, IIF(?12 IS NULL, NULL, 'refused'), ?14)",
            )?
            .execute(params![
                delivery,
                file.spool,
                file.rel_path,
                file.path.to_string_lossy(),
                route.destination,
                route.bucket,
                file.stamp.size as i64,
                file.stamp.mtime_ns,
                file.stamp.inode as i64,
                file.birth_ns,
                now_ms,
                refusal,
                key,
                id,
            ])?;
        }
        if let Some(old) = superseded {
            supersede(tx, old, id)?;
        }
        Ok(if sent {
            Registered::Queued(id)
        } else {
            Registered::Refused(id)
        })
    }
}

/// A `done` row found for the file: it now records the file's path, and with `unfinish`,
/// its clean-up is to be done (again).
fn found_done(tx: &Connection, id: i64, file: &NewFile, unfinish: bool) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE sources SET rel_path = ?2, path = ?3,
             finished_at = CASE WHEN ?4 THEN NULL ELSE finished_at END,
             outcome = CASE WHEN ?4 THEN NULL ELSE outcome END
         WHERE id = (SELECT source_id FROM files WHERE id = ?1 AND state = 'done')",
    )?
    .execute(params![
        id,
        file.rel_path,
        file.path.to_string_lossy(),
        unfinish
    ])?;
    Ok(())
}

/// The row follows its file to where it is now. With `requeue`, it waits again (a row
/// waiting, or failed because its file vanished); without, a row that failed for another
/// reason stays failed (`retry` sends it from there, asking HEAD first if a try may have
/// stored it).
fn follow(
    tx: &Connection,
    id: i64,
    file: &NewFile,
    key: Option<String>,
    now_ms: i64,
    requeue: bool,
) -> rusqlite::Result<()> {
    let followed = tx
        .prepare_cached(
            "UPDATE files SET key = COALESCE(?3, key), updated_at = ?2,
             state = IIF(?4, 'pending', state),
             next_attempt_at = IIF(?4, MIN(next_attempt_at, ?2), next_attempt_at),
             last_error = CASE WHEN ?4 AND state = 'failed'
                               THEN 'its file was found again; queued again'
                               ELSE last_error END,
             failure = IIF(?4, NULL, failure)
         WHERE id = ?1 AND state IN ('pending', 'failed')",
        )?
        .execute(params![id, now_ms, key, requeue])?;
    if followed > 0 {
        tx.prepare_cached(
            "UPDATE sources SET rel_path = ?2, path = ?3
             WHERE id = (SELECT source_id FROM files WHERE id = ?1)",
        )?
        .execute(params![id, file.rel_path, file.path.to_string_lossy()])?;
    }
    Ok(())
}

fn supersede(tx: &Connection, old: i64, by: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE files SET superseded_by = ?2 WHERE id = ?1 AND state = 'failed'")?
        .execute(params![old, by])?;
    Ok(())
}

/// The file was rewritten before its upload: an upload started for the old bytes must not
/// be resumed with the new ones. Its record goes, and the daemon aborts the upload.
fn restamp(tx: &Connection, id: i64, file: &NewFile, now_ms: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO abandoned_uploads (upload_id, destination, bucket, key)
         SELECT upload_id, destination, bucket, key FROM files
         WHERE id = ?1 AND state = 'pending' AND upload_id IS NOT NULL AND key IS NOT NULL
           AND (size != ?2 OR mtime_ns != ?3 OR inode != ?4)",
    )?
    .execute(params![
        id,
        file.stamp.size as i64,
        file.stamp.mtime_ns,
        file.stamp.inode as i64
    ])?;
    let changed = tx
        .prepare_cached(
            "UPDATE files SET updated_at = ?2, upload_id = NULL, part_size = NULL, sha256 = NULL
             WHERE id = ?1 AND state = 'pending'",
        )?
        .execute(params![id, now_ms])?;
    if changed > 0 {
        tx.prepare_cached(
            "UPDATE sources SET size = ?2, mtime_ns = ?3, inode = ?4, birth_ns = ?5
             WHERE id = (SELECT source_id FROM files WHERE id = ?1)",
        )?
        .execute(params![
            id,
            file.stamp.size as i64,
            file.stamp.mtime_ns,
            file.stamp.inode as i64,
            file.birth_ns
        ])?;
        tx.prepare_cached("DELETE FROM parts WHERE file_id = ?1")?
            .execute([id])?;
    }
    Ok(())
}

/// The first columns of the lookups of rows alike (`id, path, size, mtime_ns, inode`).
fn alike_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, PathBuf, FileStamp)> {
    Ok((
        r.get(0)?,
        PathBuf::from(r.get::<_, String>(1)?),
        FileStamp::from_columns(r, 2)?,
    ))
}

/// Birth times tell two files apart only where both are known.
fn same_birth(a: Option<i64>, b: Option<i64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// Whether a done row's file is (or was, when it was finished) a kept file, in a spool
/// that keeps files: not finished yet (just delivered: a restore may have landed while
/// its upload ran), kept then, or not found as it was at its path then (taken away
/// while its upload ran, or already put back with another inode). A file alike found
/// later is that file if its content says so.
fn kept_then(finished: bool, outcome: Option<SourceOutcome>, keeps: bool) -> bool {
    keeps
        && (!finished
            || matches!(
                outcome,
                None | Some(SourceOutcome::Kept | SourceOutcome::Gone | SourceOutcome::Replaced)
            ))
}

/// What a file matching a `done` row is, from how the row's source was finished:
/// `None` when it is a new file that merely looks the same.
fn decide_done(
    finished: bool,
    outcome: Option<SourceOutcome>,
    keeps: bool,
) -> Option<fn(i64) -> Registered> {
    if !finished {
        return Some(Registered::AlreadyDone);
    }
    match outcome {
        // Kept when it was delivered: still kept, or cleaned up now that the spool no
        // longer keeps files. Never uploaded again.
        Some(SourceOutcome::Kept) if keeps => Some(Registered::Kept),
        Some(SourceOutcome::Kept) => Some(Registered::AlreadyDone),
        // Finished before outcomes were recorded (and not backfilled): today's config.
        None if keeps => Some(Registered::Kept),
        // Not touched then (it was not where it had been): it is the delivered file.
        Some(SourceOutcome::Gone | SourceOutcome::Replaced) => Some(Registered::AlreadyDone),
        _ => None,
    }
}
