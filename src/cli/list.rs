//! `s3spool list`: queued files, filtered by state, spool and destination: by default the
//! files not delivered yet, newest first, at most 50.

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
    /// Only rows going to this destination.
    #[arg(long)]
    destination: Option<String>,
    /// Every row, `done` ones too (by default: the files not delivered yet).
    #[arg(long)]
    all: bool,
    /// At most this many rows; 0 for no limit.
    #[arg(long, default_value_t = DEFAULT_LIMIT)]
    limit: u64,
    /// Oldest first (by default the newest come first).
    #[arg(long)]
    oldest: bool,
    /// Print a JSON array.
    #[arg(long)]
    pub(super) json: bool,
}

/// Enough for a screen; `--limit 0` for every row.
const DEFAULT_LIMIT: u64 = 50;

fn parse_state(text: &str) -> Result<State, String> {
    State::parse(text)
        .ok_or_else(|| format!("{text:?} is not a state; use pending, active, done or failed"))
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let queue = super::open_queue_read_only(config)?;
    let limit = (args.limit > 0).then_some(args.limit);
    let rows = queue.list(&ListFilter {
        state: args.state,
        spool: args.spool,
        destination: args.destination,
        limit,
        not_done: !args.all && args.state.is_none(),
        newest_first: !args.oldest,
    })?;
    if args.json {
        super::print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    if limit.is_some_and(|l| rows.len() as u64 == l) {
        eprintln!(
            "(the first {} rows: --limit N for more, 0 for all)",
            rows.len()
        );
    }
    println!(
        "{:>8}  {:<7}  {:>3}  {:>10}  {:<12}  {:<12}  PATH → KEY",
        "ID", "STATE", "TRY", "SIZE", "SPOOL", "DEST"
    );
    for row in &rows {
        println!(
            "{:>8}  {:<7}  {:>3}  {:>10}  {:<12}  {:<12}  {} → {}",
            row.id,
            row.state.as_str(),
            row.attempts,
            format_size(row.stamp.size),
            row.spool,
            row.destination,
            row.rel_path,
            row.key.as_deref().unwrap_or("-"),
        );
    }
    Ok(ExitCode::SUCCESS)
}
