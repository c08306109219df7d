//! `maybe_sent`, path by path: every transition that puts a row back keeps it when it is
//! set, sets it when the attempt says so, in the same statement; the recoveries (a stop,
//! a crash, a lease that ran out) set it; a row following its moved file keeps it; only a
//! delivery clears it.

use super::tests::file;
use super::*;

fn open() -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(&dir.path().join("queue.db")).unwrap();
    (dir, queue)
}

/// One row, claimed: (id, claim).
fn claimed(q: &mut Queue, rel: &str, now: i64) -> (i64, i64) {
    q.register(
        &[file(rel, 1)],
        SpoolRules::default(),
        now,
        |f, id| Ok(format!("k/{}-{id}", f.rel_path)),
        |_, _, _| false,
    )
    .unwrap();
    let rows = q.claim(10, now, Duration::from_secs(60)).unwrap();
    let row = rows.iter().find(|r| r.rel_path == rel).expect("claimed");
    (row.id, row.claim)
}

fn maybe_sent(q: &Queue, id: i64) -> bool {
    q.get(id).unwrap().unwrap().maybe_sent
}

fn set_maybe_sent(q: &Queue, id: i64) {
    q.conn
        .execute("UPDATE files SET maybe_sent = 1 WHERE id = ?1", [id])
        .unwrap();
}

/// Each way back to `pending` (or `failed`) a delivery attempt can take.
type PutBack = fn(&mut Queue, Ended, i64) -> bool;

const PUT_BACKS: [(&str, PutBack); 6] = [
    ("retry", |q, e, now| {
        q.retry_later(e, "503", now + 1, now).unwrap()
    }),
    ("held back", |q, e, now| {
        q.release(e, "no answer", now + 1, now).unwrap()
    }),
    ("window pause", |q, e, now| {
        q.pause_for_window(e, now).unwrap()
    }),
    ("changed", |q, e, now| {
        let stamp = FileStamp {
            size: 2,
            mtime_ns: 2,
            inode: 7,
        };
        q.requeue_changed(e, stamp, None, now + 1, now).unwrap()
    }),
    ("failed", |q, e, now| {
        q.mark_failed(e, "denied", Failure::Refused, now).unwrap()
    }),
    // `s3spool retry` after a failure: the row waits again, its flag as it was.
    ("failed, then retried", |q, e, now| {
        q.mark_failed(e, "denied", Failure::Refused, now).unwrap()
            && q.retry(Some(&[e.id]), now).unwrap() == [e.id]
    }),
];

#[test]
fn every_way_back_keeps_a_maybe_sent_row_so_and_records_a_new_one() {
    let (_dir, mut q) = open();
    for (n, (path, put_back)) in PUT_BACKS.iter().enumerate() {
        let now = 10 + n as i64 * 10;
        // Set by an earlier attempt: an attempt that sent nothing keeps it.
        let (id, claim) = claimed(&mut q, &format!("kept-{n}"), now);
        set_maybe_sent(&q, id);
        assert!(put_back(&mut q, Ended::unsent(id, claim), now), "{path}");
        assert!(
            maybe_sent(&q, id),
            "{path}: an earlier attempt's flag is kept"
        );
        // Set by this attempt: written with the row's way back.
        let (id, claim) = claimed(&mut q, &format!("new-{n}"), now);
        let ended = Ended {
            id,
            claim,
            maybe_sent: true,
        };
        assert!(put_back(&mut q, ended, now), "{path}");
        assert!(
            maybe_sent(&q, id),
            "{path}: this attempt's flag is recorded"
        );
        // Neither: nothing to ask.
        let (id, claim) = claimed(&mut q, &format!("clean-{n}"), now);
        assert!(put_back(&mut q, Ended::unsent(id, claim), now), "{path}");
        assert!(!maybe_sent(&q, id), "{path}: no HEAD owed");
    }
}

#[test]
fn a_stop_a_crash_and_a_lease_that_ran_out_each_leave_rows_to_ask_first() {
    let (_dir, mut q) = open();
    let (stopped, _) = claimed(&mut q, "stopped", 10);
    q.recover_active(11).unwrap();
    assert!(maybe_sent(&q, stopped), "a stop");
    let (expired, _) = claimed(&mut q, "expired", 20);
    q.reap_expired(20 + 61_000).unwrap();
    assert!(maybe_sent(&q, expired), "a lease that ran out");
    // Last: a row the daemon died with is claimed alone, before any other.
    let (crashed, _) = claimed(&mut q, "crashed", 70_000);
    q.recover_after_crash(70_001, |_| 5).unwrap();
    assert!(maybe_sent(&q, crashed), "a crash");
}

#[test]
fn a_row_following_its_moved_file_keeps_its_flag_and_a_delivery_clears_it() {
    let (_dir, mut q) = open();
    let (id, claim) = claimed(&mut q, "a", 10);
    assert!(q
        .retry_later(
            Ended {
                id,
                claim,
                maybe_sent: true
            },
            "no answer",
            11,
            11
        )
        .unwrap());
    let mut moved = file("b", 1);
    moved.stamp = q.get(id).unwrap().unwrap().stamp;
    let followed = q
        .register(
            &[moved],
            SpoolRules {
                keeps: false,
                unique_keys: true,
            },
            12,
            |f, id| Ok(format!("k/{}-{id}", f.rel_path)),
            |_, _, _| true,
        )
        .unwrap();
    assert_eq!(followed, [Registered::Followed(id)]);
    let row = q.get(id).unwrap().unwrap();
    assert_eq!((row.rel_path.as_str(), row.maybe_sent), ("b", true));
    assert_eq!(
        row.key.as_deref(),
        Some("k/a-1"),
        "the key where the object may be"
    );
    let claim = q.claim(1, 13, Duration::from_secs(60)).unwrap()[0].claim;
    let done = Done {
        etag: "e".into(),
        sha256: "s".into(),
        source_sha256: None,
        object_size: 1,
        rows: None,
        format: "raw".into(),
    };
    assert!(q.mark_done(id, claim, &done, None, 14).unwrap());
    assert!(!maybe_sent(&q, id));
}

#[test]
fn a_failed_row_that_may_have_sent_follows_its_moved_file_and_stays_failed() {
    // A lost answer, then a refusal that fails the row (a policy denying the key).
    let failed = || {
        let (dir, mut q) = open();
        let (id, claim) = claimed(&mut q, "a", 10);
        let ended = Ended {
            id,
            claim,
            maybe_sent: true,
        };
        assert!(q
            .mark_failed(ended, "AccessDenied", Failure::Refused, 11)
            .unwrap());
        (dir, q, id)
    };
    let mut moved = file("sub/a", 1);
    moved.stamp = file("a", 1).stamp;
    let register_moved = |q: &mut Queue, unique_keys: bool| {
        q.register(
            &[moved.clone()],
            SpoolRules {
                keeps: false,
                unique_keys,
            },
            12,
            |f, id| Ok(format!("k/{}-{id}", f.rel_path)),
            |_, _, _| true,
        )
        .unwrap()
    };
    // Keys made from the path alone: a new file at the old path would take the old key,
    // so the moved file gets a row of its own (and the failed row is superseded).
    let (_dir, mut q, id) = failed();
    assert_eq!(register_moved(&mut q, false), [Registered::Queued(id + 1)]);
    assert_eq!(q.get(id).unwrap().unwrap().superseded_by, Some(id + 1));
    // Keys unique per row: not a new file, since a row of its own would send again what
    // S3 may hold.
    let (_dir, mut q, id) = failed();
    assert_eq!(
        register_moved(&mut q, true),
        [Registered::FollowedFailed(id)]
    );
    let row = q.get(id).unwrap().unwrap();
    assert_eq!(
        (
            row.state,
            row.rel_path.as_str(),
            row.key.as_deref(),
            row.maybe_sent
        ),
        (State::Failed, "sub/a", Some("k/a-1"), true)
    );
    // Retried, it is sent from where the file is now, asking HEAD first.
    assert_eq!(q.retry_failed(13).unwrap(), [id]);
    let row = q.claim(1, 14, Duration::from_secs(60)).unwrap().remove(0);
    assert_eq!(
        (row.id, row.rel_path.as_str(), row.maybe_sent),
        (id, "sub/a", true)
    );
}

#[test]
fn a_row_refused_before_any_try_does_not_follow_a_moved_file() {
    let (_dir, mut q) = open();
    let refused = q
        .register(
            &[file("a", 1)],
            SpoolRules::default(),
            10,
            |_, _| Err("the key would be too long".into()),
            |_, _, _| false,
        )
        .unwrap();
    assert_eq!(refused, [Registered::Refused(1)]);
    // Nothing of it can be in S3: the file, moved, is a new row with a key of its path.
    let again = q
        .register(
            &[file("b", 1)],
            SpoolRules::default(),
            11,
            |f, id| Ok(format!("k/{}-{id}", f.rel_path)),
            |_, _, _| true,
        )
        .unwrap();
    assert_eq!(again, [Registered::Queued(2)]);
}

#[test]
fn a_pending_row_that_may_have_sent_keeps_its_stamp_when_its_file_is_replaced() {
    let (_dir, mut q) = open();
    let (id, claim) = claimed(&mut q, "a", 10);
    let ended = Ended {
        id,
        claim,
        maybe_sent: true,
    };
    assert!(q.release(ended, "no answer", 11, 11).unwrap());
    let mut replaced = file("a", 5);
    replaced.stamp.inode = 8;
    let seen = q
        .register(
            &[replaced],
            SpoolRules::default(),
            12,
            |f, id| Ok(format!("k/{}-{id}", f.rel_path)),
            |_, _, _| false,
        )
        .unwrap();
    assert_eq!(seen, [Registered::AlreadyQueued(id)]);
    // The next attempt compares the old stamp with the file and asks HEAD first.
    assert_eq!(q.get(id).unwrap().unwrap().stamp, file("a", 1).stamp);
}

#[test]
fn an_earlier_version_delivered_is_done_and_the_file_now_there_is_a_new_row() {
    let (_dir, mut q) = open();
    let (id, claim) = claimed(&mut q, "a", 10);
    let done = Done {
        etag: "e".into(),
        sha256: "old".into(),
        source_sha256: None,
        object_size: 1,
        rows: None,
        format: "raw".into(),
    };
    let mut later = file("a", 5);
    later.stamp.inode = 8;
    let made = q
        .mark_earlier_delivered(
            Ended::unsent(id, claim),
            &done,
            None,
            (&later, SpoolRules::default()),
            20,
            |f, id| Ok(format!("k/{}-{id}", f.rel_path)),
        )
        .unwrap();
    assert_eq!(made, Some(Registered::Queued(id + 1)));
    let first = q.get(id).unwrap().unwrap();
    assert_eq!(first.state, State::Done);
    assert_eq!(first.source_outcome, Some(SourceOutcome::Superseded));
    assert!(first.source_finished_at.is_some(), "nothing to clean up");
    let second = q.get(id + 1).unwrap().unwrap();
    assert_eq!(
        (second.state, second.key.as_deref()),
        (State::Pending, Some("k/a-2"))
    );
    // Seen again by a rescan: the new row's file, already queued.
    let again = q
        .register(
            &[later],
            SpoolRules::default(),
            21,
            |f, id| Ok(format!("k/{}-{id}", f.rel_path)),
            |_, _, _| false,
        )
        .unwrap();
    assert_eq!(again, [Registered::AlreadyQueued(id + 1)]);
    // A stale claim changes nothing.
    let stale = q
        .mark_earlier_delivered(
            Ended::unsent(id, claim),
            &done,
            None,
            (&file("a", 9), SpoolRules::default()),
            22,
            |f, id| Ok(format!("k/{}-{id}", f.rel_path)),
        )
        .unwrap();
    assert_eq!(stale, None);
}
