//! Tests of `gates.rs`: windows, cadence ticks and rush requests gating what is claimed.

use super::tests::*;
use super::*;

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
