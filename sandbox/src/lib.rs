//! The wasmtime host that runs analysts' WebAssembly jobs.
//!
//! A job module may import only the host functions of the Unseen ABI
//! (`udf_sdk::abi`, written down in `udf-sdk/ABI.md`): no WASI, no clock, no
//! randomness, no filesystem, no network. The sandbox checks that at upload,
//! runs each job in a fresh store with memory, table, stack, fuel, query and
//! output limits, and turns every trap into a [`SandboxError`] naming the
//! limit. It knows nothing of policy, data or storage: what a query returns
//! and where an output goes is decided by the caller's [`JobHost`].
#![forbid(unsafe_code)]

mod host;
mod validate;

use std::sync::Arc;

use udf_sdk::abi;
use wasmtime::{Config, Engine, InstancePre, Linker, Module, Store, Trap};

use host::HostState;
pub use host::{JobHost, LogLevel};
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
    /// Fuel (roughly, wasm instructions) a run may consume.
    pub fuel: u64,
    /// Largest native stack the guest may use, in bytes.
    pub stack_bytes: usize,
    /// Queries a run may submit.
    pub max_queries: u32,
    /// Outputs a run may emit.
    pub max_emits: u32,
    /// Total bytes of emitted outputs.
    pub max_output_bytes: usize,
    /// Bytes of log text a run may write; the rest is dropped and counted.
    pub max_log_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_module_bytes: 16 << 20,
            memory_bytes: 64 << 20,
            table_elements: 10_000,
            fuel: 2_000_000_000,
            stack_bytes: 512 << 10,
            max_queries: 64,
            max_emits: 16,
            max_output_bytes: 4 << 20,
            max_log_bytes: 64 << 10,
        }
    }
}

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
    #[error(
        "module lacks the export `{name}` ({expected}); declare the job with `udf_sdk::job!(run)`"
    )]
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
    #[error("job stopped: {limit} limit exceeded ({detail})")]
    LimitExceeded { limit: &'static str, detail: String },
    #[error("job trapped: {reason}")]
    Trap { reason: String },
    #[error("job returned exit code {code}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    JobFailed { code: i32, message: String },
    #[error("sandbox engine error: {0}")]
    Engine(String),
}

/// A module that passed validation, compiled and ready to instantiate.
#[derive(Clone)]
pub struct ValidatedModule {
    sha256: String,
    size: usize,
    kind: ModuleKind,
    pre: Option<Arc<InstancePre<HostState>>>,
}

impl std::fmt::Debug for ValidatedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidatedModule")
            .field("sha256", &self.sha256)
            .field("size", &self.size)
            .field("kind", &self.kind)
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
}

/// What a finished run used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// Fuel consumed.
    pub fuel_used: u64,
    /// Queries submitted.
    pub queries: u32,
    /// Outputs emitted.
    pub emits: u32,
    /// Log bytes dropped because the log limit was reached.
    pub log_bytes_dropped: usize,
}

/// The sandbox: one engine and linker shared by every run.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("limits", &self.limits)
            .finish()
    }
}

/// SHA-256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

impl Sandbox {
    /// Creates an engine with the features the host enables (see `udf-sdk/ABI.md`).
    pub fn new(limits: Limits) -> Result<Self, SandboxError> {
        let mut config = Config::new();
        // Threads and shared memory are not compiled into this host at all
        // (wasmtime's `threads` feature is off), so they need no switch here.
        config
            .consume_fuel(true)
            .max_wasm_stack(limits.stack_bytes)
            .wasm_memory64(false)
            .wasm_multi_memory(false)
            .wasm_relaxed_simd(false);
        let engine = Engine::new(&config).map_err(|e| SandboxError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        host::define_imports(&mut linker).map_err(|e| SandboxError::Engine(e.to_string()))?;
        Ok(Sandbox {
            engine,
            linker,
            limits,
        })
    }

    /// The limits every run gets.
    pub fn limits(&self) -> &Limits {
        &self.limits
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
        let module = Module::new(&self.engine, bytes).map_err(|e| SandboxError::Invalid {
            reason: format!("{e:#}"),
        })?;
        validate::check_imports(&module, kind)?;
        validate::check_exports(&module, kind)?;
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
            sha256: sha256_hex(bytes),
            size: bytes.len(),
            kind,
            pre,
        })
    }

    /// Runs a validated job module to completion in a fresh, dropped-after instance.
    pub fn run_job(
        &self,
        module: &ValidatedModule,
        host: Box<dyn JobHost>,
    ) -> Result<RunReport, SandboxError> {
        let pre = module.pre.as_ref().ok_or(SandboxError::MissingExport {
            name: abi::ENTRY_EXPORT.to_string(),
            expected: "a job module; UDF modules are not run as jobs",
        })?;
        let mut store = Store::new(&self.engine, HostState::new(host, &self.limits));
        store.limiter(|state| &mut state.limiter);
        store
            .set_fuel(self.limits.fuel)
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
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
            emits: state.emits,
            log_bytes_dropped: state.log_bytes_dropped,
        };
        match outcome {
            Ok(Ok(0)) => Ok(report),
            Ok(Ok(code)) => Err(SandboxError::JobFailed {
                code,
                message: state.last_error_log.unwrap_or_default(),
            }),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(classify_trap(e, state.limit_hit, &self.limits)),
        }
    }
}

fn classify_trap(
    e: wasmtime::Error,
    limit_hit: Option<SandboxError>,
    limits: &Limits,
) -> SandboxError {
    if let Some(hit) = limit_hit {
        return hit;
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
        Some(trap) => SandboxError::Trap {
            reason: trap.to_string(),
        },
        None => SandboxError::Trap {
            reason: format!("{e:#}"),
        },
    }
}
