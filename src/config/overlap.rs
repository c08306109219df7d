//! Where spools may be: no spool inside another or holding `state_dir`, no archive inside a
//! spool or holding one. Checked on the paths as written at load, and again once symlinks are resolved
//! (the daemon, before it watches anything).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::reader::Problems;
use super::{AfterUpload, Spool};

/// [`check_spool_overlaps`] again once symlinks are resolved (a spool, an archive_dir or
/// the state_dir reached through a symlink may land inside a spool that its configured
/// path does not name). Spool roots must be in canonical form already; the other folders
/// are resolved as far as they exist. Returns "key: message" for each overlap.
pub fn overlaps_after_resolving(
    spools: &BTreeMap<String, Arc<Spool>>,
    state_dir: &Path,
) -> Vec<String> {
    let resolved: BTreeMap<String, Arc<Spool>> = spools
        .iter()
        .map(|(name, spool)| {
            let mut spool = Spool::clone(spool);
            if let AfterUpload::Archive(dir) = &spool.after_upload {
                spool.after_upload = AfterUpload::Archive(resolve_existing(dir));
            }
            (name.clone(), Arc::new(spool))
        })
        .collect();
    let mut p = Problems::default();
    check_spool_overlaps(&mut p, &resolved, &resolve_existing(state_dir));
    p.0.into_iter()
        .map(|problem| {
            format!(
                "{}: {} (after resolving symlinks)",
                problem.key, problem.message
            )
        })
        .collect()
}

/// `path` with its longest existing ancestor in canonical form.
fn resolve_existing(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut at = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(at) {
            return missing.iter().rev().fold(real, |acc, name| acc.join(name));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_os_string());
                at = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Spools must not nest in each other, and nothing s3spool writes may land inside a spool,
/// or files would be delivered twice or forever.
pub(super) fn check_spool_overlaps(
    p: &mut Problems,
    spools: &BTreeMap<String, Arc<Spool>>,
    state_dir: &Path,
) {
    for (name, spool) in spools {
        for (other_name, other) in spools {
            if name < other_name
                && (spool.path.starts_with(&other.path) || other.path.starts_with(&spool.path))
            {
                p.add(
                    format!("spools.{other_name}.path"),
                    format!(
                        "overlaps spools.{name}.path ({}); spools must not nest",
                        spool.path.display()
                    ),
                );
            }
        }
        if let AfterUpload::Archive(dir) = &spool.after_upload {
            if let Some(holder) = spools.values().find(|s| dir.starts_with(&s.path)) {
                p.add(
                    format!("spools.{name}.archive_dir"),
                    format!(
                        "must be outside every spool (it is inside spools.{}.path), or archived files would be delivered again",
                        holder.name
                    ),
                );
            }
            if let Some(held) = spools.values().find(|s| s.path.starts_with(dir)) {
                p.add(
                    format!("spools.{name}.archive_dir"),
                    format!(
                        "must hold no spool (spools.{}.path is inside it), or archived files would land in a spool and be delivered again",
                        held.name
                    ),
                );
            }
        }
        if state_dir.starts_with(&spool.path) {
            p.add("state_dir", format!("must be outside spools.{name}.path"));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::*;

    #[test]
    fn archive_dir_must_be_outside_every_spool() {
        let text = format!(
            "{BASE_DEST}{BASE_SPOOL}after_upload = \"archive\"\narchive_dir = \"/var/spool/other/done\"\n[spools.other]\npath = \"/var/spool/other\"\ndestination = \"lake\"\n"
        );
        refused(
            &text,
            "spools.orders.archive_dir",
            "inside spools.other.path",
        );
    }

    #[test]
    fn archive_dir_must_hold_no_spool() {
        let text = format!(
            "{BASE_DEST}{BASE_SPOOL}after_upload = \"archive\"\narchive_dir = \"/var/spool\"\n[spools.other]\npath = \"/var/spool/other\"\ndestination = \"lake\"\n"
        );
        refused(
            &text,
            "spools.orders.archive_dir",
            "must hold no spool (spools.orders.path is inside it)",
        );
    }

    #[test]
    fn spools_must_not_nest_or_hold_the_state_dir() {
        let nested = format!("{BASE_DEST}{BASE_SPOOL}[spools.inner]\npath = \"/var/spool/orders/inner\"\ndestination = \"lake\"\n");
        refused(&nested, "spools.orders.path", "overlaps spools.inner.path");
        let state = format!("state_dir = \"/var/spool/orders/.state\"\n{BASE_DEST}{BASE_SPOOL}");
        refused(&state, "state_dir", "outside spools.orders.path");
    }

    #[test]
    fn overlaps_are_checked_again_with_symlinks_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("spool/inner")).unwrap();
        // Both look outside the spool by name, and both lead inside it.
        std::os::unix::fs::symlink(root.join("spool/inner"), root.join("state-link")).unwrap();
        std::os::unix::fs::symlink(root.join("spool"), root.join("archive-link")).unwrap();
        let text = format!(
            "state_dir = \"{root}/state-link/state\"\n{BASE_DEST}\
             [spools.orders]\npath = \"{root}/spool\"\ndestination = \"lake\"\n\
             after_upload = \"archive\"\narchive_dir = \"{root}/archive-link/done\"\n",
            root = root.display()
        );
        let config = parse(&text).expect("by name, nothing overlaps");
        let found = crate::config::overlaps_after_resolving(&config.spools, &config.state_dir);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found[0].starts_with("spools.orders.archive_dir: must be outside every spool"));
        assert!(found[1].starts_with("state_dir: must be outside spools.orders.path"));
    }
}
