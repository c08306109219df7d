//! In-process fixtures for unit tests: a config with one spool and one destination in a
//! temporary folder, its queue, and the destination's [`MemoryStore`]. Tests run the real
//! dispatcher, uploader and finisher against them, on a paused tokio clock (see [`crate::clock`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

use crate::config::Config;
use crate::dispatch::{Dispatcher, Drain, Lasting};
use crate::outbound::limit::AdaptiveLimit;
use crate::outbound::Target;
use crate::queue::{FileRow, FileStamp, NewFile, Queue, Registered, SharedQueue, SpoolRules};
use crate::s3::memory::MemoryStore;

/// A spool `orders` sending to destination `lake` (bucket `acme`, prefix `in/`).
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub config: Arc<Config>,
    pub queue: SharedQueue,
    pub store: MemoryStore,
    pub lasting: Lasting,
    /// Poked by the uploader when a row turns done.
    pub finished: Arc<Notify>,
}

impl Fixture {
    /// `upload` and `spool` are TOML lines for `[destinations.lake.upload]` and
    /// `[spools.orders]`; `{root}` in them is the fixture's folder.
    pub fn new(upload: &str, spool: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let spool = spool.replace("{root}", &root.display().to_string());
        std::fs::create_dir_all(root.join("spool")).unwrap();
        std::fs::create_dir_all(root.join("state")).unwrap();
        let text = format!(
            r#"
state_dir = "{state}"
[destinations.lake]
bucket = "s3://acme/in"
region = "us-east-1"
[destinations.lake.auth]
mode = "static"
access_key_id = "AKIAEXAMPLE"
secret_access_key = "not-a-real-secret"
[destinations.lake.upload]
{upload}
[spools.orders]
path = "{spool_path}"
destination = "lake"
{spool}
"#,
            state = root.join("state").display(),
            spool_path = root.join("spool").display(),
        );
        let config = Config::parse(&text, &root.join("config.toml"))
            .unwrap_or_else(|e| panic!("fixture config: {e:#}"));
        let queue = Queue::open(&config.queue_path()).unwrap();
        Fixture {
            dir,
            config: Arc::new(config),
            queue: SharedQueue::new(queue),
            store: MemoryStore::new("acme"),
            lasting: Lasting::new("testhost", crate::upload::SourceTags::ephemeral()),
            finished: Arc::new(Notify::new()),
        }
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// Writes `rel` into the spool and queues it under the key `in/REL`, as a watcher
    /// would; returns the row id.
    pub async fn drop_and_queue(&self, rel: &str, bytes: &[u8]) -> i64 {
        let path = self.spool().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        self.queue_existing(rel).await
    }

    /// Queues the file `rel` already in the spool.
    pub async fn queue_existing(&self, rel: &str) -> i64 {
        let path = self.spool().join(rel);
        let meta = std::fs::metadata(&path).unwrap();
        let file = NewFile {
            spool: "orders".into(),
            rel_path: rel.into(),
            path,
            destination: "lake".into(),
            bucket: "acme".into(),
            stamp: FileStamp::of(&meta),
            birth_ns: FileStamp::birth_of(&meta),
            seen_at_ms: crate::clock::now_ms(),
            sha256: None,
        };
        let now = crate::clock::now_ms();
        let outcomes = self
            .queue
            .call(move |q| {
                q.register(
                    &[file],
                    SpoolRules::default(),
                    now,
                    |f, _| Ok(format!("in/{}", f.rel_path)),
                    |_, _, _| false,
                )
            })
            .await
            .unwrap();
        match outcomes[..] {
            [Registered::Queued(id)] => id,
            ref other => panic!("not queued: {other:?}"),
        }
    }

    /// The destination's target, sending to the memory store.
    pub fn target(&self) -> Arc<Target> {
        let settings = self.config.destinations["lake"].upload.clone();
        Arc::new(Target {
            name: "lake".into(),
            prefix: "in/".into(),
            store: Arc::new(self.store.clone()),
            limit: AdaptiveLimit::new(settings.concurrency, settings.memory),
            settings,
            throttle: Default::default(),
        })
    }

    /// The spools' roots, held open as the daemon holds them.
    pub fn roots(&self) -> crate::beneath::Roots {
        crate::daemon::open_roots(&self.config).expect("the spools' roots open")
    }

    /// A dispatcher (and its uploader) for this config, sending through `target`.
    pub fn dispatcher(&self, target: Arc<Target>) -> Arc<Dispatcher> {
        let targets = HashMap::from([("lake".to_string(), target)]);
        Arc::new(Dispatcher::new(
            Arc::clone(&self.config),
            self.queue.clone(),
            targets,
            self.roots(),
            Arc::new(Notify::new()),
            Arc::clone(&self.finished),
            &self.lasting,
        ))
    }

    /// What a dispatcher run by a test drains as when its token is cancelled: a stop.
    pub fn drain_as_stop() -> tokio::sync::oneshot::Receiver<Drain> {
        tokio::sync::oneshot::channel().1
    }

    pub async fn row(&self, id: i64) -> FileRow {
        self.queue
            .call(move |q| q.get(id))
            .await
            .unwrap()
            .expect("the row exists")
    }

    /// Waits (on tokio's clock: at once when it is paused) until `done` holds of row
    /// `id`, for at most `within`; panics with the row otherwise.
    pub async fn wait_row(&self, id: i64, within: Duration, done: impl Fn(&FileRow) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let row = self.row(id).await;
            if done(&row) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("row {id} did not get there in {within:?}: {row:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sets a row's claim as if another worker had taken it over (its lease ran out), from a
/// connection of its own: usable from inside a store's request hook.
pub fn steal_claim(queue_db: &Path, id: i64) {
    let conn = rusqlite::Connection::open(queue_db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute("UPDATE files SET claim = claim + 1000 WHERE id = ?1", [id])
        .unwrap();
}
