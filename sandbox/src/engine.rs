//! The wasmtime engine: features, fuel, epochs, stack and the instance pool.
//!
//! Everything that changes the machine code wasmtime emits is set here and
//! nowhere else, and is written into [`EngineSetup::fingerprint`], so the
//! compiled-module cache can never hand one configuration's code to another.

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

/// An engine together with a stable description of how it was configured.
pub(crate) struct EngineSetup {
    pub(crate) engine: Engine,
    /// Whether instances come from the pooling allocator (else on demand).
    pub(crate) pooling: bool,
    /// Hex SHA-256 over our settings and wasmtime's own compatibility hash.
    pub(crate) fingerprint: String,
}

/// Builds the engine for `limits`, preferring the pooling allocator.
///
/// The pool reserves its virtual address space up front. Where that is not
/// possible (a low `RLIMIT_AS`, a 32-bit host) the engine falls back to
/// allocating each instance on demand, which is slower but equally contained:
/// the limits are enforced by the store's limiter in both cases.
pub(crate) fn build(limits: &Limits) -> Result<EngineSetup, SandboxError> {
    let pooled = Engine::new(&config(limits, Some(pool(limits))));
    let (engine, pooling) = match pooled {
        Ok(engine) => (engine, true),
        Err(e) => {
            tracing::warn!(
                error = %format!("{e:#}"),
                "the pooling instance allocator is unavailable here; allocating instances on demand"
            );
            let engine = Engine::new(&config(limits, None))
                .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
            (engine, false)
        }
    };
    let fingerprint = fingerprint(&engine, &describe(limits, pooling));
    Ok(EngineSetup {
        engine,
        pooling,
        fingerprint,
    })
}

fn config(limits: &Limits, pool: Option<PoolingAllocationConfig>) -> Config {
    let mut config = Config::new();
    // Threads, shared memory, GC proposals, exceptions, stack switching and
    // the component model are not compiled into this host at all (those
    // wasmtime features are off), so they need no switch here.
    config
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(limits.stack_bytes)
        .wasm_memory64(false)
        .wasm_multi_memory(false)
        .wasm_relaxed_simd(false)
        .wasm_custom_page_sizes(false)
        .wasm_wide_arithmetic(false)
        // The same NaN bits on every CPU: a job's behaviour (and fuel use)
        // does not depend on which machine it ran on.
        .cranelift_nan_canonicalization(true);
    if let Some(pool) = pool {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

fn pool(limits: &Limits) -> PoolingAllocationConfig {
    let slots = limits.max_concurrent_runs.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_core_instances(slots)
        .total_memories(slots)
        .total_tables(slots)
        .max_memories_per_module(1)
        .max_tables_per_module(1)
        .max_memory_size(limits.memory_bytes)
        .table_elements(limits.table_elements)
        .max_unused_warm_slots(slots);
    pool
}

/// Our settings, in a fixed order, as the cache key sees them.
fn describe(limits: &Limits, pooling: bool) -> String {
    format!(
        "unseen-sandbox engine v1; wasmtime {}; fuel on; epoch interruption on; \
         max wasm stack {} bytes; memory64 off; multi-memory off; relaxed-simd off; \
         custom-page-sizes off; wide-arithmetic off; nan canonicalization on; \
         allocator {}; max memory {} bytes; table elements {}",
        ModuleVersionStrategy::default().as_str(),
        limits.stack_bytes,
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

/// A background thread advancing the engine's epoch every [`EPOCH_TICK`].
///
/// Stopped and joined when dropped. It holds only a weak reference, so it
/// never keeps an engine alive on its own.
pub(crate) struct EpochTicker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: &Engine) -> Result<Self, SandboxError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let weak: EngineWeak = engine.weak();
        let thread = std::thread::Builder::new()
            .name("unseen-epoch".into())
            .spawn(move || {
                // Any message or a dropped sender ends the loop.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
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
        let a = build(&Limits::default()).unwrap();
        let b = build(&Limits {
            stack_bytes: 256 << 10,
            ..Limits::default()
        })
        .unwrap();
        let a2 = build(&Limits::default()).unwrap();
        assert_eq!(a.fingerprint, a2.fingerprint);
        assert_ne!(a.fingerprint, b.fingerprint);
    }
}
