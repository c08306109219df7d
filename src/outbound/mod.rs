//! A destination as every upload to it shares it: its store, its settings, the request
//! slots that adapt to S3's pushback ([`limit`]) and its bandwidth limit. The uploader
//! sends through it, the manifest writer and the orphan sweep reach S3 through it.

pub mod limit;

use std::sync::Arc;

use crate::config::UploadSettings;
use crate::s3::ObjectStore;
use limit::AdaptiveLimit;

/// A destination's store and the limits shared by every upload to it.
pub struct Target {
    pub name: String,
    /// The destination's key prefix (empty, or ending in `/`).
    pub prefix: String,
    pub store: Arc<dyn ObjectStore>,
    pub settings: UploadSettings,
    pub limit: Arc<AdaptiveLimit>,
    /// The destination's bandwidth limit (the same one its store's bodies draw from).
    pub throttle: Arc<crate::bandwidth::Throttle>,
}

impl Target {
    /// The store for `bucket`: the destination's own, or (for a row queued before a reload
    /// changed the bucket) the same destination writing to the bucket the row recorded.
    pub fn store_for(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        if self.store.bucket() == bucket {
            Arc::clone(&self.store)
        } else {
            self.store.with_bucket(bucket)
        }
    }
}
