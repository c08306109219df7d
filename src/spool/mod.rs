//! Spool directories: which files count ([`filter`]), walking a spool ([`scan`]), deciding
//! when a file is finished ([`settle`]) and the task that ties them to the queue
//! ([`watcher`]).
//!
//! File-system events are hints; the directory is the truth. Every spool is walked in full
//! at start-up and every `rescan_interval`, so overflowed inotify queues and network file
//! systems that send no events still get every file delivered.

pub mod filter;
pub mod folder;
pub mod scan;
pub mod settle;
pub mod watcher;

pub use watcher::{watch_spool, WatchContext};
