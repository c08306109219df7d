//! The token bucket each destination's uploads draw their bytes from, and the
//! destinations' buckets kept across reloads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
// tokio's clock: the tests run the bucket on a paused clock.
use tokio::time::Instant;

use super::{Schedule, CHUNK};

/// A token bucket over the bytes sent to one destination.
#[derive(Debug, Default)]
pub struct Throttle {
    schedule: Mutex<Schedule>,
    bucket: Mutex<Bucket>,
}

/// Bytes counted since the bucket began: what takers reserved, and what the rate has paid
/// for. `paid - reserved` is the bucket's tokens; below zero, a debt the waiting takers
/// pay off in the order they came.
#[derive(Debug, Default)]
struct Bucket {
    reserved: f64,
    paid: f64,
    /// When `paid` was last brought up to date.
    paid_at: Option<Instant>,
    /// When the bytes reserved last will have been paid for: an upload is moving until
    /// then (see [`Throttle::sent_within`]).
    moving_until: Option<Instant>,
}

/// Less than this left to pay is paid: the sums are floating point.
const PAID_ENOUGH: f64 = 0.5;

impl Bucket {
    /// Brings `paid` up to now at `rate`, with a burst of at most a twentieth of a second
    /// (and one piece) saved up: the rate holds over every second, not only on average.
    fn pay(&mut self, rate: u64, piece: usize, now: Instant) {
        let elapsed = self
            .paid_at
            .map_or(0.0, |at| now.duration_since(at).as_secs_f64());
        let cap = (rate as f64 / 20.0).max(piece as f64);
        self.paid = (self.paid + elapsed * rate as f64).min(self.reserved + cap);
        self.paid_at = Some(now);
    }
}

impl Throttle {
    /// Replaces the timetable; uploads under way follow the new rate from their next piece.
    pub fn set_schedule(&self, schedule: Schedule) {
        *self.schedule.lock().unwrap_or_else(|p| p.into_inner()) = schedule;
    }

    /// Whether some step of the timetable limits (a body is then sent in pieces).
    pub fn limits(&self) -> bool {
        self.schedule
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .steps
            .iter()
            .any(|s| s.bytes_per_second.is_some())
    }

    fn rate_now(&self) -> Option<u64> {
        // The clock is read before the lock: under a test's injected clock it is a file.
        let minute = super::local_minute_now();
        self.schedule
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rate_at(minute)
    }

    /// How big a piece of a body to send at once under the rate in force now.
    pub fn piece_size(&self) -> usize {
        self.rate_now()
            .map_or(CHUNK, |rate| ((rate / 50) as usize).clamp(16, CHUNK))
    }

    /// Whether an upload under the limit is moving: bytes were paid for within `within`,
    /// or are reserved and waiting to be.
    pub fn sent_within(&self, within: Duration) -> bool {
        let bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        bucket
            .moving_until
            .is_some_and(|until| Instant::now() <= until + within)
    }

    /// Waits until `bytes` (at most [`CHUNK`]) may be sent. Takers are served in the order
    /// they came: each reserves its bytes at once and waits until the rate has paid for
    /// everything reserved before them and for its own, so no upload starves while others
    /// win every race for the refill. The rate is read again at each wake (at least every
    /// second), so a reload's new rate applies to the takers already waiting too.
    pub async fn take(&self, bytes: usize) {
        let Some(rate) = self.rate_now() else {
            return;
        };
        let mine = {
            let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            bucket.pay(rate, bytes, now);
            bucket.reserved += bytes as f64;
            let owed = (bucket.reserved - bucket.paid).max(0.0);
            let until = now + Duration::from_secs_f64(owed / rate as f64);
            bucket.moving_until = bucket.moving_until.max(Some(until));
            if owed < PAID_ENOUGH {
                return;
            }
            bucket.reserved
        };
        loop {
            let Some(rate) = self.rate_now() else {
                return;
            };
            let wait = {
                let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
                bucket.pay(rate, bytes, Instant::now());
                if mine - bucket.paid < PAID_ENOUGH {
                    return;
                }
                (mine - bucket.paid) / rate as f64
            };
            // At least a millisecond: a wait rounded to nothing would spin.
            tokio::time::sleep(Duration::from_secs_f64(wait.clamp(0.001, 1.0))).await;
        }
    }
}

/// Every destination's [`Throttle`], kept across reloads by name.
#[derive(Debug, Default)]
pub struct Throttles(Mutex<HashMap<String, Arc<Throttle>>>);

impl Throttles {
    /// The throttle of destination `name` (made, unlimited, on first use).
    pub fn get(&self, name: &str) -> Arc<Throttle> {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(all.entry(name.to_string()).or_default())
    }

    /// Puts each destination's timetable in force, for uploads under way too.
    pub fn apply<'a>(&self, destinations: impl IntoIterator<Item = (&'a str, &'a Schedule)>) {
        for (name, schedule) in destinations {
            let throttle = self.get(name);
            let old = throttle
                .schedule
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if &old != schedule {
                tracing::info!(destination = name, bwlimit = %schedule, "bandwidth limit in force");
                throttle.set_schedule(schedule.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bucket_holds_the_rate_over_every_second() {
        let throttle = Throttle::default();
        throttle.set_schedule(Schedule::parse(&["1MiB/s"]).unwrap());
        let start = tokio::time::Instant::now();
        let mut sent_by_second = [0usize; 5];
        let mut sent = 0;
        while sent < 4 << 20 {
            throttle.take(CHUNK).await;
            sent += CHUNK;
            let second = start.elapsed().as_secs() as usize;
            if second < sent_by_second.len() {
                sent_by_second[second] += CHUNK;
            }
        }
        // Four MiB at 1 MiB/s: about four seconds, each second near 1 MiB.
        let took = start.elapsed().as_secs_f64();
        assert!((3.8..=4.2).contains(&took), "{took}");
        for (second, bytes) in sent_by_second.iter().take(4).enumerate() {
            let ratio = *bytes as f64 / (1 << 20) as f64;
            assert!((0.9..=1.1).contains(&ratio), "second {second}: {ratio}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_low_rate_is_sent_in_small_pieces_so_each_second_holds_it() {
        let throttle = Throttle::default();
        throttle.set_schedule(Schedule::parse(&["20KiB/s"]).unwrap());
        let piece = throttle.piece_size();
        assert!(piece <= 20 * 1024 / 10, "{piece}");
        let start = tokio::time::Instant::now();
        let mut by_second = [0usize; 4];
        while start.elapsed() < Duration::from_secs(4) {
            throttle.take(piece).await;
            let second = start.elapsed().as_secs() as usize;
            if second < by_second.len() {
                by_second[second] += piece;
            }
        }
        for (second, bytes) in by_second.iter().enumerate() {
            let ratio = *bytes as f64 / (20 * 1024) as f64;
            assert!((0.9..=1.1).contains(&ratio), "second {second}: {ratio}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn uploads_sharing_a_limit_keep_their_turns() {
        let throttle = Arc::new(Throttle::default());
        throttle.set_schedule(Schedule::parse(&["1MiB/s"]).unwrap());
        let until = Instant::now() + Duration::from_secs(8);
        let sender = |throttle: Arc<Throttle>, piece: usize| async move {
            let mut sent = 0;
            while Instant::now() < until {
                throttle.take(piece).await;
                sent += piece;
            }
            sent
        };
        // Pieces of different sizes: a large taker must not starve a small one, nor the
        // other way round.
        let (a, b, c) = tokio::join!(
            tokio::spawn(sender(Arc::clone(&throttle), CHUNK)),
            tokio::spawn(sender(Arc::clone(&throttle), CHUNK)),
            tokio::spawn(sender(Arc::clone(&throttle), CHUNK / 4)),
        );
        let (a, b, c) = (a.unwrap() as f64, b.unwrap() as f64, c.unwrap() as f64);
        let total = a + b + c;
        // In bytes, arrival order gives a four times larger piece four times the bytes
        // per turn: what matters is that every taker keeps its turn.
        assert!((a / b - 1.0).abs() < 0.05, "{a} {b}");
        assert!((c / (a / 4.0) - 1.0).abs() < 0.1, "{a} {c}");
        let rate = total / 8.0 / (1 << 20) as f64;
        assert!((0.95..=1.07).contains(&rate), "{rate} of the limit");
        assert!(throttle.sent_within(Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_rate_applies_to_the_takers_already_waiting() {
        let throttle = Arc::new(Throttle::default());
        throttle.set_schedule(Schedule::parse(&["2KiB/s"]).unwrap());
        let start = Instant::now();
        // Ten KiB asked for at once: five seconds of debt at 2 KiB/s.
        let waiters: Vec<_> = (0..10)
            .map(|_| {
                let throttle = Arc::clone(&throttle);
                tokio::spawn(async move { throttle.take(1024).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        throttle.set_schedule(Schedule::parse(&["1MiB/s"]).unwrap());
        for waiter in waiters {
            waiter.await.unwrap();
        }
        // Each waiter reads the rate again within a second: all done well before 5 s.
        let took = start.elapsed();
        assert!(took <= Duration::from_millis(1600), "{took:?}");
        assert!(throttle.sent_within(Duration::from_secs(1)));
    }
}
