//! The job host: what a running guest's imports do in this domain.
//!
//! Every query goes through policy admission; an admitted DP query is
//! charged to the grant and recorded in the ledger before any data is read,
//! and only the noised result returns to the guest.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde_json::json;
use unseen_policy::{Admitted, PolicyError};
use unseen_sandbox::{JobHost, LogLevel};

use crate::data::{self, OpenDataset};
use crate::util::sha256_hex;
use crate::{Domain, DomainError, DryRun, Grant};

/// Largest open extract a query may return, in rows.
const MAX_OPEN_ROWS: usize = 100_000;

/// How often a running query looks whether its job was stopped.
const CANCEL_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// What a query of a stopped job answers.
fn stopped(reason: &str) -> String {
    format!("refused: the job was stopped ({reason})")
}

/// Identical measurements being released right now: one lock per (grant,
/// fingerprint). A query holds its lock from the cache lookup until its
/// release is cached, so duplicates arriving at the same instant wait for
/// the first and then find its cached release: one charge, one answer,
/// however many arrive (a cache checked without it lets every job slot
/// charge and draw fresh noise, which averaging would then remove).
#[derive(Debug, Default)]
pub(crate) struct Flights(Mutex<std::collections::HashMap<FlightKey, FlightLock>>);

type FlightKey = (String, String);
type FlightLock = Arc<tokio::sync::Mutex<()>>;

/// A held [`Flights`] lock; dropping it lets the next duplicate in.
pub(crate) struct Flight<'a> {
    flights: &'a Flights,
    key: FlightKey,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl Flights {
    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<FlightKey, FlightLock>> {
        // Only lock handles live in the map: a panic cannot leave it inconsistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until no other query of `grant` with this `fingerprint` is
    /// between its cache lookup and its cached release.
    pub(crate) async fn enter(&self, grant: &str, fingerprint: &str) -> Flight<'_> {
        let key = (grant.to_owned(), fingerprint.to_owned());
        let lock = Arc::clone(self.map().entry(key.clone()).or_default());
        let held = lock.lock_owned().await;
        Flight {
            flights: self,
            key,
            _held: held,
        }
    }

    /// Locks held or awaited now (for tests: the map does not grow).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let mut map = self.flights.map();
        // Two references (the map's and this guard's) mean nobody waits:
        // the entry goes. Waiters clone under the same map lock.
        if map
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) <= 2)
        {
            map.remove(&self.key);
        }
    }
}

/// An admitted aggregate whose release the release cache holds, kept so
/// that asking it again skips the engine. Admission, the DP plan and the
/// fingerprint are functions of what [`Host::plan_key`] digests (the
/// grant's accounting, the SQL text and the datasets as the grant exposes
/// them), so the remembered ones are the ones planning would give. Only
/// cache hits are served from here, their DP plan made again from the
/// query (no engine involved); a plan to charge is always planned afresh
/// with its session.
pub(crate) struct AdmittedRelease {
    query: unseen_policy::admission::AggregateQuery,
    fingerprint: String,
}

/// The most [`AdmittedRelease`]s remembered; past it the memory starts over.
const MAX_ADMITTED: usize = 4096;

/// Admitted releases by [`Host::plan_key`].
#[derive(Default)]
pub(crate) struct AdmittedReleases(Mutex<std::collections::HashMap<String, Arc<AdmittedRelease>>>);

impl std::fmt::Debug for AdmittedReleases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmittedReleases").finish_non_exhaustive()
    }
}

impl AdmittedReleases {
    fn map(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<AdmittedRelease>>> {
        // Whole entries are inserted or removed: a panic cannot leave one half-made.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: &str) -> Option<Arc<AdmittedRelease>> {
        self.map().get(key).cloned()
    }

    /// Plans remembered now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }

    /// Forgets every remembered plan (a data key was destroyed).
    pub(crate) fn forget_all(&self) {
        self.map().clear();
    }

    fn remember(&self, key: String, admitted: AdmittedRelease) {
        let mut map = self.map();
        if map.len() >= MAX_ADMITTED {
            map.clear();
        }
        map.insert(key, Arc::new(admitted));
    }
}

/// What a run did, collected for the caller.
#[derive(Debug, Default)]
pub(crate) struct JobLog {
    pub queries: u32,
    pub outputs: Vec<String>,
    pub refusals: Vec<String>,
    pub lines: Vec<String>,
    pub epsilon_spent: f64,
    /// Rows the engine read for the job's queries (the table's rows for
    /// every query that read data).
    pub rows_read: u64,
    /// Rows on which the job's wasm UDFs failed and were made NULL: for
    /// the ledger (provider and auditors), never for the developer, since
    /// the count can depend on the data.
    pub udf_rows_failed: u64,
    /// Rows the job's wasm UDFs were called on, for the same records.
    pub udf_rows: u64,
    /// Whether the run computed on protected data (a DP release that was
    /// not cached, an extract): then how long it took can depend on that
    /// data, and its end is shown to the developer at a shown end
    /// (`jobs::shown_end_ms`).
    pub read_protected: bool,
    pub started: Option<std::time::Instant>,
}

/// The datasets a plan reads.
fn scanned_tables(plan: &datafusion::logical_expr::LogicalPlan) -> BTreeSet<String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut tables = BTreeSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let datafusion::logical_expr::LogicalPlan::TableScan(scan) = node {
            tables.insert(scan.table_name.table().to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    tables
}

pub(crate) struct Host {
    pub domain: Arc<Domain>,
    pub runtime: tokio::runtime::Handle,
    pub job_id: String,
    pub submitter: String,
    pub grant: Grant,
    /// The grant's datasets, the primary one first.
    pub datasets: Vec<OpenDataset>,
    /// The UDF modules the job was submitted with, prepared for it under
    /// the grant's per-row cap. Each query calls their functions through
    /// handles of its own ([`Host::query_udfs`]).
    pub udf_modules: Vec<unseen_sandbox::UdfModule>,
    /// Earlier releases the job reads, as (table name, released table).
    pub inputs: Vec<(String, udf_sdk::Table)>,
    pub params: BTreeMap<String, String>,
    pub log: Arc<Mutex<JobLog>>,
    /// Triggered by cancellation or revocation; checked before each query.
    pub cancel: unseen_sandbox::Cancel,
}

impl Host {
    /// Pure epsilon per query; with a delta budget, also partition
    /// selection for group keys without a public domain.
    fn accounting(&self) -> unseen_policy::Accounting {
        let epsilon = self.grant.query_epsilon;
        if self.grant.delta_total > 0.0 {
            unseen_policy::Accounting::Approximate {
                epsilon,
                delta: self.grant.query_delta,
            }
        } else {
            unseen_policy::Accounting::Pure { epsilon }
        }
    }

    /// Rows of the named datasets, for metering.
    fn rows_of(&self, tables: BTreeSet<String>) -> u64 {
        self.datasets
            .iter()
            .filter(|d| tables.contains(&d.name))
            .map(|d| d.rows)
            .sum()
    }

    fn job_log(&self) -> std::sync::MutexGuard<'_, JobLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refuse(&self, sql_sha: &str, sql: &str, error: &PolicyError) -> Result<String, DomainError> {
        let (rule, column) = match error {
            PolicyError::Refused(r) => (r.rule, r.column.clone()),
            PolicyError::Sql(_) => ("sql-error", None),
            PolicyError::Budget(_) => ("budget", None),
            PolicyError::TooLarge(_) => ("too-large", None),
            PolicyError::TimedOut { .. } => ("time-limit", None),
            _ => ("execution", None),
        };
        let message = match error {
            // Execution errors can quote the values the engine was reading
            // (a failed cast names the string it could not cast), so the
            // guest, the ledger and the logs get only the error's class.
            PolicyError::Execution(_) => "refused: the query failed while the engine was reading data; the engine's message is withheld because it can quote data values. Check the types and casts in the query".to_string(),
            PolicyError::Sql(_) if !self.grant.columns.is_empty() => format!(
                "{error} (grant `{}` covers only the columns {}; other columns do not exist for it)",
                self.grant.id,
                self.grant.columns.join(", ")
            ),
            other => other.to_string(),
        };
        self.domain.record(
            &self.submitter,
            "query.refused",
            json!({
                "job": self.job_id, "grant": self.grant.id, "query_sha256": sql_sha, "sql": sql,
                "rule": rule, "column": column, "reason": message,
            }),
        )?;
        self.job_log().refusals.push(message.clone());
        Ok(message)
    }

    async fn run_query(&self, sql: &str) -> Result<Result<Vec<u8>, String>, DomainError> {
        let answer = self.answer_query(sql).await;
        let failed = self.udf_rows_failed();
        let evaluated = self.udf_modules.iter().map(|m| m.rows_evaluated()).sum();
        let mut log = self.job_log();
        log.udf_rows_failed = failed;
        log.udf_rows = evaluated;
        drop(log);
        answer
    }

    /// Failed UDF rows so far, over the job's modules (each module is
    /// prepared once per job, whichever of its functions failed).
    fn udf_rows_failed(&self) -> u64 {
        self.udf_modules.iter().map(|m| m.rows_failed()).sum()
    }

    /// The functions of the job's UDF modules for one query: every module
    /// gets a fresh handle, whose instances serve this query alone and are
    /// dropped with its session, so nothing a UDF wrote in one query is
    /// there in the next.
    fn query_udfs(&self) -> Result<Vec<unseen_sandbox::WasmUdf>, DomainError> {
        let mut udfs = Vec::new();
        for module in &self.udf_modules {
            udfs.extend(module.for_query().functions().map_err(DomainError::Udf)?);
        }
        Ok(udfs)
    }

    /// Runs `work` until it ends or the job is stopped from outside (its
    /// client went away, an admin cancelled it, the service is stopping).
    /// A stopped query's work is dropped, and with it the DataFusion
    /// streams and tasks it was running.
    async fn unless_cancelled<T>(
        &self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, String> {
        let stopped = async {
            loop {
                if let Some(reason) = self.cancel.reason() {
                    return reason;
                }
                tokio::time::sleep(CANCEL_POLL).await;
            }
        };
        tokio::select! {
            done = work => Ok(done),
            reason = stopped => Err(reason),
        }
    }

    /// What admission and DP planning of `sql` depend on, digested; `None`
    /// when the job brings UDFs or earlier releases (their sessions are
    /// planned every time).
    fn plan_key(&self, sql: &str) -> Option<String> {
        if !self.udf_modules.is_empty() || !self.inputs.is_empty() {
            return None;
        }
        let mut text = format!("{}\0{:?}\0{sql}", self.grant.id, self.accounting());
        for d in &self.datasets {
            text.push_str(&format!(
                "\0{}\0{}\0{}\0{:?}\0{:?}\0{}\0{:?}",
                d.name,
                d.path.display(),
                sha256_hex(&d.key),
                d.manifest,
                d.scope,
                d.unit_unique,
                d.within_bounds,
            ));
        }
        Some(sha256_hex(text.as_bytes()))
    }

    /// The release cache's answer to an admitted aggregate, recorded, or
    /// `None` when the cache does not hold it. Call inside its flight.
    fn cached_answer(
        &self,
        sql_sha: &str,
        sql: &str,
        query: &unseen_policy::admission::AggregateQuery,
        plan: &unseen_policy::DpPlan,
        fingerprint: &str,
    ) -> Result<Option<Result<Vec<u8>, String>>, DomainError> {
        let Some(hit) = self.domain.cached_release(&self.grant.id, fingerprint)? else {
            return Ok(None);
        };
        let mut cached = match hit {
            crate::CachedRelease::Measured(m) => match unseen_policy::render(query, plan, &m) {
                Ok(r) => r,
                Err(e) => return Ok(Some(Err(self.refuse(sql_sha, sql, &e)?))),
            },
            crate::CachedRelease::Table(t) => t,
        };
        self.domain.record(
            &self.submitter,
            "query.cached",
            json!({
                "job": self.job_id, "grant": self.grant.id, "query_sha256": sql_sha, "sql": sql,
                "fingerprint": fingerprint, "epsilon": 0.0,
            }),
        )?;
        cached.cached = true;
        cached.epsilon_spent = 0.0;
        Ok(Some(Ok(udf_sdk::abi::encode_query_result(&cached))))
    }

    async fn answer_query(&self, sql: &str) -> Result<Result<Vec<u8>, String>, DomainError> {
        let sql_sha = sha256_hex(sql.as_bytes());
        if let Some(reason) = self.cancel.reason() {
            return Ok(Err(stopped(&reason)));
        }
        self.job_log().queries += 1;
        let plan_key = self.plan_key(sql);
        if let Some(admitted) = plan_key.as_ref().and_then(|k| self.domain.admitted.get(k)) {
            let _flight = self
                .domain
                .flights
                .enter(&self.grant.id, &admitted.fingerprint)
                .await;
            let AdmittedRelease { query, fingerprint } = &*admitted;
            let plan = unseen_policy::plan_release_with(
                query,
                self.accounting(),
                data::Facts(&self.datasets),
            );
            if let Ok(plan) = plan
                && let Some(answer) =
                    self.cached_answer(&sql_sha, sql, query, &plan, fingerprint)?
            {
                return Ok(answer);
            }
            // No longer cached: planned and charged afresh below.
        }
        let mut limits = self.domain.session_limits()?;
        let cancel = self.cancel.clone();
        limits.execution.stop = Some(unseen_policy::limits::StopCheck::new(move || {
            cancel.reason().is_some()
        }));
        let (ctx, manifests) =
            data::session_with(&self.datasets, &self.query_udfs()?, &self.inputs, &limits).await?;
        let admitted = match unseen_policy::plan_query(&ctx, sql, &manifests).await {
            Ok(a) => a,
            Err(e) => return Ok(Err(self.refuse(&sql_sha, sql, &e)?)),
        };
        match admitted {
            Admitted::Open(plan) => {
                if let Some(e) = self.domain.count_open_query(&self.grant)? {
                    return Ok(Err(self.refuse(&sql_sha, sql, &e)?));
                }
                self.job_log().rows_read += self.rows_of(scanned_tables(&plan));
                let released = self
                    .unless_cancelled(unseen_policy::release_open(&ctx, plan, MAX_OPEN_ROWS))
                    .await;
                if let Some(reason) = self.cancel.reason() {
                    return Ok(Err(stopped(&reason)));
                }
                let result = match released {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => return Ok(Err(self.refuse(&sql_sha, sql, &e)?)),
                    Err(reason) => return Ok(Err(stopped(&reason))),
                };
                self.domain.record(&self.submitter, "query.admitted", json!({
                    "job": self.job_id, "grant": self.grant.id, "query_sha256": sql_sha, "sql": sql,
                    "release": "open columns", "epsilon": 0.0, "rows": result.table.rows(),
                }))?;
                Ok(Ok(udf_sdk::abi::encode_query_result(&result)))
            }
            Admitted::Aggregate(query) => {
                let plan = match unseen_policy::plan_release_with(
                    &query,
                    self.accounting(),
                    data::Facts(&self.datasets),
                ) {
                    Ok(p) => p,
                    Err(e) => return Ok(Err(self.refuse(&sql_sha, sql, &e)?)),
                };
                let state = ctx.state();
                let fingerprint = match unseen_policy::fingerprint(&state, &query, &plan) {
                    Ok(f) => sha256_hex(f.as_bytes()),
                    Err(e) => return Ok(Err(self.refuse(&sql_sha, sql, &e)?)),
                };
                let _flight = self
                    .domain
                    .flights
                    .enter(&self.grant.id, &fingerprint)
                    .await;
                if let Some(answer) =
                    self.cached_answer(&sql_sha, sql, &query, &plan, &fingerprint)?
                {
                    if let Some(key) = plan_key {
                        self.domain
                            .admitted
                            .remember(key, AdmittedRelease { query, fingerprint });
                    }
                    return Ok(answer);
                }
                let read: BTreeSet<String> = query.scans.iter().map(|s| s.table.clone()).collect();
                let cost = plan.cost();
                // The spend and its `query.admitted` entry are durable
                // together, before any data is read; only a charged plan
                // can be released.
                let budget = crate::LayerBudget {
                    domain: &self.domain,
                    actor: &self.submitter,
                    kind: "query.admitted",
                    grant: Some(&self.grant.id),
                    datasets: &read,
                    job: &self.job_id,
                    query_sha: &sql_sha,
                    body: json!({
                        "job": self.job_id, "grant": self.grant.id, "query_sha256": sql_sha, "sql": sql,
                        "release": "differentially private aggregate", "epsilon": cost.epsilon, "delta": cost.delta,
                        "mechanism": "opendp Laplace (discrete for integers)", "fingerprint": fingerprint,
                    }),
                };
                let charged = match plan.charge(&budget) {
                    Ok(charged) => charged,
                    Err(crate::ChargeRefused::Failed(e)) => return Err(e),
                    Err(crate::ChargeRefused::Short(layer, short)) => {
                        if layer == "grant delta" {
                            let e = PolicyError::Budget(format!(
                                "grant `{short}` has not enough delta left for partition selection (this query needs {:e}). Nothing was spent; group by keys with a public domain, or ask for more delta",
                                cost.delta
                            ));
                            return Ok(Err(self.refuse(&sql_sha, sql, &e)?));
                        }
                        // As the developer's budget views show it: without
                        // the spends of jobs whose end is not shown yet.
                        let status = self
                            .domain
                            .budget_layers_seen_by(&self.submitter, &self.grant.id)?;
                        let short = status.iter().find(|s| s.layer == *layer && s.id == short);
                        let (id, spent, total) = short.map_or((String::new(), 0.0, None), |s| {
                            (s.id.clone(), s.spent, s.total)
                        });
                        let left = total.map_or(f64::INFINITY, |t| (t - spent).max(0.0));
                        let e = PolicyError::Budget(format!(
                            "the {layer} budget of `{id}` has epsilon {left:.3} left ({spent:.3} spent); this query needs {:.3}. Nothing was spent; ask the data provider for more budget",
                            cost.epsilon
                        ));
                        return Ok(Err(self.refuse(&sql_sha, sql, &e)?));
                    }
                };
                {
                    let mut log = self.job_log();
                    log.epsilon_spent += cost.epsilon;
                    log.rows_read += self.rows_of(read);
                    log.read_protected = true;
                }
                let released = self
                    .unless_cancelled(unseen_policy::release_aggregate(&state, &query, &charged))
                    .await;
                let released = match (released, self.cancel.reason()) {
                    (Ok(released), None) => released,
                    // Stopped from outside (the client left, an admin
                    // cancelled, the service is stopping): nothing is
                    // released or cached (a release the stop cut short
                    // would be one on defaults), and the spend stays recorded.
                    (Err(reason), _) | (Ok(_), Some(reason)) => return Ok(Err(stopped(&reason))),
                };
                match released {
                    Ok(release) => {
                        if release.defaulted {
                            // For the provider and auditors only: the analyst's
                            // answer must look like any other release.
                            self.domain.record(&self.submitter, "query.defaulted", json!({
                                "job": self.job_id, "grant": self.grant.id, "query_sha256": sql_sha,
                                "fingerprint": fingerprint,
                                "reason": "the engine failed computing the exact aggregate; noise was added to fixed default values",
                            }))?;
                        }
                        self.domain
                            .cache_release(&self.grant.id, &fingerprint, &release)?;
                        Ok(Ok(udf_sdk::abi::encode_query_result(&release.result)))
                    }
                    // The spend stays recorded: the charge came first, by design.
                    Err(e) => Ok(Err(self.refuse(&sql_sha, sql, &e)?)),
                }
            }
        }
    }

    /// What `sql` would cost and how accurate it would be, without reading
    /// data or spending; recorded in the ledger as `query.dry_run`.
    pub(crate) async fn dry_run(&self, sql: &str) -> Result<DryRun, DomainError> {
        let sql_sha = sha256_hex(sql.as_bytes());
        let (ctx, manifests) = data::session_with(
            &self.datasets,
            &self.query_udfs()?,
            &self.inputs,
            &self.domain.session_limits()?,
        )
        .await?;
        let verdict = match unseen_policy::plan_query(&ctx, sql, &manifests).await {
            Err(e) => Err(e),
            Ok(Admitted::Open(_)) => Ok((0.0, Vec::new(), false)),
            Ok(Admitted::Aggregate(query)) => {
                match unseen_policy::plan_release_with(
                    &query,
                    self.accounting(),
                    data::Facts(&self.datasets),
                ) {
                    Err(e) => Err(e),
                    Ok(plan) => {
                        let fingerprint = unseen_policy::fingerprint(&ctx.state(), &query, &plan)
                            .map(|f| sha256_hex(f.as_bytes()))
                            .ok();
                        let cached = match fingerprint {
                            Some(f) => self.domain.cached_release(&self.grant.id, &f)?.is_some(),
                            None => false,
                        };
                        plan.expected_accuracy()
                            .map(|acc| (if cached { 0.0 } else { plan.epsilon() }, acc, cached))
                    }
                }
            }
        };
        let (spent, left) = self
            .domain
            .budget_seen_by(&self.submitter, &self.grant.id)?;
        let dry = match verdict {
            Ok((epsilon, accuracy, cached)) => DryRun {
                admitted: true,
                reason: None,
                rule: None,
                epsilon,
                confidence: unseen_policy::dp::CONFIDENCE,
                accuracy,
                cached,
                epsilon_spent: spent,
                epsilon_left: left,
            },
            Err(e) => {
                let rule = match &e {
                    PolicyError::Refused(r) => r.rule,
                    PolicyError::Sql(_) => "sql-error",
                    _ => "other",
                };
                DryRun {
                    admitted: false,
                    reason: Some(e.to_string()),
                    rule: Some(rule.to_string()),
                    epsilon: 0.0,
                    confidence: unseen_policy::dp::CONFIDENCE,
                    accuracy: Vec::new(),
                    cached: false,
                    epsilon_spent: spent,
                    epsilon_left: left,
                }
            }
        };
        self.domain.record(&self.submitter, "query.dry_run", json!({
            "job": self.job_id, "grant": self.grant.id, "query_sha256": sql_sha, "sql": sql,
            "admitted": dry.admitted, "rule": dry.rule, "epsilon": 0.0, "would_cost": dry.epsilon,
        }))?;
        Ok(dry)
    }
}

impl JobHost for Host {
    fn query(&mut self, sql: &str) -> Result<Vec<u8>, String> {
        let runtime = self.runtime.clone();
        match runtime.block_on(self.run_query(sql)) {
            Ok(result) => result,
            Err(e) => {
                // Host errors (store, ledger, keys) carry no data values.
                tracing::error!(job = %self.job_id, error = %e, "query failed inside the host");
                Err(format!("the host could not run the query: {e}"))
            }
        }
    }

    fn emit(&mut self, name: &str, table: udf_sdk::Table) -> Result<(), String> {
        match self.domain.quarantine(
            &self.submitter,
            &self.job_id,
            &self.grant.id,
            &self.datasets,
            name,
            &table,
        ) {
            Ok(id) => {
                self.job_log().outputs.push(id);
                Ok(())
            }
            Err(e) => Err(format!("output `{name}` could not be quarantined: {e}")),
        }
    }

    fn log(&mut self, level: LogLevel, message: &str) {
        // Guests only ever hold released values, so their log text is safe to keep.
        tracing::info!(job = %self.job_id, ?level, "guest: {message}");
        self.job_log().lines.push(format!("{level:?}: {message}"));
    }

    fn dry_run(&mut self, sql: &str) -> Result<Vec<u8>, String> {
        let runtime = self.runtime.clone();
        match runtime.block_on(Host::dry_run(self, sql)) {
            Ok(d) => Ok(udf_sdk::abi::encode_dry_run(&udf_sdk::DryRun {
                admitted: d.admitted,
                reason: d.reason.unwrap_or_default(),
                epsilon: d.epsilon,
                confidence: d.confidence,
            })),
            Err(e) => {
                tracing::error!(job = %self.job_id, error = %e, "dry run failed inside the host");
                Err(format!("the host could not dry-run the query: {e}"))
            }
        }
    }

    fn param(&self, name: &str) -> Option<String> {
        self.params.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::Flights;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn duplicates_wait_for_the_first_and_the_map_empties() {
        let flights = Arc::new(Flights::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .build()
            .unwrap();
        rt.block_on(async {
            let tasks: Vec<_> = (0..32)
                .map(|i| {
                    let (flights, inside, most) =
                        (Arc::clone(&flights), Arc::clone(&inside), Arc::clone(&most));
                    tokio::spawn(async move {
                        // Half the same measurement, half distinct ones.
                        let fp = if i % 2 == 0 {
                            "same".to_owned()
                        } else {
                            format!("fp{i}")
                        };
                        let _f = flights.enter("g", &fp).await;
                        if fp == "same" {
                            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            inside.fetch_sub(1, Ordering::SeqCst);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 1);
        assert_eq!(flights.len(), 0);
    }
}
