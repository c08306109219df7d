//! `s3spool status`: how the queue stands, for people or (`--json`) for scripts.

use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::units::{format_duration, format_size};
use crate::config::Config;
use crate::queue::{Condition, Counts, FileRow, Queue};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    queue: String,
    counts: Counts,
    oldest_waiting_age_seconds: Option<u64>,
    bytes_waiting: u64,
    /// What holds work back now, as the running daemon reports it.
    held_back: Vec<Condition>,
    latest_errors: Vec<ErrorLine>,
}

#[derive(Serialize)]
struct ErrorLine {
    id: i64,
    spool: String,
    path: String,
    state: &'static str,
    attempts: u32,
    next_attempt_at: Option<String>,
    error: String,
    /// Multipart progress: parts S3 confirmed, and parts in all.
    parts_done: Option<u64>,
    parts_total: Option<u64>,
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let queue = super::open_queue_read_only(config)?;
    let summary = queue.summary()?;
    let now = crate::upload::now_ms();
    let errors = queue.latest_errors(5)?;
    let report = Report {
        queue: queue.path().display().to_string(),
        counts: summary.counts,
        oldest_waiting_age_seconds: summary
            .oldest_waiting_queued_at
            .map(|t| ((now - t).max(0) / 1000) as u64),
        bytes_waiting: summary.bytes_waiting,
        held_back: queue.conditions()?,
        latest_errors: errors
            .iter()
            .map(|row| error_line(&queue, row))
            .collect::<anyhow::Result<_>>()?,
    };
    if args.json {
        super::print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let c = &report.counts;
    println!("queue {}", report.queue);
    println!("  pending {:>8}", c.pending);
    println!("  active  {:>8}", c.active);
    println!("  done    {:>8}", c.done);
    println!("  failed  {:>8}", c.failed);
    match report.oldest_waiting_age_seconds {
        Some(age) => println!(
            "waiting: {} in {} files, oldest queued {} ago",
            format_size(report.bytes_waiting),
            c.pending + c.active,
            format_duration(Duration::from_secs(age))
        ),
        None => println!("waiting: nothing"),
    }
    for held in &report.held_back {
        let since = chrono::DateTime::from_timestamp_millis(held.since)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        println!("held back ({}, since {since}): {}", held.name, held.reason);
    }
    if !report.latest_errors.is_empty() {
        println!("latest errors:");
        for e in &report.latest_errors {
            let next = e
                .next_attempt_at
                .as_deref()
                .map(|t| format!(", next try {t}"))
                .unwrap_or_default();
            let parts = match (e.parts_done, e.parts_total) {
                (Some(done), Some(total)) => format!(", {done}/{total} parts uploaded"),
                _ => String::new(),
            };
            println!(
                "  #{} {}/{} ({}, {} attempts{next}{parts}): {}",
                e.id, e.spool, e.path, e.state, e.attempts, e.error
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn error_line(queue: &Queue, row: &FileRow) -> anyhow::Result<ErrorLine> {
    let progress = queue.progress(row)?;
    Ok(ErrorLine {
        id: row.id,
        spool: row.spool.clone(),
        path: row.rel_path.clone(),
        state: row.state.as_str(),
        attempts: row.attempts,
        next_attempt_at: (row.state == crate::queue::State::Pending)
            .then(|| super::format_ms(row.next_attempt_at)),
        error: row.last_error.clone().unwrap_or_default(),
        parts_done: progress.map(|p| p.0),
        parts_total: progress.map(|p| p.1),
    })
}
