//! A reader over one TOML table that records every problem under its full dotted key and
//! goes on, so a config with five mistakes reports five errors in one run.

use std::collections::BTreeSet;
use std::time::Duration;
use toml::{Table, Value};

use super::units::{parse_duration, parse_size};

/// One thing wrong with the config, under the dotted key it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// Collects problems while the config is walked.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

/// Reads typed values out of one table, remembering which keys were used so that
/// [`Section::finish`] can refuse the unknown ones.
pub struct Section<'a> {
    path: String,
    table: &'a Table,
    used: BTreeSet<&'static str>,
}

impl<'a> Section<'a> {
    pub fn new(path: impl Into<String>, table: &'a Table) -> Self {
        Section {
            path: path.into(),
            table,
            used: BTreeSet::new(),
        }
    }

    /// The dotted key of `name` inside this section.
    pub fn key(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.path, name)
        }
    }

    /// The dotted path of this section.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether the table holds `name` (which then counts as known, for [`Section::finish`]).
    pub fn take(&mut self, name: &'static str) -> bool {
        self.used.insert(name);
        self.table.contains_key(name)
    }

    /// Whether the table holds `lead`. Without it, each of `settings` the table holds is
    /// refused with `why`: they are taken with `lead`, never alone.
    pub fn leads(
        &mut self,
        p: &mut Problems,
        lead: &'static str,
        settings: &[&'static str],
        why: &str,
    ) -> bool {
        if self.take(lead) {
            return true;
        }
        for &name in settings {
            if self.take(name) {
                p.add(self.key(name), why);
            }
        }
        false
    }

    /// The raw value of `name`, for a key that takes more than one type.
    pub fn value(&mut self, name: &'static str) -> Option<&'a Value> {
        self.get(name)
    }

    fn get(&mut self, name: &'static str) -> Option<&'a Value> {
        self.used.insert(name);
        self.table.get(name)
    }

    fn typed<T>(
        &mut self,
        problems: &mut Problems,
        name: &'static str,
        expected: &str,
        pick: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Option<T> {
        let value = self.get(name)?;
        let picked = pick(value);
        if picked.is_none() {
            problems.add(
                self.key(name),
                format!("expected {expected}, found {}", value.type_str()),
            );
        }
        picked
    }

    pub fn string(&mut self, p: &mut Problems, name: &'static str) -> Option<&'a str> {
        self.typed(p, name, "a string", Value::as_str)
    }

    pub fn bool(&mut self, p: &mut Problems, name: &'static str) -> Option<bool> {
        self.typed(p, name, "true or false", Value::as_bool)
    }

    pub fn integer(&mut self, p: &mut Problems, name: &'static str) -> Option<i64> {
        self.typed(p, name, "a whole number", Value::as_integer)
    }

    pub fn table(&mut self, p: &mut Problems, name: &'static str) -> Option<&'a Table> {
        self.typed(p, name, "a table", Value::as_table)
    }

    pub fn strings(&mut self, p: &mut Problems, name: &'static str) -> Option<Vec<&'a str>> {
        self.typed(p, name, "a list of strings", |v| {
            v.as_array()?.iter().map(Value::as_str).collect()
        })
    }

    /// One string, or a list of them (`bwlimit = "20MiB/s"` or a timetable).
    pub fn string_or_strings(
        &mut self,
        p: &mut Problems,
        name: &'static str,
    ) -> Option<Vec<&'a str>> {
        self.typed(p, name, "a string or a list of strings", |v| match v {
            Value::String(s) => Some(vec![s.as_str()]),
            Value::Array(items) => items.iter().map(Value::as_str).collect(),
            _ => None,
        })
    }

    /// A required string: reports a missing key.
    pub fn required_string(&mut self, p: &mut Problems, name: &'static str) -> Option<&'a str> {
        if !self.table.contains_key(name) {
            self.used.insert(name);
            p.add(self.key(name), "is required");
            return None;
        }
        self.string(p, name)
    }

    pub fn size(&mut self, p: &mut Problems, name: &'static str) -> Option<u64> {
        let value = self.get(name)?;
        let parsed = match value {
            Value::String(s) => parse_size(s),
            Value::Integer(n) if *n >= 0 => Ok(*n as u64),
            other => Err(format!(
                "expected a size like \"16MiB\", found {}",
                other.type_str()
            )),
        };
        parsed.map_err(|e| p.add(self.key(name), e)).ok()
    }

    pub fn duration(&mut self, p: &mut Problems, name: &'static str) -> Option<Duration> {
        let text = self.string(p, name)?;
        parse_duration(text)
            .map_err(|e| p.add(self.key(name), e))
            .ok()
    }

    /// Reports every key of the table that no reader asked for.
    pub fn finish(&self, p: &mut Problems) {
        for name in self.table.keys() {
            if !self.used.contains(name.as_str()) {
                let mut known: Vec<_> = self.used.iter().copied().collect();
                known.sort_unstable();
                p.add(
                    self.key(name),
                    format!("unknown key (known keys here: {})", known.join(", ")),
                );
            }
        }
    }
}
