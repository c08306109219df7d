//! Reaching files below a spool root without ever following a symlink under it.
//!
//! Producers control every folder and name inside a spool, and may swap a folder for a
//! symlink at any moment. So a path inside a spool is never handed to the kernel whole:
//! it is resolved one component at a time from the root's directory handle with
//! `O_NOFOLLOW | O_DIRECTORY`, and a symlink anywhere below the root fails the lookup
//! (`ELOOP`/`ENOTDIR`) instead of leading outside. Stat, open, rename, unlink and link then
//! act on a name *in the verified parent's handle*, so a swap between a check and an act
//! cannot redirect the act.
//!
//! The root itself is held, not trusted: it is opened once (at start and at reload) by its
//! canonical path with `O_DIRECTORY | O_NOFOLLOW`, and every lookup starts from that
//! handle ([`Root`]). Whoever may write the root's parent may rename the root away and put
//! a symlink (or another folder) in its place; [`Root::check`] then says the path no
//! longer names the folder held, and the spool stops, touching nothing.

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// A spool root, held open: lookups start from the handle, never from the path again.
#[derive(Debug)]
pub struct Root {
    path: PathBuf,
    dir: OwnedFd,
    /// What the folder was when opened (device, inode): the path must still name it.
    dev: u64,
    ino: u64,
    /// What the last [`Root::check`] found: the path names another folder.
    moved: std::sync::atomic::AtomicBool,
}

/// The roots of the running config's spools, by spool name.
pub type Roots = std::sync::Arc<std::collections::HashMap<String, std::sync::Arc<Root>>>;

/// A root whose path no longer names the folder held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path} {now}")]
pub struct RootMoved {
    pub path: PathBuf,
    /// What the path is now, in words.
    pub now: String,
}

impl Root {
    /// Opens the folder at `path` (canonical: no symlink on the way) as a root. A symlink
    /// there is refused.
    pub fn open(path: &Path) -> io::Result<Root> {
        let dir = rustix::fs::open(path, dir_flags() | OFlags::NOFOLLOW, Mode::empty())?;
        let st = rustix::fs::fstat(&dir)?;
        Ok(Root {
            path: path.to_path_buf(),
            dir,
            dev: st.st_dev,
            ino: st.st_ino,
            moved: Default::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the root's path still names the folder held (not a symlink, not another
    /// folder, not gone). An error that is not about the path (no access to its parent)
    /// proves nothing and passes.
    pub fn check(&self) -> Result<(), RootMoved> {
        let found = self.look();
        self.moved
            .store(found.is_err(), std::sync::atomic::Ordering::Relaxed);
        found
    }

    /// What the last [`Root::check`] found: the path names another folder (or nothing).
    pub fn is_moved(&self) -> bool {
        self.moved.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn look(&self) -> Result<(), RootMoved> {
        use std::os::unix::fs::MetadataExt;
        let moved = |now: &str| RootMoved {
            path: self.path.clone(),
            now: now.to_string(),
        };
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.file_type().is_symlink() => Err(moved("is now a symlink")),
            Ok(meta) if !meta.is_dir() => Err(moved("is no longer a folder")),
            Ok(meta) if (meta.dev(), meta.ino()) != (self.dev, self.ino) => Err(moved(
                "names another folder than the one opened (renamed away and replaced?)",
            )),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(moved("no longer exists")),
            Err(e) if is_symlink_refusal(&e) => Err(moved("is no longer reached by its path")),
            Err(_) => Ok(()),
        }
    }

    /// Opens the folder `rel_dir` beneath the root (empty: the root itself).
    pub fn open_dir(&self, rel_dir: &Path) -> io::Result<OwnedFd> {
        let mut dir = self.dir.try_clone()?;
        for part in components(rel_dir)? {
            dir = rustix::fs::openat(&dir, part, dir_flags() | OFlags::NOFOLLOW, Mode::empty())?;
        }
        Ok(dir)
    }

    /// Opens the folder `rel_dir` beneath the root, making the folders missing on the way
    /// (mode 0750 before the umask); a symlink on the way is refused, never followed.
    pub fn create_dirs(&self, rel_dir: &Path) -> io::Result<OwnedFd> {
        let mut dir = self.dir.try_clone()?;
        for part in components(rel_dir)? {
            let flags = dir_flags() | OFlags::NOFOLLOW;
            dir = match rustix::fs::openat(&dir, part, flags, Mode::empty()) {
                Ok(next) => next,
                Err(rustix::io::Errno::NOENT) => {
                    match rustix::fs::mkdirat(&dir, part, Mode::from_raw_mode(0o750)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    rustix::fs::openat(&dir, part, flags, Mode::empty())?
                }
                Err(e) => return Err(e.into()),
            };
        }
        Ok(dir)
    }

    /// The entry `rel` beneath the root: its parent opened from the root's handle, and its
    /// last name.
    pub fn entry(&self, rel: &Path) -> io::Result<Entry> {
        let parts = components(rel)?;
        let Some((name, folders)) = parts.split_last() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an empty path names no file",
            ));
        };
        let dir = self.open_dir(&folders.iter().collect::<PathBuf>())?;
        Ok(Entry {
            dir,
            name: name.to_os_string(),
        })
    }

    /// `rel` of an absolute path inside the root, if it is inside.
    pub fn relative<'a>(&self, path: &'a Path) -> Option<&'a Path> {
        path.strip_prefix(&self.path).ok()
    }
}

/// A name in a directory that was reached without following a symlink.
#[derive(Debug)]
pub struct Entry {
    dir: OwnedFd,
    name: OsString,
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

    /// Makes `to` a second name of this file (a name in another folder reached beneath a
    /// held root); fails if `to` exists.
    pub fn link_as(&self, to: &Entry) -> io::Result<()> {
        Ok(rustix::fs::linkat(
            &self.dir,
            &self.name,
            &to.dir,
            &to.name,
            AtFlags::empty(),
        )?)
    }

    /// Creates this name as a new file for writing (never an existing one, never through
    /// a symlink).
    pub fn create_new(&self) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.dir,
            &self.name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o640),
        )?;
        Ok(File::from(fd))
    }

    /// Makes the folder this name is in durable (its entries survive a crash).
    pub fn sync_dir(&self) -> io::Result<()> {
        Ok(rustix::fs::fsync(&self.dir)?)
    }

    /// A name in the open folder `dir`.
    pub fn in_dir(dir: &OwnedFd, name: impl Into<OsString>) -> io::Result<Entry> {
        Ok(Entry {
            dir: dir.try_clone()?,
            name: name.into(),
        })
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
/// symlinks: handed to `each` one at a time as the directory is read (a folder of a
/// million files is never held whole); stops early when `each` returns false.
pub fn each_listed(dir: &OwnedFd, each: &mut dyn FnMut(Listed) -> bool) -> io::Result<()> {
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
        let go_on = each(Listed {
            name: name.to_os_string(),
            kind,
        });
        if !go_on {
            break;
        }
    }
    Ok(())
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

        let mine = Root::open(&root)
            .unwrap()
            .entry(Path::new("real/x.txt"))
            .unwrap();
        assert_eq!(
            std::io::read_to_string(mine.open_file().unwrap()).unwrap(),
            "mine"
        );
        let e = Root::open(&root)
            .unwrap()
            .entry(Path::new("d/x.txt"))
            .unwrap_err();
        assert!(is_symlink_refusal(&e), "{e}");
        // The last name as a symlink: reported as one, never opened.
        symlink(outside.join("x.txt"), root.join("real/link.txt")).unwrap();
        let link = Root::open(&root)
            .unwrap()
            .entry(Path::new("real/link.txt"))
            .unwrap();
        assert!(link.metadata().unwrap().file_type().is_symlink());
        assert!(link.open_file().is_err());
        assert!(Root::open(&root)
            .unwrap()
            .entry(Path::new("../outside/x.txt"))
            .is_err());
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
        let e = Root::open(&root)
            .unwrap()
            .entry(Path::new("d/x.txt"))
            .unwrap();
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
        let fd = Root::open(dir.path())
            .unwrap()
            .open_dir(Path::new(""))
            .unwrap();
        let mut seen: Vec<(String, Kind)> = Vec::new();
        each_listed(&fd, &mut |l| {
            seen.push((l.name.to_string_lossy().into_owned(), l.kind));
            true
        })
        .unwrap();
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
    fn a_root_replaced_by_a_symlink_is_seen_and_the_held_folder_is_what_is_reached() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("spool"), dir.path().join("outside"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("x.txt"), b"mine").unwrap();
        std::fs::write(outside.join("x.txt"), b"theirs").unwrap();
        let held = Root::open(&root).unwrap();
        assert_eq!(held.check(), Ok(()));
        assert!(!held.is_moved());
        // Renamed away, and a symlink to an outside folder put in its place.
        std::fs::rename(&root, dir.path().join("away")).unwrap();
        symlink(&outside, &root).unwrap();
        let moved = held.check().unwrap_err();
        assert!(moved.to_string().contains("is now a symlink"), "{moved}");
        assert!(held.is_moved());
        // What the handle reaches is the folder opened, never the one the path names now.
        let file = held.entry(Path::new("x.txt")).unwrap().open_file().unwrap();
        assert_eq!(std::io::read_to_string(file).unwrap(), "mine");
        // Another folder under the same name is another folder.
        std::fs::remove_file(&root).unwrap();
        std::fs::create_dir(&root).unwrap();
        let moved = held.check().unwrap_err();
        assert!(moved.to_string().contains("another folder"), "{moved}");
        // Back where it was: the same folder again.
        std::fs::remove_dir(&root).unwrap();
        std::fs::rename(dir.path().join("away"), &root).unwrap();
        assert_eq!(held.check(), Ok(()));
        assert!(!held.is_moved());
        // A root that is a symlink is refused at open.
        symlink(&outside, dir.path().join("link")).unwrap();
        assert!(Root::open(&dir.path().join("link")).is_err());
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
