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
