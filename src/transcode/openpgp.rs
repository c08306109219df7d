//! OpenPGP encryption to one recipient's public key (`encrypt_to`), streaming: the key is
//! read and checked once at config load; each file is encrypted as it is read.
//!
//! The message is SEIPD v1 with AES-256 and no compression (the input is often compressed
//! already), which every GnuPG in use decrypts.

use pgp::composed::{Deserializable, MessageBuilder, SignedPublicKey};
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::packet::SignatureType;
use pgp::types::{KeyDetails, PublicKeyTrait};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

/// A checked recipient key.
pub struct Recipient {
    key: SignedPublicKey,
    /// Index into the key's subkeys of the one encrypted to; `None` for the primary key.
    subkey: Option<usize>,
    /// Upper-case hex, for logs and errors.
    pub fingerprint: String,
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({})", self.fingerprint)
    }
}

impl PartialEq for Recipient {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint && self.subkey == other.subkey
    }
}

impl Eq for Recipient {}

impl Recipient {
    /// Reads an ASCII-armoured public key and picks the key to encrypt to: a valid
    /// encryption subkey, else an encryption-capable primary key. Says what is wrong in
    /// words an operator can act on.
    pub fn load(path: &Path) -> Result<Recipient, String> {
        let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let (key, _) = SignedPublicKey::from_armor_single(io::BufReader::new(file)).map_err(|e| {
            format!(
                "{} is not an ASCII-armoured OpenPGP public key ({e}); export one with `gpg --armor --export KEYID`",
                path.display()
            )
        })?;
        key.verify().map_err(|e| {
            format!(
                "the key in {} has a bad self-signature: {e}",
                path.display()
            )
        })?;
        let fingerprint = format!("{:X}", key.fingerprint());
        if key.expires_at().is_some_and(|at| at <= crate::clock::now()) {
            return Err(format!(
                "the key {fingerprint} in {} has expired; ask the recipient for a current one",
                path.display()
            ));
        }
        let subkey = encryption_subkey(&key);
        if subkey.is_none() && !key.primary_key.is_encryption_key() {
            return Err(format!(
                "the key {fingerprint} in {} has no encryption key (only signing keys)",
                path.display()
            ));
        }
        Ok(Recipient {
            key,
            subkey,
            fingerprint,
        })
    }

    /// Encrypts everything `input` yields into `out`.
    pub fn encrypt(&self, input: impl Read, out: impl Write) -> io::Result<()> {
        let mut rng = rand::thread_rng();
        let mut builder = MessageBuilder::from_reader("", input)
            .seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
        match self.subkey {
            Some(i) => builder.encrypt_to_key(&mut rng, &self.key.public_subkeys[i].key),
            None => builder.encrypt_to_key(&mut rng, &self.key.primary_key),
        }
        .map_err(io::Error::other)?;
        builder.to_writer(&mut rng, out).map_err(|e| match e {
            pgp::errors::Error::IO { source, .. } => source,
            other => io::Error::other(other),
        })
    }
}

/// The newest subkey that its latest binding signature allows to encrypt, that has not
/// expired and is not revoked. The algorithm alone is not enough: an RSA signing subkey
/// could encrypt, but the recipient's tools would not look for it.
fn encryption_subkey(key: &SignedPublicKey) -> Option<usize> {
    let now = crate::clock::now();
    key.public_subkeys
        .iter()
        .enumerate()
        .filter(|(_, s)| s.key.is_encryption_key())
        .filter(|(_, s)| {
            !s.signatures
                .iter()
                .any(|sig| sig.typ() == Some(SignatureType::SubkeyRevocation))
        })
        .filter_map(|(i, s)| {
            let binding = s
                .signatures
                .iter()
                .filter(|sig| sig.typ() == Some(SignatureType::SubkeyBinding))
                .max_by_key(|sig| sig.created().copied())?;
            let flags = binding.key_flags();
            let expires = binding
                .key_expiration_time()
                .filter(|d| !d.is_zero())
                .map(|d| *s.key.created_at() + *d);
            let usable = (flags.encrypt_comms() || flags.encrypt_storage())
                && expires.is_none_or(|at| at > now);
            usable.then_some((i, *s.key.created_at()))
        })
        .max_by_key(|(_, created)| *created)
        .map(|(i, _)| i)
}
