//! The HTTP API (`unseen serve`): every capability of the command line as
//! JSON over HTTP, behind bearer tokens, with a role check on every route,
//! bounded request bodies, a bounded job queue, and errors as JSON.
//!
//! Handlers check the caller's role before they read the body, run domain
//! calls on blocking threads (SQLite and fsync must not stall the async
//! workers), and map every [`DomainError`] to a 4xx with its message; only a
//! failure of the store itself is a 5xx, and it never carries a backtrace.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use unseen_core::metrics::Labels;

use crate::backend::{Backend, Local};
use crate::jobs::JobExtras;
use crate::{Domain, DomainError, GrantRequest, JobOutcome, Role};
use unseen_api::openapi::Operation;
use unseen_api::{
    BudgetRequest, ExtractRequest, JobFilter, JobRequest, LedgerQuery, MarginalsRequest,
    NewDataset, NewUser, QueryRequest, Reason, UploadQuery,
};

/// Largest JSON body, in bytes.
pub const JSON_LIMIT: usize = 1 << 20;
/// Largest module upload, in bytes.
pub const MODULE_LIMIT: usize = 32 << 20;
/// Largest dataset upload (Parquet, base64 in JSON), in bytes.
pub const DATASET_LIMIT: usize = 512 << 20;

/// Default of `serve --grace-period`, in seconds.
pub const DEFAULT_GRACE_SECONDS: u64 = 30;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Jobs that run at once; more wait in the queue.
    pub max_running_jobs: usize,
    /// Connections, per client and in all, and the header deadline.
    pub limits: crate::conns::ConnectionLimits,
    /// What one query may use (memory, time, join rows); set on the
    /// domain when the server starts.
    pub query: crate::data::QueryLimits,
    /// How long a stopping server lets running work finish before it
    /// cancels it; it exits within this time.
    pub grace_period: std::time::Duration,
    /// TLS for every connection (see [`crate::tls::acceptor`]); plain
    /// HTTP without it.
    pub tls: Option<crate::tls::Tls>,
    /// Days job logs are kept; when set, the server clears older ones at
    /// start and then once a day (see [`Domain::prune_expired_job_logs`]).
    pub log_retention_days: Option<u32>,
    /// Request metrics and the access log. Always on in `serve`; off only
    /// in `unseen bench service`, to measure what they cost.
    pub observe: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_running_jobs: 4,
            limits: crate::conns::ConnectionLimits::default(),
            query: crate::data::QueryLimits::default(),
            grace_period: std::time::Duration::from_secs(DEFAULT_GRACE_SECONDS),
            tls: None,
            log_retention_days: None,
            observe: true,
        }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) domain: Arc<Domain>,
    /// Permits for running jobs, queries, dry runs and extracts. Closed
    /// when the server stops: nothing new starts, what waits is refused.
    jobs: Arc<Semaphore>,
    /// Jobs admitted and not yet ended; bounded so a client cannot queue
    /// without limit.
    waiting: Arc<std::sync::atomic::AtomicUsize>,
    /// How many jobs may run at once (the permits of `jobs`).
    slots: usize,
    http: HttpMetrics,
    /// Whether the console's session cookie is marked `Secure` (served over TLS).
    pub(crate) secure_cookies: bool,
}

/// A latency histogram: 1 ms to about 65 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// What the API counts: requests by route and status, and their latency.
#[derive(Debug, Clone)]
struct HttpMetrics {
    requests: Family<Labels, Counter>,
    seconds: Family<Labels, Histogram, fn() -> Histogram>,
}

impl HttpMetrics {
    fn new() -> HttpMetrics {
        HttpMetrics {
            requests: Family::default(),
            seconds: Family::new_with_constructor(latency_histogram),
        }
    }

    fn observe(&self, method: &str, route: &str, status: u16, took: std::time::Duration) {
        let route_labels = vec![
            ("method".to_string(), method.to_string()),
            ("route".to_string(), route.to_string()),
        ];
        let mut labels = route_labels.clone();
        labels.push(("status".to_string(), status.to_string()));
        self.requests.get_or_create(&labels).inc();
        self.seconds
            .get_or_create(&route_labels)
            .observe(took.as_secs_f64());
    }
}

/// The exposition of the API's and the core's metrics.
fn metrics_text(state: &AppState, domain: &Domain) -> Result<String, DomainError> {
    use std::sync::atomic::Ordering;
    let mut registry = Registry::default();
    registry.register(
        "unseen_http_requests",
        "Requests answered, by method, route and status",
        state.http.requests.clone(),
    );
    registry.register(
        "unseen_http_request_duration_seconds",
        "Time to answer a request, by method and route",
        state.http.seconds.clone(),
    );
    let gauge = |value: usize| {
        let g: Gauge = Gauge::default();
        g.set(i64::try_from(value).unwrap_or(i64::MAX));
        g
    };
    registry.register(
        "unseen_job_queue_depth",
        "Jobs, queries and extracts admitted and not yet ended",
        gauge(state.waiting.load(Ordering::SeqCst)),
    );
    registry.register(
        "unseen_jobs_running",
        "Jobs holding one of the job slots now",
        gauge(state.slots.saturating_sub(state.jobs.available_permits())),
    );
    registry.register("unseen_up", "1 while the service answers", gauge(1));
    domain.register_metrics(&mut registry)?;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .map_err(|_| DomainError::Internal("the metrics could not be written".into()))?;
    Ok(text)
}

/// Jobs that may wait in the queue at once; more get 503 and may retry.
pub const MAX_WAITING_JOBS: usize = 1024;

/// Holds one place in the queue until dropped.
struct QueuePlace(Arc<std::sync::atomic::AtomicUsize>);

impl QueuePlace {
    fn take(waiting: &Arc<std::sync::atomic::AtomicUsize>) -> Result<QueuePlace, ApiError> {
        use std::sync::atomic::Ordering;
        let before = waiting.fetch_add(1, Ordering::SeqCst);
        let place = QueuePlace(Arc::clone(waiting));
        if before >= MAX_WAITING_JOBS {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the job queue is full ({MAX_WAITING_JOBS} jobs waiting or running); retry in a moment"
                ),
            ));
        }
        Ok(place)
    }
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// An error as the API returns it: a status and a message saying what was
/// wrong and what to do.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    fn internal() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error while serving the request; nothing was released. The ledger records what was done; report this",
        )
    }

    /// The HTTP status this error answers with.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// What went wrong and what to do, as the API says it.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// A [`Backend`] error: the core's own errors keep their status;
    /// anything else is the service's fault, logged and not detailed.
    fn from_backend(error: anyhow::Error) -> Self {
        match error.downcast::<DomainError>() {
            Ok(e) => e.into(),
            Err(e) => {
                tracing::error!(error = %e, "a request failed inside the service");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"status": self.status.as_u16(), "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let status = match &e {
            DomainError::NotFound { .. } => StatusCode::NOT_FOUND,
            DomainError::Exists { .. }
            | DomainError::NotQuarantined { .. }
            | DomainError::Blocked { .. }
            | DomainError::ApplicationState { .. }
            | DomainError::ImportState { .. } => StatusCode::CONFLICT,
            DomainError::Forbidden { .. }
            | DomainError::SelfReview { .. }
            | DomainError::OwnApplication { .. }
            | DomainError::Grant { .. } => StatusCode::FORBIDDEN,
            DomainError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            DomainError::OutOfRange { .. }
            | DomainError::OneOf { .. }
            | DomainError::BadTimeWindow { .. }
            | DomainError::ActingAdminRequired
            | DomainError::NameRequired { .. }
            | DomainError::BadUserId { .. }
            | DomainError::ManifestNameMismatch { .. }
            | DomainError::NotModuleJob { .. }
            | DomainError::NoStore { .. }
            | DomainError::BadPublicKey { .. }
            | DomainError::BadQuery(_)
            | DomainError::BadMarginals(_)
            | DomainError::NothingToPublish { .. }
            | DomainError::BadSample(_)
            | DomainError::BadReleaseTable { .. }
            | DomainError::BadRole(_)
            | DomainError::Parquet(_)
            | DomainError::ReasonRequired { .. }
            | DomainError::BadGrant(_)
            | DomainError::BadApplication(_)
            | DomainError::BadImport(_)
            | DomainError::BadExecutorName { .. } => StatusCode::BAD_REQUEST,
            DomainError::UdfShadowsBuiltin { .. }
            | DomainError::UdfDeclaredTwice { .. }
            | DomainError::ModuleKindConflict { .. }
            | DomainError::BudgetShort { .. } => StatusCode::CONFLICT,
            DomainError::LedgerUnverified(_)
            | DomainError::ReleaseUnverified(_)
            | DomainError::AttestationUnverified(_)
            | DomainError::BundleBroken { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            DomainError::StoreVersion { .. }
            | DomainError::Unattested(_)
            | DomainError::Cluster(_) => StatusCode::SERVICE_UNAVAILABLE,
            DomainError::UserDisabled { .. }
            | DomainError::LastAdmin { .. }
            | DomainError::JobEnded { .. }
            | DomainError::DatasetDestroyed { .. }
            | DomainError::AlreadyApproved { .. } => StatusCode::CONFLICT,
            DomainError::Damaged { .. } | DomainError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            DomainError::Manifest(_)
            | DomainError::Sandbox(_)
            | DomainError::Udf(_)
            | DomainError::Policy(_) => StatusCode::UNPROCESSABLE_ENTITY,
            DomainError::DatasetUnreadable { .. } => StatusCode::GONE,
            DomainError::Io { .. }
            | DomainError::Store(_)
            | DomainError::Ledger(_)
            | DomainError::Key(_)
            | DomainError::CannotWrite(_)
            | DomainError::Exposed { .. } => StatusCode::SERVICE_UNAVAILABLE,
            DomainError::Witness { .. } => StatusCode::BAD_GATEWAY,
        };
        ApiError::new(status, e.to_string())
    }
}

type ApiResult = Result<Response, ApiError>;

/// `body` (a body of the API crate, or any JSON) as the answer.
fn ok<T: serde::Serialize>(body: T) -> ApiResult {
    Ok(Json(body).into_response())
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct Actor {
    pub(crate) id: String,
    pub(crate) role: Role,
}

impl Actor {
    /// Refuses the request unless the caller holds one of `roles`.
    fn require(&self, roles: &[Role], action: &'static str) -> Result<(), ApiError> {
        Ok(crate::check_role(&self.id, self.role, roles, action)?)
    }
}

impl FromRequestParts<AppState> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing bearer token: send `Authorization: Bearer TOKEN` (admins issue tokens with `unseen user add` and `unseen user token`)",
                )
            })?
            .to_str()
            .map_err(|_| {
                ApiError::new(StatusCode::UNAUTHORIZED, "the Authorization header is not text")
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "the Authorization header must be `Bearer TOKEN`",
                )
            })?
            .trim()
            .to_string();
        let (id, role) = blocking(state, move |d| d.authenticate(&token)).await?;
        tracing::Span::current().record("user", id.as_str());
        Ok(Actor { id, role })
    }
}

/// Runs a domain call on a blocking thread.
pub(crate) async fn blocking<T, F>(state: &AppState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Arc<Domain>) -> Result<T, DomainError> + Send + 'static,
{
    let domain = Arc::clone(&state.domain);
    tokio::task::spawn_blocking(move || f(&domain))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(ApiError::from)
}

/// Runs one of the service's operations as `actor`, through the same
/// [`Local`] backend the command line uses on a data directory: what the
/// API answers and what `unseen` prints locally are built once.
pub(crate) async fn as_user<T, F>(state: &AppState, actor: Actor, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Local) -> anyhow::Result<T> + Send + 'static,
{
    let local = Local::new(
        Arc::clone(&state.domain),
        Ok(actor.id),
        tokio::runtime::Handle::current(),
    );
    tokio::task::spawn_blocking(move || f(&local))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(ApiError::from_backend)
}

/// Parses a JSON body after the role check, with a clear message.
fn body<T: serde::de::DeserializeOwned>(raw: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes =
        raw.map_err(|e| ApiError::new(e.status(), format!("request body: {}", e.body_text())))?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "request body is empty; send a JSON object (see docs/api.md)",
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("request body is not the expected JSON: {e}")))
}

/// Builds the router over a domain.
pub fn router(domain: Arc<Domain>, options: &ServerOptions) -> Router {
    routes(AppState::new(domain, options), options.observe)
}

impl AppState {
    fn new(domain: Arc<Domain>, options: &ServerOptions) -> AppState {
        AppState {
            domain,
            jobs: Arc::new(Semaphore::new(options.max_running_jobs.max(1))),
            waiting: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            slots: options.max_running_jobs.max(1),
            http: HttpMetrics::new(),
            secure_cookies: options.tls.is_some(),
        }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token.
    Anyone,
    /// A caller holding one of these roles (developers where the grant
    /// designates them, for grant-scoped routes); any other role gets 403
    /// naming the role needed, a missing or wrong token 401.
    Roles(&'static [Role]),
}

/// One route of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    /// The path as the router matches it, with `{param}` segments.
    pub path: &'static str,
    pub access: Access,
    /// What it does, and so what it takes and gives (the OpenAPI document
    /// is built from this).
    pub operation: Operation,
}

/// Admins, and developers for their own jobs.
const ADMIN_DEVELOPER: &[Role] = &[Role::Admin, Role::Developer];

type Endpoint = (Route, fn() -> axum::routing::MethodRouter<AppState>);

/// Every route with its handler: the router is built from this table and
/// [`route_table`] gives it to the role-matrix test, so no route is served
/// that the test does not walk. The handlers check the roles themselves
/// (through the domain); the test holds them to this table.
fn endpoints() -> Vec<Endpoint> {
    let route = |method, path, access, operation| Route {
        method,
        path,
        access,
        operation,
    };
    use Access::{Anyone, Roles};
    use Operation as O;
    vec![
        (route("GET", "/v1/health", Anyone, O::Health), || {
            get(health)
        }),
        (route("GET", "/v1/ready", Anyone, O::Ready), || get(ready)),
        (
            route("GET", "/metrics", Roles(OVERSIGHT), O::Metrics),
            || get(metrics),
        ),
        (route("GET", "/v1/openapi.json", Anyone, O::OpenApi), || {
            get(openapi)
        }),
        (
            route("GET", "/v1/attestation", Roles(ALL), O::Attestation),
            || get(attestation),
        ),
        (route("GET", "/v1/me", Roles(ALL), O::Me), || get(me)),
        (
            route("GET", "/v1/users", Roles(OVERSIGHT), O::ListUsers),
            || get(list_users),
        ),
        (route("POST", "/v1/users", Roles(ADMIN), O::AddUser), || {
            post(add_user)
        }),
        (
            route(
                "POST",
                "/v1/users/{id}/disable",
                Roles(ADMIN),
                O::DisableUser,
            ),
            || post(disable_user),
        ),
        (
            route("POST", "/v1/users/{id}/token", Roles(ADMIN), O::RotateToken),
            || post(rotate_token),
        ),
        (
            route("GET", "/v1/datasets", Roles(ALL), O::ListDatasets),
            || get(list_datasets),
        ),
        (
            route("POST", "/v1/datasets", Roles(ADMIN), O::RegisterDataset),
            || post(register_dataset).layer(DefaultBodyLimit::max(DATASET_LIMIT)),
        ),
        (
            route(
                "POST",
                "/v1/datasets/{name}/destroy",
                Roles(ADMIN),
                O::DestroyDataset,
            ),
            || post(destroy_dataset),
        ),
        (
            route(
                "POST",
                "/v1/datasets/{name}/marginals",
                Roles(ADMIN),
                O::PublishMarginals,
            ),
            || post(publish_marginals),
        ),
        (
            route("POST", "/v1/budgets", Roles(ADMIN), O::SetBudget),
            || post(set_budget),
        ),
        (
            route("GET", "/v1/grants", Roles(ALL), O::ListGrants),
            || get(list_grants),
        ),
        (
            route("POST", "/v1/grants", Roles(ADMIN), O::IssueGrant),
            || post(issue_grant),
        ),
        (
            route("GET", "/v1/grants/{id}", Roles(ALL), O::ShowGrant),
            || get(show_grant),
        ),
        (
            route(
                "POST",
                "/v1/grants/{id}/revoke",
                Roles(ADMIN),
                O::RevokeGrant,
            ),
            || post(revoke_grant),
        ),
        (
            route("GET", "/v1/grants/{id}/budget", Roles(ALL), O::GrantBudget),
            || get(grant_budget),
        ),
        (
            route("GET", "/v1/grants/{id}/usage", Roles(ALL), O::GrantUsage),
            || get(grant_usage),
        ),
        (
            route(
                "GET",
                "/v1/applications",
                Roles(APPLICATION_READERS),
                O::ListApplications,
            ),
            || get(list_applications),
        ),
        (
            route("POST", "/v1/applications", Roles(DEVELOPER), O::Apply),
            || post(apply),
        ),
        (
            route(
                "GET",
                "/v1/applications/{id}",
                Roles(APPLICATION_READERS),
                O::ShowApplication,
            ),
            || get(show_application),
        ),
        (
            route(
                "POST",
                "/v1/applications/{id}/amend",
                Roles(DEVELOPER),
                O::AmendApplication,
            ),
            || post(amend_application),
        ),
        (
            route(
                "POST",
                "/v1/applications/{id}/withdraw",
                Roles(DEVELOPER),
                O::WithdrawApplication,
            ),
            || post(withdraw_application),
        ),
        (
            route(
                "POST",
                "/v1/applications/{id}/pre-review",
                Roles(ADMIN),
                O::PreReviewApplication,
            ),
            || post(pre_review_application),
        ),
        (
            route(
                "POST",
                "/v1/applications/{id}/decision",
                Roles(ADMIN),
                O::DecideApplication,
            ),
            || post(decide_application),
        ),
        (
            route(
                "POST",
                "/v1/applications/{id}/feedback",
                Roles(DEVELOPER),
                O::ApplicationFeedback,
            ),
            || post(application_feedback),
        ),
        (
            route(
                "GET",
                "/v1/imports",
                Roles(APPLICATION_READERS),
                O::ListImports,
            ),
            || get(list_imports),
        ),
        (
            route("POST", "/v1/imports", Roles(DEVELOPER), O::ProposeImport),
            || post(propose_import).layer(DefaultBodyLimit::max(DATASET_LIMIT)),
        ),
        (
            route(
                "POST",
                "/v1/imports/{id}/decision",
                Roles(ADMIN),
                O::DecideImport,
            ),
            || post(decide_import),
        ),
        (
            route("POST", "/v1/modules", Roles(DEVELOPER), O::UploadModule),
            || post(upload_module).layer(DefaultBodyLimit::max(MODULE_LIMIT)),
        ),
        (route("GET", "/v1/jobs", Roles(ALL), O::ListJobs), || {
            get(list_jobs)
        }),
        (
            route("POST", "/v1/jobs", Roles(DEVELOPER), O::SubmitJob),
            || post(submit_job),
        ),
        (
            route("GET", "/v1/jobs/{id}", Roles(ALL), O::ShowJob),
            || get(show_job),
        ),
        (
            route(
                "POST",
                "/v1/jobs/{id}/cancel",
                Roles(ADMIN_DEVELOPER),
                O::CancelJob,
            ),
            || post(cancel_job),
        ),
        (
            route("POST", "/v1/queries", Roles(DEVELOPER), O::RunQuery),
            || post(run_query),
        ),
        (
            route("POST", "/v1/extracts", Roles(DEVELOPER), O::RunExtract),
            || post(run_extract),
        ),
        (
            route("GET", "/v1/reviews", Roles(REVIEWER), O::ReviewQueue),
            || get(review_queue),
        ),
        (
            route("GET", "/v1/outputs/{id}", Roles(REVIEWER), O::ShowOutput),
            || get(show_output),
        ),
        (
            route(
                "POST",
                "/v1/outputs/{id}/approve",
                Roles(REVIEWER),
                O::ApproveOutput,
            ),
            || post(approve_output),
        ),
        (
            route(
                "POST",
                "/v1/outputs/{id}/reject",
                Roles(REVIEWER),
                O::RejectOutput,
            ),
            || post(reject_output),
        ),
        (
            route(
                "GET",
                "/v1/releases/{id}",
                Roles(DEVELOPER),
                O::DownloadRelease,
            ),
            || get(download_release),
        ),
        (
            route(
                "GET",
                "/v1/ledger/verify",
                Roles(OVERSIGHT),
                O::VerifyLedger,
            ),
            || get(verify_ledger),
        ),
        (
            route(
                "GET",
                "/v1/ledger/public-key",
                Roles(ALL),
                O::LedgerPublicKey,
            ),
            || get(public_key),
        ),
        (
            route(
                "GET",
                "/v1/ledger/checkpoint",
                Roles(OVERSEERS),
                O::LedgerCheckpoint,
            ),
            || get(checkpoint),
        ),
        (
            route("POST", "/v1/ledger/query", Roles(OVERSIGHT), O::QueryLedger),
            || post(query_ledger),
        ),
        (
            route(
                "GET",
                "/v1/ledger/reconcile",
                Roles(OVERSIGHT),
                O::ReconcileLedger,
            ),
            || get(reconcile_ledger),
        ),
        (
            route(
                "GET",
                "/v1/reports/disclosure",
                Roles(OVERSIGHT),
                O::DisclosureReport,
            ),
            || get(disclosure),
        ),
    ]
}

/// Whether `role` may call the route doing `operation` (the console shows
/// a page only to those the API would answer).
pub(crate) fn permits(role: Role, operation: Operation) -> bool {
    endpoints()
        .iter()
        .filter(|(route, _)| route.operation == operation)
        .any(|(route, _)| match route.access {
            Access::Anyone => true,
            Access::Roles(roles) => roles.contains(&role),
        })
}

/// Every route the API serves, with who may call it.
pub fn route_table() -> Vec<Route> {
    endpoints().into_iter().map(|(route, _)| route).collect()
}

/// The OpenAPI document of the routes served, as canonical JSON text.
pub fn openapi_text() -> String {
    let routes = route_table();
    let roles: Vec<Option<Vec<&str>>> = routes
        .iter()
        .map(|r| match r.access {
            Access::Anyone => None,
            Access::Roles(roles) => Some(roles.iter().map(|role| role.as_str()).collect()),
        })
        .collect();
    let specs: Vec<unseen_api::openapi::RouteSpec<'_>> = routes
        .iter()
        .zip(&roles)
        .map(|(r, roles)| unseen_api::openapi::RouteSpec {
            method: r.method,
            path: r.path,
            roles: roles.as_deref(),
            operation: r.operation,
        })
        .collect();
    unseen_api::openapi::document_text(&specs, env!("CARGO_PKG_VERSION"))
}

/// `GET /v1/openapi.json`: the document of this API (public, like the
/// health check: it describes the routes, never the data).
async fn openapi() -> Response {
    // The routes are fixed at build time: the document is built once.
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let text = TEXT.get_or_init(openapi_text).as_str();
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

fn routes(state: AppState, observe: bool) -> Router {
    // One method router per path, holding every method the table gives it.
    let mut by_path: BTreeMap<&'static str, axum::routing::MethodRouter<AppState>> =
        BTreeMap::new();
    for (route, handler) in endpoints() {
        let handler = handler();
        let merged = match by_path.remove(route.path) {
            Some(earlier) => earlier.merge(handler),
            None => handler,
        };
        by_path.insert(route.path, merged);
    }
    let router = by_path
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| {
            router.route(path, methods)
        })
        .merge(crate::console::routes())
        .route_layer(axum::middleware::from_fn(name_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(JSON_LIMIT))
        .layer(axum::middleware::map_response(json_errors));
    if !observe {
        return router.with_state(state);
    }
    router
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_request,
        ))
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(access_span)
                .on_request(())
                .on_response(access_line)
                .on_body_chunk(())
                .on_eos(())
                .on_failure(()),
        )
        .with_state(state)
}

/// The access log: one line per request at INFO (target `unseen::access`)
/// with the method, the route as the table names it (`/v1/jobs/{id}`, not
/// the ids), the user, the status and the latency. Never a header (the
/// token is one), a query string or a body (SQL with literals is one).
fn access_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    tracing::info_span!(
        target: "unseen::access",
        "request",
        method = %request.method(),
        route = tracing::field::Empty,
        user = tracing::field::Empty,
    )
}

/// The access log's line, when the answer is ready (see [`access_span`]).
fn access_line(response: &Response, latency: std::time::Duration, _span: &tracing::Span) {
    tracing::info!(
        target: "unseen::access",
        status = response.status().as_u16(),
        latency_ms = latency.as_secs_f64() * 1e3,
        "answered"
    );
}

/// The route a request matched, as the table names it.
#[derive(Debug, Clone)]
struct MatchedRoute(String);

/// Names the matched route in the request's span (see [`access_span`])
/// and in the answer, for [`count_request`].
async fn name_route(
    matched: axum::extract::MatchedPath,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = matched.as_str().to_string();
    tracing::Span::current().record("route", route.as_str());
    let mut response = next.run(request).await;
    response.extensions_mut().insert(MatchedRoute(route));
    response
}

/// Counts every request and its latency under its route, or `unmatched`
/// (a path the API does not have).
async fn count_request(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<MatchedRoute>()
        .map_or("unmatched", |r| r.0.as_str());
    state.http.observe(
        &method,
        route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Prometheus metrics (OpenMetrics text) for operators and auditors.
async fn metrics(State(state): State<AppState>, actor: Actor) -> ApiResult {
    actor.require(OVERSIGHT, "read the metrics")?;
    let scraped = state.clone();
    let text = blocking(&state, move |d| metrics_text(&scraped, d)).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Turns any error answer that is not JSON yet (a malformed path or query
/// string rejected by an extractor) into the API's JSON error.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| {
            // The console's pages explain their own errors.
            v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html")
        });
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string()
    } else {
        text
    };
    ApiError::new(status, message).into_response()
}

/// Serves the API on `listener` until `shutdown` resolves, then stops
/// within `options.grace_period`:
///
/// 1. it stops accepting connections and starting work: jobs still queued
///    end failed ("submit it again"), requests waiting for a place get 503;
/// 2. running jobs and queries may finish until the grace period is nearly
///    over (all but [`cancel_allowance`]);
/// 3. then they are cancelled (a job stops at its next epoch tick, a query's
///    DataFusion streams are dropped) and their requests answered;
/// 4. at the end of the grace period, connections still open are closed and
///    any job not yet ended is ended as interrupted, with a ledger entry.
pub async fn serve(
    domain: Arc<Domain>,
    listener: tokio::net::TcpListener,
    options: ServerOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    domain.set_query_limits(options.query);
    // Which code is about to handle the data, in the ledger before any request.
    let starting = Arc::clone(&domain);
    tokio::task::spawn_blocking(move || starting.record_start("serve"))
        .await
        .map_err(std::io::Error::other)?
        .map_err(std::io::Error::other)?;
    let pruner = match options.log_retention_days {
        Some(days) => {
            domain
                .set_log_retention_days(days)
                .map_err(std::io::Error::other)?;
            Some(tokio::spawn(clear_expired_logs(Arc::clone(&domain))))
        }
        None => None,
    };
    // The pruner holds the domain: it stops with the server.
    let _pruner = pruner.map(AbortOnDrop);
    let _imports = AbortOnDrop(tokio::spawn(destroy_ended_imports(Arc::clone(&domain))));
    let state = AppState::new(Arc::clone(&domain), &options);
    let app = routes(state.clone(), options.observe);
    let grace = options.grace_period;
    let allowance = cancel_allowance(grace);
    let deadline = Arc::new(std::sync::OnceLock::new());
    let stop_starting = {
        let (jobs, deadline) = (Arc::clone(&state.jobs), Arc::clone(&deadline));
        async move {
            shutdown.await;
            let _ = deadline.set(tokio::time::Instant::now() + grace);
            tracing::info!(
                grace_s = grace.as_secs_f64(),
                "stopping: no new work starts"
            );
            jobs.close();
        }
    };
    let drain = {
        let (domain, deadline) = (Arc::clone(&domain), Arc::clone(&deadline));
        move || async move {
            let end = deadline
                .get()
                .copied()
                .unwrap_or_else(|| tokio::time::Instant::now() + grace);
            tokio::time::sleep_until(end - allowance).await;
            let stopped =
                domain.stop_running_jobs("the service is stopping and the grace period ran out");
            tracing::warn!(jobs = stopped, "grace period over: running work cancelled");
            tokio::time::sleep_until(end).await;
        }
    };
    crate::conns::serve(
        listener,
        app,
        options.limits,
        options.tls.clone(),
        stop_starting,
        drain,
    )
    .await?;
    // Jobs submitted without waiting run outside any connection: they too
    // may finish until the grace period is nearly over, are cancelled then,
    // and have the rest of it to record their end.
    let end = deadline
        .get()
        .copied()
        .unwrap_or_else(tokio::time::Instant::now);
    while domain.running_jobs() > 0 && tokio::time::Instant::now() < end {
        if tokio::time::Instant::now() >= end - allowance {
            domain.stop_running_jobs("the service is stopping and the grace period ran out");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let ended = tokio::task::spawn_blocking(move || {
        domain.end_unfinished_jobs("the service stopped before the job could end; submit it again")
    })
    .await
    .map_err(std::io::Error::other)?
    .map_err(std::io::Error::other)?;
    if ended > 0 {
        tracing::warn!(
            jobs = ended,
            "jobs that did not end in the grace period were ended as interrupted"
        );
    }
    Ok(())
}

/// Clears job logs older than the retention period now and then once a
/// day; a failure is logged and tried again the next day.
async fn clear_expired_logs(domain: Arc<Domain>) {
    let mut daily = tokio::time::interval(std::time::Duration::from_secs(86_400));
    loop {
        daily.tick().await;
        let domain = Arc::clone(&domain);
        match tokio::task::spawn_blocking(move || domain.prune_expired_job_logs()).await {
            Ok(Ok(jobs)) => tracing::info!(jobs, "job logs past their retention cleared"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not clear job logs past their retention")
            }
            Err(e) => tracing::warn!(error = %e, "the log pruner stopped"),
        }
    }
}

/// Destroys outside data whose grant has ended, at start and then hourly
/// (a revocation destroys it at once).
async fn destroy_ended_imports(domain: Arc<Domain>) {
    let mut hourly = tokio::time::interval(std::time::Duration::from_secs(3_600));
    loop {
        hourly.tick().await;
        let domain = Arc::clone(&domain);
        match tokio::task::spawn_blocking(move || domain.destroy_ended_imports("system")).await {
            Ok(Ok(destroyed)) if !destroyed.is_empty() => {
                tracing::info!(datasets = ?destroyed, "imports of ended grants destroyed")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not destroy imports of ended grants"),
            Err(e) => tracing::warn!(error = %e, "the import sweeper stopped"),
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The end of a grace period kept for cancelled work to stop and answer:
/// a quarter of it, at most five seconds.
pub fn cancel_allowance(grace: std::time::Duration) -> std::time::Duration {
    (grace / 4).min(std::time::Duration::from_secs(5))
}

fn stopping() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the service is stopping")
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route; the routes are listed in docs/api.md",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not take that method; see docs/api.md",
    )
}

/// Answers without a token, so it says nothing that changes with what
/// jobs do: the ledger's size grows with every query and job end, and
/// watching it would time them.
async fn health(State(state): State<AppState>) -> ApiResult {
    blocking(&state, |d| d.ledger_head()).await?;
    ok(unseen_api::Health { ok: true })
}

/// For load balancers and orchestrators: 200 when every part the service
/// needs works, 503 naming the part that does not. Like `health`, nothing
/// in it changes with what jobs do.
async fn ready(State(state): State<AppState>) -> ApiResult {
    let checks = blocking(&state, |d| Ok(d.readiness())).await?;
    let ready = checks.iter().all(|(_, c)| c.is_ok());
    if !ready {
        let failing: Vec<&str> = checks
            .iter()
            .filter(|(_, c)| c.is_err())
            .map(|(n, _)| *n)
            .collect();
        tracing::warn!(?failing, "not ready");
    }
    let body = unseen_api::Ready {
        ready,
        checks: checks
            .into_iter()
            .map(|(name, check)| (name.to_string(), check.err().unwrap_or_else(|| "ok".into())))
            .collect(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(body)).into_response())
}

/// `?nonce=` of `GET /v1/attestation`.
#[derive(Debug, serde::Deserialize)]
struct AttestationQuery {
    nonce: Option<String>,
}

/// For every signed-in role: which code handles the data is theirs to know.
/// It states nothing that changes while jobs run (no ledger size; see
/// [`health`]).
async fn attestation(
    State(state): State<AppState>,
    actor: Actor,
    Query(query): Query<AttestationQuery>,
) -> ApiResult {
    actor.require(ALL, "read the attestation")?;
    ok(as_user(&state, actor, move |b| b.attest(query.nonce.as_deref())).await?)
}

async fn me(actor: Actor) -> ApiResult {
    ok(unseen_api::Me {
        user: actor.id,
        role: actor.role,
    })
}

const ALL: &[Role] = &[Role::Admin, Role::Developer, Role::Reviewer, Role::Auditor];
const ADMIN: &[Role] = &[Role::Admin];
const DEVELOPER: &[Role] = &[Role::Developer];
const REVIEWER: &[Role] = &[Role::Reviewer];
const OVERSIGHT: &[Role] = &[Role::Admin, Role::Auditor];
/// Who reads grant applications: the provider and auditors all of them,
/// developers their own.
const APPLICATION_READERS: &[Role] = &[Role::Admin, Role::Developer, Role::Auditor];
const OVERSEERS: &[Role] = &[Role::Admin, Role::Reviewer, Role::Auditor];

async fn add_user(
    State(state): State<AppState>,
    actor: Actor,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    actor.require(ADMIN, "add users")?;
    let user: NewUser = body(raw)?;
    let added = as_user(&state, actor, move |b| b.add_user(&user)).await?;
    Ok((StatusCode::CREATED, Json(added)).into_response())
}

async fn list_users(State(state): State<AppState>, actor: Actor) -> ApiResult {
    actor.require(OVERSIGHT, "list users")?;
    ok(as_user(&state, actor, |b| b.users()).await?)
}

fn optional_reason(raw: Result<Bytes, BytesRejection>) -> Result<Reason, ApiError> {
    match &raw {
        Ok(b) if b.is_empty() => Ok(Reason::default()),
        _ => body(raw),
    }
}

async fn disable_user(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    actor.require(ADMIN, "disable users")?;
    let reason = optional_reason(raw)?;
    ok(as_user(&state, actor, move |b| b.disable_user(&id, &reason.reason)).await?)
}

async fn rotate_token(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> ApiResult {
    if actor.id != id {
        actor.require(ADMIN, "rotate other users' tokens")?;
    }
    ok(as_user(&state, actor, move |b| b.rotate_token(&id)).await?)
}

async fn list_datasets(State(state): State<AppState>, actor: Actor) -> ApiResult {
    actor.require(ALL, "list datasets")?;
    ok(as_user(&state, actor, |b| b.datasets()).await?)
}

/// Reads a large body only after the role check, up to `limit`.
async fn read_large(body: axum::body::Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over the {limit}-byte limit of this route (or was cut off)"),
        )
    })
}

async fn register_dataset(
    State(state): State<AppState>,
    actor: Actor,
    raw: axum::body::Body,
) -> ApiResult {
    actor.require(ADMIN, "register datasets")?;
    let bytes = read_large(raw, DATASET_LIMIT).await?;
    // Parsing and decoding up to 512 MiB is CPU work: off the async workers.
    let (request, parquet) = tokio::task::spawn_blocking(move || {
        let request: NewDataset = body(Ok(bytes))?;
        let parquet = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            request.parquet_base64.as_bytes(),
        )
        .map_err(|e| ApiError::bad_request(format!("`parquet_base64` is not base64: {e}")))?;
        Ok::<_, ApiError>((request, parquet))
    })
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error while reading the upload",
        )
    })??;
    let runtime = tokio::runtime::Handle::current();
    let name = request.name.clone();
    let rows = blocking(&state, move |d| {
        let staging = tempfile::Builder::new()
            .prefix("upload-")
            .suffix(".parquet")
            .tempfile_in(d.dir().join("data"))
            .map_err(|e| DomainError::io(&d.dir().join("data"), e))?;
        std::fs::write(staging.path(), &parquet).map_err(|e| DomainError::io(staging.path(), e))?;
        runtime
            .block_on(d.register_dataset(
                &actor.id,
                &request.name,
                staging.path(),
                &request.manifest,
            ))
            .map(|i| i.rows)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(unseen_api::DatasetRegistered {
            dataset: name,
            rows: rows as u64,
        }),
    )
        .into_response())
}

async fn list_imports(State(state): State<AppState>, actor: Actor) -> ApiResult {
    actor.require(APPLICATION_READERS, "read imports")?;
    ok(as_user(&state, actor, |b| b.imports()).await?)
}

async fn propose_import(
    State(state): State<AppState>,
    actor: Actor,
    raw: axum::body::Body,
) -> ApiResult {
    actor.require(DEVELOPER, "propose imports")?;
    let bytes = read_large(raw, DATASET_LIMIT).await?;
    let (request, parquet) = tokio::task::spawn_blocking(move || {
        let request: unseen_api::ImportRequest = body(Ok(bytes))?;
        let parquet = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            request.parquet_base64.as_bytes(),
        )
        .map_err(|e| ApiError::bad_request(format!("`parquet_base64` is not base64: {e}")))?;
        Ok::<_, ApiError>((request, parquet))
    })
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error while reading the upload",
        )
    })??;
    let shown = as_user(&state, actor, move |b| {
        let data = b.domain().dir().join("data");
        let staging = tempfile::Builder::new()
            .prefix("import-")
            .suffix(".parquet")
            .tempfile_in(&data)
            .map_err(|e| DomainError::io(&data, e))?;
        std::fs::write(staging.path(), &parquet).map_err(|e| DomainError::io(staging.path(), e))?;
        b.propose_import(
            &request.grant,
            &request.name,
            staging.path(),
            &request.manifest,
        )
    })
    .await?;
    Ok((StatusCode::CREATED, Json(shown)).into_response())
}

async fn decide_import(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    actor.require(ADMIN, "decide imports")?;
    let decision: unseen_api::ImportDecision = body(raw)?;
    ok(as_user(&state, actor, move |b| b.decide_import(&id, &decision)).await?)
}

async fn destroy_dataset(
    State(state): State<AppState>,
    actor: Actor,
    Path(name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    actor.require(ADMIN, "destroy datasets")?;
    let reason: Reason = body(raw)?;
    ok(as_user(&state, actor, move |b| {
        b.destroy_dataset(&name, &reason.reason)
    })
    .await?)
}

async fn publish_marginals(
    State(state): State<AppState>,
    actor: Actor,
    Path(name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    actor.require(ADMIN, "publish dataset marginals")?;
    let request: MarginalsRequest = body(raw)?;
    ok(as_user(&state, actor, move |b| {
        b.publish_marginals(&name, request.epsilon)
    })
    .await?)
}

async fn set_budget(
    State(state): State<AppState>,
    actor: Actor,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    actor.require(ADMIN, "set budgets")?;
    let request: BudgetRequest = body(raw)?;
    ok(as_user(&state, actor, move |b| b.set_budget(&request)).await?)
}

async fn issue_grant(
    State(state): State<AppState>,
    actor: Actor,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    actor.require(ADMIN, "issue grants")?;
    let request: GrantRequest = body(raw)?;
    let issued = as_user(&state, actor, move |b| b.issue_grant(&request)).await?;
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

async fn list_grants(State(state): State<AppState>, actor: Actor) -> ApiResult {
    actor.require(ALL, "list grants")?;
    ok(as_user(&state, actor, |b| b.grants()).await?)
}

async fn show_grant(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> ApiResult {
    actor.require(ALL, "read grants")?;
    ok(as_user(&state, actor, move |b| b.grant(&id)).await?)
}

async fn revoke_grant(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    actor.require(ADMIN, "revoke grants")?;
    let reason: Reason = body(raw)?;
    ok(as_user(&state, actor, move |b| b.revoke_grant(&id, &reason.reason)).await?)
}

async fn list_applications(State(state): State<AppState>, actor: Actor) -> ApiResult {
    actor.require(APPLICATION_READERS, "read grant applications")?;
    ok(as_user(&state, actor, |b| b.applications()).await?)
}

async fn apply(
    State(state): State<AppState>,
    actor: Actor,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    actor.require(DEVELOPER, "apply for grants")?;
    let request: GrantRequest = body(raw)?;
    let shown = as_user(&state, actor, move |b| b.apply(&request)).await?;
    Ok((StatusCode::CREATED, Json(shown)).into_response())
}

async fn show_application(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> ApiResult {
    actor.require(APPLICATION_READERS, "read grant applications")?;
    ok(as_user(&state, actor, move |b| b.application(&id)).await?)
}

async fn amend_application(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    actor.require(DEVELOPER, "amend grant applications")?;
    let request: GrantRequest = body(raw)?;
    ok(as_user(&state, actor, move |b| b.amend_application(&id, &request)).await?)
}

async fn withdraw_application(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    actor.require(DEVELOPER, "withdraw grant applications")?;
    let reason = optional_reason(raw)?;
    ok(as_user(&state, actor, move |b| {
        b.withdraw_application(&id, &reason.reason)
    })
    .await?)
}

async fn pre_review_application(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    actor.require(ADMIN, "pre-review grant applications")?;
    let pre_review: unseen_api::PreReview = body(raw)?;
    ok(as_user(&state, actor, move |b| {
        b.pre_review_application(&id, &pre_review)
    })
    .await?)
}

async fn decide_application(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    actor.require(ADMIN, "decide grant applications")?;
    let decision: unseen_api::ApplicationDecision = body(raw)?;
    ok(as_user(&state, actor, move |b| b.decide_application(&id, &decision)).await?)
}

async fn application_feedback(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    actor.require(DEVELOPER, "give feedback on grants")?;
    let feedback: unseen_api::ApplicationFeedback = body(raw)?;
    ok(as_user(&state, actor, move |b| {
        b.application_feedback(&id, &feedback)
    })
    .await?)
}

async fn grant_budget(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> ApiResult {
    actor.require(ALL, "read budgets")?;
    ok(as_user(&state, actor, move |b| b.grant_budget(&id)).await?)
}

async fn grant_usage(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> ApiResult {
    actor.require(
        &[Role::Admin, Role::Auditor, Role::Reviewer, Role::Developer],
        "read grant usage",
    )?;
    ok(as_user(&state, actor, move |b| b.grant_usage(&id)).await?)
}

async fn upload_module(
    State(state): State<AppState>,
    actor: Actor,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    raw: axum::body::Body,
) -> ApiResult {
    actor.require(DEVELOPER, "upload modules")?;
    let query =
        query.map_err(|e| ApiError::bad_request(format!("{e}; use ?kind=job or ?kind=udf")))?;
    let udf = match query.kind.as_deref() {
        None | Some("job") => false,
        Some("udf") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown module kind `{other}`; use ?kind=job or ?kind=udf"
            )));
        }
    };
    let bytes = read_large(raw, MODULE_LIMIT).await?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "the body is empty; send the module's wasm bytes",
        ));
    }
    let body = if udf {
        let (sha, functions) =
            blocking(&state, move |d| d.upload_udf_module(&actor.id, &bytes)).await?;
        unseen_api::ModuleUploaded {
            module: sha,
            kind: "udf".into(),
            functions: Some(functions),
        }
    } else {
        let sha = blocking(&state, move |d| d.upload_module(&actor.id, &bytes)).await?;
        unseen_api::ModuleUploaded {
            module: sha,
            kind: "job".into(),
            functions: None,
        }
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// An outcome in full: for `dev run`, whose data is mock data.
pub(crate) fn outcome_json(o: &JobOutcome) -> Value {
    json!({
        "job": o.job_id, "status": o.status, "stopped_by": o.stopped_by, "reason": o.reason,
        "ending": o.ending, "error": o.error, "outputs": o.outputs,
        "refusals": o.refusals, "logs": o.logs, "epsilon_spent": o.epsilon_spent,
        "fuel_used": o.fuel_used,
    })
}

async fn submit_job(
    State(state): State<AppState>,
    actor: Actor,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    actor.require(DEVELOPER, "submit jobs")?;
    let request: JobRequest = body(raw)?;
    let wait = request.wait;
    let place = QueuePlace::take(&state.waiting)?;
    let job_id = blocking(&state, move |d| {
        d.submit_job(
            &actor.id,
            &request.grant,
            &request.module,
            request.params,
            &JobExtras {
                udfs: request.udf_modules,
                inputs: request.inputs,
            },
        )
    })
    .await?;
    let runtime = tokio::runtime::Handle::current();
    let queue = Arc::clone(&state.jobs);
    let domain = Arc::clone(&state.domain);
    let id = job_id.clone();
    let run = tokio::spawn(async move {
        // The permit bounds how many jobs run at once; the rest wait here, queued.
        let _place = place;
        let Ok(_permit) = queue.acquire_owned().await else {
            // The service is stopping: the job never starts.
            let reason = "the service stopped before the job started; submit it again";
            let ended = tokio::task::spawn_blocking(move || domain.end_abandoned_job(&id, reason));
            if let Ok(Err(e)) = ended.await {
                tracing::error!(error = %e, "could not record a job the service did not start");
            }
            return Err(());
        };
        let runner = Arc::clone(&domain);
        let job = id.clone();
        let ran = tokio::task::spawn_blocking(move || runner.execute_job(&runtime, &job)).await;
        match &ran {
            Ok(Err(e)) => tracing::warn!(error = %e, "a queued job could not run"),
            Err(_) => {
                // The run panicked: the job must not stay running.
                let reason = "the job stopped on an internal error; nothing was released";
                let cleanup =
                    tokio::task::spawn_blocking(move || domain.end_abandoned_job(&id, reason));
                if let Ok(Err(e)) = cleanup.await {
                    tracing::error!(error = %e, "could not record an abandoned job");
                }
            }
            Ok(Ok(_)) => {}
        }
        Ok(ran)
    });
    if !wait {
        return Ok((
            StatusCode::ACCEPTED,
            Json(unseen_api::JobQueued {
                job: job_id,
                status: crate::JobStatus::Queued,
            }),
        )
            .into_response());
    }
    // Dropped with this request if its client goes away first: nobody is
    // left to read the outcome, so the job stops (queued or running).
    let mut gone = ClientGone::job(&state.domain, &job_id);
    let ran = run.await;
    gone.disarm();
    match ran {
        Ok(Ok(Ok(Ok(outcome)))) => ok(crate::backend::developer_outcome(&outcome)),
        Ok(Ok(Ok(Err(e)))) => Err(e.into()),
        Ok(Err(())) => Err(stopping()),
        _ => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("job `{job_id}` stopped unexpectedly; its status says how it ended"),
        )),
    }
}

async fn list_jobs(
    State(state): State<AppState>,
    actor: Actor,
    Query(filter): Query<JobFilter>,
) -> ApiResult {
    actor.require(ALL, "list jobs")?;
    ok(as_user(&state, actor, move |b| b.jobs(filter.grant.as_deref())).await?)
}

async fn show_job(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> ApiResult {
    actor.require(ALL, "read jobs")?;
    ok(as_user(&state, actor, move |b| b.job(&id)).await?)
}

async fn cancel_job(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    actor.require(&[Role::Admin, Role::Developer], "cancel jobs")?;
    let reason = optional_reason(raw)?;
    ok(as_user(&state, actor, move |b| b.cancel_job(&id, &reason.reason)).await?)
}

async fn run_query(
    State(state): State<AppState>,
    actor: Actor,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    actor.require(DEVELOPER, "run queries")?;
    let request: QueryRequest = body(raw)?;
    let runtime = tokio::runtime::Handle::current();
    // A dry run plans the query as a run does, so it waits for a place as
    // a run does: dry runs cannot crowd out the work in the queue.
    let _place = QueuePlace::take(&state.waiting)?;
    let _permit = state.jobs.acquire().await.map_err(|_| stopping())?;
    if request.dry_run {
        return ok(as_user(&state, actor, move |b| b.dry_run(&request)).await?);
    }
    let cancel = unseen_sandbox::Cancel::new();
    let mut gone = ClientGone::query(&cancel);
    let outcome = blocking(&state, move |d| {
        d.run_sql_cancellable(
            &runtime,
            &actor.id,
            &request.grant,
            &request.sql,
            &crate::backend::job_extras(&request.udf_modules, &request.inputs),
            &cancel,
        )
    })
    .await;
    gone.disarm();
    ok(crate::backend::developer_outcome(&outcome?))
}

/// Stops the work of a request that is dropped before it answered: its
/// client went away (hyper drops the request when the connection closes),
/// and nobody would read the answer. Disarmed once the work has ended.
struct ClientGone {
    stop: Option<Box<dyn FnOnce() + Send>>,
}

/// Why work whose client went away was stopped.
const CLIENT_GONE: &str = "the client disconnected before the answer";

impl ClientGone {
    /// For a synchronous query: cancels its job, wherever it is.
    fn query(cancel: &unseen_sandbox::Cancel) -> ClientGone {
        let cancel = cancel.clone();
        ClientGone {
            stop: Some(Box::new(move || cancel.cancel(CLIENT_GONE))),
        }
    }

    /// For a job submitted with `wait`: cancels it, queued or running, as
    /// its submitter could (recorded as `job.cancelled`).
    fn job(domain: &Arc<Domain>, job_id: &str) -> ClientGone {
        let (domain, job) = (Arc::clone(domain), job_id.to_string());
        ClientGone {
            stop: Some(Box::new(move || {
                // Store and ledger writes block: off the async workers.
                drop(tokio::task::spawn_blocking(move || {
                    if let Err(e) = domain.stop_for_client(&job, CLIENT_GONE) {
                        tracing::debug!(job = %job, error = %e, "a job whose client left had already ended");
                    }
                }));
            })),
        }
    }

    fn disarm(&mut self) {
        self.stop = None;
    }
}

impl Drop for ClientGone {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

async fn run_extract(
    State(state): State<AppState>,
    actor: Actor,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    actor.require(DEVELOPER, "run extracts")?;
    let request: ExtractRequest = body(raw)?;
    let _place = QueuePlace::take(&state.waiting)?;
    let _permit = state.jobs.acquire().await.map_err(|_| stopping())?;
    ok(as_user(&state, actor, move |b| b.extract(&request)).await?)
}

async fn review_queue(State(state): State<AppState>, actor: Actor) -> ApiResult {
    actor.require(REVIEWER, "read the review queue")?;
    ok(as_user(&state, actor, |b| b.review_queue()).await?)
}

async fn show_output(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> ApiResult {
    actor.require(REVIEWER, "read quarantined outputs")?;
    ok(as_user(&state, actor, move |b| b.output(&id)).await?)
}

async fn decide(
    state: AppState,
    actor: Actor,
    id: String,
    raw: Result<Bytes, BytesRejection>,
    approve: bool,
) -> ApiResult {
    actor.require(REVIEWER, "review outputs")?;
    let reason: Reason = body(raw)?;
    let mut decision = as_user(&state, actor, move |b| {
        b.review(&id, approve, &reason.reason)
    })
    .await?;
    // Where the release file lies on the server's disk is not the
    // reviewer's business.
    decision.path = None;
    ok(decision)
}

async fn approve_output(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    decide(state, actor, id, raw, true).await
}

async fn reject_output(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    decide(state, actor, id, raw, false).await
}

async fn download_release(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> ApiResult {
    actor.require(DEVELOPER, "download releases")?;
    let file = blocking(&state, move |d| d.download_release(&actor.id, &id)).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], file).into_response())
}

/// The ledger directory, settled for reading, and its public key.
pub(crate) fn ledger_key(
    domain: &Domain,
) -> Result<(PathBuf, unseen_ledger::PublicKey), DomainError> {
    domain.settle_ledger()?;
    let key = crate::audit::read_public_key(domain.dir(), None)?;
    Ok((domain.dir().join("ledger"), key))
}

async fn verify_ledger(State(state): State<AppState>, actor: Actor) -> ApiResult {
    actor.require(OVERSIGHT, "verify the ledger")?;
    let report = blocking(&state, |d| {
        let (dir, key) = ledger_key(d)?;
        unseen_ledger::verify_dir(&dir, &key)
            .map_err(|e| DomainError::LedgerUnverified(e.to_string()))
    })
    .await?;
    ok(unseen_api::LedgerVerified {
        ok: true,
        entries: report.size,
        root: report.root_hex,
    })
}

/// The store compared with what the ledger implies; `differences` is
/// empty when they agree.
async fn reconcile_ledger(State(state): State<AppState>, actor: Actor) -> ApiResult {
    actor.require(OVERSIGHT, "reconcile the store with the ledger")?;
    ok(as_user(&state, actor, |b| b.reconcile()).await?)
}

async fn public_key(State(state): State<AppState>, actor: Actor) -> ApiResult {
    actor.require(ALL, "read the ledger public key")?;
    let key = blocking(&state, |d| ledger_key(d).map(|(_, k)| k.to_hex())).await?;
    ok(unseen_api::PublicKey { public_key: key })
}

/// The current signed checkpoint (C2SP signed note), for anyone who will
/// later check proofs or `ledger verify --since` against it. Not for
/// developers: its size grows with every ledger entry as it is written, so
/// watching it would time their jobs' queries and ends (a release bundle
/// carries the checkpoint its proofs need).
async fn checkpoint(State(state): State<AppState>, actor: Actor) -> ApiResult {
    actor.require(OVERSEERS, "read the ledger checkpoint")?;
    let note = blocking(&state, |d| d.ledger_checkpoint()).await?;
    ok(unseen_api::Checkpoint { checkpoint: note })
}

async fn query_ledger(
    State(state): State<AppState>,
    actor: Actor,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    actor.require(OVERSIGHT, "query the ledger")?;
    let request: LedgerQuery = body(raw)?;
    let runtime = tokio::runtime::Handle::current();
    let rows = blocking(&state, move |d| {
        let (dir, key) = ledger_key(d)?;
        let ledger = crate::audit::load_verified(&dir, &key)?;
        let batches = runtime.block_on(crate::audit::query(&ledger.entries, &request.sql))?;
        crate::cli::batches_json(&batches).map_err(|e| DomainError::Internal(e.to_string()))
    })
    .await?;
    ok(unseen_api::LedgerRows { rows })
}

async fn disclosure(State(state): State<AppState>, actor: Actor) -> ApiResult {
    actor.require(OVERSIGHT, "read the disclosure report")?;
    let report = blocking(&state, |d| {
        let (dir, key) = ledger_key(d)?;
        let ledger = crate::audit::load_verified(&dir, &key)?;
        Ok(crate::audit::disclosure_json(&crate::audit::disclosure(
            &ledger.entries,
        )))
    })
    .await?;
    ok(report)
}

/// The address the server listens on by default: loopback only.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8787))
}

/// A server on its own thread and runtime, on a free loopback port; it
/// stops when dropped. For tests, benchmarks and embedding.
#[derive(Debug)]
pub struct Background {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Serves the API on a free loopback port, as `unseen serve` would
    /// (query limits, the job queue, the stop within a grace period).
    pub fn start(domain: Arc<Domain>, options: ServerOptions) -> std::io::Result<Background> {
        Background::spawn(move |listener, shutdown| serve(domain, listener, options, shutdown))
    }

    /// Serves `app` (a witness, say) on a free loopback port.
    pub fn start_router(
        app: axum::Router,
        limits: crate::conns::ConnectionLimits,
    ) -> std::io::Result<Background> {
        Background::spawn(move |listener, shutdown| {
            // Requests under way get a few seconds to finish once stopped.
            let drain = || tokio::time::sleep(std::time::Duration::from_secs(5));
            crate::conns::serve(listener, app, limits, None, shutdown, drain)
        })
    }

    /// Runs `serve` on its own thread and runtime over a free loopback
    /// port, until the handle is dropped.
    fn spawn<F, S>(serve: S) -> std::io::Result<Background>
    where
        S: FnOnce(
                tokio::net::TcpListener,
                std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
            ) -> F
            + Send
            + 'static,
        F: std::future::Future<Output = std::io::Result<()>>,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, address) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .thread_stack_size(crate::QUERY_THREAD_STACK)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let _ = ready.send(listener.local_addr());
                let shutdown = Box::pin(async move {
                    // Dropped or sent: either way the server stops.
                    let _ = stopped.await;
                });
                if let Err(e) = serve(listener, shutdown).await {
                    tracing::error!(error = %e, "the background server stopped");
                }
            });
        });
        let addr = address
            .recv()
            .map_err(|_| std::io::Error::other("the server thread ended before listening"))??;
        Ok(Background {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The base URL, like `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
