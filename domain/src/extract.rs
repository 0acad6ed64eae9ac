//! Masked extracts for grants that allow them: sampled rows, every column
//! through its manifest mask, k-anonymity over the quasi-identifiers, then
//! quarantine and review like any other output.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use ring::rand::SecureRandom;
use serde_json::json;
use unseen_policy::mask::{self, SuppressionReport};

use crate::{Domain, DomainError, JobBody, JobOutcome, data};

/// Most rows an extract may sample.
pub const MAX_EXTRACT_ROWS: usize = 100_000;

impl Domain {
    /// Runs a masked extract of `columns` under a grant, sampling each row
    /// with probability `fraction`. The masked table goes to quarantine.
    pub fn run_extract(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        submitter: &str,
        grant_id: &str,
        columns: &[String],
        fraction: f64,
    ) -> Result<(JobOutcome, Option<SuppressionReport>), DomainError> {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(DomainError::Invalid(format!(
                "sample fraction {fraction} must be in (0, 1]"
            )));
        }
        let description = format!("EXTRACT {} SAMPLE {fraction}", columns.join(", "));
        let (mut job_host, log) = match self.begin_job(
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
        let specs =
            match mask::plan_extract(&dataset.manifest, columns) {
                Ok(s) => s,
                Err(refusal) => {
                    self.record(submitter, "query.refused", json!({
                    "job": job_id, "grant": grant_id, "sql": description,
                    "rule": refusal.rule, "column": refusal.column, "reason": refusal.message,
                }))?;
                    let outcome = self.end_job(
                        job_id,
                        submitter,
                        &log,
                        "failed",
                        Some(format!("refused: {}", refusal.message)),
                        0,
                    )?;
                    return Ok((outcome, None));
                }
            };
        // How long sampling and masking take depends on the data.
        crate::lock(&log).read_protected = true;
        let rows = runtime.block_on(sample_rows(&dataset, columns, fraction))?;
        let pseudonyms = data::ValueHasher::pseudonyms(&dataset.key);
        let pseudonym = |v: &str| pseudonyms.pseudonym(v);
        let (table, report) =
            mask::mask_and_anonymise(&specs, rows, dataset.manifest.min_group_size, &pseudonym);
        self.record(
            submitter,
            "extract.masked",
            json!({
                "job": job_id, "grant": grant_id, "columns": columns, "sample": fraction,
                "rows_sampled": report.rows_sampled, "rows_released": report.rows_released,
                "rows_suppressed": report.rows_suppressed, "k": report.k,
                "quasi_identifiers": report.quasi_identifiers,
            }),
        )?;
        use unseen_sandbox::JobHost;
        let (status, error) = if let Some(reason) = job_host.cancel.reason() {
            ("cancelled", Some(format!("job cancelled: {reason}")))
        } else {
            match job_host.emit("extract", table) {
                Ok(()) => ("succeeded", None),
                Err(e) => ("failed", Some(e)),
            }
        };
        let outcome = self.end_job(job_id, submitter, &log, status, error, 0)?;
        Ok((outcome, Some(report)))
    }
}

/// Reads `columns` inside the engine and keeps each row with probability
/// `fraction` (secure randomness), as text.
async fn sample_rows(
    dataset: &data::OpenDataset,
    columns: &[String],
    fraction: f64,
) -> Result<Vec<Vec<String>>, DomainError> {
    let (ctx, _) = data::session(std::slice::from_ref(dataset), &[], &[]).await?;
    let select = columns
        .iter()
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
    let rng = ring::rand::SystemRandom::new();
    let threshold = (fraction * f64::from(u32::MAX)) as u64;
    let mut rows = Vec::new();
    'batches: for batch in batches {
        let text = batch
            .columns()
            .iter()
            .map(|c| arrow::compute::cast(c, &DataType::Utf8))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| DomainError::Invalid(e.to_string()))?;
        for r in 0..batch.num_rows() {
            let mut draw = [0u8; 4];
            rng.fill(&mut draw)
                .map_err(|_| DomainError::Invalid("no secure randomness".into()))?;
            if u64::from(u32::from_le_bytes(draw)) > threshold {
                continue;
            }
            rows.push(
                text.iter()
                    .map(|c| {
                        if c.is_null(r) {
                            String::new()
                        } else {
                            c.as_string::<i32>().value(r).to_string()
                        }
                    })
                    .collect(),
            );
            if rows.len() >= MAX_EXTRACT_ROWS {
                break 'batches;
            }
        }
    }
    Ok(rows)
}
