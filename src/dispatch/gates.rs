//! Delivery windows and batch cadence as the dispatcher applies them. Reading the
//! schedule ([`Dispatcher::look`]) writes nothing; taking the batch ticks that have
//! fallen ([`Dispatcher::take_gates`]) records them in the queue, and is what makes a
//! spool's [`Gate`] (what a claim may take now); the schedule's metrics are set apart
//! ([`Dispatcher::show`]).

use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};

use super::Dispatcher;
use crate::clock::now_ms;
use crate::queue::Gate;
use crate::schedule;

/// Each spool's schedule at one moment of the schedule's clock: nothing taken yet.
#[derive(Debug, Clone, Default)]
pub(super) struct Look {
    /// By spool: whether its windows are open, and (with a cadence) the latest tick at
    /// or before the moment.
    pub spools: BTreeMap<String, SpoolLook>,
    /// The next window opening or batch tick, on the schedule's clock.
    pub next_change: Option<DateTime<Utc>>,
    /// The moment, on the schedule's clock.
    at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SpoolLook {
    pub open: bool,
    pub tick: Option<DateTime<Utc>>,
    pub opens_at: Option<DateTime<Utc>>,
    pub next_tick: Option<DateTime<Utc>>,
}

impl Look {
    /// Whether `other` would gate claims as this look does (windows and ticks alike).
    pub fn same_gates(&self, other: &Look) -> bool {
        self.spools.len() == other.spools.len()
            && self
                .spools
                .iter()
                .zip(&other.spools)
                .all(|((a, x), (b, y))| a == b && x.open == y.open && x.tick == y.tick)
    }

    /// How long from now until [`Look::next_change`].
    pub fn next_change_in(&self) -> Option<std::time::Duration> {
        let ahead = self.next_change? - crate::clock::schedule_now();
        Some(ahead.to_std().unwrap_or_default())
    }
}

/// The spools' gates, made from a [`Look`] with its ticks taken.
#[derive(Debug, Clone, Default)]
pub(super) struct Gates {
    /// The spools not open to every due row.
    pub by_spool: HashMap<String, Gate>,
    /// What they were made from.
    pub look: Look,
}

/// Each cadence spool's last batch tick taken (unix ms) and the last id it covers.
#[derive(Debug, Default)]
pub(super) struct Ticks(std::sync::Mutex<HashMap<String, (i64, i64)>>);

/// The earlier of two times, either of which may be missing.
fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Dispatcher {
    /// Each spool's schedule now. Reads; writes nothing.
    pub(super) fn look(&self) -> Look {
        let at = crate::clock::schedule_now();
        let mut look = Look {
            at: Some(at),
            ..Look::default()
        };
        for spool in self.spools.values() {
            let cadence = spool.schedule.deliver_every.as_ref();
            let outlook = schedule::outlook(&spool.only_route().windows(), cadence, at);
            look.next_change = earliest(
                look.next_change,
                earliest(outlook.opens_at, outlook.next_tick),
            );
            look.spools.insert(
                spool.name.clone(),
                SpoolLook {
                    open: outlook.open,
                    tick: cadence.map(|c| c.tick_at(at)),
                    opens_at: outlook.opens_at,
                    next_tick: outlook.next_tick,
                },
            );
        }
        look
    }

    /// Sets the schedule's metrics from `look`.
    pub(super) fn show(&self, look: &Look) {
        for (name, spool) in &look.spools {
            self.metrics.schedule(
                name,
                spool.open,
                spool.opens_at.map(|t| t.timestamp_millis()),
                spool.next_tick.map(|t| t.timestamp_millis()),
            );
        }
    }

    /// The gates of `look`: takes each cadence spool's tick (recorded in the queue, once)
    /// to know the last id it lets through.
    pub(super) async fn take_gates(&self, look: Look) -> Gates {
        let at = look.at.unwrap_or_else(crate::clock::schedule_now);
        let mut by_spool = HashMap::new();
        for (name, spool) in &look.spools {
            let mut gate = if spool.open { Gate::Open } else { Gate::Closed };
            if let Some(tick) = spool.tick {
                // The same moment on the queue's clock, which stamps `queued_at` (they
                // differ only under a test's injected schedule clock).
                let queued_by = now_ms() - (at - tick).num_milliseconds();
                let last_id = self
                    .take_tick(name, tick.timestamp_millis(), queued_by)
                    .await;
                if spool.open {
                    gate = Gate::UpTo(last_id);
                }
            }
            if gate != Gate::Open {
                by_spool.insert(name.clone(), gate);
            }
        }
        Gates { by_spool, look }
    }

    /// Takes the tick at `tick` (unix ms) for a cadence spool, once (a tick taken later in
    /// the clock's future, before the clock went back, is dropped); returns the last id
    /// its ticks cover. If the queue cannot say, what the last tick taken covered (or
    /// nothing): files wait rather than go early.
    async fn take_tick(&self, spool: &str, tick: i64, queued_by: i64) -> i64 {
        let ticks = &self.ticks.0;
        let known = ticks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(spool)
            .copied();
        if let Some((taken, last_id)) = known {
            if taken == tick {
                return last_id;
            }
        }
        let name = spool.to_string();
        match self
            .queue
            .call(move |q| q.take_tick(&name, tick, queued_by, now_ms()))
            .await
        {
            Ok((last_id, dropped)) => {
                if let Some(future) = dropped {
                    tracing::warn!(spool, dropped = %schedule_time(future), tick = %schedule_time(tick),
                        "a batch tick recorded in the future (the clock was ahead, and is right again) is dropped; the cadence goes on from now");
                }
                if known.map(|(_, before)| before) != Some(last_id) {
                    tracing::info!(spool, tick = %schedule_time(tick), last_id, "batch tick: the files queued so far go now");
                }
                ticks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(spool.to_string(), (tick, last_id));
                last_id
            }
            Err(e) => {
                tracing::warn!(spool, error = %e, "cannot record a batch tick; trying again");
                known.map_or(0, |(_, last_id)| last_id)
            }
        }
    }
}

/// Unix milliseconds as RFC 3339, for the log.
fn schedule_time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
