//! Which files in a spool are delivered.

use crate::config::Spool;

/// Suffixes that mark files still being written by common tools.
const IN_PROGRESS_SUFFIXES: &[&str] = &[".tmp", ".part", ".partial"];

/// True when a directory (path relative to the spool) should be walked: hidden ones are not.
pub fn walk_dir(name: &str) -> bool {
    !name.starts_with('.')
}

/// True when the file at `rel` (relative to the spool, `/`-separated) should be delivered:
/// not hidden, not a temporary name, matched by `include` (if given) and not by `exclude`.
pub fn wanted(spool: &Spool, rel: &str) -> bool {
    if rel.split('/').any(|segment| segment.starts_with('.')) {
        return false;
    }
    if IN_PROGRESS_SUFFIXES.iter().any(|s| rel.ends_with(s)) {
        return false;
    }
    if let Some(include) = &spool.include {
        if !include.is_match(rel) {
            return false;
        }
    }
    !spool.exclude.is_match(rel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn spool(extra: &str) -> std::sync::Arc<Spool> {
        let text = format!(
            r#"
            [destinations.d]
            bucket = "s3://bucket"
            auth = {{ mode = "static", access_key_id = "a", secret_access_key = "s" }}
            [spools.s]
            path = "/spool"
            destination = "d"
            {extra}
            "#
        );
        Config::parse(&text, Path::new("/etc/x.toml"))
            .unwrap()
            .spools["s"]
            .clone()
    }

    #[test]
    fn hidden_and_temporary_files_are_always_skipped() {
        let s = spool("");
        assert!(wanted(&s, "a.csv"));
        assert!(wanted(&s, "sub/dir/a b+é.csv"));
        for skipped in [
            ".a.csv",
            "sub/.x/a.csv",
            "a.csv.tmp",
            "a.part",
            "x/a.partial",
        ] {
            assert!(!wanted(&s, skipped), "{skipped}");
        }
        assert!(!walk_dir(".git"));
        assert!(walk_dir("sub"));
    }

    #[test]
    fn include_and_exclude_globs_apply_to_the_relative_path() {
        let s = spool(
            r#"include = ["*.csv"]
                         exclude = ["archive/**"]"#,
        );
        assert!(wanted(&s, "a.csv"));
        assert!(wanted(&s, "nested/b.csv"), "* crosses directories");
        assert!(!wanted(&s, "a.json"));
        assert!(!wanted(&s, "archive/old.csv"));
    }
}
