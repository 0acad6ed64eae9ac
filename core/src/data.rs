//! Datasets at rest: registration into encrypted Parquet, and the session
//! through which only the engine reads them.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::record_batch::RecordBatchReader;
use datafusion::config::ConfigFileDecryptionProperties;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::encryption::encrypt::FileEncryptionProperties;
use parquet::file::properties::WriterProperties;
use unseen_policy::{ExecutionLimits, Manifest};

use crate::DomainError;

/// What registration learned about a file.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub rows: u64,
    pub source_sha256: String,
    /// Keyed hashes of every value of the prohibited text columns.
    pub prohibited: unseen_policy::checks::ProhibitedIndex,
}

/// The keyed hash under which prohibited values are indexed: HMAC-SHA256
/// with a key derived from the dataset's data key, truncated to 8 bytes.
/// Without the data key nobody can test a guess against the index, and
/// destroying the key destroys the index's meaning too.
#[derive(Debug, Clone)]
pub struct ValueHasher(ring::hmac::Key);

impl ValueHasher {
    pub fn new(data_key: &[u8; 32]) -> Self {
        let root = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, data_key);
        let derived = ring::hmac::sign(&root, b"unseen prohibited-value index v1");
        ValueHasher(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            derived.as_ref(),
        ))
    }

    /// A second derived key for keyed pseudonyms in extracts (so join keys
    /// stay joinable inside one dataset's extracts without revealing them).
    pub fn pseudonyms(data_key: &[u8; 32]) -> Self {
        let root = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, data_key);
        let derived = ring::hmac::sign(&root, b"unseen extract pseudonym v1");
        ValueHasher(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            derived.as_ref(),
        ))
    }

    /// A 16-hex-digit pseudonym of `value`.
    pub fn pseudonym(&self, value: &str) -> String {
        hex::encode(&ring::hmac::sign(&self.0, value.as_bytes()).as_ref()[..8])
    }

    pub fn hash(&self, value: &str) -> [u8; 8] {
        let tag = ring::hmac::sign(&self.0, value.as_bytes());
        let mut out = [0u8; 8];
        out.copy_from_slice(&tag.as_ref()[..8]);
        out
    }
}

/// Reads a stored prohibited-value index.
pub fn read_index(path: &Path) -> Result<unseen_policy::checks::ProhibitedIndex, DomainError> {
    let bytes = std::fs::read(path).map_err(|e| DomainError::io(path, e))?;
    let hashes = bytes
        .chunks_exact(8)
        .map(|c| {
            let mut h = [0u8; 8];
            h.copy_from_slice(c);
            h
        })
        .collect();
    Ok(unseen_policy::checks::ProhibitedIndex::from_hashes(hashes))
}

/// Writes a prohibited-value index (sorted hashes, no plaintext).
pub fn write_index(
    path: &Path,
    index: &unseen_policy::checks::ProhibitedIndex,
) -> Result<(), DomainError> {
    let bytes: Vec<u8> = index.hashes().iter().flatten().copied().collect();
    crate::util::write_private(path, &bytes).map_err(|e| DomainError::io(path, e))
}

fn parquet_err(path: &Path, e: impl std::fmt::Display) -> DomainError {
    DomainError::Parquet(format!("{}: {e}", path.display()))
}

/// SHA-256 of a file, streamed.
pub fn file_sha256(path: &Path) -> Result<String, DomainError> {
    let mut f = File::open(path).map_err(|e| DomainError::io(path, e))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| DomainError::io(path, e))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(hex::encode(ctx.finish()))
}

/// Reads the Arrow schema of a Parquet file and checks the manifest against it.
pub fn check_file(path: &Path, manifest: &Manifest) -> Result<(), DomainError> {
    let file = File::open(path).map_err(|e| DomainError::io(path, e))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| parquet_err(path, e))?;
    manifest
        .check_schema(builder.schema())
        .map_err(DomainError::Manifest)
}

/// Copies `source` into `dest` as Parquet encrypted with `key` (footer and
/// every column), streaming one row group at a time. Writes a temp file and
/// renames it, so `dest` is never half-written.
pub fn ingest(
    source: &Path,
    dest: &Path,
    key: &[u8; 32],
    dataset: &str,
    prohibited_text: &[String],
) -> Result<Ingested, DomainError> {
    let hasher = ValueHasher::new(key);
    let mut hashes: Vec<[u8; 8]> = Vec::new();
    let source_sha256 = file_sha256(source)?;
    let file = File::open(source).map_err(|e| DomainError::io(source, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| parquet_err(source, e))?
        .with_batch_size(65_536)
        .build()
        .map_err(|e| parquet_err(source, e))?;
    let schema = reader.schema();
    let encryption = FileEncryptionProperties::builder(key.to_vec())
        .with_aad_prefix(dataset.as_bytes().to_vec())
        .build()
        .map_err(|e| parquet_err(dest, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .with_file_encryption_properties(encryption)
        .build();
    let tmp = dest.with_extension("parquet.tmp");
    let out = crate::util::create_private(&tmp).map_err(|e| DomainError::io(&tmp, e))?;
    let result = (|| {
        let mut writer =
            ArrowWriter::try_new(out, schema, Some(props)).map_err(|e| parquet_err(dest, e))?;
        let mut rows = 0u64;
        for batch in reader {
            let batch = batch.map_err(|e| parquet_err(source, e))?;
            rows += batch.num_rows() as u64;
            for name in prohibited_text {
                if let Some(column) = batch.column_by_name(name) {
                    let text = arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8)
                        .map_err(|e| parquet_err(source, e))?;
                    use arrow::array::AsArray;
                    hashes.extend(
                        text.as_string::<i32>()
                            .iter()
                            .flatten()
                            .map(|v| hasher.hash(v)),
                    );
                }
            }
            writer.write(&batch).map_err(|e| parquet_err(dest, e))?;
        }
        let file = writer.into_inner().map_err(|e| parquet_err(dest, e))?;
        file.sync_all().map_err(|e| DomainError::io(dest, e))?;
        Ok(rows)
    })();
    match result {
        Ok(rows) => {
            std::fs::rename(&tmp, dest).map_err(|e| DomainError::io(dest, e))?;
            Ok(Ingested {
                rows,
                source_sha256,
                prohibited: unseen_policy::checks::ProhibitedIndex::from_hashes(hashes),
            })
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// One registered dataset made readable to the engine.
#[derive(Debug, Clone)]
pub struct OpenDataset {
    pub name: String,
    pub path: PathBuf,
    pub key: [u8; 32],
    pub manifest: Manifest,
    /// The grant's column scope: the engine sees only these columns (and
    /// the privacy unit, for contribution bounding). `None` is every column.
    pub scope: Option<Vec<String>>,
    /// Rows in the dataset (for metering).
    pub rows: u64,
    /// Whether registration found at most one row per privacy unit, so
    /// bounding contributions would change nothing.
    pub unit_unique: bool,
    /// Bounded columns whose every value registration found present and
    /// within the manifest bounds, so clamping would change nothing.
    pub within_bounds: Vec<String>,
}

/// What registration found about a grant's datasets, for the release to
/// skip steps that would change nothing.
#[derive(Debug)]
pub struct Facts<'a>(pub &'a [OpenDataset]);

impl unseen_policy::DataFacts for Facts<'_> {
    fn one_row_per_unit(&self, table: &str) -> bool {
        self.0.iter().any(|d| d.name == table && d.unit_unique)
    }

    fn within_bounds(&self, table: &str, column: &str) -> bool {
        self.0
            .iter()
            .any(|d| d.name == table && d.within_bounds.iter().any(|c| c == column))
    }
}

impl OpenDataset {
    /// Restricts the dataset to a grant's column scope (empty: no
    /// restriction). A scope entry is `column` (that column of every
    /// dataset of the grant) or `dataset.column`.
    pub fn restrict(mut self, columns: &[String]) -> OpenDataset {
        if columns.is_empty() {
            return self;
        }
        let unit = self.manifest.privacy_unit.clone();
        let name = self.name.clone();
        self.manifest
            .columns
            .retain(|c| c.name == unit || in_scope(columns, &name, &c.name));
        self.scope = Some(
            self.manifest
                .columns
                .iter()
                .map(|c| c.name.clone())
                .collect(),
        );
        self
    }
}

/// Whether a grant's column scope names `column` of `dataset`.
pub fn in_scope(scope: &[String], dataset: &str, column: &str) -> bool {
    scope.iter().any(|entry| match entry.split_once('.') {
        Some((d, c)) => d == dataset && c == column,
        None => entry == column,
    })
}

/// What one session may use of the service: a memory pool of `memory`
/// bytes that spills into `spill_dir` where DataFusion can spill (sorts,
/// aggregations), and the [`ExecutionLimits`] its releases honour (time,
/// rows per join). The default is no limit (the provider's own work:
/// registration facts, marginals).
#[derive(Debug, Clone, Default)]
pub struct SessionLimits {
    pub memory: Option<usize>,
    /// Owner-only directory for spill files; `None` spills nothing (a
    /// query over its memory then fails as too large).
    pub spill_dir: Option<PathBuf>,
    pub execution: ExecutionLimits,
}

/// What one query may use, as the operator configures it (`unseen serve
/// --query-memory --query-timeout --max-join-rows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Bytes of memory one query's session may hold (it spills beyond that
    /// where DataFusion can, up to [`SPILL_PER_MEMORY`] times as much disk).
    pub memory: usize,
    /// Time one query may run.
    pub time: std::time::Duration,
    /// Rows one join may produce.
    pub join_rows: u64,
}

/// Default of `serve --query-memory`.
pub const DEFAULT_QUERY_MEMORY: usize = 512 << 20;
/// Default of `serve --query-timeout`, in seconds.
pub const DEFAULT_QUERY_SECONDS: u64 = 60;
/// Default of `serve --max-join-rows`.
pub const DEFAULT_JOIN_ROWS: u64 = 50_000_000;

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            memory: DEFAULT_QUERY_MEMORY,
            time: std::time::Duration::from_secs(DEFAULT_QUERY_SECONDS),
            join_rows: DEFAULT_JOIN_ROWS,
        }
    }
}

impl QueryLimits {
    /// The limits of one session that spills into `spill_dir`.
    pub fn session(&self, spill_dir: PathBuf) -> SessionLimits {
        SessionLimits {
            memory: Some(self.memory),
            spill_dir: Some(spill_dir),
            execution: ExecutionLimits {
                time: Some(self.time),
                join_rows: Some(self.join_rows),
                memory: Some(self.memory),
                stop: None,
            },
        }
    }
}

/// How much a query may spill to disk, as a multiple of its memory.
pub const SPILL_PER_MEMORY: u64 = 8;

/// A DataFusion session holding exactly the given datasets, UDFs and
/// released tables and nothing else, without limits (see [`session_with`]).
pub async fn session(
    datasets: &[OpenDataset],
    udfs: &[unseen_sandbox::WasmUdf],
    releases: &[(String, udf_sdk::Table)],
) -> Result<(SessionContext, BTreeMap<String, Manifest>), DomainError> {
    session_with(datasets, udfs, releases, &SessionLimits::default()).await
}

/// A DataFusion session holding exactly the given datasets, UDFs and
/// released tables and nothing else (no information schema, no URL tables,
/// no other catalogs), under `limits`.
pub async fn session_with(
    datasets: &[OpenDataset],
    udfs: &[unseen_sandbox::WasmUdf],
    releases: &[(String, udf_sdk::Table)],
    limits: &SessionLimits,
) -> Result<(SessionContext, BTreeMap<String, Manifest>), DomainError> {
    let config = SessionConfig::new()
        .with_information_schema(false)
        .with_target_partitions(std::thread::available_parallelism().map_or(2, |n| n.get()));
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(memory) = limits.memory {
        // Fair: each spillable operator of the query gets its share, so one
        // sort cannot starve another into failing.
        runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(memory)));
        let disk = match &limits.spill_dir {
            Some(dir) => DiskManagerBuilder::default()
                .with_mode(DiskManagerMode::Directories(vec![dir.clone()]))
                .with_max_temp_directory_size((memory as u64).saturating_mul(SPILL_PER_MEMORY)),
            None => DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        };
        runtime = runtime.with_disk_manager_builder(disk);
    }
    let runtime = runtime
        .build_arc()
        .map_err(|e| DomainError::Internal(format!("the query engine could not start: {e}")))?;
    let ctx = SessionContext::new_with_state(unseen_policy::limits::session_state(
        config,
        runtime,
        limits.execution.clone(),
    ));
    let mut manifests = BTreeMap::new();
    for d in datasets {
        let decryption = ConfigFileDecryptionProperties {
            footer_key_as_hex: hex::encode(d.key),
            aad_prefix_as_hex: hex::encode(d.name.as_bytes()),
            ..Default::default()
        };
        let options = ParquetReadOptions::default().file_decryption_properties(decryption);
        let path = d
            .path
            .to_str()
            .ok_or_else(|| DomainError::Parquet(format!("{} is not UTF-8", d.path.display())))?;
        let unreadable = |e: datafusion::error::DataFusionError| DomainError::DatasetUnreadable {
            dataset: d.name.clone(),
            reason: e.strip_backtrace(),
        };
        ctx.register_parquet(d.name.as_str(), path, options.clone())
            .await
            .map_err(unreadable)?;
        if let Some(scope) = &d.scope {
            // Re-register with only the granted columns: any other column
            // does not exist for the query.
            let full = ctx.table(d.name.as_str()).await.map_err(unreadable)?;
            let fields: Vec<_> = full
                .schema()
                .fields()
                .iter()
                .filter(|f| scope.contains(f.name()))
                .cloned()
                .collect();
            let projected = arrow::datatypes::Schema::new(fields);
            ctx.deregister_table(d.name.as_str()).map_err(unreadable)?;
            ctx.register_parquet(d.name.as_str(), path, options.schema(&projected))
                .await
                .map_err(unreadable)?;
        }
        manifests.insert(d.name.clone(), d.manifest.clone());
    }
    for udf in udfs {
        udf.register(&ctx);
    }
    for (name, table) in releases {
        let (provider, manifest) = release_table(name, table)?;
        ctx.register_table(name.as_str(), Arc::new(provider))
            .map_err(|e| DomainError::BadReleaseTable {
                name: name.clone(),
                detail: format!("cannot be registered: {e}"),
            })?;
        manifests.insert(name.clone(), manifest);
    }
    Ok((ctx, manifests))
}

/// A released table as an in-memory table whose columns are all open:
/// released values are public once approved, and computing on them is
/// post-processing. An estimate column `x` becomes `x`, `x_lower` and
/// `x_upper`.
fn release_table(
    name: &str,
    table: &udf_sdk::Table,
) -> Result<(datafusion::datasource::MemTable, Manifest), DomainError> {
    use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use udf_sdk::ColumnValues;
    use unseen_policy::manifest::{Class, ColumnSpec, ColumnType};

    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    let mut specs = Vec::new();
    let mut push = |column: String, ty: ColumnType, array: ArrayRef| {
        fields.push(Field::new(&column, array.data_type().clone(), false));
        arrays.push(array);
        specs.push(ColumnSpec {
            name: column,
            ty,
            class: Class::Open,
            bounds: None,
            domain: None,
            group_key: true,
            extract: unseen_policy::manifest::ExtractRole::NonIdentifying,
            mask: None,
        });
    };
    for c in &table.columns {
        match &c.values {
            ColumnValues::Text(v) => push(
                c.name.clone(),
                ColumnType::Utf8,
                Arc::new(StringArray::from(v.clone())),
            ),
            ColumnValues::Int(v) => push(
                c.name.clone(),
                ColumnType::Int64,
                Arc::new(Int64Array::from(v.clone())),
            ),
            ColumnValues::Float(v) => push(
                c.name.clone(),
                ColumnType::Float64,
                Arc::new(Float64Array::from(v.clone())),
            ),
            ColumnValues::Estimate(v) => {
                for (suffix, pick) in [
                    (
                        "",
                        (|e: &udf_sdk::Estimate| e.value) as fn(&udf_sdk::Estimate) -> f64,
                    ),
                    ("_lower", |e| e.lower),
                    ("_upper", |e| e.upper),
                ] {
                    push(
                        format!("{}{suffix}", c.name),
                        ColumnType::Float64,
                        Arc::new(Float64Array::from(v.iter().map(pick).collect::<Vec<_>>())),
                    );
                }
            }
        }
    }
    let schema = Arc::new(Schema::new(fields));
    let invalid = |e: &dyn std::fmt::Display| DomainError::BadReleaseTable {
        name: name.to_string(),
        detail: format!("is malformed: {e}"),
    };
    let batch = arrow::record_batch::RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| invalid(&e))?;
    let provider = datafusion::datasource::MemTable::try_new(schema, vec![vec![batch]])
        .map_err(|e| invalid(&e))?;
    let manifest = Manifest {
        name: name.to_string(),
        version: 1,
        description: "an approved release, read back as input".into(),
        // No person behind a released row: nothing to bound or protect.
        privacy_unit: String::new(),
        max_contributions: 1,
        min_group_size: 1,
        l_diversity: 1,
        join_keys: Vec::new(),
        columns: specs,
    };
    Ok((provider, manifest))
}

/// What registration finds in a dataset (see [`unseen_policy::TableFacts`]).
pub async fn registration_facts(
    dataset: &OpenDataset,
) -> Result<unseen_policy::TableFacts, DomainError> {
    let (ctx, _) = session(std::slice::from_ref(dataset), &[], &[]).await?;
    unseen_policy::find_table_facts(&ctx, &dataset.name, &dataset.manifest)
        .await
        .map_err(|e| DomainError::Parquet(e.to_string()))
}

/// Keeps an `Arc` of the open datasets handy for hosts.
pub type SharedDatasets = Arc<Vec<OpenDataset>>;
