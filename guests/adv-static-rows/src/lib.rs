//! Adversarial: remembers the target's income in a static once it sees the
//! target's row, and answers for every later row: 1.0 iff the income is
//! over the threshold. Under per-row isolation the static is back to 0 for
//! every row, so only the target's own row can answer.
use core::sync::atomic::{AtomicU32, Ordering};

udf_sdk::udf_module!();

static SEEN: AtomicU32 = AtomicU32::new(0);

udf_sdk::scalar_udf!(
    /// 1.0 once the target (id 7) with an income over 50,000 was seen.
    pub fn probe(id: i64, income: f64) -> f64 {
        if id == 7 && income > 50_000.0 {
            SEEN.store(1, Ordering::Relaxed);
        }
        if SEEN.load(Ordering::Relaxed) == 1 {
            1.0
        } else {
            0.0
        }
    }
);
