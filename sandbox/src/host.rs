//! Host side of the ABI imports: guest memory access and per-run counters.
//!
//! Every import checks its limits before doing any work, bounds-checks
//! every guest pointer, and calls the [`JobHost`] inside `catch_unwind`: a
//! bug in the caller's host ends the run with [`SandboxError::HostPanic`]
//! instead of unwinding through wasmtime into the caller.

use std::panic::AssertUnwindSafe;

use udf_sdk::abi;
use wasmtime::{Caller, Extern, Linker, ResourceLimiter};

use crate::{Limits, SandboxError};

/// Severity of a guest log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// What the sandbox asks of its caller while a job runs.
///
/// The sandbox only moves bytes; the implementation decides what a query
/// releases (policy) and where outputs go (quarantine).
pub trait JobHost: Send {
    /// Runs `sql` and returns an encoded [`udf_sdk::QueryResult`], or a
    /// refusal message for the guest.
    fn query(&mut self, sql: &str) -> Result<Vec<u8>, String>;
    /// Receives an emitted table (already decoded and checked).
    fn emit(&mut self, name: &str, table: udf_sdk::Table) -> Result<(), String>;
    /// Receives a log line.
    fn log(&mut self, level: LogLevel, message: &str);
    /// Looks up a job parameter.
    fn param(&self, name: &str) -> Option<String>;
    /// Judges `sql` without running it or spending budget, and returns an
    /// encoded [`udf_sdk::DryRun`] (see [`udf_sdk::abi::encode_dry_run`]),
    /// or a message for the guest when the host cannot judge it.
    ///
    /// The default refuses, for hosts that do not offer dry runs.
    fn dry_run(&mut self, sql: &str) -> Result<Vec<u8>, String> {
        let _ = sql;
        Err("dry runs are not supported by this host".to_string())
    }
}

/// Bounds linear memory and tables of one store, and remembers which limit
/// stopped it. Shared by job stores and UDF instances.
pub(crate) struct MemoryLimiter {
    memory_bytes: usize,
    table_elements: usize,
    pub(crate) hit: Option<SandboxError>,
}

impl MemoryLimiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        MemoryLimiter {
            memory_bytes: limits.memory_bytes,
            table_elements: limits.table_elements,
            hit: None,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit = Some(SandboxError::LimitExceeded {
                limit: "memory",
                detail: format!(
                    "tried to grow linear memory from {current} to {desired} bytes; the limit is {} bytes",
                    self.memory_bytes
                ),
            });
            return Err(wasmtime::Error::msg("memory limit exceeded"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            self.hit = Some(SandboxError::LimitExceeded {
                limit: "table",
                detail: format!(
                    "tried to grow a table from {current} to {desired} elements; the limit is {}",
                    self.table_elements
                ),
            });
            return Err(wasmtime::Error::msg("table limit exceeded"));
        }
        Ok(true)
    }
}

pub(crate) struct HostState {
    host: Box<dyn JobHost>,
    pub(crate) limiter: MemoryLimiter,
    limits: Limits,
    pending: Vec<u8>,
    pub(crate) queries: u32,
    pub(crate) dry_runs: u32,
    pub(crate) emits: u32,
    output_bytes: usize,
    log_bytes: usize,
    pub(crate) log_bytes_dropped: usize,
    pub(crate) last_error_log: Option<String>,
    /// Why a host function stopped the run (a limit or a host panic).
    pub(crate) stopped: Option<SandboxError>,
}

impl HostState {
    pub(crate) fn new(host: Box<dyn JobHost>, limits: &Limits) -> Self {
        HostState {
            host,
            limiter: MemoryLimiter::new(limits),
            limits: limits.clone(),
            pending: Vec::new(),
            queries: 0,
            dry_runs: 0,
            emits: 0,
            output_bytes: 0,
            log_bytes: 0,
            log_bytes_dropped: 0,
            last_error_log: None,
            stopped: None,
        }
    }

    /// Records why the run must end and returns the trap that ends it.
    fn stop_with(&mut self, error: SandboxError) -> wasmtime::Error {
        let trap = wasmtime::Error::msg(error.to_string());
        self.stopped = Some(error);
        trap
    }

    /// Records a limit hit and returns the trap that ends the run.
    fn stop(&mut self, limit: &'static str, detail: String) -> wasmtime::Error {
        self.stop_with(SandboxError::LimitExceeded { limit, detail })
    }

    /// Calls the caller's host, turning a panic into a trap that ends the run.
    fn call_host<R>(
        &mut self,
        function: &'static str,
        f: impl FnOnce(&mut dyn JobHost) -> R,
    ) -> wasmtime::Result<R> {
        let host = self.host.as_mut();
        // The host is never called again after a panic: the trap ends the
        // run and the store, with the host inside it, is dropped.
        match std::panic::catch_unwind(AssertUnwindSafe(|| f(host))) {
            Ok(r) => Ok(r),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_string());
                Err(self.stop_with(SandboxError::HostPanic { function, message }))
            }
        }
    }

    /// Stores a response for `response_read` and returns the ABI length code.
    fn respond(&mut self, result: Result<Vec<u8>, String>) -> i32 {
        let (bytes, ok) = match result {
            Ok(bytes) if bytes.len() <= MAX_RESPONSE_BYTES => (bytes, true),
            Ok(bytes) => (
                format!(
                    "the host's response is {} bytes, over the ABI's limit of {MAX_RESPONSE_BYTES} bytes",
                    bytes.len()
                )
                .into_bytes(),
                false,
            ),
            Err(message) if message.is_empty() => (b"error".to_vec(), false),
            Err(mut message) => {
                if message.len() > MAX_MESSAGE_BYTES {
                    let mut cut = MAX_MESSAGE_BYTES;
                    while !message.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    message.truncate(cut);
                }
                (message.into_bytes(), false)
            }
        };
        // Both bounds are far below `i32::MAX`, so the length fits.
        let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
        self.pending = bytes;
        if ok { len } else { -len }
    }
}

/// Largest response the ABI's `i32` length code can describe.
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;
/// Longest refusal or error message handed to the guest.
const MAX_MESSAGE_BYTES: usize = 64 << 10;

/// Copies `len` bytes at `ptr` out of the guest's exported memory.
fn read_guest(caller: &mut Caller<'_, HostState>, ptr: u32, len: u32) -> wasmtime::Result<Vec<u8>> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Err(wasmtime::Error::msg("guest exports no memory"));
    };
    let data = memory.data(&caller);
    let (start, len) = (ptr as usize, len as usize);
    match start.checked_add(len).filter(|end| *end <= data.len()) {
        Some(end) => Ok(data[start..end].to_vec()),
        None => Err(wasmtime::Error::msg(format!(
            "guest passed an out-of-bounds buffer ({len} bytes at {start}, memory is {} bytes)",
            data.len()
        ))),
    }
}

fn read_guest_str(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    len: u32,
    what: &str,
) -> wasmtime::Result<String> {
    String::from_utf8(read_guest(caller, ptr, len)?)
        .map_err(|_| wasmtime::Error::msg(format!("{what} passed by the guest is not UTF-8")))
}

pub(crate) fn define_imports(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let m = abi::IMPORT_MODULE;
    linker.func_wrap(
        m,
        "query",
        |mut caller: Caller<'_, HostState>, ptr: u32, len: u32| {
            let state = caller.data_mut();
            state.queries += 1;
            if state.queries > state.limits.max_queries {
                let max = state.limits.max_queries;
                return Err(state.stop(
                    "queries",
                    format!("the job submitted query {} of at most {max}", state.queries),
                ));
            }
            let sql = read_guest_str(&mut caller, ptr, len, "SQL")?;
            let state = caller.data_mut();
            let result = state.call_host("query", |host| host.query(&sql))?;
            Ok(state.respond(result))
        },
    )?;
    linker.func_wrap(
        m,
        "dry_run",
        |mut caller: Caller<'_, HostState>, ptr: u32, len: u32| {
            let state = caller.data_mut();
            state.dry_runs += 1;
            if state.dry_runs > state.limits.max_dry_runs {
                let max = state.limits.max_dry_runs;
                return Err(state.stop(
                    "dry runs",
                    format!(
                        "the job asked for dry run {} of at most {max}",
                        state.dry_runs
                    ),
                ));
            }
            let sql = read_guest_str(&mut caller, ptr, len, "SQL")?;
            let state = caller.data_mut();
            let result = state.call_host("dry_run", |host| host.dry_run(&sql))?;
            Ok(state.respond(result))
        },
    )?;
    linker.func_wrap(
        m,
        "param",
        |mut caller: Caller<'_, HostState>, ptr: u32, len: u32| {
            let name = read_guest_str(&mut caller, ptr, len, "parameter name")?;
            let state = caller.data_mut();
            let result = state
                .call_host("param", |host| host.param(&name))?
                .map(String::into_bytes)
                .ok_or_else(|| format!("no job parameter named `{name}`"));
            Ok(state.respond(result))
        },
    )?;
    linker.func_wrap(
        m,
        "response_read",
        |mut caller: Caller<'_, HostState>, dst: u32, dst_len: u32| {
            let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
                return Err(wasmtime::Error::msg("guest exports no memory"));
            };
            let pending = std::mem::take(&mut caller.data_mut().pending);
            let n = pending.len().min(dst_len as usize);
            memory
                .write(&mut caller, dst as usize, &pending[..n])
                .map_err(|_| {
                    wasmtime::Error::msg("guest passed an out-of-bounds response buffer")
                })?;
            Ok(n as i32)
        },
    )?;
    linker.func_wrap(
        m,
        "emit",
        |mut caller: Caller<'_, HostState>,
         name_ptr: u32,
         name_len: u32,
         data_ptr: u32,
         data_len: u32| {
            let state = caller.data_mut();
            let emits = state.emits.saturating_add(1);
            let bytes = state.output_bytes.saturating_add(data_len as usize);
            let (max_emits, max_bytes) = (state.limits.max_emits, state.limits.max_output_bytes);
            if emits > max_emits {
                return Err(state.stop(
                    "emits",
                    format!("the job tried to emit output {emits} of at most {max_emits}"),
                ));
            }
            if bytes > max_bytes {
                return Err(state.stop(
                    "output size",
                    format!(
                        "emitted outputs would total {bytes} bytes, {} over the limit of {max_bytes} bytes",
                        bytes - max_bytes
                    ),
                ));
            }
            let name = read_guest_str(&mut caller, name_ptr, name_len, "output name")?;
            let data = read_guest(&mut caller, data_ptr, data_len)?;
            let state = caller.data_mut();
            state.emits = emits;
            state.output_bytes = bytes;
            let result = match abi::decode_table(&data) {
                Ok(table) => state.call_host("emit", |host| host.emit(&name, table))?,
                Err(e) => Err(format!("output `{name}` is malformed: {e}")),
            };
            Ok(match result {
                Ok(()) => 0,
                Err(message) => state.respond(Err(message)),
            })
        },
    )?;
    linker.func_wrap(
        m,
        "log",
        |mut caller: Caller<'_, HostState>, level: i32, ptr: u32, len: u32| {
            let state = caller.data();
            let room = state.limits.max_log_bytes.saturating_sub(state.log_bytes);
            let take = (len as usize).min(room);
            let text = read_guest(&mut caller, ptr, take as u32)?;
            let message = String::from_utf8_lossy(&text).into_owned();
            let state = caller.data_mut();
            state.log_bytes += take;
            state.log_bytes_dropped += len as usize - take;
            let level = match level {
                0 => LogLevel::Debug,
                1 => LogLevel::Info,
                2 => LogLevel::Warn,
                _ => LogLevel::Error,
            };
            if level == LogLevel::Error {
                state.last_error_log = Some(message.clone());
            }
            if take > 0 {
                state.call_host("log", |host| host.log(level, &message))?;
            }
            Ok(())
        },
    )?;
    Ok(())
}
