//! Proofs and exports an outside auditor checks without the ledger.
//!
//! * [`Proof`]: an inclusion or consistency proof as one JSON document,
//!   checked by [`check_proof`] (and, given a signed checkpoint and the
//!   public key, tied to the signed root).
//! * [`Segment`]: entries `from..to` with the signed checkpoint and
//!   inclusion proofs of the first and last of them, checked by
//!   [`verify_segment`]. The entries are hash-chained, so the last one's
//!   inclusion in the signed tree fixes every entry before it in the segment.
//! * [`verify_extends`] / [`crate::store::verify_since`]: the ledger is a
//!   consistent extension of a checkpoint the auditor saved earlier (no
//!   rollback, no fork).
//! * [`detect_equivocation`]: two validly signed checkpoints of the same
//!   size with different roots prove the log showed two histories.
//!
//! Everything here is a pure function over text and bytes.

use crate::checkpoint::{Checkpoint, CheckpointError, ORIGIN};
use crate::entry::{Entry, EntryError, Hash, sha256};
use crate::keys::PublicKey;
use crate::merkle::{self, ProofError, Tree};
use crate::verify::{VerifyError, check_chain, verify_keeping_leaves};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Hashes as 64 lowercase hex characters in JSON.
mod hex_hash {
    use super::Hash;
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn parse(text: &str) -> Result<Hash, String> {
        if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!(
                "{text:?} is not a hash; expected 64 lowercase hex characters"
            ));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    pub(super) fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(h))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(D::Error::custom)
    }

    pub(super) mod list {
        use super::Hash;
        use serde::de::Error;
        use serde::ser::SerializeSeq;
        use serde::{Deserialize, Deserializer, Serializer};

        pub(in super::super) fn serialize<S: Serializer>(
            list: &[Hash],
            s: S,
        ) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(list.len()))?;
            for h in list {
                seq.serialize_element(&hex::encode(h))?;
            }
            seq.end()
        }

        pub(in super::super) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<Hash>, D::Error> {
            let texts = Vec::<String>::deserialize(d)?;
            texts
                .iter()
                .map(|t| super::parse(t).map_err(D::Error::custom))
                .collect()
        }
    }
}

/// Proof that the leaf `leaf_hash` is entry `index` of the tree of `size`
/// entries whose root is `root`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    /// Position of the entry.
    pub index: u64,
    /// Size of the tree.
    pub size: u64,
    /// RFC 6962 leaf hash of the entry's canonical line.
    #[serde(with = "hex_hash")]
    pub leaf_hash: Hash,
    /// Root of the tree of `size` entries.
    #[serde(with = "hex_hash")]
    pub root: Hash,
    /// Audit path, from the leaf upwards.
    #[serde(with = "hex_hash::list")]
    pub path: Vec<Hash>,
}

/// Proof that the tree of `old_size` entries is a prefix of the tree of
/// `new_size` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    /// Size of the older tree.
    pub old_size: u64,
    /// Size of the newer tree.
    pub new_size: u64,
    /// Root of the older tree.
    #[serde(with = "hex_hash")]
    pub old_root: Hash,
    /// Root of the newer tree.
    #[serde(with = "hex_hash")]
    pub new_root: Hash,
    /// The RFC 9162 consistency proof.
    #[serde(with = "hex_hash::list")]
    pub path: Vec<Hash>,
}

/// An inclusion or consistency proof, as exchanged in JSON:
/// `{"kind":"inclusion","index":…,"size":…,"leaf_hash":hex,"root":hex,"path":[hex…]}` or
/// `{"kind":"consistency","old_size":…,"new_size":…,"old_root":hex,"new_root":hex,"path":[…]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Proof {
    /// See [`InclusionProof`].
    Inclusion(InclusionProof),
    /// See [`ConsistencyProof`].
    Consistency(ConsistencyProof),
}

impl InclusionProof {
    /// The proof for leaf `index` of the first `size` leaves of `tree`.
    pub fn build(tree: &Tree, index: u64, size: u64) -> Result<InclusionProof, ProofError> {
        let path = tree.inclusion_proof(index, size)?;
        Ok(InclusionProof {
            index,
            size,
            // `inclusion_proof` checked index < size <= tree size.
            leaf_hash: tree.leaves()[index as usize],
            root: tree.root_at(size)?,
            path,
        })
    }

    /// Checks the audit path against the claimed root.
    pub fn check(&self) -> Result<(), ProofError> {
        merkle::verify_inclusion(
            self.index,
            self.size,
            &self.leaf_hash,
            &self.path,
            &self.root,
        )
    }
}

impl ConsistencyProof {
    /// The proof from the first `old` to the first `new` leaves of `tree`.
    pub fn build(tree: &Tree, old: u64, new: u64) -> Result<ConsistencyProof, ProofError> {
        let path = tree.consistency_proof(old, new)?;
        Ok(ConsistencyProof {
            old_size: old,
            new_size: new,
            old_root: tree.root_at(old)?,
            new_root: tree.root_at(new)?,
            path,
        })
    }

    /// Checks the proof against the claimed roots.
    pub fn check(&self) -> Result<(), ProofError> {
        merkle::verify_consistency(
            self.old_size,
            self.new_size,
            &self.old_root,
            &self.new_root,
            &self.path,
        )
    }
}

impl Proof {
    /// Compact JSON, as [`check_proof`] reads it.
    pub fn to_json(&self) -> String {
        // Serialising plain structs of integers and strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the JSON form.
    pub fn from_json(text: &str) -> Result<Proof, ProofCheckError> {
        serde_json::from_str(text).map_err(|e| ProofCheckError::NotAProof {
            detail: e.to_string(),
        })
    }

    /// Checks the proof's hashes.
    pub fn check(&self) -> Result<(), ProofError> {
        match self {
            Proof::Inclusion(p) => p.check(),
            Proof::Consistency(p) => p.check(),
        }
    }
}

/// What [`check_proof`] established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofReport {
    /// The proof that verified.
    pub proof: Proof,
    /// The signed checkpoint the proof is tied to, when one was given: for
    /// an inclusion proof its size and root are the proof's; for a
    /// consistency proof they are those of its old or its new tree.
    pub checkpoint: Option<Checkpoint>,
}

impl fmt::Display for ProofReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.proof {
            Proof::Inclusion(p) => write!(
                f,
                "inclusion proof OK: leaf {} is entry {} of the tree of {} entries with root {}",
                hex::encode(p.leaf_hash),
                p.index,
                p.size,
                hex::encode(p.root)
            )?,
            Proof::Consistency(p) => write!(
                f,
                "consistency proof OK: the tree of {} entries (root {}) is a prefix of the tree of {} entries (root {})",
                p.old_size,
                hex::encode(p.old_root),
                p.new_size,
                hex::encode(p.new_root)
            )?,
        }
        match &self.checkpoint {
            Some(cp) => write!(
                f,
                "; the root of size {} is signed by the ledger key",
                cp.size
            ),
            None => write!(
                f,
                "; no signed checkpoint was given, so the root itself is not vouched for"
            ),
        }
    }
}

/// Why [`check_proof`] rejected a proof.
#[derive(Debug, thiserror::Error)]
pub enum ProofCheckError {
    /// The text is not a proof document.
    #[error(
        "not a proof document ({detail}); expect {{\"kind\":\"inclusion\",\"index\":…,\"size\":…,\"leaf_hash\":hex,\"root\":hex,\"path\":[…]}} or {{\"kind\":\"consistency\",\"old_size\":…,\"new_size\":…,\"old_root\":hex,\"new_root\":hex,\"path\":[…]}}"
    )]
    NotAProof {
        /// What the JSON reader reported.
        detail: String,
    },
    /// The hashes do not check.
    #[error("the proof does not verify: {0}")]
    Invalid(#[from] ProofError),
    /// The checkpoint is malformed or not signed by the key.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The proof's root is not the one the checkpoint signs.
    #[error(
        "the proof is about a tree of {size} entries with root {root_hex}, but the signed checkpoint is for {signed_size} entries with root {signed_root_hex}; the proof is not for the signed tree, ask the ledger for a proof against this checkpoint"
    )]
    NotSignedRoot {
        /// Size in the proof.
        size: u64,
        /// Root in the proof, hex.
        root_hex: String,
        /// Size in the checkpoint.
        signed_size: u64,
        /// Root in the checkpoint, hex.
        signed_root_hex: String,
    },
    /// Only one of checkpoint and key was given.
    #[error(
        "a signed checkpoint and the public key go together; give both to tie the proof to a signed root, or neither to check the proof alone"
    )]
    NeedNoteAndKey,
}

/// Checks a proof in its JSON form without the ledger. With a signed
/// checkpoint and the ledger's public key, also checks the signature and
/// that the proof is about the signed tree.
pub fn check_proof(
    json_text: &str,
    checkpoint_note: Option<&str>,
    public_key: Option<&PublicKey>,
) -> Result<ProofReport, ProofCheckError> {
    let proof = Proof::from_json(json_text)?;
    proof.check()?;
    let checkpoint = match (checkpoint_note, public_key) {
        (None, None) => None,
        (Some(note), Some(key)) => {
            let cp = Checkpoint::open(note, ORIGIN, key)?;
            let ends: Vec<(u64, Hash)> = match &proof {
                Proof::Inclusion(p) => vec![(p.size, p.root)],
                Proof::Consistency(p) => {
                    vec![(p.new_size, p.new_root), (p.old_size, p.old_root)]
                }
            };
            if !ends.contains(&(cp.size, cp.root)) {
                let (size, root) = ends[0];
                return Err(ProofCheckError::NotSignedRoot {
                    size,
                    root_hex: hex::encode(root),
                    signed_size: cp.size,
                    signed_root_hex: hex::encode(cp.root),
                });
            }
            Some(cp)
        }
        _ => return Err(ProofCheckError::NeedNoteAndKey),
    };
    Ok(ProofReport { proof, checkpoint })
}

/// The format name every [`Segment`] carries.
pub const SEGMENT_FORMAT: &str = "unseen-ledger-segment/1";

/// Entries `from..to` of a ledger, exported for an auditor who does not
/// have the rest: the entries' canonical lines, the signed checkpoint, and
/// inclusion proofs of the first and the last of them in the signed tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// Always [`SEGMENT_FORMAT`].
    pub format: String,
    /// Index of the first entry.
    pub from: u64,
    /// One past the index of the last entry.
    pub to: u64,
    /// The canonical lines (without newlines) of entries `from..to`.
    pub entries: Vec<String>,
    /// The signed checkpoint the proofs lead to.
    pub checkpoint: String,
    /// Inclusion of entry `from` in the signed tree.
    pub first: InclusionProof,
    /// Inclusion of entry `to - 1` in the signed tree.
    pub last: InclusionProof,
}

/// What [`verify_segment`] established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    /// Index of the first entry.
    pub from: u64,
    /// One past the index of the last entry.
    pub to: u64,
    /// Size of the signed tree the entries are in.
    pub checkpoint_size: u64,
    /// Its root, hex.
    pub root_hex: String,
}

impl fmt::Display for SegmentReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "segment OK: entries {}..{} are unaltered entries of the signed tree of {} entries with root {}",
            self.from, self.to, self.checkpoint_size, self.root_hex
        )
    }
}

/// Why a segment could not be exported or did not verify.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The text is not a segment document.
    #[error("not a ledger segment ({detail}); export one with export_segment")]
    NotASegment {
        /// What the JSON reader reported.
        detail: String,
    },
    /// Another format or version.
    #[error("segment format is {found:?}; this verifier reads {SEGMENT_FORMAT:?}")]
    WrongFormat {
        /// The format found.
        found: String,
    },
    /// The checkpoint is malformed or not signed by the key.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The range is empty or outside the signed tree.
    #[error(
        "entries {from}..{to} are not a non-empty range inside the signed tree of {size} entries; ask for from < to <= {size}"
    )]
    BadRange {
        /// First entry.
        from: u64,
        /// One past the last entry.
        to: u64,
        /// Size of the signed tree.
        size: u64,
    },
    /// The segment holds another number of entries than its range says.
    #[error(
        "the segment says entries {from}..{to} but holds {found} lines; entries were added or removed"
    )]
    WrongCount {
        /// First entry.
        from: u64,
        /// One past the last entry.
        to: u64,
        /// Lines present.
        found: u64,
    },
    /// A line is not a canonical entry.
    #[error("entry {index}: {source}; the segment was altered at entry {index}")]
    BadEntry {
        /// Position in the ledger.
        index: u64,
        /// What is wrong.
        source: EntryError,
    },
    /// A line carries another index than its position.
    #[error(
        "entry {index}: its index field says {found}; entries were removed, inserted or reordered"
    )]
    WrongIndex {
        /// Position in the ledger.
        index: u64,
        /// Index in the line.
        found: u64,
    },
    /// The chain inside the segment is broken.
    #[error(
        "entry {index}: prev hash does not match entry {}; the segment was altered at or before entry {index}",
        index - 1
    )]
    PrevMismatch {
        /// The entry whose `prev` is wrong.
        index: u64,
    },
    /// An inclusion proof is not about the segment's entry or signed tree.
    #[error(
        "the inclusion proof of the {which} entry is not about entry {index} of the signed tree ({detail}); the segment was altered"
    )]
    ProofMismatch {
        /// `first` or `last`.
        which: &'static str,
        /// The entry it should be about.
        index: u64,
        /// What differs.
        detail: &'static str,
    },
    /// An inclusion proof does not verify.
    #[error("the inclusion proof of the {which} entry does not verify: {source}")]
    BadProof {
        /// `first` or `last`.
        which: &'static str,
        /// Why.
        source: ProofError,
    },
    /// The ledger the segment is exported from does not verify.
    #[error("the ledger does not verify: {0}")]
    Ledger(#[from] VerifyError),
}

impl Segment {
    /// Builds the segment of entries `from..to` from a ledger's
    /// `entries.jsonl` bytes and a signed checkpoint. Only the first
    /// `checkpoint.size` entries are used (the file may be ahead of the
    /// checkpoint while an append is under way); they must hash to its root.
    pub fn build(
        entries_bytes: &[u8],
        checkpoint_note: &str,
        public_key: &PublicKey,
        from: u64,
        to: u64,
    ) -> Result<Segment, SegmentError> {
        let cp = Checkpoint::open(checkpoint_note, ORIGIN, public_key)?;
        let mut covered = 0usize;
        let mut lines = 0u64;
        while lines < cp.size {
            match entries_bytes[covered..].iter().position(|&b| b == b'\n') {
                Some(end) => covered += end + 1,
                None => break,
            }
            lines += 1;
        }
        let prefix = &entries_bytes[..covered];
        let (_, leaves) = verify_keeping_leaves(prefix, checkpoint_note, public_key)?;
        let tree = Tree::from_leaves(leaves);
        let text_lines: Vec<&[u8]> = prefix.split(|&b| b == b'\n').collect();
        Segment::from_tree(&tree, &text_lines, checkpoint_note, &cp, from, to)
    }

    /// Builds a segment from a tree, its canonical lines and its signed
    /// checkpoint (of size `tree.size()`).
    pub(crate) fn from_tree(
        tree: &Tree,
        lines: &[&[u8]],
        checkpoint_note: &str,
        cp: &Checkpoint,
        from: u64,
        to: u64,
    ) -> Result<Segment, SegmentError> {
        if from >= to || to > cp.size || cp.size != tree.size() {
            return Err(SegmentError::BadRange {
                from,
                to,
                size: cp.size,
            });
        }
        let proof = |index| {
            InclusionProof::build(tree, index, cp.size).map_err(|source| SegmentError::BadProof {
                which: "exported",
                source,
            })
        };
        let entries = (from..to)
            .map(|i| {
                let line = lines[i as usize];
                String::from_utf8(line.to_vec()).map_err(|_| SegmentError::BadEntry {
                    index: i,
                    source: EntryError::NotJson {
                        detail: "not UTF-8".into(),
                    },
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Segment {
            format: SEGMENT_FORMAT.to_owned(),
            from,
            to,
            entries,
            checkpoint: checkpoint_note.to_owned(),
            first: proof(from)?,
            last: proof(to - 1)?,
        })
    }

    /// The segment as one compact JSON document (no whitespace outside
    /// strings, so every byte of it matters).
    pub fn to_json(&self) -> String {
        // Serialising plain structs of integers and strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Checks a segment exported by [`Segment::build`] (or
/// [`crate::Ledger::export_segment`]) with nothing but the ledger's public
/// key: the checkpoint's signature, that every line is a canonical entry
/// with the right index chained to the one before, and that the first and
/// last entries are at their places in the signed tree.
pub fn verify_segment(
    segment_json: &str,
    public_key: &PublicKey,
) -> Result<SegmentReport, SegmentError> {
    let seg: Segment =
        serde_json::from_str(segment_json).map_err(|e| SegmentError::NotASegment {
            detail: e.to_string(),
        })?;
    if seg.format != SEGMENT_FORMAT {
        return Err(SegmentError::WrongFormat { found: seg.format });
    }
    let cp = Checkpoint::open(&seg.checkpoint, ORIGIN, public_key)?;
    if seg.from >= seg.to || seg.to > cp.size {
        return Err(SegmentError::BadRange {
            from: seg.from,
            to: seg.to,
            size: cp.size,
        });
    }
    let count = seg.entries.len() as u64;
    if count != seg.to - seg.from {
        return Err(SegmentError::WrongCount {
            from: seg.from,
            to: seg.to,
            found: count,
        });
    }
    let mut prev_hash: Option<Hash> = None;
    let mut first_leaf = [0u8; 32];
    let mut last_leaf = [0u8; 32];
    for (i, line) in seg.entries.iter().enumerate() {
        let index = seg.from + i as u64;
        let entry = Entry::parse_line(line.as_bytes())
            .map_err(|source| SegmentError::BadEntry { index, source })?;
        if entry.index != index {
            return Err(SegmentError::WrongIndex {
                index,
                found: entry.index,
            });
        }
        if let Some(p) = prev_hash
            && entry.prev != hex::encode(p)
        {
            return Err(SegmentError::PrevMismatch { index });
        }
        prev_hash = Some(sha256(line.as_bytes()));
        let leaf = merkle::leaf_hash(line.as_bytes());
        if i == 0 {
            first_leaf = leaf;
        }
        last_leaf = leaf;
    }
    for (which, proof, index, leaf) in [
        ("first", &seg.first, seg.from, first_leaf),
        ("last", &seg.last, seg.to - 1, last_leaf),
    ] {
        let mismatch = |detail| SegmentError::ProofMismatch {
            which,
            index,
            detail,
        };
        if proof.index != index {
            return Err(mismatch("its index differs"));
        }
        if proof.size != cp.size || proof.root != cp.root {
            return Err(mismatch("its tree is not the signed one"));
        }
        if proof.leaf_hash != leaf {
            return Err(mismatch("its leaf hash is not the entry's"));
        }
        proof
            .check()
            .map_err(|source| SegmentError::BadProof { which, source })?;
    }
    Ok(SegmentReport {
        from: seg.from,
        to: seg.to,
        checkpoint_size: cp.size,
        root_hex: hex::encode(cp.root),
    })
}

/// What [`verify_extends`] established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinceReport {
    /// Size of the checkpoint saved earlier.
    pub previous_size: u64,
    /// Size of the ledger now (all covered by its signed checkpoint).
    pub size: u64,
    /// Root of the ledger now, hex.
    pub root_hex: String,
}

/// Why the ledger is not a consistent extension of a saved checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum SinceError {
    /// The ledger itself does not verify.
    #[error("the ledger does not verify: {0}")]
    Ledger(#[from] VerifyError),
    /// The saved checkpoint is malformed or not signed by the key.
    #[error("saved checkpoint: {0}")]
    Saved(#[from] CheckpointError),
    /// The ledger is shorter than it was.
    #[error(
        "ROLLBACK: the saved checkpoint covers {saved_size} entries but the ledger now holds {current_size}; entries signed before are gone, the ledger was rolled back or replaced"
    )]
    Rollback {
        /// Size in the saved checkpoint.
        saved_size: u64,
        /// Size now.
        current_size: u64,
    },
    /// The first entries are no longer the ones signed before.
    #[error(
        "FORK: the first {saved_size} entries no longer hash to the root signed in the saved checkpoint; the history signed before was rewritten"
    )]
    Fork {
        /// Size in the saved checkpoint.
        saved_size: u64,
    },
}

/// Checks a ledger (its `entries.jsonl` bytes and current signed
/// checkpoint) and that it extends the checkpoint `previous_note` saved
/// earlier: the consistency proof from the saved tree to the current one
/// must verify.
pub fn verify_extends(
    entries_bytes: &[u8],
    checkpoint_note: &str,
    previous_note: &str,
    public_key: &PublicKey,
) -> Result<SinceReport, SinceError> {
    let previous = Checkpoint::open(previous_note, ORIGIN, public_key)?;
    let (report, leaves) = verify_keeping_leaves(entries_bytes, checkpoint_note, public_key)?;
    if previous.size > report.size {
        return Err(SinceError::Rollback {
            saved_size: previous.size,
            current_size: report.size,
        });
    }
    let tree = Tree::from_leaves(leaves);
    let fork = || SinceError::Fork {
        saved_size: previous.size,
    };
    let proof = tree
        .consistency_proof(previous.size, report.size)
        .map_err(|_| fork())?;
    merkle::verify_consistency(
        previous.size,
        report.size,
        &previous.root,
        &tree.root(),
        &proof,
    )
    .map_err(|_| fork())?;
    Ok(SinceReport {
        previous_size: previous.size,
        size: report.size,
        root_hex: report.root_hex,
    })
}

/// What two signed checkpoints say about each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Equivocation {
    /// Same size, same root: the same tree.
    Same {
        /// The size.
        size: u64,
    },
    /// Same size, different roots, both validly signed: the log has shown
    /// two different histories. This pair is the proof.
    Detected {
        /// The size.
        size: u64,
        /// Root in the first checkpoint, hex.
        root_a_hex: String,
        /// Root in the second checkpoint, hex.
        root_b_hex: String,
    },
    /// Different sizes: the two do not conflict by themselves; check a
    /// consistency proof between them with [`check_proof`].
    NeedsConsistencyProof {
        /// The smaller size.
        old_size: u64,
        /// The larger size.
        new_size: u64,
    },
}

/// Compares two signed checkpoints (both must be validly signed by `key`).
pub fn detect_equivocation(
    note_a: &str,
    note_b: &str,
    key: &PublicKey,
) -> Result<Equivocation, CheckpointError> {
    let a = Checkpoint::open(note_a, ORIGIN, key)?;
    let b = Checkpoint::open(note_b, ORIGIN, key)?;
    Ok(if a.size != b.size {
        Equivocation::NeedsConsistencyProof {
            old_size: a.size.min(b.size),
            new_size: a.size.max(b.size),
        }
    } else if a.root == b.root {
        Equivocation::Same { size: a.size }
    } else {
        Equivocation::Detected {
            size: a.size,
            root_a_hex: hex::encode(a.root),
            root_b_hex: hex::encode(b.root),
        }
    })
}

/// Checks the chain of `entries_bytes` alone and returns its leaf hashes.
pub fn leaf_hashes(entries_bytes: &[u8]) -> Result<Vec<Hash>, VerifyError> {
    check_chain(entries_bytes).map(|c| c.leaves)
}
