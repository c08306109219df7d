//! `s3spool pause SPOOL` / `s3spool resume SPOOL`: stop and restart uploads of one spool.
//!
//! A paused spool's files are still watched and queued (so nothing is missed), but none
//! is claimed until it resumes; uploads in flight finish. The mark is in the queue, so the
//! running daemon sees it at its next claim and it outlives restarts. `resume --now` also
//! sends the files queued at that moment outside the spool's delivery window.

use std::process::ExitCode;

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spool's name in the config.
    spool: String,
}

#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// The spool's name in the config.
    spool: String,
    /// Also send the files queued now at once, outside the spool's delivery window and
    /// ahead of its batch cadence (files queued later follow the schedule).
    #[arg(long)]
    now: bool,
}

pub fn pause(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    super::spool(config, &args.spool)?;
    let mut queue = super::open_queue(config)?;
    if queue.pause(&args.spool, crate::clock::now_ms())? {
        println!(
            "paused spool {}: its files stay queued until `s3spool resume {}`",
            args.spool, args.spool
        );
    } else {
        println!("spool {} was already paused", args.spool);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn resume(config: &Config, args: ResumeArgs) -> anyhow::Result<ExitCode> {
    if args.now {
        super::spool(config, &args.spool)?;
    }
    let mut queue = super::open_queue(config)?;
    let resumed = queue.resume(&args.spool)?;
    if resumed {
        println!("resumed spool {}", args.spool);
    } else if !args.now {
        println!("spool {} was not paused", args.spool);
    }
    if args.now {
        let rushed = queue.rush(&args.spool)?;
        println!(
            "{rushed} queued file(s) of spool {} go now, whatever its window or cadence says (a file waiting to be retried keeps its wait)",
            args.spool
        );
    }
    Ok(ExitCode::SUCCESS)
}
