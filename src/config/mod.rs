//! The config file: TOML read once into a validated, typed [`Config`].
//!
//! Loading walks the whole file and reports every problem at once, each under its dotted key
//! (`spools.orders.settle`) and with the file name, so an operator fixes the file in one pass.
//! Relative paths are taken relative to the directory of the config file.

mod auth;
mod bucket;
mod destination;
mod keys;
mod manifest;
mod network;
mod object;
mod output;
mod overlap;
mod reader;
mod route;
mod schedule;
mod spool;
pub(crate) use crate::units;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use auth::SecretSources;
pub use bucket::parse_bucket_uri;
use destination::{check_endpoint, check_region};
pub use destination::{Bound, Destination, LargeFileSha256, Secret, UploadSettings};
pub use overlap::overlaps_after_resolving;
use reader::{Problem, Problems, Section};
pub use spool::{AfterUpload, Spool};

use crate::logging::LogFormat;

/// Where `--config` points when neither the flag nor `$S3SPOOL_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/s3spool/config.toml";

/// How long delivered rows stay in the queue unless `history` says otherwise.
pub const DEFAULT_HISTORY: Duration = Duration::from_secs(30 * 24 * 3600);

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
    /// How long delivered rows stay in the queue (`history`); `None`: forever.
    pub history: Option<Duration>,
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

    #[cfg(test)]
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
        // A config installed with placeholders (the package's) is refused for them alone:
        // the operator sees what to fill in, not what else the placeholders break.
        let mut problems = Vec::new();
        for (name, value) in &table {
            unfilled(value, name, &mut problems);
        }
        if !problems.is_empty() {
            return Err(ConfigError {
                file: path.clone(),
                problems,
            });
        }
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
        let history = match top.string(&mut p, "history") {
            None => Some(DEFAULT_HISTORY),
            Some("forever") => None,
            Some(text) => match units::parse_duration(text) {
                Ok(d) if d >= Duration::from_secs(3600) => Some(d),
                Ok(_) => {
                    p.add("history", "must be at least 1h (or \"forever\")");
                    None
                }
                Err(e) => {
                    p.add("history", format!("{e}, or \"forever\" to keep every row"));
                    None
                }
            },
        };
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
            destination::parse(p, key, name, t, &sources, &mut found)
        });
        let spools = named_tables(&mut p, &mut top, "spools", |p, key, name, t| {
            spool::parse(p, key, name, t, &base, &table)
        });
        top.finish(&mut p);
        let spools = apply_key_rules(&mut p, spools, &destinations);
        let spools = with_send_windows(spools, &destinations);
        check_windows_overlap(&mut p, &spools);
        overlap::check_spool_overlaps(&mut p, &spools, &state_dir);

        if p.0.is_empty() {
            Ok(Config {
                source: path.to_path_buf(),
                state_dir,
                rescan_interval,
                drain_timeout,
                log_format,
                metrics_listen,
                min_free_space,
                history,
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
        queue_path(&self.state_dir)
    }
}

/// The queue database's path in `state_dir`.
pub fn queue_path(state_dir: &Path) -> PathBuf {
    state_dir.join("queue.db")
}

/// Each route's send windows: its spool's and its destination's (the one place that rule
/// is written; the dispatcher, the uploader, `send` and `status` read the result).
fn with_send_windows(
    mut spools: BTreeMap<String, Arc<Spool>>,
    destinations: &BTreeMap<String, Arc<Destination>>,
) -> BTreeMap<String, Arc<Spool>> {
    for spool in spools.values_mut() {
        let spool = Arc::make_mut(spool);
        for route in &mut spool.routes {
            let destination = destinations
                .get(&route.destination)
                .and_then(|d| d.windows.clone());
            route.send_windows = route
                .windows
                .clone()
                .or_else(|| spool.schedule.windows.clone())
                .into_iter()
                .chain(destination)
                .collect();
        }
    }
    spools
}

/// A route whose spool's windows never overlap its destination's would never send.
fn check_windows_overlap(p: &mut Problems, spools: &BTreeMap<String, Arc<Spool>>) {
    for (name, spool) in spools {
        for route in &spool.routes {
            let windows = route.windows();
            if windows.len() == 2
                && crate::schedule::all_open_at(&windows, crate::clock::schedule_now()).is_none()
            {
                let whose = if route.windows.is_some() {
                    format!("spools.{name}.to.{}.windows", route.destination)
                } else {
                    format!("spools.{name}.windows")
                };
                p.add(
                    whose,
                    format!(
                        "never overlaps the windows of destination {:?}: the spool could never send",
                        route.destination
                    ),
                );
            }
        }
    }
}

/// Each route's key template with its rules: the spool's own over its destination's.
fn apply_key_rules(
    p: &mut Problems,
    mut spools: BTreeMap<String, Arc<Spool>>,
    destinations: &BTreeMap<String, Arc<Destination>>,
) -> BTreeMap<String, Arc<Spool>> {
    for (name, spool) in spools.iter_mut() {
        for route in &mut Arc::make_mut(spool).routes {
            let below = destinations
                .get(&route.destination)
                .map(|d| d.key_rules.clone())
                .unwrap_or_default();
            let rules = route.key_rules.over(&below);
            if !rules.any() {
                continue;
            }
            match route.key.clone().with_rules(rules) {
                Ok(key) => route.key = key,
                Err(e) => p.add(format!("spools.{name}.key"), e),
            }
        }
    }
    spools
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

/// A value the operator must replace starts with this (the packaged config's).
const FILL_IN: &str = "FILL IN";

/// Adds a problem for every string under `value` still starting with [`FILL_IN`], under
/// its dotted key. The value is not quoted: an operator may have typed a secret after the
/// words.
fn unfilled(value: &toml::Value, key: &str, found: &mut Vec<Problem>) {
    match value {
        toml::Value::String(text) if text.trim_start().starts_with(FILL_IN) => {
            found.push(Problem {
                key: key.to_string(),
                message: format!(
                    "still holds the {FILL_IN:?} placeholder: fill it in, then run `s3spool check`"
                ),
            })
        }
        toml::Value::Table(table) => {
            for (name, inner) in table {
                unfilled(inner, &format!("{key}.{name}"), found);
            }
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                unfilled(item, &format!("{key}[{i}]"), found);
            }
        }
        _ => {}
    }
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

#[cfg(test)]
mod tests;
