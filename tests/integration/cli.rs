//! The operator CLI: `check`, config errors, `list`, `show`, `retry`, `purge`.

use std::time::Duration;

use crate::harness::*;

/// The state of `action`'s row in `check` output: "ok", "FAILED: …" or "skipped …".
fn check_row(text: &str, action: &str) -> String {
    text.lines()
        .map(str::trim)
        .find_map(|l| {
            l.strip_prefix(action)
                .filter(|rest| rest.starts_with(' '))
                .map(|rest| rest.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no row {action} in\n{text}"))
}

#[test]
fn check_passes_against_a_working_destination_and_leaves_nothing() {
    let endpoint = shared_server();
    let s = Setup::new(Options::new(endpoint), Bucket::create(endpoint));
    let out = s.cli(&["check"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let t = output_text(&out);
    for action in [
        "Credentials",
        "PutObject",
        "HeadObject",
        "CreateMultipartUpload",
        "UploadPart",
        "ListParts",
        "AbortMultipartUpload",
        "ListMultipartUploads",
        "DeleteObject",
    ] {
        assert_eq!(check_row(&t, action), "ok", "{t}");
    }
    assert_eq!(check_row(&t, "CompleteMultipartUpload"), "ok", "{t}");
    assert!(t.contains("all destinations ok"));
    assert!(s.bucket.objects().is_empty(), "the probe object is deleted");
    assert!(
        s.bucket.open_uploads().is_empty(),
        "the probe upload is aborted"
    );
}

#[test]
fn check_names_a_missing_bucket() {
    let endpoint = shared_server();
    let s = Setup::new(Options::new(endpoint), Bucket::named(endpoint));
    let out = s.cli(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let t = output_text(&out);
    let put = check_row(&t, "PutObject");
    assert!(
        put.starts_with("FAILED: 404 NoSuchBucket") && put.contains("the bucket does not exist"),
        "{t}"
    );
    assert_eq!(check_row(&t, "HeadObject"), "skipped (needs PutObject)");
}

#[test]
fn check_names_an_unreachable_endpoint() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let s = Setup::new(Options::new(&endpoint), Bucket::named(&endpoint));
    let out = s.cli(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let t = output_text(&out);
    let put = check_row(&t, "PutObject");
    assert!(
        put.starts_with("FAILED: ConnectionFailed") && put.contains("endpoint unreachable"),
        "{t}"
    );
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
    let t = output_text(&out);
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
    let t = output_text(&out);
    assert!(
        out.status.success() && t.contains("one.csv → inbound/orders/one.csv"),
        "{t}"
    );
    let empty = s.cli(&["list", "--state", "failed", "--json"]);
    assert_eq!(String::from_utf8_lossy(&empty.stdout).trim(), "[]");
    let bad_state = s.cli(&["list", "--state", "stuck"]);
    assert!(!bad_state.status.success() && output_text(&bad_state).contains("not a state"));
    // By default: what is not delivered yet (nothing here); --all for every row, newest
    // first unless --oldest, at most --limit.
    let ids = |args: &[&str]| -> Vec<u64> {
        let out = s.cli(args);
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(
        ids(&["list", "--json"]),
        Vec::<u64>::new(),
        "done rows are left out"
    );
    assert_eq!(ids(&["list", "--all", "--json"]), vec![2, 1]);
    assert_eq!(ids(&["list", "--all", "--oldest", "--json"]), vec![1, 2]);
    assert_eq!(ids(&["list", "--all", "--limit", "1", "--json"]), vec![2]);
    assert_eq!(
        ids(&["list", "--all", "--destination", "lake", "--json"]),
        vec![2, 1]
    );
    assert_eq!(
        ids(&["list", "--all", "--destination", "mirror", "--json"]),
        Vec::<u64>::new(),
        "only the rows going to that destination"
    );
    let with_dest = output_text(&s.cli(&["list", "--all"]));
    assert!(
        with_dest.contains(" DEST ") && with_dest.contains(" lake "),
        "{with_dest}"
    );
    let limited = s.cli(&["list", "--all", "--limit", "1"]);
    assert!(output_text(&limited).contains("--limit N for more, 0 for all"));

    let show = output_text(&s.cli(&["show", "1"]));
    assert!(
        show.contains("state         done") && show.contains("key           inbound/orders/"),
        "{show}"
    );
    assert_eq!(s.cli(&["show", "99"]).status.code(), Some(1));

    // A done row cannot be retried: that would upload it twice.
    let retry = s.cli(&["retry", "1"]);
    assert_eq!(retry.status.code(), Some(1));
    assert!(
        output_text(&retry).contains("row 1 not retried: it is done"),
        "{}",
        output_text(&retry)
    );

    let purge = s.cli(&["purge", "--done", "--older-than", "7d"]);
    assert!(
        output_text(&purge).contains("purged 0 done row"),
        "{}",
        output_text(&purge)
    );
    let purge = s.cli(&["purge", "--done", "--older-than", "0s"]);
    assert!(
        output_text(&purge).contains("purged 2 done row"),
        "{}",
        output_text(&purge)
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
        output_text(&out).contains("no queue database at"),
        "{}",
        output_text(&out)
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
        let t = output_text(&out);
        assert_eq!(out.status.code(), Some(1), "{t}");
        let put = check_row(&t, "PutObject");
        assert!(
            put.starts_with(&format!("FAILED: 403 {code}")) && put.contains(words),
            "{code}: {t}"
        );
        if code == "AccessDenied" {
            // Every action is tried on its own, each with the policy line that grants it.
            for grant in [
                "s3:PutObject on",
                "s3:ListBucketMultipartUploads on arn:aws:s3:::",
                "s3:DeleteObject on",
            ] {
                assert!(
                    t.contains(&format!("add to the IAM policy: {grant}")),
                    "{grant}: {t}"
                );
            }
            assert!(
                t.contains(&format!("arn:aws:s3:::{}/inbound/*", s.bucket.name)),
                "{t}"
            );
        }
    }

    // The daemon holds the destination's files back (no retry storm, no file failed for
    // the destination's fault), says why in status, and leaves them in place.
    s.set_keys(&id, &secret);
    s.drop_file("denied.csv", b"x");
    let daemon = s.start();
    wait_for(Duration::from_secs(60), "the destination held back", || {
        !s.status()["held_back"].as_array().unwrap().is_empty()
    });
    let status = s.status();
    assert!(daemon.stop().success());
    assert!(
        s.status()["held_back"].as_array().unwrap().is_empty(),
        "a stopped daemon holds nothing back"
    );
    assert!(
        status["held_back"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("AccessDenied"),
        "{status}"
    );
    let row: serde_json::Value =
        serde_json::from_slice(&s.cli(&["show", "1", "--json"]).stdout).unwrap();
    assert_eq!(row["state"], "pending");
    assert_eq!(
        row["attempts"], 0,
        "the destination's fault does not count against the file"
    );
    assert!(
        row["last_error"].as_str().unwrap().contains("AccessDenied"),
        "{row}"
    );
    assert_eq!(s.spool_files(), vec!["denied.csv"]);
}

#[test]
fn check_json_challenge_and_offline() {
    let endpoint = shared_server();
    let s = Setup::new(Options::new(endpoint), Bucket::create(endpoint));
    let out = s.cli(&["check", "--json", "--challenge"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    let destination = &report["destinations"][0];
    assert_eq!(destination["name"], "lake");
    let actions: Vec<&str> = destination["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"ListParts") && actions.contains(&"PutObject (challenge)"),
        "{actions:?}"
    );
    assert!(destination["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["ok"] == true));
    let challenge = destination["challenge_key"].as_str().unwrap();
    assert!(
        challenge.starts_with("inbound/s3spool-challenge-"),
        "{challenge}"
    );
    let keys: Vec<String> = s.bucket.objects().into_keys().collect();
    assert_eq!(
        keys,
        vec![challenge.to_string()],
        "the challenge object stays, the probe does not"
    );

    // Offline: config only, no network, so an unreachable endpoint does not matter.
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let offline = Setup::new(Options::new(&unreachable), Bucket::named(&unreachable));
    let out = offline.cli(&["check", "--offline"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(output_text(&out).contains("offline: no destination was contacted"));
}

#[test]
fn pause_resume_status_table_max_age_history_dry_run_and_generated_docs() {
    let endpoint = shared_server();
    let s = Setup::new(Options::new(endpoint), Bucket::create(endpoint));
    let daemon = s.start();

    // Paused: files are queued, not uploaded.
    let out = s.cli(&["pause", "orders"]);
    assert!(out.status.success(), "{}", output_text(&out));
    s.drop_file("held.csv", b"x\n");
    wait_for(Duration::from_secs(60), "queued", || {
        s.count("pending") == 1
    });
    s.wait_past("nothing due", 2);
    assert_eq!(s.count("pending"), 1, "not uploaded while paused");
    // Old enough for the --max-age check below.
    wait_for(Duration::from_secs(60), "waiting 2s", || {
        s.status()["spools"][0]["oldest_waiting_age_seconds"]
            .as_u64()
            .unwrap()
            >= 2
    });
    let status = s.status();
    let spool = &status["spools"][0];
    assert_eq!(spool["spool"], "orders");
    assert_eq!(spool["paused"], true);
    assert_eq!(spool["counts"]["pending"], 1, "still not uploaded");
    // A monitoring check: the oldest file waits longer than 1s, not longer than 1h.
    let too_old = s.cli(&["status", "--crit-age", "1s"]);
    let text = output_text(&too_old);
    assert_eq!(too_old.status.code(), Some(2), "{text}");
    assert!(text.starts_with("S3SPOOL CRITICAL - daemon pid "), "{text}");
    assert!(
        text.contains("the oldest waiting file was queued "),
        "{text}"
    );
    let old_name = s.cli(&["status", "--max-age", "1s"]);
    assert_eq!(old_name.status.code(), Some(2), "--max-age is --crit-age");
    let warn = s.cli(&["status", "--warn-age", "1s", "--crit-age", "1h"]);
    assert_eq!(warn.status.code(), Some(1), "{}", output_text(&warn));
    let fine = s.cli(&["status", "--crit-age", "1h"]);
    assert_eq!(fine.status.code(), Some(0), "{}", output_text(&fine));
    assert!(output_text(&fine).starts_with("S3SPOOL OK - daemon pid "));
    let json = s.status();
    assert_eq!(json["daemon"]["running"], true);
    assert!(json["daemon"]["pid"].as_u64().unwrap() > 0);
    assert!(json["daemon"]["since"].as_str().unwrap().ends_with('Z'));
    let table = String::from_utf8(s.cli(&["status"]).stdout).unwrap();
    assert!(
        table.contains("SPOOL") && table.contains("LAST HOUR"),
        "{table}"
    );
    assert!(table.contains("orders (paused)"), "{table}");

    let unknown = s.cli(&["pause", "nosuch"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        output_text(&unknown).contains("no spool \"nosuch\""),
        "{}",
        output_text(&unknown)
    );

    assert!(s.cli(&["resume", "orders"]).status.success());
    wait_for(Duration::from_secs(60), "delivered once resumed", || {
        s.count("done") == 1
    });
    assert!(daemon.stop().success());
    let status = s.status();
    assert_eq!(status["daemon"]["running"], false, "the daemon stopped");
    // Plain status still exits 0 for scripts; as a check, no daemon is CRITICAL.
    let down = s.cli(&["status", "--check"]);
    let text = output_text(&down);
    assert_eq!(down.status.code(), Some(2), "{text}");
    assert!(
        text.starts_with(
            "S3SPOOL CRITICAL - no daemon; nothing waiting; 0 failed (no daemon holds the queue"
        ),
        "{text}"
    );
    assert_eq!(status["spools"][0]["paused"], false);
    assert_eq!(status["spools"][0]["delivered_last_hour"], 1);
    assert_eq!(status["spools"][0]["bytes_last_hour"], 2);

    // The whole history of a file.
    let row: serde_json::Value =
        serde_json::from_slice(&s.cli(&["show", "1", "--json"]).stdout).unwrap();
    let history = row["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{row}");
    assert_eq!(history[0]["outcome"], "done");
    assert_eq!(history[0]["attempt"], 1);
    let shown = String::from_utf8(s.cli(&["show", "1"]).stdout).unwrap();
    assert!(
        shown.contains("history") && shown.contains("attempt 1  done"),
        "{shown}"
    );
    assert!(shown.contains("sha256        "), "{shown}");

    // A dry run changes nothing.
    let dry = s.cli(&["purge", "--done", "--older-than", "0s", "--dry-run"]);
    assert!(
        output_text(&dry).contains("would purge 1 done row(s)"),
        "{}",
        output_text(&dry)
    );
    assert_eq!(s.count("done"), 1);

    // Generated from the CLI definition: completions and a man page.
    let bash = s.cli(&["completions", "bash"]);
    assert!(bash.status.success());
    let bash = String::from_utf8(bash.stdout).unwrap();
    assert!(
        bash.contains("complete -F") && bash.contains("pause"),
        "{bash}"
    );
    let man = String::from_utf8(s.cli(&["man"]).stdout).unwrap();
    assert!(
        man.starts_with(".ie") || man.contains(".TH s3spool"),
        "{man}"
    );
    assert!(
        man.contains(".SH \"EXIT STATUS\""),
        "the exit codes are documented"
    );
    // A usage error exits 2.
    assert_eq!(
        s.cli(&["status", "--max-age", "soon"]).status.code(),
        Some(2)
    );
}

#[test]
fn send_uploads_one_file_through_the_queue_and_follows_it() {
    let endpoint = shared_server();
    let s = Setup::new(Options::new(endpoint), Bucket::create(endpoint));
    let daemon = s.start();
    let outside = s.dir.path().join("report.csv");
    let bytes = data(7 << 20, 3);
    std::fs::write(&outside, &bytes).unwrap();
    let out = s.cli(&["send", outside.to_str().unwrap(), "--spool", "orders"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "delivered: s3://{}/inbound/orders/report.csv",
            s.bucket.name
        )),
        "{}",
        output_text(&out)
    );
    assert!(outside.exists(), "the original is untouched");
    assert_eq!(
        s.bucket.objects()["inbound/orders/report.csv"].sha256,
        sha256(&bytes)
    );
    assert!(
        s.spool_files().is_empty(),
        "the spool's copy went the usual way"
    );
    // Sent again: followed to its own new row, not reported from the first one.
    let again = s.cli(&["send", outside.to_str().unwrap(), "--spool", "orders"]);
    assert!(again.status.success(), "{}", output_text(&again));
    assert_eq!(
        s.count("done"),
        2,
        "a second delivery, reported once it happened"
    );
    // On a terminal (a pseudo-terminal from util-linux's script): one line, redrawn.
    let command = format!(
        "{BIN} --config {} send {} --spool orders",
        s.config.display(),
        outside.display()
    );
    let tty = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("script (util-linux) runs a command on a pseudo-terminal");
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{shown}");
    assert!(
        shown.contains("\r\x1b[2K"),
        "the status line is redrawn in place: {shown:?}"
    );
    assert!(shown.contains("delivered: s3://"), "{shown}");
    assert_eq!(s.count("done"), 3);

    let unknown = s.cli(&["send", outside.to_str().unwrap(), "--spool", "nosuch"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(output_text(&unknown).contains("no spool \"nosuch\""));
    // A file of that name already waiting in the spool is never replaced.
    assert!(s.cli(&["pause", "orders"]).status.success());
    std::fs::write(s.spool.join("report.csv"), b"another").unwrap();
    let clash = s.cli(&[
        "send",
        outside.to_str().unwrap(),
        "--spool",
        "orders",
        "--no-wait",
    ]);
    assert_eq!(clash.status.code(), Some(1), "{}", output_text(&clash));
    assert!(
        output_text(&clash).contains("already in the spool"),
        "{}",
        output_text(&clash)
    );
    assert_eq!(
        std::fs::read(s.spool.join("report.csv")).unwrap(),
        b"another"
    );
    assert!(daemon.stop().success());
}

/// `s3spool man | head` and the like: the reader goes away, the command ends quietly (the
/// default action of SIGPIPE, as for Unix tools), never a panic or "Broken pipe".
#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let s = Setup::new(
        Options::new(shared_server()),
        Bucket::named(shared_server()),
    );
    for args in [
        &["completions", "zsh"][..],
        &["man"],
        &["check", "--offline"],
    ] {
        let mut child = std::process::Command::new(BIN)
            .arg("--config")
            .arg(&s.config)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the first byte is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?} {stderr}",
            out.status
        );
        assert!(stderr.is_empty(), "{args:?} said: {stderr}");
    }
}

/// One page per command, as `man s3spool-run` expects, each with EXIT STATUS,
/// ENVIRONMENT and FILES; read back by man(1)'s own formatter where it is installed.
#[test]
fn man_pages_exist_for_every_command_with_exit_status_environment_and_files() {
    let s = setup(|_| {});
    let dir = s.dir.path().join("man");
    let out = s.cli(&["man", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for want in [
        "s3spool.1",
        "s3spool-run.1",
        "s3spool-status.1",
        "s3spool-check.1",
    ] {
        assert!(pages.contains(&want.to_string()), "{want} in {pages:?}");
    }
    let top = std::fs::read_to_string(dir.join("s3spool.1")).unwrap();
    for page in &pages {
        let text = std::fs::read_to_string(dir.join(page)).unwrap();
        for section in ["EXIT STATUS", "ENVIRONMENT", "FILES"] {
            assert!(
                text.contains(&format!(".SH \"{section}\"")),
                "{section} in {page}"
            );
        }
        // The top page names each command's page: none it names is missing.
        let name = page.trim_end_matches(".1").replace('-', "\\-");
        if page != "s3spool.1" {
            assert!(
                top.contains(&format!("{name}(1)")),
                "{name}(1) in s3spool(1)"
            );
        }
    }
    let status = std::fs::read_to_string(dir.join("s3spool-status.1")).unwrap();
    assert!(
        status.contains("CRITICAL") && status.contains("UNKNOWN"),
        "{status}"
    );
    // One page to stdout, by command.
    let run = s.cli(&["man", "run"]);
    assert!(run.status.success());
    assert_eq!(
        String::from_utf8(run.stdout).unwrap(),
        std::fs::read_to_string(dir.join("s3spool-run.1")).unwrap()
    );
    assert_eq!(s.cli(&["man", "nosuch"]).status.code(), Some(1));
    // man(1) renders it, where it is installed.
    if let Ok(out) = std::process::Command::new("man")
        .arg("-l")
        .arg(dir.join("s3spool-run.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
    {
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("EXIT STATUS"), "{text}");
            assert!(text.contains("--log-level"), "{text}");
        }
    }
}

/// Asked for `--json`, a command's errors are JSON on stdout too, with the exit code.
#[test]
fn json_errors_are_json_objects_with_the_exit_code() {
    let s = setup(|_| {});
    let json = |args: &[&str]| {
        let out = s.cli(args);
        let value: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", output_text(&out)));
        (out.status.code(), value["error"].clone())
    };
    // No queue yet: a failure.
    let (code, error) = json(&["status", "--json"]);
    assert_eq!(code, Some(1));
    assert_eq!(error["kind"], "failure");
    assert_eq!(error["exit_code"], 1);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("no queue database"),
        "{error}"
    );
    // A bad option value: a usage error.
    let (code, error) = json(&["list", "--json", "--limit", "many"]);
    assert_eq!(code, Some(2));
    assert_eq!(error["kind"], "usage");
    assert!(
        error["message"].as_str().unwrap().contains("many"),
        "{error}"
    );
    // Help is not an error, JSON or not.
    let help = s.cli(&["list", "--json", "--help"]);
    assert!(help.status.success());
    // A broken config: each problem under its key.
    s.edit_config(|c| c.replace("settle = ", "settle = \"soon\"\nunused_settle = "));
    let (code, error) = json(&["show", "1", "--json"]);
    assert_eq!(code, Some(78));
    assert_eq!(error["kind"], "config");
    let problems = error["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["key"] == "spools.orders.settle"),
        "{error}"
    );
}

/// A monitoring check that cannot look (no queue, a broken config) says UNKNOWN and exits
/// 3: never 1, which a plugin reads as WARNING.
#[test]
fn a_monitoring_check_that_cannot_look_is_unknown() {
    let s = setup(|_| {});
    let out = s.cli(&["status", "--check"]);
    assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("S3SPOOL UNKNOWN - no queue database"),
        "{stdout}"
    );
    let out = s.cli(&["status", "--crit-age", "1h", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"]["exit_code"], 3, "{error}");
    s.edit_config(|c| c.replace("settle = ", "settle = \"soon\"\nunused_settle = "));
    let out = s.cli(&["status", "--warn-age", "10m"]);
    assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .starts_with("S3SPOOL UNKNOWN - config "));
    // Without a check, a broken config is still 78.
    assert_eq!(s.cli(&["status"]).status.code(), Some(78));
}

/// Starts the daemon with `umask`, logging to `daemon.log`, and waits until it runs.
fn start_with_umask(s: &Setup, umask: libc::mode_t) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let log = s.dir.path().join("daemon.log");
    let mut command = std::process::Command::new(BIN);
    command
        .arg("--config")
        .arg(&s.config)
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: umask and prctl only, in the child before exec. The parent-death signal
    // stops the daemon if an assertion fails first.
    unsafe {
        command.pre_exec(move || {
            libc::umask(umask);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = command.spawn().unwrap();
    wait_for(Duration::from_secs(60), "the daemon running", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("s3spool running")
    });
    child
}

fn stop(mut child: std::process::Child) {
    // SAFETY: signalling the child we started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success());
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The queue names every file the host ships: its files are the daemon's alone, whatever
/// the umask it was started with.
#[test]
fn the_queue_is_private_whatever_the_umask() {
    let s = setup(|_| {});
    let child = start_with_umask(&s, 0);
    s.drop_file("a.csv", b"makes the queue write its WAL\n");
    wait_for(Duration::from_secs(60), "delivered", || {
        s.count("done") == 1
    });
    let state = s.dir.path().join("state");
    assert_eq!(mode(&state), 0o700, "state dir");
    for name in ["queue.db", "queue.db-wal", "queue.db-shm", "s3spool.lock"] {
        assert_eq!(mode(&state.join(name)), 0o600, "{name}");
    }
    stop(child);
}

/// A spool folder the daemon must create is one producers in its group can write to, as
/// tmpfiles would make it, even under the unit's UMask=0077; and the log says so.
#[test]
fn a_missing_spool_folder_is_created_group_writable_and_setgid_and_logged() {
    let s = setup(|_| {});
    s.edit_config(|c| c.replace("path = \"spool\"", "path = \"fresh/orders\""));
    let child = start_with_umask(&s, 0o077);
    let fresh = s.dir.path().join("fresh");
    assert_eq!(mode(&fresh), 0o750, "a parent: passed through, not written");
    assert_eq!(mode(&fresh.join("orders")), 0o2770, "the spool");
    std::fs::write(fresh.join("orders/a.csv"), b"x\n").unwrap();
    wait_for(Duration::from_secs(60), "delivered", || {
        s.count("done") == 1
    });
    stop(child);
    let log = std::fs::read_to_string(s.dir.path().join("daemon.log")).unwrap();
    let created: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("msg=\"created spool folder\""))
        .collect();
    assert_eq!(created.len(), 2, "{log}");
    assert!(created[0].contains("mode=750"), "{}", created[0]);
    assert!(created[1].contains("mode=2770"), "{}", created[1]);
    assert!(created[1].contains("/fresh/orders"), "{}", created[1]);
    assert!(created[1].contains("group="), "{}", created[1]);
}

/// `run -v` and `run --log-level`: the command line decides the level, over $S3SPOOL_LOG.
#[test]
fn run_takes_its_log_level_from_the_command_line() {
    let s = setup(|_| {});
    let log = s.dir.path().join("levels.log");
    let start = |args: &[&str], env: Option<&str>| {
        let mut command = std::process::Command::new(BIN);
        command
            .arg("--config")
            .arg(&s.config)
            .arg("run")
            .args(args)
            .env_remove("S3SPOOL_LOG")
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(level) = env {
            command.env("S3SPOOL_LOG", level);
        }
        command.spawn().unwrap()
    };
    let stop = |mut child: std::process::Child| {
        // SAFETY: signalling the child we started.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        assert!(child.wait().unwrap().success());
        std::fs::read_to_string(&log).unwrap()
    };
    let running = || {
        wait_for(Duration::from_secs(60), "the daemon running", || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("s3spool running")
        })
    };

    let child = start(&["-v"], None);
    running();
    let text = stop(child);
    assert!(
        text.contains(" level=debug "),
        "-v logs debug lines:\n{text}"
    );
    assert!(text.contains("s3spool stopped"), "{text}");

    let child = start(&["--log-level", "warn"], Some("debug"));
    // Nothing at info is written, "running" included: wait for its pid in the lock file
    // (written after the signal handlers are in place).
    let pid = child.id().to_string();
    wait_for(Duration::from_secs(60), "the lock taken", || {
        std::fs::read_to_string(s.dir.path().join("state/s3spool.lock"))
            .is_ok_and(|t| t.split(' ').next() == Some(pid.as_str()))
    });
    let text = stop(child);
    // Its exit always logs "s3spool stopped" at info: not at warn.
    assert!(
        !text.contains("s3spool stopped")
            && !text.contains(" level=info ")
            && !text.contains(" level=debug "),
        "--log-level warn wins over S3SPOOL_LOG=debug:\n{text}"
    );

    let bad = s.cli(&["run", "--log-level", "loud"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(output_text(&bad).contains("is not a log level"));
}

/// A queue a newer s3spool wrote (a higher schema version) is refused by this one, for
/// reading and for running, with what to do; its rows stay as they were.
#[test]
fn a_queue_from_a_newer_s3spool_is_refused_by_every_command() {
    let s = setup(|_| {});
    s.drop_file("one.csv", b"1");
    let daemon = s.start();
    wait_for(Duration::from_secs(60), "one done", || s.count("done") == 1);
    assert!(daemon.stop().success());
    let queue = s.dir.path().join("state/queue.db");
    let ours: i64 = {
        let db = rusqlite::Connection::open(&queue).unwrap();
        let ours: i64 = db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        db.pragma_update(None, "user_version", ours + 1).unwrap();
        ours
    };
    let newer = format!("schema version {}", ours + 1);
    for args in [&["status"][..], &["list", "--all"], &["show", "1"]] {
        let out = s.cli(args);
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {text}");
        assert!(
            text.contains(&newer) && text.contains("a newer s3spool wrote it"),
            "{args:?}: {text}"
        );
    }
    let out = s.cli(&["status", "--json"]);
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("a newer s3spool wrote it"),
        "{error}"
    );
    let out = s.cli(&["run"]);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&newer) && text.contains("newer than this s3spool"),
        "{text}"
    );
    let db = rusqlite::Connection::open(&queue).unwrap();
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    let rows: i64 = db
        .query_row("SELECT COUNT(*) FROM files WHERE state = 'done'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        (version, rows),
        (ours + 1, 1),
        "the queue is left as it was"
    );
}
