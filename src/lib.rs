//! s3spool moves finished files from spool directories into S3, exactly once.
//!
//! Data flows one way: [`spool`] (watch, settle) → [`queue`] (SQLite) → [`upload`]
//! (claim, transfer, verify) → [`finish`] (delete/archive/keep the source). [`config`]
//! turns the TOML file into a validated [`config::Config`]; [`key`] renders object keys;
//! [`s3`] is the only module that talks to S3; [`daemon`] wires it all and stops on one
//! cancellation token; [`cli`] holds the operator subcommands. [`beneath`], [`clock`] and
//! [`host`] are leaves that everyone may import: paths reached beneath a spool root, the
//! time, this machine's name.

pub mod beneath;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod finish;
pub mod host;
pub mod key;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod queue;
pub mod s3;
pub mod spool;
pub mod systemd;
pub mod transcode;
pub mod units;
pub mod upload;
