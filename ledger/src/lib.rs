//! Hash-chained, Merkle-tree audit ledger with signed checkpoints.
//!
//! Every step Unseen takes (a dataset registered, a grant issued, a query
//! admitted or refused, an output released) is written here as one entry, so
//! that anyone holding only the ledger's public key can later check offline
//! that nothing was altered, removed, inserted or reordered.
//!
//! The ledger never interprets entries. It stores each one as a line of
//! canonical JSON carrying the hash of the previous line, hashes the lines
//! into an RFC 6962 / RFC 9162 Merkle tree, proves inclusion and
//! consistency, and signs the tree head as a C2SP `tlog-checkpoint` signed
//! note with Ed25519.
//!
//! The core is pure functions over bytes: [`entry`] (canonical encoding and
//! hashing), [`merkle`] (tree hashing and proofs), [`checkpoint`] (signed
//! notes), [`verify()`] (offline verification), [`proof`] (proof documents,
//! exported segments, rollback, fork and equivocation checks an auditor
//! runs without the ledger). Files live only at the edge, in [`store`]:
//! [`Ledger`] appends durably, [`verify_dir`] and [`verify_since`] read a
//! data directory and check it. [`SharedLedger`] lets many threads append
//! at once with group commit (one `fdatasync` and one signed checkpoint per
//! group; the checkpoint file is written beside the next groups).
//! `bench` (feature `bench`) times the hot paths.
//!
//! # Data directory
//!
//! | file            | contents                                                        |
//! |-----------------|-----------------------------------------------------------------|
//! | `entries.jsonl` | one canonical JSON entry per line, each ending with `\n`        |
//! | `checkpoint`    | the latest signed checkpoint (C2SP signed note), replaced atomically |
//! | `ledger.key`    | the Ed25519 signing key as a PKCS#8 v2 document, mode 0600      |
//! | `ledger.pub`    | the public key as 64 lowercase hex characters and a newline     |
//! | `intent.0`, `intent.1` | signed write-ahead records of the last two groups, holding their lines (see [`store`]) |
//! | `recovery.pending` | only while a torn line or an unproven tail is being cut off and recorded: what was cut |
//! | `quarantine/`   | entries `unseen ledger recover` moved out, one file per recovery |
//!
//! The directory is mode 0700 and every file in it 0600, whatever the umask.
//!
//! Give `ledger.pub` (kept somewhere the ledger's host cannot rewrite) to
//! whoever verifies; never copy `ledger.key` off the host.
#![forbid(unsafe_code)]

#[cfg(feature = "bench")]
pub mod bench;
pub mod checkpoint;
pub mod entry;
pub mod files;
pub mod intent;
pub mod keys;
pub mod merkle;
pub mod proof;
pub mod shared;
pub mod store;
pub mod verify;
pub mod witness;

pub use checkpoint::{Checkpoint, CheckpointError, ORIGIN};
pub use entry::PreparedDraft;
pub use entry::{Entry, EntryDraft, EntryError, Hash, ZERO_HASH_HEX};
pub use files::FileError;
pub use keys::{KeyError, PublicKey, SigningKey};
pub use merkle::{ProofError, Tree};
pub use proof::{
    ConsistencyProof, Equivocation, InclusionProof, Proof, ProofCheckError, ProofReport, Segment,
    SegmentError, SegmentReport, SinceError, SinceReport, check_proof, detect_equivocation,
    verify_extends, verify_segment,
};
pub use shared::{GroupStats, SharedLedger};
pub use store::{
    Head, Ledger, LedgerError, Receipt, Recovery, export_segment, read_verified, verify_dir,
    verify_since,
};
pub use verify::{VerifyError, VerifyReport, verify};
