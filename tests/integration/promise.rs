//! The promise's edge cases, each tried as a producer or an operator would: a folder
//! swapped for a symlink, ids after a purge, a spool switched from keep to delete, a failed
//! path written again, a file moved during its upload.

use std::time::Duration;

use crate::harness::*;
use crate::proxy::{FaultProxy, Mode};

const WAIT: Duration = Duration::from_secs(60);

fn cli_ok(s: &Setup, args: &[&str]) -> String {
    let out = s.cli(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "s3spool {args:?}: {text}");
    text
}

#[test]
fn a_folder_swapped_for_a_symlink_never_leaks_or_deletes_outside_files() {
    let s = setup(|o| o.spool_extra = "after_upload = \"delete\"".into());
    let outside = s.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let secret = |name: &str| format!("outside the spool: {name}, never read, never deleted");
    for name in ["x.txt", "y.txt"] {
        std::fs::write(outside.join(name), secret(name)).unwrap();
    }
    // A symlinked file in the spool is never delivered either.
    std::os::unix::fs::symlink(outside.join("x.txt"), s.spool.join("link.txt")).unwrap();

    let daemon = s.start();
    // Queued while the spool is paused, so the swaps come between queueing and upload.
    cli_ok(&s, &["pause", "orders"]);
    s.drop_file("d/x.txt", b"inside the spool, moved out of it");
    let moved = s.drop_file("e/y.txt", b"inside the spool, moved within it");
    wait_for(WAIT, "both queued", || s.count("pending") == 2);
    // d goes out of the spool altogether; e stays in it under another name. Both names
    // become symlinks to the outside folder, whose files have the same names.
    std::fs::rename(s.spool.join("d"), s.dir.path().join("d-gone")).unwrap();
    std::fs::rename(s.spool.join("e"), s.spool.join("e-away")).unwrap();
    for name in ["d", "e"] {
        std::os::unix::fs::symlink(&outside, s.spool.join(name)).unwrap();
    }
    cli_ok(&s, &["resume", "orders"]);

    wait_for(WAIT, "d/x.txt refused", || s.count("failed") == 1);
    // e/y.txt's row follows its file to e-away (never tried, it takes that path's key).
    wait_for(WAIT, "e/y.txt delivered", || s.count("done") == 1);
    s.wait_past("rescan done", 2);
    assert!(daemon.stop().success());

    for name in ["x.txt", "y.txt"] {
        assert_eq!(
            std::fs::read_to_string(outside.join(name)).unwrap(),
            secret(name)
        );
    }
    let objects = s.bucket.objects();
    assert_eq!(
        objects.keys().cloned().collect::<Vec<_>>(),
        vec!["inbound/orders/e-away/y.txt"]
    );
    assert_eq!(objects["inbound/orders/e-away/y.txt"].sha256, moved);
    let text = s.failed_errors().join("\n");
    assert!(
        text.contains("symlink"),
        "the reason names the symlink: {text}"
    );
    assert_eq!(s.spool_files(), vec!["d", "e", "link.txt"]);
}

/// Found by the chaos test: a PUT applied whose answer was lost, then the file's folder
/// moved (here out and back into the spool under another name) and a symlink put in its
/// place before the retry. The retry is refused (symlink); the file found at its new path
/// must take that row back, with its key, and HEAD finds the object already there: one
/// object, not two.
#[test]
fn a_file_moved_away_behind_a_symlink_after_a_lost_answer_is_delivered_once() {
    let server = shared_server();
    let proxy = FaultProxy::start(server, Mode::LoseFirstPutAnswer);
    let mut o = Options::new(&proxy.endpoint());
    o.key = "{spool}/{path}-{id}";
    let s = Setup::new(o, Bucket::create(server));
    // A long first backoff: the folder is swapped while the retry waits.
    s.edit_config(|t| {
        t.replace("backoff_initial = \"100ms\"", "backoff_initial = \"3s\"")
            .replace("backoff_max = \"500ms\"", "backoff_max = \"3s\"")
    });
    let outside = s.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("y.txt"), "outside, never read").unwrap();
    let want = s.drop_file("e/y.txt", b"applied once, answer lost");
    let daemon = s.start();
    wait_for(WAIT, "the first PUT applied and its answer lost", || {
        proxy.faults() == 1
    });
    // The folder leaves the spool for a moment, so the retry meets the symlink before any
    // scan can meet the file at its new path; then it comes back under another name.
    let parked = s.dir.path().join("parked");
    std::fs::rename(s.spool.join("e"), &parked).unwrap();
    std::os::unix::fs::symlink(&outside, s.spool.join("e")).unwrap();
    wait_for(WAIT, "the retry refused by the symlink", || {
        s.count("failed") == 1
    });
    std::fs::rename(&parked, s.spool.join("e-away")).unwrap();
    wait_for(WAIT, "delivered", || s.count("done") == 1);
    s.wait_past("rescan done", 2);
    assert!(daemon.stop().success());

    let objects = s.bucket.objects();
    assert_eq!(
        objects.keys().cloned().collect::<Vec<_>>(),
        vec!["inbound/orders/e/y.txt-1"],
        "one object, under the key the row had"
    );
    assert_eq!(objects["inbound/orders/e/y.txt-1"].sha256, want);
    assert_eq!((s.count("failed"), s.count("pending")), (0, 0));
    assert_eq!(s.spool_files(), vec!["e"], "the moved file was cleaned up");
    assert_eq!(
        std::fs::read_to_string(outside.join("y.txt")).unwrap(),
        "outside, never read"
    );
}

#[test]
fn ids_are_never_reused_after_a_purge_so_id_keys_never_overwrite() {
    let s = setup(|o| o.key = "{spool}/{id}.{ext}");
    let daemon = s.start();
    let first: Vec<String> = (0..3)
        .map(|n| s.drop_file(&format!("a{n}.csv"), format!("first {n}\n").as_bytes()))
        .collect();
    wait_for(WAIT, "three delivered", || s.count("done") == 3);
    std::thread::sleep(Duration::from_millis(1100));
    let out = cli_ok(&s, &["purge", "--done", "--older-than", "1s"]);
    assert!(out.contains("purged 3 done row"), "{out}");
    for n in 0..3 {
        s.drop_file(&format!("b{n}.csv"), format!("second {n}\n").as_bytes());
    }
    wait_for(WAIT, "three more delivered", || s.count("done") == 3);
    assert!(daemon.stop().success());

    let objects = s.bucket.objects();
    assert_eq!(objects.len(), 6, "{objects:?}");
    // Ids 1–3 still hold the first three files (in whatever order they were queued).
    let mut kept: Vec<&String> = (1..=3)
        .map(|id| &objects[&format!("inbound/orders/{id}.csv")].sha256)
        .collect();
    let mut first: Vec<&String> = first.iter().collect();
    kept.sort();
    first.sort();
    assert_eq!(
        kept, first,
        "the first three objects were never overwritten"
    );
}

#[test]
fn switching_a_spool_from_keep_to_delete_never_uploads_kept_files_again() {
    let s = setup(|o| {
        o.spool_extra = "after_upload = \"keep\"".into();
        o.key = "{path}-{id}";
    });
    for n in 0..5 {
        s.drop_file(&format!("k{n}.csv"), format!("kept {n}\n").as_bytes());
    }
    let daemon = s.start();
    wait_for(WAIT, "five delivered", || s.count("done") == 5);
    s.edit_config(|text| text.replace("after_upload = \"keep\"", "after_upload = \"delete\""));
    daemon.signal_pid(libc::SIGHUP);
    wait_for(WAIT, "running on the reloaded config", || s.runs() == 2);
    // The delivered files are cleaned up under the new rule, not sent again.
    wait_for(WAIT, "kept files cleaned up", || s.spool_files().is_empty());
    s.wait_past("rescan done", 2);
    assert!(daemon.stop().success());
    assert_eq!(s.bucket.objects().len(), 5);
    assert_eq!(s.count("done"), 5);
}

#[test]
fn a_failed_row_yields_its_path_to_a_corrected_file() {
    let s = setup(|_| {});
    let daemon = s.start();
    cli_ok(&s, &["pause", "orders"]);
    s.drop_file("report.csv", b"first, deleted before its upload\n");
    wait_for(WAIT, "queued", || s.count("pending") == 1);
    std::fs::remove_file(s.spool.join("report.csv")).unwrap();
    cli_ok(&s, &["resume", "orders"]);
    wait_for(WAIT, "failed: source disappeared", || {
        s.count("failed") == 1
    });

    let want = s.drop_file("report.csv", b"the corrected file\n");
    wait_for(WAIT, "the corrected file delivered", || {
        s.count("done") == 1
    });
    assert!(daemon.stop().success());
    let objects = s.bucket.objects();
    assert_eq!(objects["inbound/orders/report.csv"].sha256, want);
    // The failed row cannot be retried any more: it would send the new file twice.
    let out = s.cli(&["retry", "1"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("a newer file at its path is row 2"), "{text}");
}

#[test]
fn a_file_moved_inside_the_spool_during_its_upload_is_one_object() {
    let server = shared_server();
    // Slow requests: the file is still uploading when it is moved.
    let proxy = FaultProxy::start(server, Mode::Delay(Duration::from_millis(1500)));
    let mut o = Options::new(&proxy.endpoint());
    o.spool_extra = "after_upload = \"delete\"".into();
    let s = Setup::new(o, Bucket::create(server));
    let want = s.drop_file("a.csv", b"moved while uploading\n");
    let daemon = s.start();
    wait_for(WAIT, "uploading", || s.count("active") == 1);
    std::fs::create_dir_all(s.spool.join("later")).unwrap();
    std::fs::rename(s.spool.join("a.csv"), s.spool.join("later/a.csv")).unwrap();
    wait_for(WAIT, "delivered", || s.count("done") == 1);
    // The moved file is the delivered one: cleaned up where it is now, never sent again.
    wait_for(WAIT, "moved file cleaned up", || s.spool_files().is_empty());
    s.wait_past("rescan done", 2);
    assert!(daemon.stop().success());
    let objects = s.bucket.objects();
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects["inbound/orders/a.csv"].sha256, want);
}

#[test]
fn an_outage_longer_than_the_retry_budget_holds_files_back_instead_of_failing_them() {
    let server = shared_server();
    let proxy = FaultProxy::start(server, Mode::Down);
    let mut o = Options::new(&proxy.endpoint());
    o.max_attempts = 3; // used up in about a second by backoffs of 100–500 ms
    let s = Setup::new(o, Bucket::create(server));
    let port = s.serve_metrics();
    let want: Vec<String> = (0..20)
        .map(|n| s.drop_file(&format!("f{n:02}.csv"), format!("file {n}\n").as_bytes()))
        .collect();
    let daemon = s.start();
    wait_for(WAIT, "the destination held back", || {
        s.status()["held_back"]
            .as_array()
            .is_some_and(|held| held.iter().any(|c| c["name"] == "destination:lake"))
    });
    let metrics = scrape(port);
    assert_eq!(
        metric_value(&metrics, "s3spool_held_back{cause=\"destination:lake\"}"),
        Some(1.0),
        "{metrics}"
    );
    // Probed again after the block, and still failing: nothing may fail meanwhile.
    s.wait_past("probe failed", 1);
    assert_eq!(s.count("failed"), 0, "an outage fails no file");
    assert!(proxy.faults() > 0);
    proxy.set_mode(Mode::Pass);
    wait_for(
        Duration::from_secs(120),
        "all delivered after the outage",
        || s.count("done") == 20,
    );
    assert!(daemon.stop().success());
    let objects = s.bucket.objects();
    assert_eq!(objects.len(), 20);
    for (n, sha) in want.iter().enumerate() {
        assert_eq!(&objects[&format!("inbound/orders/f{n:02}.csv")].sha256, sha);
    }
}

#[test]
fn a_multipart_upload_cut_off_by_an_outage_resumes_after_it() {
    let server = shared_server();
    // Slow parts, so the outage comes in the middle of the upload.
    let proxy = FaultProxy::start(server, Mode::Delay(Duration::from_millis(700)));
    let mut o = Options::new(&proxy.endpoint());
    o.max_attempts = 2;
    let s = Setup::new(o, Bucket::create(server));
    // 48 MiB: ten parts of 5 MiB, four at a time.
    let want = s.drop_file("big.bin", &data(48 << 20, 7));
    let daemon = s.start();
    wait_for(WAIT, "two parts uploaded", || {
        serde_json::from_slice::<serde_json::Value>(&s.cli(&["show", "1", "--json"]).stdout)
            .is_ok_and(|row| row["parts_done"].as_u64().unwrap_or(0) >= 2)
    });
    proxy.set_mode(Mode::Down);
    wait_for(WAIT, "the destination held back", || {
        !s.status()["held_back"].as_array().unwrap().is_empty()
    });
    s.wait_past("probe failed", 1); // a probe, past max_attempts = 2
    assert_eq!(s.count("failed"), 0);
    proxy.set_mode(Mode::Pass);
    wait_for(
        Duration::from_secs(120),
        "delivered after the outage",
        || s.count("done") == 1,
    );
    assert!(daemon.stop().success());
    assert_eq!(s.bucket.objects()["inbound/orders/big.bin"].sha256, want);
    // Resumed: one upload was ever started, and it is complete.
    let creates = proxy
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST ") && r.contains("?uploads"))
        .count();
    assert_eq!(creates, 1, "{:?}", proxy.requests());
    assert!(s.bucket.open_uploads().is_empty());
}

#[test]
fn an_endless_csv_row_fails_its_file_in_bounded_memory() {
    let s = setup(|o| o.spool_extra = "format = \"parquet\"".into());
    // A quote opened on line 3 never closes: the rest of 96 MiB is one row.
    let tmp = s.dir.path().join("endless.csv");
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).unwrap());
        out.write_all(b"id,name\n1,fine\n2,\"never closed\n")
            .unwrap();
        let line = [b'x'; 1 << 20];
        for _ in 0..96 {
            out.write_all(&line).unwrap();
        }
    }
    s.drop_file("ok.csv", b"id,name\n1,fine\n");
    let daemon = s.start();
    let before = daemon.peak_rss();
    std::fs::rename(&tmp, s.spool.join("endless.csv")).unwrap();
    wait_for(WAIT, "one failed, one delivered", || {
        s.count("failed") == 1 && s.count("done") == 1
    });
    let peak = daemon.peak_rss();
    assert!(daemon.stop().success());
    let error = &s.failed_errors()[0];
    assert!(
        error.contains("endless.csv:3:") && error.contains("max_row_size"),
        "{error}"
    );
    // Well under the 96 MiB row: the cap (16 MiB) and the read buffer bound it.
    assert!(
        peak < before + (48 << 20),
        "peak RSS {} MiB from {} MiB at start",
        peak >> 20,
        before >> 20
    );
}

#[test]
fn a_file_the_daemon_dies_with_again_and_again_is_set_aside() {
    let server = shared_server();
    // Slow requests: the file is mid-upload whenever the daemon is killed.
    let proxy = FaultProxy::start(server, Mode::Delay(Duration::from_secs(3)));
    let s = Setup::new(Options::new(&proxy.endpoint()), Bucket::create(server));
    s.drop_file("poison.csv", b"takes the daemon down\n");
    for round in 1..=3 {
        let daemon = s.start();
        wait_for(WAIT, &format!("claimed, round {round}"), || {
            s.count("active") == 1
        });
        daemon.kill();
    }
    let daemon = s.start();
    // Set aside at the start, with the reason: the other files go on.
    assert_eq!(s.count("failed"), 1);
    proxy.set_mode(Mode::Pass);
    let want = s.drop_file("next.csv", b"goes on\n");
    wait_for(WAIT, "the next file delivered", || s.count("done") == 1);
    assert!(daemon.stop().success());
    let row: serde_json::Value =
        serde_json::from_slice(&s.cli(&["show", "1", "--json"]).stdout).unwrap();
    assert_eq!(row["state"], "failed");
    let error = row["last_error"].as_str().unwrap();
    assert!(error.contains("daemon stopped 3 times in a row"), "{error}");
    assert_eq!(s.bucket.objects()["inbound/orders/next.csv"].sha256, want);
    assert!(s.spool_files().contains(&"poison.csv".to_string()));
}

#[test]
fn a_file_over_s3s_largest_object_is_refused_before_a_byte_is_read() {
    let s = setup(|_| {});
    // Sparse: 5 TiB and one byte, using no disk.
    let tmp = s.spool.join(".huge.bin.tmp");
    std::fs::File::create(&tmp)
        .unwrap()
        .set_len((5u64 << 40) + 1)
        .unwrap();
    std::fs::rename(&tmp, s.spool.join("huge.bin")).unwrap();
    let daemon = s.start();
    wait_for(WAIT, "refused", || s.count("failed") == 1);
    assert!(daemon.stop().success());
    let error = &s.failed_errors()[0];
    assert!(error.contains("over S3's largest object"), "{error}");
    assert!(s.bucket.open_uploads().is_empty());
    assert!(s.bucket.objects().is_empty());
}

#[test]
fn files_queued_before_a_reload_changed_the_bucket_go_where_their_rows_say() {
    let s = setup(|o| o.key = "{spool}/{path}");
    let daemon = s.start();
    cli_ok(&s, &["pause", "orders"]);
    let before: Vec<String> = (0..2)
        .map(|n| {
            s.drop_file(
                &format!("old{n}.csv"),
                format!("queued for A {n}\n").as_bytes(),
            )
        })
        .collect();
    wait_for(WAIT, "queued", || s.count("pending") == 2);
    let new_bucket = Bucket::create(&s.bucket.endpoint);
    let old_name = s.bucket.name.clone();
    s.edit_config(|text| text.replace(&old_name, &new_bucket.name));
    daemon.signal_pid(libc::SIGHUP);
    wait_for(WAIT, "running on the reloaded config", || s.runs() == 2);
    cli_ok(&s, &["resume", "orders"]);
    wait_for(WAIT, "the queued files delivered", || s.count("done") == 2);
    let after = s.drop_file("new.csv", b"queued for B\n");
    wait_for(WAIT, "the new file delivered", || s.count("done") == 3);
    assert!(daemon.stop().success());

    let old_objects = s.bucket.objects();
    assert_eq!(old_objects.len(), 2, "{old_objects:?}");
    for (n, want) in before.iter().enumerate() {
        assert_eq!(
            &old_objects[&format!("inbound/orders/old{n}.csv")].sha256,
            want
        );
    }
    let new_objects = new_bucket.objects();
    assert_eq!(new_objects.len(), 1, "{new_objects:?}");
    assert_eq!(new_objects["inbound/orders/new.csv"].sha256, after);
    let row: serde_json::Value =
        serde_json::from_slice(&s.cli(&["show", "1", "--json"]).stdout).unwrap();
    assert_eq!(row["bucket"], old_name.as_str());
}

#[test]
fn a_clean_up_cut_off_after_its_claim_is_finished_at_the_next_start() {
    let s = setup(|o| o.spool_extra = "after_upload = \"keep\"".into());
    let want = s.drop_file("a.csv", b"delivered, claimed for clean-up, then killed\n");
    let daemon = s.start();
    wait_for(WAIT, "delivered", || s.count("done") == 1);
    assert!(daemon.stop().success());
    // What a SIGKILL right after the claim leaves behind: the row done but not finished,
    // the source under its private name (hidden: no scan ever sees it).
    let conn = rusqlite::Connection::open(s.dir.path().join("state/queue.db")).unwrap();
    conn.execute("UPDATE sources SET finished_at = NULL, outcome = NULL", [])
        .unwrap();
    drop(conn);
    std::fs::rename(s.spool.join("a.csv"), s.spool.join(".s3spool-finishing-1")).unwrap();
    s.edit_config(|text| text.replace("after_upload = \"keep\"", "after_upload = \"delete\""));
    let daemon = s.start();
    wait_for(WAIT, "the claimed source finished", || {
        s.spool_files().is_empty()
    });
    assert!(daemon.stop().success());
    let objects = s.bucket.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects["inbound/orders/a.csv"].sha256, want);
    let row: serde_json::Value =
        serde_json::from_slice(&s.cli(&["show", "1", "--json"]).stdout).unwrap();
    assert_eq!(row["source_outcome"], "deleted", "{row}");
}
