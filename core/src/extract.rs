//! Masked extracts for grants that allow them: sampled rows, every column
//! through its manifest mask, nearly unique identifying columns refused,
//! k-anonymity over every identifying column and l-diversity of every
//! sensitive one, then quarantine and review like any other output, with
//! the class-size distribution for the reviewer.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use serde_json::json;
use unseen_policy::manifest::ColumnSpec;
use unseen_policy::mask::{self, ExtractPlan};

use crate::jobs::Ending;
use crate::trace::{Candidate, Counts, Fingerprint, Sources, TextTable, Verdict};
use crate::{Domain, DomainError, JobBody, JobOutcome, data};

/// Most rows an extract may sample.
pub const MAX_EXTRACT_ROWS: usize = 100_000;

impl Domain {
    /// Runs a masked extract of `columns` under a grant, sampling each row
    /// with probability `fraction`. The masked, k-anonymous and l-diverse
    /// table goes to quarantine, with what the disclosure control did for
    /// the reviewer. Returns the outcome and how the extract is protected
    /// (the plan: decided from the manifest alone, so the developer may
    /// see it); what was suppressed is for the reviewer and the ledger.
    pub fn run_extract(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        submitter: &str,
        grant_id: &str,
        columns: &[String],
        fraction: f64,
    ) -> Result<(JobOutcome, Option<ExtractPlan>), DomainError> {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(DomainError::OutOfRange {
                what: "the sample fraction",
                value: fraction.to_string(),
                expected: "give a number in (0, 1]".into(),
            });
        }
        let description = format!("EXTRACT {} SAMPLE {fraction}", columns.join(", "));
        let (job_host, log) = match self.begin_job(
            runtime,
            submitter,
            grant_id,
            JobBody::Extract(&description),
            &Default::default(),
        )? {
            Ok(started) => started,
            Err(ended) => return Ok((ended, None)),
        };
        let job_id = job_host.job_id.clone();
        // Extracts read the grant's primary dataset only.
        let dataset = job_host.datasets[0].clone();
        let manifest = &dataset.manifest;
        let refuse = |refusal: unseen_policy::Refusal,
                      counts: serde_json::Value|
         -> Result<JobOutcome, DomainError> {
            self.record(
                submitter,
                "query.refused",
                json!({
                    "job": job_id, "grant": grant_id, "sql": description,
                    "rule": refusal.rule, "column": refusal.column, "reason": refusal.message,
                    "counts": counts,
                }),
            )?;
            self.end_job(
                job_id.clone(),
                submitter,
                &log,
                Ending::refused(refusal.message),
            )
        };
        let specs = match mask::plan_extract(manifest, columns) {
            Ok(s) => s,
            Err(refusal) => return Ok((refuse(refusal, json!(null))?, None)),
        };
        let plan = ExtractPlan::new(manifest, &specs);
        // How long scanning and masking take depends on the data.
        crate::lock(&log).read_protected = true;
        let pseudonyms = data::ValueHasher::pseudonyms(&dataset.key);
        let pseudonym = |v: &str| pseudonyms.pseudonym(v);
        let fingerprint = Fingerprint::new(&crate::random_bytes::<32>());
        let identifying: Vec<usize> = specs
            .iter()
            .enumerate()
            .filter(|(_, s)| plan.identifying.contains(&s.name))
            .map(|(i, _)| i)
            .collect();
        let selection = Selection::Keyed {
            fingerprint: &fingerprint,
            fraction,
            identifying: &identifying,
        };
        let scan = runtime.block_on(scan(&dataset, &specs, selection, &pseudonym))?;
        if let Err(refusal) = mask::refuse_nearly_unique(manifest, &scan.uniqueness) {
            // Counts and column names for the ledger; the developer reads
            // only which columns and why.
            return Ok((refuse(refusal, json!(scan.uniqueness))?, Some(plan)));
        }
        let (table, report) = mask::mask_and_anonymise(&specs, &plan, scan.sample, &pseudonym);
        self.record(
            submitter,
            "extract.masked",
            json!({
                "job": job_id, "grant": grant_id, "columns": columns, "sample": fraction,
                "k": report.plan.k, "l": report.plan.l,
                "identifying": report.plan.identifying, "sensitive": report.plan.sensitive,
                "non_identifying": report.plan.non_identifying,
                "rows_sampled": report.rows_sampled, "rows_released": report.rows_released,
                "rows_suppressed": report.rows_suppressed,
                "classes_sampled": report.classes_sampled, "classes_released": report.classes_released,
                "classes_under_k": report.classes_under_k, "rows_under_k": report.rows_under_k,
                "classes_under_l": report.classes_under_l, "rows_under_l": report.rows_under_l,
                "column_uniqueness": scan.uniqueness,
                "fingerprint_sha256": fingerprint.commitment(), "keep_shares": crate::trace::KEEP_SHARES,
            }),
        )?;
        if let Some(reason) = job_host.cancel.reason() {
            let outcome = self.end_job(job_id, submitter, &log, Ending::cancelled(&reason))?;
            return Ok((outcome, Some(plan)));
        }
        let extra_findings = unseen_policy::checks::check_classes(
            &table,
            &plan.identifying,
            &plan.sensitive,
            plan.k,
            plan.l,
        );
        let quarantined = self.quarantine_as(
            submitter,
            crate::Quarantine {
                job_id: &job_id,
                grant_id,
                datasets: &job_host.datasets,
                name: "extract",
                kind: "extract",
                extra_findings,
                disclosure: Some(json!({
                    "report": report, "column_uniqueness": scan.uniqueness,
                    "nearly_unique_share": mask::NEARLY_UNIQUE_SHARE,
                })),
            },
            &table,
        );
        let ending = match quarantined {
            Ok(id) => {
                crate::lock(&log).outputs.push(id);
                Ending::finished()
            }
            Err(e) => Ending {
                error: Some(format!("output `extract` could not be quarantined: {e}")),
                ..Ending::failed_in_service()
            },
        };
        let outcome = self.end_job(job_id, submitter, &log, ending)?;
        Ok((outcome, Some(plan)))
    }
}

/// Which people a scan keeps.
enum Selection<'a> {
    /// An extract's: chosen by its fingerprint among `fraction` of people
    /// (`identifying` are the positions of the class's columns).
    Keyed {
        fingerprint: &'a Fingerprint,
        fraction: f64,
        identifying: &'a [usize],
    },
    /// Everyone, up to no limit: the population a leaked file is tested
    /// against.
    Everyone,
}

impl Domain {
    /// Names the extract a leaked file came from — its grant and user, with
    /// a confidence — or says it is unknown (see [`crate::trace`]). Admins
    /// and auditors trace; the verdict is recorded (the file's hash, its
    /// size and columns, the source), never a value of it.
    pub fn trace(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        actor: &str,
        leaked: &TextTable,
        file_sha256: &str,
    ) -> Result<Verdict, DomainError> {
        // The data provider's: a verdict still depends on the population's
        // exact counts (one bit per file), which auditors may not learn.
        self.require(actor, crate::Role::Admin, "trace leaked files")?;
        let outputs = crate::store::review::extract_outputs(&crate::lock(&self.db))?;
        let mut candidates = Vec::new();
        // Only what left can leak: released extracts.
        for o in outputs.into_iter().filter(|o| o.status == "approved") {
            let Ok(table) = udf_sdk::abi::decode_table(&o.data) else {
                continue;
            };
            let text = TextTable {
                columns: table.columns.iter().map(|c| c.name.clone()).collect(),
                rows: (0..table.rows())
                    .map(|r| {
                        table
                            .columns
                            .iter()
                            .map(|c| cell_text(&c.values, r))
                            .collect()
                    })
                    .collect(),
            };
            let candidate = Candidate {
                output: o.output,
                job: o.job,
                grant: o.grant,
                user: o.user,
                downloaded_by: o.downloaded_by,
                dataset: o.dataset,
                status: o.status,
            };
            candidates.push((candidate, text));
        }
        // Columns no extract has (an index a spreadsheet added) are left out.
        let known: Vec<String> = leaked
            .columns
            .iter()
            .filter(|c| candidates.iter().any(|(_, t)| t.columns.contains(c)))
            .cloned()
            .collect();
        let leaked = &leaked.project(&known);
        let mut populations: std::collections::HashMap<String, Option<Counts>> = Default::default();
        for (candidate, table) in &candidates {
            if populations.contains_key(&candidate.dataset) || !table.has_columns(&leaked.columns) {
                continue;
            }
            let counts = self.population(runtime, &candidate.dataset, &leaked.columns)?;
            populations.insert(candidate.dataset.clone(), counts);
        }
        let sources = Sources::new(&leaked.columns, candidates, &|dataset| {
            populations.get(dataset).cloned().flatten()
        });
        let verdict = sources.attribute(leaked);
        let source = verdict.source.as_ref();
        self.record(
            actor,
            "extract.traced",
            json!({
                "file_sha256": file_sha256, "rows": verdict.rows, "columns": verdict.columns,
                "output": source.map(|s| &s.output), "grant": source.map(|s| &s.grant),
                "user": source.map(|s| &s.user), "confidence": verdict.confidence,
                "threshold": verdict.threshold,
            }),
        )?;
        Ok(verdict)
    }

    /// Every person's row of `dataset` masked as an extract of `columns`,
    /// counted; `None` when such an extract could not be made.
    fn population(
        &self,
        runtime: &tokio::runtime::Handle,
        dataset: &str,
        columns: &[String],
    ) -> Result<Option<Counts>, DomainError> {
        // A destroyed dataset has no population to compare with.
        let Ok(opened) = self.open_dataset(dataset) else {
            return Ok(None);
        };
        let Ok(specs) = mask::plan_extract(&opened.manifest, columns) else {
            return Ok(None);
        };
        let pseudonyms = data::ValueHasher::pseudonyms(&opened.key);
        let pseudonym = |v: &str| pseudonyms.pseudonym(v);
        let scanned = runtime.block_on(scan(&opened, &specs, Selection::Everyone, &pseudonym))?;
        let masked = TextTable {
            columns: columns.to_vec(),
            rows: scanned
                .sample
                .iter()
                .map(|(_, row)| mask::mask_row(&specs, row, &pseudonym))
                .collect(),
        };
        Ok(masked.counts(columns))
    }
}

/// A cell as text, as a file of the table would show it.
fn cell_text(values: &udf_sdk::ColumnValues, row: usize) -> String {
    use udf_sdk::ColumnValues as V;
    match values {
        V::Text(v) => v[row].clone(),
        V::Int(v) => v[row].to_string(),
        V::Float(v) => v[row].to_string(),
        V::Estimate(v) => v[row].value.to_string(),
    }
}

/// What one pass over a dataset found: the sampled rows (privacy unit and
/// the text of each column) and how unique each identifying column is.
struct Scan {
    sample: Vec<(String, Vec<String>)>,
    uniqueness: Vec<mask::ColumnUniqueness>,
}

/// Reads the privacy unit and the columns of `specs` inside the engine, in
/// one pass: every row counts for how unique each identifying column is
/// after masking (over the whole dataset, so the answer does not depend on
/// the sample), and each person is kept as `selection` says, up to
/// [`MAX_EXTRACT_ROWS`] rows for an extract.
async fn scan(
    dataset: &data::OpenDataset,
    specs: &[&ColumnSpec],
    selection: Selection<'_>,
    pseudonym: &dyn Fn(&str) -> String,
) -> Result<Scan, DomainError> {
    let (ctx, _) = data::session(std::slice::from_ref(dataset), &[], &[]).await?;
    let select = std::iter::once(dataset.manifest.privacy_unit.as_str())
        .chain(specs.iter().map(|s| s.name.as_str()))
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("SELECT {select} FROM \"{}\"", dataset.name);
    let withheld = |_| DomainError::DatasetUnreadable {
        dataset: dataset.name.clone(),
        reason: "the engine failed while reading it (details withheld: they can quote values)"
            .into(),
    };
    let batches = ctx
        .sql(&sql)
        .await
        .map_err(withheld)?
        .collect()
        .await
        .map_err(withheld)?;
    let mut uniqueness = mask::Uniqueness::new(specs, dataset.manifest.min_group_size);
    let mut sample = Vec::new();
    for batch in batches {
        let text = batch
            .columns()
            .iter()
            .map(|c| arrow::compute::cast(c, &DataType::Utf8))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| DomainError::Internal(e.to_string()))?;
        let value = |column: &arrow::array::ArrayRef, r: usize| {
            if column.is_null(r) {
                String::new()
            } else {
                column.as_string::<i32>().value(r).to_string()
            }
        };
        for r in 0..batch.num_rows() {
            let unit = value(&text[0], r);
            let row: Vec<String> = text[1..].iter().map(|c| value(c, r)).collect();
            let Selection::Keyed {
                fingerprint,
                fraction,
                identifying,
            } = &selection
            else {
                sample.push((unit, row));
                continue;
            };
            let masked = mask::mask_row(specs, &row, pseudonym);
            if !uniqueness.is_empty() {
                uniqueness.add(&unit, &masked);
            }
            if sample.len() >= MAX_EXTRACT_ROWS {
                continue;
            }
            let class: Vec<String> = identifying.iter().map(|&i| masked[i].clone()).collect();
            if fingerprint.keeps(&unit, &class, *fraction) {
                sample.push((unit, row));
            }
        }
    }
    Ok(Scan {
        sample,
        uniqueness: uniqueness.finish(),
    })
}
