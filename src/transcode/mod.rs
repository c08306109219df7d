//! Converting a source file before upload, streaming with memory bounded whatever the file
//! size. The result goes to a work file in `state_dir/work/`, named after the queue row, so
//! the converted file is uploaded (and resumed after a crash) like any other file; it is
//! removed once the row no longer needs it.
//!
//! Conversion is deterministic (same source, same settings, same bytes), so a work file
//! lost in a crash is simply made again, and a resumed multipart upload still matches.

mod gzip;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::key::ExtRule;

/// What a spool delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The source bytes as they are.
    Raw,
    /// gzip of the source bytes; the object decompresses to exactly the source.
    Gzip { level: u32 },
}

impl Format {
    /// How the format changes `{ext}` in keys.
    pub fn ext_rule(self) -> ExtRule {
        match self {
            Format::Raw => ExtRule::Keep,
            Format::Gzip { .. } => ExtRule::Append("gz"),
        }
    }

    /// The object's Content-Type, from the format and the source's extension.
    pub fn content_type(self, source_ext: &str) -> &'static str {
        match self {
            // A .gz object is a gzip file to download, not text to inflate on the fly, so
            // no Content-Encoding.
            Format::Gzip { .. } => "application/gzip",
            Format::Raw => content_type_for(source_ext),
        }
    }
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

/// Converts `source` into the work file at `out` (replacing any earlier one) and returns
/// the open result. Runs on a blocking thread; memory stays within a few buffers.
pub fn convert(format: Format, source: &File, out: &Path) -> io::Result<File> {
    use std::io::Seek;
    // The descriptor's offset is shared with every clone of it: start from the start.
    (&*source).seek(io::SeekFrom::Start(0))?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Written under a temporary name and renamed when complete: a crash never leaves a
    // half-converted file under the name a later attempt would trust.
    let partial = out.with_extension("partial");
    let mut writer = File::create(&partial)?;
    match format {
        Format::Raw => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "raw files are not converted",
            ))
        }
        Format::Gzip { level } => gzip::compress(source, &mut writer, level)?,
    }
    writer.sync_all()?;
    drop(writer);
    std::fs::rename(&partial, out)?;
    File::open(out)
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

    #[test]
    fn ext_and_content_type() {
        assert_eq!(Format::Gzip { level: 6 }.ext_rule().apply("csv"), "csv.gz");
        assert_eq!(Format::Gzip { level: 6 }.ext_rule().apply(""), "gz");
        assert_eq!(Format::Raw.ext_rule().apply("csv"), "csv");
        assert_eq!(ExtRule::Replace("parquet").apply("csv"), "parquet");
        assert_eq!(Format::Raw.content_type("CSV"), "text/csv");
        assert_eq!(Format::Raw.content_type("bin"), "application/octet-stream");
        assert_eq!(
            Format::Gzip { level: 1 }.content_type("csv"),
            "application/gzip"
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
        let mut first = Vec::new();
        convert(Format::Gzip { level: 6 }, &File::open(&src).unwrap(), &out)
            .unwrap()
            .read_to_end(&mut first)
            .unwrap();
        let mut second = Vec::new();
        convert(Format::Gzip { level: 6 }, &File::open(&src).unwrap(), &out)
            .unwrap()
            .read_to_end(&mut second)
            .unwrap();
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
