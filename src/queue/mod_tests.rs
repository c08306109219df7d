//! Tests of `mod.rs`: opening (also read-only), file stamps, enums' text, others' changes.

use super::tests::*;
use super::*;

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

/// A queue as a newer s3spool would leave it: one schema version past this build's.
fn newer_queue() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    drop(Queue::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", latest_version() + 1)
        .unwrap();
    (dir, path)
}

#[test]
fn a_schema_newer_than_this_build_is_refused() {
    let (_dir, path) = newer_queue();
    let e = Queue::open(&path).err().expect("refused").to_string();
    assert!(e.contains("newer than this s3spool"), "{e}");
}

#[test]
fn a_schema_newer_than_this_build_is_refused_for_reading_too() {
    let (_dir, path) = newer_queue();
    let e = Queue::open_read_only(&path)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains(&format!("schema version {}", latest_version() + 1))
            && e.contains("a newer s3spool wrote it"),
        "{e}"
    );
    // Not the advice for an older queue, which this build would upgrade.
    assert!(!e.contains("start the daemon of this version"), "{e}");
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
fn changes_by_other_connections_are_seen_and_its_own_are_not() {
    let (d, mut q) = open();
    let mut other = Queue::open(&d.path().join("queue.db")).unwrap();
    let before = q.changes_by_others().unwrap();
    register(&mut q, &[file("a", 1)], 10);
    assert_eq!(q.changes_by_others().unwrap(), before, "its own commit");
    other.pause("orders", 10).unwrap();
    assert_ne!(q.changes_by_others().unwrap(), before, "another's commit");
}
