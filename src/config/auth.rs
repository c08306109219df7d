//! `[destinations.NAME.auth]`: how s3spool proves who it is to S3 — a static key, the
//! standard AWS credential chain, a credential program (`credential_process`), or an IAM
//! role assumed through STS with an External ID.

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
pub use crate::s3::{AssumeRole, Auth, BaseIdentity, CredentialProcess, StaticKey};

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

const MODES: &str = "\"static\", \"default\", \"process\" or \"assume_role\"";

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
    let command = s.strings(p, "command");
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
            only_with(
                p,
                "profile",
                profile.is_some(),
                "\"default\" or \"assume_role\"",
            );
            only_with(
                p,
                "command",
                command.is_some(),
                "\"process\" or \"assume_role\"",
            );
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
            only_with(
                p,
                "command",
                command.is_some(),
                "\"process\" or \"assume_role\"",
            );
            for (name, given) in role_keys {
                only_with(p, name, given, "\"assume_role\"");
            }
            Some(Auth::Default {
                profile: profile.map(str::to_string),
            })
        }
        "process" => {
            only_with(p, "access_key_id", has_key, "\"static\" or \"assume_role\"");
            only_with(
                p,
                "profile",
                profile.is_some(),
                "\"default\" or \"assume_role\"",
            );
            for (name, given) in role_keys {
                only_with(p, name, given, "\"assume_role\"");
            }
            match command {
                Some(argv) => credential_process(p, &s, argv, sources.base).map(Auth::Process),
                None => {
                    p.add(
                        s.key("command"),
                        "is required with mode = \"process\" (the program and its arguments, like [\"/usr/bin/aws_signing_helper\", \"credential-process\", …])",
                    );
                    None
                }
            }
        }
        "assume_role" => {
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
            let bases = [has_key, command.is_some(), profile.is_some()];
            if bases.iter().filter(|given| **given).count() > 1 {
                p.add(
                    s.key("command"),
                    "give one identity to call STS with: access_key_id (and its secret), command, or profile",
                );
            }
            let base = if has_key {
                static_key(
                    p,
                    &s,
                    (access_key_id, inline, file, credential),
                    sources,
                    &mut secret_files,
                    false,
                )
                .map(BaseIdentity::Static)
            } else if let Some(argv) = command {
                credential_process(p, &s, argv, sources.base).map(BaseIdentity::Process)
            } else {
                Some(BaseIdentity::Chain {
                    profile: profile.map(str::to_string),
                })
            };
            (p.0.len() == before).then(|| {
                Auth::AssumeRole(AssumeRole {
                    role_arn: role_arn.unwrap_or_default(),
                    external_id,
                    session_name: session_name.unwrap_or_default(),
                    duration,
                    sts_endpoint,
                    sts_region,
                    base: base.unwrap_or(BaseIdentity::Chain { profile: None }),
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

/// `command = ["program", "arg", …]`: a program found in `PATH`, or a path (relative to
/// the config file's folder, like every path of the config).
fn credential_process(
    p: &mut Problems,
    s: &Section<'_>,
    argv: Vec<&str>,
    base: &Path,
) -> Option<CredentialProcess> {
    match argv.split_first() {
        Some((program, args)) if !program.trim().is_empty() => {
            let program = if program.contains('/') {
                resolve(base, program).display().to_string()
            } else {
                program.to_string()
            };
            Some(CredentialProcess {
                argv: std::iter::once(program)
                    .chain(args.iter().map(|a| a.to_string()))
                    .collect(),
            })
        }
        _ => {
            p.add(
                s.key("command"),
                "must name a program: [\"/path/to/program\", \"arg\", …]",
            );
            None
        }
    }
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

#[cfg(test)]
mod tests {
    use crate::config::tests::*;
    use crate::config::*;
    use crate::s3::{Auth, BaseIdentity};

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

    fn with_auth(auth: &str) -> String {
        format!("[destinations.lake]\nbucket = \"s3://acme-drop\"\n[destinations.lake.auth]\n{auth}\n{BASE_SPOOL}")
    }

    const ROLE: &str =
        "mode = \"assume_role\"\nrole_arn = \"arn:aws:iam::123456789012:role/s3spool\"";

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
        assert!(
            matches!(role.base, BaseIdentity::Chain { profile: None }),
            "no key: the default chain calls STS"
        );
        let text = format!("{ROLE}\nexternal_id = \"acme-42\"\naccess_key_id = \"AKIABASE\"\nsecret_access_key = \"base-secret\"\nsts_endpoint = \"http://127.0.0.1:5000\"\nsts_region = \"eu-west-1\"\nsession_name = \"uploader\"\nduration = \"2h\"");
        let config = parse(&with_auth(&text)).unwrap();
        let Auth::AssumeRole(role) = &config.destinations["lake"].auth else {
            panic!()
        };
        assert_eq!(role.external_id.as_deref(), Some("acme-42"));
        let BaseIdentity::Static(key) = &role.base else {
            panic!("{:?}", role.base)
        };
        assert_eq!(key.access_key_id, "AKIABASE");
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
    fn process_mode_and_process_or_profile_as_the_base_of_a_role() {
        let config = parse(&with_auth(
            "mode = \"process\"\ncommand = [\"/usr/bin/aws_signing_helper\", \"credential-process\"]",
        ))
        .unwrap();
        let Auth::Process(process) = &config.destinations["lake"].auth else {
            panic!()
        };
        assert_eq!(
            process.argv,
            ["/usr/bin/aws_signing_helper", "credential-process"]
        );
        refused(
            &with_auth("mode = \"process\""),
            "destinations.lake.auth.command",
            "is required with mode = \"process\"",
        );
        refused(
            &with_auth("mode = \"process\"\ncommand = []"),
            "destinations.lake.auth.command",
            "must name a program",
        );
        refused(
            &with_auth("mode = \"process\"\ncommand = [\"h\"]\nrole_arn = \"x\""),
            "destinations.lake.auth.role_arn",
            "only used with mode = \"assume_role\"",
        );
        refused(
            &with_auth("mode = \"default\"\ncommand = [\"h\"]"),
            "destinations.lake.auth.command",
            "only used with mode = \"process\" or \"assume_role\"",
        );
        let config = parse(&with_auth(&format!("{ROLE}\ncommand = [\"helper\"]"))).unwrap();
        let Auth::AssumeRole(role) = &config.destinations["lake"].auth else {
            panic!()
        };
        assert!(matches!(&role.base, BaseIdentity::Process(p) if p.argv == ["helper"]));
        let config = parse(&with_auth(&format!(
            "{ROLE}\ncommand = [\"bin/helper\", \"x\"]"
        )))
        .unwrap();
        let Auth::AssumeRole(role) = &config.destinations["lake"].auth else {
            panic!()
        };
        let BaseIdentity::Process(relative) = &role.base else {
            panic!()
        };
        assert!(relative.argv[0].ends_with("/bin/helper") && relative.argv[0].starts_with('/'));
        assert_eq!(relative.argv[1], "x");
        let config = parse(&with_auth(&format!("{ROLE}\nprofile = \"ops\""))).unwrap();
        let Auth::AssumeRole(role) = &config.destinations["lake"].auth else {
            panic!()
        };
        assert!(matches!(&role.base, BaseIdentity::Chain { profile: Some(p) } if p == "ops"));
        refused(
            &with_auth(&format!(
                "{ROLE}\nprofile = \"ops\"\ncommand = [\"helper\"]"
            )),
            "destinations.lake.auth.command",
            "give one identity to call STS with",
        );
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
            crate::config::auth::default_session_name("web 1.example.com"),
            "s3spool-web-1.example.com"
        );
        assert_eq!(
            crate::config::auth::default_session_name(&"h".repeat(100)).len(),
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
}
