//! The `s3spool` binary: parse the command line, set up logging, dispatch, and turn the
//! outcome into an exit code. Nothing else lives here.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match s3spool::cli::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => match s3spool::cli::JsonError::usage(&e, &args) {
            Some(error) => return error.print(),
            None => e.exit(),
        },
    };
    match s3spool::cli::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("s3spool: {e:#}");
            ExitCode::FAILURE
        }
    }
}
