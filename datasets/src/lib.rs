//! Deterministic synthetic government datasets, written as Parquet, with the
//! manifests that classify their columns.
//!
//! Five datasets in two families: `residents` and `health_visits` (joined on
//! `person_id`), and `enterprises`, `tax_records` and `utility_usage` (joined
//! on `credit_code`, the SME credit scenario). Each is drawn from one
//! `ChaCha8Rng` seeded with the caller's seed, so the same kind, options and
//! seed give a byte-identical file. Rows are produced and written one batch
//! ([`BATCH_ROWS`] rows, one Parquet row group) at a time, so memory does not
//! grow with the row count.
//!
//! This crate knows nothing about policy, grants or the engine: it makes
//! files and hands out the manifest text; `policy` decides what it means.
#![forbid(unsafe_code)]

mod calendar;
mod generate;
mod ids;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};

use generate::{BatchSource, Enterprises, HealthVisits, Panel, Residents, Series};

pub use calendar::days_from_civil;
pub use ids::{
    CREDIT_CODE_CHARSET, DISTRICTS, MAX_ENTERPRISES, credit_code, credit_code_check_char,
    enterprise_district, is_valid_credit_code, is_valid_resident_id, organisation_code_check_char,
    resident_id_check_char,
};

/// Rows per Arrow batch and per Parquet row group.
pub const BATCH_ROWS: usize = 65_536;

/// The `created_by` string written into every file (no version, no clock).
pub const CREATED_BY: &str = "unseen-datasets";

/// Errors from generating a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(
        "unknown dataset `{name}`; use one of residents, health_visits, enterprises, tax_records, utility_usage"
    )]
    UnknownDataset { name: String },
    #[error(
        "{kind}: {rows} rows need more than {related} enterprises at {max_per_unit} rows each; \
         set related_rows to at least {needed}"
    )]
    RelatedTooSmall {
        kind: DatasetKind,
        rows: u64,
        related: u64,
        max_per_unit: u64,
        needed: u64,
    },
    #[error("{kind}: {rows} rows need at least one related row; set related_rows to 1 or more")]
    NoRelatedRows { kind: DatasetKind, rows: u64 },
    #[error(
        "enterprises: {rows} rows exceed the {max} distinct credit codes this generator can make; generate fewer"
    )]
    TooManyEnterprises { rows: u64, max: u64 },
    #[error("could not build an Arrow batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("could not write Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} has no file name; give a path to a file such as `out/residents.parquet`")]
    NotAFilePath { path: PathBuf },
}

/// One of the synthetic datasets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DatasetKind {
    /// One row per person; `person_id` is 1..=rows.
    Residents,
    /// Clinic and hospital visits of residents.
    HealthVisits,
    /// One row per enterprise; row `i` has `credit_code(i)`.
    Enterprises,
    /// Yearly tax paid per enterprise, 2019..=2024.
    TaxRecords,
    /// Monthly electricity use per enterprise in 2024.
    UtilityUsage,
}

impl DatasetKind {
    /// Every dataset, parents before the datasets that join to them.
    pub fn all() -> [DatasetKind; 5] {
        [
            DatasetKind::Residents,
            DatasetKind::HealthVisits,
            DatasetKind::Enterprises,
            DatasetKind::TaxRecords,
            DatasetKind::UtilityUsage,
        ]
    }

    /// The dataset's name, as used in file names, manifests and queries.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Residents => "residents",
            DatasetKind::HealthVisits => "health_visits",
            DatasetKind::Enterprises => "enterprises",
            DatasetKind::TaxRecords => "tax_records",
            DatasetKind::UtilityUsage => "utility_usage",
        }
    }

    /// The dataset this one joins to, if any (`residents` for
    /// `health_visits`, `enterprises` for `tax_records` and `utility_usage`).
    pub fn parent(self) -> Option<DatasetKind> {
        match self {
            DatasetKind::HealthVisits => Some(DatasetKind::Residents),
            DatasetKind::TaxRecords | DatasetKind::UtilityUsage => Some(DatasetKind::Enterprises),
            DatasetKind::Residents | DatasetKind::Enterprises => None,
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = DatasetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DatasetKind::all()
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| DatasetError::UnknownDataset { name: s.to_owned() })
    }
}

/// What to generate.
///
/// `related_rows` is the row count of the parent dataset (see
/// [`DatasetKind::parent`]) and is ignored for datasets without one:
///
/// - `health_visits`: `person_id` is uniform in `1..=related_rows`, so it
///   joins to `residents` generated with that many rows (any seed). Default
///   `max(1, rows / 3)`.
/// - `tax_records` / `utility_usage`: enterprises `0..related_rows` are
///   visited in order, each with 1..=6 consecutive years ending 2024 (resp.
///   1..=12 consecutive months ending 2024-12), so every `credit_code` is
///   `credit_code(i)` for some `i < related_rows` and joins to `enterprises`
///   generated with that many rows (any seed). No (code, period) repeats.
///   `rows` must be at most 6 (resp. 12) times `related_rows`; the default
///   is `ceil(rows / 3)` (resp. `ceil(rows / 10)`). When `rows` is small
///   relative to `related_rows`, the last enterprises get no rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerateOptions {
    /// Rows to write.
    pub rows: u64,
    /// Seed of the random stream.
    pub seed: u64,
    /// Row count of the parent dataset; `None` for the default above.
    pub related_rows: Option<u64>,
}

impl GenerateOptions {
    /// `rows` rows from `seed`, default related row count.
    pub fn new(rows: u64, seed: u64) -> Self {
        Self {
            rows,
            seed,
            related_rows: None,
        }
    }

    /// The same options joined to a parent dataset of `related_rows` rows.
    pub fn with_related_rows(mut self, related_rows: u64) -> Self {
        self.related_rows = Some(related_rows);
        self
    }

    /// The parent row count `kind` will use, or `None` if it has no parent.
    pub fn effective_related_rows(&self, kind: DatasetKind) -> Option<u64> {
        let default = match kind {
            DatasetKind::Residents | DatasetKind::Enterprises => return None,
            DatasetKind::HealthVisits => (self.rows / 3).max(1),
            DatasetKind::TaxRecords => self.rows.div_ceil(3).max(1),
            DatasetKind::UtilityUsage => self.rows.div_ceil(10).max(1),
        };
        Some(self.related_rows.unwrap_or(default))
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateSummary {
    pub kind: DatasetKind,
    /// Rows written.
    pub rows: u64,
    /// Parquet row groups written (one per batch).
    pub row_groups: usize,
    /// Size of the Parquet file in bytes.
    pub bytes: u64,
    /// The parent row count used, if the dataset has a parent.
    pub related_rows: Option<u64>,
}

fn field(name: &str, data_type: DataType) -> Field {
    Field::new(name, data_type, false)
}

/// The Arrow schema of a dataset. Every column is non-nullable.
pub fn schema(kind: DatasetKind) -> SchemaRef {
    use DataType::{Date32, Int64, Utf8};
    let fields = match kind {
        DatasetKind::Residents => vec![
            field("person_id", Int64),
            field("id_number", Utf8),
            field("name", Utf8),
            field("phone", Utf8),
            field("birth_year", Int64),
            field("gender", Utf8),
            field("district", Utf8),
            field("household_size", Int64),
            field("annual_income", Int64),
            field("chronic_condition", Utf8),
        ],
        DatasetKind::HealthVisits => vec![
            field("person_id", Int64),
            field("visit_date", Date32),
            field("diagnosis_code", Utf8),
            field("cost", Int64),
        ],
        DatasetKind::Enterprises => vec![
            field("credit_code", Utf8),
            field("name", Utf8),
            field("industry", Utf8),
            field("district", Utf8),
            field("registered_capital", Int64),
            field("founded_year", Int64),
        ],
        DatasetKind::TaxRecords => vec![
            field("credit_code", Utf8),
            field("year", Int64),
            field("tax_paid", Int64),
        ],
        DatasetKind::UtilityUsage => vec![
            field("credit_code", Utf8),
            field("month", Utf8),
            field("kwh", Int64),
        ],
    };
    Arc::new(Schema::new(fields))
}

/// The manifest of a dataset (TOML, `datasets/manifests/<name>.toml`).
pub fn manifest_toml(kind: DatasetKind) -> &'static str {
    match kind {
        DatasetKind::Residents => include_str!("../manifests/residents.toml"),
        DatasetKind::HealthVisits => include_str!("../manifests/health_visits.toml"),
        DatasetKind::Enterprises => include_str!("../manifests/enterprises.toml"),
        DatasetKind::TaxRecords => include_str!("../manifests/tax_records.toml"),
        DatasetKind::UtilityUsage => include_str!("../manifests/utility_usage.toml"),
    }
}

/// Writer settings, all explicit so output depends only on the data.
fn writer_properties() -> Result<WriterProperties, DatasetError> {
    Ok(WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_created_by(CREATED_BY.to_owned())
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(BATCH_ROWS))
        .set_max_row_group_bytes(None)
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_key_value_metadata(None)
        .build())
}

fn source(kind: DatasetKind, opts: &GenerateOptions) -> Result<Box<dyn BatchSource>, DatasetError> {
    let schema = schema(kind);
    let related = opts.effective_related_rows(kind);
    if let Some(related) = related
        && related == 0
        && opts.rows > 0
    {
        return Err(DatasetError::NoRelatedRows {
            kind,
            rows: opts.rows,
        });
    }
    Ok(match kind {
        DatasetKind::Residents => Box::new(Residents::new(opts.seed, schema)),
        DatasetKind::Enterprises => {
            if opts.rows > MAX_ENTERPRISES {
                return Err(DatasetError::TooManyEnterprises {
                    rows: opts.rows,
                    max: MAX_ENTERPRISES,
                });
            }
            Box::new(Enterprises::new(opts.seed, schema))
        }
        DatasetKind::HealthVisits => {
            Box::new(HealthVisits::new(opts.seed, schema, related.unwrap_or(1)))
        }
        DatasetKind::TaxRecords | DatasetKind::UtilityUsage => {
            let series = if kind == DatasetKind::TaxRecords {
                Series::Tax
            } else {
                Series::Utility
            };
            let related = related.unwrap_or(1);
            let max_per_unit = series.max_per_unit();
            if related > MAX_ENTERPRISES {
                return Err(DatasetError::TooManyEnterprises {
                    rows: related,
                    max: MAX_ENTERPRISES,
                });
            }
            if opts.rows > related * max_per_unit {
                return Err(DatasetError::RelatedTooSmall {
                    kind,
                    rows: opts.rows,
                    related,
                    max_per_unit,
                    needed: opts.rows.div_ceil(max_per_unit),
                });
            }
            Box::new(Panel::new(opts.seed, schema, series, opts.rows, related))
        }
    })
}

/// Generates `opts.rows` rows of `kind` as Parquet into `out`, one row group
/// per [`BATCH_ROWS`] rows, calling `progress` with the rows written so far
/// after each row group. Only one batch is held in memory at a time.
///
/// `out` receives a complete file only if this returns `Ok`; use
/// [`generate_to_path`] to never leave a partial file behind.
pub fn generate<W: Write + Send>(
    kind: DatasetKind,
    opts: &GenerateOptions,
    out: &mut W,
    progress: &mut dyn FnMut(u64),
) -> Result<GenerateSummary, DatasetError> {
    let mut source = source(kind, opts)?;
    let mut writer = ArrowWriter::try_new(out, schema(kind), Some(writer_properties()?))?;
    let mut written = 0u64;
    while written < opts.rows {
        let n = (opts.rows - written).min(BATCH_ROWS as u64);
        let batch = source.next_batch(n as usize)?;
        writer.write(&batch)?;
        writer.flush()?;
        written += n;
        progress(written);
    }
    let metadata = writer.finish()?;
    Ok(GenerateSummary {
        kind,
        rows: written,
        row_groups: metadata.num_row_groups(),
        bytes: writer.bytes_written() as u64,
        related_rows: opts.effective_related_rows(kind),
    })
}

/// Like [`generate`], but into the file at `path`: rows go to a temporary
/// file in the same directory, which is synced and renamed over `path` only
/// when complete. On error the temporary file is removed and `path` is left
/// as it was.
pub fn generate_to_path(
    kind: DatasetKind,
    opts: &GenerateOptions,
    path: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<GenerateSummary, DatasetError> {
    let file_name = path
        .file_name()
        .ok_or_else(|| DatasetError::NotAFilePath {
            path: path.to_owned(),
        })?
        .to_string_lossy()
        .into_owned();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(".{file_name}.{}.partial", std::process::id()));
    let io_err = |p: &Path| {
        let p = p.to_owned();
        move |source| DatasetError::Io { path: p, source }
    };
    let file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    let result = (|| {
        let mut out = BufWriter::new(file);
        let summary = generate(kind, opts, &mut out, progress)?;
        let file = out.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
        file.sync_all().map_err(io_err(&tmp))?;
        drop(file);
        fs::rename(&tmp, path).map_err(io_err(path))?;
        Ok(summary)
    })();
    if result.is_err() {
        // Best effort: the error being returned matters more than this one.
        let _ = fs::remove_file(&tmp);
    }
    result
}
