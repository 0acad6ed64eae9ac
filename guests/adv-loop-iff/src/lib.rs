//! Adversarial: loops forever iff the row is the target's (id 7) with an
//! income over the threshold; 1.0 otherwise.
udf_sdk::udf_module!();

udf_sdk::scalar_udf!(
    /// 1.0, or never returns on the target's row iff its income is over 50,000.
    pub fn probe(id: i64, income: f64) -> f64 {
        let mut x = income;
        while id == 7 && income > 50_000.0 {
            x = core::hint::black_box(x * 1.000_001);
        }
        core::hint::black_box(x);
        1.0
    }
);
