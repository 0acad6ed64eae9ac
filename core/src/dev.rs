//! `unseen dev run`: test a guest before submitting it, against mock data
//! made from a manifest alone (types, category domains, bounds) and,
//! when the provider published them, the dataset's DP marginals
//! ([`crate::marginals`]), never from real rows. The guest runs through the same sandbox, admission, DP,
//! budget and output checks as on the service, in a throwaway data
//! directory, so a refusal there is a refusal on the service.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use rand::{Rng, SeedableRng};
use unseen_policy::Manifest;
use unseen_policy::manifest::ColumnType;

use crate::marginals::{Marginal, Marginals, sample_category, sample_quantiles};
use crate::{Domain, DomainError, GrantRequest, JobOutcome, Role};

/// What a development run produced: the job's outcome and its outputs, in
/// full (they come from mock data).
#[derive(Debug)]
pub struct DevRun {
    pub outcome: JobOutcome,
    pub outputs: Vec<(String, udf_sdk::Table)>,
    pub rows: usize,
}

/// Mock rows for `manifest`: each column drawn from its DP marginal when
/// `marginals` has one, else uniform over its declared domain or bounds;
/// identifiers are synthetic (`mock-id_number-17`); the privacy unit is
/// 1..=rows. Columns are independent: joint distributions are not mimicked.
pub fn mock_batch(
    manifest: &Manifest,
    rows: usize,
    seed: u64,
    marginals: Option<&Marginals>,
) -> Result<RecordBatch, DomainError> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for c in &manifest.columns {
        // Bounds too wide to sample uniformly fall back to a small range.
        let (lo, hi) = c
            .bounds
            .filter(|(l, h)| (h - l).is_finite() && h >= l && l.abs() < 1e15 && h.abs() < 1e15)
            .unwrap_or((0.0, 1000.0));
        let is_unit = c.name == manifest.privacy_unit;
        let marginal = marginals.and_then(|m| m.columns.get(&c.name));
        let quantile = |rng: &mut rand_chacha::ChaCha8Rng| match marginal {
            Some(Marginal::Quantiles { points }) => sample_quantiles(points, rng),
            _ => None,
        };
        let (ty, array): (DataType, ArrayRef) = match c.ty {
            ColumnType::Int64 => {
                let v: Vec<i64> = (0..rows)
                    .map(|i| {
                        if is_unit {
                            i as i64 + 1
                        } else if let Some(v) = quantile(&mut rng) {
                            v.round() as i64
                        } else {
                            rng.random_range(lo.ceil() as i64..=hi.floor().max(lo.ceil()) as i64)
                        }
                    })
                    .collect();
                (DataType::Int64, Arc::new(Int64Array::from(v)))
            }
            ColumnType::Float64 => {
                let v: Vec<f64> = (0..rows)
                    .map(|_| {
                        if let Some(v) = quantile(&mut rng) {
                            v
                        } else if hi > lo {
                            rng.random_range(lo..hi)
                        } else {
                            lo
                        }
                    })
                    .collect();
                (DataType::Float64, Arc::new(Float64Array::from(v)))
            }
            ColumnType::Utf8 => {
                let v: Vec<String> = (0..rows)
                    .map(|i| {
                        let drawn = match (&c.domain, marginal) {
                            (Some(_), Some(Marginal::Categories { counts })) => {
                                sample_category(counts, &mut rng).map(str::to_string)
                            }
                            _ => None,
                        };
                        match (&c.domain, drawn) {
                            (_, Some(value)) => value,
                            (Some(d), None) if !d.is_empty() => {
                                d[rng.random_range(0..d.len())].clone()
                            }
                            _ if is_unit => format!("mock-{}-{}", c.name, i + 1),
                            _ => format!("mock-{}-{}", c.name, rng.random_range(0..rows.max(1))),
                        }
                    })
                    .collect();
                (DataType::Utf8, Arc::new(StringArray::from(v)))
            }
            ColumnType::Date32 => {
                // 2015-01-01 .. 2024-12-31, or the declared bounds (days since 1970).
                let (a, b) = c
                    .bounds
                    .map_or((16_436, 20_088), |(l, h)| (l as i32, h as i32));
                let v: Vec<i32> = (0..rows).map(|_| rng.random_range(a..=b.max(a))).collect();
                (DataType::Date32, Arc::new(Date32Array::from(v)))
            }
            ColumnType::Bool => {
                let v: Vec<bool> = (0..rows).map(|_| rng.random_bool(0.5)).collect();
                (DataType::Boolean, Arc::new(BooleanArray::from(v)))
            }
        };
        fields.push(Field::new(&c.name, ty, false));
        columns.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| DomainError::Internal(format!("mock data: {e}")))
}

/// A fresh data directory `scratch/data` with an admin `admin`, a developer
/// `dev` and one dataset registered from `parquet` under its manifest's
/// name: where `dev run` and the benchmarks work. Returns the domain and
/// the developer's token.
pub fn throwaway_domain(
    scratch: &Path,
    runtime: &tokio::runtime::Handle,
    parquet: &Path,
    manifest_text: &str,
) -> Result<(Arc<Domain>, String), DomainError> {
    let manifest = Manifest::parse(manifest_text).map_err(DomainError::Manifest)?;
    let domain = Arc::new(Domain::open(&scratch.join("data"))?);
    // Mock data protects nobody: runs are answered as they end.
    domain.set_timing_quantum(std::time::Duration::ZERO)?;
    domain.add_user(None, "admin", "Local admin", Role::Admin, "local")?;
    let token = domain.add_user(
        Some("admin"),
        "dev",
        "Local developer",
        Role::Developer,
        "local",
    )?;
    runtime.block_on(domain.register_dataset("admin", &manifest.name, parquet, manifest_text))?;
    Ok((domain, token))
}

/// What a development run is given besides the job module and the data.
#[derive(Debug, Default)]
pub struct DevInputs {
    pub params: BTreeMap<String, String>,
    /// UDF modules (their bytes) the job's queries may call.
    pub udfs: Vec<Vec<u8>>,
    /// The dataset's published DP marginals, to draw mock columns from.
    pub marginals: Option<Marginals>,
    /// A released masked extract of the dataset: one mock row per sample
    /// row, its columns taken from the sample (see [`overlay_sample`]).
    pub sample: Option<udf_sdk::Table>,
}

/// A number from a masked value: the value itself, or a uniform draw from
/// a range band `lo-hi` (the `range` mask rule); `None` for a suppressed
/// `*` or anything else.
fn unmask_number(value: &str, rng: &mut impl Rng) -> Option<f64> {
    if let Ok(v) = value.trim().parse::<f64>() {
        return Some(v);
    }
    // The separator is the first `-` after the first character (a lower
    // end may be negative).
    let at = value.get(1..)?.find('-')? + 1;
    let (lo, hi) = (
        value[..at].trim().parse::<f64>().ok()?,
        value[at + 1..].trim().parse::<f64>().ok()?,
    );
    (lo <= hi).then(|| {
        if lo < hi {
            rng.random_range(lo..=hi)
        } else {
            lo
        }
    })
}

/// Replaces the mock columns that `sample` (a released masked extract)
/// holds by its values: text as released (masked strings stay masked),
/// numbers as released or drawn from their range band. A suppressed value
/// keeps the mock one; the privacy unit stays synthetic.
pub fn overlay_sample(
    batch: RecordBatch,
    manifest: &Manifest,
    sample: &udf_sdk::Table,
    seed: u64,
) -> Result<RecordBatch, DomainError> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5a3e_11e5);
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for c in &sample.columns {
        let Some(at) = manifest.columns.iter().position(|m| m.name == c.name) else {
            return Err(DomainError::BadSample(format!(
                "the sample's column `{}` is not a column of `{}`; use an extract of this dataset",
                c.name, manifest.name
            )));
        };
        if c.name == manifest.privacy_unit {
            continue;
        }
        let udf_sdk::ColumnValues::Text(values) = &c.values else {
            return Err(DomainError::BadSample(format!(
                "the sample's column `{}` is not a masked extract column (text)",
                c.name
            )));
        };
        let mock = &columns[at];
        columns[at] = match manifest.columns[at].ty {
            ColumnType::Utf8 => Arc::new(StringArray::from(values.clone())),
            ColumnType::Int64 => {
                let mock = mock.as_primitive::<Int64Type>();
                Arc::new(Int64Array::from(
                    values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| {
                            unmask_number(v, &mut rng).map_or(mock.value(i), |x| x.round() as i64)
                        })
                        .collect::<Vec<_>>(),
                ))
            }
            ColumnType::Float64 => {
                let mock = mock.as_primitive::<Float64Type>();
                Arc::new(Float64Array::from(
                    values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| unmask_number(v, &mut rng).unwrap_or(mock.value(i)))
                        .collect::<Vec<_>>(),
                ))
            }
            ColumnType::Date32 | ColumnType::Bool => continue,
        };
    }
    RecordBatch::try_new(batch.schema(), columns)
        .map_err(|e| DomainError::BadSample(format!("mock data from the sample: {e}")))
}

/// Runs `module` against mock data for `manifest_text` in a throwaway data
/// directory under `scratch`.
pub fn run(
    scratch: &Path,
    runtime: &tokio::runtime::Handle,
    module: &[u8],
    manifest_text: &str,
    (rows, seed): (usize, u64),
    inputs: DevInputs,
) -> Result<DevRun, DomainError> {
    let manifest = Manifest::parse(manifest_text).map_err(DomainError::Manifest)?;
    let batch = match &inputs.sample {
        Some(sample) if sample.rows() == 0 => {
            return Err(DomainError::BadSample(
                "the sample has no rows; extract a larger fraction".into(),
            ));
        }
        Some(sample) => overlay_sample(
            mock_batch(&manifest, sample.rows(), seed, inputs.marginals.as_ref())?,
            &manifest,
            sample,
            seed,
        )?,
        None => mock_batch(&manifest, rows, seed, inputs.marginals.as_ref())?,
    };
    let rows = batch.num_rows();
    let parquet = scratch.join("mock.parquet");
    {
        let file = std::fs::File::create(&parquet).map_err(|e| DomainError::io(&parquet, e))?;
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)
            .map_err(|e| DomainError::Parquet(e.to_string()))?;
        writer
            .write(&batch)
            .and_then(|()| writer.close().map(|_| ()))
            .map_err(|e| DomainError::Parquet(e.to_string()))?;
    }
    let (domain, _) = throwaway_domain(scratch, runtime, &parquet, manifest_text)?;
    let grant = domain.issue_grant(
        "admin",
        &GrantRequest {
            query_epsilon: 1.0,
            allow_udfs: !inputs.udfs.is_empty(),
            ..GrantRequest::new(
                &manifest.name,
                "dev",
                "local development on mock data",
                1000.0,
            )
        },
    )?;
    let udfs = inputs
        .udfs
        .iter()
        .map(|bytes| domain.upload_udf_module("dev", bytes).map(|(sha, _)| sha))
        .collect::<Result<Vec<_>, _>>()?;
    let sha = domain.upload_module("dev", module)?;
    let outcome = domain.run_job(
        runtime,
        "dev",
        &grant,
        &sha,
        inputs.params,
        &crate::jobs::JobExtras {
            udfs,
            inputs: Vec::new(),
        },
    )?;
    let outputs = outcome
        .outputs
        .iter()
        .map(|id| domain.output(id).map(|(name, _, table)| (name, table)))
        .collect::<Result<_, _>>()?;
    Ok(DevRun {
        outcome,
        outputs,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_numbers_come_back_within_their_band() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..100 {
            let v = unmask_number("100000-199999", &mut rng).unwrap();
            assert!((100_000.0..=199_999.0).contains(&v), "{v}");
            let v = unmask_number("-20--11", &mut rng).unwrap();
            assert!((-20.0..=-11.0).contains(&v), "{v}");
        }
        assert_eq!(unmask_number("42", &mut rng), Some(42.0));
        assert_eq!(unmask_number("*", &mut rng), None);
        assert_eq!(unmask_number("9-3", &mut rng), None);
        assert_eq!(unmask_number("张*", &mut rng), None);
    }
}
