//! The operator command line: one file per subcommand. Every subcommand loads the config
//! (`--config`, `$S3SPOOL_CONFIG`, or the default path) and returns an exit code; errors are
//! `anyhow` chains that `main` prints whole, or, for a command asked for `--json`, one
//! JSON object on stdout ([`JsonError`]) so the reader of that output gets it too.

mod check;
mod example_key;
mod generate;
mod list;
mod pause;
mod purge;
mod retry;
mod run;
mod send;
mod show;
mod status;
mod verify;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::queue::Queue;

/// Exit code for an invalid config (sysexits' EX_CONFIG), so systemd can refuse to restart.
pub const EXIT_CONFIG: u8 = 78;

#[derive(Debug, Parser)]
#[command(
    name = "s3spool",
    version,
    about = "Moves finished files from spool directories into S3, exactly once",
    after_help = "Exit codes: 0 success; 1 failure (the message says why: a check or retry \
that did not pass, an unreadable queue, a failed send); 2 usage error; 78 invalid config \
(every error is printed); 130 `run` stopped by a second signal. `status --check` (or \
--warn-age, --crit-age) exits as monitoring plugins do: 0 OK, 1 WARNING, 2 CRITICAL, \
3 UNKNOWN."
)]
pub struct Cli {
    /// The config file.
    #[arg(long, global = true, env = "S3SPOOL_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground until SIGTERM or SIGINT.
    Run(run::Args),
    /// Validate the config, then probe every destination (put, head, delete a small object).
    Check(check::Args),
    /// Counts per state, oldest waiting file, bytes waiting, latest errors.
    Status(status::Args),
    /// List queued files.
    List(list::Args),
    /// Everything about one queued file.
    Show(show::Args),
    /// Make failed files due again, with a fresh attempt count.
    Retry(retry::Args),
    /// Delete old `done` rows from the queue.
    Purge(purge::Args),
    /// Stop uploading one spool's files (they stay queued) until `resume`.
    Pause(pause::Args),
    /// Upload a paused spool's files again; with --now, send its queued files at once,
    /// outside its delivery window.
    Resume(pause::ResumeArgs),
    /// Upload one file through a spool's queue, and follow it to the end.
    Send(send::Args),
    /// Check the delivered files against the bucket: each object where the queue says,
    /// as it was sent (exit 0 all good, 1 discrepancies, 2 could not check).
    Verify(verify::Args),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions(generate::CompletionArgs),
    /// Print a man page (roff), or write them all with --dir.
    Man(generate::ManArgs),
}

/// Runs the parsed command line.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    if !matches!(cli.command, Command::Run(_)) {
        quiet_on_closed_pipe();
    }
    // Made from the command line alone: no config needed.
    match cli.command {
        Command::Completions(args) => return generate::completions(args),
        Command::Man(args) => return generate::man(args),
        _ => {}
    }
    let json = wants_json(&cli.command);
    let monitoring = matches!(&cli.command, Command::Status(args) if args.checking());
    // Only commands that talk to S3 read secret files and systemd credentials.
    let needs_secrets = matches!(cli.command, Command::Run(_) | Command::Check(_));
    let config = match Config::load_with(&cli.config, needs_secrets) {
        Ok(config) => config,
        Err(e) if json => return Ok(JsonError::config(&e).unknown_if(monitoring).print()),
        Err(e) if monitoring => return Ok(status::unknown(&e.to_string())),
        Err(e) => {
            eprintln!("s3spool: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let level = match &cli.command {
        Command::Run(args) => args.level(),
        _ => None,
    };
    crate::logging::init(config.log_format, level.as_deref());
    let outcome = match cli.command {
        Command::Run(_) => run::run(config),
        Command::Check(args) => check::run(config, args),
        Command::Status(args) => status::run(&config, args),
        Command::List(args) => list::run(&config, args),
        Command::Show(args) => show::run(&config, args),
        Command::Retry(args) => retry::run(&config, args),
        Command::Purge(args) => purge::run(&config, args),
        Command::Pause(args) => pause::pause(&config, args),
        Command::Resume(args) => pause::resume(&config, args),
        Command::Send(args) => send::run(&config, args),
        Command::Verify(args) => verify::run(&config, args),
        Command::Completions(_) | Command::Man(_) => unreachable!("handled above"),
    };
    match outcome {
        Err(e) if json => Ok(JsonError::failure(&e).unknown_if(monitoring).print()),
        Err(e) if monitoring => Ok(status::unknown(&format!("{e:#}"))),
        outcome => outcome,
    }
}

/// Whether the command was asked for JSON: then its errors are JSON too.
fn wants_json(command: &Command) -> bool {
    match command {
        Command::Status(args) => args.json,
        Command::List(args) => args.json,
        Command::Show(args) => args.json,
        Command::Check(args) => args.json,
        Command::Verify(args) => args.json,
        _ => false,
    }
}

/// An error for a reader of `--json` output: `{"error": {...}}` on stdout, with the exit
/// code the command ends with, and for a config each problem under its key.
#[derive(serde::Serialize)]
pub struct JsonError {
    /// `usage`, `config` or `failure`.
    kind: &'static str,
    message: String,
    exit_code: u8,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    problems: Vec<JsonProblem>,
}

#[derive(serde::Serialize)]
struct JsonProblem {
    key: String,
    message: String,
}

impl JsonError {
    fn config(e: &crate::config::ConfigError) -> JsonError {
        JsonError {
            kind: "config",
            message: e.to_string(),
            exit_code: EXIT_CONFIG,
            problems: e
                .problems
                .iter()
                .map(|p| JsonProblem {
                    key: p.key.clone(),
                    message: p.message.clone(),
                })
                .collect(),
        }
    }

    fn failure(e: &anyhow::Error) -> JsonError {
        JsonError {
            kind: "failure",
            message: format!("{e:#}"),
            exit_code: 1,
            problems: Vec::new(),
        }
    }

    /// A command line clap refused, when it asked for `--json` (help and version are not
    /// errors: `None`).
    pub fn usage(e: &clap::Error, args: &[std::ffi::OsString]) -> Option<JsonError> {
        if !e.use_stderr() || !args.iter().any(|a| a == "--json") {
            return None;
        }
        let text = e.render().to_string();
        let message = text.lines().next().unwrap_or_default();
        Some(JsonError {
            kind: "usage",
            message: message
                .strip_prefix("error: ")
                .unwrap_or(message)
                .to_string(),
            exit_code: 2,
            problems: Vec::new(),
        })
    }

    /// A monitoring check's error ends UNKNOWN (3), whatever went wrong.
    fn unknown_if(mut self, monitoring: bool) -> JsonError {
        if monitoring {
            self.exit_code = 3;
        }
        self
    }

    /// Prints `{"error": …}` on stdout; the exit code to end with.
    pub fn print(&self) -> ExitCode {
        let _ = print_json(&serde_json::json!({ "error": self }));
        ExitCode::from(self.exit_code)
    }
}

/// An operator command whose reader goes away (`s3spool list | head`) ends quietly, as
/// Unix tools do: SIGPIPE's default action, instead of Rust's ignored SIGPIPE and a panic
/// in `println!`. Sockets are unaffected (they are written with MSG_NOSIGNAL); `run` keeps
/// SIGPIPE ignored all the same, since a daemon must never die of a closed descriptor.
fn quiet_on_closed_pipe() {
    // SAFETY: setting a signal's disposition to its default, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The spool named `name` in the config, or an error listing the ones there are.
fn spool<'c>(
    config: &'c Config,
    name: &str,
) -> anyhow::Result<&'c std::sync::Arc<crate::config::Spool>> {
    config.spools.get(name).ok_or_else(|| {
        let known: Vec<&str> = config.spools.keys().map(String::as_str).collect();
        anyhow::anyhow!(
            "no spool {name:?} in {} (spools: {})",
            config.source.display(),
            known.join(", ")
        )
    })
}

/// Opens the queue the daemon uses. Refuses to create one where none exists: a typo in
/// `state_dir` should not look like an empty queue.
fn open_queue(config: &Config) -> anyhow::Result<Queue> {
    let path = existing_queue(config)?;
    Queue::open(&path).with_context(|| format!("opening {}", path.display()))
}

/// Opens the queue for reading only: for commands that change nothing.
fn open_queue_read_only(config: &Config) -> anyhow::Result<Queue> {
    let path = existing_queue(config)?;
    Queue::open_read_only(&path).with_context(|| format!("opening {} read-only", path.display()))
}

/// The spool's folder, opened by its canonical path without following a symlink, if it is
/// the folder the queue knows for the spool (`known`, when the daemon has run).
pub(crate) fn held_spool_root(
    spool: &crate::config::Spool,
    known: Option<String>,
) -> anyhow::Result<crate::beneath::Root> {
    let canonical = std::fs::canonicalize(&spool.path).with_context(|| {
        format!(
            "spools.{}.path: cannot open {}",
            spool.name,
            spool.path.display()
        )
    })?;
    if let Some(known) = known {
        anyhow::ensure!(
            canonical == Path::new(&known),
            "spools.{}.path = {:?} leads to {} now, but the daemon knows the spool as {known}: a folder on the way was replaced (a symlink?); nothing was sent",
            spool.name,
            spool.path.display().to_string(),
            canonical.display()
        );
    }
    crate::beneath::Root::open(&canonical)
        .with_context(|| format!("cannot open {}", canonical.display()))
}

/// The spools and destinations whose rows are not orphans: the config's, and while a
/// daemon runs, the ones it started or reloaded with too (the config file may have been
/// edited since, or be another one). Says so when the two differ.
struct LiveNames {
    spools: Vec<String>,
    destinations: Vec<String>,
    /// Why the daemon's names differ from the config's, for the operator.
    differs: Option<String>,
}

fn live_names(config: &Config, queue: &Queue) -> anyhow::Result<LiveNames> {
    let mut spools: Vec<String> = config.spools.keys().cloned().collect();
    let mut destinations: Vec<String> = config.destinations.keys().cloned().collect();
    let mut differs = None;
    if let crate::state_lock::Holder::Daemon { pid, .. } =
        crate::state_lock::holder(&config.state_dir)
    {
        let (running_spools, running_destinations) = queue.running_names()?;
        let extra: Vec<&String> = running_spools
            .iter()
            .filter(|n| !spools.contains(n))
            .chain(
                running_destinations
                    .iter()
                    .filter(|n| !destinations.contains(n)),
            )
            .chain(spools.iter().filter(|n| !running_spools.contains(n)))
            .chain(
                destinations
                    .iter()
                    .filter(|n| !running_destinations.contains(n)),
            )
            .collect();
        if !extra.is_empty() {
            let names: Vec<&str> = extra.iter().map(|n| n.as_str()).collect();
            differs = Some(format!(
                "the daemon running (pid {pid}) was not started or reloaded with {}: {} differ; the rows of either are not taken for orphans (reload it: systemctl reload s3spool)",
                config.source.display(),
                names.join(", ")
            ));
        }
        for name in running_spools {
            if !spools.contains(&name) {
                spools.push(name);
            }
        }
        for name in running_destinations {
            if !destinations.contains(&name) {
                destinations.push(name);
            }
        }
    }
    Ok(LiveNames {
        spools,
        destinations,
        differs,
    })
}

fn existing_queue(config: &Config) -> anyhow::Result<std::path::PathBuf> {
    let path = config.queue_path();
    if !path.exists() {
        anyhow::bail!(
            "no queue database at {} (state_dir in {}); the daemon creates it when it first runs",
            path.display(),
            config.source.display()
        );
    }
    Ok(path)
}

/// Unix milliseconds as an RFC 3339 UTC time.
fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}
