//! Data keys: one AES-256 key per dataset, wrapped by the master key.
//!
//! The master key lives in `DATA_DIR/keys/master.key` (mode 0600). Wrapping
//! is AES-256-GCM (`ring`) with the dataset name as associated data, so a
//! wrapped key cannot be moved to another dataset. Destroying a dataset's
//! wrapped key makes its encrypted Parquet unreadable (crypto-shredding).

use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::util::{random_bytes, write_private};

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or write key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path} is damaged (expected 32 bytes); restore it from backup")]
    Damaged { path: String },
    #[error(
        "the data key of dataset `{dataset}` cannot be unwrapped: it was destroyed or the master key does not match"
    )]
    Unwrap { dataset: String },
}

/// The master key that wraps every dataset key.
pub struct MasterKey(LessSafeKey);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// Loads the master key, creating it on first run.
    pub fn load_or_create(path: &Path) -> Result<MasterKey, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let bytes = if path.exists() {
            std::fs::read(path).map_err(io)?
        } else {
            let key = random_bytes::<32>().to_vec();
            write_private(path, &key).map_err(io)?;
            key
        };
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| KeyError::Damaged {
            path: path.display().to_string(),
        })?;
        Ok(MasterKey(LessSafeKey::new(unbound)))
    }

    /// Wraps a dataset key: `nonce || ciphertext || tag`.
    pub fn wrap(&self, dataset: &str, key: &[u8; 32]) -> Vec<u8> {
        self.seal(dataset, key)
    }

    /// Unwraps a dataset key.
    pub fn unwrap(&self, dataset: &str, wrapped: &[u8]) -> Result<[u8; 32], KeyError> {
        let plain = self.open(dataset, wrapped)?;
        plain.try_into().map_err(|_| KeyError::Unwrap {
            dataset: dataset.to_string(),
        })
    }

    /// Seals any secret under `label` (its associated data, so it opens
    /// under that label only): `nonce || ciphertext || tag`.
    pub fn seal(&self, label: &str, secret: &[u8]) -> Vec<u8> {
        let nonce = random_bytes::<NONCE_LEN>();
        let mut buf = secret.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(label.as_bytes()),
                &mut buf,
            )
            .expect("a secret held in memory cannot exceed AES-GCM limits");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        out
    }

    /// Opens what [`MasterKey::seal`] sealed under `label`.
    pub fn open(&self, label: &str, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        let err = || KeyError::Unwrap {
            dataset: label.to_string(),
        };
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(err());
        }
        let (nonce, sealed) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| err())?;
        let mut buf = sealed.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(label.as_bytes()), &mut buf)
            .map_err(|_| err())?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_key_opens_only_for_its_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::load_or_create(&dir.path().join("master.key")).unwrap();
        let key = [7u8; 32];
        let wrapped = master.wrap("residents", &key);
        assert_eq!(master.unwrap("residents", &wrapped).unwrap(), key);
        assert!(master.unwrap("enterprises", &wrapped).is_err());
    }
}
