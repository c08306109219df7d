//! `s3spool list`: queued files, filtered by state and spool.

use std::process::ExitCode;

use crate::config::units::format_size;
use crate::config::Config;
use crate::queue::{ListFilter, State};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only rows in this state: pending, active, done or failed.
    #[arg(long, value_parser = parse_state)]
    state: Option<State>,
    /// Only rows of this spool.
    #[arg(long)]
    spool: Option<String>,
    /// At most this many rows.
    #[arg(long)]
    limit: Option<u64>,
    /// Print a JSON array.
    #[arg(long)]
    json: bool,
}

fn parse_state(text: &str) -> Result<State, String> {
    State::parse(text)
        .ok_or_else(|| format!("{text:?} is not a state; use pending, active, done or failed"))
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let queue = super::open_queue_read_only(config)?;
    let rows = queue.list(&ListFilter {
        state: args.state,
        spool: args.spool,
        limit: args.limit,
    })?;
    if args.json {
        super::print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>8}  {:<7}  {:>3}  {:>10}  {:<12}  PATH → KEY",
        "ID", "STATE", "TRY", "SIZE", "SPOOL"
    );
    for row in &rows {
        println!(
            "{:>8}  {:<7}  {:>3}  {:>10}  {:<12}  {} → {}",
            row.id,
            row.state.as_str(),
            row.attempts,
            format_size(row.stamp.size),
            row.spool,
            row.rel_path,
            row.key.as_deref().unwrap_or("-"),
        );
    }
    Ok(ExitCode::SUCCESS)
}
