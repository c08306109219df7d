//! The `s3spool` binary: parse the command line, set up logging, dispatch, and turn the
//! outcome into an exit code. Nothing else lives here.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = s3spool::cli::Cli::parse();
    match s3spool::cli::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("s3spool: {e:#}");
            ExitCode::FAILURE
        }
    }
}
