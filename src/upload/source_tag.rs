//! What an encrypted object is recognised by without telling its content.
//!
//! A converted object carries its source's SHA-256 (`x-amz-meta-source-sha256`): a retry
//! after a lost answer recognises it by that, since a conversion may make other bytes each
//! time. For an encrypted object that hash would tell anyone who may read the bucket's
//! metadata whether a file holds what they guess (a short CSV, a known export), which is
//! what the encryption was to hide. It carries a keyed hash instead
//! (`x-amz-meta-source-tag`): HMAC-SHA256 of the source's SHA-256 under a key that never
//! leaves this host (`state_dir/source-tag.key`, made at the first start, mode 0600).
//! The same source gives the same tag at every attempt; without the key, the tag tells
//! nothing. A lost key only costs recognition: an object whose tag cannot be matched is
//! sent again.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The key file, beside the queue.
pub const KEY_FILE: &str = "source-tag.key";

const KEY_LEN: usize = 32;

/// Makes the tags of this host's encrypted objects.
#[derive(Clone)]
pub struct SourceTags {
    key: [u8; KEY_LEN],
}

impl std::fmt::Debug for SourceTags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SourceTags(..)")
    }
}

impl SourceTags {
    /// The key in `state_dir`, made (random, 0600, synced) if there is none yet.
    pub fn open(state_dir: &Path) -> std::io::Result<SourceTags> {
        let path = state_dir.join(KEY_FILE);
        let made = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        match made {
            Ok(mut file) => {
                let key: [u8; KEY_LEN] = rand::random();
                file.write_all(&key)?;
                file.sync_all()?;
                if let Ok(dir) = std::fs::File::open(state_dir) {
                    dir.sync_all()?;
                }
                Ok(SourceTags { key })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let mut key = [0u8; KEY_LEN];
                let mut file = std::fs::File::open(&path)?;
                file.read_exact(&mut key).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "{} is not a key of {KEY_LEN} bytes ({e}); remove it to make a new one \
                             (encrypted objects in flight are then sent again)",
                            path.display()
                        ),
                    )
                })?;
                Ok(SourceTags { key })
            }
            Err(e) => Err(e),
        }
    }

    /// A key of its own, kept nowhere: for in-process tests.
    pub fn ephemeral() -> SourceTags {
        SourceTags {
            key: rand::random(),
        }
    }

    /// The tag of a source, given its hex SHA-256.
    pub fn of(&self, source_sha256: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(source_sha256.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
        assert_ne!(first.of("abc"), SourceTags::ephemeral().of("abc"));
        assert_eq!(first.of("abc").len(), 64);
    }

    #[test]
    fn a_short_key_file_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        let e = SourceTags::open(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("source-tag.key") && e.contains("remove it"),
            "{e}"
        );
    }

    /// Python's `hmac.new(key, sha256_hex, sha256)` gives the same tag: a reader of the
    /// bucket with the key (an audit) can check it with any HMAC tool.
    #[test]
    fn the_tag_is_hmac_sha256_of_the_hex_digest() {
        let tags = SourceTags { key: [11; KEY_LEN] };
        let sha256_of_abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(
            tags.of(sha256_of_abc),
            "4df2d98e62ffcbf02e1f64d7c52605a01b8209d64c8fe043de2e0b186f32f43c"
        );
    }
}
