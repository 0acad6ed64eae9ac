//! The cluster's two processes, Ballista's scheduler and executor run
//! in-process with Unseen's codecs and function set.
//!
//! Both use pull scheduling: an executor asks the scheduler for work, so no
//! executor listens for the scheduler's calls (only for its shuffle
//! fetches), and an executor that stops asking is dead to the scheduler
//! after [`SchedulerOptions::executor_timeout`].
//!
//! Every connection between them, and from the service, is mutual TLS
//! ([`crate::tls`]): the scheduler serves Ballista on loopback behind a TLS
//! front on its public address; an executor serves its Flight (shuffle)
//! service with TLS itself, and reaches the scheduler and other executors
//! with its identity.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::extension::SessionConfigExt as _;
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::{SchedulerConfig, TaskDistributionPolicy};
use ballista_scheduler::scheduler_process::start_server;
use datafusion::error::Result as DfResult;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionState;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionConfig;

use crate::ClusterError;
use crate::codec::{Opener, UnseenLogicalCodec, UnseenPhysicalCodec};
use crate::limits::ClusterLimits;
use crate::seal::ExecutorSecret;
use crate::tls::Identity;

/// The state the scheduler plans with and whose functions an executor
/// knows by name: DataFusion's defaults narrowed to what queries may use
/// (`policy::limits::query_functions`), so a plan naming any other function
/// does not decode on the cluster either.
pub fn cluster_session(config: SessionConfig) -> DfResult<SessionState> {
    let builder = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(Arc::new(RuntimeEnvBuilder::new().build()?))
        .with_optimizer_rules(ballista_core::optimizer::ballista_default_optimizer_rules());
    Ok(unseen_policy::limits::query_functions(builder).build())
}

/// The configuration a job's settings are applied to, on the scheduler and
/// on executors: Ballista's, knowing Unseen's `unseen.*` settings (so the
/// scheduler hands them on to the job's tasks).
pub(crate) fn cluster_config() -> SessionConfig {
    ballista_core::utils::default_config_producer().with_option_extension(ClusterLimits::default())
}

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    pub bind: SocketAddr,
    /// How long an executor may be silent before its tasks run elsewhere.
    pub executor_timeout: Duration,
    /// How often a task is tried before its query fails.
    pub task_attempts: usize,
    /// What it shows its peers, and checks theirs against.
    pub identity: Identity,
}

impl SchedulerOptions {
    pub fn new(bind: SocketAddr, identity: Identity) -> SchedulerOptions {
        SchedulerOptions {
            bind,
            identity,
            executor_timeout: Duration::from_secs(30),
            task_attempts: 4,
        }
    }
}

/// Runs a scheduler until its server fails (the caller ends it with the
/// process). Ballista's server listens on a loopback port of its own; the
/// public address is a TLS front that lets through only peers with an
/// identity from the cluster's authority.
pub async fn run_scheduler(options: SchedulerOptions) -> Result<(), ClusterError> {
    let acceptor = options.identity.acceptor()?;
    let front = tokio::net::TcpListener::bind(options.bind)
        .await
        .map_err(|e| ClusterError::Process(format!("cannot listen on {}: {e}", options.bind)))?;
    let inner = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map_err(|e| ClusterError::Process(format!("no loopback port for the scheduler: {e}")))?;
    let mut config = SchedulerConfig::default()
        .with_hostname(options.bind.ip().to_string())
        .with_port(options.bind.port())
        .with_scheduler_policy(TaskSchedulingPolicy::PullStaged)
        .with_task_distribution(TaskDistributionPolicy::RoundRobin)
        .with_override_session_builder(Arc::new(cluster_session))
        .with_override_config_producer(Arc::new(cluster_config));
    config.bind_host = options.bind.ip().to_string();
    config.override_logical_codec = Some(Arc::new(UnseenLogicalCodec::default()));
    config.override_physical_codec = Some(Arc::new(UnseenPhysicalCodec::new(Opener::Scheduler)));
    config.executor_timeout_seconds = options.executor_timeout.as_secs().max(1);
    config.expire_dead_executor_interval_seconds = (options.executor_timeout.as_secs() / 4).max(1);
    config.no_executors_grace_period_seconds = options.executor_timeout.as_secs().max(1);
    config.task_max_failures = options.task_attempts;
    config.stage_max_failures = options.task_attempts;
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| ClusterError::Process(format!("the scheduler could not start: {e}")))?;
    tokio::select! {
        served = start_server(cluster, inner, Arc::new(config)) => served
            .map_err(|e| ClusterError::Process(format!("the scheduler stopped: {e}"))),
        fronted = crate::tls::serve_front(front, inner, acceptor) => fronted,
    }
}

/// How an executor runs.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The name it was enrolled under.
    pub name: String,
    pub secret: ExecutorSecret,
    pub scheduler: SocketAddr,
    /// Where it serves its shuffle output.
    pub bind: SocketAddr,
    /// Owner-only directory for shuffle files and spills, which hold
    /// decrypted rows: the `unseen cluster executor` command refuses one on
    /// disk unless told the disk is encrypted.
    pub work_dir: PathBuf,
    /// Tasks it runs at once.
    pub slots: usize,
    /// What it shows its peers (the scheduler, other executors, the
    /// service fetching results), and checks theirs against.
    pub identity: Identity,
    /// Bytes all its tasks together may hold (split evenly between its
    /// slots; beyond it a task spills to the work directory where it can,
    /// else fails). `None` is Ballista's default: a share of the host's or
    /// cgroup's memory.
    pub memory: Option<u64>,
}

/// Runs an executor until it is stopped (SIGINT or SIGTERM, after its
/// running tasks finish) or its scheduler is lost.
pub async fn run_executor(options: ExecutorOptions) -> Result<(), ClusterError> {
    let work_dir = options
        .work_dir
        .to_str()
        .ok_or_else(|| ClusterError::Process("the work directory is not UTF-8".into()))?
        .to_string();
    crate::tls::install_ring_provider();
    let state =
        cluster_session(cluster_config()).map_err(|e| ClusterError::Process(e.to_string()))?;
    let endpoint = options.identity.endpoint_override();
    // Every task's configuration: shuffle fetches from other executors go
    // over TLS with this identity.
    let task_config = {
        let endpoint = Arc::clone(&endpoint);
        move || {
            cluster_config()
                .with_ballista_use_tls(true)
                .with_ballista_override_create_grpc_client_endpoint(Arc::clone(&endpoint))
        }
    };
    let server_tls = options.identity.server_tls();
    let flight: Arc<ballista_executor::ArrowFlightServerProvider> = Arc::new(
        move |work_dir: String,
              address: SocketAddr,
              mut shutdown: ballista_executor::shutdown::Shutdown,
              _: ballista_core::utils::GrpcServerConfig| {
            let server_tls = server_tls.clone();
            tokio::spawn(async move {
                // Ballista's own message size limits.
                let limit = 16 * 1024 * 1024;
                tonic::transport::Server::builder()
                    .tls_config(server_tls)
                    .map_err(ballista_core::error::BallistaError::TonicError)?
                    .add_service(
                        arrow_flight::flight_service_server::FlightServiceServer::new(
                            ballista_executor::flight_service::BallistaFlightService::new(work_dir),
                        )
                        .max_decoding_message_size(limit)
                        .max_encoding_message_size(limit),
                    )
                    .serve_with_shutdown(address, shutdown.recv())
                    .await
                    .map_err(ballista_core::error::BallistaError::TonicError)
            })
        },
    );
    let config = ExecutorProcessConfig {
        executor_id: options.name.clone(),
        bind_host: options.bind.ip().to_string(),
        external_host: Some(options.bind.ip().to_string()),
        port: options.bind.port(),
        scheduler_host: options.scheduler.ip().to_string(),
        scheduler_port: options.scheduler.port(),
        scheduler_connect_timeout_seconds: 30,
        vcores: options.slots.max(1),
        memory_pool_size: options.memory,
        task_scheduling_policy: TaskSchedulingPolicy::PullStaged,
        work_dir: Some(work_dir),
        override_function_registry: Some(Arc::new(BallistaFunctionRegistry::from(&state))),
        override_config_producer: Some(Arc::new(task_config)),
        override_arrow_flight_service: Some(flight),
        override_create_grpc_client_endpoint: Some(endpoint),
        override_logical_codec: Some(Arc::new(UnseenLogicalCodec::default())),
        override_physical_codec: Some(Arc::new(UnseenPhysicalCodec::new(Opener::Executor {
            name: options.name.clone(),
            secret: options.secret.clone(),
        }))),
        ..Default::default()
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| ClusterError::Process(format!("executor {} stopped: {e}", options.name)))
}
