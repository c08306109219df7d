//! `s3spool run`: the daemon in the foreground. The only place that handles signals.

use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

pub fn run(config: Config) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signals(shutdown.clone()));
        let (reload, reloads) = tokio::sync::mpsc::channel(1);
        tokio::spawn(reload_on_sighup(reload));
        crate::daemon::run(config, shutdown, reloads).await
    })?;
    // Tasks cut off at the drain deadline may still sit on blocking threads: don't wait.
    runtime.shutdown_background();
    Ok(ExitCode::SUCCESS)
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

/// First SIGTERM/SIGINT: stop taking work and drain. Second: exit at once; the queue is
/// consistent at every instant, so rows in flight simply return to `pending` at restart.
async fn stop_on_signals(shutdown: CancellationToken) {
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
    std::process::exit(130);
}
