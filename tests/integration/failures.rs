//! Failure paths: every one ends with the file still safe and the reason visible.

use std::time::Duration;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn missing_bucket_fails_at_once_then_retry_delivers() {
    let endpoint = shared_server();
    let bucket = Bucket::named(endpoint);
    let s = Setup::new(Options::new(endpoint), bucket);
    let sha = s.drop_file("orders.csv", b"a,b\n1,2\n");
    let daemon = s.start();
    wait_for(WAIT, "the file to fail", || s.count("failed") == 1);
    let status = s.status();
    let error = status["latest_errors"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("NoSuchBucket"), "{error}");
    assert_eq!(
        status["latest_errors"][0]["attempts"], 1,
        "a permanent error is not retried"
    );
    assert_eq!(
        s.spool_files(),
        vec!["orders.csv"],
        "the file stays where it is"
    );

    // The operator creates the bucket and retries; the running daemon picks it up.
    s.bucket.create_now();
    let out = s.cli(&["retry", "--failed"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 file(s) queued again"));
    wait_for(WAIT, "delivery after retry", || s.count("done") == 1);
    assert!(daemon.stop().success());
    assert_eq!(s.bucket.objects()["inbound/orders/orders.csv"].sha256, sha);
    assert!(s.spool_files().is_empty());
}

#[test]
fn unreachable_endpoint_is_retried_with_backoff_then_fails_with_the_reason() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let s = Setup::new(Options::new(&endpoint), Bucket::named(&endpoint));
    s.drop_file("a.csv", b"x");
    let daemon = s.start();
    wait_for(WAIT, "attempts to run out", || s.count("failed") == 1);
    assert!(daemon.stop().success());
    let row: serde_json::Value =
        serde_json::from_slice(&s.cli(&["show", "1", "--json"]).stdout).unwrap();
    assert_eq!(row["attempts"], 3, "max_attempts = 3");
    let error = row["last_error"].as_str().unwrap();
    assert!(
        error.contains("ConnectionFailed") && error.contains("gave up after 3 attempts"),
        "{error}"
    );
    assert_eq!(s.spool_files(), vec!["a.csv"]);
    let log = std::fs::read_to_string(s.dir.path().join("daemon.log")).unwrap();
    assert_eq!(
        log.matches("upload failed; will retry").count(),
        2,
        "two retries between three attempts"
    );
}

#[test]
fn a_key_over_1024_bytes_fails_that_file_only() {
    let endpoint = shared_server();
    let s = Setup::new(Options::new(endpoint), Bucket::create(endpoint));
    let long_dir = "d".repeat(250);
    // 15 (prefix) + 4 × 251 + 104 bytes: well over S3's 1024.
    let long_rel = format!(
        "{long_dir}/{long_dir}/{long_dir}/{long_dir}/{}.csv",
        "f".repeat(100)
    );
    s.drop_file(&long_rel, b"too long");
    s.drop_file("ok.csv", b"fine");
    let daemon = s.start();
    wait_for(WAIT, "one done, one failed", || {
        s.count("done") == 1 && s.count("failed") == 1
    });
    assert!(daemon.stop().success());
    let failed: serde_json::Value =
        serde_json::from_slice(&s.cli(&["list", "--state", "failed", "--json"]).stdout).unwrap();
    let error = failed[0]["last_error"].as_str().unwrap();
    assert!(error.contains("S3 allows at most 1024"), "{error}");
    assert_eq!(s.spool_files(), vec![long_rel]);
    assert_eq!(s.bucket.objects().len(), 1);
}

#[test]
fn a_second_daemon_on_the_same_state_dir_is_refused() {
    let endpoint = shared_server();
    let s = Setup::new(Options::new(endpoint), Bucket::create(endpoint));
    let first = s.start();
    let second = Daemon::start(&s.config, &s.dir.path().join("second.log"));
    let status = second.wait_exit(Duration::from_secs(20));
    assert!(!status.success());
    let log = std::fs::read_to_string(s.dir.path().join("second.log")).unwrap();
    assert!(log.contains("another s3spool daemon is running"), "{log}");
    assert!(first.stop().success());
}

#[test]
fn sigterm_during_a_multipart_upload_finishes_it_and_exits_zero() {
    let endpoint = shared_server();
    let s = Setup::new(Options::new(endpoint), Bucket::create(endpoint));
    let bytes = data(40 << 20, 9);
    let sha = s.drop_file("large.bin", &bytes);
    let daemon = s.start();
    wait_for(WAIT, "upload in flight", || s.count("active") == 1);
    let status = daemon.stop();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        s.count("done"),
        1,
        "the in-flight file was finished during the drain"
    );
    assert_eq!(s.bucket.objects()["inbound/orders/large.bin"].sha256, sha);
    assert!(s.bucket.open_uploads().is_empty());
    assert!(s.spool_files().is_empty());
}

#[test]
fn sigkill_mid_run_then_restart_delivers_every_file_exactly_once() {
    let endpoint = shared_server();
    let mut options = Options::new(endpoint);
    // {id} in the key: a file queued twice would show up as a second object.
    options.key = "{path}-{id}";
    let s = Setup::new(options, Bucket::create(endpoint));
    let mut want = std::collections::BTreeMap::new();
    for i in 0..40 {
        let rel = format!("batch/{i:03}.csv");
        want.insert(rel.clone(), s.drop_file(&rel, &data(2000 + i, i as u64)));
    }
    want.insert(
        "big.bin".into(),
        s.drop_file("big.bin", &data(12 << 20, 77)),
    );
    let daemon = s.start();
    wait_for(WAIT, "some files done", || s.count("done") >= 5);
    daemon.kill();
    let daemon = s.start();
    wait_for(WAIT, "every file done", || {
        s.count("done") == want.len() as u64
    });
    assert!(daemon.stop().success());
    let objects = s.bucket.objects();
    let got: std::collections::BTreeMap<String, String> = objects
        .iter()
        .map(|(key, o)| {
            (
                key.trim_start_matches("inbound/")
                    .rsplit_once('-')
                    .unwrap()
                    .0
                    .to_string(),
                o.sha256.clone(),
            )
        })
        .collect();
    assert_eq!(
        objects.len(),
        want.len(),
        "no duplicates: {:?}",
        objects.keys().collect::<Vec<_>>()
    );
    assert_eq!(got, want);
    assert!(s.spool_files().is_empty());
}

#[test]
fn secrets_never_reach_logs_the_queue_or_cli_output() {
    const SECRET: &str = "s3spool-test-secret-do-not-log";
    let endpoint = shared_server();
    let s = Setup::new(Options::new(endpoint), Bucket::create(endpoint));
    s.drop_file("a.csv", b"payload");
    let daemon = s.start();
    wait_for(WAIT, "delivered", || s.count("done") == 1);
    let log = daemon.log.clone();
    assert!(daemon.stop().success());
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("uploaded"), "debug log was written");
    s.assert_secret_nowhere(SECRET, &log);
}
