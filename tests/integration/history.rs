//! A bounded history: the daemon forgets delivered rows older than `history` whose files
//! it deleted, keeps the rows of kept files (what stops them going again), and `status`
//! shows the queue's size and oldest row.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(120);

#[test]
fn rows_older_than_history_are_forgotten_and_kept_files_rows_stay() {
    let s = setup(|_| {});
    std::fs::create_dir_all(s.dir.path().join("kept")).unwrap();
    s.edit_config(|c| {
        format!("history = \"1d\"\n{c}")
            + "\n[spools.kept]\npath = \"kept\"\ndestination = \"lake\"\nsettle = \"300ms\"\n\
               key = \"{spool}/{path}\"\nafter_upload = \"keep\"\n"
    });
    s.bucket.enable_versioning();
    let daemon = s.start();
    for n in 0..3 {
        s.drop_file(&format!("d{n}.csv"), format!("deleted {n}").as_bytes());
    }
    std::fs::write(s.dir.path().join("kept/k.csv"), b"kept").unwrap();
    wait_for(WAIT, "four delivered", || s.count("done") == 4);
    assert!(daemon.stop().success());
    // Two days pass for the queue (the rows' times moved back; the clock is not ours).
    let db = rusqlite::Connection::open(s.dir.path().join("state/queue.db")).unwrap();
    db.execute(
        "UPDATE files SET queued_at = queued_at - 172800000, done_at = done_at - 172800000",
        [],
    )
    .unwrap();
    drop(db);

    let daemon = s.start();
    wait_for(WAIT, "old rows forgotten", || {
        s.log_lines("forgot delivered rows older than history") >= 1
    });
    s.wait_past("rescan done", 2);
    assert!(daemon.stop().success());
    let rows: serde_json::Value =
        serde_json::from_slice(&s.cli(&["list", "--all", "--limit", "0", "--json"]).stdout)
            .unwrap();
    let left: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rel_path"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["k.csv"], "the kept file's row stays");
    // The kept file is not sent again, nor anything else.
    let versions: BTreeMap<String, usize> = s
        .bucket
        .versions()
        .into_iter()
        .map(|(k, v)| (k, v.len()))
        .collect();
    assert_eq!(versions.len(), 4);
    assert!(versions.values().all(|n| *n == 1), "{versions:?}");
    let status = s.status();
    assert!(status["queue_bytes"].as_u64().unwrap() > 0, "{status}");
    assert!(status["oldest_row"].as_str().is_some(), "{status}");
    let text = output_text(&s.cli(&["status"]));
    assert!(text.contains("history since"), "{text}");
}

#[test]
fn history_must_be_a_duration_of_an_hour_or_more_or_forever() {
    let s = setup(|_| {});
    let original = std::fs::read_to_string(&s.config).unwrap();
    for (value, words, code) in [
        ("\"10m\"", "must be at least 1h", Some(78)),
        ("\"always\"", "forever", Some(78)),
        ("\"forever\"", "", Some(0)),
    ] {
        s.edit_config(|_| format!("history = {value}\n{original}"));
        let out = s.cli(&["check", "--offline"]);
        let text = output_text(&out);
        assert_eq!(out.status.code(), code, "{value}: {text}");
        assert!(text.contains(words), "{value}: {text}");
        if code == Some(78) {
            assert!(text.contains("history"), "the key is named: {text}");
        }
    }
}
