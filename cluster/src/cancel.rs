//! A query the service stops reading stops on the cluster too.
//!
//! The service stops a query by dropping its stream: its deadline passed,
//! its client left, or it is shutting down. Ballista's client stream does
//! not tell the scheduler, so the job would go on using the executors for
//! an answer nobody reads (and a query the deadline stopped for being too
//! heavy would keep the cluster busy for the next ones). Every plan a
//! cluster session runs is therefore wrapped in a [`CancelOnDropExec`],
//! whose stream cancels the scheduler's job when it is dropped before its
//! end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use ballista_core::execution_plans::DistributedQueryExec;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::{CancelJobParams, GetJobStatusParams, job_status};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, RecordBatchStream,
    SendableRecordBatchStream,
};
use datafusion_proto::protobuf::LogicalPlanNode;
use futures::Stream;

use crate::ClusterError;

/// The query planner of a cluster session: Ballista's, with every plan it
/// sends to the scheduler wrapped in a [`CancelOnDropExec`].
#[derive(Debug)]
pub(crate) struct CancellingPlanner {
    pub(crate) inner: Arc<dyn QueryPlanner + Send + Sync>,
    pub(crate) scheduler_url: String,
}

#[async_trait]
impl QueryPlanner for CancellingPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let plan = self
            .inner
            .create_physical_plan(logical_plan, session)
            .await?;
        if plan
            .downcast_ref::<DistributedQueryExec<LogicalPlanNode>>()
            .is_none()
        {
            // Nothing runs on the cluster (an empty relation).
            return Ok(plan);
        }
        Ok(Arc::new(CancelOnDropExec {
            input: plan,
            scheduler_url: self.scheduler_url.clone(),
        }))
    }
}

/// A plan that runs on the cluster (its input, Ballista's
/// `DistributedQueryExec`), whose job is cancelled if its stream is dropped
/// before its end.
#[derive(Debug)]
pub struct CancelOnDropExec {
    input: Arc<dyn ExecutionPlan>,
    scheduler_url: String,
}

impl CancelOnDropExec {
    /// The scheduler's id of the job, once the scheduler accepted it.
    pub fn job_id(&self) -> Option<String> {
        job_of(&self.input)
    }
}

fn job_of(plan: &Arc<dyn ExecutionPlan>) -> Option<String> {
    plan.downcast_ref::<DistributedQueryExec<LogicalPlanNode>>()?
        .job_id()
        .map(String::from)
}

impl DisplayAs for CancelOnDropExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CancelOnDropExec: scheduler={}", self.scheduler_url)
    }
}

impl ExecutionPlan for CancelOnDropExec {
    fn name(&self) -> &str {
        "CancelOnDropExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
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
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(CancelOnDropExec {
            input: crate::only_child("CancelOnDropExec", children)?,
            scheduler_url: self.scheduler_url.clone(),
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
        Ok(Box::pin(CancelOnDrop {
            stream: self.input.execute(partition, context)?,
            plan: Arc::clone(&self.input),
            scheduler_url: self.scheduler_url.clone(),
            ended: false,
        }))
    }
}

/// The stream of a [`CancelOnDropExec`].
struct CancelOnDrop {
    stream: SendableRecordBatchStream,
    plan: Arc<dyn ExecutionPlan>,
    scheduler_url: String,
    ended: bool,
}

impl Stream for CancelOnDrop {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.stream.as_mut().poll_next(cx);
        // An error ends the job on the scheduler too.
        if let Poll::Ready(None | Some(Err(_))) = next {
            self.ended = true;
        }
        next
    }
}

impl RecordBatchStream for CancelOnDrop {
    fn schema(&self) -> SchemaRef {
        self.stream.schema()
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let Some(job) = job_of(&self.plan) else {
            // Not accepted yet: dropping the stream dropped the submission.
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                job,
                "cluster job left running: no runtime to cancel it from"
            );
            return;
        };
        let scheduler_url = self.scheduler_url.clone();
        runtime.spawn(async move {
            match cancel_job(&scheduler_url, &job).await {
                Ok(()) => tracing::info!(job, "cluster job cancelled: its answer was not read"),
                Err(e) => tracing::warn!(job, error = %e, "cluster job could not be cancelled"),
            }
        });
    }
}

async fn scheduler(
    scheduler_url: &str,
) -> Result<SchedulerGrpcClient<tonic::transport::Channel>, ClusterError> {
    SchedulerGrpcClient::connect(scheduler_url.to_string())
        .await
        .map_err(|e| ClusterError::Process(format!("the scheduler at {scheduler_url}: {e}")))
}

async fn cancel_job(scheduler_url: &str, job: &str) -> Result<(), ClusterError> {
    scheduler(scheduler_url)
        .await?
        .cancel_job(CancelJobParams {
            job_id: job.to_string(),
        })
        .await
        .map_err(|e| ClusterError::Process(format!("cancelling job {job}: {e}")))?;
    Ok(())
}

/// Where a job of the cluster stands, as its scheduler says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    /// Failed or cancelled, with the scheduler's reason.
    Failed(String),
    /// The scheduler does not say (it is still planning the job).
    Unknown,
}

/// Where job `job` stands on the scheduler at `scheduler_url`.
pub async fn job_state(scheduler_url: &str, job: &str) -> Result<JobState, ClusterError> {
    let status = scheduler(scheduler_url)
        .await?
        .get_job_status(GetJobStatusParams {
            job_id: job.to_string(),
        })
        .await
        .map_err(|e| ClusterError::Process(format!("the status of job {job}: {e}")))?
        .into_inner()
        .status
        .and_then(|s| s.status);
    Ok(match status {
        Some(job_status::Status::Queued(_)) => JobState::Queued,
        Some(job_status::Status::Running(_)) => JobState::Running,
        Some(job_status::Status::Successful(_)) => JobState::Succeeded,
        Some(job_status::Status::Failed(failed)) => JobState::Failed(failed.error),
        None => JobState::Unknown,
    })
}
