//! The config file: TOML read once into a validated, typed [`Config`].
//!
//! Loading walks the whole file and reports every problem at once, each under its dotted key
//! (`spools.orders.settle`) and with the file name, so an operator fixes the file in one pass.
//! Relative paths are taken relative to the directory of the config file.

mod auth;
mod bucket;
mod manifest;
mod object;
mod output;
mod reader;
pub use crate::units;

use globset::{Glob, GlobSet, GlobSetBuilder};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use auth::SecretSources;
pub use auth::{AssumeRole, Auth, StaticKey};
pub use bucket::{check_bucket_name, parse_bucket_uri};
pub use manifest::ManifestSettings;
pub use object::{ObjectOptions, SHA256_METADATA};
use reader::{Problem, Problems, Section};

use crate::key::KeyTemplate;
use crate::logging::LogFormat;
use crate::transcode::Output;

/// Where `--config` points when neither the flag nor `$S3SPOOL_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/s3spool/config.toml";

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from.
    pub source: PathBuf,
    /// Holds `queue.db` and the daemon's lock file.
    pub state_dir: PathBuf,
    /// How often every spool is walked in full, besides file-system events.
    pub rescan_interval: Duration,
    /// How long in-flight uploads may run on after a stop signal.
    pub drain_timeout: Duration,
    /// Log lines as text (journald-friendly under systemd) or JSON.
    pub log_format: LogFormat,
    /// Below this much free space in `state_dir`, no new file is taken.
    pub min_free_space: u64,
    /// Where Prometheus scrapes `GET /metrics`, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub destinations: BTreeMap<String, Arc<Destination>>,
    pub spools: BTreeMap<String, Arc<Spool>>,
    /// Some destination's secret is written in the file itself.
    pub holds_secret: bool,
    /// Files secrets were read from.
    pub secret_files: Vec<PathBuf>,
    /// Load the file even if group or others can read it.
    pub allow_insecure_permissions: bool,
}

/// An S3 bucket (and prefix) with the credentials and upload settings to reach it.
#[derive(Debug, Clone)]
pub struct Destination {
    pub name: String,
    pub bucket: String,
    /// Key prefix without leading or trailing `/`; may be empty.
    pub prefix: String,
    pub region: String,
    pub endpoint: Option<String>,
    pub path_style: bool,
    pub auth: Auth,
    /// Temporary credentials are renewed this long before they expire.
    pub refresh_margin: Duration,
    /// Tags, metadata, storage class, encryption and ACL of every object.
    pub object: ObjectOptions,
    pub upload: UploadSettings,
}

/// A secret string that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for the one place that signs requests.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Destination {
    /// What every key of this destination starts with: the prefix and a `/`, or nothing.
    pub fn key_prefix(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }
}

/// Limits and retry schedule for one destination.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    pub multipart_threshold: u64,
    pub part_size: u64,
    /// Requests (PUTs or parts) in flight at once.
    pub concurrency: usize,
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub request_timeout: Duration,
}

/// What happens to a source file once S3 has confirmed its object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterUpload {
    Delete,
    Archive(PathBuf),
    Keep,
}

/// A watched directory and how its files are delivered.
#[derive(Debug, Clone)]
pub struct Spool {
    pub name: String,
    pub path: PathBuf,
    pub destination: String,
    /// `None` means every file.
    pub include: Option<GlobSet>,
    pub exclude: GlobSet,
    pub settle: Duration,
    pub key: KeyTemplate,
    pub after_upload: AfterUpload,
    /// What is delivered: the bytes as they are, or a conversion of them.
    pub output: Output,
    /// Deliveries are grouped into batches, each closed by a manifest.
    pub manifest: Option<ManifestSettings>,
}

/// Every problem found in one config file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "config {} has {n} error{}:",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            if p.key.is_empty() {
                write!(f, "\n  {}", p.message)?;
            } else {
                write!(f, "\n  {}: {}", p.key, p.message)?;
            }
        }
        Ok(())
    }
}

impl ConfigError {
    fn single(file: &Path, key: &str, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            problems: vec![Problem {
                key: key.to_string(),
                message: message.into(),
            }],
        }
    }
}

const SPOOL_DEFAULT_KEY: &str = "{spool}/{yyyy}/{mm}/{dd}/{stem}-{timestamp}-{id}.{ext}";
const MIN_PART: u64 = 5 << 20;
const MAX_PART: u64 = 5 << 30;
/// The most file data a destination may hold in memory at once (`concurrency ×
/// part_size`): enough for S3's largest object at the default concurrency.
const MAX_IN_FLIGHT: u64 = 4 << 30;

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, true)
    }

    /// Reads and validates the file; with `read_secrets` false, secret files and systemd
    /// credentials are left unread (for commands that never talk to S3).
    pub fn load_with(path: &Path, read_secrets: bool) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::single(path, "", format!("cannot read the config file: {e}"))
        })?;
        let config = Config::parse_with(&text, path, read_secrets)?;
        if !config.allow_insecure_permissions {
            if config.holds_secret {
                check_private(path, "holds a secret_access_key")?;
            }
            for file in &config.secret_files {
                check_private(file, "is a secret_access_key_file")?;
            }
        }
        Ok(config)
    }

    /// Validates config text; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_with(text, path, true)
    }

    fn parse_with(text: &str, path: &Path, read_secrets: bool) -> Result<Config, ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::single(path, "", syntax_error(text, &e)))?;
        // Absolute, so every path derived from it is too, whatever the working directory.
        let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut p = Problems::default();
        let mut top = Section::new("", &table);

        let state_dir = top
            .string(&mut p, "state_dir")
            .map(|s| resolve(&base, s))
            .unwrap_or_else(|| PathBuf::from("/var/lib/s3spool"));
        let allow_insecure_permissions = top
            .bool(&mut p, "allow_insecure_permissions")
            .unwrap_or(false);
        let mut found = FoundSecrets::default();
        let sources = SecretSources {
            base: &base,
            read: read_secrets,
        };
        let rescan_interval = top
            .duration(&mut p, "rescan_interval")
            .unwrap_or(Duration::from_secs(60));
        if rescan_interval < Duration::from_secs(1) {
            p.add("rescan_interval", "must be at least 1s");
        }
        let drain_timeout = top
            .duration(&mut p, "drain_timeout")
            .unwrap_or(Duration::from_secs(30));
        let min_free_space = top.size(&mut p, "min_free_space").unwrap_or(256 << 20);
        let metrics_listen = top.string(&mut p, "metrics_listen").and_then(|text| {
            text.parse::<std::net::SocketAddr>()
                .map_err(|_| {
                    p.add(
                        "metrics_listen",
                        format!("{text:?} is not an address and port, like \"127.0.0.1:9811\""),
                    )
                })
                .ok()
        });
        let log_format = match top.string(&mut p, "log_format").unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                p.add("log_format", format!("{other:?} is not one of text, json"));
                LogFormat::Text
            }
        };

        let destinations = named_tables(&mut p, &mut top, "destinations", |p, key, name, t| {
            destination(p, key, name, t, &sources, &mut found)
        });
        let spools = named_tables(&mut p, &mut top, "spools", |p, key, name, t| {
            spool(p, key, name, t, &base, &table)
        });
        top.finish(&mut p);
        check_spool_overlaps(&mut p, &spools, &state_dir);

        if p.0.is_empty() {
            Ok(Config {
                source: path.to_path_buf(),
                state_dir,
                rescan_interval,
                drain_timeout,
                log_format,
                metrics_listen,
                min_free_space,
                destinations,
                spools,
                holds_secret: found.inline,
                secret_files: found.files,
                allow_insecure_permissions,
            })
        } else {
            Err(ConfigError {
                file: path.to_path_buf(),
                problems: p.0,
            })
        }
    }

    /// The queue database's path.
    pub fn queue_path(&self) -> PathBuf {
        self.state_dir.join("queue.db")
    }
}

/// Like ssh with its keys: a file holding a secret must not be readable by group or others.
fn check_private(path: &Path, what: &str) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    // metadata() follows a symlink: the file that holds the bytes is the one checked.
    let mode = std::fs::metadata(path)
        .map_err(|e| ConfigError::single(path, "", format!("cannot read it: {e}")))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(ConfigError::single(
            path,
            "",
            format!(
                "{} {what} but is readable by group or others (mode {:o}): run `chmod 600 {}` (and keep it owned by the user s3spool runs as), use a systemd credential, or set allow_insecure_permissions = true",
                path.display(),
                mode & 0o777,
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Where the config keeps secrets, for the permission checks.
#[derive(Default)]
struct FoundSecrets {
    inline: bool,
    files: Vec<PathBuf>,
}

/// A TOML syntax error by line and column. toml's own message quotes the offending line,
/// which may be the one holding a secret: it is left out.
fn syntax_error(text: &str, error: &toml::de::Error) -> String {
    let at = match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" at line {line}, column {column}")
        }
        None => String::new(),
    };
    format!("not valid TOML{at}: {}", error.message())
}

fn resolve(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// Reads `[section.NAME]` tables (at least one), each through `read`.
fn named_tables<T>(
    p: &mut Problems,
    top: &mut Section<'_>,
    section: &'static str,
    mut read: impl FnMut(&mut Problems, &str, &str, &toml::Table) -> Option<T>,
) -> BTreeMap<String, Arc<T>> {
    let mut out = BTreeMap::new();
    match top.table(p, section) {
        Some(tables) if !tables.is_empty() => {
            for (name, value) in tables {
                let key = format!("{section}.{name}");
                check_name(p, &key, name);
                match value.as_table() {
                    Some(t) => {
                        if let Some(item) = read(p, &key, name, t) {
                            out.insert(name.clone(), Arc::new(item));
                        }
                    }
                    None => p.add(key, "expected a table"),
                }
            }
        }
        _ => p.add(
            section,
            format!("at least one [{section}.NAME] table is required"),
        ),
    }
    out
}

fn check_name(p: &mut Problems, key: &str, name: &str) {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        p.add(key, "names may only use letters, digits, '-' and '_'");
    }
}

fn destination(
    p: &mut Problems,
    path: &str,
    name: &str,
    table: &toml::Table,
    sources: &SecretSources<'_>,
    found: &mut FoundSecrets,
) -> Option<Destination> {
    let mut s = Section::new(path, table);
    let bucket_uri = s.required_string(p, "bucket");
    let bucket = bucket_uri.and_then(|uri| {
        parse_bucket_uri(uri)
            .map_err(|e| p.add(s.key("bucket"), e))
            .ok()
    });
    let region = s.string(p, "region").unwrap_or("us-east-1").to_string();
    check_region(p, &s.key("region"), &region);
    let allow_http = s.bool(p, "allow_http").unwrap_or(false);
    let endpoint = s
        .string(p, "endpoint")
        .and_then(|e| check_endpoint(p, &s.key("endpoint"), e, allow_http));
    let path_style = s.bool(p, "path_style").unwrap_or(true);
    if !path_style {
        p.add(
            s.key("path_style"),
            "virtual-hosted addressing is not supported: requests always use path-style (/bucket/key), which S3 and S3-compatible servers accept; remove the key or set it to true",
        );
    }
    let auth = match s.table(p, "auth") {
        Some(t) => auth::parse(p, &s.key("auth"), t, sources, allow_http),
        None => {
            p.add(
                s.key("auth"),
                "is required ([destinations.NAME.auth] with mode = \"static\", \"default\" or \"assume_role\")",
            );
            None
        }
    };
    let object = object::parse(p, &mut s);
    let empty = toml::Table::new();
    let upload_table = s.table(p, "upload").unwrap_or(&empty);
    let upload = upload_settings(p, &s.key("upload"), upload_table);
    s.finish(p);
    let (bucket, prefix) = bucket?;
    let auth = auth?;
    found.inline |= auth.inline_secret;
    found.files.extend(auth.secret_files);
    Some(Destination {
        name: name.to_string(),
        bucket,
        prefix,
        region,
        endpoint,
        path_style,
        auth: auth.auth,
        refresh_margin: auth.refresh_margin,
        object,
        upload: upload?,
    })
}

/// A region name like `eu-west-1`; reports and returns false otherwise.
pub(super) fn check_region(p: &mut Problems, key: &str, region: &str) -> bool {
    let ok = !region.is_empty()
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        p.add(
            key,
            format!("{region:?} is not a region name like \"eu-west-1\""),
        );
    }
    ok
}

/// An endpoint URL, scheme and host only. Plain `http://` only for loopback addresses, or
/// with `allow_http = true`: credentials and data would cross the network unencrypted.
pub(super) fn check_endpoint(
    p: &mut Problems,
    key: &str,
    url: &str,
    allow_http: bool,
) -> Option<String> {
    let url = url.trim_end_matches('/');
    let (plain, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (true, rest),
        (_, Some(rest)) => (false, rest),
        _ => (false, ""),
    };
    // Scheme and host[:port] only. No user info: `http://localhost@evil.example` must not
    // pass for loopback, and credentials have no place in a URL.
    if rest.is_empty() || rest.contains(['/', '@', '?', '#']) {
        p.add(
            key,
            "is not an endpoint URL like \"https://s3.example.com\" or \"http://127.0.0.1:9000\" (scheme and host only, no user info)",
        );
        return None;
    }
    if plain && !allow_http && !is_loopback(rest) {
        p.add(
            key,
            format!("{url:?} is plain http to a host that is not loopback: use https, or set allow_http = true in the destination if the network is trusted"),
        );
        return None;
    }
    Some(url.to_string())
}

/// `host[:port]` names this machine.
fn is_loopback(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || match host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(v6)) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
            Ok(ip) => ip.is_loopback(),
            Err(_) => false,
        }
}

fn upload_settings(p: &mut Problems, path: &str, table: &toml::Table) -> Option<UploadSettings> {
    let mut s = Section::new(path, table);
    let before = p.0.len();
    let settings = UploadSettings {
        multipart_threshold: s.size(p, "multipart_threshold").unwrap_or(64 << 20),
        part_size: s.size(p, "part_size").unwrap_or(16 << 20),
        concurrency: s.integer(p, "concurrency").unwrap_or(8).clamp(0, 1 << 20) as usize,
        max_attempts: s.integer(p, "max_attempts").unwrap_or(10).clamp(0, 1 << 20) as u32,
        backoff_initial: s
            .duration(p, "backoff_initial")
            .unwrap_or(Duration::from_secs(1)),
        backoff_max: s
            .duration(p, "backoff_max")
            .unwrap_or(Duration::from_secs(300)),
        request_timeout: s
            .duration(p, "request_timeout")
            .unwrap_or(Duration::from_secs(300)),
    };
    if !(MIN_PART..=MAX_PART).contains(&settings.part_size) {
        p.add(
            s.key("part_size"),
            "must be between 5MiB and 5GiB (S3's part size limits)",
        );
    }
    if !(MIN_PART..=MAX_PART).contains(&settings.multipart_threshold) {
        p.add(
            s.key("multipart_threshold"),
            "must be between 5MiB (S3's smallest part) and 5GiB (S3's largest single PUT)",
        );
    }
    let in_range = |size| (MIN_PART..=MAX_PART).contains(&size);
    if in_range(settings.part_size)
        && in_range(settings.multipart_threshold)
        && settings.part_size > settings.multipart_threshold
    {
        // A file up to part_size is sent in one PUT held in memory: a part_size above the
        // threshold would hold whole files of that size in memory.
        p.add(
            s.key("part_size"),
            format!(
                "must be at most multipart_threshold ({})",
                units::format_size(settings.multipart_threshold)
            ),
        );
    }
    if !(1..=256).contains(&settings.concurrency) {
        p.add(s.key("concurrency"), "must be between 1 and 256");
    } else if in_range(settings.part_size)
        && settings
            .part_size
            .saturating_mul(settings.concurrency as u64)
            > MAX_IN_FLIGHT
    {
        p.add(
            s.key("concurrency"),
            format!(
                "concurrency × part_size is {}: up to that much file data is held in memory at once; keep it at most {}",
                units::format_size(settings.part_size.saturating_mul(settings.concurrency as u64)),
                units::format_size(MAX_IN_FLIGHT)
            ),
        );
    }
    if !(1..=1000).contains(&settings.max_attempts) {
        p.add(s.key("max_attempts"), "must be between 1 and 1000");
    }
    if settings.backoff_initial.is_zero() || settings.backoff_initial > settings.backoff_max {
        p.add(
            s.key("backoff_initial"),
            "must be above zero and at most backoff_max",
        );
    }
    if settings.request_timeout < Duration::from_secs(1) {
        p.add(s.key("request_timeout"), "must be at least 1s");
    }
    s.finish(p);
    (p.0.len() == before).then_some(settings)
}

fn globs(p: &mut Problems, key: String, patterns: &[&str]) -> Option<GlobSet> {
    let mut builder = GlobSetBuilder::new();
    let mut ok = true;
    for pattern in patterns {
        match Glob::new(pattern) {
            Ok(glob) => {
                builder.add(glob);
            }
            Err(e) => {
                p.add(key.clone(), format!("bad glob {pattern:?}: {}", e.kind()));
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    builder.build().map_err(|e| p.add(key, e.to_string())).ok()
}

fn spool(
    p: &mut Problems,
    path: &str,
    name: &str,
    table: &toml::Table,
    base: &Path,
    root: &toml::Table,
) -> Option<Spool> {
    let mut s = Section::new(path, table);
    let dir = s.required_string(p, "path").map(|d| resolve(base, d));
    let destination = s.required_string(p, "destination").map(str::to_string);
    if let Some(d) = &destination {
        let known = root
            .get("destinations")
            .and_then(|v| v.as_table())
            .is_some_and(|t| t.contains_key(d));
        if !known {
            p.add(
                s.key("destination"),
                format!("no [destinations.{d}] table is defined"),
            );
        }
    }
    // `None`: not given (every file); `Some(None)`: given but broken (already reported).
    let include = s
        .strings(p, "include")
        .map(|list| globs(p, s.key("include"), &list));
    let exclude_list = s.strings(p, "exclude").unwrap_or_default();
    let exclude = globs(p, s.key("exclude"), &exclude_list);
    let settle = s.duration(p, "settle").unwrap_or(Duration::from_secs(5));
    let key_text = s.string(p, "key").unwrap_or(SPOOL_DEFAULT_KEY);
    let key = KeyTemplate::parse(key_text)
        .map_err(|e| p.add(s.key("key"), e))
        .ok();
    let output = output::output(p, &mut s, base);
    let manifest = manifest::manifest(p, &mut s);
    let mode = s.string(p, "after_upload").unwrap_or("delete");
    let archive_dir = s.string(p, "archive_dir").map(|d| resolve(base, d));
    let after_upload = match (mode, archive_dir) {
        ("delete", None) => Some(AfterUpload::Delete),
        ("keep", None) => Some(AfterUpload::Keep),
        ("archive", Some(dir)) => Some(AfterUpload::Archive(dir)),
        ("archive", None) => {
            p.add(
                s.key("archive_dir"),
                "is required with after_upload = \"archive\"",
            );
            None
        }
        ("delete" | "keep", Some(_)) => {
            p.add(
                s.key("archive_dir"),
                "is only used with after_upload = \"archive\"",
            );
            None
        }
        (other, _) => {
            p.add(
                s.key("after_upload"),
                format!("{other:?} is not one of delete, archive, keep"),
            );
            None
        }
    };
    s.finish(p);
    let include = match include {
        None => None,
        Some(set) => Some(set?),
    };
    Some(Spool {
        name: name.to_string(),
        path: dir?,
        destination: destination?,
        include,
        exclude: exclude?,
        settle,
        key: key?,
        after_upload: after_upload?,
        output: output?,
        manifest: manifest?,
    })
}

/// [`check_spool_overlaps`] again once symlinks are resolved (a spool, an archive_dir or
/// the state_dir reached through a symlink may land inside a spool that its configured
/// path does not name). Spool roots must be in canonical form already; the other folders
/// are resolved as far as they exist. Returns "key: message" for each overlap.
pub fn overlaps_after_resolving(
    spools: &BTreeMap<String, Arc<Spool>>,
    state_dir: &Path,
) -> Vec<String> {
    let resolved: BTreeMap<String, Arc<Spool>> = spools
        .iter()
        .map(|(name, spool)| {
            let mut spool = Spool::clone(spool);
            if let AfterUpload::Archive(dir) = &spool.after_upload {
                spool.after_upload = AfterUpload::Archive(resolve_existing(dir));
            }
            (name.clone(), Arc::new(spool))
        })
        .collect();
    let mut p = Problems::default();
    check_spool_overlaps(&mut p, &resolved, &resolve_existing(state_dir));
    p.0.into_iter()
        .map(|problem| {
            format!(
                "{}: {} (after resolving symlinks)",
                problem.key, problem.message
            )
        })
        .collect()
}

/// `path` with its longest existing ancestor in canonical form.
fn resolve_existing(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut at = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(at) {
            return missing.iter().rev().fold(real, |acc, name| acc.join(name));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_os_string());
                at = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Spools must not nest in each other, and nothing s3spool writes may land inside a spool,
/// or files would be delivered twice or forever.
fn check_spool_overlaps(p: &mut Problems, spools: &BTreeMap<String, Arc<Spool>>, state_dir: &Path) {
    for (name, spool) in spools {
        for (other_name, other) in spools {
            if name < other_name
                && (spool.path.starts_with(&other.path) || other.path.starts_with(&spool.path))
            {
                p.add(
                    format!("spools.{other_name}.path"),
                    format!(
                        "overlaps spools.{name}.path ({}); spools must not nest",
                        spool.path.display()
                    ),
                );
            }
        }
        if let AfterUpload::Archive(dir) = &spool.after_upload {
            if let Some(holder) = spools.values().find(|s| dir.starts_with(&s.path)) {
                p.add(
                    format!("spools.{name}.archive_dir"),
                    format!(
                        "must be outside every spool (it is inside spools.{}.path), or archived files would be delivered again",
                        holder.name
                    ),
                );
            }
        }
        if state_dir.starts_with(&spool.path) {
            p.add("state_dir", format!("must be outside spools.{name}.path"));
        }
    }
}

#[cfg(test)]
mod tests;
