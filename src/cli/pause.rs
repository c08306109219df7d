//! `s3spool pause SPOOL` / `s3spool resume SPOOL`: stop and restart uploads of one spool.
//!
//! A paused spool's files are still watched and queued (so nothing is missed), but none
//! is claimed until it resumes; uploads in flight finish. The mark is in the queue, so the
//! running daemon sees it at its next claim and it outlives restarts.

use std::process::ExitCode;

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spool's name in the config.
    spool: String,
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

pub fn resume(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let mut queue = super::open_queue(config)?;
    if queue.resume(&args.spool)? {
        println!("resumed spool {}", args.spool);
    } else {
        println!("spool {} was not paused", args.spool);
    }
    Ok(ExitCode::SUCCESS)
}
