//! Keys safe for downstream tools (`sanitize_keys`, `max_key_length`): loaders such as
//! Stitch's, Athena and Spark refuse keys with spaces or special characters, or longer than
//! 500 characters. Only the parts of a key that come from file names and paths (`{path}`,
//! `{dir}`, `{name}`, `{stem}`, `{ext}`) are changed: the operator wrote the rest.
//!
//! Two names may sanitise or shorten alike, so the config requires `{id}` or `{uuid}` in
//! the template when either rule is on: every row still gets a key of its own.

/// Characters a strict key keeps: `[A-Za-z0-9/._-]`.
pub fn is_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-')
}

/// What is done to the file-derived parts of a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRules {
    /// `Some(r)` (`sanitize_keys = "strict"`): each character outside
    /// `[A-Za-z0-9/._-]` becomes `r`.
    pub replace_unsafe: Option<String>,
    /// The whole key is at most this many characters: file-derived parts are cut from
    /// their end, the longest first, the extension last.
    pub max_chars: Option<usize>,
}

impl KeyRules {
    /// Whether any rule is on.
    pub fn any(&self) -> bool {
        self.replace_unsafe.is_some() || self.max_chars.is_some()
    }

    /// A file-derived part with unsafe characters replaced.
    pub fn clean(&self, text: &str) -> String {
        match &self.replace_unsafe {
            None => text.to_string(),
            Some(with) => {
                let mut out = String::with_capacity(text.len());
                for c in text.chars() {
                    if is_safe(c) {
                        out.push(c);
                    } else {
                        out.push_str(with);
                    }
                }
                out
            }
        }
    }
}

/// A replacement `sanitize_replacement` may be: 1 to 8 of `[A-Za-z0-9_-]` (no `.` or `/`,
/// which could make `..` segments or folders, and not empty, which would delete characters
/// and could leave a folder named `.` or none at all).
pub fn check_replacement(text: &str) -> Result<(), String> {
    if text.is_empty() || text.chars().count() > 8 {
        return Err("must be 1 to 8 characters".into());
    }
    if let Some(c) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "{c:?} is not allowed: use letters, digits, '_' or '-' (a strict key keeps only [A-Za-z0-9/._-])"
        ));
    }
    Ok(())
}

/// One piece of a key being rendered.
pub(super) struct Piece {
    pub text: String,
    /// Came from the file's name or path: may be cut to fit `max_chars`.
    pub from_file: bool,
    pub is_ext: bool,
}

impl Piece {
    /// Text the operator wrote, or a value not from the file: never changed.
    pub fn fixed(text: &str) -> Piece {
        Piece {
            text: text.to_string(),
            from_file: false,
            is_ext: false,
        }
    }
}

/// Cuts file-derived pieces until `joined(pieces)` is at most `max` characters: the
/// longest piece down to the next longest, so a long folder and a long name both keep
/// their beginnings; the extension only when nothing else is left. `Err` with the
/// shortest length reachable when the operator's own parts are already too long.
pub(super) fn shorten(
    pieces: &mut [Piece],
    max: usize,
    joined: impl Fn(&[Piece]) -> String,
) -> Result<(), usize> {
    loop {
        let len = joined(pieces).chars().count();
        if len <= max {
            return Ok(());
        }
        let excess = len - max;
        // The candidates: names and folders, else the extension.
        let lengths = |ext: bool| -> Vec<(usize, usize)> {
            pieces
                .iter()
                .enumerate()
                .filter(|(_, p)| p.from_file && p.is_ext == ext && !p.text.is_empty())
                .map(|(i, p)| (p.text.chars().count(), i))
                .collect()
        };
        let mut candidates = lengths(false);
        if candidates.is_empty() {
            candidates = lengths(true);
        }
        candidates.sort();
        let Some(&(longest, i)) = candidates.last() else {
            return Err(len);
        };
        let next = candidates.iter().rev().nth(1).map_or(0, |(n, _)| *n);
        let cut = excess.min(longest - next).max(1);
        let piece = &mut pieces[i].text;
        *piece = piece.chars().take(longest - cut).collect();
        // A cut never leaves a folder's slash or a dot at the end: no trailing '/', no
        // '.' segment from a hidden name, no dangling dot before an extension.
        while piece.ends_with(['/', '.']) {
            piece.pop();
        }
        if pieces[i].is_ext && pieces[i].text.is_empty() {
            if let Some(before) = pieces[..i].iter_mut().rev().find(|p| !p.text.is_empty()) {
                if before.text.ends_with('.') && !before.from_file {
                    before.text.pop();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_replaces_everything_outside_the_safe_set() {
        let rules = KeyRules {
            replace_unsafe: Some("_".into()),
            max_chars: None,
        };
        assert_eq!(
            rules.clean("Q3 report (final)!@#$%^&*.csv"),
            "Q3_report__final_________.csv"
        );
        assert_eq!(rules.clean("dir/sub dir/ünï.csv"), "dir/sub_dir/_n_.csv");
        assert_eq!(rules.clean("safe/a-b_c.d"), "safe/a-b_c.d");
        let none = KeyRules::default();
        assert_eq!(none.clean("a b"), "a b");
    }

    #[test]
    fn replacements_cannot_make_folders_or_dot_segments() {
        assert!(check_replacement("_").is_ok());
        assert!(
            check_replacement("").is_err(),
            "deleting could leave '.' folders"
        );
        assert!(check_replacement("-x-").is_ok());
        assert!(check_replacement(".").is_err());
        assert!(check_replacement("/").is_err());
        assert!(check_replacement(" ").is_err());
        assert!(check_replacement("123456789").is_err());
    }

    fn piece(text: &str, from_file: bool, is_ext: bool) -> Piece {
        Piece {
            text: text.into(),
            from_file,
            is_ext,
        }
    }

    fn joined(pieces: &[Piece]) -> String {
        pieces.iter().map(|p| p.text.as_str()).collect()
    }

    #[test]
    fn shortening_cuts_the_longest_file_part_first_and_the_extension_last() {
        let mut pieces = vec![
            piece("fixed/", false, false),
            piece("aaaaaaaaaa", true, false),
            piece("/", false, false),
            piece("bbbb", true, false),
            piece("-42.", false, false),
            piece("csv", true, true),
        ];
        shorten(&mut pieces, 20, joined).unwrap();
        assert_eq!(
            joined(&pieces),
            "fixed/aaa/bbb-42.csv",
            "both keep their start"
        );
        shorten(&mut pieces, 14, joined).unwrap();
        assert_eq!(
            joined(&pieces),
            "fixed//-42.csv",
            "every name part before the extension"
        );
        // The operator's own parts are longer than the limit: the length they leave.
        assert_eq!(
            shorten(&mut pieces, 9, joined),
            Err(10),
            "the dot went with the extension"
        );
        let mut pieces = vec![piece("fixed/", false, false), piece("x.csv", true, true)];
        shorten(&mut pieces, 8, joined).unwrap();
        assert_eq!(joined(&pieces), "fixed/x", "no dangling dot");
    }

    #[test]
    fn a_cut_never_ends_in_a_slash_or_a_dot_segment() {
        // {id}/{path}: the path cut inside a folder name's slash.
        let mut pieces = vec![
            piece("42/", false, false),
            piece("aa/.hidden/bbbb.csv", true, false),
        ];
        shorten(&mut pieces, 7, joined).unwrap();
        assert_eq!(joined(&pieces), "42/aa", "not 42/aa/ or 42/aa/.");
        // An extension cut to nothing takes the template's dot with it.
        let mut pieces = vec![
            piece("p/", false, false),
            piece("n", true, false),
            piece("-42.", false, false),
            piece("csvx", true, true),
        ];
        shorten(&mut pieces, 6, joined).unwrap();
        assert_eq!(joined(&pieces), "p/-42");
    }
}
