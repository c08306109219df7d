//! Reaching files below a spool root without ever following a symlink under it.
//!
//! Producers control every folder and name inside a spool, and may swap a folder for a
//! symlink at any moment. So a path inside a spool is never handed to the kernel whole:
//! it is resolved one component at a time from the root's directory handle with
//! `O_NOFOLLOW | O_DIRECTORY`, and a symlink anywhere below the root fails the lookup
//! (`ELOOP`/`ENOTDIR`) instead of leading outside. Stat, open, rename, unlink and link then
//! act on a name *in the verified parent's handle*, so a swap between a check and an act
//! cannot redirect the act. The root itself is the operator's (from the config) and is
//! opened by path.

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// A name in a directory that was reached without following a symlink.
#[derive(Debug)]
pub struct Entry {
    dir: OwnedFd,
    name: OsString,
}

/// Opens the directory `root/rel_dir` (`rel_dir` may be empty: the root itself).
pub fn open_dir(root: &Path, rel_dir: &Path) -> io::Result<OwnedFd> {
    let mut dir = rustix::fs::open(root, dir_flags(), Mode::empty())?;
    for part in components(rel_dir)? {
        dir = rustix::fs::openat(&dir, part, dir_flags() | OFlags::NOFOLLOW, Mode::empty())?;
    }
    Ok(dir)
}

/// The entry `root/rel`: its parent opened beneath `root`, and its last name.
pub fn entry(root: &Path, rel: &Path) -> io::Result<Entry> {
    let parts = components(rel)?;
    let Some((name, folders)) = parts.split_last() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an empty path names no file",
        ));
    };
    let dir = open_dir(root, &folders.iter().collect::<PathBuf>())?;
    Ok(Entry {
        dir,
        name: name.to_os_string(),
    })
}

/// The directory a path inside the spool ends in: `path` minus its last `depth` names,
/// where `rel` is the part relative to the root (the row records both).
pub fn root_of(path: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel);
    if !path.ends_with(rel) {
        return None;
    }
    path.ancestors()
        .nth(rel.components().count())
        .map(Path::to_path_buf)
}

impl Entry {
    pub fn name(&self) -> &OsStr {
        &self.name
    }

    /// Another name in the same directory.
    pub fn sibling(&self, name: impl Into<OsString>) -> io::Result<Entry> {
        Ok(Entry {
            dir: self.dir.try_clone()?,
            name: name.into(),
        })
    }

    /// What the name itself is (a symlink is reported as a symlink, never followed).
    pub fn metadata(&self) -> io::Result<std::fs::Metadata> {
        metadata_in(&self.dir, &self.name)
    }

    /// Opens the name for reading; a symlink or anything but a regular file is refused.
    pub fn open_file(&self) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.dir,
            &self.name,
            // NONBLOCK: opening a FIFO planted in the spool must not hang the worker.
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        let file = File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(file)
    }

    /// Renames this name to `to` in the same directory; fails if `to` exists. Where the
    /// file system has no `RENAME_NOREPLACE` (NFS, some FUSE), `to` is made as a hard link
    /// (which fails if it exists) and this name is removed: safe when nobody else renames
    /// over this name, as for a private one.
    pub fn rename_noreplace(&self, to: &OsStr) -> io::Result<()> {
        match self.rename_flagged(to) {
            Err(e) if unsupported(e) => {
                rustix::fs::linkat(&self.dir, &self.name, &self.dir, to, AtFlags::empty())?;
                self.unlink()
            }
            other => Ok(other?),
        }
    }

    /// Renames this name to `to`, a private name of ours in the same directory that the
    /// caller saw missing: not replacing it where the file system can promise that, and a
    /// plain rename elsewhere (a hard link and an unlink would let a file renamed over
    /// this name meanwhile be removed).
    pub fn rename_to_own(&self, to: &OsStr) -> io::Result<()> {
        match self.rename_flagged(to) {
            Err(e) if unsupported(e) => {
                Ok(rustix::fs::renameat(&self.dir, &self.name, &self.dir, to)?)
            }
            other => Ok(other?),
        }
    }

    fn rename_flagged(&self, to: &OsStr) -> rustix::io::Result<()> {
        rustix::fs::renameat_with(&self.dir, &self.name, &self.dir, to, RenameFlags::NOREPLACE)
    }

    pub fn unlink(&self) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(
            &self.dir,
            &self.name,
            AtFlags::empty(),
        )?)
    }

    /// Makes `target` (a path outside the spool) a second name of this file.
    pub fn link_to(&self, target: &Path) -> io::Result<()> {
        Ok(rustix::fs::linkat(
            &self.dir,
            &self.name,
            rustix::fs::CWD,
            target,
            AtFlags::empty(),
        )?)
    }
}

/// What `name` in the open directory `dir` is, without following it.
pub fn metadata_in(dir: &OwnedFd, name: &OsStr) -> io::Result<std::fs::Metadata> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    File::from(fd).metadata()
}

/// One name in a directory listing.
pub struct Listed {
    pub name: OsString,
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// A symlink, device, socket or FIFO: never delivered, never walked into.
    Other,
}

/// The names in an open directory (not `.` and `..`), with what each is, not following
/// symlinks.
pub fn list(dir: &OwnedFd) -> io::Result<Vec<Listed>> {
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let kind = match entry.file_type() {
            rustix::fs::FileType::RegularFile => Kind::File,
            rustix::fs::FileType::Directory => Kind::Dir,
            rustix::fs::FileType::Unknown => {
                // Some file systems do not fill d_type: ask, without following.
                match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => match rustix::fs::FileType::from_raw_mode(st.st_mode) {
                        rustix::fs::FileType::RegularFile => Kind::File,
                        rustix::fs::FileType::Directory => Kind::Dir,
                        _ => Kind::Other,
                    },
                    Err(_) => continue, // gone meanwhile
                }
            }
            _ => Kind::Other,
        };
        out.push(Listed {
            name: name.to_os_string(),
            kind,
        });
    }
    Ok(out)
}

/// True when an error says a symlink (or a non-folder) stood where a folder was expected.
pub fn is_symlink_refusal(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR))
}

/// `renameat2` flags the file system (or the kernel) does not support.
fn unsupported(e: rustix::io::Errno) -> bool {
    e == rustix::io::Errno::INVAL
        || e == rustix::io::Errno::NOSYS
        || e == rustix::io::Errno::OPNOTSUPP
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC
}

/// The plain names of a relative path; anything else (`..`, `/`) is refused.
fn components(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a plain relative path", rel.display()),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_symlinked_folder_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("spool"), dir.path().join("outside"));
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("x.txt"), b"secret").unwrap();
        std::fs::write(root.join("real/x.txt"), b"mine").unwrap();
        symlink(&outside, root.join("d")).unwrap();

        let mine = entry(&root, Path::new("real/x.txt")).unwrap();
        assert_eq!(
            std::io::read_to_string(mine.open_file().unwrap()).unwrap(),
            "mine"
        );
        let e = entry(&root, Path::new("d/x.txt")).unwrap_err();
        assert!(is_symlink_refusal(&e), "{e}");
        // The last name as a symlink: reported as one, never opened.
        symlink(outside.join("x.txt"), root.join("real/link.txt")).unwrap();
        let link = entry(&root, Path::new("real/link.txt")).unwrap();
        assert!(link.metadata().unwrap().file_type().is_symlink());
        assert!(link.open_file().is_err());
        assert!(entry(&root, Path::new("../outside/x.txt")).is_err());
        assert_eq!(std::fs::read(outside.join("x.txt")).unwrap(), b"secret");
    }

    #[test]
    fn acts_go_through_the_parent_opened_before_a_swap() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("spool"), dir.path().join("outside"));
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("d/x.txt"), b"mine").unwrap();
        std::fs::write(outside.join("x.txt"), b"theirs").unwrap();
        let e = entry(&root, Path::new("d/x.txt")).unwrap();
        // The folder is renamed away and a symlink put in its place.
        std::fs::rename(root.join("d"), root.join("moved")).unwrap();
        symlink(&outside, root.join("d")).unwrap();
        e.unlink().unwrap();
        assert!(!root.join("moved/x.txt").exists());
        assert_eq!(std::fs::read(outside.join("x.txt")).unwrap(), b"theirs");
    }

    #[test]
    fn listing_reports_symlinks_as_other() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("f"), b"").unwrap();
        symlink(dir.path().join("sub"), dir.path().join("l")).unwrap();
        let fd = open_dir(dir.path(), Path::new("")).unwrap();
        let mut seen: Vec<(String, Kind)> = list(&fd)
            .unwrap()
            .into_iter()
            .map(|l| (l.name.to_string_lossy().into_owned(), l.kind))
            .collect();
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            seen,
            vec![
                ("f".into(), Kind::File),
                ("l".into(), Kind::Other),
                ("sub".into(), Kind::Dir)
            ]
        );
    }

    #[test]
    fn root_of_strips_the_relative_part() {
        assert_eq!(
            root_of(Path::new("/s/a/b.txt"), "a/b.txt"),
            Some(PathBuf::from("/s"))
        );
        assert_eq!(root_of(Path::new("/s/a/b.txt"), "c/b.txt"), None);
    }
}
