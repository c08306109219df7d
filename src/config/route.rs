//! A route: one spool's way to one of its destinations. What a spool's files become and
//! where they land (key, output, manifests, send windows) belongs to the route; what
//! happens to the file itself (which files, when finished, the clean-up) to the spool,
//! since every destination of a spool shares it.

use std::path::Path;

use super::keys::{self, KeyRulesSetting};
use super::manifest::{self, ManifestSettings};
use super::output;
use super::reader::{Problems, Section};
use crate::key::KeyTemplate;
use crate::schedule::Windows;
use crate::transcode::Output;

/// Keys of a spool that a route cannot say otherwise: every destination of a spool
/// shares its file and what happens to it.
const SPOOL_ONLY: [&str; 8] = [
    "path",
    "include",
    "exclude",
    "settle",
    "after_upload",
    "archive_dir",
    "deliver_every",
    "destination",
];

/// How one spool's files are delivered to one destination.
#[derive(Debug, Clone)]
pub struct Route {
    /// The `[destinations.NAME]` table it sends to.
    pub destination: String,
    /// The key template, with its rules applied (the route's over the destination's).
    pub key: KeyTemplate,
    /// What is delivered: the bytes as they are, or a conversion of them.
    pub output: Output,
    /// Deliveries are grouped into batches, each closed by a manifest.
    pub manifest: Option<ManifestSettings>,
    /// Its own key sanitising and length (the route's, then the spool's), over its
    /// destination's (applied to `key` once both are read).
    pub key_rules: KeyRulesSetting,
    /// Its own `windows`, in place of the spool's; `None`: the spool's.
    pub windows: Option<Windows>,
    /// The windows it sends within: the spool's and the destination's (made at load,
    /// once both are read). Empty: any time.
    pub send_windows: Vec<Windows>,
}

impl Route {
    /// The windows it sends within, as the schedule reads them.
    pub fn windows(&self) -> Vec<&Windows> {
        self.send_windows.iter().collect()
    }

    /// The object key of row `id` of `spool`, for the file at `rel_path` queued at
    /// `time`: rendered once, when the row is made, and stored with it.
    pub fn object_key(
        &self,
        spool: &str,
        prefix: &str,
        host: &str,
        rel_path: &str,
        id: i64,
        time: chrono::DateTime<chrono::Utc>,
    ) -> Result<String, String> {
        let input = crate::key::KeyInput {
            spool,
            host,
            rel_path,
            id,
            uuid: if self.key.uses_uuid() {
                uuid::Uuid::new_v4()
            } else {
                uuid::Uuid::nil()
            },
            time,
            ext: self.output.ext_rule(),
        };
        self.key.render(prefix, &input).map_err(|e| e.to_string())
    }
}

/// A spool's routes, one per destination in `destinations`' order: the spool's own
/// settings (`own`), each with what its `[spools.NAME.to.DEST]` table (in `to`) says
/// instead. `spool` is the spool's section, for the keys of problems.
pub(super) fn routes(
    p: &mut Problems,
    spool: &Section,
    to: Option<&toml::Table>,
    destinations: &[String],
    base: &Path,
    own: &Route,
    cadence: bool,
) -> Option<Vec<Route>> {
    let before = p.0.len();
    let to_path = format!("{}.to", spool.path());
    let mut tables = Vec::new();
    for (name, value) in to.into_iter().flatten() {
        let key = format!("{to_path}.{name}");
        if !destinations.contains(name) {
            p.add(
                key,
                format!("{name:?} is not one of this spool's destinations ({destinations:?})"),
            );
        } else if let Some(table) = value.as_table() {
            tables.push((name.as_str(), key, table));
        } else {
            p.add(key, format!("expected a table, found {}", value.type_str()));
        }
    }
    let routes: Vec<Route> = destinations
        .iter()
        .map(|destination| {
            let said = tables.iter().find(|(name, _, _)| name == destination);
            match said {
                None => Route {
                    destination: destination.clone(),
                    ..own.clone()
                },
                Some((_, key, table)) => {
                    override_route(p, key, table, base, own, destination, cadence)
                }
            }
        })
        .collect();
    (p.0.len() == before).then_some(routes)
}

/// The route to `destination`: `own` with what `table` (at `path`) says instead.
fn override_route(
    p: &mut Problems,
    path: &str,
    table: &toml::Table,
    base: &Path,
    own: &Route,
    destination: &str,
    cadence: bool,
) -> Route {
    let mut s = Section::new(path, table);
    for name in SPOOL_ONLY {
        if s.take(name) {
            p.add(
                s.key(name),
                "belongs to the spool, not to one of its destinations: they share the file and its clean-up",
            );
        }
    }
    let key = s.string(p, "key").and_then(|text| {
        KeyTemplate::parse(text)
            .map_err(|e| p.add(s.key("key"), e))
            .ok()
    });
    let key_rules = keys::parse(p, &mut s).or(&own.key_rules);
    let windows = super::schedule::parse(p, &mut s, false).windows;
    let output = output::output(p, &mut s, base, Some(&own.output));
    let mut manifest = manifest::manifest(p, &mut s, Some(&own.manifest));
    if cadence && table.contains_key("manifest") {
        manifest::for_cadence(p, &s, table, &mut manifest);
    }
    s.finish(p);
    Route {
        destination: destination.to_string(),
        key: key.unwrap_or_else(|| own.key.clone()),
        output: output.unwrap_or_else(|| own.output.clone()),
        manifest: manifest.unwrap_or_else(|| own.manifest.clone()),
        key_rules,
        windows,
        send_windows: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::*;
    use crate::transcode::Format;

    #[test]
    fn a_destination_is_a_name_or_a_list_of_one() {
        let listed =
            parse(&with_spool("").replace("destination = \"lake\"", "destination = [\"lake\"]"))
                .unwrap();
        let route = listed.spools["orders"].only_route();
        assert_eq!(route.destination, "lake");
        assert_eq!(listed.spools["orders"].routes.len(), 1);
    }

    #[test]
    fn destination_lists_are_checked_name_by_name() {
        let two = |list: &str| {
            format!(
                "{BASE_DEST}{}{}",
                BASE_DEST.replace("lake", "mirror"),
                BASE_SPOOL.replace("destination = \"lake\"", &format!("destination = {list}"))
            )
        };
        refused(
            &two("[\"lake\", \"lake\"]"),
            "spools.orders.destination",
            "names \"lake\" twice",
        );
        refused(
            &two("[]"),
            "spools.orders.destination",
            "names no destination",
        );
        refused(
            &two("[\"lake\", \"nowhere\"]"),
            "spools.orders.destination",
            "no [destinations.nowhere] table",
        );
        refused(
            &two("[\"lake\", \"mirror\"]"),
            "spools.orders.destination",
            "not available in this version yet",
        );
        refused(
            &two("7"),
            "spools.orders.destination",
            "expected a string or a list of strings",
        );
    }

    #[test]
    fn a_route_table_says_what_differs_for_its_destination() {
        let config = parse(&with_spool(
            "format = \"gzip\"\nmanifest = true\nsanitize_keys = \"strict\"\n\
             [spools.orders.to.lake]\nkey = \"raw/{path}-{id}\"\nformat = \"raw\"\n\
             max_key_length = 64\nwindows = [\"Mon-Fri 19:00-07:00\"]\nschedule_timezone = \"UTC\"",
        ))
        .unwrap();
        let route = config.spools["orders"].only_route();
        assert_eq!(route.output.format, Format::Raw, "its own format");
        assert!(route.manifest.is_some(), "the spool's manifests");
        assert_eq!(
            route
                .windows()
                .iter()
                .map(|w| w.describe())
                .collect::<Vec<_>>(),
            ["Mon-Fri 19:00-07:00 (UTC)"]
        );
        let key = route
            .object_key(
                "orders",
                "in",
                "host",
                "a b.csv",
                7,
                chrono::DateTime::from_timestamp(0, 0).unwrap(),
            )
            .unwrap();
        assert_eq!(key, "in/raw/a_b.csv-7", "its key, with the spool's rules");

        // Without a table, or with an empty one, the route is the spool's.
        for extra in ["", "\n[spools.orders.to.lake]"] {
            let config = parse(&with_spool(&format!("format = \"gzip\"{extra}"))).unwrap();
            let route = config.spools["orders"].only_route();
            assert_eq!(route.output.format, Format::Gzip { level: 6 });
            assert!(route.manifest.is_none());
        }
        let off = parse(&with_spool(
            "manifest = true\n[spools.orders.to.lake]\nmanifest = false\nencrypt_to = false",
        ))
        .unwrap();
        let route = off.spools["orders"].only_route();
        assert!(route.manifest.is_none() && route.output.encrypt_to.is_none());
    }

    #[test]
    fn a_route_table_refuses_what_belongs_to_the_spool_or_comes_alone() {
        let to = |lines: &str| with_spool(&format!("\n[spools.orders.to.lake]\n{lines}"));
        refused(
            &to("settle = \"1s\""),
            "spools.orders.to.lake.settle",
            "belongs to the spool",
        );
        refused(
            &to("after_upload = \"keep\""),
            "spools.orders.to.lake.after_upload",
            "belongs to the spool",
        );
        refused(
            &to("gzip_level = 9"),
            "spools.orders.to.lake.gzip_level",
            "set format here too",
        );
        refused(
            &to("manifest_every = \"1m\""),
            "spools.orders.to.lake.manifest_every",
            "set manifest here too",
        );
        refused(
            &to("encrypt_to = true"),
            "spools.orders.to.lake.encrypt_to",
            "or false to send this destination unencrypted",
        );
        refused(
            &to("colour = \"blue\""),
            "spools.orders.to.lake.colour",
            "unknown key",
        );
        refused(
            &to("windows = [\"Mon-Fri 19:00-07:00\"]"),
            "spools.orders.to.lake.schedule_timezone",
            "is required with windows",
        );
        refused(
            &with_spool("\n[spools.orders.to.mirror]\nkey = \"{id}\""),
            "spools.orders.to.mirror",
            "is not one of this spool's destinations",
        );
        refused(
            &with_spool("to = 3"),
            "spools.orders.to",
            "expected a table",
        );
    }
}
