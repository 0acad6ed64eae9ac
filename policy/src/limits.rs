//! Execution limits: what one query may cost the service, whatever it asks.
//!
//! A session carries its [`ExecutionLimits`] as a configuration extension, so
//! every release run in it honours them without the caller repeating them:
//!
//! - **time**: [`release_open`](crate::release_open) and
//!   [`release_aggregate`](crate::release_aggregate) stop reading after
//!   [`ExecutionLimits::time`] by dropping the DataFusion stream (which
//!   cancels every task it spawned), and [`LimitRule`] checks the time on
//!   every batch of every scan and join, for work that does not yield;
//! - **join output**: [`LimitRule`], a physical optimizer rule, wraps every
//!   operator that combines two inputs (joins, cross joins; not unions,
//!   which only add their inputs) so it fails as soon as it has produced
//!   more than [`ExecutionLimits::join_rows`] rows, before a many-to-many
//!   join can fill the memory or the CPU;
//! - **memory**: the session's memory pool (built by the caller, which owns
//!   the runtime and its spill directory); [`ExecutionLimits::memory`] only
//!   names the limit in the error.
//!
//! Whether a limit is hit can depend on the data. For an open-column query
//! that is harmless (the data is open) and the error says which limit was
//! hit; for a DP release it must not be visible, so `release_aggregate`
//! treats it like any other engine failure: noise over fixed defaults.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::execution::context::SessionState;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream,
};
use datafusion::prelude::SessionConfig;
use futures::StreamExt;

use crate::query::PolicyError;

/// Says whether the query was stopped from outside (its client left, the
/// service is stopping); checked on every batch, like the time limit.
#[derive(Clone)]
pub struct StopCheck(Arc<dyn Fn() -> bool + Send + Sync>);

impl StopCheck {
    pub fn new(stopped: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        StopCheck(Arc::new(stopped))
    }

    fn stopped(&self) -> bool {
        (self.0)()
    }
}

impl std::fmt::Debug for StopCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StopCheck")
    }
}

/// What one query may use. `None` is no limit.
#[derive(Debug, Clone, Default)]
pub struct ExecutionLimits {
    /// Wall-clock time a query's execution may take.
    pub time: Option<Duration>,
    /// Rows one join (or other two-input operator) may produce.
    pub join_rows: Option<u64>,
    /// Bytes of memory the session's pool holds (for messages only: the
    /// pool itself belongs to the session's runtime).
    pub memory: Option<usize>,
    /// Stops the query between two batches once it says so. A timer alone
    /// cannot: it fires only when the work yields to it.
    pub stop: Option<StopCheck>,
}

impl ExecutionLimits {
    /// The limits a session carries (none if it carries none).
    pub fn of(state: &SessionState) -> ExecutionLimits {
        state
            .config()
            .get_extension::<ExecutionLimits>()
            .map(|l| ExecutionLimits::clone(&l))
            .unwrap_or_default()
    }
}

/// The error a limit hit becomes, for the caller to show or hide.
pub(crate) fn too_large(e: &DataFusionError, limits: &ExecutionLimits) -> Option<PolicyError> {
    let message = match e.find_root() {
        DataFusionError::ResourcesExhausted(message) => message.as_str(),
        // A cluster's executor hit the cap: the scheduler reports the task's
        // error inside its own text.
        root if root.to_string().contains(JOIN_CAP_MARK) => JOIN_CAP_MARK,
        _ => return None,
    };
    Some(PolicyError::TooLarge(
        if message.starts_with(JOIN_CAP_MARK) {
            match limits.join_rows {
                Some(cap) => format!(
                    "a join produced more than {cap} rows (the per-query limit); join on a more selective key, filter each side first, or aggregate each side before joining"
                ),
                None => "a join produced too many rows".to_string(),
            }
        } else {
            match limits.memory {
                Some(bytes) => format!(
                    "it needs more than the {} MiB of memory a query may use, after spilling what can spill; filter or aggregate earlier, or ask the operator for a larger `serve --query-memory`",
                    bytes >> 20
                ),
                None => {
                    "it needs more memory than the service can give it; filter or aggregate earlier"
                        .to_string()
                }
            }
        },
    ))
}

/// Runs `work` under the session's time limit; `TimedOut` when it passes
/// (dropping `work` cancels the DataFusion streams it was reading).
pub(crate) async fn within_time<T>(
    limits: &ExecutionLimits,
    work: impl std::future::Future<Output = Result<T, PolicyError>>,
) -> Result<T, PolicyError> {
    match limits.time {
        None => work.await,
        Some(limit) => match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => Err(PolicyError::TimedOut {
                seconds: limit.as_secs_f64(),
            }),
        },
    }
}

/// How the limits announce themselves inside DataFusion's errors, so
/// [`too_large`] and [`timed_out`] can name them.
const JOIN_CAP_MARK: &str = "unseen join row cap: ";
const DEADLINE_MARK: &str = "unseen time limit: ";
const STOP_MARK: &str = "unseen stopped: ";

/// Whether `e` is the time limit of [`LimitExec`].
pub(crate) fn timed_out(e: &DataFusionError, limits: &ExecutionLimits) -> Option<PolicyError> {
    match e.find_root() {
        DataFusionError::Execution(m) if m.starts_with(DEADLINE_MARK) => {
            Some(PolicyError::TimedOut {
                seconds: limits.time.map_or(0.0, |t| t.as_secs_f64()),
            })
        }
        _ => None,
    }
}

/// Enforces [`ExecutionLimits`] inside a physical plan, as the last of a
/// session's physical optimizer rules (so none of DataFusion's own rules
/// sees, or has to understand, the wrappers it adds): every operator that
/// combines two inputs gets the join row cap, and every such operator and
/// every leaf (scan) the time limit, counted from when the plan was made.
/// The time limit is also enforced around the whole release
/// ([`within_time`]), but a timer only fires when the work yields, and a
/// join can build thousands of output batches from one input batch without
/// yielding; a check on every batch leaves no such gap.
#[derive(Debug, Clone)]
pub struct LimitRule {
    pub join_rows: Option<u64>,
    pub time: Option<Duration>,
    pub stop: Option<StopCheck>,
}

impl PhysicalOptimizerRule for LimitRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let deadline = self.time.map(|t| Instant::now() + t);
        plan.transform_up(|node| {
            let joins = multiplies_rows(node.as_ref());
            let checked = joins || node.children().is_empty();
            let cap = self.join_rows.filter(|_| joins);
            let deadline = deadline.filter(|_| checked);
            let stop = self.stop.clone().filter(|_| checked);
            if cap.is_none() && deadline.is_none() && stop.is_none() {
                return Ok(Transformed::no(node));
            }
            let limited: Arc<dyn ExecutionPlan> =
                Arc::new(LimitExec::new(node, cap, deadline, stop));
            Ok(Transformed::yes(limited))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "unseen_execution_limits"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A session state over `config` and `runtime` that carries `limits`: the
/// default DataFusion features, the limits as a configuration extension
/// (for the releases' time limit and messages) and [`LimitRule`].
pub fn session_state(
    config: SessionConfig,
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    limits: ExecutionLimits,
) -> SessionState {
    let rule = LimitRule {
        join_rows: limits.join_rows,
        time: limits.time,
        stop: limits.stop.clone(),
    };
    let mut builder = query_functions(
        datafusion::execution::SessionStateBuilder::new()
            .with_config(config.with_extension(Arc::new(limits)))
            .with_runtime_env(runtime)
            .with_default_features(),
    );
    if rule.join_rows.is_some() || rule.time.is_some() || rule.stop.is_some() {
        builder = builder.with_physical_optimizer_rule(Arc::new(rule));
    }
    builder.build()
}

/// Narrows DataFusion's defaults to the functions and syntax queries may
/// use, the same whichever DataFusion features the build turned on: every
/// scalar function of `datafusion-functions` (strings, dates, maths, regular
/// expressions, hashes, encodings), and no nested types. Array functions and
/// lambdas are left out even when another crate of the build enables
/// DataFusion's `nested_expressions`: the work of `array_repeat` grows with a
/// value, and admission's lineage rules do not look inside a lambda.
pub fn query_functions(
    mut builder: datafusion::execution::SessionStateBuilder,
) -> datafusion::execution::SessionStateBuilder {
    use datafusion::functions::core::planner::CoreFunctionPlanner;
    use datafusion::functions::datetime::planner::DatetimeFunctionPlanner;
    use datafusion::functions::unicode::planner::UnicodeFunctionPlanner;
    use datafusion::functions_aggregate::planner::AggregateFunctionPlanner;
    use datafusion::functions_window::planner::WindowFunctionPlanner;

    *builder.scalar_functions() = Some(datafusion::functions::all_default_functions());
    *builder.higher_order_functions() = Some(Vec::new());
    *builder.expr_planners() = Some(vec![
        Arc::new(CoreFunctionPlanner::default()),
        Arc::new(DatetimeFunctionPlanner),
        Arc::new(UnicodeFunctionPlanner),
        Arc::new(AggregateFunctionPlanner),
        Arc::new(WindowFunctionPlanner),
    ]);
    builder
}

/// `plan` with every operator that combines two inputs capped at `cap`
/// rows, as [`LimitRule`] caps them, for a plan made elsewhere (a cluster's
/// executor caps the stage plans it receives). A [`LimitExec`]'s subtree
/// was capped when it was made and is left as it is.
pub fn cap_joins(plan: Arc<dyn ExecutionPlan>, cap: u64) -> DfResult<Arc<dyn ExecutionPlan>> {
    if plan.name() == LimitExec::NAME {
        return Ok(plan);
    }
    let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    let plan = if children.is_empty() {
        plan
    } else {
        let capped = children
            .iter()
            .map(|child| cap_joins(Arc::clone(child), cap))
            .collect::<DfResult<Vec<_>>>()?;
        if capped.iter().zip(&children).all(|(a, b)| Arc::ptr_eq(a, b)) {
            plan
        } else {
            plan.replace_children(
                capped,
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
            )?
        }
    };
    if multiplies_rows(plan.as_ref()) {
        return Ok(Arc::new(LimitExec::new(plan, Some(cap), None, None)));
    }
    Ok(plan)
}

/// Operators whose output can be larger than their inputs together: every
/// one with two inputs but a union (a union only appends them).
fn multiplies_rows(plan: &dyn ExecutionPlan) -> bool {
    let name = plan.name();
    plan.children().len() >= 2
        && !name.contains("Union")
        && !name.contains("Interleave")
        && name != LimitExec::NAME
}

/// A pass-through that fails once its input has produced more than `cap`
/// rows (over all its partitions together), or on the first batch after
/// `deadline`.
#[derive(Debug)]
pub struct LimitExec {
    input: Arc<dyn ExecutionPlan>,
    cap: Option<u64>,
    deadline: Option<Instant>,
    stop: Option<StopCheck>,
    produced: Arc<AtomicU64>,
}

impl LimitExec {
    const NAME: &'static str = "LimitExec";

    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        cap: Option<u64>,
        deadline: Option<Instant>,
        stop: Option<StopCheck>,
    ) -> Self {
        LimitExec {
            input,
            cap,
            deadline,
            stop,
            produced: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl DisplayAs for LimitExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LimitExec: rows={:?}, deadline={}, stoppable={}",
            self.cap,
            self.deadline.is_some(),
            self.stop.is_some()
        )
    }
}

impl ExecutionPlan for LimitExec {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(format!(
                "{} takes one input, not {}",
                Self::NAME,
                children.len()
            )));
        }
        Ok(Arc::new(LimitExec::new(
            children.swap_remove(0),
            self.cap,
            self.deadline,
            self.stop.clone(),
        )))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let (cap, deadline, produced) = (self.cap, self.deadline, Arc::clone(&self.produced));
        let stop = self.stop.clone();
        let limited = input.map(move |batch| {
            let batch = batch?;
            if stop.as_ref().is_some_and(StopCheck::stopped) {
                return Err(DataFusionError::Execution(format!(
                    "{STOP_MARK}the query was stopped"
                )));
            }
            if let Some(cap) = cap {
                let rows = batch.num_rows() as u64;
                if produced.fetch_add(rows, Ordering::Relaxed) + rows > cap {
                    return Err(DataFusionError::ResourcesExhausted(format!(
                        "{JOIN_CAP_MARK}more than {cap} rows"
                    )));
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(DataFusionError::Execution(format!(
                    "{DEADLINE_MARK}the query ran past its time limit"
                )));
            }
            Ok(batch)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, limited)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_cap_hit_on_a_cluster_is_named_like_one_hit_here() {
        let limits = ExecutionLimits {
            join_rows: Some(10),
            ..Default::default()
        };
        let remote = DataFusionError::Execution(format!(
            "Job 42 failed: Task failed: ResourcesExhausted(\"{JOIN_CAP_MARK}11 rows\")"
        ));
        let Some(PolicyError::TooLarge(message)) = too_large(&remote, &limits) else {
            panic!("not named as the join cap");
        };
        assert!(message.contains("more than 10 rows"), "{message}");
        let other = DataFusionError::Execution("Job 42 failed: a task failed".into());
        assert!(too_large(&other, &limits).is_none());
    }
}
