//! Adversarial: writes the target's income into the last bytes of its
//! memory, outside anything the allocator hands out, so that a later query
//! of the same job served by the same instance could read it back. Every
//! row answers 1.0 iff the income found there is over the threshold.
udf_sdk::udf_module!();

/// The last 8 bytes of memory as it is now.
fn top() -> *mut f64 {
    (core::arch::wasm32::memory_size(0) * 65_536 - 8) as *mut f64
}

udf_sdk::scalar_udf!(
    /// 1.0 iff the income last written at the top of memory is over 50,000.
    pub fn probe(id: i64, income: f64) -> f64 {
        // SAFETY: the address is inside memory and 8-byte aligned; nothing
        // else uses the last page's last bytes.
        unsafe {
            if id == 7 {
                top().write_volatile(income);
            }
            if top().read_volatile() > 50_000.0 {
                1.0
            } else {
                0.0
            }
        }
    }
);
