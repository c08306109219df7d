//! One source file after S3 confirmed its object and the row is `done`: delete it, move
//! it under `archive_dir`, or keep it.
//!
//! Only the very file that was uploaded is touched. The source is first *claimed*: renamed
//! to a private name in its own folder (reached beneath the spool root, never through a
//! symlink), and only the file under that name is compared with the row and deleted or
//! archived. A producer that renames a new version over the source at any moment either
//! lands before the claim (the claimed file does not match: it is put back, and queued as
//! the new file it is) or after it (its file is never touched). A crash after the claim
//! leaves the private name, which the next run of the same row finds and finishes.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::beneath::{self, Entry, Root};
use crate::queue::{FileStamp, SourceOutcome};

/// What [`finish_source`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    Deleted,
    Archived(PathBuf),
    Kept,
    /// The source was already gone (a crash between this step and the last run's).
    AlreadyGone,
    /// The path now holds a different file (or runs through a symlink); it was not touched.
    Replaced,
}

impl Finished {
    /// How the queue records it.
    pub fn outcome(&self) -> SourceOutcome {
        match self {
            Finished::Deleted => SourceOutcome::Deleted,
            Finished::Archived(_) => SourceOutcome::Archived,
            Finished::Kept => SourceOutcome::Kept,
            Finished::AlreadyGone => SourceOutcome::Gone,
            Finished::Replaced => SourceOutcome::Replaced,
        }
    }
}

/// The name a source is claimed under while it is finished: hidden (never queued) and
/// the row's own.
pub fn private_name(id: i64) -> String {
    format!(".s3spool-finishing-{id}")
}

/// `after_upload`, with the archive's folder held open.
#[derive(Debug, Clone, Copy)]
pub enum Finish<'a> {
    Delete,
    /// Into this folder, reached beneath its handle.
    Archive(&'a Root),
    Keep,
}

/// Applies `after` to the uploaded file `rel` under the spool `root`, if it is still the
/// file of `stamp`. `id` names the claim and makes an archive name unique when an earlier
/// file of the same name was archived already.
pub fn finish_source(
    after: Finish<'_>,
    root: &Root,
    rel: &str,
    stamp: FileStamp,
    id: i64,
) -> io::Result<Finished> {
    let source = match root.entry(Path::new(rel)) {
        Ok(source) => source,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Finished::AlreadyGone),
        // A folder on the way is now a symlink: whatever it leads to is not ours.
        Err(e) if beneath::is_symlink_refusal(&e) => return Ok(Finished::Replaced),
        Err(e) => return Err(e),
    };
    let claimed = source.sibling(private_name(id))?;
    // A claim left by an earlier run that stopped before the end is gone on with.
    let leftover = match claimed.metadata() {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    if matches!(after, Finish::Keep) {
        if leftover {
            put_back(&source, &claimed, id)?;
        }
        return Ok(Finished::Kept);
    }
    if !leftover {
        // Only the uploaded file is claimed: never a folder or another file that took
        // its name (checked again once claimed, for one renamed over it meanwhile).
        match source.metadata() {
            Ok(meta) if meta.file_type().is_file() && FileStamp::of(&meta) == stamp => {}
            Ok(_) => return Ok(Finished::Replaced),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Finished::AlreadyGone),
            Err(e) => return Err(e),
        }
        match source.rename_to_own(claimed.name()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Finished::AlreadyGone),
            Err(e) => return Err(e),
        }
    }
    // The file is hidden under its private name now: every way out finishes it or puts
    // it back where the scans see it.
    match finish_claimed(after, &claimed, rel, stamp, id) {
        Ok(Some(finished)) => Ok(finished),
        Ok(None) => {
            put_back(&source, &claimed, id)?;
            Ok(Finished::Replaced)
        }
        Err(e) => {
            if let Err(back) = put_back(&source, &claimed, id) {
                tracing::warn!(id, error = %back, "cannot put a claimed source back; the next start finishes it");
            }
            Err(e)
        }
    }
}

/// Deletes or archives the claimed file if it is the uploaded one; `None` if it is not.
fn finish_claimed(
    after: Finish<'_>,
    claimed: &Entry,
    rel: &str,
    stamp: FileStamp,
    id: i64,
) -> io::Result<Option<Finished>> {
    let meta = claimed.metadata()?;
    if !meta.file_type().is_file() || FileStamp::of(&meta) != stamp {
        return Ok(None);
    }
    match after {
        Finish::Delete => {
            claimed.unlink()?;
            Ok(Some(Finished::Deleted))
        }
        Finish::Archive(into) => {
            archive(claimed, &meta, into, rel, id).map(|placed| Some(Finished::Archived(placed)))
        }
        Finish::Keep => Ok(Some(Finished::Kept)),
    }
}

/// Returns a claimed file to its name, never replacing a file that took the name
/// meanwhile: then it goes beside it (`a.restored-ID.csv`, still visible and with its
/// extension, so it is queued).
fn put_back(source: &Entry, claimed: &Entry, id: i64) -> io::Result<()> {
    match claimed.rename_noreplace(source.name()) {
        Ok(()) => Ok(()),
        // The name already is this very file (a kill between the link and the unlink of
        // the fallback for file systems without RENAME_NOREPLACE): drop the private one.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && same_file(source, claimed) => {
            claimed.unlink()
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let beside = restored_name(source.name(), id);
            tracing::warn!(name = %source.name().to_string_lossy(), beside = %beside.to_string_lossy(),
                "a claimed file's name was taken meanwhile; it is put beside it");
            claimed.rename_noreplace(&beside)
        }
        Err(e) => Err(e),
    }
}

fn same_file(a: &Entry, b: &Entry) -> bool {
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// `a.csv` → `a.restored-ID.csv`; `a` → `a.restored-ID`.
fn restored_name(name: &std::ffi::OsStr, id: i64) -> OsString {
    let text = name.to_string_lossy();
    match text.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}.restored-{id}.{ext}").into(),
        _ => {
            let mut beside = name.to_os_string();
            beside.push(format!(".restored-{id}"));
            beside
        }
    }
}

/// Moves the claimed file to `rel` beneath the archive's held root, or to `rel.<id>` if
/// that name is taken. Never overwrites: names are made with link(2), which fails if the
/// name exists; every folder on the way is reached (or made) beneath the held root, never
/// through a symlink. The archive's folder is synced before the source goes, so a crash
/// cannot lose both names. Where the kernel will not link the file (another file system;
/// another user's file under `fs.protected_hardlinks`), it is copied durably under a name
/// of our own, and that copy is linked into place.
fn archive(
    claimed: &Entry,
    meta: &std::fs::Metadata,
    archive: &Root,
    rel: &str,
    id: i64,
) -> io::Result<PathBuf> {
    let rel_path = Path::new(rel);
    let (Some(name), folder) = (rel_path.file_name(), rel_path.parent()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an empty path names no file",
        ));
    };
    let folder = folder.unwrap_or(Path::new(""));
    let dir = archive.create_dirs(folder)?;
    let target = Entry::in_dir(&dir, name)?;
    let alternate = target.sibling(suffixed(name, &format!(".{id}")))?;
    let placed = match place(meta, |to| claimed.link_as(to), &target, &alternate) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV) | Some(libc::EPERM)) => {
            let staged = target.sibling(suffixed(name, &format!(".s3spool-partial-{id}")))?;
            let _ = staged.unlink(); // left by a crash mid-copy
            copy_durably(claimed, &staged)?;
            let staged_meta = staged.metadata()?;
            let placed = place(&staged_meta, |to| staged.link_as(to), &target, &alternate);
            target.sync_dir()?;
            staged.unlink()?;
            placed?
        }
        other => other?,
    };
    target.sync_dir()?;
    claimed.unlink()?;
    Ok(archive.path().join(folder).join(placed))
}

/// Links a file (described by `meta`) as `target`, or as `alternate` when `target` is
/// taken by another file; returns the name used. A name that already is the file (a
/// crash after linking) counts as done.
fn place(
    meta: &std::fs::Metadata,
    link: impl Fn(&Entry) -> io::Result<()>,
    target: &Entry,
    alternate: &Entry,
) -> io::Result<OsString> {
    for name in [target, alternate] {
        match link(name) {
            Ok(()) => return Ok(name.name().to_os_string()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let there = name.metadata()?;
                if there.dev() == meta.dev() && there.ino() == meta.ino() {
                    return Ok(name.name().to_os_string());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{} and {} are both taken in the archive",
            target.name().to_string_lossy(),
            alternate.name().to_string_lossy()
        ),
    ))
}

fn suffixed(name: &std::ffi::OsStr, suffix: &str) -> OsString {
    let mut name = name.to_os_string();
    name.push(suffix);
    name
}

fn copy_durably(claimed: &Entry, staged: &Entry) -> io::Result<()> {
    let mut from = claimed.open_file()?;
    let mut to = staged.create_new()?;
    io::copy(&mut from, &mut to)?;
    to.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp_of(path: &Path) -> FileStamp {
        FileStamp::of(&std::fs::symlink_metadata(path).unwrap())
    }

    #[test]
    fn archive_never_overwrites_and_survives_a_rerun() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, archive_dir) = (dir.path().join("spool"), dir.path().join("archive"));
        std::fs::create_dir_all(spool.join("x")).unwrap();
        let source = spool.join("x/a.csv");
        std::fs::create_dir_all(&archive_dir).unwrap();
        let archive = Root::open(&archive_dir).unwrap();
        let after = Finish::Archive(&archive);

        std::fs::write(&source, b"one").unwrap();
        let finished = finish_source(
            after,
            &Root::open(&spool).unwrap(),
            "x/a.csv",
            stamp_of(&source),
            1,
        )
        .unwrap();
        assert_eq!(finished, Finished::Archived(archive_dir.join("x/a.csv")));
        std::fs::write(&source, b"two").unwrap();
        let finished = finish_source(
            after,
            &Root::open(&spool).unwrap(),
            "x/a.csv",
            stamp_of(&source),
            2,
        )
        .unwrap();
        assert_eq!(finished, Finished::Archived(archive_dir.join("x/a.csv.2")));
        assert_eq!(std::fs::read(archive_dir.join("x/a.csv")).unwrap(), b"one");
        assert_eq!(
            std::fs::read(archive_dir.join("x/a.csv.2")).unwrap(),
            b"two"
        );
        assert!(!source.exists());

        // A crash after claiming and linking, before the claimed name went: the re-run
        // finds its claim and its own link, and makes no second copy.
        std::fs::write(&source, b"three").unwrap();
        let stamp = stamp_of(&source);
        let claimed = spool.join("x").join(private_name(3));
        std::fs::rename(&source, &claimed).unwrap();
        std::fs::hard_link(&claimed, archive_dir.join("x/a.csv.3")).unwrap();
        let finished =
            finish_source(after, &Root::open(&spool).unwrap(), "x/a.csv", stamp, 3).unwrap();
        assert_eq!(finished, Finished::Archived(archive_dir.join("x/a.csv.3")));
        assert_eq!(std::fs::read_dir(archive_dir.join("x")).unwrap().count(), 3);
        assert_eq!(std::fs::read_dir(spool.join("x")).unwrap().count(), 0);
    }

    #[test]
    fn archive_to_another_file_system_copies_durably_then_removes_the_source() {
        // /dev/shm is a tmpfs: another file system than the temporary directory's.
        let shm = Path::new("/dev/shm");
        let Ok(archive_root) = tempfile::tempdir_in(shm) else {
            return; // no /dev/shm here: nothing to cross
        };
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        std::fs::create_dir_all(spool.join("x")).unwrap();
        let source = spool.join("x/a.csv");
        std::fs::write(&source, b"crosses file systems").unwrap();
        let same_fs = {
            std::fs::metadata(&spool).unwrap().dev()
                == std::fs::metadata(archive_root.path()).unwrap().dev()
        };
        let archive = Root::open(archive_root.path()).unwrap();
        let after = Finish::Archive(&archive);
        let finished = finish_source(
            after,
            &Root::open(&spool).unwrap(),
            "x/a.csv",
            stamp_of(&source),
            9,
        )
        .unwrap();
        let placed = archive_root.path().join("x/a.csv");
        assert_eq!(finished, Finished::Archived(placed.clone()));
        assert_eq!(std::fs::read(&placed).unwrap(), b"crosses file systems");
        assert!(!source.exists());
        // No staging copy or claimed name is left on either side.
        assert_eq!(
            std::fs::read_dir(archive_root.path().join("x"))
                .unwrap()
                .count(),
            1
        );
        assert_eq!(std::fs::read_dir(spool.join("x")).unwrap().count(), 0);
        if same_fs {
            eprintln!(
                "note: /dev/shm is on the same file system here; the copy path was not taken"
            );
        }
    }

    #[test]
    fn a_version_renamed_over_the_source_is_never_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        std::fs::create_dir_all(&spool).unwrap();
        let source = spool.join("a.csv");
        std::fs::write(&source, b"uploaded").unwrap();
        let uploaded = stamp_of(&source);
        // A producer renames a new version over it before the clean-up.
        let new = spool.join(".a.csv.tmp");
        std::fs::write(&new, b"newer version").unwrap();
        std::fs::rename(&new, &source).unwrap();
        let finished = finish_source(
            Finish::Delete,
            &Root::open(&spool).unwrap(),
            "a.csv",
            uploaded,
            7,
        )
        .unwrap();
        assert_eq!(finished, Finished::Replaced);
        assert_eq!(std::fs::read(&source).unwrap(), b"newer version");
        assert!(!spool.join(private_name(7)).exists());
    }

    #[test]
    fn a_crash_after_the_claim_is_finished_by_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        std::fs::create_dir_all(&spool).unwrap();
        let source = spool.join("a.csv");
        std::fs::write(&source, b"uploaded").unwrap();
        let stamp = stamp_of(&source);
        std::fs::rename(&source, spool.join(private_name(4))).unwrap();
        // Meanwhile a new file took the name: it stays.
        std::fs::write(&source, b"new").unwrap();
        let finished = finish_source(
            Finish::Delete,
            &Root::open(&spool).unwrap(),
            "a.csv",
            stamp,
            4,
        )
        .unwrap();
        assert_eq!(finished, Finished::Deleted);
        assert_eq!(std::fs::read(&source).unwrap(), b"new");
        assert!(!spool.join(private_name(4)).exists());
    }

    #[test]
    fn a_claimed_file_that_is_not_the_uploaded_one_is_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        std::fs::create_dir_all(&spool).unwrap();
        std::fs::write(spool.join("a.csv"), b"uploaded").unwrap();
        let uploaded = stamp_of(&spool.join("a.csv"));
        // A claim left by a kill holds a file that is not the uploaded one (it was renamed
        // over the source between the check and the claim).
        std::fs::remove_file(spool.join("a.csv")).unwrap();
        std::fs::write(spool.join(private_name(6)), b"a newer version").unwrap();
        let finished = finish_source(
            Finish::Delete,
            &Root::open(&spool).unwrap(),
            "a.csv",
            uploaded,
            6,
        )
        .unwrap();
        assert_eq!(finished, Finished::Replaced);
        assert_eq!(
            std::fs::read(spool.join("a.csv")).unwrap(),
            b"a newer version"
        );
        assert!(!spool.join(private_name(6)).exists());
        // A kill inside the fallback rename left both names on one file: one is dropped.
        std::fs::hard_link(spool.join("a.csv"), spool.join(private_name(7))).unwrap();
        let source = Root::open(&spool)
            .unwrap()
            .entry(Path::new("a.csv"))
            .unwrap();
        let claimed = source.sibling(private_name(7)).unwrap();
        put_back(&source, &claimed, 7).unwrap();
        assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 1);
    }

    #[test]
    fn a_leftover_claim_is_put_back_when_the_spool_now_keeps_files() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        std::fs::create_dir_all(&spool).unwrap();
        std::fs::write(
            spool.join(private_name(2)),
            b"claimed, then the config changed",
        )
        .unwrap();
        let stamp = stamp_of(&spool.join(private_name(2)));
        let finished = finish_source(
            Finish::Keep,
            &Root::open(&spool).unwrap(),
            "a.csv",
            stamp,
            2,
        )
        .unwrap();
        assert_eq!(finished, Finished::Kept);
        assert!(spool.join("a.csv").exists());
        assert!(!spool.join(private_name(2)).exists());
    }

    #[test]
    fn a_folder_that_took_the_name_is_never_claimed_and_a_taken_name_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        std::fs::create_dir_all(spool.join("a.csv/inner")).unwrap();
        let stamp = stamp_of(&spool.join("a.csv"));
        let finished = finish_source(
            Finish::Delete,
            &Root::open(&spool).unwrap(),
            "a.csv",
            stamp,
            3,
        )
        .unwrap();
        assert_eq!(finished, Finished::Replaced);
        assert!(spool.join("a.csv/inner").is_dir());
        // A claimed file that is not the uploaded one, whose name was taken meanwhile, goes
        // beside it, keeping its extension.
        std::fs::write(spool.join("b.csv"), b"taken").unwrap();
        std::fs::write(spool.join(private_name(4)), b"newer version").unwrap();
        let source = Root::open(&spool)
            .unwrap()
            .entry(Path::new("b.csv"))
            .unwrap();
        let claimed = source.sibling(private_name(4)).unwrap();
        put_back(&source, &claimed, 4).unwrap();
        assert_eq!(std::fs::read(spool.join("b.csv")).unwrap(), b"taken");
        assert_eq!(
            std::fs::read(spool.join("b.restored-4.csv")).unwrap(),
            b"newer version"
        );
    }

    #[test]
    fn a_folder_swapped_for_a_symlink_leaves_the_outside_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, outside) = (dir.path().join("spool"), dir.path().join("outside"));
        std::fs::create_dir_all(spool.join("d")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(spool.join("d/x.txt"), b"spooled").unwrap();
        let stamp = stamp_of(&spool.join("d/x.txt"));
        std::fs::rename(spool.join("d"), dir.path().join("away")).unwrap();
        // The outside file even has the same stamp (a hard link of the very file).
        std::fs::hard_link(dir.path().join("away/x.txt"), outside.join("x.txt")).unwrap();
        std::os::unix::fs::symlink(&outside, spool.join("d")).unwrap();
        let finished = finish_source(
            Finish::Delete,
            &Root::open(&spool).unwrap(),
            "d/x.txt",
            stamp,
            5,
        )
        .unwrap();
        assert_eq!(finished, Finished::Replaced);
        assert_eq!(std::fs::read(outside.join("x.txt")).unwrap(), b"spooled");
    }

    #[test]
    fn an_archive_folder_swapped_for_a_symlink_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, archive_dir) = (dir.path().join("spool"), dir.path().join("archive"));
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(spool.join("x")).unwrap();
        std::fs::create_dir_all(&archive_dir).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, archive_dir.join("x")).unwrap();
        let source = spool.join("x/a.csv");
        std::fs::write(&source, b"spooled").unwrap();
        let archive = Root::open(&archive_dir).unwrap();
        let e = finish_source(
            Finish::Archive(&archive),
            &Root::open(&spool).unwrap(),
            "x/a.csv",
            stamp_of(&source),
            4,
        )
        .unwrap_err();
        assert!(beneath::is_symlink_refusal(&e), "{e}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        assert_eq!(std::fs::read(&source).unwrap(), b"spooled", "put back");
    }
}
