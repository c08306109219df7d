//! Bandwidth limits (`bwlimit`): a destination's rate, fixed or by a daily timetable like
//! rclone's, and the token bucket every upload to that destination draws its bytes from.
//!
//! Bytes are taken in small chunks as the HTTP client pulls a body, so the rate holds over
//! any second, not only on average over a part. One [`Throttle`] per destination lives as
//! long as the daemon: a reload changes its timetable, and uploads in flight go on at the
//! new rate instead of being dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
// tokio's clock: the tests run the bucket on a paused clock.
use tokio::time::Instant;

/// The largest piece of a body sent at once. Under a low limit pieces are smaller (a
/// fiftieth of a second's bytes, see [`Throttle::piece_size`]), so every second's average
/// stays within a few percent of the limit at any rate.
pub const CHUNK: usize = 16 << 10;

/// A rate from a time of day on: bytes per second, `None` for no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Minutes after local midnight.
    pub from_minute: u32,
    pub bytes_per_second: Option<u64>,
}

/// A destination's limit: one step for a fixed rate, several for a timetable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    /// Sorted by `from_minute`; empty for no limit.
    pub steps: Vec<Step>,
}

impl Schedule {
    /// The rate in force at `minute` after local midnight: the last step at or before it,
    /// else the day's last step (which runs on past midnight).
    pub fn rate_at(&self, minute: u32) -> Option<u64> {
        self.steps
            .iter()
            .rev()
            .find(|s| s.from_minute <= minute)
            .or(self.steps.last())
            .and_then(|s| s.bytes_per_second)
    }

    fn rate_now(&self) -> Option<u64> {
        if self.steps.is_empty() {
            return None;
        }
        use chrono::Timelike;
        let now = chrono::Local::now();
        self.rate_at(now.hour() * 60 + now.minute())
    }

    /// Parses `"20MiB/s"`, `"off"`, or a timetable of `"HH:MM,RATE"` entries.
    pub fn parse(entries: &[&str]) -> Result<Schedule, String> {
        if let [single] = entries {
            if !single.contains(',') {
                return Ok(Schedule {
                    steps: vec![Step {
                        from_minute: 0,
                        bytes_per_second: parse_rate(single)?,
                    }],
                });
            }
        }
        let mut steps = Vec::new();
        for entry in entries {
            let (time, rate) = entry.split_once(',').ok_or_else(|| {
                format!("{entry:?} is not \"HH:MM,RATE\" (like \"08:00,2MiB/s\" or \"19:00,off\")")
            })?;
            let from_minute = parse_time(time.trim()).ok_or_else(|| {
                format!("{time:?} in {entry:?} is not a time HH:MM (00:00 to 23:59)")
            })?;
            if steps
                .last()
                .is_some_and(|s: &Step| s.from_minute >= from_minute)
            {
                return Err(format!(
                    "{entry:?}: the timetable's times must rise through the day"
                ));
            }
            steps.push(Step {
                from_minute,
                bytes_per_second: parse_rate(rate.trim())?,
            });
        }
        if steps.is_empty() {
            return Err("an empty timetable: give a rate like \"20MiB/s\", or \"off\"".into());
        }
        Ok(Schedule { steps })
    }
}

/// `"20MiB/s"` → bytes per second; `"off"` → no limit.
fn parse_rate(text: &str) -> Result<Option<u64>, String> {
    if text == "off" {
        return Ok(None);
    }
    let size = text.strip_suffix("/s").ok_or_else(|| {
        format!("{text:?} is not a rate: write it per second, like \"20MiB/s\", or \"off\"")
    })?;
    let bytes = crate::units::parse_size(size)?;
    if bytes < 1024 {
        return Err(format!("{text:?} is below 1KiB/s"));
    }
    Ok(Some(bytes))
}

fn parse_time(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && text.len() == 5).then_some(h * 60 + m)
}

/// A token bucket over the bytes sent to one destination.
#[derive(Debug, Default)]
pub struct Throttle {
    schedule: Mutex<Schedule>,
    bucket: Mutex<Bucket>,
}

#[derive(Debug, Default)]
struct Bucket {
    tokens: f64,
    refilled: Option<Instant>,
}

impl Throttle {
    /// Replaces the timetable; uploads under way follow the new rate from their next chunk.
    pub fn set_schedule(&self, schedule: Schedule) {
        *self.schedule.lock().unwrap_or_else(|p| p.into_inner()) = schedule;
    }

    /// Whether some limit may apply (a body is then sent in chunks).
    pub fn limits(&self) -> bool {
        !self
            .schedule
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .steps
            .is_empty()
    }

    /// The lowest rate of the timetable, if any step limits: what a request's timeout
    /// must allow for.
    pub fn slowest_rate(&self) -> Option<u64> {
        self.schedule
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .steps
            .iter()
            .filter_map(|s| s.bytes_per_second)
            .min()
    }

    /// How big a piece of a body to send at once under the rate in force now.
    pub fn piece_size(&self) -> usize {
        let rate = self
            .schedule
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rate_now();
        rate.map_or(CHUNK, |rate| ((rate / 50) as usize).clamp(16, CHUNK))
    }

    /// Waits until `bytes` (at most [`CHUNK`]) may be sent.
    pub async fn take(&self, bytes: usize) {
        loop {
            let rate = self
                .schedule
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .rate_now();
            let Some(rate) = rate else {
                return;
            };
            let wait = {
                let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                // A burst of at most a twentieth of a second (and one chunk): the rate
                // holds over every second, not only on average.
                let cap = (rate as f64 / 20.0).max(bytes as f64);
                let elapsed = bucket
                    .refilled
                    .map_or(0.0, |at| now.duration_since(at).as_secs_f64());
                bucket.tokens = (bucket.tokens + elapsed * rate as f64).min(cap);
                bucket.refilled = Some(now);
                if bucket.tokens >= bytes as f64 {
                    bucket.tokens -= bytes as f64;
                    return;
                }
                (bytes as f64 - bucket.tokens) / rate as f64
            };
            // At most a second at a time: a reload that lifts the limit is seen soon.
            tokio::time::sleep(Duration::from_secs_f64(wait.min(1.0))).await;
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

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = |r: Option<u64>| match r {
            None => "off".to_string(),
            Some(bytes) => format!("{}/s", crate::units::format_size(bytes)),
        };
        match self.steps.as_slice() {
            [] => f.write_str("off"),
            [only] if only.from_minute == 0 => f.write_str(&rate(only.bytes_per_second)),
            steps => {
                let parts: Vec<String> = steps
                    .iter()
                    .map(|s| {
                        format!(
                            "{:02}:{:02},{}",
                            s.from_minute / 60,
                            s.from_minute % 60,
                            rate(s.bytes_per_second)
                        )
                    })
                    .collect();
                f.write_str(&parts.join(" "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_timetables_parse_and_wrap_past_midnight() {
        let fixed = Schedule::parse(&["20MiB/s"]).unwrap();
        assert_eq!(fixed.rate_at(0), Some(20 << 20));
        assert_eq!(Schedule::parse(&["off"]).unwrap().rate_at(600), None);
        let table = Schedule::parse(&["08:00,2MiB/s", "19:00,off"]).unwrap();
        assert_eq!(table.rate_at(8 * 60), Some(2 << 20));
        assert_eq!(table.rate_at(18 * 60 + 59), Some(2 << 20));
        assert_eq!(table.rate_at(19 * 60), None);
        assert_eq!(
            table.rate_at(7 * 60),
            None,
            "the evening's step runs past midnight"
        );
        let errors = [
            Schedule::parse(&["20MiB"]).unwrap_err(),
            Schedule::parse(&["25:00,1MiB/s"]).unwrap_err(),
            Schedule::parse(&["19:00,off", "08:00,1MiB/s"]).unwrap_err(),
            Schedule::parse(&["08:00,fast"]).unwrap_err(),
            Schedule::parse(&["100B/s"]).unwrap_err(),
        ];
        assert!(errors[0].contains("per second"), "{errors:?}");
        assert!(errors[1].contains("HH:MM"), "{errors:?}");
        assert!(errors[2].contains("rise"), "{errors:?}");
    }

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
}
