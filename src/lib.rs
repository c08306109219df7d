//! s3spool moves finished files from spool directories into S3, exactly once.
//!
//! Data flows one way: [`spool`] (watch, settle) → [`queue`] (SQLite) → [`dispatch`]
//! (what runs now: claims, gates, admission, hold-back) → [`upload`] (one file: convert,
//! transfer, verify, record) → [`finish`] (delete/archive/keep the source). [`config`]
//! turns the TOML file into a validated [`config::Config`]; [`key`] renders object keys;
//! [`s3`] is the only module that talks to S3; [`daemon`] wires it all and stops on one
//! cancellation token; [`cli`] holds the operator subcommands. [`beneath`], [`clock`] and
//! [`host`] are leaves that everyone may import: paths reached beneath a spool root, the
//! time, this machine's name. [`schedule`] reads delivery windows and batch ticks.
//! [`outbound`] is a destination as its uploads share it (store, settings, request slots,
//! bandwidth); [`pressure`] says when work is held back (low disk, a failing destination);
//! [`backoff`] spaces retries. The dispatcher, the uploader and the manifest writer use
//! them; none of them imports a room above it.
//!
//! Only [`cli`] is public: the binary is the product. Every other module is `pub(crate)`,
//! so what nothing uses is reported as dead code instead of passing for API.

pub(crate) mod backoff;
pub(crate) mod bandwidth;
pub(crate) mod beneath;
pub mod cli;
pub(crate) mod clock;
pub(crate) mod config;
pub(crate) mod daemon;
pub(crate) mod dispatch;
pub(crate) mod finish;
pub(crate) mod host;
pub(crate) mod key;
pub(crate) mod logging;
pub(crate) mod manifest;
pub(crate) mod metrics;
pub(crate) mod outbound;
pub(crate) mod pressure;
pub(crate) mod queue;
pub(crate) mod s3;
pub(crate) mod schedule;
pub(crate) mod spool;
pub(crate) mod state_lock;
pub(crate) mod systemd;
#[cfg(test)]
mod testing;
pub(crate) mod transcode;
pub(crate) mod units;
pub(crate) mod upload;
pub(crate) mod verify;
