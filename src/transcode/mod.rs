//! Converting a source file before upload, streaming with memory bounded whatever the file
//! size. The result goes to a work file in `state_dir/work/`, named after the queue row, so
//! the converted file is uploaded (and resumed after a crash) like any other file; it is
//! removed once the row no longer needs it.
//!
//! Conversion is deterministic (same source, same settings, same bytes), so a work file
//! lost in a crash is simply made again, and a resumed multipart upload still matches.

mod gzip;
mod jsonl;
mod openpgp;
mod parquet;
pub mod table;
pub mod tabular;

use std::fs::File;
use std::io::{self, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::key::ExtRule;
pub use openpgp::Recipient;
pub use parquet::ParquetCompression;
pub use tabular::{CsvOptions, TableOptions};

/// What a spool delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The source bytes as they are.
    Raw,
    /// gzip of the source bytes; the object decompresses to exactly the source.
    Gzip { level: u32 },
    /// A typed Parquet file made from a CSV source.
    Parquet {
        compression: ParquetCompression,
        row_group_rows: usize,
    },
    /// One JSON object per CSV row.
    Jsonl,
}

impl Format {
    /// The name the config and manifests use.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Gzip { .. } => "gzip",
            Format::Parquet { .. } => "parquet",
            Format::Jsonl => "jsonl",
        }
    }
}

/// Everything about what a spool's objects hold: the format, how CSV is read, and whom
/// the objects are encrypted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub format: Format,
    pub table: TableOptions,
    /// OpenPGP recipient: each object is encrypted to this key after conversion.
    pub encrypt_to: Option<Arc<Recipient>>,
}

impl Default for Output {
    fn default() -> Self {
        Output {
            format: Format::Raw,
            table: TableOptions::default(),
            encrypt_to: None,
        }
    }
}

impl Output {
    /// The object is not the source's bytes: a work file is made first.
    pub fn converts(&self) -> bool {
        self.format != Format::Raw || self.encrypt_to.is_some()
    }

    /// The name manifests give the output: the format, `+pgp` when encrypted.
    pub fn name(&self) -> String {
        match self.encrypt_to {
            Some(_) => format!("{}+pgp", self.format.name()),
            None => self.format.name().to_string(),
        }
    }

    /// How the output changes `{ext}` in keys.
    pub fn ext_rule(&self) -> ExtRule {
        let (replace, suffix) = match self.format {
            Format::Raw => (None, ""),
            Format::Gzip { .. } => (None, "gz"),
            Format::Parquet { .. } => (Some("parquet"), ""),
            Format::Jsonl => (Some("jsonl"), ""),
        };
        let suffix = match (suffix, self.encrypt_to.is_some()) {
            (suffix, false) => suffix,
            ("", true) => "gpg",
            (_, true) => "gz.gpg",
        };
        ExtRule { replace, suffix }
    }

    /// The object's Content-Type, from the output and the source's extension.
    pub fn content_type(&self, source_ext: &str) -> &'static str {
        if self.encrypt_to.is_some() {
            return "application/pgp-encrypted";
        }
        match self.format {
            // A .gz object is a gzip file to download, not text to inflate on the fly, so
            // no Content-Encoding.
            Format::Gzip { .. } => "application/gzip",
            Format::Parquet { .. } => "application/vnd.apache.parquet",
            Format::Jsonl => "application/x-ndjson",
            Format::Raw => content_type_for(source_ext),
        }
    }
}

/// Why a conversion stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// Reading the source or writing the work file failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The source is not valid input for the format: retrying cannot help.
    #[error("line {line}: {reason}")]
    BadInput { line: u64, reason: String },
}

/// A finished work file.
#[derive(Debug)]
pub struct Converted {
    pub file: File,
    /// Data rows, for tabular formats.
    pub rows: Option<u64>,
}

/// A common Content-Type for an extension; `application/octet-stream` otherwise.
pub fn content_type_for(ext: &str) -> &'static str {
    match ext.to_ascii_lowercase().as_str() {
        "csv" => "text/csv",
        "tsv" => "text/tab-separated-values",
        "txt" | "log" => "text/plain",
        "json" => "application/json",
        "jsonl" | "ndjson" => "application/x-ndjson",
        "xml" => "application/xml",
        "parquet" => "application/vnd.apache.parquet",
        "gz" => "application/gzip",
        "zip" => "application/zip",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// The work file of row `id` as held by `claim`: another claim of the same row (after a
/// lease ran out) never touches it.
pub fn work_path(state_dir: &Path, id: i64, claim: i64) -> PathBuf {
    state_dir.join("work").join(format!("{id}-{claim}.out"))
}

/// Empties the work folder; run at start, before any worker, for files a crash left.
pub fn clear_work(state_dir: &Path) {
    let dir = state_dir.join("work");
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %dir.display(), error = %e, "cannot clear the work folder"),
    }
}

/// Converts `source` into the work file at `out` (replacing any earlier one). Runs on a
/// blocking thread; memory stays within a few buffers, or one row group for Parquet.
pub fn convert(output: &Output, source: &File, out: &Path) -> Result<Converted, ConvertError> {
    // The descriptor's offset is shared with every clone of it: start from the start.
    (&*source).seek(io::SeekFrom::Start(0))?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Written under a temporary name and renamed when complete: a crash never leaves a
    // half-converted file under the name a later attempt would trust.
    let partial = out.with_extension("partial");
    let result = write_output(output, source, &partial);
    let rows = match result {
        Ok(rows) => rows,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, out)?;
    Ok(Converted {
        file: File::open(out)?,
        rows,
    })
}

/// Writes the converted source into `path`, synced; returns the row count of a table.
fn write_output(output: &Output, source: &File, path: &Path) -> Result<Option<u64>, ConvertError> {
    let Some(recipient) = &output.encrypt_to else {
        return write_format(output, source, path);
    };
    let file = File::create(path)?;
    let mut writer = BufWriter::with_capacity(256 * 1024, &file);
    let rows = if output.format == Format::Raw {
        (&*source).seek(io::SeekFrom::Start(0))?;
        recipient.encrypt(
            io::BufReader::with_capacity(256 * 1024, source),
            &mut writer,
        )?;
        None
    } else {
        // Converted into a plain work file first, then encrypted from it: both stream.
        let plain = path.with_extension("plain");
        let result = write_format(output, source, &plain).and_then(|rows| {
            let input = File::open(&plain)?;
            recipient.encrypt(io::BufReader::with_capacity(256 * 1024, input), &mut writer)?;
            Ok(rows)
        });
        let _ = std::fs::remove_file(&plain);
        result?
    };
    writer.flush()?;
    drop(writer);
    file.sync_all()?;
    Ok(rows)
}

/// Writes the source in the output's format into `path`, synced; returns the row count of
/// a table.
fn write_format(output: &Output, source: &File, path: &Path) -> Result<Option<u64>, ConvertError> {
    let file = File::create(path)?;
    let mut writer = BufWriter::with_capacity(256 * 1024, &file);
    let rows = match output.format {
        Format::Raw => {
            return Err(ConvertError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "raw files are not converted",
            )))
        }
        Format::Gzip { level } => {
            gzip::compress(source, &mut writer, level)?;
            None
        }
        Format::Jsonl => {
            let (sink, rows) = tabular::convert(&output.table, source, |columns| {
                jsonl::JsonLines::new(&mut writer, columns)
            })?;
            sink.finish()?;
            Some(rows)
        }
        Format::Parquet {
            compression,
            row_group_rows,
        } => {
            let (sink, rows) = tabular::convert(&output.table, source, |columns| {
                parquet::ParquetWriter::new(&mut writer, columns, compression, row_group_rows)
            })?;
            sink.finish()?;
            Some(rows)
        }
    };
    writer.flush()?;
    drop(writer);
    file.sync_all()?;
    Ok(rows)
}

/// Removes a claim's work file, if any.
pub fn remove_work(state_dir: &Path, id: i64, claim: i64) {
    let path = work_path(state_dir, id, claim);
    if let Err(e) = std::fs::remove_file(&path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a work file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(format: Format) -> Output {
        Output {
            format,
            ..Output::default()
        }
    }

    #[test]
    fn ext_and_content_type() {
        let gzip = output(Format::Gzip { level: 6 });
        let parquet = output(Format::Parquet {
            compression: ParquetCompression::Snappy,
            row_group_rows: 10,
        });
        assert_eq!(gzip.ext_rule().apply("csv"), "csv.gz");
        assert_eq!(gzip.ext_rule().apply(""), "gz");
        assert_eq!(Output::default().ext_rule().apply("csv"), "csv");
        assert_eq!(parquet.ext_rule().apply("csv"), "parquet");
        assert_eq!(output(Format::Jsonl).ext_rule().apply("txt"), "jsonl");
        assert_eq!(Output::default().content_type("CSV"), "text/csv");
        assert_eq!(
            Output::default().content_type("bin"),
            "application/octet-stream"
        );
        assert_eq!(gzip.content_type("csv"), "application/gzip");
        assert_eq!(
            parquet.content_type("csv"),
            "application/vnd.apache.parquet"
        );
    }

    #[test]
    fn gzip_round_trips_and_is_deterministic() {
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.csv");
        let mut f = File::create(&src).unwrap();
        for i in 0..50_000 {
            writeln!(f, "{i},name-{i},{}", i * 7).unwrap();
        }
        drop(f);
        let out = work_path(dir.path(), 1, 1);
        let gzip = || {
            let mut bytes = Vec::new();
            let source = File::open(&src).unwrap();
            let converted = convert(&output(Format::Gzip { level: 6 }), &source, &out).unwrap();
            (&converted.file).read_to_end(&mut bytes).unwrap();
            bytes
        };
        let (first, second) = (gzip(), gzip());
        assert_eq!(first, second, "same source, same bytes");
        let mut inflated = Vec::new();
        flate2::read::GzDecoder::new(&first[..])
            .read_to_end(&mut inflated)
            .unwrap();
        assert_eq!(inflated, std::fs::read(&src).unwrap());
        assert!(first.len() < inflated.len() / 2);
        remove_work(dir.path(), 1, 1);
        assert!(!out.exists());
    }
}
