//! Creating a spool folder that does not exist yet, as a tmpfiles line for it would: mode
//! 2770 (setgid, so producers' files stay in the daemon's group and it can read and delete
//! them; the group may write), whatever the umask the daemon runs under (0077 in the unit).
//! Missing parents get 0750: producers may pass through them, not change them, so none can
//! swap a new folder for a symlink before its mode is set.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The mode of a spool folder the daemon creates.
pub const MODE: u32 = 0o2770;
/// The mode of a missing parent it creates on the way.
pub const PARENT_MODE: u32 = 0o750;

/// A folder made, with the mode and group it ended up with (the kernel drops the setgid
/// bit when the daemon is not in the folder's group).
#[derive(Debug, PartialEq, Eq)]
pub struct Created {
    pub path: PathBuf,
    pub mode: u32,
    pub group: String,
}

/// Creates `path` with [`MODE`] and any missing parent with [`PARENT_MODE`]; returns those
/// it created, outermost first (none if `path` exists).
pub fn create(path: &Path) -> io::Result<Vec<Created>> {
    let mut missing = Vec::new();
    let mut at = path;
    while std::fs::symlink_metadata(at).is_err() {
        missing.push(at.to_path_buf());
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => break,
        }
    }
    missing.reverse();
    let mut created = Vec::new();
    for folder in missing {
        let mode = if folder == path { MODE } else { PARENT_MODE };
        match std::fs::DirBuilder::new().mode(mode).create(&folder) {
            Ok(()) => {}
            // Made meanwhile (another spool sharing a parent): not ours to change.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        // mkdir's mode passes through the umask: set it as asked, on the folder just
        // made (never through a symlink put in its place).
        let dir = rustix::fs::open(
            &folder,
            rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::NOFOLLOW
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        rustix::fs::fchmod(&dir, rustix::fs::Mode::from_raw_mode(mode))?;
        let meta = rustix::fs::fstat(&dir)?;
        created.push(Created {
            path: folder,
            mode: meta.st_mode & 0o7777,
            group: group_name(meta.st_gid),
        });
    }
    Ok(created)
}

/// The name of group `gid`, or its number when it has no name.
pub fn group_name(gid: u32) -> String {
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: getgrgid_r writes into `group` and `buf`, both alive and sized as passed;
    // `found` is null or points at `group`.
    let rc = unsafe { libc::getgrgid_r(gid, &mut group, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        return gid.to_string();
    }
    // SAFETY: on success gr_name is a NUL-terminated string inside `buf`.
    unsafe { std::ffi::CStr::from_ptr(group.gr_name) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn every_folder_made_gets_the_mode_through_the_umask() {
        // The test's umask (022 or tighter) takes the group's write bit from mkdir's mode:
        // the mode must be set again. The daemon under umask 0077: tests/integration.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/orders");
        let created = create(&path).unwrap();
        let paths: Vec<&Path> = created.iter().map(|c| c.path.as_path()).collect();
        assert_eq!(
            paths,
            [dir.path().join("a"), dir.path().join("a/b"), path.clone()]
        );
        let modes: Vec<u32> = created
            .iter()
            .map(|c| std::fs::metadata(&c.path).unwrap().mode() & 0o7777)
            .collect();
        assert_eq!(modes, [PARENT_MODE, PARENT_MODE, MODE]);
        assert_eq!(created[2].mode, MODE, "what it reports is what it got");
        assert!(!created[2].group.is_empty());
        assert!(create(&path).unwrap().is_empty(), "nothing to make twice");
    }
}
