//! `[destinations.NAME.auth]`: how s3spool proves who it is to S3 — a static key, the
//! standard AWS credential chain, or an IAM role assumed through STS with an External ID.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// `access_key_id`, `secret_access_key`, `secret_access_key_file`, `secret_access_key_credential`.
type KeyFields<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
);

use super::reader::{Problems, Section};
use super::{check_endpoint, check_region, resolve, Secret};

/// How s3spool proves who it is to S3.
#[derive(Debug, Clone)]
pub enum Auth {
    Static(StaticKey),
    /// The standard chain: environment, shared credentials file (`profile`), container and
    /// instance metadata.
    Default {
        profile: Option<String>,
    },
    AssumeRole(AssumeRole),
}

/// An access key and its secret.
#[derive(Debug, Clone)]
pub struct StaticKey {
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

/// An IAM role assumed through STS.
#[derive(Debug, Clone)]
pub struct AssumeRole {
    pub role_arn: String,
    pub external_id: Option<String>,
    pub session_name: String,
    pub duration: Duration,
    pub sts_endpoint: Option<String>,
    pub sts_region: Option<String>,
    /// The credentials that call STS; `None` means the default chain.
    pub base: Option<StaticKey>,
}

/// Temporary credentials are renewed this long before they expire, unless configured.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// The parsed table: the auth itself and how early temporary credentials are renewed.
pub struct Parsed {
    pub auth: Auth,
    pub refresh_margin: Duration,
    /// The table holds a secret inline (the config file must then be private).
    pub inline_secret: bool,
    /// Files the secret was read from (they must be private too).
    pub secret_files: Vec<PathBuf>,
}

/// Where secrets come from while a config is read.
pub struct SecretSources<'a> {
    /// Relative paths are relative to this folder (the config file's).
    pub base: &'a Path,
    /// False for commands that never talk to S3 (`status`, `list`, …): secret files and
    /// systemd credentials are not read, so those commands work from any shell.
    pub read: bool,
}

const MODES: &str = "\"static\", \"default\" or \"assume_role\"";

pub fn parse(
    p: &mut Problems,
    path: &str,
    table: &toml::Table,
    sources: &SecretSources<'_>,
    allow_http: bool,
) -> Option<Parsed> {
    let mut secret_files = Vec::new();
    let mut s = Section::new(path, table);
    let mode = s.required_string(p, "mode");
    let access_key_id = s.string(p, "access_key_id");
    let inline = s.string(p, "secret_access_key");
    let file = s.string(p, "secret_access_key_file");
    let credential = s.string(p, "secret_access_key_credential");
    let profile = s.string(p, "profile");
    let role_arn = s.string(p, "role_arn");
    let external_id = s.string(p, "external_id");
    let session_name = s.string(p, "session_name");
    let duration = s.duration(p, "duration");
    let sts_endpoint = s.string(p, "sts_endpoint");
    let sts_region = s.string(p, "sts_region");
    let refresh_margin = s
        .duration(p, "refresh_margin")
        .unwrap_or(DEFAULT_REFRESH_MARGIN);
    s.finish(p);
    let before = p.0.len();
    let mode = mode?;
    let only_with = |p: &mut Problems, name: &str, given: bool, modes: &str| {
        if given {
            p.add(s.key(name), format!("is only used with mode = {modes}"));
        }
    };
    let has_key =
        access_key_id.is_some() || inline.is_some() || file.is_some() || credential.is_some();
    // Keys that only assume_role uses, and whether each was given.
    let role_keys = [
        ("role_arn", role_arn.is_some()),
        ("external_id", external_id.is_some()),
        ("session_name", session_name.is_some()),
        ("duration", duration.is_some()),
        ("sts_endpoint", sts_endpoint.is_some()),
        ("sts_region", sts_region.is_some()),
    ];
    let auth = match mode {
        "static" => {
            only_with(p, "profile", profile.is_some(), "\"default\"");
            for (name, given) in role_keys {
                only_with(p, name, given, "\"assume_role\"");
            }
            static_key(
                p,
                &s,
                (access_key_id, inline, file, credential),
                sources,
                &mut secret_files,
                true,
            )
            .map(Auth::Static)
        }
        "default" => {
            only_with(p, "access_key_id", has_key, "\"static\" or \"assume_role\"");
            for (name, given) in role_keys {
                only_with(p, name, given, "\"assume_role\"");
            }
            Some(Auth::Default {
                profile: profile.map(str::to_string),
            })
        }
        "assume_role" => {
            only_with(p, "profile", profile.is_some(), "\"default\"");
            let role_arn = match role_arn {
                Some(arn) => check_role_arn(arn)
                    .map_err(|e| p.add(s.key("role_arn"), e))
                    .ok()
                    .map(|_| arn.to_string()),
                None => {
                    p.add(s.key("role_arn"), "is required with mode = \"assume_role\"");
                    None
                }
            };
            let external_id = external_id.and_then(|id| {
                check_chars(id, 2, 1224, "+=,.@:/-")
                    .map_err(|e| p.add(s.key("external_id"), e))
                    .ok()
                    .map(|_| id.to_string())
            });
            let session_name = match session_name {
                Some(name) => check_chars(name, 2, 64, "+=,.@-")
                    .map_err(|e| p.add(s.key("session_name"), e))
                    .ok()
                    .map(|_| name.to_string()),
                None => Some(default_session_name(&crate::host::hostname())),
            };
            let duration = duration.unwrap_or(Duration::from_secs(3600));
            if !(Duration::from_secs(900)..=Duration::from_secs(12 * 3600)).contains(&duration) {
                p.add(
                    s.key("duration"),
                    "must be between 15m and 12h (STS's limits)",
                );
            }
            if refresh_margin >= duration {
                p.add(s.key("refresh_margin"), "must be shorter than duration");
            }
            let sts_endpoint =
                sts_endpoint.and_then(|e| check_endpoint(p, &s.key("sts_endpoint"), e, allow_http));
            let sts_region = sts_region
                .and_then(|r| check_region(p, &s.key("sts_region"), r).then(|| r.to_string()));
            let base_key = if has_key {
                static_key(
                    p,
                    &s,
                    (access_key_id, inline, file, credential),
                    sources,
                    &mut secret_files,
                    false,
                )
            } else {
                None
            };
            (p.0.len() == before).then(|| {
                Auth::AssumeRole(AssumeRole {
                    role_arn: role_arn.unwrap_or_default(),
                    external_id,
                    session_name: session_name.unwrap_or_default(),
                    duration,
                    sts_endpoint,
                    sts_region,
                    base: base_key,
                })
            })
        }
        other => {
            p.add(
                s.key("mode"),
                format!("{other:?} is not a mode; use {MODES}"),
            );
            None
        }
    };
    (p.0.len() == before).then_some(())?;
    Some(Parsed {
        auth: auth?,
        refresh_margin,
        inline_secret: inline.is_some(),
        secret_files,
    })
}

/// A key id and its secret: inline, from a file, or from a systemd credential.
#[allow(clippy::too_many_arguments)]
fn static_key(
    p: &mut Problems,
    s: &Section<'_>,
    (access_key_id, inline, file, credential): KeyFields<'_>,
    sources: &SecretSources<'_>,
    secret_files: &mut Vec<PathBuf>,
    required: bool,
) -> Option<StaticKey> {
    let mode = if required {
        "\"static\""
    } else {
        "\"assume_role\" with access_key_id"
    };
    let access_key_id = match access_key_id {
        Some(id) if !id.trim().is_empty() => Some(id.trim().to_string()),
        _ => {
            p.add(
                s.key("access_key_id"),
                format!("is required with mode = {mode}"),
            );
            None
        }
    };
    let given = [inline.is_some(), file.is_some(), credential.is_some()]
        .iter()
        .filter(|g| **g)
        .count();
    if given > 1 {
        p.add(
            s.key("secret_access_key"),
            "give one of secret_access_key, secret_access_key_file or secret_access_key_credential",
        );
        return None;
    }
    let read = |p: &mut Problems, key: &str, file: &Path| match std::fs::read_to_string(file) {
        _ if !sources.read => Some(Secret::new("")),
        // The first line, as documented: a trailing comment or note must not be signed with.
        Ok(text) if !text.trim().is_empty() => {
            Some(Secret::new(text.lines().next().unwrap_or_default().trim()))
        }
        Ok(_) => {
            p.add(s.key(key), format!("{} is empty", file.display()));
            None
        }
        Err(e) => {
            p.add(s.key(key), format!("cannot read {}: {e}", file.display()));
            None
        }
    };
    let secret = match (inline, file, credential) {
        (Some(secret), _, _) if !secret.is_empty() => Some(Secret::new(secret)),
        (_, Some(file), _) => {
            let file = resolve(sources.base, file);
            if sources.read {
                secret_files.push(file.clone());
            }
            read(p, "secret_access_key_file", &file)
        }
        (_, _, Some(_)) if !sources.read => Some(Secret::new("")),
        (_, _, Some(name)) => match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(dir) => read(
                p,
                "secret_access_key_credential",
                &Path::new(&dir).join(name),
            ),
            None => {
                p.add(
                    s.key("secret_access_key_credential"),
                    "$CREDENTIALS_DIRECTORY is not set: this key works under systemd, with LoadCredential= in the unit",
                );
                None
            }
        },
        _ => {
            p.add(
                s.key("secret_access_key"),
                format!("is required with mode = {mode} (or secret_access_key_file, or secret_access_key_credential)"),
            );
            None
        }
    };
    Some(StaticKey {
        access_key_id: access_key_id?,
        secret_access_key: secret?,
    })
}

/// `arn:aws:iam::123456789012:role/path/name` in the aws, aws-cn or aws-us-gov partition.
pub fn check_role_arn(arn: &str) -> Result<(), String> {
    let bad =
        || format!("{arn:?} is not a role ARN like \"arn:aws:iam::123456789012:role/s3spool\"");
    let rest = arn.strip_prefix("arn:").ok_or_else(bad)?;
    let (partition, rest) = rest.split_once(':').ok_or_else(bad)?;
    if !["aws", "aws-cn", "aws-us-gov"].contains(&partition) {
        return Err(format!(
            "{arn:?} names partition {partition:?}; use aws, aws-cn or aws-us-gov"
        ));
    }
    let rest = rest.strip_prefix("iam::").ok_or_else(bad)?;
    let (account, resource) = rest.split_once(':').ok_or_else(bad)?;
    if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("{arn:?}: the account id must be 12 digits"));
    }
    let name = resource.strip_prefix("role/").ok_or_else(bad)?;
    let ok = !name.is_empty()
        && !name.ends_with('/')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c));
    if !ok {
        return Err(bad());
    }
    Ok(())
}

/// `min..=max` characters, each a letter, digit, `_` or one of `extra`.
fn check_chars(value: &str, min: usize, max: usize, extra: &str) -> Result<(), String> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(format!(
            "must be {min} to {max} characters long (it is {n})"
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || extra.contains(*c)))
    {
        return Err(format!(
            "may only contain letters, digits and _{extra}; found {c:?}"
        ));
    }
    Ok(())
}

/// `s3spool-<host>`, with the host cut to what a session name allows.
pub fn default_session_name(host: &str) -> String {
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64 - "s3spool-".len())
        .collect();
    format!("s3spool-{host}")
}
