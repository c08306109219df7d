//! Helpers shared by the queue's test modules (`*_tests.rs`): a fresh queue, a file found in a
//! spool, registering files, a delivery, and a few direct reads and writes of rows.

use super::*;
use rusqlite::params;

pub(super) fn open() -> (tempfile::TempDir, Queue) {
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
        // Seen after anything a test records (see `Registered::CleanedUpSince`).
        seen_at_ms: i64::MAX,
        sha256: None,
    }
}

/// Ids of the delivered rows whose clean-up is still to do.
pub(super) fn unfinished_ids(q: &Queue) -> Vec<i64> {
    q.unfinished_done(0, 10)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect()
}

pub(super) fn delivered(etag: &str) -> Done {
    Done {
        etag: etag.into(),
        sha256: "sha".into(),
        source_sha256: None,
        object_size: 1,
        rows: None,
        format: "raw".into(),
    }
}

pub(super) fn register(q: &mut Queue, files: &[NewFile], now: i64) -> Vec<Registered> {
    q.register(
        files,
        SpoolRules::default(),
        now,
        |f, id| Ok(format!("k/{}-{id}", f.rel_path)),
        |_, _, _| false,
    )
    .unwrap()
}

pub(super) fn set_key(q: &Queue, id: i64, key: &str) {
    q.conn
        .execute("UPDATE files SET key = ?2 WHERE id = ?1", params![id, key])
        .unwrap();
}
