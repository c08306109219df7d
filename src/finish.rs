//! What happens to a source file after S3 confirmed its object and the row is `done`:
//! delete it, move it under `archive_dir`, or keep it.
//!
//! Only the very file that was uploaded is touched: if the path now holds another file
//! (different inode, size or mtime), it is left for the watcher to queue as a new file.
//! [`Finishing`] makes sure one actor at a time finishes a row: the uploader right after
//! marking it done, or the watcher when it finds a delivered file a crash left behind.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

/// Row ids whose source is being finished right now, shared by uploader and watcher.
#[derive(Clone, Default)]
pub struct Finishing(Arc<Mutex<HashSet<i64>>>);

impl Finishing {
    /// Claims row `id`; false if someone else is finishing it.
    pub fn claim(&self, id: i64) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(id)
    }

    pub fn release(&self, id: i64) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
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

/// Moves `source` to `dir/rel`, or `dir/rel.<id>` if that name is taken. Never overwrites:
/// names are made with link(2), which fails if the name exists.
fn archive(source: &Path, dir: &Path, rel: &str, id: i64) -> io::Result<PathBuf> {
    let target = dir.join(rel);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let alternate = with_suffix(&target, &format!(".{id}"));
    match place(source, &target, &alternate) {
        Ok(placed) => {
            std::fs::remove_file(source)?;
            Ok(placed)
        }
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            // Another file system: copy under a name of our own, make it durable, link
            // that into place, then remove the staging name and the source.
            let staged = with_suffix(&target, &format!(".s3spool-partial-{id}"));
            let _ = std::fs::remove_file(&staged); // left by a crash mid-copy
            copy_durably(source, &staged)?;
            let placed = place(&staged, &target, &alternate);
            std::fs::remove_file(&staged)?;
            let placed = placed?;
            std::fs::remove_file(source)?;
            Ok(placed)
        }
        Err(e) => Err(e),
    }
}

/// Links `from` as `target`, or as `alternate` when `target` is taken by another file.
/// A name that already links to `from` itself (a crash after linking) counts as done.
fn place(from: &Path, target: &Path, alternate: &Path) -> io::Result<PathBuf> {
    for name in [target, alternate] {
        match std::fs::hard_link(from, name) {
            Ok(()) => return Ok(name.to_path_buf()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if same_inode(from, name)? {
                    return Ok(name.to_path_buf());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{} and {} are both taken",
            target.display(),
            alternate.display()
        ),
    ))
}

fn same_inode(a: &Path, b: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (std::fs::symlink_metadata(a)?, std::fs::symlink_metadata(b)?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn copy_durably(source: &Path, staged: &Path) -> io::Result<()> {
    let mut from = std::fs::File::open(source)?;
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(staged)?;
    io::copy(&mut from, &mut to)?;
    to.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_never_overwrites_and_survives_a_rerun() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, archive_dir) = (dir.path().join("spool"), dir.path().join("archive"));
        std::fs::create_dir_all(spool.join("x")).unwrap();
        let source = spool.join("x/a.csv");

        std::fs::write(&source, b"one").unwrap();
        assert_eq!(
            archive(&source, &archive_dir, "x/a.csv", 1).unwrap(),
            archive_dir.join("x/a.csv")
        );
        std::fs::write(&source, b"two").unwrap();
        assert_eq!(
            archive(&source, &archive_dir, "x/a.csv", 2).unwrap(),
            archive_dir.join("x/a.csv.2")
        );
        assert_eq!(std::fs::read(archive_dir.join("x/a.csv")).unwrap(), b"one");
        assert_eq!(
            std::fs::read(archive_dir.join("x/a.csv.2")).unwrap(),
            b"two"
        );
        assert!(!source.exists());

        // A crash after linking but before removing the source: the re-run finds its own
        // link and makes no second copy.
        std::fs::write(&source, b"three").unwrap();
        std::fs::hard_link(&source, archive_dir.join("x/a.csv.3")).unwrap();
        assert_eq!(
            archive(&source, &archive_dir, "x/a.csv", 3).unwrap(),
            archive_dir.join("x/a.csv.3")
        );
        assert_eq!(std::fs::read_dir(archive_dir.join("x")).unwrap().count(), 3);
    }
}
