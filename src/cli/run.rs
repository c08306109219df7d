//! `s3spool run`: the daemon in the foreground. The only place that handles signals.

use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// More detail in the log: -v for debug, -vv for trace (overrides $S3SPOOL_LOG).
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "log_level")]
    verbose: u8,
    /// The log level (error, warn, info, debug, trace) or a filter such as
    /// "info,s3spool::upload=debug"; overrides $S3SPOOL_LOG and $RUST_LOG.
    #[arg(long, value_parser = parse_level)]
    log_level: Option<String>,
}

impl Args {
    /// The level asked for on the command line, if any.
    pub fn level(&self) -> Option<String> {
        match (&self.log_level, self.verbose) {
            (Some(level), _) => Some(level.clone()),
            (None, 0) => None,
            (None, 1) => Some("debug".into()),
            (None, _) => Some("trace".into()),
        }
    }
}

fn parse_level(text: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    // A bare word would pass as a target name ("loud": everything of target loud).
    if !text.contains(['=', ',']) && !LEVELS.contains(&text.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "{text:?} is not a log level; use error, warn, info, debug or trace (or a filter like \"info,s3spool::upload=debug\")"
        ));
    }
    tracing_subscriber::EnvFilter::try_new(text)
        .map(|_| text.to_string())
        .map_err(|e| format!("{text:?} is not a log level or filter ({e}); use error, warn, info, debug or trace"))
}

pub fn run(config: Config) -> anyhow::Result<ExitCode> {
    return_big_buffers_at_once();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let queue_path = config.queue_path();
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signals(shutdown.clone(), queue_path));
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        tokio::spawn(give_freed_memory_back(shutdown.clone()));
        let (reload, reloads) = tokio::sync::mpsc::channel(1);
        tokio::spawn(reload_on_sighup(reload));
        crate::daemon::run(config, shutdown, reloads).await
    })?;
    // Tasks cut off at the drain deadline may still sit on blocking threads: don't wait.
    runtime.shutdown_background();
    Ok(ExitCode::SUCCESS)
}

/// Part buffers (up to `part_size`, 16 MiB by default) come and go by the hundred in a big
/// upload. glibc's malloc raises its mmap threshold after the first large free and then
/// keeps such buffers in its heaps, where freed ones linger in the process's memory: peak
/// RSS went far past the `memory` budget. A fixed threshold keeps every buffer of 1 MiB
/// or more in a mapping of its own, returned to the system when freed.
fn return_big_buffers_at_once() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before the runtime starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// glibc's malloc keeps what its arenas freed: there is one per thread that allocated, up
/// to eight per core, and each ends up holding megabytes of free chunks between live ones,
/// which it gives back only from its top. In a 2-hour soak the daemon had 132 MB from the
/// system and 40 MB in use, and its RSS rose from 67 to 147 MiB; `malloc_trim` hands the
/// free pages back (madvise, nothing moves): on a running daemon it took RSS from 98 to
/// 63 MiB. Once a minute: a walk over the arenas' free lists, nothing to measure at idle.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
async fn give_freed_memory_back(stop: CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        // SAFETY: malloc_trim only returns free memory to the system.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// SIGHUP: reload the config. Signals that arrive while a reload is pending fold into it.
async fn reload_on_sighup(reload: tokio::sync::mpsc::Sender<()>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler; reload the config with a restart");
        return;
    };
    while hangup.recv().await.is_some() {
        let _ = reload.try_send(());
    }
}

/// First SIGTERM/SIGINT: stop taking work and drain. Second: exit at once. The queue is
/// consistent at every instant, but rows still `active` at the next start would count as
/// attempts the daemon died during (towards setting a poison file aside): an impatient
/// stop is still a stop, so the rows in flight are put back first, in one transaction.
async fn stop_on_signals(shutdown: CancellationToken, queue: std::path::PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the daemon with SIGKILL");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("stop signal received; draining (send it again to exit at once)");
    shutdown.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::warn!("second stop signal: exiting now");
    // On a connection of its own: the daemon's may be held by a task that is cut off now.
    let stopped = tokio::task::spawn_blocking(move || {
        crate::queue::Queue::open(&queue).and_then(|mut q| q.recover_active(crate::clock::now_ms()))
    })
    .await;
    match stopped {
        Ok(Ok(n)) if n > 0 => {
            tracing::info!(
                files = n,
                "files in flight are queued again as stopped, not crashed"
            )
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot requeue the files in flight; the next start counts them as interrupted")
        }
        Err(e) => tracing::warn!(error = %e, "cannot requeue the files in flight"),
    }
    std::process::exit(130);
}
