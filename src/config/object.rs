//! Per-destination object options: tags, user metadata, storage class, encryption, ACL.

use super::reader::{Problems, Section};
pub use crate::s3::{ObjectOptions, RESERVED_METADATA};

const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "GLACIER_IR",
    "DEEP_ARCHIVE",
    "OUTPOSTS",
    "EXPRESS_ONEZONE",
];
const ACLS: &[&str] = &[
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
];

/// Reads the object options from a destination's table.
pub fn parse(p: &mut Problems, s: &mut Section<'_>) -> ObjectOptions {
    let mut options = ObjectOptions::default();
    if let Some(tags) = s.table(p, "tags") {
        let key = s.key("tags");
        if tags.len() > 10 {
            p.add(&key, "S3 allows at most 10 tags per object");
        }
        // S3's tag alphabet: letters, digits, spaces and _ . : / = + - @
        let allowed = |t: &str| {
            t.chars()
                .all(|c| c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c))
        };
        for (name, value) in tags {
            match value.as_str() {
                Some(v) if !allowed(name) || !allowed(v) => p.add(
                    format!("{key}.{name}"),
                    "tags may only use letters, digits, spaces and _ . : / = + - @",
                ),
                Some(v)
                    if !name.is_empty()
                        && name.chars().count() <= 128
                        && v.chars().count() <= 256 =>
                {
                    options.tags.push((name.clone(), v.to_string()));
                }
                Some(_) => p.add(
                    format!("{key}.{name}"),
                    "tag keys are 1 to 128 characters, values up to 256",
                ),
                None => p.add(format!("{key}.{name}"), "expected a string"),
            }
        }
    }
    if let Some(metadata) = s.table(p, "metadata") {
        let key = s.key("metadata");
        let mut total = 0;
        for (name, value) in metadata {
            let ok_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            match value.as_str() {
                _ if RESERVED_METADATA.contains(&name.as_str()) => p.add(
                    format!("{key}.{name}"),
                    "is reserved: s3spool writes the object's identity there (sha256, source-sha256, source-tag, s3spool-row)",
                ),
                Some(v) if ok_name && v.is_ascii() => {
                    total += name.len() + v.len();
                    options.metadata.push((name.clone(), v.to_string()));
                }
                Some(_) if !ok_name => p.add(
                    format!("{key}.{name}"),
                    "metadata names may only use lowercase letters, digits, '-' and '_'",
                ),
                Some(_) => p.add(
                    format!("{key}.{name}"),
                    "metadata values must be ASCII (S3 sends them as HTTP headers)",
                ),
                None => p.add(format!("{key}.{name}"), "expected a string"),
            }
        }
        if total > 1900 {
            p.add(&key, "S3 allows about 2 KB of user metadata per object");
        }
    }
    if let Some(class) = s.string(p, "storage_class") {
        if STORAGE_CLASSES.contains(&class) {
            options.storage_class = Some(class.to_string());
        } else {
            p.add(
                s.key("storage_class"),
                format!("{class:?} is not one of {}", STORAGE_CLASSES.join(", ")),
            );
        }
    }
    if let Some(sse) = s.string(p, "sse") {
        if ["AES256", "aws:kms", "aws:kms:dsse"].contains(&sse) {
            options.sse = Some(sse.to_string());
        } else {
            p.add(
                s.key("sse"),
                format!("{sse:?} is not one of AES256, aws:kms, aws:kms:dsse"),
            );
        }
    }
    if let Some(id) = s.string(p, "kms_key_id") {
        if options
            .sse
            .as_deref()
            .is_some_and(|sse| sse.starts_with("aws:kms"))
        {
            options.kms_key_id = Some(id.to_string());
        } else {
            p.add(
                s.key("kms_key_id"),
                "is only used with sse = \"aws:kms\" or \"aws:kms:dsse\"",
            );
        }
    }
    if let Some(acl) = s.string(p, "acl") {
        if ACLS.contains(&acl) {
            options.acl = Some(acl.to_string());
        } else {
            p.add(
                s.key("acl"),
                format!("{acl:?} is not one of {}", ACLS.join(", ")),
            );
        }
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{parse, refused, BASE_DEST, BASE_SPOOL};

    #[test]
    fn object_option_rules() {
        let dest = |extra: &str| {
            format!(
                "{}{BASE_SPOOL}",
                BASE_DEST.replace(
                    "[destinations.lake.auth]",
                    &format!("{extra}\n[destinations.lake.auth]")
                )
            )
        };
        let config = parse(&dest("tags = { retention = \"30d\" }\nmetadata = { team = \"data\" }\nstorage_class = \"STANDARD_IA\"\nsse = \"aws:kms\"\nkms_key_id = \"alias/s3spool\"\nacl = \"bucket-owner-full-control\"")).unwrap();
        let o = &config.destinations["lake"].object;
        assert_eq!(o.tags, vec![("retention".to_string(), "30d".to_string())]);
        assert_eq!(
            (o.sse.as_deref(), o.kms_key_id.as_deref()),
            (Some("aws:kms"), Some("alias/s3spool"))
        );
        refused(
            &dest("tags = { team = \"a&b\" }"),
            "destinations.lake.tags.team",
            "letters, digits, spaces",
        );
        refused(
            &dest("metadata = { Team = \"x\" }"),
            "destinations.lake.metadata.Team",
            "lowercase",
        );
        for name in RESERVED_METADATA {
            refused(
                &dest(&format!("metadata = {{ {name} = \"x\" }}")),
                &format!("destinations.lake.metadata.{name}"),
                "reserved",
            );
        }
        refused(
            &dest("storage_class = \"COLD\""),
            "destinations.lake.storage_class",
            "not one of",
        );
        refused(
            &dest("sse = \"rot13\""),
            "destinations.lake.sse",
            "not one of",
        );
        refused(
            &dest("kms_key_id = \"k\""),
            "destinations.lake.kms_key_id",
            "only used with sse",
        );
        refused(
            &dest("acl = \"everyone\""),
            "destinations.lake.acl",
            "not one of",
        );
        let many: String = (0..11).map(|i| format!("t{i} = \"v\", ")).collect();
        refused(
            &dest(&format!("tags = {{ {} }}", many.trim_end_matches(", "))),
            "destinations.lake.tags",
            "at most 10",
        );
    }
}
