//! Lost answers, in-process: a write S3 applied whose answer never came back, then the
//! retry. The store counts writes per key like a versioned bucket, so a second PUT of the
//! same object shows. Each test takes the row back through another path (a retry after a
//! 5xx, a destination's lost connection, a multipart upload's completion).

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::queue::{SourceOutcome, State};
use crate::s3::StoreError;
use crate::testing::Fixture;

const WITHIN: Duration = Duration::from_secs(3600);

fn server_error() -> StoreError {
    StoreError::from_response(
        "PutObject",
        500,
        Some("InternalError".into()),
        String::new(),
    )
}

fn connection_lost(operation: &'static str) -> StoreError {
    StoreError::transport(
        operation,
        "ConnectionFailed",
        "connection reset by peer".into(),
    )
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

async fn run_until(f: &Fixture, id: i64, state: State) {
    let token = CancellationToken::new();
    let task = tokio::spawn(
        f.dispatcher(f.target())
            .run(token.clone(), Fixture::drain_as_stop()),
    );
    f.wait_row(id, WITHIN, |r| r.state == state).await;
    token.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_write_applied_unanswered_is_found_by_the_retry_and_not_sent_again() {
    let f = Fixture::new("backoff_initial = \"1m\"", "");
    f.store.lose_next_answer("PutObject", server_error());
    let id = f.drop_and_queue("a.csv", b"id\n1\n").await;
    run_until(&f, id, State::Done).await;

    assert_eq!(f.store.writes("in/a.csv"), 1, "written once");
    let row = f.row(id).await;
    assert!(!row.maybe_sent, "done rows owe no HEAD");
    assert_eq!(
        f.store.requests(),
        ["PutObject in/a.csv", "HeadObject in/a.csv"]
    );
    let object = f.store.object("in/a.csv").unwrap();
    let writer = f.queue.writer_of(id);
    assert_eq!(object.written_by.as_deref(), Some(writer.as_str()));
}

#[tokio::test(start_paused = true)]
async fn a_converted_object_carries_its_sources_sha256_and_is_recognised_by_it() {
    let f = Fixture::new("backoff_initial = \"1m\"", "format = \"gzip\"");
    f.store.lose_next_answer("PutObject", server_error());
    let source = b"id,name\n1,one\n2,two\n";
    let id = f.drop_and_queue("a.csv", source).await;
    run_until(&f, id, State::Done).await;

    assert_eq!(f.store.writes("in/a.csv"), 1, "written once");
    let object = f.store.object("in/a.csv").unwrap();
    assert_eq!(object.source_sha256, Some(sha256(source)));
    assert_eq!(object.sha256, Some(sha256(&object.bytes)), "its own, too");
    assert_eq!(f.row(id).await.sha256, object.sha256);
}

#[tokio::test(start_paused = true)]
async fn an_earlier_version_delivered_unanswered_stays_and_the_new_one_gets_its_own_row() {
    let f = Fixture::new("backoff_initial = \"1m\"", "");
    let spool = f.spool();
    f.store
        .lose_next_answer("PutObject", connection_lost("PutObject"));
    // While the first PUT is on its way (its bytes read already), a new version is
    // renamed over the file.
    let replaced = std::sync::atomic::AtomicBool::new(false);
    f.store.on_request(move |op, _| {
        if op == "PutObject" && !replaced.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::fs::write(spool.join(".new"), b"version two").unwrap();
            std::fs::rename(spool.join(".new"), spool.join("a.csv")).unwrap();
        }
    });
    let id = f.drop_and_queue("a.csv", b"version one").await;
    let token = CancellationToken::new();
    let task = tokio::spawn(
        f.dispatcher(f.target())
            .run(token.clone(), Fixture::drain_as_stop()),
    );
    f.wait_row(id, WITHIN, |r| r.state == State::Done).await;
    f.wait_row(id + 1, WITHIN, |r| r.state == State::Done).await;
    token.cancel();
    task.await.unwrap();

    let first = f.row(id).await;
    assert_eq!(first.source_outcome, Some(SourceOutcome::Superseded));
    assert_eq!(first.sha256, Some(sha256(b"version one")));
    assert_eq!(f.store.writes("in/a.csv"), 1, "the delivered version stays");
    assert_eq!(
        &f.store.object("in/a.csv").unwrap().bytes[..],
        b"version one"
    );
    let second = f.row(id + 1).await;
    let key = second.key.clone().unwrap();
    assert!(key.starts_with("in/orders/") && key.ends_with(&format!("-{}.csv", id + 1)));
    assert_eq!(f.store.writes(&key), 1);
    assert_eq!(&f.store.object(&key).unwrap().bytes[..], b"version two");
    assert_eq!(second.sha256, Some(sha256(b"version two")));
}

#[tokio::test(start_paused = true)]
async fn a_completion_applied_unanswered_before_a_new_version_counts_as_delivered() {
    let f = Fixture::new(
        "part_size = \"5MiB\"\nmultipart_threshold = \"5MiB\"\nbackoff_initial = \"1m\"",
        "",
    );
    let spool = f.spool();
    f.store.lose_next_answer(
        "CompleteMultipartUpload",
        connection_lost("CompleteMultipartUpload"),
    );
    let replaced = std::sync::atomic::AtomicBool::new(false);
    f.store.on_request(move |op, _| {
        if op == "CompleteMultipartUpload"
            && !replaced.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            std::fs::write(spool.join(".new"), b"small now").unwrap();
            std::fs::rename(spool.join(".new"), spool.join("big.bin")).unwrap();
        }
    });
    let big: Vec<u8> = (0..11u32 << 20).map(|i| (i % 251) as u8).collect();
    let id = f.drop_and_queue("big.bin", &big).await;
    let token = CancellationToken::new();
    let task = tokio::spawn(
        f.dispatcher(Arc::clone(&f.target()))
            .run(token.clone(), Fixture::drain_as_stop()),
    );
    f.wait_row(id, WITHIN, |r| r.state == State::Done).await;
    f.wait_row(id + 1, WITHIN, |r| r.state == State::Done).await;
    token.cancel();
    task.await.unwrap();

    let first = f.row(id).await;
    assert_eq!(
        (first.state, first.source_outcome),
        (State::Done, Some(SourceOutcome::Superseded))
    );
    assert_eq!(f.store.writes("in/big.bin"), 1);
    assert_eq!(f.store.object("in/big.bin").unwrap().bytes.len(), big.len());
    let key = f.row(id + 1).await.key.unwrap();
    assert_eq!(&f.store.object(&key).unwrap().bytes[..], b"small now");
    assert_eq!(f.store.open_uploads(), 0);
}
