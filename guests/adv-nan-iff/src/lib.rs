//! Adversarial: returns NaN iff the row is the target's (id 7) with an
//! income over the threshold; 1.0 otherwise. A NaN summed into a release
//! would make the whole release NaN.
udf_sdk::udf_module!();

udf_sdk::scalar_udf!(
    /// 1.0, or NaN on the target's row iff its income is over 50,000.
    pub fn probe(id: i64, income: f64) -> f64 {
        if id == 7 && income > 50_000.0 {
            f64::NAN
        } else {
            1.0
        }
    }
);
