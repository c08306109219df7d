//! The lock that allows one daemon per `state_dir`: what the daemon writes in it (its pid
//! and start time) and how `status` tells whether a daemon holds it, without taking it
//! (a lock taken for a look could make a daemon starting that instant refuse to run).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The lock file in `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("s3spool.lock")
}

/// Writes the holder's pid and start time into the lock file it holds.
pub fn record(file: &mut File, since_ms: i64) -> std::io::Result<()> {
    file.set_len(0)?;
    writeln!(file, "{} {since_ms}", std::process::id())
}

/// Who holds the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A daemon holds the lock: its pid, and when it started (unix ms) if the file says.
    Daemon { pid: u32, since_ms: Option<i64> },
    /// No process holds the lock (or there is none): no daemon runs on this queue.
    Nobody,
    /// Cannot tell, and why.
    Unknown(String),
}

/// Whether a daemon holds the lock of `state_dir`, read from the kernel's table of locks
/// (`/proc/locks`), matched by the lock file's device and inode.
pub fn holder(state_dir: &Path) -> Holder {
    let path = path(state_dir);
    let meta = match std::fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Holder::Nobody,
        Err(e) => return Holder::Unknown(format!("cannot stat {}: {e}", path.display())),
    };
    let table = match std::fs::read_to_string("/proc/locks") {
        Ok(table) => table,
        Err(e) => return Holder::Unknown(format!("cannot read /proc/locks: {e}")),
    };
    let Some(pid) = flock_holder(&table, meta.dev(), meta.ino()) else {
        return Holder::Nobody;
    };
    // The file may be unreadable to the caller (0600, the daemon's user): the pid from
    // the kernel is enough then.
    let since_ms = std::fs::read_to_string(&path).ok().and_then(|text| {
        let (recorded, since) = text.trim().split_once(' ')?;
        (recorded.parse::<u32>().ok()? == pid).then(|| since.parse().ok())?
    });
    Holder::Daemon { pid, since_ms }
}

/// The pid of the `FLOCK` in `table` (the format of `/proc/locks`) on device `dev`, inode
/// `ino`: lines like `1: FLOCK  ADVISORY  WRITE 3607 00:1c:1234 0 EOF`, the device as hex
/// major:minor.
fn flock_holder(table: &str, dev: u64, ino: u64) -> Option<u32> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A waiter is shown as `-> FLOCK …`: only holders count.
        if fields.get(1) != Some(&"FLOCK") {
            return None;
        }
        let pid = fields.get(4)?.parse::<u32>().ok()?;
        let mut place = fields.get(5)?.split(':');
        let line_major = u32::from_str_radix(place.next()?, 16).ok()?;
        let line_minor = u32::from_str_radix(place.next()?, 16).ok()?;
        let line_ino = place.next()?.parse::<u64>().ok()?;
        (line_major == major && line_minor == minor && line_ino == ino).then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_lock_table_names_the_holder() {
        let dev = libc::makedev(0xfd, 0x1c);
        let table = "1: POSIX  ADVISORY  WRITE 11 fd:1c:99 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 3607 fd:1c:1234 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 3999 fd:1c:1234 0 EOF\n";
        assert_eq!(flock_holder(table, dev, 1234), Some(3607));
        assert_eq!(
            flock_holder(table, dev, 99),
            None,
            "a POSIX lock is not ours"
        );
        assert_eq!(flock_holder(table, libc::makedev(8, 1), 1234), None);
    }

    #[test]
    fn a_held_lock_is_seen_with_its_pid_and_start() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(holder(dir.path()), Holder::Nobody, "no lock file");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path(dir.path()))
            .unwrap();
        assert_eq!(holder(dir.path()), Holder::Nobody, "not locked");
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock on a descriptor we own.
        assert_eq!(
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
            0
        );
        record(&mut file, 1_700_000_000_000).unwrap();
        assert_eq!(
            holder(dir.path()),
            Holder::Daemon {
                pid: std::process::id(),
                since_ms: Some(1_700_000_000_000)
            }
        );
    }
}
