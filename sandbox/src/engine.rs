//! The wasmtime engines: features, fuel, epochs, stack and the instance pools.
//!
//! Everything that changes the machine code wasmtime emits is set here and
//! nowhere else, and is written into [`EngineSetup::fingerprint`], so the
//! compiled-module cache can never hand one configuration's code to another.
//!
//! A [`Sandbox`](crate::Sandbox) has two engines, one per [`Purpose`]. Jobs
//! get fuel metering and NaN canonicalisation, so a job stops at the same
//! instruction and sees the same float bits on every host. UDF modules run
//! per batch inside a query, where both cost several times the function's
//! own work (NaN canonicalisation alone made `ln(1+a)*0.7 + sqrt(b)*0.3`
//! about five times slower): their engine has neither. A UDF row is bounded
//! by the instruction cap the upload rewrite compiles into the module
//! (`udf/isolate.rs`), and a batch by the epoch deadline as a last resort;
//! and a UDF needs no determinism across machines beyond its result values,
//! which IEEE 754 fixes for everything but the payload bits of a NaN. The
//! UDF engine enables multi-memory, for the rewrite's second memory.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{
    Config, Engine, EngineWeak, InstanceAllocationStrategy, ModuleVersionStrategy,
    PoolingAllocationConfig,
};

use crate::{Limits, SandboxError};

/// How often the ticker thread advances the engine's epoch.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// What an engine compiles and runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Job modules: fuel, epoch deadline, canonical NaNs.
    Job,
    /// UDF modules: epoch deadline only, native NaNs.
    Udf,
}

impl Purpose {
    /// Fuel metering, which makes a run stop at the same instruction everywhere.
    fn fuel(self) -> bool {
        self == Purpose::Job
    }

    /// NaN canonicalisation, which makes float bits the same on every CPU.
    fn canonical_nans(self) -> bool {
        self == Purpose::Job
    }

    /// Multi-memory: a rewritten UDF module has a second memory for the
    /// batch and the pristine copy of the first (see `udf/isolate.rs`). The
    /// module as uploaded may still have only one.
    fn multi_memory(self) -> bool {
        self == Purpose::Udf
    }

    /// Memories per instance.
    fn memories(self) -> u32 {
        if self.multi_memory() { 2 } else { 1 }
    }
}

/// An engine together with a stable description of how it was configured.
pub(crate) struct EngineSetup {
    pub(crate) engine: Engine,
    /// Whether instances come from the pooling allocator (else on demand).
    pub(crate) pooling: bool,
    /// Hex SHA-256 over our settings and wasmtime's own compatibility hash.
    pub(crate) fingerprint: String,
}

/// Builds the engine for `purpose` under `limits`, preferring the pooling
/// allocator. Each engine has its own pool of
/// [`Limits::max_concurrent_runs`] slots.
///
/// The pool reserves its virtual address space up front. Where that is not
/// possible (a low `RLIMIT_AS`, a 32-bit host) the engine falls back to
/// allocating each instance on demand, which is slower but equally contained:
/// the limits are enforced by the store's limiter in both cases.
pub(crate) fn build(limits: &Limits, purpose: Purpose) -> Result<EngineSetup, SandboxError> {
    let pooled = Engine::new(&config(limits, purpose, Some(pool(limits, purpose))));
    let (engine, pooling) = match pooled {
        Ok(engine) => (engine, true),
        Err(e) => {
            tracing::warn!(
                error = %format!("{e:#}"),
                ?purpose,
                "the pooling instance allocator is unavailable here; allocating instances on demand"
            );
            let engine = Engine::new(&config(limits, purpose, None))
                .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
            (engine, false)
        }
    };
    let fingerprint = fingerprint(&engine, &describe(limits, purpose, pooling));
    Ok(EngineSetup {
        engine,
        pooling,
        fingerprint,
    })
}

fn config(limits: &Limits, purpose: Purpose, pool: Option<PoolingAllocationConfig>) -> Config {
    let mut config = Config::new();
    // Threads, shared memory, GC proposals, exceptions, stack switching and
    // the component model are not compiled into this host at all (those
    // wasmtime features are off), so they need no switch here.
    config
        .consume_fuel(purpose.fuel())
        // Both engines: the wall-clock deadline (and, for jobs, cancellation).
        .epoch_interruption(true)
        .max_wasm_stack(limits.stack_bytes)
        .wasm_memory64(false)
        .wasm_multi_memory(purpose.multi_memory())
        .wasm_relaxed_simd(false)
        .wasm_custom_page_sizes(false)
        .wasm_wide_arithmetic(false)
        // Jobs: the same NaN bits on every CPU, so a job's behaviour (and
        // fuel use) does not depend on which machine it ran on. UDFs: off,
        // see the module documentation.
        .cranelift_nan_canonicalization(purpose.canonical_nans());
    if let Some(pool) = pool {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

fn pool(limits: &Limits, purpose: Purpose) -> PoolingAllocationConfig {
    let slots = limits.max_concurrent_runs.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_core_instances(slots)
        .total_memories(slots * purpose.memories())
        .total_tables(slots)
        .max_memories_per_module(purpose.memories())
        .max_tables_per_module(1)
        .max_memory_size(limits.memory_bytes)
        .table_elements(limits.table_elements)
        .max_unused_warm_slots(slots);
    pool
}

/// Our settings, in a fixed order, as the cache key sees them.
fn describe(limits: &Limits, purpose: Purpose, pooling: bool) -> String {
    let on = |b: bool| if b { "on" } else { "off" };
    format!(
        "unseen-sandbox engine v1; wasmtime {}; fuel {}; epoch interruption on; \
         max wasm stack {} bytes; memory64 off; multi-memory {}; relaxed-simd off; \
         custom-page-sizes off; wide-arithmetic off; nan canonicalization {}; \
         allocator {}; max memory {} bytes; table elements {}",
        ModuleVersionStrategy::default().as_str(),
        on(purpose.fuel()),
        limits.stack_bytes,
        on(purpose.multi_memory()),
        on(purpose.canonical_nans()),
        if pooling { "pooling" } else { "on-demand" },
        limits.memory_bytes,
        limits.table_elements,
    )
}

/// Feeds every byte of a [`std::hash::Hash`] into SHA-256, so wasmtime's
/// compatibility hash becomes a stable, collision-resistant digest.
struct Sha256Hasher(ring::digest::Context);

impl std::hash::Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        // Only `write` matters here; the digest is read from the context.
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn fingerprint(engine: &Engine, description: &str) -> String {
    use std::hash::Hash;
    let mut hasher = Sha256Hasher(ring::digest::Context::new(&ring::digest::SHA256));
    hasher.0.update(description.as_bytes());
    hasher.0.update(b"\n");
    // Covers the full wasmtime version, target, compiler flags, tunables and
    // wasm features: anything that makes compiled code incompatible.
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(hasher.0.finish())
}

/// A background thread advancing the engines' epochs every [`EPOCH_TICK`].
///
/// Stopped and joined when dropped. It holds only weak references, so it
/// never keeps an engine alive on its own.
pub(crate) struct EpochTicker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engines: &[&Engine]) -> Result<Self, SandboxError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let weak: Vec<EngineWeak> = engines.iter().map(|e| e.weak()).collect();
        let thread = std::thread::Builder::new()
            .name("unseen-epoch".into())
            .spawn(move || {
                // Any message, a dropped sender, or every engine gone ends the loop.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    let mut alive = false;
                    for engine in weak.iter().filter_map(EngineWeak::upgrade) {
                        engine.increment_epoch();
                        alive = true;
                    }
                    if !alive {
                        break;
                    }
                }
            })
            .map_err(|e| SandboxError::Engine(format!("could not start the epoch ticker: {e}")))?;
        Ok(EpochTicker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread body cannot panic; a join error would only repeat one.
            let _ = thread.join();
        }
    }
}

/// Epoch ticks that cover `deadline`, rounded up; at least one.
pub(crate) fn deadline_ticks(deadline: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    u64::try_from(deadline.as_nanos().div_ceil(tick))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A duration as people write it: `30 s`, `250 ms`, `1.5 s`.
pub(crate) fn human(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(Duration::from_secs(30)), "30 s");
        assert_eq!(human(Duration::from_millis(250)), "250 ms");
        assert_eq!(human(Duration::from_millis(1500)), "1.5 s");
    }

    #[test]
    fn deadline_rounds_up_to_whole_ticks() {
        assert_eq!(deadline_ticks(Duration::ZERO), 1);
        assert_eq!(deadline_ticks(Duration::from_millis(1)), 1);
        assert_eq!(deadline_ticks(Duration::from_millis(25)), 3);
        assert_eq!(deadline_ticks(Duration::from_secs(30)), 3000);
    }

    #[test]
    fn fingerprint_changes_with_the_configuration() {
        let a = build(&Limits::default(), Purpose::Job).unwrap();
        let b = build(
            &Limits {
                stack_bytes: 256 << 10,
                ..Limits::default()
            },
            Purpose::Job,
        )
        .unwrap();
        let a2 = build(&Limits::default(), Purpose::Job).unwrap();
        let udf = build(&Limits::default(), Purpose::Udf).unwrap();
        assert_eq!(a.fingerprint, a2.fingerprint);
        assert_ne!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, udf.fingerprint);
    }

    #[test]
    fn the_description_names_fuel_and_nan_canonicalisation() {
        let job = describe(&Limits::default(), Purpose::Job, true);
        let udf = describe(&Limits::default(), Purpose::Udf, true);
        assert!(job.contains("fuel on") && job.contains("nan canonicalization on"));
        assert!(udf.contains("fuel off") && udf.contains("nan canonicalization off"));
        assert!(udf.contains("epoch interruption on"));
    }
}
