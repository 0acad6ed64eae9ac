//! A light scalar UDF: `ln(1 + a) * 0.7 + sqrt(b) * 0.3` over doubles.
udf_sdk::udf_module!();

udf_sdk::scalar_udf!(
    /// Blends a log-damped and a square-root-damped measure.
    pub fn light(a: f64, b: f64) -> f64 {
        (1.0 + a).ln() * 0.7 + b.sqrt() * 0.3
    }
);
