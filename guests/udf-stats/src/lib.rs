//! Aggregate UDFs over released estimates and open columns: a geometric
//! mean, a weighted mean, and the precision-weighted mean of DP estimates
//! (each weighted by the inverse square of its interval's width).
udf_sdk::udf_module!();

udf_sdk::aggregate_udf!(
    /// Geometric mean of the positive values; null when there are none.
    fn geo_mean(x: f64) -> Option<f64> {
        state: (f64, i64) = (0.0, 0);
        update(s) {
            if x > 0.0 {
                s.0 += x.ln();
                s.1 += 1;
            }
        }
        merge(s, other) {
            s.0 += other.0;
            s.1 += other.1;
        }
        finish(s) { (s.1 > 0).then(|| (s.0 / s.1 as f64).exp()) }
    }
);

udf_sdk::aggregate_udf!(
    /// Mean of `x` weighted by `w`; rows with a negative or non-finite
    /// weight are skipped; null when the weights sum to 0.
    fn weighted_mean(x: f64, w: f64) -> Option<f64> {
        state: (f64, f64) = (0.0, 0.0);
        update(s) {
            if w.is_finite() && w >= 0.0 {
                s.0 += x * w;
                s.1 += w;
            }
        }
        merge(s, other) {
            s.0 += other.0;
            s.1 += other.1;
        }
        finish(s) { (s.1 > 0.0).then(|| s.0 / s.1) }
    }
);

udf_sdk::aggregate_udf!(
    /// The precision-weighted mean of estimates `x` released with intervals
    /// `[lo, hi]`: each weighted by `1 / (hi - lo)^2`, the inverse of its
    /// variance up to a constant, so the noisiest estimates count least.
    /// Estimates with an empty or non-finite interval are skipped.
    fn precision_weighted_mean(x: f64, lo: f64, hi: f64) -> Option<f64> {
        state: (f64, f64) = (0.0, 0.0);
        update(s) {
            let width = hi - lo;
            if width.is_finite() && width > 0.0 {
                let weight = 1.0 / (width * width);
                s.0 += x * weight;
                s.1 += weight;
            }
        }
        merge(s, other) {
            s.0 += other.0;
            s.1 += other.1;
        }
        finish(s) { (s.1 > 0.0).then(|| s.0 / s.1) }
    }
);

udf_sdk::aggregate_udf!(
    /// How many distinct industries of a fixed list appear: an integer
    /// result from a text argument and an array state.
    fn industries_seen(industry: &str) -> i64 {
        state: [bool; 8] = [false; 8];
        update(s) {
            const KNOWN: [&str; 8] = [
                "retail", "software", "catering", "manufacturing",
                "construction", "logistics", "finance", "agriculture",
            ];
            if let Some(i) = KNOWN.iter().position(|k| *k == industry) {
                s[i] = true;
            }
        }
        merge(s, other) {
            for (mine, theirs) in s.iter_mut().zip(other) {
                *mine |= theirs;
            }
        }
        finish(s) { s.iter().filter(|seen| **seen).count() as i64 }
    }
);
