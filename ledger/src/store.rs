//! The file-backed ledger: the only module that touches files or the clock.
//!
//! Durability: an append returns only after its group's signed write-ahead
//! intent, which holds the new lines, is on disk (`fdatasync`); the lines
//! are then written to `entries.jsonl`, which is synced before the
//! checkpoint covering them is replaced atomically (temporary file,
//! `fdatasync`, rename) and before that intent file is reused. A crash can
//! therefore leave the last groups' lines missing or torn (restored from
//! their intents at open), a partial last line that was never acknowledged,
//! and a checkpoint that lags the entries.
//!
//! # Opening never signs what was not proven
//!
//! The ledger signs a checkpoint only over entries this code appended
//! itself. Before a group's entries are written, a signed write-ahead
//! record of the group ([`crate::intent`]: the size and root of the tree it
//! extends and the leaf hash of every entry it adds) is written and synced
//! to one of two intent files, used in turn, so the previous group's record
//! is intact while the next is written. On open, entries beyond the signed
//! checkpoint are integrated only if an intent proves them: its signature
//! verifies with the ledger key, its base root is the root of the entries
//! on disk at its base size, and the entries after the base are the leaves
//! it lists. Anything else is refused ([`LedgerError::Unproven`], naming the
//! first unproven entry) until an operator runs [`Ledger::recover`], which
//! moves the unproven tail to a file under `quarantine/`, records what was
//! cut (counts and hashes, no bodies) as a [`RECOVERED_KIND`] entry, and
//! signs. A partial last line is not an entry: it is cut off and recorded.
//!
//! A missing `ledger.key` or `checkpoint` in a ledger that has either, or
//! has entries, is refused as well: only a directory with none of them is
//! started fresh.
//!
//! # Files
//!
//! The directory is mode 0700 and every file 0600 whatever the umask. Files
//! are opened without following symbolic links, must be regular files, and
//! are read only up to their size at open (small files up to a fixed limit).

use crate::checkpoint::{Checkpoint, CheckpointError, ORIGIN};
use crate::entry::{Entry, EntryDraft, EntryError, Hash, PreparedDraft, sha256};
use crate::files::{self, FileError, SMALL_FILE_LIMIT};
use crate::intent::{HELD_LINES_LIMIT, INTENT_LIMIT, Intent, MAX_GROUP};
use crate::keys::{KeyError, PublicKey, SigningKey};
use crate::merkle::{self, ProofError, Tree};
use crate::proof::{
    ConsistencyProof, InclusionProof, Segment, SegmentError, SinceError, SinceReport,
    verify_extends,
};
use crate::verify::{VerifyError, VerifyReport, check_chain, verify};
use serde_json::json;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
/// The two files group intents are written to in turn (see the module docs).
pub const INTENT_FILES: [&str; 2] = ["intent.0", "intent.1"];
/// Directory (inside the ledger directory) where [`Ledger::recover`] moves
/// unproven entries.
pub const QUARANTINE_DIR: &str = "quarantine";

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
    /// A ledger file is a link, not a regular file, or too large.
    #[error(transparent)]
    File(#[from] FileError),
    /// The signing key is gone but the ledger has a history.
    #[error(
        "{path} is missing, but the ledger already has {entries} entries or a checkpoint; a new key would let anyone rewrite its history, so the ledger refuses to start: restore ledger.key from a backup"
    )]
    KeyMissing {
        /// The key file.
        path: PathBuf,
        /// Entries on disk.
        entries: u64,
    },
    /// The checkpoint is gone but the ledger has a key or entries.
    #[error(
        "{path} is missing, but the ledger has a signing key and {entries} entries; the ledger never signs entries it cannot prove, so it refuses to start: restore the checkpoint from a backup, or run `unseen ledger recover` to quarantine every entry no write-ahead record proves (if this directory is new and its first start was interrupted, remove ledger.key instead)"
    )]
    CheckpointMissing {
        /// The checkpoint file.
        path: PathBuf,
        /// Entries on disk.
        entries: u64,
    },
    /// Entries beyond the signed checkpoint that this ledger did not write.
    #[error(
        "{path} holds {entries} entries, but only the first {first} are covered by the signed checkpoint or by this ledger's own interrupted write; entry {first} and everything after it were not written by this service, so it refuses to start. Inspect them; then run `unseen ledger recover` to move them to a quarantine file and record that in the ledger, or restore the ledger directory from a backup"
    )]
    Unproven {
        /// The entries file.
        path: PathBuf,
        /// The first entry no checkpoint or intent proves.
        first: u64,
        /// Entries on disk.
        entries: u64,
    },
    /// A batch larger than one write-ahead record covers.
    #[error("a batch of {len} entries is more than the {max} one group may hold; split it")]
    GroupTooLarge {
        /// Entries in the batch.
        len: usize,
        /// The most allowed.
        max: usize,
    },
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
    /// The two group-intent files, and which one the next group uses.
    intents: [File; 2],
    next_intent: usize,
    /// Length the entries file must be durable to before each intent file
    /// is overwritten: the end of the group whose lines it holds.
    intent_ends: [u64; 2],
    entries_sync: EntriesSync,
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
    /// Loads the PKCS#8 key at `path`. Refuses a key file others can read,
    /// a link and anything but a small regular file.
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let bytes = files::read_limited(path, SMALL_FILE_LIMIT)?;
        let mode = fs::symlink_metadata(path)
            .map_err(|source| KeyError::Io {
                action: "stat",
                path: path.to_path_buf(),
                source,
            })?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
        SigningKey::from_pkcs8(&bytes).map_err(|e| KeyError::InFile {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// Generates a key and writes it to `path` (mode 0600), which must not
    /// exist yet.
    pub fn create(path: &Path) -> Result<SigningKey, KeyError> {
        let key_io = |action: &'static str| {
            move |source| KeyError::Io {
                action,
                path: path.to_path_buf(),
                source,
            }
        };
        let mut file = files::create_new(path)?;
        let key = SigningKey::generate()?;
        file.write_all(key.pkcs8()).map_err(key_io("write"))?;
        file.sync_all().map_err(key_io("sync"))?;
        sync_parent(path).map_err(key_io("sync the directory of"))?;
        Ok(key)
    }
}

impl PublicKey {
    /// Reads a public key file: 64 hex characters, optionally followed by a
    /// newline (the format of `ledger.pub`).
    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        let bytes = files::read_limited(path, SMALL_FILE_LIMIT)?;
        PublicKey::from_hex(&String::from_utf8_lossy(&bytes)).map_err(|e| KeyError::InFile {
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
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = files::create_truncate(&tmp).map_err(io::Error::other)?;
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
    let mut f = files::create_truncate(&tmp).map_err(io::Error::other)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    drop(f);
    fs::rename(&tmp, path)
}

impl Ledger {
    /// Opens the ledger in `dir`, creating the directory (0700),
    /// `entries.jsonl`, the key pair and the first checkpoint if none of
    /// the ledger's files exist.
    ///
    /// Existing entries are re-read and checked (chain, indices, canonical
    /// form) and the existing checkpoint must be signed by `ledger.key` and
    /// agree with them. Entries beyond the checkpoint are integrated only if
    /// a group intent proves this ledger wrote them (see the module docs);
    /// otherwise the open is refused with [`LedgerError::Unproven`]. A
    /// missing key or checkpoint in a ledger with a history is refused too.
    /// A partial last line left by a crash is cut off and a
    /// [`RECOVERED_KIND`] entry recording the number of bytes dropped is
    /// appended. A checkpoint that lags proven entries is rewritten.
    pub fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        Ledger::open_as(dir, None).map(|(ledger, _)| ledger)
    }

    /// Opens the ledger in `dir` as an operator's explicit recovery: every
    /// entry no checkpoint or intent proves (and any damaged or partial line
    /// after the proven ones) is moved to a new file under
    /// [`QUARANTINE_DIR`], and a [`RECOVERED_KIND`] entry by `actor` records
    /// the first index, the number of entries and bytes cut and their
    /// SHA-256 (never their contents). Entries covered by the signed
    /// checkpoint are never cut: if those are damaged, this fails as
    /// [`Ledger::open`] does. Returns what was quarantined, if anything.
    pub fn recover(dir: &Path, actor: &str) -> Result<(Ledger, Option<Recovery>), LedgerError> {
        Ledger::open_as(dir, Some(actor))
    }

    fn open_as(
        dir: &Path,
        recovering: Option<&str>,
    ) -> Result<(Ledger, Option<Recovery>), LedgerError> {
        let mut found = Found::read(dir, recovering.is_some())?;
        let path = dir.join(ENTRIES_FILE);
        let size = found.tree.size();
        if recovering.is_none() && found.proven < size {
            return Err(LedgerError::Unproven {
                path,
                first: found.proven,
                entries: size,
            });
        }
        let note_path = dir.join(RECOVERY_FILE);
        let mut pending = RecoveryNote::load(&note_path)?;
        let mut recovery = None;
        let keep = match recovering {
            Some(_) => line_start(&found.all, found.proven),
            None => found
                .all
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1),
        };
        if let Some(actor) = recovering.filter(|_| keep < found.all.len()) {
            let (note, report) = quarantine(dir, &found.all, keep, found.proven, actor)?;
            write_atomic(&note_path, note.to_json().as_bytes())
                .map_err(io_err("write", &note_path))?;
            pending = Some(note);
            recovery = Some(report);
            found.cut(&path, keep)?;
        } else if keep < found.all.len() {
            // Record what is cut before cutting it. A note left by an
            // earlier, interrupted recovery already says so (the bytes now
            // torn are then its own unacknowledged recovery line).
            if pending.is_none() {
                let note = RecoveryNote {
                    dropped_bytes: (found.all.len() - keep) as u64,
                    kept_len: keep as u64,
                    quarantine: None,
                };
                write_atomic(&note_path, note.to_json().as_bytes())
                    .map_err(io_err("write", &note_path))?;
                pending = Some(note);
            }
            found.cut(&path, keep)?;
        }
        // Where a pending recovery's entry is (or is to be).
        let recorded = pending.as_ref().is_some_and(|note| {
            let kept = usize::try_from(note.kept_len).unwrap_or(usize::MAX);
            let index = found.all[..kept.min(found.all.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as u64;
            line_at(&found.all, index)
                .and_then(|line| Entry::parse_line(line).ok())
                .is_some_and(|e| e.kind == RECOVERED_KIND)
        });
        let up_to_date = found
            .checkpoint
            .as_ref()
            .is_some_and(|(_, cp)| cp.size == found.tree.size());
        let mut ledger = found.into_ledger(dir)?;
        match &pending {
            Some(note) if !recorded => {
                ledger.append(note.record())?;
            }
            _ if !up_to_date => ledger.write_checkpoint()?,
            _ => {}
        }
        if pending.is_some() {
            fs::remove_file(&note_path).map_err(io_err("remove", &note_path))?;
            sync_parent(&note_path).map_err(io_err("sync the directory of", &note_path))?;
        }
        Ok((ledger, recovery))
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
        if drafts.len() > MAX_GROUP {
            return Err(LedgerError::GroupTooLarge {
                len: drafts.len(),
                max: MAX_GROUP,
            });
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

        // The write-ahead record first: it is what lets a reopen after a
        // crash integrate these entries, and nothing else. It overwrites
        // the record of the group before last, whose entries must be on
        // disk by now (usually synced already, off this path).
        let slot = self.next_intent;
        let path = self.dir.join(ENTRIES_FILE);
        self.entries_sync
            .through(self.intent_ends[slot])
            .map_err(io_err("sync", &path))?;
        let hold = buf.len() <= HELD_LINES_LIMIT;
        let mut intent = Intent {
            base_size: first,
            base_root: self.tree.root(),
            leaves: staged.iter().map(|&(_, _, leaf)| leaf).collect(),
            lines: None,
        };
        let unheld = if hold {
            intent.lines = Some(buf);
            Vec::new()
        } else {
            buf
        };
        let record = intent.to_signed_bytes(&self.key);
        let buf: &[u8] = intent.lines.as_deref().unwrap_or(&unheld);
        let intent_file = &self.intents[slot];
        // Overwritten in place, not truncated: while the file's size does
        // not change, syncing it writes its data alone, not its inode.
        intent_file
            .write_all_at(&record, 0)
            .and_then(|()| intent_file.sync_data())
            .map_err(io_err("write", &self.dir.join(INTENT_FILES[slot])))?;

        // An intent holding the lines makes them durable: the entries file
        // is synced later (by [`CheckpointWrite::sync_entries`]).
        let written = self
            .file
            .write_all(buf)
            .and_then(|()| if hold { Ok(()) } else { self.file.sync_data() });
        if let Err(e) = written {
            // Undo a partial write so memory and file still agree, and
            // withdraw the intent: these entries were refused, and must
            // not be provable if someone writes them back.
            let undone = self
                .file
                .set_len(self.file_len)
                .and_then(|()| self.file.sync_data())
                .and_then(|()| intent_file.set_len(0))
                .and_then(|()| intent_file.sync_data());
            if undone.is_err() {
                self.poisoned = true;
            }
            return Err(io_err("append to", &path)(e));
        }
        self.next_intent = 1 - slot;
        self.file_len += buf.len() as u64;
        self.intent_ends[slot] = self.file_len;
        if !hold {
            self.entries_sync
                .synced
                .fetch_max(self.file_len, Ordering::AcqRel);
        }
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
    /// Only [`Ledger::open`] calls this, over entries an intent proved.
    fn write_checkpoint(&mut self) -> Result<(), LedgerError> {
        self.sign_checkpoint()?.write(&mut 0)?;
        // Durably: the intents that proved these entries are overwritten
        // by the next groups.
        let path = self.dir.join(CHECKPOINT_FILE);
        sync_parent(&path).map_err(io_err("sync the directory of", &path))
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
            entries: self.entries_sync.clone(),
            entries_len: self.file_len,
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
        self.entries_from(0)
    }

    /// Reads back the entries from index `first` on (none if `first` is
    /// at or past the end), in order. Only those lines are parsed, so a
    /// caller looking for something recent pays for the tail alone.
    pub fn entries_from(&self, first: u64) -> Result<Vec<Entry>, LedgerError> {
        let path = self.dir.join(ENTRIES_FILE);
        // Only what this ledger has acknowledged.
        let bytes = self.read_entries()?;
        let damaged = |source| LedgerError::Damaged {
            path: path.clone(),
            source,
        };
        let size = self.tree.leaves().len();
        let skip = usize::try_from(first).unwrap_or(usize::MAX).min(size);
        bytes
            .split(|&b| b == b'\n')
            .take(size)
            .enumerate()
            .skip(skip)
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
        let bytes = self.read_entries()?;
        let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        let cp = self.signed.clone().ok_or(LedgerError::Poisoned)?;
        Segment::from_tree(&self.tree, &lines, &self.checkpoint, &cp, from, to).map_err(|e| match e
        {
            SegmentError::BadRange { from, to, size } => LedgerError::BadRange { from, to, size },
            other => LedgerError::Segment(Box::new(other)),
        })
    }

    /// The first `file_len` bytes of the entries file (what this ledger
    /// wrote), through its own open file.
    fn read_entries(&self) -> Result<Vec<u8>, LedgerError> {
        let path = self.dir.join(ENTRIES_FILE);
        let len = usize::try_from(self.file_len).map_err(|_| FileError::TooLarge {
            path: path.clone(),
            len: self.file_len,
            limit: usize::MAX as u64,
        })?;
        let mut bytes = vec![0u8; len];
        self.file
            .read_exact_at(&mut bytes, 0)
            .map_err(io_err("read", &path))?;
        Ok(bytes)
    }

    /// RFC 6962 leaf hash of entry `index`, for use with inclusion proofs.
    pub fn leaf_hash(&self, index: u64) -> Option<Hash> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.tree.leaves().get(i))
            .copied()
    }
}

/// What [`Ledger::recover`] moved out of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Index of the first entry cut.
    pub first_index: u64,
    /// Complete lines cut (unproven or damaged entries).
    pub entries: u64,
    /// Bytes cut, including a partial last line.
    pub bytes: u64,
    /// SHA-256 of the bytes cut, lowercase hex.
    pub sha256_hex: String,
    /// The file they were moved to.
    pub file: PathBuf,
}

/// A ledger directory as read by [`Ledger::open`], before any change.
struct Found {
    file: File,
    key: SigningKey,
    /// The whole entries file.
    all: Vec<u8>,
    /// The tree of the valid chain of complete lines at its start.
    tree: Tree,
    last_hash: Hash,
    /// The checkpoint file's text and contents, if there is one.
    checkpoint: Option<(String, Checkpoint)>,
    /// Entries the checkpoint or an intent proves.
    proven: u64,
    /// The intent file to write first: the one proving least.
    next_intent: usize,
}

impl Found {
    /// Reads and checks the directory; with `recovering`, a broken chain
    /// and a missing checkpoint only end what is proven.
    fn read(dir: &Path, recovering: bool) -> Result<Found, LedgerError> {
        files::private_dir(dir)?;
        let path = dir.join(ENTRIES_FILE);
        let (mut file, len) = files::open_append(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(LedgerError::Locked { path }),
            Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
        }
        sync_parent(&path).map_err(io_err("sync the directory of", &path))?;
        // Lines an earlier process wrote but had not synced yet (their
        // intents held them) are made durable before anything relies on
        // them.
        file.sync_data().map_err(io_err("sync", &path))?;
        let mut all = files::read_len(&mut file, &path, len)?;
        let lines = all.iter().filter(|&&b| b == b'\n').count() as u64;

        let key_path = dir.join(KEY_FILE);
        let cp_path = dir.join(CHECKPOINT_FILE);
        let fresh = !files::exists(&key_path)?;
        let key = if !fresh {
            SigningKey::load(&key_path)?
        } else if all.is_empty() && !files::exists(&cp_path)? {
            SigningKey::create(&key_path)?
        } else {
            return Err(LedgerError::KeyMissing {
                path: key_path,
                entries: lines,
            });
        };
        let public = key.verifying_key();
        let pub_path = dir.join(PUBLIC_KEY_FILE);
        if PublicKey::load(&pub_path).ok() != Some(public) {
            public.save(&pub_path)?;
        }

        let complete = all.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut chain = match check_chain(&all[..complete]) {
            Ok(chain) => chain,
            Err(source) => match source.first_bad_entry().filter(|_| recovering) {
                Some(bad) => check_chain(&all[..line_start(&all, bad)]).map_err(|source| {
                    LedgerError::Damaged {
                        path: path.clone(),
                        source,
                    }
                })?,
                None => return Err(LedgerError::Damaged { path, source }),
            },
        };
        let mut tree = Tree::from_leaves(std::mem::take(&mut chain.leaves));

        let mut intents = Vec::with_capacity(INTENT_FILES.len());
        for (slot, name) in INTENT_FILES.iter().enumerate() {
            let bytes = files::read_optional(&dir.join(name), INTENT_LIMIT)?;
            if let Some(intent) = bytes.and_then(|b| Intent::open(&b, &public)) {
                intents.push((slot, intent));
            }
        }
        // A crash between a group's intent and its entries reaching the
        // disk: the entries are written back from the intent, oldest group
        // first (the newer one extends it). Its callers may have been told
        // they are durable, and they were.
        intents.sort_by_key(|(_, intent)| intent.base_size);
        for (_, intent) in &intents {
            let Some(missing) = intent.missing_lines(&tree) else {
                continue;
            };
            // Only over an intact chain whose torn end (if any) is the
            // start of what is missing, as a crash leaves it: anything else
            // is not this ledger's write and is left to the checks below.
            let keep = line_start(&all, tree.size());
            let whole_lines = memchr::memchr_iter(b'\n', &all).count() as u64;
            if tree.size() != whole_lines || !missing.starts_with(&all[keep..]) {
                continue;
            }
            all.truncate(keep);
            all.extend_from_slice(missing);
            file.set_len(keep as u64)
                .and_then(|()| file.write_all(missing))
                .and_then(|()| file.sync_data())
                .map_err(io_err("restore the last group's entries to", &path))?;
            chain = check_chain(&all).map_err(|source| LedgerError::Damaged {
                path: path.clone(),
                source,
            })?;
            tree = Tree::from_leaves(std::mem::take(&mut chain.leaves));
        }

        let checkpoint = match files::read_optional(&cp_path, SMALL_FILE_LIMIT)? {
            Some(bytes) => Some(checked_checkpoint(&cp_path, &bytes, &public, &tree)?),
            None if fresh || recovering => None,
            None => {
                return Err(LedgerError::CheckpointMissing {
                    path: cp_path,
                    entries: lines,
                });
            }
        };
        let mut proven = checkpoint.as_ref().map_or(0, |(_, cp)| cp.size);
        let mut proves = [None; 2];
        for (slot, intent) in &intents {
            proves[*slot] = intent.proves(&tree);
            proven = proven.max(proves[*slot].unwrap_or(0));
        }
        Ok(Found {
            file,
            key,
            all,
            tree,
            last_hash: chain.last_hash,
            checkpoint,
            proven,
            next_intent: usize::from(proves[1] < proves[0]),
        })
    }

    /// Cuts the entries file to its first `keep` bytes (the start of a
    /// line) and the tree to the lines left.
    fn cut(&mut self, path: &Path, keep: usize) -> Result<(), LedgerError> {
        self.file
            .set_len(keep as u64)
            .map_err(io_err("cut the unproven or torn end of", path))?;
        self.file.sync_all().map_err(io_err("sync", path))?;
        self.all.truncate(keep);
        let chain = check_chain(&self.all).map_err(|source| LedgerError::Damaged {
            path: path.to_path_buf(),
            source,
        })?;
        self.tree = Tree::from_leaves(chain.leaves);
        self.last_hash = chain.last_hash;
        Ok(())
    }

    fn into_ledger(self, dir: &Path) -> Result<Ledger, LedgerError> {
        let open = |name: &str| files::open_rw(&dir.join(name));
        let intents = [open(INTENT_FILES[0])?, open(INTENT_FILES[1])?];
        let path = dir.join(ENTRIES_FILE);
        // Everything read at open was synced by `Found::read`.
        let entries_sync =
            EntriesSync::new(&self.file, self.all.len() as u64).map_err(io_err("open", &path))?;
        let (checkpoint, signed) = match self.checkpoint {
            Some((text, cp)) => (text, Some(cp)),
            None => (String::new(), None),
        };
        Ok(Ledger {
            dir: dir.to_path_buf(),
            file: self.file,
            key: self.key,
            file_len: self.all.len() as u64,
            tree: self.tree,
            last_hash: self.last_hash,
            checkpoint,
            signed,
            intents,
            next_intent: self.next_intent,
            intent_ends: [0; 2],
            entries_sync,
            poisoned: false,
        })
    }
}

/// Parses the checkpoint file and checks it against `tree`: signed by
/// `public`, not ahead of the entries, and their root at its size.
fn checked_checkpoint(
    path: &Path,
    bytes: &[u8],
    public: &PublicKey,
    tree: &Tree,
) -> Result<(String, Checkpoint), LedgerError> {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let cp =
        Checkpoint::open(&text, ORIGIN, public).map_err(|source| LedgerError::BadCheckpoint {
            path: path.to_path_buf(),
            source,
        })?;
    if cp.size > tree.size() {
        return Err(LedgerError::CheckpointAhead {
            checkpoint: cp.size,
            entries: tree.size(),
        });
    }
    if tree.root_at(cp.size)? != cp.root {
        return Err(LedgerError::CheckpointMismatch { size: cp.size });
    }
    Ok((text, cp))
}

/// Moves `all[keep..]` (entries from `first` on) to a new file under
/// [`QUARANTINE_DIR`] and returns the note that records it.
fn quarantine(
    dir: &Path,
    all: &[u8],
    keep: usize,
    first: u64,
    actor: &str,
) -> Result<(RecoveryNote, Recovery), LedgerError> {
    let cut = &all[keep..];
    let qdir = dir.join(QUARANTINE_DIR);
    files::private_dir(&qdir)?;
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!("entries-from-{first}-{secs}.jsonl");
    let path = qdir.join(&name);
    let mut f = files::create_new(&path)?;
    f.write_all(cut)
        .and_then(|()| f.sync_all())
        .map_err(io_err("write", &path))?;
    sync_parent(&path).map_err(io_err("sync the directory of", &path))?;
    let q = Quarantine {
        file: format!("{QUARANTINE_DIR}/{name}"),
        first_index: first,
        entries: cut.iter().filter(|&&b| b == b'\n').count() as u64,
        sha256_hex: hex::encode(sha256(cut)),
        actor: actor.to_owned(),
    };
    let report = Recovery {
        first_index: first,
        entries: q.entries,
        bytes: cut.len() as u64,
        sha256_hex: q.sha256_hex.clone(),
        file: path,
    };
    let note = RecoveryNote {
        dropped_bytes: cut.len() as u64,
        kept_len: keep as u64,
        quarantine: Some(q),
    };
    Ok((note, report))
}

/// Byte offset where line `index` of `bytes` starts (the length if there
/// are fewer lines).
fn line_start(bytes: &[u8], index: u64) -> usize {
    if index == 0 {
        return 0;
    }
    let mut seen = 0u64;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            seen += 1;
            if seen == index {
                return i + 1;
            }
        }
    }
    bytes.len()
}

/// Syncs the entries file from any thread, remembering how far it is
/// known durable so that a sync already made is not made again.
#[derive(Debug, Clone)]
pub(crate) struct EntriesSync {
    file: Arc<File>,
    /// Length of the entries file known to be on disk.
    synced: Arc<AtomicU64>,
}

impl EntriesSync {
    fn new(file: &File, synced: u64) -> io::Result<EntriesSync> {
        Ok(EntriesSync {
            file: Arc::new(file.try_clone()?),
            synced: Arc::new(AtomicU64::new(synced)),
        })
    }

    /// Makes the first `len` bytes of the entries file durable (`len` no
    /// more than has been written).
    fn through(&self, len: u64) -> io::Result<()> {
        if self.synced.load(Ordering::Acquire) >= len {
            return Ok(());
        }
        self.file.sync_data()?;
        self.synced.fetch_max(len, Ordering::AcqRel);
        Ok(())
    }
}

/// A signed checkpoint still to be written to the `checkpoint` file, after
/// the entries it covers are synced to theirs.
#[derive(Debug)]
pub(crate) struct CheckpointWrite {
    path: PathBuf,
    text: String,
    size: u64,
    /// First entry of the group it covers, for error messages.
    first: u64,
    entries: EntriesSync,
    /// Length of the entries file the checkpoint covers.
    entries_len: u64,
}

impl CheckpointWrite {
    /// Entries the checkpoint covers.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Syncs the entries file up to the end of the entries this checkpoint
    /// covers (held until now by their group's intent). Needs no lock.
    pub(crate) fn sync_entries(&self) -> Result<(), LedgerError> {
        self.entries.through(self.entries_len).map_err(|e| {
            let path = self.path.with_file_name(ENTRIES_FILE);
            self.not_written(io_err("sync", &path)(e))
        })
    }

    fn not_written(&self, source: LedgerError) -> LedgerError {
        if self.first < self.size {
            LedgerError::CheckpointNotWritten {
                first: self.first,
                last: self.size - 1,
                source: Box::new(source),
            }
        } else {
            source
        }
    }

    /// Writes the checkpoint, after syncing the entries it covers, unless
    /// one at least as large was written already (`written` is the size
    /// last written; writers of one ledger must hold one lock around it).
    /// The checkpoint file so never covers entries not on disk.
    pub(crate) fn write(self, written: &mut u64) -> Result<(), LedgerError> {
        if self.size < *written {
            return Ok(());
        }
        self.sync_entries()?;
        write_replacing(&self.path, self.text.as_bytes())
            .map_err(|e| self.not_written(io_err("write", &self.path)(e)))?;
        *written = self.size;
        Ok(())
    }
}

/// What [`Ledger::open`] writes to [`RECOVERY_FILE`] before cutting a torn
/// line, and [`Ledger::recover`] before cutting an unproven tail.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RecoveryNote {
    dropped_bytes: u64,
    kept_len: u64,
    quarantine: Option<Quarantine>,
}

/// Where [`Ledger::recover`] moved an unproven tail, and who asked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Quarantine {
    /// Path relative to the ledger directory.
    file: String,
    first_index: u64,
    entries: u64,
    sha256_hex: String,
    actor: String,
}

impl RecoveryNote {
    fn to_json(&self) -> String {
        let mut v = json!({"dropped_bytes": self.dropped_bytes, "kept_len": self.kept_len});
        if let Some(q) = &self.quarantine {
            v["quarantine"] = json!({
                "file": q.file,
                "first_index": q.first_index,
                "entries": q.entries,
                "sha256": q.sha256_hex,
                "actor": q.actor,
            });
        }
        format!("{v}\n")
    }

    fn load(path: &Path) -> Result<Option<RecoveryNote>, LedgerError> {
        let Some(bytes) = files::read_optional(path, SMALL_FILE_LIMIT)? else {
            return Ok(None);
        };
        let bad = || LedgerError::BadRecoveryNote {
            path: path.to_path_buf(),
        };
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        let num = |v: &serde_json::Value, name: &str| {
            v.get(name)
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(bad)
        };
        let text = |v: &serde_json::Value, name: &str| {
            v.get(name)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(bad)
        };
        let quarantine = match v.get("quarantine") {
            None => None,
            Some(q) => Some(Quarantine {
                file: text(q, "file")?,
                first_index: num(q, "first_index")?,
                entries: num(q, "entries")?,
                sha256_hex: text(q, "sha256")?,
                actor: text(q, "actor")?,
            }),
        };
        Ok(Some(RecoveryNote {
            dropped_bytes: num(&v, "dropped_bytes")?,
            kept_len: num(&v, "kept_len")?,
            quarantine,
        }))
    }

    /// The [`RECOVERED_KIND`] entry that records this cut: counts and
    /// hashes, never the bytes.
    fn record(&self) -> EntryDraft {
        let (actor, body) = match &self.quarantine {
            None => (
                "unseen-ledger".to_owned(),
                json!({
                    "dropped_bytes": self.dropped_bytes,
                    "reason": "entries.jsonl ended with a partial line (no newline) left by an interrupted write; it was never acknowledged and was cut off",
                }),
            ),
            Some(q) => (
                q.actor.clone(),
                json!({
                    "dropped_bytes": self.dropped_bytes,
                    "first_index": q.first_index,
                    "quarantined_entries": q.entries,
                    "sha256": q.sha256_hex,
                    "file": q.file,
                    "reason": "entries from first_index on were not proven to be written by this ledger (no signed checkpoint or write-ahead record covers them); an operator ran `unseen ledger recover`, which moved them to the file named here",
                }),
            ),
        };
        EntryDraft {
            kind: RECOVERED_KIND.into(),
            actor,
            time: rfc3339_now(),
            body,
        }
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

/// [`verify_dir`], also returning the entries and checkpoint it verified,
/// so callers interpret exactly those bytes and read the files only once.
pub fn read_verified(
    dir: &Path,
    public_key: &PublicKey,
) -> Result<(VerifyReport, Vec<u8>, String), VerifyError> {
    let (entries, checkpoint) = read_dir_files(dir)?;
    let report = verify(&entries, &checkpoint, public_key)?;
    Ok((report, entries, checkpoint))
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
    // The checkpoint first: entries are written before the checkpoint that
    // covers them, so entries read afterwards hold at least what it covers.
    // Neither is read through a link or past its size when opened.
    let checkpoint = files::read_limited(&dir.join(CHECKPOINT_FILE), SMALL_FILE_LIMIT)?;
    let entries = files::read_limited(&dir.join(ENTRIES_FILE), u64::MAX)?;
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
