//! Delivery windows and batch cadence as the dispatcher applies them: what each spool's
//! [`Gate`] lets a claim take now, the batch ticks to take, and when to look again.

use chrono::{DateTime, Utc};
use std::collections::HashMap;

use super::Uploader;
use crate::clock::now_ms;
use crate::queue::Gate;
use crate::schedule;

/// The spools' gates at one moment of the schedule's clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Gates {
    /// The spools not open to every due row.
    pub by_spool: HashMap<String, Gate>,
    /// The next window opening or batch tick, on the schedule's clock.
    pub next_change: Option<DateTime<Utc>>,
}

impl Gates {
    /// How long from now (tokio's clock) until [`Gates::next_change`].
    pub fn next_change_in(&self) -> Option<std::time::Duration> {
        let ahead = self.next_change? - crate::clock::schedule_now();
        Some(ahead.to_std().unwrap_or_default())
    }
}

/// The earlier of two times, either of which may be missing.
fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Uploader {
    /// Each spool's gate now, taking any batch tick that has fallen.
    pub(super) async fn gates(&self) -> Gates {
        let at = crate::clock::schedule_now();
        let mut gates = Gates::default();
        for spool in self.config.spools.values() {
            let cadence = spool.schedule.deliver_every.as_ref();
            let outlook = schedule::outlook(&self.config.windows_of(spool), cadence, at);
            let mut gate = if outlook.open {
                Gate::Open
            } else {
                Gate::Closed
            };
            if let Some(cadence) = cadence {
                let tick = cadence.tick_at(at);
                // The same moment on the queue's clock, which stamps `queued_at` (they
                // differ only under a test's injected schedule clock).
                let queued_by = now_ms() - (at - tick).num_milliseconds();
                let last_id = self
                    .take_tick(&spool.name, tick.timestamp_millis(), queued_by)
                    .await;
                if outlook.open {
                    gate = Gate::UpTo(last_id);
                }
            }
            self.metrics.schedule(
                &spool.name,
                outlook.open,
                outlook.opens_at.map(|t| t.timestamp_millis()),
                outlook.next_tick.map(|t| t.timestamp_millis()),
            );
            if gate != Gate::Open {
                gates.by_spool.insert(spool.name.clone(), gate);
            }
            let next = earliest(outlook.opens_at, outlook.next_tick);
            gates.next_change = earliest(gates.next_change, next);
        }
        gates
    }

    /// Takes the tick at `tick` (unix ms) for a cadence spool, once (a tick taken later in
    /// the clock's future, before the clock went back, is dropped); returns the last id
    /// its ticks cover. If the queue cannot say, what the last tick taken covered (or
    /// nothing): files wait rather than go early.
    async fn take_tick(&self, spool: &str, tick: i64, queued_by: i64) -> i64 {
        let known = self
            .ticks
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
                self.ticks
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

/// Whether the windows a file's spool sends within are all open: a multipart upload
/// stops between parts when they close, unless the file was rushed.
pub struct WindowCheck<'a> {
    windows: Vec<&'a schedule::Windows>,
    rushed: bool,
}

impl<'a> WindowCheck<'a> {
    pub fn new(windows: Vec<&'a schedule::Windows>, rushed: bool) -> WindowCheck<'a> {
        WindowCheck { windows, rushed }
    }

    /// Never closes.
    pub fn always() -> WindowCheck<'static> {
        WindowCheck {
            windows: Vec::new(),
            rushed: false,
        }
    }

    pub fn closed(&self) -> bool {
        if self.rushed || self.windows.is_empty() {
            return false;
        }
        let now = crate::clock::schedule_now();
        !self.windows.iter().all(|w| w.is_open(now))
    }
}
