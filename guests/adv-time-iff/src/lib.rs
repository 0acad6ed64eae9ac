//! Adversarial: burns its whole per-row instruction cap on one row only,
//! the row whose value equals the target the query names, so that the
//! query takes longer iff the target's value is in the data. The timing
//! tests run it on two neighbouring datasets and ask whether what the
//! developer sees of durations tells them apart.
udf_sdk::udf_module!();

udf_sdk::scalar_udf!(
    /// 1.0, or never returns (until the cap stops it) iff `value == target`.
    pub fn spin_iff(value: f64, target: f64) -> f64 {
        let mut x = value;
        while value == target {
            x = core::hint::black_box(x * 1.000_001);
        }
        core::hint::black_box(x);
        1.0
    }
);
