//! The import check CI runs (`scripts/import-cycles.py`): it must see a circle wherever
//! production code makes one, after a test module, through a `use` group or an inline path,
//! and must not take test code (which may look anywhere) or text in strings for imports.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::output_text;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/import-cycles.py")
}

/// Runs the check on `src` (`--top` too when asked) and returns (circle found, output).
fn check(src: &Path, top: bool) -> (bool, String) {
    let mut command = Command::new("python3");
    command.arg(script()).arg("--src").arg(src);
    if top {
        command.arg("--top");
    }
    let out = command.output().unwrap();
    let text = output_text(&out);
    match out.status.code() {
        Some(0) => (false, text),
        Some(1) => (true, text),
        _ => panic!("the check itself failed: {text}"),
    }
}

/// A tree of files under a temporary `src`.
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join("src").join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

#[test]
fn the_tree_as_it_is_has_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for top in [false, true] {
        let (circle, text) = check(&src, top);
        assert!(!circle, "{text}");
        assert!(text.contains("no import circles"), "{text}");
    }
}

#[test]
fn a_circle_planted_after_a_test_module_fails_the_check() {
    // The real tree, with s3/ (whose mod.rs opens with test-only items) naming upload/,
    // which names s3/.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let copy = Command::new("cp")
        .arg("-r")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
        .arg(&src)
        .status()
        .unwrap();
    assert!(copy.success());
    let s3 = src.join("s3/mod.rs");
    let mut text = std::fs::read_to_string(&s3).unwrap();
    text.push_str(
        "\npub fn planted() -> usize { std::mem::size_of::<crate::upload::Lasting>() }\n",
    );
    std::fs::write(&s3, text).unwrap();
    for top in [false, true] {
        let (circle, text) = check(&src, top);
        assert!(circle, "{text}");
        let line = text.lines().find(|l| l.starts_with("circle")).unwrap();
        assert!(line.contains("s3") && line.contains("upload"), "{text}");
    }
}

#[test]
fn test_code_and_strings_are_no_imports_and_groups_and_child_paths_are() {
    let lib = ("lib.rs", "mod a;\nmod b;\nmod c;\n");
    let a = ("a.rs", "use crate::b::B;\npub struct A;\n");
    // b names a only in test code: a test module holding a `}` in a string and a char, a
    // test-only file, a test-only function, and a comment.
    let b_tests = "pub struct B;\n\
        // crate::a::A in a comment\n\
        #[cfg(test)]\n\
        mod tests {\n    const CLOSE: &str = \"}\";\n    const C: char = '}';\n    use crate::a::A;\n}\n\
        #[cfg(test)]\n#[allow(dead_code)]\nfn helper() -> Option<crate::a::A> { None }\n\
        #[cfg(test)]\nmod more;\n\
        pub fn text() -> &'static str { r#\"crate::a::A }\"# }\n";
    let more = ("b/more.rs", "use crate::a::A;\n");
    let clean = tree(&[lib, a, ("b.rs", b_tests), more]);
    for top in [false, true] {
        let (circle, text) = check(&clean.path().join("src"), top);
        assert!(!circle, "{text}");
    }

    // The same file with one line of production code after its tests: a circle.
    let planted = format!("{b_tests}pub fn planted() -> Option<crate::a::A> {{ None }}\n");
    let dir = tree(&[lib, a, ("b.rs", &planted), more]);
    let (circle, text) = check(&dir.path().join("src"), false);
    assert!(circle && text.contains("circle of 2: a, b"), "{text}");

    // Through a `use` group with `self`, and through inline `super::` paths of siblings.
    let grouped = tree(&[
        lib,
        a,
        ("b.rs", "use crate::{c::C, a::{self, A}};\npub struct B;\n"),
        ("c.rs", "pub struct C;\n"),
    ]);
    let (circle, text) = check(&grouped.path().join("src"), false);
    assert!(circle && text.contains("circle of 2: a, b"), "{text}");
    let child = tree(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        ("a/mod.rs", "mod x;\nmod y;\npub struct A;\n"),
        ("a/x.rs", "use super::y::Y;\npub struct X;\n"),
        (
            "a/y.rs",
            "pub struct Y;\npub fn f() -> Option<super::x::X> { None }\n",
        ),
        ("b.rs", "pub struct B;\n"),
    ]);
    let (circle, text) = check(&child.path().join("src"), false);
    assert!(circle && text.contains("circle of 2: a::x, a::y"), "{text}");
    // A module and its own children are one room: a child naming its parent is no circle.
    let split = tree(&[
        ("lib.rs", "mod a;\n"),
        (
            "a/mod.rs",
            "mod gates;\nuse gates::Gate;\npub struct Uploader;\n",
        ),
        ("a/gates.rs", "use super::Uploader;\npub struct Gate;\n"),
    ]);
    let (circle, text) = check(&split.path().join("src"), false);
    assert!(!circle, "{text}");
}

/// Every "now" passes through src/clock.rs: the wall clock, the schedule clock and the
/// time files are compared with. (tokio's and std's monotonic `Instant` are no "now" of
/// the wall: timers and leases of a task keep them.)
#[test]
fn every_now_of_the_wall_goes_through_the_clock_room() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.clone()];
    let mut found = Vec::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("src/clock.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap();
            for now in [
                "Utc::now(",
                "Local::now(",
                "SystemTime::now(",
                "S3SPOOL_SCHEDULE_CLOCK",
            ] {
                if code.contains(now) {
                    found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "reads the time itself:\n{}",
        found.join("\n")
    );
}
