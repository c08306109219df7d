//! Delivering converted files: read back with independent readers (Python's gzip).

use std::time::Duration;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(120);

#[test]
fn gzip_objects_decompress_to_exactly_the_source_bytes() {
    let server = shared_server();
    let mut o = Options::new(server);
    o.key = "{spool}/{dir}/{stem}-{id}.{ext}";
    o.spool_extra = "format = \"gzip\"\ngzip_level = 9".into();
    let s = Setup::new(o, Bucket::create(server));
    let mut csv = String::from("id,name,amount\n");
    for i in 0..20_000 {
        csv.push_str(&format!("{i},name-{i},{}.{:02}\n", i * 3, i % 100));
    }
    let want_csv = s.drop_file("orders.csv", csv.as_bytes());
    let want_noext = s.drop_file("nested/README", b"no extension");
    // Random bytes do not shrink: the .gz is still above the multipart threshold.
    let want_big = s.drop_file("big.bin", &data(13 << 20, 41));
    let daemon = s.start();
    wait_for(WAIT, "delivered", || {
        s.count("done") == 3 && s.spool_files().is_empty()
    });
    assert!(daemon.stop().success());

    let objects = s.bucket.objects();
    assert_eq!(objects.len(), 3);
    // `{ext}` is the source's extension plus `.gz` (or `gz` alone).
    let find = |start: &str, end: &str| {
        let (key, object) = objects
            .iter()
            .find(|(k, _)| k.starts_with(start) && k.ends_with(end))
            .unwrap_or_else(|| panic!("no {start}*{end} in {:?}", objects.keys()));
        (key.clone(), object.clone())
    };
    let csv_object = find("inbound/orders/orders-", ".csv.gz").1;
    let big_object = find("inbound/orders/big-", ".bin.gz").1;
    for ((key, object), want) in [
        (find("inbound/orders/orders-", ".csv.gz"), &want_csv),
        (find("inbound/orders/nested/README-", ".gz"), &want_noext),
        (find("inbound/orders/big-", ".bin.gz"), &want_big),
    ] {
        assert_eq!(
            object.gunzip_sha256.as_ref(),
            Some(want),
            "{key} decompresses to the source"
        );
        assert_eq!(object.content_type.as_deref(), Some("application/gzip"));
        assert_eq!(
            object.meta_sha256.as_deref(),
            Some(object.sha256.as_str()),
            "metadata names the object's bytes"
        );
    }
    assert!(csv_object.size < csv.len() as u64 / 3, "it is compressed");
    assert!(big_object.etag.contains('-'), "uploaded as multipart");
    let work = s.dir.path().join("state/work");
    let left: Vec<_> = std::fs::read_dir(&work)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "work files removed: {left:?}");
}

#[test]
fn raw_objects_carry_a_content_type_from_the_extension() {
    let server = shared_server();
    let s = Setup::new(Options::new(server), Bucket::create(server));
    s.drop_file("a.csv", b"x,y\n");
    s.drop_file("b.json", b"{}");
    s.drop_file("c.bin", b"\x00");
    let daemon = s.start();
    wait_for(WAIT, "delivered", || s.count("done") == 3);
    assert!(daemon.stop().success());
    let objects = s.bucket.objects();
    let types: Vec<(&str, Option<&str>)> = objects
        .iter()
        .map(|(k, o)| (k.as_str(), o.content_type.as_deref()))
        .collect();
    assert_eq!(
        types,
        vec![
            ("inbound/orders/a.csv", Some("text/csv")),
            ("inbound/orders/b.json", Some("application/json")),
            ("inbound/orders/c.bin", Some("application/octet-stream")),
        ]
    );
}

#[test]
fn objects_carry_the_destinations_tags_metadata_storage_class_encryption_and_acl() {
    let server = shared_server();
    let s = Setup::new(Options::new(server), Bucket::create(server));
    // The destination table is written by the harness; add the object options to it.
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        "[destinations.lake.auth]",
        "tags = { retention = \"30d\", \"team name\" = \"data+ops@acme\" }\nmetadata = { source = \"s3spool-test\" }\nstorage_class = \"STANDARD_IA\"\nsse = \"AES256\"\nacl = \"bucket-owner-full-control\"\n\n[destinations.lake.auth]",
    );
    write_private(&s.config, &text);
    s.drop_file("small.csv", b"a,b\n");
    s.drop_file("large.bin", &data(12 << 20, 51));
    let daemon = s.start();
    wait_for(Duration::from_secs(20), "delivered or failed", || {
        s.count("done") + s.count("failed") == 2
    });
    let status = s.status();
    assert_eq!(s.count("failed"), 0, "{status}");

    assert!(daemon.stop().success());
    for key in ["inbound/orders/small.csv", "inbound/orders/large.bin"] {
        let d = s.bucket.describe(key);
        assert_eq!(d["tags"]["retention"], "30d", "{key}: {d}");
        assert_eq!(d["tags"]["team name"], "data+ops@acme", "{key}: {d}");
        assert_eq!(d["metadata"]["source"], "s3spool-test", "{key}: {d}");
        assert!(d["metadata"]["sha256"].is_string(), "{key}: {d}");
        assert_eq!(d["storage_class"], "STANDARD_IA", "{key}: {d}");
        assert_eq!(d["sse"], "AES256", "{key}: {d}");
    }
    let small = s.bucket.describe("inbound/orders/small.csv");
    assert_eq!(small["content_type"], "text/csv");
    assert!(
        small["grants"].to_string().contains("FULL_CONTROL"),
        "{small}"
    );
}
