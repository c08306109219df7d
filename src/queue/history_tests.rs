use super::tests::*;
use super::*;
use rusqlite::params;

/// A row delivered at `done_at` and finished with `outcome`.
fn delivered_row(q: &mut Queue, rel: &str, done_at: i64, outcome: SourceOutcome) -> i64 {
    register(q, &[file(rel, 1)], done_at);
    let id = q.claim(1, done_at, Duration::from_secs(60)).unwrap()[0].id;
    q.mark_done(id, 1, &delivered("e"), None, done_at).unwrap();
    q.mark_source_finished(id, outcome, done_at).unwrap();
    id
}

#[test]
fn only_rows_nothing_in_a_spool_needs_are_forgotten_and_what_goes_is_remembered() {
    let (_d, mut q) = open();
    let deleted = delivered_row(&mut q, "deleted", 100, SourceOutcome::Deleted);
    let archived = delivered_row(&mut q, "archived", 100, SourceOutcome::Archived);
    let kept = delivered_row(&mut q, "kept", 100, SourceOutcome::Kept);
    let gone = delivered_row(&mut q, "gone", 100, SourceOutcome::Gone);
    let replaced = delivered_row(&mut q, "replaced", 100, SourceOutcome::Replaced);
    let recent = delivered_row(&mut q, "recent", 5_000, SourceOutcome::Deleted);
    let waiting = {
        register(&mut q, &[file("waiting", 1)], 100);
        q.last_id().unwrap()
    };
    assert_eq!(
        q.forget_delivered(1_000, 1, 9_000).unwrap(),
        1,
        "a batch at a time"
    );
    assert_eq!(q.forget_delivered(1_000, 100, 9_000).unwrap(), 1);
    assert_eq!(q.forget_delivered(1_000, 100, 9_000).unwrap(), 0);
    for id in [deleted, archived] {
        assert!(q.get(id).unwrap().is_none(), "{id} forgotten");
        assert!(q.attempts_of(id).unwrap().is_empty(), "its history too");
    }
    for id in [kept, gone, replaced, recent, waiting] {
        assert!(q.get(id).unwrap().is_some(), "{id} stays");
    }
    // The sweep still knows the keys; verify knows how far the forgetting reached.
    let remembered: i64 = q
        .conn
        .query_row("SELECT COUNT(*) FROM purged_keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(remembered, 2);
    // Dated by their delivery (and a margin for a request still on its way), not by
    // when they were forgotten: a sweep that leaves uploads younger than that alone
    // already covers every orphan under them.
    let dated: Vec<i64> = q
        .conn
        .prepare("SELECT purged_at FROM purged_keys")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(dated, [9_000, 9_000], "no later than now");
    let margin = 10 * 60 * 1000;
    let long_ago = delivered_row(&mut q, "long-ago", 1_000, SourceOutcome::Deleted);
    let now = 1_000 + 2 * margin;
    assert_eq!(q.forget_delivered(2_000, 100, now).unwrap(), 1);
    assert!(q.get(long_ago).unwrap().is_none());
    // Forgotten at `now`, it is dated before a sweep cut-off far earlier than that.
    assert_eq!(
        q.swept("lake", 1_000 + margin + 1).unwrap(),
        3,
        "forgotten by the sweep after its delivery and margin, not an hour after now"
    );
    assert_eq!(q.purge_horizon("acme").unwrap(), Some(1_000));
    assert_eq!(
        q.oldest_row_at().unwrap(),
        Some(100),
        "the kept row is the oldest now"
    );
}

/// A clean sweep that reached past a row's delivery (and the margin) aborted every
/// orphan under its key: forgetting the row keeps no key. A row delivered after the
/// horizon still leaves its key for the next sweep.
#[test]
fn a_row_delivered_before_a_clean_sweep_reached_keeps_no_key() {
    let (_d, mut q) = open();
    let margin = 10 * 60 * 1000;
    let early = delivered_row(&mut q, "early", 1_000, SourceOutcome::Deleted);
    let late = delivered_row(&mut q, "late", 50_000, SourceOutcome::Deleted);
    // A sweep reached past the early row's delivery and margin, not the late one's.
    assert_eq!(q.swept("lake", 1_000 + margin + 1).unwrap(), 0);
    // A later sweep that reached less far does not move the horizon back.
    q.swept("lake", 500).unwrap();
    let now = 50_000 + 2 * margin;
    assert_eq!(q.forget_delivered(60_000, 100, now).unwrap(), 2);
    for id in [early, late] {
        assert!(q.get(id).unwrap().is_none());
    }
    let keys = |q: &Queue| -> Vec<String> {
        q.conn
            .prepare("SELECT key FROM purged_keys ORDER BY key")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    assert_eq!(
        keys(&q),
        [format!("k/late-{late}")],
        "only the late row's key"
    );
    // A horizon ahead of now (the clock jumped back since that sweep) is not trusted
    // for rows forgotten later (the keys that sweep let go are gone).
    q.swept("lake", now * 10).unwrap();
    let jumped = delivered_row(&mut q, "jumped", 50_000, SourceOutcome::Deleted);
    q.forget_delivered(60_000, 100, now).unwrap();
    assert!(q.get(jumped).unwrap().is_none());
    assert!(keys(&q).contains(&format!("k/jumped-{jumped}")));
    // Another destination's horizon says nothing of this one's.
    q.swept("elsewhere", now).unwrap();
    let other = delivered_row(&mut q, "other", 50_000, SourceOutcome::Deleted);
    q.forget_delivered(60_000, 100, now).unwrap();
    assert!(q.get(other).unwrap().is_none());
    assert_eq!(
        keys(&q),
        [format!("k/jumped-{jumped}"), format!("k/other-{other}")]
    );
}

#[test]
fn a_row_of_a_manifest_not_yet_written_stays() {
    let (_d, mut q) = open();
    let id = delivered_row(&mut q, "a", 100, SourceOutcome::Deleted);
    q.conn
        .execute_batch(
            "INSERT INTO batches (id, name, spool, destination, bucket, host, state, opened_at)
             VALUES (7, 'b7', 'orders', 'lake', 'acme', 'h', 'closed', 100);
             UPDATE files SET batch_id = 7;",
        )
        .unwrap();
    assert_eq!(q.forget_delivered(1_000, 100, 9_000).unwrap(), 0);
    q.conn
        .execute("UPDATE batches SET state = 'written', written_at = 200", [])
        .unwrap();
    assert_eq!(q.forget_delivered(1_000, 100, 9_000).unwrap(), 1);
    assert!(q.get(id).unwrap().is_none());
    assert_eq!(
        q.forget_empty_batches(1_000).unwrap(),
        1,
        "its empty batch goes too"
    );
}

#[test]
fn forgetting_gives_the_space_back_to_the_file_system() {
    let (_d, mut q) = open();
    assert!(q.gives_space_back().unwrap(), "a new queue is made so");
    // 20,000 delivered rows, written directly (the SQL is not under test here).
    q.conn
        .execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
             INSERT INTO files (spool, rel_path, path, destination, bucket, key, state, size,
                 mtime_ns, inode, next_attempt_at, queued_at, updated_at, done_at,
                 source_finished_at, source_outcome, sha256, etag)
             SELECT 'orders', 'some/rather/long/path/file-' || i, '/spool/some/rather/long/path/file-' || i,
                 'lake', 'acme', 'inbound/orders/some/rather/long/path/file-' || i, 'done', 1,
                 1, i, 0, 100, 100, 100, 100, 'deleted', hex(randomblob(32)), hex(randomblob(16))
             FROM n",
            params![],
        )
        .unwrap();
    q.conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let before = q.file_size().unwrap();
    let mut forgotten = 0;
    loop {
        let n = q.forget_delivered(1_000, FORGET_BATCH, 9_000).unwrap();
        if n == 0 {
            break;
        }
        forgotten += n;
    }
    assert_eq!(forgotten, 20_000);
    let after = q.release_space(1 << 20).unwrap();
    assert!(
        after * 3 < before,
        "the file shrank: {before} bytes before, {after} after"
    );
}

#[test]
fn an_older_queue_is_converted_once_to_give_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    {
        // A queue made before bounded histories: auto_vacuum off.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA auto_vacuum = NONE; CREATE TABLE t (x);")
            .unwrap();
    }
    let mut q = Queue::open(&path).unwrap();
    assert!(!q.gives_space_back().unwrap());
    q.convert_to_incremental_vacuum().unwrap();
    assert!(q.gives_space_back().unwrap());
    drop(q);
    assert!(Queue::open(&path).unwrap().gives_space_back().unwrap());
}
