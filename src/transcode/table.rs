//! Typed tables out of CSV text: the column types Parquet and JSON lines share, how one
//! field is read as a value of a type, and how types are inferred from the data.
//!
//! Only an empty field is missing (null): `NULL`, `NA` or `-` are strings, because a
//! producer that means "missing" by them would say so in a declared schema.

use chrono::{DateTime, NaiveDate, NaiveDateTime};

/// The type of one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Integer,
    Float,
    Boolean,
    Date,
    Timestamp,
    String,
}

impl ColumnType {
    pub const ALL: [ColumnType; 6] = [
        ColumnType::Integer,
        ColumnType::Float,
        ColumnType::Boolean,
        ColumnType::Date,
        ColumnType::Timestamp,
        ColumnType::String,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Integer => "integer",
            ColumnType::Float => "float",
            ColumnType::Boolean => "boolean",
            ColumnType::Date => "date",
            ColumnType::Timestamp => "timestamp",
            ColumnType::String => "string",
        }
    }

    pub fn from_name(name: &str) -> Option<ColumnType> {
        ColumnType::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// One column: its name, type, and whether it may be missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
}

/// One field read as its column's type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Null,
    Integer(i64),
    Float(f64),
    Boolean(bool),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01T00:00:00Z.
    Timestamp(i64),
    String(&'a str),
}

/// Reads `text` as a value of `column`, or says why it is not one.
pub fn parse<'a>(column: &Column, text: &'a str) -> Result<Value<'a>, String> {
    if text.is_empty() {
        return if column.nullable {
            Ok(Value::Null)
        } else {
            Err(format!("column {:?} is empty but may not be", column.name))
        };
    }
    let value = match column.ty {
        ColumnType::Integer => integer(text).map(Value::Integer),
        ColumnType::Float => float(text).map(Value::Float),
        ColumnType::Boolean => boolean(text).map(Value::Boolean),
        ColumnType::Date => date(text).map(Value::Date),
        ColumnType::Timestamp => timestamp(text).map(Value::Timestamp),
        ColumnType::String => Some(Value::String(text)),
    };
    value.ok_or_else(|| {
        format!(
            "column {:?}: {} is not {} {}",
            column.name,
            quote(text),
            article(column.ty),
            column.ty.name()
        )
    })
}

fn article(ty: ColumnType) -> &'static str {
    if ty == ColumnType::Integer {
        "an"
    } else {
        "a"
    }
}

/// A value for an error message: quoted, and cut short if long.
fn quote(text: &str) -> String {
    let cut: String = text.chars().take(40).collect();
    if cut.len() < text.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

fn integer(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Decimal notation only: `nan`, `inf` and hex floats are not numbers a CSV means.
fn float(text: &str) -> Option<f64> {
    let body = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return None;
    }
    if !exponent_ok {
        return None;
    }
    text.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn boolean(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

const EPOCH_DAYS_CE: i32 = 719_163;

fn date(text: &str) -> Option<i32> {
    use chrono::Datelike;
    if text.len() != 10 {
        return None;
    }
    let d = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(d.num_days_from_ce() - EPOCH_DAYS_CE)
}

/// RFC 3339 with an offset, or `YYYY-MM-DD[T ]HH:MM:SS[.ffffff]` without one, taken as
/// UTC. Finer than a microsecond is refused rather than cut.
fn timestamp(text: &str) -> Option<i64> {
    // Bytes, not a str slice: byte 10 may sit inside a multi-byte character.
    let format = match text.as_bytes().get(10) {
        _ if text.len() < 19 => return None,
        Some(b'T') => "%Y-%m-%dT%H:%M:%S%.f",
        Some(b' ') => "%Y-%m-%d %H:%M:%S%.f",
        _ => return None,
    };
    let utc = match DateTime::parse_from_rfc3339(text) {
        Ok(t) => t.to_utc(),
        Err(_) => NaiveDateTime::parse_from_str(text, format).ok()?.and_utc(),
    };
    if utc.timestamp_subsec_nanos() % 1000 != 0 {
        return None;
    }
    Some(utc.timestamp_micros())
}

/// Inference state of one column: the types every value seen so far fits.
#[derive(Debug, Clone)]
pub struct Guess {
    fits: [bool; 5],
    seen_value: bool,
    seen_empty: bool,
}

impl Default for Guess {
    fn default() -> Self {
        Guess {
            fits: [true; 5],
            seen_value: false,
            seen_empty: false,
        }
    }
}

impl Guess {
    /// Narrows the guess by one field.
    pub fn see(&mut self, text: &str) {
        if text.is_empty() {
            self.seen_empty = true;
            return;
        }
        self.seen_value = true;
        if !self.fits.iter().any(|f| *f) {
            return;
        }
        // Numbers are inferred only from text a number gives back unchanged (but for
        // trailing zeros of decimals): a leading zero ("007") or "+" (phone numbers) would
        // be dropped, an integer beyond i64 or beyond a double's exact range (2^53) would be
        // rounded, and "12E4" is more often a code than 120000.
        let digits = text.strip_prefix('-').unwrap_or(text);
        let leading_zero =
            digits.len() > 1 && digits.starts_with('0') && digits.as_bytes()[1].is_ascii_digit();
        let plain = !(leading_zero || digits.starts_with('+') || digits.contains(['e', 'E']));
        let whole = digits.bytes().all(|b| b.is_ascii_digit());
        let exact_float = !whole || integer(text).is_some_and(|n| n.unsigned_abs() <= 1 << 53);
        let checks: [&dyn Fn(&str) -> bool; 5] = [
            &|t| plain && integer(t).is_some(),
            &|t| plain && exact_float && float(t).is_some(),
            &|t| boolean(t).is_some(),
            &|t| date(t).is_some(),
            &|t| timestamp(t).is_some(),
        ];
        for (fits, check) in self.fits.iter_mut().zip(checks) {
            if *fits && !check(text) {
                *fits = false;
            }
        }
    }

    /// The narrowest type every value fits; a column never seen with a value is a string.
    pub fn column(&self, name: String) -> Column {
        let order = [
            ColumnType::Integer,
            ColumnType::Float,
            ColumnType::Boolean,
            ColumnType::Date,
            ColumnType::Timestamp,
        ];
        let ty = if self.seen_value {
            order
                .into_iter()
                .zip(self.fits)
                .find(|(_, fits)| *fits)
                .map_or(ColumnType::String, |(ty, _)| ty)
        } else {
            ColumnType::String
        };
        Column {
            name,
            ty,
            nullable: self.seen_empty || !self.seen_value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infer(values: &[&str]) -> Column {
        let mut g = Guess::default();
        for v in values {
            g.see(v);
        }
        g.column("c".into())
    }

    #[test]
    fn inference_picks_the_narrowest_type() {
        assert_eq!(infer(&["1", "-2", "0"]).ty, ColumnType::Integer);
        assert_eq!(infer(&["1", "2.5", "-0.25"]).ty, ColumnType::Float);
        assert_eq!(infer(&["true", "FALSE"]).ty, ColumnType::Boolean);
        assert_eq!(infer(&["2026-11-22", "2000-02-29"]).ty, ColumnType::Date);
        assert_eq!(
            infer(&["2026-11-22T10:00:00Z", "2026-11-22 10:00:00.5"]).ty,
            ColumnType::Timestamp
        );
        assert_eq!(infer(&["1", "x"]).ty, ColumnType::String);
        assert_eq!(infer(&["007", "12"]).ty, ColumnType::String, "zip codes");
        assert_eq!(infer(&["nan", "inf"]).ty, ColumnType::String);
        assert_eq!(infer(&["+4915112345678"]).ty, ColumnType::String, "phones");
        assert_eq!(
            infer(&["12345678901234567890"]).ty,
            ColumnType::String,
            "beyond i64: not rounded into a float"
        );
        assert_eq!(
            infer(&["9007199254740993", "1.5"]).ty,
            ColumnType::String,
            "beyond 2^53: a double would round it"
        );
        assert_eq!(infer(&["9007199254740992", "1.5"]).ty, ColumnType::Float);
        assert_eq!(infer(&["12E4"]).ty, ColumnType::String);
        assert_eq!(infer(&["-0.5", "0", "-3"]).ty, ColumnType::Float);
        assert_eq!(
            infer(&["Владимир Владимирович"]).ty,
            ColumnType::String,
            "multi-byte text at byte 10 is no timestamp (and no panic)"
        );
        assert_eq!(
            infer(&["2026-11-22T10:00:00.123456789Z"]).ty,
            ColumnType::String,
            "nanoseconds are not cut to microseconds"
        );
        assert_eq!(infer(&["2026-02-30"]).ty, ColumnType::String);
        let c = infer(&["1", "", "3"]);
        assert_eq!((c.ty, c.nullable), (ColumnType::Integer, true));
        assert!(!infer(&["1"]).nullable);
        let c = infer(&["", ""]);
        assert_eq!((c.ty, c.nullable), (ColumnType::String, true));
    }

    #[test]
    fn parse_reads_and_refuses_values() {
        let col = |ty, nullable| Column {
            name: "amount".into(),
            ty,
            nullable,
        };
        assert_eq!(
            parse(&col(ColumnType::Integer, false), "42"),
            Ok(Value::Integer(42))
        );
        assert_eq!(
            parse(&col(ColumnType::Integer, false), "+42"),
            Ok(Value::Integer(42)),
            "a declared type takes what inference leaves alone"
        );
        assert_eq!(
            parse(&col(ColumnType::Integer, false), "4x").unwrap_err(),
            "column \"amount\": \"4x\" is not an integer"
        );
        assert_eq!(
            parse(&col(ColumnType::Integer, false), "").unwrap_err(),
            "column \"amount\" is empty but may not be"
        );
        assert_eq!(parse(&col(ColumnType::Integer, true), ""), Ok(Value::Null));
        assert_eq!(
            parse(&col(ColumnType::Date, true), "1970-01-02"),
            Ok(Value::Date(1))
        );
        assert_eq!(
            parse(
                &col(ColumnType::Timestamp, true),
                "1970-01-01T00:00:01+01:00"
            ),
            Ok(Value::Timestamp(-3_599_000_000))
        );
        assert_eq!(
            parse(
                &col(ColumnType::Timestamp, true),
                "1970-01-01 00:00:00.000002"
            ),
            Ok(Value::Timestamp(2))
        );
        assert_eq!(
            parse(&col(ColumnType::Integer, true), "99999999999999999999").unwrap_err(),
            "column \"amount\": \"99999999999999999999\" is not an integer"
        );
        let long = "x".repeat(100);
        assert!(parse(&col(ColumnType::Boolean, true), &long)
            .unwrap_err()
            .ends_with("… is not a boolean"));
    }
}
