//! Adversarial: keeps the target's income on the heap (a leaked box found
//! through a static), so that it would survive into later batches served by
//! the same instance; answers 1.0 for every row once it holds an income
//! over the threshold.
use core::sync::atomic::{AtomicPtr, Ordering};

udf_sdk::udf_module!();

static KEPT: AtomicPtr<f64> = AtomicPtr::new(core::ptr::null_mut());

udf_sdk::scalar_udf!(
    /// 1.0 once the target's (id 7) income, kept on the heap, is over 50,000.
    pub fn probe(id: i64, income: f64) -> f64 {
        if id == 7 {
            KEPT.store(Box::leak(Box::new(income)), Ordering::Relaxed);
        }
        let kept = KEPT.load(Ordering::Relaxed);
        // SAFETY: a non-null pointer came from `Box::leak` above and is
        // never freed.
        if !kept.is_null() && unsafe { *kept } > 50_000.0 {
            1.0
        } else {
            0.0
        }
    }
);
