//! Failure paths: every one ends with the file still safe and the reason visible.

use std::time::Duration;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn a_missing_bucket_holds_files_back_until_it_exists_then_they_go_by_themselves() {
    let endpoint = shared_server();
    let bucket = Bucket::named(endpoint);
    let s = Setup::new(Options::new(endpoint), bucket);
    let port = s.serve_metrics();
    let sha = s.drop_file("orders.csv", b"a,b\n1,2\n");
    s.drop_file("more.csv", b"c\n");
    let daemon = s.start();
    wait_for(WAIT, "the destination held back", || {
        !s.status()["held_back"].as_array().unwrap().is_empty()
    });
    let status = s.status();
    let held = &status["held_back"][0];
    assert_eq!(held["name"], "destination:lake");
    assert!(
        held["reason"].as_str().unwrap().contains("NoSuchBucket"),
        "{held}"
    );
    assert_eq!(
        status["counts"]["failed"], 0,
        "the files are not failed: {status}"
    );
    assert_eq!(
        status["counts"]["pending"].as_u64().unwrap()
            + status["counts"]["active"].as_u64().unwrap(),
        2
    );
    let text = String::from_utf8(s.cli(&["status"]).stdout).unwrap();
    assert!(
        text.contains("held back (destination:lake, since "),
        "{text}"
    );
    let metrics = scrape(port);
    assert_eq!(
        metric_value(&metrics, "s3spool_held_back{cause=\"destination:lake\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        s.spool_files(),
        ["more.csv", "orders.csv"],
        "the files stay where they are"
    );
    // Held back, the destination is probed now and then, not hammered.
    s.wait_past("probe failed", 1);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(
        &s.cli(&["list", "--all", "--oldest", "--limit", "0", "--json"])
            .stdout,
    )
    .unwrap();
    assert!(
        rows.iter().all(|r| r["attempts"].as_u64().unwrap() <= 1),
        "{rows:?}"
    );

    // The cause goes away; nobody runs a command: the files go by themselves.
    s.bucket.create_now();
    wait_for(WAIT, "delivered once the bucket exists", || {
        s.count("done") == 2
    });
    wait_for(WAIT, "nothing held back", || {
        s.status()["held_back"].as_array().unwrap().is_empty()
    });
    assert_eq!(
        metric_value(
            &scrape(port),
            "s3spool_held_back{cause=\"destination:lake\"}"
        ),
        Some(0.0),
        "the series stays, at 0"
    );
    assert!(daemon.stop().success());
    assert_eq!(s.bucket.objects()["inbound/orders/orders.csv"].sha256, sha);
    assert!(s.spool_files().is_empty());
    let log = std::fs::read_to_string(s.dir.path().join("daemon.log")).unwrap();
    assert!(log.contains("destination works again"));
}

#[test]
fn a_full_state_dir_holds_new_files_back_until_there_is_room() {
    let endpoint = shared_server();
    let s = Setup::new(Options::new(endpoint), Bucket::create(endpoint));
    // More than any disk has: state_dir is "low on space" from the start.
    let roomy = std::fs::read_to_string(&s.config).unwrap();
    s.add_top_level("min_free_space = \"1000000TiB\"");
    s.drop_file("a.csv", b"waits for room\n");
    let daemon = s.start();
    wait_for(WAIT, "held back for disk space", || {
        s.status()["held_back"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == "disk")
    });
    wait_for(WAIT, "queued", || s.count("pending") == 1);
    s.wait_past("nothing due", 2);
    assert_eq!(s.count("pending"), 1, "not taken while the disk is short");
    assert!(s.bucket.objects().is_empty());
    // Room again (here: a lower threshold, reloaded): it goes by itself.
    write_private(&s.config, &roomy);
    daemon.signal_pid(libc::SIGHUP);
    wait_for(WAIT, "delivered once there is room", || {
        s.count("done") == 1
    });
    wait_for(WAIT, "nothing held back", || {
        s.status()["held_back"].as_array().unwrap().is_empty()
    });
    assert!(daemon.stop().success());
}

#[test]
fn an_unreachable_endpoint_holds_the_file_back_with_the_reason_and_never_fails_it() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let s = Setup::new(Options::new(&endpoint), Bucket::named(&endpoint));
    s.drop_file("a.csv", b"x");
    let daemon = s.start();
    wait_for(WAIT, "the destination held back", || {
        s.status()["held_back"].as_array().is_some_and(|held| {
            held.iter().any(|c| {
                c["name"] == "destination:lake"
                    && c["reason"]
                        .as_str()
                        .unwrap_or("")
                        .contains("ConnectionFailed")
            })
        })
    });
    // A probe after the block: past what max_attempts = 3 with backoffs of 100–500 ms
    // would allow.
    s.wait_past("probe failed", 1);
    assert_eq!(
        s.count("failed"),
        0,
        "an unreachable destination fails no file"
    );
    assert!(daemon.stop().success());
    let row: serde_json::Value =
        serde_json::from_slice(&s.cli(&["show", "1", "--json"]).stdout).unwrap();
    assert_eq!(row["state"], "pending");
    assert!(row["attempts"].as_u64().unwrap() < 3, "{row}");
    let error = row["last_error"].as_str().unwrap();
    assert!(
        error.contains("ConnectionFailed") && error.contains("endpoint unreachable"),
        "{error}"
    );
    assert_eq!(s.spool_files(), vec!["a.csv"]);
    let log = std::fs::read_to_string(s.dir.path().join("daemon.log")).unwrap();
    assert!(log.contains("destination failing for every file"), "{log}");
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
    // As a monitoring check, a failed file is a WARNING.
    let check = s.cli(&["status", "--check"]);
    let text = output_text(&check);
    assert_eq!(check.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("S3SPOOL WARNING - daemon pid ") && text.contains("1 failed file(s)"),
        "{text}"
    );
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
fn read_once_a_multipart_upload_resumes_after_sigkill_with_its_sha256_in_queue_and_manifest() {
    use crate::proxy::{FaultProxy, Mode};
    let server = shared_server();
    // Slow enough to kill the daemon between parts.
    let proxy = FaultProxy::start(server, Mode::Delay(Duration::from_millis(400)));
    let mut o = Options::new(&proxy.endpoint());
    // The harness's parts are 5 MiB already.
    o.upload_extra = "large_file_sha256 = \"manifest\"";
    o.spool_extra = "manifest = true\nmanifest_max_files = 1".into();
    let s = Setup::new(o, Bucket::create(server));
    let sha = s.drop_file("big.bin", &data(26 << 20, 12));
    let log = s.kill_after_a_part_then_deliver(|| proxy.set_mode(Mode::Pass));
    assert!(log.contains("resuming multipart upload"), "{log}");
    let objects = s.bucket.objects();
    let object = &objects["inbound/orders/big.bin"];
    assert_eq!(object.sha256, sha, "the object is the file, byte for byte");
    assert_eq!(object.meta_sha256, None, "read once: no SHA-256 metadata");
    assert_eq!(
        s.show(1)["sha256"],
        sha.as_str(),
        "the queue has the file's SHA-256"
    );
    let manifest_key = objects
        .keys()
        .find(|k| k.contains("/_manifests/"))
        .expect("a manifest");
    let path = s.dir.path().join("manifest.json");
    s.bucket.get(manifest_key, &path);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(manifest["files"][0]["sha256"], sha.as_str(), "{manifest}");
    assert!(s.bucket.open_uploads().is_empty());
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
