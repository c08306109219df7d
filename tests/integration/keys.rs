//! Keys safe for downstream tools (`sanitize_keys`, `max_key_length`), read back from the
//! server: names with spaces, UTF-8, `!@#$%^&*` and a 600-character path.

use std::time::Duration;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

fn strict_setup(extra: &str) -> Setup {
    setup(|o| {
        o.key = "{spool}/{dir}/{stem}-{id}.{ext}";
        o.spool_extra = format!("sanitize_keys = \"strict\"\nmax_key_length = 120\n{extra}");
    })
}

#[test]
fn strict_keys_keep_only_safe_characters_fit_the_limit_and_never_collide() {
    let s = strict_setup("");
    let long = format!(
        "{}/{}/{}.csv",
        "d".repeat(200),
        "e".repeat(200),
        "f".repeat(190)
    );
    assert!(long.len() >= 590);
    let files = [
        ("a b.csv", b"one".to_vec()),
        // Sanitises like the one above: the {id} keeps them apart.
        ("a#b.csv", b"two".to_vec()),
        ("ünï cödé.csv", b"three".to_vec()),
        ("sub dir/!@#$%^&*.csv", b"four".to_vec()),
        (long.as_str(), b"five".to_vec()),
    ];
    let mut shas: Vec<String> = files.iter().map(|(rel, b)| s.drop_file(rel, b)).collect();
    let daemon = s.start();
    wait_for(WAIT, "all delivered", || {
        s.count("done") == files.len() as u64
    });
    assert!(daemon.stop().success());

    let objects = s.bucket.objects();
    assert_eq!(objects.len(), files.len(), "{:?}", objects.keys());
    for key in objects.keys() {
        assert!(
            key.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c)),
            "{key}"
        );
        assert!(
            key.chars().count() <= 120,
            "{} chars: {key}",
            key.chars().count()
        );
    }
    // Every file's bytes are there, under a key of its own.
    let mut got: Vec<String> = objects.values().map(|o| o.sha256.clone()).collect();
    got.sort();
    shas.sort();
    assert_eq!(got, shas);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(
        &s.cli(&["list", "--all", "--oldest", "--limit", "0", "--json"])
            .stdout,
    )
    .unwrap();
    let key_of = |rel: &str| {
        rows.iter()
            .find(|r| r["rel_path"] == rel)
            .map(|r| r["key"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{rel} in {rows:?}"))
    };
    let id_of = |rel: &str| rows.iter().find(|r| r["rel_path"] == rel).unwrap()["id"].clone();
    assert_eq!(
        key_of("a b.csv"),
        format!("inbound/orders/a_b-{}.csv", id_of("a b.csv"))
    );
    assert_eq!(
        key_of("a#b.csv"),
        format!("inbound/orders/a_b-{}.csv", id_of("a#b.csv"))
    );
    assert_eq!(
        key_of("ünï cödé.csv"),
        format!("inbound/orders/_n__c_d_-{}.csv", id_of("ünï cödé.csv"))
    );
    assert_eq!(
        key_of("sub dir/!@#$%^&*.csv"),
        format!(
            "inbound/orders/sub_dir/________-{}.csv",
            id_of("sub dir/!@#$%^&*.csv")
        )
    );
    let long_key = key_of(&long);
    assert_eq!(long_key.chars().count(), 120, "{long_key}");
    assert!(
        long_key.ends_with(&format!("-{}.csv", id_of(&long))),
        "the id and extension stay: {long_key}"
    );
    // Folder and name are cut alike, each keeping its beginning.
    let (folder, name) = long_key
        .trim_start_matches("inbound/orders/")
        .split_once('/')
        .unwrap();
    assert!(
        folder.len() > 30 && folder.chars().all(|c| c == 'd'),
        "{long_key}"
    );
    assert!(name.starts_with(&"f".repeat(30)), "{long_key}");
}

#[test]
fn check_offline_shows_each_spools_key_as_it_will_be_rendered() {
    let s = strict_setup("sanitize_replacement = \"-\"");
    let out = s.cli(&["check", "--offline"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let bucket = &s.bucket.name;
    assert!(
        text.contains(&format!(
            "spool orders: s3://{bucket}/inbound/orders/reports/Q3-sales--final---1---42.csv"
        )),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&s.cli(&["check", "--offline", "--json"]).stdout).unwrap();
    assert_eq!(json["example_keys"][0]["spool"], "orders");
    assert_eq!(
        json["example_keys"][0]["object"],
        format!("s3://{bucket}/inbound/orders/reports/Q3-sales--final---1---42.csv")
    );
}

#[test]
fn rules_without_a_unique_placeholder_are_refused_naming_the_key() {
    let s = setup(|o| {
        o.key = "{spool}/{name}";
        o.spool_extra = "sanitize_keys = \"strict\"\n".into();
    });
    let out = s.cli(&["check", "--offline"]);
    assert_eq!(out.status.code(), Some(78));
    let text = output_text(&out);
    assert!(text.contains("spools.orders.key"), "{text}");
    assert!(text.contains("{id} or {uuid}"), "{text}");
}
