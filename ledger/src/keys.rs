//! Ed25519 keys for signing checkpoints.
//!
//! The signing key is held as a PKCS#8 v2 document (what
//! `ring::signature::Ed25519KeyPair::generate_pkcs8` produces). The public
//! key is 32 bytes; its text form, used in `ledger.pub`, is 64 lowercase hex
//! characters. Loading and saving keys in files is in [`crate::store`].

use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use std::fmt;
use std::path::PathBuf;

/// Why a key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The system random number generator failed.
    #[error(
        "could not generate an Ed25519 key: the system random source failed; check /dev/urandom"
    )]
    Generate,
    /// Bytes that are not an Ed25519 PKCS#8 v2 document.
    #[error(
        "not an Ed25519 PKCS#8 v2 key ({detail}); use a key written by this ledger or restore it from backup"
    )]
    BadPkcs8 {
        /// What `ring` reported.
        detail: String,
    },
    /// Text that is not a hex public key.
    #[error(
        "not an Ed25519 public key ({detail}); expected 64 hex characters, e.g. the contents of ledger.pub"
    )]
    BadPublicKey {
        /// What was wrong.
        detail: String,
    },
    /// A key file could not be read or written.
    #[error("could not {action} key file {path}: {source}; check the path and its permissions")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A key file is a link, not a regular file, or too large.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// A key file's contents are not a valid key.
    #[error("key file {path}: {source}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with its contents.
        source: Box<KeyError>,
    },
    /// A secret key file that others may read.
    #[error(
        "key file {path} has mode {mode:o}, so other users may read the secret key; run `chmod 600 {path}`"
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// The Ed25519 key that signs checkpoints.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("public_key", &hex::encode(self.public_key()))
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a fresh key from the system random source.
    pub fn generate() -> Result<SigningKey, KeyError> {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generate)?;
        SigningKey::from_pkcs8(doc.as_ref())
    }

    /// Reads a key from a PKCS#8 v2 document.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<SigningKey, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| KeyError::BadPkcs8 {
            detail: e.to_string(),
        })?;
        Ok(SigningKey {
            pair,
            pkcs8: pkcs8.to_vec(),
        })
    }

    /// Builds a key from a raw 32-byte seed. Meant for test vectors and for
    /// keys imported from other tools; new keys should come from [`SigningKey::generate`],
    /// and a key built this way has no PKCS#8 form ([`SigningKey::pkcs8`] is empty).
    pub fn from_seed(seed: &[u8; 32]) -> Result<SigningKey, KeyError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|e| KeyError::BadPkcs8 {
            detail: e.to_string(),
        })?;
        Ok(SigningKey {
            pair,
            pkcs8: Vec::new(),
        })
    }

    /// The PKCS#8 document this key was read from or generated as.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    /// The public half, for verification.
    pub fn verifying_key(&self) -> PublicKey {
        PublicKey(self.public_key())
    }

    /// The 64-byte Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// An Ed25519 public key that checks checkpoint signatures.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl PublicKey {
    /// Wraps 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> PublicKey {
        PublicKey(bytes)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses the text form: 64 hex characters (either case), surrounding
    /// whitespace such as a trailing newline allowed.
    pub fn from_hex(text: &str) -> Result<PublicKey, KeyError> {
        let t = text.trim();
        let bytes = hex::decode(t).map_err(|e| KeyError::BadPublicKey {
            detail: e.to_string(),
        })?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| KeyError::BadPublicKey {
                detail: format!("{} bytes instead of 32", b.len()),
            })?;
        Ok(PublicKey(arr))
    }

    /// The text form: 64 lowercase hex characters, no newline.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Whether `signature` is this key's Ed25519 signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_with_the_matching_key_and_message() {
        let k = SigningKey::generate().unwrap();
        let sig = k.sign(b"hello");
        assert_eq!(sig.len(), 64);
        let pk = k.verifying_key();
        assert!(pk.verify(b"hello", &sig));
        assert!(!pk.verify(b"hellO", &sig));
        let other = SigningKey::generate().unwrap().verifying_key();
        assert!(!other.verify(b"hello", &sig));
        let again = SigningKey::from_pkcs8(k.pkcs8()).unwrap();
        assert_eq!(again.public_key(), k.public_key());
    }

    #[test]
    fn public_key_text_round_trips() {
        let pk = SigningKey::generate().unwrap().verifying_key();
        let text = format!("{}\n", pk.to_hex().to_uppercase());
        assert_eq!(PublicKey::from_hex(&text).unwrap(), pk);
        assert!(PublicKey::from_hex("abcd").is_err());
        assert!(PublicKey::from_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn refuses_bytes_that_are_not_pkcs8() {
        assert!(matches!(
            SigningKey::from_pkcs8(b"nope"),
            Err(KeyError::BadPkcs8 { .. })
        ));
    }
}
