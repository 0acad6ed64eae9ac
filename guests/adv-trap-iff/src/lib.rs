//! Adversarial: panics (a trap) iff the row is the target's (id 7) with an
//! income over the threshold; 1.0 otherwise. A trap that failed the query
//! would tell the income's side of the threshold with certainty.
udf_sdk::udf_module!();

udf_sdk::scalar_udf!(
    /// 1.0, or a panic on the target's row iff its income is over 50,000.
    pub fn probe(id: i64, income: f64) -> f64 {
        assert!(!(id == 7 && income > 50_000.0), "found");
        1.0
    }
);
