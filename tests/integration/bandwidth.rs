//! `bwlimit`: the uploads to a destination share one rate, measured on real uploads to the
//! local server, and a reload changes it for an upload under way without dropping it.
//!
//! Only the bound a limiter promises is asserted (never faster than the limit); how close
//! to the limit it gets is a speed, printed here and measured by the benchmark.

use std::time::Duration;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(120);

fn with_bwlimit(s: &Setup, bwlimit: &str) {
    s.edit_config(|c| {
        c.replace(
            "[destinations.lake]\n",
            &format!("[destinations.lake]\nbwlimit = {bwlimit}\n"),
        )
    });
}

/// The `ms` the daemon logged for the delivery of `key`'s file.
fn delivery_ms(s: &Setup, key: &str) -> u64 {
    let log = std::fs::read_to_string(s.dir.path().join("daemon.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("msg=delivered") && l.contains(key))
        .unwrap_or_else(|| panic!("no delivery of {key}:\n{log}"));
    line.split(' ')
        .find_map(|f| f.strip_prefix("ms="))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn uploads_to_a_destination_share_its_rate_and_never_exceed_it() {
    let s = setup(|_| {});
    with_bwlimit(&s, "\"4MiB/s\"");
    // One big file in parts and two small ones at once: all draw from the same bucket.
    let big = data(14 << 20, 7);
    s.drop_file("big.bin", &big);
    s.drop_file("a.csv", &data(1 << 20, 8));
    s.drop_file("b.csv", &data(1 << 20, 9));
    let daemon = s.start();
    wait_for(WAIT, "delivered", || s.count("done") == 3);
    assert!(daemon.stop().success());
    let objects = s.bucket.objects();
    assert_eq!(objects["inbound/orders/big.bin"].sha256, sha256(&big));
    let ms = delivery_ms(&s, "inbound/orders/big.bin");
    let total = (16u64 << 20) as f64;
    // The three files started together and shared 4 MiB/s: the last one could not end
    // before total / rate.
    let rate = total / (ms as f64 / 1000.0);
    let limit = (4u64 << 20) as f64;
    println!(
        "bwlimit 4MiB/s: 16 MiB took {ms} ms, {:.2} of the limit",
        rate / limit
    );
    assert!(rate <= limit * 1.1, "{rate} bytes/s over the 4MiB/s limit");
    let log = std::fs::read_to_string(s.dir.path().join("daemon.log")).unwrap();
    assert!(
        log.contains("msg=\"bandwidth limit in force\" destination=lake bwlimit=\"4.0 MiB/s\""),
        "{log}"
    );
}

#[test]
fn a_reload_lifts_the_limit_for_an_upload_under_way_without_starting_it_over() {
    let s = setup(|_| {});
    with_bwlimit(&s, "[\"00:00,1MiB/s\"]");
    let big = data(12 << 20, 11);
    s.drop_file("big.bin", &big);
    let daemon = s.start();
    // Under way: the upload is recorded, and its first part (5 MiB at 1 MiB/s) takes
    // seconds.
    wait_for(WAIT, "the multipart upload under way", || {
        let out = s.cli(&["show", "1", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .is_ok_and(|row| row["parts_total"].is_u64())
    });
    s.edit_config(|c| c.replace("bwlimit = [\"00:00,1MiB/s\"]", "bwlimit = \"off\""));
    daemon.signal_pid(libc::SIGHUP);
    wait_for(WAIT, "delivered", || s.count("done") == 1);
    assert!(daemon.stop().success());
    assert_eq!(
        s.bucket.objects()["inbound/orders/big.bin"].sha256,
        sha256(&big)
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&s.cli(&["list", "--all", "--json"]).stdout).unwrap();
    assert_eq!(
        rows[0]["attempts"], 1,
        "one attempt: not dropped, not restarted"
    );
    let ms = delivery_ms(&s, "inbound/orders/big.bin");
    println!("12 MiB, limit lifted mid-upload: {ms} ms (12 s at the old limit)");
    assert!(
        ms < 11_000,
        "the new limit applied to the upload under way: {ms} ms"
    );
    let log = std::fs::read_to_string(s.dir.path().join("daemon.log")).unwrap();
    assert!(log.contains("bwlimit=off"), "{log}");
}

#[test]
fn a_reload_does_not_cut_an_upload_the_limit_slowed_past_drain_timeout() {
    let s = setup(|o| o.drain_timeout = "2s");
    with_bwlimit(&s, "\"1MiB/s\"");
    // A body sent for seconds under the limit is not the server's silence: the request
    // times out only after 2s without a byte moving. (One request at a time: a timeout
    // worked out from the size, 2s + 5 MiB at 1 MiB/s, would cut it after the reload.)
    s.edit_config(|c| {
        c.replace("request_timeout = \"30s\"", "request_timeout = \"2s\"")
            .replace("concurrency = 4", "concurrency = 1")
    });
    // One PUT (under the 6 MiB multipart threshold): 5 s at the first limit, about 12 s
    // at the second.
    let body = data(5 << 20, 13);
    s.drop_file("slow.bin", &body);
    let daemon = s.start();
    wait_for(WAIT, "the upload under way", || s.count("active") == 1);
    // Still slow after the reload: the upload outlasts drain_timeout.
    s.edit_config(|c| c.replace("bwlimit = \"1MiB/s\"", "bwlimit = \"400KiB/s\""));
    daemon.signal_pid(libc::SIGHUP);
    wait_for(WAIT, "delivered", || s.count("done") == 1);
    assert!(daemon.stop().success());
    assert_eq!(
        s.bucket.objects()["inbound/orders/slow.bin"].sha256,
        sha256(&body)
    );
    let row = s.show(1);
    assert_eq!(
        row["attempts"], 1,
        "sent once, not cut and sent again: {row}"
    );
    assert_eq!(
        s.log_lines("drain timeout: stopping uploads"),
        0,
        "the reload cut nothing"
    );
    assert_eq!(s.log_lines("reload: waiting past drain_timeout"), 1);
}
