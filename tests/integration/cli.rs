//! The operator CLI: `check`, config errors, `list`, `show`, `retry`, `purge`.

use std::time::Duration;

use crate::harness::*;

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn check_passes_against_a_working_destination_and_leaves_nothing() {
    let endpoint = shared_server();
    let s = Setup::new(Options::new(endpoint), Bucket::create(endpoint));
    let out = s.cli(&["check"]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    for step in [
        "PutObject      ok",
        "HeadObject     ok",
        "DeleteObject   ok",
        "all destinations ok",
    ] {
        assert!(t.contains(step), "{t}");
    }
    assert!(s.bucket.objects().is_empty(), "the probe object is deleted");
}

#[test]
fn check_names_a_missing_bucket() {
    let endpoint = shared_server();
    let s = Setup::new(Options::new(endpoint), Bucket::named(endpoint));
    let out = s.cli(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(
        t.contains("PutObject      FAILED") && t.contains("the bucket does not exist"),
        "{t}"
    );
    assert!(t.contains("HeadObject     skipped"), "{t}");
}

#[test]
fn check_names_an_unreachable_endpoint() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let s = Setup::new(Options::new(&endpoint), Bucket::named(&endpoint));
    let out = s.cli(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(t.contains("endpoint unreachable"), "{t}");
    assert!(
        !t.contains("s3spool-test-secret-do-not-log"),
        "no secret in output"
    );
}

#[test]
fn a_bad_config_reports_every_error_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        r#"
state_dir = "state"
[destinations.lake]
bucket = "s3://Bad_Bucket"
colour = "blue"
[destinations.lake.auth]
mode = "static"
access_key_id = "AKIA"
secret_access_key = "s3spool-test-secret-do-not-log"
[spools.orders]
path = "spool"
destination = "lake"
settle = "5 parsecs"
key = "{spool}/{date}.csv"
"#,
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG");
    let t = text(&out);
    assert!(t.contains(&config.display().to_string()), "{t}");
    assert!(t.contains("has 4 errors"), "{t}");
    for key in [
        "destinations.lake.bucket:",
        "destinations.lake.colour: unknown key",
        "spools.orders.settle:",
        "spools.orders.key:",
    ] {
        assert!(t.contains(key), "missing {key} in {t}");
    }
    assert!(!t.contains("s3spool-test-secret-do-not-log"));
}

#[test]
fn list_show_retry_and_purge_on_a_live_queue() {
    let endpoint = shared_server();
    let s = Setup::new(Options::new(endpoint), Bucket::create(endpoint));
    s.drop_file("one.csv", b"1");
    s.drop_file("two.csv", b"22");
    let daemon = s.start();
    wait_for(Duration::from_secs(60), "two done", || s.count("done") == 2);

    let out = s.cli(&["list", "--state", "done"]);
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("one.csv → inbound/orders/one.csv"),
        "{t}"
    );
    let empty = s.cli(&["list", "--state", "failed", "--json"]);
    assert_eq!(String::from_utf8_lossy(&empty.stdout).trim(), "[]");
    let bad_state = s.cli(&["list", "--state", "stuck"]);
    assert!(!bad_state.status.success() && text(&bad_state).contains("not a state"));

    let show = text(&s.cli(&["show", "1"]));
    assert!(
        show.contains("state         done") && show.contains("key           inbound/orders/"),
        "{show}"
    );
    assert_eq!(s.cli(&["show", "99"]).status.code(), Some(1));

    // A done row cannot be retried: that would upload it twice.
    let retry = s.cli(&["retry", "1"]);
    assert_eq!(retry.status.code(), Some(1));
    assert!(
        text(&retry).contains("row 1 not retried: it is done"),
        "{}",
        text(&retry)
    );

    let purge = s.cli(&["purge", "--done", "--older-than", "7d"]);
    assert!(
        text(&purge).contains("purged 0 done row"),
        "{}",
        text(&purge)
    );
    let purge = s.cli(&["purge", "--done", "--older-than", "0s"]);
    assert!(
        text(&purge).contains("purged 2 done row"),
        "{}",
        text(&purge)
    );
    assert_eq!(s.count("done"), 0);
    assert!(daemon.stop().success());
}

#[test]
fn status_without_a_queue_says_where_it_looked() {
    let endpoint = shared_server();
    let s = Setup::new(Options::new(endpoint), Bucket::named(endpoint));
    let out = s.cli(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("no queue database at"),
        "{}",
        text(&out)
    );
}

#[test]
fn check_and_the_daemon_name_credential_and_permission_problems() {
    // A server of its own: moto's auth mode is server-wide.
    let server = S3Server::start();
    let endpoint = server.endpoint();
    let bucket = Bucket::create(&endpoint);
    let name = bucket.name.clone();
    let (id, secret) = bucket.iam_user("no-policy");
    bucket.enforce_auth();
    let s = Setup::new(
        Options::new(&endpoint),
        Bucket {
            name,
            endpoint: endpoint.clone(),
        },
    );

    let cases = [
        (None, "InvalidAccessKeyId", "the access key id is unknown"),
        (
            Some((id.as_str(), "wrong-secret-wrong-secret")),
            "SignatureDoesNotMatch",
            "the secret key is wrong",
        ),
        (
            Some((id.as_str(), secret.as_str())),
            "AccessDenied",
            "the credentials lack permission",
        ),
    ];
    for (keys, code, words) in cases {
        if let Some((key_id, key_secret)) = keys {
            s.set_keys(key_id, key_secret);
        }
        let out = s.cli(&["check"]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{t}");
        assert!(
            t.contains("PutObject      FAILED: 403") && t.contains(code) && t.contains(words),
            "{code}: {t}"
        );
    }

    // The daemon fails such a file at once (no retry storm) and leaves it in place.
    s.set_keys(&id, &secret);
    s.drop_file("denied.csv", b"x");
    let daemon = s.start();
    wait_for(Duration::from_secs(60), "the file to fail", || {
        s.count("failed") == 1
    });
    assert!(daemon.stop().success());
    let row: serde_json::Value =
        serde_json::from_slice(&s.cli(&["show", "1", "--json"]).stdout).unwrap();
    assert_eq!(row["attempts"], 1);
    assert!(
        row["last_error"].as_str().unwrap().contains("AccessDenied"),
        "{row}"
    );
    assert_eq!(s.spool_files(), vec!["denied.csv"]);
}
