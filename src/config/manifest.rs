//! A spool's manifest keys: `manifest`, `manifest_every`, `manifest_max_files` and
//! `manifest_key`.

use std::time::Duration;

use super::reader::{Problems, Section};
use crate::key::{ManifestKey, DEFAULT_MANIFEST_KEY};

/// A spool's manifest settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestSettings {
    /// A batch closes this long after it opened…
    pub every: Duration,
    /// …or once it holds this many files, whichever comes first.
    pub max_files: u64,
    /// Where manifests go, under the destination prefix.
    pub key: ManifestKey,
}

/// The most files one manifest lists: 100000 make about 50 MB of JSON, built in memory.
pub(super) const MAX_FILES: u64 = 100_000;

const MANIFEST_SETTINGS: [&str; 3] = ["manifest_every", "manifest_max_files", "manifest_key"];

/// `Some(None)`: no manifests; `None`: a problem was reported. A route's section
/// (`inherit` is then its spool's settings) without `manifest` keeps the spool's.
pub(super) fn manifest(
    p: &mut Problems,
    s: &mut Section<'_>,
    inherit: Option<&Option<ManifestSettings>>,
) -> Option<Option<ManifestSettings>> {
    let before = p.0.len();
    let own_manifest = |s: &mut Section<'_>, p: &mut Problems| {
        s.leads(p, "manifest", &MANIFEST_SETTINGS,
            "is taken with manifest: set manifest here too (without it, the spool's manifest settings apply)")
    };
    if let Some(spool) = inherit.filter(|_| !own_manifest(s, p)) {
        return (p.0.len() == before).then(|| spool.clone());
    }
    let enabled = s.bool(p, "manifest").unwrap_or(false);
    let every = s.duration(p, "manifest_every");
    let max_files = s.integer(p, "manifest_max_files");
    let key = s.string(p, "manifest_key");
    if !enabled {
        for (present, name) in [
            (every.is_some(), "manifest_every"),
            (max_files.is_some(), "manifest_max_files"),
            (key.is_some(), "manifest_key"),
        ] {
            if present {
                p.add(s.key(name), "is only used with manifest = true");
            }
        }
        return (p.0.len() == before).then_some(None);
    }
    let every = every.unwrap_or(Duration::from_secs(300));
    if every < Duration::from_secs(1) {
        p.add(s.key("manifest_every"), "must be at least 1s");
    }
    let max_files = max_files.unwrap_or(1000);
    if !(1..=MAX_FILES as i64).contains(&max_files) {
        p.add(
            s.key("manifest_max_files"),
            format!("must be between 1 and {MAX_FILES}"),
        );
    }
    let key = ManifestKey::parse(key.unwrap_or(DEFAULT_MANIFEST_KEY))
        .map_err(|e| p.add(s.key("manifest_key"), e))
        .ok();
    if p.0.len() != before {
        return None;
    }
    Some(Some(ManifestSettings {
        every,
        max_files: max_files as u64,
        key: key?,
    }))
}

/// With a batch cadence (`deliver_every`), a batch is a tick's files: it closes when
/// they are all delivered, not by age, and is not split at the default count.
pub(super) fn for_cadence(
    p: &mut Problems,
    s: &Section<'_>,
    table: &toml::Table,
    manifest: &mut Option<Option<ManifestSettings>>,
) {
    if table.contains_key("manifest_every") {
        p.add(
            s.key("manifest_every"),
            "is not used with deliver_every: a batch closes once its tick's files are all delivered",
        );
    }
    if let Some(Some(settings)) = manifest.as_mut() {
        if !table.contains_key("manifest_max_files") {
            settings.max_files = MAX_FILES;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::*;
    use crate::config::*;

    #[test]
    fn manifest_rules() {
        let config = parse(&with_spool(
            "manifest = true\nmanifest_every = \"1m\"\nmanifest_max_files = 10\nmanifest_key = \"m/{batch}.json\"",
        ))
        .unwrap();
        let m = config.spools["orders"]
            .only_route()
            .manifest
            .as_ref()
            .unwrap();
        assert_eq!((m.every, m.max_files), (Duration::from_secs(60), 10));
        let default = parse(&with_spool("manifest = true")).unwrap();
        let m = default.spools["orders"]
            .only_route()
            .manifest
            .as_ref()
            .unwrap();
        assert_eq!((m.every, m.max_files), (Duration::from_secs(300), 1000));
        assert!(parse(&with_spool("")).unwrap().spools["orders"]
            .only_route()
            .manifest
            .is_none());
        refused(
            &with_spool("manifest_every = \"1m\""),
            "spools.orders.manifest_every",
            "only used with manifest = true",
        );
        refused(
            &with_spool("manifest = true\nmanifest_key = \"m/{spool}.json\""),
            "spools.orders.manifest_key",
            "must contain {batch}",
        );
        refused(
            &with_spool("manifest = true\nmanifest_max_files = 0"),
            "spools.orders.manifest_max_files",
            "between 1 and 100000",
        );
    }
}
