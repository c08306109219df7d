//! When a spool may send: delivery windows (`windows`) and a batch cadence
//! (`deliver_every`), read on the wall clock of the time zone the config names
//! (`schedule_timezone`). Pure time arithmetic: the dispatcher, the uploader and the manifest
//! writer decide what a closed window or a tick means for the queue.

mod cadence;
mod window;

pub use cadence::Cadence;
pub use window::Windows;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Utc};

/// The time zone a schedule is read in. There is no default: "19:00" on a host in UTC and
/// one in New York are different hours, so the config says which it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// The host's zone (`TZ`, else /etc/localtime), daylight saving included.
    Local,
    Utc,
}

impl Zone {
    pub fn parse(text: &str) -> Result<Zone, String> {
        match text {
            "local" => Ok(Zone::Local),
            "UTC" | "utc" => Ok(Zone::Utc),
            other => Err(format!(
                "{other:?} is not \"local\" (the host's time zone) or \"UTC\""
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Zone::Local => "local",
            Zone::Utc => "UTC",
        }
    }

    /// The wall-clock time at `at` in this zone.
    pub fn wall(self, at: DateTime<Utc>) -> NaiveDateTime {
        match self {
            Zone::Local => at.with_timezone(&chrono::Local).naive_local(),
            Zone::Utc => at.naive_utc(),
        }
    }

    /// The instant the wall clock of this zone shows `wall`, on the side of `at` asked
    /// for: the first one after `at` ([`Side::After`], for what comes next) or the last
    /// one at or before it ([`Side::AtOrBefore`]). A wall time shown twice (the hour
    /// repeated when daylight saving ends) is thus read as the one that makes sense; one
    /// skipped (when it starts) is the instant the clock jumped over it.
    pub fn instant(self, wall: NaiveDateTime, at: DateTime<Utc>, side: Side) -> DateTime<Utc> {
        match self {
            Zone::Utc => wall.and_utc(),
            Zone::Local => {
                // Gaps are at most an hour (two in some historical zones): step forward.
                let mut probe = wall;
                for _ in 0..8 * 4 {
                    match chrono::Local.from_local_datetime(&probe) {
                        LocalResult::Single(t) => return t.with_timezone(&Utc),
                        LocalResult::Ambiguous(one, other) => {
                            // chrono gives them in no set order.
                            let (one, other) = (one.with_timezone(&Utc), other.with_timezone(&Utc));
                            let (first, second) = (one.min(other), one.max(other));
                            return match side {
                                Side::After if first > at => first,
                                Side::After => second,
                                Side::AtOrBefore if second <= at => second,
                                Side::AtOrBefore => first,
                            };
                        }
                        LocalResult::None => probe += Duration::minutes(15),
                    }
                }
                wall.and_utc()
            }
        }
    }
}

/// Which of two instants with the same wall time [`Zone::instant`] picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    After,
    AtOrBefore,
}

/// Minutes since Monday 00:00 of the week, at wall time `wall`.
fn minute_of_week(wall: NaiveDateTime) -> u32 {
    use chrono::{Datelike, Timelike};
    wall.weekday().num_days_from_monday() * 24 * 60 + wall.hour() * 60 + wall.minute()
}

/// `wall` with its seconds dropped.
fn to_minute(wall: NaiveDateTime) -> NaiveDateTime {
    use chrono::Timelike;
    wall.with_second(0)
        .and_then(|w| w.with_nanosecond(0))
        .unwrap_or(wall)
}

/// `"HH:MM"` in minutes after midnight; `"24:00"` only where `end` allows it.
fn parse_time(text: &str, end: bool) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) if end => Some(24 * 60),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

/// When every one of `windows` is open at once, at or after `at` (`at` itself if they
/// all are): a spool sends inside its own windows and its destination's. `None` if they
/// never overlap.
pub fn all_open_at(windows: &[&Windows], at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut t = at;
    // Each step moves to some window's next opening; a week's openings bound the steps.
    for _ in 0..=7 * 24 * 2 * windows.len().max(1) {
        match windows.iter().find(|w| !w.is_open(t)) {
            None => return Some(t),
            Some(closed) => t = closed.opens_at(t),
        }
        if t - at > Duration::days(8) {
            return None;
        }
    }
    None
}

/// What a spool's schedule says at one moment: the daemon acts on it, `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlook {
    /// Its windows (its own and its destination's) are all open.
    pub open: bool,
    /// When they open next, while they are closed (`None` too if they never would).
    pub opens_at: Option<DateTime<Utc>>,
    /// Its next batch tick, with `deliver_every`.
    pub next_tick: Option<DateTime<Utc>>,
}

/// The [`Outlook`] at `at` of a spool sending within `windows` on `cadence`.
pub fn outlook(windows: &[&Windows], cadence: Option<&Cadence>, at: DateTime<Utc>) -> Outlook {
    let opens = all_open_at(windows, at);
    let open = opens == Some(at);
    Outlook {
        open,
        opens_at: if open { None } else { opens },
        next_tick: cadence.map(|c| c.next_tick(at)),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A time written in RFC 3339. (2026-11-30 is a Monday.)
    pub(super) fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_spool_opens_when_its_windows_and_its_destinations_overlap() {
        let spool = Windows::parse(&["Mon-Fri 18:00-23:00"], Zone::Utc).unwrap();
        let destination = Windows::parse(&["20:00-06:00"], Zone::Utc).unwrap();
        let both = [&spool, &destination];
        // Monday noon: the spool opens at 18:00, the destination at 20:00.
        assert_eq!(
            all_open_at(&both, at("2026-11-30T12:00:00Z")),
            Some(at("2026-11-30T20:00:00Z"))
        );
        let inside = at("2026-11-30T21:00:00Z");
        assert_eq!(all_open_at(&both, inside), Some(inside));
        // Friday 23:00 on: next is Monday 20:00.
        assert_eq!(
            all_open_at(&both, at("2026-12-04T23:00:00Z")),
            Some(at("2026-12-07T20:00:00Z"))
        );
        let never = Windows::parse(&["Sat 01:00-02:00"], Zone::Utc).unwrap();
        assert_eq!(all_open_at(&[&spool, &never], inside), None);
        assert_eq!(all_open_at(&[], inside), Some(inside));
    }
}
