//! The keys of a spool that say what its objects hold: `format` and its options
//! (`gzip_level`, `compression`, `row_group_rows`, `infer_rows`), `[spools.NAME.csv]`
//! and `[spools.NAME.schema]`, and `encrypt_to`.

use std::path::Path;
use std::sync::Arc;

use super::reader::{Problems, Section};
use crate::transcode::table::{Column, ColumnType};
use crate::transcode::{CsvOptions, Format, Output, ParquetCompression, Recipient, TableOptions};

const DEFAULT_ROW_GROUP_ROWS: usize = 100_000;

/// The settings that belong to a format: taken with `format`, never one by one.
const FORMAT_SETTINGS: [&str; 6] = [
    "gzip_level",
    "compression",
    "row_group_rows",
    "infer_rows",
    "csv",
    "schema",
];

/// Reads the output keys of one spool section, or of a route's (`inherit` is then its
/// spool's output: a route without `format` keeps the spool's format and settings, and
/// one without `encrypt_to` its recipient; `encrypt_to = false` sends it unencrypted).
pub(super) fn output(
    p: &mut Problems,
    s: &mut Section<'_>,
    base: &Path,
    inherit: Option<&Output>,
) -> Option<Output> {
    let before = p.0.len();
    let encrypt_to = recipient(p, s, base, inherit);
    let own_format = |s: &mut Section<'_>, p: &mut Problems| {
        s.leads(p, "format", &FORMAT_SETTINGS,
            "a format's settings are taken with it: set format here too (without it, the spool's format and settings apply)")
    };
    if let Some(spool) = inherit.filter(|_| !own_format(s, p)) {
        let encrypt_to = encrypt_to?;
        return (p.0.len() == before).then(|| Output {
            encrypt_to,
            ..spool.clone()
        });
    }
    let level = s.integer(p, "gzip_level");
    let compression = s.string(p, "compression");
    let row_group_rows = s.integer(p, "row_group_rows");
    let infer_rows = s.integer(p, "infer_rows");
    let csv = s.table(p, "csv");
    let schema = s.table(p, "schema");
    let name = s.string(p, "format").unwrap_or("raw");
    let format = match name {
        "raw" => Some(Format::Raw),
        "gzip" => match level.unwrap_or(6) {
            level @ 0..=9 => Some(Format::Gzip {
                level: level as u32,
            }),
            _ => {
                p.add(s.key("gzip_level"), "must be between 0 and 9");
                None
            }
        },
        "jsonl" => Some(Format::Jsonl),
        "parquet" => {
            let text = compression.unwrap_or("snappy");
            let compression = ParquetCompression::from_name(text).or_else(|| {
                p.add(
                    s.key("compression"),
                    format!("{text:?} is not one of snappy, zstd, gzip, none"),
                );
                None
            });
            let rows = row_group_rows.unwrap_or(DEFAULT_ROW_GROUP_ROWS as i64);
            if !(1..=10_000_000).contains(&rows) {
                p.add(s.key("row_group_rows"), "must be between 1 and 10000000");
            }
            compression.map(|compression| Format::Parquet {
                compression,
                row_group_rows: rows.clamp(1, 10_000_000) as usize,
            })
        }
        other => {
            p.add(
                s.key("format"),
                format!("{other:?} is not one of raw, gzip, parquet, jsonl"),
            );
            None
        }
    };
    let only = |p: &mut Problems, present: bool, key: &str, formats: &str, applies: bool| {
        if present && !applies {
            p.add(s.key(key), format!("is only used with format = {formats}"));
        }
    };
    let tabular = matches!(name, "parquet" | "jsonl");
    only(p, level.is_some(), "gzip_level", "\"gzip\"", name == "gzip");
    only(
        p,
        compression.is_some(),
        "compression",
        "\"parquet\"",
        name == "parquet",
    );
    only(
        p,
        row_group_rows.is_some(),
        "row_group_rows",
        "\"parquet\"",
        name == "parquet",
    );
    let either = "\"parquet\" or \"jsonl\"";
    only(p, infer_rows.is_some(), "infer_rows", either, tabular);
    only(p, csv.is_some(), "csv", either, tabular);
    only(p, schema.is_some(), "schema", either, tabular);
    if infer_rows.is_some_and(|n| n < 1) {
        p.add(
            s.key("infer_rows"),
            "must be at least 1 (leave it out to read the whole file)",
        );
    }
    if infer_rows.is_some() && schema.is_some() {
        p.add(s.key("infer_rows"), "is not used when a schema is declared");
    }
    let csv = csv.map_or_else(
        || Some(CsvOptions::default()),
        |t| csv_options(p, &s.key("csv"), t),
    );
    let schema = match schema {
        None => Some(None),
        Some(t) => declared_schema(p, &s.key("schema"), t).map(Some),
    };
    let output = Output {
        encrypt_to: encrypt_to?,
        format: format?,
        table: TableOptions {
            csv: csv?,
            schema: schema?,
            infer_rows: infer_rows.map(|n| n.max(1) as u64),
        },
    };
    (p.0.len() == before).then_some(output)
}

/// `encrypt_to`: `Some(recipient or none)`, or `None` when a problem was reported. The
/// key is read and checked once, here: a bad key stops the daemon from starting, not
/// each file.
fn recipient(
    p: &mut Problems,
    s: &mut Section<'_>,
    base: &Path,
    inherit: Option<&Output>,
) -> Option<Option<Arc<Recipient>>> {
    let value = s.value("encrypt_to");
    let file = match (value, inherit) {
        (None, spool) => return Some(spool.and_then(|o| o.encrypt_to.clone())),
        (Some(toml::Value::Boolean(false)), Some(_)) => return Some(None),
        (Some(toml::Value::String(file)), _) => file,
        (Some(other), route) => {
            let expected = if route.is_some() {
                "a public key file, or false to send this destination unencrypted"
            } else {
                "a string"
            };
            p.add(
                s.key("encrypt_to"),
                format!("expected {expected}, found {}", other.type_str()),
            );
            return None;
        }
    };
    match Recipient::load(&super::resolve(base, file)) {
        Ok(recipient) => Some(Some(Arc::new(recipient))),
        Err(e) => {
            p.add(s.key("encrypt_to"), e);
            None
        }
    }
}

/// One ASCII character, as a CSV reader takes it.
fn one_byte(p: &mut Problems, key: String, text: &str) -> Option<u8> {
    match text.as_bytes() {
        [b] if b.is_ascii() && *b != b'\n' && *b != b'\r' => Some(*b),
        _ => {
            p.add(
                key,
                format!("must be one ASCII character other than a line break, found {text:?}"),
            );
            None
        }
    }
}

fn csv_options(p: &mut Problems, path: &str, table: &toml::Table) -> Option<CsvOptions> {
    let mut s = Section::new(path, table);
    let defaults = CsvOptions::default();
    let delimiter = match s.string(p, "delimiter") {
        Some(text) => one_byte(p, s.key("delimiter"), text),
        None => Some(defaults.delimiter),
    };
    let quote = match s.string(p, "quote") {
        Some(text) => one_byte(p, s.key("quote"), text),
        None => Some(defaults.quote),
    };
    let header = s.bool(p, "header").unwrap_or(true);
    let max_row_size = s.size(p, "max_row_size").unwrap_or(defaults.max_row_size);
    s.finish(p);
    if max_row_size < 1024 {
        p.add(
            s.key("max_row_size"),
            "must be at least 1KiB (a row longer than this fails its file as bad input)",
        );
    }
    if delimiter.is_some() && delimiter == quote {
        p.add(s.key("quote"), "must differ from delimiter");
        return None;
    }
    Some(CsvOptions {
        delimiter: delimiter?,
        quote: quote?,
        header,
        max_row_size,
    })
}

/// `name = "type"` or `name = { type = "type", nullable = false }`, in file order.
fn declared_schema(p: &mut Problems, path: &str, table: &toml::Table) -> Option<Vec<Column>> {
    let before = p.0.len();
    let types: Vec<&str> = ColumnType::ALL.iter().map(|t| t.name()).collect();
    let mut columns = Vec::with_capacity(table.len());
    for (name, value) in table {
        let key = format!("{path}.{name}");
        let (ty, nullable) = match value {
            toml::Value::String(ty) => (Some(ty.as_str()), true),
            toml::Value::Table(t) => {
                let mut s = Section::new(key.clone(), t);
                let ty = s.required_string(p, "type");
                let nullable = s.bool(p, "nullable").unwrap_or(true);
                s.finish(p);
                (ty, nullable)
            }
            other => {
                p.add(
                    key,
                    format!(
                        "expected a type name or {{ type = ..., nullable = ... }}, found {}",
                        other.type_str()
                    ),
                );
                continue;
            }
        };
        let Some(ty) = ty else { continue };
        match ColumnType::from_name(ty) {
            Some(ty) => columns.push(Column {
                name: name.clone(),
                ty,
                nullable,
            }),
            None => p.add(key, format!("{ty:?} is not one of {}", types.join(", "))),
        }
    }
    if table.is_empty() {
        p.add(path, "declares no columns (leave it out to infer them)");
    }
    (p.0.len() == before).then_some(columns)
}

#[cfg(test)]
mod tests {
    use crate::config::tests::*;

    #[test]
    fn format_rules() {
        use crate::transcode::table::{Column, ColumnType};
        use crate::transcode::{Format, ParquetCompression};
        let config = parse(&with_spool("format = \"gzip\"\ngzip_level = 9")).unwrap();
        assert_eq!(
            config.spools["orders"].only_route().output.format,
            Format::Gzip { level: 9 }
        );
        assert_eq!(
            parse(&with_spool("")).unwrap().spools["orders"]
                .only_route()
                .output
                .format,
            Format::Raw
        );
        let config = parse(&with_spool(
            "format = \"parquet\"\ncompression = \"zstd\"\nrow_group_rows = 500\n\
             [spools.orders.csv]\ndelimiter = \"\\t\"\nquote = \"'\"\nheader = false\n\
             [spools.orders.schema]\nid = { type = \"integer\", nullable = false }\nname = \"string\"\nat = \"timestamp\"",
        ))
        .unwrap();
        let output = &config.spools["orders"].only_route().output;
        assert_eq!(
            output.format,
            Format::Parquet {
                compression: ParquetCompression::Zstd,
                row_group_rows: 500
            }
        );
        assert_eq!(
            (
                output.table.csv.delimiter,
                output.table.csv.quote,
                output.table.csv.header
            ),
            (b'\t', b'\'', false)
        );
        let column = |name: &str, ty, nullable| Column {
            name: name.into(),
            ty,
            nullable,
        };
        assert_eq!(
            output.table.schema.as_deref().unwrap(),
            [
                column("id", ColumnType::Integer, false),
                column("name", ColumnType::String, true),
                column("at", ColumnType::Timestamp, true)
            ],
            "columns in file order"
        );
        let jsonl = parse(&with_spool("format = \"jsonl\"\ninfer_rows = 50")).unwrap();
        assert_eq!(
            jsonl.spools["orders"].only_route().output.format,
            Format::Jsonl
        );
        assert_eq!(
            jsonl.spools["orders"].only_route().output.table.infer_rows,
            Some(50)
        );
        refused(
            &with_spool("format = \"zip\""),
            "spools.orders.format",
            "not one of raw, gzip, parquet, jsonl",
        );
        refused(
            &with_spool("format = \"gzip\"\ngzip_level = 10"),
            "spools.orders.gzip_level",
            "between 0 and 9",
        );
        refused(
            &with_spool("gzip_level = 5"),
            "spools.orders.gzip_level",
            "only used with format = \"gzip\"",
        );
        refused(
            &with_spool("format = \"jsonl\"\ncompression = \"zstd\""),
            "spools.orders.compression",
            "only used with format = \"parquet\"",
        );
        refused(
            &with_spool("format = \"parquet\"\ncompression = \"lzo\""),
            "spools.orders.compression",
            "not one of snappy, zstd, gzip, none",
        );
        refused(
            &with_spool("format = \"parquet\"\nrow_group_rows = 0"),
            "spools.orders.row_group_rows",
            "between 1 and",
        );
        refused(
            &with_spool("format = \"gzip\"\n[spools.orders.csv]\nheader = true"),
            "spools.orders.csv",
            "only used with format = \"parquet\" or \"jsonl\"",
        );
        refused(
            &with_spool("format = \"jsonl\"\n[spools.orders.csv]\ndelimiter = \";;\""),
            "spools.orders.csv.delimiter",
            "one ASCII character",
        );
        refused(
            &with_spool("format = \"jsonl\"\n[spools.orders.csv]\ndelimiter = \"\\\"\""),
            "spools.orders.csv.quote",
            "must differ from delimiter",
        );
        refused(
            &with_spool("format = \"jsonl\"\n[spools.orders.csv]\nseparator = \";\""),
            "spools.orders.csv.separator",
            "unknown key",
        );
        refused(
            &with_spool("format = \"jsonl\"\n[spools.orders.schema]\nid = \"int\""),
            "spools.orders.schema.id",
            "\"int\" is not one of integer, float, boolean, date, timestamp, string",
        );
        refused(
            &with_spool("format = \"jsonl\"\n[spools.orders.schema]\nid = { nullable = true }"),
            "spools.orders.schema.id.type",
            "is required",
        );
        refused(
            &with_spool(
                "format = \"jsonl\"\ninfer_rows = 10\n[spools.orders.schema]\nid = \"integer\"",
            ),
            "spools.orders.infer_rows",
            "not used when a schema is declared",
        );
        refused(
            &with_spool("format = \"jsonl\"\ninfer_rows = 0"),
            "spools.orders.infer_rows",
            "at least 1",
        );
    }

    #[test]
    fn encrypt_to_is_read_and_checked_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_key = dir.path().join("recipient.asc");
        std::fs::write(&not_a_key, "hello\n").unwrap();
        refused(
            &with_spool(&format!("encrypt_to = \"{}\"", not_a_key.display())),
            "spools.orders.encrypt_to",
            "is not an ASCII-armoured OpenPGP public key",
        );
        refused(
            &with_spool(&format!(
                "encrypt_to = \"{}\"",
                dir.path().join("missing.asc").display()
            )),
            "spools.orders.encrypt_to",
            "cannot read",
        );
    }
}
