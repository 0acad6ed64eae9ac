//! Outside data brought in with approval (the city plan's fusion of public
//! data with social data): a developer proposes a file for one of their
//! grants; it is checked and quarantined encrypted; a data provider (an
//! admin) approves it — registering it as a dataset joined to that grant,
//! with its own budget layer — or rejects it; it is destroyed with its
//! grant. Every step is a ledger entry.
//!
//! What makes it safe to join: the file's privacy unit must be the grant's
//! (the key it joins on, e.g. `credit_code`), its key column is prohibited,
//! and it may declare no open column, so nothing of it — or of the public
//! data joined to it — leaves except through a DP aggregate, which admission
//! allows only over joins on the privacy unit. Its rows are charged to its
//! own dataset layer besides the grant's. Checks report counts and row
//! numbers, never a value.

use std::collections::HashSet;

use arrow::array::{Array, AsArray};
use unseen_api::{Import, ImportChecks, ImportDecision, ImportStatus};

use super::*;

/// Largest file that may be proposed.
pub const MAX_IMPORT_BYTES: u64 = 1 << 30;

/// What is wrong with a proposed import: one variant per mistake.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImportProblem {
    #[error(
        "the file's privacy unit is `{unit}` but grant `{grant}` is about `{grant_unit}`; an import joins its grant's data on the grant's privacy unit (set `privacy_unit = \"{grant_unit}\"` and name that key column so)"
    )]
    OtherKey {
        unit: String,
        grant: String,
        grant_unit: String,
    },
    #[error(
        "column `{0}` is declared open; an import joins public data only below a DP aggregate, so declare every column prohibited or conditional"
    )]
    OpenColumn(String),
    #[error(
        "the key column `{0}` must be declared prohibited: it identifies the people or enterprises the file is about"
    )]
    KeyNotProhibited(String),
    #[error("the file has {bytes} bytes; an import is at most {MAX_IMPORT_BYTES} bytes")]
    TooLarge { bytes: u64 },
    #[error("the file has no rows")]
    Empty,
    #[error(
        "{count} of {rows} keys in `{key}` are empty or fail the {format} check (first at data row {first}); correct or remove those rows"
    )]
    BadKeys {
        key: String,
        format: &'static str,
        count: u64,
        rows: u64,
        first: u64,
    },
    #[error(
        "{count} rows repeat a key in `{key}` (first at data row {first}); an import holds one row per key: merge or remove the repeats"
    )]
    DuplicateKeys { key: String, count: u64, first: u64 },
    #[error("approving an import sets its own budget layer: give --epsilon above 0")]
    NoBudget,
    #[error("grant `{0}` has ended (revoked or expired); propose imports only for a live grant")]
    GrantEnded(String),
}

/// The format a key column's values must have, by its name.
fn key_format(key: &str) -> (&'static str, fn(&str) -> bool) {
    match key {
        "credit_code" => (
            "GB 32100-2015 unified social credit code",
            unseen_datasets::is_valid_credit_code,
        ),
        "id_number" => (
            "GB 11643-1999 citizen identity number",
            unseen_datasets::is_valid_resident_id,
        ),
        _ => ("non-empty", |v: &str| !v.trim().is_empty()),
    }
}

/// The size of a proposed file, refused over [`MAX_IMPORT_BYTES`] before
/// any of it is read.
fn check_size(path: &Path) -> Result<u64, DomainError> {
    let bytes = std::fs::metadata(path)
        .map_err(|e| DomainError::io(path, e))?
        .len();
    if bytes > MAX_IMPORT_BYTES {
        return Err(ImportProblem::TooLarge { bytes }.into());
    }
    Ok(bytes)
}

/// Reads the key column of a plaintext Parquet file of `bytes` bytes and
/// checks every value: the format, and that no key repeats. Counts and
/// row numbers only.
fn check_keys(path: &Path, key: &str, bytes: u64) -> Result<ImportChecks, DomainError> {
    let file = std::fs::File::open(path).map_err(|e| DomainError::io(path, e))?;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| DomainError::Parquet(e.to_string()))?;
    let at = builder
        .schema()
        .index_of(key)
        .map_err(|e| DomainError::Parquet(e.to_string()))?;
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [at]);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| DomainError::Parquet(e.to_string()))?;
    let (format, valid) = key_format(key);
    let mut seen: HashSet<String> = HashSet::new();
    let (mut rows, mut bad, mut first_bad, mut repeats, mut first_repeat) = (0u64, 0, 0, 0, 0);
    for batch in reader {
        let batch = batch.map_err(|e| DomainError::Parquet(e.to_string()))?;
        let text = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)
            .map_err(|e| DomainError::Parquet(e.to_string()))?;
        let text = text.as_string::<i32>();
        for r in 0..text.len() {
            rows += 1;
            let value = if text.is_null(r) { "" } else { text.value(r) };
            if !valid(value) {
                bad += 1;
                if first_bad == 0 {
                    first_bad = rows;
                }
            } else if !seen.insert(value.to_string()) {
                repeats += 1;
                if first_repeat == 0 {
                    first_repeat = rows;
                }
            }
        }
    }
    if rows == 0 {
        return Err(ImportProblem::Empty.into());
    }
    if bad > 0 {
        return Err(ImportProblem::BadKeys {
            key: key.to_string(),
            format,
            count: bad,
            rows,
            first: first_bad,
        }
        .into());
    }
    if repeats > 0 {
        return Err(ImportProblem::DuplicateKeys {
            key: key.to_string(),
            count: repeats,
            first: first_repeat,
        }
        .into());
    }
    Ok(ImportChecks {
        rows,
        bytes,
        key: key.to_string(),
        key_format: format.to_string(),
    })
}

fn quarantined_file(id: &str) -> String {
    format!("imports/{id}.parquet")
}

fn quarantined_index(id: &str) -> String {
    format!("imports/{id}.prohibited")
}

fn not_found(id: &str) -> DomainError {
    DomainError::NotFound {
        what: "import",
        id: id.to_string(),
        list: "dataset imports",
    }
}

impl Domain {
    /// `actor` (a developer of `grant_id`) proposes the Parquet file
    /// `parquet` with `manifest_text` as dataset `name`: checked,
    /// encrypted into quarantine, recorded. Its id.
    pub fn propose_import(
        &self,
        actor: &str,
        grant_id: &str,
        name: &str,
        parquet: &Path,
        manifest_text: &str,
    ) -> Result<String, DomainError> {
        self.require(actor, Role::Developer, "propose imports")?;
        let grant = self.visible_grant(actor, grant_id)?;
        if grant.revoked_at.is_some() || grant.expires_at.as_str() <= self.now_rfc3339().as_str() {
            return Err(ImportProblem::GrantEnded(grant_id.to_string()).into());
        }
        let manifest = Manifest::parse(manifest_text).map_err(DomainError::Manifest)?;
        if manifest.name != name {
            return Err(DomainError::ManifestNameMismatch {
                manifest: manifest.name,
                name: name.to_string(),
            });
        }
        {
            let db = lock(&self.db);
            if store::datasets::exists(&db, name)? || store::imports::pending_named(&db, name)? {
                return Err(DomainError::Exists {
                    what: "dataset",
                    id: name.to_string(),
                });
            }
        }
        let primary = self.open_dataset(&grant.dataset)?;
        let unit = &manifest.privacy_unit;
        if unit != &primary.manifest.privacy_unit {
            return Err(ImportProblem::OtherKey {
                unit: unit.clone(),
                grant: grant_id.to_string(),
                grant_unit: primary.manifest.privacy_unit.clone(),
            }
            .into());
        }
        if let Some(open) = manifest
            .columns
            .iter()
            .find(|c| c.class == unseen_policy::Class::Open)
        {
            return Err(ImportProblem::OpenColumn(open.name.clone()).into());
        }
        if manifest
            .column(unit)
            .is_none_or(|c| c.class != unseen_policy::Class::Prohibited)
        {
            return Err(ImportProblem::KeyNotProhibited(unit.clone()).into());
        }
        let bytes = check_size(parquet)?;
        data::check_file(parquet, &manifest)?;
        let checks = check_keys(parquet, unit, bytes)?;
        let id = new_id("imp");
        std::fs::create_dir_all(self.dir.join("imports"))
            .map_err(|e| DomainError::io(&self.dir.join("imports"), e))?;
        let key = random_bytes::<32>();
        let file = self.dir.join(quarantined_file(&id));
        let index = self.dir.join(quarantined_index(&id));
        let ingested = data::ingest(parquet, &file, &index, &key, name, &manifest)?;
        let wrapped = self.master.wrap(name, &key);
        let by_class = |class| datasets::columns_of_class(&manifest, class);
        let body = json!({
            "import": id, "dataset": name, "grant": grant_id,
            "manifest_sha256": sha256_hex(manifest_text.as_bytes()),
            "source_sha256": ingested.source_sha256, "rows": checks.rows, "bytes": checks.bytes,
            "privacy_unit": unit, "key_format": checks.key_format,
            "prohibited": by_class(unseen_policy::Class::Prohibited),
            "conditional": by_class(unseen_policy::Class::Conditional),
        });
        let at = self.now_rfc3339();
        let proposed = self.commit_recorded(actor, "import.proposed", |tx| {
            store::imports::insert(
                tx,
                &store::imports::NewImport {
                    id: &id,
                    dataset: name,
                    grant: grant_id,
                    proposed_by: actor,
                    manifest: manifest_text,
                    wrapped_key: &wrapped,
                    source_sha256: &ingested.source_sha256,
                    checks: &checks,
                    at: &at,
                },
            )?;
            Ok(Change::Record(body, ()))
        });
        if let Err(e) = proposed {
            // Nothing recorded: nothing kept.
            for path in [&file, &self.dir.join(quarantined_index(&id))] {
                let _ = remove_if_there(path);
            }
            return Err(e);
        }
        Ok(id)
    }

    /// A data provider decides a proposed import: approval registers it as
    /// a dataset joined to its grant with its own epsilon budget; rejection
    /// deletes the quarantined file.
    pub async fn decide_import(
        &self,
        actor: &str,
        id: &str,
        decision: &ImportDecision,
    ) -> Result<(), DomainError> {
        self.require(actor, Role::Admin, "decide imports")?;
        if decision.reason.trim().is_empty() {
            return Err(DomainError::ReasonRequired {
                action: "deciding an import",
                examples: ": the proposer is told why",
            });
        }
        let import = self.import(actor, id)?;
        if import.status != ImportStatus::Proposed {
            return Err(DomainError::ImportState {
                import: id.to_string(),
                status: import.status,
            });
        }
        let grant = self.grant(&import.grant)?;
        if decision.approve
            && (grant.revoked_at.is_some()
                || grant.expires_at.as_str() <= self.now_rfc3339().as_str())
        {
            return Err(ImportProblem::GrantEnded(import.grant.clone()).into());
        }
        // Another decision that won the race: its status.
        let lost = |tx: &rusqlite::Transaction<'_>| -> DomainError {
            match store::imports::status(tx, id) {
                Ok(Some(status)) => DomainError::ImportState {
                    import: id.to_string(),
                    status,
                },
                Ok(None) => not_found(id),
                Err(e) => e.into(),
            }
        };
        let at = self.now_rfc3339();
        let quarantined = self.dir.join(quarantined_file(id));
        let index = self.dir.join(quarantined_index(id));
        if !decision.approve {
            self.commit_recorded(actor, "import.rejected", |tx| {
                if !store::imports::decide(
                    tx,
                    id,
                    ImportStatus::Rejected,
                    actor,
                    &at,
                    &decision.reason,
                    None,
                )? {
                    return Err(lost(tx));
                }
                Ok(Change::Record(
                    json!({"import": id, "dataset": import.dataset, "reason": decision.reason}),
                    (),
                ))
            })?;
            // Deleted once the rejection is recorded; a file left by a
            // failure here is encrypted, its key in the store only.
            for path in [&quarantined, &index] {
                if let Err(e) = remove_if_there(path) {
                    tracing::error!(error = %e, import = id, "could not delete a rejected import's file");
                }
            }
            return Ok(());
        }
        let epsilon = decision
            .epsilon
            .filter(|e| e.is_finite() && *e > 0.0)
            .ok_or(ImportProblem::NoBudget)?;
        let (wrapped, manifest_text) =
            store::imports::key_and_manifest(&lock(&self.db), id)?.ok_or_else(|| not_found(id))?;
        let name = import.dataset.clone();
        let manifest = Manifest::parse(&manifest_text).map_err(DomainError::Manifest)?;
        let key = self.master.unwrap(&name, &wrapped)?;
        let open = OpenDataset::without_facts(
            &name,
            quarantined.clone(),
            key,
            &manifest,
            import.checks.rows,
        );
        let unseen_policy::TableFacts {
            one_row_per_unit: unit_unique,
            within_bounds,
            ..
        } = data::registration_facts(&open, None).await?;
        let within_json = serde_json::to_string(&within_bounds).unwrap_or_else(|_| "[]".into());
        let file = format!("data/{name}.parquet");
        let columns: Vec<String> = manifest.columns.iter().map(|c| c.name.clone()).collect();
        let body = json!({
            "dataset": name, "import": id, "grant": import.grant, "proposed_by": import.proposed_by,
            "reason": decision.reason, "epsilon_total": epsilon,
            "manifest_version": manifest.version,
            "manifest_sha256": sha256_hex(manifest_text.as_bytes()),
            "source_sha256": import.source_sha256, "rows": import.checks.rows,
            "privacy_unit": manifest.privacy_unit, "one_row_per_unit": unit_unique,
            "within_bounds": within_bounds,
            "encryption": "parquet modular encryption, AES-256-GCM, per-dataset key wrapped by the master key",
        });
        let moves = [
            (quarantined.clone(), self.dir.join(&file)),
            (
                index.clone(),
                self.dir.join(format!("data/{name}.prohibited")),
            ),
        ];
        let registered = self.commit_recorded(actor, "dataset.registered", |tx| {
            if !store::imports::decide(
                tx,
                id,
                ImportStatus::Approved,
                actor,
                &at,
                &decision.reason,
                Some(epsilon),
            )? {
                return Err(lost(tx));
            }
            store::datasets::insert(
                tx,
                &store::datasets::NewDataset {
                    name: &name,
                    manifest: &manifest_text,
                    manifest_version: manifest.version,
                    file: &file,
                    wrapped_key: &wrapped,
                    rows: import.checks.rows,
                    unit_unique,
                    source_sha256: &import.source_sha256,
                    registered_by: actor,
                    registered_at: &at,
                    within_bounds: &within_json,
                },
            )?;
            store::budget::set_total(tx, BudgetLayer::Dataset, &name, epsilon)?;
            store::grants::join_dataset(tx, &import.grant, &name, &columns)?;
            // Moved last: a failure before rolls everything back with the
            // file still in quarantine, and one after is undone below.
            for (from, to) in &moves {
                std::fs::rename(from, to).map_err(|e| DomainError::io(to, e))?;
            }
            Ok(Change::Record(body, ()))
        });
        let still_proposed = || {
            matches!(
                store::imports::status(&lock(&self.db), id),
                Ok(Some(ImportStatus::Proposed))
            )
        };
        // Not registered (a failure after the store's commit, while the
        // ledger appends, leaves it registered and repaired at the next
        // open): the files go back to quarantine, to be decided again.
        if registered.is_err() && still_proposed() {
            for (from, to) in &moves {
                if to.exists() && !from.exists() {
                    let _ = std::fs::rename(to, from);
                }
            }
        }
        registered.map(|_| ())
    }

    /// Imports `actor` may read: an admin's or auditor's all, a developer's
    /// own proposals.
    pub fn imports(&self, actor: &str) -> Result<Vec<Import>, DomainError> {
        let role = self.require_any(
            actor,
            &[Role::Admin, Role::Auditor, Role::Developer],
            "read imports",
        )?;
        let mine = (role == Role::Developer).then_some(actor);
        Ok(store::imports::list(&lock(&self.db), mine)?)
    }

    /// One import, if `actor` may read it.
    pub fn import(&self, actor: &str, id: &str) -> Result<Import, DomainError> {
        let role = self.require_any(
            actor,
            &[Role::Admin, Role::Auditor, Role::Developer],
            "read imports",
        )?;
        store::imports::by_id(&lock(&self.db), id)?
            .filter(|i| role != Role::Developer || i.proposed_by == actor)
            .ok_or_else(|| not_found(id))
    }

    /// Destroys every imported dataset whose grant is revoked or has
    /// expired (its data key is destroyed, as `dataset destroy` does), and
    /// rejects the proposals still waiting for such a grant; the datasets
    /// destroyed.
    pub fn destroy_ended_imports(&self, actor: &str) -> Result<Vec<String>, DomainError> {
        let now = self.now_rfc3339();
        let waiting =
            store::imports::of_ended_grants(&lock(&self.db), ImportStatus::Proposed, &now)?;
        for (id, dataset, grant) in waiting {
            let reason = format!("grant `{grant}` ended before a decision");
            self.commit_recorded(actor, "import.rejected", |tx| {
                if !store::imports::decide(
                    tx,
                    &id,
                    ImportStatus::Rejected,
                    actor,
                    &now,
                    &reason,
                    None,
                )? {
                    return Ok(Change::Abandon(()));
                }
                Ok(Change::Record(
                    json!({"import": id, "dataset": dataset, "reason": reason}),
                    (),
                ))
            })?;
            for path in [quarantined_file(&id), quarantined_index(&id)] {
                if let Err(e) = remove_if_there(&self.dir.join(path)) {
                    tracing::error!(error = %e, import = id, "could not delete a rejected import's file");
                }
            }
        }
        let ended = store::imports::of_ended_grants(&lock(&self.db), ImportStatus::Approved, &now)?;
        let mut destroyed = Vec::new();
        for (_, dataset, grant) in ended {
            self.destroy_dataset_as(
                actor,
                &dataset,
                &format!("imported for grant `{grant}`, which has ended"),
                false,
            )?;
            destroyed.push(dataset);
        }
        Ok(destroyed)
    }
}

fn remove_if_there(path: &Path) -> Result<(), DomainError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DomainError::io(path, e)),
    }
}
