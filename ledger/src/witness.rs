//! Witnesses: a second party that co-signs the ledger's checkpoints and
//! refuses forks.
//!
//! Whoever holds `ledger.key` can rewrite history and sign a new, fully
//! consistent checkpoint over it; only someone who kept an earlier
//! checkpoint notices. A witness is that someone, made routine: it keeps
//! the latest checkpoint it co-signed for each log and co-signs a new one
//! only with a consistency proof from the one it holds, so it never signs
//! two views of one history. A verifier that demands a witness's
//! co-signature therefore detects a rewrite below the witnessed size even
//! when the ledger's own key was used to make it.
//!
//! The formats are C2SP's, so any tlog witness can play the part:
//! - request body of `POST /add-checkpoint` (C2SP `tlog-witness`):
//!   `old <size>\n`, one base64 consistency-proof hash per line, a blank
//!   line, then the signed checkpoint note;
//! - answers: 200 with the co-signature line(s); 409 Conflict with the
//!   witness's own size as the body (the client retries from there); 403
//!   when the log's signature does not verify; 422 when the proof fails;
//!   400 for a malformed body;
//! - co-signatures (C2SP `tlog-cosignature`, `cosignature/v1`): Ed25519
//!   over `cosignature/v1\ntime <unix seconds>\n<checkpoint body>`, the
//!   note line carrying key id (algorithm byte 0x04) || 8-byte big-endian
//!   time || signature.
//!
//! The core here is pure: [`AddCheckpoint`] parses and prints requests,
//! [`witness_checkpoint`] decides, [`cosign`] and [`open_cosigned`] sign and
//! check. [`WitnessDir`] is the one edge: the witness's key and the latest
//! co-signed checkpoint of each log, replaced atomically before an answer
//! leaves, so a crash never lets the witness sign behind its own back.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::entry::Hash;
use crate::files::{self, FileError};
use crate::keys::{KeyError, PublicKey, SigningKey};
use crate::merkle::{ProofError, verify_consistency};

/// The algorithm byte of `cosignature/v1` key ids and verifier keys.
pub const COSIGNATURE_ALG: u8 = 0x04;

/// Most consistency-proof hashes a request may carry (a tree of 2^63
/// entries needs fewer than 130).
const MAX_PROOF_HASHES: usize = 130;

/// Why a witness refuses a checkpoint, with the HTTP status C2SP gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessError {
    /// The request body is not an add-checkpoint request.
    #[error(
        "not an add-checkpoint request: {reason}; send `old <size>`, the proof hashes in base64, a blank line, then the signed checkpoint"
    )]
    Malformed {
        /// What was wrong.
        reason: &'static str,
    },
    /// The checkpoint is not signed by the log key this witness knows.
    #[error("the checkpoint is not signed by the log this witness follows: {0}")]
    NotSignedByLog(CheckpointError),
    /// The client's idea of the witness's state is out of date.
    #[error(
        "this witness last co-signed size {known}, not {claimed}; send a consistency proof from size {known}"
    )]
    Conflict {
        /// The size the witness holds.
        known: u64,
        /// The size the request claimed.
        claimed: u64,
    },
    /// The new checkpoint is smaller than the old size the request names.
    #[error("the checkpoint's size {size} is smaller than the old size {old}; a log never shrinks")]
    Shrinks {
        /// The claimed old size.
        old: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// The proof does not show the new tree extends the witnessed one: a fork.
    #[error(
        "the consistency proof from size {old} to {size} does not verify ({source}); this checkpoint does not extend the history this witness co-signed, so it is a fork and is refused"
    )]
    NotConsistent {
        /// The witnessed size.
        old: u64,
        /// The new size.
        size: u64,
        /// Why the proof failed.
        source: ProofError,
    },
}

impl WitnessError {
    /// The HTTP status C2SP `tlog-witness` gives this refusal.
    pub fn http_status(&self) -> u16 {
        match self {
            WitnessError::Malformed { .. } | WitnessError::Shrinks { .. } => 400,
            WitnessError::NotSignedByLog(_) => 403,
            WitnessError::Conflict { .. } => 409,
            WitnessError::NotConsistent { .. } => 422,
        }
    }
}

/// A `POST /add-checkpoint` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The size of the checkpoint the client believes the witness holds.
    pub old_size: u64,
    /// Consistency proof from `old_size` to the new checkpoint's size.
    pub proof: Vec<Hash>,
    /// The new checkpoint as a signed note.
    pub note: String,
}

impl AddCheckpoint {
    /// The request body.
    pub fn to_text(&self) -> String {
        let mut out = format!("old {}\n", self.old_size);
        for hash in &self.proof {
            out.push_str(&STANDARD.encode(hash));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.note);
        out
    }

    /// Parses a request body.
    pub fn parse(body: &str) -> Result<AddCheckpoint, WitnessError> {
        let malformed = |reason| WitnessError::Malformed { reason };
        let (head, note) = body
            .split_once("\n\n")
            .ok_or(malformed("there is no blank line before the checkpoint"))?;
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .ok_or(malformed("the first line is not `old <size>`"))?;
        if old.is_empty() || !old.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed("the old size is not a decimal number"));
        }
        let old_size = old
            .parse()
            .map_err(|_| malformed("the old size is too large"))?;
        let mut proof = Vec::new();
        for line in lines {
            if proof.len() == MAX_PROOF_HASHES {
                return Err(malformed("the proof has too many hashes"));
            }
            let hash: Hash = STANDARD
                .decode(line)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or(malformed("a proof line is not base64 of 32 bytes"))?;
            proof.push(hash);
        }
        Ok(AddCheckpoint {
            old_size,
            proof,
            note: note.to_owned(),
        })
    }
}

/// Decides a request against `known`, the latest checkpoint this witness
/// co-signed for the log (None if it has never seen the log: the first
/// checkpoint is trusted on first use). Returns the checkpoint to co-sign
/// and to keep as the new latest.
pub fn witness_checkpoint(
    known: Option<&Checkpoint>,
    origin: &str,
    log_key: &PublicKey,
    request: &AddCheckpoint,
) -> Result<Checkpoint, WitnessError> {
    let new =
        Checkpoint::open(&request.note, origin, log_key).map_err(WitnessError::NotSignedByLog)?;
    let known_size = known.map_or(0, |k| k.size);
    if request.old_size != known_size {
        return Err(WitnessError::Conflict {
            known: known_size,
            claimed: request.old_size,
        });
    }
    if new.size < known_size {
        return Err(WitnessError::Shrinks {
            old: known_size,
            size: new.size,
        });
    }
    if let Some(known) = known {
        verify_consistency(known.size, new.size, &known.root, &new.root, &request.proof).map_err(
            |source| WitnessError::NotConsistent {
                old: known.size,
                size: new.size,
                source,
            },
        )?;
    } else if !request.proof.is_empty() {
        return Err(WitnessError::Malformed {
            reason: "a proof from size 0 must be empty",
        });
    }
    Ok(new)
}

/// The `cosignature/v1` key id: the first 4 bytes of
/// SHA-256(name || "\n" || 0x04 || public key).
pub fn cosigner_key_id(name: &str, key: &PublicKey) -> [u8; 4] {
    crate::checkpoint::key_id_for(COSIGNATURE_ALG, name, key.as_bytes())
}

fn cosigned_message(checkpoint: &Checkpoint, time: u64) -> String {
    format!("cosignature/v1\ntime {time}\n{}", checkpoint.body())
}

/// The note signature line (ending with a newline) by which witness `name`
/// co-signs `checkpoint` at `time` (Unix seconds).
pub fn cosign(checkpoint: &Checkpoint, name: &str, key: &SigningKey, time: u64) -> String {
    let public = key.verifying_key();
    let mut blob = cosigner_key_id(name, &public).to_vec();
    blob.extend_from_slice(&time.to_be_bytes());
    blob.extend_from_slice(&key.sign(cosigned_message(checkpoint, time).as_bytes()));
    format!("\u{2014} {name} {}\n", STANDARD.encode(blob))
}

/// A witness as a verifier names it: the C2SP verifier key
/// `<name>+<hex key id>+<base64(0x04 || key)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessKey {
    /// The witness's name.
    pub name: String,
    /// Its Ed25519 public key.
    pub key: PublicKey,
}

impl WitnessKey {
    /// The verifier key string.
    pub fn to_vkey(&self) -> String {
        let mut raw = vec![COSIGNATURE_ALG];
        raw.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(cosigner_key_id(&self.name, &self.key)),
            STANDARD.encode(raw)
        )
    }

    /// Parses a verifier key string, checking its key id.
    pub fn parse(vkey: &str) -> Result<WitnessKey, BadWitnessKey> {
        let vkey = vkey.trim();
        let bad = |detail: &'static str| BadWitnessKey {
            vkey: vkey.to_owned(),
            detail,
        };
        // The base64 part may itself contain `+`.
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id), Some(raw)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("it does not have three `+`-separated parts"));
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(bad("the name is empty or has spaces"));
        }
        let raw = STANDARD
            .decode(raw)
            .map_err(|_| bad("the key is not base64"))?;
        let (alg, key) = raw.split_first().ok_or_else(|| bad("the key is empty"))?;
        if *alg != COSIGNATURE_ALG {
            return Err(bad("it is not a cosignature/v1 key (algorithm byte 0x04)"));
        }
        let key: [u8; 32] = key.try_into().map_err(|_| bad("the key is not 32 bytes"))?;
        let parsed = WitnessKey {
            name: name.to_owned(),
            key: PublicKey::from_bytes(key),
        };
        if hex::encode(cosigner_key_id(name, &parsed.key)) != id {
            return Err(bad("the key id does not match the name and key"));
        }
        Ok(parsed)
    }
}

/// A witness verifier key that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "witness key {vkey:?} is not valid: {detail}; expect `<name>+<hex key id>+<base64 key>` as `unseen witness init` printed it"
)]
pub struct BadWitnessKey {
    /// The text given.
    pub vkey: String,
    /// What was wrong.
    pub detail: &'static str,
}

/// Why a co-signed checkpoint does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CosignatureError {
    /// The log's own signature is missing or wrong.
    #[error("{0}")]
    Log(#[from] CheckpointError),
    /// No co-signature by the witness.
    #[error(
        "no co-signature by witness `{name}`; run `unseen ledger witness` against that witness first"
    )]
    Missing {
        /// The witness's name.
        name: String,
    },
    /// A co-signature by the witness that does not verify.
    #[error("the co-signature by witness `{name}` does not verify; the checkpoint was altered")]
    Bad {
        /// The witness's name.
        name: String,
    },
}

/// Checks a note for the log's signature and a `cosignature/v1` by
/// `witness`; returns the checkpoint and the time the witness co-signed it.
pub fn open_cosigned(
    note: &str,
    origin: &str,
    log_key: &PublicKey,
    witness: &WitnessKey,
) -> Result<(Checkpoint, u64), CosignatureError> {
    let checkpoint = Checkpoint::open(note, origin, log_key)?;
    // `Checkpoint::open` checked the envelope: everything after the first
    // blank line is signature lines.
    let sigs = note.split_once("\n\n").map_or("", |(_, s)| s);
    let want = cosigner_key_id(&witness.name, &witness.key);
    for line in sigs.lines() {
        let Some((name, b64)) = line
            .strip_prefix("\u{2014} ")
            .and_then(|rest| rest.split_once(' '))
        else {
            continue;
        };
        let Ok(blob) = STANDARD.decode(b64) else {
            continue;
        };
        if name != witness.name || blob.len() != 4 + 8 + 64 || blob[..4] != want {
            continue;
        }
        let time = u64::from_be_bytes(blob[4..12].try_into().unwrap_or_default());
        if witness
            .key
            .verify(cosigned_message(&checkpoint, time).as_bytes(), &blob[12..])
        {
            return Ok((checkpoint, time));
        }
        return Err(CosignatureError::Bad {
            name: witness.name.clone(),
        });
    }
    Err(CosignatureError::Missing {
        name: witness.name.clone(),
    })
}

/// Adds co-signature lines to a signed note.
pub fn attach(note: &str, cosignatures: &str) -> String {
    format!("{note}{cosignatures}")
}

/// Where the ledger keeps the checkpoint `witness` co-signed last:
/// `cosigned.<witness key id>` in the ledger directory.
pub fn cosigned_path(ledger_dir: &Path, witness: &WitnessKey) -> PathBuf {
    ledger_dir.join(format!(
        "cosigned.{}",
        hex::encode(cosigner_key_id(&witness.name, &witness.key))
    ))
}

/// The checkpoint `witness` co-signed last for the ledger in `ledger_dir`,
/// with its signatures unchecked (callers check with [`open_cosigned`]).
pub fn load_cosigned(
    ledger_dir: &Path,
    witness: &WitnessKey,
) -> Result<Option<(String, Checkpoint)>, WitnessDirError> {
    let path = cosigned_path(ledger_dir, witness);
    let Some(bytes) = files::read_optional(&path, 64 * 1024)? else {
        return Ok(None);
    };
    let note = String::from_utf8_lossy(&bytes).into_owned();
    let body = note.split_once("\n\n").map_or("", |(b, _)| b);
    let checkpoint = Checkpoint::parse_body(&format!("{body}\n")).map_err(|source| {
        WitnessDirError::Corrupt {
            log: path.display().to_string(),
            source,
        }
    })?;
    Ok(Some((note, checkpoint)))
}

/// Keeps `note`, co-signed by `witness`, beside the ledger (0600, replaced
/// atomically).
pub fn save_cosigned(
    ledger_dir: &Path,
    witness: &WitnessKey,
    note: &str,
) -> Result<(), WitnessDirError> {
    let path = cosigned_path(ledger_dir, witness);
    crate::store::write_atomic(&path, note.as_bytes())
        .map_err(|source| WitnessDirError::Write { path, source })
}

/// Why a ledger does not check out against a witness's co-signature.
#[derive(Debug, thiserror::Error)]
pub enum WitnessedError {
    /// The co-signed checkpoint itself is not valid.
    #[error("{0}")]
    Cosignature(#[from] CosignatureError),
    /// The ledger does not extend what the witness co-signed.
    #[error(
        "the ledger does not extend the checkpoint witness `{witness}` co-signed at size {size}: history was rewritten or cut ({source})"
    )]
    Diverged {
        /// The witness's name.
        witness: String,
        /// The co-signed size.
        size: u64,
        /// How verification failed.
        source: crate::proof::SinceError,
    },
}

/// What a witnessed verification proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessedReport {
    /// The witness's name.
    pub witness: String,
    /// The size it co-signed.
    pub witnessed_size: u64,
    /// When it co-signed, Unix seconds.
    pub witnessed_at: u64,
    /// The ledger's size now.
    pub size: u64,
}

/// Verifies the ledger in `ledger_dir` with `log_key` and checks that it
/// consistently extends `cosigned_note`, a checkpoint `witness` co-signed.
/// Whoever holds `ledger.key` can re-sign a rewritten history, but not
/// make the witness co-sign it: this is the check that catches them.
pub fn verify_witnessed(
    ledger_dir: &Path,
    cosigned_note: &str,
    log_key: &PublicKey,
    witness: &WitnessKey,
) -> Result<WitnessedReport, WitnessedError> {
    let (checkpoint, time) =
        open_cosigned(cosigned_note, crate::checkpoint::ORIGIN, log_key, witness)?;
    let report =
        crate::store::verify_since(ledger_dir, cosigned_note, log_key).map_err(|source| {
            WitnessedError::Diverged {
                witness: witness.name.clone(),
                size: checkpoint.size,
                source,
            }
        })?;
    Ok(WitnessedReport {
        witness: witness.name.clone(),
        witnessed_size: checkpoint.size,
        witnessed_at: time,
        size: report.size,
    })
}

/// Why a witness directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WitnessDirError {
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// The key could not be loaded or created.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The stored latest checkpoint is unreadable.
    #[error(
        "the witness's record of log {log} is not a checkpoint signed by that log ({source}); the witness directory was altered — restore it from a backup, never delete it (deleting lets the witness sign a fork)"
    )]
    Corrupt {
        /// The log's key id, hex.
        log: String,
        /// Why.
        source: CheckpointError,
    },
    /// Writing the new latest checkpoint failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A name C2SP notes cannot carry.
    #[error("witness name {0:?} is not allowed: it must be non-empty, without spaces or `+`")]
    BadName(String),
    /// No witness here.
    #[error(
        "{0} holds no witness key; create one with `unseen witness init --dir {0} --name NAME`"
    )]
    NoKey(String),
}

/// A witness's files: `witness.key` (PKCS#8, 0600), `witness.name`, and
/// `logs/<log key id>`, the latest co-signed checkpoint of each log.
#[derive(Debug)]
pub struct WitnessDir {
    dir: PathBuf,
    name: String,
    key: SigningKey,
}

impl WitnessDir {
    /// Creates a witness named `name` in `dir` (which may exist but must not
    /// hold a witness key).
    pub fn init(dir: &Path, name: &str) -> Result<WitnessDir, WitnessDirError> {
        if name.is_empty() || name.contains(char::is_whitespace) || name.contains('+') {
            return Err(WitnessDirError::BadName(name.to_owned()));
        }
        files::private_dir(dir)?;
        files::private_dir(&dir.join("logs"))?;
        let key = SigningKey::create(&dir.join("witness.key"))?;
        crate::store::write_atomic(&dir.join("witness.name"), format!("{name}\n").as_bytes())
            .map_err(|source| WitnessDirError::Write {
                path: dir.join("witness.name"),
                source,
            })?;
        Ok(WitnessDir {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            key,
        })
    }

    /// Opens an existing witness.
    pub fn open(dir: &Path) -> Result<WitnessDir, WitnessDirError> {
        let key_path = dir.join("witness.key");
        if !files::exists(&key_path)? {
            return Err(WitnessDirError::NoKey(dir.display().to_string()));
        }
        let key = SigningKey::load(&key_path)?;
        let name = String::from_utf8_lossy(&files::read_limited(&dir.join("witness.name"), 256)?)
            .trim()
            .to_owned();
        files::private_dir(&dir.join("logs"))?;
        Ok(WitnessDir {
            dir: dir.to_path_buf(),
            name,
            key,
        })
    }

    /// This witness's verifier key.
    pub fn witness_key(&self) -> WitnessKey {
        WitnessKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    fn log_file(&self, origin: &str, log_key: &PublicKey) -> PathBuf {
        let id = crate::checkpoint::key_id(origin, log_key.as_bytes());
        self.dir.join("logs").join(hex::encode(id))
    }

    /// The latest checkpoint co-signed for the log, as a note with the log's
    /// signature and this witness's co-signature.
    pub fn latest(
        &self,
        origin: &str,
        log_key: &PublicKey,
    ) -> Result<Option<(String, Checkpoint)>, WitnessDirError> {
        let path = self.log_file(origin, log_key);
        let Some(bytes) = files::read_optional(&path, 64 * 1024)? else {
            return Ok(None);
        };
        let note = String::from_utf8_lossy(&bytes).into_owned();
        let checkpoint = Checkpoint::open(&note, origin, log_key).map_err(|source| {
            WitnessDirError::Corrupt {
                log: hex::encode(crate::checkpoint::key_id(origin, log_key.as_bytes())),
                source,
            }
        })?;
        Ok(Some((note, checkpoint)))
    }

    /// Handles one add-checkpoint request: decides it, makes the new
    /// latest checkpoint durable, then returns the co-signature line.
    /// Callers serialise calls for one log.
    pub fn add_checkpoint(
        &self,
        origin: &str,
        log_key: &PublicKey,
        request: &AddCheckpoint,
        now: u64,
    ) -> Result<Result<String, WitnessError>, WitnessDirError> {
        let known = self.latest(origin, log_key)?;
        let new = match witness_checkpoint(known.as_ref().map(|k| &k.1), origin, log_key, request) {
            Ok(new) => new,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let cosignature = cosign(&new, &self.name, &self.key, now);
        let path = self.log_file(origin, log_key);
        crate::store::write_atomic(&path, attach(&request.note, &cosignature).as_bytes())
            .map_err(|source| WitnessDirError::Write { path, source })?;
        Ok(Ok(cosignature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::ORIGIN;
    use crate::merkle::{Tree, leaf_hash};

    fn tree(n: u64) -> Tree {
        Tree::from_leaves((0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect())
    }

    fn signed(log: &SigningKey, t: &Tree) -> (Checkpoint, String) {
        let cp = Checkpoint {
            origin: ORIGIN.into(),
            size: t.size(),
            root: t.root(),
        };
        let note = cp.sign(log).unwrap();
        (cp, note)
    }

    #[test]
    fn requests_round_trip_through_their_text() {
        let log = SigningKey::generate().unwrap();
        let t = tree(9);
        let request = AddCheckpoint {
            old_size: 5,
            proof: t.consistency_proof(5, 9).unwrap(),
            note: signed(&log, &t).1,
        };
        assert_eq!(AddCheckpoint::parse(&request.to_text()).unwrap(), request);
        for bad in [
            "old x\n\nnote",
            "new 1\n\nnote",
            "old 1\nnot-base64\n\nnote",
            "old 1",
        ] {
            assert!(AddCheckpoint::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn co_signs_extensions_and_refuses_forks_conflicts_and_other_logs() {
        let log = SigningKey::generate().unwrap();
        let key = log.verifying_key();
        let (first, first_note) = signed(&log, &tree(5));
        let add = |known: Option<&Checkpoint>, old_size, proof, note: &str| {
            witness_checkpoint(
                known,
                ORIGIN,
                &key,
                &AddCheckpoint {
                    old_size,
                    proof,
                    note: note.to_owned(),
                },
            )
        };
        assert_eq!(add(None, 0, vec![], &first_note).unwrap(), first);

        let grown = tree(12);
        let (_, grown_note) = signed(&log, &grown);
        let proof = grown.consistency_proof(5, 12).unwrap();
        assert_eq!(
            add(Some(&first), 5, proof.clone(), &grown_note)
                .unwrap()
                .size,
            12
        );
        assert_eq!(
            add(Some(&first), 3, proof.clone(), &grown_note)
                .unwrap_err()
                .http_status(),
            409
        );

        // The same log key signing a rewritten history: a fork.
        let forked = Tree::from_leaves((0..12).map(|i| leaf_hash(&[i as u8, 1])).collect());
        let (_, forked_note) = signed(&log, &forked);
        let err = add(
            Some(&first),
            5,
            forked.consistency_proof(5, 12).unwrap(),
            &forked_note,
        )
        .unwrap_err();
        assert_eq!(err.http_status(), 422, "{err}");
        let (_, same_size_fork) = signed(&log, &Tree::from_leaves(vec![[7; 32]; 5]));
        assert_eq!(
            add(Some(&first), 5, vec![], &same_size_fork)
                .unwrap_err()
                .http_status(),
            422
        );

        let other = SigningKey::generate().unwrap();
        let (_, foreign) = signed(&other, &grown);
        assert_eq!(
            add(Some(&first), 5, proof, &foreign)
                .unwrap_err()
                .http_status(),
            403
        );
        let (_, smaller) = signed(&log, &tree(3));
        assert_eq!(
            add(Some(&first), 5, vec![], &smaller)
                .unwrap_err()
                .http_status(),
            400
        );
    }

    #[test]
    fn cosignatures_verify_with_the_vkey_only() {
        let log = SigningKey::generate().unwrap();
        let witness = SigningKey::generate().unwrap();
        let (cp, note) = signed(&log, &tree(4));
        let wkey = WitnessKey {
            name: "witness.example".into(),
            key: witness.verifying_key(),
        };
        let parsed = WitnessKey::parse(&wkey.to_vkey()).unwrap();
        assert_eq!(parsed, wkey);
        let cosigned = attach(
            &note,
            &cosign(&cp, "witness.example", &witness, 1_700_000_000),
        );
        assert_eq!(
            open_cosigned(&cosigned, ORIGIN, &log.verifying_key(), &wkey).unwrap(),
            (cp.clone(), 1_700_000_000)
        );
        // The log's own check ignores the co-signature.
        assert_eq!(
            Checkpoint::open(&cosigned, ORIGIN, &log.verifying_key()).unwrap(),
            cp
        );
        assert!(matches!(
            open_cosigned(&note, ORIGIN, &log.verifying_key(), &wkey),
            Err(CosignatureError::Missing { .. })
        ));
        let impostor = WitnessKey {
            name: "witness.example".into(),
            key: SigningKey::generate().unwrap().verifying_key(),
        };
        assert!(open_cosigned(&cosigned, ORIGIN, &log.verifying_key(), &impostor).is_err());
        let mut tampered_vkey = wkey.to_vkey();
        tampered_vkey.replace_range(..1, "x");
        assert!(WitnessKey::parse(&tampered_vkey).is_err());
    }

    #[test]
    fn the_directory_keeps_the_latest_and_refuses_to_sign_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let wdir = WitnessDir::init(&dir.path().join("w"), "w.example").unwrap();
        let log = SigningKey::generate().unwrap();
        let key = log.verifying_key();
        let t = tree(20);
        let (_, note10) = signed(&log, &Tree::from_leaves(t.leaves()[..10].to_vec()));
        let first = AddCheckpoint {
            old_size: 0,
            proof: vec![],
            note: note10,
        };
        assert!(
            wdir.add_checkpoint(ORIGIN, &key, &first, 1)
                .unwrap()
                .is_ok()
        );
        // Replaying the first request after the witness moved on: 409.
        let (_, note20) = signed(&log, &t);
        let next = AddCheckpoint {
            old_size: 10,
            proof: t.consistency_proof(10, 20).unwrap(),
            note: note20,
        };
        assert!(wdir.add_checkpoint(ORIGIN, &key, &next, 2).unwrap().is_ok());
        let reopened = WitnessDir::open(&dir.path().join("w")).unwrap();
        assert_eq!(reopened.latest(ORIGIN, &key).unwrap().unwrap().1.size, 20);
        let replay = reopened.add_checkpoint(ORIGIN, &key, &first, 3).unwrap();
        assert_eq!(
            replay.unwrap_err(),
            WitnessError::Conflict {
                known: 20,
                claimed: 0
            }
        );
        let (note, _) = reopened.latest(ORIGIN, &key).unwrap().unwrap();
        assert!(open_cosigned(&note, ORIGIN, &key, &reopened.witness_key()).is_ok());
    }
}
