//! Tests of `batches.rs`: deliveries joining manifest batches; closing and writing them.

use super::tests::*;
use super::*;

#[test]
fn deliveries_join_batches_that_close_when_full_old_or_at_shutdown() {
    let (_d, mut q) = open();
    let files: Vec<NewFile> = (0..5).map(|i| file(&format!("f{i}"), 1)).collect();
    register(&mut q, &files, 10);
    q.claim(5, 10, Duration::from_secs(60)).unwrap();
    let batching = Batching {
        max_files: 2,
        host: "h1".into(),
    };
    let done = |q: &mut Queue, id: i64, now: i64| {
        let d = Done {
            rows: Some(id as u64 * 10),
            object_size: 100,
            format: "parquet".into(),
            ..delivered("e")
        };
        assert!(q.mark_done(id, 1, &d, Some(&batching), now).unwrap());
    };
    done(&mut q, 1, 100);
    assert!(
        q.batches_to_write(1_000).unwrap().is_empty(),
        "one file: still open"
    );
    done(&mut q, 2, 200);
    let closed = q.batches_to_write(1_000).unwrap();
    assert_eq!(closed.len(), 1, "full at two files");
    let first = &closed[0];
    assert_eq!(
        (first.files, first.opened_at, first.closed_at),
        (2, 100, Some(200))
    );
    assert_eq!(
        (first.host.as_str(), first.spool.as_str()),
        ("h1", "orders")
    );
    let members = q.batch_files(first.id).unwrap();
    assert_eq!(members.iter().map(|f| f.id).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(members[1].rows, Some(20));
    assert_eq!(members[1].format.as_deref(), Some("parquet"));

    done(&mut q, 3, 300);
    assert_eq!(
        q.close_batches_opened_before("orders", 299, 400).unwrap(),
        0
    );
    assert_eq!(
        q.close_batches_opened_before("orders", 300, 400).unwrap(),
        1
    );
    done(&mut q, 4, 500);
    let orders = ["orders".to_string()];
    assert_eq!(q.close_open_batches_except(&orders, 550).unwrap(), 0);
    assert_eq!(
        q.close_open_batches_except(&[], 560).unwrap(),
        1,
        "orders lost manifests"
    );
    assert_eq!(q.close_open_batches_except(&[], 600).unwrap(), 0);
    let due = q.batches_to_write(1_000).unwrap();
    assert_eq!(due.len(), 3);
    assert!(due.iter().all(|b| b.files == 1 || b.files == 2));

    // The key is fixed by the first attempt; a retry waits; written is final.
    let id = first.id;
    assert_eq!(q.fix_manifest_key(id, "m/a.json").unwrap(), "m/a.json");
    assert_eq!(q.fix_manifest_key(id, "m/b.json").unwrap(), "m/a.json");
    q.batch_retry_later(id, "503", 5_000).unwrap();
    assert_eq!(q.batches_to_write(1_000).unwrap().len(), 2);
    assert!(q.mark_batch_written(id, 6_000).unwrap());
    assert!(!q.mark_batch_written(id, 6_001).unwrap());
    assert_eq!(q.batches_to_write(10_000).unwrap().len(), 2);
    // A file done without batching joins nothing.
    assert!(q.mark_done(5, 1, &delivered("e"), None, 700).unwrap());
    assert_eq!(q.get(5).unwrap().unwrap().batch_id, None);
}
