//! The job lifecycle: admission under a grant's usage controls, the queue,
//! runs with metering, cancellation and revocation, status and usage.
//!
//! A job is `queued` once admitted (its run counted against the grant),
//! `running` while a sandbox executes it, and ends `succeeded`, `failed`,
//! `trapped` or `cancelled`. Every transition is a ledger entry.
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

use rusqlite::{OptionalExtension, params};
use serde_json::json;
use unseen_sandbox::{Cancel, SandboxError};

use crate::util::{new_id, now_rfc3339};
use crate::{Domain, DomainError, Grant, JobBody, JobOutcome, Role, access, host, lock};

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

/// A job as a user or an auditor sees it: metadata and metering, never data.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobView {
    pub id: String,
    pub grant: String,
    pub submitter: String,
    pub module_sha256: Option<String>,
    pub sql: Option<String>,
    pub status: String,
    pub error: Option<String>,
    pub submitted_at: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub fuel_used: Option<i64>,
    pub queries: Option<i64>,
    pub rows_read: Option<i64>,
    pub run_ms: Option<i64>,
    pub epsilon_spent: f64,
    pub outputs: Vec<String>,
    pub logs: Vec<String>,
    /// When the job's end is shown to its developer (milliseconds since
    /// the Unix epoch; see the module documentation). For reviewers and
    /// auditors; a developer's view leaves it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shown_end_ms: Option<i64>,
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
            .ok_or_else(|| {
                DomainError::Invalid(format!(
                    "UNSEEN_TIMING_QUANTUM_MS is `{text}`; give whole milliseconds from 0 to {}",
                    MAX_TIMING_QUANTUM.as_millis()
                ))
            }),
    }
}

/// Milliseconds since the Unix epoch now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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

/// Blocks until the wall clock reaches `at_ms` (milliseconds since the
/// epoch); returns at once when it already has.
pub(crate) fn wait_until_ms(at_ms: i64) {
    let left = at_ms.saturating_sub(now_ms());
    if left > 0 {
        std::thread::sleep(Duration::from_millis(left as u64));
    }
}

fn is_ended(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "trapped" | "cancelled")
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

/// A job's error as its developer may read it over the service: what the
/// guest computed — its exit code and its own failure text — goes to
/// reviewers (an exit code can carry a value past review just as a message
/// can); the host's reasons (limits, traps, refusals, cancellation) are kept.
pub fn public_error(error: &str) -> String {
    if error.starts_with("job returned exit code ") {
        "the job ended with a failure status; its exit code and message are kept for the reviewer"
            .to_string()
    } else {
        error.to_string()
    }
}

/// Use of one grant, for pricing by calls and volume. A developer reading
/// it gets what their job views show: jobs by the status shown to them, the
/// spend of jobs whose end is shown, and no queries, fuel, rows read or run
/// time (`None`), which the guest or the data decide.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GrantUsage {
    pub grant: String,
    pub runs: u32,
    pub max_runs: Option<u32>,
    pub jobs_by_status: BTreeMap<String, u64>,
    pub queries: Option<i64>,
    pub fuel_used: Option<i64>,
    pub rows_read: Option<i64>,
    pub run_ms: Option<i64>,
    pub epsilon_spent: f64,
    pub outputs: i64,
    pub releases: i64,
    pub downloads: u32,
    pub max_downloads: Option<u32>,
}

/// A job that started (its host and log), or the outcome of one that
/// could not start.
pub(crate) type Started = Result<(host::Host, Arc<Mutex<host::JobLog>>), JobOutcome>;

/// A job as its developer sees it at `now_ms`.
///
/// Guest-written text (logs, failure message) stays with reviewers: it
/// could carry released values past review. The guest decides how much
/// fuel it burns, how many queries it makes and how long it runs: each
/// could count out a value. Reviewers and auditors see them; the developer
/// sees the spend. And the job's end is shown at its shown end (see the
/// module documentation): before it, the job is running, with neither its
/// outputs nor its spend so far (both grow as it runs, and when they grow
/// would time its queries); after it, its end time is the shown end, to
/// the second.
pub(crate) fn developer_view(mut view: JobView, now_ms: i64) -> JobView {
    view.logs.clear();
    view.error = view.error.as_deref().map(public_error);
    view.fuel_used = None;
    view.queries = None;
    view.rows_read = None;
    view.run_ms = None;
    let shown_end = shown_end_of(&view);
    view.shown_end_ms = None;
    match shown_end {
        Some(at) if is_ended(&view.status) && now_ms >= at => {
            view.ended_at = Some(crate::util::rfc3339(u64::try_from(at / 1000).unwrap_or(0)));
        }
        _ if view.status == "queued" => {}
        _ => {
            view.status = "running".into();
            view.error = None;
            view.ended_at = None;
            view.outputs.clear();
            view.epsilon_spent = 0.0;
        }
    }
    view
}

const JOB_COLUMNS: &str = "j.id, j.grant_id, j.submitter, j.module, j.sql, j.status, j.error, j.submitted_at, j.started_at, j.ended_at, j.fuel, j.queries, j.rows_scanned, j.run_ms, COALESCE((SELECT SUM(epsilon) FROM spends s WHERE s.job_id = j.id), 0), j.logs, j.shown_end_ms";

fn job_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobView> {
    let logs: String = r.get(15)?;
    Ok(JobView {
        id: r.get(0)?,
        grant: r.get(1)?,
        submitter: r.get(2)?,
        module_sha256: r.get(3)?,
        sql: r.get(4)?,
        status: r.get(5)?,
        error: r.get(6)?,
        submitted_at: r.get(7)?,
        started_at: r.get(8)?,
        ended_at: r.get(9)?,
        fuel_used: r.get(10)?,
        queries: r.get(11)?,
        rows_read: r.get(12)?,
        run_ms: r.get(13)?,
        epsilon_spent: r.get(14)?,
        outputs: Vec::new(),
        logs: serde_json::from_str(&logs).unwrap_or_default(),
        shown_end_ms: r.get(16)?,
    })
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
        if grant.expires_at <= now_rfc3339() {
            return Err(err(format!(
                "expired at {}; ask the data provider to renew it",
                grant.expires_at
            )));
        }
        access::check_windows(&grant.id, &grant.windows, &now_rfc3339())
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
        if let Some(sha) = module {
            let known: Option<i64> = lock(&self.db)
                .query_row(
                    "SELECT 1 FROM modules WHERE sha256 = ?1 AND kind = 'job'",
                    [sha],
                    |r| r.get(0),
                )
                .optional()?;
            if known.is_none() {
                return Err(DomainError::NotFound {
                    what: "module",
                    id: sha.to_string(),
                    list: "job upload",
                });
            }
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
        {
            let mut db = lock(&self.db);
            let tx = db.transaction()?;
            let counted = tx.execute(
                "UPDATE grants SET runs = runs + 1 WHERE id = ?1 AND (max_runs IS NULL OR runs < max_runs)",
                [grant_id],
            )?;
            if counted != 1 {
                return Err(DomainError::Grant {
                    grant: grant.id.clone(),
                    reason: format!(
                        "has used all {} of its runs; ask the data provider for more",
                        grant.max_runs.unwrap_or(0)
                    ),
                });
            }
            tx.execute(
                "INSERT INTO jobs(id, grant_id, module, sql, submitter, status, submitted_at, params, udf_modules, inputs) VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?8, ?9)",
                params![job_id, grant_id, module, sql, submitter, now_rfc3339(), params_json, udfs_json, inputs_json],
            )?;
            tx.commit()?;
        }
        self.record(
            submitter,
            "job.submitted",
            json!({
                "job": job_id, "grant": grant_id, "module_sha256": module, "sql": sql,
                "params": params.keys().collect::<Vec<_>>(), "udf_modules": extras.udfs, "inputs": extras.inputs,
            }),
        )?;
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
        let builtins = datafusion::prelude::SessionContext::new().state();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for sha in udfs {
            let functions: Option<String> = lock(&self.db)
                .query_row(
                    "SELECT functions FROM modules WHERE sha256 = ?1 AND kind = 'udf'",
                    [sha],
                    |r| r.get(0),
                )
                .optional()?;
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
                    return Err(DomainError::Invalid(format!(
                        "UDF `{name}` of module {sha} has the name of a built-in SQL function; rename it"
                    )));
                }
                if let Some(other) = seen.insert(name.clone(), sha.clone()) {
                    return Err(DomainError::Invalid(format!(
                        "UDF `{name}` is declared by both module {other} and module {sha}; use one of them"
                    )));
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
    pub(crate) fn start_job(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        job_id: &str,
    ) -> Result<Started, DomainError> {
        type Row = (String, String, String, String, String, String);
        let row: Option<Row> = lock(&self.db)
            .query_row(
                "SELECT grant_id, submitter, status, params, udf_modules, inputs FROM jobs WHERE id = ?1",
                [job_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .optional()?;
        let Some((grant_id, submitter, status, params, udf_modules, inputs)) = row else {
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
                    "failed",
                    Some(format!("the job could not start: {e}")),
                    0,
                )?;
                return Ok(Err(outcome));
            }
        };
        let cancel = Cancel::new();
        lock(&self.running).insert(job_id.to_string(), (grant_id.clone(), cancel.clone()));
        let moved = lock(&self.db).execute(
            "UPDATE jobs SET status = 'running', started_at = ?2 WHERE id = ?1 AND status = 'queued'",
            params![job_id, now_rfc3339()],
        )?;
        if moved != 1 {
            // Cancelled between the read above and now.
            lock(&self.running).remove(job_id);
            return Ok(Err(self.job_outcome(job_id)?));
        }
        self.record(
            &submitter,
            "job.started",
            json!({"job": job_id, "grant": grant_id}),
        )?;
        lock(&log).started = Some(Instant::now());
        let params: BTreeMap<String, String> = serde_json::from_str(&params).unwrap_or_default();
        let job_host = host::Host {
            domain: Arc::clone(self),
            runtime: runtime.clone(),
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
        let job_id = self.admit_job(submitter, grant_id, body, &BTreeMap::new(), extras)?;
        self.start_job(runtime, &job_id)
    }

    /// Records how a job ended and returns its outcome.
    pub(crate) fn end_job(
        &self,
        job_id: String,
        submitter: &str,
        log: &Mutex<host::JobLog>,
        status: &str,
        error: Option<String>,
        fuel: u64,
    ) -> Result<JobOutcome, DomainError> {
        lock(&self.running).remove(&job_id);
        let log = std::mem::take(&mut *lock(log));
        let run_ms = log
            .started
            .map(|s| i64::try_from(s.elapsed().as_millis()).unwrap_or(i64::MAX));
        let logs = serde_json::to_string(&log.lines).unwrap_or_else(|_| "[]".into());
        let end_ms = now_ms();
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
        lock(&self.db).execute(
            "UPDATE jobs SET status = ?2, error = ?3, ended_at = ?4, fuel = ?5, queries = ?6, run_ms = ?7, rows_scanned = ?8, epsilon = ?9, logs = ?10, shown_end_ms = ?11 WHERE id = ?1 AND status IN ('queued', 'running')",
            params![job_id, status, error, now_rfc3339(), fuel as i64, log.queries as i64, run_ms, log.rows_read as i64, log.epsilon_spent, logs, shown_end],
        )?;
        self.record(
            submitter,
            "job.ended",
            json!({
                "job": job_id, "status": status, "error": error, "fuel_used": fuel,
                "queries": log.queries, "rows_read": log.rows_read, "run_ms": run_ms,
                "udf_rows_failed": log.udf_rows_failed,
                "outputs": log.outputs, "epsilon_spent": log.epsilon_spent,
                "shown_end_ms": shown_end,
            }),
        )?;
        // Whoever waits for the outcome (a developer's query, a waiting
        // submission, the worker that ran the job) gets it at the shown
        // end, not before.
        wait_until_ms(shown_end);
        Ok(JobOutcome {
            job_id,
            status: status.to_string(),
            error,
            outputs: log.outputs,
            refusals: log.refusals,
            logs: log.lines,
            epsilon_spent: log.epsilon_spent,
            fuel_used: fuel,
        })
    }

    /// Ends a job that stopped outside the normal path (its thread
    /// panicked): failed, with the reason, and recorded.
    pub fn end_abandoned_job(&self, job_id: &str, reason: &str) -> Result<(), DomainError> {
        lock(&self.running).remove(job_id);
        let ended = lock(&self.db).execute(
            "UPDATE jobs SET status = 'failed', error = ?2, ended_at = ?3 WHERE id = ?1 AND status IN ('queued', 'running')",
            params![job_id, reason, now_rfc3339()],
        )?;
        if ended == 1 {
            self.record(
                "system",
                "job.ended",
                json!({"job": job_id, "status": "failed", "error": reason}),
            )?;
        }
        Ok(())
    }

    /// The outcome of a job that already ended.
    fn job_outcome(&self, job_id: &str) -> Result<JobOutcome, DomainError> {
        let view = self.job_record(job_id)?;
        Ok(JobOutcome {
            job_id: view.id,
            status: view.status,
            error: view.error,
            outputs: view.outputs,
            refusals: Vec::new(),
            logs: view.logs,
            epsilon_spent: view.epsilon_spent,
            fuel_used: view.fuel_used.map_or(0, |f| u64::try_from(f).unwrap_or(0)),
        })
    }

    /// Runs a queued module job to completion. Blocking: call from a thread
    /// that may block (not from inside an async task).
    pub fn execute_job(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        job_id: &str,
    ) -> Result<JobOutcome, DomainError> {
        let module_sha: Option<String> = lock(&self.db)
            .query_row("SELECT module FROM jobs WHERE id = ?1", [job_id], |r| {
                r.get(0)
            })
            .optional()?
            .flatten();
        let Some(module_sha) = module_sha else {
            return Err(DomainError::Invalid(format!(
                "job `{job_id}` is not a module job"
            )));
        };
        let (job_host, log) = match self.start_job(runtime, job_id)? {
            Ok(started) => started,
            Err(ended) => return Ok(ended),
        };
        let submitter = job_host.submitter.clone();
        let cancel = job_host.cancel.clone();
        let bytes: Result<Vec<u8>, DomainError> = lock(&self.db)
            .query_row(
                "SELECT bytes FROM modules WHERE sha256 = ?1",
                [&module_sha],
                |r| r.get(0),
            )
            .map_err(DomainError::from);
        let module = match bytes.and_then(|b| self.validated(&b, unseen_sandbox::ModuleKind::Job)) {
            Ok(m) => m,
            Err(e) => {
                return self.end_job(
                    job_id.to_string(),
                    &submitter,
                    &log,
                    "failed",
                    Some(e.to_string()),
                    0,
                );
            }
        };
        let result = self
            .sandbox
            .run_job_cancellable(&module, Box::new(job_host), &cancel);
        let (status, error, fuel) = match result {
            Ok(report) => ("succeeded", None, report.fuel_used),
            Err(e @ SandboxError::JobFailed { .. }) => ("failed", Some(e.to_string()), 0),
            Err(e @ SandboxError::Cancelled { .. }) => ("cancelled", Some(e.to_string()), 0),
            Err(e) => ("trapped", Some(e.to_string()), 0),
        };
        self.end_job(job_id.to_string(), &submitter, &log, status, error, fuel)
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
        use unseen_sandbox::JobHost;
        let (mut job_host, log) =
            match self.begin_job(runtime, submitter, grant_id, JobBody::Sql(sql), extras)? {
                Ok(started) => started,
                Err(ended) => return Ok(ended),
            };
        let job_id = job_host.job_id.clone();
        let (status, error) = match job_host.query(sql) {
            Ok(bytes) => match udf_sdk::abi::decode_query_result(&bytes) {
                Ok(released) => match job_host.emit("result", released.table) {
                    Ok(()) => ("succeeded", None),
                    Err(e) => ("failed", Some(e)),
                },
                Err(e) => ("failed", Some(format!("released result is malformed: {e}"))),
            },
            Err(refusal) => ("failed", Some(refusal)),
        };
        self.end_job(job_id, submitter, &log, status, error, 0)
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
        let was_queued = lock(&self.db).execute(
            "UPDATE jobs SET status = 'cancelled', error = ?2, ended_at = ?3 WHERE id = ?1 AND status = 'queued'",
            params![job_id, reason, now_rfc3339()],
        )? == 1;
        let not_yet_shown = self.role_of(actor)? == Role::Developer
            && lock(&self.db).execute(
                "UPDATE jobs SET status = 'cancelled', error = ?2 WHERE id = ?1 AND status IN ('succeeded', 'failed', 'trapped') AND shown_end_ms > ?3",
                params![job_id, format!("job cancelled: {reason}"), now_ms()],
            )? == 1;
        let state = if was_queued {
            "cancelled"
        } else if not_yet_shown {
            "stopping"
        } else if let Some((_, cancel)) = lock(&self.running).get(job_id) {
            cancel.cancel(reason);
            "stopping"
        } else {
            return Err(DomainError::Invalid(format!(
                "job `{job_id}` already ended; only queued or running jobs can be cancelled"
            )));
        };
        self.record(
            actor,
            "job.cancelled",
            json!({"job": job_id, "reason": reason, "state": state}),
        )?;
        Ok(state.to_string())
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
            return Err(DomainError::Invalid("a revocation needs a reason".into()));
        }
        let grant = self.grant(grant_id)?;
        if let Some(at) = grant.revoked_at {
            return Err(DomainError::Grant {
                grant: grant_id.to_string(),
                reason: format!("was already revoked at {at}"),
            });
        }
        lock(&self.db).execute(
            "UPDATE grants SET revoked_at = ?2 WHERE id = ?1",
            params![grant_id, now_rfc3339()],
        )?;
        let jobs: Vec<String> = {
            let db = lock(&self.db);
            let mut stmt = db.prepare(
                "SELECT id FROM jobs WHERE grant_id = ?1 AND status IN ('queued', 'running')",
            )?;
            let rows = stmt.query_map([grant_id], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        self.record(
            actor,
            "grant.revoked",
            json!({"grant": grant_id, "reason": reason, "jobs_stopped": jobs.len()}),
        )?;
        let why = format!("grant `{grant_id}` was revoked: {reason}");
        let mut stopped = 0;
        for job in &jobs {
            if self.stop_job(actor, job, &why).is_ok() {
                stopped += 1;
            }
        }
        Ok(stopped)
    }

    fn job_record(&self, job_id: &str) -> Result<JobView, DomainError> {
        let db = lock(&self.db);
        let mut view = db
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs j WHERE j.id = ?1"),
                [job_id],
                job_from_row,
            )
            .optional()?
            .ok_or_else(|| DomainError::NotFound {
                what: "job",
                id: job_id.to_string(),
                list: "job list",
            })?;
        let mut stmt =
            db.prepare("SELECT id FROM outputs WHERE job_id = ?1 ORDER BY created_at")?;
        view.outputs = stmt
            .query_map([job_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(view)
    }

    /// A job's status and metering. Its submitter, admins, reviewers and
    /// auditors may read it (it carries no data).
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
        Ok(if role == Role::Developer {
            developer_view(view, now_ms())
        } else {
            view
        })
    }

    /// Jobs, newest first: a developer sees their own, other roles all.
    pub fn jobs(&self, actor: &str, grant: Option<&str>) -> Result<Vec<JobView>, DomainError> {
        let role = self.role_of(actor)?;
        let mine = (role == Role::Developer).then_some(actor);
        let ids: Vec<String> = {
            let db = lock(&self.db);
            let mut stmt = db.prepare(
                "SELECT id FROM jobs WHERE (?1 IS NULL OR submitter = ?1) AND (?2 IS NULL OR grant_id = ?2) ORDER BY submitted_at DESC, id LIMIT 1000",
            )?;
            let rows = stmt.query_map(params![mine, grant], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        ids.iter()
            .map(|id| {
                self.job_record(id).map(|v| {
                    if role == Role::Developer {
                        developer_view(v, now_ms())
                    } else {
                        v
                    }
                })
            })
            .collect()
    }

    /// Use of a grant for pricing: runs, jobs, queries, fuel, rows read,
    /// time, epsilon, outputs, releases, downloads. Admins, auditors and the
    /// grant's designated users may read it.
    pub fn grant_usage(&self, actor: &str, grant_id: &str) -> Result<GrantUsage, DomainError> {
        let role = self.role_of(actor)?;
        let grant = self.grant(grant_id)?;
        if !(matches!(role, Role::Admin | Role::Auditor) || grant.designates(actor)) {
            return Err(DomainError::Forbidden {
                actor: actor.to_string(),
                role: role.as_str().to_string(),
                action: "read the usage of this grant",
                needed: "admin or auditor (or be designated on the grant)".into(),
            });
        }
        let epsilon_spent = self.grant_as_seen_by(actor, grant.clone())?.epsilon_spent;
        let db = lock(&self.db);
        let developer = role == Role::Developer;
        let mut jobs_by_status = BTreeMap::new();
        {
            // A developer sees a job running until its end is shown.
            let mut stmt = db.prepare(
                "SELECT CASE WHEN ?2 AND status IN ('succeeded', 'failed', 'trapped', 'cancelled') AND COALESCE(shown_end_ms, 0) > ?3 THEN 'running' ELSE status END AS shown, COUNT(*)
                 FROM jobs WHERE grant_id = ?1 GROUP BY shown",
            )?;
            let rows = stmt.query_map(params![grant_id, developer, now_ms()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            for row in rows {
                let (status, n) = row?;
                jobs_by_status.insert(status, u64::try_from(n).unwrap_or(0));
            }
        }
        let (queries, fuel, rows_read, run_ms): (i64, i64, i64, i64) = db.query_row(
            "SELECT COALESCE(SUM(queries), 0), COALESCE(SUM(fuel), 0), COALESCE(SUM(rows_scanned), 0), COALESCE(SUM(run_ms), 0) FROM jobs WHERE grant_id = ?1",
            [grant_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        let (outputs, releases): (i64, i64) = db.query_row(
            "SELECT COUNT(o.id), COUNT(r.id) FROM outputs o JOIN jobs j ON j.id = o.job_id LEFT JOIN releases r ON r.output_id = o.id WHERE j.grant_id = ?1",
            [grant_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(GrantUsage {
            grant: grant.id,
            runs: grant.runs,
            max_runs: grant.max_runs,
            jobs_by_status,
            queries: (!developer).then_some(queries),
            fuel_used: (!developer).then_some(fuel),
            rows_read: (!developer).then_some(rows_read),
            run_ms: (!developer).then_some(run_ms),
            epsilon_spent,
            outputs,
            releases,
            downloads: grant.downloads,
            max_downloads: grant.max_downloads,
        })
    }
}

/// Days job logs are kept at least: `UNSEEN_LOG_RETENTION_DAYS`, default
/// 183 (six months).
pub fn log_retention_days() -> u32 {
    std::env::var("UNSEEN_LOG_RETENTION_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(183)
}

impl Domain {
    /// Clears the guest logs of jobs that ended more than `older_than_days`
    /// ago; refuses to touch anything younger than the retention period.
    /// Job records, metering and the ledger are never pruned.
    pub fn prune_job_logs(&self, actor: &str, older_than_days: u32) -> Result<usize, DomainError> {
        self.require(actor, Role::Admin, "prune logs")?;
        let retention = log_retention_days();
        if older_than_days < retention {
            return Err(DomainError::Invalid(format!(
                "logs are kept at least {retention} days (UNSEEN_LOG_RETENTION_DAYS); prune only logs older than that"
            )));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let cutoff = crate::util::rfc3339(now.saturating_sub(u64::from(older_than_days) * 86_400));
        let pruned = lock(&self.db).execute(
            "UPDATE jobs SET logs = '[]' WHERE ended_at IS NOT NULL AND ended_at < ?1 AND logs != '[]'",
            [&cutoff],
        )?;
        self.record(
            actor,
            "logs.pruned",
            json!({"older_than": cutoff, "jobs": pruned, "retention_days": retention}),
        )?;
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
            status: "succeeded".into(),
            error: None,
            submitted_at: "2026-01-01T00:00:00Z".into(),
            started_at: Some("2026-01-01T00:00:00Z".into()),
            ended_at: Some("2026-01-01T00:00:01Z".into()),
            fuel_used: Some(7),
            queries: Some(1),
            rows_read: Some(100),
            run_ms: Some(1_234),
            epsilon_spent: 0.5,
            outputs: vec!["out-1".into()],
            logs: vec!["guest text".into()],
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
        let before = developer_view(ended_job(shown), shown - 1);
        assert_eq!(before.status, "running");
        assert_eq!(before.ended_at, None);
        assert!(before.outputs.is_empty() && before.error.is_none());
        assert_eq!(before.epsilon_spent, 0.0);
        let after = developer_view(ended_job(shown), shown);
        assert_eq!(after.status, "succeeded");
        assert_eq!(after.ended_at.as_deref(), Some("2026-01-01T00:00:02Z"));
        assert_eq!(after.outputs, ["out-1"]);
        assert_eq!(after.epsilon_spent, 0.5);
        for view in [before, after] {
            assert!(view.logs.is_empty() && view.shown_end_ms.is_none());
            assert!(view.fuel_used.is_none() && view.queries.is_none());
            assert!(view.rows_read.is_none() && view.run_ms.is_none());
        }
        // A job that ended before shown ends were kept: at its end.
        let mut old = ended_job(0);
        old.shown_end_ms = None;
        let shown_old = developer_view(old, 1_767_225_601_000);
        assert_eq!(shown_old.status, "succeeded");
        // A running job shows no outputs or spend so far; a queued one
        // stays queued.
        let mut running = ended_job(0);
        running.status = "running".into();
        running.ended_at = None;
        let running = developer_view(running, 1);
        assert_eq!(
            (running.status.as_str(), running.outputs.len()),
            ("running", 0)
        );
        let mut queued = ended_job(0);
        queued.status = "queued".into();
        assert_eq!(developer_view(queued, 1).status, "queued");
    }
}
