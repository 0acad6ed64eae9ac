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
use crate::sorted_hashes::{self, HashSorter};

/// What registration learned about a file.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub rows: u64,
    pub source_sha256: String,
    /// Distinct prohibited text values in the index written beside it.
    pub prohibited_values: u64,
    /// Whether every row has a privacy unit, each unit in one row only.
    pub one_row_per_unit: bool,
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

/// A stored prohibited-value index (sorted 8-byte keyed hashes), looked up
/// on disk: one hash in every [`INDEX_FENCE`] is held in memory (1/4096 of
/// the file), which narrows a lookup to one block read with one `pread`.
#[derive(Debug)]
pub struct IndexFile {
    path: PathBuf,
    file: File,
    /// Hashes in the file.
    len: u64,
    /// The first hash of each block of [`INDEX_FENCE`] hashes.
    fences: Vec<[u8; 8]>,
}

/// Hashes per block of an [`IndexFile`] (32 KiB).
pub const INDEX_FENCE: u64 = 4096;

impl IndexFile {
    /// Opens the index at `path` and reads its fences.
    pub fn open(path: &Path) -> Result<IndexFile, DomainError> {
        use std::os::unix::fs::FileExt;
        let io = |e| DomainError::io(path, e);
        let file = File::open(path).map_err(io)?;
        let bytes = file.metadata().map_err(io)?.len();
        if bytes % 8 != 0 {
            return Err(DomainError::DatasetUnreadable {
                dataset: path.display().to_string(),
                reason: format!(
                    "its prohibited-value index is {bytes} bytes, not a whole number of 8-byte hashes; register the dataset again"
                ),
            });
        }
        let len = bytes / 8;
        let fences = (0..len)
            .step_by(INDEX_FENCE as usize)
            .map(|i| {
                let mut hash = [0u8; 8];
                file.read_exact_at(&mut hash, i * 8).map(|()| hash)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?;
        Ok(IndexFile {
            path: path.to_path_buf(),
            file,
            len,
            fences,
        })
    }

    fn lookup(&self, hash: &[u8; 8]) -> std::io::Result<bool> {
        use std::os::unix::fs::FileExt;
        // The block whose first hash is the last one not above `hash`.
        let block = self.fences.partition_point(|f| f <= hash);
        let Some(block) = block.checked_sub(1) else {
            return Ok(false);
        };
        let start = block as u64 * INDEX_FENCE;
        let end = (start + INDEX_FENCE).min(self.len);
        let mut bytes = vec![0u8; ((end - start) * 8) as usize];
        self.file.read_exact_at(&mut bytes, start * 8)?;
        Ok(bytes.as_chunks::<8>().0.binary_search(hash).is_ok())
    }
}

impl unseen_policy::checks::HashIndex for IndexFile {
    fn contains(&self, hash: &[u8; 8]) -> bool {
        self.lookup(hash).unwrap_or_else(|e| {
            // Fail closed: the value is treated as prohibited, so the
            // output cannot be approved until the index reads again.
            tracing::error!(path = %self.path.display(), error = %e, "prohibited-value index unreadable");
            true
        })
    }
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
/// every column), streaming one batch at a time, and writes the sorted
/// keyed hashes of the prohibited text values to `index`. Finds on the
/// way whether each privacy unit has exactly one row. Memory stays
/// bounded whatever the row count: one batch read, one row group being
/// written, and [`sorted_hashes::DEFAULT_CAPACITY`] hashes for each of the
/// index and the units (more spill to temporary files beside `dest`).
/// Writes temp files and renames them, so neither `dest` nor `index` is
/// ever half-written.
pub fn ingest(
    source: &Path,
    dest: &Path,
    index: &Path,
    key: &[u8; 32],
    dataset: &str,
    manifest: &Manifest,
) -> Result<Ingested, DomainError> {
    ingest_holding(
        source,
        dest,
        index,
        key,
        dataset,
        manifest,
        sorted_hashes::DEFAULT_CAPACITY,
    )
}

/// [`ingest`], holding at most `capacity` hashes of each kind in memory.
fn ingest_holding(
    source: &Path,
    dest: &Path,
    index: &Path,
    key: &[u8; 32],
    dataset: &str,
    manifest: &Manifest,
    capacity: usize,
) -> Result<Ingested, DomainError> {
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
    let spill_dir = dest.parent().unwrap_or(Path::new("."));
    let mut scan = RowScan {
        prohibited_text: crate::datasets::prohibited_text_columns(manifest),
        privacy_unit: manifest.privacy_unit.clone(),
        hasher: ValueHasher::new(key),
        prohibited: HashSorter::new(spill_dir, capacity),
        units: HashSorter::new(spill_dir, capacity),
        unit_hash: (std::hash::RandomState::new(), std::hash::RandomState::new()),
        unit_missing: false,
    };
    let tmp = dest.with_extension("parquet.tmp");
    let index_tmp = index.with_extension("prohibited.tmp");
    let result = (|| {
        let out = crate::util::create_private(&tmp).map_err(|e| DomainError::io(&tmp, e))?;
        let mut writer =
            ArrowWriter::try_new(out, schema, Some(props)).map_err(|e| parquet_err(dest, e))?;
        let mut rows = 0u64;
        for batch in reader {
            let batch = batch.map_err(|e| parquet_err(source, e))?;
            rows += batch.num_rows() as u64;
            scan.batch(&batch)
                .map_err(|e| scan_err(source, spill_dir, e))?;
            writer.write(&batch).map_err(|e| parquet_err(dest, e))?;
        }
        let file = writer.into_inner().map_err(|e| parquet_err(dest, e))?;
        file.sync_all().map_err(|e| DomainError::io(dest, e))?;
        let (prohibited_values, one_row_per_unit) = scan.finish(&index_tmp)?;
        Ok((rows, prohibited_values, one_row_per_unit))
    })();
    match result {
        Ok((rows, prohibited_values, one_row_per_unit)) => {
            std::fs::rename(&tmp, dest).map_err(|e| DomainError::io(dest, e))?;
            std::fs::rename(&index_tmp, index).map_err(|e| DomainError::io(index, e))?;
            Ok(Ingested {
                rows,
                source_sha256,
                prohibited_values,
                one_row_per_unit: one_row_per_unit && rows > 0,
            })
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(&index_tmp);
            Err(e)
        }
    }
}

fn scan_err(source: &Path, spill_dir: &Path, e: ScanError) -> DomainError {
    match e {
        ScanError::Arrow(e) => parquet_err(source, e),
        ScanError::Spill(e) => DomainError::io(spill_dir, e),
    }
}

#[derive(Debug)]
enum ScanError {
    Arrow(arrow::error::ArrowError),
    Spill(std::io::Error),
}

/// What registration hashes from each batch on its way to the encrypted
/// file: the prohibited text values (for the index) and the privacy unit
/// (to learn whether it is unique).
struct RowScan {
    prohibited_text: Vec<String>,
    privacy_unit: String,
    hasher: ValueHasher,
    prohibited: HashSorter<8>,
    /// 128-bit hashes under two random SipHash keys, so that a collision
    /// (which would only make the fact "one row per unit" false, never
    /// wrongly true) is negligible at any row count. The keys live and die
    /// with this registration: the spilled runs cannot be tested against
    /// guessed identifiers.
    units: HashSorter<16>,
    unit_hash: (std::hash::RandomState, std::hash::RandomState),
    /// Whether some row had no unit (or the column was absent or of a
    /// type not compared here).
    unit_missing: bool,
}

impl RowScan {
    fn batch(&mut self, batch: &arrow::record_batch::RecordBatch) -> Result<(), ScanError> {
        use arrow::array::AsArray;
        use std::hash::BuildHasher;
        for name in &self.prohibited_text {
            if let Some(column) = batch.column_by_name(name) {
                let text = arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8)
                    .map_err(ScanError::Arrow)?;
                for value in text.as_string::<i32>().iter().flatten() {
                    self.prohibited
                        .push(self.hasher.hash(value))
                        .map_err(ScanError::Spill)?;
                }
            }
        }
        // Integers and text compare equal exactly when their text does;
        // any other type (a float's -0 and 0) is never called unique.
        let Some(unit) = batch
            .column_by_name(&self.privacy_unit)
            .filter(|c| c.data_type().is_integer() || c.data_type().is_string())
        else {
            self.unit_missing |= batch.num_rows() > 0;
            return Ok(());
        };
        let text = arrow::compute::cast(unit, &arrow::datatypes::DataType::Utf8)
            .map_err(ScanError::Arrow)?;
        for value in text.as_string::<i32>().iter() {
            let Some(value) = value else {
                self.unit_missing = true;
                continue;
            };
            let mut hash = [0u8; 16];
            hash[..8].copy_from_slice(&self.unit_hash.0.hash_one(value).to_le_bytes());
            hash[8..].copy_from_slice(&self.unit_hash.1.hash_one(value).to_le_bytes());
            self.units.push(hash).map_err(ScanError::Spill)?;
        }
        Ok(())
    }

    /// Writes the index to `index` (synced) and returns its size in values
    /// and whether every row has a unit of its own.
    fn finish(self, index: &Path) -> Result<(u64, bool), DomainError> {
        let io = |e| DomainError::io(index, e);
        let file = crate::util::create_private(index).map_err(io)?;
        let mut out = std::io::BufWriter::new(file);
        let sorted = self
            .prohibited
            .finish(|h| std::io::Write::write_all(&mut out, h))
            .map_err(io)?;
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        let units = self.units.finish(|_| Ok(())).map_err(io)?;
        Ok((sorted.distinct, !self.unit_missing && !units.repeated))
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
    /// A dataset file just written, before registration has found its
    /// facts (so none are assumed).
    pub fn without_facts(
        name: &str,
        path: PathBuf,
        key: [u8; 32],
        manifest: &Manifest,
        rows: u64,
    ) -> OpenDataset {
        OpenDataset {
            name: name.to_string(),
            path,
            key,
            manifest: manifest.clone(),
            scope: None,
            rows,
            unit_unique: false,
            within_bounds: Vec::new(),
        }
    }

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
    /// Where the session's plans execute when not in this process.
    pub remote: Option<Remote>,
    pub memory: Option<usize>,
    /// Owner-only directory for spill files; `None` spills nothing (a
    /// query over its memory then fails as too large).
    pub spill_dir: Option<PathBuf>,
    pub execution: ExecutionLimits,
}

/// An engine that executes a session's plans elsewhere: a cluster of
/// executors (`serve --engine ballista://`). Admission, charging, noise,
/// output checks and the ledger stay in this process; the engine only runs
/// the plans a session executes, and returns what running them here would.
pub trait RemoteEngine: Send + Sync + std::fmt::Debug {
    /// `state`, made to execute its plans on the engine, with the same
    /// analyzer rules and functions.
    fn distribute(
        &self,
        state: datafusion::execution::context::SessionState,
    ) -> Result<datafusion::execution::context::SessionState, String>;

    /// Dataset `dataset`'s encrypted file as a table the engine reads, with
    /// only `columns` (every one if `None`). `key` never leaves this process
    /// in clear: it is sealed for each of `executors`, and for no one else.
    fn table(
        &self,
        dataset: &str,
        path: &Path,
        key: &[u8; 32],
        columns: Option<&[String]>,
        executors: &[crate::cluster::ExecutorSecret],
    ) -> Result<Arc<dyn datafusion::datasource::TableProvider>, String>;
}

/// A remote engine and the executors enrolled when a session was made.
#[derive(Debug, Clone)]
pub struct Remote {
    pub engine: Arc<dyn RemoteEngine>,
    pub executors: Vec<crate::cluster::ExecutorSecret>,
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
    /// The limits of one session that spills to `spill_dir` (`None`: a
    /// query that outgrows its memory fails).
    pub fn session(&self, spill_dir: Option<PathBuf>) -> SessionLimits {
        SessionLimits {
            remote: None,
            memory: Some(self.memory),
            spill_dir,
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
    let state = unseen_policy::limits::session_state(config, runtime, limits.execution.clone());
    // Wasm UDFs travel to a cluster with their modules and released tables
    // with their rows (`unseen-cluster`'s codec), so every session can run
    // there.
    let remote = limits.remote.as_ref();
    let state = match remote {
        Some(remote) => remote
            .engine
            .distribute(state)
            .map_err(DomainError::Cluster)?,
        None => state,
    };
    let ctx = SessionContext::new_with_state(state);
    let mut manifests = BTreeMap::new();
    for d in datasets {
        if let Some(remote) = remote {
            let table = remote
                .engine
                .table(
                    &d.name,
                    &d.path,
                    &d.key,
                    d.scope.as_deref(),
                    &remote.executors,
                )
                .map_err(DomainError::Cluster)?;
            ctx.register_table(d.name.as_str(), table).map_err(|e| {
                DomainError::DatasetUnreadable {
                    dataset: d.name.clone(),
                    reason: e.strip_backtrace(),
                }
            })?;
            manifests.insert(d.name.clone(), d.manifest.clone());
            continue;
        }
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
    one_row_per_unit: Option<bool>,
) -> Result<unseen_policy::TableFacts, DomainError> {
    let (ctx, _) = session(std::slice::from_ref(dataset), &[], &[]).await?;
    let facts = match one_row_per_unit {
        // Found while ingesting, in bounded memory; only the bounds are
        // left to the engine (MIN, MAX and COUNT stream).
        Some(one_row_per_unit) => {
            unseen_policy::find_bound_facts(&ctx, &dataset.name, &dataset.manifest)
                .await
                .map(|within_bounds| unseen_policy::TableFacts {
                    table: dataset.name.clone(),
                    one_row_per_unit,
                    within_bounds,
                })
        }
        None => unseen_policy::find_table_facts(&ctx, &dataset.name, &dataset.manifest).await,
    };
    facts.map_err(|e| DomainError::Parquet(e.to_string()))
}

/// Keeps an `Arc` of the open datasets handy for hosts.
pub type SharedDatasets = Arc<Vec<OpenDataset>>;

#[cfg(test)]
mod tests {
    use super::*;
    use unseen_datasets::{DatasetKind, GenerateOptions};

    fn generated(dir: &Path, rows: u64) -> (PathBuf, Manifest) {
        let source = dir.join("r.parquet");
        let kind = DatasetKind::Residents;
        unseen_datasets::generate_to_path(
            kind,
            &GenerateOptions::new(rows, 11),
            &source,
            &mut |_| {},
        )
        .unwrap();
        (
            source,
            Manifest::parse(unseen_datasets::manifest_toml(kind)).unwrap(),
        )
    }

    fn ingest_into(
        dir: &Path,
        tag: &str,
        source: &Path,
        manifest: &Manifest,
        capacity: usize,
    ) -> (Ingested, OpenDataset, Vec<u8>) {
        let key = [7u8; 32];
        let dest = dir.join(format!("{tag}.parquet"));
        let index = dir.join(format!("{tag}.prohibited"));
        let ingested =
            ingest_holding(source, &dest, &index, &key, "residents", manifest, capacity).unwrap();
        let open = OpenDataset::without_facts("residents", dest, key, manifest, ingested.rows);
        (ingested, open, std::fs::read(&index).unwrap())
    }

    /// Every prohibited text value of `source`, hashed in memory the way
    /// registration did before it streamed.
    fn index_in_memory(source: &Path, manifest: &Manifest) -> Vec<u8> {
        use arrow::array::AsArray;
        let hasher = ValueHasher::new(&[7u8; 32]);
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(source).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let mut hashes = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            for name in crate::datasets::prohibited_text_columns(manifest) {
                let text = arrow::compute::cast(
                    batch.column_by_name(&name).unwrap(),
                    &arrow::datatypes::DataType::Utf8,
                )
                .unwrap();
                hashes.extend(
                    text.as_string::<i32>()
                        .iter()
                        .flatten()
                        .map(|v| hasher.hash(v)),
                );
            }
        }
        let index = unseen_policy::checks::ProhibitedIndex::from_hashes(hashes);
        index.hashes().iter().flatten().copied().collect()
    }

    #[test]
    fn ingesting_in_small_runs_writes_the_same_index_and_finds_the_same_facts() {
        let dir = tempfile::tempdir().unwrap();
        let (source, manifest) = generated(dir.path(), 3_000);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let expected = index_in_memory(&source, &manifest);
        assert!(!expected.is_empty());
        for capacity in [5, 1_000, sorted_hashes::DEFAULT_CAPACITY] {
            let tag = format!("c{capacity}");
            let (ingested, open, index) =
                ingest_into(dir.path(), &tag, &source, &manifest, capacity);
            assert_eq!(index, expected, "capacity {capacity}");
            assert_eq!(ingested.prohibited_values * 8, expected.len() as u64);
            assert_eq!(ingested.rows, 3_000);
            assert!(ingested.one_row_per_unit, "capacity {capacity}");
            // The engine's own COUNT(DISTINCT) agrees, and the bounds are
            // found either way.
            let by_sql = runtime.block_on(registration_facts(&open, None)).unwrap();
            let streamed = runtime
                .block_on(registration_facts(&open, Some(ingested.one_row_per_unit)))
                .unwrap();
            assert_eq!(by_sql, streamed);
            assert!(!streamed.within_bounds.is_empty());
        }
        // Temporary files are gone, the outputs private.
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn the_index_file_answers_as_the_index_in_memory_and_fails_closed() {
        use unseen_policy::checks::{HashIndex, ProhibitedIndex};
        let dir = tempfile::tempdir().unwrap();
        // Even numbers only, over several blocks: the odd ones are absent.
        let present: Vec<[u8; 8]> = (0..10_000u64).map(|i| (i * 2 + 2).to_be_bytes()).collect();
        let path = dir.path().join("x.prohibited");
        std::fs::write(
            &path,
            present.iter().flatten().copied().collect::<Vec<u8>>(),
        )
        .unwrap();
        let file = IndexFile::open(&path).unwrap();
        let memory = ProhibitedIndex::from_hashes(present.clone());
        assert_eq!(file.fences.len(), 3);
        for v in 0..20_004u64 {
            let h = v.to_be_bytes();
            assert_eq!(file.contains(&h), memory.contains(&h), "{v}");
        }
        assert!(file.contains(&present[4096]) && file.contains(&present[9_999]));
        assert!(!file.contains(&[0; 8]) && !file.contains(&[0xff; 8]));

        // Cut short after opening: what cannot be read counts as present.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(8 * 8_200)
            .unwrap();
        assert!(file.contains(&20_001u64.to_be_bytes()));
        // A file that is not whole hashes is refused on open.
        std::fs::write(&path, [1u8; 12]).unwrap();
        let err = IndexFile::open(&path).unwrap_err();
        assert!(err.to_string().contains("not a whole number"), "{err}");
        // An empty index holds nothing.
        std::fs::write(&path, []).unwrap();
        assert!(!IndexFile::open(&path).unwrap().contains(&[0; 8]));
    }

    #[test]
    fn a_unit_in_two_rows_is_found_however_the_runs_fall() {
        let dir = tempfile::tempdir().unwrap();
        let (source, manifest) = generated(dir.path(), 2_000);
        // The same rows twice: every unit in two rows, the repeats in
        // another run than the originals at a small capacity.
        let twice = dir.path().join("twice.parquet");
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&source).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<_> = reader.map(Result::unwrap).collect();
        let mut writer =
            ArrowWriter::try_new(File::create(&twice).unwrap(), batches[0].schema(), None).unwrap();
        for batch in batches.iter().chain(&batches) {
            writer.write(batch).unwrap();
        }
        writer.close().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        for capacity in [3, 1_999, 4_000, sorted_hashes::DEFAULT_CAPACITY] {
            let (ingested, open, _) = ingest_into(
                dir.path(),
                &format!("t{capacity}"),
                &twice,
                &manifest,
                capacity,
            );
            assert!(!ingested.one_row_per_unit, "capacity {capacity}");
            let by_sql = runtime.block_on(registration_facts(&open, None)).unwrap();
            assert!(!by_sql.one_row_per_unit);
        }
    }
}
