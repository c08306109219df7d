//! `s3spool verify`: the bucket audited against the queue. Tampering is done behind the
//! daemon's back by the independent reader (boto3), and each kind must be named with its
//! word and the exit code 1; what cannot be checked (a permission) gives 2 and names it.

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(120);

fn verify(s: &Setup, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    let out = s.cli(&all);
    (out.status.code(), output_text(&out))
}

fn verify_json(s: &Setup, args: &[&str]) -> (Option<i32>, Value) {
    let mut all = vec!["verify", "--json"];
    all.extend_from_slice(args);
    let out = s.cli(&all);
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", output_text(&out)));
    (out.status.code(), json)
}

/// The problems of a JSON report, as key → kind.
fn problems(report: &Value) -> BTreeMap<String, String> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["key"].as_str().unwrap().to_string(),
                p["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn verify_passes_a_clean_bucket_and_names_each_kind_of_tampering() {
    let s = setup(|o| {
        o.spool_extra = "manifest = true\nmanifest_max_files = 2".into();
    });
    let daemon = s.start();
    s.drop_file("a.csv", b"a,1\n");
    s.drop_file("b.csv", b"b,2\n");
    s.drop_file("c.csv", b"c,3\n");
    // Above the multipart threshold: its ETag is a multipart one.
    s.drop_file("d.bin", &data(7 << 20, 41));
    let manifests = || -> Vec<String> {
        s.bucket
            .objects()
            .into_keys()
            .filter(|k| k.contains("/_manifests/"))
            .collect()
    };
    wait_for(WAIT, "four delivered in two manifests", || {
        s.count("done") == 4 && manifests().len() == 2
    });
    assert!(daemon.stop().success());

    let (code, text) = verify(&s, &["--all"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("verified 4 delivered row(s) (4 by 1 listing page(s), 0 by HEAD)")
            && text.contains("all good"),
        "{text}"
    );
    let (code, report) = verify_json(&s, &["--all", "--deep", "--unexplained"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["rows"], 4);
    assert_eq!(report["read_back"], 4, "every object hashed: {report}");
    assert_eq!(report["manifests"], 2);
    assert_eq!(
        report["listed"], 6,
        "four objects and two manifests: {report}"
    );
    assert!(report["problems"].as_array().unwrap().is_empty());

    // Behind s3spool's back: one object deleted, one overwritten, one written by another
    // hand under the spool's prefix, and a manifest edited.
    s.bucket.remove("inbound/orders/a.csv");
    s.bucket
        .put("inbound/orders/b.csv", b"someone else's bytes");
    s.bucket.put("inbound/orders/extra.csv", b"no row wrote me");
    let manifest = manifests().into_iter().next().unwrap();
    let path = s.dir.path().join("m.json");
    s.bucket.get(&manifest, &path);
    let mut m: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m["files"][0]["size"] = Value::from(999_999);
    s.bucket.put(&manifest, m.to_string().as_bytes());

    let (code, report) = verify_json(&s, &["--all", "--unexplained"]);
    assert_eq!(code, Some(1), "{report}");
    let want: BTreeMap<String, String> = [
        ("inbound/orders/a.csv", "missing"),
        ("inbound/orders/b.csv", "overwritten"),
        ("inbound/orders/extra.csv", "unexplained"),
        (manifest.as_str(), "manifest_differs"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(problems(&report), want, "{report}");
    // The rows it concerns are named.
    let missing = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "missing")
        .unwrap();
    let missing_id = missing["id"].as_i64().unwrap();
    assert_eq!(s.show(missing_id)["rel_path"], "a.csv");
    assert_eq!(missing["spool"], "orders");
    let overwritten_id = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "overwritten")
        .unwrap()["id"]
        .as_i64()
        .unwrap();

    // The same as text, one line per problem with its word, and the summary.
    let (code, text) = verify(&s, &["--all", "--unexplained"]);
    assert_eq!(code, Some(1), "{text}");
    for line in [
        format!("missing          spool=orders id={missing_id} s3://"),
        format!("overwritten      spool=orders id={overwritten_id} s3://"),
        "unexplained      spool=orders s3://".to_string(),
        "manifest differs spool=orders s3://".to_string(),
    ] {
        assert!(text.contains(&line), "{line}: {text}");
    }
    assert!(
        text.contains("1 missing") && text.contains("1 overwritten"),
        "{text}"
    );
    // Without --unexplained, only the rows: two problems.
    let (code, report) = verify_json(&s, &["--all"]);
    assert_eq!(code, Some(1));
    assert_eq!(problems(&report).len(), 2, "{report}");
    // A spool filter that names nothing is an error that lists the spools.
    let (code, text) = verify(&s, &["--spool", "nope"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("spools: orders"), "{text}");
}

#[test]
fn verify_judges_only_the_range_and_objects_newer_than_a_purge() {
    let s = setup(|_| {});
    let daemon = s.start();
    s.drop_file("old.csv", b"old");
    wait_for(WAIT, "delivered", || s.count("done") == 1);
    assert!(daemon.stop().success());
    // The row purged: its object is no row's now, and must not be called unexplained.
    let out = s.cli(&["purge", "--done", "--older-than", "0s"]);
    assert!(
        output_text(&out).contains("purged 1"),
        "{}",
        output_text(&out)
    );
    let (code, report) = verify_json(&s, &["--all", "--unexplained"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["rows"], 0);
    let notes = report["notes"].to_string();
    assert!(notes.contains("1 object(s) written before"), "{report}");
}

/// A permission missing is "could not check" (exit 2) naming it, never a finding. (Real
/// S3 also answers 403 for a missing object to a caller without s3:ListBucket, which
/// verify reports the same way; moto answers 404 there, so that case is read in code.)
#[test]
fn verify_without_a_permission_exits_2_and_names_it() {
    // A server of its own: moto's auth mode is server-wide.
    let server = S3Server::start();
    let endpoint = server.endpoint();
    let bucket = Bucket::create(&endpoint);
    let name = bucket.name.clone();
    let s = Setup::new(
        Options::new(&endpoint),
        Bucket {
            name,
            endpoint: endpoint.clone(),
        },
    );
    let daemon = s.start();
    s.drop_file("a.csv", b"here");
    s.drop_file("b.csv", b"here too");
    wait_for(WAIT, "delivered", || s.count("done") == 2);
    assert!(daemon.stop().success());
    let reader = bucket.iam_user_allowed("reader", &["s3:GetObject"]);
    let lister = bucket.iam_user_allowed("lister", &["s3:ListBucket"]);
    bucket.enforce_auth();

    // HEAD allowed, listing refused: the rows are checked, the prefix cannot be listed.
    s.set_keys(&reader.0, &reader.1);
    let (code, text) = verify(&s, &["--all"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, report) = verify_json(&s, &["--all", "--unexplained"]);
    assert_eq!(code, Some(2), "{report}");
    assert_eq!(report["rows"], 2);
    assert!(
        report["problems"].as_array().unwrap().is_empty(),
        "{report}"
    );
    let unchecked = report["unchecked"].to_string();
    assert!(
        unchecked.contains("ListObjectsV2 was refused (403)")
            && unchecked.contains("s3:ListBucket (for --unexplained)"),
        "{report}"
    );

    // Listing refused, the rows were asked with HEAD instead (a note says so).
    assert!(
        report["notes"]
            .to_string()
            .contains("checked by HEAD instead"),
        "{report}"
    );

    // HEAD refused: the listing alone checks the rows; reading them back (--deep) cannot,
    // and every row is not checked, naming s3:GetObject; nothing called missing.
    s.set_keys(&lister.0, &lister.1);
    let (code, report) = verify_json(&s, &["--all"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["by_listing"], 2, "{report}");
    let (code, text) = verify(&s, &["--all", "--deep"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("HeadObject was refused (403): the credentials need s3:GetObject"),
        "{text}"
    );
    assert!(
        text.contains("2 not checked") && !text.contains("missing  "),
        "{text}"
    );
}
