//! Offline release bundles: what `release download` hands out, and what
//! `release verify BUNDLE --public-key ledger.pub` proves on a machine that
//! has nothing else.
//!
//! A bundle holds the signed release document, the ledger entries that
//! recorded it (the `release.signed` entry and each approver's
//! `review.approved` entry) as their exact canonical lines, an RFC 9162
//! inclusion proof of each against one C2SP signed checkpoint, and the
//! identity of the key that signed both (hex and C2SP verifier key).
//! Verification walks the links in order and names the first that breaks.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use unseen_ledger::{Checkpoint, Entry, InclusionProof, ORIGIN, PublicKey, merkle};

use crate::audit::{ReleaseProof, table_from_json};
use crate::util::sha256_hex;
use crate::{Domain, DomainError, lock, store};

/// The format name every bundle carries.
pub const BUNDLE_FORMAT: &str = "unseen-release-bundle/1";

/// A release with everything needed to verify it offline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// The release document, as signed.
    pub document: Value,
    /// Base64 Ed25519 signature of the document by the ledger key.
    pub signature: String,
    /// The ledger's evidence.
    pub ledger: LedgerEvidence,
}

/// The ledger's side of a bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerEvidence {
    /// The signing key as 64 hex characters (the content of `ledger.pub`).
    pub public_key: String,
    /// The same key as a C2SP verifier key (`name+id+base64`).
    pub verifier_key: String,
    /// The signed checkpoint (C2SP signed note) the proofs lead to.
    pub checkpoint: String,
    /// The entries that recorded the release, each with its proof.
    pub entries: Vec<ProvenEntry>,
}

/// One ledger entry and its inclusion proof.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvenEntry {
    /// The entry's canonical line, exactly as hashed into the tree.
    pub line: String,
    pub proof: InclusionProof,
}

fn broken(link: &str, detail: impl std::fmt::Display) -> DomainError {
    DomainError::BundleBroken {
        link: link.to_string(),
        detail: detail.to_string(),
    }
}

impl Domain {
    /// The bundle of release `release_id` against the current signed
    /// checkpoint. Finds its entries by scanning the ledger (a release is
    /// downloaded rarely; the scan reads one file sequentially).
    pub(crate) fn release_bundle(&self, release_id: &str) -> Result<String, DomainError> {
        let (document, signature, output_id) =
            store::releases::signed(&lock(&self.db), release_id)?;
        let document: Value =
            serde_json::from_str(&document).map_err(|e| DomainError::Damaged {
                what: format!("stored release `{release_id}`"),
                detail: e.to_string(),
            })?;
        let evidence = self
            .ledger
            .with(|l| -> Result<LedgerEvidence, DomainError> {
                let key = l.public_key();
                let note = l.checkpoint_text().to_string();
                let cp =
                    Checkpoint::open(&note, ORIGIN, &key).map_err(|e| DomainError::Damaged {
                        what: "the ledger's checkpoint".into(),
                        detail: e.to_string(),
                    })?;
                let is_ours = |e: &Entry| {
                    let field = |k: &str| e.body.get(k).and_then(Value::as_str);
                    (e.kind == "release.signed" && field("release") == Some(release_id))
                        || (e.kind == "review.approved" && field("output") == Some(&output_id))
                };
                let mut entries = Vec::new();
                for entry in l.entries()?.iter().filter(|e| e.index < cp.size) {
                    if is_ours(entry) {
                        let proof = InclusionProof::build(l.tree(), entry.index, cp.size)
                            .map_err(|e| DomainError::Internal(e.to_string()))?;
                        let line = String::from_utf8(entry.canonical_bytes())
                            .map_err(|e| DomainError::Internal(e.to_string()))?;
                        entries.push(ProvenEntry { line, proof });
                    }
                }
                Ok(LedgerEvidence {
                    public_key: key.to_hex(),
                    verifier_key: unseen_ledger::checkpoint::verifier_key(ORIGIN, &key)
                        .map_err(|e| DomainError::Internal(e.to_string()))?,
                    checkpoint: note,
                    entries,
                })
            })??;
        let bundle = Bundle {
            format: BUNDLE_FORMAT.to_string(),
            document,
            signature,
            ledger: evidence,
        };
        serde_json::to_string_pretty(&bundle).map_err(|e| DomainError::Internal(e.to_string()))
    }
}

/// True when `text` is a bundle (rather than a bare release file).
pub fn is_bundle(text: &str) -> bool {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("format").and_then(Value::as_str).map(str::to_owned))
        .is_some_and(|f| f == BUNDLE_FORMAT)
}

/// Proves a bundle with only the ledger's public key: key identity, the
/// signed checkpoint, the document's signature, the table against its hash,
/// each entry's inclusion under the checkpoint, then that the ledger
/// recorded exactly the module, inputs, policy, spend, reviewers and output
/// the document states. The error names the first link that breaks.
pub fn verify_bundle(text: &str, key: &PublicKey) -> Result<ReleaseProof, DomainError> {
    let bundle: Bundle =
        serde_json::from_str(text).map_err(|e| broken("the bundle's format", e))?;
    if bundle.format != BUNDLE_FORMAT {
        return Err(broken(
            "the bundle's format",
            format!("`{}` is not {BUNDLE_FORMAT}", bundle.format),
        ));
    }
    let evidence = &bundle.ledger;
    if evidence.public_key != key.to_hex() {
        return Err(broken(
            "the key identity",
            format!(
                "the bundle names ledger key {}, but the key given is {}",
                evidence.public_key,
                key.to_hex()
            ),
        ));
    }
    let expected_verifier = unseen_ledger::checkpoint::verifier_key(ORIGIN, key)
        .map_err(|e| broken("the key identity", e))?;
    if evidence.verifier_key != expected_verifier {
        return Err(broken(
            "the key identity",
            format!(
                "the bundle's verifier key {} is not {expected_verifier}",
                evidence.verifier_key
            ),
        ));
    }
    let cp = Checkpoint::open(&evidence.checkpoint, ORIGIN, key)
        .map_err(|e| broken("the signed checkpoint", e))?;
    let canonical =
        serde_json::to_vec(&bundle.document).map_err(|e| broken("the release document", e))?;
    let signature = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        &bundle.signature,
    )
    .map_err(|e| broken("the release signature", e))?;
    if !key.verify(&crate::release_signing_message(&canonical), &signature) {
        return Err(broken(
            "the release signature",
            "it does not verify with the ledger's public key: the document was altered or signed by another key",
        ));
    }
    let document = &bundle.document;
    let field = |k: &str| document.get(k).cloned().unwrap_or(Value::Null);
    let table = table_from_json(&field("table")).map_err(|e| broken("the output bytes", e))?;
    let content_sha = sha256_hex(&udf_sdk::abi::encode_table(&table));
    if Value::String(content_sha.clone()) != field("output_sha256") {
        return Err(broken(
            "the output bytes",
            "the table does not hash to the document's `output_sha256`",
        ));
    }
    let entries = proven_entries(evidence, &cp)?;
    let release_id = field("release").as_str().unwrap_or_default().to_string();
    let (signed_index, signed) = entries
        .iter()
        .find(|e| {
            e.kind == "release.signed"
                && e.body.get("release") == Some(&Value::String(release_id.clone()))
        })
        .map(|e| (e.index, e))
        .ok_or_else(|| {
            broken(
                "the release entry",
                format!("the bundle has no `release.signed` entry for `{release_id}`"),
            )
        })?;
    for (k, what) in [
        ("output", "output"),
        ("output_sha256", "output bytes"),
        ("module_sha256", "module hash"),
        ("sql", "query"),
        ("input_snapshot", "inputs"),
        ("policy_version", "policy"),
        ("epsilon_spent", "spend"),
        ("reviewer", "reviewer"),
        ("build", "build"),
    ] {
        if signed.body.get(k) != document.get(k) {
            return Err(broken(
                &format!("the {what}"),
                format!(
                    "ledger entry {signed_index} records `{k}` = {}, the release says {}",
                    signed.body.get(k).unwrap_or(&Value::Null),
                    document.get(k).unwrap_or(&Value::Null)
                ),
            ));
        }
    }
    if signed.actor != field("reviewer").as_str().unwrap_or_default() {
        return Err(broken(
            "the reviewers",
            format!(
                "ledger entry {signed_index} was written by `{}`, not the release's reviewer",
                signed.actor
            ),
        ));
    }
    if signed.body.get("document_sha256") != Some(&Value::String(sha256_hex(&canonical))) {
        return Err(broken(
            "the release entry",
            format!("ledger entry {signed_index} records another document hash"),
        ));
    }
    let approvers = check_approvers(document, &entries)?;
    Ok(ReleaseProof {
        release: release_id,
        ledger_index: signed_index,
        tree_size: cp.size,
        root: hex::encode(cp.root),
        output_sha256: content_sha,
        module_sha256: field("module_sha256")
            .as_str()
            .unwrap_or_default()
            .to_string(),
        epsilon_spent: field("epsilon_spent").as_f64().unwrap_or(0.0),
        reviewer: field("reviewer").as_str().unwrap_or_default().to_string(),
        approvers,
        build: crate::audit::document_build(document),
    })
}

/// Parses each entry of the bundle and checks its inclusion under the
/// signed checkpoint.
fn proven_entries(evidence: &LedgerEvidence, cp: &Checkpoint) -> Result<Vec<Entry>, DomainError> {
    let mut entries = Vec::new();
    for (n, proven) in evidence.entries.iter().enumerate() {
        let link = format!("ledger entry {n} of the bundle");
        let entry = Entry::parse_line(proven.line.as_bytes()).map_err(|e| broken(&link, e))?;
        let proof = &proven.proof;
        if proof.index != entry.index {
            return Err(broken(
                &link,
                format!(
                    "its proof is for index {}, the entry is {}",
                    proof.index, entry.index
                ),
            ));
        }
        if merkle::leaf_hash(proven.line.as_bytes()) != proof.leaf_hash {
            return Err(broken(
                &link,
                format!(
                    "entry {} does not hash to the leaf its proof is for: the entry was altered",
                    entry.index
                ),
            ));
        }
        if proof.size != cp.size || proof.root != cp.root {
            return Err(broken(
                &link,
                format!(
                    "the proof of entry {} leads to a tree of {} entries, not to the signed checkpoint of {}",
                    entry.index, proof.size, cp.size
                ),
            ));
        }
        proof.check().map_err(|e| {
            broken(
                &link,
                format!(
                    "entry {} is not included under the signed checkpoint: {e}",
                    entry.index
                ),
            )
        })?;
        entries.push(entry);
    }
    Ok(entries)
}

/// Each approver the document names approved this output in the ledger,
/// and the bundle shows no approval the document leaves out.
fn check_approvers(document: &Value, entries: &[Entry]) -> Result<Vec<String>, DomainError> {
    let output = document.get("output").cloned().unwrap_or(Value::Null);
    let approvers: Vec<String> = document
        .get("approvers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let recorded: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.kind == "review.approved" && e.body.get("output") == Some(&output))
        .collect();
    for approver in &approvers {
        if !recorded.iter().any(|e| &e.actor == approver) {
            return Err(broken(
                "the reviewers",
                format!("no `review.approved` entry by `{approver}` for output {output}"),
            ));
        }
    }
    if approvers.is_empty() || recorded.len() != approvers.len() {
        return Err(broken(
            "the reviewers",
            format!(
                "the release names {} approvers, the ledger entries record {}",
                approvers.len(),
                recorded.len()
            ),
        ));
    }
    Ok(approvers)
}
