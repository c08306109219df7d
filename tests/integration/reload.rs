//! SIGHUP: the config is reloaded without dropping queued or in-flight work, and a config
//! that does not validate is refused while the daemon runs on.

use std::time::Duration;

use crate::harness::*;
use crate::proxy::{FaultProxy, Mode};

const WAIT: Duration = Duration::from_secs(90);

#[test]
fn a_reload_adds_a_spool_and_lets_the_upload_in_flight_finish() {
    let server = shared_server();
    // Slow requests: the big file is still uploading when the reload comes.
    let proxy = FaultProxy::start(server, Mode::Delay(Duration::from_millis(300)));
    let mut o = Options::new(&proxy.endpoint());
    o.key = "{spool}/{path}-{id}";
    let s = Setup::new(o, Bucket::create(server));
    let big = data(24 << 20, 9);
    let want_big = s.drop_file("big.bin", &big);
    let daemon = s.start();
    wait_for(WAIT, "the big file uploading", || s.count("active") == 1);

    let events = s.dir.path().join("events");
    s.edit_config(|text| {
        format!(
            "{text}\n[spools.events]\npath = \"{}\"\ndestination = \"lake\"\nsettle = \"300ms\"\nkey = \"{{spool}}/{{path}}-{{id}}\"\n",
            events.display()
        )
    });
    daemon.signal_pid(libc::SIGHUP);
    wait_for(WAIT, "running on the reloaded config", || s.runs() == 2);
    std::fs::write(events.join("e.csv"), b"event\n").unwrap();
    s.drop_file("after.csv", b"orders still delivered\n");
    wait_for(WAIT, "all three delivered", || s.count("done") == 3);
    assert!(daemon.stop().success());

    let objects = s.bucket.objects();
    let keys: Vec<&String> = objects.keys().collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("inbound/events/e.csv-")));
    assert!(keys
        .iter()
        .any(|k| k.starts_with("inbound/orders/after.csv-")));
    let big_object = objects
        .iter()
        .find(|(k, _)| k.starts_with("inbound/orders/big.bin-"))
        .unwrap()
        .1;
    assert_eq!(big_object.sha256, want_big);
    let log = std::fs::read_to_string(s.dir.path().join("daemon.log")).unwrap();
    assert!(log.contains("reloading: letting uploads in flight finish"));
    assert!(
        !log.contains("files cut off by the reload"),
        "the upload in flight finished within the drain"
    );
    let puts = proxy
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST ") && r.contains("uploads"))
        .count();
    assert_eq!(puts, 1, "one multipart upload: not started over");
}

#[test]
fn a_config_that_does_not_validate_is_refused_and_the_daemon_runs_on() {
    let server = shared_server();
    let s = Setup::new(Options::new(server), Bucket::create(server));
    let daemon = s.start();
    let good = std::fs::read_to_string(&s.config).unwrap();
    s.edit_config(|text| {
        text.replace("settle = \"300ms\"", "settle = \"soon\"\ncolour = \"blue\"")
    });
    daemon.signal_pid(libc::SIGHUP);
    let log_path = s.dir.path().join("daemon.log");
    wait_for(WAIT, "the reload refused", || {
        std::fs::read_to_string(&log_path)
            .unwrap()
            .contains("still running on the previous config")
    });
    s.drop_file("a.csv", b"delivered by the old config\n");
    // (The CLI reads the broken file too, so ask the bucket.)
    wait_for(WAIT, "delivered", || s.bucket.objects().len() == 1);
    // Fixed and reloaded: taken.
    write_private(&s.config, &good);
    daemon.signal_pid(libc::SIGHUP);
    wait_for(WAIT, "running on the reloaded config", || s.runs() == 2);
    assert!(daemon.stop().success());
    let log = std::fs::read_to_string(&log_path).unwrap();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("config reload refused"))
        .collect();
    assert!(
        refused
            .iter()
            .any(|l| l.contains("key=spools.orders.settle")),
        "{refused:?}"
    );
    assert!(
        refused
            .iter()
            .any(|l| l.contains("key=spools.orders.colour")),
        "{refused:?}"
    );
    assert!(
        refused.iter().all(|l| l.contains(" level=error ")),
        "{refused:?}"
    );
}

#[test]
fn files_of_a_spool_removed_by_a_reload_wait_in_the_queue_until_it_returns() {
    let server = shared_server();
    let proxy = FaultProxy::start(server, Mode::SlowDownAll);
    let mut o = Options::new(&proxy.endpoint());
    o.max_attempts = 1000;
    let s = Setup::new(o, Bucket::create(server));
    let port = s.serve_metrics();
    let with_orders = std::fs::read_to_string(&s.config).unwrap();
    s.drop_file("a.csv", b"waits\n");
    let daemon = s.start();
    // The start's sweep of orphan uploads meets a 503 too: count failed attempts, not
    // the proxy's faults (a second fault may come before the first attempt is counted).
    let retried = || {
        metric_value(
            &scrape(port),
            "s3spool_attempt_errors_total{destination=\"lake\",class=\"transient\"}",
        )
    };
    wait_for(WAIT, "retrying", || retried().is_some_and(|n| n >= 1.0));
    assert!(
        proxy.faults() >= 2,
        "the sweep and an attempt met the fault"
    );
    // The same config with the spool renamed: "orders" is gone.
    let other = s.dir.path().join("other");
    s.edit_config(|text| {
        text.replace(
            "[spools.orders]\npath = \"spool\"",
            &format!("[spools.other]\npath = \"{}\"", other.display()),
        )
    });
    daemon.signal_pid(libc::SIGHUP);
    wait_for(WAIT, "running without orders", || s.runs() == 2);
    let attempts = |s: &Setup| -> u64 {
        let rows: Vec<serde_json::Value> = serde_json::from_slice(
            &s.cli(&["list", "--all", "--oldest", "--limit", "0", "--json"])
                .stdout,
        )
        .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["state"], "pending", "waiting, not failed");
        rows[0]["attempts"].as_u64().unwrap()
    };
    let before = attempts(&s);
    s.wait_past("nothing due", 2);
    assert_eq!(attempts(&s), before, "not claimed while its spool is gone");

    proxy.set_mode(Mode::Pass);
    write_private(&s.config, &with_orders);
    daemon.signal_pid(libc::SIGHUP);
    wait_for(WAIT, "delivered once orders is back", || {
        s.count("done") == 1
    });
    assert!(daemon.stop().success());
    assert_eq!(s.bucket.objects().len(), 1);
}
