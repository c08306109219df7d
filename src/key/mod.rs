//! Object key templates: parsed and checked once at config load, rendered once per file
//! when it is queued (the rendered key is stored in the queue, so every retry reuses it).
//!
//! Rendering is pure: everything that varies (queue id, time, uuid, host) comes in through
//! [`KeyInput`], so keys are testable without clocks or file systems.

mod manifest;
mod rules;

pub use manifest::{ManifestKey, ManifestKeyInput, DEFAULT_MANIFEST_KEY};
pub use rules::{check_replacement, KeyRules};

use rules::Piece;

use chrono::{DateTime, Datelike, Timelike, Utc};

/// S3's limit on the length of an object key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// Placeholders a template may use, in the order the README lists them.
pub const PLACEHOLDERS: &[&str] = &[
    "spool",
    "host",
    "path",
    "dir",
    "name",
    "stem",
    "ext",
    "id",
    "uuid",
    "yyyy",
    "mm",
    "dd",
    "HH",
    "MM",
    "SS",
    "date",
    "timestamp",
    "epoch",
];

/// Placeholders of which a template needs at least one, so two files never share a key.
const DISTINCT: &[&str] = &["id", "uuid", "path", "name"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Placeholder(&'static str),
}

/// A parsed key template such as `{spool}/{yyyy}/{mm}/{dd}/{stem}-{timestamp}-{id}.{ext}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    parts: Vec<Part>,
    /// Sanitising and shortening of the file-derived parts (none by default).
    rules: KeyRules,
}

/// Everything a key may be built from.
#[derive(Debug, Clone)]
pub struct KeyInput<'a> {
    pub spool: &'a str,
    pub host: &'a str,
    /// Path relative to the spool, `/`-separated.
    pub rel_path: &'a str,
    pub id: i64,
    pub uuid: uuid::Uuid,
    /// When the file was queued.
    pub time: DateTime<Utc>,
    /// What `{ext}` becomes when the spool converts files.
    pub ext: ExtRule,
}

/// How a conversion changes the source's extension for `{ext}`: an extension in place of
/// the source's (`csv` → `parquet`), then suffixes after it (`csv` → `csv.gz.gpg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExtRule {
    pub replace: Option<&'static str>,
    /// Appended with a dot; empty for none.
    pub suffix: &'static str,
}

impl ExtRule {
    #[cfg(test)]
    /// The source's extension as it is.
    pub const KEEP: ExtRule = ExtRule {
        replace: None,
        suffix: "",
    };

    pub fn apply(self, ext: &str) -> String {
        let base = self.replace.unwrap_or(ext);
        match (base.is_empty(), self.suffix.is_empty()) {
            (_, true) => base.to_string(),
            (true, false) => self.suffix.to_string(),
            (false, false) => format!("{base}.{}", self.suffix),
        }
    }
}

/// Why a key could not be made for one file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("object key is {0} bytes long; S3 allows at most 1024 (shorten the key template or the file name)")]
    TooLong(usize),
    #[error("object key would contain a control character (rename the file)")]
    ControlCharacter,
    #[error("object key would be empty")]
    Empty,
    #[error("object key would have a '.' or '..' segment, which S3 consoles and tools resolve like a path")]
    DotSegment,
    #[error("object key would end with '/', which S3 tools show as a folder")]
    TrailingSlash,
    #[error("object key cannot be cut to max_key_length = {max} characters: without the file's name it is still {left} (shorten the template or the prefix)")]
    CannotFit { max: usize, left: usize },
}

impl KeyTemplate {
    /// Parses a template. `{{` and `}}` stand for literal braces.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("unclosed '{{{name}' in {text:?}")),
                        }
                    }
                    let known = PLACEHOLDERS
                        .iter()
                        .find(|p| **p == name)
                        .ok_or_else(|| unknown_placeholder(&name, PLACEHOLDERS))?;
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Placeholder(known));
                }
                '}' => {
                    return Err(format!(
                        "stray '}}' in {text:?} (write '}}}}' for a literal brace)"
                    ))
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        let distinct = parts
            .iter()
            .any(|p| matches!(p, Part::Placeholder(name) if DISTINCT.contains(name)));
        if !distinct {
            return Err(
                "the template has none of {id}, {uuid}, {path} or {name}, so files would overwrite each other's objects"
                    .to_string(),
            );
        }
        // Segments as written, with each placeholder standing for some text.
        let shape: String = parts
            .iter()
            .map(|p| match p {
                Part::Literal(text) => text.as_str(),
                Part::Placeholder(_) => "x",
            })
            .collect();
        if let Some(dots) = shape.split('/').find(|seg| *seg == "." || *seg == "..") {
            return Err(format!("the template has a '{dots}' segment"));
        }
        if text.starts_with('/') {
            return Err(
                "the template must not start with '/' (S3 keys have no leading slash)".into(),
            );
        }
        Ok(KeyTemplate {
            parts,
            rules: KeyRules::default(),
        })
    }

    /// The template with `rules` applied to the parts that come from file names. Two
    /// names may then make the same text, so the template must give each row its own key.
    pub fn with_rules(mut self, rules: KeyRules) -> Result<Self, String> {
        if rules.any() && !self.unique_per_row() {
            return Err("sanitize_keys and max_key_length need {id} or {uuid} in the key template: two file names that sanitise or shorten alike would share a key".into());
        }
        self.rules = rules;
        Ok(self)
    }

    #[cfg(test)]
    /// The rules this template renders with.
    pub fn rules(&self) -> &KeyRules {
        &self.rules
    }

    /// True when every row gets a key of its own (`{id}` or `{uuid}`): no two files, even
    /// at one path, ever share a key.
    pub fn unique_per_row(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Placeholder(name) if *name == "id" || *name == "uuid"))
    }

    /// True when the template has `{uuid}` (a fresh one costs a read of the system's random
    /// source, so the caller makes one only then).
    pub fn uses_uuid(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Placeholder(name) if *name == "uuid"))
    }

    /// The start every key of this template has for the spool `spool` on `host`, with the
    /// destination's `prefix`: the text before the first placeholder that changes from
    /// file to file (or with the time). Listing under it finds every object the spool
    /// wrote; an empty or a short one is shared with whatever else writes there.
    pub fn fixed_head(&self, prefix: &str, spool: &str, host: &str) -> String {
        let mut head = format!("{prefix}/");
        for part in &self.parts {
            match part {
                Part::Literal(text) => head.push_str(text),
                Part::Placeholder("spool") => head.push_str(spool),
                Part::Placeholder("host") => head.push_str(host),
                Part::Placeholder(_) => break,
            }
        }
        collapse_slashes(&head)
    }

    /// Renders the key for one file, with the destination's `prefix` (may be empty) in front.
    ///
    /// Repeated slashes collapse (so `{dir}/{name}` works for files at the top of the spool),
    /// and `.{ext}` drops its dot when the file has no extension.
    pub fn render(&self, prefix: &str, input: &KeyInput<'_>) -> Result<String, KeyError> {
        let PathParts {
            dir,
            name,
            stem,
            ext: source_ext,
        } = PathParts::of(input.rel_path);
        let converted_ext = input.ext.apply(source_ext);
        let ext = converted_ext.as_str();
        let t = input.time;
        let mut pieces = vec![Piece::fixed(prefix), Piece::fixed("/")];
        for part in &self.parts {
            let text = match part {
                Part::Literal(text) => {
                    pieces.push(Piece::fixed(text));
                    continue;
                }
                Part::Placeholder(placeholder) => match *placeholder {
                    "spool" => input.spool.to_string(),
                    "host" => input.host.to_string(),
                    "path" | "dir" | "name" | "stem" | "ext" => {
                        let raw = match *placeholder {
                            "path" => input.rel_path,
                            "dir" => dir,
                            "name" => name,
                            "stem" => stem,
                            _ => ext,
                        };
                        if *placeholder == "ext" && ext.is_empty() {
                            // `.{ext}` drops its dot for a file with no extension.
                            if let Some(last) = pieces.iter_mut().rev().find(|p| !p.text.is_empty())
                            {
                                if last.text.ends_with('.') {
                                    last.text.pop();
                                }
                            }
                        }
                        pieces.push(Piece {
                            text: self.rules.clean(raw),
                            from_file: true,
                            is_ext: *placeholder == "ext",
                        });
                        continue;
                    }
                    "id" => input.id.to_string(),
                    "uuid" => input.uuid.to_string(),
                    "yyyy" => format!("{:04}", t.year()),
                    "mm" => format!("{:02}", t.month()),
                    "dd" => format!("{:02}", t.day()),
                    "HH" => format!("{:02}", t.hour()),
                    "MM" => format!("{:02}", t.minute()),
                    "SS" => format!("{:02}", t.second()),
                    "date" => t.format("%Y-%m-%d").to_string(),
                    "timestamp" => t.format("%Y%m%dT%H%M%SZ").to_string(),
                    "epoch" => t.timestamp().to_string(),
                    other => unreachable!("placeholder {other} is checked at parse"),
                },
            };
            pieces.push(Piece::fixed(&text));
        }
        let joined = |pieces: &[Piece]| {
            let whole: String = pieces.iter().map(|p| p.text.as_str()).collect();
            collapse_slashes(&whole)
        };
        if let Some(max) = self.rules.max_chars {
            rules::shorten(&mut pieces, max, joined)
                .map_err(|left| KeyError::CannotFit { max, left })?;
        }
        let out = joined(&pieces);
        let key = out;
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.chars().any(char::is_control) {
            return Err(KeyError::ControlCharacter);
        }
        if key.split('/').any(|seg| seg == "." || seg == "..") {
            return Err(KeyError::DotSegment);
        }
        if key.ends_with('/') {
            return Err(KeyError::TrailingSlash);
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong(key.len()));
        }
        Ok(key)
    }
}

/// The error for a `{name}` a template does not know, listing the ones it does.
pub fn unknown_placeholder(name: &str, known: &[&str]) -> String {
    let known: Vec<String> = known.iter().map(|p| format!("{{{p}}}")).collect();
    format!(
        "unknown placeholder {{{name}}}; known ones: {}",
        known.join(" ")
    )
}

/// A spool-relative path taken apart the way `{dir}`, `{name}`, `{stem}` and `{ext}` see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathParts<'a> {
    pub dir: &'a str,
    pub name: &'a str,
    pub stem: &'a str,
    /// After the last dot of the name; empty if none (and for `.hidden`).
    pub ext: &'a str,
}

impl<'a> PathParts<'a> {
    pub fn of(rel_path: &'a str) -> Self {
        let (dir, name) = rel_path.rsplit_once('/').unwrap_or(("", rel_path));
        let (stem, ext) = match name.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() => (stem, ext),
            _ => (name, ""),
        };
        PathParts {
            dir,
            name,
            stem,
            ext,
        }
    }
}

/// Drops empty segments: no leading slash, no `//`.
fn collapse_slashes(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for segment in key.split('/').filter(|s| !s.is_empty()) {
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(segment);
    }
    if key.ends_with('/') && !out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_fixed_head_is_the_text_before_the_first_placeholder_that_varies() {
        let head = |template: &str, prefix: &str| {
            let t = KeyTemplate::parse(template).unwrap();
            let head = t.fixed_head(prefix, "orders", "web1");
            // Every key the template renders starts with it.
            let key = t.render(prefix, &input("a/b.csv")).unwrap();
            assert!(key.starts_with(&head), "{key} {head}");
            head
        };
        assert_eq!(head("{spool}/{path}", "inbound"), "inbound/orders/");
        assert_eq!(
            head("{host}/{spool}/{yyyy}/{path}", "in/x"),
            "in/x/web1/orders/"
        );
        assert_eq!(head("data-{id}", ""), "data-");
        assert_eq!(head("{yyyy}/{path}", "inbound"), "inbound/");
        assert_eq!(head("{path}", ""), "");
    }

    fn input(rel_path: &str) -> KeyInput<'_> {
        KeyInput {
            spool: "orders",
            host: "web1",
            rel_path,
            id: 42,
            uuid: uuid::Uuid::nil(),
            time: Utc.with_ymd_and_hms(2026, 11, 22, 10, 15, 0).unwrap(),
            ext: ExtRule::KEEP,
        }
    }

    fn render(template: &str, prefix: &str, rel: &str) -> String {
        KeyTemplate::parse(template)
            .unwrap()
            .render(prefix, &input(rel))
            .unwrap()
    }

    fn strict(max_chars: Option<usize>) -> KeyRules {
        KeyRules {
            replace_unsafe: Some("_".into()),
            max_chars,
        }
    }

    #[test]
    fn rules_change_only_what_comes_from_the_file_and_need_a_unique_key() {
        let t = KeyTemplate::parse("{spool} x/{dir}/{stem}-{id}.{ext}")
            .unwrap()
            .with_rules(strict(None))
            .unwrap();
        assert_eq!(
            t.render("in box", &input("a b/c#d.c v")).unwrap(),
            "in box/orders x/a_b/c_d-42.c_v",
            "the prefix and the template's own text are the operator's"
        );
        let short = KeyTemplate::parse("{dir}/{stem}-{id}.{ext}")
            .unwrap()
            .with_rules(strict(Some(20)))
            .unwrap();
        let key = short
            .render("p", &input("folder-name/long-file-name.csv"))
            .unwrap();
        assert_eq!(key, "p/folde/long--42.csv", "folder and name cut alike");
        assert_eq!(
            short.render(&"p".repeat(30), &input("a.csv")),
            Err(KeyError::CannotFit { max: 20, left: 34 })
        );
        // No {id} or {uuid}: two names that sanitise alike would share a key.
        assert!(KeyTemplate::parse("{name}")
            .unwrap()
            .with_rules(strict(None))
            .is_err());
        assert!(KeyTemplate::parse("{name}")
            .unwrap()
            .with_rules(KeyRules::default())
            .is_ok());
    }

    #[test]
    fn renders_the_example_template() {
        let t = "{spool}/{yyyy}/{mm}/{dd}/{stem}-{timestamp}-{id}.{ext}";
        assert_eq!(
            render(t, "inbound", "sub/a b+c.csv"),
            "inbound/orders/2026/11/22/a b+c-20261122T101500Z-42.csv"
        );
    }

    #[test]
    fn says_whether_a_uuid_is_needed() {
        assert!(KeyTemplate::parse("{spool}/{uuid}.csv")
            .unwrap()
            .uses_uuid());
        assert!(!KeyTemplate::parse("{spool}/{id}-{name}")
            .unwrap()
            .uses_uuid());
    }

    #[test]
    fn renders_every_placeholder() {
        let t = "{spool}|{host}|{path}|{dir}|{name}|{stem}|{ext}|{id}|{uuid}|{yyyy}{mm}{dd}|{HH}{MM}{SS}|{date}|{timestamp}|{epoch}";
        assert_eq!(
            render(t, "", "x/y/é.tar.gz"),
            "orders|web1|x/y/é.tar.gz|x/y|é.tar.gz|é.tar|gz|42|00000000-0000-0000-0000-000000000000|20261122|101500|2026-11-22|20261122T101500Z|1795342500"
        );
    }

    #[test]
    fn no_extension_drops_the_dot_and_top_level_dir_collapses() {
        assert_eq!(render("{dir}/{stem}-{id}.{ext}", "", "README"), "README-42");
        assert_eq!(render("{dir}/{name}", "p/q/", "a.txt"), "p/q/a.txt");
        assert_eq!(render("{name}", "", ".hidden"), ".hidden");
    }

    #[test]
    fn refuses_templates_that_would_overwrite() {
        let err = KeyTemplate::parse("{spool}/{date}.csv").unwrap_err();
        assert!(err.contains("overwrite"), "{err}");
        for ok in ["{id}", "{uuid}", "{path}", "{name}"] {
            KeyTemplate::parse(ok).unwrap();
        }
    }

    #[test]
    fn refuses_unknown_and_malformed_placeholders() {
        let err = KeyTemplate::parse("{spool}/{month}/{id}").unwrap_err();
        assert!(err.contains("unknown placeholder {month}"), "{err}");
        assert!(KeyTemplate::parse("{id").unwrap_err().contains("unclosed"));
        assert!(KeyTemplate::parse("{id}}x").unwrap_err().contains("stray"));
        assert!(KeyTemplate::parse("/{id}")
            .unwrap_err()
            .contains("leading slash"));
        assert_eq!(render("{{x}}-{id}", "", "a"), "{x}-42");
    }

    #[test]
    fn path_parts() {
        let p = PathParts::of("v1.2/report.final.csv");
        assert_eq!(
            (p.dir, p.name, p.stem, p.ext),
            ("v1.2", "report.final.csv", "report.final", "csv")
        );
        assert_eq!(
            PathParts::of("v1.2/README").ext,
            "",
            "a dot in a folder is no extension"
        );
        assert_eq!(PathParts::of(".hidden").ext, "");
    }

    #[test]
    fn keys_are_safe_paths() {
        assert!(KeyTemplate::parse("../{name}")
            .unwrap_err()
            .contains("'..' segment"));
        assert!(KeyTemplate::parse("a/./{name}")
            .unwrap_err()
            .contains("'.' segment"));
        let t = KeyTemplate::parse("{stem}/{id}").unwrap();
        // A file named ".." cannot exist, but a stem can be "." ("..csv" → stem ".").
        assert_eq!(t.render("", &input("..csv")), Err(KeyError::DotSegment));
        let t = KeyTemplate::parse("{dir}/{name}/").unwrap();
        assert_eq!(t.render("", &input("a.csv")), Err(KeyError::TrailingSlash));
        // Empty segments and a leading slash never survive.
        let t = KeyTemplate::parse("{dir}//{name}").unwrap();
        assert_eq!(t.render("/p/", &input("a.csv")).unwrap(), "p/a.csv");
    }

    #[test]
    fn long_keys_and_control_characters_fail_the_file() {
        let t = KeyTemplate::parse("{name}").unwrap();
        let long = "a".repeat(1100);
        assert_eq!(t.render("", &input(&long)), Err(KeyError::TooLong(1100)));
        assert_eq!(
            t.render("", &input("a\nb")),
            Err(KeyError::ControlCharacter)
        );
        let exact = "b".repeat(1024);
        assert_eq!(t.render("", &input(&exact)).unwrap().len(), 1024);
    }
}
