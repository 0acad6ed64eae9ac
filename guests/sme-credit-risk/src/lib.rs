//! SME credit risk by industry (the finance scenario): every enterprise is
//! scored by the `sme_score` UDF from the tax it paid and the electricity it
//! drew, inside the engine; only the DP mean score per industry leaves.
//!
//! Needs a grant over `enterprises` joined to `tax_records` and
//! `utility_usage` (all keyed by `credit_code`) that allows UDFs, and the
//! UDF module `guests/udf-sme-score` submitted with the job
//! (`--udf udf_sme_score.wasm`). The parameter `year` (2019-2024, default
//! 2024) picks the tax year; its monthly electricity use is annualised.
//!
//! The job never sees a score, a tax amount or a meter reading: the query
//! bounds each score to [300, 850] (the UDF's range), so the mean is
//! released with noise calibrated to those bounds.
use udf_sdk::{ColumnValues, Ctx, Error, JobResult, LogLevel};

fn year(ctx: &mut Ctx) -> Result<i64, Error> {
    let raw = ctx.param("year").unwrap_or_else(|| "2024".into());
    match raw.trim().parse::<i64>() {
        Ok(y) if (2019..=2024).contains(&y) => Ok(y),
        _ => Err(Error::new(format!(
            "parameter `year`: `{raw}` is not a tax year from 2019 to 2024"
        ))),
    }
}

fn run(ctx: &mut Ctx) -> JobResult {
    let year = year(ctx)?;
    // One row per enterprise and month of metered use; `industry_risk`
    // scales the score by the industry's default-rate multiplier.
    let released = ctx.query(&format!(
        "SELECT e.industry, COUNT(*) AS firm_months, \
           AVG(LEAST(GREATEST(sme_score(t.tax_paid, u.kwh * 12), 300), 850)) AS mean_score, \
           AVG(LEAST(GREATEST(sme_score(t.tax_paid, u.kwh * 12) / industry_risk(e.industry), 200), 1100)) \
             AS risk_adjusted_score \
         FROM enterprises e \
         JOIN tax_records t ON e.credit_code = t.credit_code \
         JOIN utility_usage u ON e.credit_code = u.credit_code \
         WHERE t.year = {year} \
         GROUP BY e.industry ORDER BY e.industry"
    ))?;
    let industries = match released.table.column("industry") {
        Some(ColumnValues::Text(v)) => v.len(),
        _ => return Err(Error::new("the release has no `industry` column")),
    };
    ctx.log(
        LogLevel::Info,
        &format!(
            "{industries} industries scored for {year}; epsilon {:.3}",
            released.epsilon_spent
        ),
    );
    ctx.emit("sme_score_by_industry", &released.table)
}

udf_sdk::job!(run);
