//! An [`ObjectStore`] held in memory, for tests of the code above `s3/` (and for measuring
//! s3spool's own cost per file with no server at all): it keeps objects and multipart
//! uploads like S3 does, checks every Content-MD5, records each request, and fails the
//! requests a test tells it to.

use async_trait::async_trait;
use bytes::Bytes;
use md5::{Digest, Md5 as Hasher};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use super::{
    multipart_etag, CompletedPart, Md5, ObjectHead, ObjectMeta, ObjectStore, OpenUpload, PartInfo,
    PutBody, StoreError, Written,
};

/// A stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub bytes: Bytes,
    pub etag: String,
    pub sha256: Option<String>,
    pub source_sha256: Option<String>,
    pub source_tag: Option<String>,
    pub written_by: Option<String>,
    pub content_type: String,
}

struct Upload {
    key: String,
    /// When it was created, as S3 says in a listing.
    initiated: chrono::DateTime<chrono::Utc>,
    meta: Option<ObjectMeta>,
    parts: BTreeMap<u32, (Bytes, Md5)>,
}

#[derive(Default)]
struct State {
    objects: HashMap<String, Object>,
    uploads: HashMap<String, Upload>,
    next_upload: u64,
    /// Every request, as `Operation key`.
    requests: Vec<String>,
    /// Errors for the next requests of an operation, in order.
    faults: VecDeque<(&'static str, StoreError)>,
    /// Errors for the next writes of an operation, returned after the write is applied
    /// (an answer lost on its way back).
    lost: VecDeque<(&'static str, StoreError)>,
    /// Objects written per key, as a versioned bucket counts them.
    writes: HashMap<String, usize>,
    /// Every request fails with this until cleared (an outage, a missing bucket).
    down: Option<StoreError>,
    /// Called with each request's operation and key before it is served.
    hook: Option<Hook>,
}

type Hook = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// An in-memory bucket. Clones share it.
#[derive(Clone)]
pub struct MemoryStore {
    bucket: String,
    state: Arc<Mutex<State>>,
}

impl MemoryStore {
    pub fn new(bucket: &str) -> MemoryStore {
        MemoryStore {
            bucket: bucket.to_string(),
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next request of `operation` (e.g. `PutObject`) fails with `error`; faults
    /// queue up in the order given.
    pub fn fail_next(&self, operation: &'static str, error: StoreError) {
        self.lock().faults.push_back((operation, error));
    }

    /// The next write of `operation` (`PutObject`, `CompleteMultipartUpload`) is applied,
    /// then answered with `error`, as if the answer were lost on its way back.
    pub fn lose_next_answer(&self, operation: &'static str, error: StoreError) {
        self.lock().lost.push_back((operation, error));
    }

    /// How many times an object was written under `key` (a versioned bucket's versions).
    pub fn writes(&self, key: &str) -> usize {
        self.lock().writes.get(key).copied().unwrap_or(0)
    }

    /// Every request fails with `error` until `down(None)`.
    pub fn down(&self, error: Option<StoreError>) {
        self.lock().down = error;
    }

    /// Calls `hook(operation, key)` before each request is served (outside the store's
    /// lock): a test changes the world at an exact point of an upload.
    pub fn on_request(&self, hook: impl Fn(&str, &str) + Send + Sync + 'static) {
        self.lock().hook = Some(Arc::new(hook));
    }

    pub fn object(&self, key: &str) -> Option<Object> {
        self.lock().objects.get(key).cloned()
    }

    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.lock().objects.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Every request so far, as `Operation key`.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// Requests of `operation` so far.
    pub fn count(&self, operation: &str) -> usize {
        let prefix = format!("{operation} ");
        self.lock()
            .requests
            .iter()
            .filter(|r| r.starts_with(&prefix))
            .count()
    }

    /// Multipart uploads S3 would still hold.
    pub fn open_uploads(&self) -> usize {
        self.lock().uploads.len()
    }

    /// Stores `object` under `key`, counting the write; then answers as told.
    fn write(
        &self,
        operation: &'static str,
        key: &str,
        object: Object,
    ) -> Result<Written, StoreError> {
        let mut state = self.lock();
        let etag = object.etag.clone();
        state.objects.insert(key.to_string(), object);
        *state.writes.entry(key.to_string()).or_default() += 1;
        if let Some(at) = state.lost.iter().position(|(op, _)| *op == operation) {
            let (_, e) = state.lost.remove(at).expect("position is in range");
            return Err(e);
        }
        Ok(Written {
            etag,
            etag_is_md5: true,
        })
    }

    /// Records the request and returns the fault it must fail with, if any.
    fn begin(&self, operation: &'static str, key: &str) -> Result<(), StoreError> {
        let hook = self.lock().hook.clone();
        if let Some(hook) = hook {
            hook(operation, key);
        }
        let mut state = self.lock();
        state.requests.push(format!("{operation} {key}"));
        if let Some(down) = &state.down {
            let mut e = down.clone();
            e.operation = operation;
            return Err(e);
        }
        if let Some(at) = state.faults.iter().position(|(op, _)| *op == operation) {
            let (_, e) = state.faults.remove(at).expect("position is in range");
            return Err(e);
        }
        Ok(())
    }
}

fn bad_digest(operation: &'static str) -> StoreError {
    StoreError::from_response(
        operation,
        400,
        Some("BadDigest".into()),
        "the Content-MD5 does not match the body".into(),
    )
}

fn no_such_upload(operation: &'static str) -> StoreError {
    StoreError::from_response(operation, 404, Some("NoSuchUpload".into()), String::new())
}

fn quoted(md5: &Md5) -> String {
    format!("\"{}\"", hex::encode(md5))
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    fn with_bucket(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(MemoryStore::new(bucket))
    }

    async fn put_object(
        &self,
        key: &str,
        body: PutBody,
        md5: Md5,
        meta: &ObjectMeta,
    ) -> Result<Written, StoreError> {
        self.begin("PutObject", key)?;
        let bytes = match body {
            PutBody::Memory(bytes) => bytes,
            PutBody::File { file, len } => {
                let mut buf = vec![0; len as usize];
                file.read_exact_at(&mut buf, 0).map_err(|e| {
                    StoreError::permanent("PutObject", "SourceUnreadable", e.to_string())
                })?;
                Bytes::from(buf)
            }
        };
        let got: Md5 = Hasher::digest(&bytes).into();
        if got != md5 {
            return Err(bad_digest("PutObject"));
        }
        let object = Object {
            bytes,
            etag: quoted(&md5),
            sha256: meta.sha256.clone(),
            source_sha256: meta.source_sha256.clone(),
            source_tag: meta.source_tag.clone(),
            written_by: meta.written_by.clone(),
            content_type: meta.content_type.to_string(),
        };
        self.write("PutObject", key, object)
    }

    async fn create_multipart(&self, key: &str, meta: &ObjectMeta) -> Result<String, StoreError> {
        self.begin("CreateMultipartUpload", key)?;
        let mut state = self.lock();
        state.next_upload += 1;
        let id = format!("upload-{}", state.next_upload);
        state.uploads.insert(
            id.clone(),
            Upload {
                key: key.to_string(),
                initiated: crate::clock::now(),
                meta: Some(meta.clone()),
                parts: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: Bytes,
        md5: Md5,
    ) -> Result<Written, StoreError> {
        self.begin("UploadPart", key)?;
        let got: Md5 = Hasher::digest(&body).into();
        if got != md5 {
            return Err(bad_digest("UploadPart"));
        }
        let mut state = self.lock();
        let upload = state
            .uploads
            .get_mut(upload_id)
            .filter(|u| u.key == key)
            .ok_or_else(|| no_such_upload("UploadPart"))?;
        upload.parts.insert(number, (body, md5));
        Ok(Written {
            etag: quoted(&md5),
            etag_is_md5: true,
        })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<Written, StoreError> {
        self.begin("CompleteMultipartUpload", key)?;
        let mut state = self.lock();
        let upload = state
            .uploads
            .get(upload_id)
            .filter(|u| u.key == key)
            .ok_or_else(|| no_such_upload("CompleteMultipartUpload"))?;
        let mut joined = Vec::new();
        let mut md5s = Vec::new();
        for part in parts {
            let Some((bytes, md5)) = upload.parts.get(&part.number) else {
                return Err(StoreError::from_response(
                    "CompleteMultipartUpload",
                    400,
                    Some("InvalidPart".into()),
                    format!("part {} was never uploaded", part.number),
                ));
            };
            if super::bare_etag(&part.etag) != hex::encode(md5) {
                return Err(StoreError::from_response(
                    "CompleteMultipartUpload",
                    400,
                    Some("InvalidPart".into()),
                    format!("part {} has another ETag", part.number),
                ));
            }
            joined.extend_from_slice(bytes);
            md5s.push(*md5);
        }
        let meta = upload.meta.clone().unwrap_or(ObjectMeta {
            content_type: "application/octet-stream",
            ..ObjectMeta::default()
        });
        state.uploads.remove(upload_id);
        drop(state);
        let object = Object {
            bytes: Bytes::from(joined),
            etag: format!("\"{}\"", multipart_etag(&md5s)),
            sha256: meta.sha256,
            source_sha256: meta.source_sha256,
            source_tag: meta.source_tag,
            written_by: meta.written_by,
            content_type: meta.content_type.to_string(),
        };
        self.write("CompleteMultipartUpload", key, object)
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        self.begin("AbortMultipartUpload", key)?;
        match self.lock().uploads.remove(upload_id) {
            Some(_) => Ok(()),
            None => Err(no_such_upload("AbortMultipartUpload")),
        }
    }

    async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<Vec<PartInfo>>, StoreError> {
        self.begin("ListParts", key)?;
        Ok(self.lock().uploads.get(upload_id).map(|u| {
            u.parts
                .iter()
                .map(|(number, (bytes, md5))| PartInfo {
                    number: *number,
                    size: bytes.len() as u64,
                    etag: quoted(md5),
                })
                .collect()
        }))
    }

    async fn list_uploads(&self, prefix: &str) -> Result<Vec<OpenUpload>, StoreError> {
        self.begin("ListMultipartUploads", prefix)?;
        Ok(self
            .lock()
            .uploads
            .iter()
            .filter(|(_, u)| u.key.starts_with(prefix))
            .map(|(id, u)| OpenUpload {
                key: u.key.clone(),
                upload_id: id.clone(),
                initiated: Some(u.initiated),
            })
            .collect())
    }

    async fn head_object(&self, key: &str) -> Result<Option<ObjectHead>, StoreError> {
        self.begin("HeadObject", key)?;
        Ok(self.lock().objects.get(key).map(|o| ObjectHead {
            size: o.bytes.len() as u64,
            etag: Some(o.etag.clone()),
            sha256: o.sha256.clone(),
            source_sha256: o.source_sha256.clone(),
            source_tag: o.source_tag.clone(),
            written_by: o.written_by.clone(),
        }))
    }

    async fn list_objects(
        &self,
        prefix: &str,
        from: super::ListFrom,
    ) -> Result<super::ListedPage, StoreError> {
        self.begin("ListObjectsV2", prefix)?;
        // This store's `next` is the page's last key.
        let after = match from {
            super::ListFrom::First => None,
            super::ListFrom::After(key) | super::ListFrom::Next(key) => Some(key),
        };
        let state = self.lock();
        let mut keys: Vec<&String> = state
            .objects
            .keys()
            .filter(|k| k.starts_with(prefix) && after.as_ref().is_none_or(|a| *k > a))
            .collect();
        keys.sort();
        // Pages of two: paging is exercised by the smallest test.
        let next = (keys.len() > 2).then(|| keys[1].clone());
        let objects = keys
            .into_iter()
            .take(2)
            .map(|k| super::ListedObject {
                key: k.clone(),
                size: state.objects[k].bytes.len() as u64,
                etag: Some(state.objects[k].etag.clone()),
                last_modified: None,
            })
            .collect();
        Ok(super::ListedPage { objects, next })
    }

    async fn read_object(
        &self,
        key: &str,
        chunk: &mut (dyn for<'b> FnMut(&'b [u8]) + Send),
    ) -> Result<Option<u64>, StoreError> {
        self.begin("GetObject", key)?;
        let bytes = self.lock().objects.get(key).map(|o| o.bytes.clone());
        Ok(bytes.map(|b| {
            chunk(&b);
            b.len() as u64
        }))
    }

    async fn delete_object(&self, key: &str) -> Result<(), StoreError> {
        self.begin("DeleteObject", key)?;
        self.lock().objects.remove(key);
        Ok(())
    }

    async fn verify_credentials(&self) -> Result<(), StoreError> {
        self.begin("VerifyCredentials", "")
    }
}
