//! Delivery windows: `windows = ["Mon-Fri 19:00-07:00", "Sat-Sun 00:00-24:00"]`. A window
//! starts on each day it names and may run past midnight into the next; days may be left
//! out for every day.

use chrono::{DateTime, Duration, Utc};

use super::{minute_of_week, parse_time, to_minute, Side, Zone};

const DAY: u32 = 24 * 60;
const WEEK: u32 = 7 * DAY;
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// A spool's or destination's windows, as spans of the week.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows {
    zone: Zone,
    /// `[start, end)` in minutes since Monday 00:00, within one week.
    spans: Vec<(u32, u32)>,
    /// As written, for messages.
    text: Vec<String>,
}

impl Windows {
    /// Parses each entry as `[DAYS] HH:MM-HH:MM`, DAYS being `Mon`, `Mon-Fri`, `Fri-Mon`
    /// or a comma-separated list of those.
    pub fn parse(entries: &[&str], zone: Zone) -> Result<Windows, String> {
        if entries.is_empty() {
            return Err(
                "an empty list would never send: leave `windows` out to send at any time".into(),
            );
        }
        let mut spans = Vec::new();
        for entry in entries {
            let (days, start, end) = parse_entry(entry)?;
            let length = if end > start {
                end - start
            } else {
                end + DAY - start
            };
            for (day, on) in days.iter().enumerate() {
                if !on {
                    continue;
                }
                let from = day as u32 * DAY + start;
                let to = from + length;
                if to <= WEEK {
                    spans.push((from, to));
                } else {
                    // Sunday's window runs into Monday.
                    spans.push((from, WEEK));
                    spans.push((0, to - WEEK));
                }
            }
        }
        Ok(Windows {
            zone,
            spans,
            text: entries.iter().map(|e| e.to_string()).collect(),
        })
    }

    /// The entries as written.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.text.join(", "), self.zone.name())
    }

    /// Whether a window is open at `at`.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        let m = minute_of_week(self.zone.wall(at));
        self.spans.iter().any(|&(from, to)| from <= m && m < to)
    }

    /// When the next window opens after `at`, if none is open at `at` (`at` if one is).
    pub fn opens_at(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        if self.is_open(at) {
            return at;
        }
        let wall = to_minute(self.zone.wall(at));
        let m = minute_of_week(wall);
        let ahead = self
            .spans
            .iter()
            .map(|&(from, _)| (from + WEEK - m) % WEEK)
            .filter(|&d| d > 0)
            .min()
            .unwrap_or(WEEK);
        self.zone
            .instant(wall + Duration::minutes(i64::from(ahead)), at, Side::After)
    }
}

/// `[DAYS] HH:MM-HH:MM` → the days it starts on, its start and its end (minutes).
fn parse_entry(entry: &str) -> Result<([bool; 7], u32, u32), String> {
    let shape = || {
        format!(
            "{entry:?} is not a window like \"Mon-Fri 19:00-07:00\" or \"00:00-24:00\" (days optional: Mon, Mon-Fri, Sat,Sun)"
        )
    };
    let words: Vec<&str> = entry.split_whitespace().collect();
    let (days, hours) = match words.as_slice() {
        [hours] => ([true; 7], *hours),
        [days, hours] => (parse_days(days).ok_or_else(shape)?, *hours),
        _ => return Err(shape()),
    };
    let (start, end) = hours.split_once('-').ok_or_else(shape)?;
    let start = parse_time(start, false).ok_or_else(|| {
        format!("{start:?} in {entry:?} is not a start time HH:MM (00:00 to 23:59)")
    })?;
    let end = parse_time(end, true)
        .ok_or_else(|| format!("{end:?} in {entry:?} is not an end time HH:MM (00:01 to 24:00)"))?;
    if start == end {
        return Err(format!(
            "{entry:?} starts and ends at the same time: write \"00:00-24:00\" for the whole day"
        ));
    }
    Ok((days, start, end))
}

/// `Mon`, `Mon-Fri`, `Fri-Mon` (wrapping the week), or a comma-separated list of those.
fn parse_days(text: &str) -> Option<[bool; 7]> {
    let day = |name: &str| DAYS.iter().position(|d| d.eq_ignore_ascii_case(name));
    let mut on = [false; 7];
    for part in text.split(',') {
        match part.split_once('-') {
            None => on[day(part)?] = true,
            Some((first, last)) => {
                let (first, last) = (day(first)?, day(last)?);
                let mut d = first;
                loop {
                    on[d] = true;
                    if d == last {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
        }
    }
    Some(on)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::tests::at;

    fn utc(entries: &[&str]) -> Windows {
        Windows::parse(entries, Zone::Utc).unwrap()
    }

    #[test]
    fn windows_that_wrap_midnight_and_the_week() {
        let w = utc(&["Mon-Fri 19:00-07:00", "Sat-Sun 00:00-24:00"]);
        assert!(
            !w.is_open(at("2026-11-30T06:59:00Z")),
            "Monday morning belongs to no window"
        );
        assert!(!w.is_open(at("2026-11-30T12:00:00Z")));
        assert!(w.is_open(at("2026-11-30T19:00:00Z")));
        assert!(
            w.is_open(at("2026-12-01T06:59:59Z")),
            "Monday's window runs into Tuesday"
        );
        assert!(!w.is_open(at("2026-12-01T07:00:00Z")));
        assert!(
            w.is_open(at("2026-12-05T06:00:00Z")),
            "Friday's into Saturday"
        );
        assert!(w.is_open(at("2026-12-06T23:59:00Z")));
        assert!(
            !w.is_open(at("2026-12-07T00:00:00Z")),
            "Sunday's ends at midnight"
        );
        let sunday_night = utc(&["Sun 22:00-02:00"]);
        assert!(
            sunday_night.is_open(at("2026-11-30T01:00:00Z")),
            "Sunday's window runs into Monday"
        );
        assert!(!sunday_night.is_open(at("2026-11-30T02:00:00Z")));
    }

    #[test]
    fn opening_times() {
        let w = utc(&["Mon-Fri 19:00-07:00"]);
        assert_eq!(
            w.opens_at(at("2026-11-30T12:34:56Z")),
            at("2026-11-30T19:00:00Z")
        );
        let open = at("2026-11-30T20:00:00Z");
        assert_eq!(w.opens_at(open), open);
        // Friday's window ends Saturday 07:00; the next opens Monday 19:00.
        assert_eq!(
            w.opens_at(at("2026-12-05T08:00:00Z")),
            at("2026-12-07T19:00:00Z")
        );
        let days = utc(&["Sat,Tue 10:00-11:00"]);
        assert_eq!(
            days.opens_at(at("2026-12-01T11:00:00Z")),
            at("2026-12-05T10:00:00Z")
        );
        assert_eq!(
            days.opens_at(at("2026-12-05T11:30:00Z")),
            at("2026-12-08T10:00:00Z")
        );
        let everyday = utc(&["23:30-00:15"]);
        assert!(everyday.is_open(at("2026-12-03T00:10:00Z")));
        assert_eq!(
            everyday.opens_at(at("2026-12-03T00:15:00Z")),
            at("2026-12-03T23:30:00Z")
        );
    }

    #[test]
    fn bad_windows_say_what_is_wrong() {
        let err = |e: &str| Windows::parse(&[e], Zone::Utc).unwrap_err();
        assert!(
            err("Mon-Fri 19:00").contains("not a window like"),
            "{}",
            err("Mon-Fri 19:00")
        );
        assert!(err("Mo-Fr 19:00-07:00").contains("not a window like"));
        assert!(err("Mon 25:00-07:00").contains("not a start time"));
        assert!(err("Mon 24:00-07:00").contains("not a start time"));
        assert!(err("Mon 19:00-7:00").contains("not an end time"));
        assert!(err("Mon 07:00-07:00").contains("same time"));
        assert!(Windows::parse(&[], Zone::Utc)
            .unwrap_err()
            .contains("never send"));
        assert!(err("Mon-Fri 19:00-07:00 extra").contains("not a window like"));
        assert_eq!(
            utc(&["Mon 01:00-02:00"]).describe(),
            "Mon 01:00-02:00 (UTC)"
        );
    }
}
