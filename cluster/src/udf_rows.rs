//! Rows wasm UDFs ran on in the executors, counted back into the service's
//! records.
//!
//! The service records, for every query, how many rows its wasm scalar
//! UDFs ran on and how many failed (made null): the ledger's `udf_rows`
//! and `udf_rows_failed`, never shown to whoever wrote the query. On a
//! cluster the functions run in the executors, so each stage plan an
//! executor decodes has its inputs wrapped in a [`UdfRowsExec`], which
//! adds the rows its task's UDF handles ran on to the task's metrics
//! (`unseen_udf_rows:<module sha256>`, `unseen_udf_rows_failed:<...>`);
//! the scheduler folds them into the job's metrics, and when the job ends
//! the service reads them ([`job_rows`]) and credits its own modules
//! (`UdfModule::credit_rows`) before the query's answer ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ballista_core::serde::protobuf::GetJobMetricsParams;
use ballista_core::serde::protobuf::operator_metric::Metric;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;
use unseen_sandbox::udf::{UdfModule, WasmScalarUdf};

use crate::ClusterError;
use crate::cancel::SchedulerLink;

/// The metric of the rows a module's functions ran on, by its hash.
const ROWS: &str = "unseen_udf_rows:";
/// The metric of the rows among them that failed.
const FAILED: &str = "unseen_udf_rows_failed:";

/// Rows a module's scalar functions ran on, and failed on.
pub type RowCounts = (u64, u64);

/// Adds `handle` to `found` unless it is there already.
fn add_handle(found: &mut Vec<UdfModule>, handle: &UdfModule) {
    if !found.iter().any(|h| h.same_query(handle)) {
        found.push(handle.clone());
    }
}

/// The query handles of the wasm scalar UDFs `node`'s own expressions
/// call (not its inputs').
fn own_handles(node: &dyn ExecutionPlan) -> DfResult<Vec<UdfModule>> {
    let mut found = Vec::new();
    node.apply_expressions(&mut |expr: &Arc<dyn PhysicalExpr>| {
        expr.apply(|e| {
            if let Some(call) = e.downcast_ref::<ScalarFunctionExpr>()
                && let Some(udf) = call.fun().inner().downcast_ref::<WasmScalarUdf>()
            {
                add_handle(&mut found, udf.module());
            }
            Ok(TreeNodeRecursion::Continue)
        })
    })?;
    Ok(found)
}

/// The modules of the wasm scalar UDFs `plan` calls (one handle each).
pub(crate) fn logical_modules(plan: &LogicalPlan) -> DfResult<Vec<UdfModule>> {
    let mut found: Vec<UdfModule> = Vec::new();
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(call) = e
                    && let Some(udf) = call.func.inner().downcast_ref::<WasmScalarUdf>()
                    && !found.iter().any(|m| m.sha256() == udf.module().sha256())
                {
                    found.push(udf.module().clone());
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    Ok(found)
}

/// `inputs`, with every node that calls wasm scalar UDFs itself counting
/// the rows they run on (once, however often a plan is decoded).
///
/// The count rides on the node as a [`UdfRowsExec`] that stands in for it:
/// the same name, inputs and expressions, and its metrics plus the
/// counts. An extra node would not do: the scheduler pairs a task's
/// metrics with its own copy of the stage plan, operator by operator.
pub(crate) fn counted(inputs: &[Arc<dyn ExecutionPlan>]) -> DfResult<Vec<Arc<dyn ExecutionPlan>>> {
    inputs
        .iter()
        .map(|input| {
            Arc::clone(input)
                .transform_up(|node| {
                    if node.downcast_ref::<UdfRowsExec>().is_some() {
                        return Ok(Transformed::no(node));
                    }
                    let handles = own_handles(node.as_ref())?;
                    if handles.is_empty() {
                        return Ok(Transformed::no(node));
                    }
                    Ok(Transformed::yes(
                        Arc::new(UdfRowsExec::new(node, handles)) as Arc<dyn ExecutionPlan>
                    ))
                })
                .map(|t| t.data)
        })
        .collect()
}

/// A node that calls wasm UDFs, standing in for it (see [`counted`]):
/// when its stream for a partition ends or is dropped, the rows its UDF
/// handles ran on since last counted go into its metrics.
#[derive(Debug)]
pub struct UdfRowsExec {
    node: Arc<dyn ExecutionPlan>,
    handles: Arc<Vec<UdfModule>>,
    /// Per handle, what its metrics hold already.
    counted: Arc<Vec<[AtomicU64; 2]>>,
    metrics: ExecutionPlanMetricsSet,
}

impl UdfRowsExec {
    fn new(node: Arc<dyn ExecutionPlan>, handles: Vec<UdfModule>) -> UdfRowsExec {
        let counted = handles
            .iter()
            .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
            .collect();
        UdfRowsExec {
            node,
            handles: Arc::new(handles),
            counted: Arc::new(counted),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

/// Counts its node's UDF rows for one partition when dropped.
struct CountOnDrop {
    handles: Arc<Vec<UdfModule>>,
    counted: Arc<Vec<[AtomicU64; 2]>>,
    metrics: ExecutionPlanMetricsSet,
    partition: usize,
}

impl Drop for CountOnDrop {
    fn drop(&mut self) {
        for (handle, counted) in self.handles.iter().zip(self.counted.iter()) {
            let (rows, failed) = handle.query_rows();
            for ((prefix, now), before) in [(ROWS, rows), (FAILED, failed)].into_iter().zip(counted)
            {
                let new = now.saturating_sub(before.swap(now, Ordering::Relaxed));
                MetricBuilder::new(&self.metrics)
                    .with_partition(self.partition)
                    .global_counter(format!("{prefix}{}", handle.sha256()))
                    .add(usize::try_from(new).unwrap_or(usize::MAX));
            }
        }
    }
}

impl DisplayAs for UdfRowsExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.node.fmt_as(t, f)
    }
}

impl ExecutionPlan for UdfRowsExec {
    fn name(&self) -> &str {
        self.node.name()
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.node.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.node.children()
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        self.node.apply_expressions(f)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(UdfRowsExec {
            node: Arc::clone(&self.node).replace_children(children, options)?,
            handles: Arc::clone(&self.handles),
            counted: Arc::clone(&self.counted),
            metrics: self.metrics.clone(),
        }))
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
        let stream = self.node.execute(partition, context)?;
        let schema = stream.schema();
        let guard = CountOnDrop {
            handles: Arc::clone(&self.handles),
            counted: Arc::clone(&self.counted),
            metrics: self.metrics.clone(),
            partition,
        };
        let counted = stream.map(move |batch| {
            let _ = &guard;
            batch
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, counted)))
    }

    /// Its node's metrics and the counts.
    fn metrics(&self) -> Option<MetricsSet> {
        let mut metrics = self.node.metrics().unwrap_or_default();
        for metric in self.metrics.clone_inner().iter() {
            metrics.push(Arc::clone(metric));
        }
        Some(metrics)
    }
}

/// What the executors' UDF handles counted for job `job`, by module hash,
/// from the scheduler's job metrics.
pub(crate) async fn job_rows(
    scheduler: &SchedulerLink,
    job: &str,
) -> Result<HashMap<String, RowCounts>, ClusterError> {
    let metrics = scheduler
        .connect()
        .await?
        .get_job_metrics(GetJobMetricsParams {
            job_id: job.to_string(),
        })
        .await
        .map_err(|e| ClusterError::Process(format!("the metrics of job {job}: {e}")))?
        .into_inner();
    let mut rows: HashMap<String, RowCounts> = HashMap::new();
    let counts = metrics
        .stages
        .iter()
        .flat_map(|stage| &stage.operators)
        .flat_map(|operator| &operator.metrics)
        .filter_map(|metric| match &metric.metric {
            Some(Metric::Count(count)) => Some(count),
            _ => None,
        });
    for count in counts {
        if let Some(module) = count.name.strip_prefix(FAILED) {
            rows.entry(module.to_string()).or_default().1 += count.value;
        } else if let Some(module) = count.name.strip_prefix(ROWS) {
            rows.entry(module.to_string()).or_default().0 += count.value;
        }
    }
    Ok(rows)
}
