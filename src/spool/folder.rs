//! Creating a spool folder that does not exist yet, the way `systemd-tmpfiles` would:
//! mode 2770 (setgid, so producers' files stay in the daemon's group and it can delete
//! them; the group may write), whatever the umask the daemon runs under (0077 in the unit).

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The mode of a folder the daemon creates.
pub const MODE: u32 = 0o2770;

/// Creates `path` and any missing parent, each with [`MODE`]; returns those it created,
/// outermost first (none if `path` exists).
pub fn create(path: &Path) -> io::Result<Vec<PathBuf>> {
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
        match std::fs::DirBuilder::new().mode(MODE).create(&folder) {
            Ok(()) => {}
            // Made meanwhile (another spool sharing a parent): not ours to change.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        // mkdir's mode passes through the umask: set it as asked.
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(MODE))?;
        created.push(folder);
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

/// The group a created folder belongs to (the daemon's, or its parent's if setgid).
pub fn group_of(path: &Path) -> String {
    std::fs::metadata(path)
        .map(|m| group_name(m.gid()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_folder_made_gets_the_mode_through_the_umask() {
        // The test's umask (022 or tighter) takes the group's write bit from mkdir's mode:
        // the mode must be set again. The daemon under umask 0077: tests/integration.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/orders");
        let created = create(&path).unwrap();
        assert_eq!(
            created,
            [dir.path().join("a"), dir.path().join("a/b"), path.clone()]
        );
        for folder in &created {
            let mode = std::fs::metadata(folder).unwrap().mode() & 0o7777;
            assert_eq!(mode, MODE, "{}", folder.display());
        }
        assert!(create(&path).unwrap().is_empty(), "nothing to make twice");
        assert!(!group_of(&path).is_empty());
    }
}
