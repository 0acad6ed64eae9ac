//! The Unseen service core: datasets, users, grants, jobs, review and
//! releases over one data directory, as typed calls on [`Domain`].
//!
//! It knows no transport: the HTTP server, its client and the command line
//! are adapters over this API in the `unseen` crate, and nothing here
//! depends on clap, axum or ureq.
//!
//! This crate wires the rooms together and owns all IO: the SQLite store,
//! the encrypted data files, the ledger files and the keys. It asks
//! `unseen-policy` what a query may release, runs guests in
//! `unseen-sandbox`, and appends every step to `unseen-ledger`.
//!
//! Invariants:
//! - every change the ledger records is committed to the store together
//!   with a pending record of its entry (`Domain::commit_recorded`, see
//!   [`records`]); an open appends what a crash left unrecorded, so the
//!   store and the ledger agree ([`Domain::reconcile`] checks it);
//! - a query result reaches a guest only after its epsilon is recorded in
//!   the store and in the ledger;
//! - an output leaves quarantine only by the decision of a reviewer who did
//!   not submit the job;
//! - no raw prohibited or conditional value is written to the ledger, a log
//!   line or an error message;
//! - a developer learns that a job which read protected data ended only at
//!   its shown end, a uniformly random delay within one timing quantum after
//!   it did (`jobs`), and every UDF instance serves one query of one job.
#![forbid(unsafe_code)]

pub mod access;
pub mod applications;
pub mod attest;
pub mod audit;
mod budget;
pub mod bundle;
pub mod clock;
pub mod cluster;
pub mod data;
mod datasets;
pub mod dev;
mod extract;
pub mod grants;
mod host;
pub mod imports;
pub mod jobs;
pub mod keyrelease;
pub mod keys;
pub mod marginals;
pub mod metrics;
mod modules;
pub mod reconcile;
pub mod records;
mod releases;
mod review;
mod sorted_hashes;
pub mod store;
pub mod trace;
mod users;
pub mod util;

pub use releases::{release_signing_message, table_from_json, table_json};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;
use serde_json::json;
use unseen_ledger::{EntryDraft, SharedLedger};
use unseen_policy::{Manifest, ManifestErrors, PolicyError};
use unseen_sandbox::{Limits, ModuleKind, Sandbox, SandboxError};

use crate::data::OpenDataset;
use crate::keys::{KeyError, MasterKey};
use crate::records::Change;
use crate::util::{new_id, random_bytes, sha256_hex};

/// Version of the policy rules a release was made under.
pub const POLICY_VERSION: &str = "unseen-policy/1";

/// Why an action failed, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("ledger: {0}")]
    Ledger(#[from] unseen_ledger::LedgerError),
    #[error("manifest has mistakes:\n{0}")]
    Manifest(ManifestErrors),
    #[error("parquet: {0}")]
    Parquet(String),
    #[error("dataset `{dataset}` cannot be read: {reason}")]
    DatasetUnreadable { dataset: String, reason: String },
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("module refused: {0}")]
    Sandbox(#[from] SandboxError),
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("{what} `{id}` does not exist; list them with `unseen {list}`")]
    NotFound {
        what: &'static str,
        id: String,
        list: &'static str,
    },
    #[error("{what} `{id}` already exists; choose another name")]
    Exists { what: &'static str, id: String },
    #[error("user `{actor}` ({role}) may not {action}; this needs the {needed} role")]
    Forbidden {
        actor: String,
        role: String,
        action: &'static str,
        needed: String,
    },
    #[error(
        "user `{reviewer}` submitted job `{job}` and may not review its outputs; another reviewer must decide"
    )]
    SelfReview { reviewer: String, job: String },
    #[error("grant `{grant}` {reason}")]
    Grant { grant: String, reason: String },
    #[error(
        "output `{output}` is {status}, not quarantined; only quarantined outputs can be reviewed"
    )]
    NotQuarantined { output: String, status: String },
    #[error("output `{output}` cannot be approved: {findings}. Reject it with a reason")]
    Blocked { output: String, findings: String },
    #[error("{what} is {value}; {expected}")]
    OutOfRange {
        what: &'static str,
        value: String,
        /// What would do, as an instruction.
        expected: String,
    },
    #[error("name exactly one of {fields}")]
    OneOf { fields: &'static str },
    #[error("time window `{window}` must look like HH:MM-HH:MM in UTC, for example 08:00-18:00")]
    BadTimeWindow { window: String },
    #[error(
        "only an admin may add users; pass the acting admin (the first user of a new data directory must be an admin)"
    )]
    ActingAdminRequired,
    #[error("user `{user}` needs a real name")]
    NameRequired { user: String },
    #[error("user id `{id}` must be ASCII letters, digits, `.`, `_` or `-`")]
    BadUserId { id: String },
    #[error(
        "the manifest describes dataset `{manifest}` but you are registering `{name}`; use the same name"
    )]
    ManifestNameMismatch { manifest: String, name: String },
    #[error("UDF `{name}` of module {module} has the name of a built-in SQL function; rename it")]
    UdfShadowsBuiltin { name: String, module: String },
    #[error("UDF `{name}` is declared by both module {first} and module {second}; use one of them")]
    UdfDeclaredTwice {
        name: String,
        first: String,
        second: String,
    },
    #[error("module refused: {0}")]
    Udf(#[from] unseen_sandbox::udf::UdfError),
    #[error("module {module} was uploaded before as a {stored} module; one module cannot be both")]
    ModuleKindConflict { module: String, stored: String },
    #[error("job `{job}` is not a module job")]
    NotModuleJob { job: String },
    #[error(
        "the store {path} has schema version {found}, but this build uses version {expected}; it was created by another build of unseen: use a new data directory (the ledger of the old one still verifies with `unseen ledger verify`)"
    )]
    StoreVersion {
        path: String,
        found: i64,
        expected: i64,
    },
    #[error(
        "{dir} holds no Unseen store (unseen.db); pass the data directory of the service whose ledger to recover"
    )]
    NoStore { dir: String },
    #[error("ledger verification FAILED: {0}")]
    LedgerUnverified(String),
    #[error("public key {path}: {detail}")]
    BadPublicKey { path: String, detail: String },
    #[error("bundle verification FAILED at {link}: {detail}")]
    BundleBroken { link: String, detail: String },
    #[error("{0}")]
    BadQuery(String),
    #[error("the marginals file {0}")]
    BadMarginals(String),
    #[error(
        "dataset `{dataset}` has no column with a public domain or bounds to publish marginals of"
    )]
    NothingToPublish { dataset: String },
    #[error(
        "the budget of dataset `{dataset}` has less than epsilon {epsilon} left; nothing was spent"
    )]
    BudgetShort { dataset: String, epsilon: f64 },
    #[error("{0}")]
    BadSample(String),
    #[error("release verification FAILED: {0}")]
    ReleaseUnverified(String),
    /// This process could not measure itself.
    #[error("the running build cannot be attested: {0}")]
    Unattested(String),
    #[error("attestation verification FAILED: {0}")]
    AttestationUnverified(String),
    #[error("{0}")]
    BadRole(String),
    #[error("{0}")]
    CannotWrite(String),
    #[error("release table `{name}` {detail}")]
    BadReleaseTable { name: String, detail: String },
    #[error("invalid grant: {0}")]
    BadGrant(#[from] grants::GrantProblem),
    #[error("{0}")]
    BadApplication(#[from] applications::ApplicationProblem),
    #[error(
        "application `{application}` is {status}; only an application that is {expected} can {action}"
    )]
    ApplicationState {
        application: String,
        status: unseen_api::ApplicationStatus,
        action: &'static str,
        expected: String,
    },
    #[error("invalid import: {0}")]
    BadImport(#[from] imports::ImportProblem),
    #[error("import `{import}` is {status}; only a proposed import can be decided")]
    ImportState {
        import: String,
        status: unseen_api::ImportStatus,
    },
    #[error(
        "user `{user}` applied with application `{application}` and may not review it; another admin must"
    )]
    OwnApplication { user: String, application: String },
    #[error("{action} needs a reason{examples}")]
    ReasonRequired {
        action: &'static str,
        /// Examples of reasons, with their leading punctuation, or empty.
        examples: &'static str,
    },
    #[error("user `{user}` is disabled")]
    UserDisabled { user: String },
    #[error("`{user}` is the last enabled admin; add another admin first")]
    LastAdmin { user: String },
    #[error("job `{job}` already ended; only queued or running jobs can be cancelled")]
    JobEnded { job: String },
    #[error("dataset `{name}` was already destroyed at {at}")]
    DatasetDestroyed { name: String, at: String },
    #[error(
        "`{reviewer}` already approved output `{output}`; its grant needs {required} approvals by different reviewers"
    )]
    AlreadyApproved {
        reviewer: String,
        output: String,
        required: u32,
    },
    #[error("{what} is damaged ({detail}); restore the data directory from a backup")]
    Damaged { what: String, detail: String },
    #[error("internal error: {0}; nothing was released, and the ledger records what was done")]
    Internal(String),
    #[error("witness {url}: {reason}")]
    Witness { url: String, reason: String },
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    #[error(
        "executor name `{name}` is not valid: use 1 to 64 lowercase letters, digits, `-` or `_`, other than `service` and `scheduler` (the names of the cluster's other members)"
    )]
    BadExecutorName { name: String },
    #[error("the cluster engine: {0}")]
    Cluster(String),
    #[error(
        "{path} has mode {mode:03o}: its group or others may read it, but the data directory holds keys and quarantined outputs for its owner alone; if nobody else has read it, run `chmod {fix} {path}` (or `chmod -R go-rwx` on the data directory)"
    )]
    Exposed {
        path: String,
        mode: u32,
        fix: &'static str,
    },
}

impl DomainError {
    /// An IO error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        DomainError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Refuses unless `role` is one of `allowed`; the error names the roles
/// that would do. Shared by the domain and the HTTP layer.
/// The role of enabled user `user` in the store `db`.
fn role_in(db: &Connection, user: &str) -> Result<Role, DomainError> {
    match store::users::role_and_disabled(db, user)? {
        Some((role, false)) => Role::parse(&role).map_err(|detail| DomainError::Damaged {
            what: format!("the store's record of user `{user}`"),
            detail,
        }),
        Some(_) => Err(DomainError::UserDisabled {
            user: user.to_string(),
        }),
        None => Err(DomainError::NotFound {
            what: "user",
            id: user.to_string(),
            list: "user list",
        }),
    }
}

pub fn check_role(
    actor: &str,
    role: Role,
    allowed: &[Role],
    action: &'static str,
) -> Result<(), DomainError> {
    if allowed.contains(&role) {
        return Ok(());
    }
    let needed: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
    Err(DomainError::Forbidden {
        actor: actor.to_string(),
        role: role.as_str().to_string(),
        action,
        needed: needed.join(" or "),
    })
}

/// Longest open-query window a grant may set, in seconds (31 days).
pub const MAX_OPEN_QUERY_WINDOW: u32 = 31 * 86_400;

pub use unseen_api::{
    BudgetStatus, DEFAULT_MAX_OPEN_QUERIES, DEFAULT_OPEN_QUERY_WINDOW, DryRun, Grant, GrantRequest,
    GrantUsage, Role,
};

/// The largest per-row instruction cap a grant may set: the host's own
/// (`unseen_sandbox::Limits::udf_row_instructions`), which keeps a batch of
/// rows that all use it well inside the host's wall-clock guard.
pub const MAX_UDF_ROW_INSTRUCTIONS: u64 = unseen_sandbox::DEFAULT_ROW_INSTRUCTIONS;

// A grant's default cap, as the API documents it, is the most the host
// allows.
const _: () = assert!(unseen_api::DEFAULT_UDF_ROW_INSTRUCTIONS == MAX_UDF_ROW_INSTRUCTIONS);

/// How a job run ended, in full: for the operator's own code (the demo,
/// benchmarks, `dev run`) and reviewers. What its developer may see of it
/// is [`server::developer_outcome`].
#[derive(Debug, Clone)]
pub struct JobOutcome {
    pub job_id: String,
    /// What everyone sees: finished, stopped or refused (see
    /// [`jobs::Visible`]).
    pub status: jobs::JobStatus,
    /// The limit or cause that stopped it (`fuel`, `deadline`, `memory`,
    /// `cancelled`, `grant revoked`, ...), when `stopped`.
    pub stopped_by: Option<String>,
    /// The host's own reason when `stopped` or `refused`: decided without
    /// the guest, so shown to the developer.
    pub reason: Option<String>,
    /// How the run itself ended (none for a job whose end its viewer may
    /// not see yet). A guest chooses whether it fails, so this is reviewed.
    pub ending: Option<jobs::RunEnding>,
    /// The full error (exit code and the guest's message included).
    pub error: Option<String>,
    /// Output ids placed in quarantine.
    pub outputs: Vec<String>,
    /// The quarantined output holding what the guest computed beyond its
    /// outputs (module jobs whose guest ran).
    pub outcome_output: Option<String>,
    /// True for module jobs: a guest chose what the run did.
    pub guest: bool,
    /// Refusals the job met, as the guest saw them.
    pub refusals: Vec<String>,
    /// Guest log lines.
    pub logs: Vec<String>,
    pub epsilon_spent: f64,
    pub fuel_used: u64,
}

impl JobOutcome {
    /// Whether the run ended [`RunEnding::Succeeded`].
    pub fn succeeded(&self) -> bool {
        self.ending == Some(RunEnding::Succeeded)
    }

    /// How the run ended, as a word (`not shown yet` when its viewer may
    /// not see it).
    pub fn ending_word(&self) -> &'static str {
        self.ending.map_or("not shown yet", RunEnding::as_str)
    }
}

/// A budget layer above grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetLayer {
    Dataset,
    Developer,
}

/// Marks a release cache row holding a [`unseen_policy::Measured`] (JSON).
const MEASUREMENT_TAG: &[u8] = b"measurement/1\n";

/// A cached release: the measurement (rendered for each query that asks
/// for it), or, in stores written before, the first query's table.
#[derive(Debug, Clone)]
pub(crate) enum CachedRelease {
    Measured(unseen_policy::Measured),
    Table(udf_sdk::QueryResult),
}

/// One measurement's privacy cost and the budget layers it is charged to.
#[derive(Debug, Clone)]
pub(crate) struct Spend<'a> {
    /// The grant charged, with its developer; `None` for a spend of the
    /// data provider's own (published marginals), charged to datasets only.
    pub grant: Option<&'a str>,
    /// The datasets the measurement reads.
    pub datasets: &'a BTreeSet<String>,
    pub epsilon: f64,
    /// Budgeted at the grant only (partition selection).
    pub delta: f64,
    /// The job and query charged, kept in `spends` under a grant.
    pub job: &'a str,
    pub query_sha: &'a str,
}

/// The budget layers a DP release is charged to, as the policy's
/// [`unseen_policy::Budget`]: the cost charged is the plan's own
/// ([`unseen_policy::DpPlan::charge`]), through [`Domain::charge`], with
/// its ledger entry (`kind`, `body`) in the same commit.
pub(crate) struct LayerBudget<'a> {
    pub domain: &'a Domain,
    pub actor: &'a str,
    pub kind: &'a str,
    /// The grant charged, with its developer; `None` for the provider's
    /// own spend, charged to datasets only.
    pub grant: Option<&'a str>,
    pub datasets: &'a BTreeSet<String>,
    pub job: &'a str,
    pub query_sha: &'a str,
    pub body: serde_json::Value,
}

/// Why a [`LayerBudget`] refused a charge.
#[derive(Debug)]
pub(crate) enum ChargeRefused {
    /// This layer (and id) had not enough left; nothing was spent.
    Short(&'static str, String),
    /// The store or the ledger failed; nothing was spent.
    Failed(DomainError),
}

impl unseen_policy::Budget for LayerBudget<'_> {
    type Refusal = ChargeRefused;

    fn charge(&self, cost: unseen_policy::Cost) -> Result<(), ChargeRefused> {
        let spend = Spend {
            grant: self.grant,
            datasets: self.datasets,
            epsilon: cost.epsilon,
            delta: cost.delta,
            job: self.job,
            query_sha: self.query_sha,
        };
        match self
            .domain
            .charge(self.actor, self.kind, &spend, self.body.clone())
        {
            Ok(None) => Ok(()),
            Ok(Some((layer, id))) => Err(ChargeRefused::Short(layer, id)),
            Err(e) => Err(ChargeRefused::Failed(e)),
        }
    }
}

/// Charges `spend` at every layer inside `tx`; returns the first layer
/// that was short and its id (the caller then rolls back).
fn charge_layers(
    tx: &rusqlite::Transaction<'_>,
    spend: &Spend<'_>,
    at: &str,
) -> Result<Option<(&'static str, String)>, DomainError> {
    use store::charges;
    let epsilon = spend.epsilon;
    if let Some(grant) = spend.grant
        && !charges::grant_epsilon(tx, grant, epsilon)?
    {
        return Ok(Some(("grant", grant.to_string())));
    }
    for dataset in spend.datasets {
        if !charges::dataset_epsilon(tx, dataset, epsilon)? {
            return Ok(Some(("dataset", dataset.clone())));
        }
    }
    let Some(grant) = spend.grant else {
        return Ok(None);
    };
    let developer = charges::grant_developer(tx, grant)?;
    if !charges::developer_epsilon(tx, &developer, epsilon)? {
        return Ok(Some(("developer", developer)));
    }
    if spend.delta > 0.0 && !charges::grant_delta(tx, grant, spend.delta)? {
        return Ok(Some(("grant delta", grant.to_string())));
    }
    let datasets = serde_json::to_string(spend.datasets).unwrap_or_else(|_| "[]".into());
    charges::record_spend(
        tx,
        &charges::SpendRow {
            job: spend.job,
            grant,
            epsilon,
            delta: spend.delta,
            query_sha256: spend.query_sha,
            at,
            datasets: &datasets,
        },
    )?;
    Ok(None)
}

/// Spends of jobs whose end is not shown yet, by layer (see
/// [`Domain::unshown_spends`]).
#[derive(Debug, Default)]
pub(crate) struct UnshownSpends {
    /// Epsilon and delta, by grant.
    grants: std::collections::HashMap<String, (f64, f64)>,
    datasets: std::collections::HashMap<String, f64>,
    developers: std::collections::HashMap<String, f64>,
}

impl UnshownSpends {
    pub(crate) fn grant(&self, id: &str) -> (f64, f64) {
        self.grants.get(id).copied().unwrap_or_default()
    }
}

/// What a job runs: an uploaded module or one SQL statement.
#[derive(Debug, Clone, Copy)]
enum JobBody<'a> {
    Module(&'a str),
    Sql(&'a str),
    /// A masked extract, described for the record.
    Extract(&'a str),
}

pub use jobs::{JobStatus, RunEnding};

/// An output being decided, released when dropped. Only one process holds
/// a data directory, so an in-memory claim is exclusive.
struct ReviewClaim {
    set: Arc<Mutex<std::collections::HashSet<String>>>,
    output: String,
}

impl ReviewClaim {
    fn take(set: &Arc<Mutex<std::collections::HashSet<String>>>, output: &str) -> Option<Self> {
        lock(set).insert(output.to_string()).then(|| ReviewClaim {
            set: Arc::clone(set),
            output: output.to_string(),
        })
    }
}

impl Drop for ReviewClaim {
    fn drop(&mut self) {
        lock(&self.set).remove(&self.output);
    }
}

/// An output to quarantine: where it comes from and what it is.
pub(crate) struct Quarantine<'a> {
    pub job_id: &'a str,
    pub grant_id: &'a str,
    /// The grant's datasets, for the prohibited-value checks.
    pub datasets: &'a [OpenDataset],
    pub name: &'a str,
    /// `table` (emitted by a job), `outcome` (what a guest computed beyond
    /// its outputs) or `extract` (a masked extract).
    pub kind: &'a str,
    /// Findings of checks particular to the kind (extract classes).
    pub extra_findings: Vec<unseen_policy::checks::Finding>,
    /// What the output's disclosure control did, for the reviewer.
    pub disclosure: Option<serde_json::Value>,
}

/// What signing a release needs to know about the approved output.
struct SignRequest<'a> {
    reviewer: &'a str,
    output_id: &'a str,
    job: &'a str,
    submitter: &'a str,
    output_sha: &'a str,
    module_sha: Option<&'a str>,
    job_sql: Option<&'a str>,
    grant_id: &'a str,
    name: &'a str,
    approvers: &'a [String],
    review_index: u64,
    at: &'a str,
}

/// A signed release.
#[derive(Debug, Clone)]
pub struct ReleaseRecord {
    pub id: String,
    pub path: PathBuf,
    pub document: serde_json::Value,
}

/// Where queries set decrypted rows aside when they outgrow their memory.
/// DataFusion's spill files are plaintext Arrow IPC of decrypted rows, so
/// they go only to memory-backed storage (which reaches a disk only
/// through swap), unless the operator says the disk is encrypted.
#[derive(Debug)]
enum Spill {
    /// The data directory's owner-only `spill/`: memory-backed, or allowed
    /// on disk.
    DataDir(PathBuf),
    /// A directory of the process's own on /dev/shm, removed with it.
    Shm(tempfile::TempDir),
    /// Nowhere: a query that outgrows its memory fails (a DP release is
    /// then computed on fixed defaults).
    Disabled,
}

impl Spill {
    fn choose(data_spill: &Path) -> Result<Spill, DomainError> {
        if util::memory_backed(data_spill)? {
            return Ok(Spill::DataDir(data_spill.to_path_buf()));
        }
        if let Some(dir) = util::shm_dir("unseen-spill-") {
            return Ok(Spill::Shm(dir));
        }
        tracing::warn!(
            "no memory-backed /dev/shm and the data directory is on disk: queries that outgrow their memory fail rather than spill decrypted rows to disk (`serve --spill-on-disk` allows it, for an encrypted disk)"
        );
        Ok(Spill::Disabled)
    }

    fn dir(&self) -> Option<PathBuf> {
        match self {
            Spill::DataDir(dir) => Some(dir.clone()),
            Spill::Shm(dir) => Some(dir.path().to_path_buf()),
            Spill::Disabled => None,
        }
    }
}

/// One data directory: store, ledger, keys, data files and the sandbox.
pub struct Domain {
    dir: PathBuf,
    /// Where every time the service stores or compares comes from.
    clock: Arc<dyn clock::Clock>,
    metrics: metrics::CoreMetrics,
    db: Mutex<Connection>,
    /// Flushes the store's log for recorded changes outside `db`'s lock.
    wal: store::durability::WalSync,
    /// Copies the store's log into its database file outside `db`'s lock
    /// (held for its thread, which dropping it stops).
    _checkpoint: store::durability::BackgroundCheckpoint,
    /// Group-committed: concurrent appends share one fsync and one checkpoint.
    ledger: SharedLedger,
    master: MasterKey,
    sandbox: Sandbox,
    /// Compiled modules by SHA-256, so a module is compiled once per process.
    compiled: Mutex<std::collections::HashMap<String, unseen_sandbox::ValidatedModule>>,
    /// Prohibited-value indexes by dataset, opened once (their fences
    /// read; the hashes stay on disk).
    indexes: Mutex<std::collections::HashMap<String, Arc<data::IndexFile>>>,
    /// Outputs a reviewer is deciding right now (see [`ReviewClaim`]).
    reviewing: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Running jobs by id, with their grant and the handle that stops them.
    running: Mutex<std::collections::HashMap<String, (String, unseen_sandbox::Cancel)>>,
    /// Identical measurements being released now (single flight).
    flights: host::Flights,
    /// Admitted aggregates whose releases are cached, so asking again
    /// skips the engine.
    admitted: host::AdmittedReleases,
    /// A lower bound of the ledger's size: the next entry's index is at
    /// least this. Pending records note it, so that finding their entries
    /// after a crash reads only the ledger's tail.
    ledger_floor: std::sync::atomic::AtomicU64,
    /// Records whose entries are written but whose pending rows are not
    /// deleted yet (the next `commit_recorded` deletes them).
    written: Mutex<Vec<String>>,
    /// What one query may use (memory, time, join rows).
    query_limits: std::sync::RwLock<data::QueryLimits>,
    /// Where analysts' queries execute when not here (`serve --engine`).
    remote_engine: std::sync::RwLock<Option<Arc<dyn data::RemoteEngine>>>,
    /// Where queries set decrypted rows aside when they outgrow their
    /// memory (see [`Spill`]), chosen when the first query needs it rather
    /// than at every open.
    spill: std::sync::RwLock<Option<Spill>>,
    /// The threads analysts' queries run on (see [`Domain::engine`]).
    engine: EngineRuntime,
    /// Milliseconds of the quantum of shown end times (see `jobs`).
    timing_quantum_ms: std::sync::atomic::AtomicU64,
    /// Days job logs are kept at least (see [`Domain::prune_job_logs`]).
    log_retention_days: std::sync::atomic::AtomicU32,
    /// The `service.started` entry of this process (see [`Domain::record_start`]).
    started_entry: std::sync::OnceLock<u64>,
}

/// Stack of the threads that plan and run analysts' queries (the engine's,
/// and the server's workers and blocking pool, which plan too). Planning
/// recurses over a query's expressions; `policy` caps their size, and this
/// leaves a wide margin above what the cap allows (tokio's default is
/// 2 MiB).
pub const QUERY_THREAD_STACK: usize = 16 << 20;

/// Operators one query may hold (`unseen_policy::MAX_OPERATORS`).
pub const MAX_QUERY_OPERATORS: usize = unseen_policy::MAX_OPERATORS;

/// A runtime of its own for DataFusion: a query's operators do CPU work
/// that yields only between batches, and on the server's runtime that work
/// would hold up accepting connections, answering other requests and the
/// timers that stop a server within its grace period.
struct EngineRuntime(Option<tokio::runtime::Runtime>);

impl EngineRuntime {
    fn new() -> Result<EngineRuntime, DomainError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_stack_size(QUERY_THREAD_STACK)
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
            .thread_name("unseen-engine")
            .enable_all()
            .build()
            .map_err(|e| DomainError::io(Path::new("query engine threads"), e))?;
        Ok(EngineRuntime(Some(runtime)))
    }
}

impl Drop for EngineRuntime {
    fn drop(&mut self) {
        // A domain may be dropped inside async code, where waiting for the
        // runtime's threads is not allowed; anything still running there was
        // already cancelled and recorded.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domain").field("dir", &self.dir).finish()
    }
}

/// The fields of a ledger entry an operator's log may carry: ids, states,
/// rules and spend. Never the rest of the body (it may hold SQL a developer
/// wrote, with literals) and never anything computed from data.
#[derive(Debug, Default)]
struct LedgerEvent {
    ids: Vec<(&'static str, String)>,
    epsilon: Option<f64>,
}

impl LedgerEvent {
    const ID_FIELDS: [&'static str; 9] = [
        "job",
        "grant",
        "output",
        "release",
        "dataset",
        "user",
        "status",
        "rule",
        "stopped_by",
    ];

    fn of(body: &serde_json::Value) -> LedgerEvent {
        LedgerEvent {
            ids: Self::ID_FIELDS
                .iter()
                .filter_map(|k| body.get(*k)?.as_str().map(|v| (*k, v.to_string())))
                .collect(),
            epsilon: body.get("epsilon").and_then(serde_json::Value::as_f64),
        }
    }

    /// One structured event per transition the ledger records (job
    /// submitted, started, ended; query admitted or refused and charged;
    /// output quarantined; review decided; release signed, ...), at INFO.
    fn field(&self, name: &str) -> Option<&str> {
        self.ids
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    fn log(&self, kind: &str, actor: &str, index: u64) {
        let field = |name: &str| self.field(name);
        tracing::info!(
            target: "unseen::events",
            kind,
            actor,
            entry = index,
            job = field("job"),
            grant = field("grant"),
            output = field("output"),
            release = field("release"),
            dataset = field("dataset"),
            user = field("user"),
            status = field("status"),
            rule = field("rule"),
            stopped_by = field("stopped_by"),
            epsilon = self.epsilon,
            "{kind}"
        );
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave SQLite or the ledger
    // half-written (both are transactional), so the data is still sound.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Domain {
    /// Whether `dir` holds a data directory's store (as [`Domain::open`]
    /// leaves it), without creating or changing anything.
    pub fn is_data_dir(dir: &Path) -> bool {
        dir.join("unseen.db").is_file()
    }

    /// Whether the service can do its work, part by part: the store
    /// answers, the ledger is open and its key signs what its public key
    /// verifies, and the master key wraps and unwraps a data key. Each
    /// part is `Ok` or says what is wrong (never a value or a size).
    pub fn readiness(&self) -> Vec<(&'static str, Result<(), String>)> {
        let store = store::users::count(&lock(&self.db))
            .map(|_| ())
            .map_err(|e| format!("the store does not answer: {e}"));
        let ledger = self
            .ledger
            .head()
            .and_then(|_| {
                let message = b"unseen readiness";
                let signature = self.ledger.sign(message)?;
                let key = self.ledger.public_key()?;
                Ok(key.verify(message, &signature))
            })
            .map_err(|e| format!("the ledger cannot be written: {e}"))
            .and_then(|verified| {
                verified
                    .then_some(())
                    .ok_or_else(|| "the ledger key does not match its public key".to_string())
            });
        let probe = [7u8; 32];
        let keys = match self
            .master
            .unwrap("readiness", &self.master.wrap("readiness", &probe))
        {
            Ok(back) if back == probe => Ok(()),
            Ok(_) => Err("the master key does not unwrap what it wrapped".to_string()),
            Err(e) => Err(format!("the master key cannot unwrap: {e}")),
        };
        vec![("store", store), ("ledger", ledger), ("keys", keys)]
    }

    /// The time now, as RFC 3339 UTC (from the domain's clock).
    pub fn now_rfc3339(&self) -> String {
        self.clock.rfc3339()
    }

    /// Milliseconds since the Unix epoch now (from the domain's clock).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Seconds since the Unix epoch now (from the domain's clock).
    pub fn unix_now(&self) -> u64 {
        self.clock.unix_secs()
    }

    /// Opens a data directory, creating it and its store, keys and ledger on first use.
    pub fn open(dir: &Path) -> Result<Domain, DomainError> {
        Domain::open_with_clock(dir, Arc::new(clock::SystemClock))
    }

    /// [`Domain::open`] reading the time from `clock`.
    pub fn open_with_clock(
        dir: &Path,
        clock: Arc<dyn clock::Clock>,
    ) -> Result<Domain, DomainError> {
        // Owner-only, set explicitly whatever the umask, and checked on
        // every open: local mode must not let other accounts on the host
        // read what only a token holder could read over HTTP.
        util::private_dir(dir)?;
        for sub in ["keys", "data", "ledger", "releases", "cache", "spill"] {
            util::private_dir(&dir.join(sub))?;
        }
        for file in ["unseen.db", "keys/master.key", "ledger/ledger.key"] {
            let path = dir.join(file);
            if path.exists() {
                util::check_private(&path)?;
            }
        }
        let db_path = dir.join("unseen.db");
        let mut db = store::open(&db_path)?;
        let mut ledger = unseen_ledger::Ledger::open(&dir.join("ledger"))?;
        // Before anything else reads either: changes a stopped process
        // committed but did not record are recorded now.
        let reconciled = records::reconcile_pending(&mut db, &mut ledger, &*clock)?;
        if !reconciled.repaired.is_empty() || reconciled.already_recorded > 0 {
            let kinds: Vec<&str> = reconciled
                .repaired
                .iter()
                .map(|(_, k)| k.as_str())
                .collect();
            tracing::warn!(
                repaired = reconciled.repaired.len(),
                already_recorded = reconciled.already_recorded,
                ?kinds,
                "the store held changes a stopped process had not recorded in the ledger; they are recorded now ({})",
                records::RECONCILED_KIND
            );
        }
        let checkpoint = store::durability::BackgroundCheckpoint::start(&db_path, &db)?;
        let ledger_floor = std::sync::atomic::AtomicU64::new(ledger.size());
        let ledger = SharedLedger::new(ledger);
        let master = MasterKey::load_or_create(&dir.join("keys/master.key"))?;
        // Compiled modules are cached on disk, authenticated by a key only
        // this data directory holds, so restarts skip compilation.
        let sandbox = Sandbox::with_cache_dir(Limits::default(), dir.join("cache/modules"))?;
        let domain = Domain {
            dir: dir.to_path_buf(),
            clock,
            metrics: metrics::CoreMetrics::new(),
            db: Mutex::new(db),
            wal: store::durability::WalSync::new(&db_path),
            _checkpoint: checkpoint,
            ledger,
            master,
            sandbox,
            compiled: Mutex::new(std::collections::HashMap::new()),
            running: Mutex::new(std::collections::HashMap::new()),
            indexes: Mutex::new(std::collections::HashMap::new()),
            reviewing: Arc::new(Mutex::new(std::collections::HashSet::new())),
            flights: host::Flights::default(),
            admitted: host::AdmittedReleases::default(),
            ledger_floor,
            written: Mutex::new(Vec::new()),
            query_limits: std::sync::RwLock::new(data::QueryLimits::default()),
            remote_engine: std::sync::RwLock::new(None),
            spill: std::sync::RwLock::new(None),
            engine: EngineRuntime::new()?,
            timing_quantum_ms: std::sync::atomic::AtomicU64::new(
                u64::try_from(jobs::timing_quantum_from_env()?.as_millis()).unwrap_or(u64::MAX),
            ),
            log_retention_days: std::sync::atomic::AtomicU32::new(jobs::log_retention_days()),
            started_entry: std::sync::OnceLock::new(),
        };
        domain.recover_interrupted_jobs()?;
        domain.quarantine_lost_outcomes()?;
        domain.remove_stale_uploads()?;
        Ok(domain)
    }

    /// Marks jobs left `running` or `queued` by a stopped process as failed.
    /// Only one process holds a data directory (the ledger is locked), so
    /// such a job can only have been interrupted. Its spends stay recorded:
    /// they were committed before any result was released.
    fn recover_interrupted_jobs(&self) -> Result<(), DomainError> {
        let interrupted = store::recovery::unfinished_jobs(&lock(&self.db))?;
        for (job, submitter, status) in interrupted {
            let reason = if status == "running" {
                "the service stopped while the job was running"
            } else {
                "the service stopped before the job started; submit it again"
            };
            self.commit_recorded("system", "job.recovered", |tx| {
                store::recovery::fail_interrupted_job(tx, &job, reason, &self.now_rfc3339())?;
                Ok(Change::Record(
                    json!({"job": job, "submitter": submitter, "status": "failed", "visible": "stopped", "reason": reason}),
                    (),
                ))
            })?;
        }
        Ok(())
    }

    /// What one query may use from now on (the server sets it from `serve
    /// --query-memory --query-timeout --max-join-rows`).
    pub fn set_query_limits(&self, limits: data::QueryLimits) {
        *self.query_limits.write().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    /// The runtime analysts' queries and dry runs execute on, apart from
    /// the server's own.
    pub(crate) fn engine(&self) -> tokio::runtime::Handle {
        self.engine
            .0
            .as_ref()
            .expect("the engine runtime lives as long as the domain")
            .handle()
            .clone()
    }

    /// What one query may use.
    pub fn query_limits(&self) -> data::QueryLimits {
        *self.query_limits.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes analysts' queries execute on `engine` from now on (the server
    /// sets it from `serve --engine`).
    pub fn set_remote_engine(&self, engine: Arc<dyn data::RemoteEngine>) {
        *self
            .remote_engine
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(engine);
    }

    /// Lets queries spill into the data directory's `spill/` although it
    /// is on disk (`serve --spill-on-disk`: only for an encrypted disk).
    pub fn allow_spill_on_disk(&self) {
        *self.spill.write().unwrap_or_else(|p| p.into_inner()) =
            Some(Spill::DataDir(self.dir.join("spill")));
    }

    /// Where queries spill now, if anywhere (chosen on first use).
    pub fn spill_dir(&self) -> Result<Option<PathBuf>, DomainError> {
        if let Some(chosen) = &*self.spill.read().unwrap_or_else(|p| p.into_inner()) {
            return Ok(chosen.dir());
        }
        let mut spill = self.spill.write().unwrap_or_else(|p| p.into_inner());
        let chosen = match spill.take() {
            Some(chosen) => chosen,
            None => Spill::choose(&self.dir.join("spill"))?,
        };
        Ok(spill.insert(chosen).dir())
    }

    /// The limits of one analyst's session: the query limits, spilling
    /// where [`Spill`] says, and the remote engine with the executors
    /// enrolled now.
    pub(crate) fn session_limits(&self) -> Result<data::SessionLimits, DomainError> {
        let mut limits = self.query_limits().session(self.spill_dir()?);
        let engine = self
            .remote_engine
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(engine) = engine {
            limits.remote = Some(data::Remote {
                engine,
                executors: self.enrolled_secrets()?,
            });
        }
        Ok(limits)
    }

    /// Deletes plaintext uploads (`data/upload-*`) a killed process left
    /// behind before encrypting them, and spill files (decrypted rows a
    /// query set aside) of queries a killed process was running.
    fn remove_stale_uploads(&self) -> Result<(), DomainError> {
        let spill = self.dir.join("spill");
        let entries = std::fs::read_dir(&spill).map_err(|e| DomainError::io(&spill, e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(|e| DomainError::io(&path, e))?;
        }
        let data = self.dir.join("data");
        let entries = std::fs::read_dir(&data).map_err(|e| DomainError::io(&data, e))?;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("upload-") {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(|e| DomainError::io(&path, e))?;
            }
        }
        Ok(())
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits until the ledger's files cover every entry appended so far
    /// (its checkpoint file is written beside the appends), before
    /// something reads them, such as offline verification.
    pub fn settle_ledger(&self) -> Result<(), DomainError> {
        Ok(self.ledger.settle()?)
    }

    /// Sets the quantum of shown end times: a job that read protected data
    /// is shown to its developer to end up to this long after it did (see
    /// `jobs`). At most [`jobs::MAX_TIMING_QUANTUM`]; zero shows every end
    /// as it happens, which lets developers time their queries.
    pub fn set_timing_quantum(&self, quantum: std::time::Duration) -> Result<(), DomainError> {
        if quantum > jobs::MAX_TIMING_QUANTUM {
            return Err(DomainError::OutOfRange {
                what: "the timing quantum",
                value: format!("{} ms", quantum.as_millis()),
                expected: format!("the most is {} ms", jobs::MAX_TIMING_QUANTUM.as_millis()),
            });
        }
        self.timing_quantum_ms.store(
            u64::try_from(quantum.as_millis()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }

    /// Sets how many days job logs are kept at least (at least
    /// [`jobs::MIN_LOG_RETENTION_DAYS`], six months).
    pub fn set_log_retention_days(&self, days: u32) -> Result<(), DomainError> {
        if days < jobs::MIN_LOG_RETENTION_DAYS {
            return Err(DomainError::OutOfRange {
                what: "the log retention",
                value: format!("{days} days"),
                expected: format!(
                    "logs are kept at least {} days (six months)",
                    jobs::MIN_LOG_RETENTION_DAYS
                ),
            });
        }
        self.log_retention_days
            .store(days, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Days job logs are kept at least now.
    pub fn log_retention_days(&self) -> u32 {
        self.log_retention_days
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The quantum of shown end times now.
    pub fn timing_quantum(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            self.timing_quantum_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Appends a ledger entry for an event that changes nothing in the
    /// store (a refusal, a cached answer, a dry run); durable when this
    /// returns. A change to the store is recorded with
    /// `Domain::commit_recorded` instead, so that both are durable
    /// together.
    pub fn record(
        &self,
        actor: &str,
        kind: &str,
        body: serde_json::Value,
    ) -> Result<u64, DomainError> {
        self.append(actor, kind, self.now_rfc3339(), body)
    }

    /// Appends one entry (group commit) and raises the ledger floor past it.
    fn append(
        &self,
        actor: &str,
        kind: &str,
        time: String,
        body: serde_json::Value,
    ) -> Result<u64, DomainError> {
        let event = LedgerEvent::of(&body);
        let started = std::time::Instant::now();
        // A job's end also counts what the job used (see `metrics`).
        let counted = (kind == "job.ended").then(|| body.clone());
        let receipt = self.ledger.append(EntryDraft {
            kind: kind.to_string(),
            actor: actor.to_string(),
            time,
            body,
        })?;
        self.metrics.recorded(
            kind,
            event.field("rule"),
            started.elapsed().as_secs_f64(),
            counted.as_ref().unwrap_or(&serde_json::Value::Null),
        );
        event.log(kind, actor, receipt.index);
        self.ledger_floor
            .fetch_max(receipt.index + 1, std::sync::atomic::Ordering::Relaxed);
        Ok(receipt.index)
    }

    /// A lower bound of the ledger's size (the next entry's index).
    fn ledger_floor(&self) -> u64 {
        self.ledger_floor.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The ledger's current signed checkpoint (C2SP signed note), once
    /// the `checkpoint` file holds it too (the file is replaced at most
    /// every 50 ms while appends go on), so both read the same.
    pub fn ledger_checkpoint(&self) -> Result<String, DomainError> {
        self.ledger.settle()?;
        Ok(self.ledger.checkpoint_text()?)
    }

    /// Size and root of the ledger.
    pub fn ledger_head(&self) -> Result<unseen_ledger::Head, DomainError> {
        Ok(self.ledger.head()?)
    }

    /// The ledger's current signed checkpoint, its size, and a consistency
    /// proof to it from `from_size` (empty from 0 or from beyond the
    /// ledger), read together, for a witness.
    pub fn ledger_checkpoint_from(
        &self,
        from_size: u64,
    ) -> Result<(String, Vec<unseen_ledger::Hash>, u64), DomainError> {
        let (note, proof, size) = self.ledger.with(|l| {
            let size = l.size();
            let proof = if from_size == 0 || from_size > size {
                Ok(Vec::new())
            } else {
                l.consistency_proof(from_size, size)
            };
            (l.checkpoint_text().to_owned(), proof, size)
        })?;
        Ok((note, proof?, size))
    }

    /// The public key that verifies the ledger's checkpoints.
    pub fn ledger_public_key(&self) -> Result<unseen_ledger::PublicKey, DomainError> {
        Ok(self.ledger.public_key()?)
    }

    /// The admin action for a ledger [`Domain::open`] refuses because it
    /// holds entries nothing proves: checks that `actor` is an enabled
    /// admin, then quarantines those entries and records the cut in the
    /// ledger ([`unseen_ledger::Ledger::recover`]). The service must be
    /// stopped (the ledger is locked while it runs).
    pub fn recover_ledger(
        dir: &Path,
        actor: &str,
    ) -> Result<(unseen_ledger::Ledger, Option<unseen_ledger::Recovery>), DomainError> {
        let db_path = dir.join("unseen.db");
        if !db_path.is_file() {
            return Err(DomainError::NoStore {
                dir: dir.display().to_string(),
            });
        }
        let db = store::open(&db_path)?;
        check_role(
            actor,
            role_in(&db, actor)?,
            &[Role::Admin],
            "recover the ledger",
        )?;
        drop(db);
        Ok(unseen_ledger::Ledger::recover(&dir.join("ledger"), actor)?)
    }

    /// The verdict, cost and expected accuracy of `sql` under a grant,
    /// without reading data or spending.
    pub fn dry_run(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        submitter: &str,
        grant_id: &str,
        sql: &str,
        extras: &jobs::JobExtras,
    ) -> Result<DryRun, DomainError> {
        self.require(submitter, Role::Developer, "dry-run queries")?;
        let grant = self.grant(grant_id)?;
        self.check_grant_usable(&grant, submitter)?;
        self.check_udfs(&grant, &extras.udfs)?;
        let datasets = self.open_grant_datasets(&grant)?;
        let udf_modules = self.job_udfs(&extras.udfs, &grant)?;
        let inputs = self.release_inputs(submitter, &extras.inputs)?;
        let job_host = host::Host {
            domain: Arc::clone(self),
            runtime: self.engine(),
            job_id: String::new(),
            submitter: submitter.to_string(),
            grant,
            datasets,
            udf_modules,
            inputs,
            params: BTreeMap::new(),
            log: Arc::new(Mutex::new(host::JobLog::default())),
            cancel: unseen_sandbox::Cancel::new(),
        };
        let _ = runtime;
        self.engine().block_on(job_host.dry_run(sql))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output carrying a value of a prohibited column cannot be approved,
    /// and the finding never quotes the value.
    #[test]
    fn a_prohibited_value_in_an_output_blocks_approval() {
        use arrow::array::AsArray;
        let dir = tempfile::tempdir().unwrap();
        let (runtime, domain, grant) = residents_domain(dir.path());
        let source = dir.path().join("r.parquet");
        let file = std::fs::File::open(&source).unwrap();
        let mut reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap();
        let batch = reader.next().unwrap().unwrap();
        let name = batch
            .column_by_name("name")
            .unwrap()
            .as_string::<i32>()
            .value(0)
            .to_string();

        let job = domain
            .run_sql(
                runtime.handle(),
                "dev",
                &grant,
                "SELECT gender FROM residents WHERE gender = 'F' LIMIT 1",
                &Default::default(),
            )
            .unwrap();
        let dataset = domain.open_dataset("residents").unwrap();
        let leak =
            udf_sdk::Table::default().with("who", udf_sdk::ColumnValues::Text(vec![name.clone()]));
        let output = domain
            .quarantine("dev", &job.job_id, &grant, &[dataset], "leak", &leak)
            .unwrap();

        let findings = domain.findings(&output).unwrap();
        assert!(
            findings
                .iter()
                .any(|f| f["kind"] == "prohibited_value" && f["blocking"] == true),
            "{findings:?}"
        );
        assert!(!serde_json::to_string(&findings).unwrap().contains(&name));
        let err = domain
            .review("rev", &output, true, "looks fine")
            .unwrap_err();
        assert!(matches!(err, DomainError::Blocked { .. }), "{err}");
        assert!(
            domain
                .review("rev", &output, false, "carries a name")
                .unwrap()
                .is_none()
        );
        // The ordinary output of the same job has no findings and can be approved.
        assert!(domain.findings(&job.outputs[0]).unwrap().is_empty());
        assert!(
            domain
                .review("rev", &job.outputs[0], true, "open column only")
                .unwrap()
                .is_some()
        );
    }

    /// A domain in `dir/d` with 500 generated residents (plaintext at
    /// `dir/r.parquet`) registered, users `admin`, `dev` and `rev`, and a
    /// grant to `dev` of epsilon 3, 1 per query.
    fn residents_domain(dir: &Path) -> (tokio::runtime::Runtime, Arc<Domain>, String) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let domain = Arc::new(Domain::open(&dir.join("d")).unwrap());
        let source = dir.join("r.parquet");
        let kind = unseen_datasets::DatasetKind::Residents;
        unseen_datasets::generate_to_path(
            kind,
            &unseen_datasets::GenerateOptions::new(500, 5),
            &source,
            &mut |_| {},
        )
        .unwrap();
        domain
            .add_user(None, "admin", "A", Role::Admin, "")
            .unwrap();
        domain
            .add_user(Some("admin"), "dev", "D", Role::Developer, "")
            .unwrap();
        domain
            .add_user(Some("admin"), "rev", "R", Role::Reviewer, "")
            .unwrap();
        runtime
            .block_on(domain.register_dataset(
                "admin",
                "residents",
                &source,
                unseen_datasets::manifest_toml(kind),
            ))
            .unwrap();
        let request = GrantRequest {
            query_epsilon: 1.0,
            valid_days: 10,
            ..GrantRequest::new("residents", "dev", "t", 3.0)
        };
        let grant = domain.issue_grant("admin", &request).unwrap();
        (runtime, domain, grant)
    }

    /// A repeated aggregate is remembered once its release is cached and
    /// then answered alike without planning; destroying the dataset's key
    /// forgets every remembered plan (they hold the engine's table, with
    /// the key).
    #[test]
    fn remembered_plans_answer_repeats_and_go_with_a_destroyed_key() {
        let dir = tempfile::tempdir().unwrap();
        let (runtime, domain, grant) = residents_domain(dir.path());
        let sql = "SELECT district, COUNT(*) AS n FROM residents GROUP BY district";
        let mut released = Vec::new();
        for round in 0..3 {
            let job = domain
                .run_sql(runtime.handle(), "dev", &grant, sql, &Default::default())
                .unwrap();
            assert!(job.succeeded(), "{job:?}");
            assert_eq!(job.epsilon_spent, if round == 0 { 1.0 } else { 0.0 });
            released.push(domain.output(&job.outputs[0]).unwrap().2);
            // Remembered from the first answer the cache gave.
            assert_eq!(domain.admitted.len(), usize::from(round > 0));
        }
        assert_eq!(released[1], released[0]);
        assert_eq!(released[2], released[0]);
        domain
            .destroy_dataset("admin", "residents", "retention ended")
            .unwrap();
        assert_eq!(domain.admitted.len(), 0);
    }
}
