//! `s3spool completions SHELL` and `s3spool man`: made from the command-line definition
//! itself, so they never drift from it. The man pages add what clap does not know: each
//! command's EXIT STATUS, the ENVIRONMENT it reads and the FILES it uses.

use clap::CommandFactory;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct CompletionArgs {
    /// bash, zsh, fish, elvish or powershell.
    shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// The page of one command (run, status, …); s3spool(1) if none.
    command: Option<String>,
    /// Write every page (s3spool.1 and s3spool-COMMAND.1) into this folder instead.
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    dir: Option<PathBuf>,
}

pub fn completions(args: CompletionArgs) -> anyhow::Result<ExitCode> {
    let mut command = super::Cli::command();
    clap_complete::generate(args.shell, &mut command, "s3spool", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    let mut top = super::Cli::command().disable_help_subcommand(true);
    // Built, each subcommand is named s3spool-NAME, as its page is.
    top.build();
    let subcommands: Vec<clap::Command> = top.get_subcommands().cloned().collect();
    if let Some(dir) = args.dir {
        std::fs::create_dir_all(&dir)?;
        for command in std::iter::once(&top).chain(&subcommands) {
            let name = command.get_display_name().unwrap_or(command.get_name());
            let path = dir.join(format!("{name}.1"));
            let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
            render(command, &mut file)?;
            file.flush()?;
            println!("{}", path.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let page = match args.command.as_deref() {
        None => &top,
        Some(name) => subcommands
            .iter()
            .find(|c| c.get_name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = subcommands.iter().map(|c| c.get_name()).collect();
                anyhow::anyhow!("no command {name:?} (commands: {})", names.join(", "))
            })?,
    };
    let mut out = std::io::stdout().lock();
    render(page, &mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// One page: clap's sections, then ours, then the version.
fn render(command: &clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(command.clone().version(env!("CARGO_PKG_VERSION")))
        .manual("s3spool manual")
        .source(format!("s3spool {}", env!("CARGO_PKG_VERSION")));
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    if command.has_subcommands() {
        man.render_subcommands_section(out)?;
    }
    let name = command.get_name();
    section(out, "EXIT STATUS", &exit_status(name))?;
    section(out, "ENVIRONMENT", &environment(name))?;
    section(out, "FILES", FILES)?;
    section(out, "SEE ALSO", &see_also(name))?;
    man.render_version_section(out)
}

/// A section of `.TP` entries: `(term, text)`; an empty term is a plain paragraph.
fn section(out: &mut dyn Write, title: &str, entries: &[(&str, &str)]) -> std::io::Result<()> {
    writeln!(out, ".SH \"{title}\"")?;
    for (term, text) in entries {
        if term.is_empty() {
            writeln!(out, ".PP\n{}", roff_text(text))?;
        } else {
            writeln!(out, ".TP\n\\fB{}\\fR\n{}", roff_text(term), roff_text(text))?;
        }
    }
    Ok(())
}

/// Text safe in a roff body: backslashes doubled, no line starting with a control dot.
fn roff_text(text: &str) -> String {
    let text = text.replace('\\', "\\\\").replace('-', "\\-");
    match text.strip_prefix(['.', '\'']) {
        Some(_) => format!("\\&{text}"),
        None => text,
    }
}

type Entries = Vec<(&'static str, &'static str)>;

fn exit_status(command: &str) -> Entries {
    const USAGE: (&str, &str) = ("2", "Usage error: a bad option or value.");
    const CONFIG: (&str, &str) = (
        "78",
        "The config is invalid (sysexits EX_CONFIG): every error is printed under its key.",
    );
    const FAILURE: (&str, &str) = ("1", "Failure: the message on stderr says why.");
    match command {
        "s3spool" => vec![
            ("0", "Success."),
            FAILURE,
            ("2", "Usage error; or CRITICAL from status --check."),
            ("3", "UNKNOWN from status --check."),
            CONFIG,
            ("130", "run stopped at once by a second signal."),
        ],
        "run" => vec![
            ("0", "Stopped cleanly by SIGTERM or SIGINT, after the drain."),
            (
                "1",
                "Could not start or had to stop: the state dir is locked by another daemon, a spool folder cannot be made, the queue cannot be opened.",
            ),
            USAGE,
            CONFIG,
            ("130", "Stopped at once by a second SIGTERM or SIGINT."),
        ],
        "status" => vec![
            (
                "0",
                "Without --check, --warn-age or --crit-age: the report was printed. With them: OK.",
            ),
            ("1", "WARNING: failed files, held-back work, or a file older than --warn-age."),
            (
                "2",
                "CRITICAL: no daemon holds the queue, or a file is older than --crit-age. Also a usage error.",
            ),
            ("3", "UNKNOWN: the queue cannot be read."),
            CONFIG,
        ],
        "check" => vec![
            ("0", "The config is valid and, unless --offline, every probe passed."),
            ("1", "A probe failed: each row says what to fix."),
            USAGE,
            CONFIG,
        ],
        "send" => vec![
            ("0", "The file was delivered."),
            ("1", "The file failed or could not be queued: the reason is printed."),
            USAGE,
            CONFIG,
        ],
        "completions" | "man" => vec![("0", "Success."), FAILURE, USAGE],
        _ => vec![("0", "Success."), FAILURE, USAGE, CONFIG],
    }
}

fn environment(command: &str) -> Entries {
    let mut vars: Entries = vec![(
        "S3SPOOL_CONFIG",
        "The config file, when --config is not given (default /etc/s3spool/config.toml).",
    )];
    if matches!(command, "s3spool" | "run" | "check") {
        vars.extend([
            (
                "S3SPOOL_LOG, RUST_LOG",
                "The log level or filter (info by default), after run -v and --log-level.",
            ),
            (
                "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE",
                "Read by auth mode \"default\" (the AWS chain) and by profiles' credential_process.",
            ),
            (
                "https_proxy, http_proxy, all_proxy, no_proxy (and upper case)",
                "The proxy for a destination with no proxy key; lower case first. Loopback endpoints always go direct.",
            ),
            (
                "CREDENTIALS_DIRECTORY",
                "Set by systemd's LoadCredential=; read by secret_access_key_credential.",
            ),
            (
                "NOTIFY_SOCKET, WATCHDOG_USEC",
                "Set by systemd for Type=notify and WatchdogSec=.",
            ),
            (
                "JOURNAL_STREAM",
                "Set by systemd; when it names stderr, log lines go to the journal with their fields.",
            ),
            (
                "S3SPOOL_JOURNAL_SOCKET",
                "Another journal socket than /run/systemd/journal/socket (for tests).",
            ),
        ]);
    }
    vars
}

const FILES: &[(&str, &str)] = &[
    ("/etc/s3spool/config.toml", "The default config file."),
    (
        "/usr/share/doc/s3spool/config.example.toml",
        "Every key, with its default and what it does.",
    ),
    (
        "STATE_DIR/queue.db, queue.db-wal, queue.db-shm",
        "The SQLite queue (state_dir, /var/lib/s3spool by default): one row per file, readable with sqlite3. Private to the daemon's user (0600).",
    ),
    (
        "STATE_DIR/s3spool.lock",
        "Held by the running daemon: its pid and start time; status reads it.",
    ),
    ("/var/spool/s3spool", "Where the packaged spool folders live."),
];

fn see_also(command: &str) -> Entries {
    if command == "s3spool" {
        vec![("", "systemctl(1), journalctl(1), sqlite3(1)")]
    } else {
        vec![("", "s3spool(1)")]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_has_exit_status_environment_and_files_and_names_only_pages_that_exist() {
        let mut top = crate::cli::Cli::command().disable_help_subcommand(true);
        top.build();
        let mut pages = vec![top.clone()];
        pages.extend(top.get_subcommands().cloned());
        let names: Vec<String> = pages
            .iter()
            .map(|c| c.get_display_name().unwrap_or(c.get_name()).to_string())
            .collect();
        for page in &pages {
            let mut out = Vec::new();
            render(page, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            for section in ["EXIT STATUS", "ENVIRONMENT", "FILES", "SEE ALSO"] {
                assert!(
                    text.contains(&format!(".SH \"{section}\"")),
                    "{section} in\n{text}"
                );
            }
            // Every page it refers to (NAME(1)) is one of ours or a system tool's.
            for word in text.split(|c: char| c.is_whitespace() || c == ',') {
                if let Some(name) = word.strip_suffix("(1)") {
                    let name = name.trim_start_matches("\\fB").replace("\\-", "-");
                    assert!(
                        names.contains(&name)
                            || ["systemctl", "journalctl", "sqlite3"].contains(&name.as_str()),
                        "{name}(1) in {:?}",
                        page.get_name()
                    );
                }
            }
        }
        assert!(names.contains(&"s3spool-run".to_string()), "{names:?}");
    }
}
