//! Walking a spool and looking at single files, without ever following a symlink: every
//! folder and file is reached from the spool's held root ([`crate::beneath::Root`]).

use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use crate::beneath::{self, Kind, Root};
use crate::config::Spool;
use crate::queue::{FileStamp, Likeness};

use super::filter;

/// A regular file seen in a spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub path: PathBuf,
    /// Relative to the spool, `/`-separated. Lossy if the name is not UTF-8.
    pub rel: String,
    /// False when the path is not valid UTF-8 (it cannot become an object key).
    pub utf8: bool,
    pub stamp: FileStamp,
    pub mtime: SystemTime,
    /// Birth time in unix nanoseconds, where the file system keeps one.
    pub birth_ns: Option<i64>,
    /// When the stamp was read (the queue's clock, unix milliseconds).
    pub seen_at_ms: i64,
}

/// The path of `path` relative to the spool root, if it is inside it.
pub fn relative(root: &Path, path: &Path) -> Option<(String, bool)> {
    let rel = path.strip_prefix(root).ok()?;
    let mut parts = Vec::new();
    let mut utf8 = true;
    for component in rel.components() {
        match component {
            Component::Normal(name) => match name.to_str() {
                Some(s) => parts.push(s.to_string()),
                None => {
                    utf8 = false;
                    parts.push(name.to_string_lossy().into_owned());
                }
            },
            _ => return None,
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some((parts.join("/"), utf8))
}

/// What one path in a spool is.
#[derive(Debug)]
pub enum Looked {
    /// A wanted regular file.
    File(Seen),
    /// A folder (walk it).
    Dir,
    /// Anything else: gone, unwanted, a symlink, or reached through one.
    Nothing,
}

/// Looks at one path inside the spool, resolved beneath the root. A path that runs through
/// a symlinked folder is refused, with a reason in the log.
pub fn look(spool: &Spool, root: &Root, path: &Path) -> Looked {
    let Some((rel, utf8)) = relative(root.path(), path) else {
        return Looked::Nothing;
    };
    let rel_path = root.relative(path).unwrap_or(path);
    let meta = match root.entry(rel_path).and_then(|e| e.metadata()) {
        Ok(meta) => meta,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            tracing::warn!(spool = %spool.name, path = %path.display(),
                "refused: the path runs through a symlink inside the spool, which is never followed");
            return Looked::Nothing;
        }
        Err(_) => return Looked::Nothing,
    };
    if meta.is_dir() {
        return Looked::Dir;
    }
    if !meta.file_type().is_file() || !filter::wanted(spool, &rel) {
        return Looked::Nothing;
    }
    Looked::File(seen(path.to_path_buf(), rel, utf8, &meta))
}

/// Whether the file of `stamp` is no longer at `path` (inside the spool): the lookup says
/// the name is gone, or holds something else (with [`Likeness::SizeAndMtime`], a file of
/// another size or mtime). A lookup that fails otherwise (no access, an I/O error) proves
/// nothing, and counts as still there.
pub fn moved_away(root: &Root, path: &Path, stamp: FileStamp, likeness: Likeness) -> bool {
    let Some(rel) = root.relative(path) else {
        return true;
    };
    match root.entry(rel).and_then(|e| e.metadata()) {
        Ok(meta) => {
            let there = FileStamp::of(&meta);
            let alike = match likeness {
                Likeness::Exact => there == stamp,
                Likeness::SizeAndMtime => there.alike(stamp),
            };
            !(meta.file_type().is_file() && alike)
        }
        Err(e) => e.kind() == io::ErrorKind::NotFound || beneath::is_symlink_refusal(&e),
    }
}

fn seen(path: PathBuf, rel: String, utf8: bool, meta: &std::fs::Metadata) -> Seen {
    Seen {
        path,
        rel,
        utf8,
        stamp: FileStamp::of(meta),
        mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        birth_ns: FileStamp::birth_of(meta),
        seen_at_ms: crate::clock::now_ms(),
    }
}

/// Walks `dir` (the spool root or a folder in it) and returns every wanted file. Unreadable
/// folders are reported through `on_error` and skipped; the walk goes on. Symlinks are
/// neither walked into nor delivered.
pub fn walk(
    spool: &Spool,
    root: &Root,
    dir: &Path,
    on_error: &mut dyn FnMut(&Path, io::Error),
) -> Vec<Seen> {
    let mut found = Vec::new();
    walk_in_chunks(spool, root, dir, usize::MAX, on_error, &mut |chunk| {
        found.extend(chunk);
        true
    });
    found
}

/// [`walk`], handing the files found to `sink` `chunk` at a time as the walk goes (so a
/// start-up scan's files are queued while the rest of the spool is still read). The walk
/// stops early when `sink` returns false.
pub fn walk_in_chunks(
    spool: &Spool,
    root: &Root,
    dir: &Path,
    chunk: usize,
    on_error: &mut dyn FnMut(&Path, io::Error),
    sink: &mut dyn FnMut(Vec<Seen>) -> bool,
) {
    let mut found = Vec::new();
    let Some(start) = root.relative(dir) else {
        return;
    };
    let mut stack = vec![start.to_path_buf()];
    // False once `sink` asked to stop.
    let mut going = true;
    while let Some(rel_dir) = stack.pop() {
        let abs_dir = root.path().join(&rel_dir);
        let fd = match root.open_dir(&rel_dir) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                on_error(&abs_dir, e);
                continue;
            }
        };
        // Streamed: each name is looked at as the folder is read.
        let listed = beneath::each_listed(&fd, &mut |listed| {
            let rel_path = rel_dir.join(&listed.name);
            match listed.kind {
                Kind::Dir => {
                    if filter::walk_dir(&listed.name.to_string_lossy()) {
                        stack.push(rel_path);
                    }
                }
                Kind::File => {
                    let path = root.path().join(&rel_path);
                    let Some((rel, utf8)) = relative(root.path(), &path) else {
                        return true;
                    };
                    if !filter::wanted(spool, &rel) {
                        return true;
                    }
                    match beneath::metadata_in(&fd, &listed.name) {
                        Ok(meta) if meta.file_type().is_file() => {
                            found.push(seen(path, rel, utf8, &meta));
                            if found.len() >= chunk && !sink(std::mem::take(&mut found)) {
                                going = false;
                                return false;
                            }
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => on_error(&path, e),
                    }
                }
                Kind::Other => {}
            }
            true
        });
        if let Err(e) = listed {
            on_error(&abs_dir, e);
        }
        if !going {
            return;
        }
    }
    if !found.is_empty() {
        sink(found);
    }
}
