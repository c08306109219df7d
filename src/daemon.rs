//! The daemon: wires watchers, queue and uploader together and runs them until the one
//! cancellation token fires. Signals are the caller's business (`main` turns SIGTERM into
//! a cancel), so tests stop the daemon without signals.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::bandwidth::Throttles;
use crate::beneath::{Root, Roots};
use crate::clock::now_ms;
use crate::config::{AfterUpload, Config};
use crate::dispatch::{sweep_orphan_uploads, sweep_periodically, Dispatcher, Drain, Lasting};
use crate::finish::Finisher;
use crate::manifest::ManifestWriter;
use crate::metrics::Stores;
use crate::outbound::limit::AdaptiveLimit;
use crate::outbound::Target;
use crate::queue::{
    FolderChange, Held, Queue, QueueError, SharedQueue, SourceOutcome, SpoolFolder,
};
use crate::s3::StoreError;
use crate::spool::{watch_spool, WatchContext};
use crate::systemd::Notifier;
use crate::upload::SourceTags;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create state_dir {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read or make {path}, the key of encrypted objects' source tags: {source}")]
    SourceTagKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another s3spool daemon is running on {path} (it holds the lock file)")]
    AlreadyRunning { path: PathBuf },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("destination {name}: {source}")]
    Store { name: String, source: StoreError },
    #[error("metrics_listen: cannot listen on {address}: {source}")]
    Metrics {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Overlap(String),
    #[error("spools.{name}.path: cannot create {path}: {source}")]
    Spool {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spools.{name}.archive_dir: cannot create {path}: {source}")]
    Archive {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spools.{name}.path: cannot open {path} as the spool's folder: {source}")]
    Root {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs the daemon until `shutdown` is cancelled, then drains and returns. Each message on
/// `reloads` (SIGHUP) reloads the config file: a config that validates replaces the running
/// one (spools and destinations added, removed or changed); one that does not is refused,
/// with every error logged, and the daemon runs on unchanged.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    mut reloads: mpsc::Receiver<()>,
) -> Result<(), DaemonError> {
    let mut config = Arc::new(prepare_spools(config)?);
    let mut roots = open_roots(&config)?;
    // 0700 whatever the umask: the queue names every file the host ships.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.state_dir)
        .map_err(|source| DaemonError::StateDir {
            path: config.state_dir.clone(),
            source,
        })?;
    let _lock = lock_state_dir(&config)?;
    let mut queue = Queue::open(&config.queue_path())?;
    let max_attempts = |destination: &str| {
        config
            .destinations
            .get(destination)
            .map_or(u32::MAX, |d| d.upload.max_attempts)
    };
    let (recovered, set_aside) = queue.recover_after_crash(now_ms(), max_attempts)?;
    if recovered > 0 {
        tracing::info!(
            files = recovered,
            "files in flight when the daemon last died are queued again"
        );
    }
    for (id, path) in set_aside {
        tracing::error!(id, path = %path,
            "set aside: the daemon died during its last attempts at this file (killed, or out of memory?); fix the cause, then `s3spool retry {id}`");
    }
    for spool in config.spools.values() {
        let outcome = match spool.after_upload {
            AfterUpload::Delete => SourceOutcome::Deleted,
            AfterUpload::Archive(_) => SourceOutcome::Archived,
            AfterUpload::Keep => SourceOutcome::Kept,
        };
        let filled = queue.backfill_outcomes(&spool.name, outcome)?;
        if filled > 0 {
            tracing::info!(spool = %spool.name, rows = filled, %outcome, "recorded how delivered files were finished before this version");
        }
    }
    let queue = SharedQueue::new(queue);
    crate::transcode::clear_work(&config.state_dir);

    let source_tags =
        SourceTags::open(&config.state_dir).map_err(|source| DaemonError::SourceTagKey {
            path: config.state_dir.join(crate::upload::SOURCE_TAG_KEY_FILE),
            source,
        })?;
    let shared = Shared {
        queue: queue.clone(),
        lasting: Lasting {
            stopping: shutdown.clone(),
            ..Lasting::new(&crate::host::hostname(), source_tags)
        },
        stores: Stores::default(),
        notifier: Notifier::from_env(),
        throttles: Throttles::default(),
    };
    // Conditions a previous run recorded are looked at afresh.
    queue.call(|q| q.clear_conditions()).await?;
    let metrics_server = match config.metrics_listen {
        None => None,
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| DaemonError::Metrics { address, source })?;
            tracing::info!(%address, "serving metrics at /metrics");
            for (destination, at) in queue.call(|q| q.last_done_by_destination()).await? {
                shared.lasting.metrics.last_delivered(&destination, at);
            }
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                Arc::clone(&shared.lasting.metrics),
                queue.clone(),
                shared.stores.clone(),
                shutdown.clone(),
            )))
        }
    };
    let notifier = shared.notifier.clone();
    let reporter = tokio::spawn(crate::systemd::report(
        notifier.clone(),
        queue.clone(),
        shared.lasting.heartbeat.clone(),
        crate::dispatch::IDLE_POLL,
        shutdown.clone(),
    ));
    let mut targets = connect_targets(&config, &shared.throttles)?;
    apply_bwlimits(&config, &shared.throttles);
    let mut first = true;
    loop {
        // Each spool is its folder: the queue learns which, before any task of the config
        // runs (rows carried over to a renamed spool, or orphaned).
        let refused = adopt_folders(&queue, &config).await?;
        if !refused.is_empty() {
            (config, roots) = without_spools(&config, &roots, &refused);
        }
        let generation = Generation::start(
            &config,
            &roots,
            targets.clone(),
            &shared,
            first,
            shutdown.child_token(),
        )
        .await;
        shared.lasting.heartbeat.set_reloading(false);
        let generation = generation?;
        for (name, reason) in refused {
            let condition = Held::Spool(name);
            if let Err(e) = queue
                .call(move |q| q.set_condition(&condition, &reason, now_ms()))
                .await
            {
                tracing::warn!(error = %e, "cannot record the spool's condition for status");
            }
        }
        let status = crate::systemd::current_status(&queue, &shared.lasting.heartbeat).await;
        notifier.ready(status.as_deref().unwrap_or("running"));
        tracing::info!(spools = config.spools.len(), destinations = config.destinations.len(),
            queue = %config.queue_path().display(), reloaded = !first, "s3spool running");
        first = false;
        // Until a stop, or a reload with a config that validates.
        let next = loop {
            tokio::select! {
                () = shutdown.cancelled() => break None,
                Some(()) = reloads.recv() => match reload(&config, &shared.throttles) {
                    Ok(next) => break Some(next),
                    Err(()) => notifier.ready(
                        "the reloaded config was refused (see the log); running on the previous one",
                    ),
                },
            }
        };
        match next {
            None => {
                notifier.stopping();
                generation.stop(&config, &queue, true).await;
                break;
            }
            Some((next, next_targets, next_roots)) => {
                notifier.reloading();
                shared.lasting.heartbeat.set_reloading(true);
                tracing::info!(
                    "reloading: letting uploads in flight finish on the previous config"
                );
                generation.stop(&config, &queue, false).await;
                config = next;
                targets = next_targets;
                roots = next_roots;
            }
        }
    }
    let _ = reporter.await;
    // A stopped daemon holds nothing back: status must not say otherwise.
    if let Err(e) = queue.call(|q| q.clear_conditions()).await {
        tracing::warn!(error = %e, "cannot clear the held-back conditions");
    }
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    tracing::info!("s3spool stopped");
    Ok(())
}

/// Reads the config file again. Refuses (logging every reason) a config that does not
/// validate, or that changes what only a restart can change.
fn reload(running: &Config, throttles: &Throttles) -> Result<(Arc<Config>, Targets, Roots), ()> {
    tracing::info!(config = %running.source.display(), "SIGHUP: reloading the config");
    let next = match Config::load(&running.source) {
        Ok(next) => next,
        Err(e) => {
            for problem in &e.problems {
                tracing::error!(file = %e.file.display(), key = %problem.key, problem = %problem.message,
                    "config reload refused");
            }
            tracing::error!(errors = e.problems.len(), "config reload refused; still running on the previous config: fix the file and send SIGHUP again");
            return Err(());
        }
    };
    if next.state_dir != running.state_dir {
        tracing::error!(
            key = "state_dir",
            "config reload refused: state_dir only changes with a restart"
        );
        return Err(());
    }
    if next.log_format != running.log_format || next.metrics_listen != running.metrics_listen {
        tracing::warn!("log_format and metrics_listen only change with a restart; the rest of the config is reloaded");
    }
    // Everything that could fail is tried now, before the running tasks are stopped.
    let next = prepare_spools(next).and_then(|next| {
        let roots = open_roots(&next)?;
        connect_targets(&next, throttles).map(|targets| (Arc::new(next), targets, roots))
    });
    match next {
        Ok(next) => {
            // Uploads under way take the new limits from their next chunk.
            apply_bwlimits(&next.0, throttles);
            Ok(next)
        }
        Err(e) => {
            tracing::error!(error = %e, "config reload refused");
            Err(())
        }
    }
}

/// Each destination's S3 client, settings and concurrency limit, by name.
type Targets = HashMap<String, Arc<Target>>;

/// What lives as long as the daemon, across reloads.
struct Shared {
    queue: SharedQueue,
    /// What every generation's uploader shares.
    lasting: Lasting,
    /// The running generation's stores, for the metrics of their credentials.
    stores: Stores,
    notifier: Notifier,
    /// Each destination's bandwidth limit, shared by its uploads across reloads.
    throttles: Throttles,
}

/// The tasks that run one config: watchers, uploader, finisher, manifest writer and
/// sweeper. A reload stops them (letting uploads in flight finish) and starts the next
/// generation.
struct Generation {
    token: CancellationToken,
    watchers: JoinSet<()>,
    dispatcher: tokio::task::JoinHandle<()>,
    /// How the dispatcher drains, told when the generation stops.
    drain: tokio::sync::oneshot::Sender<Drain>,
    /// Told the stop's deadline after the uploader drained, so it finishes what the last
    /// uploads delivered.
    finisher_stop: tokio::sync::oneshot::Sender<tokio::time::Instant>,
    finisher: tokio::task::JoinHandle<()>,
    manifests: Arc<ManifestWriter>,
    manifest_task: tokio::task::JoinHandle<()>,
    sweeper: tokio::task::JoinHandle<()>,
    /// Forgets delivered rows older than `history`.
    historian: tokio::task::JoinHandle<()>,
}

impl Generation {
    /// Starts the tasks of `config`, with its destinations' targets (made, and so checked,
    /// before the previous generation was stopped).
    async fn start(
        config: &Arc<Config>,
        roots: &Roots,
        targets: Targets,
        shared: &Shared,
        first: bool,
        token: CancellationToken,
    ) -> Result<Generation, DaemonError> {
        let queue = &shared.queue;
        *shared.stores.write().unwrap_or_else(|p| p.into_inner()) = crate::metrics::Scope {
            spools: config.spools.keys().cloned().collect(),
            stores: targets
                .iter()
                .map(|(name, t)| (name.clone(), Arc::clone(&t.store)))
                .collect(),
        };
        // At start, before any worker, every orphan is aborted; on a reload the periodic
        // sweep is enough.
        if first {
            // Each destination may take up to SWEEP_TIMEOUT: tell systemd before it
            // counts the start as hung.
            let by =
                crate::dispatch::SWEEP_TIMEOUT * targets.len() as u32 + Duration::from_secs(30);
            shared.notifier.extend_start(by);
            let spools: Vec<String> = config.spools.keys().cloned().collect();
            sweep_orphan_uploads(queue, &spools, &targets).await;
        } else {
            // The new config may have fixed what held work back: look afresh.
            shared.lasting.pressure.reset();
            if let Err(e) = queue.call(|q| q.clear_conditions()).await {
                tracing::warn!(error = %e, "cannot clear the held-back conditions");
            }
        }
        let sweeper = tokio::spawn(sweep_periodically(
            queue.clone(),
            config.spools.keys().cloned().collect(),
            targets.clone(),
            shared.lasting.sweeps.clone(),
            token.clone(),
        ));
        let historian = tokio::spawn(crate::dispatch::keep_history(
            queue.clone(),
            config.history,
            config.state_dir.clone(),
            token.clone(),
        ));
        let wake = Arc::new(Notify::new());
        let finished = Arc::new(Notify::new());
        let (finisher_stop, stopped) = tokio::sync::oneshot::channel();
        let finisher = Finisher::new(
            queue.clone(),
            config.spools.clone(),
            Arc::clone(roots),
            Arc::clone(&finished),
            config.rescan_interval,
        );
        let finisher = tokio::spawn(finisher.run(stopped));
        let mut watchers = JoinSet::new();
        let (watched, mut watching) = mpsc::channel(config.spools.len().max(1));
        for spool in config.spools.values() {
            let ctx = WatchContext {
                queue: queue.clone(),
                root: Arc::clone(&roots[&spool.name]),
                bound: Arc::new(config.destinations[&spool.only_route().destination].bound()),
                host: Arc::clone(&shared.lasting.host),
                rescan_interval: config.rescan_interval,
                wake: Arc::clone(&wake),
                finisher: Arc::clone(&finished),
                watched: watched.clone(),
            };
            watchers.spawn(watch_spool(Arc::clone(spool), ctx, token.clone()));
        }
        drop(watched);
        // Every spool is watched once each watcher said so (or ended): then READY=1.
        for _ in 0..config.spools.len() {
            if watching.recv().await.is_none() {
                break;
            }
        }
        shared.lasting.heartbeat.beat();
        let manifests = Arc::new(ManifestWriter {
            spools: config.spools.clone(),
            queue: queue.clone(),
            targets: targets.clone(),
        });
        let manifest_task = {
            let (manifests, token) = (Arc::clone(&manifests), token.clone());
            tokio::spawn(async move { manifests.run(token).await })
        };
        let dispatcher = Arc::new(Dispatcher::new(
            Arc::clone(config),
            queue.clone(),
            targets,
            Arc::clone(roots),
            wake,
            finished,
            &shared.lasting,
        ));
        let (drain, drains) = tokio::sync::oneshot::channel();
        let dispatcher = tokio::spawn(dispatcher.run(token.clone(), drains));
        Ok(Generation {
            token,
            watchers,
            dispatcher,
            drain,
            finisher_stop,
            finisher,
            manifests,
            manifest_task,
            sweeper,
            historian,
        })
    }

    /// Stops this generation: no new work; uploads in flight and the clean-up of what
    /// they delivered share `drain_timeout`. Files cut off at the deadline are queued
    /// again at once, before anything slower is waited for (a manifest PUT, a rescan): a
    /// stop that systemd cuts short after that is still no crash, and the next start does
    /// not count them as attempts that took the daemon down. At the final stop, open
    /// manifest batches close and are written; across a reload they stay open.
    async fn stop(mut self, config: &Config, queue: &SharedQueue, last: bool) {
        let deadline = tokio::time::Instant::now() + config.drain_timeout;
        let _ = self
            .drain
            .send(if last { Drain::Stop } else { Drain::Reload });
        self.token.cancel();
        let _ = self.dispatcher.await;
        match queue.call(|q| q.recover_active(now_ms())).await {
            Ok(0) => {}
            Ok(n) if last => {
                tracing::info!(files = n, "files cut off by the stop are queued again")
            }
            Ok(n) => tracing::info!(files = n, "files cut off by the reload are queued again"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot requeue files cut off; the next start does, or their lease runs out")
            }
        }
        // The last pass starts no clean-up after the deadline (the next start's first pass
        // does those) and is awaited to its end: the next generation's finisher must not
        // find a row this one is still finishing.
        let _ = self.finisher_stop.send(deadline);
        let _ = self.finisher.await;
        let _ = self.manifest_task.await;
        if last {
            // Uploads have drained: every open batch holds only delivered files.
            self.manifests.finish(config.drain_timeout).await;
        }
        while self.watchers.join_next().await.is_some() {}
        let _ = self.sweeper.await;
        let _ = self.historian.await;
    }
}

/// One [`Target`] per destination: its S3 client, settings and concurrency limit.
fn connect_targets(config: &Config, throttles: &Throttles) -> Result<Targets, DaemonError> {
    let mut targets = HashMap::new();
    for (name, destination) in &config.destinations {
        let throttle = throttles.get(name);
        let store = crate::s3::connect(&destination.s3_spec(), Arc::clone(&throttle)).map_err(
            |source| DaemonError::Store {
                name: name.clone(),
                source,
            },
        )?;
        log_routes(name, destination);
        let settings = destination.upload.clone();
        let target = Target {
            name: name.clone(),
            prefix: destination.key_prefix(),
            store,
            limit: AdaptiveLimit::new(settings.concurrency, settings.memory),
            settings,
            throttle,
        };
        targets.insert(name.clone(), Arc::new(target));
    }
    Ok(targets)
}

/// Each destination's `bwlimit`, in force for the uploads to it (those under way too).
fn apply_bwlimits(config: &Config, throttles: &Throttles) {
    throttles.apply(
        config
            .destinations
            .iter()
            .map(|(name, d)| (name.as_str(), &d.bwlimit)),
    );
}

/// Which proxy, if any, S3 and STS requests go through, and the proxy variables ignored.
fn log_routes(name: &str, destination: &crate::config::Destination) {
    let network = &destination.network;
    let urls = [
        Some(("S3", destination.endpoint_url())),
        destination.sts_url().map(|u| ("STS", u)),
    ];
    for (service, url) in urls.into_iter().flatten() {
        match network.route(&url) {
            Some(proxy) => {
                tracing::info!(destination = %name, service, proxy = %proxy.url, from = proxy.source, "requests go through a proxy")
            }
            None => {
                tracing::debug!(destination = %name, service, "requests go directly to the endpoint")
            }
        }
    }
    for note in &network.ignored {
        tracing::warn!(destination = %name, "{note}");
    }
}

/// Creates missing spool folders and puts each spool's root in canonical form: file
/// events carry paths under the watched root as the kernel resolves it, and a spool reached
/// through a symlink or a relative path must still match them.
fn prepare_spools(mut config: Config) -> Result<Config, DaemonError> {
    for spool in config.spools.values_mut() {
        let failed = |source| DaemonError::Spool {
            name: spool.name.clone(),
            path: spool.path.clone(),
            source,
        };
        for made in crate::spool::folder::create(&spool.path).map_err(failed)? {
            let mode = format!("{:o}", made.mode);
            let path = made.path.display();
            if made.path == spool.path && made.mode != crate::spool::folder::MODE {
                tracing::warn!(spool = %spool.name, %path, mode, group = made.group,
                    "created spool folder, but without setgid: producers' files keep their own group; set the parent's group to the daemon's");
            } else {
                tracing::info!(spool = %spool.name, %path, mode, group = made.group, "created spool folder");
            }
        }
        let canonical = std::fs::canonicalize(&spool.path).map_err(failed)?;
        Arc::make_mut(spool).path = canonical;
        // The archive folder too, made now and named by what it resolves to: the overlap
        // check below sees the folder the finisher then holds (see finish::Finisher::new),
        // not a path whose symlinks could lead elsewhere by the first clean-up.
        if let AfterUpload::Archive(dir) = &spool.after_upload {
            let failed = |source| DaemonError::Archive {
                name: spool.name.clone(),
                path: dir.clone(),
                source,
            };
            std::fs::create_dir_all(dir).map_err(failed)?;
            let canonical = std::fs::canonicalize(dir).map_err(failed)?;
            Arc::make_mut(spool).after_upload = AfterUpload::Archive(canonical);
        }
    }
    let overlaps = crate::config::overlaps_after_resolving(&config.spools, &config.state_dir);
    if !overlaps.is_empty() {
        return Err(DaemonError::Overlap(overlaps.join("; ")));
    }
    Ok(config)
}

/// Tells the queue the names it runs with and which folder each configured spool is (see
/// `queue/folders.rs`), and logs what that changed. Returns the spools refused, with the reason: their `path` says what
/// it said before but leads to another folder (the folder, or one on its way, was replaced
/// by a symlink): they must not run.
async fn adopt_folders(
    queue: &SharedQueue,
    config: &Config,
) -> Result<Vec<(String, String)>, QueueError> {
    let folders: Vec<SpoolFolder> = config
        .spools
        .values()
        .map(|spool| SpoolFolder {
            name: spool.name.clone(),
            root: spool.path.to_string_lossy().into_owned(),
            configured: spool.configured_path.to_string_lossy().into_owned(),
        })
        .collect();
    let spools: Vec<String> = config.spools.keys().cloned().collect();
    let destinations: Vec<String> = config.destinations.keys().cloned().collect();
    let changes = queue
        .call(move |q| {
            q.record_running_names(&spools, &destinations)?;
            q.adopt_folders(&folders, now_ms())
        })
        .await?;
    let mut refused = Vec::new();
    for change in changes {
        match change {
            FolderChange::Renamed { from, to } => {
                tracing::info!(spool = %to, was = %from, "a spool renamed in the config keeps its folder's files and rows")
            }
            FolderChange::Orphaned {
                name,
                root,
                as_name,
            } => {
                tracing::warn!(spool = %name, folder = %root, rows_now = %as_name,
                    "the spool's name now stands for another folder: the rows of its old folder wait as orphans (status lists them; `s3spool purge --orphaned` drops them)")
            }
            FolderChange::Refused {
                name,
                was,
                now,
                configured,
            } => {
                let reason = format!(
                    "spools.{name}.path = {configured:?} led to {was} and now leads to {now}: a folder on the way was replaced (a symlink?). The spool is stopped, touching nothing; put the folder back, or write the folder meant in the config, and reload"
                );
                tracing::error!(spool = %name, error = %reason, "spool refused");
                refused.push((name, reason));
            }
        }
    }
    Ok(refused)
}

/// `config` and `roots` without the spools named in `refused`.
fn without_spools(
    config: &Arc<Config>,
    roots: &Roots,
    refused: &[(String, String)],
) -> (Arc<Config>, Roots) {
    let gone = |name: &String| refused.iter().any(|(n, _)| n == name);
    let mut config = Config::clone(config);
    config.spools.retain(|name, _| !gone(name));
    let roots = roots
        .iter()
        .filter(|(name, _)| !gone(name))
        .map(|(name, root)| (name.clone(), Arc::clone(root)))
        .collect();
    (Arc::new(config), Arc::new(roots))
}

/// Opens each spool's root (already in canonical form, see [`prepare_spools`]) and holds
/// it: from here on every file of the spool is reached beneath that handle, and a path
/// that comes to name another folder stops the spool instead of leading there.
pub(crate) fn open_roots(config: &Config) -> Result<Roots, DaemonError> {
    let mut roots = HashMap::new();
    for spool in config.spools.values() {
        let root = Root::open(&spool.path).map_err(|source| DaemonError::Root {
            name: spool.name.clone(),
            path: spool.path.clone(),
            source,
        })?;
        roots.insert(spool.name.clone(), Arc::new(root));
    }
    Ok(Arc::new(roots))
}

/// One daemon per state_dir: two would both recover and claim the same rows.
fn lock_state_dir(config: &Config) -> Result<File, DaemonError> {
    let path = crate::state_lock::path(&config.state_dir);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| DaemonError::Lock {
            path: path.clone(),
            source,
        })?;
    // SAFETY: flock on a descriptor we own; the lock lives as long as the returned File.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            DaemonError::AlreadyRunning { path }
        } else {
            DaemonError::Lock { path, source: err }
        });
    }
    // For `status`: which process holds the queue, since when.
    if let Err(e) = crate::state_lock::record(&mut file, now_ms()) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the pid into the lock file");
    }
    Ok(file)
}
