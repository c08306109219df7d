//! A spool: the watched folder, which files in it, when a file is finished, its key
//! template, what happens to the source after upload, its output format and manifests.

use globset::{Glob, GlobSet, GlobSetBuilder};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::keys;
use super::manifest;
use super::output;
use super::reader::{Problems, Section};
use super::resolve;
use super::route::{self, Route};
use super::schedule::ScheduleSetting;
use crate::key::KeyTemplate;

const SPOOL_DEFAULT_KEY: &str = "{spool}/{yyyy}/{mm}/{dd}/{stem}-{timestamp}-{id}.{ext}";

/// What happens to a source file once S3 has confirmed its object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterUpload {
    Delete,
    Archive(PathBuf),
    Keep,
}

/// A watched directory and how its files are delivered.
#[derive(Debug, Clone)]
pub struct Spool {
    pub name: String,
    /// The spool's folder: `path` made absolute, then in canonical form once the daemon
    /// has resolved it (see `daemon::prepare_spools`).
    pub path: PathBuf,
    /// `path` as the config says it, made absolute but not resolved: the same words that
    /// lead to another folder than last time mean the file system changed, not the config.
    pub configured_path: PathBuf,
    /// `None` means every file.
    pub include: Option<GlobSet>,
    pub exclude: GlobSet,
    pub settle: Duration,
    pub after_upload: AfterUpload,
    /// When it may send (`windows`, `deliver_every`); its destination's windows apply too.
    pub schedule: ScheduleSetting,
    /// Where its files go and in which shape: one route per destination, in the config's
    /// order (today exactly one).
    pub routes: Vec<Route>,
}

impl Spool {
    /// Its only route: a spool has one destination until fan-out lands (the config
    /// refuses more), and the callers of this are the places that will fan out.
    pub fn only_route(&self) -> &Route {
        &self.routes[0]
    }
}

fn globs(p: &mut Problems, key: String, patterns: &[&str]) -> Option<GlobSet> {
    let mut builder = GlobSetBuilder::new();
    let mut ok = true;
    for pattern in patterns {
        match Glob::new(pattern) {
            Ok(glob) => {
                builder.add(glob);
            }
            Err(e) => {
                p.add(key.clone(), format!("bad glob {pattern:?}: {}", e.kind()));
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    builder.build().map_err(|e| p.add(key, e.to_string())).ok()
}

pub(super) fn parse(
    p: &mut Problems,
    path: &str,
    name: &str,
    table: &toml::Table,
    base: &Path,
    root: &toml::Table,
) -> Option<Spool> {
    let mut s = Section::new(path, table);
    let dir = s.required_string(p, "path").map(|d| resolve(base, d));
    let destinations = destinations(p, &mut s, root);
    // `None`: not given (every file); `Some(None)`: given but broken (already reported).
    let include = s
        .strings(p, "include")
        .map(|list| globs(p, s.key("include"), &list));
    let exclude_list = s.strings(p, "exclude").unwrap_or_default();
    let exclude = globs(p, s.key("exclude"), &exclude_list);
    let settle = s.duration(p, "settle").unwrap_or(Duration::from_secs(5));
    let key_text = s.string(p, "key").unwrap_or(SPOOL_DEFAULT_KEY);
    let key = KeyTemplate::parse(key_text)
        .map_err(|e| p.add(s.key("key"), e))
        .ok();
    let key_rules = keys::parse(p, &mut s);
    let schedule = super::schedule::parse(p, &mut s, true);
    let output = output::output(p, &mut s, base, None);
    let mut manifest = manifest::manifest(p, &mut s, None);
    let cadence = schedule.deliver_every.is_some();
    if cadence {
        manifest::for_cadence(p, &s, table, &mut manifest);
    }
    let mode = s.string(p, "after_upload").unwrap_or("delete");
    let archive_dir = s.string(p, "archive_dir").map(|d| resolve(base, d));
    let after_upload = match (mode, archive_dir) {
        ("delete", None) => Some(AfterUpload::Delete),
        ("keep", None) => Some(AfterUpload::Keep),
        ("archive", Some(dir)) => Some(AfterUpload::Archive(dir)),
        ("archive", None) => {
            p.add(
                s.key("archive_dir"),
                "is required with after_upload = \"archive\"",
            );
            None
        }
        ("delete" | "keep", Some(_)) => {
            p.add(
                s.key("archive_dir"),
                "is only used with after_upload = \"archive\"",
            );
            None
        }
        (other, _) => {
            p.add(
                s.key("after_upload"),
                format!("{other:?} is not one of delete, archive, keep"),
            );
            None
        }
    };
    let to = s.table(p, "to");
    s.finish(p);
    // The spool's own settings, which its routes take unless their `to` table says
    // otherwise (stand-ins where the spool's are broken: the routes' problems are still
    // reported, and the spool is refused all the same).
    let own = Route {
        destination: String::new(),
        key: key
            .clone()
            .unwrap_or_else(|| KeyTemplate::parse(SPOOL_DEFAULT_KEY).expect("default parses")),
        output: output.clone().unwrap_or_default(),
        manifest: manifest.clone().flatten(),
        key_rules,
        windows: None,
        send_windows: Vec::new(),
    };
    let routes = route::routes(p, &s, to, destinations.as_deref()?, base, &own, cadence);
    let include = match include {
        None => None,
        Some(set) => Some(set?),
    };
    let dir = dir?;
    // The routes took stand-ins for whatever of the spool's own is broken.
    if key.is_none() || output.is_none() || manifest.is_none() {
        return None;
    }
    Some(Spool {
        name: name.to_string(),
        configured_path: dir.clone(),
        path: dir,
        include,
        exclude: exclude?,
        settle,
        after_upload: after_upload?,
        schedule,
        routes: routes?,
    })
}

/// `destination`: one name or a list, each of a `[destinations.NAME]` table, none twice.
fn destinations(p: &mut Problems, s: &mut Section, root: &toml::Table) -> Option<Vec<String>> {
    if !s.take("destination") {
        p.add(s.key("destination"), "is required");
        return None;
    }
    let names = s.string_or_strings(p, "destination")?;
    let before = p.0.len();
    if names.is_empty() {
        p.add(
            s.key("destination"),
            "names no destination: give one, or a list of them",
        );
    }
    let defined = root.get("destinations").and_then(|v| v.as_table());
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            p.add(s.key("destination"), format!("names {name:?} twice"));
        } else if !defined.is_some_and(|t| t.contains_key(*name)) {
            p.add(
                s.key("destination"),
                format!("no [destinations.{name}] table is defined"),
            );
        }
    }
    if names.len() > 1 && p.0.len() == before {
        p.add(
            s.key("destination"),
            "one spool to several destinations is not available in this version yet: name one destination (a spool per destination, on folders of their own, does it meanwhile)",
        );
    }
    (p.0.len() == before).then(|| names.iter().map(|n| n.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use crate::config::tests::*;

    #[test]
    fn spool_rules() {
        refused(
            &with_spool("settle = \"5\""),
            "spools.orders.settle",
            "not a duration",
        );
        refused(
            &with_spool("include = [\"[\"]"),
            "spools.orders.include",
            "bad glob",
        );
        refused(
            &with_spool("key = \"{spool}/{date}.csv\""),
            "spools.orders.key",
            "overwrite",
        );
        refused(
            &with_spool("key = \"{spool}/{month}/{id}\""),
            "spools.orders.key",
            "unknown placeholder {month}",
        );
        refused(
            &with_spool("after_upload = \"shred\""),
            "spools.orders.after_upload",
            "not one of",
        );
        refused(
            &with_spool("after_upload = \"archive\""),
            "spools.orders.archive_dir",
            "is required",
        );
        refused(
            &with_spool("archive_dir = \"/a\""),
            "spools.orders.archive_dir",
            "only used with",
        );
        refused(
            &with_spool("after_upload = \"archive\"\narchive_dir = \"/var/spool/orders/done\""),
            "spools.orders.archive_dir",
            "outside every spool",
        );
        let no_path = BASE_SPOOL.replace("path = \"/var/spool/orders\"", "");
        refused(
            &format!("{BASE_DEST}{no_path}"),
            "spools.orders.path",
            "is required",
        );
    }
}
