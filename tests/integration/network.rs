//! The networks on-premise hosts live in: an HTTP proxy (CONNECT) in front of the S3 and STS
//! endpoints, and a TLS front whose certificate comes from a private CA made by the test.
//!
//! The proxy and the TLS front are `tests/support/netfront.py`. Endpoint names ending in
//! `.test` resolve only inside the proxy, so a request that bypassed it could not connect.
//! They start with `localhost` because moto reads any other dotted host as a bucket name.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::*;
use crate::proxy::{FaultProxy, Mode};

const WAIT: Duration = Duration::from_secs(90);
const PROXY_USER: &str = "ops";
const PROXY_PASSWORD: &str = "pr0xy-pw-never-logged";

/// A netfront.py process, killed on drop.
struct Front {
    port: u16,
    log: PathBuf,
    child: Child,
}

impl Front {
    fn start(dir: &Path, args: &[&str]) -> Front {
        let port = free_port();
        let log = dir.join(format!("front-{port}.log"));
        let (python, script) = python_script("netfront.py");
        let mut command = Command::new(python);
        command.arg(script).arg(args[0]).arg(port.to_string());
        if args[0] == "proxy" {
            command.arg(&log);
        }
        command
            .args(&args[1..])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("front-{port}.err"))).unwrap());
        let child = command
            .spawn()
            .expect("python3 for tests/support/netfront.py");
        wait_for(
            Duration::from_secs(20),
            "the network front to listen",
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        Front { port, log, child }
    }

    /// A CONNECT proxy; with `auth`, it requires those Basic credentials.
    fn proxy(dir: &Path, auth: Option<&str>) -> Front {
        match auth {
            Some(auth) => Front::start(dir, &["proxy", "--auth", auth]),
            None => Front::start(dir, &["proxy"]),
        }
    }

    /// The CONNECT requests the proxy saw: `CONNECT host:port code authorization`.
    fn connects(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a server certificate it signed for 127.0.0.1 and `localhost-s3.test`.
struct TestCa {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (apt install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_ca() -> TestCa {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca_args = vec!["req", "-x509", "-days", "2", "-subj", "/CN=s3spool test CA"];
    ca_args.extend(ec);
    ca_args.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca_args);
    let mut req = vec!["req", "-subj", "/CN=localhost-s3.test"];
    req.extend(ec);
    req.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(dir, &req);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost-s3.test,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
    TestCa {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        _dir: tmp,
    }
}

fn port_of(endpoint: &str) -> u16 {
    endpoint.rsplit(':').next().unwrap().parse().unwrap()
}

/// Adds `lines` to `[destinations.lake]`.
fn destination_lines(s: &Setup, lines: &str) {
    s.edit_config(|text| {
        text.replace(
            "[destinations.lake]\n",
            &format!("[destinations.lake]\n{lines}\n"),
        )
    });
}

#[test]
fn s3_and_sts_requests_go_through_the_proxy_and_its_password_stays_secret() {
    let server = shared_server();
    let recorder = FaultProxy::start(server, Mode::Pass);
    let at = port_of(&recorder.endpoint());
    let mut o = Options::new(&format!("http://localhost-s3.test:{at}"));
    o.auth = Some(format!(
        "mode = \"assume_role\"\nrole_arn = \"arn:aws:iam::123456789012:role/s3spool-upload\"\nexternal_id = \"acme-ext-42\"\naccess_key_id = \"AKIABASEKEY0000001\"\nsecret_access_key = \"base-secret\"\nsts_endpoint = \"http://localhost-sts.test:{at}\""
    ));
    let s = Setup::new(o, Bucket::create(server));
    let proxy = authenticating_proxy(&s, PROXY_PASSWORD);
    let metrics = s.serve_metrics();
    let small = s.drop_file("a.csv", b"through the proxy\n");
    let large = s.drop_file("big.bin", &data(12 << 20, 5));
    let log = s.dir.path().join("daemon.log");
    let daemon = s.start();
    wait_for(WAIT, "both files delivered", || s.count("done") == 2);
    let scraped = scrape(metrics);
    assert!(scraped.contains("s3spool_"), "{scraped}");
    assert!(
        !scraped.contains(PROXY_PASSWORD),
        "no password in the metrics"
    );
    let objects = s.bucket.objects();
    assert_eq!(objects["inbound/orders/a.csv"].sha256, small);
    assert_eq!(objects["inbound/orders/big.bin"].sha256, large);

    let connects = proxy.connects();
    let s3 = format!("CONNECT localhost-s3.test:{at} 200");
    let sts = format!("CONNECT localhost-sts.test:{at} 200");
    assert!(connects.iter().any(|c| c.starts_with(&s3)), "{connects:?}");
    assert!(connects.iter().any(|c| c.starts_with(&sts)), "{connects:?}");
    assert!(
        connects.iter().all(|c| c.contains(" 200 Basic ")),
        "{connects:?}"
    );
    let recorded = recorder.recorded();
    assert!(recorded.iter().any(|r| r.contains("Action=AssumeRole")));
    assert!(recorded
        .iter()
        .any(|r| r.starts_with("PUT ") && r.contains("partNumber")));
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains(&format!(
            "proxy=http://127.0.0.1:{} from=\"proxy\"",
            proxy.port
        )) || log_text.contains(&format!("proxy=http://127.0.0.1:{} from=proxy", proxy.port)),
        "the log names the proxy"
    );

    let check = s.cli(&["check"]);
    let text = output_text(&check);
    assert!(check.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "through proxy http://127.0.0.1:{} from proxy",
            proxy.port
        )),
        "{text}"
    );
    daemon.stop();
    s.assert_secret_nowhere(PROXY_PASSWORD, &log);
    // Nor the Basic token the proxy was sent.
    let token = base64_basic(&format!("{PROXY_USER}:{PROXY_PASSWORD}"));
    s.assert_secret_nowhere(&token, &log);
}

/// A proxy that requires PROXY_USER:PROXY_PASSWORD, configured as the destination's
/// `proxy` with `password` (and `allow_http`, for the `.test` endpoints).
fn authenticating_proxy(s: &Setup, password: &str) -> Front {
    let proxy = Front::proxy(
        s.dir.path(),
        Some(&format!("{PROXY_USER}:{PROXY_PASSWORD}")),
    );
    destination_lines(
        s,
        &format!(
            "allow_http = true\nproxy = \"http://{PROXY_USER}:{password}@127.0.0.1:{}\"",
            proxy.port
        ),
    );
    proxy
}

/// Base64 of `text`, as in a `Proxy-Authorization: Basic` header.
fn base64_basic(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn the_environment_names_the_proxy_lower_case_first_and_no_proxy_and_loopback_bypass_it() {
    let server = shared_server();
    let at = port_of(server);
    let s = setup(|o| o.endpoint = format!("http://localhost-s3.test:{at}"));
    destination_lines(&s, "allow_http = true");
    let proxy = Front::proxy(s.dir.path(), None);
    let via = format!("http://127.0.0.1:{}", proxy.port);
    let want = s.drop_file("a.csv", b"via http_proxy\n");
    // Lower case wins, as in curl: the upper-case one points at a closed port.
    let env = [
        ("HTTP_PROXY", "http://127.0.0.1:1"),
        ("http_proxy", via.as_str()),
        ("NO_PROXY", "example.org"),
    ];
    let daemon = s.launch(|log| Daemon::start_env(&s.config, log, &env));
    wait_for(WAIT, "the file delivered through the proxy", || {
        s.count("done") == 1
    });
    assert_eq!(s.bucket.objects()["inbound/orders/a.csv"].sha256, want);
    daemon.stop();
    let through = proxy.connects().len();
    assert!(through > 0, "the proxy carried the requests");

    // NO_PROXY names the endpoint: s3spool goes direct, where the name does not resolve,
    // and the proxy sees nothing.
    // A proxy variable meant for another tool is ignored, and said.
    let exempt = [
        ("http_proxy", via.as_str()),
        ("no_proxy", ".test"),
        ("ALL_PROXY", "socks5://u:socks-pw@127.0.0.1:1"),
    ];
    let check = s.cli_env(&["check"], &exempt);
    let text = output_text(&check);
    assert!(!check.status.success(), "{text}");
    assert!(
        text.contains("note: the environment's ALL_PROXY is ignored for https:// endpoints (requests go direct): \"socks5://***@127.0.0.1:1\": socks5:// proxies are not supported"),
        "{text}"
    );
    assert!(!text.contains("through proxy"), "{text}");
    assert!(text.contains("ConnectionFailed"), "{text}");
    assert_eq!(
        proxy.connects().len(),
        through,
        "NO_PROXY bypassed the proxy"
    );

    // A loopback endpoint is always reached directly, whatever the environment says.
    s.edit_config(|text| {
        text.replace(
            &format!("localhost-s3.test:{at}"),
            &format!("127.0.0.1:{at}"),
        )
    });
    let want = s.drop_file("b.csv", b"direct\n");
    let env = [("http_proxy", via.as_str())];
    let daemon = s.launch(|log| Daemon::start_env(&s.config, log, &env));
    wait_for(WAIT, "the second file delivered directly", || {
        s.count("done") == 2
    });
    assert_eq!(s.bucket.objects()["inbound/orders/b.csv"].sha256, want);
    daemon.stop();
    assert_eq!(
        proxy.connects().len(),
        through,
        "loopback bypassed the proxy"
    );
}

#[test]
fn a_refusing_proxy_holds_files_back_and_check_says_so_plainly() {
    let server = shared_server();
    let at = port_of(server);
    let s = setup(|o| o.endpoint = format!("http://localhost-s3.test:{at}"));
    // The password is wrong: the proxy answers 407.
    let proxy = authenticating_proxy(&s, "wrong-pw");
    let check = s.cli(&["check"]);
    let text = output_text(&check);
    assert!(!check.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "FAILED: ProxyRefused: proxy http://127.0.0.1:{} (from proxy) refused the tunnel to localhost-s3.test:{at}: 407 Proxy Authentication Required",
            proxy.port
        )),
        "{text}"
    );
    assert!(!text.contains("wrong-pw"), "{text}");

    let want = s.drop_file("a.csv", b"waits for the proxy\n");
    let log = s.dir.path().join("daemon.log");
    let daemon = s.start();
    wait_for(WAIT, "the destination held back", || {
        s.log_lines("holding its files back") > 0
    });
    // More attempts than max_attempts (3) would allow a file: it is held, never failed.
    wait_for(WAIT, "several refused tunnels", || {
        proxy.connects().len() >= 4
    });
    assert_eq!(s.count("failed"), 0, "{:?}", s.failed_errors());
    assert_eq!(s.count("done"), 0);

    s.edit_config(|text| text.replace("wrong-pw", PROXY_PASSWORD));
    daemon.signal_pid(libc::SIGHUP);
    wait_for(
        WAIT,
        "the file delivered once the proxy lets it through",
        || s.count("done") == 1,
    );
    assert_eq!(s.bucket.objects()["inbound/orders/a.csv"].sha256, want);
    daemon.stop();
    s.assert_secret_nowhere(PROXY_PASSWORD, &log);
    s.assert_secret_nowhere("wrong-pw", &log);
}

#[test]
fn a_proxy_that_cannot_reach_the_endpoint_is_named_in_check_and_files_wait_it_out() {
    let server = shared_server();
    let s = setup(|o| o.endpoint = format!("http://localhost-s3.test:{}", port_of(server)));
    let proxy = Front::start(s.dir.path(), &["proxy", "--answer", "502"]);
    destination_lines(
        &s,
        &format!("allow_http = true\nproxy = \"127.0.0.1:{}\"", proxy.port),
    );
    let check = s.cli(&["check"]);
    let text = output_text(&check);
    assert!(!check.status.success(), "{text}");
    assert!(
        text.contains("FAILED: ConnectionFailed: ")
            && text.contains(&format!(
                "proxy http://127.0.0.1:{} (from proxy) could not reach localhost-s3.test:",
                proxy.port
            ))
            && text.contains("502 Bad Gateway"),
        "{text}"
    );

    // An outage behind the proxy, longer than the retry budget: held back, never failed,
    // delivered once a proxy gets through.
    let want = s.drop_file("a.csv", b"waits out the proxy's outage\n");
    let daemon = s.start();
    wait_for(WAIT, "the destination held back", || {
        s.log_lines("holding its files back") > 0
    });
    wait_for(WAIT, "more tunnels asked than max_attempts", || {
        proxy.connects().len() >= 5
    });
    assert_eq!(s.count("failed"), 0, "{:?}", s.failed_errors());
    let working = Front::proxy(s.dir.path(), None);
    s.edit_config(|t| {
        t.replace(
            &format!("127.0.0.1:{}", proxy.port),
            &format!("127.0.0.1:{}", working.port),
        )
    });
    daemon.signal_pid(libc::SIGHUP);
    wait_for(WAIT, "delivered through the working proxy", || {
        s.count("done") == 1
    });
    assert!(daemon.stop().success());
    let objects = s.bucket.objects();
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects["inbound/orders/a.csv"].sha256, want);
}

/// A TLS front to the shared server, with a certificate from a CA made here.
fn tls_setup(host: &str) -> (Setup, TestCa, Front) {
    let server = shared_server();
    let ca = make_ca();
    let front = Front::start(
        ca._dir.path(),
        &[
            "tls",
            ca.cert.to_str().unwrap(),
            ca.key.to_str().unwrap(),
            &port_of(server).to_string(),
        ],
    );
    let s = setup(|o| o.endpoint = format!("https://{host}:{}", front.port));
    (s, ca, front)
}

#[test]
fn an_untrusted_certificate_holds_files_back_until_ca_file_is_set() {
    let (s, ca, front) = tls_setup("127.0.0.1");
    let check = s.cli(&["check"]);
    let text = output_text(&check);
    assert!(!check.status.success(), "{text}");
    assert!(
        text.contains("FAILED: UntrustedCertificate: certificate of 127.0.0.1 not trusted (")
            && text.contains("): set ca_file or install the CA"),
        "{text}"
    );

    let want = s.drop_file("a.csv", b"behind a private CA\n");
    let daemon = s.start();
    wait_for(WAIT, "the destination held back", || {
        s.log_lines("holding its files back") > 0
    });
    wait_for(
        WAIT,
        "the error in the log, more often than max_attempts",
        || s.log_lines("certificate of 127.0.0.1 not trusted") >= 4,
    );
    assert_eq!(s.count("failed"), 0, "{:?}", s.failed_errors());

    destination_lines(&s, &format!("ca_file = {:?}", ca.ca.display().to_string()));
    daemon.signal_pid(libc::SIGHUP);
    wait_for(WAIT, "the file delivered once the CA is trusted", || {
        s.count("done") == 1
    });
    assert_eq!(s.bucket.objects()["inbound/orders/a.csv"].sha256, want);
    let check = s.cli(&["check"]);
    assert!(check.status.success(), "{}", output_text(&check));
    daemon.stop();

    // A name the certificate was not issued for: said as such, with what to do.
    s.edit_config(|t| t.replace("https://127.0.0.1:", "https://localhost:"));
    let check = s.cli(&["check"]);
    let text = output_text(&check);
    assert!(
        text.contains("FAILED: UntrustedCertificate: certificate of localhost does not name localhost (hostname mismatch): put a name or address the certificate was issued for in the endpoint"),
        "{text}"
    );
    drop(front);
}

#[test]
fn tls_with_a_private_ca_works_through_the_proxy() {
    let (s, ca, front) = tls_setup("localhost-s3.test");
    let proxy = Front::proxy(s.dir.path(), None);
    destination_lines(
        &s,
        &format!(
            "ca_file = {:?}\nproxy = \"http://127.0.0.1:{}\"",
            ca.ca.display().to_string(),
            proxy.port
        ),
    );
    let small = s.drop_file("a.csv", b"TLS inside CONNECT\n");
    let large = s.drop_file("big.bin", &data(11 << 20, 8));
    let daemon = s.start();
    wait_for(WAIT, "both files delivered", || s.count("done") == 2);
    let objects = s.bucket.objects();
    assert_eq!(objects["inbound/orders/a.csv"].sha256, small);
    assert_eq!(objects["inbound/orders/big.bin"].sha256, large);
    daemon.stop();
    let tunnel = format!("CONNECT localhost-s3.test:{} 200", front.port);
    assert!(
        proxy.connects().iter().any(|c| c.starts_with(&tunnel)),
        "{:?}",
        proxy.connects()
    );
}
