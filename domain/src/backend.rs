//! The service's operations as the command line calls them, with the API
//! crate's request and response types, on a local data directory
//! ([`Local`]) or a server ([`Remote`]).
//!
//! Each command is written once over [`Backend`]: it asks, then prints the
//! answer the same way wherever it came from, so `--server` changes where
//! a command runs, never what it says. [`Local`] builds the answers the
//! server builds (the same core calls and conversions), which the
//! command-line tests hold equal to the server's.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::Value;
use unseen_api as api;

use crate::client::Client;
use crate::reconcile::Reconciliation;
use crate::util::Destination;
use crate::{Domain, DomainError, JobOutcome, Role};

/// A module's kind, as uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    /// A job's guest.
    Job,
    /// Scalar functions for SQL.
    Udf,
}

impl ModuleKind {
    fn as_str(self) -> &'static str {
        match self {
            ModuleKind::Job => "job",
            ModuleKind::Udf => "udf",
        }
    }
}

/// What submitting a job gave back: its end, or its place in the queue
/// when the submitter did not wait.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(untagged)]
pub enum Submitted {
    Ended(api::DeveloperOutcome),
    Queued(api::JobQueued),
}

/// What a developer is told in place of what their guest computed.
pub const WITHHELD: &str = "how the guest ended (exit code, error), its logs, refusals, metering and outputs are in the job's outcome output, which a reviewer decides; `job status` shows them once it is approved";

/// An outcome as its developer sees it, over the service and locally: the
/// status the service decided (`finished`, `stopped` by a named cause, or
/// `refused`), the host's reason and the spend. What a guest computed
/// beyond that — its exit code and message, logs, refusals, fuel, and how
/// many outputs it emitted — could carry released values past review, so
/// it goes to review as the job's outcome output (see `jobs::JobView`).
/// SQL jobs and extracts have no guest: their one output id is shown.
pub fn developer_outcome(o: &JobOutcome) -> unseen_api::DeveloperOutcome {
    let (outputs, outcome, withheld) = if o.guest {
        (
            Vec::new(),
            o.outcome_output
                .as_ref()
                .map(|id| unseen_api::QuarantinedOutcome {
                    output: id.clone(),
                    review: "quarantined".into(),
                }),
            o.outcome_output.as_ref().map(|_| WITHHELD.to_string()),
        )
    } else {
        (o.outputs.clone(), None, None)
    };
    unseen_api::DeveloperOutcome {
        job: o.job_id.clone(),
        status: o.status,
        stopped_by: o.stopped_by.clone(),
        reason: o.reason.clone(),
        epsilon_spent: o.epsilon_spent,
        outputs,
        outcome,
        withheld,
        protection: None,
    }
}

/// The operations of the service, as one user.
pub trait Backend {
    /// A signed statement of the running build (the server's, or this
    /// process's on a data directory).
    fn attest(&self, nonce: Option<&str>) -> Result<api::Attestation>;

    fn add_user(&self, user: &api::NewUser) -> Result<api::UserToken>;
    fn users(&self) -> Result<api::Users>;
    fn disable_user(&self, id: &str, reason: &str) -> Result<api::UserDisabled>;
    fn rotate_token(&self, id: &str) -> Result<api::UserToken>;

    fn datasets(&self) -> Result<api::Datasets>;
    fn register_dataset(
        &self,
        name: &str,
        parquet: &Path,
        manifest: &str,
    ) -> Result<api::DatasetRegistered>;
    fn destroy_dataset(&self, name: &str, reason: &str) -> Result<api::DatasetDestroyed>;
    fn publish_marginals(&self, name: &str, epsilon: f64) -> Result<api::Marginals>;
    /// Proposes the Parquet file `parquet` as dataset `name` for `grant`.
    fn propose_import(
        &self,
        grant: &str,
        name: &str,
        parquet: &Path,
        manifest: &str,
    ) -> Result<api::ImportShown>;
    fn imports(&self) -> Result<api::Imports>;
    fn decide_import(&self, id: &str, decision: &api::ImportDecision) -> Result<api::ImportShown>;

    fn set_budget(&self, request: &api::BudgetRequest) -> Result<api::BudgetSet>;
    fn grant_budget(&self, grant: &str) -> Result<api::GrantBudget>;

    fn issue_grant(&self, request: &api::GrantRequest) -> Result<api::GrantIssued>;
    fn grants(&self) -> Result<api::Grants>;
    fn grant(&self, id: &str) -> Result<api::GrantShown>;
    fn revoke_grant(&self, id: &str, reason: &str) -> Result<api::GrantRevoked>;
    fn grant_usage(&self, id: &str) -> Result<api::Usage>;

    fn apply(&self, request: &api::GrantRequest) -> Result<api::ApplicationShown>;
    fn applications(&self) -> Result<api::Applications>;
    fn application(&self, id: &str) -> Result<api::ApplicationShown>;
    fn amend_application(
        &self,
        id: &str,
        request: &api::GrantRequest,
    ) -> Result<api::ApplicationShown>;
    fn withdraw_application(&self, id: &str, reason: &str) -> Result<api::ApplicationShown>;
    fn pre_review_application(
        &self,
        id: &str,
        pre_review: &api::PreReview,
    ) -> Result<api::ApplicationShown>;
    fn decide_application(
        &self,
        id: &str,
        decision: &api::ApplicationDecision,
    ) -> Result<api::ApplicationShown>;
    fn application_feedback(
        &self,
        id: &str,
        feedback: &api::ApplicationFeedback,
    ) -> Result<api::ApplicationShown>;

    /// Stores a module; its id (SHA-256).
    fn upload_module(&self, bytes: &[u8], kind: ModuleKind) -> Result<String>;
    fn submit_job(&self, request: &api::JobRequest) -> Result<Submitted>;
    fn jobs(&self, grant: Option<&str>) -> Result<api::Jobs>;
    fn job(&self, id: &str) -> Result<api::JobShown>;
    fn cancel_job(&self, id: &str, reason: &str) -> Result<api::JobCancelled>;
    fn dry_run(&self, request: &api::QueryRequest) -> Result<api::DryRun>;
    fn query(&self, request: &api::QueryRequest) -> Result<api::DeveloperOutcome>;
    fn extract(&self, request: &api::ExtractRequest) -> Result<api::DeveloperOutcome>;

    fn review_queue(&self) -> Result<api::ReviewQueue>;
    fn output(&self, id: &str) -> Result<api::OutputShown>;
    fn review(&self, id: &str, approve: bool, reason: &str) -> Result<api::ReviewDecision>;
    /// The release file; written durably to `destination` (when given),
    /// as the bundle or with `format` as its table in that format, before
    /// the service counts the download where it can.
    fn download_release(
        &self,
        id: &str,
        destination: Option<Destination>,
        format: Option<crate::export::TableFormat>,
    ) -> Result<String>;
    fn reconcile(&self) -> Result<Reconciliation>;
}

/// A data directory on this host, as one user (or, with no user named,
/// as its operator for the commands that allow that: the first admin's
/// `user add` and `budget show`).
pub struct Local {
    domain: Arc<Domain>,
    actor: Result<String, String>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local")
            .field("dir", &self.domain.dir())
            .field("actor", &self.actor)
            .finish()
    }
}

impl Local {
    /// `actor` is who acts, or why nobody could be named (said when a
    /// command needs someone).
    pub fn new(
        domain: Arc<Domain>,
        actor: Result<String, String>,
        runtime: tokio::runtime::Handle,
    ) -> Local {
        Local {
            domain,
            actor,
            runtime,
        }
    }

    /// The open data directory.
    pub fn domain(&self) -> &Arc<Domain> {
        &self.domain
    }

    fn actor(&self) -> Result<&str> {
        self.actor
            .as_deref()
            .map_err(|why| anyhow::anyhow!("{why}"))
    }
}

/// The UDF modules and earlier releases a query or job may use.
pub(crate) fn job_extras(udf_modules: &[String], inputs: &[String]) -> crate::jobs::JobExtras {
    crate::jobs::JobExtras {
        udfs: udf_modules.to_vec(),
        inputs: inputs.to_vec(),
    }
}

/// The budget layer and id a [`api::BudgetRequest`] names.
pub fn budget_target(
    request: &api::BudgetRequest,
) -> Result<(crate::BudgetLayer, &str), DomainError> {
    match (&request.dataset, &request.developer) {
        (Some(d), None) => Ok((crate::BudgetLayer::Dataset, d)),
        (None, Some(u)) => Ok((crate::BudgetLayer::Developer, u)),
        _ => Err(DomainError::OneOf {
            fields: "`dataset` or `developer`",
        }),
    }
}

/// An answer's review decision, as the service words it.
pub fn decision_status(release: bool, approve: bool) -> &'static str {
    match (release, approve) {
        (true, _) => "approved",
        (false, true) => "awaiting a second approval",
        (false, false) => "rejected",
    }
}

impl Backend for Local {
    fn attest(&self, nonce: Option<&str>) -> Result<api::Attestation> {
        self.actor()?;
        Ok(self.domain.attest(nonce)?)
    }

    fn add_user(&self, user: &api::NewUser) -> Result<api::UserToken> {
        let role = Role::parse(&user.role).map_err(DomainError::BadRole)?;
        // The first admin of a new directory adds itself without a token.
        let actor = self.actor.as_deref().ok();
        let token = self
            .domain
            .add_user(actor, &user.id, &user.name, role, &user.org)?;
        Ok(api::UserToken {
            user: user.id.clone(),
            token,
        })
    }

    fn users(&self) -> Result<api::Users> {
        let users = self.domain.users(self.actor()?)?;
        Ok(api::Users { users })
    }

    fn disable_user(&self, id: &str, reason: &str) -> Result<api::UserDisabled> {
        self.domain.disable_user(self.actor()?, id, reason)?;
        Ok(api::UserDisabled {
            user: id.into(),
            disabled: true,
        })
    }

    fn rotate_token(&self, id: &str) -> Result<api::UserToken> {
        let token = self.domain.rotate_token(self.actor()?, id)?;
        Ok(api::UserToken {
            user: id.into(),
            token,
        })
    }

    fn datasets(&self) -> Result<api::Datasets> {
        let datasets = self.domain.datasets(self.actor()?)?;
        Ok(api::Datasets { datasets })
    }

    fn register_dataset(
        &self,
        name: &str,
        parquet: &Path,
        manifest: &str,
    ) -> Result<api::DatasetRegistered> {
        let actor = self.actor()?;
        let ingested = self
            .runtime
            .block_on(self.domain.register_dataset(actor, name, parquet, manifest))?;
        Ok(api::DatasetRegistered {
            dataset: name.into(),
            rows: ingested.rows,
        })
    }

    fn propose_import(
        &self,
        grant: &str,
        name: &str,
        parquet: &Path,
        manifest: &str,
    ) -> Result<api::ImportShown> {
        let actor = self.actor()?;
        let id = self
            .domain
            .propose_import(actor, grant, name, parquet, manifest)?;
        let import = self.domain.import(actor, &id)?;
        Ok(api::ImportShown { import })
    }

    fn imports(&self) -> Result<api::Imports> {
        let imports = self.domain.imports(self.actor()?)?;
        Ok(api::Imports { imports })
    }

    fn decide_import(&self, id: &str, decision: &api::ImportDecision) -> Result<api::ImportShown> {
        let actor = self.actor()?;
        self.runtime
            .block_on(self.domain.decide_import(actor, id, decision))?;
        let import = self.domain.import(actor, id)?;
        Ok(api::ImportShown { import })
    }

    fn destroy_dataset(&self, name: &str, reason: &str) -> Result<api::DatasetDestroyed> {
        self.domain.destroy_dataset(self.actor()?, name, reason)?;
        Ok(api::DatasetDestroyed {
            dataset: name.into(),
            destroyed: true,
        })
    }

    fn publish_marginals(&self, name: &str, epsilon: f64) -> Result<api::Marginals> {
        let marginals =
            self.domain
                .publish_marginals(&self.runtime, self.actor()?, name, epsilon)?;
        Ok(api::Marginals {
            marginals: serde_json::to_value(&marginals)?,
        })
    }

    fn set_budget(&self, request: &api::BudgetRequest) -> Result<api::BudgetSet> {
        let (layer, id) = budget_target(request)?;
        self.domain
            .set_budget(self.actor()?, layer, id, request.epsilon)?;
        Ok(api::BudgetSet {
            layer: match layer {
                crate::BudgetLayer::Dataset => "dataset",
                crate::BudgetLayer::Developer => "developer",
            }
            .into(),
            id: id.into(),
            epsilon_total: request.epsilon,
        })
    }

    fn grant_budget(&self, grant: &str) -> Result<api::GrantBudget> {
        let (grant, layers) = match self.actor.as_deref() {
            Ok(actor) => {
                let grant = self.domain.visible_grant(actor, grant)?;
                let layers = self.domain.budget_layers_seen_by(actor, &grant.id)?;
                (grant, layers)
            }
            // The operator of the host reads the data directory itself.
            Err(_) => (self.domain.grant(grant)?, self.domain.budget_layers(grant)?),
        };
        Ok(api::GrantBudget {
            epsilon_left: (grant.epsilon_total - grant.epsilon_spent).max(0.0),
            epsilon_spent: grant.epsilon_spent,
            delta_spent: grant.delta_spent,
            delta_total: grant.delta_total,
            grant: grant.id,
            layers,
        })
    }

    fn issue_grant(&self, request: &api::GrantRequest) -> Result<api::GrantIssued> {
        let id = self.domain.issue_grant(self.actor()?, request)?;
        let details = self.domain.grant(&id)?;
        Ok(api::GrantIssued { grant: id, details })
    }

    fn grants(&self) -> Result<api::Grants> {
        let grants = self.domain.grants(self.actor()?)?;
        Ok(api::Grants { grants })
    }

    fn grant(&self, id: &str) -> Result<api::GrantShown> {
        let grant = self.domain.visible_grant(self.actor()?, id)?;
        Ok(api::GrantShown { grant })
    }

    fn revoke_grant(&self, id: &str, reason: &str) -> Result<api::GrantRevoked> {
        let stopped = self.domain.revoke_grant(self.actor()?, id, reason)?;
        Ok(api::GrantRevoked {
            grant: id.into(),
            revoked: true,
            jobs_stopped: stopped as u64,
        })
    }

    fn grant_usage(&self, id: &str) -> Result<api::Usage> {
        let usage = self.domain.grant_usage(self.actor()?, id)?;
        Ok(api::Usage { usage })
    }

    fn apply(&self, request: &api::GrantRequest) -> Result<api::ApplicationShown> {
        let id = self.domain.apply(self.actor()?, request)?;
        self.application(&id)
    }

    fn applications(&self) -> Result<api::Applications> {
        let applications = self.domain.applications(self.actor()?)?;
        Ok(api::Applications { applications })
    }

    fn application(&self, id: &str) -> Result<api::ApplicationShown> {
        let application = self.domain.application(self.actor()?, id)?;
        Ok(api::ApplicationShown { application })
    }

    fn amend_application(
        &self,
        id: &str,
        request: &api::GrantRequest,
    ) -> Result<api::ApplicationShown> {
        self.domain.amend_application(self.actor()?, id, request)?;
        self.application(id)
    }

    fn withdraw_application(&self, id: &str, reason: &str) -> Result<api::ApplicationShown> {
        self.domain
            .withdraw_application(self.actor()?, id, reason)?;
        self.application(id)
    }

    fn pre_review_application(
        &self,
        id: &str,
        pre_review: &api::PreReview,
    ) -> Result<api::ApplicationShown> {
        self.domain
            .pre_review_application(self.actor()?, id, pre_review)?;
        self.application(id)
    }

    fn decide_application(
        &self,
        id: &str,
        decision: &api::ApplicationDecision,
    ) -> Result<api::ApplicationShown> {
        self.domain
            .decide_application(self.actor()?, id, decision)?;
        self.application(id)
    }

    fn application_feedback(
        &self,
        id: &str,
        feedback: &api::ApplicationFeedback,
    ) -> Result<api::ApplicationShown> {
        self.domain
            .application_feedback(self.actor()?, id, feedback)?;
        self.application(id)
    }

    fn upload_module(&self, bytes: &[u8], kind: ModuleKind) -> Result<String> {
        let actor = self.actor()?;
        Ok(match kind {
            ModuleKind::Job => self.domain.upload_module(actor, bytes)?,
            ModuleKind::Udf => self.domain.upload_udf_module(actor, bytes)?.0,
        })
    }

    /// Runs the job here and waits for its end: a local run has no server
    /// to come back to later.
    fn submit_job(&self, request: &api::JobRequest) -> Result<Submitted> {
        let outcome = self.domain.run_job(
            &self.runtime,
            self.actor()?,
            &request.grant,
            &request.module,
            request.params.clone(),
            &job_extras(&request.udf_modules, &request.inputs),
        )?;
        Ok(Submitted::Ended(developer_outcome(&outcome)))
    }

    fn jobs(&self, grant: Option<&str>) -> Result<api::Jobs> {
        let jobs = self.domain.jobs(self.actor()?, grant)?;
        Ok(api::Jobs { jobs })
    }

    fn job(&self, id: &str) -> Result<api::JobShown> {
        let job = self.domain.job(self.actor()?, id)?;
        Ok(api::JobShown { job })
    }

    fn cancel_job(&self, id: &str, reason: &str) -> Result<api::JobCancelled> {
        let state = self.domain.cancel_job(self.actor()?, id, reason)?;
        Ok(api::JobCancelled {
            job: id.into(),
            state: state.to_string(),
        })
    }

    fn dry_run(&self, request: &api::QueryRequest) -> Result<api::DryRun> {
        Ok(self.domain.dry_run(
            &self.runtime,
            self.actor()?,
            &request.grant,
            &request.sql,
            &job_extras(&request.udf_modules, &request.inputs),
        )?)
    }

    fn query(&self, request: &api::QueryRequest) -> Result<api::DeveloperOutcome> {
        let outcome = self.domain.run_sql(
            &self.runtime,
            self.actor()?,
            &request.grant,
            &request.sql,
            &job_extras(&request.udf_modules, &request.inputs),
        )?;
        Ok(developer_outcome(&outcome))
    }

    fn extract(&self, request: &api::ExtractRequest) -> Result<api::DeveloperOutcome> {
        let (outcome, plan) = self.domain.run_extract(
            &self.runtime,
            self.actor()?,
            &request.grant,
            &request.columns,
            request.sample,
        )?;
        let mut answer = developer_outcome(&outcome);
        answer.protection = Some(serde_json::to_value(&plan)?);
        Ok(answer)
    }

    fn review_queue(&self) -> Result<api::ReviewQueue> {
        let outputs = self.domain.review_queue(self.actor()?)?;
        Ok(api::ReviewQueue { outputs })
    }

    fn output(&self, id: &str) -> Result<api::OutputShown> {
        self.domain
            .require(self.actor()?, Role::Reviewer, "read quarantined outputs")?;
        let (name, status, table) = self.domain.output(id)?;
        let (kind, disclosure) = self.domain.output_details(id)?;
        Ok(api::OutputShown {
            name,
            kind,
            status,
            table: crate::table_json(&table),
            findings: Value::Array(self.domain.findings(id)?),
            disclosure: disclosure.unwrap_or(Value::Null),
        })
    }

    fn review(&self, id: &str, approve: bool, reason: &str) -> Result<api::ReviewDecision> {
        let release = self.domain.review(self.actor()?, id, approve, reason)?;
        Ok(api::ReviewDecision {
            output: id.into(),
            status: decision_status(release.is_some(), approve).into(),
            release: release.as_ref().map(|r| r.id.clone()),
            path: release.as_ref().map(|r| r.path.display().to_string()),
            document: release.map(|r| r.document),
        })
    }

    fn download_release(
        &self,
        id: &str,
        destination: Option<Destination>,
        format: Option<crate::export::TableFormat>,
    ) -> Result<String> {
        let mut destination = destination;
        // Converted before the write that counts it: a failure costs nothing.
        Ok(self
            .domain
            .download_release_into(self.actor()?, id, |text| match destination.take() {
                Some(d) => {
                    let bytes = crate::export::release_file_bytes(text, format)
                        .map_err(|e| DomainError::CannotWrite(format!("{e:#}")))?;
                    d.commit(&bytes).map_err(DomainError::CannotWrite)
                }
                None => Ok(()),
            })?)
    }

    fn reconcile(&self) -> Result<Reconciliation> {
        Ok(self.domain.reconcile(self.actor()?)?)
    }
}

/// A server, as the user whose token the client carries.
#[derive(Debug)]
pub struct Remote {
    client: Client,
}

impl Remote {
    pub fn new(client: Client) -> Remote {
        Remote { client }
    }

    fn get<R: serde::de::DeserializeOwned>(&self, path: &str) -> Result<R> {
        let value = self.client.get(path)?;
        serde_json::from_value(value)
            .with_context(|| format!("the server's answer to GET {path} is malformed"))
    }

    fn post<B: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<R> {
        Ok(self.client.call(path, body)?)
    }

    fn reason(reason: &str) -> api::Reason {
        api::Reason {
            reason: reason.into(),
        }
    }
}

/// Percent-encodes a path segment (ids are plain, but never trust that).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Backend for Remote {
    fn attest(&self, nonce: Option<&str>) -> Result<api::Attestation> {
        match nonce {
            Some(n) => self.get(&format!("/v1/attestation?nonce={}", segment(n))),
            None => self.get("/v1/attestation"),
        }
    }

    fn add_user(&self, user: &api::NewUser) -> Result<api::UserToken> {
        self.post("/v1/users", user)
    }

    fn users(&self) -> Result<api::Users> {
        self.get("/v1/users")
    }

    fn disable_user(&self, id: &str, reason: &str) -> Result<api::UserDisabled> {
        let path = format!("/v1/users/{}/disable", segment(id));
        self.post(&path, &Self::reason(reason))
    }

    fn rotate_token(&self, id: &str) -> Result<api::UserToken> {
        let path = format!("/v1/users/{}/token", segment(id));
        self.post(&path, &serde_json::json!({}))
    }

    fn datasets(&self) -> Result<api::Datasets> {
        self.get("/v1/datasets")
    }

    fn register_dataset(
        &self,
        name: &str,
        parquet: &Path,
        manifest: &str,
    ) -> Result<api::DatasetRegistered> {
        let bytes =
            std::fs::read(parquet).with_context(|| format!("cannot read {}", parquet.display()))?;
        let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes);
        self.post(
            "/v1/datasets",
            &api::NewDataset {
                name: name.into(),
                manifest: manifest.into(),
                parquet_base64: encoded,
            },
        )
    }

    fn propose_import(
        &self,
        grant: &str,
        name: &str,
        parquet: &Path,
        manifest: &str,
    ) -> Result<api::ImportShown> {
        let bytes =
            std::fs::read(parquet).with_context(|| format!("cannot read {}", parquet.display()))?;
        let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes);
        self.post(
            "/v1/imports",
            &api::ImportRequest {
                grant: grant.into(),
                name: name.into(),
                manifest: manifest.into(),
                parquet_base64: encoded,
            },
        )
    }

    fn imports(&self) -> Result<api::Imports> {
        self.get("/v1/imports")
    }

    fn decide_import(&self, id: &str, decision: &api::ImportDecision) -> Result<api::ImportShown> {
        self.post(&format!("/v1/imports/{}/decision", segment(id)), decision)
    }

    fn destroy_dataset(&self, name: &str, reason: &str) -> Result<api::DatasetDestroyed> {
        let path = format!("/v1/datasets/{}/destroy", segment(name));
        self.post(&path, &Self::reason(reason))
    }

    fn publish_marginals(&self, name: &str, epsilon: f64) -> Result<api::Marginals> {
        let path = format!("/v1/datasets/{}/marginals", segment(name));
        self.post(&path, &api::MarginalsRequest { epsilon })
    }

    fn set_budget(&self, request: &api::BudgetRequest) -> Result<api::BudgetSet> {
        budget_target(request)?;
        self.post("/v1/budgets", request)
    }

    fn grant_budget(&self, grant: &str) -> Result<api::GrantBudget> {
        self.get(&format!("/v1/grants/{}/budget", segment(grant)))
    }

    fn issue_grant(&self, request: &api::GrantRequest) -> Result<api::GrantIssued> {
        self.post("/v1/grants", request)
    }

    fn grants(&self) -> Result<api::Grants> {
        self.get("/v1/grants")
    }

    fn grant(&self, id: &str) -> Result<api::GrantShown> {
        self.get(&format!("/v1/grants/{}", segment(id)))
    }

    fn revoke_grant(&self, id: &str, reason: &str) -> Result<api::GrantRevoked> {
        let path = format!("/v1/grants/{}/revoke", segment(id));
        self.post(&path, &Self::reason(reason))
    }

    fn grant_usage(&self, id: &str) -> Result<api::Usage> {
        self.get(&format!("/v1/grants/{}/usage", segment(id)))
    }

    fn apply(&self, request: &api::GrantRequest) -> Result<api::ApplicationShown> {
        self.post("/v1/applications", request)
    }

    fn applications(&self) -> Result<api::Applications> {
        self.get("/v1/applications")
    }

    fn application(&self, id: &str) -> Result<api::ApplicationShown> {
        self.get(&format!("/v1/applications/{}", segment(id)))
    }

    fn amend_application(
        &self,
        id: &str,
        request: &api::GrantRequest,
    ) -> Result<api::ApplicationShown> {
        self.post(&format!("/v1/applications/{}/amend", segment(id)), request)
    }

    fn withdraw_application(&self, id: &str, reason: &str) -> Result<api::ApplicationShown> {
        let path = format!("/v1/applications/{}/withdraw", segment(id));
        self.post(&path, &Self::reason(reason))
    }

    fn pre_review_application(
        &self,
        id: &str,
        pre_review: &api::PreReview,
    ) -> Result<api::ApplicationShown> {
        let path = format!("/v1/applications/{}/pre-review", segment(id));
        self.post(&path, pre_review)
    }

    fn decide_application(
        &self,
        id: &str,
        decision: &api::ApplicationDecision,
    ) -> Result<api::ApplicationShown> {
        let path = format!("/v1/applications/{}/decision", segment(id));
        self.post(&path, decision)
    }

    fn application_feedback(
        &self,
        id: &str,
        feedback: &api::ApplicationFeedback,
    ) -> Result<api::ApplicationShown> {
        let path = format!("/v1/applications/{}/feedback", segment(id));
        self.post(&path, feedback)
    }

    fn upload_module(&self, bytes: &[u8], kind: ModuleKind) -> Result<String> {
        Ok(self.client.upload_module(bytes, kind.as_str())?.module)
    }

    fn submit_job(&self, request: &api::JobRequest) -> Result<Submitted> {
        self.post("/v1/jobs", request)
    }

    fn jobs(&self, grant: Option<&str>) -> Result<api::Jobs> {
        self.get(&match grant {
            Some(g) => format!("/v1/jobs?grant={}", segment(g)),
            None => "/v1/jobs".to_string(),
        })
    }

    fn job(&self, id: &str) -> Result<api::JobShown> {
        self.get(&format!("/v1/jobs/{}", segment(id)))
    }

    fn cancel_job(&self, id: &str, reason: &str) -> Result<api::JobCancelled> {
        let path = format!("/v1/jobs/{}/cancel", segment(id));
        self.post(&path, &Self::reason(reason))
    }

    fn dry_run(&self, request: &api::QueryRequest) -> Result<api::DryRun> {
        self.post("/v1/queries", request)
    }

    fn query(&self, request: &api::QueryRequest) -> Result<api::DeveloperOutcome> {
        self.post("/v1/queries", request)
    }

    fn extract(&self, request: &api::ExtractRequest) -> Result<api::DeveloperOutcome> {
        self.post("/v1/extracts", request)
    }

    fn review_queue(&self) -> Result<api::ReviewQueue> {
        self.get("/v1/reviews")
    }

    fn output(&self, id: &str) -> Result<api::OutputShown> {
        self.get(&format!("/v1/outputs/{}", segment(id)))
    }

    fn review(&self, id: &str, approve: bool, reason: &str) -> Result<api::ReviewDecision> {
        let verb = if approve { "approve" } else { "reject" };
        let path = format!("/v1/outputs/{}/{verb}", segment(id));
        self.post(&path, &Self::reason(reason))
    }

    fn download_release(
        &self,
        id: &str,
        destination: Option<Destination>,
        format: Option<crate::export::TableFormat>,
    ) -> Result<String> {
        let file = self.client.get(&format!("/v1/releases/{}", segment(id)))?;
        let text = serde_json::to_string_pretty(&file)?;
        if let Some(d) = destination {
            let bytes = crate::export::release_file_bytes(&text, format)?;
            d.commit(&bytes).map_err(anyhow::Error::msg)?;
        }
        Ok(text)
    }

    fn reconcile(&self) -> Result<Reconciliation> {
        self.get("/v1/ledger/reconcile")
    }
}
