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

/// A CSV with a column of every inferred type, quoting, and missing values.
fn typed_csv(rows: usize) -> String {
    let mut csv = String::from("id,price,active,day,at,name,note\n");
    for i in 0..rows {
        let note = if i % 3 == 0 {
            String::new()
        } else {
            format!("n{i}")
        };
        csv.push_str(&format!(
            "{i},{}.{:02},{},2026-01-{:02},2026-11-22 10:{:02}:{:02},\"name, \"\"{i}\"\"\",{note}\n",
            i * 3,
            i % 100,
            i % 2 == 0,
            i % 28 + 1,
            i / 60 % 60,
            i % 60,
        ));
    }
    csv
}

/// Row `i` of [`typed_csv`] as the independent readers give it back.
fn typed_row(i: u64) -> serde_json::Value {
    serde_json::json!({
        "id": i,
        "price": format!("{}.{:02}", i * 3, i % 100).parse::<f64>().unwrap(),
        "active": i % 2 == 0,
        "day": format!("2026-01-{:02}", i % 28 + 1),
        "at": format!("2026-11-22T10:{:02}:{:02}+00:00", i / 60 % 60, i % 60),
        "name": format!("name, \"{i}\""),
        "note": if i % 3 == 0 { serde_json::Value::Null } else { format!("n{i}").into() },
    })
}

fn single_object(s: &Setup, suffix: &str) -> (String, Object) {
    let objects = s.bucket.objects();
    let found: Vec<_> = objects
        .iter()
        .filter(|(k, _)| k.ends_with(suffix))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {suffix} object in {:?}",
        objects.keys()
    );
    (found[0].0.clone(), found[0].1.clone())
}

#[test]
fn parquet_is_typed_by_inference_in_bounded_row_groups_and_pyarrow_reads_it() {
    let server = shared_server();
    let mut o = Options::new(server);
    o.key = "{spool}/{stem}-{id}.{ext}";
    o.spool_extra = "format = \"parquet\"\ncompression = \"zstd\"\nrow_group_rows = 1000".into();
    let s = Setup::new(o, Bucket::create(server));
    s.drop_file("orders.csv", typed_csv(2500).as_bytes());
    let daemon = s.start();
    wait_for(WAIT, "delivered", || s.count("done") == 1);
    assert!(daemon.stop().success());

    let (key, object) = single_object(&s, ".parquet");
    assert!(key.starts_with("inbound/orders/orders-"), "{key}");
    assert_eq!(
        object.content_type.as_deref(),
        Some("application/vnd.apache.parquet")
    );
    let table = s.bucket.table(&key);
    assert_eq!(table["rows"], 2500);
    assert_eq!(table["row_groups"], 3, "row groups of at most 1000 rows");
    let columns: Vec<(String, String, bool)> = table["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["type"].as_str().unwrap().to_string(),
                c["nullable"].as_bool().unwrap(),
            )
        })
        .collect();
    let want = [
        ("id", "int64", false),
        ("price", "double", false),
        ("active", "bool", false),
        ("day", "date32[day]", false),
        ("at", "timestamp[us, tz=UTC]", false),
        ("name", "string", false),
        ("note", "string", true),
    ];
    assert_eq!(
        columns,
        want.map(|(n, t, null)| (n.to_string(), t.to_string(), null))
    );
    let values = table["values"].as_array().unwrap();
    for i in [0, 1, 7, 1999, 2499] {
        assert_eq!(values[i as usize], typed_row(i), "row {i}");
    }
    // The queue records the row count for manifests.
    let rows: Vec<serde_json::Value> = serde_json::from_slice(
        &s.cli(&["list", "--all", "--oldest", "--limit", "0", "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(rows[0]["rows"], 2500);
    assert_eq!(rows[0]["format"], "parquet");
    assert_eq!(rows[0]["object_size"], object.size);
}

#[test]
fn jsonl_with_options_and_a_declared_schema_reads_back_with_pythons_json() {
    let server = shared_server();
    let mut o = Options::new(server);
    o.key = "{spool}/{stem}-{id}.{ext}";
    // Semicolons, single quotes, no header: columns come from the schema, in order.
    o.spool_extra = "format = \"jsonl\"\n\
        [spools.orders.csv]\ndelimiter = \";\"\nquote = \"'\"\nheader = false\n\
        [spools.orders.schema]\nid = { type = \"integer\", nullable = false }\n\
        code = \"string\"\nweight = \"float\"\nseen = \"date\""
        .into();
    let s = Setup::new(o, Bucket::create(server));
    s.drop_file(
        "parts.txt",
        b"1;'007';2.5;2026-11-22\n2;'a;b';;2026-11-23\n3;42;7;\n",
    );
    let daemon = s.start();
    wait_for(WAIT, "delivered", || s.count("done") == 1);
    assert!(daemon.stop().success());

    let (key, object) = single_object(&s, ".jsonl");
    assert_eq!(object.content_type.as_deref(), Some("application/x-ndjson"));
    let table = s.bucket.table(&key);
    assert_eq!(table["rows"], 3);
    assert_eq!(
        table["values"],
        serde_json::json!([
            {"id": 1, "code": "007", "weight": 2.5, "seen": "2026-11-22"},
            {"id": 2, "code": "a;b", "weight": null, "seen": "2026-11-23"},
            {"id": 3, "code": "42", "weight": 7.0, "seen": null},
        ]),
        "declared string keeps leading zeros; declared float widens 7"
    );
}

#[test]
fn bad_csvs_fail_with_file_and_line_and_leave_no_object() {
    let server = shared_server();
    let mut o = Options::new(server);
    o.key = "{spool}/{stem}-{id}.{ext}";
    o.spool_extra = "format = \"parquet\"\ninfer_rows = 100".into();
    let s = Setup::new(o, Bucket::create(server));
    s.drop_file("ragged.csv", b"a,b\n1,2\n3\n4,5\n");
    s.drop_file("utf8.csv", b"a,b\n1,x\n2,y\n3,\xff\xfeoops\n");
    let mut typebreak = String::from("n,label\n");
    for i in 0..150 {
        typebreak.push_str(&format!("{i},l{i}\n"));
    }
    typebreak.push_str("not-a-number,late\n");
    s.drop_file("typebreak.csv", typebreak.as_bytes());
    s.drop_file("good.csv", b"a,b\n1,2\n");
    let daemon = s.start();
    wait_for(WAIT, "three failed, one delivered", || {
        s.count("failed") == 3 && s.count("done") == 1
    });
    assert!(daemon.stop().success());

    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&s.cli(&["list", "--state", "failed", "--json"]).stdout).unwrap();
    let error_of = |name: &str| {
        let row = rows
            .iter()
            .find(|r| r["rel_path"] == name)
            .unwrap_or_else(|| panic!("{name} not failed: {rows:?}"));
        assert_eq!(row["attempts"], 1, "bad input is not retried");
        row["last_error"].as_str().unwrap().to_string()
    };
    let path = |name: &str| {
        std::fs::canonicalize(&s.spool)
            .unwrap()
            .join(name)
            .display()
            .to_string()
    };
    assert_eq!(
        error_of("ragged.csv"),
        format!(
            "{}:3: row has 1 fields but the header has 2",
            path("ragged.csv")
        )
    );
    assert_eq!(
        error_of("utf8.csv"),
        format!("{}:4: field 2 is not valid UTF-8", path("utf8.csv"))
    );
    let typebreak_error = error_of("typebreak.csv");
    assert!(
        typebreak_error.starts_with(&format!(
            "{}:152: column \"n\": \"not-a-number\" is not an integer (type inferred from the first 100 rows",
            path("typebreak.csv")
        )),
        "{typebreak_error}"
    );
    // The sources stay, and only the good file has an object.
    let mut left = s.spool_files();
    left.sort();
    assert_eq!(left, ["ragged.csv", "typebreak.csv", "utf8.csv"]);
    let keys: Vec<String> = s.bucket.objects().into_keys().collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with("inbound/orders/good-") && keys[0].ends_with(".parquet"));
    assert!(s.bucket.open_uploads().is_empty());
}

/// A throwaway GnuPG home with one key pair; returns the armoured public key's path.
pub(crate) fn gpg_key(home: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(home).unwrap();
    let gpg = |args: &[&str]| {
        let out = std::process::Command::new("gpg")
            .env("GNUPGHOME", home)
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .expect("gpg is installed (.ci/run installs it)");
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    gpg(&[
        "--quick-gen-key",
        "s3spool test <recipient@example.com>",
        "future-default",
        "default",
        "never",
    ]);
    // A newer RSA subkey for signing only: RSA could encrypt, so picking a subkey by its
    // algorithm alone would choose this one and gpg could not decrypt.
    let listing = String::from_utf8(gpg(&["--with-colons", "--list-keys"])).unwrap();
    let fingerprint = listing
        .lines()
        .find_map(|l| l.strip_prefix("fpr:::::::::"))
        .and_then(|rest| rest.split(':').next())
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_millis(1100));
    gpg(&["--quick-add-key", &fingerprint, "rsa2048", "sign", "never"]);
    let public = home.join("recipient.asc");
    std::fs::write(
        &public,
        gpg(&["--armor", "--export", "recipient@example.com"]),
    )
    .unwrap();
    public
}

pub(crate) fn gpg_decrypt(home: &std::path::Path, encrypted: &std::path::Path) -> Vec<u8> {
    let out = std::process::Command::new("gpg")
        .env("GNUPGHOME", home)
        .args(["--batch", "--quiet", "--decrypt"])
        .arg(encrypted)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gpg --decrypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn encrypted_objects_decrypt_with_gpg_and_the_private_key() {
    let server = shared_server();
    let home = tempfile::Builder::new().prefix("gpg").tempdir().unwrap();
    let public = gpg_key(home.path());
    let mut o = Options::new(server);
    o.key = "{spool}/{stem}-{id}.{ext}";
    o.spool_extra = format!("format = \"gzip\"\nencrypt_to = \"{}\"", public.display());
    let s = Setup::new(o, Bucket::create(server));
    let csv = typed_csv(3000);
    s.drop_file("orders.csv", csv.as_bytes());
    // Above the multipart threshold even gzipped: encrypted parts upload like any other.
    let big = data(13 << 20, 77);
    s.drop_file("big.bin", &big);
    let daemon = s.start();
    wait_for(WAIT, "delivered", || s.count("done") == 2);
    assert!(daemon.stop().success());

    for (suffix, want) in [(".csv.gz.gpg", csv.as_bytes()), (".bin.gz.gpg", &big[..])] {
        let (key, object) = single_object(&s, suffix);
        assert_eq!(
            object.content_type.as_deref(),
            Some("application/pgp-encrypted"),
            "{key}"
        );
        let path = s.dir.path().join("object.gpg");
        s.bucket.get(&key, &path);
        let gzipped = gpg_decrypt(home.path(), &path);
        let mut plain = Vec::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(&gzipped[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert!(plain == want, "{key} decrypts and inflates to the source");
    }
    let big_object = single_object(&s, ".bin.gz.gpg").1;
    assert!(big_object.etag.contains('-'), "uploaded as multipart");
    let _ = std::process::Command::new("gpgconf")
        .env("GNUPGHOME", home.path())
        .args(["--kill", "gpg-agent"])
        .status();
}

#[test]
fn a_csv_of_hundreds_of_megabytes_converts_in_bounded_memory() {
    use std::io::Write;
    let server = shared_server();
    let mut o = Options::new(server);
    o.key = "{spool}/{stem}-{id}.{ext}";
    o.spool_extra = "format = \"parquet\"\nrow_group_rows = 50000".into();
    let s = Setup::new(o, Bucket::create(server));
    // Written in place under a dot name (ignored), then renamed in: one settled file.
    let tmp = s.spool.join(".big.csv.tmp");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).unwrap());
    writeln!(out, "id,amount,flag,day,at,name,note").unwrap();
    let rows: u64 = 2_000_000;
    for i in 0..rows {
        writeln!(
            out,
            "{i},{}.{:02},{},2026-{:02}-{:02},2026-11-22T{:02}:{:02}:{:02}Z,customer-{:08},note {} for order {i} of a large export",
            i % 100_000,
            i % 100,
            i % 3 == 0,
            i % 12 + 1,
            i % 28 + 1,
            i / 3600 % 24,
            i / 60 % 60,
            i % 60,
            i * 7919 % 1_000_003,
            i % 977,
        )
        .unwrap();
    }
    out.into_inner().unwrap().sync_all().unwrap();
    let size = std::fs::metadata(&tmp).unwrap().len();
    assert!(size > 200 << 20, "a few hundred MB: {size}");
    let daemon = s.start();
    let before = daemon.peak_rss();
    std::fs::rename(&tmp, s.spool.join("big.csv")).unwrap();
    wait_for(Duration::from_secs(900), "delivered", || {
        s.count("done") == 1
    });
    let peak = daemon.peak_rss();
    assert!(daemon.stop().success());

    let (key, object) = single_object(&s, ".parquet");
    let table = s.bucket.table_summary(&key);
    assert_eq!(table["rows"], rows);
    assert_eq!(table["row_groups"], rows.div_ceil(50_000));
    assert_eq!(table["last"]["id"], rows - 1);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let report = format!(
        "CSV → Parquet: {:.0} MiB CSV ({rows} rows) → {:.0} MiB Parquet; daemon peak RSS {:.1} MiB (at start {:.1} MiB); row groups of 50000 rows; 4 × 5 MiB parts in flight",
        mib(size),
        mib(object.size),
        mib(peak),
        mib(before),
    );
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::write(dir.join("convert-memory.txt"), format!("{report}\n")).unwrap();
    eprintln!("{report}");
    // The project's bound for a transfer: 64 MiB + concurrency × part size (4 × 5 MiB),
    // with the row group inside it, and far from the file's size.
    assert!(peak < (64 << 20) + 4 * (5 << 20), "{report}");
}

/// A converted file's multipart upload resumes after a SIGKILL when the conversion makes
/// the same bytes again (gzip), and starts over when it cannot (encryption).
fn converted_upload_after_sigkill(encrypt: bool) -> String {
    use crate::proxy::{FaultProxy, Mode};
    let server = shared_server();
    let proxy = FaultProxy::start(server, Mode::Delay(Duration::from_millis(400)));
    let home = tempfile::Builder::new().prefix("gpg").tempdir().unwrap();
    let mut o = Options::new(&proxy.endpoint());
    o.key = "{spool}/{stem}-{id}.{ext}";
    o.spool_extra = "format = \"gzip\"\ngzip_level = 1".into();
    if encrypt {
        let public = gpg_key(home.path());
        o.spool_extra += &format!("\nencrypt_to = \"{}\"", public.display());
    }
    let s = Setup::new(o, Bucket::create(server));
    let source = data(26 << 20, 5);
    s.drop_file("big.bin", &source);
    let log = s.kill_after_a_part_then_deliver(|| proxy.set_mode(Mode::Pass));

    let suffix = if encrypt { ".bin.gz.gpg" } else { ".bin.gz" };
    let (key, object) = single_object(&s, suffix);
    let gzipped = if encrypt {
        let path = s.dir.path().join("object.gpg");
        s.bucket.get(&key, &path);
        gpg_decrypt(home.path(), &path)
    } else {
        let path = s.dir.path().join("object.gz");
        s.bucket.get(&key, &path);
        std::fs::read(&path).unwrap()
    };
    let mut plain = Vec::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(&gzipped[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert!(plain == source, "{key} reads back as the source");
    assert_eq!(object.meta_sha256.as_deref(), Some(object.sha256.as_str()));
    assert!(s.bucket.open_uploads().is_empty(), "no upload left open");
    log
}

#[test]
fn a_gzip_upload_resumes_after_sigkill() {
    let log = converted_upload_after_sigkill(false);
    assert!(log.contains("resuming multipart upload"), "{log}");
    assert!(!log.contains("made again with other bytes"));
}

#[test]
fn an_encrypted_upload_starts_over_after_sigkill() {
    let log = converted_upload_after_sigkill(true);
    assert!(
        log.contains("the work file was made again with other bytes"),
        "{log}"
    );
}
