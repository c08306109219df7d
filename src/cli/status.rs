//! `s3spool status`: how the queue stands, for people or (`--json`) for scripts.

use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::units::{format_duration, format_size};
use crate::config::Config;
use crate::queue::{Condition, Counts, FileRow, Gone, Held, Orphans, Queue, SpoolLine};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one JSON object.
    #[arg(long)]
    pub(super) json: bool,
    /// A monitoring check: the first line is `S3SPOOL OK|WARNING|CRITICAL|UNKNOWN - …` and
    /// the exit code 0, 1, 2 or 3, as monitoring plugins read them. CRITICAL: no daemon
    /// holds the queue, or a file waits longer than --crit-age. WARNING: failed files,
    /// held-back work, or a file waiting longer than --warn-age.
    #[arg(long)]
    check: bool,
    /// WARNING when the oldest file waiting (or in flight) was queued longer ago than
    /// this, e.g. 30m (implies --check).
    #[arg(long, value_parser = crate::config::units::parse_duration)]
    warn_age: Option<Duration>,
    /// CRITICAL when the oldest file waiting was queued longer ago than this, e.g. 2h
    /// (implies --check).
    #[arg(long, value_parser = crate::config::units::parse_duration)]
    crit_age: Option<Duration>,
    /// The same as --crit-age (its name before the monitoring check).
    #[arg(long, value_parser = crate::config::units::parse_duration, conflicts_with = "crit_age")]
    max_age: Option<Duration>,
}

/// A monitoring check's verdict, by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
enum State {
    Ok,
    Unknown,
    Warning,
    Critical,
}

impl State {
    /// The exit code monitoring plugins give it.
    fn code(self) -> u8 {
        match self {
            State::Ok => 0,
            State::Warning => 1,
            State::Critical => 2,
            State::Unknown => 3,
        }
    }

    fn word(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }
}

#[derive(Serialize)]
struct Verdict {
    state: State,
    /// Why it is not OK, worst first.
    reasons: Vec<String>,
}

#[derive(Serialize)]
struct DaemonReport {
    /// `true` a daemon holds the queue; `false` none does; absent: cannot tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    running: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown: Option<String>,
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
    /// Its delivery windows and batch cadence, when it has either.
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<ScheduleReport>,
}

/// When a spool may send, as its config and the clock say now.
#[derive(Serialize)]
struct ScheduleReport {
    /// Its windows and its destination's, as written, with their time zone.
    windows: Vec<String>,
    /// False outside a window: files wait in the queue.
    window_open: bool,
    /// When the windows open next (RFC 3339), while they are closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    window_opens_at: Option<String>,
    /// `deliver_every`, and its next batch tick (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    deliver_every: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_batch_at: Option<String>,
}

impl ScheduleReport {
    fn of(config: &Config, spool: &str) -> Option<ScheduleReport> {
        let spool = config.spools.get(spool)?;
        let windows = spool.only_route().windows();
        let cadence = spool.schedule.deliver_every.as_ref();
        if windows.is_empty() && cadence.is_none() {
            return None;
        }
        let outlook = crate::schedule::outlook(&windows, cadence, crate::clock::schedule_now());
        let time =
            |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        Some(ScheduleReport {
            windows: windows.iter().map(|w| w.describe()).collect(),
            window_open: outlook.open,
            window_opens_at: outlook.opens_at.map(time),
            deliver_every: cadence.map(|c| c.describe()),
            next_batch_at: outlook.next_tick.map(time),
        })
    }

    /// One line for the text report.
    fn line(&self) -> String {
        let mut parts = Vec::new();
        if !self.windows.is_empty() {
            let windows = self.windows.join("; ");
            parts.push(match &self.window_opens_at {
                Some(at) => format!("outside window, opens at {at} (windows {windows})"),
                None if self.window_open => format!("inside window (windows {windows})"),
                None => format!("outside window, never opens (windows {windows})"),
            });
        }
        if let (Some(every), Some(next)) = (&self.deliver_every, &self.next_batch_at) {
            parts.push(format!("batches every {every}, next at {next}"));
        }
        parts.join("; ")
    }
}

#[derive(Serialize)]
struct Report {
    /// OK, WARNING, CRITICAL or UNKNOWN, and why.
    check: Verdict,
    daemon: DaemonReport,
    queue: String,
    /// The queue's size on disk (its file and write-ahead log).
    queue_bytes: u64,
    /// When the oldest row still kept was queued (RFC 3339): how far the history reaches.
    oldest_row: Option<String>,
    counts: Counts,
    oldest_waiting_age_seconds: Option<u64>,
    bytes_waiting: u64,
    /// What holds work back now, as the running daemon reports it.
    held_back: Vec<Condition>,
    /// Files that wait for a spool or destination the config no longer has.
    orphaned: Vec<Orphans>,
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

impl Args {
    /// Run as a monitoring check: the exit code is the verdict's, and an error is UNKNOWN.
    pub(super) fn checking(&self) -> bool {
        self.check || self.warn_age.is_some() || self.crit_age.is_some() || self.max_age.is_some()
    }
}

/// What a monitoring check prints and exits with when it cannot look (an unreadable
/// config or queue): UNKNOWN, never a code a plugin reads as WARNING.
pub(super) fn unknown(reason: &str) -> ExitCode {
    let first = reason.lines().next().unwrap_or_default();
    println!("S3SPOOL UNKNOWN - {first}");
    if reason.contains('\n') {
        eprintln!("s3spool: {reason}");
    }
    ExitCode::from(State::Unknown.code())
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let queue = super::open_queue_read_only(config)?;
    let summary = queue.summary()?;
    let now = crate::clock::now_ms();
    let errors = queue.latest_errors(5)?;
    let daemon = daemon_report(&config.state_dir);
    let live = super::live_names(config, &queue)?;
    if let Some(differs) = &live.differs {
        eprintln!("s3spool: {differs}");
    }
    let (spools, destinations) = (live.spools, live.destinations);
    // Orphans wait for no running config: their age says nothing of delivery.
    let oldest_waiting_age_seconds = queue
        .oldest_waiting_of(&spools, &destinations)?
        .map(|t| ((now - t).max(0) / 1000) as u64);
    let held_back = queue.conditions()?;
    let orphaned = queue.orphans(&spools, &destinations)?;
    let check = verdict(
        &args,
        &daemon,
        summary.counts.failed,
        oldest_waiting_age_seconds,
        &held_back,
        &orphaned,
    );
    let report = Report {
        check,
        daemon,
        queue: queue.path().display().to_string(),
        queue_bytes: queue.file_size()?,
        oldest_row: queue.oldest_row_at()?.map(rfc3339),
        counts: summary.counts,
        oldest_waiting_age_seconds,
        bytes_waiting: summary.bytes_waiting,
        held_back,
        orphaned,
        spools: spool_reports(&queue, config, now)?,
        latest_errors: errors
            .iter()
            .map(|row| error_line(&queue, row))
            .collect::<anyhow::Result<_>>()?,
    };
    let code = if args.checking() {
        ExitCode::from(report.check.state.code())
    } else {
        ExitCode::SUCCESS
    };
    if args.json {
        super::print_json(&report)?;
        return Ok(code);
    }
    println!("{}", summary_line(&report));
    print_spools(&report.spools);
    let c = &report.counts;
    println!(
        "queue {} ({}, history since {})",
        report.queue,
        crate::config::units::format_size(report.queue_bytes),
        report.oldest_row.as_deref().unwrap_or("-")
    );
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
    for o in &report.orphaned {
        println!("orphaned: {}", orphan_line(o));
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

/// Whether a daemon holds the queue, from the kernel's lock table.
fn daemon_report(state_dir: &std::path::Path) -> DaemonReport {
    let at = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
    };
    match crate::state_lock::holder(state_dir) {
        crate::state_lock::Holder::Daemon { pid, since_ms } => DaemonReport {
            running: Some(true),
            pid: Some(pid),
            since: since_ms.and_then(at),
            unknown: None,
        },
        crate::state_lock::Holder::Nobody => DaemonReport {
            running: Some(false),
            pid: None,
            since: None,
            unknown: None,
        },
        crate::state_lock::Holder::Unknown(why) => DaemonReport {
            running: None,
            pid: None,
            since: None,
            unknown: Some(why),
        },
    }
}

/// The monitoring verdict: the worst condition found, and every reason.
fn verdict(
    args: &Args,
    daemon: &DaemonReport,
    failed: u64,
    oldest: Option<u64>,
    held_back: &[Condition],
    orphaned: &[Orphans],
) -> Verdict {
    let mut found: Vec<(State, String)> = Vec::new();
    match (daemon.running, &daemon.unknown) {
        (Some(false), _) => found.push((
            State::Critical,
            "no daemon holds the queue (is s3spool running?)".into(),
        )),
        (None, Some(why)) => found.push((
            State::Unknown,
            format!("cannot tell whether a daemon runs: {why}"),
        )),
        _ => {}
    }
    let too_old = |limit: Option<Duration>| {
        oldest
            .zip(limit)
            .filter(|(age, limit)| *age > limit.as_secs())
            .map(|(age, limit)| {
                format!(
                    "the oldest waiting file was queued {} ago, over {}",
                    format_duration(Duration::from_secs(age)),
                    format_duration(limit)
                )
            })
    };
    if let Some(why) = too_old(args.crit_age.or(args.max_age)) {
        found.push((State::Critical, why));
    } else if let Some(why) = too_old(args.warn_age) {
        found.push((State::Warning, why));
    }
    if failed > 0 {
        found.push((
            State::Warning,
            format!("{failed} failed file(s): see `s3spool list --state failed`"),
        ));
    }
    for held in held_back {
        // A stopped spool (its folder replaced) moves nothing at all until someone acts.
        let state = if matches!(held.name, Held::Spool(_)) {
            State::Critical
        } else {
            State::Warning
        };
        found.push((state, format!("held back ({}): {}", held.name, held.reason)));
    }
    for o in orphaned {
        found.push((State::Warning, format!("orphaned: {}", orphan_line(o))));
    }
    found.sort_by_key(|(state, _)| std::cmp::Reverse(*state));
    Verdict {
        state: found.first().map_or(State::Ok, |(state, _)| *state),
        reasons: found.into_iter().map(|(_, why)| why).collect(),
    }
}

/// `3 file(s) of spool orders for destination lake wait for a spool the config no longer
/// has: …`.
fn orphan_line(o: &Orphans) -> String {
    let what = match o.gone {
        Gone::Spool => "a spool",
        Gone::Destination => "a destination",
        Gone::Both => "a spool and a destination",
    };
    format!(
        "{} file(s) of spool {} for destination {} wait for {what} the config no longer has: add it back (they go on), or drop them with `s3spool purge --orphaned`",
        o.files, o.spool, o.destination
    )
}

/// `S3SPOOL OK - daemon pid 3607 since …; 2 waiting, oldest 3s; 0 failed`: what a
/// monitoring system shows, first.
fn summary_line(report: &Report) -> String {
    let daemon = match (&report.daemon.running, report.daemon.pid) {
        (Some(true), Some(pid)) => match &report.daemon.since {
            Some(since) => format!("daemon pid {pid} since {since}"),
            None => format!("daemon pid {pid}"),
        },
        (Some(false), _) => "no daemon".to_string(),
        _ => "daemon unknown".to_string(),
    };
    let c = &report.counts;
    let waiting = match report.oldest_waiting_age_seconds {
        Some(age) => format!(
            "{} waiting, oldest {}",
            c.pending + c.active,
            format_duration(Duration::from_secs(age))
        ),
        None => "nothing waiting".to_string(),
    };
    let mut line = format!(
        "S3SPOOL {} - {daemon}; {waiting}; {} failed",
        report.check.state.word(),
        c.failed
    );
    if let Some(worst) = report.check.reasons.first() {
        line.push_str(&format!(" ({worst})"));
    }
    line
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
            schedule: ScheduleReport::of(config, &l.spool),
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
    for s in spools {
        if let Some(schedule) = &s.schedule {
            println!("{}: {}", s.spool, schedule.line());
        }
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

/// Unix milliseconds as RFC 3339, to the second.
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
