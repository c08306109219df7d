//! The journal's native protocol (<https://systemd.io/JOURNAL_NATIVE_PROTOCOL/>): under
//! systemd, each event is one datagram to journald with its priority, its message and each
//! field as a journal field, so `journalctl -u s3spool SPOOL=orders` finds a spool's lines
//! and `journalctl -p warning` filters by level, in text and JSON mode alike.
//!
//! An entry the socket refuses (journald gone or restarting, an entry too big for a
//! datagram) is written to stderr instead, which journald also reads. One it cannot take
//! now (its queue full: the stream behind stderr would block too) is dropped and counted,
//! and the next entry that goes through says how many: logging never stalls delivery.

use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::line::{is_ours, priority, Fields};
use super::LogFormat;

/// Where journald listens for native entries.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// Whether stderr is the journal's stream for this process: `$JOURNAL_STREAM` names the
/// device and inode systemd connected, and a redirected stderr no longer matches.
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    rustix::fs::fstat(std::io::stderr()).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

/// Sends each event to journald as a native entry.
pub struct JournalLayer {
    socket: UnixDatagram,
    path: PathBuf,
    format: LogFormat,
    /// Entries dropped since the last one journald took.
    dropped: AtomicU64,
}

impl JournalLayer {
    /// A layer sending to `path`, if a datagram socket can be made (a probe entry is not
    /// sent: journald may be slow to start, and each event falls back on its own).
    pub fn new(path: &Path, format: LogFormat) -> std::io::Result<JournalLayer> {
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(JournalLayer {
            socket,
            path: path.to_path_buf(),
            format,
            dropped: AtomicU64::new(0),
        })
    }
}

impl<S: Subscriber> Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let fields = Fields::of(event);
        let message = match self.format {
            LogFormat::Text => fields.logfmt(meta.target()),
            LogFormat::Json => {
                let now = crate::clock::now().format("%Y-%m-%dT%H:%M:%S%.6fZ");
                fields.json(*meta.level(), meta.target(), &now.to_string())
            }
        };
        let priority = priority(*meta.level());
        let mut entry = entry(&message, priority, meta.target(), &fields);
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            put(&mut entry, "S3SPOOL_DROPPED_BEFORE", &dropped.to_string());
        }
        match self.socket.send_to(&entry, &self.path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.dropped.fetch_add(dropped + 1, Ordering::Relaxed);
            }
            Err(_) => {
                if dropped > 0 {
                    let _ = writeln!(
                        std::io::stderr().lock(),
                        "<4>msg=\"log entries dropped: the journal was full\" count={dropped}"
                    );
                }
                let _ = writeln!(std::io::stderr().lock(), "<{priority}>{message}");
            }
        }
    }
}

/// One native entry: `NAME=value\n` per field, or the length-prefixed form for a value
/// holding a newline.
fn entry(message: &str, priority: u8, target: &str, fields: &Fields) -> Vec<u8> {
    let mut entry = Vec::with_capacity(256 + message.len());
    put(&mut entry, "MESSAGE", message);
    put(&mut entry, "PRIORITY", &priority.to_string());
    put(&mut entry, "SYSLOG_IDENTIFIER", "s3spool");
    let target = fields.target(target);
    if !is_ours(target) {
        put(&mut entry, "TARGET", target);
    }
    for (name, value) in &fields.fields {
        let Some(name) = field_name(name) else {
            continue;
        };
        match value {
            serde_json::Value::String(text) => put(&mut entry, &name, text),
            other => put(&mut entry, &name, &other.to_string()),
        }
    }
    entry
}

fn put(entry: &mut Vec<u8>, name: &str, value: &str) {
    entry.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        entry.push(b'\n');
        entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        entry.push(b'=');
    }
    entry.extend_from_slice(value.as_bytes());
    entry.push(b'\n');
}

/// A field's journal name: upper case, `[A-Z0-9_]`, not starting with `_` (journald's
/// own) nor a digit, at most 64 bytes. A field that would shadow one this layer sets is
/// prefixed `FIELD_`; `None` when nothing usable is left.
fn field_name(name: &str) -> Option<String> {
    let mut out: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' => c.to_ascii_uppercase(),
            'A'..='Z' | '0'..='9' => c,
            _ => '_',
        })
        .collect();
    let leading = out.len()
        - out
            .trim_start_matches(['_', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
            .len();
    out.drain(..leading);
    // The journal's own meanings (systemd.journal-fields(7)) and the ones set here.
    let reserved = matches!(
        out.as_str(),
        "MESSAGE"
            | "MESSAGE_ID"
            | "PRIORITY"
            | "TARGET"
            | "ERRNO"
            | "INVOCATION_ID"
            | "USER_INVOCATION_ID"
            | "DOCUMENTATION"
            | "TID"
            | "UNIT"
            | "USER_UNIT"
    ) || ["SYSLOG_", "CODE_", "S3SPOOL_", "OBJECT_", "COREDUMP_"]
        .iter()
        .any(|prefix| out.starts_with(prefix));
    if reserved {
        out.insert_str(0, "FIELD_");
    }
    out.truncate(64);
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads an entry back as journald does.
    fn parse(mut entry: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while !entry.is_empty() {
            let end = entry
                .iter()
                .position(|b| *b == b'\n' || *b == b'=')
                .unwrap();
            let name = String::from_utf8(entry[..end].to_vec()).unwrap();
            if entry[end] == b'=' {
                let rest = &entry[end + 1..];
                let nl = rest.iter().position(|b| *b == b'\n').unwrap();
                out.push((name, String::from_utf8(rest[..nl].to_vec()).unwrap()));
                entry = &rest[nl + 1..];
            } else {
                let len = u64::from_le_bytes(entry[end + 1..end + 9].try_into().unwrap()) as usize;
                let value = &entry[end + 9..end + 9 + len];
                assert_eq!(entry[end + 9 + len], b'\n');
                out.push((name, String::from_utf8(value.to_vec()).unwrap()));
                entry = &entry[end + 10 + len..];
            }
        }
        out
    }

    #[test]
    fn an_entry_carries_priority_message_and_fields_and_a_newline_survives() {
        let fields = Fields {
            message: Some("upload failed; will retry".into()),
            fields: vec![
                ("spool", "orders".into()),
                ("error", "first\nsecond".into()),
                ("bytes", 7.into()),
                ("priority", "shadowed".into()),
                ("_trusted", "no".into()),
            ],
            log_target: None,
        };
        let message = fields.logfmt("s3spool::upload");
        let parsed = parse(&entry(&message, 4, "s3spool::upload", &fields));
        let get = |name: &str| {
            parsed
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("PRIORITY"), Some("4"));
        assert_eq!(get("SYSLOG_IDENTIFIER"), Some("s3spool"));
        assert_eq!(get("SPOOL"), Some("orders"));
        assert_eq!(get("ERROR"), Some("first\nsecond"));
        assert_eq!(get("BYTES"), Some("7"));
        assert_eq!(get("FIELD_PRIORITY"), Some("shadowed"));
        assert_eq!(get("TRUSTED"), Some("no"));
        assert!(get("TARGET").is_none(), "our own events need no target");
        assert!(get("MESSAGE")
            .unwrap()
            .starts_with("msg=\"upload failed; will retry\" spool=orders"));
    }

    #[test]
    fn a_full_journal_drops_entries_without_waiting_and_the_next_one_counts_them() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sock");
        let journal = UnixDatagram::bind(&path).unwrap();
        journal.set_nonblocking(true).unwrap();
        let layer = JournalLayer::new(&path, LogFormat::Text).unwrap();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            // Nobody reads: the socket's queue fills, and sending never blocks.
            for i in 0..2000 {
                tracing::info!(i, "filling");
            }
            let mut taken = 0;
            let mut buf = vec![0u8; 64 * 1024];
            while journal.recv(&mut buf).is_ok() {
                taken += 1;
            }
            assert!(taken < 2000, "some were dropped: {taken}");
            tracing::info!("after");
            let n = journal.recv(&mut buf).unwrap();
            let entry = parse(&buf[..n]);
            let dropped: u64 = entry
                .iter()
                .find(|(name, _)| name == "S3SPOOL_DROPPED_BEFORE")
                .map(|(_, v)| v.parse().unwrap())
                .expect("the count of dropped entries");
            assert_eq!(dropped + taken, 2000);
        });
    }

    #[test]
    fn names_are_made_safe_for_the_journal() {
        assert_eq!(field_name("spool").as_deref(), Some("SPOOL"));
        assert_eq!(field_name("http.status").as_deref(), Some("HTTP_STATUS"));
        assert_eq!(field_name("9lives").as_deref(), Some("LIVES"));
        assert_eq!(field_name("message").as_deref(), Some("FIELD_MESSAGE"));
        assert_eq!(field_name("code_line").as_deref(), Some("FIELD_CODE_LINE"));
        assert_eq!(field_name("errno").as_deref(), Some("FIELD_ERRNO"));
        assert_eq!(field_name("___"), None);
        assert_eq!(field_name(&"x".repeat(80)).map(|n| n.len()), Some(64));
    }
}
