//! One test per validation rule, and the shipped example config.

use super::*;

const FILE: &str = "/etc/s3spool/test.toml";

const BASE_DEST: &str = r#"
[destinations.lake]
bucket = "s3://acme-drop/inbound"
[destinations.lake.auth]
mode = "static"
access_key_id = "AKIA"
secret_access_key = "secret-value"
"#;

const BASE_SPOOL: &str = r#"
[spools.orders]
path = "/var/spool/orders"
destination = "lake"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(FILE))
}

/// Parses and returns the problems as "key: message" lines.
fn problems(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect(),
    }
}

/// Asserts exactly one problem, under `key`, whose message contains `words`.
fn refused(text: &str, key: &str, words: &str) {
    let found = problems(text);
    assert_eq!(
        found.len(),
        1,
        "expected one problem for {key}, got {found:#?}"
    );
    assert!(found[0].starts_with(&format!("{key}: ")), "{found:#?}");
    assert!(found[0].contains(words), "{found:#?}");
}

fn with_spool(extra: &str) -> String {
    format!("{BASE_DEST}{BASE_SPOOL}{extra}")
}

fn with_upload(extra: &str) -> String {
    format!("{BASE_DEST}[destinations.lake.upload]\n{extra}\n{BASE_SPOOL}")
}

#[test]
fn the_example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    // Parsed, not loaded: the file in the repository is world-readable (installs use 600).
    let text = std::fs::read_to_string(&path).unwrap();
    let config = Config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
    let lake = &config.destinations["lake"];
    assert_eq!(
        (lake.bucket.as_str(), lake.prefix.as_str()),
        ("acme-drop", "inbound")
    );
    assert_eq!(lake.upload.part_size, 16 << 20);
    assert_eq!(config.spools["orders"].settle, Duration::from_secs(5));
    assert_eq!(config.state_dir, PathBuf::from("/var/lib/s3spool"));
    let events = &config.spools["events"];
    assert_eq!(events.output.format.name(), "parquet");
    assert_eq!(events.output.table.schema.as_ref().unwrap().len(), 4);
    assert_eq!(
        events.manifest.as_ref().unwrap().every,
        Duration::from_secs(900)
    );
}

#[test]
fn defaults_fill_the_optional_keys() {
    let config = parse(&with_spool("")).unwrap();
    let lake = &config.destinations["lake"];
    assert_eq!(lake.region, "us-east-1");
    assert_eq!(lake.upload.multipart_threshold, 64 << 20);
    assert_eq!(lake.upload.concurrency, 8);
    assert_eq!(lake.upload.max_attempts, 10);
    let orders = &config.spools["orders"];
    assert_eq!(orders.after_upload, AfterUpload::Delete);
    assert!(orders.include.is_none());
    assert_eq!(config.drain_timeout, Duration::from_secs(30));
}

#[test]
fn relative_paths_are_relative_to_the_config_file() {
    let text = format!(
        "state_dir = \"state\"\n{BASE_DEST}[spools.s]\npath = \"in\"\ndestination = \"lake\"\n"
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.state_dir, PathBuf::from("/etc/s3spool/state"));
    assert_eq!(config.spools["s"].path, PathBuf::from("/etc/s3spool/in"));
}

#[test]
fn every_error_is_reported_at_once_with_file_and_key() {
    let text = r#"
bogus = 1
[destinations.lake]
bucket = "s3://UPPER"
[destinations.lake.auth]
mode = "static"
[spools.orders]
path = "/x"
destination = "nowhere"
settle = "soon"
"#;
    let err = parse(text).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("config {FILE} has 6 errors:")),
        "{shown}"
    );
    for key in [
        "bogus: unknown key",
        "destinations.lake.bucket:",
        "destinations.lake.auth.access_key_id: is required",
        "spools.orders.destination: no [destinations.nowhere]",
        "spools.orders.settle:",
        "destinations.lake.auth.secret_access_key",
    ] {
        assert!(shown.contains(key), "missing {key:?} in\n{shown}");
    }
}

#[test]
fn toml_syntax_errors_give_the_place_but_never_quote_the_line() {
    let text = format!("{BASE_DEST}{BASE_SPOOL}").replace(
        "secret_access_key = \"secret-value\"",
        "secret_access_key = \"secret-value",
    );
    let shown = parse(&text).unwrap_err().to_string();
    assert!(
        shown.contains("not valid TOML at line 7, column"),
        "{shown}"
    );
    assert!(
        !shown.contains("secret-value"),
        "the secret leaked: {shown}"
    );
}

#[test]
fn needs_destinations_and_spools() {
    let found = problems("");
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("destinations: at least one")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|p| p.starts_with("spools: at least one")),
        "{found:?}"
    );
}

#[test]
fn unknown_keys_are_refused_in_every_table() {
    refused(
        &format!("{}\ncolour = 1", with_spool("")),
        "spools.orders.colour",
        "unknown key",
    );
    refused(
        &with_upload("parts = 3"),
        "destinations.lake.upload.parts",
        "unknown key",
    );
    let auth = BASE_DEST.replace("mode = \"static\"", "mode = \"static\"\ntoken = \"x\"");
    refused(
        &format!("{auth}{BASE_SPOOL}"),
        "destinations.lake.auth.token",
        "unknown key",
    );
}

#[test]
fn wrong_types_name_the_expected_type() {
    refused(
        &with_upload("concurrency = \"eight\""),
        "destinations.lake.upload.concurrency",
        "expected a whole number, found string",
    );
    refused(
        &with_spool("include = \"*.csv\""),
        "spools.orders.include",
        "expected a list of strings",
    );
}

#[test]
fn names_are_restricted() {
    let text = format!("{BASE_DEST}[spools.\"my spool\"]\npath = \"/x\"\ndestination = \"lake\"\n");
    refused(&text, "spools.my spool", "letters, digits");
}

#[test]
fn bucket_uri_rules() {
    let bad = BASE_DEST.replace("s3://acme-drop/inbound", "s3://ab");
    refused(
        &format!("{bad}{BASE_SPOOL}"),
        "destinations.lake.bucket",
        "3 to 63",
    );
    let bad = BASE_DEST.replace("s3://acme-drop/inbound", "acme-drop");
    refused(
        &format!("{bad}{BASE_SPOOL}"),
        "destinations.lake.bucket",
        "s3://bucket",
    );
    let missing = BASE_DEST.replace("bucket = \"s3://acme-drop/inbound\"", "");
    refused(
        &format!("{missing}{BASE_SPOOL}"),
        "destinations.lake.bucket",
        "is required",
    );
}

#[test]
fn region_and_endpoint_are_checked() {
    let bad = BASE_DEST.replace(
        "[destinations.lake.auth]",
        "region = \"EU West\"\n[destinations.lake.auth]",
    );
    refused(
        &format!("{bad}{BASE_SPOOL}"),
        "destinations.lake.region",
        "not a region name",
    );
    for endpoint in ["ftp://x", "http://", "127.0.0.1:9000", "http://host/path"] {
        let bad = BASE_DEST.replace(
            "[destinations.lake.auth]",
            &format!("endpoint = \"{endpoint}\"\n[destinations.lake.auth]"),
        );
        refused(
            &format!("{bad}{BASE_SPOOL}"),
            "destinations.lake.endpoint",
            "not an endpoint URL",
        );
    }
    let ok = BASE_DEST.replace(
        "[destinations.lake.auth]",
        "endpoint = \"http://127.0.0.1:9000/\"\n[destinations.lake.auth]",
    );
    let config = parse(&format!("{ok}{BASE_SPOOL}")).unwrap();
    assert_eq!(
        config.destinations["lake"].endpoint.as_deref(),
        Some("http://127.0.0.1:9000")
    );
}

#[test]
fn auth_rules() {
    let mode = |m: &str| format!("{}{BASE_SPOOL}", BASE_DEST.replace("mode = \"static\"", m));
    refused(
        &mode("mode = \"magic\""),
        "destinations.lake.auth.mode",
        "not a mode",
    );
    refused(
        &mode("mode = \"assume_role\""),
        "destinations.lake.auth.role_arn",
        "is required with mode = \"assume_role\"",
    );
    refused(&mode(""), "destinations.lake.auth.mode", "is required");
    let both = BASE_DEST.replace(
        "secret_access_key = \"secret-value\"",
        "secret_access_key = \"a\"\nsecret_access_key_file = \"/x\"",
    );
    refused(
        &format!("{both}{BASE_SPOOL}"),
        "destinations.lake.auth.secret_access_key",
        "give one of",
    );
    let missing_file = BASE_DEST.replace(
        "secret_access_key = \"secret-value\"",
        "secret_access_key_file = \"/nonexistent/secret\"",
    );
    refused(
        &format!("{missing_file}{BASE_SPOOL}"),
        "destinations.lake.auth.secret_access_key_file",
        "cannot read /nonexistent/secret",
    );
    let no_auth = BASE_DEST.replace("[destinations.lake.auth]\nmode = \"static\"\naccess_key_id = \"AKIA\"\nsecret_access_key = \"secret-value\"\n", "");
    refused(
        &format!("{no_auth}{BASE_SPOOL}"),
        "destinations.lake.auth",
        "is required",
    );
}

#[test]
fn secret_file_is_read_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "from-a-file\n").unwrap();
    let text = BASE_DEST.replace(
        "secret_access_key = \"secret-value\"",
        &format!("secret_access_key_file = {:?}", secret),
    );
    let config = parse(&format!("{text}{BASE_SPOOL}")).unwrap();
    let Auth::Static(key) = &config.destinations["lake"].auth else {
        panic!("static auth expected")
    };
    assert_eq!(key.secret_access_key.expose(), "from-a-file");
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("from-a-file") && debug.contains("<redacted>"),
        "{debug}"
    );
}

#[test]
fn upload_limits() {
    let key = |k: &str| format!("destinations.lake.upload.{k}");
    // Files up to part_size go in one PUT held in memory.
    refused(
        &with_upload("part_size = \"1GiB\"\nmultipart_threshold = \"64MiB\"\nconcurrency = 2"),
        &key("part_size"),
        "at most multipart_threshold (64.0 MiB)",
    );
    refused(
        &with_upload("part_size = \"2GiB\"\nmultipart_threshold = \"2GiB\"\nconcurrency = 16"),
        &key("concurrency"),
        "concurrency × part_size is 32.0 GiB",
    );
    refused(
        &with_upload("part_size = \"1MiB\""),
        &key("part_size"),
        "between 5MiB and 5GiB",
    );
    refused(
        &with_upload("part_size = \"6GiB\""),
        &key("part_size"),
        "between 5MiB and 5GiB",
    );
    refused(
        &with_upload("multipart_threshold = \"1MiB\""),
        &key("multipart_threshold"),
        "between 5MiB",
    );
    refused(
        &with_upload("multipart_threshold = \"6GiB\""),
        &key("multipart_threshold"),
        "5GiB (S3's largest single PUT)",
    );
    refused(
        &with_upload("multipart_threshold = \"lots\""),
        &key("multipart_threshold"),
        "not a size",
    );
    refused(
        &with_upload("concurrency = 0"),
        &key("concurrency"),
        "between 1 and 256",
    );
    refused(
        &with_upload("max_attempts = 0"),
        &key("max_attempts"),
        "between 1 and 1000",
    );
    refused(
        &with_upload("backoff_initial = \"10m\""),
        &key("backoff_initial"),
        "at most backoff_max",
    );
    refused(
        &with_upload("request_timeout = \"10ms\""),
        &key("request_timeout"),
        "at least 1s",
    );
}

#[test]
fn spool_rules() {
    refused(
        &with_spool("settle = \"5\""),
        "spools.orders.settle",
        "not a duration",
    );
    refused(
        &with_spool("include = [\"[\"]"),
        "spools.orders.include",
        "bad glob",
    );
    refused(
        &with_spool("key = \"{spool}/{date}.csv\""),
        "spools.orders.key",
        "overwrite",
    );
    refused(
        &with_spool("key = \"{spool}/{month}/{id}\""),
        "spools.orders.key",
        "unknown placeholder {month}",
    );
    refused(
        &with_spool("after_upload = \"shred\""),
        "spools.orders.after_upload",
        "not one of",
    );
    refused(
        &with_spool("after_upload = \"archive\""),
        "spools.orders.archive_dir",
        "is required",
    );
    refused(
        &with_spool("archive_dir = \"/a\""),
        "spools.orders.archive_dir",
        "only used with",
    );
    refused(
        &with_spool("after_upload = \"archive\"\narchive_dir = \"/var/spool/orders/done\""),
        "spools.orders.archive_dir",
        "outside every spool",
    );
    let no_path = BASE_SPOOL.replace("path = \"/var/spool/orders\"", "");
    refused(
        &format!("{BASE_DEST}{no_path}"),
        "spools.orders.path",
        "is required",
    );
}

#[test]
fn path_style_false_is_refused_with_the_reason() {
    let bad = BASE_DEST.replace(
        "[destinations.lake.auth]",
        "path_style = false\n[destinations.lake.auth]",
    );
    refused(
        &format!("{bad}{BASE_SPOOL}"),
        "destinations.lake.path_style",
        "path-style",
    );
}

#[test]
fn archive_dir_must_be_outside_every_spool() {
    let text = format!(
        "{BASE_DEST}{BASE_SPOOL}after_upload = \"archive\"\narchive_dir = \"/var/spool/other/done\"\n[spools.other]\npath = \"/var/spool/other\"\ndestination = \"lake\"\n"
    );
    refused(
        &text,
        "spools.orders.archive_dir",
        "inside spools.other.path",
    );
}

#[test]
fn spools_must_not_nest_or_hold_the_state_dir() {
    let nested = format!("{BASE_DEST}{BASE_SPOOL}[spools.inner]\npath = \"/var/spool/orders/inner\"\ndestination = \"lake\"\n");
    refused(&nested, "spools.orders.path", "overlaps spools.inner.path");
    let state = format!("state_dir = \"/var/spool/orders/.state\"\n{BASE_DEST}{BASE_SPOOL}");
    refused(&state, "state_dir", "outside spools.orders.path");
}

fn with_auth(auth: &str) -> String {
    format!("[destinations.lake]\nbucket = \"s3://acme-drop\"\n[destinations.lake.auth]\n{auth}\n{BASE_SPOOL}")
}

const ROLE: &str = "mode = \"assume_role\"\nrole_arn = \"arn:aws:iam::123456789012:role/s3spool\"";

#[test]
fn default_mode_takes_an_optional_profile_and_no_keys() {
    let config = parse(&with_auth("mode = \"default\"\nprofile = \"uploads\"")).unwrap();
    assert!(
        matches!(&config.destinations["lake"].auth, Auth::Default { profile: Some(p) } if p == "uploads")
    );
    refused(
        &with_auth("mode = \"default\"\naccess_key_id = \"AKIA\""),
        "destinations.lake.auth.access_key_id",
        "only used with",
    );
    refused(
        &with_auth("mode = \"default\"\nrole_arn = \"x\""),
        "destinations.lake.auth.role_arn",
        "only used with mode = \"assume_role\"",
    );
    refused(
        &with_auth(
            "mode = \"static\"\naccess_key_id = \"A\"\nsecret_access_key = \"s\"\nprofile = \"p\"",
        ),
        "destinations.lake.auth.profile",
        "only used with mode = \"default\"",
    );
}

#[test]
fn assume_role_defaults_and_base_key() {
    let config = parse(&with_auth(ROLE)).unwrap();
    let Auth::AssumeRole(role) = &config.destinations["lake"].auth else {
        panic!()
    };
    assert!(role.session_name.starts_with("s3spool-"));
    assert_eq!(role.duration, Duration::from_secs(3600));
    assert!(role.base.is_none(), "no key: the default chain calls STS");
    let text = format!("{ROLE}\nexternal_id = \"acme-42\"\naccess_key_id = \"AKIABASE\"\nsecret_access_key = \"base-secret\"\nsts_endpoint = \"http://127.0.0.1:5000\"\nsts_region = \"eu-west-1\"\nsession_name = \"uploader\"\nduration = \"2h\"");
    let config = parse(&with_auth(&text)).unwrap();
    let Auth::AssumeRole(role) = &config.destinations["lake"].auth else {
        panic!()
    };
    assert_eq!(role.external_id.as_deref(), Some("acme-42"));
    assert_eq!(role.base.as_ref().unwrap().access_key_id, "AKIABASE");
    assert_eq!(
        (role.sts_endpoint.as_deref(), role.sts_region.as_deref()),
        (Some("http://127.0.0.1:5000"), Some("eu-west-1"))
    );
    assert_eq!(
        (role.session_name.as_str(), role.duration),
        ("uploader", Duration::from_secs(7200))
    );
    assert!(!format!("{config:?}").contains("base-secret"));
}

#[test]
fn role_arn_rule() {
    let key = "destinations.lake.auth.role_arn";
    for ok in [
        "arn:aws:iam::123456789012:role/s3spool",
        "arn:aws-cn:iam::123456789012:role/path/to/r+=,.@_-",
        "arn:aws-us-gov:iam::000000000000:role/x",
    ] {
        parse(&with_auth(&format!(
            "mode = \"assume_role\"\nrole_arn = \"{ok}\""
        )))
        .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for (bad, words) in [
        ("arn:aws:iam::12345:role/x", "12 digits"),
        ("arn:aws:iam::123456789012:user/x", "not a role ARN"),
        ("arn:azure:iam::123456789012:role/x", "names partition"),
        ("arn:aws:iam::123456789012:role/", "not a role ARN"),
        ("arn:aws:s3:::bucket", "not a role ARN"),
        ("s3spool", "not a role ARN"),
    ] {
        refused(
            &with_auth(&format!("mode = \"assume_role\"\nrole_arn = \"{bad}\"")),
            key,
            words,
        );
    }
}

#[test]
fn external_id_rule() {
    let key = "destinations.lake.auth.external_id";
    parse(&with_auth(&format!(
        "{ROLE}\nexternal_id = \"Ab_+=,.@:/-9\""
    )))
    .unwrap();
    refused(
        &with_auth(&format!("{ROLE}\nexternal_id = \"x\"")),
        key,
        "2 to 1224",
    );
    refused(
        &with_auth(&format!("{ROLE}\nexternal_id = \"{}\"", "x".repeat(1225))),
        key,
        "2 to 1224",
    );
    refused(
        &with_auth(&format!("{ROLE}\nexternal_id = \"has space\"")),
        key,
        "found ' '",
    );
}

#[test]
fn session_name_rule() {
    let key = "destinations.lake.auth.session_name";
    parse(&with_auth(&format!(
        "{ROLE}\nsession_name = \"s3spool_host-1.a@b\""
    )))
    .unwrap();
    refused(
        &with_auth(&format!("{ROLE}\nsession_name = \"a\"")),
        key,
        "2 to 64",
    );
    refused(
        &with_auth(&format!("{ROLE}\nsession_name = \"{}\"", "s".repeat(65))),
        key,
        "2 to 64",
    );
    refused(
        &with_auth(&format!("{ROLE}\nsession_name = \"a/b\"")),
        key,
        "found '/'",
    );
    assert_eq!(
        super::auth::default_session_name("web 1.example.com"),
        "s3spool-web-1.example.com"
    );
    assert_eq!(
        super::auth::default_session_name(&"h".repeat(100)).len(),
        64
    );
}

#[test]
fn duration_and_refresh_margin_rules() {
    refused(
        &with_auth(&format!("{ROLE}\nduration = \"10m\"")),
        "destinations.lake.auth.duration",
        "between 15m and 12h",
    );
    refused(
        &with_auth(&format!("{ROLE}\nduration = \"13h\"")),
        "destinations.lake.auth.duration",
        "between 15m and 12h",
    );
    refused(
        &with_auth(&format!(
            "{ROLE}\nduration = \"15m\"\nrefresh_margin = \"15m\""
        )),
        "destinations.lake.auth.refresh_margin",
        "shorter than duration",
    );
    let config = parse(&with_auth(&format!(
        "{ROLE}\nduration = \"15m\"\nrefresh_margin = \"14m\""
    )))
    .unwrap();
    assert_eq!(
        config.destinations["lake"].refresh_margin,
        Duration::from_secs(840)
    );
}

#[test]
fn sts_endpoint_and_region_rules() {
    refused(
        &with_auth(&format!("{ROLE}\nsts_endpoint = \"sts.example.com\"")),
        "destinations.lake.auth.sts_endpoint",
        "not an endpoint URL",
    );
    refused(
        &with_auth(&format!(
            "{ROLE}\nsts_endpoint = \"http://sts.example.com\""
        )),
        "destinations.lake.auth.sts_endpoint",
        "plain http",
    );
    refused(
        &with_auth(&format!("{ROLE}\nsts_region = \"EU\"")),
        "destinations.lake.auth.sts_region",
        "not a region name",
    );
}

#[test]
fn plain_http_only_for_loopback_or_with_allow_http() {
    let with = |endpoint: &str, extra: &str| {
        BASE_DEST.replace(
            "[destinations.lake.auth]",
            &format!("endpoint = \"{endpoint}\"\n{extra}\n[destinations.lake.auth]"),
        ) + BASE_SPOOL
    };
    for ok in [
        "http://127.0.0.1:9000",
        "http://localhost:9000",
        "http://[::1]:9000",
        "http://127.8.9.10",
        "https://s3.example.com",
    ] {
        parse(&with(ok, "")).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for ok in [
        "http://localhost.:9000",
        "http://LOCALHOST:9000",
        "http://[::ffff:127.0.0.1]:9000",
    ] {
        parse(&with(ok, "")).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        "http://localhost:1@evil.example",
        "http://[::1]@evil.example",
        "https://key:secret@s3.example.com",
        "https://s3.example.com?x=1",
    ] {
        let found = problems(&with(bad, "allow_http = true"));
        assert!(
            found.len() == 1 && found[0].contains("no user info"),
            "{bad}: {found:?}"
        );
        assert!(
            !found[0].contains("secret"),
            "the URL is not echoed: {found:?}"
        );
    }
    refused(
        &with("http://10.0.0.5:9000", ""),
        "destinations.lake.endpoint",
        "allow_http = true",
    );
    refused(
        &with("http://minio.internal", ""),
        "destinations.lake.endpoint",
        "plain http",
    );
    parse(&with("http://minio.internal:9000", "allow_http = true")).unwrap();
}

#[test]
fn secret_from_a_systemd_credential() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lake-secret"), "from-systemd\n").unwrap();
    let auth = "mode = \"static\"\naccess_key_id = \"AKIA\"\nsecret_access_key_credential = \"lake-secret\"";
    // The only test touching this variable.
    std::env::remove_var("CREDENTIALS_DIRECTORY");
    refused(
        &with_auth(auth),
        "destinations.lake.auth.secret_access_key_credential",
        "LoadCredential=",
    );
    std::env::set_var("CREDENTIALS_DIRECTORY", dir.path());
    let config = parse(&with_auth(auth)).unwrap();
    std::env::remove_var("CREDENTIALS_DIRECTORY");
    let Auth::Static(key) = &config.destinations["lake"].auth else {
        panic!()
    };
    assert_eq!(key.secret_access_key.expose(), "from-systemd");
    assert!(!config.holds_secret, "no secret in the file itself");
}

#[test]
fn a_config_with_an_inline_secret_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, format!("{BASE_DEST}{BASE_SPOOL}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("readable by group or others (mode 644)") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(!err.contains("secret-value"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    Config::load(&path).unwrap();
    std::fs::write(
        &path,
        format!("allow_insecure_permissions = true\n{BASE_DEST}{BASE_SPOOL}"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    Config::load(&path).unwrap();
}

#[test]
fn a_secret_file_is_its_first_line_and_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("lake.secret");
    std::fs::write(&secret, "first-line-secret\n# rotated 2026-11-01\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = dir.path().join("config.toml");
    let text = BASE_DEST.replace(
        "secret_access_key = \"secret-value\"",
        "secret_access_key_file = \"lake.secret\"",
    );
    std::fs::write(&path, format!("{text}{BASE_SPOOL}")).unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("is a secret_access_key_file but is readable by group or others"),
        "{err}"
    );
    assert!(!err.contains("first-line-secret"));
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = Config::load(&path).unwrap();
    let Auth::Static(key) = &config.destinations["lake"].auth else {
        panic!()
    };
    assert_eq!(key.secret_access_key.expose(), "first-line-secret");
}

#[test]
fn commands_that_never_talk_to_s3_do_not_read_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let text = BASE_DEST.replace(
        "secret_access_key = \"secret-value\"",
        "secret_access_key_file = \"/nonexistent/secret\"",
    );
    std::fs::write(&path, format!("{text}{BASE_SPOOL}")).unwrap();
    assert!(
        Config::load(&path).is_err(),
        "run and check need the secret"
    );
    let config = Config::load_with(&path, false).unwrap();
    assert_eq!(config.state_dir, PathBuf::from("/var/lib/s3spool"));
}

#[test]
fn format_rules() {
    use crate::transcode::table::{Column, ColumnType};
    use crate::transcode::{Format, ParquetCompression};
    let config = parse(&with_spool("format = \"gzip\"\ngzip_level = 9")).unwrap();
    assert_eq!(
        config.spools["orders"].output.format,
        Format::Gzip { level: 9 }
    );
    assert_eq!(
        parse(&with_spool("")).unwrap().spools["orders"]
            .output
            .format,
        Format::Raw
    );
    let config = parse(&with_spool(
        "format = \"parquet\"\ncompression = \"zstd\"\nrow_group_rows = 500\n\
         [spools.orders.csv]\ndelimiter = \"\\t\"\nquote = \"'\"\nheader = false\n\
         [spools.orders.schema]\nid = { type = \"integer\", nullable = false }\nname = \"string\"\nat = \"timestamp\"",
    ))
    .unwrap();
    let output = &config.spools["orders"].output;
    assert_eq!(
        output.format,
        Format::Parquet {
            compression: ParquetCompression::Zstd,
            row_group_rows: 500
        }
    );
    assert_eq!(
        (
            output.table.csv.delimiter,
            output.table.csv.quote,
            output.table.csv.header
        ),
        (b'\t', b'\'', false)
    );
    let column = |name: &str, ty, nullable| Column {
        name: name.into(),
        ty,
        nullable,
    };
    assert_eq!(
        output.table.schema.as_deref().unwrap(),
        [
            column("id", ColumnType::Integer, false),
            column("name", ColumnType::String, true),
            column("at", ColumnType::Timestamp, true)
        ],
        "columns in file order"
    );
    let jsonl = parse(&with_spool("format = \"jsonl\"\ninfer_rows = 50")).unwrap();
    assert_eq!(jsonl.spools["orders"].output.format, Format::Jsonl);
    assert_eq!(jsonl.spools["orders"].output.table.infer_rows, Some(50));
    refused(
        &with_spool("format = \"zip\""),
        "spools.orders.format",
        "not one of raw, gzip, parquet, jsonl",
    );
    refused(
        &with_spool("format = \"gzip\"\ngzip_level = 10"),
        "spools.orders.gzip_level",
        "between 0 and 9",
    );
    refused(
        &with_spool("gzip_level = 5"),
        "spools.orders.gzip_level",
        "only used with format = \"gzip\"",
    );
    refused(
        &with_spool("format = \"jsonl\"\ncompression = \"zstd\""),
        "spools.orders.compression",
        "only used with format = \"parquet\"",
    );
    refused(
        &with_spool("format = \"parquet\"\ncompression = \"lzo\""),
        "spools.orders.compression",
        "not one of snappy, zstd, gzip, none",
    );
    refused(
        &with_spool("format = \"parquet\"\nrow_group_rows = 0"),
        "spools.orders.row_group_rows",
        "between 1 and",
    );
    refused(
        &with_spool("format = \"gzip\"\n[spools.orders.csv]\nheader = true"),
        "spools.orders.csv",
        "only used with format = \"parquet\" or \"jsonl\"",
    );
    refused(
        &with_spool("format = \"jsonl\"\n[spools.orders.csv]\ndelimiter = \";;\""),
        "spools.orders.csv.delimiter",
        "one ASCII character",
    );
    refused(
        &with_spool("format = \"jsonl\"\n[spools.orders.csv]\ndelimiter = \"\\\"\""),
        "spools.orders.csv.quote",
        "must differ from delimiter",
    );
    refused(
        &with_spool("format = \"jsonl\"\n[spools.orders.csv]\nseparator = \";\""),
        "spools.orders.csv.separator",
        "unknown key",
    );
    refused(
        &with_spool("format = \"jsonl\"\n[spools.orders.schema]\nid = \"int\""),
        "spools.orders.schema.id",
        "\"int\" is not one of integer, float, boolean, date, timestamp, string",
    );
    refused(
        &with_spool("format = \"jsonl\"\n[spools.orders.schema]\nid = { nullable = true }"),
        "spools.orders.schema.id.type",
        "is required",
    );
    refused(
        &with_spool(
            "format = \"jsonl\"\ninfer_rows = 10\n[spools.orders.schema]\nid = \"integer\"",
        ),
        "spools.orders.infer_rows",
        "not used when a schema is declared",
    );
    refused(
        &with_spool("format = \"jsonl\"\ninfer_rows = 0"),
        "spools.orders.infer_rows",
        "at least 1",
    );
}

#[test]
fn encrypt_to_is_read_and_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_key = dir.path().join("recipient.asc");
    std::fs::write(&not_a_key, "hello\n").unwrap();
    refused(
        &with_spool(&format!("encrypt_to = \"{}\"", not_a_key.display())),
        "spools.orders.encrypt_to",
        "is not an ASCII-armoured OpenPGP public key",
    );
    refused(
        &with_spool(&format!(
            "encrypt_to = \"{}\"",
            dir.path().join("missing.asc").display()
        )),
        "spools.orders.encrypt_to",
        "cannot read",
    );
}

#[test]
fn log_format_rules() {
    let json = parse(&format!("log_format = \"json\"\n{}", with_spool(""))).unwrap();
    assert_eq!(json.log_format, crate::logging::LogFormat::Json);
    assert_eq!(
        parse(&with_spool("")).unwrap().log_format,
        crate::logging::LogFormat::Text
    );
    refused(
        &format!("log_format = \"xml\"\n{}", with_spool("")),
        "log_format",
        "\"xml\" is not one of text, json",
    );
}

#[test]
fn manifest_rules() {
    let config = parse(&with_spool(
        "manifest = true\nmanifest_every = \"1m\"\nmanifest_max_files = 10\nmanifest_key = \"m/{batch}.json\"",
    ))
    .unwrap();
    let m = config.spools["orders"].manifest.as_ref().unwrap();
    assert_eq!((m.every, m.max_files), (Duration::from_secs(60), 10));
    let default = parse(&with_spool("manifest = true")).unwrap();
    let m = default.spools["orders"].manifest.as_ref().unwrap();
    assert_eq!((m.every, m.max_files), (Duration::from_secs(300), 1000));
    assert!(parse(&with_spool("")).unwrap().spools["orders"]
        .manifest
        .is_none());
    refused(
        &with_spool("manifest_every = \"1m\""),
        "spools.orders.manifest_every",
        "only used with manifest = true",
    );
    refused(
        &with_spool("manifest = true\nmanifest_key = \"m/{spool}.json\""),
        "spools.orders.manifest_key",
        "must contain {batch}",
    );
    refused(
        &with_spool("manifest = true\nmanifest_max_files = 0"),
        "spools.orders.manifest_max_files",
        "between 1 and 100000",
    );
}

#[test]
fn object_option_rules() {
    let dest = |extra: &str| {
        format!(
            "{}{BASE_SPOOL}",
            BASE_DEST.replace(
                "[destinations.lake.auth]",
                &format!("{extra}\n[destinations.lake.auth]")
            )
        )
    };
    let config = parse(&dest("tags = { retention = \"30d\" }\nmetadata = { team = \"data\" }\nstorage_class = \"STANDARD_IA\"\nsse = \"aws:kms\"\nkms_key_id = \"alias/s3spool\"\nacl = \"bucket-owner-full-control\"")).unwrap();
    let o = &config.destinations["lake"].object;
    assert_eq!(o.tags, vec![("retention".to_string(), "30d".to_string())]);
    assert_eq!(
        (o.sse.as_deref(), o.kms_key_id.as_deref()),
        (Some("aws:kms"), Some("alias/s3spool"))
    );
    refused(
        &dest("tags = { team = \"a&b\" }"),
        "destinations.lake.tags.team",
        "letters, digits, spaces",
    );
    refused(
        &dest("metadata = { Team = \"x\" }"),
        "destinations.lake.metadata.Team",
        "lowercase",
    );
    refused(
        &dest("metadata = { sha256 = \"x\" }"),
        "destinations.lake.metadata.sha256",
        "reserved",
    );
    refused(
        &dest("storage_class = \"COLD\""),
        "destinations.lake.storage_class",
        "not one of",
    );
    refused(
        &dest("sse = \"rot13\""),
        "destinations.lake.sse",
        "not one of",
    );
    refused(
        &dest("kms_key_id = \"k\""),
        "destinations.lake.kms_key_id",
        "only used with sse",
    );
    refused(
        &dest("acl = \"everyone\""),
        "destinations.lake.acl",
        "not one of",
    );
    let many: String = (0..11).map(|i| format!("t{i} = \"v\", ")).collect();
    refused(
        &dest(&format!("tags = {{ {} }}", many.trim_end_matches(", "))),
        "destinations.lake.tags",
        "at most 10",
    );
}

#[test]
fn overlaps_are_checked_again_with_symlinks_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::create_dir_all(root.join("spool/inner")).unwrap();
    // Both look outside the spool by name, and both lead inside it.
    std::os::unix::fs::symlink(root.join("spool/inner"), root.join("state-link")).unwrap();
    std::os::unix::fs::symlink(root.join("spool"), root.join("archive-link")).unwrap();
    let text = format!(
        "state_dir = \"{root}/state-link/state\"\n{BASE_DEST}\
         [spools.orders]\npath = \"{root}/spool\"\ndestination = \"lake\"\n\
         after_upload = \"archive\"\narchive_dir = \"{root}/archive-link/done\"\n",
        root = root.display()
    );
    let config = parse(&text).expect("by name, nothing overlaps");
    let found = crate::config::overlaps_after_resolving(&config.spools, &config.state_dir);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].starts_with("spools.orders.archive_dir: must be outside every spool"));
    assert!(found[1].starts_with("state_dir: must be outside spools.orders.path"));
}
