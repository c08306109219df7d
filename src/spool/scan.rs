//! Walking a spool and looking at single files, without ever following a symlink.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::Spool;
use crate::queue::FileStamp;

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
}

/// The path of `path` relative to the spool root, if it is inside it.
pub fn relative(root: &Path, path: &Path) -> Option<(String, bool)> {
    let rel = path.strip_prefix(root).ok()?;
    let mut parts = Vec::new();
    let mut utf8 = true;
    for component in rel.components() {
        match component {
            std::path::Component::Normal(name) => match name.to_str() {
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

/// Looks at one path: `Ok(Some)` for a wanted regular file, `Ok(None)` for anything else
/// (directory, symlink, unwanted name), `Err` when it cannot be looked at (often: gone).
pub fn look(spool: &Spool, path: &Path) -> io::Result<Option<Seen>> {
    let Some((rel, utf8)) = relative(&spool.path, path) else {
        return Ok(None);
    };
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.file_type().is_file() || !filter::wanted(spool, &rel) {
        return Ok(None);
    }
    Ok(Some(Seen {
        path: path.to_path_buf(),
        rel,
        utf8,
        stamp: FileStamp::of(&meta),
        mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    }))
}

/// Walks `dir` (the spool root or a folder in it) and returns every wanted file. Unreadable
/// folders are reported through `on_error` and skipped; the walk goes on.
pub fn walk(spool: &Spool, dir: &Path, on_error: &mut dyn FnMut(&Path, io::Error)) -> Vec<Seen> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                on_error(&dir, e);
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // DirEntry::file_type does not follow symlinks.
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if filter::walk_dir(&entry.file_name().to_string_lossy()) {
                    stack.push(path);
                }
            } else if kind.is_file() {
                match look(spool, &path) {
                    Ok(Some(seen)) => found.push(seen),
                    Ok(None) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => on_error(&path, e),
                }
            }
        }
    }
    found
}
