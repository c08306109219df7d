//! What happens to a source file after S3 confirmed its object and the row is `done`:
//! delete it, move it under `archive_dir`, or keep it.
//!
//! Only the very file that was uploaded is touched: if the path now holds another file
//! (different inode, size or mtime), it is left for the watcher to queue as a new file.

use std::io;
use std::path::{Path, PathBuf};

use crate::config::{AfterUpload, Spool};
use crate::queue::FileStamp;

/// What [`finish_source`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    Deleted,
    Archived(PathBuf),
    Kept,
    /// The source was already gone (a crash between this step and the last run's).
    AlreadyGone,
    /// The path now holds a different file; it was not touched.
    Replaced,
}

/// Applies the spool's `after_upload` to the uploaded file at `source`. `id` makes an
/// archive name unique when an earlier file of the same name was archived already.
pub fn finish_source(
    spool: &Spool,
    source: &Path,
    rel: &str,
    stamp: FileStamp,
    id: i64,
) -> io::Result<Finished> {
    if spool.after_upload == AfterUpload::Keep {
        return Ok(Finished::Kept);
    }
    match std::fs::symlink_metadata(source) {
        Ok(meta) if FileStamp::of(&meta) == stamp && meta.file_type().is_file() => {}
        Ok(_) => return Ok(Finished::Replaced),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Finished::AlreadyGone),
        Err(e) => return Err(e),
    }
    match &spool.after_upload {
        AfterUpload::Delete => match std::fs::remove_file(source) {
            Ok(()) => Ok(Finished::Deleted),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Finished::AlreadyGone),
            Err(e) => Err(e),
        },
        AfterUpload::Archive(dir) => archive(source, dir, rel, id).map(Finished::Archived),
        AfterUpload::Keep => Ok(Finished::Kept),
    }
}

fn archive(source: &Path, dir: &Path, rel: &str, id: i64) -> io::Result<PathBuf> {
    let mut target = dir.join(rel);
    if target.symlink_metadata().is_ok() {
        // Never overwrite an earlier archived file of the same name.
        let mut name = target.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{id}"));
        target.set_file_name(name);
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::rename(source, &target) {
        Ok(()) => Ok(target),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            // Another file system: copy, make the copy durable, then remove the source.
            let partial = target.with_extension("s3spool-partial");
            std::fs::copy(source, &partial)?;
            std::fs::File::open(&partial)?.sync_all()?;
            std::fs::rename(&partial, &target)?;
            std::fs::remove_file(source)?;
            Ok(target)
        }
        Err(e) => Err(e),
    }
}
