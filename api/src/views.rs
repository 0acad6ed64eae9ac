//! The records the API shows: users, datasets, grants and jobs, as the
//! service keeps them and every client reads them. Defined here, once:
//! the core builds them, the server sends them, clients read them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A role a user holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Developer,
    Reviewer,
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Reviewer => "reviewer",
            Role::Auditor => "auditor",
        }
    }

    /// The role a word names; the error says which words there are.
    pub fn parse(s: &str) -> Result<Role, String> {
        Ok(match s {
            "admin" => Role::Admin,
            "developer" => Role::Developer,
            "reviewer" => Role::Reviewer,
            "auditor" => Role::Auditor,
            other => {
                return Err(format!(
                    "role `{other}` is unknown; use admin, developer, reviewer or auditor"
                ));
            }
        })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that widths in format strings apply.
        f.pad(self.as_str())
    }
}

/// A user as listed (no token, only when it was issued).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub org: String,
    pub created_at: String,
    pub disabled: bool,
    pub token_issued_at: Option<String>,
}

/// A registered dataset as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DatasetView {
    pub name: String,
    pub manifest_version: i64,
    pub rows: i64,
    pub registered_by: String,
    pub registered_at: String,
    pub epsilon_total: Option<f64>,
    pub epsilon_spent: f64,
    pub destroyed_at: Option<String>,
}

/// A grant as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Grant {
    pub id: String,
    /// The primary dataset: extracts read it, and it names the grant.
    pub dataset: String,
    /// Further datasets about the same privacy unit, which DP aggregates
    /// may join to the primary one on that unit.
    pub join_datasets: Vec<String>,
    pub developer: String,
    pub scenario: String,
    pub purpose: String,
    pub epsilon_total: f64,
    pub epsilon_spent: f64,
    pub query_epsilon: f64,
    pub issued_at: String,
    pub expires_at: String,
    pub revoked_at: Option<String>,
    pub allow_modules: bool,
    pub allow_sql: bool,
    pub allow_extracts: bool,
    /// Whether jobs and queries may call UDF modules (which see raw
    /// conditional values inside the engine, never outside it).
    pub allow_udfs: bool,
    /// Instructions a UDF may execute on one row under this grant (the
    /// provider's cap, at most the host's): a row that needs more is NULL.
    /// It also bounds how much one row can change a query's duration.
    pub udf_row_instructions: u64,
    /// UTC windows `HH:MM-HH:MM` in which jobs may start; empty is any time.
    pub windows: Vec<String>,
    /// Users besides the developer who may run jobs and download releases.
    pub designated: Vec<String>,
    /// Columns the grant covers; empty is every column of the dataset.
    pub columns: Vec<String>,
    pub max_runs: Option<u32>,
    pub runs: u32,
    pub max_downloads: Option<u32>,
    pub downloads: u32,
    /// Whether released outputs may be reused as inputs of later work.
    pub derived_reuse: bool,
    /// Independent approvals a release needs (1 or 2).
    pub approvals_required: u32,
    /// Total delta the grant may spend on DP partition selection (0: none,
    /// so group keys need a public domain).
    pub delta_total: f64,
    /// Delta charged per query that selects partitions.
    pub query_delta: f64,
    pub delta_spent: f64,
    /// Open-column queries (released without noise, so never charged
    /// epsilon) the grant allows per `open_query_window` seconds; `None` is
    /// no limit (grants issued before the limit existed).
    pub max_open_queries: Option<u32>,
    pub open_query_window: u32,
    /// Open-column queries run under the grant, ever.
    pub open_queries: u64,
}

impl Grant {
    /// Every dataset the grant covers, the primary one first.
    pub fn datasets(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.dataset.as_str()).chain(self.join_datasets.iter().map(String::as_str))
    }

    /// Whether `user` may run jobs under this grant and download its releases.
    pub fn designates(&self, user: &str) -> bool {
        self.developer == user || self.designated.iter().any(|d| d == user)
    }
}

/// A job's outcome output and its review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OutcomeReview {
    pub output: String,
    /// `quarantined`, `approved`, `rejected` or `pruned` (its logs were
    /// cleared after the retention period, before anyone approved it).
    pub review: String,
}

/// Where a job stands, as everyone who may see it sees it: `queued`,
/// `running`, then `finished`, `stopped` or `refused` (see the service's visibility rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Finished,
    Stopped,
    Refused,
}

impl JobStatus {
    /// The word the API and the store use.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Finished => "finished",
            JobStatus::Stopped => "stopped",
            JobStatus::Refused => "refused",
        }
    }

    /// The status a word names, if any.
    pub fn parse(word: &str) -> Option<JobStatus> {
        [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Finished,
            JobStatus::Stopped,
            JobStatus::Refused,
        ]
        .into_iter()
        .find(|s| s.as_str() == word)
    }

    /// Whether the job has ended (nothing about it changes any more).
    pub fn has_ended(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that widths in format strings apply.
        f.pad(self.as_str())
    }
}

/// How a run itself ended, in the job record: what a guest chose (whether
/// it fails) is part of it, so a developer sees it only once reviewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunEnding {
    /// Ran to its end and returned 0 (or, without a guest, finished).
    Succeeded,
    /// Returned an error, or was refused or failed before or around the run.
    Failed,
    /// Trapped: on its own, or stopped by a sandbox limit.
    Trapped,
    /// Stopped by a cancellation or a revocation.
    Cancelled,
}

impl RunEnding {
    /// The word the API and the store use.
    pub fn as_str(self) -> &'static str {
        match self {
            RunEnding::Succeeded => "succeeded",
            RunEnding::Failed => "failed",
            RunEnding::Trapped => "trapped",
            RunEnding::Cancelled => "cancelled",
        }
    }

    /// The ending a word names, if any.
    pub fn parse(word: &str) -> Option<RunEnding> {
        [
            RunEnding::Succeeded,
            RunEnding::Failed,
            RunEnding::Trapped,
            RunEnding::Cancelled,
        ]
        .into_iter()
        .find(|e| e.as_str() == word)
    }
}

impl std::fmt::Display for RunEnding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that widths in format strings apply.
        f.pad(self.as_str())
    }
}

/// A job as a user or an auditor sees it: metadata and metering, never data.
///
/// `status`, `stopped_by`, `reason`, `outcome` and the spend are the same
/// for everyone: the service decides them, not the guest. The rest — how
/// the run itself ended, its error, logs, refusals and metering — is what
/// the guest computed: reviewers, admins and auditors see it from the job
/// record; its developer sees it only once a reviewer approved the job's
/// outcome output, and then exactly as approved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: String,
    pub grant: String,
    pub submitter: String,
    pub module_sha256: Option<String>,
    pub sql: Option<String>,
    pub status: JobStatus,
    /// The limit or cause that stopped the job.
    pub stopped_by: Option<String>,
    /// The host's reason for `stopped` or `refused`.
    pub reason: Option<String>,
    /// The output holding what the guest computed beyond its outputs, and
    /// where its review stands.
    pub outcome: Option<OutcomeReview>,
    pub submitted_at: String,
    pub epsilon_spent: f64,
    /// Output ids. A developer sees those of a module job once a reviewer
    /// decided them or approved the job's outcome: how many outputs a
    /// guest emits is its own choice.
    pub outputs: Vec<String>,
    /// The releases of its approved outputs, which its grant's designated
    /// developers download (`release download`); shown with the outputs.
    #[serde(default)]
    pub releases: Vec<String>,
    /// How the run ended (the job record's; withheld from a developer
    /// until reviewed).
    pub ending: Option<RunEnding>,
    pub error: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub fuel_used: Option<i64>,
    pub queries: Option<i64>,
    pub rows_read: Option<i64>,
    pub run_ms: Option<i64>,
    pub logs: Vec<String>,
    pub refusals: Vec<String>,
    /// When the job's end is shown to its developer (milliseconds since
    /// the Unix epoch; see the module documentation). For reviewers and
    /// auditors; a developer's view leaves it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shown_end_ms: Option<i64>,
}

/// Spent and total epsilon of one budget layer above a grant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BudgetStatus {
    /// `grant`, `dataset` or `developer`.
    pub layer: String,
    pub id: String,
    pub spent: f64,
    /// `None` when the layer has no limit.
    pub total: Option<f64>,
}

/// How a grant is used: runs, downloads and metering. What guests chose
/// to compute (queries, fuel, rows, run time, outputs) is shown to admins,
/// auditors and reviewers only (`None` for a developer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GrantUsage {
    pub grant: String,
    pub runs: u32,
    pub max_runs: Option<u32>,
    pub jobs_by_status: std::collections::BTreeMap<String, u64>,
    pub queries: Option<i64>,
    pub fuel_used: Option<i64>,
    pub rows_read: Option<i64>,
    pub run_ms: Option<i64>,
    /// Open-column queries ever run, and within the current window
    /// against the grant's limit.
    pub open_queries: u64,
    pub open_queries_in_window: u64,
    pub max_open_queries: Option<u32>,
    pub open_query_window: u32,
    pub epsilon_spent: f64,
    pub outputs: Option<i64>,
    pub releases: i64,
    pub downloads: u32,
    pub max_downloads: Option<u32>,
}

/// A query's verdict, cost and expected accuracy without reading data or
/// spending (`dry_run`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DryRun {
    pub admitted: bool,
    pub reason: Option<String>,
    pub rule: Option<String>,
    /// Epsilon the query would cost (0 when open or cached).
    pub epsilon: f64,
    pub confidence: f64,
    /// Half-width of each noisy component's interval at `confidence`.
    pub accuracy: Vec<(String, f64)>,
    /// True when an identical release exists and a run would return it free.
    pub cached: bool,
    pub epsilon_spent: f64,
    pub epsilon_left: f64,
}
