//! The uploader in-process: the real dispatcher, deliveries, retries, hold-back and
//! multipart code, the real queue, a [`MemoryStore`] that fails on cue, and tokio's clock
//! paused, so minutes of backoff pass at once and no test waits on real time.

use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::dispatch::Dispatcher;
use crate::outbound::Target;
use crate::queue::State;
use crate::s3::StoreError;
use crate::testing::{steal_claim, Fixture};

/// Long enough for any of these tests' schedules, on the paused clock.
const WITHIN: Duration = Duration::from_secs(3600);

fn answer(operation: &'static str, status: u16, code: &str) -> StoreError {
    StoreError::from_response(operation, status, Some(code.into()), String::new())
}

struct Running {
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(dispatcher: Arc<Dispatcher>) -> Running {
    let token = CancellationToken::new();
    let task = tokio::spawn(dispatcher.run(token.clone(), Fixture::drain_as_stop()));
    Running { token, task }
}

impl Running {
    async fn stop(self) {
        self.token.cancel();
        self.task.await.unwrap();
    }
}

async fn outcomes(f: &Fixture, id: i64) -> Vec<String> {
    let history = f.queue.call(move |q| q.attempts_of(id)).await.unwrap();
    history.into_iter().map(|a| a.outcome).collect()
}

/// The worker loses its claim (as if it hung) just before the store serves the `nth`
/// request (from 0) of `operation`: another attempt owns the row from then on.
fn steal_claim_at(f: &Fixture, id: i64, operation: &'static str, nth: u32) {
    let (db, seen) = (f.config.queue_path(), std::sync::atomic::AtomicU32::new(0));
    f.store.on_request(move |op, _| {
        if op == operation && seen.fetch_add(1, Ordering::SeqCst) == nth {
            steal_claim(&db, id);
        }
    });
}

/// 11 MiB: three parts of 5 MiB.
fn big() -> Vec<u8> {
    (0..11u32 << 20).map(|i| (i % 251) as u8).collect()
}

const MULTIPART: &str = r#"part_size = "5MiB"
multipart_threshold = "5MiB""#;

#[tokio::test(start_paused = true)]
async fn a_file_is_delivered_with_its_sha256_and_handed_to_the_finisher() {
    let f = Fixture::new("", "");
    let bytes = b"id,n\n1,2\n";
    let id = f.drop_and_queue("a.csv", bytes).await;
    let run = start(f.dispatcher(f.target()));
    f.wait_row(id, WITHIN, |r| r.state == State::Done).await;
    let told = tokio::time::timeout(Duration::from_secs(1), f.finished.notified()).await;
    run.stop().await;

    assert!(told.is_ok(), "the finisher was not told");
    let object = f.store.object("in/a.csv").expect("the object");
    assert_eq!(&object.bytes[..], bytes);
    assert_eq!(object.sha256, Some(hex::encode(Sha256::digest(bytes))));
    assert_eq!(f.row(id).await.etag.as_deref(), Some(object.etag.as_str()));
    // A first attempt has nothing to look for: one request.
    assert_eq!(f.store.requests(), ["PutObject in/a.csv"]);
}

#[tokio::test(start_paused = true)]
async fn server_errors_are_retried_after_a_backoff_and_deliver_one_object() {
    let f = Fixture::new("backoff_initial = \"1m\"\nbackoff_max = \"10m\"", "");
    for _ in 0..2 {
        f.store
            .fail_next("PutObject", answer("PutObject", 500, "InternalError"));
    }
    let id = f.drop_and_queue("a.csv", b"x").await;
    let run = start(f.dispatcher(f.target()));
    f.wait_row(id, WITHIN, |r| r.state == State::Done).await;
    run.stop().await;

    assert_eq!(outcomes(&f, id).await, ["retry", "retry", "done"]);
    let row = f.row(id).await;
    assert_eq!(row.attempts, 3);
    // Each retry asks first whether an earlier attempt got the object in.
    assert_eq!(f.store.count("HeadObject"), 2);
    assert_eq!(f.store.count("PutObject"), 3);
    assert_eq!(f.store.keys(), ["in/a.csv"]);
}

#[tokio::test(start_paused = true)]
async fn an_error_retrying_cannot_fix_fails_the_file_at_once_with_the_reason() {
    let f = Fixture::new("", "");
    f.store
        .fail_next("PutObject", answer("PutObject", 400, "KeyTooLongError"));
    let id = f.drop_and_queue("a.csv", b"x").await;
    let run = start(f.dispatcher(f.target()));
    f.wait_row(id, WITHIN, |r| r.state == State::Failed).await;
    run.stop().await;

    let row = f.row(id).await;
    assert!(
        row.last_error
            .as_deref()
            .unwrap()
            .contains("KeyTooLongError"),
        "{row:?}"
    );
    assert_eq!(f.store.count("PutObject"), 1);
    assert!(f.store.keys().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_missing_bucket_holds_files_back_without_using_attempts_and_a_probe_reopens_it() {
    let f = Fixture::new("max_attempts = 2", "");
    f.store.down(Some(answer("PutObject", 404, "NoSuchBucket")));
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(f.drop_and_queue(&format!("f{i}.csv"), b"x").await);
    }
    let run = start(f.dispatcher(f.target()));
    // Half an hour of the destination failing: far past max_attempts of retries.
    tokio::time::sleep(Duration::from_secs(1800)).await;
    let conditions = f.queue.call(|q| q.conditions()).await.unwrap();
    assert_eq!(conditions.len(), 1, "{conditions:?}");
    assert_eq!(
        conditions[0].name,
        crate::queue::Held::Destination("lake".into())
    );
    assert!(conditions[0].reason.contains("NoSuchBucket"));
    for &id in &ids {
        let row = f.row(id).await;
        assert_eq!(
            row.state,
            State::Pending,
            "held back, never failed: {row:?}"
        );
    }
    // One probe at a time, with waits doubling to 5 minutes: a handful of requests in
    // half an hour, not one per file per backoff.
    let tried = f.store.count("PutObject");
    assert!(tried <= 5 + 12, "{tried} requests while blocked");

    f.store.down(None);
    for &id in &ids {
        f.wait_row(id, WITHIN, |r| r.state == State::Done).await;
    }
    run.stop().await;
    assert!(f.queue.call(|q| q.conditions()).await.unwrap().is_empty());
    assert_eq!(f.store.keys().len(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_lost_its_claim_touches_nothing_and_the_next_attempt_resumes() {
    let f = Fixture::new(MULTIPART, "");
    let bytes = big();
    let id = f.drop_and_queue("big.bin", &bytes).await;
    steal_claim_at(&f, id, "UploadPart", 0);
    let run = start(f.dispatcher(f.target()));
    // Everything the worker does takes no time on the paused clock: a minute later it is
    // long done with the file, and the lease (two minutes) still holds.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let row = f.row(id).await;
    assert_eq!(row.state, State::Active, "{row:?}");
    assert_eq!(f.store.count("AbortMultipartUpload"), 0);
    assert_eq!(f.store.count("CompleteMultipartUpload"), 0);
    assert_eq!(f.store.open_uploads(), 1);
    assert!(outcomes(&f, id).await.is_empty(), "no outcome recorded");

    // The lease runs out, the row returns, and the upload goes on where it was.
    f.wait_row(id, WITHIN, |r| r.state == State::Done).await;
    run.stop().await;
    assert_eq!(f.store.count("CreateMultipartUpload"), 1);
    assert_eq!(f.store.object("in/big.bin").unwrap().bytes, bytes);
    assert_eq!(f.store.open_uploads(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_source_changed_during_a_multipart_upload_is_aborted_and_sent_again_whole() {
    source_changed_during_a_multipart_upload(MULTIPART).await;
}

#[tokio::test(start_paused = true)]
async fn read_once_a_source_changed_during_its_upload_is_aborted_and_sent_again_whole() {
    source_changed_during_a_multipart_upload(READ_ONCE).await;
}

/// The file grows while its parts go up: the upload is aborted, never completed mixed,
/// and the file is sent again whole once it settles.
async fn source_changed_during_a_multipart_upload(upload: &str) {
    let f = Fixture::new(upload, "");
    let mut bytes = big();
    let id = f.drop_and_queue("big.bin", &bytes).await;
    let (path, appended) = (f.spool().join("big.bin"), AtomicBool::new(false));
    f.store.on_request(move |operation, _| {
        if operation == "UploadPart" && !appended.swap(true, Ordering::SeqCst) {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            file.write_all(b"more").unwrap();
        }
    });
    let run = start(f.dispatcher(f.target()));
    f.wait_row(id, WITHIN, |r| r.state == State::Done).await;
    run.stop().await;

    bytes.extend_from_slice(b"more");
    assert_eq!(outcomes(&f, id).await, ["changed", "done"]);
    assert_eq!(f.store.object("in/big.bin").unwrap().bytes, bytes);
    assert_eq!(f.store.count("CreateMultipartUpload"), 2);
    assert_eq!(f.store.open_uploads(), 0, "the mixed upload was aborted");
}

#[tokio::test(start_paused = true)]
async fn slow_down_halves_the_requests_in_flight() {
    let f = Fixture::new("concurrency = 8", "");
    f.store
        .fail_next("PutObject", answer("PutObject", 503, "SlowDown"));
    let id = f.drop_and_queue("a.csv", b"x").await;
    let target: Arc<Target> = f.target();
    let run = start(f.dispatcher(Arc::clone(&target)));
    f.wait_row(id, WITHIN, |r| r.state == State::Done).await;
    run.stop().await;

    // One success since is not enough to earn a request back (that takes `limit` in a row).
    assert_eq!(target.limit.current(), 4);
    assert_eq!(outcomes(&f, id).await, ["retry", "done"]);
}

/// Parts sent one at a time, each file read once (`large_file_sha256 = "manifest"`).
const READ_ONCE: &str = r#"part_size = "5MiB"
multipart_threshold = "5MiB"
concurrency = 1
large_file_sha256 = "manifest""#;

#[tokio::test(start_paused = true)]
async fn read_once_a_big_file_is_sent_without_hashing_first_and_its_sha256_recorded() {
    let f = Fixture::new(READ_ONCE, "");
    let bytes = big();
    let id = f.drop_and_queue("big.bin", &bytes).await;
    let run = start(f.dispatcher(f.target()));
    f.wait_row(id, WITHIN, |r| r.state == State::Done).await;
    run.stop().await;

    let object = f.store.object("in/big.bin").unwrap();
    assert_eq!(object.bytes, bytes);
    assert_eq!(
        object.sha256, None,
        "no metadata: it would need a read first"
    );
    let row = f.row(id).await;
    assert_eq!(row.sha256, Some(hex::encode(Sha256::digest(&bytes))));
    assert_eq!(row.etag.as_deref(), Some(object.etag.as_str()));
    assert_eq!(
        f.store.requests(),
        [
            "CreateMultipartUpload in/big.bin",
            "UploadPart in/big.bin",
            "UploadPart in/big.bin",
            "UploadPart in/big.bin",
            "CompleteMultipartUpload in/big.bin",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn read_once_a_resumed_upload_hashes_the_parts_s3_has_without_sending_them() {
    let f = Fixture::new(READ_ONCE, "");
    let bytes = big();
    let id = f.drop_and_queue("big.bin", &bytes).await;
    // The third part's request: the worker loses its claim (as if it hung), so that part
    // is never recorded and the next attempt resumes after two.
    steal_claim_at(&f, id, "UploadPart", 2);
    let run = start(f.dispatcher(f.target()));
    f.wait_row(id, WITHIN, |r| r.state == State::Done).await;
    run.stop().await;

    assert_eq!(f.store.object("in/big.bin").unwrap().bytes, bytes);
    assert_eq!(f.store.count("CreateMultipartUpload"), 1);
    assert_eq!(
        f.store.count("UploadPart"),
        4,
        "two parts are not sent again"
    );
    // The SHA-256 covers the parts read only to be hashed.
    let row = f.row(id).await;
    assert_eq!(row.sha256, Some(hex::encode(Sha256::digest(&bytes))));
}

#[tokio::test(start_paused = true)]
async fn read_once_an_upload_completed_before_its_outcome_was_recorded_is_recognised() {
    let f = Fixture::new(READ_ONCE, "");
    let bytes = big();
    let id = f.drop_and_queue("big.bin", &bytes).await;
    // S3 completes the upload, and the worker loses its claim before it records the
    // outcome (as after a crash): the object carries no SHA-256 to compare.
    steal_claim_at(&f, id, "CompleteMultipartUpload", 0);
    let run = start(f.dispatcher(f.target()));
    f.wait_row(id, WITHIN, |r| r.state == State::Done).await;
    run.stop().await;

    let object = f.store.object("in/big.bin").unwrap();
    assert_eq!(object.bytes, bytes);
    // Recognised by the ETag of the parts recorded: nothing sent twice.
    assert_eq!(f.store.count("CreateMultipartUpload"), 1);
    assert_eq!(f.store.count("UploadPart"), 3);
    assert_eq!(f.store.count("CompleteMultipartUpload"), 1);
    assert_eq!(f.store.count("HeadObject"), 1);
    let row = f.row(id).await;
    assert_eq!(row.sha256, Some(hex::encode(Sha256::digest(&bytes))));
    assert_eq!(row.etag.as_deref(), Some(object.etag.as_str()));
}

#[tokio::test(start_paused = true)]
async fn an_idle_dispatcher_claims_a_retry_when_it_falls_due() {
    let f = Fixture::new("backoff_initial = \"1m\"\nbackoff_max = \"1m\"", "");
    f.store
        .fail_next("PutObject", answer("PutObject", 500, "InternalError"));
    // When each PUT was sent, on the queue's clock.
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&sent);
    f.store.on_request(move |operation, _| {
        if operation == "PutObject" {
            log.lock().unwrap().push(crate::clock::now_ms());
        }
    });
    let id = f.drop_and_queue("a.csv", b"x").await;
    let run = start(f.dispatcher(f.target()));
    f.wait_row(id, WITHIN, |r| r.state == State::Pending && r.attempts == 1)
        .await;
    let due = f.row(id).await.next_attempt_at;
    f.wait_row(id, WITHIN, |r| r.state == State::Done).await;
    run.stop().await;

    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "{sent:?}");
    // Sent again when due (a random wait of up to a minute), not at the next claim the
    // idle dispatcher tries anyway (every 30 s).
    assert!(
        sent[1] >= due && sent[1] - due < 1000,
        "due at {due}, sent at {}",
        sent[1]
    );
}
