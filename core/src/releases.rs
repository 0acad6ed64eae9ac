//! Releases: the release cache and signed release documents.

use super::*;

impl Domain {
    /// A cached release of the same measurement under the same grant.
    pub(crate) fn cached_release(
        &self,
        grant_id: &str,
        fingerprint: &str,
    ) -> Result<Option<CachedRelease>, DomainError> {
        let bytes = store::releases::cached(&lock(&self.db), grant_id, fingerprint)?;
        let damaged = |e: &dyn std::fmt::Display| DomainError::Damaged {
            what: "a cached release".into(),
            detail: e.to_string(),
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
            .map_err(|e| DomainError::Internal(format!("cannot encode a measurement: {e}")))?;
        store::releases::cache(
            &lock(&self.db),
            grant_id,
            fingerprint,
            &bytes,
            release.result.epsilon_spent,
            &self.now_rfc3339(),
        )?;
        Ok(())
    }

    /// Signs the release of an approved output, writes its file and records it.
    pub(crate) fn sign_release(&self, r: SignRequest<'_>) -> Result<ReleaseRecord, DomainError> {
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
            let (source_sha, manifest_version) =
                store::releases::dataset_snapshot(&lock(&self.db), name)?;
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
        let job_epsilon = store::releases::job_epsilon(&lock(&self.db), job)?;
        let (_, _, table) = self.output(output_id)?;
        let release_id = new_id("rel");
        // Which code handled the data: signed in the document and recorded
        // in the entry, so a bundle proves it offline.
        let build = crate::attest::running_build()?;
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
            "build": build,
            "table": table_json(&table),
        });
        let canonical =
            serde_json::to_vec(&document).map_err(|e| DomainError::Internal(e.to_string()))?;
        let signature = self.ledger.sign(&release_signing_message(&canonical))?;
        let signature_b64 =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, signature);
        let release_file = json!({"document": document, "signature": signature_b64});
        let path = self.dir.join("releases").join(format!("{release_id}.json"));
        let pretty = serde_json::to_vec_pretty(&release_file)
            .map_err(|e| DomainError::Internal(e.to_string()))?;
        util::write_private(&path, &pretty).map_err(|e| DomainError::io(&path, e))?;
        let body = json!({
            "release": release_id, "output": output_id, "output_sha256": output_sha,
            "document_sha256": sha256_hex(&canonical), "module_sha256": module_sha, "sql": job_sql,
            "input_snapshot": snapshot,
            "policy_version": POLICY_VERSION, "epsilon_spent": job_epsilon, "reviewer": reviewer,
            "build": build,
        });
        self.commit_recorded(reviewer, "release.signed", |tx| {
            store::releases::insert(
                tx,
                &store::releases::NewRelease {
                    id: &release_id,
                    output: output_id,
                    document: &String::from_utf8_lossy(&canonical),
                    signature: &signature_b64,
                    at,
                },
            )?;
            Ok(Change::Record(body, ()))
        })?;
        Ok(ReleaseRecord {
            id: release_id,
            path,
            document,
        })
    }
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
pub(crate) fn table_diff(
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
