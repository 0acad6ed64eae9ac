//! What auditors do with only the ledger and its public key: verify, query
//! with SQL, publish the disclosure report, and prove a downloaded release.
//!
//! Nothing here needs the data directory's private keys or the store: the
//! ledger files are read directly, verified first, then interpreted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, RecordBatch, StringBuilder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use serde_json::{Value, json};
use unseen_ledger::{Checkpoint, Entry, Hash, PublicKey, merkle};

use crate::DomainError;
use crate::util::sha256_hex;

/// The ledger's public key from `file`, or from `DATA_DIR/ledger/ledger.pub`.
pub fn read_public_key(data_dir: &Path, file: Option<&Path>) -> Result<PublicKey, DomainError> {
    let Some(path) = file else {
        // Inside the ledger directory: no link followed, a bounded read.
        let path = data_dir.join("ledger/ledger.pub");
        return PublicKey::load(&path).map_err(|e| bad_key(&path, e));
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| std::io::Read::read_to_string(&mut std::io::Read::take(f, 4096), &mut text))
        .map_err(|e| DomainError::io(path, e))?;
    PublicKey::from_hex(text.trim()).map_err(|e| bad_key(path, format!("not valid: {e}")))
}

/// A verified ledger, read without its private key.
#[derive(Debug, Clone)]
pub struct VerifiedLedger {
    pub entries: Vec<Entry>,
    pub leaves: Vec<Hash>,
    pub checkpoint: Checkpoint,
}

fn bad_key(path: &Path, detail: impl std::fmt::Display) -> DomainError {
    DomainError::BadPublicKey {
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

fn unverified(detail: impl Into<String>) -> DomainError {
    DomainError::ReleaseUnverified(detail.into())
}

fn internal(detail: impl std::fmt::Display) -> DomainError {
    DomainError::Internal(detail.to_string())
}

/// Reads and verifies `ledger_dir` with `key`, then parses every entry.
pub fn load_verified(ledger_dir: &Path, key: &PublicKey) -> Result<VerifiedLedger, DomainError> {
    let (_, bytes, note) = unseen_ledger::read_verified(ledger_dir, key)
        .map_err(|e| DomainError::LedgerUnverified(e.to_string()))?;
    let checkpoint = Checkpoint::open(&note, unseen_ledger::ORIGIN, key)
        .map_err(|e| DomainError::LedgerUnverified(format!("checkpoint: {e}")))?;
    let mut entries = Vec::new();
    let mut leaves = Vec::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        leaves.push(merkle::leaf_hash(line));
        entries.push(
            Entry::parse_line(line).map_err(|e| {
                DomainError::LedgerUnverified(format!("entry {}: {e}", entries.len()))
            })?,
        );
    }
    Ok(VerifiedLedger {
        entries,
        leaves,
        checkpoint,
    })
}

/// The `entries` table: the entry fields, then one column per body field
/// (numbers as Float64, booleans as Boolean, everything else as text; a body
/// field named like an entry field is prefixed `body_`).
pub fn entries_batch(entries: &[Entry]) -> Result<RecordBatch, DomainError> {
    const FIXED: [&str; 6] = ["index", "prev", "time", "kind", "actor", "body"];
    let mut kinds: BTreeMap<String, DataType> = BTreeMap::new();
    for e in entries {
        if let Value::Object(map) = &e.body {
            for (k, v) in map {
                let ty = match v {
                    Value::Number(_) => DataType::Float64,
                    Value::Bool(_) => DataType::Boolean,
                    Value::Null => continue,
                    _ => DataType::Utf8,
                };
                kinds
                    .entry(k.clone())
                    .and_modify(|t| {
                        if *t != ty {
                            *t = DataType::Utf8;
                        }
                    })
                    .or_insert(ty);
            }
        }
    }
    let mut fields = vec![
        Field::new("index", DataType::UInt64, false),
        Field::new("prev", DataType::Utf8, false),
        Field::new("time", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("actor", DataType::Utf8, false),
        Field::new("body", DataType::Utf8, false),
    ];
    let mut index = UInt64Builder::new();
    let mut fixed: Vec<StringBuilder> = (0..5).map(|_| StringBuilder::new()).collect();
    for e in entries {
        index.append_value(e.index);
        fixed[0].append_value(&e.prev);
        fixed[1].append_value(&e.time);
        fixed[2].append_value(&e.kind);
        fixed[3].append_value(&e.actor);
        fixed[4].append_value(e.body.to_string());
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(index.finish())];
    columns.extend(fixed.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    for (key, ty) in &kinds {
        let name = if FIXED.contains(&key.as_str()) {
            format!("body_{key}")
        } else {
            key.clone()
        };
        let values = entries
            .iter()
            .map(|e| e.body.get(key).filter(|v| !v.is_null()));
        let column: ArrayRef = match ty {
            DataType::Float64 => {
                let mut b = Float64Builder::new();
                values.for_each(|v| b.append_option(v.and_then(Value::as_f64)));
                Arc::new(b.finish())
            }
            DataType::Boolean => {
                let mut b = BooleanBuilder::new();
                values.for_each(|v| b.append_option(v.and_then(Value::as_bool)));
                Arc::new(b.finish())
            }
            _ => {
                let mut b = StringBuilder::new();
                values.for_each(|v| {
                    b.append_option(v.map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }))
                });
                Arc::new(b.finish())
            }
        };
        fields.push(Field::new(name, ty.clone(), true));
        columns.push(column);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(internal)
}

/// Runs read-only SQL over the `entries` table.
pub async fn query(entries: &[Entry], sql: &str) -> Result<Vec<RecordBatch>, DomainError> {
    let batch = entries_batch(entries)?;
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(internal)?;
    let ctx = SessionContext::new();
    ctx.register_table("entries", Arc::new(table))
        .map_err(internal)?;
    let df = ctx
        .sql_with_options(sql, unseen_policy::sql_options())
        .await
        .map_err(|e| {
            DomainError::BadQuery(format!(
                "the ledger query could not be planned: {}; the table is `entries`",
                e.strip_backtrace()
            ))
        })?;
    df.collect().await.map_err(|e| {
        DomainError::BadQuery(format!("the ledger query failed: {}", e.strip_backtrace()))
    })
}

/// One grant and what was done under it, from the ledger alone.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct GrantDisclosure {
    pub grant: String,
    /// The application whose approval issued it, if any.
    pub application: Option<String>,
    pub dataset: String,
    pub developer: String,
    pub purpose: String,
    pub issued_by: String,
    pub issued_at: String,
    pub expires_at: String,
    pub epsilon_total: f64,
    pub epsilon_spent: f64,
    pub jobs: u64,
    pub queries_admitted: u64,
    pub queries_refused: u64,
    pub outputs: u64,
    pub releases: u64,
}

/// One grant application and its steps, from the ledger alone.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ApplicationDisclosure {
    pub application: String,
    pub applicant: String,
    pub dataset: String,
    pub scenario: String,
    pub purpose: String,
    pub submitted_at: String,
    /// `submitted`, `returned`, `in_review`, `approved`, `rejected` or
    /// `withdrawn`.
    pub status: String,
    /// Epsilon asked for (in the last terms submitted).
    pub epsilon_asked: f64,
    /// The grant its approval issued, and that grant's epsilon.
    pub grant: Option<String>,
    pub epsilon_granted: Option<f64>,
    /// Who decided it (approved or rejected), and why.
    pub decided_by: Option<String>,
    pub reason: String,
    /// Every step's name and actor, in order: `submitted by dev-1`, ...
    pub steps: Vec<String>,
    /// The applicant's ratings of the grant's use (1 to 5).
    pub ratings: Vec<u64>,
}

/// The disclosure report: every grant issued and its use, and every grant
/// application and what became of it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Disclosure {
    pub grants: Vec<GrantDisclosure>,
    pub applications: Vec<ApplicationDisclosure>,
}

/// The disclosure report, from the ledger's entries.
pub fn disclosure(entries: &[Entry]) -> Disclosure {
    Disclosure {
        grants: grant_disclosure(entries),
        applications: application_disclosure(entries),
    }
}

/// Every grant application and its steps.
fn application_disclosure(entries: &[Entry]) -> Vec<ApplicationDisclosure> {
    let mut applications: BTreeMap<String, ApplicationDisclosure> = BTreeMap::new();
    for e in entries {
        let text = |k: &str| {
            e.body
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let Some(kind) = e
            .kind
            .strip_prefix("application.")
            .or(
                (e.kind == "grant.issued" && e.body.get("application").is_some())
                    .then_some("approved"),
            )
        else {
            continue;
        };
        let id = text("application");
        if kind == "submitted" {
            applications.insert(
                id.clone(),
                ApplicationDisclosure {
                    application: id.clone(),
                    applicant: e.actor.clone(),
                    submitted_at: e.time.clone(),
                    ..Default::default()
                },
            );
        }
        let Some(a) = applications.get_mut(&id) else {
            continue;
        };
        let step = match kind {
            "submitted" | "amended" => {
                let terms = &e.body["terms"];
                let field = |k: &str| terms[k].as_str().unwrap_or_default().to_string();
                a.dataset = field("dataset");
                a.scenario = field("scenario");
                a.purpose = field("purpose");
                a.epsilon_asked = terms["epsilon_total"].as_f64().unwrap_or(0.0);
                a.status = "submitted".into();
                kind
            }
            "pre_reviewed" => {
                let complete = e.body["complete"].as_bool().unwrap_or(false);
                a.status = if complete { "in_review" } else { "returned" }.into();
                if complete { "pre_reviewed" } else { "returned" }
            }
            "approved" | "rejected" => {
                a.status = kind.into();
                a.decided_by = Some(e.actor.clone());
                a.reason = text("reason");
                if kind == "approved" {
                    a.grant = Some(text("grant"));
                    a.epsilon_granted = e.body["epsilon_total"].as_f64();
                }
                kind
            }
            "withdrawn" => {
                a.status = "withdrawn".into();
                kind
            }
            "feedback" => {
                a.ratings.extend(e.body["rating"].as_u64());
                kind
            }
            _ => continue,
        };
        a.steps.push(format!("{step} by {}", e.actor));
    }
    applications.into_values().collect()
}

/// Every grant issued and its use.
fn grant_disclosure(entries: &[Entry]) -> Vec<GrantDisclosure> {
    let text = |e: &Entry, k: &str| {
        e.body
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut grants: BTreeMap<String, GrantDisclosure> = BTreeMap::new();
    let mut job_grant: BTreeMap<String, String> = BTreeMap::new();
    let mut output_grant: BTreeMap<String, String> = BTreeMap::new();
    for e in entries {
        let grant_of_job = |job: &str| job_grant.get(job).cloned();
        match e.kind.as_str() {
            "grant.issued" => {
                let g = text(e, "grant");
                grants.insert(
                    g.clone(),
                    GrantDisclosure {
                        grant: g,
                        dataset: text(e, "dataset"),
                        developer: text(e, "developer"),
                        purpose: text(e, "purpose"),
                        issued_by: e.actor.clone(),
                        application: e
                            .body
                            .get("application")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                        issued_at: e.time.clone(),
                        expires_at: text(e, "expires_at"),
                        epsilon_total: e
                            .body
                            .get("epsilon_total")
                            .and_then(Value::as_f64)
                            .unwrap_or(0.0),
                        ..Default::default()
                    },
                );
            }
            "job.started" => {
                job_grant.insert(text(e, "job"), text(e, "grant"));
                if let Some(g) = grants.get_mut(&text(e, "grant")) {
                    g.jobs += 1;
                }
            }
            "query.admitted" | "query.refused" => {
                if let Some(g) = grants.get_mut(&text(e, "grant")) {
                    if e.kind == "query.admitted" {
                        g.queries_admitted += 1;
                        g.epsilon_spent +=
                            e.body.get("epsilon").and_then(Value::as_f64).unwrap_or(0.0);
                    } else {
                        g.queries_refused += 1;
                    }
                }
            }
            "output.quarantined" => {
                if let Some(grant) = grant_of_job(&text(e, "job")) {
                    output_grant.insert(text(e, "output"), grant.clone());
                    if let Some(g) = grants.get_mut(&grant) {
                        g.outputs += 1;
                    }
                }
            }
            "release.signed" => {
                if let Some(g) = output_grant
                    .get(&text(e, "output"))
                    .and_then(|g| grants.get_mut(g))
                {
                    g.releases += 1;
                }
            }
            _ => {}
        }
    }
    grants.into_values().collect()
}

/// What `release verify` proved.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReleaseProof {
    pub release: String,
    pub ledger_index: u64,
    pub tree_size: u64,
    pub root: String,
    pub output_sha256: String,
    pub module_sha256: String,
    pub epsilon_spent: f64,
    pub reviewer: String,
    /// Everyone whose approval released it.
    pub approvers: Vec<String>,
    /// The build that signed it; `None` for a release signed before builds
    /// were recorded.
    pub build: Option<unseen_api::BuildRecord>,
}

/// The build a release document records, if it records one.
pub(crate) fn document_build(document: &Value) -> Option<unseen_api::BuildRecord> {
    serde_json::from_value(document.get("build")?.clone()).ok()
}

/// Proves a downloaded release end to end against a verified ledger: the
/// signature, the content hash, the ledger entry binding module, input,
/// policy, spend and reviewer, and its inclusion under the signed checkpoint.
pub fn verify_release(
    release_json: &str,
    ledger: &VerifiedLedger,
    key: &PublicKey,
) -> Result<ReleaseProof, DomainError> {
    let file: Value = serde_json::from_str(release_json)
        .map_err(|e| unverified(format!("release file is not JSON: {e}")))?;
    let document = file
        .get("document")
        .ok_or_else(|| unverified("release file has no `document`"))?;
    let signature = file
        .get("signature")
        .and_then(Value::as_str)
        .and_then(|s| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, s).ok())
        .ok_or_else(|| unverified("release file has no valid base64 `signature`"))?;
    let canonical = serde_json::to_vec(document).map_err(internal)?;
    if !key.verify(&crate::release_signing_message(&canonical), &signature) {
        return Err(unverified(
            "release signature does not verify with the ledger's public key: the document was altered or signed by another key",
        ));
    }
    let field = |k: &str| document.get(k).cloned().unwrap_or(Value::Null);
    let release_id = field("release").as_str().unwrap_or_default().to_string();
    // The table in the document must be exactly the output that was quarantined and reviewed.
    let table = table_from_json(&field("table"))?;
    let content_sha = sha256_hex(&udf_sdk::abi::encode_table(&table));
    if Value::String(content_sha.clone()) != field("output_sha256") {
        return Err(unverified(
            "the release's table does not hash to its `output_sha256`: the content was altered",
        ));
    }
    let document_sha = sha256_hex(&canonical);
    let (index, entry) = ledger
        .entries
        .iter()
        .enumerate()
        .find(|(_, e)| e.kind == "release.signed" && e.body.get("document_sha256") == Some(&Value::String(document_sha.clone())))
        .ok_or_else(|| unverified(format!("no `release.signed` entry in the ledger matches release `{release_id}` (document sha256 {document_sha})")))?;
    for k in [
        "release",
        "output",
        "output_sha256",
        "module_sha256",
        "sql",
        "input_snapshot",
        "policy_version",
        "epsilon_spent",
        "reviewer",
        "build",
    ] {
        if entry.body.get(k) != document.get(k) {
            return Err(unverified(format!(
                "ledger entry {index} and the release disagree on `{k}`"
            )));
        }
    }
    let size = ledger.checkpoint.size;
    let proof = merkle::inclusion_proof(index as u64, size, &ledger.leaves).map_err(internal)?;
    merkle::verify_inclusion(
        index as u64,
        size,
        &ledger.leaves[index],
        &proof,
        &ledger.checkpoint.root,
    )
    .map_err(|e| {
        unverified(format!(
            "release entry {index} is not included under the signed checkpoint: {e}"
        ))
    })?;
    Ok(ReleaseProof {
        release: release_id,
        ledger_index: index as u64,
        tree_size: size,
        root: hex::encode(ledger.checkpoint.root),
        output_sha256: content_sha,
        module_sha256: field("module_sha256")
            .as_str()
            .unwrap_or_default()
            .to_string(),
        epsilon_spent: field("epsilon_spent").as_f64().unwrap_or(0.0),
        reviewer: field("reviewer").as_str().unwrap_or_default().to_string(),
        approvers: field("approvers")
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        build: document_build(document),
    })
}

/// Inverse of [`crate::table_json`].
pub fn table_from_json(v: &Value) -> Result<udf_sdk::Table, DomainError> {
    use udf_sdk::{ColumnValues, Estimate, Table};
    let bad = || unverified("the release's `table` is malformed");
    let mut table = Table::default();
    for c in v.get("columns").and_then(Value::as_array).ok_or_else(bad)? {
        let name = c.get("name").and_then(Value::as_str).ok_or_else(bad)?;
        let values = c.get("values").and_then(Value::as_array).ok_or_else(bad)?;
        let column = match values.first() {
            None | Some(Value::String(_)) => ColumnValues::Text(
                values
                    .iter()
                    .map(|x| x.as_str().map(str::to_string).ok_or_else(bad))
                    .collect::<Result<_, _>>()?,
            ),
            Some(Value::Object(_)) => ColumnValues::Estimate(
                values
                    .iter()
                    .map(|x| {
                        let f = |k: &str| x.get(k).and_then(Value::as_f64).ok_or_else(bad);
                        Ok(Estimate {
                            value: f("value")?,
                            lower: f("lower")?,
                            upper: f("upper")?,
                        })
                    })
                    .collect::<Result<_, DomainError>>()?,
            ),
            Some(Value::Number(n)) if n.is_i64() => ColumnValues::Int(
                values
                    .iter()
                    .map(|x| x.as_i64().ok_or_else(bad))
                    .collect::<Result<_, _>>()?,
            ),
            Some(_) => ColumnValues::Float(
                values
                    .iter()
                    .map(|x| x.as_f64().ok_or_else(bad))
                    .collect::<Result<_, _>>()?,
            ),
        };
        table = table.with(name, column);
    }
    Ok(table)
}

/// Distinct entry kinds, for help texts.
pub fn kinds(entries: &[Entry]) -> BTreeSet<String> {
    entries.iter().map(|e| e.kind.clone()).collect()
}

/// Renders the disclosure report as JSON.
pub fn disclosure_json(report: &Disclosure) -> Value {
    json!({"grants": report.grants, "applications": report.applications})
}
