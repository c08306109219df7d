//! Tests of `transitions.rs`: claims, state changes, leases, recovery after a stop or crash.

use super::tests::*;
use super::*;

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
fn a_clean_up_is_recorded_only_for_the_path_it_was_done_at() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1), file("b", 2)], 10);
    for id in 1..=2 {
        q.claim(1, 10, Duration::from_secs(60)).unwrap();
        q.mark_done(id, 1, &delivered("e"), None, 11).unwrap();
    }
    assert_eq!(unfinished_ids(&q), [1, 2]);
    assert_eq!(
        q.unfinished_sources(1, 10).unwrap()[0].id,
        2,
        "a page starts after its cursor"
    );
    // Row 2's file moved (a rescan made the row follow it) while its old path was cleaned.
    q.conn
        .execute(
            "UPDATE sources SET path = '/spool/moved/b' WHERE id = 2",
            [],
        )
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
    let text = plan_of(register::VANISHED_ALIKE);
    assert!(
        text.contains("files_vanished_alike (spool=? AND size=? AND mtime_ns=?)"),
        "{text}"
    );
    let text = plan_of(register::KEPT_ELSEWHERE);
    assert!(
        text.contains("files_done_alike (spool=? AND size=? AND mtime_ns=?)"),
        "{text}"
    );
    // Asked for every file found: the sources at its path, and of its inode, then their
    // deliveries by their range of ids.
    for (sql, index) in [
        (register::AT_PATH, "sources_path (spool=? AND rel_path=?)"),
        (register::ELSEWHERE, "sources_inode (spool=? AND inode=?)"),
    ] {
        let text = plan_of(sql);
        assert!(text.contains(index), "{text}");
        assert!(
            text.contains("SEARCH f USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"),
            "{text}"
        );
        assert!(!text.lines().any(|l| l.starts_with("SCAN")), "{text}");
    }
    // Each pass of the finisher: the ready sources alone, and their deliveries by range.
    let text = plan_of(report::READY_SOURCES);
    assert!(text.contains("sources_ready"), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("SCAN")), "{text}");
    assert!(!text.contains("TEMP B-TREE"), "no sort: {text}");
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
