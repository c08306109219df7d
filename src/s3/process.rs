//! Credentials from a program (`credential_process`): it prints the AWS JSON credential
//! document (`Version` 1, `AccessKeyId`, `SecretAccessKey`, optional `SessionToken` and
//! `Expiration`), as IAM Roles Anywhere's signing helper does. Also finds the program a
//! named profile of the AWS config files gives, which rusoto reads for the default
//! profile only.
//!
//! What the program prints holds secrets: errors say which field is wrong, never its value.

use async_trait::async_trait;
use rusoto_credential::{AwsCredentials, CredentialsError, ProvideAwsCredentials};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use super::spec::CredentialProcess;

/// A program that has not answered in this time is killed.
const TIMEOUT: Duration = Duration::from_secs(60);
/// A credential document is well under a kilobyte: more output than this is not one.
const MAX_OUTPUT: u64 = 1 << 20;

/// How every error of a credential program begins (see `auth::credentials_error`).
pub const FAILED: &str = "credential program ";

/// Runs the program for each renewal (the caller caches).
pub struct ProcessProvider {
    process: CredentialProcess,
    /// The profile the program came from, for errors.
    profile: Option<String>,
    timeout: Duration,
}

impl ProcessProvider {
    pub fn new(process: CredentialProcess, profile: Option<String>) -> Self {
        ProcessProvider {
            process,
            profile,
            timeout: TIMEOUT,
        }
    }

    /// `credential program /usr/bin/helper (profile ops)`: the program, never its arguments.
    fn name(&self) -> String {
        let program = self.process.argv.first().map_or("", String::as_str);
        match &self.profile {
            Some(profile) => format!("{FAILED}{program} (credential_process of profile {profile})"),
            None => format!("{FAILED}{program}"),
        }
    }

    fn error(&self, what: impl std::fmt::Display) -> CredentialsError {
        // No double quotes: rusoto's STS provider quotes this text in Debug form.
        CredentialsError::new(format!("{} {what}", self.name()).replace('"', "'"))
    }

    async fn run(&self) -> Result<Vec<u8>, CredentialsError> {
        let (program, args) = self
            .process
            .argv
            .split_first()
            .ok_or_else(|| self.error("is empty"))?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| self.error(format!("cannot be started: {e}")))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(self.error("has no output pipes"));
        };
        let run = async {
            use tokio::io::AsyncReadExt;
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let (mut stdout, mut stderr) = (stdout.take(MAX_OUTPUT), stderr.take(MAX_OUTPUT));
            // Both at once: a program blocked on a full stderr pipe would never finish.
            let (read_out, read_err, status) = tokio::join!(
                stdout.read_to_end(&mut out),
                stderr.read_to_end(&mut err),
                child.wait()
            );
            read_out.and(read_err)?;
            Ok::<_, std::io::Error>(std::process::Output {
                status: status?,
                stdout: out,
                stderr: err,
            })
        };
        let output = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| {
                self.error(format!(
                    "did not finish within {:?}; it was killed",
                    self.timeout
                ))
            })?
            .map_err(|e| self.error(format!("failed: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let said = stderr
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty())
                .map(|l| format!(": {}", l.chars().take(300).collect::<String>()))
                .unwrap_or_default();
            return Err(self.error(format!("exited with {}{said}", output.status)));
        }
        Ok(output.stdout)
    }

    /// The credentials in the program's output.
    fn parse(&self, stdout: &[u8]) -> Result<AwsCredentials, CredentialsError> {
        // serde_json's syntax errors give a line and a column, never the text.
        let document: serde_json::Value = serde_json::from_slice(stdout).map_err(|e| {
            self.error(format!(
                "printed no JSON credential document ({e}); it must print {{\"Version\": 1, \"AccessKeyId\": …, \"SecretAccessKey\": …, \"SessionToken\": …, \"Expiration\": …}}"
            ))
        })?;
        let field = |name: &str| document.get(name).and_then(serde_json::Value::as_str);
        if document.get("Version").and_then(serde_json::Value::as_i64) != Some(1) {
            return Err(self.error("printed a document whose Version is not 1"));
        }
        let required = |name: &str| {
            field(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| self.error(format!("printed no {name}")))
        };
        let key = required("AccessKeyId")?;
        let secret = required("SecretAccessKey")?;
        let token = field("SessionToken").filter(|t| !t.is_empty());
        let expires = match field("Expiration") {
            None => None,
            Some(text) => Some(
                chrono::DateTime::parse_from_rfc3339(text)
                    .map_err(|_| self.error("printed an Expiration that is not an RFC 3339 time"))?
                    .with_timezone(&chrono::Utc),
            ),
        };
        Ok(AwsCredentials::new(
            key,
            secret,
            token.map(str::to_string),
            expires,
        ))
    }
}

#[async_trait]
impl ProvideAwsCredentials for ProcessProvider {
    async fn credentials(&self) -> Result<AwsCredentials, CredentialsError> {
        let stdout = self.run().await?;
        self.parse(&stdout)
    }
}

/// The `credential_process` of profile `name`, unless the shared credentials file gives
/// it a key (which the standard chain then uses). Looked up in the shared credentials
/// file (`[name]`) and the config file (`[profile name]`, `[default]`), at the paths
/// `AWS_SHARED_CREDENTIALS_FILE` and `AWS_CONFIG_FILE` or under `~/.aws/`.
pub fn profile_process(name: &str) -> Result<Option<CredentialProcess>, String> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let file = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".aws").join(default))
    };
    let read = |path: PathBuf| std::fs::read_to_string(path).unwrap_or_default();
    let credentials = read(file("AWS_SHARED_CREDENTIALS_FILE", "credentials"));
    let config = read(file("AWS_CONFIG_FILE", "config"));
    let in_credentials = section(&credentials, name);
    if in_credentials.iter().any(|(k, _)| k == "aws_access_key_id") {
        return Ok(None);
    }
    let config_name = if name == "default" {
        "default".to_string()
    } else {
        format!("profile {name}")
    };
    let line = in_credentials
        .into_iter()
        .chain(section(&config, &config_name))
        .find(|(k, _)| k == "credential_process")
        .map(|(_, v)| v);
    let Some(line) = line else { return Ok(None) };
    match shlex::split(&line) {
        Some(argv) if !argv.is_empty() => Ok(Some(CredentialProcess { argv })),
        _ => Err(format!(
            "the credential_process of profile {name} is not a command line (unbalanced quotes?)"
        )),
    }
}

/// The `key = value` lines of `[name]` in an INI file, keys in lower case.
fn section(text: &str, name: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut found = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') && line.ends_with(']') {
            inside = line[1..line.len() - 1].trim() == name;
        } else if inside && !line.starts_with(['#', ';']) {
            if let Some((key, value)) = line.split_once('=') {
                found.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(script: &str) -> ProcessProvider {
        ProcessProvider::new(
            CredentialProcess {
                argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            },
            Some("ops".into()),
        )
    }

    #[tokio::test]
    async fn a_document_becomes_credentials_that_expire() {
        let p = provider(
            r#"echo '{"Version": 1, "AccessKeyId": "ASIAPROC", "SecretAccessKey": "s3cr3t", "SessionToken": "tok", "Expiration": "2030-01-02T03:04:05Z"}'"#,
        );
        let c = p.credentials().await.unwrap();
        assert_eq!(
            (c.aws_access_key_id(), c.aws_secret_access_key()),
            ("ASIAPROC", "s3cr3t")
        );
        assert_eq!(c.token().as_deref(), Some("tok"));
        assert_eq!(
            c.expires_at().unwrap().to_rfc3339(),
            "2030-01-02T03:04:05+00:00"
        );
        let long_lived =
            provider(r#"echo '{"Version": 1, "AccessKeyId": "AKIA", "SecretAccessKey": "s"}'"#);
        assert!(long_lived
            .credentials()
            .await
            .unwrap()
            .expires_at()
            .is_none());
    }

    #[tokio::test]
    async fn failures_name_the_program_and_profile_never_the_secret() {
        for (script, words) in [
            (
                "echo 'helper: certificate expired' >&2; exit 3",
                "exited with exit status: 3: helper: certificate expired",
            ),
            (
                r#"echo '{"Version": 1, "AccessKeyId": "AKIA", "SecretAccessKey": "hunter2"'"#,
                "printed no JSON credential document",
            ),
            (
                r#"echo '{"Version": 2, "AccessKeyId": "AKIA", "SecretAccessKey": "hunter2"}'"#,
                "Version is not 1",
            ),
            (
                r#"echo '{"Version": 1, "AccessKeyId": "AKIA", "SecretAccessKey": "hunter2", "Expiration": "hunter2"}'"#,
                "not an RFC 3339 time",
            ),
            (
                r#"echo '{"Version": 1, "SecretAccessKey": "hunter2"}'"#,
                "printed no AccessKeyId",
            ),
            ("echo hunter2", "printed no JSON"),
        ] {
            let e = provider(script).credentials().await.unwrap_err().message;
            assert!(
                e.starts_with("credential program /bin/sh (credential_process of profile ops) "),
                "{e}"
            );
            assert!(e.contains(words), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
            assert!(!e.contains("-c"), "arguments are not named: {e}");
        }
        let missing = ProcessProvider::new(
            CredentialProcess {
                argv: vec!["/nonexistent/helper".into()],
            },
            None,
        );
        let e = missing.credentials().await.unwrap_err().message;
        assert!(
            e.starts_with("credential program /nonexistent/helper cannot be started"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_program_that_hangs_is_killed_at_its_timeout() {
        let mut p = provider("echo started >&2; sleep 30");
        p.timeout = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let e = p.credentials().await.unwrap_err().message;
        assert!(
            e.contains("did not finish within 300ms; it was killed"),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn profile_sections_are_read_as_the_aws_cli_reads_them() {
        let config = "[default]\nregion = x\n[profile ops]\ncredential_process = /usr/bin/helper --profile-arn \"arn:aws:x y\"\n";
        let found = section(config, "profile ops");
        assert_eq!(found[0].0, "credential_process");
        let argv = shlex::split(&found[0].1).unwrap();
        assert_eq!(argv, ["/usr/bin/helper", "--profile-arn", "arn:aws:x y"]);
        assert!(section(config, "ops").is_empty());
    }
}
