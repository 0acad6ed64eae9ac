//! Host side of the ABI imports: guest memory access and per-run counters.

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
}

pub(crate) struct MemoryLimiter {
    memory_bytes: usize,
    table_elements: usize,
    hit: Option<SandboxError>,
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
    pub(crate) emits: u32,
    output_bytes: usize,
    log_bytes: usize,
    pub(crate) log_bytes_dropped: usize,
    pub(crate) last_error_log: Option<String>,
    pub(crate) limit_hit: Option<SandboxError>,
}

impl HostState {
    pub(crate) fn new(host: Box<dyn JobHost>, limits: &Limits) -> Self {
        HostState {
            host,
            limiter: MemoryLimiter {
                memory_bytes: limits.memory_bytes,
                table_elements: limits.table_elements,
                hit: None,
            },
            limits: limits.clone(),
            pending: Vec::new(),
            queries: 0,
            emits: 0,
            output_bytes: 0,
            log_bytes: 0,
            log_bytes_dropped: 0,
            last_error_log: None,
            limit_hit: None,
        }
    }

    /// Records a limit hit and returns the trap that ends the run.
    fn stop(&mut self, limit: &'static str, detail: String) -> wasmtime::Error {
        let error = SandboxError::LimitExceeded { limit, detail };
        let trap = wasmtime::Error::msg(error.to_string());
        self.limit_hit = Some(error);
        trap
    }

    /// Stores a response for `response_read` and returns the ABI length code.
    fn respond(&mut self, result: Result<Vec<u8>, String>) -> i32 {
        let (bytes, ok) = match result {
            Ok(bytes) => (bytes, true),
            Err(message) if message.is_empty() => (b"error".to_vec(), false),
            Err(message) => (message.into_bytes(), false),
        };
        // Responses are bounded by the output limit the host itself applies.
        let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
        self.pending = bytes;
        if ok { len } else { -len }
    }
}

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
            let sql = read_guest_str(&mut caller, ptr, len, "SQL")?;
            let state = caller.data_mut();
            state.queries += 1;
            if state.queries > state.limits.max_queries {
                let max = state.limits.max_queries;
                return Err(state.stop(
                    "queries",
                    format!("the job submitted more than {max} queries"),
                ));
            }
            let result = state.host.query(&sql);
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
                .host
                .param(&name)
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
            let state = caller.data();
            let (emits, bytes) = (state.emits + 1, state.output_bytes + data_len as usize);
            let limits = state.limits.clone();
            if emits > limits.max_emits {
                let max = limits.max_emits;
                return Err(caller.data_mut().stop(
                    "emits",
                    format!("the job tried to emit more than {max} outputs"),
                ));
            }
            if bytes > limits.max_output_bytes {
                let max = limits.max_output_bytes;
                return Err(caller.data_mut().stop(
                    "output size",
                    format!("emitted outputs would total {bytes} bytes; the limit is {max} bytes"),
                ));
            }
            let name = read_guest_str(&mut caller, name_ptr, name_len, "output name")?;
            let data = read_guest(&mut caller, data_ptr, data_len)?;
            let state = caller.data_mut();
            state.emits = emits;
            state.output_bytes = bytes;
            let result = match abi::decode_table(&data) {
                Ok(table) => state.host.emit(&name, table),
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
                state.host.log(level, &message);
            }
            Ok(())
        },
    )?;
    Ok(())
}
