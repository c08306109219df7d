//! Log output: one line per event, in the shape the reader wants.
//!
//! - In a terminal or a file: a logfmt line, `time=… level=info msg=delivered spool=orders
//!   key=…`, which logfmt parsers read as it is.
//! - Under systemd (stderr is `$JOURNAL_STREAM`): native journal entries, with each field
//!   a journal field and the priority set from the level ([`journal`]). If no journal
//!   socket can be made, the same line without time, after a `<N>` priority prefix.
//! - `log_format = "json"`: one JSON object per line, fields at the top level, for
//!   shippers; under systemd, that object is the entry's message.
//!
//! Messages are constant ("delivered", "upload failed; will retry") and the facts are in
//! fields, so lines can be grepped by message and parsed by field.

mod journal;
mod line;

use std::fmt;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

use line::{level_word, priority, Fields};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the log subscriber. The level: `level` (from `run -v` or `--log-level`), else
/// `$S3SPOOL_LOG`, else `$RUST_LOG`, else `info`.
pub fn init(format: LogFormat, level: Option<&str>) {
    let filter = || {
        level
            .and_then(|level| EnvFilter::try_new(level).ok())
            .or_else(|| EnvFilter::try_from_env("S3SPOOL_LOG").ok())
            .or_else(|| EnvFilter::try_from_env("RUST_LOG").ok())
            .unwrap_or_else(|| EnvFilter::new("info"))
    };
    let journald = journal::stderr_is_journal();
    if journald {
        // $S3SPOOL_JOURNAL_SOCKET: another journal socket (the tests read one).
        let path = std::env::var_os("S3SPOOL_JOURNAL_SOCKET")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| journal::SOCKET.into());
        if let Ok(layer) = journal::JournalLayer::new(&path, format) {
            let _ = tracing_subscriber::registry()
                .with(filter())
                .with(layer)
                .try_init();
            return;
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
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
        LogFormat::Text => builder.event_format(TextLine { journald }).try_init(),
    };
    // Already installed (a test calling twice): keep the first.
    let _ = installed;
}

/// The text line: `time=… level=… msg=… key=value …`, or `<N>msg=… key=value …` on a
/// journal stream.
struct TextLine {
    journald: bool,
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
        let line = Fields::of(event).logfmt(meta.target());
        if self.journald {
            writeln!(writer, "<{}>{line}", priority(level))
        } else {
            let now = crate::clock::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
            writeln!(writer, "time={now} level={} {line}", level_word(level))
        }
    }
}
