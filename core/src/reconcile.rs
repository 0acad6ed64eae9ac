//! The reconciliation check: does the store say what the ledger says?
//!
//! Replays the ledger into the state it implies — budgets at every layer
//! (spent and total), each grant's runs, downloads and revocation, every
//! job's state, every output's review status and each reviewer's
//! decisions, releases and downloads, users disabled and datasets
//! destroyed — and compares it with the store, field by field. Changes
//! being recorded at that moment (committed to the store, their entries
//! not yet appended: `pending_records`) count as recorded, so a busy
//! service shows no difference; any difference left is a real one.
//!
//! `unseen ledger reconcile` and `GET /v1/ledger/reconcile` run it for
//! admins and auditors. Only ids, states, counts and budget figures are
//! compared and reported: nothing here reads an output's content or a
//! data value.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::{Value, json};

use crate::records::{self, Pending};
use crate::{Domain, DomainError, Role, lock};

/// A field on which the store and the ledger disagree.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Difference {
    /// What disagrees, like `grant grant-1a2b` or `job job-3c4d`.
    pub subject: String,
    /// Which of its fields, like `epsilon spent` (or `exists`).
    pub field: String,
    /// The value in the store.
    pub store: Value,
    /// The value the ledger implies.
    pub ledger: Value,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} is {} in the store but {} in the ledger",
            self.subject, self.field, self.store, self.ledger
        )
    }
}

/// The outcome of a reconciliation check.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reconciliation {
    /// Ledger entries replayed.
    pub ledger_entries: u64,
    /// Changes committed to the store whose entries were being appended
    /// during the check (counted as recorded).
    pub in_flight: usize,
    /// How many of each thing were compared.
    pub checked: BTreeMap<String, usize>,
    /// Every disagreement; empty when the store and the ledger agree.
    pub differences: Vec<Difference>,
}

impl Reconciliation {
    /// True when the store and the ledger agree.
    pub fn agrees(&self) -> bool {
        self.differences.is_empty()
    }
}

/// A budget layer, a grant's usage or a user: the compared fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct GrantState {
    pub(crate) epsilon_total: f64,
    pub(crate) epsilon_spent: f64,
    pub(crate) delta_spent: f64,
    pub(crate) runs: i64,
    pub(crate) downloads: i64,
    pub(crate) revoked: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct DatasetState {
    pub(crate) epsilon_total: Option<f64>,
    pub(crate) epsilon_spent: f64,
    pub(crate) destroyed: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct UserState {
    pub(crate) epsilon_total: Option<f64>,
    pub(crate) epsilon_spent: f64,
    pub(crate) disabled: bool,
}

/// Things compared field by field.
trait Fields {
    fn fields(&self) -> Vec<(&'static str, Value)>;
}

impl Fields for GrantState {
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("epsilon total", json!(self.epsilon_total)),
            ("epsilon spent", json!(self.epsilon_spent)),
            ("delta spent", json!(self.delta_spent)),
            ("runs", json!(self.runs)),
            ("downloads", json!(self.downloads)),
            ("revoked", json!(self.revoked)),
        ]
    }
}

impl Fields for DatasetState {
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("epsilon total", json!(self.epsilon_total)),
            ("epsilon spent", json!(self.epsilon_spent)),
            ("destroyed", json!(self.destroyed)),
        ]
    }
}

impl Fields for UserState {
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("epsilon total", json!(self.epsilon_total)),
            ("epsilon spent", json!(self.epsilon_spent)),
            ("disabled", json!(self.disabled)),
        ]
    }
}

impl Fields for String {
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![("status", json!(self))]
    }
}

impl Fields for i64 {
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![("count", json!(self))]
    }
}

impl Fields for () {
    fn fields(&self) -> Vec<(&'static str, Value)> {
        Vec::new()
    }
}

/// What the store holds, or what the ledger implies it should.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct State {
    pub(crate) grants: BTreeMap<String, GrantState>,
    pub(crate) datasets: BTreeMap<String, DatasetState>,
    pub(crate) users: BTreeMap<String, UserState>,
    /// Job id to status.
    pub(crate) jobs: BTreeMap<String, String>,
    /// Output id to review status.
    pub(crate) outputs: BTreeMap<String, String>,
    /// `output reviewer decision` to how many such decisions.
    pub(crate) reviews: BTreeMap<String, i64>,
    pub(crate) releases: BTreeMap<String, ()>,
    /// Release id to downloads.
    pub(crate) downloads: BTreeMap<String, i64>,
}

pub(crate) fn review_key(output: &str, reviewer: &str, decision: &str) -> String {
    format!("{output} by {reviewer} ({decision})")
}

fn text<'a>(body: &'a Value, field: &str) -> &'a str {
    body.get(field).and_then(Value::as_str).unwrap_or_default()
}

fn number(body: &Value, field: &str) -> f64 {
    body.get(field).and_then(Value::as_f64).unwrap_or(0.0)
}

/// The state a sequence of entries (kind, actor, body) implies.
fn implied<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str, &'a Value)>) -> State {
    let mut s = State::default();
    // Grant to (primary dataset, developer), from `grant.issued`.
    let mut grant_of: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (kind, actor, body) in entries {
        match kind {
            "user.created" => {
                s.users.entry(text(body, "user").into()).or_default();
            }
            "user.disabled" => {
                s.users
                    .entry(text(body, "user").into())
                    .or_default()
                    .disabled = true;
            }
            "dataset.registered" => {
                let dataset = s.datasets.entry(text(body, "dataset").into()).or_default();
                // An approved import sets its own budget layer as it registers.
                if let Some(total) = body.get("epsilon_total").and_then(Value::as_f64) {
                    dataset.epsilon_total = Some(total);
                }
            }
            "dataset.destroyed" => {
                s.datasets
                    .entry(text(body, "dataset").into())
                    .or_default()
                    .destroyed = true;
            }
            "dataset.marginals" => {
                s.datasets
                    .entry(text(body, "dataset").into())
                    .or_default()
                    .epsilon_spent += number(body, "epsilon");
            }
            "budget.set" => {
                let total = Some(number(body, "epsilon_total"));
                let id = text(body, "id").to_string();
                match text(body, "layer") {
                    "dataset" => s.datasets.entry(id).or_default().epsilon_total = total,
                    _ => s.users.entry(id).or_default().epsilon_total = total,
                }
            }
            "grant.issued" => {
                let grant = text(body, "grant").to_string();
                grant_of.insert(
                    grant.clone(),
                    (
                        text(body, "dataset").to_string(),
                        text(body, "developer").to_string(),
                    ),
                );
                s.grants.entry(grant).or_default().epsilon_total = number(body, "epsilon_total");
            }
            "grant.revoked" => {
                s.grants
                    .entry(text(body, "grant").into())
                    .or_default()
                    .revoked = true;
            }
            "query.admitted" => {
                let (epsilon, delta) = (number(body, "epsilon"), number(body, "delta"));
                if epsilon == 0.0 && delta == 0.0 {
                    // Open columns: nothing is charged.
                    continue;
                }
                let grant = text(body, "grant");
                let g = s.grants.entry(grant.into()).or_default();
                g.epsilon_spent += epsilon;
                g.delta_spent += delta;
                let (primary, developer) = grant_of.get(grant).cloned().unwrap_or_default();
                // Entries written before spends named their datasets
                // charged the grant's primary dataset.
                let datasets: Vec<String> = match body.get("datasets").and_then(Value::as_array) {
                    Some(list) => list
                        .iter()
                        .filter_map(|d| d.as_str().map(str::to_string))
                        .collect(),
                    None => vec![primary],
                };
                for d in datasets {
                    s.datasets.entry(d).or_default().epsilon_spent += epsilon;
                }
                s.users.entry(developer).or_default().epsilon_spent += epsilon;
            }
            "job.submitted" => {
                s.jobs
                    .entry(text(body, "job").into())
                    .or_insert_with(|| "queued".into());
                s.grants.entry(text(body, "grant").into()).or_default().runs += 1;
            }
            "job.started" => {
                let status = s.jobs.entry(text(body, "job").into()).or_default();
                if status.is_empty() || status == "queued" {
                    *status = "running".into();
                }
            }
            "job.ended" | "job.recovered" => {
                s.jobs
                    .insert(text(body, "job").into(), text(body, "status").into());
            }
            "job.cancelled" if text(body, "state") == "cancelled" => {
                s.jobs.insert(text(body, "job").into(), "cancelled".into());
            }
            "output.quarantined" => {
                s.outputs
                    .entry(text(body, "output").into())
                    .or_insert_with(|| "quarantined".into());
            }
            "review.approved" | "review.rejected" => {
                let output = text(body, "output");
                let decision = if kind == "review.approved" {
                    "approved"
                } else {
                    "rejected"
                };
                *s.reviews
                    .entry(review_key(output, actor, decision))
                    .or_default() += 1;
                let final_decision = decision == "rejected"
                    || number(body, "approvals") >= number(body, "approvals_required");
                if final_decision {
                    s.outputs.insert(output.into(), decision.into());
                }
            }
            "release.signed" => {
                s.releases.insert(text(body, "release").into(), ());
            }
            "release.downloaded" => {
                *s.downloads.entry(text(body, "release").into()).or_default() += 1;
                s.grants
                    .entry(text(body, "grant").into())
                    .or_default()
                    .downloads += 1;
            }
            _ => {}
        }
    }
    s
}

/// Equal, or (numbers) equal but for rounding: the store adds spends in
/// commit order, the ledger replay in entry order.
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

fn compare<V: Fields>(
    what: &str,
    store: &BTreeMap<String, V>,
    ledger: &BTreeMap<String, V>,
    differences: &mut Vec<Difference>,
) -> usize {
    let ids: BTreeSet<&String> = store.keys().chain(ledger.keys()).collect();
    for id in &ids {
        let subject = format!("{what} {id}");
        match (store.get(*id), ledger.get(*id)) {
            (Some(s), Some(l)) => {
                for ((field, sv), (_, lv)) in s.fields().into_iter().zip(l.fields()) {
                    if !same(&sv, &lv) {
                        differences.push(Difference {
                            subject: subject.clone(),
                            field: field.to_string(),
                            store: sv,
                            ledger: lv,
                        });
                    }
                }
            }
            (s, l) => differences.push(Difference {
                subject,
                field: "exists".into(),
                store: json!(s.is_some()),
                ledger: json!(l.is_some()),
            }),
        }
    }
    ids.len()
}

/// Compares two states; returns what was checked and every difference.
fn differences(store: &State, ledger: &State) -> (BTreeMap<String, usize>, Vec<Difference>) {
    let mut found = Vec::new();
    let checked = [
        (
            "grants",
            compare("grant", &store.grants, &ledger.grants, &mut found),
        ),
        (
            "datasets",
            compare("dataset", &store.datasets, &ledger.datasets, &mut found),
        ),
        (
            "users",
            compare("user", &store.users, &ledger.users, &mut found),
        ),
        (
            "jobs",
            compare("job", &store.jobs, &ledger.jobs, &mut found),
        ),
        (
            "outputs",
            compare("output", &store.outputs, &ledger.outputs, &mut found),
        ),
        (
            "review decisions",
            compare("review of", &store.reviews, &ledger.reviews, &mut found),
        ),
        (
            "releases",
            compare("release", &store.releases, &ledger.releases, &mut found),
        ),
        (
            "downloaded releases",
            compare(
                "downloads of release",
                &store.downloads,
                &ledger.downloads,
                &mut found,
            ),
        ),
    ];
    let checked = checked
        .into_iter()
        .map(|(what, n)| (what.to_string(), n))
        .collect();
    (checked, found)
}

impl Domain {
    /// Compares the store with what the ledger implies (see the module
    /// docs). Admins and auditors only.
    pub fn reconcile(&self, actor: &str) -> Result<Reconciliation, DomainError> {
        self.require_any(
            actor,
            &[Role::Admin, Role::Auditor],
            "reconcile the store with the ledger",
        )?;
        // One snapshot: the store, the changes being recorded, and the
        // ledger's size, all while no change can commit. Every entry up to
        // that size was committed before the snapshot.
        let (store, pending, size) = {
            let db = lock(&self.db);
            let tx = db.unchecked_transaction()?;
            let store = crate::store::reconcile::state(&tx)?;
            let pending = records::pending(&tx)?;
            let size = self.ledger.head()?.size;
            (store, pending, size)
        };
        let entries = self.ledger.with(|l| l.entries())??;
        let entries = &entries[..usize::try_from(size)
            .unwrap_or(usize::MAX)
            .min(entries.len())];
        let written: HashSet<&str> = entries
            .iter()
            .filter_map(|e| records::record_id(&e.body))
            .collect();
        let in_flight: Vec<&Pending> = pending
            .iter()
            .filter(|p| !written.contains(p.id.as_str()))
            .collect();
        let ledger = implied(
            entries
                .iter()
                .map(|e| (e.kind.as_str(), e.actor.as_str(), &e.body))
                .chain(
                    in_flight
                        .iter()
                        .map(|p| (p.draft.kind.as_str(), p.draft.actor.as_str(), &p.draft.body)),
                ),
        );
        let (checked, differences) = differences(&store, &ledger);
        Ok(Reconciliation {
            ledger_entries: size,
            in_flight: in_flight.len(),
            checked,
            differences,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &'static str, actor: &'static str, body: Value) -> (String, String, Value) {
        (kind.to_string(), actor.to_string(), body)
    }

    fn replay(entries: &[(String, String, Value)]) -> State {
        implied(entries.iter().map(|(k, a, b)| (k.as_str(), a.as_str(), b)))
    }

    fn history() -> Vec<(String, String, Value)> {
        vec![
            entry("user.created", "admin", json!({"user": "admin"})),
            entry("user.created", "admin", json!({"user": "dev"})),
            entry(
                "dataset.registered",
                "admin",
                json!({"dataset": "residents"}),
            ),
            entry(
                "grant.issued",
                "admin",
                json!({"grant": "g", "dataset": "residents", "developer": "dev", "epsilon_total": 10.0}),
            ),
            entry("job.submitted", "dev", json!({"job": "j", "grant": "g"})),
            entry("job.started", "dev", json!({"job": "j", "grant": "g"})),
            entry(
                "query.admitted",
                "dev",
                json!({"grant": "g", "epsilon": 1.0, "datasets": ["residents"]}),
            ),
            entry(
                "query.admitted",
                "dev",
                json!({"grant": "g", "epsilon": 0.0}),
            ),
            entry(
                "output.quarantined",
                "dev",
                json!({"output": "o", "job": "j"}),
            ),
            entry(
                "job.ended",
                "dev",
                json!({"job": "j", "status": "succeeded"}),
            ),
            entry(
                "review.approved",
                "rev",
                json!({"output": "o", "approvals": 1, "approvals_required": 1}),
            ),
            entry(
                "release.signed",
                "rev",
                json!({"release": "r", "output": "o"}),
            ),
            entry(
                "release.downloaded",
                "dev",
                json!({"release": "r", "grant": "g"}),
            ),
            entry(
                "dataset.marginals",
                "admin",
                json!({"dataset": "residents", "epsilon": 0.5}),
            ),
            entry(
                "budget.set",
                "admin",
                json!({"layer": "developer", "id": "dev", "epsilon_total": 5.0}),
            ),
        ]
    }

    #[test]
    fn the_ledger_implies_budgets_usage_jobs_and_reviews() {
        let s = replay(&history());
        let g = &s.grants["g"];
        assert_eq!(
            (g.epsilon_total, g.epsilon_spent, g.runs, g.downloads),
            (10.0, 1.0, 1, 1)
        );
        assert_eq!(s.datasets["residents"].epsilon_spent, 1.5);
        assert_eq!(s.users["dev"].epsilon_spent, 1.0);
        assert_eq!(s.users["dev"].epsilon_total, Some(5.0));
        assert_eq!(s.jobs["j"], "succeeded");
        assert_eq!(s.outputs["o"], "approved");
        assert_eq!(s.reviews["o by rev (approved)"], 1);
        assert_eq!(s.downloads["r"], 1);
    }

    #[test]
    fn a_spend_missing_from_the_ledger_is_a_difference_on_every_layer() {
        let full = replay(&history());
        let mut lost = history();
        lost.remove(6);
        let (_, found) = differences(&full, &replay(&lost));
        let subjects: Vec<(String, String)> = found
            .iter()
            .map(|d| (d.subject.clone(), d.field.clone()))
            .collect();
        assert_eq!(
            subjects,
            vec![
                ("grant g".to_string(), "epsilon spent".to_string()),
                ("dataset residents".to_string(), "epsilon spent".to_string()),
                ("user dev".to_string(), "epsilon spent".to_string()),
            ]
        );
        assert!(found[0].to_string().contains("1.0 in the store but 0.0"));
    }

    #[test]
    fn job_states_do_not_depend_on_the_order_of_racing_entries() {
        let mut h = history();
        // A job's end recorded before its start (never the case today,
        // but a replay must not depend on it) still ends it.
        h.swap(5, 9);
        assert_eq!(replay(&h).jobs["j"], "succeeded");
        // A second approval needed: one approval leaves it quarantined.
        let h = vec![
            entry("output.quarantined", "dev", json!({"output": "o"})),
            entry(
                "review.approved",
                "rev",
                json!({"output": "o", "approvals": 1, "approvals_required": 2}),
            ),
        ];
        assert_eq!(replay(&h).outputs["o"], "quarantined");
    }

    #[test]
    fn rounding_is_not_a_difference_but_a_hundredth_is() {
        assert!(same(&json!(0.1 + 0.2), &json!(0.3)));
        assert!(!same(&json!(45.77), &json!(45.72)));
        assert!(!same(&json!("succeeded"), &json!("running")));
    }
}
