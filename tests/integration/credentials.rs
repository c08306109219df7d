//! Credentials as AWS users expect them: AssumeRole with an External ID through the local
//! server's STS, renewal during a run, ExpiredToken in the middle of a multipart upload,
//! and the default chain from the environment or a shared credentials file.

use std::time::Duration;

use crate::harness::*;
use crate::proxy::{FaultProxy, Mode};

const WAIT: Duration = Duration::from_secs(120);
const BASE_KEY: &str = "AKIABASEKEY0000001";
const BASE_SECRET: &str = "base-secret-never-in-logs";

/// A setup reaching S3 and STS through a recording proxy, assuming a role.
fn assume_role(mode: Mode, extra: &str) -> (Setup, FaultProxy) {
    let server = shared_server();
    let proxy = FaultProxy::start(server, mode);
    let mut o = Options::new(&proxy.endpoint());
    o.auth = Some(format!(
        "mode = \"assume_role\"\nrole_arn = \"arn:aws:iam::123456789012:role/s3spool-upload\"\nexternal_id = \"acme-ext-42\"\naccess_key_id = \"{BASE_KEY}\"\nsecret_access_key = \"{BASE_SECRET}\"\nsts_endpoint = \"{}\"\n{extra}",
        proxy.endpoint()
    ));
    (Setup::new(o, Bucket::create(server)), proxy)
}

pub fn assume_role_calls(proxy: &FaultProxy) -> Vec<String> {
    proxy
        .recorded()
        .into_iter()
        .filter(|r| r.contains("Action=AssumeRole"))
        .collect()
}

/// The S3 requests (not STS, not the sweep's listing), as recorded.
pub fn s3_writes(proxy: &FaultProxy) -> Vec<String> {
    proxy
        .recorded()
        .into_iter()
        .filter(|r| r.starts_with("PUT ") || (r.starts_with("POST /t")))
        .collect()
}

pub fn signing_key(request: &str) -> String {
    let credential = request.split("Credential=").nth(1).unwrap_or_default();
    credential.split('/').next().unwrap_or_default().to_string()
}

pub fn has_header(request: &str, name: &str) -> bool {
    request
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
}

#[test]
fn assume_role_carries_the_external_id_and_s3_is_signed_with_the_session_key() {
    let (s, proxy) = assume_role(Mode::Pass, "");
    let port = s.serve_metrics();
    let small = s.drop_file("a.csv", b"hello");
    let large = s.drop_file("big.bin", &data(12 << 20, 31));
    let daemon = s.start();
    wait_for(WAIT, "delivered", || s.count("done") == 2);
    // The session's expiry in the metrics, as a Unix time: about the default hour ahead.
    let expiry = metric_value(
        &scrape(port),
        "s3spool_credentials_expiry_timestamp_seconds{destination=\"lake\"}",
    )
    .expect("an expiry for the assumed role");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((3000.0..=3600.0).contains(&(expiry - now)), "{expiry}");
    let log_path = daemon.log.clone();
    assert!(daemon.stop().success());

    let calls = assume_role_calls(&proxy);
    assert!(!calls.is_empty(), "STS was asked");
    for call in &calls {
        assert!(call.contains("ExternalId=acme-ext-42"), "{call}");
        assert!(
            call.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fs3spool-upload"),
            "{call}"
        );
        assert_eq!(
            signing_key(call),
            BASE_KEY,
            "STS is called with the base key"
        );
    }
    let writes = s3_writes(&proxy);
    assert!(
        writes.len() >= 5,
        "a PUT, and create + 3 parts + complete: {}",
        writes.len()
    );
    for write in &writes {
        assert!(
            signing_key(write).starts_with("ASIA"),
            "signed with the session key: {}",
            write.lines().next().unwrap()
        );
        assert!(
            has_header(write, "x-amz-security-token"),
            "with the session token"
        );
    }
    let objects = s.bucket.objects();
    assert_eq!(objects["inbound/orders/a.csv"].sha256, small);
    assert_eq!(objects["inbound/orders/big.bin"].sha256, large);

    // Nothing of the base secret anywhere an operator or attacker could read.
    s.assert_secret_nowhere(BASE_SECRET, &log_path);
    let check = String::from_utf8_lossy(&s.cli(&["check"]).stdout).to_string();
    assert!(
        check
            .lines()
            .any(|l| l.trim().starts_with("sts:AssumeRole") && l.trim().ends_with(" ok")),
        "{check}"
    );
    for entry in std::fs::read_dir(s.dir.path().join("state"))
        .unwrap()
        .flatten()
    {
        let bytes = std::fs::read(entry.path()).unwrap();
        assert!(!bytes
            .windows(BASE_SECRET.len())
            .any(|w| w == BASE_SECRET.as_bytes()));
    }
}

#[test]
fn temporary_credentials_are_renewed_during_a_run_and_uploads_continue() {
    // 15-minute sessions renewed when under 14m58s remain: about every two seconds.
    let (s, proxy) = assume_role(
        Mode::Pass,
        "duration = \"15m\"\nrefresh_margin = \"14m58s\"",
    );
    let daemon = s.start();
    let mut want = Vec::new();
    for wave in 0..4 {
        want.push(s.drop_file(&format!("wave-{wave}.csv"), &data(2000, wave)));
        std::thread::sleep(Duration::from_millis(2500));
    }
    wait_for(WAIT, "every wave delivered", || s.count("done") == 4);
    assert!(daemon.stop().success());
    let calls = assume_role_calls(&proxy).len();
    assert!(
        calls >= 3,
        "renewed during the run: {calls} AssumeRole calls"
    );
    assert_eq!(s.count("failed"), 0);
}

#[test]
fn an_expired_token_mid_multipart_renews_the_credentials_and_retries_only_that_part() {
    let (s, proxy) = assume_role(Mode::ExpireTokenAtFirstPart, "");
    let sha = s.drop_file("big.bin", &data(16 << 20, 32));
    let daemon = s.start();
    wait_for(WAIT, "delivered", || s.count("done") == 1);
    let log = std::fs::read_to_string(&daemon.log).unwrap();
    assert!(daemon.stop().success());
    assert_eq!(proxy.faults(), 1, "one UploadPart answered ExpiredToken");
    assert!(log.contains("the credentials expired early; renewing them"));
    assert!(
        assume_role_calls(&proxy).len() >= 2,
        "a second AssumeRole after the ExpiredToken"
    );
    let row: serde_json::Value =
        serde_json::from_slice(&s.cli(&["show", "1", "--json"]).stdout).unwrap();
    assert_eq!(
        row["attempts"], 1,
        "the file was neither failed nor restarted"
    );
    let creates = proxy
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST ") && r.contains("?uploads"))
        .count();
    assert_eq!(
        creates, 1,
        "one multipart upload: the part was retried, the file not restarted"
    );
    assert_eq!(s.bucket.objects()["inbound/orders/big.bin"].sha256, sha);
}

fn default_chain(auth: &str) -> (Setup, FaultProxy) {
    let server = shared_server();
    let proxy = FaultProxy::start(server, Mode::Pass);
    let mut o = Options::new(&proxy.endpoint());
    o.auth = Some(auth.to_string());
    (Setup::new(o, Bucket::create(server)), proxy)
}

/// Delivers one file with the daemon's AWS environment set to `env`; returns the key id
/// every S3 write was signed with.
fn deliver_with_env(s: &Setup, proxy: &FaultProxy, env: &[(&str, &str)]) -> String {
    s.drop_file("one.csv", b"x");
    let daemon = s.launch(|log| Daemon::start_env(&s.config, log, env));
    wait_for(WAIT, "delivered", || s.count("done") == 1);
    assert!(daemon.stop().success());
    let keys: std::collections::BTreeSet<String> =
        s3_writes(proxy).iter().map(|w| signing_key(w)).collect();
    assert_eq!(keys.len(), 1, "one identity signs everything: {keys:?}");
    keys.into_iter().next().unwrap()
}

#[test]
fn the_default_chain_reads_environment_variables() {
    let (s, proxy) = default_chain("mode = \"default\"");
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIAFROMENVIRONMENT"),
        ("AWS_SECRET_ACCESS_KEY", "env-secret"),
    ];
    assert_eq!(deliver_with_env(&s, &proxy, &env), "AKIAFROMENVIRONMENT");
}

#[test]
fn the_default_chain_reads_a_profile_from_the_shared_credentials_file() {
    let (s, proxy) = default_chain("mode = \"default\"\nprofile = \"uploads\"");
    let file = s.dir.path().join("aws-credentials");
    std::fs::write(
        &file,
        "[default]\naws_access_key_id = AKIADEFAULTPROFILE\naws_secret_access_key = d\n\n[uploads]\naws_access_key_id = AKIAUPLOADSPROFILE\naws_secret_access_key = u\n",
    )
    .unwrap();
    let env = [("AWS_SHARED_CREDENTIALS_FILE", file.to_str().unwrap())];
    assert_eq!(
        deliver_with_env(&s, &proxy, &env),
        "AKIAUPLOADSPROFILE",
        "the named profile, not [default]"
    );
}

#[test]
fn check_and_the_daemon_name_an_unreachable_sts() {
    let server = shared_server();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let mut o = Options::new(server);
    o.auth = Some(format!(
        "mode = \"assume_role\"\nrole_arn = \"arn:aws:iam::123456789012:role/r\"\naccess_key_id = \"{BASE_KEY}\"\nsecret_access_key = \"{BASE_SECRET}\"\nsts_endpoint = \"{closed}\""
    ));
    let s = Setup::new(o, Bucket::create(server));
    let out = s.cli(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let t = String::from_utf8_lossy(&out.stdout).to_string();
    let sts = t
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("sts:AssumeRole"))
        .unwrap_or_default()
        .to_string();
    assert!(sts.contains("FAILED: ConnectionFailed"), "{t}");
    assert!(t.contains("skipped (no credentials)"), "{t}");
    assert!(!t.contains(BASE_SECRET));
}
