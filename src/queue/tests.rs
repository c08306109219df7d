use super::*;
use rusqlite::params;

fn open() -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(&dir.path().join("queue.db")).unwrap();
    (dir, queue)
}

pub(super) fn file(rel: &str, size: u64) -> NewFile {
    NewFile {
        spool: "orders".into(),
        rel_path: rel.into(),
        path: PathBuf::from("/spool").join(rel),
        destination: "lake".into(),
        bucket: "acme".into(),
        stamp: FileStamp {
            size,
            mtime_ns: 1,
            inode: 7,
        },
        birth_ns: None,
        sha256: None,
    }
}

/// Ids of the delivered rows whose clean-up is still to do.
fn unfinished_ids(q: &Queue) -> Vec<i64> {
    q.unfinished_done(0, 10)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect()
}

fn delivered(etag: &str) -> Done {
    Done {
        etag: etag.into(),
        sha256: "sha".into(),
        source_sha256: None,
        object_size: 1,
        rows: None,
        format: "raw".into(),
    }
}

fn register(q: &mut Queue, files: &[NewFile], now: i64) -> Vec<Registered> {
    q.register(
        files,
        SpoolRules::default(),
        now,
        |f, id| Ok(format!("k/{}-{id}", f.rel_path)),
        |_, _, _| false,
    )
    .unwrap()
}

#[test]
fn migrating_twice_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    drop(Queue::open(&path).unwrap());
    let q = Queue::open(&path).unwrap();
    let version: usize = q
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, latest_version());
    // Made without a schema version of its own: the s3spool before still opens the queue.
    let index: i64 = q
        .conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'files_unfinished'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(index, 1);
    let mode: String = q
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn register_renders_the_key_once_with_the_row_id() {
    let (_d, mut q) = open();
    let out = register(&mut q, &[file("a.csv", 3), file("b.csv", 4)], 100);
    assert_eq!(out, vec![Registered::Queued(1), Registered::Queued(2)]);
    let row = q.get(2).unwrap().unwrap();
    assert_eq!(row.key.as_deref(), Some("k/b.csv-2"));
    assert_eq!(row.state, State::Pending);
    assert_eq!(row.queued_at, 100);
    // The same file again is not queued twice.
    assert_eq!(
        register(&mut q, &[file("a.csv", 3)], 200),
        vec![Registered::AlreadyQueued(1)]
    );
}

#[test]
fn a_key_error_stores_a_failed_row_with_the_reason() {
    let (_d, mut q) = open();
    let out = q
        .register(
            &[file("a.csv", 3)],
            SpoolRules::default(),
            1,
            |_, _| Err("object key is too long".into()),
            |_, _, _| false,
        )
        .unwrap();
    assert_eq!(out, vec![Registered::Refused(1)]);
    let row = q.get(1).unwrap().unwrap();
    assert_eq!(row.state, State::Failed);
    assert_eq!(row.last_error.as_deref(), Some("object key is too long"));
    assert_eq!(row.key, None);
    // Retrying cannot help a file with no key; it stays failed.
    assert!(q.retry_failed(5).unwrap().is_empty());
    assert_eq!(
        register(&mut q, &[file("a.csv", 3)], 2),
        vec![Registered::AlreadyQueued(1)]
    );
}

#[test]
fn pending_row_takes_the_new_stamp_when_the_file_changed_before_upload() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a.csv", 3)], 1);
    assert_eq!(
        register(&mut q, &[file("a.csv", 9)], 2),
        vec![Registered::AlreadyQueued(1)]
    );
    assert_eq!(q.get(1).unwrap().unwrap().stamp.size, 9);
}

#[test]
fn claim_takes_due_rows_once_and_counts_attempts() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1), file("b", 1), file("c", 1)], 10);
    let lease = Duration::from_secs(60);
    assert!(
        q.claim(10, 9, lease).unwrap().is_empty(),
        "not due before queued_at"
    );
    let first = q.claim(2, 10, lease).unwrap();
    assert_eq!(first.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 2]);
    assert!(first
        .iter()
        .all(|r| r.state == State::Active && r.attempts == 1));
    let second = q.claim(10, 10, lease).unwrap();
    assert_eq!(second.iter().map(|r| r.id).collect::<Vec<_>>(), vec![3]);
    assert!(q.claim(10, 10, lease).unwrap().is_empty());
}

#[test]
fn transitions_done_retry_failed_and_changed() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1), file("b", 1), file("c", 1)], 10);
    q.claim(3, 10, Duration::from_secs(60)).unwrap();

    q.mark_done(1, 1, &delivered("\"etag\""), None, 20).unwrap();
    let done = q.get(1).unwrap().unwrap();
    assert_eq!(
        (done.state, done.done_at, done.etag.as_deref()),
        (State::Done, Some(20), Some("\"etag\""))
    );

    q.retry_later(Ended::unsent(2, 1), "503 SlowDown", 500, 20)
        .unwrap();
    let later = q.get(2).unwrap().unwrap();
    assert_eq!((later.state, later.next_attempt_at), (State::Pending, 500));
    assert_eq!(later.last_error.as_deref(), Some("503 SlowDown"));
    assert!(q.claim(10, 499, Duration::from_secs(1)).unwrap().is_empty());
    assert_eq!(q.next_due().unwrap(), Some(500));
    let again = q.claim(10, 500, Duration::from_secs(1)).unwrap();
    assert_eq!((again[0].id, again[0].attempts), (2, 2));
    q.mark_failed(Ended::unsent(2, 2), "AccessDenied", Failure::Refused, 600)
        .unwrap();
    assert_eq!(q.get(2).unwrap().unwrap().state, State::Failed);

    let stamp = FileStamp {
        size: 5,
        mtime_ns: 2,
        inode: 7,
    };
    q.requeue_changed(Ended::unsent(3, 1), stamp, None, 700, 30)
        .unwrap();
    let changed = q.get(3).unwrap().unwrap();
    assert_eq!(
        (changed.state, changed.attempts, changed.stamp),
        (State::Pending, 0, stamp)
    );
}

#[test]
fn done_file_seen_again_is_recognised_and_a_changed_one_is_new() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1)], 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    assert!(q.mark_done(1, 1, &delivered("e"), None, 11).unwrap());
    assert!(
        !q.mark_done(1, 1, &delivered("e"), None, 11).unwrap(),
        "a second transition changes nothing"
    );
    // Delivered but not yet cleaned up (the daemon died in between): clean it up.
    assert_eq!(
        register(&mut q, &[file("a", 1)], 12),
        vec![Registered::AlreadyDone(1)]
    );
    assert_eq!(
        register(&mut q, &[file("a", 2)], 13),
        vec![Registered::Queued(2)]
    );
}

#[test]
fn recover_returns_active_rows_to_pending() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1), file("b", 1)], 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    assert_eq!(q.recover_active(11).unwrap(), 1);
    assert_eq!(
        q.summary().unwrap().counts,
        Counts {
            pending: 2,
            active: 0,
            done: 0,
            failed: 0
        }
    );
}

#[test]
fn a_stop_gives_its_attempt_back_and_history_keeps_the_number_it_ran_as() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1)], 10);
    for stop in 0..3 {
        let claimed = q.claim(1, 10 + stop, Duration::from_secs(60)).unwrap();
        assert_eq!(claimed[0].attempts, 1, "stop {stop}: the claim counts one");
        assert_eq!(q.recover_active(11 + stop).unwrap(), 1);
    }
    let attempts: i64 = q
        .conn
        .query_row("SELECT attempts FROM files WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(attempts, 0, "three stops used up no attempt");
    let history: Vec<(i64, String)> = q
        .conn
        .prepare("SELECT attempt, outcome FROM attempts WHERE file_id = 1 ORDER BY rowid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(history, vec![(1, "stopped".to_string()); 3]);
}

#[test]
fn summary_retry_and_purge() {
    let (_d, mut q) = open();
    register(
        &mut q,
        &[file("a", 10), file("b", 20), file("c", 30), file("d", 40)],
        10,
    );
    q.claim(3, 10, Duration::from_secs(60)).unwrap();
    q.mark_done(1, 1, &delivered("e"), None, 50).unwrap();
    q.mark_failed(Ended::unsent(2, 1), "AccessDenied", Failure::Refused, 51)
        .unwrap();
    let s = q.summary().unwrap();
    assert_eq!(
        s.counts,
        Counts {
            pending: 1,
            active: 1,
            done: 1,
            failed: 1
        }
    );
    assert_eq!(s.bytes_waiting, 70);
    assert_eq!(s.oldest_waiting_queued_at, Some(10));
    assert_eq!(q.latest_errors(5).unwrap()[0].id, 2);

    // retry touches failed and pending rows only.
    assert_eq!(q.retry(Some(&[1, 2, 3]), 60).unwrap(), vec![2]);
    assert_eq!(q.get(2).unwrap().unwrap().attempts, 0);
    assert_eq!(q.retry_failed(61).unwrap(), Vec::<i64>::new());

    assert_eq!(
        q.purge_done(50, |_| false, false).unwrap(),
        (0, 0),
        "done_at 50 is not before 50"
    );
    assert_eq!(
        q.purge_done(51, |_| true, false).unwrap(),
        (0, 1),
        "kept rows stay"
    );
    assert_eq!(
        q.purge_done(51, |_| false, true).unwrap(),
        (1, 0),
        "dry run"
    );
    assert_eq!(q.purge_done(51, |_| false, false).unwrap(), (1, 0));
    assert_eq!(q.purge_done(51, |_| false, false).unwrap(), (0, 0));
    assert!(q.get(1).unwrap().is_none());

    let listed = q
        .list(&ListFilter {
            state: Some(State::Pending),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(listed.iter().map(|r| r.id).collect::<Vec<_>>(), vec![2, 4]);
}

#[test]
fn a_clean_up_is_recorded_only_for_the_path_it_was_done_at() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1), file("b", 2)], 10);
    for id in 1..=2 {
        q.claim(1, 10, Duration::from_secs(60)).unwrap();
        q.mark_done(id, 1, &delivered("e"), None, 11).unwrap();
    }
    assert_eq!(unfinished_ids(&q), [1, 2]);
    assert_eq!(
        q.unfinished_done(1, 10).unwrap()[0].id,
        2,
        "a page starts after its cursor"
    );
    // Row 2's file moved (a rescan made the row follow it) while its old path was cleaned.
    q.conn
        .execute("UPDATE files SET path = '/spool/moved/b' WHERE id = 2", [])
        .unwrap();
    let applied = q
        .mark_sources_finished(
            &[
                (1, "/spool/a".into(), SourceOutcome::Deleted),
                (2, "/spool/b".into(), SourceOutcome::Gone),
            ],
            12,
        )
        .unwrap();
    assert_eq!(applied, 1);
    assert_eq!(
        unfinished_ids(&q),
        [2],
        "finished again where its file is now"
    );
    assert_eq!(
        q.get(1).unwrap().unwrap().source_outcome,
        Some(SourceOutcome::Deleted)
    );
    // Recorded once: a second record of a finished row changes nothing.
    assert_eq!(
        q.mark_sources_finished(&[(1, "/spool/a".into(), SourceOutcome::Gone)], 13)
            .unwrap(),
        0
    );
}

#[test]
fn after_clean_up_a_lookalike_file_is_new_unless_the_spool_keeps_files() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1)], 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    q.mark_done(1, 1, &delivered("e"), None, 11).unwrap();
    assert!(q
        .mark_source_finished(1, SourceOutcome::Deleted, 12)
        .unwrap());
    // Deleted, then a new file with a reused inode and the same size and mtime appears.
    assert_eq!(
        register(&mut q, &[file("a", 1)], 13),
        vec![Registered::Queued(2)]
    );
    // In a keep spool the same stamp is the kept file itself.
    q.claim(1, 13, Duration::from_secs(60)).unwrap();
    q.mark_done(2, 1, &delivered("e"), None, 14).unwrap();
    q.mark_source_finished(2, SourceOutcome::Kept, 14).unwrap();
    let out = q
        .register(
            &[file("a", 1)],
            SpoolRules {
                keeps: true,
                unique_keys: false,
            },
            15,
            |_, id| Ok(format!("k{id}")),
            |_, _, _| false,
        )
        .unwrap();
    assert_eq!(out, vec![Registered::Kept(2)]);
    // The spool switched from keep to delete: the kept file is cleaned up, not sent again.
    assert_eq!(
        register(&mut q, &[file("a", 1)], 16),
        vec![Registered::AlreadyDone(2)]
    );
    // ... by the finisher, which finds it among the unfinished rows.
    assert_eq!(unfinished_ids(&q), [2]);
}

#[test]
fn a_kept_file_with_a_new_inode_is_known_by_its_content() {
    let (_d, mut q) = open();
    let keeps = SpoolRules {
        keeps: true,
        unique_keys: false,
    };
    let reg = |q: &mut Queue, f: NewFile, now| {
        q.register(
            &[f],
            keeps,
            now,
            |f, id| Ok(format!("k/{}-{id}", f.rel_path)),
            |_, _, _| false,
        )
        .unwrap()
    };
    reg(&mut q, file("a", 1), 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    let mut done = delivered("e");
    done.source_sha256 = Some("aaa".into());
    q.mark_done(1, 1, &done, None, 11).unwrap();
    q.mark_source_finished(1, SourceOutcome::Kept, 12).unwrap();
    // Restored: same size and mtime, another inode. Hashed first, nothing written.
    let mut restored = file("a", 1);
    restored.stamp.inode = 99;
    assert_eq!(
        reg(&mut q, restored.clone(), 13),
        [Registered::Lookalike(1)]
    );
    assert_eq!(q.get(1).unwrap().unwrap().stamp.inode, 7);
    // The same content: the kept file, under its new inode.
    restored.sha256 = Some("aaa".into());
    assert_eq!(reg(&mut q, restored.clone(), 14), [Registered::Restored(1)]);
    assert_eq!(q.get(1).unwrap().unwrap().stamp.inode, 99);
    restored.sha256 = None;
    assert_eq!(
        reg(&mut q, restored, 15),
        [Registered::Kept(1)],
        "now the very file"
    );
    // Other content with the same size and mtime: a new file.
    let mut other = file("a", 1);
    other.stamp.inode = 100;
    other.sha256 = Some("bbb".into());
    assert_eq!(reg(&mut q, other, 16), [Registered::Queued(2)]);
}

#[test]
fn ids_are_never_reused_after_a_purge() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1), file("b", 2), file("c", 3)], 10);
    for id in 1..=3 {
        q.claim(1, 10, Duration::from_secs(60)).unwrap();
        q.mark_done(id, 1, &delivered("e"), None, 11).unwrap();
        q.mark_source_finished(id, SourceOutcome::Deleted, 11)
            .unwrap();
    }
    assert_eq!(q.purge_done(100, |_| false, false).unwrap(), (3, 0));
    assert_eq!(
        register(&mut q, &[file("d", 4)], 200),
        vec![Registered::Queued(4)]
    );
}

#[test]
fn a_failed_row_yields_its_path_to_a_new_file() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1)], 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    q.mark_failed(
        Ended::unsent(1, 1),
        "bad CSV at line 3",
        Failure::Refused,
        11,
    )
    .unwrap();
    // The same file again stays with its failed row.
    assert_eq!(
        register(&mut q, &[file("a", 1)], 12),
        vec![Registered::AlreadyQueued(1)]
    );
    // A corrected file (another stamp) gets a row of its own; the failed one cannot be
    // retried any more (it would upload the new file a second time).
    assert_eq!(
        register(&mut q, &[file("a", 9)], 13),
        vec![Registered::Queued(2)]
    );
    assert_eq!(q.get(1).unwrap().unwrap().superseded_by, Some(2));
    // Counts leave it out: a newer row took over its path (list still shows it).
    assert_eq!(q.summary().unwrap().counts.failed, 0);
    assert!(q.retry(Some(&[1]), 14).unwrap().is_empty());
    assert!(q.retry_failed(14).unwrap().is_empty());
}

#[test]
fn a_kept_file_restored_with_another_inode_and_moved_is_found_by_its_content() {
    let (_d, mut q) = open();
    let keeps = SpoolRules {
        keeps: true,
        unique_keys: true,
    };
    let reg = |q: &mut Queue, f: NewFile, now, gone: bool| {
        q.register(
            &[f],
            keeps,
            now,
            |f, id| Ok(format!("k/{}-{id}", f.rel_path)),
            |old, _, likeness| {
                // Restored, a kept row's inode is out of date: any file alike will do.
                assert_eq!(likeness, Likeness::SizeAndMtime);
                // Only `a` may be gone; the other files are where they were queued.
                old == Path::new("/spool/a") && gone
            },
        )
        .unwrap()
    };
    reg(&mut q, file("a", 1), 10, false);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    let mut done = delivered("e");
    done.source_sha256 = Some("aaa".into());
    q.mark_done(1, 1, &done, None, 11).unwrap();
    q.mark_source_finished(1, SourceOutcome::Kept, 12).unwrap();
    // `cp -a` out and back (a new inode), then renamed before a rescan saw it at `a`.
    let mut moved = file("sub/a", 1);
    moved.stamp.inode = 99;
    // A copy beside the kept file, which is still there: a file of its own.
    assert_eq!(
        reg(&mut q, moved.clone(), 13, false),
        [Registered::Queued(2)]
    );
    let (_d, mut q) = open();
    reg(&mut q, file("a", 1), 10, false);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    q.mark_done(1, 1, &done, None, 11).unwrap();
    q.mark_source_finished(1, SourceOutcome::Kept, 12).unwrap();
    // The kept file is gone from `a`: hashed first, nothing written.
    assert_eq!(
        reg(&mut q, moved.clone(), 13, true),
        [Registered::Lookalike(1)]
    );
    let mut other = file("sub/b", 1);
    other.stamp.inode = 100;
    other.sha256 = Some("bbb".into());
    assert_eq!(reg(&mut q, other, 14, true), [Registered::Queued(2)]);
    // The same content: the kept file, followed to its new path and inode.
    moved.sha256 = Some("aaa".into());
    assert_eq!(reg(&mut q, moved, 15, true), [Registered::Restored(1)]);
    let row = q.get(1).unwrap().unwrap();
    assert_eq!(
        (row.rel_path.as_str(), row.stamp.inode, row.state),
        ("sub/a", 99, State::Done)
    );
    assert_eq!(
        row.path,
        Path::new("/spool/sub/a"),
        "where the finisher and purge look"
    );
}

#[test]
fn a_kept_file_restored_and_moved_while_its_upload_runs_waits_for_that_row() {
    let (_d, mut q) = open();
    let keeps = SpoolRules {
        keeps: true,
        unique_keys: true,
    };
    let reg = |q: &mut Queue, f: NewFile, now| {
        q.register(
            &[f],
            keeps,
            now,
            |f, id| Ok(format!("k/{}-{id}", f.rel_path)),
            |old, _, _| old == Path::new("/spool/a"),
        )
        .unwrap()
    };
    reg(&mut q, file("a", 1), 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    // In flight; `a` restored with a new inode and moved to `sub/a` meanwhile.
    let mut moved = file("sub/a", 1);
    moved.stamp.inode = 99;
    assert_eq!(
        reg(&mut q, moved.clone(), 11),
        [Registered::AlreadyQueued(1)]
    );
    // Delivered and kept: now its content decides.
    let mut done = delivered("e");
    done.source_sha256 = Some("aaa".into());
    q.mark_done(1, 1, &done, None, 12).unwrap();
    // Not at its path when finished: the finisher records it gone, not kept.
    q.mark_source_finished(1, SourceOutcome::Gone, 12).unwrap();
    assert_eq!(reg(&mut q, moved.clone(), 13), [Registered::Lookalike(1)]);
    moved.sha256 = Some("aaa".into());
    assert_eq!(reg(&mut q, moved, 14), [Registered::Restored(1)]);
    let outcome: String = q
        .conn
        .query_row("SELECT source_outcome FROM files WHERE id = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(outcome, "kept", "the file is in the spool again, kept");
}

#[test]
fn a_kept_file_taken_away_during_its_upload_and_restored_at_its_path_is_judged_by_content() {
    let (_d, mut q) = open();
    let keeps = SpoolRules {
        keeps: true,
        unique_keys: true,
    };
    let reg = |q: &mut Queue, f: NewFile, now| {
        q.register(
            &[f],
            keeps,
            now,
            |f, id| Ok(format!("k/{}-{id}", f.rel_path)),
            |_, _, _| true,
        )
        .unwrap()
    };
    reg(&mut q, file("a", 1), 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    let mut done = delivered("e");
    done.source_sha256 = Some("aaa".into());
    q.mark_done(1, 1, &done, None, 11).unwrap();
    q.mark_source_finished(1, SourceOutcome::Gone, 11).unwrap();
    // `cp -a` back to where it was: a new inode, the same size and mtime.
    let mut back = file("a", 1);
    back.stamp.inode = 99;
    assert_eq!(reg(&mut q, back.clone(), 12), [Registered::Lookalike(1)]);
    back.sha256 = Some("aaa".into());
    assert_eq!(reg(&mut q, back.clone(), 13), [Registered::Restored(1)]);
    // Other bytes of that size and mtime: a new file.
    let mut other = back;
    other.stamp.inode = 100;
    other.sha256 = Some("bbb".into());
    assert!(matches!(
        reg(&mut q, other, 14)[..],
        [Registered::Queued(_)]
    ));
}

#[test]
fn every_kept_row_alike_is_tried_and_one_whose_file_is_still_there_is_passed_over() {
    let (_d, mut q) = open();
    let keeps = SpoolRules {
        keeps: true,
        unique_keys: true,
    };
    // Two kept files of the same size and mtime (unpacked from one archive).
    for (id, rel, sha) in [(1, "a", "aaa"), (2, "b", "bbb")] {
        let mut f = file(rel, 1);
        f.stamp.inode = 7 + id as u64;
        q.register(
            &[f],
            keeps,
            10,
            |f, id| Ok(format!("k/{}-{id}", f.rel_path)),
            |_, _, _| false,
        )
        .unwrap();
        q.claim(1, 10, Duration::from_secs(60)).unwrap();
        let mut done = delivered("e");
        done.source_sha256 = Some(sha.into());
        q.mark_done(id, 1, &done, None, 11).unwrap();
        q.mark_source_finished(id, SourceOutcome::Kept, 12).unwrap();
    }
    // `a` restored and moved to `sub/a`; `b` still in place (the newest candidate).
    let mut moved = file("sub/a", 1);
    moved.stamp.inode = 99;
    moved.sha256 = Some("aaa".into());
    let out = q
        .register(
            &[moved],
            keeps,
            13,
            |f, id| Ok(format!("k/{}-{id}", f.rel_path)),
            |old, _, _| old == Path::new("/spool/a"),
        )
        .unwrap();
    assert_eq!(out, [Registered::Restored(1)]);
    assert_eq!(q.get(1).unwrap().unwrap().path, Path::new("/spool/sub/a"));
    assert_eq!(q.get(2).unwrap().unwrap().rel_path, "b");
}

#[test]
fn a_file_moved_inside_the_spool_is_its_row_file() {
    let (_d, mut q) = open();
    let mut original = file("a", 1);
    original.birth_ns = Some(100);
    register(&mut q, &[original], 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    let moved = || {
        let mut f = file("sub/a", 1);
        f.birth_ns = Some(100);
        f
    };
    let register_moved = |q: &mut Queue, gone: bool| {
        q.register(
            &[moved()],
            SpoolRules::default(),
            12,
            |_, id| Ok(format!("k{id}")),
            |old, _, _| {
                assert_eq!(old, Path::new("/spool/a"));
                gone
            },
        )
        .unwrap()
    };
    // Moved while being uploaded: not a new file.
    assert_eq!(
        register_moved(&mut q, true),
        vec![Registered::AlreadyQueued(1)]
    );
    q.mark_done(1, 1, &delivered("e"), None, 11).unwrap();
    q.mark_source_finished(1, SourceOutcome::Gone, 11).unwrap();
    // Delivered, and gone from its path when cleaned up: clean it up where it is now.
    assert_eq!(
        register_moved(&mut q, true),
        vec![Registered::AlreadyDone(1)]
    );
    // The row follows the file, unfinished, so a clean-up cut off there is repaired.
    let row = q.get(1).unwrap().unwrap();
    assert_eq!(
        (row.rel_path.as_str(), row.source_finished_at),
        ("sub/a", None)
    );
}

#[test]
fn a_second_name_of_a_queued_file_is_a_file_of_its_own() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1)], 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    // A hard link: the same inode, size and mtime, while the first name is still there.
    let out = q
        .register(
            &[file("b", 1)],
            SpoolRules::default(),
            12,
            |_, id| Ok(format!("k{id}")),
            |_, _, _| false,
        )
        .unwrap();
    assert_eq!(out, vec![Registered::Queued(2)]);
}

#[test]
fn a_vanished_file_back_at_its_path_is_queued_again() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1)], 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    // Away for a moment (a remount, a producer's rename and back): the row failed.
    q.mark_failed(
        Ended::unsent(1, 1),
        "source disappeared: /spool/a no longer exists",
        Failure::Vanished,
        11,
    )
    .unwrap();
    assert_eq!(
        register(&mut q, &[file("a", 1)], 12),
        vec![Registered::Followed(1)]
    );
    assert_eq!(q.get(1).unwrap().unwrap().state, State::Pending);
}

#[test]
fn a_failed_row_is_judged_by_why_it_failed_not_by_its_words() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1), file("b", 1)], 10);
    q.claim(2, 10, Duration::from_secs(60)).unwrap();
    // Words that read like a vanished source, from S3 (a policy's message): refused.
    q.mark_failed(
        Ended::unsent(1, 1),
        "source disappeared: AccessDenied",
        Failure::Refused,
        11,
    )
    .unwrap();
    q.mark_failed(Ended::unsent(2, 1), "gone for now", Failure::Vanished, 11)
        .unwrap();
    assert_eq!(q.get(1).unwrap().unwrap().failure, Some(Failure::Refused));
    assert_eq!(
        register(&mut q, &[file("a", 1), file("b", 1)], 12),
        vec![Registered::AlreadyQueued(1), Registered::Followed(2)]
    );
    let (a, b) = (q.get(1).unwrap().unwrap(), q.get(2).unwrap().unwrap());
    assert_eq!(
        (a.state, a.failure),
        (State::Failed, Some(Failure::Refused))
    );
    assert_eq!((b.state, b.failure), (State::Pending, None));
}

#[test]
fn outcomes_failures_and_holds_read_back_what_they_wrote() {
    for outcome in SourceOutcome::ALL {
        assert_eq!(SourceOutcome::parse(outcome.as_str()), Some(outcome));
    }
    for failure in Failure::ALL {
        assert_eq!(Failure::parse(failure.as_str()), Some(failure));
    }
    for held in [
        Held::Disk,
        Held::Destination("lake".into()),
        Held::Spool("in:box".into()),
    ] {
        assert_eq!(Held::parse(&held.to_string()), Some(held));
    }
    assert_eq!(Held::parse("destination"), None);
    assert_eq!(SourceOutcome::parse("Kept"), None);
}

#[test]
fn a_file_with_another_birth_time_is_not_the_delivered_one() {
    let (_d, mut q) = open();
    let born = |rel: &str, birth| {
        let mut f = file(rel, 1);
        f.birth_ns = Some(birth);
        f
    };
    register(&mut q, &[born("a", 100)], 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    q.mark_done(1, 1, &delivered("e"), None, 11).unwrap();
    q.mark_source_finished(1, SourceOutcome::Gone, 11).unwrap();
    // Same inode, size and mtime (an inode reused, a fixed mtime), born later: new.
    let out = q
        .register(
            &[born("b", 200)],
            SpoolRules::default(),
            12,
            |_, id| Ok(format!("k{id}")),
            |_, _, _| true,
        )
        .unwrap();
    assert_eq!(out, vec![Registered::Queued(2)]);
    let out = q
        .register(
            &[born("a", 300)],
            SpoolRules::default(),
            13,
            |_, id| Ok(format!("k{id}")),
            |_, _, _| true,
        )
        .unwrap();
    assert_eq!(out, vec![Registered::Queued(3)]);
}

#[test]
fn a_schema_newer_than_this_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    drop(Queue::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", latest_version() + 1)
        .unwrap();
    drop(conn);
    let e = Queue::open(&path).err().expect("refused").to_string();
    assert!(e.contains("newer than this s3spool"), "{e}");
}

#[test]
fn read_only_open_reads_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let mut q = Queue::open(&path).unwrap();
    register(&mut q, &[file("a", 1)], 10);
    let mut ro = Queue::open_read_only(&path).unwrap();
    assert_eq!(ro.summary().unwrap().counts.pending, 1);
    assert!(
        ro.retry(None, 11).is_err(),
        "a read-only handle cannot write"
    );
}

#[test]
fn a_stale_claim_cannot_change_a_row_taken_back_and_claimed_again() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1)], 10);
    let first = q
        .claim(1, 10, Duration::from_millis(100))
        .unwrap()
        .remove(0);
    assert_eq!(first.claim, 1);
    // The worker stops renewing: at 111 its lease is over.
    assert!(q.renew_lease(1, 1, 110).unwrap());
    assert_eq!(q.reap_expired(110).unwrap(), 0);
    assert_eq!(q.reap_expired(111).unwrap(), 1);
    let second = q.claim(1, 111, Duration::from_secs(60)).unwrap().remove(0);
    assert_eq!((second.claim, second.attempts), (2, 2));
    // The first worker wakes up: none of its outcomes apply.
    assert!(!q.mark_done(1, 1, &delivered("e"), None, 112).unwrap());
    assert!(!q.renew_lease(1, 1, 999).unwrap());
    assert!(q.mark_done(1, 2, &delivered("e"), None, 113).unwrap());
}

#[test]
fn multipart_progress_is_recorded_and_cleared_with_the_upload() {
    let (_d, mut q) = open();
    register(&mut q, &[file("big", 25 << 20)], 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    let part = |number| StoredPart {
        number,
        size: 5 << 20,
        etag: format!("\"e{number}\""),
        md5: "00".repeat(16),
    };
    assert!(q
        .start_upload(1, 1, "upload-1", 5 << 20, Some("sha"))
        .unwrap());
    assert!(q.record_part(1, 1, &part(1)).unwrap());
    assert!(q.record_part(1, 1, &part(3)).unwrap());
    assert!(
        !q.record_part(1, 7, &part(2)).unwrap(),
        "not with another claim"
    );
    let row = q.get(1).unwrap().unwrap();
    assert_eq!(
        (
            row.upload_id.as_deref(),
            row.part_size,
            row.sha256.as_deref()
        ),
        (Some("upload-1"), Some(5 << 20), Some("sha"))
    );
    assert_eq!(q.progress(&row).unwrap(), Some((2, 5)));
    assert_eq!(
        q.parts(1)
            .unwrap()
            .iter()
            .map(|p| p.number)
            .collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert_eq!(q.recorded_uploads().unwrap()[0].upload_id, "upload-1");
    // A transient failure keeps the upload for the next attempt.
    q.retry_later(Ended::unsent(1, 1), "503", 20, 11).unwrap();
    let again = q.claim(1, 20, Duration::from_secs(60)).unwrap().remove(0);
    assert_eq!(again.upload_id.as_deref(), Some("upload-1"));
    assert_eq!(q.parts(1).unwrap().len(), 2);
    // Done: the upload and its parts are gone from the queue.
    assert!(q.mark_done(1, 2, &delivered("e-5"), None, 30).unwrap());
    let done = q.get(1).unwrap().unwrap();
    assert_eq!((done.upload_id, q.parts(1).unwrap().len()), (None, 0));
    assert!(q.recorded_uploads().unwrap().is_empty());
    assert!(q.has_key("lake", "k/big-1").unwrap());
    assert!(!q.has_key("lake", "k/other").unwrap());
}

#[test]
fn starting_over_forgets_old_parts() {
    let (_d, mut q) = open();
    register(&mut q, &[file("big", 10 << 20)], 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    q.start_upload(1, 1, "u1", 5 << 20, Some("sha")).unwrap();
    q.record_part(
        1,
        1,
        &StoredPart {
            number: 1,
            size: 5 << 20,
            etag: "e".into(),
            md5: "00".repeat(16),
        },
    )
    .unwrap();
    assert!(q.forget_upload(1, 1).unwrap());
    let row = q.get(1).unwrap().unwrap();
    assert_eq!((row.upload_id, q.parts(1).unwrap().len()), (None, 0));
    q.start_upload(1, 1, "u2", 5 << 20, Some("sha")).unwrap();
    assert!(q
        .mark_failed(Ended::unsent(1, 1), "gone", Failure::Refused, 11)
        .unwrap());
    assert!(q.get(1).unwrap().unwrap().upload_id.is_none());
}

#[test]
fn a_file_rewritten_while_pending_does_not_resume_the_old_upload() {
    let (_d, mut q) = open();
    register(&mut q, &[file("big", 25 << 20)], 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    q.start_upload(1, 1, "old-upload", 5 << 20, Some("old-sha"))
        .unwrap();
    q.record_part(
        1,
        1,
        &StoredPart {
            number: 1,
            size: 5 << 20,
            etag: "e".into(),
            md5: "00".repeat(16),
        },
    )
    .unwrap();
    q.retry_later(Ended::unsent(1, 1), "503", 20, 11).unwrap();
    // Rewritten and settled again before the next attempt.
    assert_eq!(
        register(&mut q, &[file("big", 30 << 20)], 12),
        vec![Registered::AlreadyQueued(1)]
    );
    let row = q.get(1).unwrap().unwrap();
    assert_eq!(row.stamp.size, 30 << 20);
    assert_eq!(
        (row.upload_id, row.part_size, row.sha256),
        (None, None, None)
    );
    assert!(q.parts(1).unwrap().is_empty());
}

#[test]
fn read_only_open_waits_for_a_schema_being_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    // The file exists but has no schema yet, as in the instant after a daemon opened it.
    drop(Connection::open(&path).unwrap());
    let creating = path.clone();
    let daemon = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        drop(Queue::open(&creating).unwrap());
    });
    let q = Queue::open_read_only(&path).expect("waits for the schema instead of failing");
    assert_eq!(q.summary().unwrap().counts, Counts::default());
    daemon.join().unwrap();
}

#[test]
fn only_eligible_rows_are_claimed_and_counted_as_due() {
    let (_d, mut q) = open();
    let mut other = file("b", 1);
    other.spool = "removed".into();
    register(&mut q, &[file("a", 1), other], 10);
    let lease = Duration::from_secs(60);
    let orders = Eligible::only(&["orders"], &["lake"]);
    let nothing = Eligible::only(&[], &["lake"]);
    assert_eq!(q.next_due_for(&nothing).unwrap(), None);
    assert_eq!(q.next_due_for(&orders).unwrap(), Some(10));
    assert!(q.claim_for(10, 10, lease, &nothing).unwrap().is_empty());
    let claimed = q.claim_for(10, 10, lease, &orders).unwrap();
    assert_eq!(
        claimed.iter().map(|r| r.spool.as_str()).collect::<Vec<_>>(),
        ["orders"]
    );
    assert!(
        q.claim_for(10, 10, lease, &Eligible::only(&["removed"], &["gone"]))
            .unwrap()
            .is_empty(),
        "its destination is not configured"
    );
    assert_eq!(
        q.claim(10, 10, lease).unwrap().len(),
        1,
        "all allowed: the other row"
    );
}

#[test]
fn deliveries_join_batches_that_close_when_full_old_or_at_shutdown() {
    let (_d, mut q) = open();
    let files: Vec<NewFile> = (0..5).map(|i| file(&format!("f{i}"), 1)).collect();
    register(&mut q, &files, 10);
    q.claim(5, 10, Duration::from_secs(60)).unwrap();
    let batching = Batching {
        max_files: 2,
        host: "h1".into(),
    };
    let done = |q: &mut Queue, id: i64, now: i64| {
        let d = Done {
            rows: Some(id as u64 * 10),
            object_size: 100,
            format: "parquet".into(),
            ..delivered("e")
        };
        assert!(q.mark_done(id, 1, &d, Some(&batching), now).unwrap());
    };
    done(&mut q, 1, 100);
    assert!(
        q.batches_to_write(1_000).unwrap().is_empty(),
        "one file: still open"
    );
    done(&mut q, 2, 200);
    let closed = q.batches_to_write(1_000).unwrap();
    assert_eq!(closed.len(), 1, "full at two files");
    let first = &closed[0];
    assert_eq!(
        (first.files, first.opened_at, first.closed_at),
        (2, 100, Some(200))
    );
    assert_eq!(
        (first.host.as_str(), first.spool.as_str()),
        ("h1", "orders")
    );
    let members = q.batch_files(first.id).unwrap();
    assert_eq!(members.iter().map(|f| f.id).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(members[1].rows, Some(20));
    assert_eq!(members[1].format.as_deref(), Some("parquet"));

    done(&mut q, 3, 300);
    assert_eq!(
        q.close_batches_opened_before("orders", 299, 400).unwrap(),
        0
    );
    assert_eq!(
        q.close_batches_opened_before("orders", 300, 400).unwrap(),
        1
    );
    done(&mut q, 4, 500);
    let orders = ["orders".to_string()];
    assert_eq!(q.close_open_batches_except(&orders, 550).unwrap(), 0);
    assert_eq!(
        q.close_open_batches_except(&[], 560).unwrap(),
        1,
        "orders lost manifests"
    );
    assert_eq!(q.close_open_batches_except(&[], 600).unwrap(), 0);
    let due = q.batches_to_write(1_000).unwrap();
    assert_eq!(due.len(), 3);
    assert!(due.iter().all(|b| b.files == 1 || b.files == 2));

    // The key is fixed by the first attempt; a retry waits; written is final.
    let id = first.id;
    assert_eq!(q.fix_manifest_key(id, "m/a.json").unwrap(), "m/a.json");
    assert_eq!(q.fix_manifest_key(id, "m/b.json").unwrap(), "m/a.json");
    q.batch_retry_later(id, "503", 5_000).unwrap();
    assert_eq!(q.batches_to_write(1_000).unwrap().len(), 2);
    assert!(q.mark_batch_written(id, 6_000).unwrap());
    assert!(!q.mark_batch_written(id, 6_001).unwrap());
    assert_eq!(q.batches_to_write(10_000).unwrap().len(), 2);
    // A file done without batching joins nothing.
    assert!(q.mark_done(5, 1, &delivered("e"), None, 700).unwrap());
    assert_eq!(q.get(5).unwrap().unwrap().batch_id, None);
}

#[test]
fn a_stamp_of_a_file_from_after_2262_does_not_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("far");
    let file = std::fs::File::create(&path).unwrap();
    // The year 2300.
    let far = std::time::UNIX_EPOCH + Duration::from_secs(10_413_792_000);
    file.set_modified(far).unwrap();
    let stamp = FileStamp::of(&std::fs::metadata(&path).unwrap());
    assert_eq!(stamp.mtime_ns, i64::MAX);
}

#[test]
fn a_file_the_daemon_died_with_too_often_is_set_aside() {
    let (_d, mut q) = open();
    register(&mut q, &[file("poison.csv", 1), file("ok.csv", 2)], 10);
    let lease = Duration::from_secs(60);
    // The daemon dies with both in flight: both are suspects now.
    assert_eq!(q.claim(2, 10, lease).unwrap().len(), 2);
    assert_eq!(q.recover_after_crash(11, |_| 3).unwrap(), (2, vec![]));
    // Suspects run alone, one at a time, and nothing else is claimed meanwhile.
    let alone = q.claim_suspect(12, lease, &Eligible::default()).unwrap();
    assert_eq!(alone[0].rel_path, "poison.csv");
    assert!(q
        .claim_suspect(12, lease, &Eligible::default())
        .unwrap()
        .is_empty());
    assert!(q.claim(5, 12, lease).unwrap().is_empty());
    // It kills the daemon twice more: set aside, with the reason and its upload forgotten.
    assert_eq!(q.recover_after_crash(13, |_| 3).unwrap(), (1, vec![]));
    q.claim_suspect(14, lease, &Eligible::default()).unwrap();
    let (requeued, set_aside) = q.recover_after_crash(15, |_| 3).unwrap();
    assert_eq!(
        (requeued, set_aside),
        (0, vec![(1, "poison.csv".to_string())])
    );
    let row = q.get(1).unwrap().unwrap();
    assert_eq!(row.state, State::Failed);
    assert!(
        row.last_error.unwrap().contains("stopped 3 times in a row"),
        "the reason says why"
    );
    // The file merely in flight beside it runs alone, comes back, and is no suspect any more.
    let next = q.claim_suspect(16, lease, &Eligible::default()).unwrap();
    assert_eq!(next[0].rel_path, "ok.csv");
    assert!(q
        .retry_later(Ended::unsent(2, next[0].claim), "SlowDown", 16, 16)
        .unwrap());
    assert_eq!(q.claim(5, 17, lease).unwrap().len(), 1);
}

fn set_key(q: &Queue, id: i64, key: &str) {
    q.conn
        .execute("UPDATE files SET key = ?2 WHERE id = ?1", params![id, key])
        .unwrap();
}

#[test]
fn a_waiting_or_vanished_row_follows_its_file_when_it_moves() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1)], 10);
    let moved = |rel: &str| {
        let mut f = file(rel, 1);
        f.path = PathBuf::from("/spool").join(rel);
        f
    };
    // Keys made from the id alone, or from the path.
    let by_id = |q: &mut Queue, f: NewFile| {
        q.register(
            &[f],
            SpoolRules::default(),
            12,
            |_, id| Ok(format!("k{id}")),
            |_, _, _| true,
        )
        .unwrap()
    };
    let by_path = |q: &mut Queue, f: NewFile| {
        q.register(
            &[f],
            SpoolRules::default(),
            12,
            |f, _| Ok(format!("k/{}", f.rel_path)),
            |_, _, _| true,
        )
        .unwrap()
    };
    // Never tried: the row follows the file, with the key of its new path.
    assert_eq!(by_path(&mut q, moved("b")), vec![Registered::Followed(1)]);
    let row = q.get(1).unwrap().unwrap();
    assert_eq!(
        (row.rel_path.as_str(), row.key.as_deref()),
        ("b", Some("k/b"))
    );
    // Tried, the file vanished before it was opened, then turns up elsewhere. Its key
    // does not depend on the path: the row follows (an object an earlier try may have
    // put in place is found by HEAD under that key).
    q.claim(1, 13, Duration::from_secs(60)).unwrap();
    q.mark_failed(
        Ended::unsent(1, 1),
        "source disappeared: /spool/b no longer exists",
        Failure::Vanished,
        14,
    )
    .unwrap();
    set_key(&q, 1, "k1");
    let id_keyed = by_id(&mut q, moved("c"));
    assert_eq!(id_keyed, vec![Registered::Followed(1)]);
    let row = q.get(1).unwrap().unwrap();
    assert_eq!((row.state, row.rel_path.as_str()), (State::Pending, "c"));
    // Tried, and its key comes from the path: following would put it under its old name,
    // which a new file there would take too. It gets a row of its own instead.
    set_key(&q, 1, "k/c");
    assert_eq!(by_path(&mut q, moved("d")), vec![Registered::Queued(2)]);
    let old = q.get(1).unwrap().unwrap();
    assert_eq!((old.state, old.superseded_by), (State::Failed, Some(2)));
    // A row failed for another reason is not revived by a move.
    q.claim(1, 15, Duration::from_secs(60)).unwrap();
    q.mark_failed(Ended::unsent(2, 1), "bad CSV", Failure::Refused, 16)
        .unwrap();
    assert_eq!(by_id(&mut q, moved("e")), vec![Registered::Queued(3)]);
}

#[test]
fn with_keys_unique_per_row_a_tried_row_follows_its_file_keeping_its_key() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1)], 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    q.retry_later(Ended::unsent(1, 1), "answer lost", 11, 11)
        .unwrap();
    let mut moved = file("b", 1);
    moved.path = PathBuf::from("/spool/b");
    let rules = SpoolRules {
        keeps: false,
        unique_keys: true,
    };
    // The new path would render another key, but an earlier try may have stored the
    // object under the old one: the row keeps it, and HEAD finds that object.
    let out = q
        .register(
            &[moved],
            rules,
            12,
            |f, id| Ok(format!("k/{}-{id}", f.rel_path)),
            |_, _, _| true,
        )
        .unwrap();
    assert_eq!(out, vec![Registered::Followed(1)]);
    let row = q.get(1).unwrap().unwrap();
    assert_eq!(
        (row.rel_path.as_str(), row.key.as_deref()),
        ("b", Some("k/a-1"))
    );
}

#[test]
fn without_birth_times_a_file_gone_at_clean_up_is_never_taken_for_a_new_one() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1)], 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    q.mark_done(1, 1, &delivered("e"), None, 11).unwrap();
    q.mark_source_finished(1, SourceOutcome::Gone, 11).unwrap();
    // Same inode, size and mtime, no birth time to tell: it may be a new file reusing the
    // inode, so it is uploaded (at worst twice) rather than deleted unsent.
    assert_eq!(
        register(&mut q, &[file("a", 1)], 12),
        vec![Registered::Queued(2)]
    );
    // Nor at another path (row 2's file is still at a: only row 1 could match).
    let out = q
        .register(
            &[file("b", 1)],
            SpoolRules::default(),
            13,
            |_, id| Ok(format!("k{id}")),
            |old, _, _| old != Path::new("/spool/a"),
        )
        .unwrap();
    assert_eq!(out, vec![Registered::Queued(3)]);
}

#[test]
fn a_file_moved_away_and_back_is_found_past_its_superseded_row() {
    let (_d, mut q) = open();
    let path_key = |f: &NewFile, _| Ok::<_, String>(format!("k/{}", f.rel_path));
    q.register(
        &[file("a", 1)],
        SpoolRules::default(),
        10,
        path_key,
        |_, _, _| true,
    )
    .unwrap();
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    q.retry_later(Ended::unsent(1, 1), "answer lost", 11, 11)
        .unwrap();
    // Moved after a try, with keys from the path: a row of its own; row 1 superseded.
    let mut at_b = file("b", 1);
    at_b.path = PathBuf::from("/spool/b");
    let out = q
        .register(&[at_b], SpoolRules::default(), 12, path_key, |_, _, _| true)
        .unwrap();
    assert_eq!(out, vec![Registered::Queued(2)]);
    // Moved back before row 2 ran: row 2 follows it (never tried), not the superseded row 1.
    let out = q
        .register(
            &[file("a", 1)],
            SpoolRules::default(),
            13,
            path_key,
            |_, _, _| true,
        )
        .unwrap();
    assert_eq!(out, vec![Registered::Followed(2)]);
    let row = q.get(2).unwrap().unwrap();
    assert_eq!(
        (row.rel_path.as_str(), row.key.as_deref()),
        ("a", Some("k/a"))
    );
}

#[test]
fn an_upload_no_row_needs_any_more_is_listed_for_aborting() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1)], 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    assert!(q.start_upload(1, 1, "up-1", 5 << 20, Some("sha")).unwrap());
    q.retry_later(Ended::unsent(1, 1), "SlowDown", 11, 11)
        .unwrap();
    // Rewritten before the upload ended: the row starts over, its upload is abandoned.
    register(&mut q, &[file("a", 2)], 12);
    assert_eq!(q.get(1).unwrap().unwrap().upload_id, None);
    let abandoned = q.abandoned_uploads(10).unwrap();
    assert_eq!(
        abandoned,
        vec![multipart::AbandonedUpload {
            upload_id: "up-1".into(),
            destination: "lake".into(),
            bucket: "acme".into(),
            key: "k/a-1".into(),
        }]
    );
    q.forget_abandoned("up-1").unwrap();
    assert!(q.abandoned_uploads(10).unwrap().is_empty());
}

#[test]
fn claims_merge_the_spools_in_due_order_and_skip_paused_ones() {
    let (_d, mut q) = open();
    let in_spool = |spool: &str, rel: &str| {
        let mut f = file(rel, 1);
        f.spool = spool.into();
        f
    };
    // Registered at different times, so their due times interleave across the spools.
    register(&mut q, &[in_spool("a", "a1")], 10);
    register(&mut q, &[in_spool("b", "b1")], 11);
    register(&mut q, &[in_spool("a", "a2")], 12);
    register(&mut q, &[in_spool("b", "b2")], 13);
    let lease = Duration::from_secs(60);
    let both = Eligible::only(&["a", "b"], &["lake"]);
    let paths = |rows: Vec<FileRow>| rows.into_iter().map(|r| r.rel_path).collect::<Vec<_>>();
    assert_eq!(
        paths(q.claim_for(3, 20, lease, &both).unwrap()),
        ["a1", "b1", "a2"]
    );
    q.pause("b", 20).unwrap();
    assert_eq!(
        q.next_due_for(&both).unwrap(),
        None,
        "b2 waits in a paused spool"
    );
    assert!(q.claim_for(3, 20, lease, &both).unwrap().is_empty());
    q.resume("b").unwrap();
    assert_eq!(q.next_due_for(&both).unwrap(), Some(13));
    assert_eq!(paths(q.claim_for(3, 20, lease, &both).unwrap()), ["b2"]);
    // Not due yet: left alone.
    register(&mut q, &[in_spool("a", "a3")], 30);
    assert!(q.claim_for(3, 20, lease, &both).unwrap().is_empty());
    assert_eq!(paths(q.claim(3, 30, lease).unwrap()), ["a3"]);
}

#[test]
fn claims_never_walk_the_backlog() {
    let (_d, q) = open();
    // Every query a claim runs, as SQLite plans it: no step may read the whole table, nor
    // walk the due rows to find the rare one the daemon died with, nor read another
    // spool's (a paused one's) due rows.
    let plan_of = |sql: &str| {
        let mut stmt = q
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        for (name, value) in [(":now", 1), (":limit", 10), (":lease_until", 2)] {
            if let Some(at) = stmt.parameter_index(name).unwrap() {
                stmt.raw_bind_parameter(at, value).unwrap();
            }
        }
        let mut rows = stmt.raw_query();
        let mut plan = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            plan.push(row.get::<_, String>(3).unwrap());
        }
        plan.join("\n")
    };
    for sql in [transitions::claim_sql(), transitions::suspect_sql()] {
        let text = plan_of(&sql);
        assert!(!text.lines().any(|l| l.starts_with("SCAN files")), "{text}");
        assert!(text.contains("files_suspect"), "{text}");
    }
    for sql in [gates::DUE_UP_TO, gates::NEXT_UP_TO] {
        let text = plan_of(sql);
        assert!(
            text.contains("files_pending_id (spool=? AND id<?)"),
            "{text}"
        );
    }
    for sql in [gates::DUE_RUSHED, gates::NEXT_RUSHED] {
        let text = plan_of(sql);
        assert!(text.contains("files_rushed (spool=?"), "{text}");
    }
    for sql in [transitions::DUE_IN_SPOOL, transitions::NEXT_IN_SPOOL] {
        let text = plan_of(sql);
        assert!(!text.lines().any(|l| l.starts_with("SCAN files")), "{text}");
        assert!(
            text.contains("files_spool_due (state=? AND spool=?"),
            "{text}"
        );
        assert!(!text.contains("TEMP B-TREE"), "no sort: {text}");
    }
    // Asked for each new file of a spool that keeps its files: a look in the index of
    // kept rows, not a walk over the spool's rows.
    let text = plan_of(register::IN_FLIGHT_ALIKE);
    assert!(
        text.contains("files_waiting_alike (spool=? AND size=? AND mtime_ns=?)"),
        "{text}"
    );
    let text = plan_of(register::KEPT_ELSEWHERE);
    assert!(
        text.contains("files_kept_or_gone (spool=? AND size=? AND mtime_ns=?)"),
        "{text}"
    );
}

#[test]
fn changes_by_other_connections_are_seen_and_its_own_are_not() {
    let (d, mut q) = open();
    let mut other = Queue::open(&d.path().join("queue.db")).unwrap();
    let before = q.changes_by_others().unwrap();
    register(&mut q, &[file("a", 1)], 10);
    assert_eq!(q.changes_by_others().unwrap(), before, "its own commit");
    other.pause("orders", 10).unwrap();
    assert_ne!(q.changes_by_others().unwrap(), before, "another's commit");
}

#[test]
fn a_closed_window_lets_only_rushed_rows_through() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1), file("b", 1)], 10);
    q.rush_request("orders", "c", 7, 11).unwrap();
    // Another file's request (another inode), and one too old: neither rushes anything.
    q.rush_request("orders", "a", 99, 11).unwrap();
    register(&mut q, &[file("c", 1)], 11);
    let lease = Duration::from_secs(60);
    let closed = Eligible::gated(
        &["orders"],
        &["lake"],
        [("orders".to_string(), Gate::Closed)].into(),
    );
    assert_eq!(q.next_due_for(&closed).unwrap(), Some(11), "only c is due");
    let rows = q.claim_for(10, 20, lease, &closed).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.rel_path.as_str()).collect::<Vec<_>>(),
        ["c"]
    );
    assert!(rows[0].rushed);
    // The request was used up: the next file of that name waits like any other.
    let left: i64 = q
        .conn
        .query_row("SELECT COUNT(*) FROM rush_requests", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 1, "the request for another inode stays");
    q.rush_request("orders", "d", 7, 11).unwrap();
    register(&mut q, &[file("d", 1)], 11 + 25 * 3600 * 1000);
    assert!(
        !q.get(4).unwrap().unwrap().rushed,
        "a day-old request has expired"
    );
    assert!(q.claim_for(10, 20, lease, &closed).unwrap().is_empty());
    assert_eq!(q.next_due_for(&closed).unwrap(), None);
    // `resume --now` rushes what waits.
    assert_eq!(q.rush("orders").unwrap(), 3);
    assert_eq!(q.claim_for(10, 20, lease, &closed).unwrap().len(), 2);
}

#[test]
fn a_cadence_spool_claims_the_rows_of_ticks_taken_only() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1), file("b", 1)], 10);
    // Queued after the tick (12), before the tick was taken: not in it.
    register(&mut q, &[file("c", 1)], 14);
    let (last, _) = q.take_tick("orders", 1_000, 12, 20).unwrap();
    assert_eq!(last, 2);
    assert_eq!(
        q.take_tick("orders", 1_000, 16, 20).unwrap(),
        (2, None),
        "the same tick is taken once"
    );
    let lease = Duration::from_secs(60);
    let gated = |last_id| {
        Eligible::gated(
            &["orders"],
            &["lake"],
            [("orders".to_string(), Gate::UpTo(last_id))].into(),
        )
    };
    let rows = q.claim_for(10, 20, lease, &gated(last)).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.rel_path.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(q.claim_for(10, 20, lease, &gated(last)).unwrap().is_empty());
    assert_eq!(
        q.next_due_for(&gated(last)).unwrap(),
        None,
        "c waits for the next tick"
    );
    let (next, _) = q.take_tick("orders", 2_000, 20, 20).unwrap();
    assert_eq!(next, 3);
    assert_eq!(q.next_due_for(&gated(next)).unwrap(), Some(14));
    assert_eq!(q.claim_for(10, 20, lease, &gated(next)).unwrap().len(), 1);
}

#[test]
fn a_tick_recorded_in_the_future_is_dropped_when_the_clock_is_right_again() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1)], 10);
    // The clock four years ahead: its tick is taken and recorded.
    let future = 4 * 365 * 86_400_000;
    assert_eq!(q.take_tick("orders", future, 11, 11).unwrap(), (1, None));
    // Right again: a file queued now, then the tick of now. The future one is dropped.
    register(&mut q, &[file("b", 1)], 20);
    let (last, dropped) = q.take_tick("orders", 1_000, 25, 30).unwrap();
    assert_eq!((last, dropped), (2, Some(future)));
    // From here the cadence goes on as usual.
    register(&mut q, &[file("c", 1)], 40);
    assert_eq!(q.take_tick("orders", 1_000, 45, 50).unwrap(), (2, None));
    assert_eq!(q.take_tick("orders", 2_000, 45, 50).unwrap(), (3, None));
}

#[test]
fn rows_stamped_by_a_clock_that_ran_ahead_go_with_the_next_tick() {
    let (_d, mut q) = open();
    // Queued while the machine's clock was an hour ahead.
    register(&mut q, &[file("a", 1)], 3_600_000 + 10);
    assert_eq!(q.take_tick("orders", 1_000, 900, 1_000).unwrap(), (1, None));
}

#[test]
fn a_tick_batch_closes_once_its_files_are_delivered() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1), file("b", 1)], 10);
    q.take_tick("orders", 1_000, 10, 20).unwrap();
    let rows = q.claim(10, 20, Duration::from_secs(60)).unwrap();
    let batching = Batching {
        max_files: 100_000,
        host: "h".into(),
    };
    q.mark_done(
        rows[0].id,
        rows[0].claim,
        &delivered("\"e\""),
        Some(&batching),
        30,
    )
    .unwrap();
    let lake = ["lake".to_string()];
    assert_eq!(
        q.close_tick_batch("orders", &lake, 40).unwrap(),
        0,
        "b is still in flight"
    );
    // ... unless its destination left the config: then it waits as an orphan, and the
    // tick's batch does not wait for it.
    assert_eq!(
        q.close_tick_batch("orders", &["sea".to_string()], 41)
            .unwrap(),
        1
    );
    q.conn
        .execute("UPDATE batches SET state = 'open', closed_at = NULL", [])
        .unwrap();
    q.mark_done(
        rows[1].id,
        rows[1].claim,
        &delivered("\"e\""),
        Some(&batching),
        50,
    )
    .unwrap();
    // A file queued after the tick does not hold the batch open.
    register(&mut q, &[file("c", 1)], 55);
    assert_eq!(q.close_tick_batch("orders", &lake, 60).unwrap(), 1);
    let due = q.batches_to_write(60).unwrap();
    assert_eq!((due.len(), due[0].files), (1, 2));
}

#[test]
fn a_window_pause_keeps_the_parts_and_uncounts_the_attempt() {
    let (_d, mut q) = open();
    register(&mut q, &[file("big", 100)], 10);
    let row = q.claim(1, 20, Duration::from_secs(60)).unwrap().remove(0);
    assert_eq!(row.attempts, 1);
    q.start_upload(row.id, row.claim, "up-1", 50, Some("sha"))
        .unwrap();
    let part = StoredPart {
        number: 1,
        size: 50,
        etag: "\"p1\"".into(),
        md5: "00".into(),
    };
    q.record_part(row.id, row.claim, &part).unwrap();
    assert!(q
        .pause_for_window(Ended::unsent(row.id, row.claim), 30)
        .unwrap());
    let paused = q.get(row.id).unwrap().unwrap();
    assert_eq!((paused.state, paused.attempts), (State::Pending, 0));
    assert_eq!(paused.upload_id.as_deref(), Some("up-1"));
    assert_eq!(q.parts(row.id).unwrap().len(), 1);
    assert!(paused.last_error.is_none(), "a pause is no error");
    assert!(
        !q.pause_for_window(Ended::unsent(row.id, row.claim), 31)
            .unwrap(),
        "not held any more"
    );
}

#[test]
fn a_suspect_waits_with_its_spools_window_unless_rushed_and_runs_alone_once_claimed() {
    let (_d, mut q) = open();
    let in_spool = |spool: &str, rel: &str| {
        let mut f = file(rel, 1);
        f.spool = spool.into();
        f
    };
    register(&mut q, &[in_spool("a", "a1"), in_spool("b", "b1")], 10);
    let lease = Duration::from_secs(60);
    assert_eq!(q.claim(10, 20, lease).unwrap().len(), 2);
    // The daemon died with both: each is now a suspect, to be claimed alone.
    q.recover_after_crash(30, |_| 5).unwrap();
    register(&mut q, &[in_spool("b", "b2")], 31);
    let a_closed = Eligible::gated(
        &["a", "b"],
        &["lake"],
        [("a".to_string(), Gate::Closed)].into(),
    );
    let suspect = q.claim_suspect(40, lease, &a_closed).unwrap();
    assert_eq!(suspect[0].rel_path, "b1", "a1 waits for a's window");
    assert!(
        q.claim_for(10, 40, lease, &a_closed).unwrap().is_empty(),
        "b1 runs alone"
    );
    q.mark_done(
        suspect[0].id,
        suspect[0].claim,
        &delivered("\"e\""),
        None,
        41,
    )
    .unwrap();
    // a1 waits outside its window and holds back no other spool.
    let others = q.claim_for(10, 42, lease, &a_closed).unwrap();
    assert_eq!(others[0].rel_path, "b2");
    assert!(q.claim_suspect(42, lease, &a_closed).unwrap().is_empty());
    // Rushed, it goes, alone.
    q.mark_done(others[0].id, others[0].claim, &delivered("\"e\""), None, 43)
        .unwrap();
    q.rush("a").unwrap();
    let rushed = q.claim_suspect(44, lease, &a_closed).unwrap();
    assert_eq!(rushed[0].rel_path, "a1");
    // In flight, it counts whatever its window says: nothing runs beside it.
    register(&mut q, &[in_spool("b", "b3")], 45);
    assert!(q.claim_for(10, 50, lease, &a_closed).unwrap().is_empty());
}
