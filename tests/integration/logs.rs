//! Log lines as their readers take them: a logfmt parser (the `logfmt` package) on the
//! text lines, a JSON parser on `log_format = "json"`, and, under systemd, the journal's
//! native protocol read from a datagram socket the way journald reads it.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

/// A file name with what a logfmt reader could split on: a space, quotes, `=`.
const AWKWARD: &str = "a b=\"c\".csv";

/// The log file's lines, as the `logfmt` package parses them.
fn logfmt_lines(path: &Path) -> Vec<HashMap<String, serde_json::Value>> {
    let (python, script) = python_script("logfmt_read.py");
    let out = Command::new(python).arg(script).arg(path).output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn text_lines_are_logfmt_that_a_parser_reads_field_by_field() {
    let server = shared_server();
    let s = Setup::new(Options::new(server), Bucket::create(server));
    // A JOURNAL_STREAM that is not this stderr (a redirected service): plain lines. At
    // info, as a service runs: the `logfmt` package reads no escape but `\"`, and other
    // crates' debug lines carry `\n`.
    let daemon = s.launch(|log| {
        Daemon::start_env(
            &s.config,
            log,
            &[("JOURNAL_STREAM", "8:12345"), ("S3SPOOL_LOG", "info")],
        )
    });
    s.drop_file(AWKWARD, b"x\n");
    wait_for(WAIT, "delivered", || s.count("done") == 1);
    assert!(daemon.stop().success());
    let log_path = s.dir.path().join("daemon.log");
    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines = logfmt_lines(&log_path);
    assert_eq!(lines.len(), text.lines().count(), "one event, one line");
    for line in &lines {
        for key in ["time", "level", "msg"] {
            assert!(line[key].is_string(), "{key} in {line:?}\n{text}");
        }
    }
    assert!(!text.contains("\u{1b}["), "no colour codes");
    let delivered = lines
        .iter()
        .find(|l| l["msg"] == "delivered")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(delivered["level"], "info");
    assert_eq!(delivered["spool"], "orders");
    assert_eq!(delivered["key"], format!("inbound/orders/{AWKWARD}"));
    assert_eq!(delivered["bytes"], "2");
    assert!(
        lines.iter().any(|l| l["msg"] == "s3spool running"),
        "{text}"
    );
}

#[test]
fn json_lines_carry_the_fields_at_the_top_level() {
    let server = shared_server();
    let s = Setup::new(Options::new(server), Bucket::create(server));
    s.add_top_level("log_format = \"json\"");
    let daemon = s.start();
    s.drop_file("b.csv", b"y\n");
    wait_for(WAIT, "delivered", || s.count("done") == 1);
    assert!(daemon.stop().success());
    let text = std::fs::read_to_string(s.dir.path().join("daemon.log")).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let delivered = events
        .iter()
        .find(|e| e["message"] == "delivered")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(delivered["level"], "INFO");
    assert_eq!(delivered["spool"], "orders");
    assert_eq!(delivered["key"], "inbound/orders/b.csv");
    assert!(delivered["timestamp"].is_string());
}

/// A stand-in for journald's native socket: every entry, parsed as journald parses it.
struct JournalSocket {
    path: PathBuf,
    entries: Arc<Mutex<Vec<HashMap<String, String>>>>,
}

impl JournalSocket {
    fn bind(dir: &Path) -> JournalSocket {
        let path = dir.join("journal.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let entries = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&entries);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            while let Ok(n) = socket.recv(&mut buf) {
                sink.lock().unwrap().push(parse_entry(&buf[..n]));
            }
        });
        JournalSocket { path, entries }
    }

    fn entries(&self) -> Vec<HashMap<String, String>> {
        self.entries.lock().unwrap().clone()
    }

    /// The first entry `pick` accepts, waiting for it (every message so far if none comes).
    fn find(
        &self,
        what: &str,
        pick: impl Fn(&HashMap<String, String>) -> bool,
    ) -> HashMap<String, String> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let entries = self.entries();
            if let Some(found) = entries.iter().find(|e| pick(e)) {
                return found.clone();
            }
            if std::time::Instant::now() > deadline {
                let seen: Vec<String> = entries
                    .iter()
                    .map(|e| format!("<{}>{}", e["PRIORITY"], e["MESSAGE"]))
                    .collect();
                panic!("no entry for {what} in the journal:\n{}", seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the daemon as systemd does with `StandardError=journal`: stderr is the
    /// stream `JOURNAL_STREAM` names (here the log file, by its device and inode).
    fn start_daemon(&self, s: &Setup, log: &Path) -> Daemon {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let meta = std::fs::metadata(log).unwrap();
        let stream = format!("{}:{}", meta.dev(), meta.ino());
        let socket = self.path.to_str().unwrap();
        Daemon::start_env(
            &s.config,
            log,
            &[
                ("JOURNAL_STREAM", &stream),
                ("S3SPOOL_JOURNAL_SOCKET", socket),
                // A journal that cannot keep up loses entries (the daemon never blocks on
                // it, as on journald's socket). At debug level each request is a burst of
                // rusoto's lines, and on a loaded machine this reader thread fell behind
                // one and the warning a test waited for was lost. The tests read info and
                // warnings.
                ("S3SPOOL_LOG", "info"),
            ],
        )
    }
}

/// One native entry: `NAME=value\n`, or `NAME\n` + 64-bit little-endian length + value + `\n`.
fn parse_entry(mut data: &[u8]) -> HashMap<String, String> {
    let mut entry = HashMap::new();
    while !data.is_empty() {
        let end = data.iter().position(|b| *b == b'\n' || *b == b'=').unwrap();
        let name = String::from_utf8(data[..end].to_vec()).unwrap();
        let (value, rest) = if data[end] == b'=' {
            let rest = &data[end + 1..];
            let nl = rest.iter().position(|b| *b == b'\n').unwrap();
            (&rest[..nl], &rest[nl + 1..])
        } else {
            let len = u64::from_le_bytes(data[end + 1..end + 9].try_into().unwrap()) as usize;
            (&data[end + 9..end + 9 + len], &data[end + 10 + len..])
        };
        entry.insert(name, String::from_utf8(value.to_vec()).unwrap());
        data = rest;
    }
    entry
}

#[test]
fn under_journald_each_field_is_a_journal_field_with_the_right_priority_in_text_and_json() {
    let server = shared_server();
    let s = Setup::new(Options::new(server), Bucket::create(server));
    let journal = JournalSocket::bind(s.dir.path());
    let log = s.dir.path().join("daemon.log");

    let daemon = journal.start_daemon(&s, &log);
    journal.find("running", |e| e["MESSAGE"].contains("s3spool running"));
    s.drop_file("a.csv", b"x\n");
    s.drop_file("bad\u{1}name.csv", b"y\n");
    let delivered = journal.find("delivered", |e| e["MESSAGE"].starts_with("msg=delivered "));
    assert_eq!(delivered["PRIORITY"], "6", "{delivered:?}");
    assert_eq!(delivered["SPOOL"], "orders");
    assert_eq!(delivered["KEY"], "inbound/orders/a.csv");
    assert_eq!(delivered["BYTES"], "2");
    assert_eq!(delivered["SYSLOG_IDENTIFIER"], "s3spool");
    assert!(
        delivered["MESSAGE"].contains(" spool=orders "),
        "the message is the logfmt line: {delivered:?}"
    );
    let refused = journal.find("refused", |e| {
        e["MESSAGE"].starts_with("msg=\"file cannot be delivered")
    });
    assert_eq!(refused["PRIORITY"], "4", "a warning: {refused:?}");
    assert_eq!(refused["SPOOL"], "orders");
    assert_eq!(
        refused["PATH"], "bad\u{1}name.csv",
        "the journal takes any byte"
    );
    assert!(daemon.stop().success());
    // journalctl SPOOL=orders: every entry of a spool carries the field.
    let entries = journal.entries();
    assert!(
        entries
            .iter()
            .filter(|e| e.get("SPOOL").is_some_and(|s| s == "orders"))
            .count()
            >= 2
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("delivered"),
        "each line once, in the journal, not also on stderr: {text}"
    );

    // JSON mode: the object is the message, and the priority still follows the level.
    s.add_top_level("log_format = \"json\"");
    let daemon = journal.start_daemon(&s, &log);
    let before = journal.entries().len();
    s.drop_file("c.csv", b"z\n");
    s.drop_file("worse\u{2}name.csv", b"w\n");
    let is_json_with = |e: &HashMap<String, String>, message: &str| {
        serde_json::from_str::<serde_json::Value>(&e["MESSAGE"]).is_ok_and(|m| {
            m["message"]
                .as_str()
                .is_some_and(|t| t.starts_with(message))
        })
    };
    let delivered = journal.find("delivered, in JSON", |e| {
        is_json_with(e, "delivered") && e.get("KEY").is_some_and(|k| k.ends_with("c.csv"))
    });
    assert_eq!(delivered["PRIORITY"], "6");
    assert_eq!(delivered["SPOOL"], "orders");
    let object: serde_json::Value = serde_json::from_str(&delivered["MESSAGE"]).unwrap();
    assert_eq!(object["level"], "INFO");
    assert_eq!(object["key"], "inbound/orders/c.csv");
    let refused = journal.find("refused, in JSON", |e| {
        is_json_with(e, "file cannot be delivered") && e["MESSAGE"].contains("worse")
    });
    assert_eq!(refused["PRIORITY"], "4");
    assert!(journal.entries().len() > before);
    assert!(daemon.stop().success());

    // No journal socket to reach: the lines go to stderr with a priority prefix.
    std::fs::remove_file(&journal.path).unwrap();
    std::fs::remove_file(&log).unwrap();
    std::fs::write(&log, "").unwrap();
    s.edit_config(|c| c.replace("log_format = \"json\"\n", ""));
    let daemon = s.launch(|log| journal.start_daemon(&s, log));
    s.drop_file("d.csv", b"d\n");
    wait_for(WAIT, "delivered", || s.count("done") == 3);
    assert!(daemon.stop().success());
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("<6>msg=delivered "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains(" spool=orders "), "{line}");
    assert!(text.lines().all(|l| l.starts_with('<')), "{text}");
}
