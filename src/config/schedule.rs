//! `windows`, `deliver_every` and `schedule_timezone`: when a spool (or every spool of a
//! destination) may send.

use super::reader::{Problems, Section};
use crate::schedule::{Cadence, Windows, Zone};

/// What one table says about its schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleSetting {
    pub windows: Option<Windows>,
    pub deliver_every: Option<Cadence>,
}

/// Reads the keys; `deliver_every` only where `cadence` allows it (spools).
pub(super) fn parse(p: &mut Problems, s: &mut Section, cadence: bool) -> ScheduleSetting {
    let windows = s.strings(p, "windows");
    let every = if cadence {
        s.duration(p, "deliver_every")
    } else {
        None
    };
    let zone = match s.string(p, "schedule_timezone") {
        None if windows.is_some() || every.is_some() => {
            let about = if windows.is_some() {
                "windows"
            } else {
                "deliver_every"
            };
            p.add(
                s.key("schedule_timezone"),
                format!(
                    "is required with {about}: say \"local\" (the host's time zone) or \"UTC\""
                ),
            );
            None
        }
        None => None,
        Some(_) if windows.is_none() && every.is_none() => {
            p.add(
                s.key("schedule_timezone"),
                if cadence {
                    "is only used with windows or deliver_every"
                } else {
                    "is only used with windows"
                },
            );
            None
        }
        Some(text) => Zone::parse(text)
            .map_err(|e| p.add(s.key("schedule_timezone"), e))
            .ok(),
    };
    let Some(zone) = zone else {
        return ScheduleSetting::default();
    };
    ScheduleSetting {
        windows: windows.and_then(|entries| {
            Windows::parse(&entries, zone)
                .map_err(|e| p.add(s.key("windows"), e))
                .ok()
        }),
        deliver_every: every.and_then(|every| {
            Cadence::new(every, zone)
                .map_err(|e| p.add(s.key("deliver_every"), e))
                .ok()
        }),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::*;

    fn with(spool_keys: &str, destination_keys: &str) -> String {
        let text = with_spool(spool_keys);
        text.replace(
            "bucket = \"s3://acme-drop/inbound\"",
            &format!("bucket = \"s3://acme-drop/inbound\"\n{destination_keys}"),
        )
    }

    #[test]
    fn windows_and_cadence_are_read_with_their_zone() {
        let config = parse(&with(
            "windows = [\"Mon-Fri 19:00-07:00\"]\ndeliver_every = \"6h\"\nschedule_timezone = \"UTC\"",
            "windows = [\"00:00-24:00\"]\nschedule_timezone = \"local\"",
        ))
        .unwrap();
        let spool = &config.spools["orders"];
        assert_eq!(
            spool.schedule.windows.as_ref().unwrap().describe(),
            "Mon-Fri 19:00-07:00 (UTC)"
        );
        assert!(spool.schedule.deliver_every.is_some());
        let cadence = parse(&with_spool(
            "deliver_every = \"6h\"\nschedule_timezone = \"UTC\"\nmanifest = true",
        ))
        .unwrap();
        let manifest = cadence.spools["orders"]
            .only_route()
            .manifest
            .as_ref()
            .unwrap();
        assert_eq!(
            manifest.max_files, 100_000,
            "a tick is not split at the default count"
        );
        let destination = &config.destinations[&spool.only_route().destination];
        assert_eq!(
            destination.windows.as_ref().unwrap().describe(),
            "00:00-24:00 (local)"
        );
    }

    #[test]
    fn schedule_errors_name_the_key() {
        refused(
            &with_spool("windows = [\"Mon-Fri 19:00-07:00\"]"),
            "spools.orders.schedule_timezone",
            "is required with windows",
        );
        refused(
            &with_spool("deliver_every = \"6h\""),
            "spools.orders.schedule_timezone",
            "is required with deliver_every",
        );
        refused(
            &with_spool("schedule_timezone = \"UTC\""),
            "spools.orders.schedule_timezone",
            "only used with",
        );
        refused(
            &with_spool("windows = [\"Mon-Fri 19:00\"]\nschedule_timezone = \"UTC\""),
            "spools.orders.windows",
            "not a window like",
        );
        refused(
            &with_spool("windows = [\"00:00-24:00\"]\nschedule_timezone = \"Europe/Paris\""),
            "spools.orders.schedule_timezone",
            "is not \"local\"",
        );
        refused(
            &with_spool("deliver_every = \"7h\"\nschedule_timezone = \"UTC\""),
            "spools.orders.deliver_every",
            "does not divide a day",
        );
        refused(
            &with_spool(
                "deliver_every = \"6h\"\nschedule_timezone = \"UTC\"\nmanifest = true\nmanifest_every = \"5m\"",
            ),
            "spools.orders.manifest_every",
            "not used with deliver_every",
        );
        refused(
            &with_spool(
                "windows = [\"Sat 01:00-02:00\"]\nschedule_timezone = \"UTC\"",
            )
            .replace(
                "bucket = \"s3://acme-drop/inbound\"",
                "bucket = \"s3://acme-drop/inbound\"\nwindows = [\"Mon 01:00-02:00\"]\nschedule_timezone = \"UTC\"",
            ),
            "spools.orders.windows",
            "never overlaps",
        );
        refused(
            &with("", "deliver_every = \"6h\""),
            "destinations.lake.deliver_every",
            "unknown key",
        );
    }
}
