//! Delivery windows and batch cadence, on an injected clock: the daemon and the CLI read
//! the schedules' time from the file `S3SPOOL_SCHEDULE_CLOCK` names, so a test moves
//! through a day without waiting for one (leases, backoffs and signing keep real time).
//! A file is in a batch tick if it was queued before the tick; under the injected clock,
//! "before" is read on the real clock as "more than (clock − tick) ago", so the tests move
//! the clock to the tick itself.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;
use crate::proxy::{FaultProxy, Mode};

const WAIT: Duration = Duration::from_secs(120);

/// The schedules' clock for one test.
struct Clock(PathBuf);

impl Clock {
    fn new(s: &Setup, at: &str) -> Clock {
        let clock = Clock(s.dir.path().join("clock"));
        clock.set(at);
        clock
    }

    fn set(&self, at: &str) {
        let tmp = self.0.with_extension("tmp");
        std::fs::write(&tmp, at).unwrap();
        std::fs::rename(&tmp, &self.0).unwrap();
    }

    fn env(&self) -> [(&'static str, &str); 1] {
        [("S3SPOOL_SCHEDULE_CLOCK", self.0.to_str().unwrap())]
    }

    fn start(&self, s: &Setup) -> Daemon {
        s.launch(|log| Daemon::start_env(&s.config, log, &self.env()))
    }

    fn status(&self, s: &Setup) -> Value {
        serde_json::from_slice(&s.cli_env(&["status", "--json"], &self.env()).stdout).unwrap()
    }
}

fn uploads_of(proxy: &FaultProxy, what: &str) -> usize {
    proxy.requests().iter().filter(|r| r.contains(what)).count()
}

#[test]
fn files_wait_outside_the_window_and_flow_inside_it() {
    let s = setup(|o| {
        o.spool_extra = "windows = [\"Mon-Fri 19:00-07:00\"]\nschedule_timezone = \"UTC\"".into()
    });
    let port = s.serve_metrics();
    // Monday 2026-11-30, noon: outside the window.
    let clock = Clock::new(&s, "2026-11-30T12:00:00Z");
    let daemon = clock.start(&s);
    for n in 0..3 {
        s.drop_file(&format!("f{n}.csv"), &data(1000, n));
    }
    wait_for(WAIT, "three files queued", || s.count("pending") == 3);
    s.wait_past("nothing due", 3);
    assert!(
        s.bucket.objects().is_empty(),
        "nothing sent outside the window"
    );
    let status = clock.status(&s);
    let schedule = &status["spools"][0]["schedule"];
    assert_eq!(schedule["window_open"], false, "{status}");
    assert_eq!(schedule["window_opens_at"], "2026-11-30T19:00:00Z");
    let text = output_text(&s.cli_env(&["status"], &clock.env()));
    assert!(
        text.contains("orders: outside window, opens at 2026-11-30T19:00:00Z (windows Mon-Fri 19:00-07:00 (UTC))"),
        "{text}"
    );
    let metrics = scrape(port);
    assert_eq!(
        metric_value(&metrics, "s3spool_window_open{spool=\"orders\"}"),
        Some(0.0)
    );
    let opens = chrono::DateTime::parse_from_rfc3339("2026-11-30T19:00:00Z").unwrap();
    assert_eq!(
        metric_value(
            &metrics,
            "s3spool_window_opens_timestamp_seconds{spool=\"orders\"}"
        ),
        Some(opens.timestamp() as f64)
    );

    // An operator's `send` goes now; the others keep waiting.
    let outside = s.dir.path().join("urgent.csv");
    std::fs::write(&outside, data(500, 9)).unwrap();
    let sent = s.cli_env(
        &[
            "send",
            outside.to_str().unwrap(),
            "--spool",
            "orders",
            "--timeout",
            "60s",
        ],
        &clock.env(),
    );
    assert!(sent.status.success(), "{}", output_text(&sent));
    let keys: Vec<String> = s.bucket.objects().into_keys().collect();
    assert_eq!(keys, ["inbound/orders/urgent.csv"]);
    assert_eq!(s.count("pending"), 3);

    // 19:00:30: inside.
    clock.set("2026-11-30T19:00:30Z");
    wait_for(WAIT, "the waiting files delivered", || s.count("done") == 4);
    assert_eq!(
        metric_value(&scrape(port), "s3spool_window_open{spool=\"orders\"}"),
        Some(1.0)
    );
    assert!(daemon.stop().success());
    assert_eq!(s.bucket.objects().len(), 4);
    let status = clock.status(&s);
    assert_eq!(status["spools"][0]["schedule"]["window_open"], true);
}

#[test]
fn resume_now_sends_what_waits_outside_the_window() {
    let s = setup(|o| {
        o.spool_extra = "windows = [\"Sat-Sun 00:00-24:00\"]\nschedule_timezone = \"UTC\"".into()
    });
    let clock = Clock::new(&s, "2026-11-30T12:00:00Z");
    let daemon = clock.start(&s);
    s.drop_file("a.csv", &data(100, 1));
    wait_for(WAIT, "queued", || s.count("pending") == 1);
    s.wait_past("nothing due", 2);
    assert_eq!(s.count("done"), 0);
    let out = s.cli_env(&["resume", "orders", "--now"], &clock.env());
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(output_text(&out).contains("1 queued file(s) of spool orders go now"));
    wait_for(WAIT, "delivered", || s.count("done") == 1);
    // One queued later waits for the window again.
    s.drop_file("b.csv", &data(100, 2));
    wait_for(WAIT, "queued", || s.count("pending") == 1);
    s.wait_past("nothing due", 2);
    assert_eq!(s.count("done"), 1);
    assert!(daemon.stop().success());
}

#[test]
fn a_multipart_upload_crossing_the_windows_end_pauses_and_resumes_without_restarting() {
    // Hashed first, then read again to be sent.
    pause_and_resume_across_windows("metadata");
}

#[test]
fn an_upload_read_once_pauses_and_resumes_across_windows_too() {
    // Hashed while sent: the parts sent before the pause are read and checked, not sent.
    pause_and_resume_across_windows("manifest");
}

fn pause_and_resume_across_windows(large_file_sha256: &'static str) {
    let server = shared_server();
    let proxy = FaultProxy::start(server, Mode::Pass);
    let mut o = Options::new(&proxy.endpoint());
    o.upload_extra = match large_file_sha256 {
        "manifest" => "large_file_sha256 = \"manifest\"",
        _ => "large_file_sha256 = \"metadata\"",
    };
    o.spool_extra = "windows = [\"Mon-Fri 19:00-07:00\"]\nschedule_timezone = \"UTC\"".into();
    let s = Setup::new(o, Bucket::create(server));
    // One part at a time, a second each: the window closes between parts.
    s.edit_config(|c| {
        c.replace("concurrency = 4", "concurrency = 1").replace(
            "[destinations.lake]\n",
            "[destinations.lake]\nbwlimit = \"5MiB/s\"\n",
        )
    });
    let big = data(30 << 20, 21);
    // Monday 20:00: inside.
    let clock = Clock::new(&s, "2026-11-30T20:00:00Z");
    s.drop_file("big.bin", &big);
    let daemon = clock.start(&s);
    wait_for(WAIT, "a part sent", || {
        s.show(1)["parts_done"].as_u64().is_some_and(|n| n >= 1)
    });
    // Tuesday 07:30: the window has closed.
    clock.set("2026-12-01T07:30:00Z");
    wait_for(WAIT, "the upload paused", || {
        s.log_lines("delivery window closed") == 1 && s.count("pending") == 1
    });
    let paused = s.show(1);
    let done_then = paused["parts_done"].as_u64().unwrap();
    assert!(done_then < 6, "paused before the end: {paused}");
    assert_eq!(paused["attempts"], 0, "a pause is not an attempt: {paused}");
    let parts_then = uploads_of(&proxy, "partNumber=");
    assert_eq!(
        parts_then as u64, done_then,
        "the part in flight finished and was kept"
    );
    s.wait_past("nothing due", 2);
    assert_eq!(
        uploads_of(&proxy, "partNumber="),
        parts_then,
        "nothing sent outside"
    );
    assert!(s.bucket.objects().is_empty());

    // Tuesday 19:00: open again. The upload goes on from where it stopped.
    clock.set("2026-12-01T19:00:30Z");
    wait_for(WAIT, "delivered", || s.count("done") == 1);
    assert!(daemon.stop().success());
    assert_eq!(
        s.bucket.objects()["inbound/orders/big.bin"].sha256,
        sha256(&big)
    );
    assert_eq!(uploads_of(&proxy, "partNumber="), 6, "each part sent once");
    assert_eq!(
        uploads_of(&proxy, "?uploads"),
        1,
        "one multipart upload, never restarted"
    );
    let row = s.show(1);
    assert_eq!(row["attempts"], 1, "{row}");
}

#[test]
fn a_converted_file_crossing_the_windows_end_is_finished_not_paused() {
    // Its parts could not be reused (it is made again by each attempt): stopping it at
    // every window's end could keep it from ever arriving.
    let s = setup(|o| {
        o.spool_extra = "windows = [\"Mon-Fri 19:00-07:00\"]\nschedule_timezone = \"UTC\"\n\
                         format = \"gzip\"\ngzip_level = 0"
            .into()
    });
    s.edit_config(|c| {
        c.replace("concurrency = 4", "concurrency = 1").replace(
            "[destinations.lake]\n",
            "[destinations.lake]\nbwlimit = \"5MiB/s\"\n",
        )
    });
    let clock = Clock::new(&s, "2026-11-30T20:00:00Z");
    s.drop_file("big.bin", &data(20 << 20, 31));
    let daemon = clock.start(&s);
    wait_for(WAIT, "a part sent", || {
        s.show(1)["parts_done"].as_u64().is_some_and(|n| n >= 1)
    });
    clock.set("2026-12-01T07:30:00Z");
    wait_for(WAIT, "delivered", || s.count("done") == 1);
    assert!(daemon.stop().success());
    assert_eq!(s.log_lines("delivery window closed"), 0);
    assert_eq!(s.show(1)["attempts"], 1);
    let keys: Vec<String> = s.bucket.objects().into_keys().collect();
    assert!(
        keys.len() == 1 && keys[0].starts_with("inbound/orders/big"),
        "{keys:?}"
    );
}

fn manifest_files(s: &Setup) -> Vec<Vec<String>> {
    let mut keys: Vec<String> = s
        .bucket
        .objects()
        .into_keys()
        .filter(|k| k.contains("/_manifests/"))
        .collect();
    keys.sort();
    keys.iter()
        .map(|key| {
            let path = s.dir.path().join("manifest.json");
            s.bucket.get(key, &path);
            let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let mut files: Vec<String> = doc["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    let sink = f["sink_path"].as_str().unwrap();
                    let bucket = format!("s3://{}/", s.bucket.name);
                    sink.strip_prefix(&bucket).unwrap_or(sink).to_string()
                })
                .collect();
            files.sort();
            files
        })
        .collect()
}

#[test]
fn a_cadence_delivers_each_tick_as_one_batch_with_its_manifest() {
    let s = setup(|o| {
        o.spool_extra =
            "deliver_every = \"6h\"\nschedule_timezone = \"UTC\"\nmanifest = true".into()
    });
    let port = s.serve_metrics();
    let clock = Clock::new(&s, "2026-11-30T05:00:00Z");
    let daemon = clock.start(&s);
    for n in 0..3 {
        s.drop_file(&format!("a{n}.csv"), &data(1000, n));
    }
    wait_for(WAIT, "queued", || s.count("pending") == 3);
    s.wait_past("nothing due", 3);
    assert!(s.bucket.objects().is_empty(), "nothing before the tick");
    let tick = chrono::DateTime::parse_from_rfc3339("2026-11-30T06:00:00Z").unwrap();
    assert_eq!(
        metric_value(
            &scrape(port),
            "s3spool_next_batch_timestamp_seconds{spool=\"orders\"}"
        ),
        Some(tick.timestamp() as f64)
    );
    let status = clock.status(&s);
    assert_eq!(
        status["spools"][0]["schedule"]["next_batch_at"],
        "2026-11-30T06:00:00Z"
    );

    clock.set("2026-11-30T06:00:00Z");
    wait_for(WAIT, "the first batch and its manifest", || {
        s.count("done") == 3 && manifest_files(&s).len() == 1
    });
    assert_eq!(
        manifest_files(&s),
        [[
            "inbound/orders/a0.csv",
            "inbound/orders/a1.csv",
            "inbound/orders/a2.csv"
        ]]
    );
    // Files after the tick wait for the next one, across a restart.
    s.drop_file("b0.csv", &data(1000, 10));
    s.drop_file("b1.csv", &data(1000, 11));
    wait_for(WAIT, "queued", || s.count("pending") == 2);
    s.wait_past("nothing due", 2);
    assert!(daemon.stop().success());
    let daemon = clock.start(&s);
    s.wait_past("nothing due", 2);
    assert_eq!(s.count("pending"), 2, "still waiting for 12:00");
    assert_eq!(
        manifest_files(&s).len(),
        1,
        "no manifest for files not sent"
    );

    clock.set("2026-11-30T12:00:00Z");
    wait_for(WAIT, "the second batch and its manifest", || {
        s.count("done") == 5 && manifest_files(&s).len() == 2
    });
    assert!(daemon.stop().success());
    let manifests = manifest_files(&s);
    assert_eq!(
        manifests[1],
        ["inbound/orders/b0.csv", "inbound/orders/b1.csv"]
    );
    assert_eq!(
        manifests.len(),
        2,
        "a batch is a tick: no partial manifests"
    );
}

#[test]
fn a_tick_cut_by_a_stop_keeps_its_manifest_open_until_the_tick_is_whole() {
    let server = shared_server();
    // The tick's file "slow" gets 503 until the restart.
    let proxy = FaultProxy::start(server, Mode::FailPutsTo("slow"));
    let mut o = Options::new(&proxy.endpoint());
    o.max_attempts = 1000;
    o.spool_extra = "deliver_every = \"6h\"\nschedule_timezone = \"UTC\"\nmanifest = true".into();
    let s = Setup::new(o, Bucket::create(server));
    let clock = Clock::new(&s, "2026-11-30T05:00:00Z");
    let daemon = clock.start(&s);
    s.drop_file("fast.csv", &data(1000, 1));
    s.drop_file("slow.csv", &data(1000, 2));
    wait_for(WAIT, "queued", || s.count("pending") == 2);
    clock.set("2026-11-30T06:00:00Z");
    wait_for(
        WAIT,
        "half the tick delivered, the other half retried",
        || s.count("done") == 1 && proxy.faults() >= 2,
    );
    assert!(daemon.stop().success());
    assert!(
        manifest_files(&s).is_empty(),
        "a stop does not close a tick's batch: no manifest of half a tick"
    );

    proxy.set_mode(Mode::Pass);
    let daemon = clock.start(&s);
    wait_for(WAIT, "the whole tick and its manifest", || {
        s.count("done") == 2 && manifest_files(&s).len() == 1
    });
    assert!(daemon.stop().success());
    assert_eq!(
        manifest_files(&s),
        [["inbound/orders/fast.csv", "inbound/orders/slow.csv"]]
    );
}

#[test]
fn local_schedules_read_the_repeated_hour_of_a_dst_change_forward() {
    // New York leaves daylight saving on 2026-11-01: 01:00-02:00 comes twice, first at
    // 05:00Z (EDT), then at 06:00Z (EST). At 06:10Z the clock shows 01:10 the second
    // time: the next 01:30 is 06:30Z, not 05:30Z (already past).
    let s =
        setup(|o| o.spool_extra = "deliver_every = \"30m\"\nschedule_timezone = \"local\"".into());
    s.edit_config(|c| {
        c.replace(
            "[destinations.lake]\n",
            "[destinations.lake]\nwindows = [\"01:30-05:00\"]\nschedule_timezone = \"local\"\n",
        )
    });
    let clock = Clock::new(&s, "2026-11-01T06:10:00Z");
    // A queue for status to read.
    clock.start(&s).stop();
    let env = [clock.env()[0], ("TZ", "America/New_York")];
    let status: Value =
        serde_json::from_slice(&s.cli_env(&["status", "--json"], &env).stdout).unwrap();
    let schedule = &status["spools"][0]["schedule"];
    assert_eq!(schedule["window_open"], false, "{status}");
    assert_eq!(
        schedule["window_opens_at"], "2026-11-01T06:30:00Z",
        "{status}"
    );
    assert_eq!(
        schedule["next_batch_at"], "2026-11-01T06:30:00Z",
        "{status}"
    );
    assert_eq!(
        schedule["windows"][0], "01:30-05:00 (local)",
        "the destination's windows apply to its spools: {status}"
    );
    // In the first pass of the hour, the first 01:30 is next.
    clock.set("2026-11-01T05:10:00Z");
    let status: Value =
        serde_json::from_slice(&s.cli_env(&["status", "--json"], &env).stdout).unwrap();
    assert_eq!(
        status["spools"][0]["schedule"]["window_opens_at"],
        "2026-11-01T05:30:00Z"
    );
}

/// Issue 23, item 7: the clock once four years ahead, then right again. The tick taken
/// then lies in the future: it is dropped (and said so), and the cadence goes on.
#[test]
fn a_clock_once_far_ahead_does_not_freeze_the_cadence() {
    let s = setup(|o| o.spool_extra = "deliver_every = \"6h\"\nschedule_timezone = \"UTC\"".into());
    let clock = Clock::new(&s, "2030-11-30T06:00:00Z");
    let daemon = clock.start(&s);
    wait_for(WAIT, "the tick of 2030 taken", || {
        s.log_lines("batch tick:") == 1
    });
    clock.set("2026-11-30T05:00:00Z");
    s.drop_file("a.csv", &data(1000, 1));
    wait_for(WAIT, "queued", || s.count("pending") == 1);
    s.wait_past("nothing due", 2);
    assert!(s.bucket.objects().is_empty(), "nothing before the tick");
    clock.set("2026-11-30T06:00:00Z");
    wait_for(WAIT, "delivered at the tick of the right time", || {
        s.count("done") == 1
    });
    assert!(daemon.stop().success());
    assert_eq!(
        s.log_lines("a batch tick recorded in the future"),
        1,
        "the dropped tick is said once"
    );
    // And across a restart, on the right clock.
    s.drop_file("b.csv", &data(1000, 2));
    let daemon = clock.start(&s);
    wait_for(WAIT, "queued", || s.count("pending") == 1);
    clock.set("2026-11-30T12:00:00Z");
    wait_for(WAIT, "delivered at the next tick", || s.count("done") == 2);
    assert!(daemon.stop().success());
}
