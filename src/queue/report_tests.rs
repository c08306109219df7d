//! Tests of `report.rs`: status summary, list, retry and purge.

use super::tests::*;
use super::*;

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
        q.purge_done(50, |_| false, false, 0).unwrap(),
        (0, 0),
        "done_at 50 is not before 50"
    );
    assert_eq!(
        q.purge_done(51, |_| true, false, 0).unwrap(),
        (0, 1),
        "kept rows stay"
    );
    assert_eq!(
        q.purge_done(51, |_| false, true, 0).unwrap(),
        (1, 0),
        "dry run"
    );
    assert_eq!(q.purge_done(51, |_| false, false, 0).unwrap(), (1, 0));
    assert_eq!(q.purge_done(51, |_| false, false, 0).unwrap(), (0, 0));
    assert!(q.get(1).unwrap().is_none());

    let listed = q
        .list(&ListFilter {
            state: Some(State::Pending),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(listed.iter().map(|r| r.id).collect::<Vec<_>>(), vec![2, 4]);
    for (destination, expected) in [("lake", vec![2, 4]), ("mirror", vec![])] {
        let listed = q
            .list(&ListFilter {
                state: Some(State::Pending),
                destination: Some(destination.into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            listed.iter().map(|r| r.id).collect::<Vec<_>>(),
            expected,
            "{destination}"
        );
    }
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
    assert_eq!(q.purge_done(100, |_| false, false, 0).unwrap(), (3, 0));
    assert_eq!(
        register(&mut q, &[file("d", 4)], 200),
        vec![Registered::Queued(4)]
    );
}

/// The tallies the triggers keep, against a count of the rows themselves.
fn tallies_match_the_rows(q: &Queue) {
    let counted: Vec<(String, String, String, i64, i64)> = q
        .select(
            "SELECT spool, destination, state, COUNT(*), SUM(size) FROM files
             WHERE superseded_by IS NULL GROUP BY spool, destination, state
             ORDER BY spool, destination, state",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    let tallied: Vec<(String, String, String, i64, i64)> = q
        .tallies()
        .unwrap()
        .into_iter()
        .map(|t| {
            (
                t.spool,
                t.destination,
                t.state.as_str().to_string(),
                t.files as i64,
                t.bytes as i64,
            )
        })
        .collect();
    assert_eq!(tallied, counted);
}

#[test]
fn the_tallies_follow_every_write_of_a_row() {
    let (_d, mut q) = open();
    register(
        &mut q,
        &[file("a", 10), file("b", 20), file("c", 30), file("d", 40)],
        10,
    );
    tallies_match_the_rows(&q);
    q.claim(3, 10, Duration::from_secs(60)).unwrap();
    tallies_match_the_rows(&q);
    q.mark_done(1, 1, &delivered("e"), None, 50).unwrap();
    q.mark_source_finished(1, SourceOutcome::Deleted, 50)
        .unwrap();
    q.mark_failed(Ended::unsent(2, 1), "AccessDenied", Failure::Refused, 51)
        .unwrap();
    q.release(Ended::unsent(3, 1), "SlowDown", 52, 52).unwrap();
    tallies_match_the_rows(&q);
    // A failed row's file comes again, changed: the new row supersedes the failed one.
    let mut b = file("b", 25);
    b.stamp.mtime_ns = 2;
    register(&mut q, &[b], 60);
    assert!(q.get(2).unwrap().unwrap().superseded_by.is_some());
    tallies_match_the_rows(&q);
    q.retry_failed(61).unwrap();
    q.purge_done(100, |_| false, false, 0).unwrap();
    tallies_match_the_rows(&q);
    let counts = q.summary().unwrap().counts;
    assert_eq!(
        counts,
        Counts {
            pending: 3,
            active: 0,
            done: 0,
            failed: 0
        }
    );
    assert_eq!(q.waiting_counts().unwrap(), counts);
}

#[test]
fn the_oldest_waiting_row_is_the_first_that_came_even_if_the_clock_went_back() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1)], 5_000);
    // The clock jumped back an hour before "b" came: "a" still waited longest.
    register(&mut q, &[file("b", 1)], 1_000);
    assert_eq!(q.summary().unwrap().oldest_waiting_queued_at, Some(5_000));
    // In flight, "b" is the oldest waiting by its own time.
    let claimed = q.claim(2, 6_000, Duration::from_secs(60)).unwrap();
    assert_eq!(claimed.len(), 2);
    let a = claimed.iter().find(|r| r.id == 1).unwrap();
    q.release(Ended::unsent(1, a.claim), "SlowDown", 6_000, 6_000)
        .unwrap();
    assert_eq!(q.summary().unwrap().oldest_waiting_queued_at, Some(1_000));
}
