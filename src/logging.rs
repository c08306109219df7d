//! Log output: one line per event on stderr, in the shape the reader wants.
//!
//! - In a terminal or a file: a UTC timestamp, the level, the fields, then the message.
//! - Under systemd (`JOURNAL_STREAM` set): no timestamp (journald adds its own), no colour,
//!   and a `<N>` syslog priority prefix so `journalctl -p warning` filters by level.
//! - `log_format = "json"`: one JSON object per line, fields at the top level, for shippers.
//!
//! Fields come first and messages are constant ("delivered", "upload failed; will retry"),
//! so lines can be grepped by message and parsed by field.

use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber; the level comes from `S3SPOOL_LOG` (default `info`).
/// Installs the log subscriber. The level: `level` (from `run -v` or `--log-level`), else
/// `$S3SPOOL_LOG`, else `$RUST_LOG`, else `info`.
pub fn init(format: LogFormat, level: Option<&str>) {
    let filter = level
        .and_then(|level| EnvFilter::try_new(level).ok())
        .or_else(|| EnvFilter::try_from_env("S3SPOOL_LOG").ok())
        .or_else(|| EnvFilter::try_from_env("RUST_LOG").ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // No colour codes: journald and files would keep them as text.
        .with_ansi(false);
    let installed = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder
            .event_format(TextLine {
                journald: std::env::var_os("JOURNAL_STREAM").is_some(),
            })
            .try_init(),
    };
    // Already installed (a test calling twice): keep the first.
    let _ = installed;
}

/// The text line: `TIME LEVEL key=value … message`, or `<N>key=value … message` for journald.
struct TextLine {
    journald: bool,
}

/// The syslog priority journald reads from a `<N>` prefix.
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let level = *meta.level();
        if self.journald {
            write!(writer, "<{}>", priority(level))?;
        } else {
            let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
            write!(writer, "{now} {level:>5} ")?;
        }
        // Other crates' events say where they come from; ours are known by their message.
        if !meta.target().starts_with("s3spool") {
            write!(writer, "{}: ", meta.target())?;
        }
        let mut line = Line::default();
        event.record(&mut line);
        writeln!(writer, "{}{}", line.fields, line.message)
    }
}

/// Collects an event's fields as `key=value ` and its message.
#[derive(Default)]
struct Line {
    fields: String,
    message: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            // One event, one line: a multi-line message (another crate's) stays on its line.
            self.message
                .push_str(&value.replace('\r', "\\r").replace('\n', "\\n"));
        } else if value.is_empty() || value.contains([' ', '"', '=', '\n', '\r']) {
            let _ = write!(self.fields, "{}={value:?} ", field.name());
        } else {
            let _ = write!(self.fields, "{}={value} ", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}
