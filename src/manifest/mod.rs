//! Delivery manifests: closing batches (full, old enough, or at shutdown; for a spool with
//! `deliver_every`, once its tick's files are all delivered) and writing each closed
//! batch's manifest to S3, last, as the batch's completion marker.
//!
//! Batch membership lives in the queue (see `queue::batches`): a delivery joins a batch in
//! the transaction that marks it done, so every listed file is already in S3 and a crash
//! can neither drop nor double a membership. A batch is `written` only after S3 confirmed
//! its manifest; a crash before that writes the same bytes to the same key again.

mod document;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use md5::Digest;
use tokio_util::sync::CancellationToken;

use crate::backoff;
use crate::clock::now_ms;
use crate::config::Spool;
use crate::key::{ManifestKey, ManifestKeyInput, DEFAULT_MANIFEST_KEY};
use crate::outbound::Target;
use crate::queue::{Batch, SharedQueue};
use crate::s3::{ObjectMeta, PutBody};

/// How often batches are checked for closing and writing.
const TICK: Duration = Duration::from_secs(1);
/// The same, when no spool has manifests (for batches an earlier config left).
const IDLE_TICK: Duration = Duration::from_secs(30);

/// Closes and writes manifests for the daemon.
pub struct ManifestWriter {
    /// The config's spools, by name: which have manifests, with which key and cadence.
    pub spools: BTreeMap<String, Arc<Spool>>,
    pub queue: SharedQueue,
    pub targets: HashMap<String, Arc<Target>>,
}

impl ManifestWriter {
    /// Closes due batches and writes manifests until `shutdown`. Batches left by an
    /// earlier run are closed and written too, even if no spool has manifests any more.
    pub async fn run(&self, shutdown: CancellationToken) {
        let any = self
            .spools
            .values()
            .any(|s| s.only_route().manifest.is_some());
        // Without manifests, only leftovers (and their retries) are looked after: rarely.
        let tick = if any { TICK } else { IDLE_TICK };
        loop {
            self.close_old().await;
            self.write_due().await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// At shutdown, once uploads have drained: closes every open batch and writes what it
    /// can before `deadline`. What is left is written at the next start. The batch of a
    /// spool with `deliver_every` stays open until its tick is whole, across the restart.
    pub async fn finish(&self, deadline: Duration) {
        let whole_ticks = self.cadence_spools();
        match self
            .queue
            .call(move |q| q.close_open_batches_except(&whole_ticks, now_ms()))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(batches = n, "closed manifest batches at shutdown"),
            Err(e) => tracing::warn!(error = %e, "cannot close manifest batches"),
        }
        if tokio::time::timeout(deadline, self.write_due())
            .await
            .is_err()
        {
            tracing::warn!(
                "manifests not written by the drain deadline are written at the next start"
            );
        }
    }

    /// The spools with manifests and a batch cadence: a batch is a tick's files.
    fn cadence_spools(&self) -> Vec<String> {
        self.spools
            .values()
            .filter(|s| s.only_route().manifest.is_some() && s.schedule.deliver_every.is_some())
            .map(|s| s.name.clone())
            .collect()
    }

    async fn close_old(&self) {
        // Open batches of spools that no longer have manifests close now.
        let with: Vec<String> = self
            .spools
            .values()
            .filter(|s| s.only_route().manifest.is_some())
            .map(|s| s.name.clone())
            .collect();
        match self
            .queue
            .call(move |q| q.close_open_batches_except(&with, now_ms()))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                batches = n,
                "closed manifest batches of spools without manifests now"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot close manifest batches"),
        }
        for spool in self.spools.values() {
            let Some(settings) = &spool.only_route().manifest else {
                continue;
            };
            let name = spool.name.clone();
            let every = settings.every.as_millis() as i64;
            let by_tick = spool.schedule.deliver_every.is_some();
            let destinations: Vec<String> = self.targets.keys().cloned().collect();
            let closed = self
                .queue
                .call(move |q| {
                    let now = now_ms();
                    if by_tick {
                        q.close_tick_batch(&name, &destinations, now)
                    } else {
                        q.close_batches_opened_before(&name, now - every, now)
                    }
                })
                .await;
            if let Err(e) = closed {
                tracing::warn!(spool = %spool.name, error = %e, "cannot close manifest batches");
            }
        }
    }

    /// Writes the manifest of every closed batch that is due.
    async fn write_due(&self) {
        let due = match self.queue.call(|q| q.batches_to_write(now_ms())).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read manifest batches");
                return;
            }
        };
        for batch in due {
            if let Err(error) = self.write(&batch).await {
                let wait = backoff::delay(
                    batch.attempts + 1,
                    Duration::from_secs(1),
                    Duration::from_secs(300),
                    &mut rand::thread_rng(),
                );
                // An operator need only act if it keeps failing.
                if batch.attempts + 1 >= 5 {
                    tracing::error!(spool = %batch.spool, batch = %batch.name, error = %error,
                        attempts = batch.attempts + 1, retry_in_ms = wait.as_millis() as u64,
                        "cannot write a manifest; will retry");
                } else {
                    tracing::warn!(spool = %batch.spool, batch = %batch.name, error = %error,
                        retry_in_ms = wait.as_millis() as u64, "cannot write a manifest; will retry");
                }
                let (id, next) = (batch.id, now_ms() + wait.as_millis() as i64);
                if let Err(e) = self
                    .queue
                    .call(move |q| q.batch_retry_later(id, &error, next))
                    .await
                {
                    tracing::warn!(error = %e, "cannot record a manifest failure");
                }
            }
        }
    }

    async fn write(&self, batch: &Batch) -> Result<(), String> {
        let target = self.targets.get(&batch.destination).ok_or_else(|| {
            format!(
                "destination {:?} is no longer in the config; add it back so the manifest can be written",
                batch.destination
            )
        })?;
        let template = self
            .spools
            .get(&batch.spool)
            .and_then(|s| s.only_route().manifest.as_ref())
            .map(|m| m.key.clone())
            .unwrap_or_else(|| ManifestKey::parse(DEFAULT_MANIFEST_KEY).expect("default parses"));
        let closed =
            chrono::DateTime::from_timestamp_millis(batch.closed_at.unwrap_or(batch.opened_at))
                .unwrap_or_default();
        let key = template.render(
            &target.prefix,
            &ManifestKeyInput {
                spool: &batch.spool,
                batch: &batch.name,
                destination: &batch.destination,
                host: &batch.host,
                closed,
            },
        );
        let id = batch.id;
        let (key, files) = self
            .queue
            .call(move |q| Ok((q.fix_manifest_key(id, &key)?, q.batch_files(id)?)))
            .await
            .map_err(|e| e.to_string())?;
        let body = document::render(batch, &files);
        let md5: [u8; 16] = md5::Md5::digest(&body).into();
        let meta = ObjectMeta {
            sha256: Some(hex::encode(sha2::Sha256::digest(&body))),
            content_type: "application/json",
            ..ObjectMeta::default()
        };
        // The bucket the batch's files went to, which a reload may have changed since.
        target
            .store_for(&batch.bucket)
            .put_object(&key, PutBody::Memory(body.into()), md5, &meta)
            .await
            .map_err(|e| e.to_string())?;
        let written = self
            .queue
            .call(move |q| q.mark_batch_written(id, now_ms()))
            .await
            .map_err(|e| e.to_string())?;
        if written {
            tracing::info!(spool = %batch.spool, batch = %batch.name, files = files.len(), key, "manifest written");
        }
        Ok(())
    }
}
