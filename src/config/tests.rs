//! Tests of the config file as a whole (the shipped example, defaults, every error at
//! once, syntax and unknown keys, secrets' permissions), and the helpers the tests beside
//! each rule share (`destination.rs`, `spool.rs`, `auth.rs`, …).

use super::*;

pub(super) const FILE: &str = "/etc/s3spool/test.toml";

pub(super) const BASE_DEST: &str = r#"
[destinations.lake]
bucket = "s3://acme-drop/inbound"
[destinations.lake.auth]
mode = "static"
access_key_id = "AKIA"
secret_access_key = "secret-value"
"#;

pub(super) const BASE_SPOOL: &str = r#"
[spools.orders]
path = "/var/spool/orders"
destination = "lake"
"#;

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(FILE))
}

/// Parses and returns the problems as "key: message" lines.
pub(super) fn problems(text: &str) -> Vec<String> {
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
pub(super) fn refused(text: &str, key: &str, words: &str) {
    let found = problems(text);
    assert_eq!(
        found.len(),
        1,
        "expected one problem for {key}, got {found:#?}"
    );
    assert!(found[0].starts_with(&format!("{key}: ")), "{found:#?}");
    assert!(found[0].contains(words), "{found:#?}");
}

pub(super) fn with_spool(extra: &str) -> String {
    format!("{BASE_DEST}{BASE_SPOOL}{extra}")
}

pub(super) fn with_upload(extra: &str) -> String {
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
    assert_eq!(events.only_route().output.format.name(), "parquet");
    assert_eq!(
        events
            .only_route()
            .output
            .table
            .schema
            .as_ref()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        events.only_route().manifest.as_ref().unwrap().every,
        Duration::from_secs(900)
    );
}

#[test]
fn defaults_fill_the_optional_keys() {
    let config = parse(&with_spool("")).unwrap();
    let lake = &config.destinations["lake"];
    assert_eq!(lake.region, "us-east-1");
    assert_eq!(lake.upload.multipart_threshold, 64 << 20);
    assert_eq!(lake.upload.concurrency, 64);
    assert_eq!(lake.upload.memory, 128 << 20);
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
fn the_packaged_config_is_refused_until_filled_in_and_valid_once_it_is() {
    let text = include_str!("../../packaging/config.toml");
    let path = Path::new("/etc/s3spool/config.toml");
    let e = Config::parse(text, path).unwrap_err();
    let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["destinations.main.bucket", "destinations.main.region"]
    );
    assert!(e.to_string().contains("FILL IN"), "{e}");
    assert!(e.to_string().contains("s3spool check"), "{e}");
    // A secret typed after the words is never echoed; placeholders in arrays count too.
    let typed = format!(
        "{text}\n[destinations.main.auth.x]\nsecret_access_key = \"FILL IN: s3cr3t-typed\"\nlist = [\"ok\", \"  FILL IN later\"]\n"
    );
    let e = Config::parse(&typed, path).unwrap_err();
    assert!(!format!("{e} {e:?}").contains("s3cr3t-typed"), "{e}");
    let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
    assert!(
        keys.contains(&"destinations.main.auth.x.secret_access_key"),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"destinations.main.auth.x.list[1]"),
        "{keys:?}"
    );
    // Filled in, nothing else is wrong with it.
    let filled = text
        .replace(
            "\"FILL IN: s3://bucket/prefix\"",
            "\"s3://acme-drop/inbound\"",
        )
        .replace(
            "\"FILL IN: the bucket's region, like eu-west-1\"",
            "\"eu-west-1\"",
        );
    let config = Config::parse(&filled, path).unwrap();
    assert_eq!(
        config.spools["outbound"].path,
        Path::new("/var/spool/s3spool/outbound")
    );
}
