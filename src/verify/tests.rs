//! The verification against an in-memory bucket whose listings come two objects a page:
//! rows cleared by listing pages, the doubtful ones asked by HEAD, jumps over objects no
//! row wrote, and a refused listing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use md5::{Digest, Md5};

use super::*;
use crate::queue::{Done, FileStamp, NewFile, SpoolRules};
use crate::s3::memory::MemoryStore;
use crate::s3::{ObjectMeta, PutBody};

struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

async fn put(store: &MemoryStore, key: &str, bytes: &[u8]) -> String {
    let md5: [u8; 16] = Md5::digest(bytes).into();
    store
        .put_object(
            key,
            PutBody::Memory(bytes::Bytes::copy_from_slice(bytes)),
            md5,
            &ObjectMeta::default(),
        )
        .await
        .unwrap()
        .etag
}

/// A queue whose rows delivered `keys` (one byte each) into `store`.
async fn delivered(store: &MemoryStore, keys: &[&str]) -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(&dir.path().join("queue.db")).unwrap();
    let files: Vec<NewFile> = keys
        .iter()
        .map(|key| NewFile {
            spool: "orders".into(),
            rel_path: key.to_string(),
            path: PathBuf::from("/spool").join(key),
            destination: "lake".into(),
            bucket: "acme".into(),
            stamp: FileStamp {
                size: 1,
                mtime_ns: 1,
                inode: 7,
            },
            birth_ns: None,
            seen_at_ms: i64::MAX,
            sha256: None,
        })
        .collect();
    queue
        .register(
            &files,
            SpoolRules::default(),
            100,
            |f, _| Ok(f.rel_path.clone()),
            |_, _, _| false,
        )
        .unwrap();
    let rows = queue
        .claim(keys.len(), 100, Duration::from_secs(60))
        .unwrap();
    for row in rows {
        let key = row.key.clone().unwrap();
        let etag = put(store, &key, b"x").await;
        let done = Done {
            etag,
            sha256: String::new(),
            source_sha256: None,
            object_size: 1,
            rows: None,
            format: "raw".into(),
        };
        assert!(queue
            .mark_done(row.id, row.claim, &done, None, 200)
            .unwrap());
    }
    (dir, queue)
}

fn targets(store: &MemoryStore) -> HashMap<String, Target> {
    let store: Arc<dyn ObjectStore> = Arc::new(store.clone());
    HashMap::from([(
        "lake".to_string(),
        Target {
            store: Ok(store),
            concurrency: 4,
        },
    )])
}

async fn run(queue: &mut Queue, store: &MemoryStore) -> Report {
    let plan = Plan {
        range: AuditRange::default(),
        deep: false,
        listings: None,
    };
    verify(queue, &targets(store), &plan, &NoProgress)
        .await
        .unwrap()
}

fn kinds(report: &Report) -> Vec<(Kind, String)> {
    let mut kinds: Vec<_> = report
        .problems
        .iter()
        .map(|p| (p.kind, p.key.clone()))
        .collect();
    kinds.sort_by(|a, b| a.1.cmp(&b.1));
    kinds
}

#[tokio::test]
async fn listing_pages_clear_the_rows_and_heads_judge_the_rest() {
    let store = MemoryStore::new("acme");
    let keys = ["a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8"];
    let (_dir, mut queue) = delivered(&store, &keys).await;

    let report = run(&mut queue, &store).await;
    assert_eq!(report.exit_code(), 0, "{:?}", report.problems);
    assert_eq!(report.rows, 8);
    assert_eq!(report.by_listing, 8);
    assert_eq!(store.count("HeadObject"), 0);
    assert_eq!(report.list_requests, store.count("ListObjectsV2") as u64);

    // One deleted, one written again with other bytes: each found, by HEAD's word.
    store.delete_object("a3").await.unwrap();
    put(&store, "a6", b"y").await;
    let report = run(&mut queue, &store).await;
    assert_eq!(report.exit_code(), 1);
    assert_eq!(
        kinds(&report),
        vec![
            (Kind::Missing, "a3".to_string()),
            (Kind::Overwritten, "a6".to_string())
        ]
    );
    assert_eq!(report.rows, 8);
    assert_eq!(report.by_listing, 6);
    assert_eq!(
        store.count("HeadObject"),
        2,
        "only the two the listing did not clear"
    );
}

#[tokio::test]
async fn the_walk_jumps_over_objects_no_row_wrote() {
    let store = MemoryStore::new("acme");
    let (_dir, mut queue) = delivered(&store, &["in/a", "in/b", "in/z1", "in/z2"]).await;
    // Another writer's objects between "b" and "z1", more than a page's worth of jump,
    // and others outside the prefix the rows share, which are never listed.
    for i in 0..(listed::JUMP_AFTER + 200) {
        put(&store, &format!("in/m{i:05}"), b"x").await;
        put(&store, &format!("out/{i:05}"), b"x").await;
    }
    let report = run(&mut queue, &store).await;
    assert_eq!(report.exit_code(), 0, "{:?}", report.problems);
    assert_eq!(report.rows, 4);
    // "z1" by HEAD: the row the walk jumped to.
    assert_eq!(store.count("HeadObject"), 1);
    assert_eq!(report.by_listing, 3);
    // The walk stopped listing the other writer's objects after JUMP_AFTER of them.
    let listed = store.count("ListObjectsV2");
    assert!(
        listed <= listed::JUMP_AFTER / 2 + 3,
        "{listed} listing pages of two"
    );
}

#[tokio::test]
async fn a_refused_listing_leaves_the_rows_to_head() {
    let store = MemoryStore::new("acme");
    let (_dir, mut queue) = delivered(&store, &["a", "b", "c"]).await;
    store.fail_next(
        "ListObjectsV2",
        crate::s3::StoreError::permanent("ListObjectsV2", "AccessDenied", "denied".into()),
    );
    let report = run(&mut queue, &store).await;
    assert_eq!(report.exit_code(), 0, "{:?}", report.unchecked);
    assert_eq!((report.rows, report.by_listing), (3, 0));
    assert_eq!(store.count("HeadObject"), 3);
    assert!(
        report.notes.iter().any(|n| n.contains("s3:ListBucket")),
        "{:?}",
        report.notes
    );
}
