//! How one file is delivered: the dispatcher ([`crate::dispatch`]) claims a row and hands
//! it here; the uploader opens the source beneath its spool's held root, converts or
//! encrypts it, sends it (a single PUT, or a resumable multipart upload, see
//! [`transfer`]), verifies what S3 confirmed, records the outcome in the queue (done,
//! retry with backoff, failed with why, or held back when the destination is failing),
//! and pokes the finisher to clean up the source.

mod convert;
mod deliver;
mod earlier;
mod error;
mod hold;
mod job;
mod multipart;
mod one_pass;
mod part;
mod retry;
mod source_tag;
pub mod transfer;
mod window;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

use crate::beneath::Roots;
use crate::config::{Bound, Config, Spool};
use crate::outbound::Target;
use crate::pressure::Pressure;
use crate::queue::SharedQueue;
use crate::systemd::Heartbeat;
pub use source_tag::{SourceTags, KEY_FILE as SOURCE_TAG_KEY_FILE};

/// How long a claim lasts unless renewed; a delivery renews it every quarter of that.
pub const LEASE: Duration = Duration::from_secs(120);

/// Everything a file delivery needs, shared by all deliveries of one config.
pub struct Uploader {
    /// The config's spools, by name: how each file is delivered and finished.
    spools: BTreeMap<String, Arc<Spool>>,
    /// Each destination's name, bucket and key prefix, by name: a later version of a file
    /// gets its row and key here.
    bounds: HashMap<String, Arc<Bound>>,
    /// Where work files are made (`state_dir/work`).
    state_dir: PathBuf,
    queue: SharedQueue,
    /// The spools' roots, held open: every source is opened beneath one.
    roots: Roots,
    targets: HashMap<String, Arc<Target>>,
    /// Poked when a delivery ends: the dispatcher may claim again.
    wake: Arc<Notify>,
    /// Poked when a row turned `done`: its source is the finisher's to clean up.
    finisher: Arc<Notify>,
    /// This machine's name, recorded in manifest batches.
    host: Arc<str>,
    /// Conversions running at once (see [`Uploader::conversion_slots`]).
    converting: Arc<Semaphore>,
    /// The daemon's sign of life: a delivery counts as progress.
    heartbeat: Heartbeat,
    /// Where a failing destination is reported, to hold its files back.
    pressure: Arc<Pressure>,
    metrics: Arc<crate::metrics::Metrics>,
    source_tags: Arc<SourceTags>,
}

/// What an uploader is made with besides its config: the parts that outlive a reload.
pub struct Shared {
    pub host: Arc<str>,
    pub converting: Arc<Semaphore>,
    pub heartbeat: Heartbeat,
    pub pressure: Arc<Pressure>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub source_tags: Arc<SourceTags>,
}

impl Uploader {
    /// The uploader of one config (it keeps the parts it uses: spools, destinations' key
    /// prefixes, `state_dir`), sending to `targets`; it pokes `wake` when a delivery ends
    /// and `finisher` when a row turns `done`.
    pub fn new(
        config: &Config,
        queue: SharedQueue,
        targets: HashMap<String, Arc<Target>>,
        roots: Roots,
        wake: Arc<Notify>,
        finisher: Arc<Notify>,
        shared: Shared,
    ) -> Uploader {
        Uploader {
            spools: config.spools.clone(),
            bounds: config
                .destinations
                .iter()
                .map(|(name, d)| (name.clone(), Arc::new(d.bound())))
                .collect(),
            state_dir: config.state_dir.clone(),
            queue,
            targets,
            roots,
            wake,
            finisher,
            host: shared.host,
            converting: shared.converting,
            heartbeat: shared.heartbeat,
            pressure: shared.pressure,
            metrics: shared.metrics,
            source_tags: shared.source_tags,
        }
    }

    /// Conversions that may run at once: one per core, since each is CPU work holding up
    /// to a row group.
    pub fn conversion_slots() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }
}

#[cfg(test)]
mod lost_answers_tests;
#[cfg(test)]
mod tests;
