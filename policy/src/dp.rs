//! Differentially private release of an admitted aggregate, with `opendp`.
//!
//! Every aggregate is built from noisy components over all cells of the
//! public group domain:
//!
//! - a count vector (COUNT, and the denominator of AVG, VAR and STDDEV);
//! - a sum vector of the column clamped to its manifest bounds (SUM, AVG,
//!   VAR, STDDEV);
//! - a sum of squared deviations from the bounds' midpoint (VAR, STDDEV);
//!   variance is post-processing of the noisy count, sum and squares;
//! - a private quantile per cell (MEDIAN, percentiles), from opendp's
//!   `make_private_quantile` over [`QUANTILE_CANDIDATES`] candidates spanning
//!   the bounds, with a noisy histogram of [`HISTOGRAM_BINS`] bins that gives
//!   the quantile's confidence interval.
//!
//! Shared components are measured once, so `COUNT(*)` next to `AVG(x)` costs
//! nothing extra. Noise comes from opendp: under pure DP (the default) the
//! (discrete) Laplace mechanism, under zCDP ([`Accounting::Zcdp`]) the
//! (discrete) Gaussian mechanism; the private quantile is opendp's noisy max
//! under either measure. Each component's cost comes from its opendp privacy
//! map and the components are composed with opendp's `CompositionMeasure`
//! (zCDP then converted to (epsilon, delta) with its `ConcentratedMeasure`
//! conversion), so the cost is known before any data is read.
//!
//! # Sums are exact before noise
//!
//! Sums are computed by [`crate::clamped_sum`], one DataFusion aggregate
//! that clamps each value inside its accumulation loop (no clamped column
//! is materialised). Integer columns are summed in `i128`, exact for any
//! table DataFusion can scan, come back as `Decimal128(38, 0)`, and are
//! saturated into `i64` before opendp's integer mechanism, never through
//! `f64`, so sums above 2^53 keep every unit and sums beyond `i64` neither
//! wrap nor need a second pass. Saturation is a 1-Lipschitz map, so the
//! sensitivity (and the epsilon) is unchanged. Float sums are `f64` sums,
//! saturated at `±f64::MAX` for the same reason.
//!
//! # Quantiles
//!
//! DataFusion groups each cell's clamped values (with their multiplicity)
//! and opendp's `make_private_quantile` scores the candidates on them, so a
//! quantile holds one cell's values in memory while it is noised. Its
//! interval comes from the noisy histogram (see `quantile_estimate`): it is
//! conservative, at least one histogram bin wide, and always contains the
//! released candidate. [`DpPlan::expected_accuracy`] states the
//! mechanism's own utility bound in rank units.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Decimal128Type, Float64Type, Int64Type};
use datafusion::common::Column;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::dataframe::DataFrame;
use datafusion::execution::SessionState;
use datafusion::functions::expr_fn::{floor, greatest, least};
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{
    Expr, ExprFunctionExt, LogicalPlan, LogicalPlanBuilder, cast, lit, when,
};
use opendp::accuracy::{
    discrete_gaussian_scale_to_accuracy, discrete_laplacian_scale_to_accuracy,
    gaussian_scale_to_accuracy, laplacian_scale_to_accuracy,
};
use opendp::combinators::{CompositionMeasure, ConcentratedMeasure};
use opendp::core::{Function, Measure as OpendpMeasure, Measurement, Metric, MetricSpace};
use opendp::domains::{AtomDomain, MapDomain, VectorDomain};
use opendp::measurements::{
    TopKMeasure, make_gaussian, make_laplace, make_laplace_threshold, make_private_quantile,
};
use opendp::measures::{Approximate, MaxDivergence, ZeroConcentratedDivergence};
use opendp::metrics::{
    AbsoluteDistance, L0PInfDistance, L1Distance, L01InfDistance, L2Distance, SymmetricDistance,
};
use udf_sdk::{ColumnValues, Estimate, QueryResult, Table};

use crate::PolicyError;
use crate::admission::{AggregateKind, AggregateQuery, DpAggregate, OutputSource, Scan};
use crate::clamped_sum::{ClampedSum, Output};
use crate::facts::DataFacts;
use crate::manifest::ColumnType;

/// Confidence level of every released interval.
pub const CONFIDENCE: f64 = 0.95;
/// Largest number of cells (product of group domains) one query may release.
pub const MAX_CELLS: usize = 100_000;
/// Candidates of the private quantile, evenly spaced over the bounds
/// (every integer when an integer column's bounds are narrower).
pub const QUANTILE_CANDIDATES: usize = 1_000;
/// Bins of the noisy histogram from which a quantile's interval is computed.
pub const HISTOGRAM_BINS: usize = 20;

/// How the privacy loss of a release is measured and composed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Accounting {
    /// Pure epsilon-DP: Laplace noise, costs add up (the default).
    Pure { epsilon: f64 },
    /// As `Pure`, plus up to `delta` for DP partition selection when a group
    /// key has no public domain: (epsilon, delta)-DP.
    Approximate { epsilon: f64, delta: f64 },
    /// Zero-concentrated DP with budget `rho`: Gaussian noise, costs add up
    /// in rho, and the release is reported as (epsilon, delta)-DP at `delta`.
    Zcdp { rho: f64, delta: f64 },
}

/// What one noisy component measures.
#[derive(Debug, Clone, PartialEq)]
enum Measure {
    /// COUNT(*) when `None`, COUNT(column) otherwise.
    Count(Option<Column>),
    /// Sum of a column clamped to its bounds (nulls count as the lower
    /// bound). `clamp` is false when registration found every value of the
    /// column present and within its bounds: clamping would then change no
    /// value, so the sum is the same without it.
    Sum {
        column: Column,
        ty: ColumnType,
        bounds: (f64, f64),
        clamp: bool,
    },
    /// Sum of squared deviations of the clamped column from the bounds'
    /// midpoint (nulls as the lower bound), in `f64`.
    SquaredDeviations {
        column: Column,
        ty: ColumnType,
        bounds: (f64, f64),
    },
    /// Counts of the clamped column in `HISTOGRAM_BINS` equal bins of its
    /// bounds, per cell (cell-major).
    Histogram {
        column: Column,
        ty: ColumnType,
        bounds: (f64, f64),
    },
    /// The `q`-quantile of the clamped column, per cell.
    Quantile {
        column: Column,
        ty: ColumnType,
        bounds: (f64, f64),
        q: f64,
    },
}

impl Measure {
    /// The least value the exact measure can take: 0 for counts and for
    /// sums of a column whose lower bound is at least 0.
    fn least_value(&self) -> f64 {
        match self {
            Measure::Count(_) => 0.0,
            Measure::Sum {
                bounds: (lo, _), ..
            } if *lo >= 0.0 => 0.0,
            _ => f64::NEG_INFINITY,
        }
    }
}

/// Which opendp noise a component draws.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Family {
    Laplace,
    DiscreteLaplace,
    Gaussian,
    DiscreteGaussian,
    /// opendp's noisy max over quantile scores (an exponential mechanism).
    NoisyMax {
        candidates: usize,
    },
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::Laplace => "Laplace",
            Family::DiscreteLaplace => "discrete Laplace",
            Family::Gaussian => "Gaussian",
            Family::DiscreteGaussian => "discrete Gaussian",
            Family::NoisyMax { .. } => "private quantile (noisy max)",
        }
    }
}

type IntNoise = Function<Vec<i64>, Vec<i64>>;

/// The noise function of a component, with opendp's types erased to what
/// the release needs.
enum Noise {
    Int(IntNoise),
    Float(Function<Vec<f64>, Vec<f64>>),
    QuantileInt(Function<Vec<i64>, i64>),
    QuantileFloat(Function<Vec<f64>, f64>),
}

struct Component {
    measure: Measure,
    family: Family,
    scale: f64,
    /// Cost from the opendp privacy map: epsilon (pure) or rho (zCDP).
    spent: f64,
    noise: Noise,
}

impl Component {
    /// Half-width of the interval holding the noise with probability
    /// `1 - alpha`. For a quantile it is in rank units: with probability
    /// `1 - alpha` the released candidate's score
    /// `|(1 - q) * #below - q * #above|` exceeds the best candidate's by at
    /// most `scale * ln(candidates / alpha)` (each candidate `t` worse than
    /// the best is selected with probability at most `exp(-t / scale)`).
    fn accuracy(&self, alpha: f64) -> Result<f64, PolicyError> {
        let a = match self.family {
            Family::Laplace => laplacian_scale_to_accuracy(self.scale, alpha),
            Family::DiscreteLaplace => discrete_laplacian_scale_to_accuracy(self.scale, alpha),
            Family::Gaussian => gaussian_scale_to_accuracy(self.scale, alpha),
            Family::DiscreteGaussian => discrete_gaussian_scale_to_accuracy(self.scale, alpha),
            Family::NoisyMax { candidates } => {
                return Ok(self.scale * (candidates as f64 / alpha).ln());
            }
        };
        a.map_err(noise_err)
    }
}

/// How the components of one aggregate make its estimate.
#[derive(Debug, Clone, Copy)]
enum Wire {
    Plain(usize),
    Mean {
        sum: usize,
        count: usize,
    },
    Variance {
        count: usize,
        sum: usize,
        squares: usize,
        sample: bool,
        root: bool,
    },
    Quantile {
        quantile: usize,
        histogram: usize,
    },
}

/// A DP plan: components with their noise, and the total cost.
pub struct DpPlan {
    components: Vec<Component>,
    /// For each aggregate of the query, the components it is made of.
    wiring: Vec<Wire>,
    /// The released cells when every key has a public domain (their cross
    /// product); empty when `selection` picks them from the data.
    cells: Vec<Vec<String>>,
    selection: Option<Selection>,
    /// The scans whose datasets may hold several rows per privacy unit:
    /// each is cut to `max_contributions` rows per unit before anything else.
    bound: Vec<Scan>,
    accounting: Accounting,
    /// What the release costs, fixed when it is planned: nothing outside
    /// this module can change it between planning and charging.
    cost: Cost,
}

/// What a release costs, from opendp's privacy maps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    /// Total epsilon (under zCDP: the epsilon of the (epsilon,
    /// `delta`)-DP guarantee).
    pub epsilon: f64,
    /// Delta of the guarantee: 0 under pure DP.
    pub delta: f64,
    /// Total rho under zCDP accounting.
    pub rho: Option<f64>,
}

/// Where a release's cost is charged: the service's budget layers, all or
/// none. [`DpPlan::charge`] is the only way to a [`Charged`] plan, and
/// [`release_aggregate`] reads data only for a charged plan, so a release
/// whose cost was never charged does not type-check.
pub trait Budget {
    /// Why the budget refused (a short layer, a store that failed).
    type Refusal;

    /// Charges `cost` in full, durably, or refuses and charges nothing.
    fn charge(&self, cost: Cost) -> Result<(), Self::Refusal>;
}

/// A plan whose cost a [`Budget`] accepted. It cannot be built any other
/// way, nor turned back into a plan to be charged again.
#[derive(Debug)]
pub struct Charged<P> {
    plan: P,
}

impl<P> Charged<P> {
    /// The plan that was charged.
    pub fn plan(&self) -> &P {
        &self.plan
    }
}

impl<P> std::ops::Deref for Charged<P> {
    type Target = P;

    fn deref(&self) -> &P {
        &self.plan
    }
}

impl std::fmt::Debug for DpPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpPlan")
            .field("components", &self.components.len())
            .field("cells", &self.cells.len())
            .field("cost", &self.cost)
            .finish()
    }
}

impl DpPlan {
    /// What releasing this plan costs.
    pub fn cost(&self) -> Cost {
        self.cost
    }

    /// Total epsilon of the release.
    pub fn epsilon(&self) -> f64 {
        self.cost.epsilon
    }

    /// Delta of the release's guarantee: 0 under pure DP.
    pub fn delta(&self) -> f64 {
        self.cost.delta
    }

    /// Total rho under zCDP accounting.
    pub fn rho(&self) -> Option<f64> {
        self.cost.rho
    }

    /// Charges this plan's cost to `budget`; the charged plan is what
    /// [`release_aggregate`] takes. A refusal charges nothing and gives the
    /// plan up: plan again to try another budget.
    /// The cells of a plan whose keys all have public domains; none when
    /// the data selects them (behind noise of its own).
    #[cfg(feature = "bench")]
    pub(crate) fn public_cells(&self) -> Option<&[Vec<String>]> {
        match self.selection {
            Some(_) => None,
            None => Some(&self.cells),
        }
    }

    pub fn charge<B: Budget>(self, budget: &B) -> Result<Charged<DpPlan>, B::Refusal> {
        budget.charge(self.cost)?;
        Ok(Charged { plan: self })
    }

    /// Half-width of each component's 95% interval, known before any data
    /// is read (for dry runs). Means are at most sum ± this over count;
    /// quantiles are in rank units (see the module documentation).
    pub fn expected_accuracy(&self) -> Result<Vec<(String, f64)>, PolicyError> {
        self.components
            .iter()
            .map(|c| Ok((component_name(&c.measure), c.accuracy(1.0 - CONFIDENCE)?)))
            .collect()
    }

    /// The accounting this plan was made under.
    pub fn accounting(&self) -> Accounting {
        self.accounting
    }
}

fn component_name(measure: &Measure) -> String {
    match measure {
        Measure::Count(None) => "count(*)".to_string(),
        Measure::Count(Some(col)) => format!("count({})", col.name),
        Measure::Sum { column, .. } => format!("sum({})", column.name),
        Measure::SquaredDeviations { column, .. } => {
            format!("sum of squared deviations({})", column.name)
        }
        Measure::Histogram { column, .. } => format!("histogram({})", column.name),
        Measure::Quantile { column, q, .. } => format!("quantile({}, {q}) rank", column.name),
    }
}

/// A noise note for the reviewer: which component, which scale.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseNote {
    pub component: String,
    pub mechanism: &'static str,
    pub scale: f64,
    /// The component's epsilon under pure DP (0 under zCDP).
    pub epsilon: f64,
    /// The component's rho under zCDP (0 under pure DP).
    pub rho: f64,
}

/// A released result and how it was noised.
#[derive(Debug, Clone)]
pub struct Release {
    pub result: QueryResult,
    /// What was measured, before naming and ordering for this query: what
    /// a release cache keeps, so that a later query with the same
    /// measurement gets these values under its own names ([`render`]).
    pub measured: Measured,
    pub noise: Vec<NoiseNote>,
    /// The exact aggregate could not be computed (an engine failure that the
    /// total expressions did not prevent), so the noise was added to values
    /// fixed before any data was read. The analyst's release looks the same
    /// as any other; only the provider's records say so.
    pub defaulted: bool,
}

fn noise_err(e: impl std::fmt::Display) -> PolicyError {
    PolicyError::Noise(e.to_string())
}

/// Plans the release of `query` for `epsilon` under pure DP: no data is
/// read, so the returned cost can be charged before execution.
/// `facts` say of a dataset whether it was found at registration to hold
/// at most one row per privacy unit, so that bounding its rows would change
/// nothing; other datasets' rows are bounded to their `max_contributions`
/// per unit. The noise covers every dataset's bound either way.
pub fn plan_release(
    query: &AggregateQuery,
    epsilon: f64,
    facts: impl DataFacts,
) -> Result<DpPlan, PolicyError> {
    plan_release_with(query, Accounting::Pure { epsilon }, facts)
}

/// Plans the release of `query` under zCDP with budget `rho`, reported as
/// (epsilon, `delta`)-DP in [`DpPlan::epsilon`] and [`DpPlan::delta`].
pub fn plan_release_zcdp(
    query: &AggregateQuery,
    rho: f64,
    delta: f64,
    facts: impl DataFacts,
) -> Result<DpPlan, PolicyError> {
    plan_release_with(query, Accounting::Zcdp { rho, delta }, facts)
}

/// Rows one privacy unit may contribute to the aggregate's input: the
/// product of every scan's bound, since a join on the unit pairs each of a
/// unit's rows on one side with each of its rows on the other.
fn contributions(query: &AggregateQuery) -> Result<u32, PolicyError> {
    query.scans.iter().try_fold(1u32, |k, scan| {
        k.checked_mul(scan.max_contributions.max(1)).ok_or_else(|| {
            PolicyError::Budget(
                "the joined datasets let one privacy unit contribute more than 2^32 rows; join fewer datasets".into(),
            )
        })
    })
}

/// Plans the release of `query` under `accounting`. The budget is split
/// evenly over the distinct components.
pub fn plan_release_with(
    query: &AggregateQuery,
    accounting: Accounting,
    facts: impl DataFacts,
) -> Result<DpPlan, PolicyError> {
    let budget = match accounting {
        Accounting::Pure { epsilon } => positive("epsilon", epsilon)?,
        Accounting::Approximate { epsilon, delta } => {
            if !(delta > 0.0 && delta < 1.0) {
                return Err(PolicyError::Budget(format!(
                    "delta must be between 0 and 1 (exclusive), got {delta}"
                )));
            }
            positive("epsilon", epsilon)?
        }
        Accounting::Zcdp { rho, delta } => {
            if !(delta > 0.0 && delta < 1.0) {
                return Err(PolicyError::Budget(format!(
                    "delta must be between 0 and 1 (exclusive), got {delta}"
                )));
            }
            positive("rho", rho)?
        }
    };
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
        wiring.push(match agg.kind {
            AggregateKind::Count => Wire::Plain(intern(Measure::Count(agg.input.clone()))),
            AggregateKind::Sum => Wire::Plain(intern(sum_measure(agg, &facts))),
            AggregateKind::Mean => Wire::Mean {
                sum: intern(sum_measure(agg, &facts)),
                count: intern(Measure::Count(None)),
            },
            AggregateKind::Variance { sample, root } => {
                let (column, ty, bounds) = numeric_source(agg);
                Wire::Variance {
                    count: intern(Measure::Count(None)),
                    sum: intern(sum_measure(agg, &facts)),
                    squares: intern(Measure::SquaredDeviations { column, ty, bounds }),
                    sample,
                    root,
                }
            }
            AggregateKind::Quantile { millionths } => {
                let (column, ty, bounds) = numeric_source(agg);
                Wire::Quantile {
                    quantile: intern(Measure::Quantile {
                        column: column.clone(),
                        ty,
                        bounds,
                        q: f64::from(millionths) / 1e6,
                    }),
                    histogram: intern(Measure::Histogram { column, ty, bounds }),
                }
            }
        });
    }
    let k = contributions(query)?;
    let selecting = query.keys.iter().any(|key| key.domain.is_none());
    let shares = measures.len() + usize::from(selecting);
    let share = budget / shares.max(1) as f64;
    let selection = if selecting {
        let Accounting::Approximate { delta, .. } = accounting else {
            let key = query.keys.iter().find(|key| key.domain.is_none());
            return Err(PolicyError::Refused(crate::Refusal {
                column: key.map(|k| k.source.clone()),
                rule: "no-public-domain",
                message: format!(
                    "group key `{}` has no public domain in the manifest, so its groups can be released only through DP partition selection, which needs a delta: ask for a grant with a delta budget, or group by keys with a public domain",
                    key.map_or("", |k| k.source.as_str())
                ),
            }));
        };
        Some(selection(k, share, delta)?)
    } else {
        None
    };
    let zcdp = matches!(accounting, Accounting::Zcdp { .. });
    let mut components = Vec::new();
    for measure in measures {
        let kf = f64::from(k);
        components.push(match &measure {
            Measure::Count(_) | Measure::Histogram { .. } => {
                int_component(measure.clone(), kf, share, zcdp)?
            }
            Measure::Sum { ty, bounds, .. } => {
                let magnitude = bounds.0.abs().max(bounds.1.abs());
                match ty {
                    ColumnType::Int64 => {
                        int_component(measure.clone(), kf * magnitude, share, zcdp)?
                    }
                    _ => float_component(measure.clone(), kf * magnitude, share, zcdp)?,
                }
            }
            Measure::SquaredDeviations { bounds, .. } => {
                let half = (bounds.1 - bounds.0) / 2.0;
                float_component(measure.clone(), kf * half * half, share, zcdp)?
            }
            Measure::Quantile { .. } => quantile_component(measure.clone(), k, share, zcdp)?,
        });
    }
    let spent: Vec<f64> = components.iter().map(|c| c.spent).collect();
    let (epsilon, delta, rho) = match accounting {
        Accounting::Pure { .. } => (MaxDivergence.compose(spent).map_err(noise_err)?, 0.0, None),
        Accounting::Approximate { .. } => {
            let components = MaxDivergence.compose(spent).map_err(noise_err)?;
            match &selection {
                Some(s) => (components + s.epsilon, s.delta, None),
                None => (components, 0.0, None),
            }
        }
        Accounting::Zcdp { delta, .. } => {
            let rho = ZeroConcentratedDivergence
                .compose(spent)
                .map_err(noise_err)?;
            let epsilon = <ZeroConcentratedDivergence as ConcentratedMeasure>::convert(rho)
                .and_then(|profile| profile.epsilon(delta))
                .map_err(noise_err)?;
            (epsilon, delta, Some(rho))
        }
    };
    let cells = if selecting {
        Vec::new()
    } else {
        let domains: Vec<&[String]> = query
            .keys
            .iter()
            .filter_map(|k| k.domain.as_deref())
            .collect();
        cross_product(&domains)?
    };
    let mut bound: Vec<Scan> = query
        .scans
        .iter()
        .filter(|s| !facts.one_row_per_unit(&s.table))
        .cloned()
        .collect();
    bound.dedup_by(|a, b| a.table == b.table);
    Ok(DpPlan {
        components,
        wiring,
        cells,
        selection,
        bound,
        accounting,
        cost: Cost {
            epsilon,
            delta,
            rho,
        },
    })
}

fn positive(name: &str, v: f64) -> Result<f64, PolicyError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(PolicyError::Budget(format!(
            "{name} must be a positive number, got {v}"
        )))
    }
}

fn numeric_source(agg: &DpAggregate) -> (Column, ColumnType, (f64, f64)) {
    let (_, _, ty, bounds) = agg
        .source
        .clone()
        .expect("numeric aggregates are admitted with a source");
    let column = agg
        .input
        .clone()
        .expect("numeric aggregates are admitted with an input column");
    (column, ty, bounds)
}

/// A clamped sum of `agg`'s column, unclamped where `facts` show clamping
/// would change nothing.
fn sum_measure(agg: &DpAggregate, facts: &impl DataFacts) -> Measure {
    let (column, ty, bounds) = numeric_source(agg);
    let clamp = !agg
        .source
        .as_ref()
        .is_some_and(|(table, source, ..)| facts.within_bounds(table, source));
    Measure::Sum {
        column,
        ty,
        bounds,
        clamp,
    }
}

/// An integer vector component with L1 (pure) or L2 (zCDP) sensitivity
/// `sensitivity`: one person changes the vector by at most that much in
/// either norm, since the L2 norm is at most the L1 norm.
fn int_component(
    measure: Measure,
    sensitivity: f64,
    share: f64,
    zcdp: bool,
) -> Result<Component, PolicyError> {
    let d_in = sensitivity.ceil() as i64;
    let (scale, family) = if zcdp {
        (d_in as f64 / (2.0 * share).sqrt(), Family::DiscreteGaussian)
    } else {
        (d_in as f64 / share, Family::DiscreteLaplace)
    };
    let (noise, spent) = int_noise(d_in, scale, zcdp)?;
    Ok(Component {
        measure,
        family,
        scale,
        spent,
        noise: Noise::Int(noise),
    })
}

/// opendp's integer noise at `scale` and its cost for sensitivity `d_in`.
fn int_noise(d_in: i64, scale: f64, zcdp: bool) -> Result<(IntNoise, f64), PolicyError> {
    let domain = VectorDomain::new(AtomDomain::<i64>::default());
    if zcdp {
        let m = make_gaussian::<_, _, ZeroConcentratedDivergence>(
            domain,
            L2Distance::default(),
            scale,
            None,
        )
        .map_err(noise_err)?;
        Ok((m.function.clone(), m.map(&d_in).map_err(noise_err)?))
    } else {
        let m = make_laplace::<_, _, MaxDivergence>(domain, L1Distance::default(), scale, None)
            .map_err(noise_err)?;
        Ok((m.function.clone(), m.map(&d_in).map_err(noise_err)?))
    }
}

fn float_component(
    measure: Measure,
    sensitivity: f64,
    share: f64,
    zcdp: bool,
) -> Result<Component, PolicyError> {
    let domain = VectorDomain::new(AtomDomain::<f64>::new_non_nan());
    let (scale, family, noise, spent) = if zcdp {
        let scale = sensitivity / (2.0 * share).sqrt();
        let m = make_gaussian::<_, _, ZeroConcentratedDivergence>(
            domain,
            L2Distance::default(),
            scale,
            None,
        )
        .map_err(noise_err)?;
        let spent = m.map(&sensitivity).map_err(noise_err)?;
        (scale, Family::Gaussian, m.function.clone(), spent)
    } else {
        let scale = sensitivity / share;
        let m = make_laplace::<_, _, MaxDivergence>(domain, L1Distance::default(), scale, None)
            .map_err(noise_err)?;
        let spent = m.map(&sensitivity).map_err(noise_err)?;
        (scale, Family::Laplace, m.function.clone(), spent)
    };
    Ok(Component {
        measure,
        family,
        scale,
        spent,
        noise: Noise::Float(noise),
    })
}

/// Candidates of the private quantile: evenly spaced over the bounds,
/// strictly increasing.
fn quantile_candidates((lo, hi): (f64, f64), integer: bool) -> Vec<f64> {
    let n = QUANTILE_CANDIDATES;
    if integer && hi - lo < n as f64 {
        return (lo as i64..=hi as i64).map(|v| v as f64).collect();
    }
    let mut c: Vec<f64> = (0..n)
        .map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64)
        .map(|v| if integer { v.round() } else { v })
        .collect();
    c.dedup();
    c
}

/// A private quantile applied to each cell's values. A person's `k` rows
/// change the cells' vectors by a total symmetric distance of at most `k`;
/// the noisy max privacy map grows at least linearly in that distance, so
/// charging `map(k)` covers any split of those rows over cells.
fn quantile_component(
    measure: Measure,
    k: u32,
    share: f64,
    zcdp: bool,
) -> Result<Component, PolicyError> {
    let Measure::Quantile { ty, bounds, q, .. } = &measure else {
        unreachable!("called with a quantile measure")
    };
    let integer = *ty == ColumnType::Int64;
    let candidates = quantile_candidates(*bounds, integer);
    let count = candidates.len();
    // The cost is proportional to 1/scale (pure) or 1/scale^2 (zCDP):
    // calibrate from the cost at scale 1, then check with the map itself.
    let unit = quantile_noise(&candidates, integer, *q, 1.0, k, zcdp)?.1;
    let mut scale = if zcdp {
        (unit / share).sqrt()
    } else {
        unit / share
    };
    for _ in 0..8 {
        let (noise, spent) = quantile_noise(&candidates, integer, *q, scale, k, zcdp)?;
        if spent <= share * (1.0 + 1e-9) {
            return Ok(Component {
                measure,
                family: Family::NoisyMax { candidates: count },
                scale,
                spent,
                noise,
            });
        }
        scale *= 1.0 + 1e-6;
    }
    Err(PolicyError::Noise(format!(
        "could not calibrate the private quantile to a budget of {share}"
    )))
}

fn quantile_noise(
    candidates: &[f64],
    integer: bool,
    q: f64,
    scale: f64,
    k: u32,
    zcdp: bool,
) -> Result<(Noise, f64), PolicyError> {
    fn build<T, MO>(
        domain: VectorDomain<AtomDomain<T>>,
        measure: MO,
        candidates: Vec<T>,
        q: f64,
        scale: f64,
        k: u32,
    ) -> Result<(Function<Vec<T>, T>, f64), PolicyError>
    where
        T: opendp::traits::Number,
        MO: TopKMeasure + OpendpMeasure<Distance = f64>,
        (VectorDomain<AtomDomain<T>>, SymmetricDistance): MetricSpace,
        SymmetricDistance: Metric<Distance = u32>,
    {
        let m: Measurement<_, SymmetricDistance, MO, T> =
            make_private_quantile(domain, SymmetricDistance, measure, candidates, q, scale)
                .map_err(noise_err)?;
        let spent = m.map(&k).map_err(noise_err)?;
        Ok((m.function.clone(), spent))
    }
    Ok(if integer {
        let c: Vec<i64> = candidates.iter().map(|&v| v as i64).collect();
        let d = VectorDomain::new(AtomDomain::<i64>::default());
        let (f, spent) = if zcdp {
            build(d, ZeroConcentratedDivergence, c, q, scale, k)?
        } else {
            build(d, MaxDivergence, c, q, scale, k)?
        };
        (Noise::QuantileInt(f), spent)
    } else {
        let c = candidates.to_vec();
        let d = VectorDomain::new(AtomDomain::<f64>::new_non_nan());
        let (f, spent) = if zcdp {
            build(d, ZeroConcentratedDivergence, c, q, scale, k)?
        } else {
            build(d, MaxDivergence, c, q, scale, k)?
        };
        (Noise::QuantileFloat(f), spent)
    })
}

type SelectionNoise = Measurement<
    MapDomain<AtomDomain<String>, AtomDomain<i64>>,
    L01InfDistance<AbsoluteDistance<i64>>,
    Approximate<MaxDivergence>,
    HashMap<String, i64>,
>;

/// DP partition selection for group keys without a public domain: each
/// observed cell's row count gets discrete Laplace noise, and only cells
/// whose noisy count reaches `threshold` are released (opendp's
/// `make_laplace_threshold`, Rogers 2023). One unit changes at most `k`
/// cells by at most `k` rows each.
struct Selection {
    noise: SelectionNoise,
    scale: f64,
    threshold: i64,
    epsilon: f64,
    delta: f64,
}

/// Calibrates the selection to `share` epsilon and at most `delta`.
fn selection(k: u32, share: f64, delta: f64) -> Result<Selection, PolicyError> {
    let build = |scale: f64, threshold: i64| {
        make_laplace_threshold::<_, _, Approximate<MaxDivergence>>(
            MapDomain::new(
                AtomDomain::<String>::default(),
                AtomDomain::<i64>::new_non_nan(),
            ),
            L0PInfDistance(AbsoluteDistance::<i64>::default()),
            scale,
            threshold,
            None,
        )
        .map_err(noise_err)
    };
    let k_rows = i64::from(k);
    let d_in = (k, k_rows, k_rows);
    let mut scale = f64::from(k) / share;
    // The tail bound gives the starting threshold; the privacy map decides.
    let mut threshold = k_rows + (scale * (f64::from(k) / (2.0 * delta)).ln()).ceil() as i64;
    for _ in 0..10_000 {
        let noise = build(scale, threshold)?;
        let (epsilon, spent_delta) = noise.map(&d_in).map_err(noise_err)?;
        if epsilon > share * (1.0 + 1e-9) {
            scale *= 1.0 + 1e-6;
            continue;
        }
        if spent_delta <= delta {
            return Ok(Selection {
                noise,
                scale,
                threshold,
                epsilon,
                delta: spent_delta,
            });
        }
        threshold += (threshold / 100).max(1);
    }
    Err(PolicyError::Noise(format!(
        "could not calibrate partition selection to epsilon {share} and delta {delta}"
    )))
}

/// The cells partition selection releases: every observed combination of
/// key values (within the public domains of the keys that have one), kept
/// only if its noisy row count reaches the threshold.
async fn select_cells(
    state: &SessionState,
    query: &AggregateQuery,
    plan: &DpPlan,
    selection: &Selection,
) -> Result<Vec<Vec<String>>, PolicyError> {
    const SEPARATOR: char = '\u{1f}';
    let (df, group) = bounded_input(state, query, plan)?;
    let n_keys = query.keys.len();
    let mut counts: HashMap<String, i64> = HashMap::new();
    for batch in df
        .aggregate(group, vec![count(lit(1i64)).alias(ROWS)])?
        .collect()
        .await?
    {
        let keys = (0..n_keys)
            .map(|i| arrow::compute::cast(batch.column(i), &DataType::Utf8))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            if keys.iter().any(|k| k.is_null(row)) {
                continue;
            }
            let cell: Vec<&str> = keys
                .iter()
                .map(|k| k.as_string::<i32>().value(row))
                .collect();
            let outside = query.keys.iter().zip(&cell).any(|(key, value)| {
                key.domain
                    .as_ref()
                    .is_some_and(|d| !d.iter().any(|v| v == value))
            });
            if !outside {
                let rows = int_at(batch.column(n_keys), row)?;
                counts.insert(cell.join(&SEPARATOR.to_string()), rows);
            }
        }
    }
    let selected = selection.noise.invoke(&counts).map_err(noise_err)?;
    let mut cells: Vec<Vec<String>> = selected
        .into_keys()
        .map(|k| k.split(SEPARATOR).map(String::from).collect())
        .collect();
    cells.sort();
    if cells.len() > MAX_CELLS {
        return Err(PolicyError::Refused(crate::Refusal {
            column: None,
            rule: "too-many-cells",
            message: format!(
                "partition selection kept {} groups, more than {MAX_CELLS}; group by fewer or coarser keys",
                cells.len()
            ),
        }));
    }
    Ok(cells)
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

/// The column clamped to its bounds, nulls as the lower bound.
fn clamp(column: &Column, ty: ColumnType, (lo, hi): (f64, f64)) -> Expr {
    let c = Expr::Column(column.clone());
    let (lo, hi) = match ty {
        ColumnType::Int64 => (lit(lo as i64), lit(hi as i64)),
        _ => (lit(lo), lit(hi)),
    };
    // GREATEST skips nulls, so a null becomes the lower bound.
    least(vec![greatest(vec![c, lo]), hi])
}

/// Replaces every scan of `table` by the same scan keeping at most `k` rows
/// per privacy unit, so that one person changes any count by at most `k`
/// and any clamped sum by at most `k` times the larger bound. Filters above
/// the scan run after bounding; that only lowers a person's contribution.
fn bound_contributions(input: &LogicalPlan, bounds: &[Scan]) -> Result<LogicalPlan, PolicyError> {
    let bounded = input.clone().transform_up(|node| {
        let LogicalPlan::TableScan(scan) = &node else {
            return Ok(Transformed::no(node));
        };
        let Some(Scan {
            unit,
            max_contributions: k,
            ..
        }) = bounds.iter().find(|b| b.table == scan.table_name.table())
        else {
            return Ok(Transformed::no(node));
        };
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
                    .lt_eq(lit(i64::from(*k))),
            )?
            .project(columns)?
            .build()?;
        Ok(Transformed::yes(plan))
    })?;
    Ok(bounded.data)
}

/// The bounded input and the group keys.
fn bounded_input(
    state: &SessionState,
    query: &AggregateQuery,
    plan: &DpPlan,
) -> Result<(DataFrame, Vec<Expr>), PolicyError> {
    let input = if plan.bound.is_empty() {
        query.input.clone()
    } else {
        bound_contributions(&query.input, &plan.bound)?
    };
    // Rows whose keys are outside the public domain form groups that match
    // no cell and are dropped when the result is read; filtering them here
    // would cost a comparison per row.
    let df = DataFrame::new(state.clone(), input);
    let group: Vec<Expr> = query
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| Expr::Column(k.input.clone()).alias(format!("__key{i}")))
        .collect();
    Ok((df, group))
}

fn is_vector_sum(measure: &Measure) -> bool {
    matches!(
        measure,
        Measure::Count(_) | Measure::Sum { .. } | Measure::SquaredDeviations { .. }
    )
}

const ROWS: &str = "__rows";

/// The exact aggregation DataFusion runs for the count and sum components:
/// bounded input and one column per component, each sum clamped and summed
/// in one pass (see [`crate::clamped_sum`]).
fn exact_frame(
    state: &SessionState,
    query: &AggregateQuery,
    plan: &DpPlan,
) -> Result<DataFrame, PolicyError> {
    let (df, group) = bounded_input(state, query, plan)?;
    let aggs: Vec<Expr> = plan
        .components
        .iter()
        .enumerate()
        .filter(|(_, c)| is_vector_sum(&c.measure))
        .map(|(i, c)| {
            let agg = match &c.measure {
                Measure::Count(None) => count(lit(1i64)),
                Measure::Count(Some(col)) => count(Expr::Column(col.clone())),
                Measure::Sum {
                    column,
                    ty,
                    bounds,
                    clamp,
                } => ClampedSum::new(Output::Sum, *ty, *bounds, *clamp)?
                    .call(Expr::Column(column.clone())),
                Measure::SquaredDeviations { column, ty, bounds } => {
                    ClampedSum::new(Output::SquaredDeviations, *ty, *bounds, true)?
                        .call(Expr::Column(column.clone()))
                }
                Measure::Histogram { .. } | Measure::Quantile { .. } => {
                    unreachable!("filtered out")
                }
            };
            Ok(agg.alias(format!("__agg{i}")))
        })
        .collect::<Result<_, PolicyError>>()?;
    if aggs.is_empty() && group.is_empty() {
        // Only quantiles, over one cell: there is nothing to sum, and an
        // aggregate with neither keys nor aggregates is not a plan. The
        // bounded input is what the quantiles read.
        return Ok(df);
    }
    Ok(df.aggregate(group, aggs)?)
}

/// Per cell, the counts of one column's clamped values in equal bins.
fn histogram_frame(
    state: &SessionState,
    query: &AggregateQuery,
    plan: &DpPlan,
    (column, ty, bounds): (&Column, ColumnType, (f64, f64)),
) -> Result<DataFrame, PolicyError> {
    let (df, mut group) = bounded_input(state, query, plan)?;
    let width = (bounds.1 - bounds.0) / HISTOGRAM_BINS as f64;
    let bin = if width > 0.0 {
        let position =
            (cast(clamp(column, ty, bounds), DataType::Float64) - lit(bounds.0)) / lit(width);
        let bin = cast(floor(position), DataType::Int64);
        let last = lit((HISTOGRAM_BINS - 1) as i64);
        when(bin.clone().gt(last.clone()), last)
            .otherwise(bin)
            .expect("a CASE with a WHEN branch always builds")
    } else {
        lit(0i64)
    };
    group.push(bin.alias("__bin"));
    Ok(df.aggregate(group, vec![count(lit(1i64)).alias(ROWS)])?)
}

/// Per cell, each distinct clamped value of one column and how often it occurs.
fn values_frame(
    state: &SessionState,
    query: &AggregateQuery,
    plan: &DpPlan,
    (column, ty, bounds): (&Column, ColumnType, (f64, f64)),
) -> Result<DataFrame, PolicyError> {
    let (df, mut group) = bounded_input(state, query, plan)?;
    group.push(clamp(column, ty, bounds).alias("__value"));
    Ok(df.aggregate(group, vec![count(lit(1i64)).alias(ROWS)])?)
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
        text.push_str(&format!(
            "\n{:?} {} scale={:e}",
            c.measure,
            c.family.name(),
            c.scale
        ));
    }
    text.push_str(&format!("\naccounting={:?}", plan.accounting));
    text.push_str(&format!("\ncells={:?}", plan.cells));
    if let Some(s) = &plan.selection {
        text.push_str(&format!(
            "\nselection scale={:e} threshold={}",
            s.scale, s.threshold
        ));
    }
    Ok(text)
}

/// Exact per-cell values of one component.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Exact {
    Int(Vec<i64>),
    Float(Vec<f64>),
    /// Each cell's clamped values (quantiles).
    IntValues(Vec<Vec<i64>>),
    FloatValues(Vec<Vec<f64>>),
}

impl Exact {
    /// The values as numbers, each cell's list of clamped values sorted (an
    /// engine may read rows in any order).
    #[cfg(feature = "bench")]
    pub(crate) fn numbers(&self) -> Vec<Vec<f64>> {
        match self {
            Exact::Int(v) => vec![v.iter().map(|&x| x as f64).collect()],
            Exact::Float(v) => vec![v.clone()],
            Exact::IntValues(cells) => cells
                .iter()
                .map(|c| {
                    let mut c = c.clone();
                    c.sort_unstable();
                    c.into_iter().map(|x| x as f64).collect()
                })
                .collect(),
            Exact::FloatValues(cells) => cells
                .iter()
                .map(|c| {
                    let mut c = c.clone();
                    c.sort_by(f64::total_cmp);
                    c
                })
                .collect(),
        }
    }
}

/// The cell each row of `batch` belongs to (its first `n_keys` columns).
fn row_cells(
    batch: &arrow::array::RecordBatch,
    n_keys: usize,
    index: &HashMap<&Vec<String>, usize>,
) -> Result<Vec<Option<usize>>, PolicyError> {
    let keys = (0..n_keys)
        .map(|i| arrow::compute::cast(batch.column(i), &DataType::Utf8))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((0..batch.num_rows())
        .map(|row| {
            let cell: Vec<String> = keys
                .iter()
                .map(|k| k.as_string::<i32>().value(row).to_string())
                .collect();
            index.get(&cell).copied()
        })
        .collect())
}

fn int_at(column: &ArrayRef, row: usize) -> Result<i64, PolicyError> {
    if column.is_null(row) {
        return Ok(0);
    }
    Ok(match column.data_type() {
        DataType::Int64 => column.as_primitive::<Int64Type>().value(row),
        // Exact wide sum, saturated into i64 (1-Lipschitz, see module docs).
        DataType::Decimal128(_, 0) => {
            let v = column.as_primitive::<Decimal128Type>().value(row);
            v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
        }
        other => {
            return Err(PolicyError::Execution(format!(
                "an integer aggregate came back as {other}"
            )));
        }
    })
}

fn float_at(column: &ArrayRef, row: usize) -> Result<f64, PolicyError> {
    if column.is_null(row) {
        return Ok(0.0);
    }
    Ok(match column.data_type() {
        DataType::Float64 => column.as_primitive::<Float64Type>().value(row),
        _ => {
            let c = arrow::compute::cast(column, &DataType::Float64)?;
            c.as_primitive::<Float64Type>().value(row)
        }
    })
}

/// Whether a component's noise works on integers.
fn is_int(c: &Component) -> bool {
    matches!(c.noise, Noise::Int(_) | Noise::QuantileInt(_))
}

/// Exact per-cell values of the count and sum components, computed by
/// DataFusion in one aggregation.
async fn exact_sums(
    state: &SessionState,
    query: &AggregateQuery,
    plan: &DpPlan,
    index: &HashMap<&Vec<String>, usize>,
    values: &mut [Option<Exact>],
) -> Result<(), PolicyError> {
    let n_keys = query.keys.len();
    let n_cells = index.len();
    let sums: Vec<usize> = (0..plan.components.len())
        .filter(|&i| is_vector_sum(&plan.components[i].measure))
        .collect();
    if sums.is_empty() {
        return Ok(());
    }
    let batches = exact_frame(state, query, plan)?.collect().await?;
    let mut ints = vec![vec![0i64; n_cells]; sums.len()];
    let mut floats = vec![vec![0f64; n_cells]; sums.len()];
    for batch in &batches {
        let cells = row_cells(batch, n_keys, index)?;
        for (row, cell) in cells.into_iter().enumerate() {
            let Some(at) = cell else { continue };
            for (j, &ci) in sums.iter().enumerate() {
                let column = batch.column(n_keys + j);
                if is_int(&plan.components[ci]) {
                    ints[j][at] = int_at(column, row)?;
                } else {
                    floats[j][at] = float_at(column, row)?;
                }
            }
        }
    }
    for (j, &ci) in sums.iter().enumerate() {
        values[ci] = Some(if is_int(&plan.components[ci]) {
            Exact::Int(std::mem::take(&mut ints[j]))
        } else {
            Exact::Float(std::mem::take(&mut floats[j]))
        });
    }
    Ok(())
}

/// Exact per-cell values of every component, computed by DataFusion.
pub(crate) async fn exact_values(
    state: &SessionState,
    query: &AggregateQuery,
    plan: &DpPlan,
    cells: &[Vec<String>],
) -> Result<Vec<Exact>, PolicyError> {
    let index: HashMap<&Vec<String>, usize> =
        cells.iter().enumerate().map(|(i, c)| (c, i)).collect();
    let n_keys = query.keys.len();
    let n_cells = cells.len();
    let mut values: Vec<Option<Exact>> = vec![None; plan.components.len()];
    exact_sums(state, query, plan, &index, &mut values).await?;
    for (ci, component) in plan.components.iter().enumerate() {
        match &component.measure {
            Measure::Histogram { column, ty, bounds } => {
                let frame = histogram_frame(state, query, plan, (column, *ty, *bounds))?;
                let mut counts = vec![0i64; n_cells * HISTOGRAM_BINS];
                for batch in frame.collect().await? {
                    let cells = row_cells(&batch, n_keys, &index)?;
                    for (row, cell) in cells.into_iter().enumerate() {
                        let Some(at) = cell else { continue };
                        let bin = int_at(batch.column(n_keys), row)?
                            .clamp(0, HISTOGRAM_BINS as i64 - 1)
                            as usize;
                        counts[at * HISTOGRAM_BINS + bin] += int_at(batch.column(n_keys + 1), row)?;
                    }
                }
                values[ci] = Some(Exact::Int(counts));
            }
            Measure::Quantile {
                column, ty, bounds, ..
            } => {
                let frame = values_frame(state, query, plan, (column, *ty, *bounds))?;
                let batches = frame.collect().await?;
                let integer = is_int(component);
                let mut ints = vec![Vec::new(); if integer { n_cells } else { 0 }];
                let mut floats = vec![Vec::new(); if integer { 0 } else { n_cells }];
                for batch in batches {
                    let cells = row_cells(&batch, n_keys, &index)?;
                    let value = batch.column(n_keys);
                    let times = batch.column(n_keys + 1);
                    for (row, cell) in cells.into_iter().enumerate() {
                        let Some(at) = cell else { continue };
                        let n = int_at(times, row)?.max(0) as usize;
                        if integer {
                            ints[at].extend(std::iter::repeat_n(int_at(value, row)?, n));
                        } else {
                            floats[at].extend(std::iter::repeat_n(float_at(value, row)?, n));
                        }
                    }
                }
                values[ci] = Some(if integer {
                    Exact::IntValues(ints)
                } else {
                    Exact::FloatValues(floats)
                });
            }
            _ => {}
        }
    }
    Ok(values
        .into_iter()
        .map(|v| v.expect("every component was computed"))
        .collect())
}

/// Adds each component's noise to its exact values.
fn add_noise(plan: &DpPlan, exact: Vec<Exact>) -> Result<Vec<Vec<f64>>, PolicyError> {
    plan.components
        .iter()
        .zip(exact)
        .map(|(component, values)| {
            Ok(match (&component.noise, values) {
                (Noise::Int(f), Exact::Int(v)) => f
                    .eval(&v)
                    .map_err(noise_err)?
                    .into_iter()
                    .map(|v| v as f64)
                    .collect(),
                (Noise::Float(f), Exact::Float(v)) => f.eval(&v).map_err(noise_err)?,
                (Noise::QuantileInt(f), Exact::IntValues(cells)) => cells
                    .iter()
                    .map(|v| f.eval(v).map(|x| x as f64).map_err(noise_err))
                    .collect::<Result<_, _>>()?,
                (Noise::QuantileFloat(f), Exact::FloatValues(cells)) => cells
                    .iter()
                    .map(|v| f.eval(v).map_err(noise_err))
                    .collect::<Result<_, _>>()?,
                _ => unreachable!("exact values match their component's noise"),
            })
        })
        .collect()
}

/// Reads the data, adds noise and builds the released table, for a plan
/// whose cost was charged ([`DpPlan::charge`]).
pub async fn release_aggregate(
    state: &SessionState,
    query: &AggregateQuery,
    charged: &Charged<DpPlan>,
) -> Result<Release, PolicyError> {
    let plan = charged.plan();
    crate::query::require_total(state)?;
    let computed = async {
        let cells = match &plan.selection {
            Some(selection) => select_cells(state, query, plan, selection).await?,
            None => plan.cells.clone(),
        };
        let exact = exact_values(state, query, plan, &cells).await?;
        Ok::<_, PolicyError>((cells, exact))
    };
    // Whether the engine failed may depend on the data, so it must not be
    // visible: the release is then noise over values fixed in advance. So
    // may whether it ran out of memory, rows or time (`limits`).
    let limits = crate::limits::ExecutionLimits::of(state);
    let (cells, exact, defaulted) = match crate::limits::within_time(&limits, computed).await {
        Ok((cells, exact)) => (cells, exact, false),
        Err(
            PolicyError::Execution(_) | PolicyError::TooLarge(_) | PolicyError::TimedOut { .. },
        ) => {
            let cells = match plan.selection {
                Some(_) => Vec::new(),
                None => plan.cells.clone(),
            };
            let exact = default_exact(plan, cells.len());
            (cells, exact, true)
        }
        Err(e) => return Err(e),
    };
    let measured = Measured {
        cells,
        noisy: add_noise(plan, exact)?,
    };
    let result = render(query, plan, &measured)?;
    let zcdp = matches!(plan.accounting, Accounting::Zcdp { .. });
    let noise = plan
        .components
        .iter()
        .map(|c| NoiseNote {
            component: component_name(&c.measure),
            mechanism: c.family.name(),
            scale: c.scale,
            epsilon: if zcdp { 0.0 } else { c.spent },
            rho: if zcdp { c.spent } else { 0.0 },
        })
        .collect();
    Ok(Release {
        result,
        measured,
        noise,
        defaulted,
    })
}

/// A released measurement: the cells and the noisy value of every plan
/// component in each, before they are named and ordered for a query.
/// Everything in it already left the data through the noise.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Measured {
    /// Group-key values of each cell, in the plan's cell order.
    cells: Vec<Vec<String>>,
    /// Noisy values, per plan component.
    noisy: Vec<Vec<f64>>,
}

/// The table `query` asks for, from a measurement of its plan: its own
/// output names, column order and ORDER BY. Two queries with one
/// fingerprint share a measurement (and so a charge) but each is answered
/// in its own terms.
pub fn render(
    query: &AggregateQuery,
    plan: &DpPlan,
    measured: &Measured,
) -> Result<QueryResult, PolicyError> {
    if measured.noisy.len() != plan.components.len() {
        return Err(PolicyError::Noise(format!(
            "a stored measurement has {} components where the plan has {}; it belongs to another plan",
            measured.noisy.len(),
            plan.components.len()
        )));
    }
    let alpha = 1.0 - CONFIDENCE;
    let cells = &measured.cells;
    let mut table = Table::default();
    for (name, source) in &query.outputs {
        let values = match *source {
            OutputSource::Key(i) => ColumnValues::Text(
                cells
                    .iter()
                    .map(|c| c.get(i).cloned().unwrap_or_default())
                    .collect(),
            ),
            OutputSource::Aggregate(j) => {
                ColumnValues::Estimate(estimates(plan, plan.wiring[j], &measured.noisy, alpha)?)
            }
        };
        table = table.with(name.clone(), values);
    }
    sort_table(&mut table, &query.order);
    Ok(QueryResult {
        confidence: CONFIDENCE,
        epsilon_spent: plan.cost.epsilon,
        cached: false,
        table,
    })
}

/// Exact values fixed before any data is read: every count and sum zero,
/// every quantile cell empty.
fn default_exact(plan: &DpPlan, n_cells: usize) -> Vec<Exact> {
    plan.components
        .iter()
        .map(|c| {
            let len = match c.measure {
                Measure::Histogram { .. } => n_cells * HISTOGRAM_BINS,
                _ => n_cells,
            };
            match c.noise {
                Noise::Int(_) => Exact::Int(vec![0; len]),
                Noise::Float(_) => Exact::Float(vec![0.0; len]),
                Noise::QuantileInt(_) => Exact::IntValues(vec![Vec::new(); n_cells]),
                Noise::QuantileFloat(_) => Exact::FloatValues(vec![Vec::new(); n_cells]),
            }
        })
        .collect()
}

/// The released estimates of one aggregate, each with its interval at
/// `1 - alpha` (a union bound over the components it is made of).
fn estimates(
    plan: &DpPlan,
    wire: Wire,
    noisy: &[Vec<f64>],
    alpha: f64,
) -> Result<Vec<Estimate>, PolicyError> {
    let c = &plan.components;
    Ok(match wire {
        Wire::Plain(ci) => {
            let acc = c[ci].accuracy(alpha)?;
            // A count, or a sum of values bounded below by 0, is never
            // negative: raising the estimate and its interval to 0 is
            // post-processing (no privacy cost), and the interval still
            // covers the true value whenever the raw one did.
            let floor = c[ci].measure.least_value();
            noisy[ci]
                .iter()
                .map(|&v| Estimate {
                    value: v.max(floor),
                    lower: (v - acc).max(floor),
                    upper: (v + acc).max(floor),
                })
                .collect()
        }
        Wire::Mean { sum, count } => {
            let bounds = bounds_of(&c[sum].measure);
            // Each of the two intervals at alpha/2: the ratio interval holds at 1 - alpha.
            let (sum_acc, count_acc) = (
                c[sum].accuracy(alpha / 2.0)?,
                c[count].accuracy(alpha / 2.0)?,
            );
            noisy[sum]
                .iter()
                .zip(&noisy[count])
                .map(|(&s, &n)| mean_estimate(s, n, sum_acc, count_acc, bounds))
                .collect()
        }
        Wire::Variance {
            count,
            sum,
            squares,
            sample,
            root,
        } => {
            let bounds = bounds_of(&c[sum].measure);
            let acc = Accuracies {
                count: c[count].accuracy(alpha / 3.0)?,
                sum: c[sum].accuracy(alpha / 3.0)?,
                squares: c[squares].accuracy(alpha / 3.0)?,
            };
            (0..noisy[count].len())
                .map(|i| {
                    let v = variance_estimate(
                        noisy[count][i],
                        noisy[sum][i],
                        noisy[squares][i],
                        &acc,
                        bounds,
                        sample,
                    );
                    if root {
                        Estimate {
                            value: v.value.sqrt(),
                            lower: v.lower.sqrt(),
                            upper: v.upper.sqrt(),
                        }
                    } else {
                        v
                    }
                })
                .collect()
        }
        Wire::Quantile {
            quantile,
            histogram,
        } => {
            let Measure::Quantile { bounds, q, .. } = c[quantile].measure else {
                unreachable!("quantiles are wired to a quantile component")
            };
            // Every bin's noise within `a` at once (union bound over the bins).
            let a = c[histogram].accuracy(alpha / HISTOGRAM_BINS as f64)?;
            noisy[quantile]
                .iter()
                .zip(noisy[histogram].chunks(HISTOGRAM_BINS))
                .map(|(&value, bins)| quantile_estimate(value, bins, a, q, bounds))
                .collect()
        }
    })
}

fn bounds_of(measure: &Measure) -> (f64, f64) {
    match measure {
        Measure::Sum { bounds, .. }
        | Measure::SquaredDeviations { bounds, .. }
        | Measure::Histogram { bounds, .. }
        | Measure::Quantile { bounds, .. } => *bounds,
        Measure::Count(_) => unreachable!("counts have no bounds"),
    }
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

/// Half-widths of the three components of a variance, each at `alpha / 3`.
struct Accuracies {
    count: f64,
    sum: f64,
    squares: f64,
}

/// Variance from a noisy count `n`, sum `s` and sum of squared deviations
/// from the midpoint `m2` (post-processing). With `c` the midpoint,
/// `var_pop = m2 / n - (s / n - c)^2`; its interval combines the intervals
/// of `m2 / n` and of the centred mean by interval arithmetic, clamped to
/// the largest variance possible within the bounds, `((hi - lo) / 2)^2`.
/// The sample variance multiplies by `n / (n - 1)`.
fn variance_estimate(
    n: f64,
    s: f64,
    m2: f64,
    acc: &Accuracies,
    (lo, hi): (f64, f64),
    sample: bool,
) -> Estimate {
    let mid = (lo + hi) / 2.0;
    let max_pop = ((hi - lo) / 2.0).powi(2);
    let correction = |n: f64| if n >= 2.0 { n / (n - 1.0) } else { 2.0 };
    let cap = if sample { 2.0 * max_pop } else { max_pop };
    let mean = mean_estimate(s, n, acc.sum, acc.count, (lo, hi));
    let centred = mean.value - mid;
    let mut value = (m2.max(0.0) / n.max(1.0) - centred * centred).clamp(0.0, max_pop);
    if sample {
        value = (value * correction(n.max(1.0))).min(cap);
    }
    let n_lo = n - acc.count;
    if n_lo < 1.0 {
        return Estimate {
            value,
            lower: 0.0,
            upper: cap,
        };
    }
    let n_hi = n + acc.count;
    let (second_lo, second_hi) = (
        (m2 - acc.squares).max(0.0) / n_hi,
        ((m2 + acc.squares) / n_lo).min(max_pop),
    );
    let (d_lo, d_hi) = (mean.lower - mid, mean.upper - mid);
    let (sq_lo, sq_hi) = if d_lo <= 0.0 && d_hi >= 0.0 {
        (0.0, d_lo.powi(2).max(d_hi.powi(2)))
    } else {
        (
            d_lo.powi(2).min(d_hi.powi(2)),
            d_lo.powi(2).max(d_hi.powi(2)),
        )
    };
    let mut lower = (second_lo - sq_hi).clamp(0.0, max_pop);
    let mut upper = (second_hi - sq_lo).clamp(0.0, max_pop);
    if sample {
        upper = (upper * correction(n_lo)).min(cap);
        lower *= correction(n_hi);
    }
    Estimate {
        value,
        lower: lower.min(value),
        upper: upper.max(value),
    }
}

/// A quantile's estimate: the private quantile's candidate, with an interval
/// from the noisy histogram of the same cell. With `F(j)` the rows in bins
/// `0..=j` and `N` all rows, the true quantile lies in the first bin `j`
/// with `G(j) = F(j) - q * N >= 0`. When every bin's noise is within `a`,
/// the noisy `G` is within `E = (1 + q) * bins * a` of the true one, so the
/// true quantile's bin lies between the first bin with noisy `G >= -E` and
/// the first with noisy `G >= E`; the interval spans those bins' edges. It
/// is widened to contain the released candidate, which only adds coverage.
fn quantile_estimate(value: f64, bins: &[f64], a: f64, q: f64, (lo, hi): (f64, f64)) -> Estimate {
    let total: f64 = bins.iter().sum();
    let slack = (1.0 + q) * bins.len() as f64 * a;
    let width = (hi - lo) / bins.len() as f64;
    let mut cumulative = 0.0;
    let (mut first_lo, mut first_hi) = (None, None);
    for (j, h) in bins.iter().enumerate() {
        cumulative += h;
        let g = cumulative - q * total;
        if first_lo.is_none() && g >= -slack {
            first_lo = Some(j);
        }
        if first_hi.is_none() && g >= slack {
            first_hi = Some(j);
        }
    }
    let j_lo = first_lo.unwrap_or(0);
    let j_hi = first_hi.unwrap_or(bins.len() - 1);
    let lower = lo + width * j_lo as f64;
    let upper = if j_hi + 1 >= bins.len() {
        hi
    } else {
        lo + width * (j_hi + 1) as f64
    };
    Estimate {
        value,
        lower: lower.min(value),
        upper: upper.max(value),
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

/// The integer count mechanism exactly as releases build it, exposed so the
/// audit tests can sample it on neighbouring datasets.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct AuditMechanism {
    /// The epsilon the honest mechanism's privacy map claims.
    pub claimed_epsilon: f64,
    /// The noise scale actually used.
    pub scale: f64,
}

impl AuditMechanism {
    /// One noisy release of `counts`, from opendp's discrete Laplace at `self.scale`.
    pub fn release(&self, counts: &[i64]) -> Result<Vec<i64>, PolicyError> {
        let (noise, _) = int_noise(1, self.scale, false)?;
        noise.eval(&counts.to_vec()).map_err(noise_err)
    }

    /// `draws` noisy releases of the one-cell count `count`.
    pub fn sample(&self, count: i64, draws: usize) -> Result<Vec<i64>, PolicyError> {
        let (noise, _) = int_noise(1, self.scale, false)?;
        noise.eval(&vec![count; draws]).map_err(noise_err)
    }
}

/// The COUNT(*) mechanism of a one-row-per-person dataset at `epsilon`, as
/// [`plan_release`] builds it; with `scale_divisor > 1` a deliberately broken
/// one that uses less noise while claiming the same epsilon, so that an
/// audit can show it catches such a bug.
#[doc(hidden)]
pub fn count_mechanism_for_audit(
    epsilon: f64,
    scale_divisor: f64,
) -> Result<AuditMechanism, PolicyError> {
    let honest = int_component(
        Measure::Count(None),
        1.0,
        positive("epsilon", epsilon)?,
        false,
    )?;
    Ok(AuditMechanism {
        claimed_epsilon: honest.spent,
        scale: honest.scale / scale_divisor,
    })
}
