//! A spool: the watched folder, which files in it, when a file is finished, its key
//! template, what happens to the source after upload, its output format and manifests.

use globset::{Glob, GlobSet, GlobSetBuilder};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::keys::{self, KeyRulesSetting};
use super::manifest::{self, ManifestSettings};
use super::output;
use super::reader::{Problems, Section};
use super::resolve;
use super::schedule::ScheduleSetting;
use crate::key::KeyTemplate;
use crate::transcode::Output;

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
    pub destination: String,
    /// `None` means every file.
    pub include: Option<GlobSet>,
    pub exclude: GlobSet,
    pub settle: Duration,
    pub key: KeyTemplate,
    pub after_upload: AfterUpload,
    /// What is delivered: the bytes as they are, or a conversion of them.
    pub output: Output,
    /// Deliveries are grouped into batches, each closed by a manifest.
    pub manifest: Option<ManifestSettings>,
    /// Its own key sanitising and length, over its destination's (applied to `key`
    /// once both are read).
    pub key_rules: KeyRulesSetting,
    /// When it may send (`windows`, `deliver_every`); its destination's windows apply too.
    pub schedule: ScheduleSetting,
    /// The windows it sends within: its own and its destination's (made at load, once
    /// both are read). Empty: any time.
    pub send_windows: Vec<crate::schedule::Windows>,
}

impl Spool {
    /// The windows it sends within, as the schedule reads them.
    pub fn windows(&self) -> Vec<&crate::schedule::Windows> {
        self.send_windows.iter().collect()
    }

    /// The object key of row `id`, for the file at `rel_path` queued at `time`: rendered
    /// once, when the row is made, and stored with it.
    pub fn object_key(
        &self,
        prefix: &str,
        host: &str,
        rel_path: &str,
        id: i64,
        time: chrono::DateTime<chrono::Utc>,
    ) -> Result<String, String> {
        let input = crate::key::KeyInput {
            spool: &self.name,
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
    let destination = s.required_string(p, "destination").map(str::to_string);
    if let Some(d) = &destination {
        let known = root
            .get("destinations")
            .and_then(|v| v.as_table())
            .is_some_and(|t| t.contains_key(d));
        if !known {
            p.add(
                s.key("destination"),
                format!("no [destinations.{d}] table is defined"),
            );
        }
    }
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
    let output = output::output(p, &mut s, base);
    let mut manifest = manifest::manifest(p, &mut s);
    if schedule.deliver_every.is_some() {
        // A batch is a tick's files: it closes when they are all delivered, not by age,
        // and is not split at the default count.
        if table.contains_key("manifest_every") {
            p.add(
                s.key("manifest_every"),
                "is not used with deliver_every: a batch closes once its tick's files are all delivered",
            );
        }
        if let Some(Some(settings)) = manifest.as_mut() {
            if !table.contains_key("manifest_max_files") {
                settings.max_files = manifest::MAX_FILES;
            }
        }
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
    s.finish(p);
    let include = match include {
        None => None,
        Some(set) => Some(set?),
    };
    let dir = dir?;
    Some(Spool {
        name: name.to_string(),
        configured_path: dir.clone(),
        path: dir,
        destination: destination?,
        include,
        exclude: exclude?,
        settle,
        key: key?,
        after_upload: after_upload?,
        output: output?,
        manifest: manifest?,
        key_rules,
        schedule,
        send_windows: Vec::new(),
    })
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
