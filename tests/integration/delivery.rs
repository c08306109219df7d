//! Files go in, byte-exact objects come out, and the spool is cleaned as configured.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn startup_backlog_with_nested_folders_odd_names_empty_and_large_files() {
    let s = setup(|_| {});
    let mut want = BTreeMap::new();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a.csv", b"id,name\n1,x\n".to_vec()),
        ("nested/deeper/b.csv", data(10_000, 1)),
        ("name with spaces.txt", data(100, 2)),
        ("ünïcödé/日本語.csv", data(200, 3)),
        ("plus+sign+name.csv", data(300, 4)),
        ("empty.dat", Vec::new()),
        ("streamed.bin", data(5_500_000, 5)), // between part size and threshold: one streamed PUT
        ("big/multipart.bin", data(13_000_000, 6)), // above the 6MiB threshold: 3 parts
    ];
    for (rel, bytes) in &files {
        want.insert(
            format!("inbound/orders/{rel}"),
            (bytes.len() as u64, s.drop_file(rel, bytes)),
        );
    }
    // Never delivered: hidden, temporary, and a symlink pointing out of the spool.
    s.drop_file(".hidden.csv", b"secret");
    s.drop_file("partial.csv.part", b"half");
    s.drop_file("upload.tmp", b"tmp");
    let outside = s.dir.path().join("outside.txt");
    std::fs::write(&outside, b"not in the spool").unwrap();
    std::os::unix::fs::symlink(&outside, s.spool.join("link.txt")).unwrap();

    let daemon = s.start();
    wait_for(WAIT, "all files delivered", || {
        s.count("done") == files.len() as u64
    });
    let status = daemon.stop();
    assert!(status.success(), "daemon exit: {status:?}");

    let objects = s.bucket.objects();
    let got: BTreeMap<String, (u64, String)> = objects
        .iter()
        .map(|(k, o)| (k.clone(), (o.size, o.sha256.clone())))
        .collect();
    assert_eq!(
        got, want,
        "every file exactly once, byte for byte, nothing else"
    );
    let multipart = &objects["inbound/orders/big/multipart.bin"];
    assert!(
        multipart.etag.ends_with("-3"),
        "13 MB in 5 MiB parts: {}",
        multipart.etag
    );
    assert!(s.bucket.open_uploads().is_empty());
    assert_eq!(
        s.spool_files(),
        vec![".hidden.csv", "link.txt", "partial.csv.part", "upload.tmp"],
        "delivered files are deleted; skipped ones stay"
    );
    assert_eq!(std::fs::read(&outside).unwrap(), b"not in the spool");
}

#[test]
fn files_dropped_while_running_including_a_slow_writer() {
    let s = setup(|o| o.settle = "1s");
    let daemon = s.start();

    let quick = s.drop_file("quick.csv", &data(1000, 7));
    // A producer that writes in place, slowly: 8 chunks, 400 ms apart (3.2 s in all, longer
    // than `settle` from first byte to last, but never quiet for `settle`).
    let slow_path = s.spool.join("slow.csv");
    let mut slow_bytes = Vec::new();
    let mut f = std::fs::File::create(&slow_path).unwrap();
    for i in 0..8 {
        let chunk = data(50_000, 100 + i);
        f.write_all(&chunk).unwrap();
        f.flush().unwrap();
        slow_bytes.extend_from_slice(&chunk);
        std::thread::sleep(Duration::from_millis(400));
    }
    drop(f);

    // Both delivered and cleaned up. (Should a stalled machine pause the writer for longer
    // than `settle`, the early part may go up first; the final version then follows under
    // the same key, so the object below is still the whole file.)
    wait_for(WAIT, "both files delivered", || {
        s.count("pending") + s.count("active") == 0 && s.spool_files().is_empty()
    });
    assert!(daemon.stop().success());
    let objects = s.bucket.objects();
    assert_eq!(objects["inbound/orders/quick.csv"].sha256, quick);
    let slow = &objects["inbound/orders/slow.csv"];
    assert_eq!(
        (slow.size, &slow.sha256),
        (slow_bytes.len() as u64, &sha256(&slow_bytes)),
        "never half a file"
    );
    assert_eq!(objects.len(), 2);
}

#[test]
fn default_key_template_is_date_partitioned_and_unique() {
    let s = setup(|o| {
        o.key = "{spool}/{yyyy}/{mm}/{dd}/{stem}-{timestamp}-{id}.{ext}";
        o.prefix = "";
    });
    s.drop_file("a.csv", b"1");
    s.drop_file("sub/a.csv", b"2");
    s.drop_file("README", b"3");
    let daemon = s.start();
    wait_for(WAIT, "three files delivered", || s.count("done") == 3);
    assert!(daemon.stop().success());
    let keys: Vec<String> = s.bucket.objects().into_keys().collect();
    assert_eq!(
        keys.len(),
        3,
        "same-named files get distinct keys: {keys:?}"
    );
    let today = chrono::Utc::now().format("%Y/%m/%d").to_string();
    for key in &keys {
        assert!(key.starts_with(&format!("orders/{today}/")), "{key}");
    }
    assert_eq!(keys.iter().filter(|k| k.ends_with(".csv")).count(), 2);
    assert!(
        keys.iter()
            .any(|k| k.contains("/README-") && !k.ends_with('.')),
        "{keys:?}"
    );
    // The key in the queue is the key in S3.
    let listed: serde_json::Value = serde_json::from_slice(
        &s.cli(&["list", "--all", "--oldest", "--limit", "0", "--json"])
            .stdout,
    )
    .unwrap();
    let mut queued: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect();
    queued.sort();
    assert_eq!(queued, keys);
}

#[test]
fn archive_moves_delivered_files_keeping_their_folders() {
    let s =
        setup(|o| o.spool_extra = "after_upload = \"archive\"\narchive_dir = \"archive\"".into());
    let a = s.drop_file("x/a.csv", b"first");
    let daemon = s.start();
    wait_for(WAIT, "archived", || {
        s.dir.path().join("archive/x/a.csv").exists()
    });
    // The same name again: a new file, a new row; the older archive copy is not overwritten.
    s.drop_file("x/a.csv", b"second");
    wait_for(WAIT, "second archived", || {
        s.count("done") == 2 && s.spool_files().is_empty()
    });
    assert!(daemon.stop().success());
    assert_eq!(
        std::fs::read(s.dir.path().join("archive/x/a.csv")).unwrap(),
        b"first"
    );
    let archived: Vec<_> = std::fs::read_dir(s.dir.path().join("archive/x"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(archived.len(), 2);
    assert_eq!(
        s.bucket.objects()["inbound/orders/x/a.csv"].sha256,
        sha256(b"second")
    );
    assert_ne!(a, sha256(b"second"));
}

#[test]
fn keep_leaves_the_file_and_never_uploads_it_twice() {
    let s = setup(|o| {
        o.spool_extra = "after_upload = \"keep\"".into();
        o.key = "{path}-{id}";
    });
    s.drop_file("kept.csv", b"v1");
    let daemon = s.start();
    wait_for(WAIT, "delivered", || s.count("done") == 1);
    // Several rescans see the unchanged file: nothing new is queued.
    s.wait_past("rescan done", 3);
    assert_eq!(s.bucket.objects().len(), 1);
    // Changed: delivered again, as a new row.
    std::fs::write(s.spool.join("kept.csv"), b"version two").unwrap();
    wait_for(WAIT, "changed file delivered", || s.count("done") == 2);
    assert!(daemon.stop().success());
    assert_eq!(s.spool_files(), vec!["kept.csv"]);
    let objects = s.bucket.objects();
    assert_eq!(objects.len(), 2);
    assert_eq!(objects["inbound/kept.csv-2"].sha256, sha256(b"version two"));

    // Purge keeps done rows whose source is still in place: they are what stops a re-upload.
    let out = s.cli(&["purge", "--done", "--older-than", "0s"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("purged 1 done row"), "{text}");
    assert!(text.contains("kept 1 done row"), "{text}");
}

#[test]
fn include_and_exclude_globs_choose_the_files() {
    let s = setup(|o| o.spool_extra = "include = [\"*.csv\"]\nexclude = [\"skip/**\"]".into());
    s.drop_file("yes.csv", b"1");
    s.drop_file("deep/yes.csv", b"2");
    s.drop_file("no.json", b"3");
    s.drop_file("skip/no.csv", b"4");
    let daemon = s.start();
    wait_for(WAIT, "two delivered", || s.count("done") == 2);
    s.wait_past("rescan done", 2);
    assert!(daemon.stop().success());
    let keys: Vec<String> = s.bucket.objects().into_keys().collect();
    assert_eq!(
        keys,
        vec!["inbound/orders/deep/yes.csv", "inbound/orders/yes.csv"]
    );
    assert_eq!(s.spool_files(), vec!["no.json", "skip/no.csv"]);
}

#[test]
fn a_file_changed_during_its_upload_is_uploaded_again_under_the_same_key() {
    // Every request held 400 ms: 8 parts at 4 in flight cannot finish before the append.
    let server = shared_server();
    let proxy = crate::proxy::FaultProxy::start(
        server,
        crate::proxy::Mode::Delay(Duration::from_millis(400)),
    );
    let s = Setup::new(Options::new(&proxy.endpoint()), Bucket::create(server));
    let mut bytes = data(40 << 20, 11);
    s.drop_file("growing.bin", &bytes);
    let daemon = s.start();
    wait_for(WAIT, "upload in flight", || s.count("active") == 1);
    // The producer was not done after all: it appends while the multipart upload runs.
    let tail = data(1000, 12);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(s.spool.join("growing.bin"))
        .unwrap();
    f.write_all(&tail).unwrap();
    drop(f);
    proxy.set_mode(crate::proxy::Mode::Pass);
    bytes.extend_from_slice(&tail);
    wait_for(WAIT, "the final version delivered", || {
        s.spool_files().is_empty()
    });
    assert!(daemon.stop().success());
    let objects = s.bucket.objects();
    assert_eq!(
        objects.len(),
        1,
        "one key, never a second object: {:?}",
        objects.keys().collect::<Vec<_>>()
    );
    let object = &objects["inbound/orders/growing.bin"];
    assert_eq!(
        (object.size, &object.sha256),
        (bytes.len() as u64, &sha256(&bytes)),
        "the whole final file"
    );
    let log = std::fs::read_to_string(s.dir.path().join("daemon.log")).unwrap();
    assert!(
        log.contains("source changed; uploading it again"),
        "the change was caught after the upload"
    );
}

#[test]
fn a_new_file_renamed_over_one_in_flight_is_delivered_on_its_own() {
    // {id} in the key: each version of the file gets its own object.
    let s = setup(|o| o.key = "{path}-{id}");
    let v1 = data(40 << 20, 21);
    s.drop_file("report.bin", &v1);
    let daemon = s.start();
    wait_for(WAIT, "upload in flight", || s.count("active") == 1);
    // The producer publishes a new version the usual way: write aside, rename over.
    let v2 = data(1 << 20, 22);
    s.drop_file("report.bin", &v2);
    wait_for(WAIT, "both versions delivered", || {
        s.count("done") == 2 && s.spool_files().is_empty()
    });
    assert!(daemon.stop().success());
    let mut contents: Vec<String> = s.bucket.objects().into_values().map(|o| o.sha256).collect();
    contents.sort();
    let mut want = vec![sha256(&v1), sha256(&v2)];
    want.sort();
    assert_eq!(
        contents, want,
        "the version in flight is not lost, and neither is the new one"
    );
}

#[test]
fn file_events_deliver_without_rescans_even_with_a_relative_config_path() {
    // Rescans every hour: only inotify events can bring these files in.
    let s = setup(|o| o.rescan = "1h");
    let daemon =
        s.launch(|log| Daemon::start_in(s.dir.path(), std::path::Path::new("config.toml"), log));
    wait_for(WAIT, "the start-up scan", || {
        s.log_lines("rescan done") >= 1
    });
    let a = s.drop_file("a.csv", b"by rename");
    std::fs::create_dir_all(s.spool.join("new/dir")).unwrap();
    std::fs::write(s.spool.join("new/dir/b.csv"), b"written in place").unwrap();
    // A whole folder moved in arrives as one event for the folder.
    let staging = s.dir.path().join("staging");
    std::fs::create_dir_all(staging.join("inner")).unwrap();
    std::fs::write(staging.join("inner/c.csv"), b"moved in with its folder").unwrap();
    std::fs::rename(&staging, s.spool.join("moved")).unwrap();
    wait_for(Duration::from_secs(20), "three files via events", || {
        s.count("done") == 3
    });
    assert!(daemon.stop().success());
    let objects = s.bucket.objects();
    assert_eq!(objects["inbound/orders/a.csv"].sha256, a);
    assert_eq!(
        objects["inbound/orders/new/dir/b.csv"].sha256,
        sha256(b"written in place")
    );
    assert_eq!(
        objects["inbound/orders/moved/inner/c.csv"].sha256,
        sha256(b"moved in with its folder")
    );
}
