//! `s3spool status`: how the queue stands, for people or (`--json`) for scripts.

use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::units::{format_duration, format_size};
use crate::config::Config;
use crate::queue::{Condition, Counts, FileRow, Queue, SpoolLine};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Exit with code 3 if the oldest file waiting (or in flight) was queued longer ago
    /// than this, e.g. 1h: for monitoring checks.
    #[arg(long, value_parser = crate::config::units::parse_duration)]
    max_age: Option<Duration>,
}

/// The throughput window of the per-spool table.
const RECENT: Duration = Duration::from_secs(3600);

#[derive(Serialize)]
struct SpoolReport {
    spool: String,
    paused: bool,
    counts: Counts,
    oldest_waiting_age_seconds: Option<u64>,
    /// Files and object bytes delivered in the last hour.
    delivered_last_hour: u64,
    bytes_last_hour: u64,
    last_error: Option<String>,
}

#[derive(Serialize)]
struct Report {
    queue: String,
    counts: Counts,
    oldest_waiting_age_seconds: Option<u64>,
    bytes_waiting: u64,
    /// What holds work back now, as the running daemon reports it.
    held_back: Vec<Condition>,
    spools: Vec<SpoolReport>,
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
    let now = crate::clock::now_ms();
    let errors = queue.latest_errors(5)?;
    let report = Report {
        queue: queue.path().display().to_string(),
        counts: summary.counts,
        oldest_waiting_age_seconds: summary
            .oldest_waiting_queued_at
            .map(|t| ((now - t).max(0) / 1000) as u64),
        bytes_waiting: summary.bytes_waiting,
        held_back: queue.conditions()?,
        spools: spool_reports(&queue, config, now)?,
        latest_errors: errors
            .iter()
            .map(|row| error_line(&queue, row))
            .collect::<anyhow::Result<_>>()?,
    };
    let code = match (args.max_age, report.oldest_waiting_age_seconds) {
        (Some(max), Some(age)) if age > max.as_secs() => {
            eprintln!(
                "s3spool: the oldest waiting file was queued {} ago, over --max-age {}",
                format_duration(Duration::from_secs(age)),
                format_duration(max)
            );
            ExitCode::from(super::EXIT_TOO_OLD)
        }
        _ => ExitCode::SUCCESS,
    };
    if args.json {
        super::print_json(&report)?;
        return Ok(code);
    }
    print_spools(&report.spools);
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
    Ok(code)
}

/// Every configured spool (and any other the queue holds), with its numbers.
fn spool_reports(queue: &Queue, config: &Config, now: i64) -> anyhow::Result<Vec<SpoolReport>> {
    let mut lines = queue.spool_report(now - RECENT.as_millis() as i64)?;
    for name in config.spools.keys() {
        if !lines.iter().any(|l| &l.spool == name) {
            lines.push(SpoolLine {
                spool: name.clone(),
                ..SpoolLine::default()
            });
        }
    }
    lines.sort_by(|a, b| a.spool.cmp(&b.spool));
    Ok(lines
        .into_iter()
        .map(|l| SpoolReport {
            spool: l.spool,
            paused: l.paused,
            counts: l.counts,
            oldest_waiting_age_seconds: l
                .oldest_waiting_queued_at
                .map(|t| ((now - t).max(0) / 1000) as u64),
            delivered_last_hour: l.delivered_recently,
            bytes_last_hour: l.bytes_recently,
            last_error: l.last_error,
        })
        .collect())
}

fn print_spools(spools: &[SpoolReport]) {
    println!(
        "{:<16} {:>8} {:>7} {:>9} {:>7} {:>8}  {:<22} LAST ERROR",
        "SPOOL", "PENDING", "ACTIVE", "DONE", "FAILED", "OLDEST", "LAST HOUR"
    );
    for s in spools {
        let name = if s.paused {
            format!("{} (paused)", s.spool)
        } else {
            s.spool.clone()
        };
        let oldest = s
            .oldest_waiting_age_seconds
            .map_or("-".to_string(), |a| format_duration(Duration::from_secs(a)));
        let recent = format!(
            "{} files, {}",
            s.delivered_last_hour,
            format_size(s.bytes_last_hour)
        );
        let error: String = s
            .last_error
            .as_deref()
            .unwrap_or("-")
            .chars()
            .take(80)
            .collect();
        let c = &s.counts;
        println!(
            "{name:<16} {:>8} {:>7} {:>9} {:>7} {oldest:>8}  {recent:<22} {error}",
            c.pending, c.active, c.done, c.failed
        );
    }
    println!();
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
