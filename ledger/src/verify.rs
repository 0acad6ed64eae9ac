//! Offline verification of a ledger from its bytes and the public key alone.

use crate::checkpoint::{Checkpoint, CheckpointError, ORIGIN};
use crate::entry::{Entry, EntryError, Hash, fast_index_and_prev, sha256};
use crate::keys::PublicKey;
use crate::merkle;
use std::path::PathBuf;

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of entries, all covered by the signed checkpoint.
    pub size: u64,
    /// Their Merkle root, as lowercase hex.
    pub root_hex: String,
}

/// The first thing found wrong with a ledger.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// An entry line is not a valid canonical entry.
    #[error("entry {index}: {source}; the ledger was altered at entry {index}")]
    BadEntry {
        /// Position of the line, counting from 0.
        index: u64,
        /// What is wrong with it.
        source: EntryError,
    },
    /// An entry carries the wrong index.
    #[error(
        "entry {index}: its index field says {found}; entries were removed, inserted or reordered at or before entry {index}"
    )]
    WrongIndex {
        /// Position of the line.
        index: u64,
        /// The index it claims.
        found: u64,
    },
    /// Entry 0 does not start the chain.
    #[error(
        "entry 0: prev hash is not 64 zeros; entries were removed from or added to the start of the ledger"
    )]
    FirstPrevNotZero,
    /// The chain is broken.
    #[error(
        "entry {index}: prev hash does not match entry {previous}; the ledger was altered at or before entry {index}"
    )]
    PrevMismatch {
        /// The entry whose `prev` is wrong.
        index: u64,
        /// The entry before it.
        previous: u64,
    },
    /// The file does not end with a newline.
    #[error(
        "entry {index} is not terminated by a newline (a torn write or a cut file); the ledger was altered at entry {index}, or opening it with Ledger::open recovers a crashed write"
    )]
    UnterminatedLine {
        /// Position of the incomplete line.
        index: u64,
    },
    /// The checkpoint is malformed or not validly signed by the key.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The checkpoint and the entries disagree on the count.
    #[error(
        "the signed checkpoint covers {checkpoint} entries but the ledger holds {entries}; entries were added or removed after the checkpoint was signed"
    )]
    SizeMismatch {
        /// Size in the checkpoint.
        checkpoint: u64,
        /// Entries in the file.
        entries: u64,
    },
    /// The entries do not hash to the signed root.
    #[error(
        "the Merkle root of the {size} entries does not match the signed checkpoint; an entry was altered (most likely the last one)"
    )]
    RootMismatch {
        /// Number of entries.
        size: u64,
    },
    /// A ledger file could not be read.
    #[error(
        "could not read {path}: {source}; check that the directory holds entries.jsonl and checkpoint"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A ledger file is a link, not a regular file, or too large.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// The checkpoint file is not UTF-8 text.
    #[error("checkpoint file {path} is not UTF-8 text; it was altered or is not a checkpoint")]
    CheckpointNotText {
        /// The file.
        path: PathBuf,
    },
}

impl VerifyError {
    /// The entry at which the chain of lines stops being valid, for errors
    /// about one entry.
    pub(crate) fn first_bad_entry(&self) -> Option<u64> {
        match self {
            VerifyError::BadEntry { index, .. }
            | VerifyError::WrongIndex { index, .. }
            | VerifyError::PrevMismatch { index, .. }
            | VerifyError::UnterminatedLine { index } => Some(*index),
            VerifyError::FirstPrevNotZero => Some(0),
            _ => None,
        }
    }
}

/// A chain of entries checked line by line.
#[derive(Debug, Clone)]
pub(crate) struct Chain {
    /// RFC 6962 leaf hash of each entry.
    pub leaves: Vec<Hash>,
    /// Hash of the last entry's canonical bytes (64 zeros if empty).
    pub last_hash: Hash,
}

/// Inputs larger than this are checked on several threads.
const PARALLEL_FROM: usize = 4 << 20;

/// Checks that `bytes` is a well-formed hash chain of canonical entries,
/// each line ending with `\n`, and returns the hashes the tree needs.
///
/// Large inputs are cut at line ends into one piece per CPU; each piece is
/// checked on its own thread (every line, and every link inside the
/// piece), then the links between pieces are checked here. If any piece
/// finds a problem, the whole input is checked again in order, so the
/// error reported is the first one, exactly as without threads.
pub(crate) fn check_chain(bytes: &[u8]) -> Result<Chain, VerifyError> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    if threads < 2 || bytes.len() < PARALLEL_FROM {
        return check_chain_in_order(bytes);
    }
    let mut pieces = Vec::with_capacity(threads);
    let mut start = 0;
    for t in 1..=threads {
        let want = bytes.len() * t / threads;
        let end = if t == threads {
            bytes.len()
        } else {
            match memchr::memchr(b'\n', &bytes[want.max(start)..]) {
                Some(nl) => want.max(start) + nl + 1,
                None => bytes.len(),
            }
        };
        pieces.push(&bytes[start..end]);
        start = end;
        if start == bytes.len() {
            break;
        }
    }
    let results: Vec<Option<Piece>> = std::thread::scope(|s| {
        let handles: Vec<_> = pieces
            .iter()
            .map(|piece| s.spawn(move || check_piece(piece)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().ok().flatten())
            .collect()
    });
    let mut leaves = Vec::with_capacity(results.iter().flatten().map(|p| p.leaves.len()).sum());
    let mut last_hash = [0u8; 32];
    for piece in results {
        let Some(piece) = piece else {
            return check_chain_in_order(bytes);
        };
        if let Some((first_index, first_prev)) = piece.first {
            if first_index != leaves.len() as u64 || first_prev != last_hash {
                return check_chain_in_order(bytes);
            }
            last_hash = piece.last_hash;
        }
        leaves.extend_from_slice(&piece.leaves);
    }
    Ok(Chain { leaves, last_hash })
}

/// A piece of the entries checked on its own.
struct Piece {
    /// Index and `prev` of its first line, if it has lines.
    first: Option<(u64, Hash)>,
    leaves: Vec<Hash>,
    last_hash: Hash,
}

/// Checks every line of `bytes` and the links between them; `None` on
/// any problem (the caller then finds and reports it in order).
fn check_piece(bytes: &[u8]) -> Option<Piece> {
    let mut leaves = Vec::new();
    let mut first = None;
    let mut last_hash = [0u8; 32];
    let mut rest = bytes;
    while !rest.is_empty() {
        let end = memchr::memchr(b'\n', rest)?;
        let line = &rest[..end];
        rest = &rest[end + 1..];
        let (index, prev) = match fast_index_and_prev(line) {
            Some(read) => read,
            None => {
                let entry = Entry::parse_line(line).ok()?;
                let mut prev = [0u8; 32];
                hex::decode_to_slice(&entry.prev, &mut prev).ok()?;
                (entry.index, prev)
            }
        };
        match first {
            None => first = Some((index, prev)),
            Some((first_index, _)) => {
                if index != first_index + leaves.len() as u64 || prev != last_hash {
                    return None;
                }
            }
        }
        last_hash = sha256(line);
        leaves.push(merkle::leaf_hash(line));
    }
    Some(Piece {
        first,
        leaves,
        last_hash,
    })
}

fn check_chain_in_order(bytes: &[u8]) -> Result<Chain, VerifyError> {
    let mut leaves = Vec::new();
    let mut last_hash = [0u8; 32];
    let mut rest = bytes;
    let mut index = 0u64;
    while !rest.is_empty() {
        let Some(end) = memchr::memchr(b'\n', rest) else {
            return Err(VerifyError::UnterminatedLine { index });
        };
        let line = &rest[..end];
        rest = &rest[end + 1..];
        let (found, prev) = match fast_index_and_prev(line) {
            Some(read) => read,
            None => {
                let entry = Entry::parse_line(line)
                    .map_err(|source| VerifyError::BadEntry { index, source })?;
                let mut prev = [0u8; 32];
                // `parse_line` checked `prev` is 64 lowercase hex digits.
                hex::decode_to_slice(&entry.prev, &mut prev).unwrap_or_default();
                (entry.index, prev)
            }
        };
        if found != index {
            return Err(VerifyError::WrongIndex { index, found });
        }
        if prev != last_hash {
            return Err(match index {
                0 => VerifyError::FirstPrevNotZero,
                _ => VerifyError::PrevMismatch {
                    index,
                    previous: index - 1,
                },
            });
        }
        last_hash = sha256(line);
        leaves.push(merkle::leaf_hash(line));
        index += 1;
    }
    Ok(Chain { leaves, last_hash })
}

/// Verifies a ledger offline: the contents of `entries.jsonl`, the signed
/// checkpoint text, and the ledger's public key.
///
/// Checks, in order: every line is a canonical entry ending with `\n`;
/// indices run 0, 1, 2, … ; each `prev` is the hash of the line before
/// (64 zeros for entry 0); the checkpoint is signed by `public_key` for
/// origin [`ORIGIN`]; it covers exactly the entries present; and its root is
/// their Merkle root. Returns the first problem found.
pub fn verify(
    entries_bytes: &[u8],
    checkpoint_text: &str,
    public_key: &PublicKey,
) -> Result<VerifyReport, VerifyError> {
    verify_keeping_leaves(entries_bytes, checkpoint_text, public_key).map(|(report, _)| report)
}

/// [`verify`], also returning the leaf hashes.
pub(crate) fn verify_keeping_leaves(
    entries_bytes: &[u8],
    checkpoint_text: &str,
    public_key: &PublicKey,
) -> Result<(VerifyReport, Vec<Hash>), VerifyError> {
    let chain = check_chain(entries_bytes)?;
    let cp = Checkpoint::open(checkpoint_text, ORIGIN, public_key)?;
    let size = chain.leaves.len() as u64;
    if cp.size != size {
        return Err(VerifyError::SizeMismatch {
            checkpoint: cp.size,
            entries: size,
        });
    }
    let root = merkle::root_parallel(&chain.leaves);
    if root != cp.root {
        return Err(VerifyError::RootMismatch { size });
    }
    Ok((
        VerifyReport {
            size,
            root_hex: hex::encode(root),
        },
        chain.leaves,
    ))
}
