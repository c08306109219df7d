//! One event's words: its message and fields, collected once and written as a logfmt line
//! (`msg=… key=value`) or as a JSON object, for stderr and for the journal alike.

use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing::{Event, Level};

/// An event's message and fields, in the order they were written.
#[derive(Default)]
pub struct Fields {
    pub message: Option<String>,
    pub fields: Vec<(&'static str, serde_json::Value)>,
    /// The real origin of an event bridged from the `log` crate (its `log.target`).
    pub log_target: Option<String>,
}

impl Fields {
    pub fn of(event: &Event<'_>) -> Fields {
        let mut fields = Fields::default();
        event.record(&mut fields);
        fields
    }

    /// Where the event comes from: the event's target, or the `log` crate's own.
    pub fn target<'a>(&'a self, event_target: &'a str) -> &'a str {
        self.log_target.as_deref().unwrap_or(event_target)
    }

    /// `msg=… key=value …`, then `target=…` for another crate's event (ours are known by
    /// their message). No time or level: the caller puts them first, or the journal keeps
    /// them.
    pub fn logfmt(&self, target: &str) -> String {
        let target = self.target(target);
        let mut line = String::new();
        if let Some(message) = &self.message {
            pair(&mut line, "msg", message);
        }
        for (name, value) in &self.fields {
            match value {
                serde_json::Value::String(text) => pair(&mut line, name, text),
                other => pair(&mut line, name, &other.to_string()),
            }
        }
        if !is_ours(target) {
            pair(&mut line, "target", target);
        }
        line
    }

    /// The JSON object of `log_format = "json"`: the keys tracing-subscriber's JSON format
    /// uses (`timestamp`, `level`, `message`, the fields at the top level, `target`).
    pub fn json(&self, level: Level, target: &str, timestamp: &str) -> String {
        let target = self.target(target);
        let mut object = serde_json::Map::new();
        object.insert("timestamp".into(), timestamp.into());
        object.insert("level".into(), level.as_str().into());
        if let Some(message) = &self.message {
            object.insert("message".into(), message.as_str().into());
        }
        for (name, value) in &self.fields {
            object.insert((*name).into(), value.clone());
        }
        object.insert("target".into(), target.into());
        serde_json::Value::Object(object).to_string()
    }
}

/// Whether an event comes from s3spool itself.
pub fn is_ours(target: &str) -> bool {
    target.starts_with("s3spool")
}

/// The level as logfmt writers spell it.
pub fn level_word(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// The syslog priority of a level, as the journal reads it.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Appends ` key=value`, the value quoted when a logfmt reader would otherwise split it.
fn pair(line: &mut String, key: &str, value: &str) {
    if !line.is_empty() {
        line.push(' ');
    }
    line.push_str(key);
    line.push('=');
    let bare = !value.is_empty()
        && !value
            .chars()
            .any(|c| c == ' ' || c == '"' || c == '=' || c == '\\' || c.is_control());
    if bare {
        line.push_str(value);
        return;
    }
    // Go's strconv.Unquote and the common logfmt parsers read these escapes; one event
    // stays on one line.
    line.push('"');
    for c in value.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(line, "\\u{:04x}", c as u32);
            }
            c => line.push(c),
        }
    }
    line.push('"');
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else if field.name() == "log.target" {
            self.log_target = Some(value.to_string());
        } else if field.name().starts_with("log.") {
            // The bridge's module path, file and line: noise for an operator.
        } else {
            self.fields.push((field.name(), value.into()));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if !field.name().starts_with("log.") {
            self.fields.push((field.name(), value.into()));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if !field.name().starts_with("log.") {
            self.fields.push((field.name(), value.into()));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name(), value.into()));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.push((field.name(), value.into()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(message: &str, fields: &[(&'static str, serde_json::Value)]) -> Fields {
        Fields {
            message: Some(message.to_string()),
            fields: fields.to_vec(),
            log_target: None,
        }
    }

    #[test]
    fn values_a_logfmt_reader_would_split_are_quoted_and_escaped() {
        let f = fields(
            "upload failed; will retry",
            &[
                ("spool", "orders".into()),
                ("file", "a b=\"c\"\\.csv".into()),
                ("error", "line 1\nline 2\u{1}".into()),
                ("empty", "".into()),
                ("bytes", 12.into()),
                ("name", "ünïcode.csv".into()),
            ],
        );
        assert_eq!(
            f.logfmt("s3spool::upload"),
            "msg=\"upload failed; will retry\" spool=orders file=\"a b=\\\"c\\\"\\\\.csv\" \
             error=\"line 1\\nline 2\\u0001\" empty=\"\" bytes=12 name=ünïcode.csv"
        );
    }

    #[test]
    fn another_crates_event_names_its_target_and_json_keeps_types() {
        let f = fields("connection closed", &[("ms", 5.into())]);
        assert_eq!(
            f.logfmt("hyper::proto"),
            "msg=\"connection closed\" ms=5 target=hyper::proto"
        );
        let json: serde_json::Value =
            serde_json::from_str(&f.json(Level::WARN, "hyper::proto", "T")).unwrap();
        assert_eq!(json["level"], "WARN");
        assert_eq!(json["message"], "connection closed");
        assert_eq!(json["ms"], 5);
        assert_eq!(json["target"], "hyper::proto");
    }
}
