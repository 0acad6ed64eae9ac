//! DP marginals of a dataset, published by its provider so that `dev run`
//! mock data can follow the real distribution without holding a real row.
//!
//! Per column: for a group-key column with a public domain, a noisy count
//! per category; for a bounded numeric column, noisy quantiles. Each is an
//! ordinary DP aggregate through the same admission and opendp release as
//! any query (an open column is exact: it is public anyway), and the whole
//! epsilon is charged to the dataset's budget before anything is computed.
//! Prohibited columns get nothing: mock identifiers stay synthetic.

use std::collections::BTreeMap;

use serde_json::json;
use udf_sdk::ColumnValues;
use unseen_policy::manifest::{Class, ColumnType};
use unseen_policy::{Admitted, Manifest};

use crate::data::{self, OpenDataset};
use crate::{Domain, DomainError, Role};

/// Quantiles released for each bounded numeric column.
pub const QUANTILES: [f64; 5] = [0.1, 0.25, 0.5, 0.75, 0.9];

/// What is known of one column's distribution.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Marginal {
    /// Noisy count per category of the public domain (may be negative).
    Categories { counts: BTreeMap<String, f64> },
    /// `(q, value)` points from `(0, lower bound)` to `(1, upper bound)`,
    /// the inner ones noisy quantiles, non-decreasing.
    Quantiles { points: Vec<(f64, f64)> },
}

/// A dataset's published marginals.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Marginals {
    pub dataset: String,
    pub manifest_version: u32,
    /// Total epsilon spent on them.
    pub epsilon: f64,
    pub columns: BTreeMap<String, Marginal>,
}

impl Marginals {
    /// Reads a marginals file, checking it is about `manifest`'s dataset.
    pub fn for_manifest(text: &str, manifest: &Manifest) -> Result<Self, DomainError> {
        let marginals: Marginals = serde_json::from_str(text).map_err(|e| {
            DomainError::BadMarginals(format!("is not one `unseen dataset marginals` wrote: {e}"))
        })?;
        if marginals.dataset != manifest.name {
            return Err(DomainError::BadMarginals(format!(
                "is of dataset `{}`, but the manifest is of `{}`",
                marginals.dataset, manifest.name
            )));
        }
        Ok(marginals)
    }
}

/// The SQL of a column's marginal, or `None` when the column gets none.
fn marginal_sql(
    manifest: &Manifest,
    column: &unseen_policy::manifest::ColumnSpec,
) -> Option<String> {
    let table = &manifest.name;
    let name = &column.name;
    if column.class == Class::Prohibited || *name == manifest.privacy_unit {
        return None;
    }
    if column.domain.is_some() && (column.group_key || column.class == Class::Open) {
        return Some(format!(
            "SELECT \"{name}\", COUNT(*) AS n FROM \"{table}\" GROUP BY \"{name}\""
        ));
    }
    if matches!(column.ty, ColumnType::Int64 | ColumnType::Float64) && column.bounds.is_some() {
        let quantiles: Vec<String> = QUANTILES
            .iter()
            .enumerate()
            .map(|(i, q)| {
                format!("approx_percentile_cont({q}) WITHIN GROUP (ORDER BY \"{name}\") AS q{i}")
            })
            .collect();
        return Some(format!("SELECT {} FROM \"{table}\"", quantiles.join(", ")));
    }
    None
}

fn estimates(values: &ColumnValues) -> Vec<f64> {
    match values {
        ColumnValues::Estimate(v) => v.iter().map(|e| e.value).collect(),
        ColumnValues::Int(v) => v.iter().map(|&x| x as f64).collect(),
        ColumnValues::Float(v) => v.clone(),
        ColumnValues::Text(_) => Vec::new(),
    }
}

impl Domain {
    /// Computes and records DP marginals of `dataset` with total `epsilon`,
    /// charged to the dataset's budget first. Admin only: the provider
    /// decides what about its data is published.
    pub fn publish_marginals(
        &self,
        runtime: &tokio::runtime::Handle,
        actor: &str,
        dataset: &str,
        epsilon: f64,
    ) -> Result<Marginals, DomainError> {
        self.require(actor, Role::Admin, "publish dataset marginals")?;
        if !(epsilon.is_finite() && epsilon > 0.0 && epsilon <= 10.0) {
            return Err(DomainError::OutOfRange {
                what: "epsilon",
                value: epsilon.to_string(),
                expected: "give a number in (0, 10]".into(),
            });
        }
        let opened = self.open_dataset(dataset)?;
        let manifest = opened.manifest.clone();
        let queries: Vec<(String, String)> = manifest
            .columns
            .iter()
            .filter_map(|c| marginal_sql(&manifest, c).map(|sql| (c.name.clone(), sql)))
            .collect();
        if queries.is_empty() {
            return Err(DomainError::NothingToPublish {
                dataset: dataset.to_string(),
            });
        }
        let columns: Vec<&String> = queries.iter().map(|(c, _)| c).collect();
        let read = std::collections::BTreeSet::from([dataset.to_string()]);
        // The provider's own spend: the dataset layer only, through the
        // same charge as every query, recorded with it.
        let spend = crate::Spend {
            grant: None,
            datasets: &read,
            epsilon,
            delta: 0.0,
            job: "",
            query_sha: "",
        };
        let short = self.charge(
            actor,
            "dataset.marginals",
            &spend,
            json!({"dataset": dataset, "epsilon": epsilon, "columns": columns}),
        )?;
        if short.is_some() {
            return Err(DomainError::BudgetShort {
                dataset: dataset.to_string(),
                epsilon,
            });
        }
        let per_query = epsilon / queries.len() as f64;
        let prepaid = Prepaid(std::sync::Mutex::new(epsilon));
        let computed = runtime.block_on(marginals_of(&opened, &queries, per_query, &prepaid))?;
        Ok(Marginals {
            dataset: dataset.to_string(),
            manifest_version: manifest.version,
            epsilon,
            columns: computed,
        })
    }
}

/// The epsilon the provider's marginals were charged (once, in all, on
/// the dataset's layer), drawn down by each marginal's plan: no plan is
/// released beyond what was charged.
struct Prepaid(std::sync::Mutex<f64>);

impl unseen_policy::Budget for Prepaid {
    type Refusal = DomainError;

    fn charge(&self, cost: unseen_policy::Cost) -> Result<(), DomainError> {
        let mut left = crate::lock(&self.0);
        // The shares are a division of the total: allow for rounding.
        if cost.epsilon > *left + 1e-9 {
            return Err(DomainError::Internal(format!(
                "a marginal would spend epsilon {} where {} is left of what was charged; nothing more was released",
                cost.epsilon, *left
            )));
        }
        *left -= cost.epsilon;
        Ok(())
    }
}

async fn marginals_of(
    dataset: &OpenDataset,
    queries: &[(String, String)],
    epsilon: f64,
    prepaid: &Prepaid,
) -> Result<BTreeMap<String, Marginal>, DomainError> {
    let (ctx, manifests) = data::session(std::slice::from_ref(dataset), &[], &[]).await?;
    let mut out = BTreeMap::new();
    for (column, sql) in queries {
        let spec = dataset
            .manifest
            .column(column)
            .ok_or_else(|| DomainError::Internal(format!("column `{column}` vanished")))?;
        let table = match unseen_policy::plan_query(&ctx, sql, &manifests).await? {
            Admitted::Open(plan) => unseen_policy::release_open(&ctx, plan, 10_000).await?.table,
            Admitted::Aggregate(query) => {
                let plan = unseen_policy::plan_release(
                    &query,
                    epsilon,
                    data::Facts(std::slice::from_ref(dataset)),
                )?
                .charge(prepaid)?;
                unseen_policy::release_aggregate(&ctx.state(), &query, &plan)
                    .await?
                    .result
                    .table
            }
        };
        let marginal =
            if let Some(ColumnValues::Text(keys)) = table.columns.first().map(|c| &c.values) {
                let counts = table
                    .columns
                    .get(1)
                    .map(|c| estimates(&c.values))
                    .unwrap_or_default();
                Marginal::Categories {
                    counts: keys.iter().cloned().zip(counts).collect(),
                }
            } else {
                let (lo, hi) = spec.bounds.unwrap_or((0.0, 0.0));
                let mut points = vec![(0.0, lo)];
                let mut last = lo;
                for (q, c) in QUANTILES.iter().zip(&table.columns) {
                    // Noisy quantiles may cross; keep the curve non-decreasing.
                    let v = estimates(&c.values)
                        .first()
                        .copied()
                        .unwrap_or(lo)
                        .clamp(last, hi);
                    points.push((*q, v));
                    last = v;
                }
                points.push((1.0, hi));
                Marginal::Quantiles { points }
            };
        out.insert(column.clone(), marginal);
    }
    Ok(out)
}

/// Draws from a column's marginal: a category by its (non-negative) noisy
/// weight, or a value by linear interpolation between quantile points.
pub(crate) fn sample_category<'a>(
    counts: &'a BTreeMap<String, f64>,
    rng: &mut impl rand::Rng,
) -> Option<&'a str> {
    let total: f64 = counts.values().map(|c| c.max(0.0)).sum();
    if total <= 0.0 {
        return None;
    }
    let mut at = rng.random_range(0.0..total);
    for (key, count) in counts {
        let w = count.max(0.0);
        if at < w {
            return Some(key);
        }
        at -= w;
    }
    counts.keys().next_back().map(String::as_str)
}

pub(crate) fn sample_quantiles(points: &[(f64, f64)], rng: &mut impl rand::Rng) -> Option<f64> {
    let u: f64 = rng.random_range(0.0..1.0);
    points.windows(2).find_map(|w| {
        let ((q0, v0), (q1, v1)) = (w[0], w[1]);
        (u >= q0 && u <= q1 && q1 > q0).then(|| v0 + (v1 - v0) * (u - q0) / (q1 - q0))
    })
}
