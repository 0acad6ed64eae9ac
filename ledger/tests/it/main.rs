//! Integration tests for the file-backed ledger and offline verification.

mod bench;
mod crash;
mod crosscheck;
mod files;
mod group;
mod launder;
mod proofs;
mod tamper;
mod tamper_random;

use serde_json::json;
use std::path::Path;
use unseen_ledger::{EntryDraft, Ledger};

/// A draft whose body varies with `i`.
pub fn draft(i: u64) -> EntryDraft {
    EntryDraft {
        kind: ["query.admitted", "grant.issued", "job.ended"][(i % 3) as usize].into(),
        actor: format!("analyst-{}", i % 4),
        time: format!("2025-03-01T10:{:02}:{:02}Z", i / 60 % 60, i % 60),
        body: json!({"n": i, "spend": {"epsilon": 0.125, "delta": 1e-9}, "note": "ok\u{e9}\n", "tags": ["a", i]}),
    }
}

/// Opens a ledger in `dir` and appends `n` entries, some in batches.
pub fn ledger_with(dir: &Path, n: u64) -> Ledger {
    let mut ledger = Ledger::open(dir).unwrap();
    let mut i = 0;
    while i < n {
        if i % 7 == 3 && i + 3 <= n {
            ledger
                .append_batch((i..i + 3).map(draft).collect())
                .unwrap();
            i += 3;
        } else {
            ledger.append(draft(i)).unwrap();
            i += 1;
        }
    }
    ledger
}

/// A small deterministic generator (xorshift64*), so failures replay from
/// the printed seed without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from `UNSEEN_TEST_SEED` if set, else from the clock; prints it.
    pub fn from_env(what: &str) -> Rng {
        let seed = std::env::var("UNSEEN_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{what}: UNSEEN_TEST_SEED={seed}");
        Rng(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Whether the long versions of slow tests were asked for.
pub fn slow() -> bool {
    std::env::var_os("UNSEEN_SLOW_TESTS").is_some()
}
