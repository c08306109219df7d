//! The manifest key template: `{spool}/_manifests/manifest-{spool}-{batch}.json` by default,
//! under the destination's prefix.

/// Where a spool's manifests go, relative to the destination prefix.
pub const DEFAULT_MANIFEST_KEY: &str = "{spool}/_manifests/manifest-{spool}-{batch}.json";

const PLACEHOLDERS: &[&str] = &[
    "spool",
    "batch",
    "destination",
    "host",
    "yyyy",
    "mm",
    "dd",
    "HH",
];

/// A parsed manifest key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestKey {
    text: String,
}

/// What a manifest key is made of.
pub struct ManifestKeyInput<'a> {
    pub spool: &'a str,
    pub batch: &'a str,
    pub destination: &'a str,
    pub host: &'a str,
    /// When the batch closed.
    pub closed: chrono::DateTime<chrono::Utc>,
}

impl ManifestKey {
    pub fn parse(text: &str) -> Result<ManifestKey, String> {
        let mut rest = text;
        let mut has_batch = false;
        while let Some(start) = rest.find('{') {
            let Some(len) = rest[start..].find('}') else {
                return Err(format!("unclosed '{{' in {text:?}"));
            };
            let name = &rest[start + 1..start + len];
            if !PLACEHOLDERS.contains(&name) {
                return Err(crate::key::unknown_placeholder(name, PLACEHOLDERS));
            }
            has_batch |= name == "batch";
            rest = &rest[start + len + 1..];
        }
        if rest.contains('}') {
            return Err(format!("stray '}}' in {text:?}"));
        }
        if !has_batch {
            return Err("must contain {batch}, or each manifest would overwrite the last".into());
        }
        if text.starts_with('/') || text.ends_with('/') {
            return Err("must not start or end with '/'".into());
        }
        if text.split('/').any(|s| s == "." || s == "..") {
            return Err("must not have a '.' or '..' segment".into());
        }
        Ok(ManifestKey {
            text: text.to_string(),
        })
    }

    /// The full key: `prefix` (empty or ending in `/`), then the rendered template.
    pub fn render(&self, prefix: &str, input: &ManifestKeyInput<'_>) -> String {
        let t = input.closed;
        let mut out = String::from(prefix);
        let mut rest = self.text.as_str();
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let len = rest[start..].find('}').unwrap_or(rest.len() - start);
            let value = match &rest[start + 1..start + len] {
                "spool" => input.spool.to_string(),
                "batch" => input.batch.to_string(),
                "destination" => input.destination.to_string(),
                "host" => input.host.to_string(),
                "yyyy" => t.format("%Y").to_string(),
                "mm" => t.format("%m").to_string(),
                "dd" => t.format("%d").to_string(),
                "HH" => t.format("%H").to_string(),
                _ => String::new(),
            };
            out.push_str(&value);
            rest = &rest[(start + len + 1).min(rest.len())..];
        }
        out.push_str(rest);
        let mut collapsed = String::with_capacity(out.len());
        for c in out.chars() {
            if !(c == '/' && collapsed.ends_with('/')) {
                collapsed.push(c);
            }
        }
        collapsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn parses_and_renders() {
        let key = ManifestKey::parse(DEFAULT_MANIFEST_KEY).unwrap();
        let input = ManifestKeyInput {
            spool: "orders",
            batch: "20261122T130000Z-1a2b3c4d",
            destination: "lake",
            host: "h1",
            closed: chrono::Utc
                .with_ymd_and_hms(2026, 11, 22, 13, 5, 0)
                .unwrap(),
        };
        assert_eq!(
            key.render("in/", &input),
            "in/orders/_manifests/manifest-orders-20261122T130000Z-1a2b3c4d.json"
        );
        let dated = ManifestKey::parse("m/{yyyy}/{mm}/{dd}/{HH}/{host}-{batch}.json").unwrap();
        assert_eq!(
            dated.render("", &input),
            "m/2026/11/22/13/h1-20261122T130000Z-1a2b3c4d.json"
        );
        assert!(ManifestKey::parse("{spool}/manifest.json")
            .unwrap_err()
            .contains("{batch}"));
        assert!(ManifestKey::parse("{batch}/{nope}")
            .unwrap_err()
            .contains("unknown placeholder {nope}"));
        assert!(ManifestKey::parse("/{batch}").is_err());
        assert!(ManifestKey::parse("a/../{batch}").is_err());
        assert!(ManifestKey::parse("{batch").is_err());
    }
}
