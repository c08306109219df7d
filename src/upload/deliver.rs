//! Delivering one claimed file: check it is the file that was queued, upload it (or find
//! it already delivered), check it did not change meanwhile, record the outcome, and hand
//! a delivered row to the finisher (`after_upload`).
//!
//! Order matters for crash safety: object confirmed → row `done` (committed) → source
//! deleted/moved (by the finisher, from the queue). A crash between the first two is
//! repaired by the next attempt finding the object in place (HEAD, see [`super::earlier`])
//! instead of sending it again; a crash between the last two by the finisher's first
//! pass at the next start. An attempt that may have made the object without hearing so
//! (a lost answer, a stop, a crash) leaves `maybe_sent` on its row, written by whatever
//! transition puts the row back.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::earlier::{self, AtKey};
use super::error::TransferError;
use super::job::{Job, Uploaded};
use super::transfer;
use super::window::WindowCheck;
use super::{Uploader, LEASE};
use crate::beneath::{self, Root};
use crate::clock::now_ms;
use crate::key::PathParts;
use crate::queue::{
    Batching, Done, Ended, Failure, FileRow, FileStamp, NewFile, Queue, SpoolRules,
};
use crate::s3::{ErrorClass, ObjectHead};
use crate::transcode::{self, Output};

/// Tries to write one outcome to the queue before leaving the row to lease expiry.
const RECORD_TRIES: u32 = 6;
/// How long a row of a stopped spool (its folder replaced) waits before it is looked at
/// again; the dispatcher claims none of its rows meanwhile.
const STOPPED_SPOOL_WAIT: i64 = 30_000;

/// How one delivery attempt ended.
pub(super) enum Outcome {
    /// S3 holds the object, and the file did not change while it was read.
    Delivered(Delivery),
    /// Under the row's key, S3 holds an object this row wrote of an earlier version of
    /// the file (its answer was lost, then the file was replaced): that version was
    /// delivered. The file now at the path, stamped `current`, is a new file.
    EarlierDelivered {
        delivery: Delivery,
        current: FileStamp,
    },
    /// The file is not as queued (still being written, or rewritten).
    Changed { stamp: FileStamp },
    /// Not delivered: retried, held back (when the destination may fail for every file,
    /// see [`TransferError::hold_cause`]), failed, or (a lost claim) left alone.
    Failed(TransferError),
}

/// A delivered object, as the queue records it.
pub struct Delivery {
    pub uploaded: Uploaded,
    /// The source's SHA-256 (what a kept file found again is compared with).
    pub source_sha256: Option<String>,
    /// Bytes of the object (of the work file when converted).
    pub size: u64,
    /// Data rows, when a table was converted.
    pub rows: Option<u64>,
}

/// An attempt's outcome, and whether it may have made the object unheard (see
/// [`super::job::Job::making`]).
pub(super) struct Attempted {
    pub outcome: Outcome,
    pub maybe_sent: bool,
}

impl From<Outcome> for Attempted {
    /// An outcome reached before anything that makes the object was sent.
    fn from(outcome: Outcome) -> Attempted {
        Attempted {
            outcome,
            maybe_sent: false,
        }
    }
}

impl Uploader {
    pub async fn deliver(&self, row: FileRow) {
        let started = std::time::Instant::now();
        let Attempted {
            outcome,
            maybe_sent,
        } = self.with_lease(&row, self.attempt(&row)).await;
        let ended = Ended {
            id: row.id,
            claim: row.claim,
            maybe_sent,
        };
        // Made again, byte for byte, by any later attempt: no need to keep it.
        if self
            .spools
            .get(&row.spool)
            .is_some_and(|s| s.only_route().output.converts())
        {
            transcode::remove_work(&self.state_dir, row.id, row.claim);
        }
        let id = row.id;
        let held = matches!(&outcome, Outcome::Failed(e) if e.hold_cause().is_some());
        if !held
            && !matches!(
                outcome,
                Outcome::Delivered(_) | Outcome::EarlierDelivered { .. }
            )
        {
            // If this was a blocked destination's probe, it told nothing: probe again.
            self.pressure.probe_unused(&row.destination);
        }
        match outcome {
            Outcome::Delivered(delivery) => self.delivered(&row, delivery, None, started).await,
            Outcome::EarlierDelivered { delivery, current } => {
                self.delivered(&row, delivery, Some(current), started).await
            }
            Outcome::Changed { stamp } => {
                let settle = self
                    .spools
                    .get(&row.spool)
                    .map_or(Duration::from_secs(5), |s| s.settle);
                let next = settle.as_millis() as i64;
                tracing::info!(spool = %row.spool, id, path = %row.rel_path, "source changed; uploading it again once it settles");
                // The new file's birth time, so a later move of it is still recognised.
                let root = self.roots.get(&row.spool).cloned();
                let rel = row.rel_path.clone();
                let birth =
                    tokio::task::spawn_blocking(move || birth_at(root?.as_ref(), &rel, stamp))
                        .await
                        .unwrap_or(None);
                self.record(id, move |q, now| {
                    q.requeue_changed(ended, stamp, birth, now + next, now)
                })
                .await;
            }
            Outcome::Failed(TransferError::SpoolStopped(moved)) => {
                // Touching nothing: the row waits, its attempt not counted, until the
                // folder is back or a reload fixes the config.
                let reason = moved.to_string();
                self.record(id, move |q, now| {
                    q.release(ended, &reason, now + STOPPED_SPOOL_WAIT, now)
                })
                .await;
            }
            Outcome::Failed(TransferError::OutsideWindow) => {
                tracing::info!(spool = %row.spool, id, path = %row.rel_path,
                    "delivery window closed: the upload stopped after its parts in flight, and goes on from there when the window opens");
                self.record(id, move |q, now| q.pause_for_window(ended, now))
                    .await;
            }
            Outcome::Failed(TransferError::ClaimLost) => {
                tracing::warn!(spool = %row.spool, id, path = %row.rel_path, "this worker lost the row (lease ran out); another attempt owns it");
            }
            Outcome::Failed(e) => {
                let Some(cause) = e.hold_cause() else {
                    return self
                        .after_error(&row, ended, e.to_string(), e.class(), e.failure())
                        .await;
                };
                let error = e.to_string();
                let current = self.targets.get(&row.destination).map(|t| t.store.bucket());
                if !cause.is_silence() && current.is_some_and(|b| b != row.bucket) {
                    // The bucket a reload replaced failing says nothing of the one in use:
                    // holding the destination back would stall its other files for it.
                    let reason = format!(
                        "{error} (in bucket {}, which this file was queued for before a reload changed the destination's bucket)",
                        row.bucket
                    );
                    // As a probe of the destination's bucket in use, it told nothing.
                    self.pressure.probe_unused(&row.destination);
                    self.after_error(&row, ended, reason, ErrorClass::Permanent, Failure::Refused)
                        .await
                } else {
                    self.hold_back(&row, ended, error, cause).await
                }
            }
        }
    }

    /// Records a delivery: the row is done, in its spool's manifest batch if it has one.
    /// With `later`, what was delivered is an earlier version of the file, and the file
    /// now at the path (stamped `later`) is queued in the same commit as a new row.
    async fn delivered(
        &self,
        row: &FileRow,
        delivery: Delivery,
        later: Option<FileStamp>,
        started: std::time::Instant,
    ) {
        let (id, claim) = (row.id, row.claim);
        let uploaded = &delivery.uploaded;
        let spool = self.spools.get(&row.spool);
        let done = Done {
            etag: uploaded.etag.clone(),
            sha256: uploaded.sha256.clone(),
            source_sha256: delivery.source_sha256.clone(),
            object_size: delivery.size,
            rows: delivery.rows,
            format: spool.map_or_else(|| "raw".to_string(), |s| s.only_route().output.name()),
        };
        let batching = spool
            .and_then(|s| s.only_route().manifest.as_ref())
            .map(|m| Batching {
                max_files: m.max_files,
                host: self.host.to_string(),
            });
        let done = match later.and_then(|stamp| self.later_version(row, stamp)) {
            None => {
                self.record(id, move |q, now| {
                    q.mark_done(id, claim, &done, batching.as_ref(), now)
                })
                .await
            }
            Some(later) => {
                let ended = Ended::unsent(id, claim);
                let (file, rules, keys) = later;
                let registered = Arc::new(std::sync::Mutex::new(None));
                let noted = Arc::clone(&registered);
                let applied = self
                    .record(id, move |q, now| {
                        let made = q.mark_earlier_delivered(
                            ended,
                            &done,
                            batching.as_ref(),
                            (&file, rules),
                            now,
                            |file, new_id| keys(file, new_id, now),
                        )?;
                        let applied = made.is_some();
                        *noted.lock().unwrap_or_else(|p| p.into_inner()) = made;
                        Ok(applied)
                    })
                    .await;
                let registered = registered.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(new) = registered {
                    tracing::info!(spool = %row.spool, id, path = %row.rel_path, queued = ?new,
                        "an earlier version of this file was delivered (its answer was lost); the file now at its path is queued as a new file");
                    self.wake.notify_one();
                }
                applied
            }
        };
        if done {
            self.heartbeat.delivered();
            self.reopened(&row.destination).await;
        } else {
            // The outcome was not recorded: as a probe, it told nothing.
            self.pressure.probe_unused(&row.destination);
        }
        if done {
            self.metrics.delivered(
                &row.spool,
                &row.destination,
                delivery.size,
                started.elapsed(),
                now_ms(),
            );
            let how = match (uploaded.sent, later.is_some()) {
                (true, _) => "uploaded",
                (false, false) => "found already uploaded",
                (false, true) => "earlier version found uploaded",
            };
            tracing::info!(spool = %row.spool, id, key = row.key.as_deref().unwrap_or(""),
                bytes = row.stamp.size, ms = started.elapsed().as_millis() as u64, how, "delivered");
            self.finisher.notify_one();
        }
    }

    /// The file now at the row's path (stamped `stamp`) as a new file of the row's spool,
    /// with the spool's rules and how its key is made; `None` if the spool or its
    /// destination left the config (a rescan of the spool, once back, queues it).
    #[allow(clippy::type_complexity)]
    fn later_version(
        &self,
        row: &FileRow,
        stamp: FileStamp,
    ) -> Option<(
        NewFile,
        SpoolRules,
        impl Fn(&NewFile, i64, i64) -> Result<String, String> + Send + Sync + 'static,
    )> {
        let spool = Arc::clone(self.spools.get(&row.spool)?);
        let bound = Arc::clone(self.bounds.get(&spool.only_route().destination)?);
        let root = self.roots.get(&row.spool)?;
        let file = NewFile {
            spool: row.spool.clone(),
            rel_path: row.rel_path.clone(),
            path: row.path.clone(),
            destination: bound.destination.clone(),
            bucket: bound.bucket.clone(),
            stamp,
            birth_ns: birth_at(root, &row.rel_path, stamp),
            seen_at_ms: crate::clock::now_ms(),
            sha256: None,
        };
        let rules = SpoolRules {
            keeps: spool.after_upload == crate::config::AfterUpload::Keep,
            unique_keys: spool.only_route().key.unique_per_row(),
        };
        let host = Arc::clone(&self.host);
        let keys = move |file: &NewFile, id: i64, now: i64| {
            let time = chrono::DateTime::from_timestamp_millis(now).unwrap_or_default();
            spool.only_route().object_key(
                &spool.name,
                &bound.prefix,
                &host,
                &file.rel_path,
                id,
                time,
            )
        };
        Some((file, rules, keys))
    }

    /// Runs `work` while renewing the row's lease, so a long upload is never taken back.
    /// If the row is no longer this worker's, the work stops where it is.
    async fn with_lease(
        &self,
        row: &FileRow,
        work: impl std::future::Future<Output = Attempted>,
    ) -> Attempted {
        let (id, claim) = (row.id, row.claim);
        let renew = async {
            loop {
                tokio::time::sleep(LEASE / 4).await;
                let until = now_ms() + LEASE.as_millis() as i64;
                match self
                    .queue
                    .call(move |q| q.renew_lease(id, claim, until))
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => tracing::warn!(id, error = %e, "cannot renew a lease"),
                }
            }
        };
        tokio::select! {
            attempted = work => attempted,
            // Whatever was sent, the row is another worker's now: nothing is recorded.
            () = renew => Outcome::Failed(TransferError::ClaimLost).into(),
        }
    }

    /// Writes a delivery outcome to the queue. The write is idempotent (guarded by the row's
    /// state and claim), so a failed write is retried for a while rather than leaving the
    /// row `active` until its lease runs out. Returns whether the transition applied.
    pub(super) async fn record<F>(&self, id: i64, transition: F) -> bool
    where
        F: Fn(&mut Queue, i64) -> crate::queue::Result<bool> + Send + Sync + 'static,
    {
        let transition = Arc::new(transition);
        let mut wait = Duration::from_millis(200);
        for attempt in 1..=RECORD_TRIES {
            let t = Arc::clone(&transition);
            match self.queue.grouped(move |q| t(q, now_ms())).await {
                Ok(applied) => {
                    if !applied {
                        tracing::warn!(
                            id,
                            "queue row is no longer held by this worker; outcome not recorded"
                        );
                    }
                    return applied;
                }
                Err(e) if attempt < RECORD_TRIES => {
                    tracing::warn!(id, error = %e, "cannot record a delivery outcome; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    tracing::error!(id, error = %e, "cannot record a delivery outcome; the row returns to pending when its lease runs out");
                }
            }
        }
        false
    }

    async fn attempt(&self, row: &FileRow) -> Attempted {
        let refused = |reason: String| Outcome::Failed(TransferError::Refused(reason)).into();
        let Some(key) = row.key.as_deref() else {
            return refused("the row has no object key".into());
        };
        if !self.spools.contains_key(&row.spool) {
            return refused(format!("spool {:?} is no longer in the config", row.spool));
        }
        let Some(target) = self.targets.get(&row.destination) else {
            return refused(format!(
                "destination {:?} is no longer in the config",
                row.destination
            ));
        };
        // Its spool's folder, held open, as it was when the row was queued: a reload that
        // gave the spool another folder left this row to the old one.
        let Some(root) = self
            .roots
            .get(&row.spool)
            .filter(|root| {
                beneath::root_of(&row.path, &row.rel_path).as_deref() == Some(root.path())
            })
            .cloned()
        else {
            return refused(format!(
                "the file was queued from {}, which is no longer spools.{}.path",
                row.path.display(),
                row.spool
            ));
        };
        let rel = row.rel_path.clone();
        let opened = tokio::task::spawn_blocking(move || {
            root.check()?;
            Ok(open_source(&root, &rel))
        })
        .await;
        let (file, before) = match opened {
            Ok(Ok(Ok(opened))) => opened,
            Ok(Ok(Err(e))) => return Outcome::Failed(open_error(&row.path, &e)).into(),
            Ok(Err(moved)) => return Outcome::Failed(TransferError::SpoolStopped(moved)).into(),
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        };
        let file = Arc::new(file);
        let output = self
            .spools
            .get(&row.spool)
            .map_or_else(Output::default, |s| s.only_route().output.clone());
        let writer = self.queue.writer_of(row.id);
        // An upload recorded for the row, of the file as queued, is asked about by
        // resuming it (ListParts, then HEAD if S3 no longer knows it).
        if row.maybe_sent && (row.upload_id.is_none() || before != row.stamp) {
            let found =
                earlier::look(target, row, &writer, &file, before.size, &self.source_tags).await;
            match found {
                Err(e) => return Outcome::Failed(e).into(),
                Ok((AtKey::Same(head), sha256)) if before == row.stamp => {
                    // Made as the object says it was, whatever the spool's format is now.
                    let converted = earlier::converted(&head);
                    let source_sha256 = Some(sha256.clone());
                    // A converted object without its own SHA-256 (sent in parts and read
                    // once) has the one its row recorded before completing, never the
                    // source's: that would be wrong, and tell an encrypted file's content.
                    let object_sha256 = if converted {
                        row.sha256.clone().unwrap_or_default()
                    } else {
                        sha256
                    };
                    return Outcome::Delivered(found_delivery(
                        head,
                        object_sha256,
                        source_sha256,
                        converted,
                    ))
                    .into();
                }
                Ok((AtKey::Earlier(head), _)) => {
                    // An encrypted object's source is told by its tag alone: unknown here.
                    let converted = earlier::converted(&head);
                    let recorded = (!converted).then(|| row.sha256.clone()).flatten();
                    let sha256 = head.sha256.clone().or(recorded).unwrap_or_default();
                    let source_sha256 = if converted {
                        head.source_sha256.clone()
                    } else {
                        Some(sha256.clone())
                    };
                    return Outcome::EarlierDelivered {
                        delivery: found_delivery(head, sha256, source_sha256, true),
                        current: before,
                    }
                    .into();
                }
                // Nothing this row made of any version, or the file itself after a change
                // of its stamp alone: the row takes the new stamp first (below).
                Ok(_) => {}
            }
        }
        if before != row.stamp {
            // Rewritten since it was queued: an upload of the old version is of no use.
            self.abort_recorded_upload(row).await;
            return Outcome::Changed { stamp: before }.into();
        }
        let source_ext = PathParts::of(&row.rel_path).ext;
        let (upload, upload_stamp, rows, source_sha256) = if output.converts() {
            match self.convert(row, &output, &file, before).await {
                Ok(converted) => converted,
                Err(outcome) => return outcome.into(),
            }
        } else {
            (Arc::clone(&file), before, None, None)
        };
        if upload_stamp.size > crate::s3::MAX_OBJECT_SIZE {
            // Refused before a byte is read: S3 would take every part, then refuse the end.
            return refused(format!(
                "the object would be {} bytes, over S3's largest object (5TiB): split the file",
                upload_stamp.size
            ));
        }
        let job = Job {
            target,
            store: target.store_for(&row.bucket),
            queue: &self.queue,
            row,
            key,
            file: upload,
            stamp: upload_stamp,
            content_type: output.content_type(source_ext),
            remade: output.converts(),
            // An encrypted object carries its source's keyed hash, never the hash itself.
            source_sha256: source_sha256
                .clone()
                .filter(|_| output.encrypt_to.is_none()),
            source_tag: source_sha256
                .as_deref()
                .filter(|_| output.encrypt_to.is_some())
                .map(|sha| self.source_tags.of(sha)),
            written_by: writer,
            unanswered: Default::default(),
            // A converted file is made again by the next attempt, and its parts can be
            // reused only if the new bytes are the same: stopping it at a window's end
            // could start it over at every window, and it would never arrive. It
            // finishes instead.
            window: match self.spools.get(&row.spool) {
                Some(spool) if !output.converts() => {
                    WindowCheck::new(spool.only_route().windows(), row.rushed)
                }
                _ => WindowCheck::always(),
            },
        };
        let uploaded = transfer::upload(&job).await;
        let maybe_sent = job.maybe_sent();
        // Did the file we uploaded change meanwhile? Asked of the open descriptor: a new
        // file renamed over the path is another file (queued on its own, with its own row),
        // and the one uploaded was complete.
        let after =
            tokio::task::spawn_blocking(move || file.metadata().map(|m| FileStamp::of(&m))).await;
        let outcome = match (uploaded, after) {
            (_, Ok(Ok(stamp))) if stamp != before => {
                self.abort_recorded_upload(row).await;
                Outcome::Changed { stamp }
            }
            (Ok(uploaded), _) => Outcome::Delivered(Delivery {
                source_sha256: source_sha256.or_else(|| Some(uploaded.sha256.clone())),
                uploaded,
                size: upload_stamp.size,
                rows,
            }),
            (Err(TransferError::SourceChanged), _) => {
                // Seen changed before Complete, then changed back? Treat as changed.
                Outcome::Changed { stamp: before }
            }
            (Err(e), _) => Outcome::Failed(e),
        };
        Attempted {
            outcome,
            maybe_sent,
        }
    }
}

/// A delivery found in place by HEAD: nothing sent. `sha256` is the object's SHA-256 (the
/// source's, for a raw object), unless `converted` and the object carries its own.
fn found_delivery(
    head: ObjectHead,
    sha256: String,
    source_sha256: Option<String>,
    converted: bool,
) -> Delivery {
    let sha256 = if converted {
        head.sha256.unwrap_or(sha256)
    } else {
        sha256
    };
    Delivery {
        uploaded: Uploaded {
            etag: head.etag.unwrap_or_default(),
            sha256,
            sent: false,
        },
        size: head.size,
        rows: None,
        source_sha256,
    }
}

/// Opens the row's file beneath its spool's held root, never through a symlink, and
/// stamps what was opened.
fn open_source(root: &Root, rel: &str) -> io::Result<(File, FileStamp)> {
    let file = root.entry(Path::new(rel))?.open_file()?;
    let meta = file.metadata()?;
    Ok((file, FileStamp::of(&meta)))
}

fn open_error(path: &Path, e: &io::Error) -> TransferError {
    match e.kind() {
        io::ErrorKind::NotFound => TransferError::Vanished(format!(
            "source disappeared: {} no longer exists",
            path.display()
        )),
        // Gone from its path as surely as a deleted file: a folder renamed away and replaced
        // by a symlink took the file with it. Vanished, so that the file found at its new
        // path in the spool takes this row back (and its key, where an earlier try may have
        // put the object) rather than a second row and a second object.
        _ if beneath::is_symlink_refusal(e) => TransferError::Vanished(format!(
            "source disappeared: {} is now a symlink, or something on its way is a symlink or no folder: refused, symlinks inside a spool are never followed",
            path.display()
        )),
        _ => TransferError::Source {
            message: format!("cannot read {}: {e}", path.display()),
            passing: is_passing(e),
        },
    }
}

/// The birth time of the file now at `rel` beneath `root`, if it is the file of `stamp`.
fn birth_at(root: &Root, rel: &str, stamp: FileStamp) -> Option<i64> {
    let meta = root.entry(Path::new(rel)).and_then(|e| e.metadata()).ok()?;
    (FileStamp::of(&meta) == stamp)
        .then(|| FileStamp::birth_of(&meta))
        .flatten()
}

/// Open errors of this machine's state rather than of the file: out of descriptors or
/// memory, an I/O error, a stale NFS handle. Trying again later may work.
fn is_passing(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOMEM
                | libc::EIO
                | libc::ESTALE
                | libc::EAGAIN
                | libc::EINTR
        )
    )
}
