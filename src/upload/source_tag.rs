//! What an encrypted object is recognised by without telling its content.
//!
//! A converted object carries its source's SHA-256 (`x-amz-meta-source-sha256`): a retry
//! after a lost answer recognises it by that, since a conversion may make other bytes each
//! time. For an encrypted object that hash would tell anyone who may read the bucket's
//! metadata whether a file holds what they guess (a short CSV, a known export), which is
//! what the encryption was to hide. It carries a keyed hash instead
//! (`x-amz-meta-source-tag`): HMAC-SHA256 of the source's SHA-256 under a key that never
//! leaves this host (`state_dir/source-tag.key`, made at the first start, mode 0600).
//! The same source gives the same tag at every attempt; without the key, a tag tells
//! nothing of the content (two equal tags do say that two objects hold the same). The tag
//! begins with the key's id (`ID:HMAC`, the id the first 8 hex digits of the key's
//! SHA-256): an object tagged under another key (the key file lost or replaced) is known
//! to be unjudgeable, and is sent again over the same key rather than taken for an
//! earlier version of the file.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The key file, beside the queue.
pub const KEY_FILE: &str = "source-tag.key";

const KEY_LEN: usize = 32;

/// Makes the tags of this host's encrypted objects.
#[derive(Clone)]
pub struct SourceTags {
    key: [u8; KEY_LEN],
}

/// Whether two tags were made under the same key.
pub fn same_key(a: &str, b: &str) -> bool {
    let id = |tag: &str| tag.split_once(':').map(|(id, _)| id.to_string());
    id(a).is_some() && id(a) == id(b)
}

impl std::fmt::Debug for SourceTags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SourceTags(..)")
    }
}

impl SourceTags {
    /// The key in `state_dir`, made (random, 0600, synced) if there is none yet. It is
    /// written whole under a name of its own and linked into place, so a crash while it
    /// is made never leaves a short key behind, and two starts at once agree on one key.
    pub fn open(state_dir: &Path) -> std::io::Result<SourceTags> {
        let path = state_dir.join(KEY_FILE);
        if !path.exists() {
            let draft = state_dir.join(format!(".{KEY_FILE}.{}", std::process::id()));
            let _ = std::fs::remove_file(&draft);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&draft)?;
            let key: [u8; KEY_LEN] = rand::random();
            file.write_all(&key)?;
            file.sync_all()?;
            // A link never replaces: if another start made one meanwhile, that one counts.
            let linked = std::fs::hard_link(&draft, &path);
            std::fs::remove_file(&draft)?;
            match linked {
                Ok(()) => std::fs::File::open(state_dir)?.sync_all()?,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        let mut key = [0u8; KEY_LEN];
        let mut file = std::fs::File::open(&path)?;
        let meta = file.metadata()?;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the source tag key is readable by others than its owner: chmod 600 it");
        }
        let exact = if meta.len() == KEY_LEN as u64 {
            Ok(())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} bytes", meta.len()),
            ))
        };
        exact
            .and_then(|()| file.read_exact(&mut key))
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "{} is not a key of {KEY_LEN} bytes ({e}); restore it from the backup of \
                     state_dir, or remove it to make a new one (encrypted files whose answer \
                     was lost are then sent again)",
                        path.display()
                    ),
                )
            })?;
        Ok(SourceTags { key })
    }

    /// A key of its own, kept nowhere: for in-process tests.
    #[cfg(test)]
    pub fn ephemeral() -> SourceTags {
        SourceTags {
            key: rand::random(),
        }
    }

    /// The tag of a source, given its hex SHA-256: `KEY-ID:HMAC`.
    pub fn of(&self, source_sha256: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(source_sha256.as_bytes());
        let id = hex::encode(&Sha256::digest(self.key)[..4]);
        format!("{id}:{}", hex::encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_private_and_read_back_by_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let first = SourceTags::open(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = SourceTags::open(dir.path()).unwrap();
        assert_eq!(first.of("abc"), again.of("abc"));
        assert_ne!(first.of("abc"), first.of("abd"));
        // Another host (another key) cannot match it, nor can a plain hash.
        let stranger = SourceTags::ephemeral().of("abc");
        assert_ne!(first.of("abc"), stranger);
        assert!(same_key(&first.of("abc"), &again.of("abd")));
        assert!(!same_key(&first.of("abc"), &stranger));
        assert_eq!(first.of("abc").len(), 8 + 1 + 64);
    }

    #[test]
    fn a_key_file_of_another_length_is_refused_with_what_to_do() {
        for len in [0, 5, KEY_LEN + 1] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(KEY_FILE), vec![7u8; len]).unwrap();
            let e = SourceTags::open(dir.path()).unwrap_err().to_string();
            assert!(
                e.contains("source-tag.key") && e.contains("remove it"),
                "{len}: {e}"
            );
        }
    }

    #[test]
    fn a_draft_left_by_a_crash_is_not_the_key() {
        let dir = tempfile::tempdir().unwrap();
        // Cut off before it was linked into place: no key yet, and the draft is ignored.
        let draft = dir
            .path()
            .join(format!(".{KEY_FILE}.{}", std::process::id()));
        std::fs::write(&draft, b"short").unwrap();
        let tags = SourceTags::open(dir.path()).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join(KEY_FILE)).unwrap().len(),
            KEY_LEN
        );
        assert!(!draft.exists());
        assert_eq!(tags.of("a"), SourceTags::open(dir.path()).unwrap().of("a"));
    }

    /// Python's `hmac.new(key, sha256_hex, sha256)` gives the same tag, after the key's id
    /// (`hashlib.sha256(key).hexdigest()[:8]`): a reader of the bucket with the key (an
    /// audit) can check it with any HMAC tool.
    #[test]
    fn the_tag_is_hmac_sha256_of_the_hex_digest() {
        let tags = SourceTags { key: [11; KEY_LEN] };
        let sha256_of_abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(
            tags.of(sha256_of_abc),
            "f0e38b83:4df2d98e62ffcbf02e1f64d7c52605a01b8209d64c8fe043de2e0b186f32f43c"
        );
    }
}
