//! The daemon: wires watchers, queue and uploader together and runs them until the one
//! cancellation token fires. Signals are the caller's business (`main` turns SIGTERM into
//! a cancel), so tests stop the daemon without signals.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::finish::Finishing;
use crate::manifest::ManifestWriter;
use crate::queue::{Queue, QueueError, SharedQueue};
use crate::s3::StoreError;
use crate::service::{Heartbeat, Notifier};
use crate::spool::{watch_spool, WatchContext};
use crate::upload::limit::AdaptiveLimit;
use crate::upload::{now_ms, sweep_orphan_uploads, sweep_periodically, Target, Uploader};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create state_dir {path}: {source}")]
    StateDir {
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
    #[error("spools.{name}.path: cannot create {path}: {source}")]
    Spool {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs the daemon until `shutdown` is cancelled, then drains and returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let config = Arc::new(prepare_spools(config)?);
    std::fs::create_dir_all(&config.state_dir).map_err(|source| DaemonError::StateDir {
        path: config.state_dir.clone(),
        source,
    })?;
    let _lock = lock_state_dir(&config)?;
    let mut queue = Queue::open(&config.queue_path())?;
    let recovered = queue.recover_active(now_ms())?;
    if recovered > 0 {
        tracing::info!(
            files = recovered,
            "files in flight at the last stop are queued again"
        );
    }
    let queue = SharedQueue::new(queue);
    crate::transcode::clear_work(&config.state_dir);

    let mut targets = HashMap::new();
    for (name, destination) in &config.destinations {
        let store = crate::s3::connect(destination).map_err(|source| DaemonError::Store {
            name: name.clone(),
            source,
        })?;
        let settings = destination.upload.clone();
        let limit = AdaptiveLimit::new(settings.concurrency);
        let name = name.clone();
        let prefix = destination.key_prefix();
        targets.insert(
            name.clone(),
            Arc::new(Target {
                name,
                prefix,
                store,
                settings,
                limit,
            }),
        );
    }
    // Before any worker starts, so no upload in progress can be mistaken for an orphan.
    sweep_orphan_uploads(&queue, &targets).await;
    let sweeper = tokio::spawn(sweep_periodically(
        queue.clone(),
        targets.clone(),
        shutdown.clone(),
    ));

    let wake = Arc::new(Notify::new());
    let finishing = Finishing::default();
    let host: Arc<str> = Arc::from(hostname().as_str());
    let mut watchers = tokio::task::JoinSet::new();
    let (watched, mut watching) = tokio::sync::mpsc::channel(config.spools.len().max(1));
    for spool in config.spools.values() {
        let ctx = WatchContext {
            queue: queue.clone(),
            destination: Arc::clone(&config.destinations[&spool.destination]),
            host: Arc::clone(&host),
            rescan_interval: config.rescan_interval,
            wake: Arc::clone(&wake),
            finishing: finishing.clone(),
            watched: watched.clone(),
        };
        watchers.spawn(watch_spool(Arc::clone(spool), ctx, shutdown.clone()));
    }
    drop(watched);
    // Every spool is watched once each watcher said so (or ended): then READY=1.
    for _ in 0..config.spools.len() {
        if watching.recv().await.is_none() {
            break;
        }
    }
    let heartbeat = Heartbeat::default();
    heartbeat.beat();
    let notifier = Notifier::from_env();
    let status = crate::service::current_status(&queue, &heartbeat).await;
    notifier.ready(status.as_deref().unwrap_or("running"));
    tracing::info!(spools = config.spools.len(), destinations = config.destinations.len(),
        queue = %config.queue_path().display(), "s3spool running");
    let reporter = tokio::spawn(crate::service::report(
        notifier.clone(),
        queue.clone(),
        heartbeat.clone(),
        crate::upload::IDLE_POLL,
        shutdown.clone(),
    ));
    let stopping = {
        let (notifier, shutdown) = (notifier.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            notifier.stopping();
        })
    };

    let manifests = Arc::new(ManifestWriter {
        config: Arc::clone(&config),
        queue: queue.clone(),
        targets: targets.clone(),
    });
    let manifest_task = {
        let (manifests, shutdown) = (Arc::clone(&manifests), shutdown.clone());
        tokio::spawn(async move { manifests.run(shutdown).await })
    };
    let uploader = Arc::new(Uploader {
        config: Arc::clone(&config),
        queue,
        targets,
        wake,
        finishing,
        host,
        converting: Arc::new(tokio::sync::Semaphore::new(Uploader::conversion_slots())),
        heartbeat,
    });
    uploader.run(shutdown.clone()).await;
    let _ = manifest_task.await;
    // Uploads have drained: every open batch holds only delivered files, so it can close.
    manifests.finish(config.drain_timeout).await;
    while watchers.join_next().await.is_some() {}
    let _ = sweeper.await;
    let _ = reporter.await;
    let _ = stopping.await;
    tracing::info!("s3spool stopped");
    Ok(())
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
        std::fs::create_dir_all(&spool.path).map_err(failed)?;
        let canonical = std::fs::canonicalize(&spool.path).map_err(failed)?;
        Arc::make_mut(spool).path = canonical;
    }
    Ok(config)
}

/// One daemon per state_dir: two would both recover and claim the same rows.
fn lock_state_dir(config: &Config) -> Result<File, DaemonError> {
    let path = config.state_dir.join("s3spool.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
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
    Ok(file)
}

/// This machine's host name, for `{host}` in keys.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
