//! Integration tests for the file-backed ledger and offline verification.

mod files;
mod tamper;

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
