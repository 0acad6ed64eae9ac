//! Timings for `unseen bench policy`, with `std::time::Instant` only.
//!
//! Two questions: how long admission takes for a realistic analyst query
//! (target: p50 under 1 ms), and how much a DP release costs over the same
//! exact aggregate run by DataFusion on the same in-memory table (target:
//! at most 5% more at 10M rows). Tables come from the deterministic
//! `unseen-datasets` generator, held in memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use unseen_datasets::{DatasetKind, GenerateOptions};

use crate::admission::{self, Admitted};
use crate::{Manifest, PolicyError, find_table_facts, plan_query, plan_release, release_aggregate};

/// A CTE, filters, GROUP BY two keys and three aggregates.
pub const COMPLEX_QUERY: &str = "WITH adults AS (\
    SELECT district, gender, annual_income, household_size FROM residents \
    WHERE birth_year <= 1990 AND household_size >= 2) \
  SELECT district, gender, COUNT(*) AS n, AVG(annual_income) AS mean_income, \
    SUM(household_size) AS people \
  FROM adults WHERE annual_income > 0 \
  GROUP BY district, gender ORDER BY district, gender";

/// The aggregate timed with and without DP.
pub const AGGREGATE_QUERY: &str = "SELECT district, COUNT(*) AS n, SUM(annual_income) AS total, \
    AVG(annual_income) AS mean_income FROM residents GROUP BY district";

/// Admission latency over `runs` repetitions.
#[derive(Debug, Clone)]
pub struct AdmissionTiming {
    pub runs: usize,
    /// `admission::admit` on an already planned query: the policy's own work.
    pub admit_p50: Duration,
    pub admit_p99: Duration,
    /// SQL text to verdict: parsing, DataFusion planning and optimising, admission.
    pub sql_to_verdict_p50: Duration,
}

/// A DP release against the same exact aggregate, medians over runs.
#[derive(Debug, Clone)]
pub struct DpOverhead {
    pub rows: u64,
    pub runs: usize,
    pub exact: Duration,
    pub dp: Duration,
    /// `dp / exact`.
    pub ratio: f64,
}

fn residents_manifest() -> Manifest {
    Manifest::parse(unseen_datasets::manifest_toml(DatasetKind::Residents))
        .expect("the built-in residents manifest parses")
}

/// A session holding `rows` generated residents in memory, split into one
/// partition per core.
pub fn residents_session(
    rows: u64,
) -> Result<(SessionContext, BTreeMap<String, Manifest>), PolicyError> {
    let schema = unseen_datasets::schema(DatasetKind::Residents);
    let mut batches = Vec::new();
    if rows > 0 {
        let mut bytes = Vec::new();
        unseen_datasets::generate(
            DatasetKind::Residents,
            &GenerateOptions::new(rows, 7),
            &mut bytes,
            &mut |_| {},
        )
        .map_err(|e| PolicyError::Execution(e.to_string()))?;
        let reader = datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
            bytes::Bytes::from(bytes),
            64 * 1024,
        )
        .map_err(|e| PolicyError::Execution(e.to_string()))?;
        for batch in reader {
            batches.push(batch?);
        }
    }
    let parts = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut partitions = vec![Vec::new(); parts];
    for (i, b) in batches.into_iter().enumerate() {
        partitions[i % parts].push(b);
    }
    let table = MemTable::try_new(schema, partitions)?;
    let ctx = SessionContext::new();
    ctx.register_table("residents", Arc::new(table))?;
    let manifests = [("residents".to_string(), residents_manifest())]
        .into_iter()
        .collect();
    Ok((ctx, manifests))
}

fn percentile(times: &mut [Duration], p: f64) -> Duration {
    times.sort();
    let at = ((times.len() as f64 - 1.0) * p).round() as usize;
    times[at.min(times.len() - 1)]
}

/// Times admission of [`COMPLEX_QUERY`] `runs` times (no data is read).
pub async fn admission(runs: usize) -> Result<AdmissionTiming, PolicyError> {
    let runs = runs.max(1);
    let (ctx, manifests) = residents_session(0)?;
    let plan = ctx
        .sql_with_options(COMPLEX_QUERY, crate::sql_options())
        .await?
        .logical_plan()
        .clone();
    let optimized = ctx.state().optimize(&plan)?;
    let mut admit = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let verdict = admission::admit(&plan, &optimized, &manifests);
        admit.push(start.elapsed());
        if !matches!(verdict, Ok(Admitted::Aggregate(_))) {
            return Err(PolicyError::Execution(format!(
                "the benchmark query was not admitted as a DP aggregate: {verdict:?}"
            )));
        }
    }
    let mut full = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        plan_query(&ctx, COMPLEX_QUERY, &manifests).await?;
        full.push(start.elapsed());
    }
    Ok(AdmissionTiming {
        runs,
        admit_p50: percentile(&mut admit, 0.5),
        admit_p99: percentile(&mut admit, 0.99),
        sql_to_verdict_p50: percentile(&mut full, 0.5),
    })
}

/// Times [`AGGREGATE_QUERY`] over `rows` generated residents, exact in
/// DataFusion and as a DP release at epsilon 1 (admission, planning,
/// contribution bounding, noise and intervals included; clamping is skipped
/// where registration found every value within bounds, as the service
/// does), alternating the two `runs` times after one warm-up each.
pub async fn dp_overhead(rows: u64, runs: usize) -> Result<DpOverhead, PolicyError> {
    let runs = runs.max(1);
    let (ctx, manifests) = residents_session(rows)?;
    // What registration would record, found once outside the timing.
    let facts = find_table_facts(&ctx, "residents", &manifests["residents"]).await?;
    let facts = &facts;
    let exact_once = || async {
        let start = Instant::now();
        ctx.sql(AGGREGATE_QUERY).await?.collect().await?;
        Ok::<_, PolicyError>(start.elapsed())
    };
    let budget = BenchBudget(std::sync::Mutex::new(f64::INFINITY));
    let budget = &budget;
    let dp_once = || async {
        let start = Instant::now();
        let Admitted::Aggregate(query) = plan_query(&ctx, AGGREGATE_QUERY, &manifests).await?
        else {
            return Err(PolicyError::Execution(
                "the benchmark aggregate was admitted as open columns".into(),
            ));
        };
        let plan = plan_release(&query, 1.0, facts)?.charge(budget)?;
        release_aggregate(&ctx.state(), &query, &plan).await?;
        Ok(start.elapsed())
    };
    exact_once().await?;
    dp_once().await?;
    let (mut exact, mut dp) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        exact.push(exact_once().await?);
        dp.push(dp_once().await?);
    }
    let (exact, dp) = (percentile(&mut exact, 0.5), percentile(&mut dp, 0.5));
    Ok(DpOverhead {
        rows,
        runs,
        exact,
        dp,
        ratio: dp.as_secs_f64() / exact.as_secs_f64(),
    })
}

/// The benchmark's budget: in memory, so that the measured DP path charges
/// as the service's does, without a store.
struct BenchBudget(std::sync::Mutex<f64>);

impl crate::Budget for BenchBudget {
    type Refusal = PolicyError;

    fn charge(&self, cost: crate::Cost) -> Result<(), PolicyError> {
        let mut left = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if cost.epsilon > *left {
            return Err(PolicyError::Budget(format!(
                "the benchmark's budget has epsilon {left} left; a release needs {}",
                cost.epsilon
            )));
        }
        *left -= cost.epsilon;
        Ok(())
    }
}

/// What a release of `sql` over `ctx` adds its noise to: for each plan
/// component, the exact values of each public cell. Only for checking that
/// two engines compute the same thing below the noise (`unseen bench
/// cluster` and its test): it reads data without a budget or noise, so no
/// service path calls it.
pub async fn exact_release_values(
    ctx: &SessionContext,
    sql: &str,
    manifests: &BTreeMap<String, crate::Manifest>,
    facts: impl crate::DataFacts,
) -> Result<Vec<Vec<Vec<f64>>>, PolicyError> {
    let query = match plan_query(ctx, sql, manifests).await? {
        Admitted::Aggregate(query) => query,
        Admitted::Open(_) => {
            return Err(PolicyError::Execution(format!(
                "`{sql}` reads open columns only: it has no noise to look below"
            )));
        }
    };
    let plan = plan_release(&query, 1.0, facts)?;
    let cells = plan.public_cells().ok_or_else(|| {
        PolicyError::Execution(format!(
            "`{sql}` groups by a key without a public domain: its cells are chosen behind noise"
        ))
    })?;
    let exact = crate::dp::exact_values(&ctx.state(), &query, &plan, cells).await?;
    Ok(exact.iter().map(crate::dp::Exact::numbers).collect())
}
