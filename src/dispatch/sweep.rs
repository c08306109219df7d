//! Sweeps for multipart uploads that s3spool started and no longer needs, so none is left
//! open to cost storage. An upload counts as ours when its key is the key of a queue row;
//! it is still needed only when it is the upload recorded for a row. Uploads under keys the
//! queue does not know are another tool's: left alone.
//!
//! At start-up, before any worker runs, every such upload is aborted. While the daemon
//! runs, a worker may have created an upload it has not recorded yet, so the periodic sweep
//! only aborts uploads older than [`RUNNING_MIN_AGE`].
//!
//! The upload of an orphaned row (its spool or destination gone from the config) is
//! needed only while the spool may come back: once the row has been left alone for
//! [`ORPHAN_GRACE`], its upload is given up (the row starts over if its spool returns).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::outbound::Target;
use crate::queue::SharedQueue;
use crate::s3::OpenUpload;

/// How long the sweep may take per destination before it gives up for this round.
pub const SWEEP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the running daemon sweeps.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// Uploads younger than this are left to the workers while the daemon runs. Generous, so
/// a clock skew between this host and S3 cannot make a fresh upload look old.
const RUNNING_MIN_AGE: Duration = Duration::from_secs(3600);

/// How long an orphaned row keeps its multipart upload.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(24 * 3600);

/// The start-up sweep: aborts every upload no row needs.
pub async fn sweep_orphan_uploads(
    queue: &SharedQueue,
    spools: &[String],
    targets: &HashMap<String, Arc<Target>>,
) {
    give_up_orphans(queue, spools, targets).await;
    sweep(queue, targets, None).await;
}

/// When the next hourly sweep is due. It outlives a reload (it is kept in
/// [`super::Lasting`]): each reload starts a new sweeper, and one that started its hour
/// afresh would never sweep under a config reloaded more often than hourly (orphaned
/// uploads kept, purged keys piling up in the queue).
#[derive(Debug, Clone)]
pub struct SweepSchedule(Arc<std::sync::Mutex<tokio::time::Instant>>);

impl Default for SweepSchedule {
    fn default() -> Self {
        SweepSchedule(Arc::new(std::sync::Mutex::new(
            tokio::time::Instant::now() + SWEEP_EVERY,
        )))
    }
}

impl SweepSchedule {
    fn due(&self) -> tokio::time::Instant {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn swept(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) =
            tokio::time::Instant::now() + SWEEP_EVERY;
    }
}

/// Sweeps every hour (on `schedule`) until `shutdown`, leaving young uploads alone;
/// aborts the uploads registration abandoned every few seconds.
pub async fn sweep_periodically(
    queue: SharedQueue,
    spools: Vec<String>,
    targets: HashMap<String, Arc<Target>>,
    schedule: SweepSchedule,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(schedule.due()) => {
                give_up_orphans(&queue, &spools, &targets).await;
                sweep(&queue, &targets, Some(RUNNING_MIN_AGE)).await;
                schedule.swept();
            }
            _ = tokio::time::sleep(ABANDONED_EVERY) => abort_abandoned(&queue, &targets).await,
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Gives up the multipart uploads of rows orphaned for [`ORPHAN_GRACE`]: they are listed
/// for aborting like those registration abandons.
async fn give_up_orphans(
    queue: &SharedQueue,
    spools: &[String],
    targets: &HashMap<String, Arc<Target>>,
) {
    let spools = spools.to_vec();
    let destinations: Vec<String> = targets.keys().cloned().collect();
    let before = crate::clock::now_ms() - ORPHAN_GRACE.as_millis() as i64;
    match queue
        .call(move |q| q.abandon_orphan_uploads(&spools, &destinations, before))
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            files = n,
            "orphaned files left alone for a day give up their multipart uploads"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot look for orphaned uploads"),
    }
}

/// How often uploads abandoned by registration are aborted.
const ABANDONED_EVERY: Duration = Duration::from_secs(5);

/// Aborts the multipart uploads that registration took from their rows (a file rewritten
/// before its upload, or moved and given a row of its own), so none is left costing
/// storage. One that cannot be aborted now is tried again next time.
async fn abort_abandoned(queue: &SharedQueue, targets: &HashMap<String, Arc<Target>>) {
    let Ok(abandoned) = queue.call(|q| q.abandoned_uploads(100)).await else {
        return;
    };
    for upload in abandoned {
        // A destination no longer configured: the next start's sweep has it (or not).
        let Some(target) = targets.get(&upload.destination) else {
            continue;
        };
        let store = target.store_for(&upload.bucket);
        let aborted = tokio::time::timeout(
            SWEEP_TIMEOUT,
            store.abort_multipart(&upload.key, &upload.upload_id),
        )
        .await;
        match aborted {
            Ok(Ok(())) => {
                tracing::info!(key = %upload.key, "aborted a multipart upload no file needs any more")
            }
            Ok(Err(e)) if e.is_no_such_upload() => {}
            Ok(Err(e)) => {
                tracing::debug!(key = %upload.key, error = %e, "cannot abort an abandoned upload yet");
                continue;
            }
            Err(_) => continue,
        }
        let id = upload.upload_id.clone();
        if let Err(e) = queue.call(move |q| q.forget_abandoned(&id)).await {
            tracing::warn!(error = %e, "cannot record an aborted upload");
        }
    }
}

async fn sweep(
    queue: &SharedQueue,
    targets: &HashMap<String, Arc<Target>>,
    min_age: Option<Duration>,
) {
    let recorded = match queue.call(|q| q.recorded_uploads()).await {
        Ok(recorded) => recorded,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read recorded uploads; skipping the orphan sweep");
            return;
        }
    };
    // Upload ids identify the uploads still needed.
    let needed: HashSet<String> = recorded.iter().map(|r| r.upload_id.clone()).collect();
    let now = crate::clock::now();
    // Keys purged before this are done with once the sweep below aborted every upload
    // under them: no row can make an upload under a key after its row is gone, so one
    // left there is at least as old as its purge. Recorded as the destination's horizon,
    // it also spares the keys of rows forgotten later whose uploads began before it.
    let purged_before = now.timestamp_millis() - min_age.map_or(0, |a| a.as_millis() as i64);
    for (name, target) in targets {
        // Every key s3spool writes for this destination starts with its prefix.
        let listed =
            tokio::time::timeout(SWEEP_TIMEOUT, target.store.list_uploads(&target.prefix)).await;
        let uploads = match listed {
            Ok(Ok(uploads)) => uploads,
            Ok(Err(e)) => {
                tracing::warn!(destination = %name, error = %e, "cannot list open multipart uploads; skipping the orphan sweep");
                continue;
            }
            Err(_) => {
                tracing::warn!(destination = %name, "listing open multipart uploads timed out; skipping the orphan sweep");
                continue;
            }
        };
        let mut all_gone = true;
        let candidates: Vec<OpenUpload> = uploads
            .into_iter()
            .filter(|upload| may_abort(upload, &needed, min_age, now))
            .collect();
        // Ours: under a key some row has, or had until a purge. Asked once for them all.
        let (dest, keys) = (
            name.clone(),
            candidates.iter().map(|u| u.key.clone()).collect::<Vec<_>>(),
        );
        let ours = match queue.call(move |q| q.known_keys(&dest, &keys)).await {
            Ok(ours) => ours,
            Err(e) => {
                tracing::warn!(destination = %name, error = %e, "cannot read the queue's keys; skipping the orphan sweep");
                continue;
            }
        };
        for upload in candidates {
            if !ours.contains(&upload.key) {
                continue;
            }
            match target
                .store
                .abort_multipart(&upload.key, &upload.upload_id)
                .await
            {
                Ok(()) => {
                    tracing::info!(destination = %name, key = %upload.key, "aborted a multipart upload no row needs")
                }
                Err(e) => {
                    all_gone = false;
                    tracing::warn!(destination = %name, key = %upload.key, error = %e, "cannot abort an orphaned multipart upload")
                }
            }
        }
        if all_gone {
            let dest = name.clone();
            let forgotten = queue.call(move |q| q.swept(&dest, purged_before)).await;
            if let Err(e) = forgotten {
                tracing::warn!(destination = %name, error = %e, "cannot record the sweep (purged keys are kept); the next sweep does");
            }
        }
    }
}

/// Whether an upload may go, as far as the queue's needs and its age tell (whether its key
/// is ours is asked separately).
fn may_abort(
    upload: &OpenUpload,
    needed: &HashSet<String>,
    min_age: Option<Duration>,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    if needed.contains(&upload.upload_id) {
        return false;
    }
    match min_age {
        None => true,
        // Unknown age: perhaps a worker's upload not recorded yet. Leave it.
        Some(min_age) => upload.initiated.is_some_and(|t| {
            now.signed_duration_since(t)
                .to_std()
                .is_ok_and(|age| age >= min_age)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unneeded_and_old_enough_uploads_may_go() {
        let now = crate::clock::now();
        let upload = |id: &str, age_s: Option<i64>| OpenUpload {
            key: "k".into(),
            upload_id: id.into(),
            initiated: age_s.map(|a| now - chrono::Duration::seconds(a)),
        };
        let needed: HashSet<String> = ["kept".to_string()].into();
        let hour = Some(Duration::from_secs(3600));
        assert!(!may_abort(
            &upload("kept", Some(99_999)),
            &needed,
            None,
            now
        ));
        assert!(
            may_abort(&upload("orphan", Some(5)), &needed, None, now),
            "at start-up, any age"
        );
        assert!(
            !may_abort(&upload("orphan", Some(5)), &needed, hour, now),
            "young: a worker's, maybe"
        );
        assert!(may_abort(&upload("orphan", Some(7200)), &needed, hour, now));
        assert!(!may_abort(&upload("orphan", None), &needed, hour, now));
        assert!(
            !may_abort(&upload("orphan", Some(-7200)), &needed, hour, now),
            "from the future: skewed clock"
        );
    }
}

#[cfg(test)]
mod purged {
    use super::*;
    use crate::queue::State;
    use crate::s3::{ObjectMeta, ObjectStore};
    use crate::testing::Fixture;

    /// An upload whose creation was answered too late for its row to record it (the row
    /// delivered through another) is s3spool's, and the sweep aborts it even after
    /// `purge` dropped the row; the key is then forgotten.
    #[tokio::test]
    async fn an_upload_under_a_purged_key_is_still_swept() {
        let f = Fixture::new("", "");
        let id = f.drop_and_queue("a.csv", b"id\n1\n").await;
        let store: &dyn ObjectStore = &f.store;
        let meta = ObjectMeta {
            content_type: "text/csv",
            ..ObjectMeta::default()
        };
        store.create_multipart("in/a.csv", &meta).await.unwrap();
        let token = CancellationToken::new();
        let task = tokio::spawn(
            f.dispatcher(f.target())
                .run(token.clone(), Fixture::drain_as_stop()),
        );
        f.wait_row(id, Duration::from_secs(30), |r| r.state == State::Done)
            .await;
        token.cancel();
        task.await.unwrap();
        let now = crate::clock::now_ms();
        let purged = f
            .queue
            .call(move |q| q.purge_done(now + 1, |_| false, false, now))
            .await
            .unwrap();
        assert_eq!(purged, (1, 0));
        assert_eq!(f.store.open_uploads(), 1);

        let targets = HashMap::from([("lake".to_string(), f.target())]);
        sweep_orphan_uploads(&f.queue, &["orders".to_string()], &targets).await;
        assert_eq!(f.store.open_uploads(), 0, "aborted as s3spool's");
        let known = f
            .queue
            .call(|q| q.known_keys("lake", &["in/a.csv".to_string()]))
            .await
            .unwrap();
        assert!(known.is_empty(), "forgotten once swept");
    }

    /// A config reloaded more often than hourly starts a new sweeper each time: the
    /// hourly sweep still comes an hour after the last, not an hour after the reload.
    #[tokio::test(start_paused = true)]
    async fn reloads_more_often_than_hourly_do_not_put_the_sweep_off() {
        let f = Fixture::new("", "");
        // A row's key, and an upload under it no row recorded (its creation was answered
        // too late): s3spool's orphan.
        f.drop_and_queue("a.csv", b"id\n1\n").await;
        let store: &dyn ObjectStore = &f.store;
        store
            .create_multipart("in/a.csv", &ObjectMeta::default())
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(5 * 60)).await;
        let schedule = SweepSchedule::default();
        let targets = HashMap::from([("lake".to_string(), f.target())]);
        let generation = || {
            let token = CancellationToken::new();
            let task = tokio::spawn(sweep_periodically(
                f.queue.clone(),
                vec!["orders".to_string()],
                targets.clone(),
                schedule.clone(),
                token.clone(),
            ));
            (token, task)
        };
        // Reloads at 40 and 80 minutes: the sweep is due at 65.
        for _ in 0..2 {
            let (token, task) = generation();
            tokio::time::sleep(Duration::from_secs(40 * 60)).await;
            token.cancel();
            task.await.unwrap();
        }
        assert_eq!(
            f.store.open_uploads(),
            0,
            "swept within the hour, reloads or not"
        );
    }
}
