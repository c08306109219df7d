//! `s3://bucket[/prefix]` URIs, checked against S3's bucket naming rules.

/// Splits and checks a bucket URI. The prefix comes back without leading or trailing `/`.
pub fn parse_bucket_uri(uri: &str) -> Result<(String, String), String> {
    let rest = uri.strip_prefix("s3://").ok_or_else(|| {
        format!("{uri:?} is not a bucket URI; write it as s3://bucket or s3://bucket/prefix")
    })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    check_bucket_name(bucket)?;
    let prefix = prefix.trim_end_matches('/');
    if !prefix.is_empty() {
        for segment in prefix.split('/') {
            match segment {
                "" => return Err(format!("prefix {prefix:?} has an empty segment ('//')")),
                "." | ".." => return Err(format!("prefix {prefix:?} has a '{segment}' segment")),
                _ => {}
            }
        }
        if prefix.chars().any(char::is_control) {
            return Err(format!("prefix {prefix:?} contains a control character"));
        }
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// S3's rules for general purpose bucket names.
pub fn check_bucket_name(name: &str) -> Result<(), String> {
    let fail = |why: &str| Err(format!("bucket name {name:?} {why}"));
    if name.len() < 3 || name.len() > 63 {
        return fail("must be 3 to 63 characters long");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
    {
        return fail("may only contain lowercase letters, digits, dots and hyphens");
    }
    let first_last_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_last_ok(name.chars().next()) || !first_last_ok(name.chars().last()) {
        return fail("must begin and end with a letter or digit");
    }
    if name.contains("..") {
        return fail("must not contain two adjacent dots");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return fail("must not be formatted as an IP address");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_buckets_and_prefixes() {
        assert_eq!(
            parse_bucket_uri("s3://acme-drop/inbound").unwrap(),
            ("acme-drop".into(), "inbound".into())
        );
        assert_eq!(
            parse_bucket_uri("s3://a.b-c1").unwrap(),
            ("a.b-c1".into(), String::new())
        );
        assert_eq!(
            parse_bucket_uri("s3://abc/x/y/").unwrap(),
            ("abc".into(), "x/y".into())
        );
    }

    #[test]
    fn refuses_bad_buckets() {
        let cases = [
            ("acme-drop", "not a bucket URI"),
            ("s3://ab", "3 to 63"),
            (&format!("s3://{}", "a".repeat(64)), "3 to 63"),
            ("s3://Acme", "lowercase"),
            ("s3://acme_drop", "lowercase"),
            ("s3://-acme", "begin and end"),
            ("s3://acme-", "begin and end"),
            ("s3://ac..me", "adjacent dots"),
            ("s3://192.168.1.1", "IP address"),
            ("s3://acme/a//b", "empty segment"),
            ("s3://acme/a/../b", "'..' segment"),
        ];
        for (uri, want) in cases {
            let err = parse_bucket_uri(uri).unwrap_err();
            assert!(err.contains(want), "{uri}: {err}");
        }
    }
}
