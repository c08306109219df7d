//! A batch cadence: `deliver_every = "6h"` ticks at the wall-clock times that divide the
//! day from midnight (00:00, 06:00, 12:00, 18:00), in the schedule's time zone.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};

use super::{to_minute, Side, Zone};

const DAY: u32 = 24 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    zone: Zone,
    /// Minutes between ticks; divides a day.
    every: u32,
}

impl Cadence {
    /// A cadence of `every`, which must be whole minutes dividing a day (1m to 24h).
    pub fn new(every: std::time::Duration, zone: Zone) -> Result<Cadence, String> {
        let secs = every.as_secs();
        let minutes = (secs / 60) as u32;
        if every.subsec_nanos() != 0
            || secs % 60 != 0
            || minutes == 0
            || minutes > DAY
            || DAY % minutes != 0
        {
            return Err(format!(
                "{} does not divide a day into whole minutes: use a period like 15m, 1h, 3h, 6h, 8h, 12h or 24h",
                crate::units::format_duration(every)
            ));
        }
        Ok(Cadence {
            zone,
            every: minutes,
        })
    }

    /// The period and its zone, like `6h (UTC)`.
    pub fn describe(&self) -> String {
        let every = std::time::Duration::from_secs(u64::from(self.every) * 60);
        format!(
            "{} ({})",
            crate::units::format_duration(every),
            self.zone.name()
        )
    }

    /// The latest tick at or before `at`.
    pub fn tick_at(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        let wall = self.last_tick_wall(self.zone.wall(at));
        self.zone.instant(wall, at, Side::AtOrBefore)
    }

    /// The first tick after `at`.
    pub fn next_tick(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        let next =
            self.last_tick_wall(self.zone.wall(at)) + Duration::minutes(i64::from(self.every));
        self.zone.instant(next, at, Side::After)
    }

    fn last_tick_wall(&self, wall: NaiveDateTime) -> NaiveDateTime {
        use chrono::Timelike;
        let wall = to_minute(wall);
        let minute = wall.hour() * 60 + wall.minute();
        let midnight = wall - Duration::minutes(i64::from(minute));
        midnight + Duration::minutes(i64::from(minute / self.every * self.every))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::tests::at;

    fn every(text: &str) -> Result<Cadence, String> {
        Cadence::new(crate::units::parse_duration(text).unwrap(), Zone::Utc)
    }

    #[test]
    fn ticks_are_aligned_to_midnight() {
        let six = every("6h").unwrap();
        assert_eq!(
            six.tick_at(at("2026-11-30T05:59:59Z")),
            at("2026-11-30T00:00:00Z")
        );
        assert_eq!(
            six.tick_at(at("2026-11-30T06:00:00Z")),
            at("2026-11-30T06:00:00Z")
        );
        assert_eq!(
            six.next_tick(at("2026-11-30T06:00:00Z")),
            at("2026-11-30T12:00:00Z")
        );
        assert_eq!(
            six.next_tick(at("2026-11-30T23:10:00Z")),
            at("2026-12-01T00:00:00Z")
        );
        let eight = every("8h").unwrap();
        assert_eq!(
            eight.tick_at(at("2026-11-30T23:00:00Z")),
            at("2026-11-30T16:00:00Z")
        );
        let day = every("24h").unwrap();
        assert_eq!(
            day.next_tick(at("2026-11-30T00:00:00Z")),
            at("2026-12-01T00:00:00Z")
        );
        let quarter = every("15m").unwrap();
        assert_eq!(
            quarter.tick_at(at("2026-11-30T10:44:00Z")),
            at("2026-11-30T10:30:00Z")
        );
    }

    #[test]
    fn a_cadence_must_divide_the_day() {
        for bad in ["7h", "5h", "90s", "48h", "30s"] {
            let e = every(bad).unwrap_err();
            assert!(e.contains("does not divide a day"), "{bad}: {e}");
        }
        for good in ["1m", "1h", "3h", "6h", "8h", "12h", "24h", "90m"] {
            assert!(every(good).is_ok(), "{good}");
        }
    }
}
