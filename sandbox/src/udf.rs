//! WebAssembly UDFs inside DataFusion queries.
//!
//! A UDF module sees raw conditional values, so it imports nothing (checked
//! at upload by [`Sandbox::validate`] with [`ModuleKind::Udf`]).
//!
//! **Scalar functions run one row at a time** in a rewrite of the module
//! made at upload (`isolate.rs`): a trusted loop per function calls the
//! module's `udf_row_<name>` once per row and, before each row, restores
//! the memory the previous row wrote, every mutable global and the memory
//! size, so each row starts from the state right after instantiation. The
//! batch's inputs and outputs live in a second memory the module's code
//! cannot address. A row that traps, exhausts its instruction cap
//! ([`Limits::udf_row_instructions`]) or returns NaN is null and the loop
//! resumes at the next row (`rows.rs`); the count goes to
//! [`UdfModule::rows_failed`], for the service only. The layout is in
//! `udf-sdk/ABI.md`, "UDF modules".
//!
//! **Aggregates** keep the batch ABI (`aggregate.rs`): the host copies the
//! argument columns' Arrow buffers into guest memory, calls one export per
//! batch and copies the result column back out only after checking its
//! header. They are admitted only over open columns and released tables.
//!
//! **Instances.** A [`UdfModule`] is prepared per job (the compiled module,
//! its per-row cap and its count of failed rows); each query takes its own
//! handle with [`UdfModule::for_query`], whose small stacks of idle
//! instances serve that query's batches only and are dropped with it, so no
//! instance or guest memory outlives one query
//! ([`UdfModule::live_instances`] counts them). Within a query, reusing an
//! instance for scalar functions carries nothing between batches, since
//! every row starts pristine. Instantiating from the pool is cheap (a p50 of
//! about 1.2 µs for `guests/udf-light` in a release build, see `bench`,
//! built with the feature `bench`).
//!
//! **Limits.** The per-row instruction cap is deterministic. The wall-clock
//! deadline of [`Limits`] applies to each batch only as a guard against an
//! overloaded host: it fails the query. Memory and table limits apply to
//! each instance. UDF modules are compiled by the sandbox's UDF engine,
//! which has no fuel metering and no NaN canonicalisation (see
//! `engine.rs`). The ticker thread that drives the epochs lives as long as
//! the [`Sandbox`] or any [`UdfModule`] made from it. Results are
//! deterministic except for the payload bits of a NaN, and NaN results of
//! scalar functions are nulls.

mod aggregate;
#[cfg(feature = "bench")]
pub mod bench;
pub(crate) mod isolate;
mod rows;

pub use aggregate::{AggregateUdfDecl, WasmAggregateUdf};
pub(crate) use rows::RowsModule;

/// Rewrites a UDF module's bytes so each row of `functions` runs in a
/// fresh state; see `isolate.rs`.
pub(crate) fn isolate_module(
    bytes: &[u8],
    functions: &[ScalarUdfDecl],
    isolation: isolate::Isolation,
) -> Result<isolate::Isolated, SandboxError> {
    let mut typed = Vec::with_capacity(functions.len());
    for f in functions {
        let (args, returns) = abi_types(f).map_err(|e| SandboxError::UdfDeclaration {
            reason: e.to_string(),
        })?;
        typed.push((f.name.as_str(), args, returns));
    }
    let rows: Vec<isolate::RowFunction<'_>> = typed
        .iter()
        .map(|(name, args, returns)| isolate::RowFunction {
            name,
            args,
            returns: *returns,
        })
        .collect();
    isolate::isolate(bytes, &rows, isolation)
}

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, PrimitiveArray, StringArray,
};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, ScalarBuffer};
use arrow::datatypes::{ArrowPrimitiveType, DataType, Float64Type, Int64Type};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use udf_sdk::udf::{self as abi, ArgDesc, OutputHeader, UdfType};
use wasmtime::{Engine, Instance, InstancePre, Linker, Memory, Store, TypedFunc};

use crate::engine::EpochTicker;
use crate::host::MemoryLimiter;
use crate::{Limits, ModuleKind, Sandbox, SandboxError, ValidatedModule, engine};

// Guest memory is little-endian and the host copies Arrow buffers into it
// byte for byte.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "WebAssembly UDFs need a little-endian host"
);

/// Smallest input buffer the host asks the guest for; buffers then grow by
/// doubling, so a run of equal batches allocates once.
const MIN_BUFFER: usize = 64 << 10;

/// Guest buffer slots of an instance: the call frame, an aggregate's group
/// indices, its states and the partial states it merges; argument `i` then
/// uses `ARG_SLOTS + 3i` (values or offsets), `+ 1` (string bytes) and
/// `+ 2` (validity).
const FRAME_SLOT: usize = 0;
const GROUPS_SLOT: usize = 1;
const STATES_SLOT: usize = 2;
const OTHERS_SLOT: usize = 3;
const ARG_SLOTS: usize = 4;

/// Why a UDF could not be declared or a batch failed.
#[derive(Debug, thiserror::Error)]
pub enum UdfError {
    #[error(
        "UDF `{udf}`: the module has no export `{export}`; declare it with `udf_sdk::scalar_udf!(fn {udf}(...) -> ...)`"
    )]
    MissingExport { udf: String, export: String },
    #[error("UDF `{udf}`: {problem}")]
    Declaration { udf: String, problem: String },
    #[error(
        "UDF `{udf}` refused its arguments ({declared}): the module's `{export}` was written for other types or another number of arguments; fix the declaration"
    )]
    SignatureMismatch {
        udf: String,
        export: String,
        declared: String,
    },
    #[error(
        "UDF `{udf}` stopped: {limit} limit exceeded in one batch ({detail}); its instance was dropped"
    )]
    LimitExceeded {
        udf: String,
        limit: &'static str,
        detail: String,
    },
    #[error("UDF `{udf}` trapped: {reason}; its instance was dropped")]
    Trap { udf: String, reason: String },
    #[error(
        "UDF `{udf}` returned an invalid result: {problem}; the batch was discarded and its instance dropped"
    )]
    BadOutput { udf: String, problem: String },
    #[error("UDF `{udf}`: {source}")]
    Sandbox {
        udf: String,
        #[source]
        source: SandboxError,
    },
}

impl UdfError {
    fn from_sandbox(udf: &str, e: SandboxError) -> Self {
        let udf = udf.to_string();
        match e {
            SandboxError::LimitExceeded { limit, detail } => {
                UdfError::LimitExceeded { udf, limit, detail }
            }
            SandboxError::Trap { reason } => UdfError::Trap { udf, reason },
            source => UdfError::Sandbox { udf, source },
        }
    }
}

impl From<UdfError> for DataFusionError {
    fn from(e: UdfError) -> Self {
        DataFusionError::External(Box::new(e))
    }
}

/// What a scalar UDF is called in SQL and the types it takes and returns.
///
/// The module must export `udf_<name>`. Arguments may be `Int64`,
/// `Float64` or `Utf8`; the result `Int64` or `Float64`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScalarUdfDecl {
    /// The SQL name, and the export's name after `udf_`.
    pub name: String,
    /// Argument types, in order.
    pub args: Vec<DataType>,
    /// Result type.
    pub returns: DataType,
}

impl ScalarUdfDecl {
    /// A declaration of `name(args...) -> returns`.
    pub fn new(name: impl Into<String>, args: Vec<DataType>, returns: DataType) -> Self {
        ScalarUdfDecl {
            name: name.into(),
            args,
            returns,
        }
    }
}

fn udf_type(ty: &DataType) -> Option<UdfType> {
    match ty {
        DataType::Int64 => Some(UdfType::Int64),
        DataType::Float64 => Some(UdfType::Float64),
        DataType::Utf8 => Some(UdfType::Utf8),
        _ => None,
    }
}

/// A buffer the guest allocated for the host, reused while it is big enough.
#[derive(Clone, Copy, Default)]
struct GuestBuf {
    ptr: usize,
    cap: usize,
}

/// Counts the live instances of one prepared module (all its query
/// handles together): one is held by every instance and released when the
/// instance is dropped.
pub(crate) struct Live(Arc<AtomicUsize>);

impl Live {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Live(Arc::clone(count))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One instance of a UDF module with its store and input buffers.
struct UdfInstance {
    _live: Live,
    store: Store<MemoryLimiter>,
    instance: Instance,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    /// See the `*_SLOT` constants: the call frame, an aggregate's group
    /// indices, states and partial states, then three slots per argument.
    buffers: Vec<GuestBuf>,
}

impl UdfInstance {
    /// A buffer of at least `len` bytes in slot `slot`, allocated by the
    /// guest when the current one is too small, and checked to lie inside
    /// the guest's memory.
    fn buffer(&mut self, slot: usize, len: usize) -> Result<usize, String> {
        if self.buffers.len() <= slot {
            self.buffers.resize(slot + 1, GuestBuf::default());
        }
        let current = self.buffers[slot];
        if current.cap >= len && current.ptr != 0 {
            return Ok(current.ptr);
        }
        let cap = len.max(MIN_BUFFER).next_power_of_two();
        let request = i32::try_from(cap)
            .map_err(|_| format!("a batch needs a buffer of {len} bytes, over 2 GiB"))?;
        let ptr = self
            .alloc
            .call(&mut self.store, request)
            .map_err(|e| format!("`{}` failed: {e:#}", abi::ALLOC_EXPORT))?;
        let ptr = ptr as u32 as usize;
        let size = self.memory.data_size(&self.store);
        if ptr == 0 || !ptr.is_multiple_of(abi::ALLOC_ALIGN) || ptr.saturating_add(cap) > size {
            return Err(format!(
                "`{}({cap})` returned {ptr}, not an {}-byte aligned buffer inside its {size}-byte memory",
                abi::ALLOC_EXPORT,
                abi::ALLOC_ALIGN
            ));
        }
        self.buffers[slot] = GuestBuf { ptr, cap };
        Ok(ptr)
    }

    /// Copies `bytes` into the buffer of `slot` (grown when too small); its
    /// address.
    fn put(&mut self, slot: usize, bytes: &[u8]) -> Result<usize, String> {
        let ptr = self.buffer(slot, bytes.len())?;
        self.write(ptr, bytes)?;
        Ok(ptr)
    }

    /// Calls the export `export` with `params`, naming the limit or trap
    /// that stopped it.
    fn call<P: wasmtime::WasmParams>(
        &mut self,
        udf: &str,
        export: &str,
        params: P,
        limits: &Limits,
    ) -> Result<i32, UdfError> {
        let called = self
            .instance
            .get_typed_func::<P, i32>(&mut self.store, export)
            .and_then(|f| f.call(&mut self.store, params));
        called.map_err(|e| {
            let hit = self.store.data_mut().hit.take();
            UdfError::from_sandbox(udf, crate::classify_trap(e, hit, limits))
        })
    }

    /// Copies `bytes` into guest memory at `ptr`.
    fn write(&mut self, ptr: usize, bytes: &[u8]) -> Result<(), String> {
        let data = self.memory.data_mut(&mut self.store);
        match ptr
            .checked_add(bytes.len())
            .and_then(|end| data.get_mut(ptr..end))
        {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(format!(
                "an input buffer at {ptr} of {} bytes left the guest's memory",
                bytes.len()
            )),
        }
    }
}

/// A compiled UDF module ready to serve [`WasmScalarUdf`]s: the pre-linked
/// module, the per-row instruction cap it runs under and the idle instances
/// of one query. Cheap to clone (a clone shares the idle instances; take a
/// handle of its own for each query with [`UdfModule::for_query`]).
#[derive(Clone)]
pub struct UdfModule {
    inner: Arc<ModuleInner>,
    /// Idle instances of this handle: one query's.
    pools: Arc<Pools>,
    /// Instructions one row may execute (a grant's cap, at most the
    /// sandbox's [`Limits::udf_row_instructions`]).
    row_instructions: u64,
}

/// Instances between batches of one query.
#[derive(Default)]
struct Pools {
    /// Of the module as uploaded (aggregates).
    aggregates: Mutex<Vec<UdfInstance>>,
    /// Of the rewritten module (scalar functions, one row at a time).
    rows: Mutex<Vec<rows::RowInstance>>,
    /// Rows this query's scalar functions ran on, and failed on.
    counts: rows::RowCounts,
}

struct ModuleInner {
    engine: Engine,
    pre: InstancePre<MemoryLimiter>,
    limits: Limits,
    sha256: String,
    /// The module as uploaded, which a cluster executor validates again.
    source: Arc<[u8]>,
    functions: Vec<ScalarUdfDecl>,
    aggregates: Vec<AggregateUdfDecl>,
    /// Row-at-a-time evaluation of the scalar functions, in the rewritten
    /// module (`None` when the module has none).
    rows: Option<rows::Rows>,
    max_idle: usize,
    /// Instances alive now, over every query handle of this module.
    live: Arc<AtomicUsize>,
    /// Keeps the epochs advancing, and so the deadline armed, while this
    /// module can run a batch.
    _ticker: Arc<EpochTicker>,
}

impl std::fmt::Debug for UdfModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdfModule")
            .field("sha256", &self.inner.sha256)
            .field("row_instructions", &self.row_instructions)
            .field("idle_instances", &self.idle_instances())
            .finish_non_exhaustive()
    }
}

impl UdfModule {
    /// Prepares a module that `sandbox` validated as [`ModuleKind::Udf`],
    /// instantiating it once to check its UDF ABI version.
    pub fn new(sandbox: &Sandbox, module: &ValidatedModule) -> Result<Self, SandboxError> {
        if module.kind != ModuleKind::Udf {
            return Err(SandboxError::MissingExport {
                name: abi::VERSION_EXPORT.into(),
                expected: "a UDF module; validate it with `ModuleKind::Udf`",
            });
        }
        if !Engine::same(module.module.engine(), &sandbox.udf_engine) {
            return Err(SandboxError::ForeignModule);
        }
        let pre = Linker::new(&sandbox.udf_engine)
            .instantiate_pre(&module.module)
            .map_err(|e| SandboxError::Invalid {
                reason: format!("{e:#}"),
            })?;
        let rows = match &module.rows {
            Some(m) => {
                let pre = Linker::new(&sandbox.udf_engine)
                    .instantiate_pre(&m.module)
                    .map_err(|e| SandboxError::Invalid {
                        reason: format!("{e:#}"),
                    })?;
                Some(rows::Rows::new(pre, m))
            }
            None => None,
        };
        let max_idle = std::thread::available_parallelism()
            .map_or(4, |n| n.get())
            .min(sandbox.limits.max_concurrent_runs.max(1) as usize);
        let udf = UdfModule {
            inner: Arc::new(ModuleInner {
                engine: sandbox.udf_engine.clone(),
                pre,
                limits: sandbox.limits.clone(),
                sha256: module.sha256.clone(),
                source: Arc::clone(&module.source),
                functions: module.functions.clone(),
                aggregates: module.aggregates.clone(),
                rows,
                max_idle,
                live: Arc::new(AtomicUsize::new(0)),
                _ticker: sandbox.ticker.clone(),
            }),
            pools: Arc::default(),
            row_instructions: sandbox.limits.udf_row_instructions,
        };
        let mut first = udf.inner.instantiate()?;
        let version = first
            .instance
            .get_typed_func::<(), i32>(&mut first.store, abi::VERSION_EXPORT)
            .and_then(|f| f.call(&mut first.store, ()))
            .map_err(|e| {
                let hit = first.store.data_mut().hit.take();
                crate::classify_trap(e, hit, &udf.inner.limits)
            })?;
        if version != abi::UDF_ABI_VERSION as i32 {
            return Err(SandboxError::AbiVersion {
                found: format!("UDF ABI version {version}"),
                host: abi::UDF_ABI_VERSION,
                expected: abi::VERSION_EXPORT,
            });
        }
        // The checks' instances are dropped: nothing runs in an instance
        // before the query that takes it.
        drop(first);
        if let Some(rows) = &udf.inner.rows {
            // Data-independent failures show here, before any query runs.
            drop(rows.instantiate(&udf.inner.engine, &udf.inner.limits, &udf.inner.live)?);
        }
        Ok(udf)
    }

    /// The same module with a per-row instruction cap of `cap` (a grant's
    /// setting) instead of the sandbox's [`Limits::udf_row_instructions`],
    /// which stays the ceiling: a larger `cap` is lowered to it. Applies to
    /// this handle and the query handles taken from it, not to other
    /// clones.
    pub fn with_row_instructions(mut self, cap: u64) -> Self {
        self.row_instructions = cap.min(self.inner.limits.udf_row_instructions);
        self
    }

    /// The per-row instruction cap this handle runs rows under.
    pub fn row_instructions(&self) -> u64 {
        self.row_instructions
    }

    /// A handle for one query: the same compiled module, cap and count of
    /// failed rows, with no instances of its own yet. The instances it
    /// creates serve only the batches of functions taken from it, and are
    /// dropped with the last of them (when the query's session is dropped),
    /// so no instance, and no guest memory, lives from one query to the next.
    pub fn for_query(&self) -> Self {
        UdfModule {
            inner: Arc::clone(&self.inner),
            pools: Arc::default(),
            row_instructions: self.row_instructions,
        }
    }

    /// Instances of this module alive now, over every handle taken from it
    /// (idle or running a batch). Zero once every query's handle and
    /// functions are dropped.
    pub fn live_instances(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed)
    }

    /// Rows on which a scalar function of this module trapped, ran out of
    /// its instruction cap or returned NaN, each made null. For the
    /// service's records (the ledger, the provider): never for whoever
    /// wrote the query, since how many rows failed can depend on the data.
    pub fn rows_failed(&self) -> u64 {
        self.inner.rows.as_ref().map_or(0, |r| r.counts.get().1)
    }

    /// Rows the scalar functions of this module were called on (failed
    /// ones included); for the service's records, as [`Self::rows_failed`].
    pub fn rows_evaluated(&self) -> u64 {
        self.inner.rows.as_ref().map_or(0, |r| r.counts.get().0)
    }

    /// Rows this query handle's scalar functions (those taken from it, or
    /// from its clones) ran on, and failed on: what a cluster executor
    /// reports of one task.
    pub fn query_rows(&self) -> (u64, u64) {
        self.pools.counts.get()
    }

    /// Whether `other` is this query handle or a clone of it (sharing its
    /// instances and counts).
    pub fn same_query(&self, other: &UdfModule) -> bool {
        Arc::ptr_eq(&self.pools, &other.pools)
    }

    /// Counts rows the module's scalar functions ran on, and failed on,
    /// somewhere else (a cluster's executors) as its own, so
    /// [`Self::rows_evaluated`] and [`Self::rows_failed`] cover them.
    pub fn credit_rows(&self, evaluated: u64, failed: u64) {
        if let Some(rows) = &self.inner.rows {
            rows.counts.add(evaluated, failed);
        }
    }

    /// The module as uploaded (a cluster ships it to executors, which
    /// validate it again).
    pub fn source(&self) -> &Arc<[u8]> {
        &self.inner.source
    }

    /// Hex SHA-256 of the module bytes.
    pub fn sha256(&self) -> &str {
        &self.inner.sha256
    }

    /// Instances of this handle waiting for its query's next batch (of
    /// aggregates and of the row loops together).
    pub fn idle_instances(&self) -> usize {
        lock_pool(&self.pools.aggregates).len() + lock_pool(&self.pools.rows).len()
    }

    /// Every function the module declares (see
    /// [`ValidatedModule::functions`]), ready to register in a session.
    pub fn declared(&self) -> Result<Vec<WasmScalarUdf>, UdfError> {
        self.inner
            .functions
            .iter()
            .map(|d| self.scalar(d.clone()))
            .collect()
    }

    /// Every scalar function and aggregate the module declares, ready to
    /// register in a session.
    pub fn functions(&self) -> Result<Vec<WasmUdf>, UdfError> {
        let scalars = self.declared()?.into_iter().map(WasmUdf::Scalar);
        let aggregates = self
            .declared_aggregates()?
            .into_iter()
            .map(WasmUdf::Aggregate);
        Ok(scalars.chain(aggregates).collect())
    }

    /// A scalar UDF backed by the module's `udf_row_<name>` export, run one
    /// row at a time by the loop the upload rewrite added. `decl` must be
    /// one of the module's declarations, as declared.
    pub fn scalar(&self, decl: ScalarUdfDecl) -> Result<WasmScalarUdf, UdfError> {
        let udf = decl.name.clone();
        let export = isolate::loop_export(&decl.name);
        let Some(declared) = self.inner.functions.iter().find(|d| d.name == decl.name) else {
            return Err(UdfError::MissingExport {
                udf,
                export: format!("{}{}", abi::ROW_EXPORT_PREFIX, decl.name),
            });
        };
        abi_types(&decl)?;
        if *declared != decl {
            return Err(UdfError::SignatureMismatch {
                udf,
                export: format!("{}{}", abi::ROW_EXPORT_PREFIX, decl.name),
                declared: format!("{:?} -> {}", decl.args, decl.returns),
            });
        }
        let (args, returns) = abi_types(&decl)?;
        // Arguments are coerced to the declared types in `coerce_types`.
        let signature = Signature::user_defined(Volatility::Immutable);
        Ok(WasmScalarUdf {
            decl,
            export,
            args,
            returns,
            signature,
            module: self.clone(),
        })
    }
}

/// Gives the store a fresh deadline (the UDF engine meters no fuel; rows
/// have their own instruction cap, see `isolate.rs`).
fn arm(store: &mut Store<MemoryLimiter>, limits: &Limits) {
    store.epoch_deadline_trap();
    store.set_epoch_deadline(engine::deadline_ticks(limits.deadline));
}

/// Locks a pool of idle instances.
fn lock_pool<T>(pool: &Mutex<Vec<T>>) -> std::sync::MutexGuard<'_, Vec<T>> {
    // Instances are pushed and popped whole; a poisoned lock holds no
    // half-made state.
    pool.lock().unwrap_or_else(|p| p.into_inner())
}

impl ModuleInner {
    fn instantiate(&self) -> Result<UdfInstance, SandboxError> {
        let mut store = Store::new(&self.engine, MemoryLimiter::new(&self.limits));
        store.limiter(|l| l);
        self.arm(&mut store);
        let made = (|| {
            let instance = self.pre.instantiate(&mut store)?;
            let memory = instance
                .get_memory(&mut store, "memory")
                .ok_or_else(|| wasmtime::Error::msg("the module exports no memory"))?;
            let alloc = instance.get_typed_func::<i32, i32>(&mut store, abi::ALLOC_EXPORT)?;
            Ok::<_, wasmtime::Error>((instance, memory, alloc))
        })();
        match made {
            Ok((instance, memory, alloc)) => Ok(UdfInstance {
                _live: Live::new(&self.live),
                store,
                instance,
                memory,
                alloc,
                buffers: Vec::new(),
            }),
            Err(e) => {
                let hit = store.data_mut().hit.take();
                Err(crate::classify_trap(e, hit, &self.limits))
            }
        }
    }

    fn arm(&self, store: &mut Store<MemoryLimiter>) {
        arm(store, &self.limits);
    }
}

impl UdfModule {
    /// Runs `f` on an idle (or new) aggregate instance of this handle,
    /// armed with a fresh deadline before anything runs in the guest
    /// (`unseen_alloc` included: an instance may have been idle for longer
    /// than a deadline). The instance is given back only when `f`
    /// succeeded; on any error it is dropped.
    fn with_instance<T>(
        &self,
        udf: &str,
        f: impl FnOnce(&mut UdfInstance) -> Result<T, UdfError>,
    ) -> Result<T, UdfError> {
        let idle = lock_pool(&self.pools.aggregates).pop();
        let mut instance = match idle {
            Some(instance) => instance,
            None => self
                .inner
                .instantiate()
                .map_err(|e| UdfError::from_sandbox(udf, e))?,
        };
        self.inner.arm(&mut instance.store);
        let out = f(&mut instance)?;
        let mut idle = lock_pool(&self.pools.aggregates);
        if idle.len() < self.inner.max_idle {
            idle.push(instance);
        }
        Ok(out)
    }
}

/// A function of a UDF module, scalar or aggregate.
#[derive(Debug, Clone)]
pub enum WasmUdf {
    /// A scalar function: one value per row.
    Scalar(WasmScalarUdf),
    /// An aggregate: one value per group.
    Aggregate(WasmAggregateUdf),
}

impl WasmUdf {
    /// Its SQL name.
    pub fn name(&self) -> &str {
        match self {
            WasmUdf::Scalar(f) => &f.decl.name,
            WasmUdf::Aggregate(f) => &f.decl().function.name,
        }
    }

    /// Makes it callable by name in `ctx`'s queries.
    pub fn register(&self, ctx: &datafusion::prelude::SessionContext) {
        match self {
            WasmUdf::Scalar(f) => {
                ctx.register_udf(datafusion::logical_expr::ScalarUDF::from(f.clone()))
            }
            WasmUdf::Aggregate(f) => {
                ctx.register_udaf(datafusion::logical_expr::AggregateUDF::from(f.clone()))
            }
        }
    }
}

/// A DataFusion scalar UDF whose body is a WebAssembly export.
///
/// `Volatility::Immutable`, with the argument types of its
/// [`ScalarUdfDecl`]: any integer or float becomes Float64 where Float64 is
/// declared, any integer Int64, any string Utf8; anything else, or another
/// number of arguments, is a planning error. Register it with
/// `ctx.register_udf(ScalarUDF::from(udf))`.
#[derive(Debug, Clone)]
pub struct WasmScalarUdf {
    decl: ScalarUdfDecl,
    export: String,
    args: Vec<UdfType>,
    returns: UdfType,
    signature: Signature,
    module: UdfModule,
}

impl PartialEq for WasmScalarUdf {
    fn eq(&self, other: &Self) -> bool {
        self.decl == other.decl && self.module.sha256() == other.module.sha256()
    }
}

impl Eq for WasmScalarUdf {}

impl Hash for WasmScalarUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.decl.hash(state);
        self.module.sha256().hash(state);
    }
}

impl WasmScalarUdf {
    /// The declaration it was made from.
    pub fn decl(&self) -> &ScalarUdfDecl {
        &self.decl
    }

    /// The module serving it.
    pub fn module(&self) -> &UdfModule {
        &self.module
    }

    fn declared(&self) -> String {
        let args: Vec<_> = self.args.iter().map(|t| t.name()).collect();
        format!("({}) -> {}", args.join(", "), self.returns.name())
    }

    /// Runs the export over one batch of equally long argument arrays.
    pub fn evaluate(&self, arrays: &[ArrayRef], rows: usize) -> Result<ArrayRef, UdfError> {
        if arrays.len() != self.args.len() || arrays.iter().any(|a| a.len() != rows) {
            return Err(UdfError::Declaration {
                udf: self.decl.name.clone(),
                problem: format!(
                    "called with {} arguments of lengths {:?} for {rows} rows; declared {}",
                    arrays.len(),
                    arrays.iter().map(|a| a.len()).collect::<Vec<_>>(),
                    self.declared()
                ),
            });
        }
        if rows == 0 {
            return Ok(match self.returns {
                UdfType::Int64 => Arc::new(Int64Array::from(Vec::<i64>::new())),
                _ => Arc::new(Float64Array::from(Vec::<f64>::new())),
            });
        }
        let inner = &self.module.inner;
        let rows_state = inner.rows.as_ref().ok_or_else(|| UdfError::MissingExport {
            udf: self.decl.name.clone(),
            export: self.export.clone(),
        })?;
        let pool = &self.module.pools.rows;
        let live = &inner.live;
        let max_idle = inner.max_idle;
        rows_state.with_instance(
            pool,
            max_idle,
            &inner.engine,
            &inner.limits,
            live,
            &self.decl.name,
            |inst| {
                rows_state.evaluate(
                    inst,
                    &self.decl.name,
                    &self.export,
                    &self.args,
                    self.returns,
                    arrays,
                    rows,
                    self.module.row_instructions,
                    &inner.limits,
                    &self.module.pools.counts,
                )
            },
        )
    }
}

/// The ABI types of a declaration's arguments and result, or why it cannot
/// be served.
fn abi_types(decl: &ScalarUdfDecl) -> Result<(Vec<UdfType>, UdfType), UdfError> {
    let mut args = Vec::with_capacity(decl.args.len());
    for ty in &decl.args {
        args.push(udf_type(ty).ok_or_else(|| UdfError::Declaration {
            udf: decl.name.clone(),
            problem: format!("argument type {ty} is not supported; use Int64, Float64 or Utf8"),
        })?);
    }
    if args.is_empty() {
        return Err(UdfError::Declaration {
            udf: decl.name.clone(),
            problem: "a UDF takes at least one argument".into(),
        });
    }
    let returns = match udf_type(&decl.returns) {
        Some(t @ (UdfType::Int64 | UdfType::Float64)) => t,
        _ => {
            return Err(UdfError::Declaration {
                udf: decl.name.clone(),
                problem: format!(
                    "result type {} is not supported; use Int64 or Float64",
                    decl.returns
                ),
            });
        }
    };
    Ok((args, returns))
}

/// `rows` as the ABI's `i32`.
fn batch_rows(udf: &str, rows: usize) -> Result<i32, UdfError> {
    i32::try_from(rows).map_err(|_| bad_input(udf, format!("a batch of {rows} rows is too large")))
}

fn bad_input(udf: &str, problem: String) -> UdfError {
    UdfError::Declaration {
        udf: udf.to_string(),
        problem,
    }
}

fn bad_output(udf: &str, problem: impl Into<String>) -> UdfError {
    UdfError::BadOutput {
        udf: udf.to_string(),
        problem: problem.into(),
    }
}

/// Copies every argument into guest memory and writes the call frame
/// describing them; the frame's address.
fn write_frame(
    inst: &mut UdfInstance,
    udf: &str,
    arrays: &[ArrayRef],
    types: &[UdfType],
    rows: usize,
) -> Result<usize, UdfError> {
    let mut descs = Vec::with_capacity(arrays.len());
    for (i, (array, ty)) in arrays.iter().zip(types).enumerate() {
        descs.push(copy_arg(inst, udf, i, array, *ty, rows)?);
    }
    let mut frame = Vec::with_capacity(abi::frame_bytes(descs.len()));
    abi::encode_frame(&descs, &mut frame);
    inst.put(FRAME_SLOT, &frame).map_err(|p| bad_input(udf, p))
}

/// Copies one argument's buffers into guest memory and describes them.
fn copy_arg(
    inst: &mut UdfInstance,
    udf: &str,
    index: usize,
    array: &ArrayRef,
    ty: UdfType,
    rows: usize,
) -> Result<ArgDesc, UdfError> {
    let slot = ARG_SLOTS + 3 * index;
    let input = |p: String| bad_input(udf, p);
    let wrong_type = || {
        input(format!(
            "argument {} is {}, declared {}",
            index + 1,
            array.data_type(),
            ty.name()
        ))
    };
    let (data, aux) = match ty {
        UdfType::Int64 | UdfType::Float64 => {
            let values: &[u8] = match ty {
                UdfType::Int64 => array
                    .as_primitive_opt::<Int64Type>()
                    .ok_or_else(wrong_type)?
                    .values()
                    .inner()
                    .as_slice(),
                _ => array
                    .as_primitive_opt::<Float64Type>()
                    .ok_or_else(wrong_type)?
                    .values()
                    .inner()
                    .as_slice(),
            };
            (inst.put(slot, values).map_err(input)?, 0)
        }
        UdfType::Utf8 => {
            let strings: &StringArray = array.as_string_opt::<i32>().ok_or_else(wrong_type)?;
            let offsets = strings.value_offsets();
            let (first, last) = (offsets[0] as usize, offsets[rows] as usize);
            let bytes = strings
                .values()
                .as_slice()
                .get(first..last)
                .ok_or_else(|| {
                    input(format!(
                        "argument {} has offsets outside its bytes",
                        index + 1
                    ))
                })?;
            let offsets_ptr = if first == 0 {
                let raw = strings.offsets().inner().inner().as_slice();
                inst.put(slot, raw).map_err(input)?
            } else {
                let rebased: Vec<u8> = offsets
                    .iter()
                    .flat_map(|o| (o - offsets[0]).to_le_bytes())
                    .collect();
                inst.put(slot, &rebased).map_err(input)?
            };
            let bytes_ptr = inst.put(slot + 1, bytes).map_err(input)?;
            (offsets_ptr, bytes_ptr)
        }
    };
    let validity = match array.nulls().filter(|n| n.null_count() > 0) {
        None => 0,
        Some(nulls) => {
            // Realigned to bit 0 (copied only when the array is a slice
            // starting mid-byte).
            let bits = nulls.inner().sliced();
            let bits = bits
                .as_slice()
                .get(..abi::validity_bytes(rows))
                .ok_or_else(|| {
                    input(format!(
                        "argument {} has a short validity bitmap",
                        index + 1
                    ))
                })?;
            inst.put(slot + 2, bits).map_err(input)?
        }
    };
    Ok(ArgDesc {
        ty: ty.tag(),
        data: data as u32,
        aux: aux as u32,
        validity: validity as u32,
    })
}

/// Checks the result header at `header_ptr` and copies the column of
/// `rows` values of type `returns` it describes out of guest memory.
fn read_column(
    memory: &[u8],
    udf: &str,
    returns: UdfType,
    header_ptr: usize,
    rows: usize,
) -> Result<ArrayRef, UdfError> {
    let region = |what: &str, ptr: usize, len: usize| -> Result<&[u8], UdfError> {
        ptr.checked_add(len)
            .and_then(|end| memory.get(ptr..end))
            .ok_or_else(|| {
                bad_output(
                    udf,
                    format!(
                        "its {what} ({len} bytes at {ptr}) lies outside its {}-byte memory",
                        memory.len()
                    ),
                )
            })
    };
    let header_bytes = region("result header", header_ptr, abi::OUTPUT_HEADER_BYTES)?;
    let mut raw = [0u8; abi::OUTPUT_HEADER_BYTES];
    raw.copy_from_slice(header_bytes);
    let header = OutputHeader::decode(&raw);
    if header.rows as usize != rows {
        return Err(bad_output(
            udf,
            format!("{} rows for a batch of {rows}", header.rows),
        ));
    }
    if header.ty != returns.tag() {
        let found = UdfType::from_tag(header.ty).map_or_else(
            || format!("unknown type tag {}", header.ty),
            |t| t.name().to_string(),
        );
        return Err(bad_output(
            udf,
            format!("a column of {found}, declared {}", returns.name()),
        ));
    }
    let values = region("values", header.values as usize, rows * 8)?;
    let nulls = match header.validity {
        0 if header.null_count != 0 => {
            return Err(bad_output(
                udf,
                format!(
                    "a null count of {} without a validity bitmap",
                    header.null_count
                ),
            ));
        }
        0 => None,
        ptr => {
            let bits = region("validity bitmap", ptr as usize, abi::validity_bytes(rows))?;
            let nulls = NullBuffer::new(BooleanBuffer::new(Buffer::from_slice_ref(bits), 0, rows));
            if nulls.null_count() != header.null_count as usize {
                return Err(bad_output(
                    udf,
                    format!(
                        "a validity bitmap with {} nulls but a null count of {}",
                        nulls.null_count(),
                        header.null_count
                    ),
                ));
            }
            (nulls.null_count() > 0).then_some(nulls)
        }
    };
    let values = Buffer::from_slice_ref(values);
    Ok(match returns {
        UdfType::Int64 => primitive::<Int64Type>(values, rows, nulls),
        _ => primitive::<Float64Type>(values, rows, nulls),
    })
}

/// The declared argument types for `arg_types` where they convert without
/// surprising a SQL user (see `ABI.md`, "Declarations"), else a planning
/// error naming the signature.
fn coerce_to_declared(decl: &ScalarUdfDecl, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
    let declared = &decl.args;
    let signature = || {
        let types: Vec<String> = declared.iter().map(ToString::to_string).collect();
        format!("{}({})", decl.name, types.join(", "))
    };
    if arg_types.len() != declared.len() {
        return Err(DataFusionError::Plan(format!(
            "UDF `{}` takes {} arguments ({}), not {}",
            decl.name,
            declared.len(),
            signature(),
            arg_types.len()
        )));
    }
    arg_types
        .iter()
        .zip(declared)
        .enumerate()
        .map(|(i, (given, want))| {
            let fits = given == want
                || given.is_null()
                || match want {
                    DataType::Float64 => given.is_numeric(),
                    DataType::Int64 => given.is_integer(),
                    DataType::Utf8 => matches!(
                        given,
                        DataType::Utf8View | DataType::LargeUtf8 | DataType::Dictionary(..)
                    ),
                    _ => false,
                };
            if fits {
                Ok(want.clone())
            } else {
                Err(DataFusionError::Plan(format!(
                    "UDF `{}`: argument {} is {given}, which does not convert to {want} ({}); cast it in the query",
                    decl.name,
                    i + 1,
                    signature()
                )))
            }
        })
        .collect()
}

fn primitive<T: ArrowPrimitiveType>(
    values: Buffer,
    rows: usize,
    nulls: Option<NullBuffer>,
) -> ArrayRef {
    // Lengths were checked above: `values` holds `rows` 8-byte values and
    // `nulls` covers `rows` bits, so construction cannot fail.
    Arc::new(PrimitiveArray::<T>::new(
        ScalarBuffer::new(values, 0, rows),
        nulls,
    ))
}

impl ScalarUDFImpl for WasmScalarUdf {
    fn name(&self) -> &str {
        &self.decl.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.decl.returns.clone())
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        coerce_to_declared(&self.decl, arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let rows = arrays.first().map_or(0, |a| a.len());
        let out = self.evaluate(&arrays, rows)?;
        if all_scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}
