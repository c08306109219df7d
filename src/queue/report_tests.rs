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
