//! Tests of `register.rs`: what registering a file found in a spool does to the queue's rows.

use super::tests::*;
use super::*;

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
    // The file at the path is the new row's: the finisher is handed it once delivered,
    // never the superseded one's (nothing of it was delivered).
    assert!(unfinished_ids(&q).is_empty());
    q.claim(1, 15, Duration::from_secs(60)).unwrap();
    q.mark_done(2, 1, &delivered("e"), None, 16).unwrap();
    assert_eq!(unfinished_ids(&q), [2]);
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
fn a_file_restored_and_moved_while_its_row_was_tried_takes_the_vanished_row_back() {
    // Found by the chaos test: a file restored with `cp -a` (another inode) while its row
    // was tried, then its folder swapped away; the row failed as vanished. The file at
    // its new path is that row's again, so the row's next try asks HEAD first.
    for keeps in [true, false] {
        let (_d, mut q) = open();
        let rules = SpoolRules {
            keeps,
            unique_keys: true,
        };
        let reg = |q: &mut Queue, f: NewFile, gone: bool| {
            q.register(
                &[f],
                rules,
                20,
                |f, id| Ok(format!("k/{}-{id}", f.rel_path)),
                move |_, _, _| gone,
            )
            .unwrap()
        };
        reg(&mut q, file("a/x", 1), true);
        let ended = Ended {
            maybe_sent: true,
            ..Ended::unsent(1, 1)
        };
        assert_eq!(q.claim(1, 21, Duration::from_secs(60)).unwrap().len(), 1);
        assert!(q
            .mark_failed(ended, "source disappeared", Failure::Vanished, 22)
            .unwrap());
        let mut restored = file("b/x", 1);
        restored.stamp.inode = 99;
        // A copy while the old path still holds a file alike: a file of its own.
        assert!(matches!(
            reg(&mut q, restored.clone(), false)[..],
            [Registered::Queued(2)]
        ));
        let (_d, mut q) = open();
        reg(&mut q, file("a/x", 1), true);
        assert_eq!(q.claim(1, 21, Duration::from_secs(60)).unwrap().len(), 1);
        assert!(q
            .mark_failed(ended, "source disappeared", Failure::Vanished, 22)
            .unwrap());
        assert_eq!(reg(&mut q, restored, true), [Registered::Followed(1)]);
        let row = q.get(1).unwrap().unwrap();
        assert_eq!(
            (row.state, row.rel_path.as_str(), row.key.as_deref()),
            (State::Pending, "b/x", Some("k/a/x-1"))
        );
        assert!(row.maybe_sent, "its next try asks HEAD first");
        // The row is the restored file's now: its clean-up knows it by its inode (found by
        // the chaos test: with the old inode, the delivered file looked like a new one and
        // was queued on its own).
        assert_eq!(row.stamp.inode, 99);
    }
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
    let reg = register_kept;
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

/// Found by the chaos test: a kept file's PUT applied and its answer lost; while the row
/// waited, the file was restored with `cp -a` at its own path (a new inode). The retry
/// found the object and the finisher, seeing another inode at the path, recorded the row
/// `replaced`. A file alike at the path is still judged by its content, as for `gone`.
#[test]
fn a_kept_file_restored_at_its_path_while_its_row_waited_is_judged_by_content() {
    let (_d, mut q) = open();
    let reg = register_kept;
    reg(&mut q, file("a", 1), 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    let mut done = delivered("e");
    done.source_sha256 = Some("aaa".into());
    q.mark_done(1, 1, &done, None, 11).unwrap();
    q.mark_source_finished(1, SourceOutcome::Replaced, 11)
        .unwrap();
    let mut back = file("a", 1);
    back.stamp.inode = 99;
    assert_eq!(reg(&mut q, back.clone(), 12), [Registered::Lookalike(1)]);
    back.sha256 = Some("aaa".into());
    assert_eq!(reg(&mut q, back.clone(), 13), [Registered::Restored(1)]);
    let row = q.get(1).unwrap().unwrap();
    assert_eq!(row.source_outcome, Some(SourceOutcome::Kept));
    assert_eq!(row.stamp.inode, 99, "the row knows the restored file now");
    // Restored and then moved: found at its new path by its content too.
    q.mark_source_finished(1, SourceOutcome::Replaced, 14)
        .unwrap();
    let mut moved = file("sub/a", 1);
    moved.stamp.inode = 100;
    moved.sha256 = Some("aaa".into());
    assert_eq!(reg(&mut q, moved, 15), [Registered::Restored(1)]);
    // Other bytes of that size and mtime at a replaced row's path: a file of its own.
    let mut other = file("b", 2);
    reg(&mut q, other.clone(), 16);
    let b = q.claim(1, 16, Duration::from_secs(60)).unwrap()[0].id;
    let mut done = delivered("f");
    done.source_sha256 = Some("ccc".into());
    q.mark_done(b, 1, &done, None, 17).unwrap();
    q.mark_source_finished(b, SourceOutcome::Replaced, 17)
        .unwrap();
    other.stamp.inode = 101;
    other.sha256 = Some("ddd".into());
    assert!(matches!(
        reg(&mut q, other, 18)[..],
        [Registered::Queued(_)]
    ));
}

/// Review: a kept file's folder swapped for a symlink at clean-up (`replaced`), then put
/// back as it was, on a file system without birth times: the same inode, size and mtime
/// at the row's path, and nothing to tell it from a reused inode but its content.
#[test]
fn a_kept_file_put_back_without_birth_times_is_judged_by_content() {
    let (_d, mut q) = open();
    let reg = register_kept;
    for (id, outcome) in [(1, SourceOutcome::Replaced), (2, SourceOutcome::Gone)] {
        let rel = format!("d/{id}");
        reg(&mut q, file(&rel, id as u64), 10);
        q.claim(1, 10, Duration::from_secs(60)).unwrap();
        let mut done = delivered("e");
        done.source_sha256 = Some(format!("sha{id}"));
        q.mark_done(id, 1, &done, None, 11).unwrap();
        q.mark_source_finished(id, outcome, 11).unwrap();
        let mut back = file(&rel, id as u64);
        assert_eq!(reg(&mut q, back.clone(), 12), [Registered::Lookalike(id)]);
        back.sha256 = Some(format!("sha{id}"));
        assert_eq!(reg(&mut q, back.clone(), 13), [Registered::Restored(id)]);
        // Once known as kept, the same file is the kept one, without hashing again.
        back.sha256 = None;
        assert_eq!(reg(&mut q, back, 14), [Registered::Kept(id)]);
    }
    // Other bytes under a reused inode: a file of its own.
    reg(&mut q, file("e", 9), 20);
    let id = q.claim(1, 20, Duration::from_secs(60)).unwrap()[0].id;
    let mut done = delivered("f");
    done.source_sha256 = Some("old".into());
    q.mark_done(id, 1, &done, None, 21).unwrap();
    q.mark_source_finished(id, SourceOutcome::Gone, 21).unwrap();
    let mut reused = file("e", 9);
    reused.sha256 = Some("new".into());
    assert!(matches!(
        reg(&mut q, reused, 22)[..],
        [Registered::Queued(_)]
    ));
}

/// Found by the chaos test (seed 6881163041329773119): a kept file restored with `cp -a`
/// at its path while its upload ran; the upload delivered the file it had opened, and
/// the rescan saw the restored copy before the clean-up had finished the row. A row
/// delivered but not finished is a kept file's too: the content decides.
#[test]
fn a_kept_file_restored_while_its_upload_ran_is_judged_by_content_before_clean_up() {
    let (_d, mut q) = open();
    let reg = register_kept;
    reg(&mut q, file("a", 1), 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    let mut done = delivered("e");
    done.source_sha256 = Some("aaa".into());
    q.mark_done(1, 1, &done, None, 11).unwrap();
    // Not finished yet: the restored copy (another inode) is seen first.
    let mut back = file("a", 1);
    back.stamp.inode = 99;
    assert_eq!(reg(&mut q, back.clone(), 12), [Registered::Lookalike(1)]);
    back.sha256 = Some("aaa".into());
    assert_eq!(reg(&mut q, back.clone(), 13), [Registered::Restored(1)]);
    // Other bytes there: a file of its own.
    let mut other = file("a", 1);
    other.stamp.inode = 100;
    other.sha256 = Some("bbb".into());
    assert!(matches!(
        reg(&mut q, other, 14)[..],
        [Registered::Queued(_)]
    ));
}

/// The same, restored and moved to another folder before the clean-up: the copy waits
/// for the row to be finished (then its content decides), it is not queued on its own.
#[test]
fn a_kept_file_restored_and_moved_before_clean_up_waits_for_its_row() {
    let (_d, mut q) = open();
    let reg = register_kept;
    reg(&mut q, file("a", 1), 10);
    q.claim(1, 10, Duration::from_secs(60)).unwrap();
    let mut done = delivered("e");
    done.source_sha256 = Some("aaa".into());
    q.mark_done(1, 1, &done, None, 11).unwrap();
    let mut moved = file("sub/a", 1);
    moved.stamp.inode = 99;
    assert_eq!(
        reg(&mut q, moved.clone(), 12),
        [Registered::AlreadyQueued(1)]
    );
    // Cleaned up (not found at its path), the content decides.
    q.mark_source_finished(1, SourceOutcome::Gone, 13).unwrap();
    moved.sha256 = Some("aaa".into());
    assert_eq!(reg(&mut q, moved, 14), [Registered::Restored(1)]);
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

/// Registers one file in a spool that keeps its files (keys of their own per row), every
/// old path taken as moved away.
fn register_kept(q: &mut Queue, f: NewFile, now: i64) -> Vec<Registered> {
    q.register(
        &[f],
        SpoolRules {
            keeps: true,
            unique_keys: true,
        },
        now,
        |f, id| Ok(format!("k/{}-{id}", f.rel_path)),
        |_, _, _| true,
    )
    .unwrap()
}

/// A rescan that read a file's stamp before the finisher deleted it, and registers it
/// after the deletion was recorded, saw the delivered file: no second row (it would fail
/// as vanished, an error for nothing; found by the soak). Seen after the clean-up, a
/// file with the same stamp is a new one (a reused inode).
#[test]
fn a_file_seen_before_its_clean_up_is_not_queued_again() {
    let (_d, mut q) = open();
    let mut seen = file("a", 1);
    register(&mut q, &[seen.clone()], 10);
    let id = q.claim(1, 10, Duration::from_secs(60)).unwrap()[0].id;
    q.mark_done(id, 1, &delivered("e"), None, 11).unwrap();
    q.mark_sources_finished(&[(id, "/spool/a".into(), SourceOutcome::Deleted)], 20)
        .unwrap();
    seen.seen_at_ms = 15;
    assert_eq!(
        register(&mut q, &[seen.clone()], 21),
        [Registered::CleanedUpSince(id)]
    );
    assert_eq!(q.last_id().unwrap(), id, "no second row");
    seen.seen_at_ms = 25;
    assert_eq!(
        register(&mut q, &[seen], 26),
        [Registered::Queued(id + 1)],
        "seen after its clean-up: a new file"
    );
}

/// A spool with two destinations: each file is one source with a delivery to each, made in
/// one transaction with consecutive ids; a key one route cannot make fails that delivery
/// alone; and the source is handed to the clean-up only once every delivery is done.
#[test]
fn a_file_of_two_routes_is_one_source_with_a_delivery_to_each() {
    let (_d, mut q) = open();
    let routes = [
        RouteRules {
            destination: "lake".into(),
            bucket: "acme".into(),
            unique_keys: false,
        },
        RouteRules {
            destination: "mirror".into(),
            bucket: "backup".into(),
            unique_keys: true,
        },
    ];
    let reg = |q: &mut Queue, files: &[NewFile], now| {
        q.register_to(
            files,
            SpoolRules::default(),
            &routes,
            now,
            &mut |f, route, id| match (f.rel_path.as_str(), route.destination.as_str()) {
                ("bad", "mirror") => Err("no key for mirror".into()),
                (rel, dest) => Ok(format!("{dest}/{rel}-{id}")),
            },
            |_, _, _| false,
        )
        .unwrap()
    };
    assert_eq!(
        reg(&mut q, &[file("a", 1), file("b", 2)], 10),
        [Registered::Queued(1), Registered::Queued(3)]
    );
    let delivery = |q: &Queue, id| {
        let row = q.get(id).unwrap().unwrap();
        (
            row.rel_path,
            row.destination,
            row.bucket,
            row.key.unwrap_or_default(),
            row.state,
        )
    };
    assert_eq!(
        (1..=4).map(|id| delivery(&q, id)).collect::<Vec<_>>(),
        [
            (
                "a".into(),
                "lake".into(),
                "acme".into(),
                "lake/a-1".into(),
                State::Pending
            ),
            (
                "a".into(),
                "mirror".into(),
                "backup".into(),
                "mirror/a-2".into(),
                State::Pending
            ),
            (
                "b".into(),
                "lake".into(),
                "acme".into(),
                "lake/b-3".into(),
                State::Pending
            ),
            (
                "b".into(),
                "mirror".into(),
                "backup".into(),
                "mirror/b-4".into(),
                State::Pending
            ),
        ]
    );
    let source = |q: &Queue, id: i64| -> (i64, i64) {
        q.conn
            .query_row(
                "SELECT deliveries, unsettled FROM sources WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    assert_eq!(source(&q, 1), (2, 2));
    // A key the second route cannot make: that delivery fails, the first one goes.
    assert_eq!(reg(&mut q, &[file("bad", 3)], 11), [Registered::Queued(5)]);
    assert_eq!(q.get(5).unwrap().unwrap().state, State::Pending);
    let refused = q.get(6).unwrap().unwrap();
    assert_eq!(refused.state, State::Failed);
    assert_eq!(refused.last_error.as_deref(), Some("no key for mirror"));
    assert_eq!(source(&q, 5), (2, 2));
    // The next file's ids follow on.
    assert_eq!(reg(&mut q, &[file("c", 4)], 12), [Registered::Queued(7)]);

    // Delivered to one destination, the source waits for the other.
    let lease = Duration::from_secs(60);
    let mut claimed: Vec<i64> = q
        .claim(10, 20, lease)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    claimed.sort();
    assert_eq!(claimed, [1, 2, 3, 4, 5, 7, 8]);
    q.mark_done(1, 1, &delivered("e1"), None, 21).unwrap();
    q.mark_done(5, 1, &delivered("e5"), None, 21).unwrap();
    assert!(
        unfinished_ids(&q).is_empty(),
        "a delivery of each is not done yet"
    );
    assert_eq!(source(&q, 1), (2, 1));
    q.mark_done(2, 1, &delivered("e2"), None, 22).unwrap();
    assert_eq!(unfinished_ids(&q), [1], "both destinations have it");
    // The refused delivery keeps its source (until a retry or an abandon).
    assert_eq!(source(&q, 5), (2, 1));
}
