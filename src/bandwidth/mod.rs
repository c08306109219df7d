//! Bandwidth limits (`bwlimit`): a destination's rate, fixed or by a daily timetable like
//! rclone's, and the token bucket every upload to that destination draws its bytes from.
//!
//! Bytes are taken in small chunks as the HTTP client pulls a body, so the rate holds over
//! any second, not only on average over a part. One [`Throttle`] per destination lives as
//! long as the daemon: a reload changes its timetable, and uploads in flight go on at the
//! new rate instead of being dropped.

mod progress;
mod throttle;

pub use progress::{within_progress, Progress};
pub use throttle::{Throttle, Throttles};

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

    /// Parses `"20MiB/s"`, `"off"`, or a timetable of `"HH:MM,RATE"` entries: a list, or
    /// one string of space-separated entries as rclone's `--bwlimit` takes it.
    pub fn parse(entries: &[&str]) -> Result<Schedule, String> {
        if let [single] = entries {
            // Every word an entry: "08:00, 2MiB/s" stays one entry, as it always was.
            let words = single.split_whitespace();
            if words.clone().count() > 1 && words.clone().all(|w| w.contains(',')) {
                let entries: Vec<&str> = single.split_whitespace().collect();
                return Schedule::parse(&entries);
            }
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

/// Minutes after midnight, local time, on the schedules' clock (a test may set it).
fn local_minute_now() -> u32 {
    use chrono::Timelike;
    let now = crate::clock::schedule_now().with_timezone(&chrono::Local);
    now.hour() * 60 + now.minute()
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
        assert_eq!(
            Schedule::parse(&["08:00,2MiB/s 19:00,off"]).unwrap(),
            table,
            "rclone's one-string form"
        );
        assert_eq!(
            Schedule::parse(&["08:00, 2MiB/s"]).unwrap().rate_at(9 * 60),
            Some(2 << 20),
            "a space after the comma is one entry"
        );
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
}
