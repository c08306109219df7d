//! Reading a CSV source as a typed table: the header, the schema (declared, or inferred
//! in a first pass over the file), then every row as typed values handed to a writer.
//!
//! Any bad row stops the conversion with its line number, so no partial output is ever
//! uploaded: the caller discards the work file.

use csv::{ErrorKind, ReaderBuilder, StringRecord};
use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use super::table::{parse, Column, Guess, Value};
use super::ConvertError;

/// How the source CSV is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    pub delimiter: u8,
    pub quote: u8,
    /// The first row names the columns.
    pub header: bool,
    /// The longest row read, in bytes: a longer one fails the file (memory follows the
    /// longest row, and an unclosed quote makes the rest of a file one row).
    pub max_row_size: u64,
}

/// Default `max_row_size`.
pub const MAX_ROW_SIZE: u64 = 16 << 20;

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: b',',
            quote: b'"',
            header: true,
            max_row_size: MAX_ROW_SIZE,
        }
    }
}

/// How a CSV becomes a typed table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableOptions {
    pub csv: CsvOptions,
    /// Declared columns, in order; `None` infers them from the data.
    pub schema: Option<Vec<Column>>,
    /// Rows read to infer types; `None` reads the whole file first.
    pub infer_rows: Option<u64>,
}

/// Receives the rows of a table, in order.
pub trait RowSink {
    fn write_row(&mut self, values: &[Value<'_>]) -> io::Result<()>;
}

const READ_BUFFER: usize = 256 * 1024;

/// The source as the csv reader sees it. It hands out no more than `max_row_size` (plus
/// one read buffer) past the start of the row being read, so one endless row cannot take
/// the memory: the csv crate grows its record buffer for as long as a row goes on.
struct Capped<'f> {
    file: &'f File,
    /// Bytes handed to the csv reader so far.
    handed: u64,
    /// Where the row being read starts, in the same count (set after each row).
    row_start: Rc<Cell<u64>>,
    limit: u64,
}

/// The error [`Capped`] reads fail with.
#[derive(Debug, thiserror::Error)]
#[error("a row is longer than max_row_size")]
struct RowTooLong;

impl Read for Capped<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.handed.saturating_sub(self.row_start.get()) > self.limit {
            return Err(io::Error::other(RowTooLong));
        }
        let n = self.file.read(buf)?;
        self.handed += n as u64;
        Ok(n)
    }
}

/// The rows of a CSV source, read from its start.
struct Rows<'f> {
    rdr: csv::Reader<Capped<'f>>,
    row_start: Rc<Cell<u64>>,
    /// The line the next row starts on.
    row_line: u64,
    max_row_size: u64,
    header: bool,
}

/// A CSV reader over the source from its start, past a UTF-8 byte-order mark (which the
/// csv crate would keep in the first field). Also returns where the reader starts.
fn reader<'f>(options: &CsvOptions, source: &'f File) -> io::Result<(Rows<'f>, u64)> {
    let mut bom = [0u8; 3];
    let found = source.read_at(&mut bom, 0)? == 3 && bom == [0xEF, 0xBB, 0xBF];
    let start = if found { 3 } else { 0 };
    // The descriptor's offset is shared with every clone of it: set it each time.
    (&*source).seek(io::SeekFrom::Start(start))?;
    let row_start = Rc::new(Cell::new(0));
    let capped = Capped {
        file: source,
        handed: 0,
        row_start: Rc::clone(&row_start),
        limit: options.max_row_size.saturating_add(READ_BUFFER as u64),
    };
    let rdr = ReaderBuilder::new()
        .delimiter(options.delimiter)
        .quote(options.quote)
        // The header is read as a row so that its length is what ragged rows are held to.
        .has_headers(false)
        .flexible(false)
        .buffer_capacity(READ_BUFFER)
        .from_reader(capped);
    let rows = Rows {
        rdr,
        row_start,
        row_line: 1,
        max_row_size: options.max_row_size,
        header: options.header,
    };
    Ok((rows, start))
}

/// Whether the record starting at byte `from` runs to the end of the file inside a quoted
/// field. The csv crate ends such a record quietly at the end of the file, so a stray
/// quote would swallow every later row into one field: this finds it.
fn ends_inside_quotes(options: &CsvOptions, source: &File, from: u64) -> io::Result<bool> {
    #[derive(PartialEq)]
    enum At {
        FieldStart,
        Unquoted,
        Quoted,
        QuoteInQuoted,
    }
    let (quote, delimiter) = (options.quote, options.delimiter);
    let mut at = At::FieldStart;
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = from;
    loop {
        let n = source.read_at(&mut buf, offset)?;
        if n == 0 {
            return Ok(at == At::Quoted);
        }
        offset += n as u64;
        for &b in &buf[..n] {
            let ends_field = b == delimiter || b == b'\n' || b == b'\r';
            at = match at {
                At::FieldStart | At::Unquoted if ends_field => At::FieldStart,
                At::FieldStart if b == quote => At::Quoted,
                At::FieldStart | At::Unquoted => At::Unquoted,
                At::Quoted if b == quote => At::QuoteInQuoted,
                At::Quoted => At::Quoted,
                At::QuoteInQuoted if b == quote => At::Quoted,
                At::QuoteInQuoted if ends_field => At::FieldStart,
                At::QuoteInQuoted => At::Unquoted,
            };
        }
    }
}

/// Turns a CSV error into a conversion error with the line it happened on.
fn bad_row(e: csv::Error, header: bool) -> ConvertError {
    let line = e.position().map_or(0, |p| p.line());
    let reason = match e.kind() {
        ErrorKind::Io(_) => match e.into_kind() {
            ErrorKind::Io(io) => return ConvertError::Io(io),
            _ => unreachable!(),
        },
        ErrorKind::Utf8 { err, .. } => {
            format!("field {} is not valid UTF-8", err.field() + 1)
        }
        ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!(
            "row has {len} fields but the {} has {expected_len}",
            if header { "header" } else { "first row" }
        ),
        _ => e.to_string(),
    };
    ConvertError::BadInput { line, reason }
}

impl Rows<'_> {
    /// Reads one record; `None` at the end of the file. Returns its line.
    fn next(&mut self, record: &mut StringRecord) -> Result<Option<u64>, ConvertError> {
        match self.rdr.read_record(record) {
            Ok(true) => {
                self.row_start.set(self.rdr.position().byte());
                self.row_line = self.rdr.position().line();
                Ok(Some(record.position().map_or(0, |p| p.line())))
            }
            Ok(false) => Ok(None),
            Err(e) if is_row_too_long(&e) => Err(ConvertError::BadInput {
                line: self.row_line,
                reason: format!(
                    "a row starting here runs past {} (max_row_size): an unclosed quote, or not a CSV file?",
                    crate::units::format_size(self.max_row_size)
                ),
            }),
            Err(e) => Err(bad_row(e, self.header)),
        }
    }
}

fn is_row_too_long(e: &csv::Error) -> bool {
    match e.kind() {
        ErrorKind::Io(io) => io.get_ref().is_some_and(|inner| inner.is::<RowTooLong>()),
        _ => false,
    }
}

/// The most columns a table may have: each costs a writer's state, and a header of commas
/// within `max_row_size` could otherwise ask for millions.
const MAX_COLUMNS: usize = 10_000;

/// The column names: from the header row, or `column_1`… when there is none.
fn names(options: &CsvOptions, first: &StringRecord) -> Result<Vec<String>, ConvertError> {
    if first.len() > MAX_COLUMNS {
        return Err(ConvertError::BadInput {
            line: 1,
            reason: format!(
                "the first row has {} fields; a table may have at most {MAX_COLUMNS} columns",
                first.len()
            ),
        });
    }
    let mut names: Vec<String> = Vec::with_capacity(first.len());
    for (i, field) in first.iter().enumerate() {
        let name = if options.header {
            // A byte-order mark from a spreadsheet export is not part of the first name.
            let field = if i == 0 {
                field.trim_start_matches('\u{feff}')
            } else {
                field
            };
            field.trim().to_string()
        } else {
            String::new()
        };
        let name = if name.is_empty() {
            format!("column_{}", i + 1)
        } else {
            name
        };
        if names.contains(&name) {
            return Err(ConvertError::BadInput {
                line: 1,
                reason: format!("column name {name:?} appears twice in the header"),
            });
        }
        names.push(name);
    }
    Ok(names)
}

/// Matches declared columns to the file's: by name under a header, else by position.
fn declared(
    options: &CsvOptions,
    names: &[String],
    schema: &[Column],
) -> Result<Vec<Column>, ConvertError> {
    let bad = |reason: String| ConvertError::BadInput { line: 1, reason };
    if !options.header {
        if names.len() != schema.len() {
            return Err(bad(format!(
                "row has {} fields but the schema declares {} columns",
                names.len(),
                schema.len()
            )));
        }
        return Ok(schema.to_vec());
    }
    let mut columns = Vec::with_capacity(names.len());
    for name in names {
        match schema.iter().find(|c| &c.name == name) {
            Some(c) => columns.push(c.clone()),
            None => {
                return Err(bad(format!(
                    "header column {name:?} is not in the declared schema"
                )))
            }
        }
    }
    if let Some(missing) = schema.iter().find(|c| !names.contains(&c.name)) {
        return Err(bad(format!(
            "declared column {:?} is not in the header",
            missing.name
        )));
    }
    Ok(columns)
}

/// The table's columns, reading the file once for inference when none are declared.
fn columns(options: &TableOptions, source: &File) -> Result<Vec<Column>, ConvertError> {
    let header = options.csv.header;
    let (mut rdr, _) = reader(&options.csv, source)?;
    let mut record = StringRecord::new();
    let Some(_) = rdr.next(&mut record)? else {
        return Err(ConvertError::BadInput {
            line: 1,
            reason: "the file is empty: no header and no rows".into(),
        });
    };
    let names = names(&options.csv, &record)?;
    if let Some(schema) = &options.schema {
        return declared(&options.csv, &names, schema);
    }
    let mut guesses = vec![Guess::default(); names.len()];
    let mut seen = 0u64;
    if !header {
        record.iter().zip(&mut guesses).for_each(|(f, g)| g.see(f));
        seen += 1;
    }
    while options.infer_rows.is_none_or(|limit| seen < limit) {
        if rdr.next(&mut record)?.is_none() {
            break;
        }
        record.iter().zip(&mut guesses).for_each(|(f, g)| g.see(f));
        seen += 1;
    }
    Ok(names
        .into_iter()
        .zip(guesses)
        .map(|(name, g)| g.column(name))
        .collect())
}

/// Reads the source and hands every typed row to the sink made from its columns.
/// Returns the sink and the number of data rows.
pub fn convert<S: RowSink>(
    options: &TableOptions,
    source: &File,
    make_sink: impl FnOnce(&[Column]) -> io::Result<S>,
) -> Result<(S, u64), ConvertError> {
    let columns = columns(options, source)?;
    let mut sink = make_sink(&columns)?;
    let header = options.csv.header;
    let (mut rdr, start) = reader(&options.csv, source)?;
    let mut record = StringRecord::new();
    // Where the last record began (byte in the file, line), for the unclosed-quote check.
    let mut last = None;
    let mut note = |record: &StringRecord| {
        if let Some(p) = record.position() {
            last = Some((start + p.byte(), p.line()));
        }
    };
    if header && rdr.next(&mut record)?.is_some() {
        note(&record);
    }
    let mut rows = 0u64;
    let mut values: Vec<Value<'_>> = Vec::with_capacity(columns.len());
    while let Some(line) = rdr.next(&mut record)? {
        note(&record);
        if record.len() != columns.len() {
            return Err(ConvertError::BadInput {
                line,
                reason: format!(
                    "row has {} fields but the table has {} columns",
                    record.len(),
                    columns.len()
                ),
            });
        }
        values.clear();
        for (column, field) in columns.iter().zip(record.iter()) {
            match parse(column, field) {
                Ok(v) => values.push(v),
                Err(reason) => {
                    let reason = match options.schema {
                        Some(_) => reason,
                        None => format!(
                            "{reason} (type inferred from {}; declare the column in [spools.NAME.schema] or raise infer_rows)",
                            options
                                .infer_rows
                                .map_or("the whole file".to_string(), |n| format!("the first {n} rows"))
                        ),
                    };
                    return Err(ConvertError::BadInput { line, reason });
                }
            }
        }
        sink.write_row(&values)?;
        // Each row's values borrow the record, which the next read reuses.
        values = reuse(values);
        rows += 1;
    }
    if let Some((byte, line)) = last {
        if ends_inside_quotes(&options.csv, source, byte)? {
            return Err(ConvertError::BadInput {
                line,
                reason:
                    "a quoted field opened in this row is never closed (a stray quote character?)"
                        .into(),
            });
        }
    }
    Ok((sink, rows))
}

/// Empties a vector of borrowed values so its allocation outlives the borrow.
fn reuse<'a>(mut v: Vec<Value<'_>>) -> Vec<Value<'a>> {
    v.clear();
    v.into_iter().map(|_| Value::Null).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::jsonl::JsonLines;
    use crate::transcode::table::ColumnType;
    use std::io::Write;

    fn run(options: &TableOptions, content: &[u8]) -> Result<(String, u64), ConvertError> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(content).unwrap();
        let (sink, rows) = convert(options, &file, |columns| {
            JsonLines::new(Vec::new(), columns)
        })?;
        Ok((String::from_utf8(sink.finish().unwrap()).unwrap(), rows))
    }

    fn bad(options: &TableOptions, content: &[u8]) -> (u64, String) {
        match run(options, content) {
            Err(ConvertError::BadInput { line, reason }) => (line, reason),
            other => panic!("expected bad input, got {other:?}"),
        }
    }

    #[test]
    fn a_row_past_max_row_size_fails_at_its_line_without_reading_the_rest() {
        let options = TableOptions {
            csv: CsvOptions {
                max_row_size: 4096,
                ..CsvOptions::default()
            },
            ..TableOptions::default()
        };
        // An unclosed quote on line 3 makes the rest of the file (4 MiB) one row.
        let mut content = b"id,name\n1,a\n2,\"never closed\n".to_vec();
        content.extend(std::iter::repeat_n(b'x', 4 << 20));
        let (line, reason) = bad(&options, &content);
        assert_eq!(line, 3);
        assert!(reason.contains("max_row_size"), "{reason}");
        // Nor may a header of commas ask for millions of columns.
        let commas = ",".repeat(MAX_COLUMNS);
        let (line, reason) = bad(&options, format!("{commas}\n{commas}\n").as_bytes());
        assert_eq!(line, 1);
        assert!(reason.contains("at most 10000 columns"), "{reason}");
        // Rows under the cap are fine.
        let (_, rows) = run(&options, b"id,name\n1,a\n2,b\n").unwrap();
        assert_eq!(rows, 2);
    }

    #[test]
    fn quotes_that_close_and_a_bom_without_a_header_are_fine() {
        let (out, rows) = run(
            &TableOptions::default(),
            b"a,b\n1,\"two\nlines, \"\"quoted\"\"\"\n2,5\" pipe\n3,\"x\"y\n",
        )
        .unwrap();
        assert_eq!(rows, 3);
        assert!(out.contains(r#""b":"two\nlines, \"quoted\"""#), "{out}");
        assert!(out.contains(r#""b":"5\" pipe""#), "{out}");
        let headless = TableOptions {
            csv: CsvOptions {
                header: false,
                ..CsvOptions::default()
            },
            ..TableOptions::default()
        };
        let (out, _) = run(&headless, b"\xef\xbb\xbf1,2\n3,4\n").unwrap();
        assert_eq!(
            out,
            "{\"column_1\":1,\"column_2\":2}\n{\"column_1\":3,\"column_2\":4}\n"
        );
    }

    #[test]
    fn types_are_inferred_over_the_whole_file_by_default() {
        let (out, rows) = run(
            &TableOptions::default(),
            b"\xef\xbb\xbfid,price,when\n1,2,2026-01-01\n2,,2026-01-02\n3,2.5,2026-01-03\n",
        )
        .unwrap();
        assert_eq!(rows, 3);
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            [
                r#"{"id":1,"price":2.0,"when":"2026-01-01"}"#,
                r#"{"id":2,"price":null,"when":"2026-01-02"}"#,
                r#"{"id":3,"price":2.5,"when":"2026-01-03"}"#,
            ],
            "a float seen last still types the whole column; the BOM is dropped"
        );
    }

    #[test]
    fn bad_rows_name_their_line() {
        let options = TableOptions::default();
        assert_eq!(
            bad(&options, b"a,b\n1,2\n3\n"),
            (3, "row has 1 fields but the header has 2".into())
        );
        assert_eq!(
            bad(&options, b"a,b\n1,\"x\n2,y\n3,z\n"),
            (
                2,
                "a quoted field opened in this row is never closed (a stray quote character?)"
                    .into()
            ),
            "a stray quote would swallow the rows after it"
        );
        let (line, reason) = bad(&options, b"a,b\n1,2\n3,\xff\xfe\n");
        assert_eq!((line, reason.as_str()), (3, "field 2 is not valid UTF-8"));
        let sampled = TableOptions {
            infer_rows: Some(2),
            ..TableOptions::default()
        };
        let (line, reason) = bad(&sampled, b"n\n1\n2\nthree\n");
        assert_eq!(line, 4);
        assert!(
            reason.starts_with(
                "column \"n\": \"three\" is not an integer (type inferred from the first 2 rows"
            ),
            "{reason}"
        );
        assert_eq!(bad(&options, b"").0, 1);
        assert!(bad(&options, b"a,a\n1,2\n").1.contains("appears twice"));
    }

    #[test]
    fn a_declared_schema_is_matched_by_name_or_position() {
        let schema = vec![
            Column {
                name: "id".into(),
                ty: ColumnType::Integer,
                nullable: false,
            },
            Column {
                name: "ok".into(),
                ty: ColumnType::Boolean,
                nullable: true,
            },
        ];
        let named = TableOptions {
            schema: Some(schema.clone()),
            ..TableOptions::default()
        };
        let (out, _) = run(&named, b"ok,id\ntrue,7\n,8\n").unwrap();
        assert_eq!(out, "{\"ok\":true,\"id\":7}\n{\"ok\":null,\"id\":8}\n");
        assert_eq!(
            bad(&named, b"id,extra\n1,2\n"),
            (
                1,
                "header column \"extra\" is not in the declared schema".into()
            )
        );
        assert_eq!(
            bad(&named, b"id,ok\n,true\n"),
            (2, "column \"id\" is empty but may not be".into())
        );
        let positional = TableOptions {
            schema: Some(schema),
            csv: CsvOptions {
                delimiter: b';',
                quote: b'\'',
                header: false,
                ..CsvOptions::default()
            },
            infer_rows: None,
        };
        let (out, rows) = run(&positional, b"1;'true'\n2;false\n").unwrap();
        assert_eq!(rows, 2, "no header: every row is data");
        assert_eq!(out, "{\"id\":1,\"ok\":true}\n{\"id\":2,\"ok\":false}\n");
        assert_eq!(
            bad(&positional, b"1;true;x\n").1,
            "row has 3 fields but the schema declares 2 columns"
        );
    }
}
