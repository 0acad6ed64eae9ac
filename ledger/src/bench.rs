//! Timing of the ledger's hot paths, with plain `std::time::Instant`.
//!
//! Run them through the ignored test `bench::report` in release mode:
//! `cargo test -p unseen-ledger --release --test it -- --ignored bench::report --nocapture`.

use crate::checkpoint::{Checkpoint, ORIGIN};
use crate::entry::{EntryDraft, Hash, PreparedDraft, sha256};
use crate::keys::SigningKey;
use crate::merkle::{self, Tree};
use crate::shared::SharedLedger;
use crate::store::LedgerError;
use crate::verify::verify;
use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Durable appends through [`SharedLedger`], and raw `write` + `fdatasync`
/// of the same bytes on the same disk for comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendBench {
    /// Entries appended.
    pub entries: u64,
    /// Appending threads.
    pub threads: usize,
    /// Length of each entry's line.
    pub entry_bytes: usize,
    /// Group-committed durable appends per second.
    pub appends_per_sec: f64,
    /// Group commits made.
    pub groups: u64,
    /// Mean entries per group.
    pub mean_group: f64,
    /// Raw baseline: entries per second writing groups of `mean_group`
    /// entries with one `fdatasync` each.
    pub raw_batched_per_sec: f64,
    /// Raw baseline: entries per second with one `fdatasync` per entry.
    pub raw_single_per_sec: f64,
}

/// Full offline verification of an in-memory ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyBench {
    /// Entries verified.
    pub entries: u64,
    /// Bytes of `entries.jsonl`.
    pub bytes: u64,
    /// Entries verified per second.
    pub entries_per_sec: f64,
}

/// Inclusion proofs in a large tree.
#[derive(Debug, Clone, PartialEq)]
pub struct ProofBench {
    /// Leaves in the tree.
    pub size: u64,
    /// Time to build the tree from its leaf hashes.
    pub build: Duration,
    /// Proofs made (each also verified).
    pub proofs: u64,
    /// Mean time to make one proof.
    pub per_proof: Duration,
}

/// The three measurements together.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// See [`bench_appends`].
    pub appends: AppendBench,
    /// See [`bench_verify`].
    pub verify: VerifyBench,
    /// See [`bench_inclusion_proof`].
    pub proof: ProofBench,
}

impl fmt::Display for AppendBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "durable appends: {:.0}/s ({} entries of {} bytes, {} threads, {} groups, mean group {:.1}); raw write+fdatasync per group: {:.0}/s, per entry: {:.0}/s",
            self.appends_per_sec,
            self.entries,
            self.entry_bytes,
            self.threads,
            self.groups,
            self.mean_group,
            self.raw_batched_per_sec,
            self.raw_single_per_sec
        )
    }
}

impl fmt::Display for VerifyBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "full verification: {:.0} entries/s ({} entries, {:.1} MB)",
            self.entries_per_sec,
            self.entries,
            self.bytes as f64 / 1e6
        )
    }
}

impl fmt::Display for ProofBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "inclusion proof at {} entries: {:.1} µs per proof ({} proofs; tree built in {:.2} s)",
            self.size,
            self.per_proof.as_secs_f64() * 1e6,
            self.proofs,
            self.build.as_secs_f64()
        )
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.appends)?;
        writeln!(f, "{}", self.verify)?;
        write!(f, "{}", self.proof)
    }
}

/// A draft whose canonical line at a 6-digit index is about `entry_bytes`
/// long, given `pad` from [`pad_for`].
pub fn sized_draft(i: u64, pad: usize) -> EntryDraft {
    EntryDraft {
        kind: "query.admitted".into(),
        actor: format!("analyst-{}", i % 16),
        time: "2025-03-01T10:00:00Z".into(),
        body: serde_json::json!({"n": i % 1_000_000, "pad": "x".repeat(pad)}),
    }
}

/// The padding that makes [`sized_draft`] lines about `entry_bytes` long.
pub fn pad_for(entry_bytes: usize) -> usize {
    let probe = PreparedDraft::new(sized_draft(100_000, 0)).map_or(0, |p| p.line_len(100_000));
    entry_bytes.saturating_sub(probe)
}

/// Appends `entries` drafts of about `entry_bytes` bytes from `threads`
/// threads to a [`SharedLedger`] in `dir` (which should be new), then
/// measures raw `write` + `fdatasync` in the same directory.
pub fn bench_appends(
    dir: &Path,
    entries: u64,
    entry_bytes: usize,
    threads: usize,
) -> Result<AppendBench, LedgerError> {
    let threads = threads.max(1);
    let shared = Arc::new(SharedLedger::open(dir)?);
    let pad = pad_for(entry_bytes);
    let per_thread = entries / threads as u64;
    let entries = per_thread * threads as u64;
    let start = Instant::now();
    let outcome: Result<(), LedgerError> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let shared = Arc::clone(&shared);
                s.spawn(move || -> Result<(), LedgerError> {
                    for i in 0..per_thread {
                        shared.append(sized_draft(t as u64 * per_thread + i, pad))?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or(Err(LedgerError::Poisoned)))
    });
    outcome?;
    let elapsed = start.elapsed().as_secs_f64();
    let stats = shared.stats();

    let line = vec![b'x'; entry_bytes.max(1)];
    let group = (stats.mean_group().round() as u64).max(1);
    let raw_batched = raw_fsync_rate(dir, &line, entries, group)?;
    let raw_single = raw_fsync_rate(dir, &line, entries.min(2_000), 1)?;
    Ok(AppendBench {
        entries,
        threads,
        entry_bytes,
        appends_per_sec: entries as f64 / elapsed,
        groups: stats.groups,
        mean_group: stats.mean_group(),
        raw_batched_per_sec: raw_batched,
        raw_single_per_sec: raw_single,
    })
}

/// Entries per second writing `entries` copies of `line` in groups of
/// `group`, one `write` and one `fdatasync` per group.
fn raw_fsync_rate(dir: &Path, line: &[u8], entries: u64, group: u64) -> Result<f64, LedgerError> {
    let path = dir.join("bench-raw.bin");
    let io = |source| LedgerError::Io {
        action: "benchmark writes to",
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    let mut buf = Vec::with_capacity(line.len() * group as usize);
    for _ in 0..group {
        buf.extend_from_slice(line);
    }
    let rounds = entries.div_ceil(group).max(1);
    let start = Instant::now();
    for _ in 0..rounds {
        file.write_all(&buf).map_err(io)?;
        file.sync_data().map_err(io)?;
    }
    let rate = (rounds * group) as f64 / start.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path).map_err(io)?;
    Ok(rate)
}

/// An in-memory ledger of `entries` entries of about 200 bytes: the
/// `entries.jsonl` bytes, its signed checkpoint and the key.
pub fn make_ledger_bytes(entries: u64) -> (Vec<u8>, String, SigningKey) {
    let mut bytes = Vec::new();
    let mut tree = Tree::new();
    let mut prev: Hash = [0; 32];
    let pad = pad_for(200);
    for i in 0..entries {
        // `sized_draft` bodies are always storable.
        let Ok(p) = PreparedDraft::new(sized_draft(i, pad)) else {
            continue;
        };
        let start = bytes.len();
        p.write_line(i, &prev, &mut bytes);
        prev = sha256(&bytes[start..]);
        tree.push(merkle::leaf_hash(&bytes[start..]));
        bytes.push(b'\n');
    }
    let key = SigningKey::generate().unwrap_or_else(|e| panic!("{e}"));
    let cp = Checkpoint {
        origin: ORIGIN.to_owned(),
        size: tree.size(),
        root: tree.root(),
    };
    let note = cp.sign(&key).unwrap_or_else(|e| panic!("{e}"));
    (bytes, note, key)
}

/// Times [`verify`] over an in-memory ledger of `entries` entries.
pub fn bench_verify(entries: u64) -> VerifyBench {
    let (bytes, note, key) = make_ledger_bytes(entries);
    let public = key.verifying_key();
    let start = Instant::now();
    let report = verify(&bytes, &note, &public);
    let elapsed = start.elapsed().as_secs_f64();
    assert!(
        report.is_ok(),
        "benchmark ledger failed to verify: {report:?}"
    );
    VerifyBench {
        entries,
        bytes: bytes.len() as u64,
        entries_per_sec: entries as f64 / elapsed,
    }
}

/// Builds a [`Tree`] of `size` leaf hashes and times inclusion proofs of
/// spread-out leaves (each proof is also verified, outside the timing).
pub fn bench_inclusion_proof(size: u64) -> ProofBench {
    let size = size.max(1);
    let start = Instant::now();
    let mut tree = Tree::new();
    for i in 0..size {
        tree.push(merkle::leaf_hash(&i.to_le_bytes()));
    }
    let build = start.elapsed();
    let root = tree.root();
    let proofs = 1_000u64;
    let mut spent = Duration::ZERO;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..proofs {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let index = x % size;
        let t = Instant::now();
        let proof = tree.inclusion_proof(index, size);
        spent += t.elapsed();
        let ok = proof.is_ok_and(|p| {
            let leaf = tree.leaves()[index as usize];
            merkle::verify_inclusion(index, size, &leaf, &p, &root).is_ok()
        });
        assert!(ok, "proof of leaf {index} failed to verify");
    }
    ProofBench {
        size,
        build,
        proofs,
        per_proof: spent / proofs as u32,
    }
}
