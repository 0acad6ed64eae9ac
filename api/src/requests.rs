//! Request bodies and query strings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `POST /v1/users`: a new user; the answer carries their first token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// The user's id (letters, digits, dots, dashes).
    pub id: String,
    /// Their name as people read it.
    pub name: String,
    /// `admin`, `developer`, `reviewer` or `auditor`.
    pub role: String,
    /// Their organisation.
    #[serde(default)]
    pub org: String,
}

/// Why an action was taken (recorded in the ledger). An empty body is an
/// empty reason where the route allows one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    #[serde(default)]
    pub reason: String,
}

/// `POST /v1/datasets`: a Parquet file and its manifest, registered
/// encrypted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDataset {
    pub name: String,
    /// The manifest, as TOML text.
    pub manifest: String,
    /// The Parquet file, base64.
    pub parquet_base64: String,
}

/// `POST /v1/datasets/{name}/marginals`: publish DP marginals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarginalsRequest {
    /// Epsilon spent on all the marginals together.
    pub epsilon: f64,
}

/// `POST /v1/budgets`: the total epsilon of a dataset's or a developer's
/// budget layer (exactly one of the two).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetRequest {
    #[serde(default)]
    pub dataset: Option<String>,
    #[serde(default)]
    pub developer: Option<String>,
    pub epsilon: f64,
}

/// Query string of `POST /v1/modules`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// `job` (default) or `udf`.
    #[serde(default)]
    pub kind: Option<String>,
}

/// `POST /v1/jobs`: run an uploaded module under a grant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    pub grant: String,
    /// The module's id, as `POST /v1/modules` answered it.
    pub module: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// UDF modules (uploaded with `?kind=udf`) the job's queries may call.
    #[serde(default)]
    pub udf_modules: Vec<String>,
    /// Releases the job's queries may read as tables `release_<id>`.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Wait for the job to end and return its outcome.
    #[serde(default)]
    pub wait: bool,
}

/// Query string of `GET /v1/jobs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobFilter {
    /// Only the jobs of this grant.
    pub grant: Option<String>,
}

/// `POST /v1/queries`: one SQL statement, run (or, with `dry_run`, only
/// planned and costed) under a grant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub grant: String,
    pub sql: String,
    #[serde(default)]
    pub dry_run: bool,
    /// UDF modules (uploaded with `?kind=udf`) the query may call.
    #[serde(default)]
    pub udf_modules: Vec<String>,
    /// Releases the query may read as tables `release_<id>`.
    #[serde(default)]
    pub inputs: Vec<String>,
}

/// Default of [`ExtractRequest::sample`].
pub const DEFAULT_EXTRACT_SAMPLE: f64 = 0.01;

fn default_sample() -> f64 {
    DEFAULT_EXTRACT_SAMPLE
}

/// `POST /v1/extracts`: a masked, k-anonymised sample of rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtractRequest {
    pub grant: String,
    /// Columns to extract; each leaves through its mask rule.
    pub columns: Vec<String>,
    /// Fraction of rows to sample, in (0, 1].
    #[serde(default = "default_sample")]
    pub sample: f64,
}

/// `POST /v1/ledger/query`: read-only SQL over the verified ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LedgerQuery {
    pub sql: String,
}

/// Default and largest per-row instruction cap of a grant's UDFs: the
/// host's own (the sandbox's `DEFAULT_ROW_INSTRUCTIONS`, which the service
/// checks equal at compile time).
pub const DEFAULT_UDF_ROW_INSTRUCTIONS: u64 = 1_000_000;
/// Default of [`GrantRequest::max_open_queries`].
pub const DEFAULT_MAX_OPEN_QUERIES: u32 = 1000;
/// Default of [`GrantRequest::open_query_window`], in seconds (an hour).
pub const DEFAULT_OPEN_QUERY_WINDOW: u32 = 3600;

fn default_query_delta() -> f64 {
    1e-6
}
fn default_query_epsilon() -> f64 {
    0.5
}
fn default_valid_days() -> u32 {
    365
}
fn default_max_open_queries() -> Option<u32> {
    Some(DEFAULT_MAX_OPEN_QUERIES)
}
fn default_open_query_window() -> u32 {
    DEFAULT_OPEN_QUERY_WINDOW
}
fn default_true() -> bool {
    true
}
fn default_approvals() -> u32 {
    1
}
fn default_udf_row_instructions() -> u64 {
    DEFAULT_UDF_ROW_INSTRUCTIONS
}

/// `POST /v1/grants`: what an admin asks for when issuing a grant (the
/// authorization agreement).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// The primary dataset the grant covers.
    pub dataset: String,
    /// Further datasets with the same privacy unit that queries may join to
    /// `dataset` on that unit (for example `residents` to `health_visits`).
    #[serde(default)]
    pub join_datasets: Vec<String>,
    /// The developer it is issued to (in an application, left empty: the
    /// applicant).
    #[serde(default)]
    pub developer: String,
    /// The one named scenario ("one scenario, one review").
    #[serde(default)]
    pub scenario: String,
    /// The purpose within that scenario.
    pub purpose: String,
    /// Total epsilon the grant may spend.
    pub epsilon_total: f64,
    /// Epsilon charged per DP query.
    #[serde(default = "default_query_epsilon")]
    pub query_epsilon: f64,
    /// Validity from now, in days (default 365, at most 3 years unless
    /// `extended_validity`, never more than 5).
    #[serde(default = "default_valid_days")]
    pub valid_days: u32,
    /// Allows a validity beyond 3 years (up to 5).
    #[serde(default)]
    pub extended_validity: bool,
    /// Whether uploaded wasm modules may run.
    #[serde(default = "default_true")]
    pub allow_modules: bool,
    /// Whether one-statement SQL jobs may run.
    #[serde(default = "default_true")]
    pub allow_sql: bool,
    /// Whether masked, k-anonymised row extracts are allowed.
    #[serde(default)]
    pub allow_extracts: bool,
    /// Whether jobs and queries may call uploaded UDF modules.
    #[serde(default)]
    pub allow_udfs: bool,
    /// Instructions a UDF may execute per row under the grant (default
    /// and most: [`DEFAULT_UDF_ROW_INSTRUCTIONS`]); a row that needs more
    /// is NULL. Set it only with `allow_udfs`.
    #[serde(default = "default_udf_row_instructions")]
    pub udf_row_instructions: u64,
    /// Time windows in which the grant may be used (`HH:MM-HH:MM`, UTC).
    #[serde(default)]
    pub windows: Vec<String>,
    /// Further developers who may run jobs under the grant and download
    /// its releases.
    #[serde(default)]
    pub designated: Vec<String>,
    /// Columns the grant covers (empty: all); queries see no other column.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Most jobs and queries the grant may run.
    #[serde(default)]
    pub max_runs: Option<u32>,
    /// Most downloads of its releases.
    #[serde(default)]
    pub max_downloads: Option<u32>,
    /// Whether its releases may be read by later queries of the grant.
    #[serde(default)]
    pub derived_reuse: bool,
    /// Distinct reviewers who must approve an output before it is released.
    #[serde(default = "default_approvals")]
    pub approvals_required: u32,
    /// Total delta for DP partition selection (default 0: none).
    #[serde(default)]
    pub delta_total: f64,
    /// Delta per query that selects partitions (default 1e-6).
    #[serde(default = "default_query_delta")]
    pub query_delta: f64,
    /// Open-column queries allowed per `open_query_window` seconds
    /// (default 1000; 0 allows none; `null` is no limit).
    #[serde(default = "default_max_open_queries")]
    pub max_open_queries: Option<u32>,
    /// The window of `max_open_queries`, in seconds (default 3600).
    #[serde(default = "default_open_query_window")]
    pub open_query_window: u32,
}

impl GrantRequest {
    /// A request with the defaults for everything but the essentials.
    pub fn new(dataset: &str, developer: &str, purpose: &str, epsilon_total: f64) -> Self {
        GrantRequest {
            dataset: dataset.to_string(),
            join_datasets: Vec::new(),
            delta_total: 0.0,
            query_delta: default_query_delta(),
            developer: developer.to_string(),
            scenario: String::new(),
            purpose: purpose.to_string(),
            epsilon_total,
            query_epsilon: default_query_epsilon(),
            valid_days: default_valid_days(),
            extended_validity: false,
            allow_modules: true,
            allow_sql: true,
            allow_extracts: false,
            allow_udfs: false,
            udf_row_instructions: default_udf_row_instructions(),
            windows: Vec::new(),
            designated: Vec::new(),
            columns: Vec::new(),
            max_runs: None,
            max_downloads: None,
            derived_reuse: false,
            approvals_required: default_approvals(),
            max_open_queries: default_max_open_queries(),
            open_query_window: default_open_query_window(),
        }
    }
}
