//! A destination: the bucket and prefix, region and endpoint, credentials, object options
//! and upload settings, each rule checked at load under its dotted key.

use std::time::Duration;

use super::auth::{self, Auth, SecretSources};
use super::keys::{self, KeyRulesSetting};
use super::network::{self, Network};
use super::object::{self, ObjectOptions};
use super::reader::{Problems, Section};
use super::{parse_bucket_uri, FoundSecrets};
use crate::bandwidth::Schedule;
pub use crate::s3::Secret;
use crate::schedule::Windows;
use crate::units;

const MIN_PART: u64 = 5 << 20;
const MAX_PART: u64 = 5 << 30;
/// The most file data a destination may hold in memory at once (`memory`).
const MAX_IN_FLIGHT: u64 = 4 << 30;
/// Requests in flight by default: enough to keep a link tens of milliseconds long busy
/// with small files; big parts are held back by `memory`, not by this.
const DEFAULT_CONCURRENCY: i64 = 64;

/// An S3 bucket (and prefix) with the credentials and upload settings to reach it.
#[derive(Debug, Clone)]
pub struct Destination {
    pub name: String,
    pub bucket: String,
    /// Key prefix without leading or trailing `/`; may be empty.
    pub prefix: String,
    pub region: String,
    pub endpoint: Option<String>,
    pub auth: Auth,
    /// Temporary credentials are renewed this long before they expire.
    pub refresh_margin: Duration,
    /// Tags, metadata, storage class, encryption and ACL of every object.
    pub object: ObjectOptions,
    pub upload: UploadSettings,
    /// The proxy and the extra CA certificates its requests use.
    pub network: Network,
    /// Key sanitising and length for its spools (a spool may say otherwise).
    pub key_rules: KeyRulesSetting,
    /// The bandwidth its uploads share (`bwlimit`); no steps for no limit.
    pub bwlimit: Schedule,
    /// When its spools may send (`windows`); `None` for any time.
    pub windows: Option<Windows>,
}

/// The part of a destination that registration needs: its name and bucket (recorded on
/// each row) and its key prefix (rendered into each key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub destination: String,
    pub bucket: String,
    pub prefix: String,
}

impl Destination {
    /// Where its spools' rows go, for registration.
    pub fn bound(&self) -> Bound {
        Bound {
            destination: self.name.clone(),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
        }
    }

    /// What the S3 client of this destination is made from.
    pub fn s3_spec(&self) -> crate::s3::Spec {
        crate::s3::Spec {
            bucket: self.bucket.clone(),
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            request_timeout: self.upload.request_timeout,
            refresh_margin: self.refresh_margin,
            auth: self.auth.clone(),
            object: self.object.clone(),
            network: self.network.clone(),
        }
    }

    /// The STS endpoint an assumed role is asked at: the configured one, or AWS's.
    pub fn sts_url(&self) -> Option<String> {
        self.s3_spec().sts_url()
    }

    /// The S3 endpoint requests go to: the configured one, or AWS's for the region.
    pub fn endpoint_url(&self) -> String {
        self.s3_spec().endpoint_url()
    }

    /// What every key of this destination starts with: the prefix and a `/`, or nothing.
    pub fn key_prefix(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }
}

/// Limits and retry schedule for one destination.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    pub multipart_threshold: u64,
    pub part_size: u64,
    /// Requests in flight at once, at most (lowered on SlowDown, see
    /// [`crate::outbound::limit`]).
    pub concurrency: usize,
    /// File data held in memory by the requests in flight, at most: a small file takes
    /// little of it, a part `part_size`. Separate from `concurrency`, so small files can
    /// have many requests in flight without big parts taking more memory.
    pub memory: u64,
    /// Where the SHA-256 of a file sent in parts goes (`large_file_sha256`).
    pub large_file_sha256: LargeFileSha256,
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub request_timeout: Duration,
}

/// Where the SHA-256 of a file sent in parts (above `multipart_threshold`) is kept. S3
/// takes an object's metadata when the upload begins, before its first part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LargeFileSha256 {
    /// On the object as `x-amz-meta-sha256`, like every other object, and in the queue
    /// and manifest: the file is read twice (hashed first, then sent).
    #[default]
    Metadata,
    /// In the queue and the manifest only: the file is read once, hashed while it is sent.
    Manifest,
}

pub(super) fn parse(
    p: &mut Problems,
    path: &str,
    name: &str,
    table: &toml::Table,
    sources: &SecretSources<'_>,
    found: &mut FoundSecrets,
) -> Option<Destination> {
    let mut s = Section::new(path, table);
    let bucket_uri = s.required_string(p, "bucket");
    let bucket = bucket_uri.and_then(|uri| {
        parse_bucket_uri(uri)
            .map_err(|e| p.add(s.key("bucket"), e))
            .ok()
    });
    let region = s.string(p, "region").unwrap_or("us-east-1").to_string();
    check_region(p, &s.key("region"), &region);
    let allow_http = s.bool(p, "allow_http").unwrap_or(false);
    let endpoint = s
        .string(p, "endpoint")
        .and_then(|e| check_endpoint(p, &s.key("endpoint"), e, allow_http));
    // Only checked: requests always address the bucket by path.
    if s.bool(p, "path_style") == Some(false) {
        p.add(
            s.key("path_style"),
            "virtual-hosted addressing is not supported: requests always use path-style (/bucket/key), which S3 and S3-compatible servers accept; remove the key or set it to true",
        );
    }
    let auth = match s.table(p, "auth") {
        Some(t) => auth::parse(p, &s.key("auth"), t, sources, allow_http),
        None => {
            p.add(
                s.key("auth"),
                "is required ([destinations.NAME.auth] with mode = \"static\", \"default\", \"process\" or \"assume_role\")",
            );
            None
        }
    };
    let mut proxy_password = false;
    let network = network::parse(
        p,
        &mut s,
        sources.base,
        sources.read,
        &|name| std::env::var(name).ok(),
        &mut proxy_password,
    );
    found.inline |= proxy_password;
    let object = object::parse(p, &mut s);
    let key_rules = keys::parse(p, &mut s);
    let bwlimit = s
        .string_or_strings(p, "bwlimit")
        .map(|entries| {
            Schedule::parse(&entries)
                .map_err(|e| p.add(s.key("bwlimit"), e))
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let windows = super::schedule::parse(p, &mut s, false).windows;
    let empty = toml::Table::new();
    let upload_table = s.table(p, "upload").unwrap_or(&empty);
    let upload = upload_settings(p, &s.key("upload"), upload_table);
    if let Some(sse) = object
        .sse
        .as_deref()
        .filter(|sse| sse.starts_with("aws:kms"))
    {
        if upload
            .as_ref()
            .is_some_and(|u| u.large_file_sha256 == LargeFileSha256::Manifest)
        {
            // Read once, a big object carries no SHA-256: an upload completed before a
            // crash is recognised by its ETag, which under KMS is not made of the MD5s.
            p.add(
                format!("{}.large_file_sha256", s.key("upload")),
                format!(
                    "\"manifest\" cannot be used with sse = {sse:?}: S3's ETag of a KMS-encrypted object is not an MD5, so an upload completed just before a crash could not be recognised and would be sent again; use \"metadata\""
                ),
            );
        }
    }
    s.finish(p);
    let (bucket, prefix) = bucket?;
    let auth = auth?;
    found.inline |= auth.inline_secret;
    found.files.extend(auth.secret_files);
    Some(Destination {
        name: name.to_string(),
        bucket,
        prefix,
        region,
        endpoint,
        auth: auth.auth,
        refresh_margin: auth.refresh_margin,
        object,
        upload: upload?,
        network,
        key_rules,
        bwlimit,
        windows,
    })
}

/// `host[:port]` names this machine.
fn is_loopback(authority: &str) -> bool {
    network::is_loopback(network::host_of(authority))
}

fn upload_settings(p: &mut Problems, path: &str, table: &toml::Table) -> Option<UploadSettings> {
    let mut s = Section::new(path, table);
    let before = p.0.len();
    let part_size = s.size(p, "part_size").unwrap_or(16 << 20);
    let concurrency = s.integer(p, "concurrency");
    let settings = UploadSettings {
        multipart_threshold: s.size(p, "multipart_threshold").unwrap_or(64 << 20),
        part_size,
        concurrency: concurrency.unwrap_or(DEFAULT_CONCURRENCY).clamp(0, 1 << 20) as usize,
        // Unset: what `concurrency × part_size` allowed before the two were apart (eight
        // parts, or as many as a configured concurrency).
        memory: s.size(p, "memory").unwrap_or_else(|| {
            let parts = concurrency.map_or(8, |c| c.clamp(1, 256) as u64);
            part_size.saturating_mul(parts).min(MAX_IN_FLIGHT)
        }),
        large_file_sha256: match s.string(p, "large_file_sha256").unwrap_or("metadata") {
            "metadata" => LargeFileSha256::Metadata,
            "manifest" => LargeFileSha256::Manifest,
            other => {
                p.add(
                    s.key("large_file_sha256"),
                    format!("{other:?} is not one of metadata, manifest"),
                );
                LargeFileSha256::Metadata
            }
        },
        max_attempts: s.integer(p, "max_attempts").unwrap_or(10).clamp(0, 1 << 20) as u32,
        backoff_initial: s
            .duration(p, "backoff_initial")
            .unwrap_or(Duration::from_secs(1)),
        backoff_max: s
            .duration(p, "backoff_max")
            .unwrap_or(Duration::from_secs(300)),
        request_timeout: s
            .duration(p, "request_timeout")
            .unwrap_or(Duration::from_secs(300)),
    };
    if !(MIN_PART..=MAX_PART).contains(&settings.part_size) {
        p.add(
            s.key("part_size"),
            "must be between 5MiB and 5GiB (S3's part size limits)",
        );
    }
    if !(MIN_PART..=MAX_PART).contains(&settings.multipart_threshold) {
        p.add(
            s.key("multipart_threshold"),
            "must be between 5MiB (S3's smallest part) and 5GiB (S3's largest single PUT)",
        );
    }
    let in_range = |size| (MIN_PART..=MAX_PART).contains(&size);
    if in_range(settings.part_size)
        && in_range(settings.multipart_threshold)
        && settings.part_size > settings.multipart_threshold
    {
        // A file up to part_size is sent in one PUT held in memory: a part_size above the
        // threshold would hold whole files of that size in memory.
        p.add(
            s.key("part_size"),
            format!(
                "must be at most multipart_threshold ({})",
                units::format_size(settings.multipart_threshold)
            ),
        );
    }
    if !(1..=256).contains(&settings.concurrency) {
        p.add(s.key("concurrency"), "must be between 1 and 256");
    }
    if settings.memory > MAX_IN_FLIGHT {
        p.add(
            s.key("memory"),
            format!(
                "must be at most {}: up to that much file data is held in memory at once",
                units::format_size(MAX_IN_FLIGHT)
            ),
        );
    } else if in_range(settings.part_size) && settings.memory < settings.part_size {
        p.add(
            s.key("memory"),
            format!(
                "must be at least part_size ({}): a part is held in memory while it is sent",
                units::format_size(settings.part_size)
            ),
        );
    }
    if !(1..=1000).contains(&settings.max_attempts) {
        p.add(s.key("max_attempts"), "must be between 1 and 1000");
    }
    if settings.backoff_initial.is_zero() || settings.backoff_initial > settings.backoff_max {
        p.add(
            s.key("backoff_initial"),
            "must be above zero and at most backoff_max",
        );
    }
    if settings.request_timeout < Duration::from_secs(1) {
        p.add(s.key("request_timeout"), "must be at least 1s");
    }
    s.finish(p);
    (p.0.len() == before).then_some(settings)
}

/// A region name like `eu-west-1`; reports and returns false otherwise.
pub(super) fn check_region(p: &mut Problems, key: &str, region: &str) -> bool {
    let ok = !region.is_empty()
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        p.add(
            key,
            format!("{region:?} is not a region name like \"eu-west-1\""),
        );
    }
    ok
}

/// An endpoint URL, scheme and host only. Plain `http://` only for loopback addresses, or
/// with `allow_http = true`: credentials and data would cross the network unencrypted.
pub(super) fn check_endpoint(
    p: &mut Problems,
    key: &str,
    url: &str,
    allow_http: bool,
) -> Option<String> {
    let url = url.trim_end_matches('/');
    let (plain, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (true, rest),
        (_, Some(rest)) => (false, rest),
        _ => (false, ""),
    };
    // Scheme and host[:port] only. No user info: `http://localhost@evil.example` must not
    // pass for loopback, and credentials have no place in a URL.
    if rest.is_empty() || rest.contains(['/', '@', '?', '#']) {
        p.add(
            key,
            "is not an endpoint URL like \"https://s3.example.com\" or \"http://127.0.0.1:9000\" (scheme and host only, no user info)",
        );
        return None;
    }
    if plain && !allow_http && !is_loopback(rest) {
        p.add(
            key,
            format!("{url:?} is plain http to a host that is not loopback: use https, or set allow_http = true in the destination if the network is trusted"),
        );
        return None;
    }
    Some(url.to_string())
}

#[cfg(test)]
mod tests {
    use crate::config::tests::*;

    #[test]
    fn bucket_uri_rules() {
        let bad = BASE_DEST.replace("s3://acme-drop/inbound", "s3://ab");
        refused(
            &format!("{bad}{BASE_SPOOL}"),
            "destinations.lake.bucket",
            "3 to 63",
        );
        let bad = BASE_DEST.replace("s3://acme-drop/inbound", "acme-drop");
        refused(
            &format!("{bad}{BASE_SPOOL}"),
            "destinations.lake.bucket",
            "s3://bucket",
        );
        let missing = BASE_DEST.replace("bucket = \"s3://acme-drop/inbound\"", "");
        refused(
            &format!("{missing}{BASE_SPOOL}"),
            "destinations.lake.bucket",
            "is required",
        );
    }

    #[test]
    fn region_and_endpoint_are_checked() {
        let bad = BASE_DEST.replace(
            "[destinations.lake.auth]",
            "region = \"EU West\"\n[destinations.lake.auth]",
        );
        refused(
            &format!("{bad}{BASE_SPOOL}"),
            "destinations.lake.region",
            "not a region name",
        );
        for endpoint in ["ftp://x", "http://", "127.0.0.1:9000", "http://host/path"] {
            let bad = BASE_DEST.replace(
                "[destinations.lake.auth]",
                &format!("endpoint = \"{endpoint}\"\n[destinations.lake.auth]"),
            );
            refused(
                &format!("{bad}{BASE_SPOOL}"),
                "destinations.lake.endpoint",
                "not an endpoint URL",
            );
        }
        let ok = BASE_DEST.replace(
            "[destinations.lake.auth]",
            "endpoint = \"http://127.0.0.1:9000/\"\n[destinations.lake.auth]",
        );
        let config = parse(&format!("{ok}{BASE_SPOOL}")).unwrap();
        assert_eq!(
            config.destinations["lake"].endpoint.as_deref(),
            Some("http://127.0.0.1:9000")
        );
    }

    #[test]
    fn upload_limits() {
        let key = |k: &str| format!("destinations.lake.upload.{k}");
        // Files up to part_size go in one PUT held in memory.
        refused(
            &with_upload("part_size = \"1GiB\"\nmultipart_threshold = \"64MiB\"\nconcurrency = 2"),
            &key("part_size"),
            "at most multipart_threshold (64.0 MiB)",
        );
        refused(
            &with_upload("memory = \"32GiB\""),
            &key("memory"),
            "at most 4.0 GiB",
        );
        refused(
            &with_upload(
                "part_size = \"64MiB\"\nmultipart_threshold = \"64MiB\"\nmemory = \"32MiB\"",
            ),
            &key("memory"),
            "at least part_size (64.0 MiB)",
        );
        // Unset, memory is what concurrency × part_size allowed: eight parts by default,
        // as many as a configured concurrency, never above 4 GiB. Requests in flight by
        // default: 64.
        let memory = |upload: &str| {
            let u = parse(&with_upload(upload)).unwrap().destinations["lake"]
                .upload
                .clone();
            (u.concurrency, u.memory >> 20)
        };
        assert_eq!(memory(""), (64, 128));
        assert_eq!(memory("concurrency = 4"), (4, 64));
        assert_eq!(
            memory("part_size = \"2GiB\"\nmultipart_threshold = \"2GiB\"\nconcurrency = 16"),
            (16, 4096)
        );
        assert_eq!(memory("memory = \"1GiB\""), (64, 1024));
        refused(
            &with_upload("part_size = \"1MiB\""),
            &key("part_size"),
            "between 5MiB and 5GiB",
        );
        refused(
            &with_upload("part_size = \"6GiB\""),
            &key("part_size"),
            "between 5MiB and 5GiB",
        );
        refused(
            &with_upload("multipart_threshold = \"1MiB\""),
            &key("multipart_threshold"),
            "between 5MiB",
        );
        refused(
            &with_upload("multipart_threshold = \"6GiB\""),
            &key("multipart_threshold"),
            "5GiB (S3's largest single PUT)",
        );
        refused(
            &with_upload("multipart_threshold = \"lots\""),
            &key("multipart_threshold"),
            "not a size",
        );
        refused(
            &with_upload("concurrency = 0"),
            &key("concurrency"),
            "between 1 and 256",
        );
        refused(
            &with_upload("max_attempts = 0"),
            &key("max_attempts"),
            "between 1 and 1000",
        );
        refused(
            &with_upload("backoff_initial = \"10m\""),
            &key("backoff_initial"),
            "at most backoff_max",
        );
        refused(
            &with_upload("request_timeout = \"10ms\""),
            &key("request_timeout"),
            "at least 1s",
        );
        let sha = |upload: &str| {
            parse(&with_upload(upload)).unwrap().destinations["lake"]
                .upload
                .large_file_sha256
        };
        assert_eq!(sha(""), super::LargeFileSha256::Metadata);
        assert_eq!(
            sha("large_file_sha256 = \"manifest\""),
            super::LargeFileSha256::Manifest
        );
        refused(
            &with_upload("large_file_sha256 = \"later\""),
            &key("large_file_sha256"),
            "\"later\" is not one of metadata, manifest",
        );
        let kms = with_upload("large_file_sha256 = \"manifest\"").replace(
            "[destinations.lake.auth]",
            "sse = \"aws:kms\"\n[destinations.lake.auth]",
        );
        refused(
            &kms,
            &key("large_file_sha256"),
            "cannot be used with sse = \"aws:kms\"",
        );
    }

    #[test]
    fn path_style_false_is_refused_with_the_reason() {
        let bad = BASE_DEST.replace(
            "[destinations.lake.auth]",
            "path_style = false\n[destinations.lake.auth]",
        );
        refused(
            &format!("{bad}{BASE_SPOOL}"),
            "destinations.lake.path_style",
            "path-style",
        );
    }

    #[test]
    fn plain_http_only_for_loopback_or_with_allow_http() {
        let with = |endpoint: &str, extra: &str| {
            BASE_DEST.replace(
                "[destinations.lake.auth]",
                &format!("endpoint = \"{endpoint}\"\n{extra}\n[destinations.lake.auth]"),
            ) + BASE_SPOOL
        };
        for ok in [
            "http://127.0.0.1:9000",
            "http://localhost:9000",
            "http://[::1]:9000",
            "http://127.8.9.10",
            "https://s3.example.com",
        ] {
            parse(&with(ok, "")).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for ok in [
            "http://localhost.:9000",
            "http://LOCALHOST:9000",
            "http://[::ffff:127.0.0.1]:9000",
        ] {
            parse(&with(ok, "")).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "http://localhost:1@evil.example",
            "http://[::1]@evil.example",
            "https://key:secret@s3.example.com",
            "https://s3.example.com?x=1",
        ] {
            let found = problems(&with(bad, "allow_http = true"));
            assert!(
                found.len() == 1 && found[0].contains("no user info"),
                "{bad}: {found:?}"
            );
            assert!(
                !found[0].contains("secret"),
                "the URL is not echoed: {found:?}"
            );
        }
        refused(
            &with("http://10.0.0.5:9000", ""),
            "destinations.lake.endpoint",
            "allow_http = true",
        );
        refused(
            &with("http://minio.internal", ""),
            "destinations.lake.endpoint",
            "plain http",
        );
        parse(&with("http://minio.internal:9000", "allow_http = true")).unwrap();
    }
}
