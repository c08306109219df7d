//! Running under systemd: notifications on `NOTIFY_SOCKET`, read from a datagram socket
//! the way systemd reads them.

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

/// A stand-in for systemd's notification socket: every datagram, in order.
struct NotifySocket {
    path: std::path::PathBuf,
    messages: Arc<Mutex<Vec<String>>>,
}

impl NotifySocket {
    fn bind(dir: &std::path::Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&messages);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        NotifySocket { path, messages }
    }

    /// Starts the daemon as systemd would: this socket, a 1s watchdog.
    fn start_daemon(&self, s: &Setup) -> Daemon {
        let notify = self.path.to_str().unwrap().to_string();
        s.launch(|log| {
            Daemon::start_env(
                &s.config,
                log,
                &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "1000000")],
            )
        })
    }

    fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Index of the first message with `field` at or after `from`.
    fn find(&self, field: &str, from: usize) -> Option<usize> {
        self.messages()
            .iter()
            .skip(from)
            .position(|m| m.lines().any(|l| l == field || l.starts_with(field)))
            .map(|i| i + from)
    }
}

#[test]
fn systemd_hears_ready_status_watchdog_and_stopping_in_order() {
    let server = shared_server();
    let s = Setup::new(Options::new(server), Bucket::create(server));
    let socket = NotifySocket::bind(s.dir.path());
    let daemon = socket.start_daemon(&s);
    let ready = socket.find("READY=1", 0).expect("READY=1 once running");
    assert!(
        socket.messages()[ready].contains("STATUS=0 pending, 0 uploading"),
        "{:?}",
        socket.messages()
    );
    s.drop_file("a.csv", b"x,y\n");
    wait_for(WAIT, "delivered", || s.count("done") == 1);
    wait_for(WAIT, "a status after the upload", || {
        socket
            .messages()
            .iter()
            .any(|m| m.contains("STATUS=0 pending, 0 uploading, last upload"))
    });
    let first_watchdog = socket.find("WATCHDOG=1", ready).expect("fed at half of 1s");
    wait_for(WAIT, "the watchdog fed again", || {
        socket.find("WATCHDOG=1", first_watchdog + 1).is_some()
    });
    assert!(daemon.stop().success());
    let stopping = socket
        .find("STOPPING=1", ready)
        .expect("STOPPING=1 on stop");
    assert!(first_watchdog > ready && stopping > first_watchdog);
    let messages = socket.messages();
    assert!(
        messages[stopping..].iter().all(|m| !m.contains("READY=1")),
        "{messages:?}"
    );
    assert_eq!(
        messages.iter().filter(|m| m.contains("READY=1")).count(),
        1,
        "{messages:?}"
    );
}

#[test]
fn the_watchdog_goes_unfed_while_the_queue_does_not_answer() {
    let server = shared_server();
    let s = Setup::new(Options::new(server), Bucket::create(server));
    let socket = NotifySocket::bind(s.dir.path());
    let daemon = socket.start_daemon(&s);
    let fed = || {
        socket
            .messages()
            .iter()
            .filter(|m| m.contains("WATCHDOG=1"))
            .count()
    };
    wait_for(WAIT, "the watchdog fed", || fed() >= 2);
    // Another process holds the queue's write lock, as a stuck writer would: the daemon's
    // claims wait for it (busy timeout 10s) and its loop stops turning.
    let db = s.dir.path().join("state/queue.db");
    let mut locker = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN IMMEDIATE')\n\
             c.execute('CREATE TABLE IF NOT EXISTS lock_probe (x)')\n\
             print('locked', flush=True)\n\
             time.sleep(30)\n",
        )
        .arg(&db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(locker.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    // Let a feed already under way land, then count: none for several intervals.
    std::thread::sleep(Duration::from_secs(8));
    let before = fed();
    std::thread::sleep(Duration::from_secs(6));
    let during = fed() - before;
    let _ = locker.kill();
    let _ = locker.wait();
    wait_for(WAIT, "fed again once the queue answers", || {
        fed() > before + during
    });
    assert!(daemon.stop().success());
    assert_eq!(during, 0, "no WATCHDOG=1 while the queue was locked");
    let log = std::fs::read_to_string(s.dir.path().join("daemon.log")).unwrap();
    assert!(log.contains("the watchdog is not fed"), "the log says why");
}

#[test]
fn a_metrics_scrape_matches_the_queue() {
    let server = shared_server();
    let s = Setup::new(Options::new(server), Bucket::create(server));
    let port = s.serve_metrics();
    s.drop_file("a.csv", &[b'a'; 10]);
    s.drop_file("b.csv", &[b'b'; 20]);
    s.drop_file("c.csv", &[b'c'; 30]);
    // A name S3 keys cannot carry: the file fails at once, with the reason.
    s.drop_file("bad\u{1}name.csv", b"x");
    let daemon = s.start();
    wait_for(WAIT, "three delivered, one failed", || {
        s.count("done") == 3 && s.count("failed") == 1
    });
    let body = scrape(port);
    assert!(daemon.stop().success());

    let orders = "{spool=\"orders\"}";
    assert_eq!(
        metric_value(&body, &format!("s3spool_files_delivered_total{orders}")),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        metric_value(&body, &format!("s3spool_delivered_bytes_total{orders}")),
        Some(60.0)
    );
    assert_eq!(
        metric_value(
            &body,
            &format!("s3spool_upload_duration_seconds_count{orders}")
        ),
        Some(3.0)
    );
    let status = s.status();
    assert_eq!(
        metric_value(
            &body,
            "s3spool_queue_files{spool=\"orders\",state=\"failed\"}"
        ),
        status["counts"]["failed"].as_f64(),
        "{body}"
    );
    assert_eq!(
        metric_value(
            &body,
            "s3spool_queue_files{spool=\"orders\",state=\"pending\"}"
        ),
        status["counts"]["pending"].as_f64(),
        "zeros are there too: {body}"
    );
    assert_eq!(
        metric_value(&body, "s3spool_oldest_waiting_seconds{spool=\"orders\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric_value(&body, "s3spool_waiting_bytes{spool=\"orders\"}"),
        Some(0.0),
        "nothing waits: {body}"
    );
    assert!(
        !body.contains("s3spool_credentials_expiry_timestamp_seconds{"),
        "static keys do not expire"
    );
}

/// The metric families a scrape exports, by their `# TYPE` lines.
fn families(body: &str) -> Vec<String> {
    let mut names: Vec<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn every_series_is_there_at_zero_before_the_first_file_under_conventional_names() {
    let server = shared_server();
    let s = Setup::new(Options::new(server), Bucket::create(server));
    let port = s.serve_metrics();
    let daemon = s.start();
    wait_for(WAIT, "metrics served", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let body = scrape(port);
    // The families, as Prometheus reads them (OpenMetrics TYPE lines drop `_total` and
    // `_info`): names by the conventions, unit before `_total`, timestamps in seconds.
    // (`s3spool_next_batch_timestamp_seconds` is there only for spools with a cadence.)
    assert_eq!(
        families(&body),
        [
            "s3spool_attempt_errors",
            "s3spool_build",
            "s3spool_delivered_bytes",
            "s3spool_files_delivered",
            "s3spool_held_back",
            "s3spool_last_success_timestamp_seconds",
            "s3spool_oldest_waiting_seconds",
            "s3spool_queue_bytes",
            "s3spool_queue_files",
            "s3spool_queue_oldest_row_timestamp_seconds",
            "s3spool_upload_duration_seconds",
            "s3spool_waiting_bytes",
            "s3spool_window_open",
            "s3spool_window_opens_timestamp_seconds",
        ],
        "{body}"
    );
    let version = env!("CARGO_PKG_VERSION");
    let zero = [
        "s3spool_files_delivered_total{spool=\"orders\"}".to_string(),
        "s3spool_delivered_bytes_total{spool=\"orders\"}".to_string(),
        "s3spool_upload_duration_seconds_count{spool=\"orders\"}".to_string(),
        "s3spool_upload_duration_seconds_sum{spool=\"orders\"}".to_string(),
        "s3spool_attempt_errors_total{destination=\"lake\",class=\"transient\"}".to_string(),
        "s3spool_attempt_errors_total{destination=\"lake\",class=\"permanent\"}".to_string(),
        "s3spool_queue_files{spool=\"orders\",state=\"pending\"}".to_string(),
        "s3spool_queue_files{spool=\"orders\",state=\"active\"}".to_string(),
        "s3spool_queue_files{spool=\"orders\",state=\"failed\"}".to_string(),
        "s3spool_waiting_bytes{spool=\"orders\"}".to_string(),
        "s3spool_oldest_waiting_seconds{spool=\"orders\"}".to_string(),
        "s3spool_last_success_timestamp_seconds{destination=\"lake\"}".to_string(),
        "s3spool_held_back{cause=\"disk\"}".to_string(),
        "s3spool_held_back{cause=\"destination:lake\"}".to_string(),
        "s3spool_held_back{cause=\"spool:orders\"}".to_string(),
    ];
    for series in &zero {
        assert_eq!(metric_value(&body, series), Some(0.0), "{series} in {body}");
    }
    assert_eq!(
        metric_value(
            &body,
            &format!("s3spool_build_info{{version=\"{version}\"}}")
        ),
        Some(1.0),
        "{body}"
    );

    // Paused, a file waits: its bytes are counted by spool.
    assert!(s.cli(&["pause", "orders"]).status.success());
    s.drop_file("a.csv", &[b'a'; 40]);
    wait_for(WAIT, "queued", || s.count("pending") == 1);
    let body = scrape(port);
    assert_eq!(
        metric_value(&body, "s3spool_waiting_bytes{spool=\"orders\"}"),
        Some(40.0),
        "{body}"
    );
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(s.cli(&["resume", "orders"]).status.success());
    wait_for(WAIT, "delivered", || s.count("done") == 1);
    let body = scrape(port);
    let last = metric_value(
        &body,
        "s3spool_last_success_timestamp_seconds{destination=\"lake\"}",
    )
    .unwrap();
    assert!(
        last >= before - 1.0 && last <= before + 120.0,
        "{last} vs {before}"
    );
    assert!(daemon.stop().success());

    // A restart knows the last delivery from the queue: no false stall alert.
    let daemon = s.start();
    wait_for(WAIT, "metrics served", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let again = metric_value(
        &scrape(port),
        "s3spool_last_success_timestamp_seconds{destination=\"lake\"}",
    );
    assert!(daemon.stop().success());
    let again = again.expect("the last success after a restart");
    assert!((again - last).abs() < 1.0, "{again} vs {last}");
}
