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
    q.unfinished_sources(0, 10)
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

/// Every queue a unit test leaves behind is checked: the sources and the copies their
/// deliveries keep agree (a write to a copy alone, or an `unsettled` count gone wrong,
/// fails the test that made it).
impl Drop for Queue {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let has_sources: bool = self
            .conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'sources')",
                [],
                |r| r.get(0),
            )
            .unwrap_or(false);
        if has_sources {
            let disagree = sources_disagree(&self.conn);
            assert!(
                disagree.is_empty(),
                "sources and deliveries disagree: {disagree:#?}"
            );
        }
    }
}

/// What is wrong between `sources` and `files`, a line each.
pub(super) fn sources_disagree(conn: &rusqlite::Connection) -> Vec<String> {
    let lines = |sql: &str| -> Vec<String> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    let mut found = lines(
        "SELECT 'delivery ' || id || ' has no source' FROM files
         WHERE source_id IS NULL OR source_id NOT IN (SELECT id FROM sources)",
    );
    found.extend(lines(
        "SELECT 'source ' || id || ' has no delivery' FROM sources AS s
         WHERE NOT EXISTS (SELECT 1 FROM files WHERE source_id = s.id)",
    ));
    found.extend(lines(
        "SELECT 'delivery ' || f.id || ' lies outside the ids of its source ' || s.id
         FROM files AS f JOIN sources AS s ON s.id = f.source_id
         WHERE f.id < s.id OR f.id >= s.id + s.deliveries",
    ));
    found.extend(lines(
        "SELECT 'source ' || id || ' counts ' || unsettled || ' unsettled, not ' || n
         FROM (SELECT s.id, s.unsettled,
                      (SELECT COUNT(*) FROM files AS f WHERE f.source_id = s.id
                       AND f.state != 'done' AND f.superseded_by IS NULL) AS n
               FROM sources AS s)
         WHERE unsettled != n",
    ));
    found.extend(lines(
        "SELECT 'source ' || id || CASE WHEN superseded_by IS NULL
                THEN ' is not superseded, though every delivery is'
                ELSE ' is superseded, though a delivery is not' END
         FROM sources AS s
         WHERE (superseded_by IS NULL) = NOT EXISTS (SELECT 1 FROM files AS f
                WHERE f.id >= s.id AND f.id < s.id + s.deliveries AND f.source_id = s.id
                  AND f.superseded_by IS NULL)",
    ));
    found.extend(lines(
        "SELECT 'delivery ' || f.id || ' copies its source ' || s.id || ' wrongly'
         FROM files AS f JOIN sources AS s ON s.id = f.source_id
         WHERE f.spool IS NOT s.spool OR f.rel_path IS NOT s.rel_path OR f.path IS NOT s.path
            OR f.size IS NOT s.size OR f.mtime_ns IS NOT s.mtime_ns OR f.inode IS NOT s.inode
            OR f.birth_ns IS NOT s.birth_ns OR f.source_finished_at IS NOT s.finished_at
            OR f.source_outcome IS NOT s.outcome",
    ));
    found
}

#[test]
#[should_panic(expected = "copies its source 1 wrongly")]
fn a_write_to_a_copy_alone_fails_the_test_that_made_it() {
    let (_d, mut q) = open();
    register(&mut q, &[file("a", 1)], 10);
    q.conn
        .execute("UPDATE files SET path = '/elsewhere' WHERE id = 1", [])
        .unwrap();
}
