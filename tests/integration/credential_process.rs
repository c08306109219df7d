//! Credentials from a program (`credential_process`), as IAM Roles Anywhere hands them
//! over: `tests/support/credproc.py` asks the local server's STS for temporary
//! credentials and prints the AWS JSON document; a recording proxy shows what signed each
//! request.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::credentials::{assume_role_calls, has_header, s3_writes, signing_key};
use crate::harness::*;
use crate::proxy::{FaultProxy, Mode};

const WAIT: Duration = Duration::from_secs(90);

/// `command = [...]` running credproc.py, logging to `log`, with `extra` args. The program
/// asks the server's STS directly: the recorder sees only the daemon's requests.
fn command(log: &Path, extra: &[&str]) -> String {
    let sts = shared_server();
    let (python, script) = python_script("credproc.py");
    let mut argv = vec![
        python.display().to_string(),
        script.display().to_string(),
        sts.to_string(),
        log.display().to_string(),
    ];
    argv.extend(extra.iter().map(|a| a.to_string()));
    format!("command = {argv:?}")
}

/// The key ids the program printed, one per run ("failed"/"garbage" for those runs).
fn runs(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A setup whose requests pass a recorder; `auth` gets the recorder's endpoint and the
/// program's run log.
fn process_setup(auth: impl FnOnce(&str, &Path) -> String) -> (Setup, FaultProxy, PathBuf) {
    let server = shared_server();
    let recorder = FaultProxy::start(server, Mode::Pass);
    let mut o = Options::new(&recorder.endpoint());
    let placeholder = Path::new("/RUNS-LOG");
    o.auth = Some(auth(&recorder.endpoint(), placeholder));
    let s = Setup::new(o, Bucket::create(server));
    let runs = s.dir.path().join("runs.log");
    s.edit_config(|t| t.replace("/RUNS-LOG", runs.to_str().unwrap()));
    (s, recorder, runs)
}

#[test]
fn a_credential_program_signs_uploads_and_runs_again_before_expiry() {
    // An hour's credentials renewed when under 59m57s remain: 3 s after each run.
    let (s, recorder, log) = process_setup(|_, log| {
        format!(
            "mode = \"process\"\n{}\nrefresh_margin = \"59m57s\"",
            command(log, &["--lifetime", "3600"])
        )
    });
    let daemon = s.start();
    let mut n = 0;
    while runs(&log).len() < 2 {
        assert!(
            n < 20,
            "the program ran again within 20 files: {:?}",
            runs(&log)
        );
        s.drop_file(&format!("f{n}.csv"), &data(1000, n));
        n += 1;
        wait_for(WAIT, "the file delivered", || s.count("done") == n);
        std::thread::sleep(Duration::from_millis(1000));
    }
    assert!(daemon.stop().success());
    assert_eq!(s.count("failed"), 0);
    let printed: BTreeSet<String> = runs(&log).into_iter().collect();
    let writes = s3_writes(&recorder);
    let used: BTreeSet<String> = writes.iter().map(|w| signing_key(w)).collect();
    assert!(used.is_subset(&printed), "{used:?} ⊄ {printed:?}");
    assert!(
        used.len() >= 2,
        "renewed credentials signed later uploads: {used:?}"
    );
    assert!(writes.iter().all(|w| has_header(w, "x-amz-security-token")));
    let log_text = std::fs::read_to_string(daemon_log(&s)).unwrap();
    let credential_lines: Vec<&str> = log_text
        .lines()
        .filter(|l| l.contains("credential"))
        .collect();
    assert!(
        log_text.contains("temporary credentials obtained"),
        "{credential_lines:#?}"
    );
}

fn daemon_log(s: &Setup) -> PathBuf {
    s.dir.path().join("daemon.log")
}

#[test]
fn a_named_profile_runs_its_credential_process() {
    let (s, recorder, log) = process_setup(|_, _| "mode = \"default\"\nprofile = \"ops\"".into());
    let (python, script) = python_script("credproc.py");
    let aws_config = s.dir.path().join("aws-config");
    std::fs::write(
        &aws_config,
        format!(
            "[default]\nregion = us-east-1\n\n[profile ops]\ncredential_process = \"{}\" \"{}\" {} \"{}\"\n",
            python.display(),
            script.display(),
            shared_server(),
            log.display()
        ),
    )
    .unwrap();
    let want = s.drop_file("a.csv", b"signed by the profile's program\n");
    let env = [
        ("AWS_CONFIG_FILE", aws_config.to_str().unwrap()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials"),
    ];
    let daemon = s.launch(|log| Daemon::start_env(&s.config, log, &env));
    wait_for(WAIT, "delivered", || s.count("done") == 1);
    assert!(daemon.stop().success());
    assert_eq!(s.bucket.objects()["inbound/orders/a.csv"].sha256, want);
    let printed = runs(&log);
    assert!(!printed.is_empty(), "the profile's program ran");
    for write in s3_writes(&recorder) {
        assert!(printed.contains(&signing_key(&write)), "{write}");
    }
}

#[test]
fn assume_role_calls_sts_with_the_programs_credentials() {
    let (s, recorder, log) = process_setup(|sts, log| {
        format!(
            "mode = \"assume_role\"\nrole_arn = \"arn:aws:iam::123456789012:role/s3spool-upload\"\nsts_endpoint = \"{sts}\"\n{}",
            command(log, &[])
        )
    });
    s.drop_file("a.csv", b"role on top of a program\n");
    let daemon = s.start();
    wait_for(WAIT, "delivered", || s.count("done") == 1);
    assert!(daemon.stop().success());
    let printed = runs(&log);
    let calls = assume_role_calls(&recorder);
    assert!(!calls.is_empty());
    for call in &calls {
        assert!(
            printed.contains(&signing_key(call)),
            "AssumeRole signed by the program's key: {call}"
        );
    }
    for write in s3_writes(&recorder) {
        assert!(
            !printed.contains(&signing_key(&write)),
            "S3 is signed with the role's session, not the base: {write}"
        );
    }
}

#[test]
fn a_failing_or_garbage_program_is_a_clear_error_and_files_wait() {
    const SECRET: &str = "garbage-secret-never-shown";
    let (s, _recorder, log) =
        process_setup(|_, log| format!("mode = \"process\"\n{}", command(log, &["--fail"])));
    let check = s.cli(&["check"]);
    let text = output_text(&check);
    assert!(!check.status.success(), "{text}");
    let (python, _) = python_script("credproc.py");
    assert!(
        text.contains(&format!(
            "Credentials            FAILED: CredentialProcessFailed: credential program {} exited with exit status: 2: signing helper: certificate expired",
            python.display()
        )),
        "{text}"
    );

    s.edit_config(|t| t.replace("\"--fail\"", &format!("\"--garbage\", \"{SECRET}\"")));
    let check = s.cli(&["check"]);
    let text = output_text(&check);
    assert!(
        text.contains("printed no JSON credential document (EOF while parsing"),
        "{text}"
    );
    assert!(!text.contains(SECRET), "{text}");

    let want = s.drop_file("a.csv", b"waits for credentials\n");
    let daemon = s.start();
    wait_for(WAIT, "the destination held back", || {
        s.log_lines("holding its files back") > 0
    });
    wait_for(WAIT, "more runs than max_attempts", || {
        runs(&log).len() >= 6
    });
    assert_eq!(s.count("failed"), 0, "{:?}", s.failed_errors());

    s.edit_config(|t| t.replace(&format!(", \"--garbage\", \"{SECRET}\""), ""));
    daemon.signal_pid(libc::SIGHUP);
    wait_for(WAIT, "delivered once the program works", || {
        s.count("done") == 1
    });
    assert_eq!(s.bucket.objects()["inbound/orders/a.csv"].sha256, want);
    daemon.stop();
    s.assert_secret_nowhere(SECRET, &daemon_log(&s));
}

/// Issue 23, item 9: a credential program slower than `request_timeout` (4 s against 2 s).
/// Credentials are fetched on their own clock before a request's starts: the files go,
/// and no endpoint timeout is reported for the program's slowness.
#[test]
fn a_credential_program_slower_than_request_timeout_still_signs() {
    let (s, _recorder, log) =
        process_setup(|_, log| format!("mode = \"process\"\n{}", command(log, &["--sleep", "4"])));
    s.edit_config(|t| t.replace("request_timeout = \"30s\"", "request_timeout = \"2s\""));
    let daemon = s.start();
    s.drop_file("a.csv", b"signed after a slow helper");
    wait_for(WAIT, "delivered", || s.count("done") == 1);
    assert!(daemon.stop().success());
    assert_eq!(runs(&log).len(), 1, "one run, not one per timed-out try");
    let text = std::fs::read_to_string(daemon_log(&s)).unwrap();
    assert!(
        !text.contains("no answer within"),
        "an endpoint timeout was reported"
    );
}
