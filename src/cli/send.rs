//! `s3spool send FILE --spool NAME`: a one-off upload through the same queue as every
//! other file. The file is copied into the spool under a hidden name, synced, then given
//! its real name, so the daemon picks it up like any
//! dropped file; `send` then follows its row to the end, with a progress bar on a
//! terminal. The original is never touched: `after_upload` applies to the spool's copy.
//! A file sent goes at once, outside the spool's delivery window and ahead of its batch
//! cadence (see `schedule`).

use anyhow::Context as _;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::MetadataExt;

use crate::beneath::Root;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::queue::State;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file to upload.
    file: PathBuf,
    /// The spool (from the config) whose destination, key template and format apply.
    #[arg(long)]
    spool: String,
    /// Return once the file is in the spool, without following it.
    #[arg(long)]
    no_wait: bool,
    /// Give up following after this long (the file stays queued), e.g. 10m.
    #[arg(long, value_parser = crate::config::units::parse_duration)]
    timeout: Option<Duration>,
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let spool = super::spool(config, &args.spool)?;
    let meta = std::fs::metadata(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    anyhow::ensure!(
        meta.is_file(),
        "{} is not a regular file",
        args.file.display()
    );
    let name = args
        .file
        .file_name()
        .and_then(|n| n.to_str())
        .context("the file needs a UTF-8 name")?
        .to_string();
    // The daemon would never take it, and `send` would wait for it forever.
    anyhow::ensure!(
        crate::spool::filter::wanted(spool, &name),
        "spools.{}: {name} is not a file this spool delivers (a hidden or temporary name, or refused by its include/exclude rules); rename the file or send it to another spool",
        spool.name
    );
    let dest = spool.path.join(&name);
    // Rows from before are not this file's, even if they share its name (or an inode).
    let (after_id, known_folder) = match super::open_queue_read_only(config) {
        Ok(queue) => (queue.last_id()?, queue.folder_of(&spool.name)?),
        Err(_) => (0, None),
    };
    // Written beneath the folder held open, and only if it is the folder the daemon knows
    // for this spool: a path swapped for a symlink never takes the file elsewhere.
    let root = super::held_spool_root(spool, known_folder)?;
    // Sent on purpose: it goes outside the spool's window and ahead of its cadence. The
    // request (the copy's inode) is in the queue before the file is in the spool, so the
    // daemon sees both. Without a queue yet there is no daemon to tell.
    let mut queue = match super::open_queue(config) {
        Ok(queue) => Some(queue),
        Err(e) => {
            let scheduled = !spool.only_route().send_windows.is_empty()
                || spool.schedule.deliver_every.is_some();
            if scheduled {
                eprintln!("note: the file cannot be marked to go at once ({e:#}); it follows the spool's delivery window and cadence");
            }
            None
        }
    };
    let placed = place(&args.file, &root, &name, |inode| match queue.as_mut() {
        Some(q) => Ok(q.rush_request(&spool.name, &name, inode, crate::clock::now_ms())?),
        None => Ok(()),
    });
    let inode = match placed {
        Ok(inode) => inode,
        Err(e) => {
            if let Some(q) = queue.as_mut() {
                let _ = q.withdraw_rush_request(&spool.name, &name);
            }
            return Err(e);
        }
    };
    drop(queue);
    println!(
        "{} is in spool {} as {}",
        args.file.display(),
        spool.name,
        dest.display()
    );
    if args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    follow(
        config,
        &spool.name,
        &name,
        (inode, after_id),
        meta.len(),
        args.timeout,
    )
}

/// Puts a copy of `source` as `name` beneath the spool's held `root` without ever showing
/// a partial file there, and without replacing a file of that name. Returns the copy's
/// inode, which `announce` is told before the copy takes its name. A copy, not a link:
/// editing the original afterwards must not change what is uploaded.
fn place(
    source: &Path,
    root: &Root,
    name: &str,
    announce: impl FnOnce(u64) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let dir = root.path().display();
    let hidden = root.entry(Path::new(&format!(
        ".s3spool-send-{}.tmp",
        uuid::Uuid::new_v4().simple()
    )))?;
    let copied = (|| -> std::io::Result<u64> {
        let mut from = std::fs::File::open(source)?;
        let mut to = hidden.create_new()?;
        std::io::copy(&mut from, &mut to)?;
        // As readable as the original was (std::fs::copy's habit), for the daemon's user.
        to.set_permissions(from.metadata()?.permissions())?;
        to.sync_all()?;
        Ok(to.metadata()?.ino())
    })();
    let inode = match copied {
        Ok(inode) => inode,
        Err(e) => {
            let _ = hidden.unlink();
            return Err(e).with_context(|| format!("cannot copy {} into {dir}", source.display()));
        }
    };
    if let Err(e) = announce(inode) {
        let _ = hidden.unlink();
        return Err(e);
    }
    // link(2) refuses an existing name: a file already waiting there is never replaced.
    let dest = root.entry(Path::new(name))?;
    let linked = hidden.link_as(&dest);
    let _ = hidden.unlink();
    linked.with_context(|| {
        format!(
            "cannot put the file at {dir}/{name} (is a file of that name already in the spool?)"
        )
    })?;
    dest.sync_dir()?;
    Ok(dest.metadata()?.ino())
}

/// Follows the file's row until it is done or failed.
fn follow(
    config: &Config,
    spool: &str,
    rel_path: &str,
    (inode, after_id): (u64, i64),
    size: u64,
    timeout: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let mut last = String::new();
    let mut said_waiting = false;
    loop {
        if timeout.is_some_and(|t| started.elapsed() > t) {
            eprintln!(
                "s3spool: still not delivered after {:?}; it stays queued",
                timeout.unwrap_or_default()
            );
            return Ok(ExitCode::FAILURE);
        }
        let queue = super::open_queue_read_only(config)?;
        let row = queue.find(spool, rel_path, inode, after_id)?;
        let line = match &row {
            None => {
                if !said_waiting && started.elapsed() > Duration::from_secs(10) {
                    eprintln!(
                        "waiting for the daemon to queue the file (is `s3spool run` running?)"
                    );
                    said_waiting = true;
                }
                "waiting to be queued".to_string()
            }
            Some(row) => match row.state {
                State::Done => {
                    finish_line(terminal);
                    println!(
                        "delivered: s3://{}/{}",
                        row.bucket,
                        row.key.as_deref().unwrap_or("")
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                State::Failed => {
                    finish_line(terminal);
                    eprintln!(
                        "s3spool: failed: {} (fix the cause, then `s3spool retry {}`)",
                        row.last_error.as_deref().unwrap_or("unknown"),
                        row.id
                    );
                    return Ok(ExitCode::FAILURE);
                }
                State::Pending => match &row.last_error {
                    Some(e) => format!("queued (id {}), will retry: {e}", row.id),
                    None => format!("queued (id {})", row.id),
                },
                State::Active => match queue.progress(row)? {
                    Some((done, total)) => bar(done, total, size),
                    None => format!("uploading {}", crate::config::units::format_size(size)),
                },
            },
        };
        if line != last {
            if terminal {
                eprint!("\r\x1b[2K{line}");
                let _ = std::io::stderr().flush();
            } else {
                eprintln!("{line}");
            }
            last = line;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn bar(done: u64, total: u64, size: u64) -> String {
    const WIDTH: u64 = 30;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(0) as usize;
    format!(
        "uploading [{}{}] {done}/{total} parts of {}",
        "#".repeat(filled),
        "-".repeat(WIDTH as usize - filled),
        crate::config::units::format_size(size)
    )
}

fn finish_line(terminal: bool) {
    if terminal {
        eprintln!();
    }
}
