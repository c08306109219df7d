//! What an earlier attempt may have left under a row's key.
//!
//! A row whose earlier attempt may have made its object (`maybe_sent`: a PUT or a
//! CompleteMultipartUpload went out and got no answer, or the daemon stopped or died with
//! the row in flight) asks HEAD before it sends. What it finds is judged by what does not
//! change between attempts: the source's SHA-256 (`x-amz-meta-sha256` of a raw object,
//! `x-amz-meta-source-sha256` of a converted one), or for an encrypted one, whose own
//! bytes encryption makes anew each time, its keyed hash (`x-amz-meta-source-tag`), and
//! the row that wrote it (`x-amz-meta-s3spool-row`), never the bytes a conversion makes
//! again.

use std::fs::File;
use std::sync::Arc;

use super::error::TransferError;
use super::job::hash_file;
use super::source_tag::{self, SourceTags};
use crate::outbound::Target;
use crate::queue::FileRow;
use crate::s3::ObjectHead;

/// What is under a row's key.
#[derive(Debug, PartialEq, Eq)]
pub enum AtKey {
    /// Nothing, or nothing that this row wrote of another version: send.
    Nothing,
    /// The file as the source reads now: it was delivered.
    Same(ObjectHead),
    /// An earlier version of the file, written by this very row: that version was
    /// delivered, and the file now at the path is a later one.
    Earlier(ObjectHead),
}

/// The source as it reads now, as an object made of it is recognised.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub sha256: &'a str,
    pub size: u64,
    /// Its keyed hash, as an encrypted object carries it.
    pub tag: &'a str,
}

/// Whether the object was made by a conversion or encryption (it says so by carrying its
/// source's hash or tag), whatever the spool's format is now.
pub fn converted(head: &ObjectHead) -> bool {
    head.source_sha256.is_some() || head.source_tag.is_some()
}

/// Judges what HEAD found under the key of the row that writes as `writer`. `recorded` is
/// the SHA-256 the row recorded before it completed a multipart upload it hashed while
/// sending (such an object carries none).
pub fn judge(
    head: Option<ObjectHead>,
    writer: &str,
    source: Source<'_>,
    recorded: Option<&str>,
) -> AtKey {
    let Some(head) = head else {
        return AtKey::Nothing;
    };
    let ours = head.written_by.as_deref() == Some(writer);
    // The object says how it was made, whatever the spool's format is now (a reload may
    // have changed it between attempts): a converted or encrypted object carries its
    // source's SHA-256, a raw one its own, which is its source's.
    let converted = converted(&head);
    let same = if let Some(tag) = head.source_tag.as_deref() {
        // Encrypted: its source is told by the tag alone.
        tag == source.tag
    } else {
        let carried = head.source_sha256.as_deref().or(head.sha256.as_deref());
        // A raw object hashed while sent carries no SHA-256; its row recorded it.
        let content = carried.or(if ours { recorded } else { None });
        // A raw object must also be as long as the file (a work file's length may vary).
        content == Some(source.sha256) && (converted || head.size == source.size)
    };
    // Whether what it holds can be told at all: not by a tag made under another key (the
    // key file lost or replaced), which must not pass for an earlier version.
    let content = match head.source_tag.as_deref() {
        Some(tag) => source_tag::same_key(tag, source.tag),
        None => {
            head.source_sha256.is_some() || head.sha256.is_some() || (ours && recorded.is_some())
        }
    };
    match (same, ours, content) {
        (true, _, _) => AtKey::Same(head),
        (false, true, true) => AtKey::Earlier(head),
        // Another writer's object, or one whose content cannot be told: sent over, as
        // a key that is not unique per row means.
        _ => AtKey::Nothing,
    }
}

/// Hashes the source (on a blocking thread) and asks HEAD what is under the row's key.
/// A HEAD refused with 403 (no s3:ListBucket: S3 cannot say "missing") tells nothing.
pub async fn look(
    target: &Target,
    row: &FileRow,
    writer: &str,
    source: &Arc<File>,
    size: u64,
    tags: &SourceTags,
) -> Result<(AtKey, String), TransferError> {
    let key = row.key.as_deref().unwrap_or_default();
    let (_, sha256) = hash_file(Arc::clone(source), size).await?;
    let store = target.store_for(&row.bucket);
    let permit = target.limit.acquire(0).await;
    let result = store.head_object(key).await;
    drop(permit);
    if let Some(now) = target.limit.observe(&result) {
        tracing::info!(destination = %target.name, concurrency = now, "request concurrency adjusted");
    }
    let head = match result {
        Ok(head) => head,
        Err(e) if e.status == Some(403) => {
            tracing::debug!(key, "HEAD refused (no s3:ListBucket?); sending the file");
            None
        }
        Err(e) => return Err(TransferError::Store(e)),
    };
    let tag = tags.of(&sha256);
    let source = Source {
        sha256: &sha256,
        size,
        tag: &tag,
    };
    let found = judge(head, writer, source, row.sha256.as_deref());
    Ok((found, sha256))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "q/7";

    fn head(sha256: Option<&str>, source: Option<&str>, by: Option<&str>, size: u64) -> ObjectHead {
        ObjectHead {
            size,
            etag: Some("\"e\"".into()),
            sha256: sha256.map(str::to_string),
            source_sha256: source.map(str::to_string),
            source_tag: None,
            written_by: by.map(str::to_string),
        }
    }

    fn raw(sha256: &str) -> Source<'_> {
        Source {
            sha256,
            size: 10,
            tag: "k1:tag of another",
        }
    }

    /// A spool that converts: judged the same way, by what the object says.
    fn converted(sha256: &str) -> Source<'_> {
        raw(sha256)
    }

    /// An encrypted object: it carries its source's tag, no hash of the source.
    fn sealed(tag: &str, by: &str) -> ObjectHead {
        ObjectHead {
            source_tag: Some(tag.into()),
            ..head(Some("random bytes"), None, Some(by), 99)
        }
    }

    #[test]
    fn an_encrypted_object_is_judged_by_its_sources_tag() {
        let now = Source {
            sha256: "a",
            size: 10,
            tag: "k1:T(a)",
        };
        let same = sealed("k1:T(a)", ME);
        assert_eq!(judge(Some(same.clone()), ME, now, None), AtKey::Same(same));
        // Another row's object with the same tag is the same source, as with a hash.
        let theirs = sealed("k1:T(a)", "q/8");
        assert_eq!(
            judge(Some(theirs.clone()), ME, now, None),
            AtKey::Same(theirs)
        );
        let earlier = sealed("k1:T(old)", ME);
        assert_eq!(
            judge(Some(earlier.clone()), ME, now, None),
            AtKey::Earlier(earlier)
        );
        assert_eq!(
            judge(Some(sealed("k1:T(old)", "q/8")), ME, now, None),
            AtKey::Nothing
        );
        // Tagged under another key (the key file lost): it cannot be told, so it is sent
        // over, never taken for an earlier version.
        assert_eq!(
            judge(Some(sealed("k0:T(a)", ME)), ME, now, None),
            AtKey::Nothing
        );
        // The tag decides, not its own SHA-256 nor a recorded one.
        assert_eq!(
            judge(Some(sealed("k1:T(old)", ME)), ME, now, Some("random bytes")),
            AtKey::Earlier(sealed("k1:T(old)", ME))
        );
    }

    #[test]
    fn nothing_under_the_key_is_sent() {
        assert_eq!(judge(None, ME, raw("a"), None), AtKey::Nothing);
    }

    #[test]
    fn the_same_source_is_found_by_its_sha256_raw_or_converted() {
        let same = head(Some("a"), None, Some(ME), 10);
        assert_eq!(
            judge(Some(same.clone()), ME, raw("a"), None),
            AtKey::Same(same)
        );
        // Converted: the object's own SHA-256 may differ at every attempt; the source's not.
        let sealed = head(Some("random"), Some("a"), Some(ME), 99);
        assert_eq!(
            judge(Some(sealed.clone()), ME, converted("a"), None),
            AtKey::Same(sealed)
        );
        // Written before objects named their writer: found by content alone.
        let old = head(Some("a"), None, None, 10);
        assert_eq!(
            judge(Some(old.clone()), ME, raw("a"), None),
            AtKey::Same(old)
        );
    }

    #[test]
    fn an_earlier_version_written_by_this_row_was_delivered() {
        let earlier = head(Some("old"), None, Some(ME), 10);
        assert_eq!(
            judge(Some(earlier.clone()), ME, raw("new"), None),
            AtKey::Earlier(earlier)
        );
        let sealed = head(Some("x"), Some("old"), Some(ME), 10);
        assert_eq!(
            judge(Some(sealed.clone()), ME, converted("new"), None),
            AtKey::Earlier(sealed)
        );
        // Same content, another length: not the file.
        let shorter = head(Some("a"), None, Some(ME), 9);
        assert_eq!(
            judge(Some(shorter.clone()), ME, raw("a"), None),
            AtKey::Earlier(shorter)
        );
    }

    #[test]
    fn another_writers_object_or_an_unknown_content_is_sent_over() {
        let other = head(Some("old"), None, Some("q/8"), 10);
        assert_eq!(judge(Some(other), ME, raw("new"), None), AtKey::Nothing);
        let other_queue = head(Some("old"), None, Some("p/7"), 10);
        assert_eq!(
            judge(Some(other_queue), ME, raw("new"), None),
            AtKey::Nothing
        );
        let unknown = head(None, None, Some(ME), 10);
        assert_eq!(judge(Some(unknown), ME, raw("new"), None), AtKey::Nothing);
    }

    #[test]
    fn a_raw_object_hashed_while_sent_is_judged_by_the_recorded_sha256() {
        let one_pass = head(None, None, Some(ME), 10);
        assert_eq!(
            judge(Some(one_pass.clone()), ME, raw("a"), Some("a")),
            AtKey::Same(one_pass.clone())
        );
        assert_eq!(
            judge(Some(one_pass.clone()), ME, raw("new"), Some("old")),
            AtKey::Earlier(one_pass)
        );
        // Another row's object is not judged by this row's record.
        let theirs = head(None, None, Some("q/8"), 10);
        assert_eq!(judge(Some(theirs), ME, raw("a"), Some("a")), AtKey::Nothing);
    }

    #[test]
    fn an_object_is_judged_by_how_it_was_made_not_by_the_format_now() {
        // Sent raw; a reload turned on gzip before the lost answer was asked about.
        let sent_raw = head(Some("a"), None, Some(ME), 10);
        assert_eq!(
            judge(Some(sent_raw.clone()), ME, converted("a"), None),
            AtKey::Same(sent_raw)
        );
        // Sent gzipped (the object is 4 bytes); the spool sends raw now.
        let sent_gzipped = head(Some("gz"), Some("a"), Some(ME), 4);
        assert_eq!(
            judge(Some(sent_gzipped.clone()), ME, raw("a"), None),
            AtKey::Same(sent_gzipped)
        );
    }
}
