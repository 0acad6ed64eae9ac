//! The file-backed ledger: the only module that touches files or the clock.
//!
//! Durability: an append returns only after the new lines are on disk
//! (`fdatasync`); the checkpoint is then replaced atomically (temporary file,
//! `fdatasync`, rename; the directory is synced when the ledger is opened). A crash can therefore leave at
//! most a partial last line that was never acknowledged, and a checkpoint
//! that lags the entries; [`Ledger::open`] repairs both.

use crate::checkpoint::{Checkpoint, CheckpointError, ORIGIN};
use crate::entry::{Entry, EntryDraft, EntryError, Hash, PreparedDraft, sha256};
use crate::keys::{KeyError, PublicKey, SigningKey};
use crate::merkle::{self, ProofError, Tree};
use crate::proof::{
    ConsistencyProof, InclusionProof, Segment, SegmentError, SinceError, SinceReport,
    verify_extends,
};
use crate::verify::{VerifyError, VerifyReport, check_chain, verify};
use serde_json::json;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// File name of the entries, one canonical JSON line each.
pub const ENTRIES_FILE: &str = "entries.jsonl";
/// File name of the latest signed checkpoint.
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// File name of the PKCS#8 signing key (mode 0600).
pub const KEY_FILE: &str = "ledger.key";
/// File name of the hex public key.
pub const PUBLIC_KEY_FILE: &str = "ledger.pub";

/// Kind of the entry [`Ledger::open`] appends after cutting off a torn line.
pub const RECOVERED_KIND: &str = "ledger.recovered";
/// File name of the note [`Ledger::open`] writes before cutting off a torn
/// line and removes once the [`RECOVERED_KIND`] entry is durable, so that a
/// crash during recovery cannot lose the record of what was cut.
pub const RECOVERY_FILE: &str = "recovery.pending";

/// Why the ledger could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A file operation failed.
    #[error("could not {action} {path}: {source}; check the disk and the directory's permissions")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Another process has the ledger open.
    #[error(
        "{path} is locked by another process that has this ledger open; stop it or use another directory"
    )]
    Locked {
        /// The entries file.
        path: PathBuf,
    },
    /// The signing key could not be loaded or created.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The entries on disk fail verification.
    #[error("{path} is damaged: {source}; restore the ledger directory from a backup")]
    Damaged {
        /// The entries file.
        path: PathBuf,
        /// What is wrong.
        source: VerifyError,
    },
    /// The checkpoint on disk is not validly signed by the ledger's key.
    #[error("{path}: {source}; if ledger.key was replaced, restore the original key")]
    BadCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        source: CheckpointError,
    },
    /// The checkpoint covers entries that are no longer there.
    #[error(
        "the signed checkpoint covers {checkpoint} entries but entries.jsonl holds only {entries}; acknowledged entries are missing, restore entries.jsonl from a backup"
    )]
    CheckpointAhead {
        /// Size in the checkpoint.
        checkpoint: u64,
        /// Entries on disk.
        entries: u64,
    },
    /// The first entries no longer hash to the signed root.
    #[error(
        "entries 0..{size} no longer hash to the root in the signed checkpoint; entries.jsonl was altered, restore it from a backup"
    )]
    CheckpointMismatch {
        /// Size in the checkpoint.
        size: u64,
    },
    /// A draft cannot be stored; nothing in the batch was written.
    #[error("draft {position} of the batch was refused, nothing was written: {source}")]
    BadDraft {
        /// Position of the draft in the batch, counting from 0.
        position: usize,
        /// What is wrong with it.
        source: EntryError,
    },
    /// An earlier failed write could not be undone.
    #[error(
        "an earlier write failed and could not be undone, so the in-memory state may not match the file; reopen the ledger with Ledger::open"
    )]
    Poisoned,
    /// The entries are durable but the new checkpoint was not written.
    #[error(
        "entries {first}..={last} are stored durably, but the checkpoint could not be written ({source}); do not append them again; the next append or Ledger::open rewrites the checkpoint"
    )]
    CheckpointNotWritten {
        /// First entry of the batch.
        first: u64,
        /// Last entry of the batch.
        last: u64,
        /// Why the write failed.
        source: Box<LedgerError>,
    },
    /// A proof was asked for sizes or indices the ledger does not have.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// The next checkpoint would not be a consistent extension of the last
    /// one signed; nothing was signed and the ledger refuses further writes.
    #[error(
        "refusing to sign a checkpoint of size {size}: it is not a consistent extension of the checkpoint of size {signed_size} signed before ({source}); the in-memory state is wrong, reopen the ledger with Ledger::open"
    )]
    WouldFork {
        /// Size of the last signed checkpoint.
        signed_size: u64,
        /// Size of the checkpoint that was about to be signed.
        size: u64,
        /// Why the consistency proof failed.
        source: ProofError,
    },
    /// The group commit this append was part of failed; every append in the
    /// group gets the same error.
    #[error("the group commit this append was part of failed: {0}")]
    Group(Arc<LedgerError>),
    /// A range of entries that is empty or not in the ledger.
    #[error(
        "entries {from}..{to} are not a non-empty range inside the {size} entries of the ledger; ask for from < to <= {size}"
    )]
    BadRange {
        /// First entry asked for.
        from: u64,
        /// One past the last entry asked for.
        to: u64,
        /// Number of entries in the ledger.
        size: u64,
    },
    /// A segment could not be built.
    #[error("could not export the segment: {0}")]
    Segment(Box<SegmentError>),
    /// The recovery note is not readable.
    #[error(
        "{path} is not a recovery note written by this ledger; inspect it, and remove it only if entries.jsonl already records the recovery"
    )]
    BadRecoveryNote {
        /// The note file.
        path: PathBuf,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LedgerError {
    let path = path.to_path_buf();
    move |source| LedgerError::Io {
        action,
        path,
        source,
    }
}

/// Proof that an entry was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The entry's position.
    pub index: u64,
    /// Lowercase hex SHA-256 of the entry's canonical bytes.
    pub entry_hash_hex: String,
}

/// The ledger's current tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Number of entries.
    pub size: u64,
    /// Merkle root of all entries, lowercase hex.
    pub root_hex: String,
    /// Hash of the last entry, lowercase hex; 64 zeros when empty.
    pub last_entry_hash_hex: String,
}

/// An append-only ledger stored in a directory (see the crate docs for the
/// files). Holds an exclusive lock on `entries.jsonl` while open.
pub struct Ledger {
    dir: PathBuf,
    file: File,
    key: SigningKey,
    tree: Tree,
    last_hash: Hash,
    file_len: u64,
    checkpoint: String,
    signed: Option<Checkpoint>,
    poisoned: bool,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("dir", &self.dir)
            .field("head", &self.head())
            .field("public_key", &self.public_key_hex())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads the PKCS#8 key at `path`, or creates one there with mode 0600
    /// if the file does not exist. Refuses a key file others can read.
    pub fn load_or_create(path: &Path) -> Result<SigningKey, KeyError> {
        let key_io = |action: &'static str| {
            move |source| KeyError::Io {
                action,
                path: path.to_path_buf(),
                source,
            }
        };
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut file) => {
                let key = SigningKey::generate()?;
                file.write_all(key.pkcs8()).map_err(key_io("write"))?;
                file.sync_all().map_err(key_io("sync"))?;
                sync_parent(path).map_err(key_io("sync the directory of"))?;
                Ok(key)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let mut file = File::open(path).map_err(key_io("open"))?;
                let mode = file
                    .metadata()
                    .map_err(key_io("stat"))?
                    .permissions()
                    .mode()
                    & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KeyError::TooOpen {
                        path: path.to_path_buf(),
                        mode,
                    });
                }
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes).map_err(key_io("read"))?;
                SigningKey::from_pkcs8(&bytes).map_err(|e| KeyError::InFile {
                    path: path.to_path_buf(),
                    source: Box::new(e),
                })
            }
            Err(e) => Err(key_io("create")(e)),
        }
    }
}

impl PublicKey {
    /// Reads a public key file: 64 hex characters, optionally followed by a
    /// newline (the format of `ledger.pub`).
    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        PublicKey::from_hex(&text).map_err(|e| KeyError::InFile {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// Writes the key as 64 lowercase hex characters and a newline.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        write_atomic(path, format!("{}\n", self.to_hex()).as_bytes()).map_err(|source| {
            KeyError::Io {
                action: "write",
                path: path.to_path_buf(),
                source,
            }
        })
    }
}

fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// Replaces `path` with `bytes`: temporary file, fsync, rename, fsync dir.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    sync_parent(path)
}

/// Replaces `path` with `bytes` (temporary file, fsync, rename) without
/// waiting for the rename itself to be durable: used for the checkpoint,
/// where losing the rename in a power cut leaves the previous, valid
/// checkpoint, which [`Ledger::open`] brings up to date. Saves one `fsync`
/// of the directory per group commit.
fn write_replacing(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    drop(f);
    fs::rename(&tmp, path)
}

impl Ledger {
    /// Opens the ledger in `dir`, creating the directory, `entries.jsonl`,
    /// the key pair and the first checkpoint if they do not exist.
    ///
    /// Existing entries are re-read and checked (chain, indices, canonical
    /// form) and the existing checkpoint must be signed by `ledger.key` and
    /// agree with them. A partial last line left by a crash is cut off and a
    /// [`RECOVERED_KIND`] entry recording the number of bytes dropped is
    /// appended. A checkpoint that lags the entries is rewritten.
    pub fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let key = SigningKey::load_or_create(&dir.join(KEY_FILE))?;
        let pub_path = dir.join(PUBLIC_KEY_FILE);
        let public = key.verifying_key();
        if PublicKey::load(&pub_path).ok() != Some(public) {
            public.save(&pub_path)?;
        }

        let path = dir.join(ENTRIES_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(LedgerError::Locked { path }),
            Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
        }
        sync_parent(&path).map_err(io_err("sync the directory of", &path))?;

        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(io_err("read", &path))?;
        let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let dropped = bytes.len() - keep;
        let note_path = dir.join(RECOVERY_FILE);
        let mut pending = RecoveryNote::load(&note_path)?;
        if dropped > 0 {
            // Record what is cut before cutting it. A note left by an
            // earlier, interrupted recovery already says so (the bytes now
            // torn are then its own unacknowledged recovery line).
            if pending.is_none() {
                let note = RecoveryNote {
                    dropped_bytes: dropped as u64,
                    kept_len: keep as u64,
                };
                write_atomic(&note_path, note.to_json().as_bytes())
                    .map_err(io_err("write", &note_path))?;
                pending = Some(note);
            }
            file.set_len(keep as u64)
                .map_err(io_err("truncate the torn last line of", &path))?;
            file.sync_all().map_err(io_err("sync", &path))?;
            bytes.truncate(keep);
        }
        let chain = check_chain(&bytes).map_err(|source| LedgerError::Damaged {
            path: path.clone(),
            source,
        })?;
        // Where a pending recovery's entry is (or is to be).
        let recovery_index = pending.map(|note| {
            let kept = usize::try_from(note.kept_len).unwrap_or(usize::MAX);
            bytes[..kept.min(bytes.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as u64
        });
        let recorded = match recovery_index {
            Some(i) => line_at(&bytes, i)
                .and_then(|line| Entry::parse_line(line).ok())
                .is_some_and(|e| e.kind == RECOVERED_KIND),
            None => false,
        };
        let file_len = bytes.len() as u64;
        let mut ledger = Ledger {
            dir: dir.to_path_buf(),
            file,
            key,
            tree: Tree::from_leaves(chain.leaves),
            last_hash: chain.last_hash,
            file_len,
            checkpoint: String::new(),
            signed: None,
            poisoned: false,
        };

        let cp_path = dir.join(CHECKPOINT_FILE);
        let stored = match fs::read(&cp_path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("read", &cp_path)(e)),
        };
        let mut up_to_date = false;
        if let Some(stored) = stored {
            let text = String::from_utf8_lossy(&stored);
            let cp = Checkpoint::open(&text, ORIGIN, &public).map_err(|source| {
                LedgerError::BadCheckpoint {
                    path: cp_path.clone(),
                    source,
                }
            })?;
            let entries = ledger.size();
            if cp.size > entries {
                return Err(LedgerError::CheckpointAhead {
                    checkpoint: cp.size,
                    entries,
                });
            }
            if ledger.tree.root_at(cp.size)? != cp.root {
                return Err(LedgerError::CheckpointMismatch { size: cp.size });
            }
            up_to_date = cp.size == entries;
            ledger.checkpoint = text.into_owned();
            ledger.signed = Some(cp);
        }

        match pending {
            Some(note) if !recorded => {
                ledger.append(EntryDraft {
                    kind: RECOVERED_KIND.into(),
                    actor: "unseen-ledger".into(),
                    time: rfc3339_now(),
                    body: json!({
                        "dropped_bytes": note.dropped_bytes,
                        "reason": "entries.jsonl ended with a partial line (no newline) left by an interrupted write; it was never acknowledged and was cut off",
                    }),
                })?;
            }
            _ if !up_to_date => ledger.write_checkpoint()?,
            _ => {}
        }
        if pending.is_some() {
            fs::remove_file(&note_path).map_err(io_err("remove", &note_path))?;
            sync_parent(&note_path).map_err(io_err("sync the directory of", &note_path))?;
        }
        Ok(ledger)
    }

    /// The directory the ledger lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of entries.
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// Appends one entry and returns once it is on disk; then replaces the
    /// checkpoint.
    pub fn append(&mut self, draft: EntryDraft) -> Result<Receipt, LedgerError> {
        let mut receipts = self.append_batch(vec![draft])?;
        Ok(receipts.remove(0))
    }

    /// Appends several entries with one write, one `fdatasync` and one
    /// checkpoint (group commit). All or none are written: a refused draft
    /// or a failed write leaves the ledger as it was. An empty batch does
    /// nothing.
    pub fn append_batch(&mut self, drafts: Vec<EntryDraft>) -> Result<Vec<Receipt>, LedgerError> {
        let prepared = drafts
            .into_iter()
            .enumerate()
            .map(|(position, draft)| {
                PreparedDraft::new(draft)
                    .map_err(|source| LedgerError::BadDraft { position, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.append_prepared(&prepared)
    }

    /// Appends drafts already checked by [`PreparedDraft::new`] (e.g. by the
    /// threads that made them) with one write, one `fdatasync` and one
    /// checkpoint. All or none are written.
    pub fn append_prepared(
        &mut self,
        drafts: &[PreparedDraft],
    ) -> Result<Vec<Receipt>, LedgerError> {
        let (receipts, pending) = self.append_prepared_signed(drafts)?;
        if let Some(pending) = pending {
            pending.write(&mut 0)?;
        }
        Ok(receipts)
    }

    /// [`Ledger::append_prepared`] up to and including signing the new
    /// checkpoint (which [`Ledger::checkpoint_text`] then returns); writing
    /// it to the `checkpoint` file is left to the caller, so that it can be
    /// done without holding the ledger.
    pub(crate) fn append_prepared_signed(
        &mut self,
        drafts: &[PreparedDraft],
    ) -> Result<(Vec<Receipt>, Option<CheckpointWrite>), LedgerError> {
        if self.poisoned {
            return Err(LedgerError::Poisoned);
        }
        if drafts.is_empty() {
            return Ok((Vec::new(), None));
        }
        let first = self.size();
        let total: usize = drafts
            .iter()
            .enumerate()
            .map(|(i, d)| d.line_len(first + i as u64) + 1)
            .sum();
        let mut buf = Vec::with_capacity(total);
        let mut prev = self.last_hash;
        let mut staged = Vec::with_capacity(drafts.len());
        for (position, draft) in drafts.iter().enumerate() {
            let index = first + position as u64;
            let start = buf.len();
            draft.write_line(index, &prev, &mut buf);
            let line = &buf[start..];
            prev = sha256(line);
            staged.push((index, prev, merkle::leaf_hash(line)));
            buf.push(b'\n');
        }

        let path = self.dir.join(ENTRIES_FILE);
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Undo a partial write so memory and file still agree.
            if self
                .file
                .set_len(self.file_len)
                .and_then(|()| self.file.sync_data())
                .is_err()
            {
                self.poisoned = true;
            }
            return Err(io_err("append to", &path)(e));
        }
        self.file_len += buf.len() as u64;
        let mut receipts = Vec::with_capacity(staged.len());
        for (index, hash, leaf) in staged {
            self.tree.push(leaf);
            self.last_hash = hash;
            receipts.push(Receipt {
                index,
                entry_hash_hex: hex::encode(hash),
            });
        }
        let last = self.size() - 1;
        let pending = self.sign_checkpoint().map_err(|e| match e {
            fork @ LedgerError::WouldFork { .. } => fork,
            e => LedgerError::CheckpointNotWritten {
                first,
                last,
                source: Box::new(e),
            },
        })?;
        Ok((receipts, Some(CheckpointWrite { first, ..pending })))
    }

    /// Signs and writes a checkpoint of the current tree, after checking
    /// that it is a consistent extension of the last one signed: a
    /// consistency proof from that checkpoint to this one must verify.
    fn write_checkpoint(&mut self) -> Result<(), LedgerError> {
        self.sign_checkpoint()?.write(&mut 0)
    }

    /// Signs a checkpoint of the current tree (after the consistency check
    /// described at [`Ledger::write_checkpoint`]) and makes it current in
    /// memory; returns the file write still to do.
    fn sign_checkpoint(&mut self) -> Result<CheckpointWrite, LedgerError> {
        let cp = Checkpoint {
            origin: ORIGIN.to_owned(),
            size: self.size(),
            root: self.tree.root(),
        };
        if let Some(signed) = &self.signed {
            let consistent = self
                .tree
                .consistency_proof(signed.size, cp.size)
                .and_then(|proof| {
                    merkle::verify_consistency(signed.size, cp.size, &signed.root, &cp.root, &proof)
                });
            if let Err(source) = consistent {
                self.poisoned = true;
                return Err(LedgerError::WouldFork {
                    signed_size: signed.size,
                    size: cp.size,
                    source,
                });
            }
        }
        let path = self.dir.join(CHECKPOINT_FILE);
        let text = cp
            .sign(&self.key)
            .map_err(|source| LedgerError::BadCheckpoint {
                path: path.clone(),
                source,
            })?;
        self.checkpoint = text.clone();
        let size = cp.size;
        self.signed = Some(cp);
        Ok(CheckpointWrite {
            path,
            text,
            size,
            first: size,
        })
    }

    /// The current tree head.
    pub fn head(&self) -> Head {
        Head {
            size: self.size(),
            root_hex: hex::encode(self.tree.root()),
            last_entry_hash_hex: hex::encode(self.last_hash),
        }
    }

    /// The public key that verifies this ledger's checkpoints.
    pub fn public_key(&self) -> PublicKey {
        self.key.verifying_key()
    }

    /// Signs `message` with the ledger key, for documents that must be
    /// provable with the same public key (signed releases). Callers prefix
    /// their messages with a context string so a signature over one kind of
    /// document can never be mistaken for a checkpoint or another kind.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign(message)
    }

    /// The public key as 64 lowercase hex characters (the contents of
    /// `ledger.pub` without its newline).
    pub fn public_key_hex(&self) -> String {
        self.public_key().to_hex()
    }

    /// The latest signed checkpoint, as written to the `checkpoint` file.
    pub fn checkpoint_text(&self) -> &str {
        &self.checkpoint
    }

    /// Reads back all entries from disk, in order.
    pub fn entries(&self) -> Result<Vec<Entry>, LedgerError> {
        let path = self.dir.join(ENTRIES_FILE);
        let mut bytes = fs::read(&path).map_err(io_err("read", &path))?;
        // Only what this ledger has acknowledged.
        bytes.truncate(usize::try_from(self.file_len).unwrap_or(usize::MAX));
        let damaged = |source| LedgerError::Damaged {
            path: path.clone(),
            source,
        };
        bytes
            .split(|&b| b == b'\n')
            .take(self.tree.leaves().len())
            .enumerate()
            .map(|(index, line)| {
                Entry::parse_line(line).map_err(|source| {
                    damaged(VerifyError::BadEntry {
                        index: index as u64,
                        source,
                    })
                })
            })
            .collect()
    }

    /// The inclusion proof of entry `index` in the tree of the first `size`
    /// entries (RFC 9162), checked with [`merkle::verify_inclusion`].
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LedgerError> {
        Ok(self.tree.inclusion_proof(index, size)?)
    }

    /// The consistency proof from the tree of `old` entries to the tree of
    /// `new` entries (RFC 9162), checked with [`merkle::verify_consistency`].
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, LedgerError> {
        Ok(self.tree.consistency_proof(old, new)?)
    }

    /// The inclusion proof of entry `index` in the current signed tree, as
    /// the document [`crate::check_proof`] reads.
    pub fn inclusion_proof_doc(&self, index: u64) -> Result<InclusionProof, LedgerError> {
        Ok(InclusionProof::build(&self.tree, index, self.size())?)
    }

    /// The consistency proof from the tree of `old` entries to the current
    /// signed tree, as the document [`crate::check_proof`] reads.
    pub fn consistency_proof_doc(&self, old: u64) -> Result<ConsistencyProof, LedgerError> {
        Ok(ConsistencyProof::build(&self.tree, old, self.size())?)
    }

    /// The Merkle tree of all entries.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Exports entries `from..to` with the current signed checkpoint and
    /// inclusion proofs of the first and last of them (see [`Segment`]).
    pub fn export_segment(&self, from: u64, to: u64) -> Result<Segment, LedgerError> {
        let size = self.size();
        if from >= to || to > size {
            return Err(LedgerError::BadRange { from, to, size });
        }
        let path = self.dir.join(ENTRIES_FILE);
        let mut bytes = fs::read(&path).map_err(io_err("read", &path))?;
        bytes.truncate(usize::try_from(self.file_len).unwrap_or(usize::MAX));
        let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        let cp = self.signed.clone().ok_or(LedgerError::Poisoned)?;
        Segment::from_tree(&self.tree, &lines, &self.checkpoint, &cp, from, to).map_err(|e| match e
        {
            SegmentError::BadRange { from, to, size } => LedgerError::BadRange { from, to, size },
            other => LedgerError::Segment(Box::new(other)),
        })
    }

    /// RFC 6962 leaf hash of entry `index`, for use with inclusion proofs.
    pub fn leaf_hash(&self, index: u64) -> Option<Hash> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.tree.leaves().get(i))
            .copied()
    }
}

/// A signed checkpoint still to be written to the `checkpoint` file.
#[derive(Debug)]
pub(crate) struct CheckpointWrite {
    path: PathBuf,
    text: String,
    size: u64,
    /// First entry of the group it covers, for error messages.
    first: u64,
}

impl CheckpointWrite {
    /// Writes the checkpoint unless one at least as large was written
    /// already (`written` is the size last written; writers of one ledger
    /// must hold one lock around it).
    pub(crate) fn write(self, written: &mut u64) -> Result<(), LedgerError> {
        if self.size < *written {
            return Ok(());
        }
        write_replacing(&self.path, self.text.as_bytes()).map_err(|e| {
            let source = Box::new(io_err("write", &self.path)(e));
            if self.first < self.size {
                LedgerError::CheckpointNotWritten {
                    first: self.first,
                    last: self.size - 1,
                    source,
                }
            } else {
                *source
            }
        })?;
        *written = self.size;
        Ok(())
    }
}

/// What [`Ledger::open`] writes to [`RECOVERY_FILE`] before cutting a torn line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecoveryNote {
    dropped_bytes: u64,
    kept_len: u64,
}

impl RecoveryNote {
    fn to_json(self) -> String {
        format!(
            "{{\"dropped_bytes\":{},\"kept_len\":{}}}\n",
            self.dropped_bytes, self.kept_len
        )
    }

    fn load(path: &Path) -> Result<Option<RecoveryNote>, LedgerError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", path)(e)),
        };
        let bad = || LedgerError::BadRecoveryNote {
            path: path.to_path_buf(),
        };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| bad())?;
        let field = |name: &str| {
            v.get(name)
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(bad)
        };
        Ok(Some(RecoveryNote {
            dropped_bytes: field("dropped_bytes")?,
            kept_len: field("kept_len")?,
        }))
    }
}

/// Line `index` of `bytes` (without its newline), if it is complete.
fn line_at(bytes: &[u8], index: u64) -> Option<&[u8]> {
    let mut lines = bytes.split_inclusive(|&b| b == b'\n');
    let line = lines.nth(usize::try_from(index).ok()?)?;
    line.strip_suffix(b"\n")
}

/// Reads `entries.jsonl` and `checkpoint` from `dir` and [`verify`]s them
/// with `public_key` (which should come from a trusted copy of `ledger.pub`,
/// not from the directory being checked).
pub fn verify_dir(dir: &Path, public_key: &PublicKey) -> Result<VerifyReport, VerifyError> {
    let (entries, checkpoint) = read_dir_files(dir)?;
    verify(&entries, &checkpoint, public_key)
}

/// Reads the ledger in `dir` and checks, with `public_key`, that it
/// verifies and is a consistent extension of `previous_checkpoint_note`, a
/// checkpoint the auditor saved from this ledger earlier. Detects rollback
/// (fewer entries than signed before) and forks (signed history rewritten).
pub fn verify_since(
    dir: &Path,
    previous_checkpoint_note: &str,
    public_key: &PublicKey,
) -> Result<SinceReport, SinceError> {
    let (entries, checkpoint) = read_dir_files(dir)?;
    verify_extends(&entries, &checkpoint, previous_checkpoint_note, public_key)
}

/// Exports entries `from..to` of the ledger in `dir` (which may be open in
/// another process) as a [`Segment`], after verifying the ledger with
/// `public_key`.
pub fn export_segment(
    dir: &Path,
    public_key: &PublicKey,
    from: u64,
    to: u64,
) -> Result<Segment, SegmentError> {
    let (entries, checkpoint) = read_dir_files(dir)?;
    Segment::build(&entries, &checkpoint, public_key, from, to)
}

fn read_dir_files(dir: &Path) -> Result<(Vec<u8>, String), VerifyError> {
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read(&path).map_err(|source| VerifyError::Read { path, source })
    };
    // The checkpoint first: entries are written before the checkpoint that
    // covers them, so entries read afterwards hold at least what it covers.
    let checkpoint = read(CHECKPOINT_FILE)?;
    let entries = read(ENTRIES_FILE)?;
    let checkpoint = String::from_utf8(checkpoint).map_err(|_| VerifyError::CheckpointNotText {
        path: dir.join(CHECKPOINT_FILE),
    })?;
    Ok((entries, checkpoint))
}

/// The current UTC time as RFC 3339 with seconds, e.g. `2025-01-02T03:04:05Z`.
fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

fn rfc3339(unix_secs: u64) -> String {
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    // Civil-from-days (H. Hinnant), for dates from 1970 on.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn formats_utc_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_735_787_045), "2025-01-02T03:04:05Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
