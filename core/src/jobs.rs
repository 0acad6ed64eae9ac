//! The job lifecycle: admission under a grant's usage controls, the queue,
//! runs with metering, cancellation and revocation, status and usage.
//!
//! A job is `queued` once admitted (its run counted against the grant),
//! `running` while a sandbox executes it, and ends `succeeded`, `failed`,
//! `trapped` or `cancelled` (its ending, for reviewers). What everyone sees
//! is what the service decided ([`Visible`]: `finished`, `stopped` by a
//! named cause, or `refused`); what the guest computed beyond its outputs
//! goes to review as the job's outcome output. Every transition is a
//! ledger entry.
//!
//! **When a developer learns that a job ended.** How long a job that read
//! protected data took can depend on that data (a UDF may burn its per-row
//! cap on one person's row only). So such a job's end is shown to its
//! developer at a *shown end*: the real end plus a delay drawn uniformly
//! from `[0, quantum)` by the system's secure generator, independently of
//! the data ([`shown_end_ms`]). Until then the developer sees the job
//! running (no end time, outputs or spend); synchronous answers (`query`,
//! `job submit` waiting, extracts) return at the shown end, and the worker
//! that ran the job is held until then, so the next queued job cannot start
//! earlier either. For two neighbouring datasets whose runs differ by δ,
//! what the developer sees of one run differs in distribution by at most
//! δ / quantum (total variation), whatever the run's own duration and
//! jitter are; a threshold classifier on one run is right with probability
//! at most 1/2 + δ / (2 × quantum). Reviewers and auditors see the real
//! times. The quantum is [`DEFAULT_TIMING_QUANTUM`] unless `serve
//! --timing-quantum-ms` or `UNSEEN_TIMING_QUANTUM_MS` set another.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use unseen_sandbox::{Cancel, SandboxError};

pub use unseen_api::{JobStatus, JobView, OutcomeReview, RunEnding};

use crate::records::Change;
use crate::util::new_id;
use crate::{
    Domain, DomainError, Grant, GrantUsage, JobBody, JobOutcome, Role, access, host, lock, store,
};

/// What a job may use besides its grant's datasets.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct JobExtras {
    /// UDF modules (SHA-256) whose functions its queries may call.
    #[serde(default)]
    pub udfs: Vec<String>,
    /// Earlier releases (ids) its queries may read as tables
    /// `release_<id>`, where their grants allow derived reuse.
    #[serde(default)]
    pub inputs: Vec<String>,
}

/// The quantum of shown end times when nothing sets another: a job that
/// read protected data is shown to end up to this long after it did.
pub const DEFAULT_TIMING_QUANTUM: Duration = Duration::from_millis(500);

/// The largest quantum `serve --timing-quantum-ms` accepts.
pub const MAX_TIMING_QUANTUM: Duration = Duration::from_secs(60);

/// The quantum from `UNSEEN_TIMING_QUANTUM_MS` (milliseconds), or the
/// default when it is unset.
pub fn timing_quantum_from_env() -> Result<Duration, DomainError> {
    match std::env::var("UNSEEN_TIMING_QUANTUM_MS") {
        Err(_) => Ok(DEFAULT_TIMING_QUANTUM),
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .ok()
            .map(Duration::from_millis)
            .filter(|q| *q <= MAX_TIMING_QUANTUM)
            .ok_or_else(|| DomainError::OutOfRange {
                what: "UNSEEN_TIMING_QUANTUM_MS",
                value: format!("`{text}`"),
                expected: format!(
                    "give whole milliseconds from 0 to {}",
                    MAX_TIMING_QUANTUM.as_millis()
                ),
            }),
    }
}

/// When a job that ended at `end_ms` is shown to end: `end_ms` plus a
/// delay uniform in `[0, quantum)` from `random` (whole milliseconds).
/// Shifting the end by δ changes the distribution of the result by at most
/// δ / quantum in total variation.
pub fn shown_end_ms(end_ms: i64, quantum: Duration, random: u64) -> i64 {
    let quantum_ms = u64::try_from(quantum.as_millis()).unwrap_or(u64::MAX);
    if quantum_ms == 0 {
        return end_ms;
    }
    // The modulo bias is below quantum / 2^64: nothing to see.
    end_ms.saturating_add(i64::try_from(random % quantum_ms).unwrap_or(0))
}

/// Blocks until `clock` reaches `at_ms` (milliseconds since the epoch);
/// returns at once when it already has.
pub(crate) fn wait_until_ms(clock: &dyn crate::clock::Clock, at_ms: i64) {
    let left = at_ms.saturating_sub(clock.now_ms());
    if left > 0 {
        std::thread::sleep(Duration::from_millis(left as u64));
    }
}

/// When the end of the job `view` describes is shown to its developer:
/// the recorded shown end, or for jobs that ended before shown ends were
/// kept, the second it ended.
fn shown_end_of(view: &JobView) -> Option<i64> {
    view.shown_end_ms.or_else(|| {
        view.ended_at
            .as_deref()
            .and_then(crate::util::parse_rfc3339)
            .map(|secs| secs as i64 * 1000)
    })
}

/// What everyone may see of how a job ended: decided by the service from
/// what it did to the job, never from what the guest chose.
///
/// - `Finished`: the guest ran to its end, by returning (zero or not) or by
///   trapping on its own (a panic, an out-of-bounds access): whether a
///   guest fails is its choice, so the failure is reviewed like an output;
/// - `Stopped`: the service stopped it, naming the cause: a limit (fuel,
///   deadline, memory, stack, table, queries, dry runs, emits, output
///   size, concurrent runs), a cancellation, a revoked grant, a restart or
///   a failure of the service itself;
/// - `Refused`: refused before the guest ran, for reasons decided without
///   data (grant expired or revoked, module or UDF invalid, release inputs
///   no longer readable); for SQL jobs and extracts, which have no guest,
///   the policy's refusal of the query.
#[derive(Debug, Clone, PartialEq)]
pub enum Visible {
    Finished,
    Stopped { by: String, reason: String },
    Refused { reason: String },
}

impl Visible {
    fn status(&self) -> JobStatus {
        match self {
            Visible::Finished => JobStatus::Finished,
            Visible::Stopped { .. } => JobStatus::Stopped,
            Visible::Refused { .. } => JobStatus::Refused,
        }
    }

    fn stopped_by(&self) -> Option<String> {
        match self {
            Visible::Stopped { by, .. } => Some(by.clone()),
            _ => None,
        }
    }

    fn reason(&self) -> Option<String> {
        match self {
            Visible::Finished => None,
            Visible::Stopped { reason, .. } | Visible::Refused { reason } => Some(reason.clone()),
        }
    }

    /// Stopped by a limit the sandbox named. The limit's detail (how far
    /// over, how much memory was asked for) is the guest's doing and stays
    /// with reviewers.
    fn limit(limit: &str) -> Visible {
        Visible::Stopped {
            by: limit.to_string(),
            reason: format!("the job reached its {limit} limit"),
        }
    }

    /// Stopped by a person or by revocation: `reason` is the host's text
    /// (who cancelled, which grant was revoked and why).
    pub(crate) fn cancelled(reason: &str) -> Visible {
        // `stop_job` words a revocation as "grant `g` was revoked: ...".
        let by = if reason.starts_with("grant `") {
            "grant revoked"
        } else {
            "cancelled"
        };
        Visible::Stopped {
            by: by.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Stopped by a failure of the service, not of the job.
    pub(crate) fn service(reason: &str) -> Visible {
        Visible::Stopped {
            by: "service".to_string(),
            reason: reason.to_string(),
        }
    }
}

/// How a run ended, in full and as everyone sees it.
pub(crate) struct Ending {
    pub ending: RunEnding,
    pub error: Option<String>,
    pub visible: Visible,
    pub fuel: u64,
    /// The guest ran: what it computed goes to review as an outcome output.
    pub guest_ran: bool,
}

impl Ending {
    /// Refused before anything ran.
    pub(crate) fn refused(reason: String) -> Ending {
        // Shown as "refused: <reason>": the policy's own prefix once only.
        let reason = match reason.strip_prefix("refused: ") {
            Some(rest) => rest.to_string(),
            None => reason,
        };
        Ending {
            ending: RunEnding::Failed,
            error: Some(reason.clone()),
            visible: Visible::Refused { reason },
            fuel: 0,
            guest_ran: false,
        }
    }

    /// A job without a guest (SQL, extract) that ran to its end.
    pub(crate) fn finished() -> Ending {
        Ending {
            ending: RunEnding::Succeeded,
            error: None,
            visible: Visible::Finished,
            fuel: 0,
            guest_ran: false,
        }
    }

    /// A job without a guest that the service could not finish.
    pub(crate) fn failed_in_service() -> Ending {
        Ending {
            ending: RunEnding::Failed,
            error: None,
            visible: Visible::service("the service could not finish the job; nothing was released"),
            fuel: 0,
            guest_ran: false,
        }
    }

    /// A job without a guest stopped by cancellation or revocation.
    pub(crate) fn cancelled(reason: &str) -> Ending {
        Ending {
            ending: RunEnding::Cancelled,
            error: Some(format!("job cancelled: {reason}")),
            visible: Visible::cancelled(reason),
            fuel: 0,
            guest_ran: false,
        }
    }

    /// How a module's run ended, from the sandbox's report.
    fn of_run(result: Result<unseen_sandbox::RunReport, SandboxError>) -> Ending {
        let (ending, visible, fuel) = match &result {
            Ok(report) => (RunEnding::Succeeded, Visible::Finished, report.fuel_used),
            Err(SandboxError::JobFailed { fuel_used, .. }) => {
                (RunEnding::Failed, Visible::Finished, *fuel_used)
            }
            Err(SandboxError::AbiVersion { .. }) => (RunEnding::Failed, Visible::Finished, 0),
            Err(SandboxError::Trap { .. }) => (RunEnding::Trapped, Visible::Finished, 0),
            Err(SandboxError::LimitExceeded { limit, .. }) => {
                (RunEnding::Trapped, Visible::limit(limit), 0)
            }
            Err(SandboxError::Cancelled { reason }) => {
                (RunEnding::Cancelled, Visible::cancelled(reason), 0)
            }
            // Before the guest ran: the module is not a job module.
            Err(e @ SandboxError::MissingExport { .. }) => (
                RunEnding::Failed,
                Visible::Refused {
                    reason: e.to_string(),
                },
                0,
            ),
            Err(_) => (
                RunEnding::Failed,
                Visible::service("the service failed while running the job; nothing was released"),
                0,
            ),
        };
        let guest_ran = !matches!(visible, Visible::Refused { .. });
        Ending {
            ending,
            error: result.err().map(|e| e.to_string()),
            visible,
            fuel,
            guest_ran,
        }
    }
}

/// A job that started (its host and log), or the outcome of one that
/// could not start.
pub(crate) type Started = Result<(host::Host, Arc<Mutex<host::JobLog>>), JobOutcome>;

/// The table an outcome output holds, one `(item, value)` row per fact:
/// `ending`, `error`, `fuel_used`, `queries`, `rows_read`, `run_ms`,
/// `started_at`, `ended_at`, then one `output`, `refusal` and `log` row per
/// output, refusal and log line. Text only, so the automatic checks scan
/// every value for identifiers and prohibited values.
fn outcome_table(view: &JobView) -> udf_sdk::Table {
    let mut rows: Vec<(&str, String)> = Vec::new();
    if let Some(ending) = &view.ending {
        rows.push(("ending", ending.to_string()));
    }
    if let Some(error) = &view.error {
        rows.push(("error", error.clone()));
    }
    for (item, value) in [
        ("fuel_used", view.fuel_used),
        ("queries", view.queries),
        ("rows_read", view.rows_read),
        ("run_ms", view.run_ms),
    ] {
        if let Some(v) = value {
            rows.push((item, v.to_string()));
        }
    }
    for (item, value) in [
        ("started_at", &view.started_at),
        ("ended_at", &view.ended_at),
    ] {
        if let Some(v) = value {
            rows.push((item, v.clone()));
        }
    }
    rows.extend(view.outputs.iter().map(|o| ("output", o.clone())));
    rows.extend(view.refusals.iter().map(|r| ("refusal", r.clone())));
    rows.extend(view.logs.iter().map(|l| ("log", l.clone())));
    udf_sdk::Table::default()
        .with(
            "item",
            udf_sdk::ColumnValues::Text(rows.iter().map(|(i, _)| (*i).to_string()).collect()),
        )
        .with(
            "value",
            udf_sdk::ColumnValues::Text(rows.into_iter().map(|(_, v)| v).collect()),
        )
}

/// Fills the guest's part of `view` from an approved outcome table: the
/// developer sees exactly what the reviewer approved.
fn apply_outcome_table(view: &mut JobView, table: &udf_sdk::Table) {
    let (Some(udf_sdk::ColumnValues::Text(items)), Some(udf_sdk::ColumnValues::Text(values))) =
        (table.column("item"), table.column("value"))
    else {
        return;
    };
    let number = |v: &str| v.parse::<i64>().ok();
    view.outputs.clear();
    for (item, value) in items.iter().zip(values) {
        match item.as_str() {
            "ending" => view.ending = RunEnding::parse(value),
            "error" => view.error = Some(value.clone()),
            "fuel_used" => view.fuel_used = number(value),
            "queries" => view.queries = number(value),
            "rows_read" => view.rows_read = number(value),
            "run_ms" => view.run_ms = number(value),
            "started_at" => view.started_at = Some(value.clone()),
            "ended_at" => view.ended_at = Some(value.clone()),
            "output" => view.outputs.push(value.clone()),
            "refusal" => view.refusals.push(value.clone()),
            "log" => view.logs.push(value.clone()),
            _ => {}
        }
    }
}

/// The guest's part of a view, withheld.
/// Shows an ended job to its developer as running until its shown end
/// (with neither outputs nor spend); returns whether it did. Either way the
/// shown end itself is left out.
fn hide_unshown_end(view: &mut JobView, now_ms: i64) -> bool {
    let shown_end = shown_end_of(view);
    view.shown_end_ms = None;
    let ended = view.status.has_ended();
    if !ended || shown_end.is_some_and(|at| now_ms >= at) {
        return false;
    }
    view.status = JobStatus::Running;
    view.stopped_by = None;
    view.reason = None;
    view.outcome = None;
    view.ending = None;
    view.error = None;
    view.ended_at = None;
    view.outputs.clear();
    view.releases.clear();
    view.epsilon_spent = 0.0;
    true
}

fn withhold_guest_part(view: &mut JobView) {
    view.ending = None;
    view.error = None;
    view.started_at = None;
    view.ended_at = None;
    view.fuel_used = None;
    view.queries = None;
    view.rows_read = None;
    view.run_ms = None;
    view.logs.clear();
    view.refusals.clear();
}

impl Domain {
    /// Whether `user` may use `grant` now: designated, not revoked, not
    /// expired, inside an allowed time window.
    pub(crate) fn check_grant_usable(&self, grant: &Grant, user: &str) -> Result<(), DomainError> {
        let err = |reason: String| DomainError::Grant {
            grant: grant.id.clone(),
            reason,
        };
        if !grant.designates(user) {
            return Err(err(format!(
                "is issued to `{}`, and `{user}` is not one of its designated users",
                grant.developer
            )));
        }
        if let Some(at) = &grant.revoked_at {
            return Err(err(format!(
                "was revoked at {at}; ask the data provider for a new grant"
            )));
        }
        if grant.expires_at <= self.now_rfc3339() {
            return Err(err(format!(
                "expired at {}; ask the data provider to renew it",
                grant.expires_at
            )));
        }
        access::check_windows(&grant.id, &grant.windows, &self.now_rfc3339())
    }

    /// Checks the submitter, the grant's controls and the run limit, and
    /// records the job as queued. The run is counted here, atomically with
    /// the job row, so concurrent submissions cannot exceed the limit.
    pub(crate) fn admit_job(
        &self,
        submitter: &str,
        grant_id: &str,
        body: JobBody<'_>,
        params: &BTreeMap<String, String>,
        extras: &JobExtras,
    ) -> Result<String, DomainError> {
        self.require(submitter, Role::Developer, "submit jobs")?;
        let grant = self.grant(grant_id)?;
        self.check_grant_usable(&grant, submitter)?;
        let (module, sql, allowed, operation) = match body {
            JobBody::Module(m) => (Some(m), None, grant.allow_modules, "wasm modules"),
            JobBody::Sql(q) => (None, Some(q), grant.allow_sql, "SQL jobs"),
            JobBody::Extract(d) => (None, Some(d), grant.allow_extracts, "masked extracts"),
        };
        if let Some(sha) = module
            && !store::jobs::has_job_module(&lock(&self.db), sha)?
        {
            return Err(DomainError::NotFound {
                what: "module",
                id: sha.to_string(),
                list: "job upload",
            });
        }
        if !allowed {
            return Err(DomainError::Grant {
                grant: grant.id.clone(),
                reason: format!(
                    "does not allow {operation}; use an operation it allows, or ask the data provider to extend it"
                ),
            });
        }
        self.check_udfs(&grant, &extras.udfs)?;
        let job_id = new_id("job");
        let params_json = serde_json::to_string(params).unwrap_or_else(|_| "{}".into());
        // Checked now, so a job that may not read them is never queued.
        self.reusable_releases(submitter, &extras.inputs)?;
        let udfs_json = serde_json::to_string(&extras.udfs).unwrap_or_else(|_| "[]".into());
        let inputs_json = serde_json::to_string(&extras.inputs).unwrap_or_else(|_| "[]".into());
        let body = json!({
            "job": job_id, "grant": grant_id, "module_sha256": module, "sql": sql,
            "params": params.keys().collect::<Vec<_>>(), "udf_modules": extras.udfs, "inputs": extras.inputs,
        });
        self.commit_recorded(submitter, "job.submitted", |tx| {
            if !store::jobs::count_run(tx, grant_id)? {
                return Err(DomainError::Grant {
                    grant: grant.id.clone(),
                    reason: format!(
                        "has used all {} of its runs; ask the data provider for more",
                        grant.max_runs.unwrap_or(0)
                    ),
                });
            }
            store::jobs::insert_queued(
                tx,
                &store::jobs::NewJob {
                    id: &job_id,
                    grant: grant_id,
                    module,
                    sql,
                    submitter,
                    submitted_at: &self.now_rfc3339(),
                    params: &params_json,
                    udf_modules: &udfs_json,
                    inputs: &inputs_json,
                },
            )?;
            Ok(Change::Record(body, ()))
        })?;
        Ok(job_id)
    }

    /// UDF modules may be used only under a grant that allows them; every
    /// one must be a stored UDF module, and no two functions, nor a function
    /// and a built-in, may share a name (a UDF never silently replaces
    /// another function).
    pub(crate) fn check_udfs(&self, grant: &Grant, udfs: &[String]) -> Result<(), DomainError> {
        if udfs.is_empty() {
            return Ok(());
        }
        if !grant.allow_udfs {
            return Err(DomainError::Grant {
                grant: grant.id.clone(),
                reason: "does not allow UDF modules; run without them, or ask the data provider for a grant that allows UDFs".into(),
            });
        }
        // The functions queries have, whatever DataFusion features the
        // build turned on (`policy::limits::query_functions`).
        let builtins = unseen_policy::limits::query_functions(
            datafusion::execution::SessionStateBuilder::new().with_default_features(),
        )
        .build();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for sha in udfs {
            let functions = store::jobs::udf_functions(&lock(&self.db), sha)?;
            let Some(functions) = functions else {
                return Err(DomainError::NotFound {
                    what: "UDF module",
                    id: sha.clone(),
                    list: "job submit --udf",
                });
            };
            let functions: Vec<String> = serde_json::from_str(&functions).unwrap_or_default();
            for f in functions {
                let name = f.split('(').next().unwrap_or_default().to_string();
                if builtins.scalar_functions().contains_key(&name)
                    || builtins.aggregate_functions().contains_key(&name)
                    || builtins.window_functions().contains_key(&name)
                {
                    return Err(DomainError::UdfShadowsBuiltin {
                        name,
                        module: sha.clone(),
                    });
                }
                if let Some(other) = seen.insert(name.clone(), sha.clone()) {
                    return Err(DomainError::UdfDeclaredTwice {
                        name,
                        first: other,
                        second: sha.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Admits a stored module as a queued job, with the UDF modules its
    /// queries may call; run it with [`Domain::execute_job`].
    pub fn submit_job(
        &self,
        submitter: &str,
        grant_id: &str,
        module_sha: &str,
        params: BTreeMap<String, String>,
        extras: &JobExtras,
    ) -> Result<String, DomainError> {
        self.admit_job(
            submitter,
            grant_id,
            JobBody::Module(module_sha),
            &params,
            extras,
        )
    }

    /// Moves a queued job to running and builds its host; a job whose grant
    /// or dataset became unusable while it waited ends failed instead.
    pub(crate) fn start_job(self: &Arc<Self>, job_id: &str) -> Result<Started, DomainError> {
        self.start_job_with(job_id, Cancel::new())
    }

    /// [`Domain::start_job`] with the handle that stops the job, so a
    /// caller (a request whose client may leave) can stop it too.
    pub(crate) fn start_job_with(
        self: &Arc<Self>,
        job_id: &str,
        cancel: Cancel,
    ) -> Result<Started, DomainError> {
        let row = store::jobs::to_start(&lock(&self.db), job_id)?;
        let Some(store::jobs::ToStart {
            grant: grant_id,
            submitter,
            status,
            params,
            udf_modules,
            inputs,
        }) = row
        else {
            return Err(DomainError::NotFound {
                what: "job",
                id: job_id.to_string(),
                list: "job list",
            });
        };
        let log = Arc::new(Mutex::new(host::JobLog::default()));
        if status != "queued" {
            return Ok(Err(self.job_outcome(job_id)?));
        }
        let grant = self.grant(&grant_id)?;
        let udf_modules: Vec<String> = serde_json::from_str(&udf_modules).unwrap_or_default();
        let inputs: Vec<String> = serde_json::from_str(&inputs).unwrap_or_default();
        // Rechecked at start: the input's grant may have been revoked since.
        let opened = self
            .check_grant_usable(&grant, &submitter)
            .and_then(|()| self.open_grant_datasets(&grant))
            .and_then(|datasets| {
                Ok((
                    datasets,
                    self.job_udfs(&udf_modules, &grant)?,
                    self.release_inputs(&submitter, &inputs)?,
                ))
            });
        let (datasets, udf_modules, inputs) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                let outcome = self.end_job(
                    job_id.to_string(),
                    &submitter,
                    &log,
                    Ending::refused(format!("the job could not start: {e}")),
                )?;
                return Ok(Err(outcome));
            }
        };
        lock(&self.running).insert(job_id.to_string(), (grant_id.clone(), cancel.clone()));
        let (moved, _) = self.commit_recorded(&submitter, "job.started", |tx| {
            let moved = store::jobs::set_running(tx, job_id, &self.now_rfc3339())?;
            Ok(if moved {
                Change::Record(json!({"job": job_id, "grant": grant_id}), true)
            } else {
                Change::Abandon(false)
            })
        })?;
        if !moved {
            // Cancelled between the read above and now.
            lock(&self.running).remove(job_id);
            return Ok(Err(self.job_outcome(job_id)?));
        }
        lock(&log).started = Some(Instant::now());
        let params: BTreeMap<String, String> = serde_json::from_str(&params).unwrap_or_default();
        let job_host = host::Host {
            domain: Arc::clone(self),
            // Queries run on the engine's own threads (see `Domain::engine`).
            runtime: self.engine(),
            job_id: job_id.to_string(),
            submitter,
            grant,
            datasets,
            udf_modules,
            inputs,
            params,
            log: Arc::clone(&log),
            cancel,
        };
        Ok(Ok((job_host, log)))
    }

    /// Admits and starts a job in one step (SQL jobs and extracts).
    pub(crate) fn begin_job(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        submitter: &str,
        grant_id: &str,
        body: JobBody<'_>,
        extras: &JobExtras,
    ) -> Result<Started, DomainError> {
        // The caller's runtime: queries run on the domain's engine threads.
        let _ = runtime;
        self.begin_job_with(submitter, grant_id, body, extras, Cancel::new())
    }

    /// [`Domain::begin_job`] with the handle that stops the job.
    pub(crate) fn begin_job_with(
        self: &Arc<Self>,
        submitter: &str,
        grant_id: &str,
        body: JobBody<'_>,
        extras: &JobExtras,
        cancel: Cancel,
    ) -> Result<Started, DomainError> {
        let job_id = self.admit_job(submitter, grant_id, body, &BTreeMap::new(), extras)?;
        self.start_job_with(&job_id, cancel)
    }

    /// Records how a job ended and returns its outcome. When its guest
    /// ran, what the guest computed beyond its outputs (how it ended, its
    /// error, logs, refusals and metering) goes to quarantine as the job's
    /// outcome output, for a reviewer to decide like any output.
    pub(crate) fn end_job(
        &self,
        job_id: String,
        submitter: &str,
        log: &Mutex<host::JobLog>,
        ending: Ending,
    ) -> Result<JobOutcome, DomainError> {
        let log = std::mem::take(&mut *lock(log));
        let run_ms = log
            .started
            .map(|s| i64::try_from(s.elapsed().as_millis()).unwrap_or(i64::MAX));
        let logs = serde_json::to_string(&log.lines).unwrap_or_else(|_| "[]".into());
        let refusals = serde_json::to_string(&log.refusals).unwrap_or_else(|_| "[]".into());
        let Ending {
            ending,
            error,
            visible,
            fuel,
            guest_ran,
        } = ending;
        let guest = store::jobs::has_module(&lock(&self.db), &job_id)?;
        let end_ms = self.now_ms();
        // Only a run that read protected data can take a data-dependent
        // time; the rest are shown as they end.
        let shown_end = if log.read_protected {
            shown_end_ms(
                end_ms,
                self.timing_quantum(),
                u64::from_le_bytes(crate::util::random_bytes::<8>()),
            )
        } else {
            end_ms
        };
        let committed = self.commit_recorded(submitter, "job.ended", |tx| {
            let ended = store::jobs::set_ended(
                tx,
                &store::jobs::RunEnd {
                    id: &job_id,
                    status: ending.as_str(),
                    error: error.as_deref(),
                    ended_at: &self.now_rfc3339(),
                    fuel: fuel as i64,
                    queries: log.queries as i64,
                    run_ms,
                    rows_scanned: log.rows_read as i64,
                    epsilon: log.epsilon_spent,
                    logs: &logs,
                    refusals: &refusals,
                    visible: visible.status().as_str(),
                    stopped_by: visible.stopped_by().as_deref(),
                    reason: visible.reason().as_deref(),
                    shown_end_ms: shown_end,
                },
            )?;
            if !ended {
                // The service already ended it (shutdown, abandonment),
                // with its own `job.ended`: one end, one entry.
                return Ok(Change::Abandon(false));
            }
            Ok(Change::Record(
                json!({
                    "job": job_id, "status": ending, "visible": visible.status(),
                    "stopped_by": visible.stopped_by(), "error": error, "fuel_used": fuel,
                    "queries": log.queries, "rows_read": log.rows_read, "run_ms": run_ms,
                    "udf_rows": log.udf_rows, "udf_rows_failed": log.udf_rows_failed,
                    "refusals": log.refusals.len(),
                    "outputs": log.outputs, "epsilon_spent": log.epsilon_spent,
                    "shown_end_ms": shown_end,
                }),
                ended,
            ))
        });
        // Only now is the job no longer running: a service that stops
        // waits for the running set to empty, and must not take a job
        // whose end is being recorded for one that never ended.
        lock(&self.running).remove(&job_id);
        let (ended, _) = committed?;
        let outcome_output = if ended && guest_ran {
            Some(self.quarantine_outcome(&job_id, submitter)?)
        } else {
            None
        };
        // Whoever waits for the outcome (a developer's query, a waiting
        // submission, the worker that ran the job) gets it at the shown
        // end, not before.
        wait_until_ms(&*self.clock, shown_end);
        Ok(JobOutcome {
            job_id,
            status: visible.status(),
            stopped_by: visible.stopped_by(),
            reason: visible.reason(),
            ending: Some(ending),
            error,
            outputs: log.outputs,
            outcome_output,
            guest,
            refusals: log.refusals,
            logs: log.lines,
            epsilon_spent: log.epsilon_spent,
            fuel_used: fuel,
        })
    }

    /// Quarantines the outcome of a job that just ended, from its record.
    fn quarantine_outcome(&self, job_id: &str, submitter: &str) -> Result<String, DomainError> {
        let view = self.job_record(job_id)?;
        let grant = self.grant(&view.grant)?;
        // The checks need the datasets' prohibited-value indexes, not their
        // data: a destroyed dataset (no key) is checked without its index.
        let datasets = self.open_grant_datasets(&grant).unwrap_or_default();
        let id = self.quarantine_as(
            submitter,
            crate::Quarantine {
                job_id,
                grant_id: &view.grant,
                datasets: &datasets,
                name: "outcome",
                kind: "outcome",
                extra_findings: Vec::new(),
                disclosure: None,
            },
            &outcome_table(&view),
        )?;
        let ((), ticket) = self.wal.unflushed(&mut lock(&self.db), |db| {
            store::jobs::set_outcome_output(db, job_id, &id)
        })?;
        self.sync_store(ticket)?;
        Ok(id)
    }

    /// Quarantines the outcome output of every job whose guest ran and
    /// whose end is recorded but whose outcome is not: the process stopped
    /// between the two (`end_job` records the end, then quarantines what
    /// the guest computed). Run at open, before anything else runs. Jobs
    /// that ended before outcomes existed (no shown end) keep none; jobs
    /// refused before their guest ran have none. Returns how many.
    pub(crate) fn quarantine_lost_outcomes(&self) -> Result<usize, DomainError> {
        let lost = store::jobs::without_outcome(&lock(&self.db))?;
        for (job, submitter) in &lost {
            let output = self.quarantine_outcome(job, submitter)?;
            tracing::warn!(job = %job, output = %output, "quarantined the outcome of a job that ended as the service stopped");
        }
        Ok(lost.len())
    }

    /// Ends a job that stopped outside the normal path (its thread
    /// panicked): failed, with the reason, and recorded.
    pub fn end_abandoned_job(&self, job_id: &str, reason: &str) -> Result<(), DomainError> {
        self.end_unrecorded(job_id, RunEnding::Failed, reason, "service", reason)
    }

    /// The outcome of a job that already ended.
    fn job_outcome(&self, job_id: &str) -> Result<JobOutcome, DomainError> {
        let view = self.job_record(job_id)?;
        Ok(JobOutcome {
            job_id: view.id,
            status: view.status,
            stopped_by: view.stopped_by,
            reason: view.reason,
            ending: view.ending,
            error: view.error,
            outputs: view.outputs,
            outcome_output: view.outcome.map(|o| o.output),
            guest: view.module_sha256.is_some(),
            refusals: view.refusals,
            logs: view.logs,
            epsilon_spent: view.epsilon_spent,
            fuel_used: view.fuel_used.map_or(0, |f| u64::try_from(f).unwrap_or(0)),
        })
    }

    /// Runs a queued module job to completion. Blocking: call from a thread
    /// that may block (not from inside an async task). Its queries run on
    /// the domain's engine threads, whatever runtime `runtime` is.
    pub fn execute_job(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        job_id: &str,
    ) -> Result<JobOutcome, DomainError> {
        let _ = runtime;
        let module_sha = store::jobs::module_of(&lock(&self.db), job_id)?;
        let Some(module_sha) = module_sha else {
            return Err(DomainError::NotModuleJob {
                job: job_id.to_string(),
            });
        };
        let (job_host, log) = match self.start_job(job_id)? {
            Ok(started) => started,
            Err(ended) => return Ok(ended),
        };
        let submitter = job_host.submitter.clone();
        let cancel = job_host.cancel.clone();
        let bytes =
            store::jobs::module_bytes(&lock(&self.db), &module_sha).map_err(DomainError::from);
        let module = match bytes.and_then(|b| self.validated(&b, unseen_sandbox::ModuleKind::Job)) {
            Ok(m) => m,
            Err(e) => {
                return self.end_job(
                    job_id.to_string(),
                    &submitter,
                    &log,
                    Ending::refused(e.to_string()),
                );
            }
        };
        let result = self
            .sandbox
            .run_job_cancellable(&module, Box::new(job_host), &cancel);
        let ending = match cancel.reason() {
            // Stopped from outside while the guest was waiting for the host
            // (its query was dropped): the guest may end on the refusal,
            // however it likes, before the next epoch tick, but the job was
            // cancelled.
            Some(reason) => Ending {
                guest_ran: true,
                fuel: match &result {
                    Ok(report) => report.fuel_used,
                    Err(SandboxError::JobFailed { fuel_used, .. }) => *fuel_used,
                    Err(_) => 0,
                },
                ..Ending::cancelled(&reason)
            },
            None => Ending::of_run(result),
        };
        self.end_job(job_id.to_string(), &submitter, &log, ending)
    }

    /// Submits and runs a job under a grant, to completion. Blocking, like
    /// [`Domain::execute_job`].
    pub fn run_job(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        submitter: &str,
        grant_id: &str,
        module_sha: &str,
        params: BTreeMap<String, String>,
        extras: &JobExtras,
    ) -> Result<JobOutcome, DomainError> {
        let job_id = self.submit_job(submitter, grant_id, module_sha, params, extras)?;
        self.execute_job(runtime, &job_id)
    }

    /// Runs one SQL statement as a one-query job: the same admission, DP,
    /// budget, quarantine and review path as a wasm job. The released table
    /// goes to quarantine as output `result`. Blocking, like [`Domain::run_job`].
    pub fn run_sql(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        submitter: &str,
        grant_id: &str,
        sql: &str,
        extras: &JobExtras,
    ) -> Result<JobOutcome, DomainError> {
        self.run_sql_cancellable(runtime, submitter, grant_id, sql, extras, &Cancel::new())
    }

    /// [`Domain::run_sql`] that `cancel` stops wherever it is (before the
    /// job starts, in admission, in the engine): the job then ends
    /// `cancelled` with the reason given, and nothing is released.
    pub fn run_sql_cancellable(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        submitter: &str,
        grant_id: &str,
        sql: &str,
        extras: &JobExtras,
        cancel: &Cancel,
    ) -> Result<JobOutcome, DomainError> {
        use unseen_sandbox::JobHost;
        // The caller's runtime: queries run on the domain's engine threads.
        let _ = runtime;
        let started = self.begin_job_with(
            submitter,
            grant_id,
            JobBody::Sql(sql),
            extras,
            cancel.clone(),
        )?;
        let (mut job_host, log) = match started {
            Ok(started) => started,
            Err(ended) => return Ok(ended),
        };
        let job_id = job_host.job_id.clone();
        // No guest: the policy's refusal of the developer's own query is
        // decided from the query, the manifests and the grant, and shown.
        let ending = match job_host.query(sql) {
            Ok(bytes) => match udf_sdk::abi::decode_query_result(&bytes) {
                Ok(released) => match job_host.emit("result", released.table) {
                    Ok(()) => Ending::finished(),
                    Err(e) => Ending {
                        error: Some(e),
                        ..Ending::failed_in_service()
                    },
                },
                Err(e) => Ending {
                    error: Some(format!("released result is malformed: {e}")),
                    ..Ending::failed_in_service()
                },
            },
            // Stopped from outside, not by anything the data did.
            Err(_) if cancel.reason().is_some() => {
                Ending::cancelled(&cancel.reason().unwrap_or_default())
            }
            Err(refusal) => Ending::refused(refusal),
        };
        self.end_job(job_id, submitter, &log, ending)
    }

    /// Cancels a queued or running job: its submitter or an admin may.
    pub fn cancel_job(
        &self,
        actor: &str,
        job_id: &str,
        reason: &str,
    ) -> Result<String, DomainError> {
        let role = self.role_of(actor)?;
        let job = self.job_record(job_id)?;
        if role != Role::Admin && job.submitter != actor {
            return Err(DomainError::Forbidden {
                actor: actor.to_string(),
                role: role.as_str().to_string(),
                action: "cancel another user's job",
                needed: "admin".into(),
            });
        }
        let reason = if reason.trim().is_empty() {
            format!("cancelled by {actor}")
        } else {
            format!("cancelled by {actor}: {reason}")
        };
        let state = self.stop_job(actor, job_id, &reason)?;
        Ok(state)
    }

    /// Stops one job: a queued job ends `cancelled` at once, a running one
    /// at its next epoch tick. Returns what happened.
    ///
    /// A job that ended but whose end its developer has not been shown yet
    /// is, to them, still running: their cancellation then turns it
    /// `cancelled` as it would a running job, so that whether it had
    /// already ended (which can depend on the data) does not show.
    fn stop_job(&self, actor: &str, job_id: &str, reason: &str) -> Result<String, DomainError> {
        let visible = Visible::cancelled(reason);
        // The service itself (`system`) stops jobs too: not a developer.
        let developer = matches!(self.role_of(actor), Ok(Role::Developer));
        let (state, _) = self.commit_recorded(actor, "job.cancelled", |tx| {
            let stopped_by = visible.stopped_by();
            let was_queued = store::jobs::cancel_queued(
                tx,
                job_id,
                reason,
                &self.now_rfc3339(),
                stopped_by.as_deref(),
            )?;
            let not_yet_shown = developer
                && store::jobs::cancel_unshown(
                    tx,
                    job_id,
                    &format!("job cancelled: {reason}"),
                    stopped_by.as_deref(),
                    reason,
                    self.now_ms(),
                )?;
            // What the ledger records (the store's state) and what the
            // developer is told (a job whose end is not shown yet is, to
            // them, still running: "stopping").
            let (recorded, told) = if was_queued {
                ("cancelled", "cancelled")
            } else if not_yet_shown {
                ("cancelled", "stopping")
            } else if let Some((_, cancel)) = lock(&self.running).get(job_id) {
                // A running job ends at its next epoch tick, through
                // `end_job`, which records how it ended.
                cancel.cancel(reason);
                ("stopping", "stopping")
            } else {
                return Err(DomainError::JobEnded {
                    job: job_id.to_string(),
                });
            };
            Ok(Change::Record(
                json!({"job": job_id, "reason": reason, "state": recorded}),
                told,
            ))
        })?;
        Ok(state.to_string())
    }

    /// Stops a job whose client went away before its answer: recorded as
    /// `job.cancelled` by the system, with the reason.
    pub fn stop_for_client(&self, job_id: &str, reason: &str) -> Result<String, DomainError> {
        self.stop_job("system", job_id, reason)
    }

    /// Jobs running in this process now.
    pub fn running_jobs(&self) -> usize {
        lock(&self.running).len()
    }

    /// Asks every running job to stop (the service is stopping); each ends
    /// `cancelled` at its next epoch tick or engine poll. Returns how many
    /// were asked.
    pub fn stop_running_jobs(&self, reason: &str) -> usize {
        let running = lock(&self.running);
        for (_, cancel) in running.values() {
            cancel.cancel(reason);
        }
        running.len()
    }

    /// Ends, as interrupted, every job still queued or running when the
    /// service is about to exit (its grace period is over), each with a
    /// `job.ended` entry. Returns how many.
    pub fn end_unfinished_jobs(&self, reason: &str) -> Result<usize, DomainError> {
        let unfinished = store::jobs::unfinished(&lock(&self.db))?;
        for job in &unfinished {
            // A running job already asked to stop (the grace period ran
            // out) but too slow to record its own end (an engine poll on a
            // loaded machine) is ended as it would have ended itself:
            // cancelled, with the reason it was given.
            let asked_to_stop = lock(&self.running).get(job).and_then(|(_, cancel)| {
                let earlier = cancel.reason();
                cancel.cancel(reason);
                earlier
            });
            match asked_to_stop {
                Some(earlier) => self.end_cancelled_job(job, &earlier)?,
                None => self.end_abandoned_job(job, reason)?,
            }
        }
        Ok(unfinished.len())
    }

    /// Ends a running job cancelled from outside that has not recorded its
    /// end, as `cancelled` with `reason`. Nothing is released: outputs wait
    /// in quarantine as for any ended job.
    fn end_cancelled_job(&self, job_id: &str, reason: &str) -> Result<(), DomainError> {
        let stopped_by = Visible::cancelled(reason).stopped_by().unwrap_or_default();
        let error = format!("job cancelled: {reason}");
        self.end_unrecorded(job_id, RunEnding::Cancelled, &error, &stopped_by, reason)
    }

    /// Ends a queued or running job whose own thread did not record its
    /// end, with a `job.ended` entry; nothing if it has ended meanwhile.
    fn end_unrecorded(
        &self,
        job_id: &str,
        ending: RunEnding,
        error: &str,
        stopped_by: &str,
        reason: &str,
    ) -> Result<(), DomainError> {
        let committed = self.commit_recorded("system", "job.ended", |tx| {
            let ended = store::jobs::set_stopped(
                tx,
                job_id,
                ending.as_str(),
                error,
                &self.now_rfc3339(),
                stopped_by,
                reason,
            )?;
            Ok(if ended {
                Change::Record(
                    json!({"job": job_id, "status": ending, "visible": "stopped", "stopped_by": stopped_by, "error": error}),
                    (),
                )
            } else {
                Change::Abandon(())
            })
        });
        // Out of the running set once its end is recorded, not before (see
        // `end_job`).
        lock(&self.running).remove(job_id);
        committed.map(|_| ())
    }

    /// Revokes a grant at once: no new job starts under it and its running
    /// jobs are stopped. Returns how many jobs were stopped.
    pub fn revoke_grant(
        &self,
        actor: &str,
        grant_id: &str,
        reason: &str,
    ) -> Result<usize, DomainError> {
        self.require(actor, Role::Admin, "revoke grants")?;
        if reason.trim().is_empty() {
            return Err(DomainError::ReasonRequired {
                action: "a revocation",
                examples: "",
            });
        }
        let grant = self.grant(grant_id)?;
        if let Some(at) = grant.revoked_at {
            return Err(DomainError::Grant {
                grant: grant_id.to_string(),
                reason: format!("was already revoked at {at}"),
            });
        }
        let (jobs, _) = self.commit_recorded(actor, "grant.revoked", |tx| {
            store::jobs::revoke_grant(tx, grant_id, &self.now_rfc3339())?;
            let jobs = store::jobs::unfinished_under(tx, grant_id)?;
            Ok(Change::Record(
                json!({"grant": grant_id, "reason": reason, "jobs_stopped": jobs.len()}),
                jobs,
            ))
        })?;
        let why = format!("grant `{grant_id}` was revoked: {reason}");
        let mut stopped = 0;
        for job in &jobs {
            if self.stop_job(actor, job, &why).is_ok() {
                stopped += 1;
            }
        }
        // Outside data imported for the grant goes with it. The revocation
        // stands whatever happens here; the server's sweep retries hourly.
        if let Err(e) = self.destroy_ended_imports(actor) {
            tracing::error!(error = %e, grant = grant_id, "could not destroy the imports of a revoked grant");
        }
        Ok(stopped)
    }

    fn job_record(&self, job_id: &str) -> Result<JobView, DomainError> {
        let db = lock(&self.db);
        let mut view = store::jobs::view(&db, job_id)?.ok_or_else(|| DomainError::NotFound {
            what: "job",
            id: job_id.to_string(),
            list: "job list",
        })?;
        view.outputs = store::jobs::output_ids(&db, job_id)?;
        view.releases = store::jobs::release_ids(&db, job_id)?;
        Ok(view)
    }

    /// What a developer sees of their job (see [`JobView`]): what the
    /// service decided, and what the guest computed only as a reviewer
    /// approved it in the job's outcome output.
    ///
    /// A job's end is shown at its shown end (see the module
    /// documentation): before it, the job is running, with neither its
    /// outputs nor its spend so far (both grow as it runs, and when they
    /// grow would time its queries).
    fn developer_view(&self, mut view: JobView, now_ms: i64) -> Result<JobView, DomainError> {
        let hidden = hide_unshown_end(&mut view, now_ms);
        withhold_guest_part(&mut view);
        if hidden {
            return Ok(view);
        }
        if view.module_sha256.is_none() {
            // SQL jobs and extracts: one output, made by the service.
            return Ok(view);
        }
        view.outputs.clear();
        if let Some(outcome) = &view.outcome
            && outcome.review == "approved"
        {
            let (_, _, table) = self.output(&outcome.output)?;
            apply_outcome_table(&mut view, &table);
        }
        let decided = store::jobs::decided_output_ids(&lock(&self.db), &view.id)?;
        for output in decided {
            if !view.outputs.contains(&output) {
                view.outputs.push(output);
            }
        }
        Ok(view)
    }

    /// A job's status and metering. Its submitter, admins, reviewers and
    /// auditors may read it (it carries no data); its submitter sees what
    /// [`JobView`] says a developer sees.
    pub fn job(&self, actor: &str, job_id: &str) -> Result<JobView, DomainError> {
        let role = self.role_of(actor)?;
        let view = self.job_record(job_id)?;
        if role == Role::Developer && view.submitter != actor {
            return Err(DomainError::Forbidden {
                actor: actor.to_string(),
                role: role.as_str().to_string(),
                action: "read another developer's job",
                needed: "admin, reviewer or auditor".into(),
            });
        }
        if role == Role::Developer {
            self.developer_view(view, self.now_ms())
        } else {
            Ok(view)
        }
    }

    /// Jobs, newest first: a developer sees their own, other roles all.
    pub fn jobs(&self, actor: &str, grant: Option<&str>) -> Result<Vec<JobView>, DomainError> {
        let role = self.role_of(actor)?;
        let mine = (role == Role::Developer).then_some(actor);
        let ids = store::jobs::ids(&lock(&self.db), mine, grant)?;
        ids.iter()
            .map(|id| {
                let view = self.job_record(id)?;
                if role == Role::Developer {
                    self.developer_view(view, self.now_ms())
                } else {
                    Ok(view)
                }
            })
            .collect()
    }

    /// Use of a grant for pricing: runs, jobs, queries, fuel, rows read,
    /// time, epsilon, outputs, releases, downloads. Admins, auditors,
    /// reviewers and the grant's designated users may read it; designated
    /// developers see what [`GrantUsage`] says they see.
    pub fn grant_usage(&self, actor: &str, grant_id: &str) -> Result<GrantUsage, DomainError> {
        let role = self.role_of(actor)?;
        let grant = self.grant(grant_id)?;
        let oversight = matches!(role, Role::Admin | Role::Auditor | Role::Reviewer);
        if !(oversight || grant.designates(actor)) {
            return Err(DomainError::Forbidden {
                actor: actor.to_string(),
                role: role.as_str().to_string(),
                action: "read the usage of this grant",
                needed: "admin, auditor or reviewer (or be designated on the grant)".into(),
            });
        }
        let open_queries_in_window = self.open_queries_in_window(&grant)?;
        let epsilon_spent = self.grant_as_seen_by(actor, grant.clone())?.epsilon_spent;
        let db = lock(&self.db);
        let developer = role == Role::Developer;
        let mut jobs_by_status = BTreeMap::new();
        for (status, n) in
            store::jobs::count_shown_by_status(&db, grant_id, developer, self.now_ms())?
        {
            jobs_by_status.insert(status, u64::try_from(n).unwrap_or(0));
        }
        let (queries, fuel, rows_read, run_ms) = store::jobs::metering(&db, grant_id)?;
        let (outputs, releases) = store::jobs::outputs_and_releases(&db, grant_id)?;
        let shown = |v: i64| oversight.then_some(v);
        Ok(GrantUsage {
            grant: grant.id,
            runs: grant.runs,
            max_runs: grant.max_runs,
            jobs_by_status,
            queries: shown(queries),
            fuel_used: shown(fuel),
            rows_read: shown(rows_read),
            run_ms: shown(run_ms),
            open_queries: grant.open_queries,
            open_queries_in_window,
            max_open_queries: grant.max_open_queries,
            open_query_window: grant.open_query_window,
            epsilon_spent,
            outputs: shown(outputs),
            releases,
            downloads: grant.downloads,
            max_downloads: grant.max_downloads,
        })
    }
}

/// The shortest log retention a service may be set to: six months, as
/// the city rules keep logs.
pub const MIN_LOG_RETENTION_DAYS: u32 = 183;

/// Days job logs are kept at least when nothing sets it:
/// `UNSEEN_LOG_RETENTION_DAYS` (never below the minimum), default 183.
pub fn log_retention_days() -> u32 {
    std::env::var("UNSEEN_LOG_RETENTION_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(MIN_LOG_RETENTION_DAYS)
        .max(MIN_LOG_RETENTION_DAYS)
}

impl Domain {
    /// Clears the guest logs of jobs that ended more than `older_than_days`
    /// ago, in the job records and in outcome outputs not released;
    /// refuses to touch anything younger than the retention period. Job
    /// records, metering, releases and the ledger are never pruned.
    pub fn prune_job_logs(&self, actor: &str, older_than_days: u32) -> Result<usize, DomainError> {
        self.require(actor, Role::Admin, "prune logs")?;
        self.prune_logs_older_than(actor, older_than_days)
    }

    /// Clears the guest logs older than the retention period, acting as
    /// the service itself (`system` in the ledger): what `serve` does once
    /// a day when it is given a retention.
    pub fn prune_expired_job_logs(&self) -> Result<usize, DomainError> {
        self.prune_logs_older_than("system", self.log_retention_days())
    }

    fn prune_logs_older_than(
        &self,
        actor: &str,
        older_than_days: u32,
    ) -> Result<usize, DomainError> {
        let retention = self.log_retention_days();
        if older_than_days < retention {
            return Err(DomainError::OutOfRange {
                what: "the age of logs to prune",
                value: format!("{older_than_days} days"),
                expected: format!(
                    "logs are kept at least {retention} days (UNSEEN_LOG_RETENTION_DAYS, or `[logs] retention_days`); prune only logs older than that"
                ),
            });
        }
        let now = self.unix_now();
        let cutoff = crate::util::rfc3339(now.saturating_sub(u64::from(older_than_days) * 86_400));
        // The logs also sit in outcome outputs no one approved: those lose
        // their log rows and leave review (`pruned`); an approved outcome is
        // a signed release and stays as released.
        let outcomes = store::jobs::outcomes_with_logs_before(&lock(&self.db), &cutoff)?;
        let mut pruned_outcomes = Vec::new();
        let mut kept_outcomes = Vec::new();
        for (output, bytes) in outcomes {
            let Ok(table) = udf_sdk::abi::decode_table(&bytes) else {
                continue;
            };
            let (
                Some(udf_sdk::ColumnValues::Text(items)),
                Some(udf_sdk::ColumnValues::Text(values)),
            ) = (table.column("item"), table.column("value"))
            else {
                continue;
            };
            let (items, values): (Vec<String>, Vec<String>) = items
                .iter()
                .zip(values)
                .filter(|(item, _)| item.as_str() != "log")
                .map(|(i, v)| (i.clone(), v.clone()))
                .unzip();
            let kept = udf_sdk::Table::default()
                .with("item", udf_sdk::ColumnValues::Text(items))
                .with("value", udf_sdk::ColumnValues::Text(values));
            let data = udf_sdk::abi::encode_table(&kept);
            let sha = crate::util::sha256_hex(&data);
            pruned_outcomes.push(json!({"output": output, "sha256": sha}));
            kept_outcomes.push((output, data, sha));
        }
        let (pruned, _) = self.commit_recorded(actor, "logs.pruned", |tx| {
            for (output, data, sha) in &kept_outcomes {
                store::jobs::prune_outcome(tx, output, data, sha)?;
            }
            let pruned = store::jobs::clear_logs_before(tx, &cutoff)?;
            Ok(Change::Record(
                json!({"older_than": cutoff, "jobs": pruned, "retention_days": retention, "outcome_outputs": pruned_outcomes}),
                pruned,
            ))
        })?;
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended_job(shown_end_ms: i64) -> JobView {
        JobView {
            id: "job-1".into(),
            grant: "grant-1".into(),
            submitter: "dev".into(),
            module_sha256: None,
            sql: Some("SELECT 1".into()),
            status: JobStatus::Stopped,
            stopped_by: Some("cancelled".into()),
            reason: Some("by its developer".into()),
            outcome: None,
            ending: Some(RunEnding::Cancelled),
            error: Some("job cancelled: by its developer".into()),
            submitted_at: "2026-01-01T00:00:00Z".into(),
            started_at: Some("2026-01-01T00:00:00Z".into()),
            ended_at: Some("2026-01-01T00:00:01Z".into()),
            fuel_used: Some(7),
            queries: Some(1),
            rows_read: Some(100),
            run_ms: Some(1_234),
            epsilon_spent: 0.5,
            outputs: vec!["out-1".into()],
            releases: Vec::new(),
            logs: vec!["guest text".into()],
            refusals: Vec::new(),
            shown_end_ms: Some(shown_end_ms),
        }
    }

    #[test]
    fn shown_ends_are_uniform_within_one_quantum_after_the_end() {
        let quantum = Duration::from_millis(500);
        assert_eq!(shown_end_ms(1_000, Duration::ZERO, 12_345), 1_000);
        let draws: Vec<i64> = (0..20_000)
            .map(|_| {
                shown_end_ms(
                    1_000,
                    quantum,
                    u64::from_le_bytes(crate::util::random_bytes::<8>()),
                ) - 1_000
            })
            .collect();
        assert!(draws.iter().all(|d| (0..500).contains(d)));
        let mean = draws.iter().sum::<i64>() as f64 / draws.len() as f64;
        // Uniform on 0..500: mean 249.5, standard error about 1.
        assert!((mean - 249.5).abs() < 8.0, "{mean}");
        for tenth in 0..10 {
            let n = draws.iter().filter(|d| **d / 50 == tenth).count();
            assert!((1_700..2_300).contains(&n), "tenth {tenth}: {n}");
        }
    }

    #[test]
    fn a_developer_sees_the_end_only_at_the_shown_end() {
        let shown = 1_767_225_602_250; // 2026-01-01T00:00:02.250Z
        let mut before = ended_job(shown);
        assert!(hide_unshown_end(&mut before, shown - 1));
        assert_eq!(before.status, JobStatus::Running);
        assert_eq!(
            (before.stopped_by.as_ref(), before.reason.as_ref()),
            (None, None)
        );
        assert_eq!(
            (before.ended_at.as_ref(), before.error.as_ref()),
            (None, None)
        );
        assert!(before.outputs.is_empty());
        assert_eq!(before.epsilon_spent, 0.0);
        let mut after = ended_job(shown);
        assert!(!hide_unshown_end(&mut after, shown));
        assert_eq!(after.status, JobStatus::Stopped);
        assert_eq!(after.outputs, ["out-1"]);
        assert_eq!(after.epsilon_spent, 0.5);
        for view in [before, after] {
            assert!(view.shown_end_ms.is_none());
        }
        // A job that ended before shown ends were kept: at its end.
        let mut old = ended_job(0);
        old.shown_end_ms = None;
        let mut old_early = old.clone();
        assert!(!hide_unshown_end(&mut old, 1_767_225_601_000));
        assert!(hide_unshown_end(&mut old_early, 1_767_225_600_999));
        // Running and queued jobs stay as they are.
        for status in [JobStatus::Running, JobStatus::Queued] {
            let mut job = ended_job(i64::MAX);
            job.status = status;
            assert!(!hide_unshown_end(&mut job, 1));
            assert_eq!(job.status, status);
        }
    }
}
