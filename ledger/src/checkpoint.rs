//! Signed checkpoints: C2SP `tlog-checkpoint` bodies in C2SP `signed-note`
//! envelopes, signed with Ed25519.
//!
//! ```text
//! unseen.local/ledger
//! 42
//! <base64 root hash>
//!
//! — unseen.local/ledger <base64(key id || signature)>
//! ```
//!
//! The key name is the origin line. The key id is the first 4 bytes of
//! SHA-256(key name || "\n" || 0x01 || public key). This ledger writes no
//! extension lines and refuses checkpoints that have them. Signature lines
//! from other keys (e.g. witnesses) are allowed and ignored.

use crate::entry::{Hash, sha256};
use crate::keys::{PublicKey, SigningKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The origin line (and signing key name) of this ledger's checkpoints.
pub const ORIGIN: &str = "unseen.local/ledger";

/// The signature algorithm byte for Ed25519 in C2SP signed notes.
const ALG_ED25519: u8 = 0x01;

/// A tree head: which log, how many entries, and their Merkle root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name; [`ORIGIN`] for this ledger.
    pub origin: String,
    /// Number of entries covered.
    pub size: u64,
    /// Merkle tree hash of those entries.
    pub root: Hash,
}

/// Why a checkpoint could not be made or read, or its signature failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The signed-note envelope is malformed.
    #[error(
        "not a signed note: {reason}; expect the text, a blank line, then lines `— <name> <base64>`"
    )]
    MalformedNote {
        /// What was wrong.
        reason: &'static str,
    },
    /// The checkpoint body is malformed.
    #[error(
        "not a checkpoint body: {reason}; expect three lines: origin, tree size, base64 root hash"
    )]
    MalformedBody {
        /// What was wrong.
        reason: &'static str,
    },
    /// A key name the format forbids.
    #[error("key name {name:?} is not allowed; it must be non-empty with no spaces or `+`")]
    BadKeyName {
        /// The name.
        name: String,
    },
    /// No signature line from the expected key.
    #[error(
        "no signature by key `{name}` with id {key_id}; the checkpoint was signed by another key, or ledger.pub is not this ledger's key"
    )]
    NotSignedByKey {
        /// The key name looked for.
        name: String,
        /// The key id looked for, as hex.
        key_id: String,
    },
    /// A signature from the expected key that does not verify.
    #[error(
        "the signature by key `{name}` does not verify; the checkpoint text was altered after signing"
    )]
    BadSignature {
        /// The key name.
        name: String,
    },
    /// The checkpoint belongs to another log.
    #[error(
        "checkpoint origin is {found:?} but this ledger's is {expected:?}; this checkpoint belongs to another log"
    )]
    WrongOrigin {
        /// The origin found.
        found: String,
        /// The origin expected.
        expected: String,
    },
}

fn malformed_note(reason: &'static str) -> CheckpointError {
    CheckpointError::MalformedNote { reason }
}

fn malformed_body(reason: &'static str) -> CheckpointError {
    CheckpointError::MalformedBody { reason }
}

impl Checkpoint {
    /// The unsigned body: `"<origin>\n<size>\n<base64 root>\n"`.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// The body signed by `key` under the name [`Checkpoint::origin`].
    pub fn sign(&self, key: &SigningKey) -> Result<String, CheckpointError> {
        sign_note(&self.body(), &self.origin, key)
    }

    /// Parses an unsigned body, insisting on the one byte sequence
    /// [`Checkpoint::body`] would produce for it.
    pub fn parse_body(text: &str) -> Result<Checkpoint, CheckpointError> {
        let rest = text
            .strip_suffix('\n')
            .ok_or(malformed_body("it does not end with a newline"))?;
        let lines: Vec<&str> = rest.split('\n').collect();
        let [origin, size, root] = lines[..] else {
            return Err(malformed_body("it does not have exactly three lines"));
        };
        if origin.is_empty() {
            return Err(malformed_body("the origin line is empty"));
        }
        let size_ok = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        let size: u64 = match size.parse() {
            Ok(n) if size_ok => n,
            _ => return Err(malformed_body("the size line is not a decimal number")),
        };
        let root: Hash = STANDARD
            .decode(root)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(malformed_body("the root line is not base64 of 32 bytes"))?;
        let cp = Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        };
        if cp.body() != text {
            return Err(malformed_body("it is not in canonical form"));
        }
        Ok(cp)
    }

    /// Checks the signature by `key` (named `origin`) on a signed
    /// checkpoint and returns the checkpoint it carries, which must be for
    /// `origin`.
    pub fn open(note: &str, origin: &str, key: &PublicKey) -> Result<Checkpoint, CheckpointError> {
        let text = open_note(note, origin, key)?;
        let cp = Checkpoint::parse_body(text)?;
        if cp.origin != origin {
            return Err(CheckpointError::WrongOrigin {
                found: cp.origin,
                expected: origin.to_owned(),
            });
        }
        Ok(cp)
    }
}

fn check_name(name: &str) -> Result<(), CheckpointError> {
    if name.is_empty() || name.contains(char::is_whitespace) || name.contains('+') {
        return Err(CheckpointError::BadKeyName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// The C2SP signed-note key id of an Ed25519 key:
/// the first 4 bytes of SHA-256(name || "\n" || 0x01 || public key).
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    key_id_for(ALG_ED25519, name, public_key)
}

/// The C2SP key id of a key of signature algorithm `alg`: the first 4
/// bytes of SHA-256(name || "\n" || alg || public key).
pub(crate) fn key_id_for(alg: u8, name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let mut buf = Vec::with_capacity(name.len() + 34);
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'\n');
    buf.push(alg);
    buf.extend_from_slice(public_key);
    let h = sha256(&buf);
    [h[0], h[1], h[2], h[3]]
}

/// The C2SP verifier key string `<name>+<hex key id>+<base64(0x01 || key)>`,
/// as used by Go's `sumdb/note` and other tlog tools.
pub fn verifier_key(name: &str, key: &PublicKey) -> Result<String, CheckpointError> {
    check_name(name)?;
    let mut raw = vec![ALG_ED25519];
    raw.extend_from_slice(key.as_bytes());
    Ok(format!(
        "{name}+{}+{}",
        hex::encode(key_id(name, key.as_bytes())),
        STANDARD.encode(raw)
    ))
}

/// Signs `text` (which must end with a newline) as a C2SP signed note with
/// one signature line by `key` named `name`.
pub fn sign_note(text: &str, name: &str, key: &SigningKey) -> Result<String, CheckpointError> {
    check_name(name)?;
    if !text.ends_with('\n') {
        return Err(malformed_note("the text does not end with a newline"));
    }
    if text.contains("\n\n") || text.starts_with('\n') {
        return Err(malformed_note("the text contains a blank line"));
    }
    let mut blob = key_id(name, &key.public_key()).to_vec();
    blob.extend_from_slice(&key.sign(text.as_bytes()));
    Ok(format!(
        "{text}\n\u{2014} {name} {}\n",
        STANDARD.encode(blob)
    ))
}

/// Checks a C2SP signed note for a valid signature by `key` named `name` and
/// returns the signed text (ending with its newline).
pub fn open_note<'a>(
    note: &'a str,
    name: &str,
    key: &PublicKey,
) -> Result<&'a str, CheckpointError> {
    check_name(name)?;
    let split = note.rfind("\n\n").ok_or(malformed_note(
        "there is no blank line before the signatures",
    ))?;
    let (text, sigs) = (&note[..=split], &note[split + 2..]);
    if text.contains("\n\n") || text.starts_with('\n') {
        return Err(malformed_note("the text contains a blank line"));
    }
    let sigs = sigs.strip_suffix('\n').ok_or(malformed_note(
        "the last signature line does not end with a newline",
    ))?;
    let want_id = key_id(name, key.as_bytes());
    let mut found = false;
    for line in sigs.split('\n') {
        let rest = line
            .strip_prefix("\u{2014} ")
            .ok_or(malformed_note("a signature line does not start with `— `"))?;
        let (sig_name, b64) = rest.split_once(' ').ok_or(malformed_note(
            "a signature line has no space between name and signature",
        ))?;
        check_name(sig_name)
            .map_err(|_| malformed_note("a signature line has an invalid key name"))?;
        let blob = STANDARD
            .decode(b64)
            .map_err(|_| malformed_note("a signature is not valid base64"))?;
        if blob.len() < 5 {
            return Err(malformed_note("a signature is too short"));
        }
        if sig_name != name || blob[..4] != want_id {
            continue;
        }
        if !key.verify(text.as_bytes(), &blob[4..]) {
            return Err(CheckpointError::BadSignature {
                name: name.to_owned(),
            });
        }
        found = true;
    }
    if !found {
        return Err(CheckpointError::NotSignedByKey {
            name: name.to_owned(),
            key_id: hex::encode(want_id),
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from golang.org/x/mod/sumdb/note and C2SP signed-note.
    const SKEY_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const NOTE_SIG: &str = "\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn peter() -> SigningKey {
        let raw = STANDARD.decode(SKEY_B64).unwrap();
        assert_eq!(raw[0], ALG_ED25519);
        SigningKey::from_seed(&raw[1..].try_into().unwrap()).unwrap()
    }

    #[test]
    fn signs_the_c2sp_signed_note_example_byte_for_byte() {
        let key = peter();
        assert_eq!(
            verifier_key("PeterNeumann", &key.verifying_key()).unwrap(),
            VKEY
        );
        let note = sign_note(TEXT, "PeterNeumann", &key).unwrap();
        assert_eq!(note, format!("{TEXT}{NOTE_SIG}"));
        assert_eq!(
            open_note(&note, "PeterNeumann", &key.verifying_key()).unwrap(),
            TEXT
        );
        let tampered = note.replace("cryptography", "cryptographY");
        assert_eq!(
            open_note(&tampered, "PeterNeumann", &key.verifying_key()),
            Err(CheckpointError::BadSignature {
                name: "PeterNeumann".into()
            })
        );
    }

    #[test]
    fn checkpoint_round_trips_and_rejects_other_keys_and_origins() {
        let key = SigningKey::generate().unwrap();
        let cp = Checkpoint {
            origin: ORIGIN.into(),
            size: 42,
            root: [9; 32],
        };
        let note = cp.sign(&key).unwrap();
        assert!(note.starts_with("unseen.local/ledger\n42\nCQkJ"));
        assert_eq!(
            Checkpoint::open(&note, ORIGIN, &key.verifying_key()).unwrap(),
            cp
        );
        let other = SigningKey::generate().unwrap().verifying_key();
        assert!(matches!(
            Checkpoint::open(&note, ORIGIN, &other),
            Err(CheckpointError::NotSignedByKey { .. })
        ));
        let elsewhere = Checkpoint {
            origin: "example.com/log".into(),
            ..cp.clone()
        };
        let note2 = sign_note(&elsewhere.body(), ORIGIN, &key).unwrap();
        assert!(matches!(
            Checkpoint::open(&note2, ORIGIN, &key.verifying_key()),
            Err(CheckpointError::WrongOrigin { .. })
        ));
    }

    #[test]
    fn ignores_signatures_from_other_keys_but_needs_ours() {
        let key = SigningKey::generate().unwrap();
        let witness = SigningKey::generate().unwrap();
        let cp = Checkpoint {
            origin: ORIGIN.into(),
            size: 0,
            root: crate::merkle::empty_root(),
        };
        let mine = cp.sign(&key).unwrap();
        let theirs = sign_note(&cp.body(), "witness.example", &witness).unwrap();
        let both = format!("{mine}{}", &theirs[cp.body().len() + 1..]);
        assert_eq!(
            Checkpoint::open(&both, ORIGIN, &key.verifying_key()).unwrap(),
            cp
        );
    }

    #[test]
    fn body_parser_refuses_non_canonical_forms() {
        let good = Checkpoint {
            origin: ORIGIN.into(),
            size: 7,
            root: [1; 32],
        }
        .body();
        assert!(Checkpoint::parse_body(&good).is_ok());
        for bad in [
            good.replace("\n7\n", "\n07\n"),
            good.replace("\n7\n", "\n+7\n"),
            good.replace("\n7\n", "\n\n"),
            good.trim_end().to_owned(),
            format!("{good}extension\n"),
            good.replace(ORIGIN, ""),
        ] {
            assert!(Checkpoint::parse_body(&bad).is_err(), "{bad:?}");
        }
    }
}
