//! Everything s3spool says to S3, behind one small interface.
//!
//! [`ObjectStore`] is what the uploader, the manifest writer, the sweep and `check` use;
//! it is made from a plain [`Spec`] (see [`spec`]), so nothing here knows the config's
//! types. The SDK is named in four files of this room and nowhere else: [`rusoto`] (the
//! store: S3 requests and their errors), `auth.rs` and `process.rs` (credentials: the
//! chain, STS AssumeRole, credential programs) and `net/` (the HTTP client and its
//! connector: proxies and private CAs), so moving to another SDK touches this room alone
//! ([`memory`] keeps a bucket in memory, for tests). Errors come back as [`StoreError`],
//! already sorted into transient (retry) and permanent (fail the file now) with words an
//! operator understands.

mod auth;
#[cfg(test)]
pub mod memory;
mod net;
pub mod probe;
mod process;
mod rusoto;
mod spec;

use async_trait::async_trait;
use bytes::Bytes;
use std::fmt;
use std::sync::Arc;

pub use rusoto::connect;

/// An MD5 digest of a request body; sent as `Content-MD5` so S3 rejects corrupted bodies.
pub type Md5 = [u8; 16];

/// The body of a single PUT.
pub enum PutBody {
    /// Small enough to hold in memory.
    Memory(Bytes),
    /// Streamed from this open file: `len` bytes from its start, whose MD5 was computed
    /// before. An open file, not a path, so a file swapped in meanwhile is never sent.
    File { file: std::fs::File, len: u64 },
}

/// A part that S3 accepted, for CompleteMultipartUpload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    pub number: u32,
    pub etag: String,
}

/// S3's answer to a write (PUT, part, or complete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub etag: String,
    /// False when S3 says the ETag is not an MD5 of the data (SSE-KMS, SSE-C objects).
    pub etag_is_md5: bool,
}

/// What HEAD tells about an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
    pub etag: Option<String>,
    /// The `x-amz-meta-sha256` s3spool wrote with the object, if any.
    pub sha256: Option<String>,
    /// The `x-amz-meta-source-sha256` of a converted object.
    pub source_sha256: Option<String>,
    /// The `x-amz-meta-source-tag` of an encrypted object (its source's keyed hash).
    pub source_tag: Option<String>,
    /// The `x-amz-meta-s3spool-row` of the row that wrote it (`QUEUE-UUID/ROW-ID`).
    pub written_by: Option<String>,
}

/// A part S3 holds for an open multipart upload (ListParts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub number: u32,
    pub size: u64,
    pub etag: String,
}

/// An open multipart upload (ListMultipartUploads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenUpload {
    pub key: String,
    pub upload_id: String,
    /// When S3 says the upload began.
    pub initiated: Option<chrono::DateTime<chrono::Utc>>,
}

/// An object as a listing shows it (ListObjectsV2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    /// When S3 says it was last written.
    pub last_modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// Where a page of a listing starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListFrom {
    /// The first key under the prefix.
    First,
    /// The first key after this one (which need not exist).
    After(String),
    /// Where the page before ended: its [`ListedPage::next`].
    Next(String),
}

/// One page of a listing, and where the next one starts (`None`: the last page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListedPage {
    pub objects: Vec<ListedObject>,
    pub next: Option<String>,
}

/// What an object carries besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectMeta {
    /// Hex SHA-256 of the object's bytes (for raw delivery, the source's), stored as
    /// `x-amz-meta-sha256`; none for a file sent in parts that is read only once
    /// (`large_file_sha256 = "manifest"`).
    pub sha256: Option<String>,
    /// Hex SHA-256 of the source of a converted object, stored as
    /// `x-amz-meta-source-sha256`: the same at every attempt, whatever bytes the
    /// conversion makes.
    pub source_sha256: Option<String>,
    /// For an encrypted object, the source's keyed hash in place of its SHA-256, stored
    /// as `x-amz-meta-source-tag`.
    pub source_tag: Option<String>,
    /// The row writing the object (`QUEUE-UUID/ROW-ID`), stored as `x-amz-meta-s3spool-row`.
    pub written_by: Option<String>,
    pub content_type: &'static str,
}

/// S3's largest object: 5 TiB.
pub const MAX_OBJECT_SIZE: u64 = 5 << 40;

pub use net::{host_of, is_loopback, Network, NoProxy, Proxy, ProxyUrl};
pub use spec::{
    AssumeRole, Auth, BaseIdentity, CredentialProcess, ObjectOptions, Secret, Spec, StaticKey,
    RESERVED_METADATA, SHA256_METADATA, SOURCE_SHA256_METADATA, SOURCE_TAG_METADATA,
    WRITER_METADATA,
};

/// The S3 calls s3spool makes against one bucket.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// The bucket this store writes to.
    fn bucket(&self) -> &str;
    /// The same destination (endpoint, credentials, object options) writing to another
    /// bucket: a row queued before a reload changed the bucket goes where it was queued for.
    fn with_bucket(&self, bucket: &str) -> Arc<dyn ObjectStore>;
    /// PutObject with Content-MD5, the content's SHA-256 as metadata and its Content-Type.
    async fn put_object(
        &self,
        key: &str,
        body: PutBody,
        md5: Md5,
        meta: &ObjectMeta,
    ) -> Result<Written, StoreError>;
    /// CreateMultipartUpload with the same metadata; returns the upload id.
    async fn create_multipart(&self, key: &str, meta: &ObjectMeta) -> Result<String, StoreError>;
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: Bytes,
        md5: Md5,
    ) -> Result<Written, StoreError>;
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<Written, StoreError>;
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError>;
    /// The parts S3 holds for an upload, or `None` if S3 no longer knows the upload.
    async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<Vec<PartInfo>>, StoreError>;
    /// Open multipart uploads whose keys start with `prefix`.
    async fn list_uploads(&self, prefix: &str) -> Result<Vec<OpenUpload>, StoreError>;
    async fn head_object(&self, key: &str) -> Result<Option<ObjectHead>, StoreError>;
    /// One page of the objects whose keys start with `prefix`, in key order, from where
    /// `from` says. A page at a time: a bucket of millions of objects is never held whole.
    async fn list_objects(&self, prefix: &str, from: ListFrom) -> Result<ListedPage, StoreError>;
    /// Reads the object's bytes, handing them to `chunk` as they arrive; its size, or
    /// `None` if there is no such object. Each chunk must come within the request timeout.
    async fn read_object(
        &self,
        key: &str,
        chunk: &mut (dyn for<'b> FnMut(&'b [u8]) + Send),
    ) -> Result<Option<u64>, StoreError>;
    async fn delete_object(&self, key: &str) -> Result<(), StoreError>;
    /// Fetches fresh credentials (assuming the role, where configured).
    async fn verify_credentials(&self) -> Result<(), StoreError>;
    /// When the credentials in use expire (unix milliseconds), if they are temporary.
    fn credentials_expire_at(&self) -> Option<i64> {
        None
    }
}

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Network trouble, timeouts, 5xx, throttling: retry with backoff.
    Transient,
    /// Credentials, permissions, missing bucket, bad request: retrying cannot help.
    Permanent,
}

/// A failed S3 call, in words for operators. Never carries credentials.
#[derive(Debug, Clone)]
pub struct StoreError {
    /// The S3 operation, e.g. `PutObject`.
    pub operation: &'static str,
    /// S3's error code (`AccessDenied`), or our own for local failures (`Timeout`).
    pub code: String,
    /// HTTP status, when a response came back.
    pub status: Option<u16>,
    pub message: String,
    pub class: ErrorClass,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.operation, self.reason())
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    /// Builds an error from an S3 response's status and error code.
    pub fn from_response(
        operation: &'static str,
        status: u16,
        code: Option<String>,
        message: String,
    ) -> Self {
        let code = code.unwrap_or_else(|| match status {
            301 => "PermanentRedirect".into(),
            403 => "AccessDenied".into(),
            404 => "NotFound".into(),
            _ => format!("HTTP{status}"),
        });
        let class = classify(status, &code);
        StoreError {
            operation,
            code,
            status: Some(status),
            message,
            class,
        }
    }

    /// What went wrong and what to check, without the operation's name.
    pub fn reason(&self) -> String {
        let mut out = String::new();
        if let Some(status) = self.status {
            out.push_str(&format!("{status} "));
        }
        out.push_str(&self.code);
        if !self.message.is_empty() {
            out.push_str(&format!(": {}", self.message));
        }
        if let Some(hint) = hint(&self.code) {
            out.push_str(&format!(" ({hint})"));
        }
        out
    }

    /// A failure with no response: connection refused or reset, DNS, timeout.
    pub fn transport(operation: &'static str, code: &str, message: String) -> Self {
        StoreError {
            operation,
            code: code.to_string(),
            status: None,
            message,
            class: ErrorClass::Transient,
        }
    }

    /// True when the destination gave no answer at all: the connection was refused or
    /// reset before an answer, DNS or TLS failed, or the request timed out.
    pub fn is_no_answer(&self) -> bool {
        self.status.is_none() && matches!(self.code.as_str(), "ConnectionFailed" | "Timeout")
    }

    /// S3 answered, refusing the request: a write it refused did not happen. A 5xx may
    /// come after the write was applied, and no answer tells nothing.
    pub fn refused_unwritten(&self) -> bool {
        matches!(self.status, Some(400..=499))
    }

    /// Permanent errors that are the destination's, not the file's: every file would get
    /// them (see [`is_destination_wide`]).
    pub fn is_destination_wide(&self) -> bool {
        is_destination_wide(&self.code)
    }

    /// S3 denied this request (the policy, or a bucket whose access is disabled).
    pub fn is_denied(&self) -> bool {
        self.is_access_denied() || self.code == "AllAccessDisabled"
    }

    /// `AccessDenied` itself: a policy may deny one key only.
    pub fn is_access_denied(&self) -> bool {
        self.code == "AccessDenied"
    }

    /// No answer in time (a request timeout of ours).
    pub fn is_timeout(&self) -> bool {
        self.status.is_none() && self.code == "Timeout"
    }

    /// S3 asks for fewer requests (`SlowDown`, or 503).
    pub fn is_throttled(&self) -> bool {
        self.code == "SlowDown" || self.status == Some(503)
    }

    /// S3 does not know the multipart upload (completed, aborted or expired).
    pub fn is_no_such_upload(&self) -> bool {
        self.code == "NoSuchUpload"
    }

    /// A failure that retrying cannot fix and that has no response (bad credentials setup).
    pub fn permanent(operation: &'static str, code: &str, message: String) -> Self {
        StoreError {
            operation,
            code: code.to_string(),
            status: None,
            message,
            class: ErrorClass::Permanent,
        }
    }
}

/// Sorts an S3 answer into transient or permanent.
pub fn classify(status: u16, code: &str) -> ErrorClass {
    match code {
        "SlowDown"
        | "Throttling"
        | "ThrottlingException"
        | "RequestTimeout"
        | "RequestTimeTooSkewed"
        | "InternalError"
        | "ServiceUnavailable"
        | "BadDigest"
        | "InvalidDigest"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "TokenRefreshRequired"
        | "RequestExpired"
        | "NoSuchUpload"
        | "OperationAborted" => ErrorClass::Transient,
        _ if status >= 500 || status == 429 || status == 408 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// Permanent errors that are the destination's, not the file's: every file would get
/// them. Its files then wait (back-pressure) instead of failing one by one.
fn is_destination_wide(code: &str) -> bool {
    matches!(
        code,
        "NoSuchBucket"
            | "AccessDenied"
            | "AllAccessDisabled"
            | "AccountProblem"
            | "UntrustedCertificate"
            | "ProxyRefused"
            | "BadCaFile"
            | "CredentialProcessFailed"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "InvalidBucketName"
            | "PermanentRedirect"
            | "AuthorizationHeaderMalformed"
            | "IllegalLocationConstraintException"
            | "InvalidClientTokenId"
    )
}

/// What an operator should check for the common codes.
fn hint(code: &str) -> Option<&'static str> {
    Some(match code {
        "NoSuchBucket" => "the bucket does not exist: check the destination's bucket name",
        "AccessDenied" => {
            "the credentials lack permission: check the IAM policy for this bucket and prefix"
        }
        "InvalidAccessKeyId" => "the access key id is unknown to the server: check access_key_id",
        "SignatureDoesNotMatch" => "the secret key is wrong: check secret_access_key",
        "PermanentRedirect"
        | "AuthorizationHeaderMalformed"
        | "IllegalLocationConstraintException" => {
            "wrong region: set the destination's region to the bucket's region"
        }
        "ConnectionFailed" => {
            "endpoint unreachable: check the endpoint, the network and that the server is up"
        }
        "UntrustedCertificate" => {
            "give the destination's ca_file the PEM bundle of the CA that signed the server's certificate"
        }
        "ProxyRefused" => {
            "check the user and password in the proxy URL, and that the proxy allows CONNECT to the endpoint's port"
        }
        "CredentialProcessFailed" => {
            "run the program by hand, as the user s3spool runs as, to see what it prints"
        }
        "Timeout" => "no answer in time: check the network, or raise upload.request_timeout",
        _ => return None,
    })
}

/// The ETag S3 gives a multipart object: MD5 of the parts' MD5s, then `-` and the count.
pub fn multipart_etag(part_md5s: &[Md5]) -> String {
    use md5::{Digest, Md5 as Hasher};
    let mut hasher = Hasher::new();
    for digest in part_md5s {
        hasher.update(digest);
    }
    format!("{}-{}", hex::encode(hasher.finalize()), part_md5s.len())
}

/// The text of the first `<name>` element in an S3 or STS error body (no XML parser for
/// two fields of a flat document).
fn xml_field(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{name}>"))? + start;
    Some(body[start..end].trim().to_string())
}

/// An ETag without its quotes, for comparison.
pub fn bare_etag(etag: &str) -> &str {
    etag.trim_matches('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_codes_and_statuses() {
        assert_eq!(classify(503, "SlowDown"), ErrorClass::Transient);
        assert_eq!(classify(500, "InternalError"), ErrorClass::Transient);
        assert_eq!(classify(429, "TooManyRequests"), ErrorClass::Transient);
        assert_eq!(classify(400, "RequestTimeout"), ErrorClass::Transient);
        assert_eq!(classify(403, "AccessDenied"), ErrorClass::Permanent);
        assert_eq!(classify(404, "NoSuchBucket"), ErrorClass::Permanent);
        assert_eq!(
            classify(403, "SignatureDoesNotMatch"),
            ErrorClass::Permanent
        );
        assert_eq!(classify(400, "KeyTooLongError"), ErrorClass::Permanent);
    }

    #[test]
    fn errors_read_well() {
        let e = StoreError::from_response(
            "PutObject",
            404,
            Some("NoSuchBucket".into()),
            "The specified bucket does not exist".into(),
        );
        assert_eq!(
            e.to_string(),
            "PutObject failed: 404 NoSuchBucket: The specified bucket does not exist (the bucket does not exist: check the destination's bucket name)"
        );
        let head = StoreError::from_response("HeadObject", 403, None, String::new());
        assert_eq!(head.code, "AccessDenied");
    }

    #[test]
    fn multipart_etag_matches_s3s_rule() {
        use md5::{Digest, Md5 as Hasher};
        let a: Md5 = Hasher::digest(b"hello").into();
        let b: Md5 = Hasher::digest(b"world").into();
        let mut joined = Vec::new();
        joined.extend_from_slice(&a);
        joined.extend_from_slice(&b);
        let want = format!("{}-2", hex::encode(Hasher::digest(&joined)));
        assert_eq!(multipart_etag(&[a, b]), want);
    }
}
