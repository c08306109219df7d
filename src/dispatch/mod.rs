//! What runs, and when: the dispatcher claims due rows from the queue while file slots
//! are free and hands each to the uploader ([`crate::upload`]), which delivers it. It owns
//! every decision about *what* may run now: admission (`state_dir`'s free space), the
//! spools' delivery windows and batch ticks ([`gates`]), destinations held back while
//! they fail and the files that probe them ([`crate::pressure`]), files the daemon died
//! with (claimed alone), expired leases, and the sweep of multipart uploads no row needs
//! ([`sweep`]). On shutdown it stops claiming; the uploads in flight get `drain_timeout`
//! to finish (a reload waits longer for uploads a bandwidth limit slowed: [`Drain`]); a
//! file cut off then stays `active` and returns to `pending` at the next start.

mod claim;
mod gates;
mod history;
mod idle;
mod sweep;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::beneath::Roots;
use crate::clock::now_ms;
use crate::config::{Config, Spool};
use crate::outbound::Target;
use crate::pressure::Pressure;
use crate::queue::{Held, SharedQueue};
use crate::systemd::Heartbeat;
use crate::upload::{SourceTags, Uploader};
use gates::{Gates, Ticks};
pub use history::keep_history;
use idle::QueueWrites;
pub use sweep::{sweep_orphan_uploads, sweep_periodically, SweepSchedule, SWEEP_TIMEOUT};

/// How often the free space of `state_dir` is looked at.
const DISK_CHECK_EVERY: Duration = Duration::from_secs(5);

/// How often the dispatcher returns rows with expired leases to `pending`.
const REAP_EVERY: Duration = Duration::from_secs(30);
/// The shortest idle wait of the dispatcher.
const MIN_IDLE: Duration = Duration::from_millis(200);
/// How often an idle dispatcher looks for rows made due by the CLI (`s3spool retry`), and
/// the longest it goes without a turn of its loop.
pub const IDLE_POLL: Duration = Duration::from_secs(2);
/// The longest an idle dispatcher goes without trying a claim (see [`Dispatcher::idle`]).
const IDLE_CLAIM_EVERY: Duration = REAP_EVERY;
/// The longest a claim waits for more free slots while deliveries are in flight.
const CLAIM_GATHER: Duration = Duration::from_millis(10);
/// How often a reload waiting for uploads slowed by a bandwidth limit looks again (see
/// [`Dispatcher::drain`]) …
const MOVING_CHECK: Duration = Duration::from_secs(5);
/// … and how long past `drain_timeout` it waits at most: a reload to a mistaken limit
/// must not hold the new config back for hours.
const RELOAD_WAIT_MAX: Duration = Duration::from_secs(600);
/// After a write to the queue's files, an idle dispatcher looks this often …
const RECHECK: Duration = Duration::from_millis(250);
/// … for this long, until the commit shows.
const RECHECK_FOR: Duration = Duration::from_secs(5);

/// Why the dispatcher stops: what its drain does with uploads still in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// The daemon stops: uploads get `drain_timeout`, then are cut.
    Stop,
    /// A reload: uploads sending under a bandwidth limit may go on past `drain_timeout`
    /// (a reload is how a limit is changed), up to [`RELOAD_WAIT_MAX`].
    Reload,
}

/// One config's dispatcher.
pub struct Dispatcher {
    /// This config's spools, by name: only their rows are claimed, each as its schedule
    /// allows.
    spools: BTreeMap<String, Arc<Spool>>,
    /// Where the queue and work files are (`state_dir`), and the free space to keep there.
    state_dir: PathBuf,
    min_free_space: u64,
    /// How long uploads in flight may finish at a stop.
    drain_timeout: Duration,
    queue: SharedQueue,
    /// The spools' roots: a spool whose folder was replaced is stopped, none of its rows
    /// is claimed.
    roots: Roots,
    targets: HashMap<String, Arc<Target>>,
    /// Poked when files are queued or a delivery ended.
    wake: Arc<Notify>,
    /// Delivers what is claimed.
    uploader: Arc<Uploader>,
    /// The dispatcher's sign of life, for systemd's watchdog.
    heartbeat: Heartbeat,
    /// When to hold work back (low disk, failing destinations); outlives a reload.
    pressure: Arc<Pressure>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Cancelled when the daemon stops, not at a reload.
    stopping: CancellationToken,
    /// This config's destinations: only their rows are claimed.
    destinations: Vec<String>,
    /// The batch ticks taken (see [`gates`]).
    ticks: Ticks,
}

/// What the daemon's dispatchers and uploaders share across reloads: each generation's
/// is made with the same.
#[derive(Clone)]
pub struct Lasting {
    /// This machine's name, recorded in manifest batches.
    pub host: Arc<str>,
    /// Conversions running at once (see [`Uploader::conversion_slots`]).
    pub converting: Arc<Semaphore>,
    /// The dispatcher's sign of life, for systemd's watchdog.
    pub heartbeat: Heartbeat,
    /// When to hold work back (low disk, failing destinations).
    pub pressure: Arc<Pressure>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Cancelled when the daemon stops (not at a reload): a stop cuts at `drain_timeout`.
    pub stopping: CancellationToken,
    /// What encrypted objects are recognised by: the daemon's key is in `state_dir`.
    pub source_tags: Arc<SourceTags>,
    /// When the hourly sweep of orphaned uploads is due, whatever reloads came between.
    pub sweeps: SweepSchedule,
}

impl Lasting {
    pub fn new(host: &str, source_tags: SourceTags) -> Lasting {
        Lasting {
            host: Arc::from(host),
            converting: Arc::new(Semaphore::new(Uploader::conversion_slots())),
            heartbeat: Heartbeat::default(),
            pressure: Arc::new(Pressure::default()),
            metrics: Arc::new(crate::metrics::Metrics::default()),
            stopping: CancellationToken::new(),
            source_tags: Arc::new(source_tags),
            sweeps: SweepSchedule::default(),
        }
    }
}

impl Dispatcher {
    /// The dispatcher of one config and the uploader it hands its files to: its spools'
    /// and destinations' rows, sent to `targets`; `wake` is poked when files are queued;
    /// the uploader pokes `finisher` when a row turns `done`.
    pub fn new(
        config: Arc<Config>,
        queue: SharedQueue,
        targets: HashMap<String, Arc<Target>>,
        roots: Roots,
        wake: Arc<Notify>,
        finisher: Arc<Notify>,
        lasting: &Lasting,
    ) -> Dispatcher {
        let uploader = Uploader::new(
            &config,
            queue.clone(),
            targets.clone(),
            Arc::clone(&roots),
            Arc::clone(&wake),
            finisher,
            crate::upload::Shared {
                host: Arc::clone(&lasting.host),
                converting: Arc::clone(&lasting.converting),
                heartbeat: lasting.heartbeat.clone(),
                pressure: Arc::clone(&lasting.pressure),
                metrics: Arc::clone(&lasting.metrics),
                source_tags: Arc::clone(&lasting.source_tags),
            },
        );
        Dispatcher {
            spools: config.spools.clone(),
            state_dir: config.state_dir.clone(),
            min_free_space: config.min_free_space,
            drain_timeout: config.drain_timeout,
            destinations: config.destinations.keys().cloned().collect(),
            queue,
            targets,
            roots,
            wake,
            uploader: Arc::new(uploader),
            heartbeat: lasting.heartbeat.clone(),
            pressure: Arc::clone(&lasting.pressure),
            metrics: Arc::clone(&lasting.metrics),
            stopping: lasting.stopping.clone(),
            ticks: Ticks::default(),
        }
    }

    /// Waits while nothing can be claimed, until a claim may find something: a poke (a
    /// file queued, a delivery ended), the time the next row falls due (`due`), a
    /// held-back destination's probe, a window opening or a batch tick (`gates` changing),
    /// or a change another process made to the queue (the CLI's retry, resume or send).
    /// Until then it only asks the queue whether another process changed it, every
    /// `wait`: one cheap query where a claim is a transaction over every spool. A claim is
    /// tried every [`IDLE_CLAIM_EVERY`] anyway. Returns false at shutdown.
    async fn idle(
        &self,
        due: Option<tokio::time::Instant>,
        open: Vec<String>,
        gates: Gates,
        changes: Option<i64>,
        writes: &QueueWrites,
        shutdown: &CancellationToken,
    ) -> bool {
        let since = tokio::time::Instant::now();
        // A write is seen before its commit is (SQLite syncs the WAL, then publishes the
        // commit): after one, look again every RECHECK for a while.
        let mut recheck_until = since;
        loop {
            let now = tokio::time::Instant::now();
            let rechecking = now < recheck_until;
            // A turn of the loop at least every IDLE_POLL (for the watchdog).
            let turn = now + if rechecking { RECHECK } else { IDLE_POLL };
            let turn = turn.min(due.unwrap_or(since + IDLE_CLAIM_EVERY));
            // Floored: a change that is already due must not spin the loop.
            let turn = match gates.look.next_change_in() {
                Some(ahead) => turn.min(now + ahead.max(MIN_IDLE)),
                None => turn,
            };
            let look = tokio::select! {
                _ = self.wake.notified() => return true,
                () = writes.written() => {
                    recheck_until = tokio::time::Instant::now() + RECHECK_FOR;
                    true
                }
                // Without a watch, every turn looks.
                _ = tokio::time::sleep_until(turn) => rechecking || !writes.watching(),
                _ = shutdown.cancelled() => return false,
            };
            let now = tokio::time::Instant::now();
            // The schedule as it is now: its metrics kept current, and whether a window
            // opened or closed or a batch tick fell since the gates were made.
            let schedule = self.look();
            self.show(&schedule);
            if due.is_some_and(|due| now >= due)
                || now - since >= IDLE_CLAIM_EVERY
                || self.pressure.plan_peek(&self.destinations, now) != open
                || !schedule.same_gates(&gates.look)
            {
                return true;
            }
            if look {
                match self.queue.call(|q| q.changes_by_others()).await {
                    Ok(seen) if Some(seen) == changes => {}
                    _ => return true,
                }
            }
            // A turn that found nothing to claim (nothing changed since the last claim).
            self.heartbeat.beat();
            tracing::debug!("nothing due");
        }
    }

    /// Looks at `state_dir`'s free space and says so when that changes.
    async fn check_disk(&self) {
        let dir = self.state_dir.clone();
        let min_free = self.min_free_space;
        let pressure = Arc::clone(&self.pressure);
        let changed = tokio::task::spawn_blocking(move || pressure.check_disk(&dir, min_free))
            .await
            .unwrap_or(None);
        let recorded = match changed {
            None => return,
            Some(Some(reason)) => {
                tracing::error!(reason = %reason, "state_dir is low on space: not taking new files until it has room (they wait in their spools)");
                self.queue
                    .call(move |q| q.set_condition(&Held::Disk, &reason, now_ms()))
                    .await
            }
            Some(None) => {
                tracing::info!("state_dir has room again: taking new files");
                self.queue.call(|q| q.clear_condition(&Held::Disk)).await
            }
        };
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "cannot record the disk condition for status");
        }
    }

    /// Files in flight at once: enough to keep every destination's requests busy.
    fn file_slots(&self) -> usize {
        self.targets
            .values()
            .map(|t| t.settings.concurrency)
            .sum::<usize>()
            .max(1)
            * 2
    }

    /// While deliveries are in flight, waits a moment for a few more free slots than the
    /// one in hand, so that one claim (a transaction) takes several files instead of one
    /// per file ending. Returns false at shutdown.
    async fn gather_slots(&self, slots: &Semaphore, shutdown: &CancellationToken) -> bool {
        let batch = (self.file_slots() / 16).max(1);
        let until = tokio::time::Instant::now() + CLAIM_GATHER;
        while slots.available_permits() + 1 < batch {
            tokio::select! {
                // A delivery ended (or files were queued): look again.
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(until) => break,
                _ = shutdown.cancelled() => return false,
            }
        }
        true
    }

    /// Runs until `shutdown`, then drains as `drain` says (a stop if it says nothing).
    pub async fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
        drain: oneshot::Receiver<Drain>,
    ) {
        let slots = Arc::new(Semaphore::new(self.file_slots()));
        let mut tasks = JoinSet::new();
        let mut last_reap = tokio::time::Instant::now();
        let mut last_disk_check = tokio::time::Instant::now() - DISK_CHECK_EVERY;
        let writes = QueueWrites::watch(&crate::config::queue_path(&self.state_dir));
        loop {
            if last_reap.elapsed() >= REAP_EVERY {
                last_reap = tokio::time::Instant::now();
                match self.queue.call(|q| q.reap_expired(now_ms())).await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(
                        files = n,
                        "leases ran out (a worker stopped); the files are queued again"
                    ),
                    Err(e) => tracing::warn!(error = %e, "cannot check leases"),
                }
            }
            while let Some(done) = tasks.try_join_next() {
                if let Err(e) = done {
                    tracing::error!(error = %e, "a delivery task panicked; its file returns to pending at restart");
                }
            }
            let first = tokio::select! {
                permit = Arc::clone(&slots).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                // Every slot busy: turn anyway now and then, to show the loop is alive, and
                // keep the schedule's metrics current.
                _ = tokio::time::sleep(IDLE_POLL) => {
                    self.heartbeat.beat();
                    self.show(&self.look());
                    continue;
                }
                _ = shutdown.cancelled() => break,
            };
            if last_disk_check.elapsed() >= DISK_CHECK_EVERY {
                last_disk_check = tokio::time::Instant::now();
                self.check_disk().await;
            }
            if self.pressure.disk_low() {
                // Nothing new until state_dir has room: the files wait in their spools.
                drop(first);
                tracing::debug!("nothing due while state_dir is low on space");
                self.heartbeat.beat();
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_POLL) => continue,
                    _ = shutdown.cancelled() => break,
                }
            }
            if !tasks.is_empty() && !self.gather_slots(&slots, &shutdown).await {
                break;
            }
            let want = 1 + slots.available_permits();
            let look = self.look();
            self.show(&look);
            let gates = self.take_gates(look).await;
            let claimed = self.claim(want, &gates).await;
            let (rows, seen) = match claimed {
                // A turn counts as healthy once the queue answered.
                Ok((rows, unused, seen)) => {
                    self.heartbeat.beat();
                    for destination in unused {
                        self.pressure.probe_unused(&destination);
                    }
                    (rows, seen)
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim work from the queue; retrying in 1s");
                    drop(first);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            };
            if rows.is_empty() {
                drop(first);
                // Every turn that found nothing to claim: tests wait for this line to know
                // a file was passed over (paused, held back), not for a time.
                tracing::debug!("nothing due");
                let plan = self
                    .pressure
                    .plan_peek(&self.destinations, tokio::time::Instant::now());
                let eligible = self.eligible(&plan, &gates);
                // A row due yet not claimed waits for a file that runs alone (one the
                // daemon died with): the end of a delivery wakes the loop, and this floor
                // keeps it from spinning meanwhile.
                let due = match self.queue.call(move |q| q.next_due_for(&eligible)).await {
                    Ok(Some(due)) => {
                        let wait = Duration::from_millis((due - now_ms()).max(0) as u64);
                        Some(tokio::time::Instant::now() + wait.max(MIN_IDLE))
                    }
                    // Unknown: look again as soon as a turn allows.
                    Err(_) => Some(tokio::time::Instant::now() + IDLE_POLL),
                    Ok(None) => None,
                };
                if !self.idle(due, plan, gates, seen, &writes, &shutdown).await {
                    break;
                }
                continue;
            }
            let mut permits = vec![first];
            for _ in 1..rows.len() {
                match Arc::clone(&slots).try_acquire_owned() {
                    Ok(permit) => permits.push(permit),
                    // Only this loop takes slots, so the ones counted above are still free.
                    Err(_) => unreachable!("file slots counted before claiming"),
                }
            }
            for (row, permit) in rows.into_iter().zip(permits) {
                let me = Arc::clone(&self);
                tasks.spawn(async move {
                    me.uploader.deliver(row).await;
                    drop(permit);
                    me.wake.notify_one();
                });
            }
        }
        let drain = drain.await.unwrap_or(Drain::Stop);
        self.drain(tasks, drain).await;
    }

    /// Lets the uploads in flight finish, for `drain_timeout`; then cuts those left. A
    /// reload (not a stop) waits on while uploads under a bandwidth limit are moving: a
    /// reload is how a limit is changed, and must not cut the uploads it slowed down.
    async fn drain(&self, mut tasks: JoinSet<()>, drain: Drain) {
        // Finished tasks stay in the set until joined: count only those still running.
        while tasks.try_join_next().is_some() {}
        if tasks.is_empty() {
            return;
        }
        tracing::info!(
            files = tasks.len(),
            timeout_s = self.drain_timeout.as_secs(),
            "stopping: letting uploads in flight finish"
        );
        let cut_at = tokio::time::Instant::now() + self.drain_timeout;
        let mut deadline = cut_at;
        let mut said = false;
        loop {
            tokio::select! {
                joined = tasks.join_next() => match joined {
                    Some(_) => continue,
                    None => return,
                },
                () = tokio::time::sleep_until(deadline) => {}
                // A stop during a reload's wait: cut as a stop does.
                () = self.stopping.cancelled(), if deadline > cut_at => {}
            }
            let waiting = drain == Drain::Reload
                && !self.stopping.is_cancelled()
                && cut_at.elapsed() < RELOAD_WAIT_MAX
                && self.moving_under_limit();
            if waiting {
                if !said {
                    tracing::info!(files = tasks.len(), max_s = RELOAD_WAIT_MAX.as_secs(),
                        "reload: waiting past drain_timeout for uploads sending under a bandwidth limit");
                    said = true;
                }
                deadline = tokio::time::Instant::now() + MOVING_CHECK;
                continue;
            }
            tracing::warn!(
                files = tasks.len(),
                "drain timeout: stopping uploads still in flight; they resume at the next start"
            );
            tasks.shutdown().await;
            return;
        }
    }

    /// Whether a destination's bandwidth limit let bytes through lately, or holds some
    /// back: an upload under it is moving. "Lately" is `request_timeout`, the silence a
    /// request is allowed anyway (S3 answering after the last byte, say).
    fn moving_under_limit(&self) -> bool {
        self.targets
            .values()
            .any(|t| t.throttle.limits() && t.throttle.sent_within(t.settings.request_timeout))
    }
}
