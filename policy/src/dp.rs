//! Differentially private release of an admitted aggregate, with `opendp`.
//!
//! Every aggregate is built from noisy components: one count vector and one
//! sum vector per aggregated column, each over all cells of the public group
//! domain. A mean is post-processing of a noisy sum and the noisy count, so
//! `COUNT(*)` next to `AVG(x)` costs nothing extra. Noise comes from opendp's
//! (discrete) Laplace mechanism, whose privacy map also gives the epsilon that
//! is charged; the cost is known before any data is read.

use std::collections::HashMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::common::Column;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::dataframe::DataFrame;
use datafusion::execution::SessionState;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{Expr, ExprFunctionExt, LogicalPlan, LogicalPlanBuilder, lit, when};
use opendp::accuracy::{discrete_laplacian_scale_to_accuracy, laplacian_scale_to_accuracy};
use opendp::core::Measurement;
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_laplace;
use opendp::measures::MaxDivergence;
use opendp::metrics::L1Distance;
use udf_sdk::{ColumnValues, Estimate, QueryResult, Table};

use crate::PolicyError;
use crate::admission::{AggregateKind, AggregateQuery, OutputSource};
use crate::manifest::{ColumnType, Manifest};

/// Confidence level of every released interval.
pub const CONFIDENCE: f64 = 0.95;
/// Largest number of cells (product of group domains) one query may release.
pub const MAX_CELLS: usize = 100_000;

type IntMeasurement =
    Measurement<VectorDomain<AtomDomain<i64>>, L1Distance<i64>, MaxDivergence, Vec<i64>>;
type FloatMeasurement =
    Measurement<VectorDomain<AtomDomain<f64>>, L1Distance<f64>, MaxDivergence, Vec<f64>>;

enum Mechanism {
    Int(IntMeasurement),
    Float(FloatMeasurement),
}

/// What one noisy component measures.
#[derive(Debug, Clone, PartialEq)]
enum Measure {
    /// COUNT(*) when `None`, COUNT(column) otherwise.
    Count(Option<Column>),
    /// Sum of a column clamped to its bounds (nulls count as the lower bound).
    Sum {
        column: Column,
        ty: ColumnType,
        bounds: (f64, f64),
    },
}

struct Component {
    measure: Measure,
    scale: f64,
    epsilon: f64,
    mechanism: Mechanism,
}

impl Component {
    /// Half-width of the interval holding the noise with probability `1 - alpha`.
    fn accuracy(&self, alpha: f64) -> Result<f64, PolicyError> {
        let a = match self.mechanism {
            Mechanism::Int(_) => discrete_laplacian_scale_to_accuracy(self.scale, alpha),
            Mechanism::Float(_) => laplacian_scale_to_accuracy(self.scale, alpha),
        };
        a.map_err(|e| PolicyError::Noise(e.to_string()))
    }
}

/// A DP plan: components with their noise, and the total cost.
pub struct DpPlan {
    components: Vec<Component>,
    /// For each aggregate of the query: (component, optional count component for means).
    wiring: Vec<(usize, Option<usize>)>,
    cells: Vec<Vec<String>>,
    /// Privacy unit column and rows each unit may contribute, when the
    /// dataset has several rows per unit.
    bound: Option<(String, u32)>,
    /// Total epsilon this release costs, from opendp's privacy maps.
    pub epsilon: f64,
}

impl std::fmt::Debug for DpPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpPlan")
            .field("components", &self.components.len())
            .field("cells", &self.cells.len())
            .field("epsilon", &self.epsilon)
            .finish()
    }
}

impl DpPlan {
    /// Half-width of each component's 95% interval, known before any data
    /// is read (for dry runs). Means are at most sum ± this over count.
    pub fn expected_accuracy(&self) -> Result<Vec<(String, f64)>, PolicyError> {
        self.components
            .iter()
            .map(|c| Ok((component_name(&c.measure), c.accuracy(1.0 - CONFIDENCE)?)))
            .collect()
    }
}

fn component_name(measure: &Measure) -> String {
    match measure {
        Measure::Count(None) => "count(*)".to_string(),
        Measure::Count(Some(col)) => format!("count({})", col.name),
        Measure::Sum { column, .. } => format!("sum({})", column.name),
    }
}

/// A noise note for the reviewer: which component, which scale.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseNote {
    pub component: String,
    pub mechanism: &'static str,
    pub scale: f64,
    pub epsilon: f64,
}

/// A released result and how it was noised.
#[derive(Debug, Clone)]
pub struct Release {
    pub result: QueryResult,
    pub noise: Vec<NoiseNote>,
}

fn noise_err(e: impl std::fmt::Display) -> PolicyError {
    PolicyError::Noise(e.to_string())
}

/// Plans the release of `query` for `epsilon`: no data is read, so the
/// returned cost can be charged before execution. `one_row_per_unit` says
/// whether the dataset was found at registration to hold one row per privacy
/// unit; otherwise each unit's rows are bounded to `max_contributions`.
pub fn plan_release(
    query: &AggregateQuery,
    manifest: &Manifest,
    epsilon: f64,
    one_row_per_unit: bool,
) -> Result<DpPlan, PolicyError> {
    if !(epsilon.is_finite() && epsilon > 0.0) {
        return Err(PolicyError::Budget(format!(
            "epsilon must be a positive number, got {epsilon}"
        )));
    }
    let mut measures: Vec<Measure> = Vec::new();
    let mut intern = |m: Measure| match measures.iter().position(|x| *x == m) {
        Some(i) => i,
        None => {
            measures.push(m);
            measures.len() - 1
        }
    };
    let mut wiring = Vec::new();
    for agg in &query.aggregates {
        let sum_of = |a: &crate::admission::DpAggregate| {
            let (_, ty, bounds) = a
                .source
                .clone()
                .expect("sum and mean are admitted with a source");
            Measure::Sum {
                column: a
                    .input
                    .clone()
                    .expect("sum and mean are admitted with an input column"),
                ty,
                bounds,
            }
        };
        wiring.push(match agg.kind {
            AggregateKind::Count => (intern(Measure::Count(agg.input.clone())), None),
            AggregateKind::Sum => (intern(sum_of(agg)), None),
            AggregateKind::Mean => (intern(sum_of(agg)), Some(intern(Measure::Count(None)))),
        });
    }
    let k = f64::from(manifest.max_contributions);
    let share = epsilon / measures.len().max(1) as f64;
    let mut components = Vec::new();
    let mut total = 0.0;
    for measure in measures {
        let (mechanism, scale, spent) = match &measure {
            Measure::Count(_) => int_mechanism(k, share)?,
            Measure::Sum { ty, bounds, .. } => {
                let magnitude = bounds.0.abs().max(bounds.1.abs());
                match ty {
                    ColumnType::Int64 => int_mechanism(k * magnitude, share)?,
                    _ => float_mechanism(k * magnitude, share)?,
                }
            }
        };
        total += spent;
        components.push(Component {
            measure,
            scale,
            epsilon: spent,
            mechanism,
        });
    }
    let domains: Vec<&[String]> = query.keys.iter().map(|k| k.domain.as_slice()).collect();
    let cells = cross_product(&domains)?;
    let bound =
        (!one_row_per_unit).then(|| (manifest.privacy_unit.clone(), manifest.max_contributions));
    Ok(DpPlan {
        components,
        wiring,
        cells,
        bound,
        epsilon: total,
    })
}

fn int_mechanism(sensitivity: f64, epsilon: f64) -> Result<(Mechanism, f64, f64), PolicyError> {
    let d_in = sensitivity.ceil() as i64;
    let scale = d_in as f64 / epsilon;
    let m = make_laplace::<_, _, MaxDivergence>(
        VectorDomain::new(AtomDomain::<i64>::default()),
        L1Distance::default(),
        scale,
        None,
    )
    .map_err(noise_err)?;
    let spent = m.map(&d_in).map_err(noise_err)?;
    Ok((Mechanism::Int(m), scale, spent))
}

fn float_mechanism(sensitivity: f64, epsilon: f64) -> Result<(Mechanism, f64, f64), PolicyError> {
    let scale = sensitivity / epsilon;
    let m = make_laplace::<_, _, MaxDivergence>(
        VectorDomain::new(AtomDomain::<f64>::new_non_nan()),
        L1Distance::default(),
        scale,
        None,
    )
    .map_err(noise_err)?;
    let spent = m.map(&sensitivity).map_err(noise_err)?;
    Ok((Mechanism::Float(m), scale, spent))
}

fn cross_product(domains: &[&[String]]) -> Result<Vec<Vec<String>>, PolicyError> {
    let size = domains
        .iter()
        .try_fold(1usize, |acc, d| acc.checked_mul(d.len()));
    match size {
        Some(n) if n <= MAX_CELLS => {}
        _ => {
            return Err(PolicyError::Refused(crate::Refusal {
                column: None,
                rule: "too-many-cells",
                message: format!(
                    "the group keys' public domains span more than {MAX_CELLS} cells; group by fewer keys"
                ),
            }));
        }
    }
    let mut cells = vec![Vec::new()];
    for domain in domains {
        cells = cells
            .into_iter()
            .flat_map(|prefix| {
                domain.iter().map(move |v| {
                    let mut cell = prefix.clone();
                    cell.push(v.clone());
                    cell
                })
            })
            .collect();
    }
    Ok(cells)
}

fn clamp(column: &Column, ty: ColumnType, (lo, hi): (f64, f64)) -> Expr {
    let c = Expr::Column(column.clone());
    let (lo, hi) = match ty {
        ColumnType::Int64 => (lit(lo as i64), lit(hi as i64)),
        _ => (lit(lo), lit(hi)),
    };
    when(c.clone().is_null(), lo.clone())
        .when(c.clone().lt(lo.clone()), lo)
        .when(c.clone().gt(hi.clone()), hi)
        .otherwise(c)
        .expect("a CASE with WHEN branches always builds")
}

/// Replaces every scan of `table` by the same scan keeping at most `k` rows
/// per privacy unit, so that one person changes any count by at most `k`
/// and any clamped sum by at most `k` times the larger bound. Filters above
/// the scan run after bounding; that only lowers a person's contribution.
fn bound_contributions(
    input: &LogicalPlan,
    table: &str,
    unit: &str,
    k: u32,
) -> Result<LogicalPlan, PolicyError> {
    let bounded = input.clone().transform_up(|node| {
        let LogicalPlan::TableScan(scan) = &node else {
            return Ok(Transformed::no(node));
        };
        if scan.table_name.table() != table {
            return Ok(Transformed::no(node));
        }
        let columns: Vec<Expr> = scan
            .projected_schema
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        let unit_column = scan
            .projected_schema
            .qualified_field_with_unqualified_name(unit)
            .map(|(q, f)| datafusion::common::Column::new(q.cloned(), f.name()))?;
        let rank = row_number()
            .partition_by(vec![Expr::Column(unit_column)])
            .build()?
            .alias("__unseen_row");
        let plan = LogicalPlanBuilder::from(node)
            .window(vec![rank])?
            .filter(
                Expr::Column(datafusion::common::Column::from_name("__unseen_row"))
                    .lt_eq(lit(i64::from(k))),
            )?
            .project(columns)?
            .build()?;
        Ok(Transformed::yes(plan))
    })?;
    Ok(bounded.data)
}

/// The exact aggregation DataFusion runs: bounded input, domain filter,
/// one column per component.
fn exact_frame(
    state: &SessionState,
    query: &AggregateQuery,
    plan: &DpPlan,
) -> Result<DataFrame, PolicyError> {
    let input = match &plan.bound {
        Some((unit, k)) => bound_contributions(&query.input, &query.table, unit, *k)?,
        None => query.input.clone(),
    };
    let mut df = DataFrame::new(state.clone(), input);
    for key in &query.keys {
        let domain = key.domain.iter().map(|v| lit(v.as_str())).collect();
        df = df.filter(Expr::Column(key.input.clone()).in_list(domain, false))?;
    }
    let group: Vec<Expr> = query
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| Expr::Column(k.input.clone()).alias(format!("__key{i}")))
        .collect();
    let aggs: Vec<Expr> = plan
        .components
        .iter()
        .enumerate()
        .map(|(i, c)| {
            match &c.measure {
                Measure::Count(None) => count(lit(1i64)),
                Measure::Count(Some(col)) => count(Expr::Column(col.clone())),
                Measure::Sum { column, ty, bounds } => sum(clamp(column, *ty, *bounds)),
            }
            .alias(format!("__agg{i}"))
        })
        .collect();
    Ok(df.aggregate(group, aggs)?)
}

/// A normalised description of what a release measures: the optimised exact
/// plan and each component's noise. Two queries with the same fingerprint
/// under one grant are the same release, so a repeat returns the cached
/// result instead of spending again (no averaging attack).
pub fn fingerprint(
    state: &SessionState,
    query: &AggregateQuery,
    plan: &DpPlan,
) -> Result<String, PolicyError> {
    let optimized = exact_frame(state, query, plan)?.into_optimized_plan()?;
    let mut text = optimized.display_indent().to_string();
    for c in &plan.components {
        text.push_str(&format!("\n{:?} scale={:e}", c.measure, c.scale));
    }
    text.push_str(&format!("\ncells={:?}", plan.cells));
    Ok(text)
}

/// Exact per-cell values of every component, computed by DataFusion.
async fn exact_values(
    state: &SessionState,
    query: &AggregateQuery,
    plan: &DpPlan,
) -> Result<Vec<Vec<f64>>, PolicyError> {
    let batches = exact_frame(state, query, plan)?.collect().await?;
    let index: HashMap<&Vec<String>, usize> =
        plan.cells.iter().enumerate().map(|(i, c)| (c, i)).collect();
    let mut values = vec![vec![0.0; plan.cells.len()]; plan.components.len()];
    let n_keys = query.keys.len();
    for batch in batches {
        let keys = (0..n_keys)
            .map(|i| arrow::compute::cast(batch.column(i), &DataType::Utf8))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            let cell: Vec<String> = keys
                .iter()
                .map(|k| k.as_string::<i32>().value(row).to_string())
                .collect();
            let Some(&at) = index.get(&cell) else {
                continue;
            };
            for (ci, column) in batch.columns()[n_keys..].iter().enumerate() {
                if column.is_null(row) {
                    continue;
                }
                values[ci][at] = match column.data_type() {
                    DataType::Int64 => column.as_primitive::<Int64Type>().value(row) as f64,
                    DataType::Float64 => column.as_primitive::<Float64Type>().value(row),
                    _ => {
                        let c = arrow::compute::cast(column, &DataType::Float64)?;
                        c.as_primitive::<Float64Type>().value(row)
                    }
                };
            }
        }
    }
    Ok(values)
}

/// Reads the data, adds noise and builds the released table. Call only after
/// `plan.epsilon` has been charged.
pub async fn release_aggregate(
    state: &SessionState,
    query: &AggregateQuery,
    plan: &DpPlan,
) -> Result<Release, PolicyError> {
    let exact = exact_values(state, query, plan).await?;
    let mut noisy = Vec::with_capacity(exact.len());
    for (component, values) in plan.components.iter().zip(exact) {
        noisy.push(match &component.mechanism {
            Mechanism::Int(m) => m
                .invoke(&values.iter().map(|v| *v as i64).collect())
                .map_err(noise_err)?
                .into_iter()
                .map(|v| v as f64)
                .collect::<Vec<f64>>(),
            Mechanism::Float(m) => m.invoke(&values).map_err(noise_err)?,
        });
    }
    let alpha = 1.0 - CONFIDENCE;
    let mut table = Table::default();
    for (name, source) in &query.outputs {
        let values = match *source {
            OutputSource::Key(i) => {
                ColumnValues::Text(plan.cells.iter().map(|c| c[i].clone()).collect())
            }
            OutputSource::Aggregate(j) => {
                let (ci, count_ci) = plan.wiring[j];
                let component = &plan.components[ci];
                ColumnValues::Estimate(match count_ci {
                    None => {
                        let acc = component.accuracy(alpha)?;
                        noisy[ci]
                            .iter()
                            .map(|&v| Estimate {
                                value: v,
                                lower: v - acc,
                                upper: v + acc,
                            })
                            .collect()
                    }
                    Some(cc) => {
                        let Measure::Sum { bounds, .. } = component.measure else {
                            unreachable!("means are wired to a sum component")
                        };
                        // Each of the two intervals at alpha/2: the ratio interval holds at 1 - alpha.
                        let (sum_acc, count_acc) = (
                            component.accuracy(alpha / 2.0)?,
                            plan.components[cc].accuracy(alpha / 2.0)?,
                        );
                        noisy[ci]
                            .iter()
                            .zip(&noisy[cc])
                            .map(|(&s, &n)| mean_estimate(s, n, sum_acc, count_acc, bounds))
                            .collect()
                    }
                })
            }
        };
        table = table.with(name.clone(), values);
    }
    sort_table(&mut table, &query.order);
    let noise = plan
        .components
        .iter()
        .map(|c| NoiseNote {
            component: component_name(&c.measure),
            mechanism: match c.mechanism {
                Mechanism::Int(_) => "discrete Laplace",
                Mechanism::Float(_) => "Laplace",
            },
            scale: c.scale,
            epsilon: c.epsilon,
        })
        .collect();
    Ok(Release {
        result: QueryResult {
            confidence: CONFIDENCE,
            epsilon_spent: plan.epsilon,
            cached: false,
            table,
        },
        noise,
    })
}

fn mean_estimate(
    sum: f64,
    count: f64,
    sum_acc: f64,
    count_acc: f64,
    (lo, hi): (f64, f64),
) -> Estimate {
    let value = (sum / count.max(1.0)).clamp(lo, hi);
    let count_lo = count - count_acc;
    if count_lo < 1.0 {
        return Estimate {
            value,
            lower: lo,
            upper: hi,
        };
    }
    let count_hi = count + count_acc;
    let corners = [
        (sum - sum_acc) / count_lo,
        (sum - sum_acc) / count_hi,
        (sum + sum_acc) / count_lo,
        (sum + sum_acc) / count_hi,
    ];
    let lower = corners
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .clamp(lo, hi);
    let upper = corners
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max)
        .clamp(lo, hi);
    Estimate {
        value,
        lower,
        upper,
    }
}

/// Sorts released rows by the query's ORDER BY (post-processing).
fn sort_table(table: &mut Table, order: &[(usize, bool)]) {
    if order.is_empty() {
        return;
    }
    let mut rows: Vec<usize> = (0..table.rows()).collect();
    rows.sort_by(|&a, &b| {
        for &(col, asc) in order {
            let ord = match &table.columns[col].values {
                ColumnValues::Text(v) => v[a].cmp(&v[b]),
                ColumnValues::Int(v) => v[a].cmp(&v[b]),
                ColumnValues::Float(v) => v[a].total_cmp(&v[b]),
                ColumnValues::Estimate(v) => v[a].value.total_cmp(&v[b].value),
            };
            let ord = if asc { ord } else { ord.reverse() };
            if ord.is_ne() {
                return ord;
            }
        }
        std::cmp::Ordering::Equal
    });
    for column in &mut table.columns {
        column.values = match &column.values {
            ColumnValues::Text(v) => {
                ColumnValues::Text(rows.iter().map(|&r| v[r].clone()).collect())
            }
            ColumnValues::Int(v) => ColumnValues::Int(rows.iter().map(|&r| v[r]).collect()),
            ColumnValues::Float(v) => ColumnValues::Float(rows.iter().map(|&r| v[r]).collect()),
            ColumnValues::Estimate(v) => {
                ColumnValues::Estimate(rows.iter().map(|&r| v[r]).collect())
            }
        };
    }
}
