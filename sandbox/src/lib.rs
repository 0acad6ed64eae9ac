//! The wasmtime host that runs analysts' WebAssembly jobs.
//!
//! A job module may import only the host functions of the Unseen ABI
//! (`udf_sdk::abi`, written down in `udf-sdk/ABI.md`): no WASI, no clock, no
//! randomness, no filesystem, no network. The sandbox checks that at upload,
//! runs each job in a fresh store with memory, table, stack, fuel, wall-clock
//! deadline, query, dry-run and output limits, and turns every trap into a
//! [`SandboxError`] naming the limit and by how much it was exceeded.
//! Instances come from a fixed pool sized by [`Limits`]; compiled code may
//! be cached on disk, authenticated so that only code this host compiled is
//! ever loaded (see `README.md`). It knows nothing of policy, data or
//! storage: what a query returns and where an output goes is decided by the
//! caller's [`JobHost`].
//!
//! UDF modules (no imports at all) run inside DataFusion queries through
//! [`udf::WasmScalarUdf`], one row at a time in a state no other row could
//! have written (see [`udf`]).
//!
//! The only `unsafe` is loading an authenticated cache entry
//! (`cache::deserialize_trusted`).
#![deny(unsafe_code)]

mod cache;
mod engine;
mod host;
pub mod udf;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use udf_sdk::abi;
use wasmtime::{Engine, InstancePre, Linker, Module, PoolConcurrencyLimitError, Store, Trap};

use cache::ModuleCache;
use engine::{EpochTicker, Purpose};
use host::HostState;

pub use cache::CompiledFrom;
pub use host::{JobHost, LogLevel};
pub use udf::{
    AggregateUdfDecl, ScalarUdfDecl, UdfError, UdfModule, WasmAggregateUdf, WasmScalarUdf, WasmUdf,
};
pub use validate::ModuleKind;

/// Per-instance resource limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest module accepted at upload, in bytes.
    pub max_module_bytes: usize,
    /// Largest linear memory, in bytes.
    pub memory_bytes: usize,
    /// Largest table, in elements.
    pub table_elements: usize,
    /// Fuel (roughly, wasm instructions) a job run may consume. Deterministic:
    /// the same module and inputs stop at the same instruction on every host.
    /// Jobs only; UDF rows have [`Limits::udf_row_instructions`].
    pub fuel: u64,
    /// Instructions of a UDF's own code one row may execute (counted by the
    /// rewrite of `udf/isolate.rs`, see [`udf`]). Deterministic: a row over
    /// it is a null, on every host. A grant may set a lower cap per module
    /// ([`UdfModule::with_row_instructions`]).
    pub udf_row_instructions: u64,
    /// Wall-clock time a job run, or one batch of a UDF, may take, host
    /// calls included. Enforced by epoch interruption, to a precision of
    /// about 10 ms. For UDFs it is only a guard against an overloaded host:
    /// the per-row cap ends every row long before it.
    pub deadline: Duration,
    /// Largest native stack the guest may use, in bytes.
    pub stack_bytes: usize,
    /// Queries a run may submit.
    pub max_queries: u32,
    /// Dry runs (policy verdicts without spending) a run may ask for.
    pub max_dry_runs: u32,
    /// Outputs a run may emit.
    pub max_emits: u32,
    /// Total bytes of emitted outputs.
    pub max_output_bytes: usize,
    /// Bytes of log text a run may write; the rest is dropped and counted.
    pub max_log_bytes: usize,
    /// Jobs that may run at once on one [`Sandbox`]: the size of its
    /// instance pool. A run beyond it fails with the `concurrent runs` limit.
    /// UDF instances have a pool of the same size of their own.
    pub max_concurrent_runs: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_module_bytes: 16 << 20,
            memory_bytes: 64 << 20,
            table_elements: 10_000,
            fuel: 2_000_000_000,
            udf_row_instructions: DEFAULT_ROW_INSTRUCTIONS,
            deadline: Duration::from_secs(30),
            stack_bytes: 512 << 10,
            max_queries: 64,
            max_dry_runs: 64,
            max_emits: 16,
            max_output_bytes: 4 << 20,
            max_log_bytes: 64 << 10,
            max_concurrent_runs: 64,
        }
    }
}

/// Default per-row instruction cap of UDFs: ample for arithmetic and
/// string handling (the example UDFs use under 2,000), and about a
/// millisecond of work, which bounds what a row's duration can reveal (see
/// `udf-sdk/README.md`, "What a UDF cannot hide").
pub const DEFAULT_ROW_INSTRUCTIONS: u64 = 1_000_000;

/// Why a module was refused or a run ended badly.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "the uploaded bytes are not a WebAssembly module (no `\\0asm` header); build with `--target wasm32-unknown-unknown`"
    )]
    NotWasm,
    #[error(
        "module is {size} bytes, over the limit of {limit} bytes; strip debug info or build with opt-level=\"s\""
    )]
    TooLarge { size: usize, limit: usize },
    #[error("module is not valid WebAssembly for this host: {reason}")]
    Invalid { reason: String },
    #[error("module imports `{module}::{name}`: {reason}")]
    ForbiddenImport {
        module: String,
        name: String,
        reason: String,
    },
    #[error(
        "module was built for ABI `{found}`, but this host speaks ABI version {host} (`{expected}`); rebuild it against the current udf-sdk"
    )]
    AbiVersion {
        found: String,
        host: u32,
        expected: &'static str,
    },
    #[error("module lacks the export `{name}` ({expected})")]
    MissingExport {
        name: String,
        expected: &'static str,
    },
    #[error("export `{name}` has the wrong type: expected {expected}, found {found}")]
    MistypedExport {
        name: String,
        expected: &'static str,
        found: String,
    },
    #[error(
        "UDF module declarations: {reason}; declare every function with `udf_sdk::scalar_udf!` or `udf_sdk::aggregate_udf!` (see udf-sdk/ABI.md, \"Declarations\")"
    )]
    UdfDeclaration { reason: String },
    #[error(
        "UDF module refused: {reason}. Each row must run in a state no other row could have written (see udf-sdk/ABI.md, \"Row isolation\")"
    )]
    NotIsolable { reason: String },
    #[error("job stopped: {limit} limit exceeded ({detail})")]
    LimitExceeded { limit: &'static str, detail: String },
    #[error("job trapped: {reason}")]
    Trap { reason: String },
    #[error(
        "the host failed while serving `{function}` ({message}); the run was stopped. This is a bug in the host, not in the job: report it"
    )]
    HostPanic {
        function: &'static str,
        message: String,
    },
    #[error(
        "module was validated by another sandbox; validate it again with the sandbox that runs it"
    )]
    ForeignModule,
    #[error("compiled-module cache at {}: {reason}", path.display())]
    Cache { path: PathBuf, reason: String },
    #[error("job returned exit code {code}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    JobFailed {
        code: i32,
        message: String,
        /// Fuel the run consumed before returning.
        fuel_used: u64,
    },
    #[error("job cancelled: {reason}")]
    Cancelled { reason: String },
    #[error("sandbox engine error: {0}")]
    Engine(String),
}

/// A handle that stops a running job from another thread: the guest is
/// interrupted at the next epoch tick (about 10 ms), even in a tight loop.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<std::sync::Mutex<Option<String>>>);

impl Cancel {
    pub fn new() -> Self {
        Cancel::default()
    }

    /// Asks the job to stop; the first reason given is the one reported.
    pub fn cancel(&self, reason: &str) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(reason.to_string());
        }
    }

    /// Why the job was asked to stop, if it was.
    pub fn reason(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A module that passed validation, compiled and ready to instantiate.
#[derive(Clone)]
pub struct ValidatedModule {
    sha256: String,
    size: usize,
    kind: ModuleKind,
    compiled_from: CompiledFrom,
    pre: Option<Arc<InstancePre<HostState>>>,
    /// The compiled code; UDF modules are instantiated from it by `udf`.
    module: Module,
    /// A UDF module's declared scalar functions (empty for jobs).
    functions: Vec<ScalarUdfDecl>,
    /// A UDF module's declared aggregates (empty for jobs).
    aggregates: Vec<AggregateUdfDecl>,
    /// The rewritten module its scalar functions run in, one row at a time
    /// (`None` for jobs and for modules without scalar functions).
    rows: Option<udf::RowsModule>,
    /// The bytes as uploaded: what another host validates again before it
    /// runs the module (a cluster executor).
    source: Arc<[u8]>,
}

impl std::fmt::Debug for ValidatedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidatedModule")
            .field("sha256", &self.sha256)
            .field("size", &self.size)
            .field("kind", &self.kind)
            .field("compiled_from", &self.compiled_from)
            .finish()
    }
}

impl ValidatedModule {
    /// Hex SHA-256 of the module bytes: its content address.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Size of the module in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether it is a job or a UDF module.
    pub fn kind(&self) -> ModuleKind {
        self.kind
    }

    /// Whether the code was compiled now or loaded from the on-disk cache.
    pub fn compiled_from(&self) -> CompiledFrom {
        self.compiled_from
    }

    /// The scalar functions a UDF module declares (see `udf-sdk/ABI.md`,
    /// "Declarations"), each checked against its export; empty for jobs.
    pub fn functions(&self) -> &[ScalarUdfDecl] {
        &self.functions
    }

    /// The aggregates a UDF module declares (see `udf-sdk/ABI.md`,
    /// "Aggregate functions"), each checked against its four exports; empty
    /// for jobs.
    pub fn aggregates(&self) -> &[AggregateUdfDecl] {
        &self.aggregates
    }
}

/// What a finished run used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// Fuel consumed.
    pub fuel_used: u64,
    /// Queries submitted.
    pub queries: u32,
    /// Dry runs asked for.
    pub dry_runs: u32,
    /// Outputs emitted.
    pub emits: u32,
    /// Log bytes dropped because the log limit was reached.
    pub log_bytes_dropped: usize,
}

/// The sandbox: the engines, linker, instance pools and epoch ticker shared
/// by every run. Jobs and UDF modules have an engine (and pool) each; see
/// `engine.rs` for how they differ. Dropping it stops the ticker thread.
pub struct Sandbox {
    engine: Engine,
    /// Compiles and runs [`ModuleKind::Udf`] modules: no fuel, native NaNs.
    udf_engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    pooling: bool,
    cache: Option<ModuleCache>,
    /// The same directory as `cache`, keyed by the UDF engine's fingerprint.
    udf_cache: Option<ModuleCache>,
    /// Shared with every [`UdfModule`]: a UDF batch has no fuel, so the
    /// epochs must keep advancing while any module can still run one, even
    /// after the sandbox is dropped.
    ticker: Arc<EpochTicker>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("limits", &self.limits)
            .field("pooling", &self.pooling)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

impl Sandbox {
    /// Creates an engine with the features the host enables (see `udf-sdk/ABI.md`),
    /// compiling every module afresh.
    pub fn new(limits: Limits) -> Result<Self, SandboxError> {
        Self::build(limits, None)
    }

    /// Like [`Sandbox::new`], with compiled modules cached in `dir` (created
    /// with mode 0700 on first use, with a random HMAC key in `dir/cache.key`).
    /// Only artifacts whose HMAC verifies under that key are loaded; any
    /// other file is recompiled and replaced.
    pub fn with_cache_dir(limits: Limits, dir: impl AsRef<Path>) -> Result<Self, SandboxError> {
        Self::build(limits, Some(dir.as_ref()))
    }

    fn build(limits: Limits, cache_dir: Option<&Path>) -> Result<Self, SandboxError> {
        let setup = engine::build(&limits, Purpose::Job)?;
        let udf = engine::build(&limits, Purpose::Udf)?;
        let cache = cache_dir
            .map(|dir| ModuleCache::open(dir, setup.fingerprint.clone()))
            .transpose()?;
        let udf_cache = cache
            .as_ref()
            .map(|c| c.for_fingerprint(udf.fingerprint.clone()));
        let mut linker = Linker::new(&setup.engine);
        host::define_imports(&mut linker).map_err(|e| SandboxError::Engine(e.to_string()))?;
        let ticker = Arc::new(EpochTicker::start(&[&setup.engine, &udf.engine])?);
        Ok(Sandbox {
            engine: setup.engine,
            udf_engine: udf.engine,
            linker,
            limits,
            pooling: setup.pooling && udf.pooling,
            cache,
            udf_cache,
            ticker,
        })
    }

    /// The limits every run gets.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// True when instances come from the pre-reserved pools; false when the
    /// host could not reserve them and allocates instances on demand.
    pub fn uses_pooling(&self) -> bool {
        self.pooling
    }

    /// The file that caches `module_sha256`'s compiled code as a module of
    /// `kind` (jobs and UDF modules are compiled by different engines),
    /// when caching is on.
    pub fn cache_path(&self, module_sha256: &str, kind: ModuleKind) -> Option<PathBuf> {
        self.cache_for(kind).map(|c| c.path_of(module_sha256))
    }

    /// The engine that compiles and runs modules of `kind`.
    fn engine_for(&self, kind: ModuleKind) -> &Engine {
        match kind {
            ModuleKind::Job => &self.engine,
            ModuleKind::Udf => &self.udf_engine,
        }
    }

    fn cache_for(&self, kind: ModuleKind) -> Option<&ModuleCache> {
        match kind {
            ModuleKind::Job => self.cache.as_ref(),
            ModuleKind::Udf => self.udf_cache.as_ref(),
        }
    }

    /// Validates and compiles a module: header, size, features, imports, exports.
    pub fn validate(
        &self,
        bytes: &[u8],
        kind: ModuleKind,
    ) -> Result<ValidatedModule, SandboxError> {
        if !bytes.starts_with(b"\0asm") {
            return Err(SandboxError::NotWasm);
        }
        if bytes.len() > self.limits.max_module_bytes {
            return Err(SandboxError::TooLarge {
                size: bytes.len(),
                limit: self.limits.max_module_bytes,
            });
        }
        let sha256 = sha256_hex(bytes);
        let engine = self.engine_for(kind);
        let (module, compiled_from) = match self.cache_for(kind) {
            Some(cache) => cache.load_or_compile(engine, bytes, &sha256),
            None => Module::new(engine, bytes).map(|m| (m, CompiledFrom::Compiled)),
        }
        .map_err(|e| SandboxError::Invalid {
            reason: format!("{e:#}"),
        })?;
        validate::check_imports(&module, kind)?;
        validate::check_exports(&module, kind)?;
        validate::check_resources(&module, &self.limits)?;
        let (functions, aggregates) = match kind {
            ModuleKind::Job => (Vec::new(), Vec::new()),
            ModuleKind::Udf => validate::udf_declarations(bytes, &module)?,
        };
        let rows = match kind {
            ModuleKind::Udf if !functions.is_empty() => {
                Some(self.isolate(bytes, &functions, udf::isolate::Isolation::Rows)?)
            }
            _ => None,
        };
        let pre = match kind {
            ModuleKind::Job => Some(Arc::new(self.linker.instantiate_pre(&module).map_err(
                |e| SandboxError::ForbiddenImport {
                    module: abi::IMPORT_MODULE.to_string(),
                    name: "?".to_string(),
                    reason: format!("{e:#}"),
                },
            )?)),
            ModuleKind::Udf => None,
        };
        Ok(ValidatedModule {
            sha256,
            size: bytes.len(),
            kind,
            compiled_from,
            pre,
            module,
            functions,
            aggregates,
            rows,
            source: Arc::from(bytes),
        })
    }

    /// Rewrites a UDF module so each row of its scalar functions runs in a
    /// fresh state (`udf/isolate.rs`) and compiles the result, through the
    /// cache when there is one.
    pub(crate) fn isolate(
        &self,
        bytes: &[u8],
        functions: &[ScalarUdfDecl],
        isolation: udf::isolate::Isolation,
    ) -> Result<udf::RowsModule, SandboxError> {
        let isolated = udf::isolate_module(bytes, functions, isolation)?;
        let sha = sha256_hex(&isolated.bytes);
        let module = match &self.udf_cache {
            Some(cache) => cache
                .load_or_compile(&self.udf_engine, &isolated.bytes, &sha)
                .map(|(m, _)| m),
            None => Module::new(&self.udf_engine, &isolated.bytes),
        }
        .map_err(|e| SandboxError::NotIsolable {
            reason: format!("the rewritten module did not compile: {e:#}"),
        })?;
        if (isolated.snapshot_bytes as usize).saturating_mul(2) > self.limits.memory_bytes {
            return Err(SandboxError::LimitExceeded {
                limit: "memory",
                detail: format!(
                    "the module's memory with room for one row's heap and strings is {} bytes; twice that (for its pristine copy) is over the limit of {} bytes",
                    isolated.snapshot_bytes, self.limits.memory_bytes
                ),
            });
        }
        Ok(udf::RowsModule::new(module, &isolated))
    }

    /// Runs a validated job module to completion in a fresh, dropped-after instance.
    ///
    /// Blocks the calling thread for at most about [`Limits::deadline`]
    /// plus the time of a host call that is in progress when it passes.
    pub fn run_job(
        &self,
        module: &ValidatedModule,
        host: Box<dyn JobHost>,
    ) -> Result<RunReport, SandboxError> {
        self.run_job_cancellable(module, host, &Cancel::new())
    }

    /// [`Sandbox::run_job`] that also stops when `cancel` is triggered.
    pub fn run_job_cancellable(
        &self,
        module: &ValidatedModule,
        host: Box<dyn JobHost>,
        cancel: &Cancel,
    ) -> Result<RunReport, SandboxError> {
        if let Some(reason) = cancel.reason() {
            return Err(SandboxError::Cancelled { reason });
        }
        let pre = module.pre.as_ref().ok_or(SandboxError::MissingExport {
            name: abi::ENTRY_EXPORT.to_string(),
            expected: "a job module; UDF modules are not run as jobs",
        })?;
        if !Engine::same(pre.module().engine(), &self.engine) {
            return Err(SandboxError::ForeignModule);
        }
        let mut store = Store::new(&self.engine, HostState::new(host, &self.limits));
        store.limiter(|state| &mut state.limiter);
        store
            .set_fuel(self.limits.fuel)
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        // Every tick checks the cancel handle, then counts down the deadline.
        let mut ticks_left = engine::deadline_ticks(self.limits.deadline);
        let watched = cancel.clone();
        store.epoch_deadline_callback(move |mut ctx| {
            if let Some(reason) = watched.reason() {
                ctx.data_mut().stopped = Some(SandboxError::Cancelled { reason });
                return Err(Trap::Interrupt.into());
            }
            ticks_left = ticks_left.saturating_sub(1);
            if ticks_left == 0 {
                return Err(Trap::Interrupt.into());
            }
            Ok(wasmtime::UpdateDeadline::Continue(1))
        });
        store.set_epoch_deadline(1);
        let outcome = (|| {
            let instance = pre.instantiate(&mut store)?;
            let version = instance
                .get_typed_func::<(), i32>(&mut store, abi::VERSION_EXPORT)?
                .call(&mut store, ())?;
            if version != abi::ABI_VERSION as i32 {
                return Ok(Err(SandboxError::AbiVersion {
                    found: format!("version {version}"),
                    host: abi::ABI_VERSION,
                    expected: abi::IMPORT_MODULE,
                }));
            }
            let main = instance.get_typed_func::<(), i32>(&mut store, abi::ENTRY_EXPORT)?;
            Ok::<_, wasmtime::Error>(Ok(main.call(&mut store, ())?))
        })();
        let fuel_left = store.get_fuel().unwrap_or(0);
        let state = store.into_data();
        let report = RunReport {
            fuel_used: self.limits.fuel.saturating_sub(fuel_left),
            queries: state.queries,
            dry_runs: state.dry_runs,
            emits: state.emits,
            log_bytes_dropped: state.log_bytes_dropped,
        };
        match outcome {
            Ok(Ok(0)) => Ok(report),
            Ok(Ok(code)) => Err(SandboxError::JobFailed {
                code,
                message: state.last_error_log.unwrap_or_default(),
                fuel_used: report.fuel_used,
            }),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(classify_trap(
                e,
                state.stopped.or(state.limiter.hit),
                &self.limits,
            )),
        }
    }
}

/// Names the limit behind a trap. `stopped` is what a host function or the
/// memory limiter recorded before trapping; it wins over the trap itself.
fn classify_trap(
    e: wasmtime::Error,
    stopped: Option<SandboxError>,
    limits: &Limits,
) -> SandboxError {
    if let Some(stopped) = stopped {
        return stopped;
    }
    if let Some(pool) = e.downcast_ref::<PoolConcurrencyLimitError>() {
        return SandboxError::LimitExceeded {
            limit: "concurrent runs",
            detail: format!(
                "{} jobs are already running on this sandbox ({pool}); retry when one ends",
                limits.max_concurrent_runs
            ),
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => SandboxError::LimitExceeded {
            limit: "fuel",
            detail: format!("used all {} units", limits.fuel),
        },
        Some(Trap::StackOverflow) => SandboxError::LimitExceeded {
            limit: "stack",
            detail: format!("guest stack exceeded {} bytes", limits.stack_bytes),
        },
        Some(Trap::Interrupt) => SandboxError::LimitExceeded {
            limit: "deadline",
            detail: format!("ran longer than {}", engine::human(limits.deadline)),
        },
        Some(trap) => SandboxError::Trap {
            reason: trap.to_string(),
        },
        None => SandboxError::Trap {
            reason: format!("{e:#}"),
        },
    }
}
