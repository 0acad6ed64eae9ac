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
pub mod audit;
pub mod bundle;
pub mod clock;
pub mod data;
pub mod dev;
mod extract;
mod host;
pub mod jobs;
pub mod keys;
pub mod marginals;
pub mod reconcile;
pub mod records;
pub mod store;
pub mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
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
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("witness {url}: {reason}")]
    Witness { url: String, reason: String },
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
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
    let row: Option<(String, i64)> = db
        .query_row(
            "SELECT role, disabled FROM users WHERE id = ?1",
            [user],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match row {
        Some((role, 0)) => Role::parse(&role).map_err(DomainError::Invalid),
        Some(_) => Err(DomainError::Invalid(format!("user `{user}` is disabled"))),
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
    let mut layers: Vec<(&'static str, &str, String)> = Vec::new();
    if let Some(grant) = spend.grant {
        layers.push((
            "grant",
            "UPDATE grants SET epsilon_spent = epsilon_spent + ?2 WHERE id = ?1 AND epsilon_spent + ?2 <= epsilon_total + 1e-9 AND revoked_at IS NULL",
            grant.to_string(),
        ));
    }
    for dataset in spend.datasets {
        layers.push((
            "dataset",
            "UPDATE datasets SET epsilon_spent = epsilon_spent + ?2 WHERE name = ?1 AND (epsilon_total IS NULL OR epsilon_spent + ?2 <= epsilon_total + 1e-9)",
            dataset.clone(),
        ));
    }
    if let Some(grant) = spend.grant {
        let developer: String =
            tx.query_row("SELECT developer FROM grants WHERE id = ?1", [grant], |r| {
                r.get(0)
            })?;
        layers.push((
            "developer",
            "UPDATE users SET epsilon_spent = epsilon_spent + ?2 WHERE id = ?1 AND (epsilon_total IS NULL OR epsilon_spent + ?2 <= epsilon_total + 1e-9)",
            developer,
        ));
    }
    for (layer, sql, key) in layers {
        if tx.execute(sql, params![key, spend.epsilon])? != 1 {
            return Ok(Some((layer, key)));
        }
    }
    let Some(grant) = spend.grant else {
        return Ok(None);
    };
    if spend.delta > 0.0
        && tx.execute(
            "UPDATE grants SET delta_spent = delta_spent + ?2 WHERE id = ?1 AND delta_spent + ?2 <= delta_total * (1 + 1e-9)",
            params![grant, spend.delta],
        )? != 1
    {
        return Ok(Some(("grant delta", grant.to_string())));
    }
    tx.execute(
        "INSERT INTO spends(job_id, grant_id, epsilon, delta, query_sha256, at, datasets) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![spend.job, grant, spend.epsilon, spend.delta, spend.query_sha, at,
            serde_json::to_string(spend.datasets).unwrap_or_else(|_| "[]".into())],
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

/// One data directory: store, ledger, keys, data files and the sandbox.
pub struct Domain {
    dir: PathBuf,
    /// Where every time the service stores or compares comes from.
    clock: Arc<dyn clock::Clock>,
    db: Mutex<Connection>,
    /// Group-committed: concurrent appends share one fsync and one checkpoint.
    ledger: SharedLedger,
    master: MasterKey,
    sandbox: Sandbox,
    /// Compiled modules by SHA-256, so a module is compiled once per process.
    compiled: Mutex<std::collections::HashMap<String, unseen_sandbox::ValidatedModule>>,
    /// Prohibited-value indexes by dataset, read once (they can be large).
    indexes: Mutex<std::collections::HashMap<String, Arc<unseen_policy::checks::ProhibitedIndex>>>,
    /// Outputs a reviewer is deciding right now (see [`ReviewClaim`]).
    reviewing: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Running jobs by id, with their grant and the handle that stops them.
    running: Mutex<std::collections::HashMap<String, (String, unseen_sandbox::Cancel)>>,
    /// Identical measurements being released now (single flight).
    flights: host::Flights,
    /// A lower bound of the ledger's size: the next entry's index is at
    /// least this. Pending records note it, so that finding their entries
    /// after a crash reads only the ledger's tail.
    ledger_floor: std::sync::atomic::AtomicU64,
    /// Records whose entries are written but whose pending rows are not
    /// deleted yet (the next `commit_recorded` deletes them).
    written: Mutex<Vec<String>>,
    /// What one query may use (memory, time, join rows).
    query_limits: std::sync::RwLock<data::QueryLimits>,
    /// The threads analysts' queries run on (see [`Domain::engine`]).
    engine: EngineRuntime,
    /// Milliseconds of the quantum of shown end times (see `jobs`).
    timing_quantum_ms: std::sync::atomic::AtomicU64,
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
        let mut db = store::open(&dir.join("unseen.db"))?;
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
        let ledger_floor = std::sync::atomic::AtomicU64::new(ledger.size());
        let ledger = SharedLedger::new(ledger);
        let master = MasterKey::load_or_create(&dir.join("keys/master.key"))?;
        // Compiled modules are cached on disk, authenticated by a key only
        // this data directory holds, so restarts skip compilation.
        let sandbox = Sandbox::with_cache_dir(Limits::default(), dir.join("cache/modules"))?;
        let domain = Domain {
            dir: dir.to_path_buf(),
            clock,
            db: Mutex::new(db),
            ledger,
            master,
            sandbox,
            compiled: Mutex::new(std::collections::HashMap::new()),
            running: Mutex::new(std::collections::HashMap::new()),
            indexes: Mutex::new(std::collections::HashMap::new()),
            reviewing: Arc::new(Mutex::new(std::collections::HashSet::new())),
            flights: host::Flights::default(),
            ledger_floor,
            written: Mutex::new(Vec::new()),
            query_limits: std::sync::RwLock::new(data::QueryLimits::default()),
            engine: EngineRuntime::new()?,
            timing_quantum_ms: std::sync::atomic::AtomicU64::new(
                u64::try_from(jobs::timing_quantum_from_env()?.as_millis()).unwrap_or(u64::MAX),
            ),
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
        let interrupted: Vec<(String, String, String)> = {
            let db = lock(&self.db);
            let mut stmt = db.prepare(
                "SELECT id, submitter, status FROM jobs WHERE status IN ('running', 'queued')",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (job, submitter, status) in interrupted {
            let reason = if status == "running" {
                "the service stopped while the job was running"
            } else {
                "the service stopped before the job started; submit it again"
            };
            self.commit_recorded("system", "job.recovered", |tx| {
                tx.execute(
                    "UPDATE jobs SET status = 'failed', error = ?2, ended_at = ?3, visible = 'stopped', stopped_by = 'service restart', reason = ?2 WHERE id = ?1",
                    params![job, reason, self.now_rfc3339()],
                )?;
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

    /// The limits of one analyst's session: the query limits, spilling
    /// into the data directory's owner-only `spill/`.
    pub(crate) fn session_limits(&self) -> data::SessionLimits {
        self.query_limits().session(self.dir.join("spill"))
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

    /// Sets the quantum of shown end times: a job that read protected data
    /// is shown to its developer to end up to this long after it did (see
    /// `jobs`). At most [`jobs::MAX_TIMING_QUANTUM`]; zero shows every end
    /// as it happens, which lets developers time their queries.
    pub fn set_timing_quantum(&self, quantum: std::time::Duration) -> Result<(), DomainError> {
        if quantum > jobs::MAX_TIMING_QUANTUM {
            return Err(DomainError::Invalid(format!(
                "a timing quantum of {} ms is over the most, {} ms",
                quantum.as_millis(),
                jobs::MAX_TIMING_QUANTUM.as_millis()
            )));
        }
        self.timing_quantum_ms.store(
            u64::try_from(quantum.as_millis()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
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
        let receipt = self.ledger.append(EntryDraft {
            kind: kind.to_string(),
            actor: actor.to_string(),
            time,
            body,
        })?;
        self.ledger_floor
            .fetch_max(receipt.index + 1, std::sync::atomic::Ordering::Relaxed);
        Ok(receipt.index)
    }

    /// A lower bound of the ledger's size (the next entry's index).
    fn ledger_floor(&self) -> u64 {
        self.ledger_floor.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The ledger's current signed checkpoint (C2SP signed note).
    pub fn ledger_checkpoint(&self) -> Result<String, DomainError> {
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

    /// The role of an enabled user.
    pub fn role_of(&self, user: &str) -> Result<Role, DomainError> {
        role_in(&lock(&self.db), user)
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
            return Err(DomainError::Invalid(format!(
                "{} holds no Unseen store (unseen.db); pass the data directory of the service whose ledger to recover",
                dir.display()
            )));
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

    pub fn require(
        &self,
        actor: &str,
        needed: Role,
        action: &'static str,
    ) -> Result<(), DomainError> {
        check_role(actor, self.role_of(actor)?, &[needed], action)
    }

    fn require_any(
        &self,
        actor: &str,
        allowed: &[Role],
        action: &'static str,
    ) -> Result<Role, DomainError> {
        let role = self.role_of(actor)?;
        check_role(actor, role, allowed, action)?;
        Ok(role)
    }

    /// Creates a user with a real name and an organisation, and returns
    /// their first bearer token (shown once; only its hash is kept). The
    /// first user of a fresh directory must be an admin and creates itself;
    /// afterwards only admins add users.
    pub fn add_user(
        &self,
        actor: Option<&str>,
        id: &str,
        name: &str,
        role: Role,
        org: &str,
    ) -> Result<String, DomainError> {
        let count: i64 =
            lock(&self.db).query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
        let actor = match actor {
            Some(a) => {
                self.require(a, Role::Admin, "add users")?;
                a.to_string()
            }
            None if count == 0 && role == Role::Admin => id.to_string(),
            None => {
                return Err(DomainError::Invalid(
                    "only an admin may add users; pass the acting admin (the first user of a new data directory must be an admin)".into(),
                ));
            }
        };
        if name.trim().is_empty() {
            return Err(DomainError::Invalid(format!(
                "user `{id}` needs a real name"
            )));
        }
        if id.is_empty()
            || id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(DomainError::Invalid(format!(
                "user id `{id}` must be ASCII letters, digits, `.`, `_` or `-`"
            )));
        }
        self.commit_recorded(&actor, "user.created", |tx| {
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO users(id, name, role, org, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, name, role.as_str(), org, self.now_rfc3339()],
            )?;
            if inserted == 0 {
                return Err(DomainError::Exists {
                    what: "user",
                    id: id.to_string(),
                });
            }
            Ok(Change::Record(
                json!({"user": id, "name": name, "role": role.as_str(), "org": org}),
                (),
            ))
        })?;
        self.issue_token(&actor, id)
    }

    /// Registers a Parquet file under a manifest: validates, encrypts at rest
    /// with a fresh data key, records the registration.
    pub async fn register_dataset(
        &self,
        actor: &str,
        name: &str,
        parquet: &Path,
        manifest_text: &str,
    ) -> Result<data::Ingested, DomainError> {
        self.require(actor, Role::Admin, "register datasets")?;
        let manifest = Manifest::parse(manifest_text).map_err(DomainError::Manifest)?;
        if manifest.name != name {
            return Err(DomainError::Invalid(format!(
                "the manifest describes dataset `{}` but you are registering `{name}`; use the same name",
                manifest.name
            )));
        }
        let exists: Option<String> = lock(&self.db)
            .query_row("SELECT name FROM datasets WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        if exists.is_some() {
            return Err(DomainError::Exists {
                what: "dataset",
                id: name.to_string(),
            });
        }
        data::check_file(parquet, &manifest)?;
        let key = random_bytes::<32>();
        let file = format!("data/{name}.parquet");
        let prohibited_text: Vec<String> = manifest
            .columns
            .iter()
            .filter(|c| {
                c.class == unseen_policy::Class::Prohibited
                    && c.ty == unseen_policy::manifest::ColumnType::Utf8
            })
            .map(|c| c.name.clone())
            .collect();
        let ingested = data::ingest(parquet, &self.dir.join(&file), &key, name, &prohibited_text)?;
        data::write_index(
            &self.dir.join(format!("data/{name}.prohibited")),
            &ingested.prohibited,
        )?;
        let open = OpenDataset {
            name: name.to_string(),
            path: self.dir.join(&file),
            key,
            manifest: manifest.clone(),
            scope: None,
            rows: ingested.rows,
            unit_unique: false,
            within_bounds: Vec::new(),
        };
        let unseen_policy::TableFacts {
            one_row_per_unit: unit_unique,
            within_bounds,
            ..
        } = data::registration_facts(&open).await?;
        let within_json = serde_json::to_string(&within_bounds).unwrap_or_else(|_| "[]".into());
        let wrapped = self.master.wrap(name, &key);
        let by_class = |class: unseen_policy::Class| {
            manifest
                .columns
                .iter()
                .filter(|c| c.class == class)
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()
        };
        let body = json!({
                "dataset": name,
                "manifest_version": manifest.version,
                "manifest_sha256": sha256_hex(manifest_text.as_bytes()),
                "source_sha256": ingested.source_sha256,
                "rows": ingested.rows,
                "privacy_unit": manifest.privacy_unit,
                "one_row_per_unit": unit_unique,
                "within_bounds": within_bounds,
                "prohibited": by_class(unseen_policy::Class::Prohibited),
                "conditional": by_class(unseen_policy::Class::Conditional),
                "open": by_class(unseen_policy::Class::Open),
                "encryption": "parquet modular encryption, AES-256-GCM, per-dataset key wrapped by the master key",
        });
        self.commit_recorded(actor, "dataset.registered", |tx| {
            tx.execute(
                "INSERT INTO datasets(name, manifest, manifest_version, file, wrapped_key, rows, unit_unique, source_sha256, registered_by, registered_at, within_bounds)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![name, manifest_text, manifest.version, file, wrapped, ingested.rows as i64, unit_unique, ingested.source_sha256, actor, self.now_rfc3339(), within_json],
            )?;
            Ok(Change::Record(body, ()))
        })?;
        Ok(ingested)
    }

    /// Opens a registered dataset for the engine (unwraps its key).
    fn open_dataset(&self, name: &str) -> Result<OpenDataset, DomainError> {
        type Row = (String, String, Option<Vec<u8>>, bool, i64, String);
        let row: Option<Row> = lock(&self.db)
            .query_row(
                "SELECT manifest, file, wrapped_key, unit_unique, rows, within_bounds FROM datasets WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .optional()?;
        let Some((manifest, file, wrapped, unit_unique, rows, within_bounds)) = row else {
            return Err(DomainError::NotFound {
                what: "dataset",
                id: name.to_string(),
                list: "dataset list",
            });
        };
        let wrapped = wrapped.ok_or_else(|| DomainError::DatasetUnreadable {
            dataset: name.to_string(),
            reason: "its data key was destroyed".into(),
        })?;
        let key = self.master.unwrap(name, &wrapped)?;
        let manifest = Manifest::parse(&manifest).map_err(DomainError::Manifest)?;
        Ok(OpenDataset {
            name: name.to_string(),
            path: self.dir.join(file),
            key,
            manifest,
            scope: None,
            rows: u64::try_from(rows).unwrap_or(0),
            unit_unique,
            within_bounds: serde_json::from_str(&within_bounds).unwrap_or_default(),
        })
    }

    /// Opens every dataset a grant covers, its primary dataset first, each
    /// restricted to the grant's column scope.
    pub(crate) fn open_grant_datasets(
        &self,
        grant: &Grant,
    ) -> Result<Vec<OpenDataset>, DomainError> {
        grant
            .datasets()
            .map(|name| Ok(self.open_dataset(name)?.restrict(&grant.columns)))
            .collect()
    }

    /// Issues a grant to a developer over one dataset with an epsilon budget
    /// and the usage controls of the authorization agreement.
    pub fn issue_grant(&self, actor: &str, request: &GrantRequest) -> Result<String, DomainError> {
        self.require(actor, Role::Admin, "issue grants")?;
        let r = request;
        if self.role_of(&r.developer)? != Role::Developer {
            return Err(DomainError::Invalid(format!(
                "user `{}` is not a developer; grants go to developers",
                r.developer
            )));
        }
        for user in &r.designated {
            if self.role_of(user)? != Role::Developer {
                return Err(DomainError::Invalid(format!(
                    "designated user `{user}` is not a developer; only developers run jobs and download releases"
                )));
            }
        }
        let primary = self.open_dataset(&r.dataset)?;
        let mut datasets = vec![primary];
        for name in &r.join_datasets {
            if name == &r.dataset || datasets.iter().any(|d| &d.name == name) {
                return Err(DomainError::Invalid(format!(
                    "dataset `{name}` is named twice; list each dataset of the grant once"
                )));
            }
            let joined = self.open_dataset(name)?;
            let unit = &datasets[0].manifest.privacy_unit;
            if &joined.manifest.privacy_unit != unit {
                return Err(DomainError::Invalid(format!(
                    "dataset `{name}` has privacy unit `{}` but `{}` has `{unit}`; a grant joins only datasets about the same privacy unit",
                    joined.manifest.privacy_unit, r.dataset
                )));
            }
            datasets.push(joined);
        }
        for column in &r.columns {
            let found = datasets.iter().any(|d| {
                d.manifest
                    .columns
                    .iter()
                    .any(|c| data::in_scope(std::slice::from_ref(column), &d.name, &c.name))
            });
            if !found {
                let known: Vec<String> = datasets
                    .iter()
                    .flat_map(|d| {
                        d.manifest
                            .columns
                            .iter()
                            .map(move |c| format!("{}.{}", d.name, c.name))
                    })
                    .collect();
                return Err(DomainError::Invalid(format!(
                    "column `{column}` is in no dataset of the grant; name a column or `dataset.column` among {}",
                    known.join(", ")
                )));
            }
        }
        if r.purpose.trim().is_empty() {
            return Err(DomainError::Invalid(
                "a grant needs a purpose: the one scenario it serves".into(),
            ));
        }
        if !(r.epsilon_total.is_finite()
            && r.epsilon_total > 0.0
            && r.query_epsilon.is_finite()
            && r.query_epsilon > 0.0
            && r.query_epsilon <= r.epsilon_total)
        {
            return Err(DomainError::Invalid(format!(
                "budget must satisfy 0 < query epsilon ({}) <= total epsilon ({})",
                r.query_epsilon, r.epsilon_total
            )));
        }
        let max_days = if r.extended_validity {
            5 * 366
        } else {
            3 * 366
        };
        if r.valid_days == 0 || r.valid_days > max_days {
            return Err(DomainError::Invalid(format!(
                "validity of {} days is outside 1..={max_days}: grants last at most 3 years, or 5 with extended validity",
                r.valid_days
            )));
        }
        for w in &r.windows {
            access::parse_window(w)?;
        }
        if !(1..=2).contains(&r.approvals_required) {
            return Err(DomainError::Invalid(format!(
                "approvals_required is {}; a release needs 1 or 2 independent approvals",
                r.approvals_required
            )));
        }
        if !(0.0..1.0).contains(&r.delta_total)
            || (r.delta_total > 0.0 && !(r.query_delta > 0.0 && r.query_delta <= r.delta_total))
        {
            return Err(DomainError::Invalid(format!(
                "delta must satisfy 0 <= total delta ({}) < 1, and 0 < query delta ({}) <= total delta when the total is above 0",
                r.delta_total, r.query_delta
            )));
        }
        if r.max_runs == Some(0) || r.max_downloads == Some(0) {
            return Err(DomainError::Invalid(
                "run and download limits must be at least 1 (omit them for no limit)".into(),
            ));
        }
        if !(1..=MAX_OPEN_QUERY_WINDOW).contains(&r.open_query_window) {
            return Err(DomainError::Invalid(format!(
                "the open-query window of {} s is outside 1..={MAX_OPEN_QUERY_WINDOW} (one second to 31 days)",
                r.open_query_window
            )));
        }
        if !(1..=MAX_UDF_ROW_INSTRUCTIONS).contains(&r.udf_row_instructions) {
            return Err(DomainError::Invalid(format!(
                "udf_row_instructions is {}; a UDF's cap per row is 1 to {MAX_UDF_ROW_INSTRUCTIONS} instructions (the default is the most)",
                r.udf_row_instructions
            )));
        }
        if !r.allow_udfs && r.udf_row_instructions != MAX_UDF_ROW_INSTRUCTIONS {
            return Err(DomainError::Invalid(
                "udf_row_instructions limits UDFs, which this grant does not allow; add allow_udfs (--allow-udfs) or leave the cap out".into(),
            ));
        }
        if !(r.allow_modules || r.allow_sql || r.allow_extracts) {
            return Err(DomainError::Invalid(
                "the grant allows no operation; allow modules, SQL or extracts".into(),
            ));
        }
        let id = new_id("grant");
        let now = self.unix_now();
        let expires_at = util::rfc3339(now + u64::from(r.valid_days) * 86_400);
        let windows = serde_json::to_string(&r.windows).unwrap_or_else(|_| "[]".into());
        let designated = serde_json::to_string(&r.designated).unwrap_or_else(|_| "[]".into());
        let columns = serde_json::to_string(&r.columns).unwrap_or_else(|_| "[]".into());
        let joined = serde_json::to_string(&r.join_datasets).unwrap_or_else(|_| "[]".into());
        let body = json!({
            "grant": id, "dataset": r.dataset, "join_datasets": r.join_datasets, "developer": r.developer, "scenario": r.scenario, "purpose": r.purpose,
            "epsilon_total": r.epsilon_total, "query_epsilon": r.query_epsilon, "expires_at": expires_at,
            "allow_modules": r.allow_modules, "allow_sql": r.allow_sql, "allow_extracts": r.allow_extracts,
            "allow_udfs": r.allow_udfs, "udf_row_instructions": r.udf_row_instructions, "windows": r.windows, "designated": r.designated, "columns": r.columns, "max_runs": r.max_runs,
            "max_downloads": r.max_downloads, "derived_reuse": r.derived_reuse,
            "approvals_required": r.approvals_required,
            "delta_total": r.delta_total, "query_delta": if r.delta_total > 0.0 { r.query_delta } else { 0.0 },
            "max_open_queries": r.max_open_queries, "open_query_window": r.open_query_window,
        });
        self.commit_recorded(actor, "grant.issued", |tx| {
            tx.execute(
            "INSERT INTO grants(id, dataset, developer, purpose, epsilon_total, query_epsilon, allow_extracts, issued_by, issued_at, expires_at,
                scenario, allow_modules, allow_sql, windows, designated, max_runs, max_downloads, derived_reuse, approvals_required, columns, join_datasets, delta_total, query_delta, allow_udfs,
                max_open_queries, open_query_window, udf_row_instructions)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)",
            params![id, r.dataset, r.developer, r.purpose, r.epsilon_total, r.query_epsilon, r.allow_extracts, actor, self.now_rfc3339(), expires_at,
                r.scenario, r.allow_modules, r.allow_sql, windows, designated, r.max_runs, r.max_downloads, r.derived_reuse, r.approvals_required, columns, joined,
                r.delta_total, if r.delta_total > 0.0 { r.query_delta } else { 0.0 }, r.allow_udfs,
                r.max_open_queries, r.open_query_window, r.udf_row_instructions as i64],
            )?;
            Ok(Change::Record(body, ()))
        })?;
        Ok(id)
    }

    /// Reads a grant.
    pub fn grant(&self, id: &str) -> Result<Grant, DomainError> {
        lock(&self.db)
            .query_row(
                &format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = ?1"),
                [id],
                grant_from_row,
            )
            .optional()?
            .ok_or_else(|| DomainError::NotFound {
                what: "grant",
                id: id.to_string(),
                list: "grant list",
            })
    }

    /// Validates and stores a job module (content-addressed); refusals are
    /// ledger entries too.
    pub fn upload_module(&self, actor: &str, bytes: &[u8]) -> Result<String, DomainError> {
        self.upload(actor, bytes, ModuleKind::Job)
            .map(|(sha, _)| sha)
    }

    /// Validates and stores a UDF module; returns its address and its
    /// declared functions as `name(Float64, Float64) -> Float64`.
    pub fn upload_udf_module(
        &self,
        actor: &str,
        bytes: &[u8],
    ) -> Result<(String, Vec<String>), DomainError> {
        self.upload(actor, bytes, ModuleKind::Udf)
    }

    fn upload(
        &self,
        actor: &str,
        bytes: &[u8],
        kind: ModuleKind,
    ) -> Result<(String, Vec<String>), DomainError> {
        self.require(actor, Role::Developer, "upload modules")?;
        let sha = sha256_hex(bytes);
        let kind_name = module_kind_name(kind);
        let module = match self.validated(bytes, kind) {
            Ok(m) => m,
            Err(DomainError::Sandbox(e)) => {
                self.record(
                    actor,
                    "module.refused",
                    json!({"sha256": sha, "size": bytes.len(), "kind": kind_name, "reason": e.to_string()}),
                )?;
                return Err(e.into());
            }
            Err(e) => return Err(e),
        };
        let functions: Vec<String> = module
            .functions()
            .iter()
            .map(udf_signature)
            .chain(
                module
                    .aggregates()
                    .iter()
                    .map(|a| format!("{} aggregate", udf_signature(&a.function))),
            )
            .collect();
        self.commit_recorded(actor, "module.uploaded", |tx| {
            tx.execute(
                "INSERT OR IGNORE INTO modules(sha256, bytes, uploaded_by, uploaded_at, kind, functions) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![sha, bytes, actor, self.now_rfc3339(), kind_name, serde_json::to_string(&functions).unwrap_or_else(|_| "[]".into())],
            )?;
            let stored_kind: Option<String> = tx
                .query_row("SELECT kind FROM modules WHERE sha256 = ?1", [&sha], |r| {
                    r.get(0)
                })
                .optional()?;
            if stored_kind.as_deref() != Some(kind_name) {
                return Err(DomainError::Invalid(format!(
                    "module {sha} was uploaded before as a {} module; one module cannot be both",
                    stored_kind.unwrap_or_default()
                )));
            }
            Ok(Change::Record(
                json!({"sha256": sha, "size": bytes.len(), "kind": kind_name, "functions": functions}),
                (),
            ))
        })?;
        Ok((sha, functions))
    }

    /// Validates and compiles a module, or returns it from the cache.
    fn validated(
        &self,
        bytes: &[u8],
        kind: ModuleKind,
    ) -> Result<unseen_sandbox::ValidatedModule, DomainError> {
        let key = format!("{}:{}", module_kind_name(kind), sha256_hex(bytes));
        if let Some(m) = lock(&self.compiled).get(&key) {
            return Ok(m.clone());
        }
        let module = self.sandbox.validate(bytes, kind)?;
        lock(&self.compiled).insert(key, module.clone());
        Ok(module)
    }

    /// Stored UDF modules prepared for one job under `grant`: each with
    /// the grant's per-row cap, its functions checked (so a module that
    /// cannot serve them fails the job before it starts), and no instance
    /// yet; each query takes its own handle (`host::Host::query_udfs`).
    pub(crate) fn job_udfs(
        &self,
        modules: &[String],
        grant: &Grant,
    ) -> Result<Vec<unseen_sandbox::UdfModule>, DomainError> {
        let mut udfs = Vec::new();
        for sha in modules {
            let bytes: Vec<u8> = lock(&self.db)
                .query_row(
                    "SELECT bytes FROM modules WHERE sha256 = ?1 AND kind = 'udf'",
                    [sha],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or_else(|| DomainError::NotFound {
                    what: "UDF module",
                    id: sha.clone(),
                    list: "job submit --udf",
                })?;
            let validated = self.validated(&bytes, ModuleKind::Udf)?;
            let module = unseen_sandbox::UdfModule::new(&self.sandbox, &validated)?
                .with_row_instructions(grant.udf_row_instructions);
            module
                .for_query()
                .functions()
                .map_err(|e| DomainError::Invalid(e.to_string()))?;
            udfs.push(module);
        }
        Ok(udfs)
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

    /// Charges a spend to every budget layer it names — the grant (and
    /// its delta), each dataset the measurement reads and the grant's
    /// developer — and records it as a `kind` entry with `body` (the
    /// datasets and the spend are added to it), in one transaction with
    /// the entry: all or none ([`Domain::commit_recorded`]). Returns the
    /// layer that was short and its id, if any (nothing is spent or
    /// recorded then). The one path by which epsilon is spent.
    pub(crate) fn charge(
        &self,
        actor: &str,
        kind: &str,
        spend: &Spend<'_>,
        mut body: serde_json::Value,
    ) -> Result<Option<(&'static str, String)>, DomainError> {
        body["datasets"] = json!(spend.datasets);
        body["epsilon"] = json!(spend.epsilon);
        if spend.delta > 0.0 {
            body["delta"] = json!(spend.delta);
        }
        let (short, _) = self.commit_recorded(actor, kind, |tx| {
            Ok(match charge_layers(tx, spend, &self.now_rfc3339())? {
                // Dropping the transaction rolls back the layers already charged.
                Some(short) => Change::Abandon(Some(short)),
                None => Change::Record(body, None),
            })
        })?;
        Ok(short)
    }

    /// Counts one open-column query against `grant`'s limit, or says why it
    /// may not run (nothing is counted then). Open-column queries spend no
    /// epsilon, so without this a grant could run them without end; the
    /// count and the check are one transaction, so concurrent queries
    /// cannot pass the limit together.
    pub(crate) fn count_open_query(
        &self,
        grant: &Grant,
    ) -> Result<Option<PolicyError>, DomainError> {
        let now = i64::try_from(self.unix_now()).unwrap_or(i64::MAX);
        let window = i64::from(grant.open_query_window);
        let mut db = lock(&self.db);
        let tx = db.transaction()?;
        // What fell out of the window no longer counts, and need not be kept.
        tx.execute(
            "DELETE FROM open_queries WHERE grant_id = ?1 AND at <= ?2",
            params![grant.id, now - window],
        )?;
        if let Some(max) = grant.max_open_queries {
            let (used, oldest): (i64, Option<i64>) = tx.query_row(
                "SELECT COUNT(*), MIN(at) FROM open_queries WHERE grant_id = ?1",
                [&grant.id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if used >= i64::from(max) {
                let wait = oldest.map_or(window, |at| (at + window - now).max(1));
                return Ok(Some(PolicyError::Budget(format!(
                    "grant `{}` allows {max} open-column queries per {window} s and has used them; nothing was run. The next one is allowed in {wait} s, or ask the data provider for a higher `--max-open-queries`",
                    grant.id
                ))));
            }
        }
        tx.execute(
            "INSERT INTO open_queries(grant_id, at) VALUES (?1, ?2)",
            params![grant.id, now],
        )?;
        tx.execute(
            "UPDATE grants SET open_queries = open_queries + 1 WHERE id = ?1",
            [&grant.id],
        )?;
        tx.commit()?;
        Ok(None)
    }

    /// Open-column queries counted against `grant`'s limit now.
    pub(crate) fn open_queries_in_window(&self, grant: &Grant) -> Result<u64, DomainError> {
        let now = i64::try_from(self.unix_now()).unwrap_or(i64::MAX);
        let n: i64 = lock(&self.db).query_row(
            "SELECT COUNT(*) FROM open_queries WHERE grant_id = ?1 AND at > ?2",
            params![grant.id, now - i64::from(grant.open_query_window)],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Sets the total epsilon of a dataset or developer layer (admins only).
    pub fn set_budget(
        &self,
        actor: &str,
        layer: BudgetLayer,
        id: &str,
        epsilon_total: f64,
    ) -> Result<(), DomainError> {
        self.require(actor, Role::Admin, "set budgets")?;
        if !(epsilon_total.is_finite() && epsilon_total > 0.0) {
            return Err(DomainError::Invalid(format!(
                "epsilon {epsilon_total} must be a positive number"
            )));
        }
        let (sql, what, list) = match layer {
            BudgetLayer::Dataset => (
                "UPDATE datasets SET epsilon_total = ?2 WHERE name = ?1",
                "dataset",
                "dataset list",
            ),
            BudgetLayer::Developer => (
                "UPDATE users SET epsilon_total = ?2 WHERE id = ?1 AND role = 'developer'",
                "developer",
                "user list",
            ),
        };
        self.commit_recorded(actor, "budget.set", |tx| {
            if tx.execute(sql, params![id, epsilon_total])? != 1 {
                return Err(DomainError::NotFound {
                    what,
                    id: id.to_string(),
                    list,
                });
            }
            Ok(Change::Record(
                json!({"layer": what, "id": id, "epsilon_total": epsilon_total}),
                (),
            ))
        })?;
        Ok(())
    }

    /// What jobs whose end their developers have not been shown yet
    /// (queued, running, or ended before their shown end) have spent, by
    /// budget layer. Developers' views of budgets leave it out: a job's
    /// spend grows as each query is charged, and when it grows would time
    /// the job's queries; it is counted once the job's end is shown.
    pub(crate) fn unshown_spends(&self) -> Result<UnshownSpends, DomainError> {
        let db = lock(&self.db);
        let mut stmt = db.prepare(
            "SELECT s.grant_id, g.developer, s.epsilon, s.delta, s.datasets
             FROM jobs j JOIN spends s ON s.job_id = j.id JOIN grants g ON g.id = s.grant_id
             WHERE j.status IN ('queued', 'running') OR COALESCE(j.shown_end_ms, 0) > ?1",
        )?;
        let rows = stmt.query_map([self.now_ms()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, f64>(2)?,
                r.get::<_, f64>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        let mut unshown = UnshownSpends::default();
        for row in rows {
            let (grant, developer, epsilon, delta, datasets) = row?;
            let g = unshown.grants.entry(grant).or_default();
            g.0 += epsilon;
            g.1 += delta;
            *unshown.developers.entry(developer).or_default() += epsilon;
            let datasets: Vec<String> = serde_json::from_str(&datasets).unwrap_or_default();
            for d in datasets {
                *unshown.datasets.entry(d).or_default() += epsilon;
            }
        }
        Ok(unshown)
    }

    /// A grant's spends as `actor` may see them: a developer without the
    /// spends of jobs whose end is not shown yet ([`Domain::unshown_spends`]).
    pub(crate) fn grant_as_seen_by(
        &self,
        actor: &str,
        mut grant: Grant,
    ) -> Result<Grant, DomainError> {
        if self.role_of(actor)? == Role::Developer {
            let (epsilon, delta) = self.unshown_spends()?.grant(&grant.id);
            grant.epsilon_spent = (grant.epsilon_spent - epsilon).max(0.0);
            grant.delta_spent = (grant.delta_spent - delta).max(0.0);
        }
        Ok(grant)
    }

    /// [`Domain::budget_layers`] as `actor` may see them: a developer
    /// without the spends of jobs whose end is not shown yet.
    pub fn budget_layers_seen_by(
        &self,
        actor: &str,
        grant_id: &str,
    ) -> Result<Vec<BudgetStatus>, DomainError> {
        let mut layers = self.budget_layers(grant_id)?;
        if self.role_of(actor)? == Role::Developer {
            let unshown = self.unshown_spends()?;
            for layer in &mut layers {
                let hidden = match layer.layer.as_str() {
                    "grant" => unshown.grant(&layer.id).0,
                    "dataset" => unshown.datasets.get(&layer.id).copied().unwrap_or(0.0),
                    _ => unshown.developers.get(&layer.id).copied().unwrap_or(0.0),
                };
                layer.spent = (layer.spent - hidden).max(0.0);
            }
        }
        Ok(layers)
    }

    /// Epsilon spent and left on a grant as `actor` may see them (see
    /// [`Domain::grant_as_seen_by`]).
    pub fn budget_seen_by(&self, actor: &str, grant_id: &str) -> Result<(f64, f64), DomainError> {
        let g = self.grant_as_seen_by(actor, self.grant(grant_id)?)?;
        Ok((
            g.epsilon_spent,
            (g.epsilon_total - g.epsilon_spent).max(0.0),
        ))
    }

    /// Spent and total epsilon at every layer above a grant: the grant,
    /// each of its datasets and its developer.
    pub fn budget_layers(&self, grant_id: &str) -> Result<Vec<BudgetStatus>, DomainError> {
        let g = self.grant(grant_id)?;
        let db = lock(&self.db);
        let mut layers = vec![BudgetStatus {
            layer: "grant".into(),
            id: g.id.clone(),
            spent: g.epsilon_spent,
            total: Some(g.epsilon_total),
        }];
        for dataset in g.datasets() {
            let (spent, total): (f64, Option<f64>) = db.query_row(
                "SELECT epsilon_spent, epsilon_total FROM datasets WHERE name = ?1",
                [dataset],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            layers.push(BudgetStatus {
                layer: "dataset".into(),
                id: dataset.to_string(),
                spent,
                total,
            });
        }
        let (spent, total): (f64, Option<f64>) = db.query_row(
            "SELECT epsilon_spent, epsilon_total FROM users WHERE id = ?1",
            [&g.developer],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        layers.push(BudgetStatus {
            layer: "developer".into(),
            id: g.developer.clone(),
            spent,
            total,
        });
        Ok(layers)
    }

    /// A cached release of the same measurement under the same grant.
    pub(crate) fn cached_release(
        &self,
        grant_id: &str,
        fingerprint: &str,
    ) -> Result<Option<CachedRelease>, DomainError> {
        let bytes: Option<Vec<u8>> = lock(&self.db)
            .query_row(
                "SELECT result FROM release_cache WHERE grant_id = ?1 AND fingerprint = ?2",
                params![grant_id, fingerprint],
                |r| r.get(0),
            )
            .optional()?;
        let damaged = |e: &dyn std::fmt::Display| {
            DomainError::Invalid(format!("cached release is damaged: {e}"))
        };
        bytes
            .map(|b| match b.strip_prefix(MEASUREMENT_TAG) {
                Some(json) => serde_json::from_slice(json)
                    .map(CachedRelease::Measured)
                    .map_err(|e| damaged(&e)),
                // Written before measurements were cached: the table as
                // the first query named it.
                None => udf_sdk::abi::decode_query_result(&b)
                    .map(CachedRelease::Table)
                    .map_err(|e| damaged(&e)),
            })
            .transpose()
    }

    /// Remembers a release so an identical query returns it without spending.
    pub(crate) fn cache_release(
        &self,
        grant_id: &str,
        fingerprint: &str,
        release: &unseen_policy::Release,
    ) -> Result<(), DomainError> {
        let mut bytes = MEASUREMENT_TAG.to_vec();
        serde_json::to_writer(&mut bytes, &release.measured)
            .map_err(|e| DomainError::Invalid(format!("cannot encode a measurement: {e}")))?;
        lock(&self.db).execute(
            "INSERT OR IGNORE INTO release_cache(grant_id, fingerprint, result, epsilon, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![grant_id, fingerprint, bytes, release.result.epsilon_spent, self.now_rfc3339()],
        )?;
        Ok(())
    }

    /// Places an emitted output in quarantine.
    pub(crate) fn quarantine(
        &self,
        actor: &str,
        job_id: &str,
        grant_id: &str,
        datasets: &[OpenDataset],
        name: &str,
        table: &udf_sdk::Table,
    ) -> Result<String, DomainError> {
        self.quarantine_as(
            actor,
            Quarantine {
                job_id,
                grant_id,
                datasets,
                name,
                kind: "table",
                extra_findings: Vec::new(),
                disclosure: None,
            },
            table,
        )
    }

    /// Places an output of any kind in quarantine, with the automatic
    /// findings and, for the reviewer, what its disclosure control did.
    pub(crate) fn quarantine_as(
        &self,
        actor: &str,
        q: Quarantine<'_>,
        table: &udf_sdk::Table,
    ) -> Result<String, DomainError> {
        let bytes = udf_sdk::abi::encode_table(table);
        let sha = sha256_hex(&bytes);
        let id = new_id("out");
        let mut findings = self.check_output(q.grant_id, q.datasets, table)?;
        findings.extend(q.extra_findings);
        let findings_json =
            serde_json::to_string(&findings).map_err(|e| DomainError::Invalid(e.to_string()))?;
        let disclosure = q.disclosure.map(|d| d.to_string());
        let body = json!({
            "output": id, "job": q.job_id, "name": q.name, "kind": q.kind, "sha256": sha,
            "rows": table.rows(), "columns": table.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
            "findings": findings.iter().map(|f| json!({"kind": f.kind, "column": f.column, "row": f.row, "blocking": f.blocking})).collect::<Vec<_>>(),
        });
        self.commit_recorded(actor, "output.quarantined", |tx| {
            tx.execute(
                "INSERT INTO outputs(id, job_id, name, data, sha256, findings, created_at, kind, disclosure) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![id, q.job_id, q.name, bytes, sha, findings_json, self.now_rfc3339(), q.kind, disclosure],
            )?;
            Ok(Change::Record(body, ()))
        })?;
        Ok(id)
    }

    /// An output's kind (`table`, `outcome` or `extract`) and, for an
    /// extract, what its disclosure control did (for reviewers only).
    pub fn output_details(
        &self,
        output_id: &str,
    ) -> Result<(String, Option<serde_json::Value>), DomainError> {
        let (kind, disclosure): (String, Option<String>) = lock(&self.db)
            .query_row(
                "SELECT kind, disclosure FROM outputs WHERE id = ?1",
                [output_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .ok_or_else(|| DomainError::NotFound {
                what: "output",
                id: output_id.to_string(),
                list: "review list",
            })?;
        let disclosure = disclosure
            .map(|d| serde_json::from_str(&d))
            .transpose()
            .map_err(|e| {
                DomainError::Invalid(format!(
                    "disclosure report of `{output_id}` is damaged: {e}"
                ))
            })?;
        Ok((kind, disclosure))
    }

    /// Runs the automatic output checks against the prohibited values of
    /// the grant's datasets and the grant's earlier releases.
    fn check_output(
        &self,
        grant_id: &str,
        datasets: &[OpenDataset],
        table: &udf_sdk::Table,
    ) -> Result<Vec<unseen_policy::checks::Finding>, DomainError> {
        let mut indexes = Vec::new();
        for dataset in datasets {
            let cached = lock(&self.indexes).get(&dataset.name).cloned();
            let index = match cached {
                Some(index) => index,
                None => {
                    let path = self.dir.join(format!("data/{}.prohibited", dataset.name));
                    let index = Arc::new(data::read_index(&path)?);
                    lock(&self.indexes).insert(dataset.name.clone(), Arc::clone(&index));
                    index
                }
            };
            indexes.push((index, data::ValueHasher::new(&dataset.key)));
        }
        let hashes: Vec<_> = indexes
            .iter()
            .map(|(_, hasher)| move |v: &str| hasher.hash(v))
            .collect();
        let earlier: Vec<udf_sdk::Table> = {
            let db = lock(&self.db);
            let mut stmt = db.prepare(
                "SELECT o.data FROM outputs o JOIN jobs j ON j.id = o.job_id WHERE j.grant_id = ?1 AND o.status = 'approved'",
            )?;
            let rows = stmt.query_map([grant_id], |r| r.get::<_, Vec<u8>>(0))?;
            rows.filter_map(|b| b.ok().and_then(|b| udf_sdk::abi::decode_table(&b).ok()))
                .collect()
        };
        let ctx = unseen_policy::checks::CheckContext {
            prohibited: indexes
                .iter()
                .zip(&hashes)
                .map(|((index, _), hash)| (index.as_ref(), hash as _))
                .collect(),
            min_group_size: datasets
                .iter()
                .map(|d| d.manifest.min_group_size)
                .max()
                .unwrap_or(0),
            earlier: &earlier,
        };
        Ok(unseen_policy::checks::check_output(table, &ctx))
    }

    /// The automatic findings attached to an output.
    pub fn findings(&self, output_id: &str) -> Result<Vec<serde_json::Value>, DomainError> {
        let text: String = lock(&self.db)
            .query_row(
                "SELECT findings FROM outputs WHERE id = ?1",
                [output_id],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| DomainError::NotFound {
                what: "output",
                id: output_id.to_string(),
                list: "review list",
            })?;
        serde_json::from_str(&text).map_err(|e| {
            DomainError::Invalid(format!("findings of `{output_id}` are damaged: {e}"))
        })
    }

    /// The review queue: every quarantined output with its kind, automatic
    /// findings, the job's module hash or SQL, how the job ended (its
    /// ending, error, fuel, queries and logs: what its developer sees only
    /// once its outcome is approved), spend, approvals so far, a diff
    /// against the grant's latest release of the same name and, for an
    /// extract, what its disclosure control did.
    pub fn review_queue(&self, actor: &str) -> Result<Vec<serde_json::Value>, DomainError> {
        self.require(actor, Role::Reviewer, "read the review queue")?;
        struct Row {
            output: String,
            name: String,
            kind: String,
            job: String,
            grant: String,
        }
        let rows: Vec<Row> = {
            let db = lock(&self.db);
            let mut stmt = db.prepare(
                "SELECT o.id, o.name, o.kind, o.job_id, j.grant_id
                 FROM outputs o JOIN jobs j ON j.id = o.job_id WHERE o.status = 'quarantined' ORDER BY o.created_at, o.rowid",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(Row {
                    output: r.get(0)?,
                    name: r.get(1)?,
                    kind: r.get(2)?,
                    job: r.get(3)?,
                    grant: r.get(4)?,
                })
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let mut queue = Vec::with_capacity(rows.len());
        for Row {
            output,
            name,
            kind,
            job,
            grant,
        } in rows
        {
            let (_, _, table) = self.output(&output)?;
            let earlier: Option<(String, Vec<u8>)> = lock(&self.db)
                .query_row(
                    "SELECT o.id, o.data FROM outputs o JOIN jobs j ON j.id = o.job_id
                     WHERE j.grant_id = ?1 AND o.name = ?2 AND o.kind = ?3 AND o.status = 'approved' ORDER BY o.created_at DESC LIMIT 1",
                    params![grant, name, kind],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let diff = earlier.and_then(|(id, bytes)| {
                udf_sdk::abi::decode_table(&bytes)
                    .ok()
                    .map(|before| table_diff(&id, &before, &table))
            });
            let approvals: i64 = lock(&self.db).query_row(
                "SELECT COUNT(*) FROM reviews WHERE output_id = ?1 AND decision = 'approved'",
                [&output],
                |r| r.get(0),
            )?;
            let required = self.grant(&grant)?.approvals_required;
            let view = self.job(actor, &job)?;
            let (_, disclosure) = self.output_details(&output)?;
            queue.push(json!({
                "output": output, "name": name, "kind": kind, "job": job, "grant": grant,
                "submitter": view.submitter, "module_sha256": view.module_sha256, "sql": view.sql,
                "job_status": view.status, "job_ending": view.ending, "job_error": view.error,
                "fuel_used": view.fuel_used, "queries": view.queries, "epsilon_spent": view.epsilon_spent,
                "rows": table.rows(), "columns": table.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
                "findings": self.findings(&output)?, "approvals": approvals, "approvals_required": required,
                "diff": diff, "guest_logs": view.logs, "disclosure": disclosure,
            }));
        }
        Ok(queue)
    }

    /// Reads a quarantined or released output.
    pub fn output(&self, id: &str) -> Result<(String, String, udf_sdk::Table), DomainError> {
        let (name, status, data): (String, String, Vec<u8>) = lock(&self.db)
            .query_row(
                "SELECT name, status, data FROM outputs WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?
            .ok_or_else(|| DomainError::NotFound {
                what: "output",
                id: id.to_string(),
                list: "review list",
            })?;
        let table = udf_sdk::abi::decode_table(&data)
            .map_err(|e| DomainError::Invalid(format!("stored output `{id}` is damaged: {e}")))?;
        Ok((name, status, table))
    }

    /// A reviewer approves or rejects a quarantined output. Approval signs a release.
    pub fn review(
        &self,
        reviewer: &str,
        output_id: &str,
        approve: bool,
        reason: &str,
    ) -> Result<Option<ReleaseRecord>, DomainError> {
        self.require(reviewer, Role::Reviewer, "review outputs")?;
        if reason.trim().is_empty() {
            return Err(DomainError::Invalid("a review needs a reason".into()));
        }
        // One decision per output at a time: a second reviewer deciding the
        // same output meanwhile is told to look again (it may be released).
        let _claim = ReviewClaim::take(&self.reviewing, output_id).ok_or_else(|| {
            DomainError::NotQuarantined {
                output: output_id.to_string(),
                status: "being decided by another reviewer right now".into(),
            }
        })?;
        type ReviewRow = (
            String,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            String,
            String,
        );
        let row: Option<ReviewRow> = lock(&self.db)
            .query_row(
                "SELECT o.status, o.job_id, j.submitter, o.sha256, j.module, j.sql, j.grant_id, o.name FROM outputs o JOIN jobs j ON j.id = o.job_id WHERE o.id = ?1",
                [output_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)),
            )
            .optional()?;
        let Some((status, job, submitter, output_sha, module_sha, job_sql, grant_id, name)) = row
        else {
            return Err(DomainError::NotFound {
                what: "output",
                id: output_id.to_string(),
                list: "review list",
            });
        };
        if submitter == reviewer {
            self.record(
                reviewer,
                "review.refused",
                json!({"output": output_id, "job": job, "reason": "reviewer submitted the job"}),
            )?;
            return Err(DomainError::SelfReview {
                reviewer: reviewer.to_string(),
                job,
            });
        }
        // An approval whose signing failed (a full disk, say) left the
        // output approved without a release: approving again finishes it.
        let resuming = approve && status == "approved" && !self.has_release(output_id)?;
        if status != "quarantined" && !resuming {
            return Err(DomainError::NotQuarantined {
                output: output_id.to_string(),
                status,
            });
        }
        if approve {
            let blocking: Vec<String> = self
                .findings(output_id)?
                .iter()
                .filter(|f| f["blocking"] == true)
                .map(|f| {
                    f["detail"]
                        .as_str()
                        .unwrap_or("blocking finding")
                        .to_string()
                })
                .collect();
            if !blocking.is_empty() {
                self.record(
                    reviewer,
                    "review.blocked",
                    json!({"output": output_id, "job": job, "blocking_findings": blocking.len()}),
                )?;
                return Err(DomainError::Blocked {
                    output: output_id.to_string(),
                    findings: blocking.join("; "),
                });
            }
        }
        let at = self.now_rfc3339();
        let grant_now = self.grant(&grant_id)?;
        if approve && let Some(at) = &grant_now.revoked_at {
            return Err(DomainError::Grant {
                grant: grant_id.clone(),
                reason: format!("was revoked at {at}; its outputs can only be rejected"),
            });
        }
        let required = grant_now.approvals_required;
        // Checked and written under one lock and transaction, so two
        // reviewers approving at once are counted exactly.
        let (approvers, complete, review_index) = if resuming {
            let approvers: Vec<String> = {
                let db = lock(&self.db);
                let mut stmt = db.prepare(
                    "SELECT reviewer FROM reviews WHERE output_id = ?1 AND decision = 'approved' ORDER BY id",
                )?;
                let rows = stmt.query_map([output_id], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let index = self.record(
                reviewer,
                "review.release_resumed",
                json!({"output": output_id, "job": job, "reason": reason}),
            )?;
            (approvers, true, index)
        } else {
            self.decide(reviewer, output_id, &job, approve, reason, required, &at)?
        };
        if !approve || !complete {
            return Ok(None);
        }
        self.sign_release(SignRequest {
            reviewer,
            output_id,
            job: &job,
            submitter: &submitter,
            output_sha: &output_sha,
            module_sha: module_sha.as_deref(),
            job_sql: job_sql.as_deref(),
            grant_id: &grant_id,
            name: &name,
            approvers: &approvers,
            review_index,
            at: &at,
        })
        .map(Some)
    }

    fn has_release(&self, output_id: &str) -> Result<bool, DomainError> {
        Ok(lock(&self.db)
            .query_row(
                "SELECT 1 FROM releases WHERE output_id = ?1",
                [output_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Records one reviewer's decision under one lock and transaction, so
    /// two reviewers approving at once are counted exactly. Returns the
    /// approvers so far, whether the decision is final, and its ledger index.
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        reviewer: &str,
        output_id: &str,
        job: &str,
        approve: bool,
        reason: &str,
        required: u32,
        at: &str,
    ) -> Result<(Vec<String>, bool, u64), DomainError> {
        let decision = if approve { "approved" } else { "rejected" };
        let ((approvers, complete), review_index) =
            self.commit_recorded(reviewer, &format!("review.{decision}"), |tx| {
            let status: String = tx.query_row(
                "SELECT status FROM outputs WHERE id = ?1",
                [output_id],
                |r| r.get(0),
            )?;
            if status != "quarantined" {
                return Err(DomainError::NotQuarantined {
                    output: output_id.to_string(),
                    status,
                });
            }
            let mut approvers: Vec<String> = {
                let mut stmt = tx.prepare(
                    "SELECT reviewer FROM reviews WHERE output_id = ?1 AND decision = 'approved' ORDER BY id",
                )?;
                let rows = stmt.query_map([output_id], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            if approve && approvers.iter().any(|a| a == reviewer) {
                return Err(DomainError::Invalid(format!(
                    "`{reviewer}` already approved output `{output_id}`; its grant needs {required} approvals by different reviewers"
                )));
            }
            if approve {
                approvers.push(reviewer.to_string());
            }
            let complete = !approve || approvers.len() >= required as usize;
            if complete {
                tx.execute(
                    "UPDATE outputs SET status = ?2 WHERE id = ?1",
                    params![output_id, decision],
                )?;
            }
            tx.execute(
                "INSERT INTO reviews(output_id, reviewer, decision, reason, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![output_id, reviewer, decision, reason, at],
            )?;
            Ok(Change::Record(
                json!({"output": output_id, "job": job, "reason": reason, "approvals": approvers.len(), "approvals_required": required}),
                (approvers, complete),
            ))
        })?;
        let review_index = review_index
            .ok_or_else(|| DomainError::Invalid("the review decision was not recorded".into()))?;
        Ok((approvers, complete, review_index))
    }

    /// Signs the release of an approved output, writes its file and records it.
    fn sign_release(&self, r: SignRequest<'_>) -> Result<ReleaseRecord, DomainError> {
        let SignRequest {
            reviewer,
            output_id,
            job,
            submitter,
            output_sha,
            module_sha,
            job_sql,
            grant_id,
            name,
            approvers,
            review_index,
            at,
        } = r;
        let grant = self.grant(grant_id)?;
        let snapshot_of = |name: &str| -> Result<serde_json::Value, DomainError> {
            let (source_sha, manifest_version): (String, i64) = lock(&self.db).query_row(
                "SELECT source_sha256, manifest_version FROM datasets WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(json!({"source_sha256": source_sha, "manifest_version": manifest_version}))
        };
        // The primary dataset's snapshot, with the joined ones' under `joined`.
        let mut snapshot = snapshot_of(&grant.dataset)?;
        if !grant.join_datasets.is_empty() {
            let mut joined = Vec::new();
            for name in &grant.join_datasets {
                let mut s = snapshot_of(name)?;
                s["dataset"] = json!(name);
                joined.push(s);
            }
            snapshot["joined"] = json!(joined);
        }
        let job_epsilon: f64 = lock(&self.db).query_row(
            "SELECT COALESCE(SUM(epsilon), 0) FROM spends WHERE job_id = ?1",
            [job],
            |r| r.get(0),
        )?;
        let (_, _, table) = self.output(output_id)?;
        let release_id = new_id("rel");
        let document = json!({
            "release": release_id,
            "output": output_id,
            "output_name": name,
            "output_sha256": output_sha,
            "job": job,
            "grant": grant.id,
            "dataset": grant.dataset,
            "join_datasets": grant.join_datasets,
            "module_sha256": module_sha,
            "sql": job_sql,
            "input_snapshot": snapshot,
            "policy_version": POLICY_VERSION,
            "epsilon_spent": job_epsilon,
            "submitter": submitter,
            "reviewer": reviewer,
            "approvers": approvers,
            "derived_reuse": grant.derived_reuse,
            "review_entry": review_index,
            "approved_at": at,
            "table": table_json(&table),
        });
        let canonical =
            serde_json::to_vec(&document).map_err(|e| DomainError::Invalid(e.to_string()))?;
        let signature = self.ledger.sign(&release_signing_message(&canonical))?;
        let signature_b64 =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, signature);
        let release_file = json!({"document": document, "signature": signature_b64});
        let path = self.dir.join("releases").join(format!("{release_id}.json"));
        let pretty = serde_json::to_vec_pretty(&release_file)
            .map_err(|e| DomainError::Invalid(e.to_string()))?;
        util::write_private(&path, &pretty).map_err(|e| DomainError::io(&path, e))?;
        let body = json!({
            "release": release_id, "output": output_id, "output_sha256": output_sha,
            "document_sha256": sha256_hex(&canonical), "module_sha256": module_sha, "sql": job_sql,
            "input_snapshot": snapshot,
            "policy_version": POLICY_VERSION, "epsilon_spent": job_epsilon, "reviewer": reviewer,
        });
        self.commit_recorded(reviewer, "release.signed", |tx| {
            tx.execute(
                "INSERT INTO releases(id, output_id, document, signature, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![release_id, output_id, String::from_utf8_lossy(&canonical), signature_b64, at],
            )?;
            Ok(Change::Record(body, ()))
        })?;
        Ok(ReleaseRecord {
            id: release_id,
            path,
            document,
        })
    }

    /// Epsilon spent and left on a grant.
    pub fn budget(&self, grant_id: &str) -> Result<(f64, f64), DomainError> {
        let g = self.grant(grant_id)?;
        Ok((
            g.epsilon_spent,
            (g.epsilon_total - g.epsilon_spent).max(0.0),
        ))
    }
}

fn module_kind_name(kind: ModuleKind) -> &'static str {
    match kind {
        ModuleKind::Job => "job",
        ModuleKind::Udf => "udf",
    }
}

/// `name(Float64, Float64) -> Float64`, as users and the ledger see a UDF.
fn udf_signature(d: &unseen_sandbox::ScalarUdfDecl) -> String {
    let args: Vec<String> = d.args.iter().map(ToString::to_string).collect();
    format!("{}({}) -> {}", d.name, args.join(", "), d.returns)
}

const GRANT_COLUMNS: &str = "id, dataset, developer, scenario, purpose, epsilon_total, epsilon_spent, query_epsilon, issued_at, expires_at, revoked_at, allow_modules, allow_sql, allow_extracts, windows, designated, max_runs, runs, max_downloads, downloads, derived_reuse, approvals_required, columns, join_datasets, delta_total, query_delta, delta_spent, allow_udfs, max_open_queries, open_query_window, open_queries, udf_row_instructions";

fn grant_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Grant> {
    let list = |i: usize| -> rusqlite::Result<Vec<String>> {
        let text: String = r.get(i)?;
        Ok(serde_json::from_str(&text).unwrap_or_default())
    };
    Ok(Grant {
        id: r.get(0)?,
        dataset: r.get(1)?,
        developer: r.get(2)?,
        scenario: r.get(3)?,
        purpose: r.get(4)?,
        epsilon_total: r.get(5)?,
        epsilon_spent: r.get(6)?,
        query_epsilon: r.get(7)?,
        issued_at: r.get(8)?,
        expires_at: r.get(9)?,
        revoked_at: r.get(10)?,
        allow_modules: r.get(11)?,
        allow_sql: r.get(12)?,
        allow_extracts: r.get(13)?,
        windows: list(14)?,
        designated: list(15)?,
        max_runs: r.get(16)?,
        runs: r.get(17)?,
        max_downloads: r.get(18)?,
        downloads: r.get(19)?,
        derived_reuse: r.get(20)?,
        approvals_required: r.get(21)?,
        columns: list(22)?,
        join_datasets: list(23)?,
        delta_total: r.get(24)?,
        query_delta: r.get(25)?,
        delta_spent: r.get(26)?,
        allow_udfs: r.get(27)?,
        max_open_queries: r.get(28)?,
        open_query_window: r.get(29)?,
        open_queries: r.get::<_, i64>(30).map(|n| u64::try_from(n).unwrap_or(0))?,
        udf_row_instructions: u64::try_from(r.get::<_, i64>(31)?).unwrap_or(1),
    })
}

/// The bytes a release signature covers (domain-separated from checkpoints).
pub fn release_signing_message(canonical_document: &[u8]) -> Vec<u8> {
    let mut m = b"unseen release v1\n".to_vec();
    m.extend_from_slice(canonical_document);
    m
}

/// A table as JSON for release documents.
pub fn table_json(table: &udf_sdk::Table) -> serde_json::Value {
    use udf_sdk::ColumnValues;
    let columns: Vec<serde_json::Value> = table
        .columns
        .iter()
        .map(|c| {
            let values = match &c.values {
                ColumnValues::Text(v) => json!(v),
                ColumnValues::Int(v) => json!(v),
                ColumnValues::Float(v) => json!(v),
                ColumnValues::Estimate(v) => json!(
                    v.iter()
                        .map(|e| json!({"value": e.value, "lower": e.lower, "upper": e.upper}))
                        .collect::<Vec<_>>()
                ),
            };
            json!({"name": c.name, "values": values})
        })
        .collect();
    json!({"rows": table.rows(), "columns": columns})
}

/// Reads back what [`table_json`] wrote (for a client printing a table it
/// received): strings are text, objects estimates, whole numbers ints, any
/// other number makes the column floats.
pub fn table_from_json(value: &serde_json::Value) -> Result<udf_sdk::Table, String> {
    use udf_sdk::{Column, ColumnValues, Estimate};
    let columns = value["columns"]
        .as_array()
        .ok_or("a table needs a `columns` array")?;
    let mut table = udf_sdk::Table::default();
    for column in columns {
        let name = column["name"]
            .as_str()
            .ok_or("a column needs a `name`")?
            .to_string();
        let cells = column["values"]
            .as_array()
            .ok_or_else(|| format!("column `{name}` needs a `values` array"))?;
        let malformed = || format!("column `{name}` mixes kinds of values");
        let values = if cells.iter().all(|c| c.is_string()) && !cells.is_empty() {
            ColumnValues::Text(
                cells
                    .iter()
                    .map(|c| c.as_str().unwrap_or_default().to_string())
                    .collect(),
            )
        } else if cells.iter().all(serde_json::Value::is_object) && !cells.is_empty() {
            let number = |c: &serde_json::Value, key: &str| c[key].as_f64().ok_or_else(malformed);
            ColumnValues::Estimate(
                cells
                    .iter()
                    .map(|c| {
                        Ok(Estimate {
                            value: number(c, "value")?,
                            lower: number(c, "lower")?,
                            upper: number(c, "upper")?,
                        })
                    })
                    .collect::<Result<_, String>>()?,
            )
        } else if cells.iter().all(|c| c.is_i64()) {
            ColumnValues::Int(cells.iter().filter_map(serde_json::Value::as_i64).collect())
        } else {
            ColumnValues::Float(
                cells
                    .iter()
                    // A non-finite float was written as null.
                    .map(|c| match c {
                        serde_json::Value::Null => Ok(f64::NAN),
                        c => c.as_f64().ok_or_else(malformed),
                    })
                    .collect::<Result<_, String>>()?,
            )
        };
        table.columns.push(Column { name, values });
    }
    Ok(table)
}

/// How an output differs from an earlier release of the same name.
fn table_diff(
    earlier_output: &str,
    before: &udf_sdk::Table,
    after: &udf_sdk::Table,
) -> serde_json::Value {
    let names = |t: &udf_sdk::Table| t.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    let (was, now) = (names(before), names(after));
    let before_json = table_json(before);
    let after_json = table_json(after);
    let mut changed_cells = 0usize;
    let mut compared_cells = 0usize;
    for (i, column) in now.iter().enumerate() {
        let Some(j) = was.iter().position(|c| c == column) else {
            continue;
        };
        let old = before_json["columns"][j]["values"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let new = after_json["columns"][i]["values"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (a, b) in old.iter().zip(new.iter()) {
            compared_cells += 1;
            if a != b {
                changed_cells += 1;
            }
        }
    }
    json!({
        "against_output": earlier_output,
        "rows_before": before.rows(), "rows_after": after.rows(),
        "columns_added": now.iter().filter(|c| !was.contains(c)).collect::<Vec<_>>(),
        "columns_removed": was.iter().filter(|c| !now.contains(c)).collect::<Vec<_>>(),
        "cells_compared": compared_cells, "cells_changed": changed_cells,
    })
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
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let domain = Arc::new(Domain::open(&dir.path().join("d")).unwrap());
        let source = dir.path().join("r.parquet");
        let kind = unseen_datasets::DatasetKind::Residents;
        unseen_datasets::generate_to_path(
            kind,
            &unseen_datasets::GenerateOptions::new(500, 5),
            &source,
            &mut |_| {},
        )
        .unwrap();
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
            ..GrantRequest::new("residents", "dev", "t", 1.0)
        };
        let grant = domain.issue_grant("admin", &request).unwrap();
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
}
