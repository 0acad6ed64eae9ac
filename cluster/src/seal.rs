//! Data keys sealed for enrolled executors.
//!
//! An executor is enrolled under a name with a random 256-bit secret,
//! which the service keeps wrapped by its master key and the executor's
//! operator keeps in an owner-only file. For every query the service seals each dataset's data key once per
//! enrolled executor: AES-256-GCM under a key derived from that executor's
//! secret with HKDF-SHA-256, a fresh random nonce, and the executor's name
//! and the dataset's name as associated data. The plan carries only sealed
//! copies; an executor opens its own, in memory, when it decodes the scan.
//! An executor without a copy, or with another executor's secret, opens
//! nothing.

use std::collections::BTreeMap;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, Salt};
use ring::rand::{SecureRandom, SystemRandom};

use crate::ClusterError;

/// Bytes of an executor's enrolment secret and of a data key.
pub const KEY_LEN: usize = 32;

/// Separates this use of HKDF from every other use of the same secret.
const SEAL_SALT: &[u8] = b"unseen cluster data key v1";

/// An executor's enrolment secret. It never appears in `Debug` output.
#[derive(Clone)]
pub struct ExecutorSecret([u8; KEY_LEN]);

impl std::fmt::Debug for ExecutorSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExecutorSecret(..)")
    }
}

impl ExecutorSecret {
    /// A secret from its bytes (the service keeps them wrapped by its
    /// master key).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> ExecutorSecret {
        ExecutorSecret(bytes)
    }

    /// Reads a secret as written by [`ExecutorSecret::to_hex`].
    pub fn from_hex(text: &str) -> Result<ExecutorSecret, ClusterError> {
        let bytes = hex::decode(text.trim()).map_err(|_| ClusterError::BadSecret)?;
        let secret: [u8; KEY_LEN] = bytes.try_into().map_err(|_| ClusterError::BadSecret)?;
        Ok(ExecutorSecret(secret))
    }

    /// The secret as 64 hex digits, for the executor's secret file.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn sealing_key(&self, executor: &str) -> LessSafeKey {
        let prk = Salt::new(HKDF_SHA256, SEAL_SALT).extract(&self.0);
        let info = [executor.as_bytes()];
        let okm = prk
            .expand(&info, &AES_256_GCM)
            .expect("32 bytes is a valid HKDF-SHA-256 output length");
        LessSafeKey::new(UnboundKey::from(okm))
    }
}

/// An enrolled executor as the service knows it: its name and secret.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub name: String,
    pub secret: ExecutorSecret,
}

fn associated_data(executor: &str, dataset: &str) -> Vec<u8> {
    let mut aad = b"unseen sealed data key\n".to_vec();
    aad.extend_from_slice(executor.as_bytes());
    aad.push(b'\n');
    aad.extend_from_slice(dataset.as_bytes());
    aad
}

/// Seals `data_key` of `dataset` once for each executor in `enrolled`:
/// executor name to `nonce ‖ ciphertext ‖ tag`, hex.
pub fn seal_for_all(
    enrolled: &[Enrolled],
    dataset: &str,
    data_key: &[u8; KEY_LEN],
) -> Result<BTreeMap<String, String>, ClusterError> {
    let rng = SystemRandom::new();
    enrolled
        .iter()
        .map(|executor| {
            let mut nonce = [0u8; NONCE_LEN];
            rng.fill(&mut nonce).map_err(|_| ClusterError::Random)?;
            let mut sealed = data_key.to_vec();
            executor
                .secret
                .sealing_key(&executor.name)
                .seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(associated_data(&executor.name, dataset)),
                    &mut sealed,
                )
                .map_err(|_| ClusterError::Random)?;
            let mut out = nonce.to_vec();
            out.extend_from_slice(&sealed);
            Ok((executor.name.clone(), hex::encode(out)))
        })
        .collect()
}

/// Opens the copy of `dataset`'s key sealed for `executor`, with its
/// `secret`.
pub fn open(
    sealed: &BTreeMap<String, String>,
    executor: &str,
    secret: &ExecutorSecret,
    dataset: &str,
) -> Result<[u8; KEY_LEN], ClusterError> {
    let not_for_us = || ClusterError::NotEnrolled {
        executor: executor.to_string(),
        dataset: dataset.to_string(),
    };
    let copy = sealed.get(executor).ok_or_else(not_for_us)?;
    let mut bytes = hex::decode(copy).map_err(|_| not_for_us())?;
    if bytes.len() != NONCE_LEN + KEY_LEN + AES_256_GCM.tag_len() {
        return Err(not_for_us());
    }
    let mut in_out = bytes.split_off(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| not_for_us())?;
    let opened = secret
        .sealing_key(executor)
        .open_in_place(
            nonce,
            Aad::from(associated_data(executor, dataset)),
            &mut in_out,
        )
        .map_err(|_| not_for_us())?;
    let key: [u8; KEY_LEN] = (&*opened).try_into().map_err(|_| not_for_us())?;
    in_out.fill(0);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrolled(name: &str, seed: u8) -> Enrolled {
        Enrolled {
            name: name.into(),
            secret: ExecutorSecret::from_bytes([seed; 32]),
        }
    }

    #[test]
    fn each_executor_opens_its_own_copy_and_nothing_else() {
        let (a, b) = (enrolled("a", 1), enrolled("b", 2));
        let key = [42u8; 32];
        let sealed = seal_for_all(&[a.clone(), b.clone()], "residents", &key).unwrap();
        assert_eq!(open(&sealed, "a", &a.secret, "residents").unwrap(), key);
        assert_eq!(open(&sealed, "b", &b.secret, "residents").unwrap(), key);
        // No copy holds the key in clear.
        for copy in sealed.values() {
            assert!(!copy.contains(&hex::encode(key)));
        }
        // Another executor's secret, another dataset, or a name with no copy.
        assert!(open(&sealed, "a", &b.secret, "residents").is_err());
        assert!(open(&sealed, "a", &a.secret, "health_visits").is_err());
        let c = enrolled("c", 3);
        assert!(matches!(
            open(&sealed, "c", &c.secret, "residents"),
            Err(ClusterError::NotEnrolled { .. })
        ));
        // A copy moved to another name does not open under that name.
        let mut moved = sealed.clone();
        moved.insert("b".into(), sealed["a"].clone());
        assert!(open(&moved, "b", &b.secret, "residents").is_err());
    }

    #[test]
    fn a_name_enrolled_again_opens_nothing_with_its_old_secret() {
        let first = enrolled("a", 1);
        let again = enrolled("a", 2);
        assert_ne!(first.secret.to_hex(), again.secret.to_hex());
        let read = ExecutorSecret::from_hex(&first.secret.to_hex()).unwrap();
        assert_eq!(read.to_hex(), first.secret.to_hex());
        assert!(ExecutorSecret::from_hex("abc").is_err());
        assert_eq!(format!("{:?}", first.secret), "ExecutorSecret(..)");
        let sealed = seal_for_all(std::slice::from_ref(&first), "d", &[1u8; 32]).unwrap();
        assert!(open(&sealed, "a", &again.secret, "d").is_err());
    }
}
