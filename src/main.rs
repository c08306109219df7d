//! The `s3spool` binary: parse the command line, set up logging, dispatch, and turn the
//! outcome into an exit code. Nothing else lives here.

use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = s3spool::cli::Cli::parse();
    let filter = EnvFilter::try_from_env("S3SPOOL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // No colour codes in journald or in files.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match s3spool::cli::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("s3spool: {e:#}");
            ExitCode::FAILURE
        }
    }
}
