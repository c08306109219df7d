//! Prometheus metrics (`metrics_listen`): counters and a histogram updated as files are
//! delivered, queue gauges read from the queue at each scrape, and a tiny HTTP endpoint
//! (`GET /metrics`) that serves them in the OpenMetrics text format.
//!
//! Names follow Prometheus' conventions (unit before `_total`, timestamps as
//! `…_timestamp_seconds`), and every series of a configured spool or destination is there
//! from the first scrape, at zero, so `rate()` and absence alerts never see a gap.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::queue::{Held, SharedQueue};
use crate::s3::{ErrorClass, ObjectStore};

type Labels = Vec<(&'static str, String)>;

/// What the running config has: its spools (each gets every queue series, zeros
/// included, so an alert never sees a gap) and its destinations' stores (for credential
/// expiry). Replaced on a reload.
#[derive(Default, Clone)]
pub struct Scope {
    pub spools: Vec<String>,
    pub stores: Vec<(String, Arc<dyn ObjectStore>)>,
}

pub type Stores = Arc<std::sync::RwLock<Scope>>;
type Seconds = Gauge<f64, AtomicU64>;

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    files_delivered: Family<Labels, Counter>,
    delivered_bytes: Family<Labels, Counter>,
    upload_seconds: Family<Labels, Histogram>,
    attempt_errors: Family<Labels, Counter>,
    queue_files: Family<Labels, Gauge>,
    waiting_bytes: Family<Labels, Gauge>,
    oldest_waiting: Family<Labels, Seconds>,
    credentials_expiry: Family<Labels, Seconds>,
    last_success: Family<Labels, Seconds>,
    held_back: Family<Labels, Gauge>,
    window_open: Family<Labels, Gauge>,
    window_opens: Family<Labels, Seconds>,
    next_batch: Family<Labels, Seconds>,
    queue_bytes: Gauge,
    oldest_row: Seconds,
    /// The spools and destinations whose series were last made: one a reload removed
    /// loses its series, so no alert fires on a destination that is gone.
    configured: std::sync::Mutex<(Vec<String>, Vec<String>)>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("s3spool");
        let files_delivered = Family::<Labels, Counter>::default();
        let delivered_bytes = Family::<Labels, Counter>::default();
        let upload_seconds = Family::<Labels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.01, 2.0, 16))) as fn() -> Histogram,
        );
        let attempt_errors = Family::<Labels, Counter>::default();
        let queue_files = Family::<Labels, Gauge>::default();
        let waiting_bytes = Family::<Labels, Gauge>::default();
        let oldest_waiting = Family::<Labels, Seconds>::default();
        let credentials_expiry = Family::<Labels, Seconds>::default();
        let last_success = Family::<Labels, Seconds>::default();
        let held_back = Family::<Labels, Gauge>::default();
        let window_open = Family::<Labels, Gauge>::default();
        let window_opens = Family::<Labels, Seconds>::default();
        let next_batch = Family::<Labels, Seconds>::default();
        let queue_bytes = Gauge::default();
        let oldest_row = Seconds::default();
        registry.register(
            "queue_bytes",
            "Size of the queue on disk (its file and write-ahead log): flat once history is reached",
            queue_bytes.clone(),
        );
        registry.register(
            "queue_oldest_row_timestamp_seconds",
            "Unix time the oldest row the queue keeps was queued: how far its history reaches",
            oldest_row.clone(),
        );
        registry.register(
            "window_open",
            "1 while a spool may send, 0 outside its delivery window (files wait in the queue)",
            window_open.clone(),
        );
        registry.register(
            "window_opens_timestamp_seconds",
            "Unix time a spool outside its delivery window may send again (0 while it may send)",
            window_opens.clone(),
        );
        registry.register(
            "next_batch_timestamp_seconds",
            "Unix time of a spool's next batch tick (deliver_every; absent without one)",
            next_batch.clone(),
        );
        registry.register(
            "build",
            "The running s3spool's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register(
            "held_back",
            "1 while new files are held back: cause is disk (state_dir low on space), destination:NAME, or spool:NAME (its folder was replaced: the spool is stopped)",
            held_back.clone(),
        );
        registry.register(
            "files_delivered",
            "Files delivered to S3",
            files_delivered.clone(),
        );
        registry.register(
            "delivered_bytes",
            "Bytes of the objects delivered to S3",
            delivered_bytes.clone(),
        );
        registry.register(
            "upload_duration_seconds",
            "Time from claiming a file to S3 confirming its object",
            upload_seconds.clone(),
        );
        registry.register(
            "attempt_errors",
            "Failed delivery attempts by error class (transient ones are retried)",
            attempt_errors.clone(),
        );
        registry.register(
            "queue_files",
            "Files in the queue waiting, in flight or failed, by spool and state",
            queue_files.clone(),
        );
        registry.register(
            "waiting_bytes",
            "Bytes of the files waiting or in flight, by spool",
            waiting_bytes.clone(),
        );
        registry.register(
            "oldest_waiting_seconds",
            "Age of the oldest file waiting or in flight, by spool",
            oldest_waiting.clone(),
        );
        registry.register(
            "credentials_expiry_timestamp_seconds",
            "Unix time a destination's temporary credentials expire (absent for static keys)",
            credentials_expiry.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last file delivered to a destination (0: none yet)",
            last_success.clone(),
        );
        Metrics {
            registry,
            files_delivered,
            delivered_bytes,
            upload_seconds,
            attempt_errors,
            queue_files,
            waiting_bytes,
            oldest_waiting,
            credentials_expiry,
            last_success,
            held_back,
            window_open,
            window_opens,
            next_batch,
            queue_bytes,
            oldest_row,
            configured: Default::default(),
        }
    }
}

impl Metrics {
    /// A file reached S3 at `at_ms`: counted, with its object's size and how long it took.
    pub fn delivered(
        &self,
        spool: &str,
        destination: &str,
        bytes: u64,
        took: Duration,
        at_ms: i64,
    ) {
        let labels = vec![("spool", spool.to_string())];
        self.files_delivered.get_or_create(&labels).inc();
        self.delivered_bytes.get_or_create(&labels).inc_by(bytes);
        self.upload_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        self.last_delivered(destination, at_ms);
    }

    /// The latest delivery to `destination` known, at `at_ms`: from a delivery, or from
    /// the queue's history at start (so a restart does not look like a stall).
    pub fn last_delivered(&self, destination: &str, at_ms: i64) {
        let last = self
            .last_success
            .get_or_create(&vec![("destination", destination.to_string())]);
        last.set(last.get().max(at_ms as f64 / 1000.0));
    }

    /// Creates every series of the configured spools and destinations at zero, so each
    /// is there before its first event (creating one that exists changes nothing).
    fn zero_series(&self, scope: &Scope) {
        let destinations: Vec<String> = scope.stores.iter().map(|(d, _)| d.clone()).collect();
        {
            let mut configured = self.configured.lock().unwrap_or_else(|p| p.into_inner());
            for gone in configured.0.iter().filter(|s| !scope.spools.contains(s)) {
                let labels = vec![("spool", gone.clone())];
                self.files_delivered.remove(&labels);
                self.delivered_bytes.remove(&labels);
                self.upload_seconds.remove(&labels);
                self.window_open.remove(&labels);
                self.window_opens.remove(&labels);
                self.next_batch.remove(&labels);
            }
            for gone in configured.1.iter().filter(|d| !destinations.contains(d)) {
                for class in [ErrorClass::Transient, ErrorClass::Permanent] {
                    self.attempt_errors.remove(&attempt_labels(gone, class));
                }
                self.last_success
                    .remove(&vec![("destination", gone.clone())]);
            }
            *configured = (scope.spools.clone(), destinations);
        }
        for spool in &scope.spools {
            let labels = vec![("spool", spool.clone())];
            let _ = self.files_delivered.get_or_create(&labels);
            let _ = self.delivered_bytes.get_or_create(&labels);
            let _ = self.upload_seconds.get_or_create(&labels);
        }
        for (destination, _) in &scope.stores {
            for class in [ErrorClass::Transient, ErrorClass::Permanent] {
                let _ = self
                    .attempt_errors
                    .get_or_create(&attempt_labels(destination, class));
            }
            let _ = self
                .last_success
                .get_or_create(&vec![("destination", destination.clone())]);
        }
    }

    /// What a spool's schedule says now (see `dispatch::gates`): whether it may send, when
    /// its window opens if it may not, and its next batch tick.
    pub fn schedule(
        &self,
        spool: &str,
        open: bool,
        opens_at_ms: Option<i64>,
        tick_ms: Option<i64>,
    ) {
        let labels = vec![("spool", spool.to_string())];
        self.window_open.get_or_create(&labels).set(i64::from(open));
        let opens = opens_at_ms.map_or(0.0, |ms| ms as f64 / 1000.0);
        self.window_opens.get_or_create(&labels).set(opens);
        match tick_ms {
            Some(ms) => {
                self.next_batch
                    .get_or_create(&labels)
                    .set(ms as f64 / 1000.0);
            }
            None => {
                self.next_batch.remove(&labels);
            }
        }
    }

    /// A delivery attempt failed.
    pub fn attempt_failed(&self, destination: &str, class: ErrorClass) {
        self.attempt_errors
            .get_or_create(&attempt_labels(destination, class))
            .inc();
    }

    /// Reads the gauges from the queue and the destinations, then encodes everything.
    async fn scrape(&self, queue: &SharedQueue, stores: &Stores) -> String {
        let now = now_ms();
        let scope = stores.read().unwrap_or_else(|p| p.into_inner()).clone();
        self.zero_series(&scope);
        match queue.call(|q| q.depth_by_spool()).await {
            Ok(depth) => {
                self.queue_files.clear();
                self.waiting_bytes.clear();
                self.oldest_waiting.clear();
                for spool in &scope.spools {
                    for state in ["pending", "active", "failed"] {
                        self.queue_files
                            .get_or_create(&vec![("spool", spool.clone()), ("state", state.into())])
                            .set(0);
                    }
                    self.waiting_bytes
                        .get_or_create(&vec![("spool", spool.clone())])
                        .set(0);
                    self.oldest_waiting
                        .get_or_create(&vec![("spool", spool.clone())])
                        .set(0.0);
                }
                for row in depth {
                    let labels = vec![("spool", row.spool.clone()), ("state", row.state.clone())];
                    self.queue_files
                        .get_or_create(&labels)
                        .set(row.files as i64);
                    if row.state != "failed" {
                        self.waiting_bytes
                            .get_or_create(&vec![("spool", row.spool.clone())])
                            .inc_by(row.bytes as i64);
                    }
                    if let Some(queued) = row.oldest_queued_at {
                        let age = (now - queued).max(0) as f64 / 1000.0;
                        let oldest = self
                            .oldest_waiting
                            .get_or_create(&vec![("spool", row.spool)]);
                        oldest.set(oldest.get().max(age));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read the queue"),
        }
        if let Ok((bytes, oldest)) = queue
            .call(|q| Ok((q.file_size()?, q.oldest_row_at()?)))
            .await
        {
            self.queue_bytes.set(bytes as i64);
            self.oldest_row
                .set(oldest.map_or(0.0, |ms| ms as f64 / 1000.0));
        }
        // Read first, then clear and fill with no await between: a concurrent scrape never
        // sees the family empty.
        if let Ok(conditions) = queue.call(|q| q.conditions()).await {
            self.held_back.clear();
            // Every cause at 0, so an alert on it has a series before the first hold.
            self.held_back
                .get_or_create(&vec![("cause", Held::Disk.to_string())])
                .set(0);
            for (destination, _) in &scope.stores {
                self.held_back
                    .get_or_create(&vec![(
                        "cause",
                        Held::Destination(destination.clone()).to_string(),
                    )])
                    .set(0);
            }
            for spool in &scope.spools {
                self.held_back
                    .get_or_create(&vec![("cause", Held::Spool(spool.clone()).to_string())])
                    .set(0);
            }
            for c in conditions {
                self.held_back
                    .get_or_create(&vec![("cause", c.name.to_string())])
                    .set(1);
            }
        }
        self.credentials_expiry.clear();
        for (destination, store) in &scope.stores {
            if let Some(at) = store.credentials_expire_at() {
                self.credentials_expiry
                    .get_or_create(&vec![("destination", destination.clone())])
                    .set(at as f64 / 1000.0);
            }
        }
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

fn attempt_labels(destination: &str, class: ErrorClass) -> Labels {
    let class = match class {
        ErrorClass::Transient => "transient",
        ErrorClass::Permanent => "permanent",
    };
    vec![
        ("destination", destination.to_string()),
        ("class", class.to_string()),
    ]
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    queue: SharedQueue,
    stores: Stores,
    shutdown: CancellationToken,
) {
    // Scrapes at once, at most: a flood on the port cannot use up file descriptors.
    let slots = Arc::new(tokio::sync::Semaphore::new(8));
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let (metrics, queue, stores) = (Arc::clone(&metrics), queue.clone(), stores.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let answered = tokio::time::timeout(
                Duration::from_secs(10),
                answer(stream, &metrics, &queue, &stores),
            )
            .await;
            if let Ok(Err(e)) = answered {
                tracing::debug!(error = %e, "metrics: a scrape ended early");
            }
        });
    }
}

/// One HTTP/1.1 exchange: the request head, then one answer, then the connection closes.
async fn answer(
    mut stream: TcpStream,
    metrics: &Metrics,
    queue: &SharedQueue,
    stores: &Stores,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let (status, content_type, body) = if line.starts_with(b"GET /metrics ") {
        let body = metrics.scrape(queue, stores).await;
        (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        )
    } else {
        (
            "404 Not Found",
            "text/plain",
            "only GET /metrics is served\n".to_string(),
        )
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::memory::MemoryStore;

    fn scope(spools: &[&str], destinations: &[&str]) -> Scope {
        Scope {
            spools: spools.iter().map(|s| s.to_string()).collect(),
            stores: destinations
                .iter()
                .map(|d| {
                    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new("b"));
                    (d.to_string(), store)
                })
                .collect(),
        }
    }

    fn encoded(metrics: &Metrics) -> String {
        let mut out = String::new();
        encode(&mut out, &metrics.registry).unwrap();
        out
    }

    #[test]
    fn a_reload_that_removes_a_spool_or_destination_removes_its_series() {
        let metrics = Metrics::default();
        metrics.zero_series(&scope(&["orders", "returns"], &["lake", "old"]));
        metrics.delivered("returns", "old", 10, Duration::from_millis(5), 1_000);
        let before = encoded(&metrics);
        assert!(
            before.contains("s3spool_files_delivered_total{spool=\"returns\"} 1"),
            "{before}"
        );
        assert!(
            before.contains("s3spool_last_success_timestamp_seconds{destination=\"old\"} 1.0"),
            "{before}"
        );
        metrics.zero_series(&scope(&["orders"], &["lake"]));
        let after = encoded(&metrics);
        assert!(!after.contains("returns"), "{after}");
        assert!(!after.contains("\"old\""), "{after}");
        assert!(
            after.contains("s3spool_files_delivered_total{spool=\"orders\"} 0"),
            "{after}"
        );
        assert!(
            after.contains(
                "s3spool_attempt_errors_total{destination=\"lake\",class=\"permanent\"} 0"
            ),
            "{after}"
        );
    }
}
