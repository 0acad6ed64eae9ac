//! SME credit scoring from what an enterprise pays in tax and draws in
//! electricity: two signals of real activity that are hard to fake together.
udf_sdk::udf_module!();

udf_sdk::scalar_udf!(
    /// A score from 300 (high risk) to 850 (low risk). Tax paid (yuan per
    /// year) and electricity drawn (kWh per year) both raise it with
    /// diminishing returns; a firm that pays tax but draws almost no power
    /// (a possible shell) is pulled down.
    pub fn sme_score(tax_paid: f64, kwh: f64) -> f64 {
        let tax = (1.0 + tax_paid.max(0.0) / 10_000.0).ln();
        let power = (1.0 + kwh.max(0.0) / 1_000.0).ln();
        let mismatch = (tax - power).max(0.0);
        let z = 0.9 * tax + 0.6 * power - 0.8 * mismatch - 2.5;
        300.0 + 550.0 / (1.0 + (-z).exp())
    }
);

udf_sdk::scalar_udf!(
    /// A multiplier for the industry's default rate (1.0 is average).
    pub fn industry_risk(industry: &str) -> f64 {
        match industry.trim().to_ascii_lowercase().as_str() {
            "manufacturing" => 1.1,
            "construction" => 1.4,
            "retail" => 1.2,
            "software" | "information technology" => 0.8,
            "agriculture" => 1.3,
            _ => 1.0,
        }
    }
);
