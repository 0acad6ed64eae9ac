//! Running scalar UDFs one row at a time in the rewritten module.
//!
//! The host copies a batch's argument columns into the second memory of an
//! instance of the module `isolate.rs` produced, calls the trusted loop
//! `unseen_rows_<name>` and reads the values and validity it wrote. A trap
//! on row `i` (a panic, the per-row instruction cap, the stack) makes row
//! `i` null and the host resumes the loop at `i + 1`: the outcome of a row
//! depends on that row alone, and the query goes on as if the function had
//! returned null there. Only the wall-clock deadline, a guard against an
//! overloaded host, fails the batch.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, StringArray};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer};
use arrow::datatypes::{Float64Type, Int64Type};
use udf_sdk::udf::{self as abi, UdfType};
use wasmtime::{Global, Instance, InstancePre, Memory, Module, Store, Trap, Val};

use super::isolate::{BATCH_MEMORY, Isolated, ROW_GLOBAL};
use super::{Live, UdfError, bad_input, lock_pool, primitive};
use crate::host::MemoryLimiter;
use crate::{Limits, SandboxError};

/// The rewritten, compiled module of a UDF module's scalar functions.
#[derive(Clone)]
pub(crate) struct RowsModule {
    pub(crate) module: Module,
    /// Bytes of memory 0, and of its pristine copy in the batch memory.
    snapshot_bytes: usize,
    /// Bytes of string arguments one row may have.
    scratch_bytes: usize,
}

impl RowsModule {
    pub(crate) fn new(module: Module, isolated: &Isolated) -> Self {
        RowsModule {
            module,
            snapshot_bytes: isolated.snapshot_bytes as usize,
            scratch_bytes: isolated.scratch.1 as usize,
        }
    }
}

/// The per-module state of row-at-a-time evaluation (the instances are
/// kept per query, by the module's query handles).
pub(crate) struct Rows {
    pub(crate) pre: InstancePre<MemoryLimiter>,
    snapshot_bytes: usize,
    scratch_bytes: usize,
    /// Over every query of the module.
    pub(crate) counts: RowCounts,
}

/// Rows scalar functions were called on, and those that trapped or
/// returned an invalid value: for the service's records only, never shown
/// to whoever wrote the query.
#[derive(Debug, Default)]
pub(crate) struct RowCounts {
    pub(crate) evaluated: AtomicU64,
    pub(crate) failed: AtomicU64,
}

impl RowCounts {
    pub(crate) fn add(&self, evaluated: u64, failed: u64) {
        self.evaluated.fetch_add(evaluated, Ordering::Relaxed);
        self.failed.fetch_add(failed, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> (u64, u64) {
        (
            self.evaluated.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// One instance of the rewritten module.
pub(crate) struct RowInstance {
    _live: Live,
    store: Store<MemoryLimiter>,
    instance: Instance,
    batch: Memory,
    row: Global,
    /// Address of the null flag in memory 0, or -1.
    flag: i32,
}

/// Bytes from the start of a region to the next multiple of 8.
fn align8(n: usize) -> usize {
    n.next_multiple_of(8)
}

impl Rows {
    pub(crate) fn new(pre: InstancePre<MemoryLimiter>, module: &RowsModule) -> Self {
        Rows {
            pre,
            snapshot_bytes: module.snapshot_bytes,
            scratch_bytes: module.scratch_bytes,
            counts: RowCounts::default(),
        }
    }

    /// An instance whose batch memory starts with the pristine copy of its
    /// memory 0, taken before any data was seen; counted in `live` while it
    /// exists.
    pub(crate) fn instantiate(
        &self,
        engine: &wasmtime::Engine,
        limits: &Limits,
        live: &Arc<AtomicUsize>,
    ) -> Result<RowInstance, SandboxError> {
        let mut store = Store::new(engine, MemoryLimiter::new(limits));
        store.limiter(|l| l);
        super::arm(&mut store, limits);
        let made = (|| {
            let instance = self.pre.instantiate(&mut store)?;
            let memory = instance
                .get_memory(&mut store, "memory")
                .ok_or_else(|| wasmtime::Error::msg("the module exports no memory"))?;
            let batch = instance
                .get_memory(&mut store, BATCH_MEMORY)
                .ok_or_else(|| wasmtime::Error::msg("the rewritten module has no batch memory"))?;
            let row = instance
                .get_global(&mut store, ROW_GLOBAL)
                .ok_or_else(|| wasmtime::Error::msg("the rewritten module has no row global"))?;
            let flag = match instance.get_typed_func::<(), i32>(&mut store, abi::NULL_FLAG_EXPORT) {
                Ok(f) => f.call(&mut store, ())?,
                Err(_) => -1,
            };
            Ok::<_, wasmtime::Error>((instance, memory, batch, row, flag))
        })();
        let (instance, memory, batch, row, flag) = match made {
            Ok(made) => made,
            Err(e) => {
                let hit = store.data_mut().hit.take();
                return Err(crate::classify_trap(e, hit, limits));
            }
        };
        let size = memory.data_size(&store);
        if flag >= 0 && (flag % 4 != 0 || flag as usize + 4 > size) {
            return Err(SandboxError::MistypedExport {
                name: abi::NULL_FLAG_EXPORT.into(),
                expected: "the address of a 4-byte aligned flag inside memory",
                found: format!("{flag}"),
            });
        }
        let pristine = memory.data(&store)[..self.snapshot_bytes.min(size)].to_vec();
        // The loop reads the flag only after rows that wrote memory, so it
        // must start clear.
        if flag >= 0 && pristine[flag as usize..flag as usize + 4] != [0; 4] {
            return Err(SandboxError::MistypedExport {
                name: abi::NULL_FLAG_EXPORT.into(),
                expected: "the address of a flag that is 0 before the first row",
                found: format!("{flag}, holding a non-zero value"),
            });
        }
        let mut inst = RowInstance {
            _live: Live::new(live),
            store,
            instance,
            batch,
            row,
            flag,
        };
        inst.ensure(self.snapshot_bytes)
            .map_err(|reason| SandboxError::Invalid { reason })?;
        inst.batch.data_mut(&mut inst.store)[..pristine.len()].copy_from_slice(&pristine);
        Ok(inst)
    }

    /// Runs `f` on an idle (or new) instance of `pool` (one query's) with a
    /// fresh deadline, giving it back to `pool` when `f` succeeded.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn with_instance<T>(
        &self,
        pool: &Mutex<Vec<RowInstance>>,
        max_idle: usize,
        engine: &wasmtime::Engine,
        limits: &Limits,
        live: &Arc<AtomicUsize>,
        udf: &str,
        f: impl FnOnce(&mut RowInstance) -> Result<T, UdfError>,
    ) -> Result<T, UdfError> {
        let idle = lock_pool(pool).pop();
        let mut inst = match idle {
            Some(i) => i,
            None => self
                .instantiate(engine, limits, live)
                .map_err(|e| UdfError::from_sandbox(udf, e))?,
        };
        super::arm(&mut inst.store, limits);
        let out = f(&mut inst)?;
        let mut idle = lock_pool(pool);
        if idle.len() < max_idle {
            idle.push(inst);
        }
        Ok(out)
    }

    /// Evaluates `udf` (declared `types -> returns`, served by the loop
    /// `export`) over `rows` rows of `arrays`, each row under a cap of
    /// `cap` instructions.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn evaluate(
        &self,
        inst: &mut RowInstance,
        udf: &str,
        export: &str,
        types: &[UdfType],
        returns: UdfType,
        arrays: &[ArrayRef],
        rows: usize,
        cap: u64,
        limits: &Limits,
        query: &RowCounts,
    ) -> Result<ArrayRef, UdfError> {
        let mut values: Vec<u8> = Vec::with_capacity(rows * 8);
        let mut valid: Vec<u8> = Vec::with_capacity(rows);
        let mut from = 0;
        while from < rows {
            let to = self.chunk_end(arrays, types, from, rows);
            let batch = self.lay_out(inst, udf, arrays, types, from, to)?;
            self.run_chunk(inst, udf, export, &batch, to - from, cap, limits, query)?;
            let data = inst.batch.data(&inst.store);
            let n = to - from;
            values.extend_from_slice(&data[batch.out..batch.out + n * 8]);
            valid.extend_from_slice(&data[batch.valid..batch.valid + n]);
            from = to;
        }
        let null_count = valid.iter().filter(|v| **v == 0).count();
        let nulls = if null_count == 0 {
            None
        } else {
            // A null's value is fixed too, so nothing of a failed row survives.
            for (row, v) in valid.iter().enumerate() {
                if *v == 0 {
                    values[row * 8..row * 8 + 8].fill(0);
                }
            }
            Some(NullBuffer::new(BooleanBuffer::collect_bool(rows, |row| {
                valid[row] != 0
            })))
        };
        let values = Buffer::from_vec(values);
        Ok(match returns {
            UdfType::Int64 => primitive::<Int64Type>(values, rows, nulls),
            _ => primitive::<Float64Type>(values, rows, nulls),
        })
    }

    /// The end of the chunk starting at `from`: the whole batch, unless its
    /// strings would make the batch memory larger than [`CHUNK_STRING_BYTES`].
    fn chunk_end(&self, arrays: &[ArrayRef], types: &[UdfType], from: usize, rows: usize) -> usize {
        let strings: Vec<&StringArray> = arrays
            .iter()
            .zip(types)
            .filter(|(_, t)| **t == UdfType::Utf8)
            .filter_map(|(a, _)| a.as_string_opt::<i32>())
            .collect();
        if strings.is_empty() {
            return rows;
        }
        let mut bytes = 0usize;
        for row in from..rows {
            let len: usize = strings.iter().map(|s| s.value(row).len()).sum();
            if len <= self.scratch_bytes {
                bytes += len;
            }
            if bytes > CHUNK_STRING_BYTES && row > from {
                return row;
            }
        }
        rows
    }

    /// Writes rows `from..to` straight into the batch memory after the
    /// pristine copy: which rows to skip (a null argument, or strings over
    /// the scratch area), then each argument. The loop writes every row's
    /// value and validity, so those areas are only reserved.
    fn lay_out(
        &self,
        inst: &mut RowInstance,
        udf: &str,
        arrays: &[ArrayRef],
        types: &[UdfType],
        from: usize,
        to: usize,
    ) -> Result<Batch, UdfError> {
        let n = to - from;
        let wrong = |index: usize, array: &ArrayRef, ty: UdfType| {
            bad_input(
                udf,
                format!(
                    "argument {} is {}, declared {}",
                    index + 1,
                    array.data_type(),
                    ty.name()
                ),
            )
        };
        let mut strings = Vec::new();
        for (index, (array, ty)) in arrays.iter().zip(types).enumerate() {
            if *ty == UdfType::Utf8 {
                strings.push(
                    array
                        .as_string_opt::<i32>()
                        .ok_or_else(|| wrong(index, array, *ty))?,
                );
            }
        }
        let mut skip = vec![0u8; n];
        for array in arrays {
            if let Some(nulls) = array.nulls().filter(|n| n.null_count() > 0) {
                for (row, s) in skip.iter_mut().enumerate() {
                    *s |= u8::from(nulls.is_null(from + row));
                }
            }
        }
        if !strings.is_empty() {
            for (row, s) in skip.iter_mut().enumerate() {
                let len: usize = strings.iter().map(|a| a.value(from + row).len()).sum();
                *s |= u8::from(len > self.scratch_bytes);
            }
        }
        // Bytes of each string argument over the rows that are not skipped.
        let text_bytes: Vec<usize> = strings
            .iter()
            .map(|a| {
                skip.iter()
                    .enumerate()
                    .filter(|(_, s)| **s == 0)
                    .map(|(row, _)| a.value(from + row).len())
                    .sum()
            })
            .collect();
        // Where each part goes, 8-byte aligned, after the pristine copy.
        let base = align8(self.snapshot_bytes);
        let mut end = base;
        let mut reserve = |len: usize| {
            let at = end;
            end = align8(end + len);
            at
        };
        let skip_at = reserve(n);
        let valid = reserve(n);
        let out = reserve(n * 8);
        let mut args = Vec::with_capacity(types.len() + 1);
        let mut string_bytes = text_bytes.iter();
        for ty in types {
            match ty {
                UdfType::Int64 | UdfType::Float64 => args.push(reserve(n * 8)),
                UdfType::Utf8 => {
                    args.push(reserve((n + 1) * 4));
                    args.push(reserve(string_bytes.next().copied().unwrap_or(0)));
                }
            }
        }
        inst.ensure(end).map_err(|p| bad_input(udf, p))?;
        let data = inst.batch.data_mut(&mut inst.store);
        data[skip_at..skip_at + n].copy_from_slice(&skip);
        let mut next_arg = args.iter();
        let mut next_string = strings.iter();
        for (index, (array, ty)) in arrays.iter().zip(types).enumerate() {
            let at = *next_arg.next().unwrap_or(&end);
            match ty {
                UdfType::Int64 => {
                    let a = array
                        .as_primitive_opt::<Int64Type>()
                        .ok_or_else(|| wrong(index, array, *ty))?;
                    data[at..at + n * 8]
                        .copy_from_slice(&a.values().inner().as_slice()[from * 8..to * 8]);
                }
                UdfType::Float64 => {
                    let a = array
                        .as_primitive_opt::<Float64Type>()
                        .ok_or_else(|| wrong(index, array, *ty))?;
                    data[at..at + n * 8]
                        .copy_from_slice(&a.values().inner().as_slice()[from * 8..to * 8]);
                }
                UdfType::Utf8 => {
                    let a = next_string.next().ok_or_else(|| wrong(index, array, *ty))?;
                    let bytes_at = *next_arg.next().unwrap_or(&end);
                    // Skipped rows' strings are not copied at all.
                    let mut written = 0usize;
                    data[at..at + 4].copy_from_slice(&0i32.to_le_bytes());
                    for (row, skipped) in skip.iter().enumerate() {
                        if *skipped == 0 {
                            let text = a.value(from + row).as_bytes();
                            data[bytes_at + written..bytes_at + written + text.len()]
                                .copy_from_slice(text);
                            written += text.len();
                        }
                        let offset = at + 4 * (row + 1);
                        data[offset..offset + 4].copy_from_slice(&(written as i32).to_le_bytes());
                    }
                }
            }
        }
        Ok(Batch {
            skip: skip_at,
            valid,
            out,
            args: args.into_iter().map(|a| a as i32).collect(),
        })
    }

    /// Runs the loop over the `n` rows of `batch` (already in the batch
    /// memory), resuming after every row that traps.
    #[allow(clippy::too_many_arguments)]
    fn run_chunk(
        &self,
        inst: &mut RowInstance,
        udf: &str,
        export: &str,
        batch: &Batch,
        n: usize,
        cap: u64,
        limits: &Limits,
        query: &RowCounts,
    ) -> Result<(), UdfError> {
        let func = inst
            .instance
            .get_func(&mut inst.store, export)
            .ok_or_else(|| UdfError::MissingExport {
                udf: udf.to_string(),
                export: export.to_string(),
            })?;
        let cap = cap.min(i64::MAX as u64) as i64;
        let mut params = vec![
            Val::I32(0),
            Val::I32(n as i32),
            Val::I32(batch.skip as i32),
            Val::I32(batch.out as i32),
            Val::I32(batch.valid as i32),
            Val::I64(cap),
            Val::I32(inst.flag),
        ];
        params.extend(batch.args.iter().map(|&a| Val::I32(a)));
        let mut result = [Val::I32(0)];
        let mut start = 0usize;
        let mut failed = 0u64;
        while start < n {
            params[0] = Val::I32(start as i32);
            let Err(e) = func.call(&mut inst.store, &params, &mut result) else {
                break;
            };
            if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
                let hit = inst.store.data_mut().hit.take();
                return Err(UdfError::from_sandbox(
                    udf,
                    crate::classify_trap(e, hit, limits),
                ));
            }
            // The loop had started row `row` and not finished it: a null.
            let row = inst.row.get(&mut inst.store).i32().unwrap_or(0) as u32 as usize;
            if row < start || row >= n {
                return Err(UdfError::Trap {
                    udf: udf.to_string(),
                    reason: format!("the row loop stopped outside its batch ({e:#})"),
                });
            }
            inst.batch.data_mut(&mut inst.store)[batch.valid + row] = 0;
            failed += 1;
            start = row + 1;
        }
        for counts in [&self.counts, query] {
            counts.add(n as u64, failed);
        }
        Ok(())
    }
}

/// String bytes a chunk of a batch may carry.
const CHUNK_STRING_BYTES: usize = 8 << 20;

/// Where the parts of one chunk are in the batch memory.
struct Batch {
    skip: usize,
    valid: usize,
    out: usize,
    args: Vec<i32>,
}

impl RowInstance {
    /// Grows the batch memory to at least `bytes`.
    fn ensure(&mut self, bytes: usize) -> Result<(), String> {
        let size = self.batch.data_size(&self.store);
        if size >= bytes {
            return Ok(());
        }
        let pages = (bytes - size).div_ceil(65_536) as u64;
        self.batch
            .grow(&mut self.store, pages)
            .map(|_| ())
            .map_err(|e| format!("a batch needs {bytes} bytes of guest memory: {e:#}"))
    }
}
