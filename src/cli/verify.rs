//! `s3spool verify`: the bucket audited against the queue (see [`crate::verify`]). Exit
//! codes: 0 all good, 1 discrepancies found, 2 something could not be checked.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::units::parse_duration;
use crate::config::Config;
use crate::queue::AuditRange;
use crate::verify::{Listing, Plan, Progress, Report, Target};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this spool's deliveries (and, with --unexplained, its prefix).
    #[arg(long)]
    spool: Option<String>,
    /// Deliveries of this long ago and since, e.g. 7d, 12h.
    #[arg(long, value_parser = parse_duration, default_value = "7d", conflicts_with = "all")]
    since: Duration,
    /// Every delivery the queue holds.
    #[arg(long)]
    all: bool,
    /// Read every object back and hash it (by default: HEAD, and the SHA-256 the object
    /// carries).
    #[arg(long)]
    deep: bool,
    /// Also list each spool's key prefix for objects no row or manifest explains, and
    /// compare each written manifest with its batch (needs s3:ListBucket).
    #[arg(long)]
    unexplained: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub(super) json: bool,
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    if let Some(name) = &args.spool {
        if !config.spools.contains_key(name) {
            anyhow::bail!(
                "no spool named {name:?} in {}; spools: {}",
                config.source.display(),
                config.spools.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    let mut queue = super::open_queue_read_only(config)?;
    let range = AuditRange {
        since_ms: (!args.all).then(|| crate::clock::now_ms() - args.since.as_millis() as i64),
        spool: args.spool.clone(),
    };
    let plan = Plan {
        range,
        deep: args.deep,
        listings: args
            .unexplained
            .then(|| listings(config, args.spool.as_deref())),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let bar = Bar::new(!args.json && std::io::stderr().is_terminal());
    let started = Instant::now();
    let report = runtime.block_on(async {
        let targets = targets(config);
        crate::verify::verify(&mut queue, &targets, &plan, &bar).await
    })?;
    if args.json {
        super::print_json(&report)?;
    } else {
        print_text(&report, started.elapsed());
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// Every destination of the config, reached as the daemon reaches it (its endpoint,
/// credentials, proxy and CA), without a bandwidth limit: verify reads little.
fn targets(config: &Config) -> HashMap<String, Target> {
    let unlimited = Arc::new(crate::bandwidth::Throttle::default());
    config
        .destinations
        .iter()
        .map(|(name, d)| {
            let store = crate::s3::connect(&d.s3_spec(), Arc::clone(&unlimited))
                .map_err(|e| format!("cannot reach destination {name}: {}", e.reason()));
            let target = Target {
                store,
                concurrency: d.upload.concurrency,
            };
            (name.clone(), target)
        })
        .collect()
}

/// Each spool's fixed key prefix, in its destination's bucket.
fn listings(config: &Config, only: Option<&str>) -> Vec<Listing> {
    let host = crate::host::hostname();
    config
        .spools
        .values()
        .filter(|s| only.is_none_or(|name| s.name == name))
        .filter_map(|spool| {
            let route = spool.only_route();
            let d = config.destinations.get(&route.destination)?;
            let prefix = route.key.fixed_head(&d.prefix, &spool.name, &host);
            Some(Listing {
                spool: spool.name.clone(),
                destination: d.name.clone(),
                bucket: d.bucket.clone(),
                shared: prefix.len() <= d.key_prefix().len(),
                prefix,
            })
        })
        .collect()
}

fn print_text(report: &Report, took: Duration) {
    let mut out = std::io::stdout().lock();
    for p in &report.problems {
        let id = p.id.map(|id| format!(" id={id}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<16} spool={}{id} s3://{}/{}: {}",
            p.kind.words(),
            p.spool,
            p.bucket,
            p.key,
            p.detail
        );
    }
    for u in &report.unchecked {
        let _ = writeln!(out, "{:<16} {}: {}", "not checked", u.what, u.reason);
    }
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let mut did = format!("verified {} delivered row(s)", report.rows);
    if report.list_requests > 0 {
        did += &format!(
            " ({} by {} listing page(s), {} by HEAD)",
            report.by_listing,
            report.list_requests,
            report.rows - report.by_listing
        );
    }
    if report.read_back > 0 {
        did += &format!(", read back {}", report.read_back);
    }
    if report.listed > 0 || report.manifests > 0 {
        did += &format!(
            ", listed {} object(s), compared {} manifest(s)",
            report.listed, report.manifests
        );
    }
    let rate = report.rows as f64 / took.as_secs_f64().max(0.001);
    did += &format!(" in {:.1} s ({rate:.0} rows/s)", took.as_secs_f64());
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for p in &report.problems {
        match counts.iter_mut().find(|(w, _)| *w == p.kind.words()) {
            Some((_, n)) => *n += 1,
            None => counts.push((p.kind.words(), 1)),
        }
    }
    let verdict = if report.problems.is_empty() && report.unchecked.is_empty() {
        "all good".to_string()
    } else {
        let mut parts: Vec<String> = counts.iter().map(|(w, n)| format!("{n} {w}")).collect();
        if !report.unchecked.is_empty() {
            parts.push(format!("{} not checked", report.unchecked.len()));
        }
        parts.join(", ")
    };
    let _ = writeln!(out, "{did}: {verdict}");
}

/// A one-line progress bar on stderr (a terminal only): rows checked, rate, time left.
struct Bar {
    shown: bool,
    state: Mutex<BarState>,
}

struct BarState {
    total: u64,
    done: u64,
    started: Instant,
    drawn: Option<Instant>,
}

impl Bar {
    fn new(shown: bool) -> Bar {
        Bar {
            shown,
            state: Mutex::new(BarState {
                total: 0,
                done: 0,
                started: Instant::now(),
                drawn: None,
            }),
        }
    }
}

impl Progress for Bar {
    fn start(&self, total: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.total = total;
        s.started = Instant::now();
    }

    fn advance(&self, n: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.done += n;
        if !self.shown
            || s.drawn
                .is_some_and(|at| at.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        s.drawn = Some(Instant::now());
        let secs = s.started.elapsed().as_secs_f64().max(0.001);
        let rate = s.done as f64 / secs;
        let left = (s.total.saturating_sub(s.done)) as f64 / rate.max(0.001);
        eprint!(
            "\rchecked {}/{} rows, {rate:.0}/s, {left:.0} s left   ",
            s.done, s.total
        );
    }

    fn finish(&self) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if self.shown && s.drawn.is_some() {
            eprintln!();
        }
    }
}
