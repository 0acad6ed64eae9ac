//! Datasets: registration (validated, encrypted, recorded) and opening them for a job.

use super::*;

/// The names of a manifest's columns of `class`.
pub(crate) fn columns_of_class(manifest: &Manifest, class: unseen_policy::Class) -> Vec<String> {
    manifest
        .columns
        .iter()
        .filter(|c| c.class == class)
        .map(|c| c.name.clone())
        .collect()
}

/// The prohibited text columns, whose values registration indexes (keyed
/// hashes) so that no output can carry one.
pub(crate) fn prohibited_text_columns(manifest: &Manifest) -> Vec<String> {
    manifest
        .columns
        .iter()
        .filter(|c| {
            c.class == unseen_policy::Class::Prohibited
                && c.ty == unseen_policy::manifest::ColumnType::Utf8
        })
        .map(|c| c.name.clone())
        .collect()
}

impl Domain {
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
            return Err(DomainError::ManifestNameMismatch {
                manifest: manifest.name,
                name: name.to_string(),
            });
        }
        if store::datasets::exists(&lock(&self.db), name)? {
            return Err(DomainError::Exists {
                what: "dataset",
                id: name.to_string(),
            });
        }
        data::check_file(parquet, &manifest)?;
        let key = random_bytes::<32>();
        let file = format!("data/{name}.parquet");
        let ingested = data::ingest(
            parquet,
            &self.dir.join(&file),
            &self.dir.join(format!("data/{name}.prohibited")),
            &key,
            name,
            &manifest,
        )?;
        let open =
            OpenDataset::without_facts(name, self.dir.join(&file), key, &manifest, ingested.rows);
        let unseen_policy::TableFacts {
            one_row_per_unit: unit_unique,
            within_bounds,
            ..
        } = data::registration_facts(&open, Some(ingested.one_row_per_unit)).await?;
        let within_json = serde_json::to_string(&within_bounds).unwrap_or_else(|_| "[]".into());
        let wrapped = self.master.wrap(name, &key);
        let by_class = |class| columns_of_class(&manifest, class);
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
            store::datasets::insert(
                tx,
                &store::datasets::NewDataset {
                    name,
                    manifest: manifest_text,
                    manifest_version: manifest.version,
                    file: &file,
                    wrapped_key: &wrapped,
                    rows: ingested.rows,
                    unit_unique,
                    source_sha256: &ingested.source_sha256,
                    registered_by: actor,
                    registered_at: &self.now_rfc3339(),
                    within_bounds: &within_json,
                },
            )?;
            Ok(Change::Record(body, ()))
        })?;
        Ok(ingested)
    }

    /// A registered dataset's manifest: its columns with their classes,
    /// types, bounds and masks (any signed-in user: it describes the data,
    /// never holds any of it, and developers need it to write queries).
    pub fn dataset_manifest(&self, actor: &str, name: &str) -> Result<Manifest, DomainError> {
        self.role_of(actor)?;
        let stored = store::datasets::stored(&lock(&self.db), name)?.ok_or_else(|| {
            DomainError::NotFound {
                what: "dataset",
                id: name.to_string(),
                list: "dataset list",
            }
        })?;
        Manifest::parse(&stored.manifest).map_err(DomainError::Manifest)
    }

    /// Opens a registered dataset for the engine (unwraps its key).
    pub(crate) fn open_dataset(&self, name: &str) -> Result<OpenDataset, DomainError> {
        let row = store::datasets::stored(&lock(&self.db), name)?;
        let Some(store::datasets::Stored {
            manifest,
            file,
            wrapped_key: wrapped,
            unit_unique,
            rows,
            within_bounds,
        }) = row
        else {
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
}
