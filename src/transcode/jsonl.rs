//! JSON lines: one object per CSV row, keys in column order, values typed like Parquet's
//! (numbers, booleans, `null`; dates as `YYYY-MM-DD`, timestamps as RFC 3339 in UTC).

use chrono::{DateTime, SecondsFormat};
use std::io::{self, Write};

use super::table::{Column, Value};
use super::tabular::RowSink;

/// Writes rows as JSON lines into `out`.
pub struct JsonLines<W: Write> {
    out: W,
    /// `"name":` for each column, escaped once.
    keys: Vec<Vec<u8>>,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W, columns: &[Column]) -> io::Result<Self> {
        let keys = columns
            .iter()
            .map(|c| {
                let mut key = serde_json::to_vec(&c.name)?;
                key.push(b':');
                Ok(key)
            })
            .collect::<io::Result<_>>()?;
        Ok(JsonLines { out, keys })
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> RowSink for JsonLines<W> {
    fn write_row(&mut self, values: &[Value<'_>]) -> io::Result<()> {
        let out = &mut self.out;
        out.write_all(b"{")?;
        for (i, (key, value)) in self.keys.iter().zip(values).enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            out.write_all(key)?;
            match *value {
                Value::Null => out.write_all(b"null")?,
                Value::Integer(n) => write!(out, "{n}")?,
                Value::Float(f) => serde_json::to_writer(&mut *out, &f)?,
                Value::Boolean(b) => write!(out, "{b}")?,
                Value::Date(days) => {
                    let date = DateTime::from_timestamp(i64::from(days) * 86_400, 0)
                        .unwrap_or_default()
                        .date_naive();
                    write!(out, "\"{}\"", date.format("%Y-%m-%d"))?
                }
                Value::Timestamp(micros) => {
                    let t = DateTime::from_timestamp_micros(micros).unwrap_or_default();
                    write!(
                        out,
                        "\"{}\"",
                        t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
                    )?
                }
                Value::String(s) => serde_json::to_writer(&mut *out, s)?,
            }
        }
        out.write_all(b"}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::table::ColumnType;

    #[test]
    fn rows_are_typed_json_objects() {
        let columns: Vec<Column> = ["id", "name \"q\"", "when", "at", "ok", "x"]
            .iter()
            .zip([
                ColumnType::Integer,
                ColumnType::String,
                ColumnType::Date,
                ColumnType::Timestamp,
                ColumnType::Boolean,
                ColumnType::Float,
            ])
            .map(|(n, ty)| Column {
                name: n.to_string(),
                ty,
                nullable: true,
            })
            .collect();
        let mut sink = JsonLines::new(Vec::new(), &columns).unwrap();
        sink.write_row(&[
            Value::Integer(-3),
            Value::String("a\nb"),
            Value::Date(1),
            Value::Timestamp(1_500_000),
            Value::Boolean(true),
            Value::Float(2.5),
        ])
        .unwrap();
        sink.write_row(&[Value::Null; 6]).unwrap();
        let text = String::from_utf8(sink.finish().unwrap()).unwrap();
        assert_eq!(
            text,
            "{\"id\":-3,\"name \\\"q\\\"\":\"a\\nb\",\"when\":\"1970-01-02\",\"at\":\"1970-01-01T00:00:01.500Z\",\"ok\":true,\"x\":2.5}\n\
             {\"id\":null,\"name \\\"q\\\"\":null,\"when\":null,\"at\":null,\"ok\":null,\"x\":null}\n"
        );
    }
}
