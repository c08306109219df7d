//! Telling an idle dispatcher that another process changed the queue (the CLI's `retry`,
//! `resume`, `send`, `pause`), so that it need not try a claim every turn to find out.
//!
//! The queue's folder is watched (inotify) for writes to its files; a write wakes the
//! dispatcher, which asks SQLite whether another connection committed (`PRAGMA
//! data_version`: its own writes do not count). Without a watch it asks every turn.

use notify::{EventKind, RecursiveMode, Watcher};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Notify;

/// Writes to the queue's files, as they happen.
pub struct QueueWrites {
    written: Arc<Notify>,
    /// Kept for its watch; `None` when the folder cannot be watched.
    watcher: Option<notify::RecommendedWatcher>,
}

impl QueueWrites {
    /// Watches the folder of the queue at `queue_path` for writes to the queue's files.
    pub fn watch(queue_path: &Path) -> QueueWrites {
        let written = Arc::new(Notify::new());
        let name = queue_path.file_name().map(|n| n.to_os_string());
        let poke = Arc::clone(&written);
        let handler = move |result: notify::Result<notify::Event>| {
            let Ok(event) = result else {
                // Events may have been lost: look.
                poke.notify_one();
                return;
            };
            // Writes, and the close of a file written (the CLI's connection ending).
            let write = matches!(
                event.kind,
                EventKind::Modify(_)
                    | EventKind::Create(_)
                    | EventKind::Remove(_)
                    | EventKind::Access(notify::event::AccessKind::Close(
                        notify::event::AccessMode::Write
                    ))
            );
            // queue.db, queue.db-wal (not -shm: mapped memory, and its own writes).
            let ours = event.paths.iter().any(|p| {
                let file = p.file_name().map(|f| f.to_string_lossy().into_owned());
                match (&name, file) {
                    (Some(name), Some(file)) => {
                        let name = name.to_string_lossy();
                        file == *name || file == format!("{name}-wal")
                    }
                    _ => false,
                }
            });
            if (write && ours) || event.need_rescan() {
                poke.notify_one();
            }
        };
        let folder = queue_path.parent().unwrap_or(Path::new("."));
        let watcher = notify::RecommendedWatcher::new(handler, notify::Config::default()).and_then(
            |mut w| {
                w.watch(folder, RecursiveMode::NonRecursive)?;
                Ok(w)
            },
        );
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::debug!(error = %e, "cannot watch the queue's folder; an idle daemon looks for changes every turn");
                None
            }
        };
        QueueWrites { written, watcher }
    }

    /// Whether writes are seen as they happen (else the caller looks every turn).
    pub fn watching(&self) -> bool {
        self.watcher.is_some()
    }

    /// Resolves at the next write (or at once, if one came since the last call).
    pub async fn written(&self) {
        self.written.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_write_by_another_connection_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        let mut queue = crate::queue::Queue::open(&path).unwrap();
        let writes = QueueWrites::watch(&path);
        assert!(writes.watching());
        // Writes before now (the queue's creation) may have poked it: take them.
        let _ = tokio::time::timeout(Duration::from_millis(200), writes.written()).await;
        let quiet = tokio::time::timeout(Duration::from_millis(300), writes.written()).await;
        assert!(quiet.is_err(), "nothing written, nothing seen");
        queue.pause("orders", 1).unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(5), writes.written()).await;
        assert!(seen.is_ok(), "a commit to the queue is seen");
    }
}
