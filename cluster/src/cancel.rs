//! A query the service stops reading stops on the cluster too.
//!
//! The service stops a query by dropping its stream: its deadline passed,
//! its client left, or it is shutting down. Ballista's client stream does
//! not tell the scheduler, so the job would go on using the executors for
//! an answer nobody reads (and a query the deadline stopped for being too
//! heavy would keep the cluster busy for the next ones). Every plan a
//! cluster session runs is therefore wrapped in a [`CancelOnDropExec`],
//! which cancels the scheduler's job when its stream is dropped before the
//! job's end, even while the job is being submitted.

use std::sync::Arc;

use async_trait::async_trait;
use ballista_core::execution_plans::DistributedQueryExec;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::{CancelJobParams, GetJobStatusParams, job_status};
use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use datafusion_proto::protobuf::LogicalPlanNode;
use futures::StreamExt;

use crate::ClusterError;

/// The query planner of a cluster session: Ballista's, with every plan it
/// sends to the scheduler wrapped in a [`CancelOnDropExec`].
#[derive(Debug)]
pub(crate) struct CancellingPlanner {
    pub(crate) inner: Arc<dyn QueryPlanner + Send + Sync>,
    pub(crate) scheduler: SchedulerLink,
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
            scheduler: self.scheduler.clone(),
            udf_modules: Arc::new(crate::udf_rows::logical_modules(logical_plan)?),
        }))
    }
}

/// A plan that runs on the cluster (its input, Ballista's
/// `DistributedQueryExec`), whose job is cancelled if its stream is dropped
/// before its end.
#[derive(Debug)]
pub struct CancelOnDropExec {
    input: Arc<dyn ExecutionPlan>,
    scheduler: SchedulerLink,
    /// The wasm UDF modules the plan calls, credited with the rows the
    /// executors ran them on (`crate::udf_rows`).
    udf_modules: Arc<Vec<unseen_sandbox::udf::UdfModule>>,
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
        write!(f, "CancelOnDropExec: scheduler={}", self.scheduler.url)
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
            scheduler: self.scheduler.clone(),
            udf_modules: Arc::clone(&self.udf_modules),
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

    /// Reads the job in a task of its own, which hands its batches on to
    /// the stream returned. When that stream is dropped before the job's
    /// end, the task goes on until the scheduler has accepted the job (had
    /// the submission itself been dropped, a job accepted anyway would run
    /// with no one to cancel it), then cancels it.
    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            DataFusionError::Execution("a cluster query runs inside a tokio runtime".into())
        })?;
        let stream = self.input.execute(partition, context)?;
        let schema = stream.schema();
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        runtime.spawn(read_job(
            stream,
            sender,
            Arc::clone(&self.input),
            self.scheduler.clone(),
            Arc::clone(&self.udf_modules),
        ));
        let batches = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|batch| (batch, receiver))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}

/// Hands the job's batches on to `sender` until the job ends or no one
/// reads them any more; in the second case, cancels the job once the
/// scheduler has accepted it.
async fn read_job(
    mut stream: SendableRecordBatchStream,
    sender: tokio::sync::mpsc::Sender<DfResult<RecordBatch>>,
    plan: Arc<dyn ExecutionPlan>,
    scheduler: SchedulerLink,
    udf_modules: Arc<Vec<unseen_sandbox::udf::UdfModule>>,
) {
    loop {
        tokio::select! {
            next = stream.next() => {
                let Some(batch) = next else {
                    // The answer ends only once the service's records
                    // count the rows the executors ran its UDFs on.
                    credit_udf_rows(&plan, &scheduler, &udf_modules).await;
                    return;
                };
                // An error ends the job on the scheduler too.
                let failed = batch.is_err();
                if sender.send(batch).await.is_err() {
                    break;
                }
                if failed {
                    return;
                }
            }
            () = sender.closed() => break,
        }
    }
    // No one reads the answer. Until the scheduler has said which job it
    // is, the submission must go on (its answer names the job).
    let job = loop {
        if let Some(job) = job_of(&plan) {
            break job;
        }
        // The job ended (or failed) before its id was read: nothing runs.
        if let Ok(None | Some(Err(_))) = tokio::time::timeout(ACCEPTANCE_POLL, stream.next()).await
        {
            return;
        }
    };
    drop(stream);
    // A job cancelled while the scheduler is still planning it is not yet
    // among its active jobs, so the cancel does nothing and the job runs
    // once planned: cancel until the scheduler says it has ended.
    for _ in 0..CANCEL_ATTEMPTS {
        if let Err(e) = cancel_job(&scheduler, &job).await {
            tracing::warn!(job, error = %e, "cluster job could not be cancelled");
            return;
        }
        tokio::time::sleep(CANCEL_CHECK).await;
        match job_state(&scheduler, &job).await {
            Ok(JobState::Failed(_) | JobState::Succeeded) => {
                tracing::info!(job, "cluster job cancelled: its answer was not read");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(job, error = %e, "cluster job's state after cancelling it");
                return;
            }
        }
    }
    tracing::warn!(
        job,
        "cluster job still runs after being cancelled repeatedly"
    );
}

/// Credits `modules` with the rows the executors ran them on in `plan`'s
/// job. A job whose metrics cannot be read credits nothing, and says so.
async fn credit_udf_rows(
    plan: &Arc<dyn ExecutionPlan>,
    scheduler: &SchedulerLink,
    modules: &[unseen_sandbox::udf::UdfModule],
) {
    if modules.is_empty() {
        return;
    }
    let Some(job) = job_of(plan) else { return };
    match crate::udf_rows::job_rows(scheduler, &job).await {
        Ok(rows) => {
            for module in modules {
                if let Some(&(evaluated, failed)) = rows.get(module.sha256()) {
                    module.credit_rows(evaluated, failed);
                }
            }
        }
        Err(e) => {
            tracing::warn!(job, error = %e, "the rows the cluster ran UDFs on are not counted");
        }
    }
}

/// How often a job whose answer is not read is checked for the id the
/// scheduler gave it.
const ACCEPTANCE_POLL: std::time::Duration = std::time::Duration::from_millis(20);
/// How long after cancelling a job its state is checked, and how often it
/// is cancelled at most (a minute in all).
const CANCEL_CHECK: std::time::Duration = std::time::Duration::from_millis(500);
const CANCEL_ATTEMPTS: usize = 120;

/// The way to a cluster's scheduler: its URL, and what makes each
/// connection to it (TLS with the service's identity).
#[derive(Clone)]
pub struct SchedulerLink {
    pub url: String,
    endpoint: ballista_core::extension::EndpointOverrideFn,
}

impl std::fmt::Debug for SchedulerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SchedulerLink({})", self.url)
    }
}

impl SchedulerLink {
    /// The scheduler at `scheduler` (`HOST:PORT`), reached over TLS with
    /// `identity`.
    pub fn new(scheduler: &str, identity: &crate::tls::Identity) -> SchedulerLink {
        SchedulerLink {
            url: format!("https://{scheduler}"),
            endpoint: identity.endpoint_override(),
        }
    }

    /// What makes each connection to a cluster member: TLS with the
    /// identity this link was made with.
    pub(crate) fn endpoint(&self) -> ballista_core::extension::EndpointOverrideFn {
        Arc::clone(&self.endpoint)
    }

    pub(crate) async fn connect(
        &self,
    ) -> Result<SchedulerGrpcClient<tonic::transport::Channel>, ClusterError> {
        let failed = |e: &dyn std::fmt::Display| {
            ClusterError::Process(format!("the scheduler at {}: {e}", self.url))
        };
        let endpoint =
            tonic::transport::Endpoint::from_shared(self.url.clone()).map_err(|e| failed(&e))?;
        let endpoint = (self.endpoint)(endpoint).map_err(|e| failed(&e))?;
        let channel = endpoint.connect().await.map_err(|e| failed(&e))?;
        Ok(SchedulerGrpcClient::new(channel))
    }
}

async fn cancel_job(scheduler: &SchedulerLink, job: &str) -> Result<(), ClusterError> {
    scheduler
        .connect()
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

/// Where job `job` stands on `scheduler`.
pub async fn job_state(scheduler: &SchedulerLink, job: &str) -> Result<JobState, ClusterError> {
    let status = scheduler
        .connect()
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
