//! `s3spool purge --done --older-than 7d`: forget delivered files.
//! `s3spool purge --orphaned`: drop the files waiting for a spool or destination the config
//! no longer has.
//!
//! A `done` row whose source file is still in place (after_upload = "keep", or a clean-up
//! not yet done) is kept: without it the file would be delivered a second time.

use crate::beneath::Root;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::ExitCode;

use crate::config::units::parse_duration;
use crate::config::Config;
use crate::queue::{FileStamp, SourceOutcome};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("rows").required(true).args(["done", "orphaned"])))]
pub struct Args {
    /// Purge rows in state done older than --older-than.
    #[arg(long, requires = "older_than")]
    done: bool,
    /// Only rows done longer ago than this, e.g. 7d or 12h.
    #[arg(long, value_parser = parse_duration)]
    older_than: Option<std::time::Duration>,
    /// Drop the files not delivered whose spool or destination the config no longer has
    /// (`status` lists them as orphaned) nor the daemon runs with; a multipart upload of
    /// theirs is aborted by the daemon. Their source files are not touched.
    #[arg(long, conflicts_with_all = ["done", "older_than"])]
    orphaned: bool,
    /// With --orphaned: drop the rows that may already be in S3 (an answer was lost) too.
    #[arg(long, requires = "orphaned")]
    force: bool,
    /// Say what would be purged, and change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let mut queue = super::open_queue(config)?;
    if args.orphaned {
        let live = super::live_names(config, &queue)?;
        if let Some(differs) = &live.differs {
            eprintln!("s3spool: {differs}");
        }
        let (dropped, kept) = queue.purge_orphans(
            &live.spools,
            &live.destinations,
            args.force,
            args.dry_run,
            crate::clock::now_ms(),
        )?;
        if args.dry_run {
            println!("would drop {dropped} orphaned row(s) (dry run: nothing changed)");
        } else {
            println!("dropped {dropped} orphaned row(s)");
        }
        if kept > 0 {
            println!(
                "kept {kept} orphaned row(s) that may already be in S3 (an answer was lost): added back, their spool finishes them without a second copy; drop them too with --force"
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let older_than = args.older_than.unwrap_or_default();
    let before = crate::clock::now_ms() - older_than.as_millis() as i64;
    let (roots, in_spools) = files_in_spools(config, &queue)?;
    // What is at a row's path: a file's stamp, or the lookup's error.
    let look = |row: &crate::queue::FileRow| match roots.get(&row.spool) {
        Some(root) => root
            .entry(Path::new(&row.rel_path))
            .and_then(|entry| entry.metadata())
            .map(|m| FileStamp::of(&m)),
        // A spool the config no longer has: its rows are looked for where they were.
        None => std::fs::symlink_metadata(&row.path).map(|m| FileStamp::of(&m)),
    };
    let keep = |row: &crate::queue::FileRow| {
        // Kept, or taken away or put back with another inode while its upload ran.
        let kept = matches!(
            row.source_outcome,
            Some(SourceOutcome::Kept | SourceOutcome::Gone | SourceOutcome::Replaced)
        );
        let looked = look(row);
        let at_path = looked.as_ref().ok().copied();
        // Not cleaned up yet (maybe mid-claim under a private name): the row finishes it.
        row.source_finished_at.is_none()
            // A folder on the way is a symlink now (moved to another disk, swapped): its
            // files are out of the walk's sight, not gone, and may come back.
            || looked.as_ref().is_err_and(crate::beneath::is_symlink_refusal)
            || at_path == Some(row.stamp)
            // A kept file at its path with another inode (a restore) may be the kept
            // file: only the row's SHA-256 can tell, at the daemon's next look.
            || (kept && at_path.is_some_and(|s| s.alike(row.stamp)))
            // Gone from its path when cleaned up, but moved elsewhere in the spool: the
            // row is what tells the daemon that file was delivered.
            || (matches!(
                row.source_outcome,
                Some(SourceOutcome::Gone | SourceOutcome::Replaced | SourceOutcome::Kept)
            )
                && in_spools.holds(&row.spool, row.stamp))
            // A kept file restored and moved (with `cp -a`: another inode): found by its
            // size and mtime, and by its content at the daemon's next look.
            || (kept && in_spools.holds_alike(&row.spool, row.stamp))
    };
    let (deleted, kept) = queue.purge_done(before, keep, args.dry_run, crate::clock::now_ms())?;
    if args.dry_run {
        println!("would purge {deleted} done row(s) (dry run: nothing changed)");
    } else {
        println!("purged {deleted} done row(s)");
    }
    if kept > 0 {
        println!("kept {kept} done row(s) whose source file is still in place (they stop it being delivered again)");
    }
    Ok(ExitCode::SUCCESS)
}

/// Every file in the spools, by spool and stamp: 32 bytes a file (a spool's number, not
/// its name), sorted so that a file alike (the same size and mtime, any inode) is one
/// range away. A million files waiting take some 40 MiB here, not their paths.
#[derive(Default)]
struct SpoolFiles {
    spools: Vec<String>,
    /// (spool number, size, mtime_ns, inode).
    stamps: BTreeSet<(u32, u64, i64, u64)>,
}

impl SpoolFiles {
    fn number(&self, spool: &str) -> Option<u32> {
        self.spools
            .iter()
            .position(|s| s == spool)
            .map(|n| n as u32)
    }

    fn holds(&self, spool: &str, stamp: FileStamp) -> bool {
        self.number(spool).is_some_and(|n| {
            self.stamps
                .contains(&(n, stamp.size, stamp.mtime_ns, stamp.inode))
        })
    }

    fn holds_alike(&self, spool: &str, stamp: FileStamp) -> bool {
        self.number(spool).is_some_and(|n| {
            self.stamps
                .range(
                    (n, stamp.size, stamp.mtime_ns, 0)..=(n, stamp.size, stamp.mtime_ns, u64::MAX),
                )
                .next()
                .is_some()
        })
    }
}

/// Every file in every spool, by spool and stamp (walked beneath the roots, as the daemon
/// does). A spool that cannot be read in full stops the purge: rows of files it cannot see
/// may be what keeps them from being delivered twice.
/// Each spool's folder is opened as the daemon holds it, and must be the folder the queue
/// knows for the spool: through a path swapped for a symlink, kept files would look gone
/// and their rows (what keeps them from going again) would be purged.
fn files_in_spools(
    config: &Config,
    queue: &crate::queue::Queue,
) -> anyhow::Result<(HashMap<String, Root>, SpoolFiles)> {
    let mut found = SpoolFiles::default();
    let mut roots = HashMap::new();
    for spool in config.spools.values() {
        if !super::exists(&spool.path) {
            // No folder: no file of it to keep a row for.
            continue;
        }
        let known = queue.folder_of(&spool.name)?;
        let root = super::held_spool_root(spool, known)
            .map_err(|e| anyhow::anyhow!("{e:#}; nothing was purged"))?;
        let mut unreadable = Vec::new();
        let number = found.spools.len() as u32;
        found.spools.push(spool.name.clone());
        // A chunk at a time: the paths are never held all at once.
        crate::spool::scan::walk_in_chunks(
            spool,
            &root,
            root.path(),
            4096,
            &mut |path, e| unreadable.push(format!("{}: {e}", path.display())),
            &mut |chunk| {
                found.stamps.extend(
                    chunk
                        .into_iter()
                        .map(|f| (number, f.stamp.size, f.stamp.mtime_ns, f.stamp.inode)),
                );
                true
            },
        );
        if !unreadable.is_empty() {
            anyhow::bail!(
                "cannot read all of spools.{}.path ({}); nothing was purged: run purge as the daemon's user (sudo -u s3spool)",
                spool.name,
                unreadable.join("; ")
            );
        }
        roots.insert(spool.name.clone(), root);
    }
    Ok((roots, found))
}
