//! Delivery manifests: written last, listing exactly the batch's objects, and exactly once
//! across a SIGKILL.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;
use crate::proxy::{FaultProxy, Mode};

const WAIT: Duration = Duration::from_secs(120);

fn manifest_keys(s: &Setup) -> Vec<String> {
    s.bucket
        .objects()
        .into_keys()
        .filter(|k| k.contains("/_manifests/"))
        .collect()
}

fn read_manifest(s: &Setup, key: &str) -> Value {
    let path = s.dir.path().join("manifest.json");
    s.bucket.get(key, &path);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn csv(rows: usize, seed: usize) -> String {
    let mut text = String::from("id,label\n");
    for i in 0..rows {
        text.push_str(&format!("{i},s{seed}-{i}\n"));
    }
    text
}

#[test]
fn manifests_list_each_batch_and_match_the_objects() {
    let server = shared_server();
    let mut o = Options::new(server);
    o.key = "{spool}/{stem}-{id}.{ext}";
    o.spool_extra = "format = \"jsonl\"\nmanifest = true\nmanifest_every = \"1h\"\n\
                     manifest_max_files = 3"
        .into();
    let s = Setup::new(o, Bucket::create(server));
    for n in 0..7 {
        s.drop_file(&format!("f{n}.csv"), csv(n + 1, n).as_bytes());
    }
    let daemon = s.start();
    wait_for(WAIT, "two full batches written", || {
        s.count("done") == 7 && manifest_keys(&s).len() == 2
    });
    // The last batch (one file) closes at shutdown.
    assert!(daemon.stop().success());

    let objects = s.bucket.objects();
    let keys = manifest_keys(&s);
    assert_eq!(keys.len(), 3, "{keys:?}");
    let mut listed = BTreeSet::new();
    let mut sizes = Vec::new();
    let spool = std::fs::canonicalize(&s.spool).unwrap();
    for key in &keys {
        let m = read_manifest(&s, key);
        let batch = m["batch"].as_str().unwrap();
        assert_eq!(
            key,
            &format!("inbound/orders/_manifests/manifest-orders-{batch}.json")
        );
        assert_eq!(m["spool"], "orders");
        assert_eq!(m["destination"], "lake");
        assert_eq!(m["host"].as_str().unwrap(), s3spool_host());
        assert!(m["opened_at"].as_str().unwrap() <= m["closed_at"].as_str().unwrap());
        let files = m["files"].as_array().unwrap();
        sizes.push(files.len());
        let mut total_bytes = 0;
        let mut total_rows = 0;
        for f in files {
            let sink = f["sink_path"].as_str().unwrap();
            let object_key = sink
                .strip_prefix(&format!("s3://{}/", s.bucket.name))
                .unwrap_or_else(|| panic!("{sink} is not in the bucket"));
            let object = &objects[object_key];
            assert_eq!(f["size"], object.size, "{sink}");
            assert_eq!(f["sha256"], object.sha256.as_str(), "{sink}");
            assert_eq!(f["name"], object_key.rsplit('/').next().unwrap());
            assert_eq!(f["format"], "jsonl");
            // f<n>.csv holds n + 1 rows.
            let source = f["source_path"].as_str().unwrap();
            let n: u64 = source
                .strip_prefix(&format!("{}/f", spool.display()))
                .and_then(|rest| rest.strip_suffix(".csv"))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(f["rows"], n + 1);
            assert!(f["source_mtime"].as_str().unwrap().starts_with("20"));
            assert!(listed.insert(object_key.to_string()), "{sink} listed twice");
            total_bytes += object.size;
            total_rows += n + 1;
        }
        assert_eq!(m["totals"]["files"], files.len());
        assert_eq!(m["totals"]["bytes"], total_bytes);
        assert_eq!(m["totals"]["rows"], total_rows);
    }
    sizes.sort();
    assert_eq!(sizes, [1, 3, 3]);
    let delivered: BTreeSet<String> = objects
        .keys()
        .filter(|k| !k.contains("/_manifests/"))
        .cloned()
        .collect();
    assert_eq!(listed, delivered, "every object is in exactly one manifest");
}

#[test]
fn a_sigkill_before_the_manifest_still_yields_exactly_one_after_restart() {
    let server = shared_server();
    // Every manifest PUT fails until the proxy lets them through: the daemon is killed
    // after the batch's last upload and before its manifest.
    let proxy = FaultProxy::start(server, Mode::FailPutsTo("/_manifests/"));
    let mut o = Options::new(&proxy.endpoint());
    o.key = "{spool}/{name}-{id}";
    o.spool_extra = "manifest = true\nmanifest_max_files = 4".into();
    let s = Setup::new(o, Bucket::create(server));
    for n in 0..4 {
        s.drop_file(&format!("f{n}.bin"), &data(1000 + n, n as u64));
    }
    let daemon = s.start();
    wait_for(WAIT, "all done and a manifest PUT refused", || {
        s.count("done") == 4 && proxy.faults() > 0
    });
    daemon.kill();
    assert!(manifest_keys(&s).is_empty());

    proxy.set_mode(Mode::Pass);
    let daemon = s.start();
    wait_for(WAIT, "the manifest written after restart", || {
        !manifest_keys(&s).is_empty()
    });
    assert!(daemon.stop().success());
    let keys = manifest_keys(&s);
    assert_eq!(keys.len(), 1, "{keys:?}");
    let m = read_manifest(&s, &keys[0]);
    assert_eq!(m["files"].as_array().unwrap().len(), 4);
    assert_eq!(m["totals"]["files"], 4);
    let puts = proxy
        .requests()
        .iter()
        .filter(|r| r.starts_with("PUT ") && r.contains("/_manifests/"))
        .count();
    assert!(puts >= 2, "refused before the kill, written after: {puts}");
}

/// This machine's name, as the daemon records it.
fn s3spool_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn a_batch_closes_after_manifest_every_while_the_daemon_runs() {
    let server = shared_server();
    let mut o = Options::new(server);
    o.key = "{spool}/{name}-{id}";
    o.spool_extra = "manifest = true\nmanifest_every = \"2s\"\n\
                     manifest_key = \"manifests/{yyyy}/{mm}/{dd}/{host}-{batch}.json\""
        .into();
    let s = Setup::new(o, Bucket::create(server));
    let day = || chrono::Utc::now().format("%Y/%m/%d").to_string();
    let first_day = day();
    s.drop_file("a.bin", b"first");
    s.drop_file("b.bin", b"second");
    let daemon = s.start();
    let manifests = || -> Vec<String> {
        s.bucket
            .objects()
            .into_keys()
            .filter(|k| k.starts_with("inbound/manifests/"))
            .collect()
    };
    let listed = || -> usize {
        manifests()
            .iter()
            .map(|k| {
                let path = s.dir.path().join("m.json");
                s.bucket.get(k, &path);
                let m: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                m["files"].as_array().unwrap().len()
            })
            .sum()
    };
    // Written by age, before any shutdown.
    wait_for(WAIT, "manifests by age listing both files", || {
        listed() == 2
    });
    assert!(daemon.stop().success());
    let host = s3spool_host();
    let days = [first_day, day()];
    for key in manifests() {
        let rest = days
            .iter()
            .find_map(|d| key.strip_prefix(&format!("inbound/manifests/{d}/{host}-")))
            .unwrap_or_else(|| panic!("{key} does not follow manifest_key"));
        assert!(rest.ends_with(".json") && rest.len() == "20261122T131500Z-3f9a1c2e.json".len());
    }
}
