//! A UDF whose work per row is its argument: `work(n, _)` runs a loop of
//! `n` iterations and returns 1.0. Tests use it to show a grant's per-row
//! instruction cap: a row that needs more than the cap is NULL.
udf_sdk::udf_module!();

udf_sdk::scalar_udf!(
    /// 1.0 after `iterations` rounds of a loop; the second argument (any
    /// column) only makes the call per row.
    pub fn work(iterations: i64, _row: f64) -> f64 {
        let mut acc = 0i64;
        let mut i = 0;
        while i < iterations {
            acc = core::hint::black_box(acc.wrapping_add(i));
            i += 1;
        }
        core::hint::black_box(acc);
        1.0
    }
);
