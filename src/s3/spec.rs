//! What the S3 client is made from, in plain terms: a [`Spec`] per destination (bucket,
//! region, endpoint, request timeout, how credentials are had, the way through the
//! network, the options every object is written with). The config room reads and checks
//! the TOML file and makes these ([`crate::config::Destination::s3_spec`]); nothing in
//! s3/ knows the config's types, so another SDK, or another config format, touches one
//! side only.

use std::fmt;
use std::time::Duration;

use super::net::Network;

/// One destination, as the S3 client sees it.
#[derive(Debug, Clone)]
pub struct Spec {
    pub bucket: String,
    pub region: String,
    /// A custom endpoint (`http://127.0.0.1:9000`); none for AWS's.
    pub endpoint: Option<String>,
    /// How long one request may take.
    pub request_timeout: Duration,
    /// Temporary credentials are renewed this long before they expire.
    pub refresh_margin: Duration,
    pub auth: Auth,
    /// Tags, metadata, storage class, encryption and ACL of every object.
    pub object: ObjectOptions,
    /// The proxy and the extra CA certificates its requests use.
    pub network: Network,
}

impl Spec {
    /// The STS endpoint an assumed role is asked at: its own, else AWS's regional one.
    pub fn sts_url(&self) -> Option<String> {
        let Auth::AssumeRole(role) = &self.auth else {
            return None;
        };
        Some(role.sts_endpoint.clone().unwrap_or_else(|| {
            format!(
                "https://sts.{}.amazonaws.com",
                role.sts_region.as_deref().unwrap_or(&self.region)
            )
        }))
    }

    /// The S3 endpoint: the configured one, or AWS's for the region.
    pub fn endpoint_url(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", self.region))
    }
}

/// A secret string that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for the one place that signs requests.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How s3spool proves who it is to S3.
#[derive(Debug, Clone)]
pub enum Auth {
    Static(StaticKey),
    /// The standard chain: environment, shared credentials file (`profile`), container and
    /// instance metadata.
    Default {
        profile: Option<String>,
    },
    /// A program that prints the AWS JSON credential document.
    Process(CredentialProcess),
    AssumeRole(AssumeRole),
}

/// A credential program and its arguments (IAM Roles Anywhere's signing helper, for one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialProcess {
    pub argv: Vec<String>,
}

/// The identity that calls STS for an assumed role.
#[derive(Debug, Clone)]
pub enum BaseIdentity {
    /// The default chain, with `profile` if given.
    Chain {
        profile: Option<String>,
    },
    Static(StaticKey),
    Process(CredentialProcess),
}

/// An access key and its secret.
#[derive(Debug, Clone)]
pub struct StaticKey {
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

/// An IAM role assumed through STS.
#[derive(Debug, Clone)]
pub struct AssumeRole {
    pub role_arn: String,
    pub external_id: Option<String>,
    pub session_name: String,
    pub duration: Duration,
    pub sts_endpoint: Option<String>,
    pub sts_region: Option<String>,
    /// The credentials that call STS.
    pub base: BaseIdentity,
}

/// The metadata key under which s3spool stores an object's SHA-256
/// (`x-amz-meta-sha256`): refused as a user metadata name.
pub const SHA256_METADATA: &str = "sha256";
/// Where a converted or encrypted object carries its source's SHA-256: what the retry
/// after a lost answer recognises it by (encryption makes new bytes every time).
pub const SOURCE_SHA256_METADATA: &str = "source-sha256";
/// Where an encrypted object carries its source's keyed hash (see `upload/source_tag.rs`):
/// recognised as `source-sha256` is, without telling the content to the bucket's readers.
pub const SOURCE_TAG_METADATA: &str = "source-tag";
/// Which queue row wrote the object (`QUEUE-UUID/ROW-ID`): an object found at a row's key
/// is known to be that row's, whichever version of its file it holds.
pub const WRITER_METADATA: &str = "s3spool-row";
/// Metadata names s3spool writes itself, refused as user metadata names.
pub const RESERVED_METADATA: [&str; 4] = [
    SHA256_METADATA,
    SOURCE_SHA256_METADATA,
    SOURCE_TAG_METADATA,
    WRITER_METADATA,
];

/// What every object of a destination is written with, besides its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectOptions {
    /// Object tags (lifecycle rules can filter on them).
    pub tags: Vec<(String, String)>,
    /// User metadata (`x-amz-meta-*`).
    pub metadata: Vec<(String, String)>,
    pub storage_class: Option<String>,
    /// `AES256`, `aws:kms` or `aws:kms:dsse`.
    pub sse: Option<String>,
    pub kms_key_id: Option<String>,
    /// A canned ACL, e.g. `bucket-owner-full-control` for cross-account buckets.
    pub acl: Option<String>,
}

impl ObjectOptions {
    /// The tags as the `x-amz-tagging` header wants them: `k1=v1&k2=v2`, URL-encoded.
    pub fn tagging(&self) -> Option<String> {
        if self.tags.is_empty() {
            return None;
        }
        let encode = |text: &str| {
            text.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        };
        Some(
            self.tags
                .iter()
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect::<Vec<_>>()
                .join("&"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagging_is_url_encoded() {
        let o = ObjectOptions {
            tags: vec![
                ("retention".into(), "30d".into()),
                ("team name".into(), "a&b=c".into()),
            ],
            ..ObjectOptions::default()
        };
        assert_eq!(
            o.tagging().as_deref(),
            Some("retention=30d&team%20name=a%26b%3Dc")
        );
        assert_eq!(ObjectOptions::default().tagging(), None);
    }
}
