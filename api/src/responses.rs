//! Response bodies.
//!
//! Users, datasets, grants and jobs are the typed records of
//! [`crate::views`]. Outputs, usage, ledger rows and reports are still
//! carried as JSON objects (`serde_json::Value` here); the bodies around
//! them are typed.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Every error: a status and a message that says what was wrong and what
/// to do. Never a value of the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// The HTTP status, again.
    pub status: u16,
    pub message: String,
}

/// `GET /v1/health`: the store and the ledger answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub ok: bool,
}

/// `GET /v1/ready`: whether the service can do its work (503 when not):
/// each part (`store`, `ledger`, `keys`) is `ok` or says what is wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    pub ready: bool,
    pub checks: std::collections::BTreeMap<String, String>,
}

/// `GET /v1/me`: who the token belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub user: String,
    pub role: crate::Role,
}

/// What a running `unseen` was built from, and the SHA-256 of its binary:
/// recorded in the ledger when the service starts and in every release
/// document it signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildRecord {
    /// SHA-256 of the executable file, read when the process measured itself.
    pub binary_sha256: String,
    pub version: String,
    /// The git commit it was built from (`unknown` outside a checkout);
    /// uncommitted changes are not marked, the binary's hash is what
    /// identifies the code.
    pub git_commit: String,
    /// SHA-256 of `Cargo.lock`: every dependency's exact version.
    pub cargo_lock_sha256: String,
    pub wasmtime: String,
    pub datafusion: String,
    pub opendp: String,
}

/// The format every attestation carries.
pub const ATTESTATION_FORMAT: &str = "unseen-attestation/1";

/// `GET /v1/attestation`: a statement of the running build, signed by the
/// ledger key (`unseen attest`; verified offline by `unseen attest verify`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    /// Always [`ATTESTATION_FORMAT`].
    pub format: String,
    pub statement: AttestationStatement,
    /// Base64 Ed25519 signature by the ledger key of `unseen attestation
    /// v1\n` followed by the statement as compact JSON, fields in order.
    pub signature: String,
}

/// What an [`Attestation`] states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttestationStatement {
    pub build: BuildRecord,
    /// The ledger entry (`service.started`) that recorded this build when
    /// the process started; `None` for a command run on the data directory.
    pub started_entry: Option<u64>,
    /// When the statement was made (RFC 3339). (No ledger size: it grows
    /// with every query, and developers may read this.)
    pub at: String,
    /// The ledger key that signed it (hex, as in `ledger.pub`).
    pub public_key: String,
    /// The caller's challenge, so an old statement cannot be replayed.
    pub nonce: Option<String>,
}

/// A user and a new token of theirs (shown once; only its hash is kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserToken {
    pub user: String,
    pub token: String,
}

/// `POST /v1/users/{id}/disable`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserDisabled {
    pub user: String,
    pub disabled: bool,
}

/// `GET /v1/users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Users {
    pub users: Vec<crate::UserView>,
}

/// `GET /v1/datasets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Datasets {
    pub datasets: Vec<crate::DatasetView>,
}

/// `POST /v1/datasets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DatasetRegistered {
    pub dataset: String,
    pub rows: u64,
}

/// `POST /v1/datasets/{name}/destroy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DatasetDestroyed {
    pub dataset: String,
    pub destroyed: bool,
}

/// `POST /v1/datasets/{name}/marginals`: the DP marginals published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Marginals {
    #[schema(value_type = Object)]
    pub marginals: Value,
}

/// `POST /v1/budgets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BudgetSet {
    /// `dataset` or `developer`.
    pub layer: String,
    /// The dataset or developer whose layer was set.
    pub id: String,
    pub epsilon_total: f64,
}

/// `POST /v1/grants`: the new grant's id and its record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GrantIssued {
    pub grant: String,
    pub details: crate::Grant,
}

/// `GET /v1/grants`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Grants {
    pub grants: Vec<crate::Grant>,
}

/// `GET /v1/grants/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GrantShown {
    pub grant: crate::Grant,
}

/// `POST /v1/grants/{id}/revoke`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GrantRevoked {
    pub grant: String,
    pub revoked: bool,
    /// Running or queued jobs stopped by the revocation.
    pub jobs_stopped: u64,
}

/// `GET /v1/grants/{id}/budget`: the grant's spend and its layers'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GrantBudget {
    pub grant: String,
    pub epsilon_spent: f64,
    pub epsilon_left: f64,
    pub delta_spent: f64,
    pub delta_total: f64,
    /// The grant, dataset and developer layers.
    pub layers: Vec<crate::BudgetStatus>,
}

/// `GET /v1/grants/{id}/usage`: runs, downloads and metering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub usage: crate::GrantUsage,
}

/// `POST /v1/modules`: the module's id (its SHA-256), to name it in
/// [`crate::JobRequest::module`] or `udf_modules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModuleUploaded {
    pub module: String,
    /// `job` or `udf`.
    pub kind: String,
    /// The SQL names of a UDF module's functions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<Vec<String>>,
}

/// `POST /v1/jobs` without `wait`: the job is queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobQueued {
    pub job: String,
    /// `queued`.
    pub status: crate::JobStatus,
}

/// A job's quarantined outcome output, which a reviewer decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuarantinedOutcome {
    pub output: String,
    /// `quarantined`.
    pub review: String,
}

/// How a job, query or extract ended, as its developer may see it: the
/// status the service decided, the host's reason and the spend. What a
/// guest computed (exit code, logs, refusals, metering, outputs) is in the
/// outcome output, for review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeveloperOutcome {
    pub job: String,
    /// `finished`, `stopped` or `refused` (`running` until its shown end).
    pub status: crate::JobStatus,
    /// What stopped it (`fuel`, `deadline`, `memory`, `cancelled`,
    /// `grant revoked`, ...), when `stopped`.
    pub stopped_by: Option<String>,
    /// The host's reason, when `stopped` or `refused`.
    pub reason: Option<String>,
    pub epsilon_spent: f64,
    /// Quarantined outputs of a SQL job or extract (none shown for a
    /// module job: they are in its outcome).
    pub outputs: Vec<String>,
    /// A module job's outcome output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<QuarantinedOutcome>,
    /// What is withheld from the developer until review, and where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withheld: Option<String>,
    /// An extract's protection: masks, generalisation and k.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub protection: Option<Value>,
}

/// `GET /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Jobs {
    pub jobs: Vec<crate::JobView>,
}

/// `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobShown {
    pub job: crate::JobView,
}

/// `POST /v1/jobs/{id}/cancel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobCancelled {
    pub job: String,
    /// `cancelled` (it was queued) or `stopping` (it stops at its next
    /// epoch tick).
    pub state: String,
}

/// `GET /v1/reviews`: the quarantine queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReviewQueue {
    #[schema(value_type = Vec<Object>)]
    pub outputs: Vec<Value>,
}

/// `GET /v1/outputs/{id}`: a quarantined output as its reviewer sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OutputShown {
    pub name: String,
    pub kind: String,
    pub status: String,
    /// Columns and rows, with confidence intervals of noised values.
    #[schema(value_type = Object)]
    pub table: Value,
    /// The automatic checks' findings, by column and row, never a value.
    #[schema(value_type = Vec<Object>)]
    pub findings: Value,
    #[schema(value_type = Object)]
    pub disclosure: Value,
}

/// `POST /v1/outputs/{id}/approve` and `/reject`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReviewDecision {
    pub output: String,
    pub status: String,
    /// The release an approval made, once the approvals the grant needs
    /// are in.
    pub release: Option<String>,
    /// The signed release document.
    #[schema(value_type = Option<Object>)]
    pub document: Option<Value>,
    /// Where the signed release was written, when the review ran on the
    /// data directory's own host (never sent by a server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// `GET /v1/ledger/verify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LedgerVerified {
    pub ok: bool,
    pub entries: u64,
    /// The Merkle root, hex.
    pub root: String,
}

/// `GET /v1/ledger/public-key`: the key auditors verify with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PublicKey {
    /// Ed25519, 64 hex digits.
    pub public_key: String,
}

/// `GET /v1/ledger/checkpoint`: the current signed checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Checkpoint {
    /// A C2SP signed note.
    pub checkpoint: String,
}

/// `POST /v1/ledger/query`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LedgerRows {
    #[schema(value_type = Vec<Object>)]
    pub rows: Value,
}
