//! The rusoto implementation of [`ObjectStore`]: S3 requests and their answers (the
//! credentials and the HTTP client it signs and sends with are in `auth.rs`, `process.rs`
//! and `net/`).
//!
//! rusoto has no per-request timeout and no retries of its own for S3 calls; every call
//! here runs under `request_timeout`, and retrying is the uploader's business.

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use rusoto_core::{ByteStream, Region, RusotoError};
use rusoto_s3::{
    AbortMultipartUploadRequest, CompleteMultipartUploadRequest, CompletedMultipartUpload,
    CreateMultipartUploadRequest, DeleteObjectRequest, GetObjectRequest, HeadObjectRequest,
    ListMultipartUploadsRequest, ListObjectsV2Request, ListPartsRequest, PutObjectRequest,
    S3Client, UploadPartRequest, S3,
};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::auth::{credentials_error, SharedCredentials};
use super::spec::{ObjectOptions, Spec};
use super::{
    xml_field, CompletedPart, ListFrom, ListedObject, ListedPage, Md5, ObjectHead, ObjectMeta,
    ObjectStore, OpenUpload, PartInfo, PutBody, StoreError, Written, SHA256_METADATA,
    SOURCE_SHA256_METADATA, SOURCE_TAG_METADATA, WRITER_METADATA,
};
use crate::bandwidth::{within_progress, Progress, Throttle};

/// Streamed PUT bodies are read in chunks of this size.
const STREAM_CHUNK: usize = 256 * 1024;
/// How long a request waits for credentials (a renewal through STS or a credential
/// program) before its own `request_timeout` starts.
const CREDENTIALS_WAIT: Duration = Duration::from_secs(120);

struct RusotoStore {
    client: S3Client,
    /// Tags, metadata, storage class, encryption and ACL for every object written.
    object: ObjectOptions,
    credentials: SharedCredentials,
    bucket: String,
    timeout: Duration,
    /// The destination's bandwidth limit, shared by every request body it sends.
    throttle: Arc<Throttle>,
}

/// Builds the store for one destination. Fails only if TLS cannot be initialised.
pub fn connect(
    destination: &Spec,
    throttle: Arc<Throttle>,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let http = super::net::client("Connect", &destination.network)?;
    let region = match &destination.endpoint {
        Some(endpoint) => Region::Custom {
            name: destination.region.clone(),
            endpoint: endpoint.clone(),
        },
        None => destination
            .region
            .parse::<Region>()
            .unwrap_or_else(|_| Region::Custom {
                name: destination.region.clone(),
                endpoint: format!("https://s3.{}.amazonaws.com", destination.region),
            }),
    };
    let credentials = super::auth::credentials(destination)?;
    let client = S3Client::new_with(http, credentials.clone(), region);
    Ok(Arc::new(RusotoStore {
        client,
        object: destination.object.clone(),
        credentials,
        bucket: destination.bucket.clone(),
        timeout: destination.request_timeout,
        throttle,
    }))
}

/// An answer to a write must carry an ETag: S3 can answer CompleteMultipartUpload with
/// 200 and an error in the body, which rusoto parses into an output without one.
fn written(
    operation: &'static str,
    etag: Option<String>,
    sse: Option<&str>,
    sse_customer: Option<&str>,
) -> Result<Written, StoreError> {
    match etag {
        Some(etag) if !etag.trim_matches('"').is_empty() => Ok(Written {
            etag,
            etag_is_md5: !sse.is_some_and(|s| s.starts_with("aws:kms")) && sse_customer.is_none(),
        }),
        _ => Err(StoreError::transport(
            operation,
            "BadResponse",
            "the answer carried no ETag, so the write is not confirmed".into(),
        )),
    }
}

/// The destination's user metadata, and the object's identity.
/// A request that makes an object (PutObject, or CreateMultipartUpload), with everything
/// the object is written with besides its bytes: its metadata, Content-Type and the
/// destination's object options, named once for both (`$store` is a [`RusotoStore`]).
/// The fields in braces are the request's own.
macro_rules! object_request {
    ($kind:ident, $store:expr, $key:expr, $meta:expr, { $($field:ident: $value:expr),* $(,)? }) => {
        $kind {
            bucket: $store.bucket.clone(),
            key: $key.to_string(),
            metadata: Some(metadata(&$store.object, $meta)),
            content_type: Some($meta.content_type.to_string()),
            tagging: $store.object.tagging(),
            storage_class: $store.object.storage_class.clone(),
            server_side_encryption: $store.object.sse.clone(),
            ssekms_key_id: $store.object.kms_key_id.clone(),
            acl: $store.object.acl.clone(),
            $($field: $value,)*
            ..Default::default()
        }
    };
}

fn metadata(options: &ObjectOptions, meta: &ObjectMeta) -> HashMap<String, String> {
    let mut metadata: HashMap<String, String> = options.metadata.iter().cloned().collect();
    let identity = [
        (SHA256_METADATA, &meta.sha256),
        (SOURCE_SHA256_METADATA, &meta.source_sha256),
        (SOURCE_TAG_METADATA, &meta.source_tag),
        (WRITER_METADATA, &meta.written_by),
    ];
    for (name, value) in identity {
        if let Some(value) = value {
            metadata.insert(name.to_string(), value.clone());
        }
    }
    metadata
}

fn content_md5(md5: &Md5) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5)
}

impl RusotoStore {
    /// Runs one call under the request timeout and turns its error into a [`StoreError`].
    async fn call<T, E, F>(&self, operation: &'static str, fut: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, RusotoError<E>>>,
        E: std::fmt::Debug,
    {
        self.call_sending(operation, None, fut).await
    }

    /// `call` for a request with a body. A body paced by a bandwidth limit reports its
    /// `progress`: the request then times out after `request_timeout` without a byte
    /// moving (waits for the limit excepted), however long the whole body takes.
    async fn call_sending<T, E, F>(
        &self,
        operation: &'static str,
        progress: Option<Progress>,
        fut: F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, RusotoError<E>>>,
        E: std::fmt::Debug,
    {
        // Credentials first, on their own clock: STS or a credential program slower than
        // `request_timeout` must not pass for a silent endpoint, nor be cut off at every
        // try and never succeed. Fresh ones are taken from the cache at once.
        self.credentials.0.verify(CREDENTIALS_WAIT).await?;
        let answer = match &progress {
            None => tokio::time::timeout(self.timeout, fut).await.ok(),
            Some(progress) => within_progress(self.timeout, progress, fut).await,
        };
        match answer {
            Some(Ok(value)) => Ok(value),
            Some(Err(e)) => {
                let mut e = convert(operation, e);
                if operation == "HeadObject" && e.status == Some(400) && e.code == "HTTP400" {
                    // HEAD answers carry no body: a 400 there is how an expired token shows.
                    e.code = "ExpiredToken".into();
                    e.class = super::ErrorClass::Transient;
                }
                if matches!(
                    e.code.as_str(),
                    "ExpiredToken" | "ExpiredTokenException" | "TokenRefreshRequired"
                ) {
                    // Renewed by the next request, which the retry makes at once.
                    tracing::info!(operation, "the credentials expired early; renewing them");
                    self.credentials.0.invalidate().await;
                }
                Err(e)
            }
            None => Err(StoreError::transport(
                operation,
                "Timeout",
                if progress.is_some() {
                    format!("nothing moved for {:?}", self.timeout)
                } else {
                    format!("no answer within {:?}", self.timeout)
                },
            )),
        }
    }
}

/// Maps a rusoto error to our own, pulling S3's `<Code>` and `<Message>` out of the body.
fn convert<E: std::fmt::Debug>(operation: &'static str, error: RusotoError<E>) -> StoreError {
    match error {
        RusotoError::Service(e) => {
            // rusoto's service errors are variants like `NoSuchUpload("…")`.
            let text = format!("{e:?}");
            let (code, message) = match text.split_once('(') {
                Some((code, rest)) => (
                    code.to_string(),
                    rest.trim_end_matches(')').trim_matches('"').to_string(),
                ),
                None => (text.clone(), String::new()),
            };
            let status = if code.starts_with("NoSuch") { 404 } else { 400 };
            StoreError::from_response(operation, status, Some(code), message)
        }
        RusotoError::HttpDispatch(e) => super::net::connect_failure(operation, &e.to_string()),
        // The request never left: getting credentials failed (STS, the chain).
        RusotoError::Credentials(e) => {
            let source = if e.message.contains("Sts") {
                "AssumeRole"
            } else {
                "GetCredentials"
            };
            let _ = operation;
            credentials_error(source, &e)
        }
        RusotoError::Validation(m) => StoreError::permanent(operation, "InvalidRequest", m),
        RusotoError::ParseError(m) => StoreError::transport(operation, "BadResponse", m),
        RusotoError::Unknown(response) => {
            let body = String::from_utf8_lossy(&response.body);
            StoreError::from_response(
                operation,
                response.status.as_u16(),
                xml_field(&body, "Code"),
                xml_field(&body, "Message").unwrap_or_default(),
            )
        }
        RusotoError::Blocking => StoreError::transport(operation, "Blocking", String::new()),
    }
}

/// The body of a request, and its progress when a bandwidth limit paces it.
type Body = (ByteStream, Option<Progress>);

async fn file_stream(
    file: std::fs::File,
    len: u64,
    throttle: &Arc<Throttle>,
) -> Result<Body, StoreError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::from_std(file);
    // A duplicated descriptor shares its offset with the original: start from 0.
    file.seek(std::io::SeekFrom::Start(0))
        .await
        .map_err(|e| StoreError::permanent("PutObject", "SourceUnreadable", e.to_string()))?;
    let reader = tokio_util::io::ReaderStream::with_capacity(file.take(len), STREAM_CHUNK);
    let (stream, progress) = throttled(reader, throttle);
    Ok((ByteStream::new_with_size(stream, len as usize), progress))
}

/// A body in memory as a stream, paced by the destination's bandwidth limit.
fn memory_stream(bytes: Bytes, throttle: &Arc<Throttle>) -> Body {
    let len = bytes.len();
    let once = futures::stream::once(async { Ok::<_, std::io::Error>(bytes) });
    let (stream, progress) = throttled(once, throttle);
    (ByteStream::new_with_size(stream, len), progress)
}

/// A body stream: paced by a limit, or as it came.
type BodyStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<Bytes>> + Send + Sync>>;

/// `chunks` cut into pieces sized for the rate in force (at most 16 KiB), each sent when
/// the limit allows, with the body's progress; as it is when no limit applies. A limit
/// added by a reload applies to the bodies started after it.
fn throttled<S>(chunks: S, throttle: &Arc<Throttle>) -> (BodyStream, Option<Progress>)
where
    S: futures::Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static,
{
    use futures::StreamExt;
    if !throttle.limits() {
        return (Box::pin(chunks), None);
    }
    let throttle = Arc::clone(throttle);
    let progress = Progress::default();
    let moved = progress.clone();
    let stream = Box::pin(
        chunks
            .flat_map({
                let throttle = Arc::clone(&throttle);
                // Cut as sent, each piece at the rate in force then: a part of 16 MiB is
                // not a million small pieces made up front, and a new rate applies from
                // the next piece.
                move |chunk| {
                    let throttle = Arc::clone(&throttle);
                    let (bytes, error) = match chunk {
                        Ok(bytes) => (bytes, None),
                        Err(e) => (Bytes::new(), Some(e)),
                    };
                    let pieces = futures::stream::unfold((bytes, 0), move |(bytes, at)| {
                        let size = throttle.piece_size();
                        async move {
                            (at < bytes.len()).then(|| {
                                let end = (at + size).min(bytes.len());
                                (Ok(bytes.slice(at..end)), (bytes, end))
                            })
                        }
                    });
                    futures::stream::iter(error.map(Err)).chain(pieces)
                }
            })
            .then(move |piece| {
                let (throttle, moved) = (Arc::clone(&throttle), moved.clone());
                async move {
                    if let Ok(bytes) = &piece {
                        moved.waiting(true);
                        throttle.take(bytes.len()).await;
                        moved.waiting(false);
                    }
                    piece
                }
            }),
    );
    (stream, Some(progress))
}

#[async_trait]
impl ObjectStore for RusotoStore {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    fn with_bucket(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(RusotoStore {
            client: self.client.clone(),
            object: self.object.clone(),
            credentials: self.credentials.clone(),
            bucket: bucket.to_string(),
            timeout: self.timeout,
            throttle: Arc::clone(&self.throttle),
        })
    }

    async fn put_object(
        &self,
        key: &str,
        body: PutBody,
        md5: Md5,
        meta: &ObjectMeta,
    ) -> Result<Written, StoreError> {
        let ((stream, progress), len) = match body {
            PutBody::Memory(bytes) => {
                let len = bytes.len() as u64;
                (memory_stream(bytes, &self.throttle), len)
            }
            PutBody::File { file, len } => (file_stream(file, len, &self.throttle).await?, len),
        };
        let request = object_request!(PutObjectRequest, self, key, meta, {
            body: Some(stream),
            content_length: Some(len as i64),
            content_md5: Some(content_md5(&md5)),
        });
        let out = self
            .call_sending("PutObject", progress, self.client.put_object(request))
            .await?;
        let (sse, sse_c) = (out.server_side_encryption, out.sse_customer_algorithm);
        written("PutObject", out.e_tag, sse.as_deref(), sse_c.as_deref())
    }

    async fn create_multipart(&self, key: &str, meta: &ObjectMeta) -> Result<String, StoreError> {
        let request = object_request!(CreateMultipartUploadRequest, self, key, meta, {});
        let out = self
            .call(
                "CreateMultipartUpload",
                self.client.create_multipart_upload(request),
            )
            .await?;
        out.upload_id.ok_or_else(|| {
            StoreError::transport(
                "CreateMultipartUpload",
                "BadResponse",
                "no UploadId in the answer".into(),
            )
        })
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: Bytes,
        md5: Md5,
    ) -> Result<Written, StoreError> {
        let len = body.len();
        let (stream, progress) = memory_stream(body, &self.throttle);
        let request = UploadPartRequest {
            bucket: self.bucket.clone(),
            key: key.to_string(),
            upload_id: upload_id.to_string(),
            part_number: i64::from(number),
            content_length: Some(len as i64),
            content_md5: Some(content_md5(&md5)),
            body: Some(stream),
            ..Default::default()
        };
        let out = self
            .call_sending("UploadPart", progress, self.client.upload_part(request))
            .await?;
        let (sse, sse_c) = (out.server_side_encryption, out.sse_customer_algorithm);
        written("UploadPart", out.e_tag, sse.as_deref(), sse_c.as_deref())
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<Written, StoreError> {
        let request = CompleteMultipartUploadRequest {
            bucket: self.bucket.clone(),
            key: key.to_string(),
            upload_id: upload_id.to_string(),
            multipart_upload: Some(CompletedMultipartUpload {
                parts: Some(
                    parts
                        .iter()
                        .map(|p| rusoto_s3::CompletedPart {
                            e_tag: Some(p.etag.clone()),
                            part_number: Some(i64::from(p.number)),
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        };
        let out = self
            .call(
                "CompleteMultipartUpload",
                self.client.complete_multipart_upload(request),
            )
            .await?;
        // The output does not say whether SSE-C was used; the parts' answers did.
        let sse = out.server_side_encryption;
        written("CompleteMultipartUpload", out.e_tag, sse.as_deref(), None)
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        let request = AbortMultipartUploadRequest {
            bucket: self.bucket.clone(),
            key: key.to_string(),
            upload_id: upload_id.to_string(),
            ..Default::default()
        };
        self.call(
            "AbortMultipartUpload",
            self.client.abort_multipart_upload(request),
        )
        .await
        .map(drop)
    }

    async fn head_object(&self, key: &str) -> Result<Option<ObjectHead>, StoreError> {
        let request = HeadObjectRequest {
            bucket: self.bucket.clone(),
            key: key.to_string(),
            ..Default::default()
        };
        match self
            .call("HeadObject", self.client.head_object(request))
            .await
        {
            Ok(out) => {
                let mut metadata = out.metadata.unwrap_or_default();
                Ok(Some(ObjectHead {
                    size: out.content_length.unwrap_or(0).max(0) as u64,
                    etag: out.e_tag,
                    sha256: metadata.remove(SHA256_METADATA),
                    source_sha256: metadata.remove(SOURCE_SHA256_METADATA),
                    source_tag: metadata.remove(SOURCE_TAG_METADATA),
                    written_by: metadata.remove(WRITER_METADATA),
                }))
            }
            Err(e) if e.status == Some(404) && e.code != "NoSuchBucket" => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn list_objects(&self, prefix: &str, from: ListFrom) -> Result<ListedPage, StoreError> {
        let (start_after, continuation_token) = match from {
            ListFrom::First => (None, None),
            ListFrom::After(key) => (Some(key), None),
            ListFrom::Next(token) => (None, Some(token)),
        };
        let request = ListObjectsV2Request {
            bucket: self.bucket.clone(),
            prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
            start_after,
            continuation_token,
            ..Default::default()
        };
        let out = self
            .call("ListObjectsV2", self.client.list_objects_v2(request))
            .await?;
        let objects = out
            .contents
            .unwrap_or_default()
            .into_iter()
            .filter_map(|o| {
                Some(ListedObject {
                    key: o.key?,
                    size: o.size.unwrap_or(0).max(0) as u64,
                    etag: o.e_tag,
                    last_modified: o
                        .last_modified
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                        .map(|t| t.with_timezone(&chrono::Utc)),
                })
            })
            .collect();
        let next = out
            .next_continuation_token
            .filter(|_| out.is_truncated == Some(true));
        Ok(ListedPage { objects, next })
    }

    async fn read_object(
        &self,
        key: &str,
        chunk: &mut (dyn for<'b> FnMut(&'b [u8]) + Send),
    ) -> Result<Option<u64>, StoreError> {
        use futures::StreamExt;
        let request = GetObjectRequest {
            bucket: self.bucket.clone(),
            key: key.to_string(),
            ..Default::default()
        };
        let out = match self
            .call("GetObject", self.client.get_object(request))
            .await
        {
            Ok(out) => out,
            Err(e) if e.status == Some(404) && e.code != "NoSuchBucket" => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(mut body) = out.body else {
            return Ok(Some(0));
        };
        let mut read = 0u64;
        loop {
            // A body that stops moving is a timeout, however long the whole object takes.
            match tokio::time::timeout(self.timeout, body.next()).await {
                Ok(Some(Ok(bytes))) => {
                    read += bytes.len() as u64;
                    chunk(&bytes);
                }
                Ok(None) => return Ok(Some(read)),
                Ok(Some(Err(e))) => {
                    return Err(StoreError::transport(
                        "GetObject",
                        "ReadError",
                        format!("reading the object failed: {e}"),
                    ))
                }
                Err(_) => {
                    return Err(StoreError::transport(
                        "GetObject",
                        "Timeout",
                        format!(
                            "no bytes of the object for {} s (request_timeout)",
                            self.timeout.as_secs()
                        ),
                    ))
                }
            }
        }
    }

    async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<Vec<PartInfo>>, StoreError> {
        let mut parts = Vec::new();
        let mut marker = None;
        loop {
            let request = ListPartsRequest {
                bucket: self.bucket.clone(),
                key: key.to_string(),
                upload_id: upload_id.to_string(),
                part_number_marker: marker,
                ..Default::default()
            };
            let out = match self
                .call("ListParts", self.client.list_parts(request))
                .await
            {
                Ok(out) => out,
                Err(e) if e.code == "NoSuchUpload" => return Ok(None),
                Err(e) => return Err(e),
            };
            for part in out.parts.unwrap_or_default() {
                if let (Some(number), Some(etag)) = (part.part_number, part.e_tag) {
                    parts.push(PartInfo {
                        number: number as u32,
                        size: part.size.unwrap_or(0).max(0) as u64,
                        etag,
                    });
                }
            }
            match (out.is_truncated, out.next_part_number_marker) {
                (Some(true), Some(next)) => marker = Some(next),
                _ => return Ok(Some(parts)),
            }
        }
    }

    async fn list_uploads(&self, prefix: &str) -> Result<Vec<OpenUpload>, StoreError> {
        let mut uploads = Vec::new();
        let (mut key_marker, mut id_marker) = (None, None);
        loop {
            let request = ListMultipartUploadsRequest {
                bucket: self.bucket.clone(),
                prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
                key_marker: key_marker.take(),
                upload_id_marker: id_marker.take(),
                ..Default::default()
            };
            let out = self
                .call(
                    "ListMultipartUploads",
                    self.client.list_multipart_uploads(request),
                )
                .await?;
            for upload in out.uploads.unwrap_or_default() {
                if let (Some(key), Some(upload_id)) = (upload.key, upload.upload_id) {
                    let initiated = upload
                        .initiated
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                        .map(|t| t.with_timezone(&chrono::Utc));
                    uploads.push(OpenUpload {
                        key,
                        upload_id,
                        initiated,
                    });
                }
            }
            if out.is_truncated != Some(true) || out.next_key_marker.is_none() {
                return Ok(uploads);
            }
            key_marker = out.next_key_marker;
            id_marker = out.next_upload_id_marker;
        }
    }

    async fn verify_credentials(&self) -> Result<(), StoreError> {
        self.credentials.0.invalidate().await;
        self.credentials.0.verify(self.timeout).await
    }

    fn credentials_expire_at(&self) -> Option<i64> {
        self.credentials.0.expire_at()
    }

    async fn delete_object(&self, key: &str) -> Result<(), StoreError> {
        let request = DeleteObjectRequest {
            bucket: self.bucket.clone(),
            key: key.to_string(),
            ..Default::default()
        };
        self.call("DeleteObject", self.client.delete_object(request))
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_without_an_etag_is_not_confirmed() {
        let err = written("CompleteMultipartUpload", None, None, None).unwrap_err();
        assert_eq!(
            (err.code.as_str(), err.class),
            ("BadResponse", super::super::ErrorClass::Transient)
        );
        assert!(written("PutObject", Some("\"\"".into()), None, None).is_err());
        let kms = written("PutObject", Some("\"abc\"".into()), Some("aws:kms"), None).unwrap();
        assert!(!kms.etag_is_md5);
        let plain = written("PutObject", Some("\"abc\"".into()), Some("AES256"), None).unwrap();
        assert!(plain.etag_is_md5);
    }

    #[test]
    fn pulls_code_and_message_from_s3_xml() {
        let body = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>";
        assert_eq!(xml_field(body, "Code").as_deref(), Some("NoSuchBucket"));
        assert_eq!(
            xml_field(body, "Message").as_deref(),
            Some("The specified bucket does not exist")
        );
        assert_eq!(xml_field(body, "Resource"), None);
    }
}
