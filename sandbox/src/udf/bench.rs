//! Timings of wasm UDFs against the same functions as native Rust UDFs,
//! each inside a DataFusion query `SELECT SUM(f(a, b)) FROM t` over an
//! in-memory table, and of instantiating a cached UDF module.
//!
//! To say what row isolation costs, the same modules also run through the
//! same trusted loop and batch memory without restoring any state or
//! counting instructions ([`Isolation::BenchLoopOnly`], which only this
//! benchmark builds and no query is ever served by).
//!
//! Plain `std::time::Instant` measurements: each query runs once to warm
//! up, then [`UdfBenchConfig::repeats`] times; the median is reported. The
//! native baselines use Arrow's `binary` kernel, the way a well-written
//! native UDF would, and the same source as the guests, so the ratio is the
//! cost of the sandbox. For `light` that includes the logarithm: the guest's
//! `f64::ln` is the software `log` Rust's standard library links on wasm32
//! (FreeBSD's `e_log.c`, ported in [`soft_ln`]), while a native `f64::ln`
//! calls the C library's, which on glibc is table-driven and uses FMA, about
//! 1.8 times faster on its own. [`NativeFn::LightStd`] measures that
//! baseline too.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch};
use arrow::compute::binary;
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::{SessionConfig, SessionContext};

use super::isolate::Isolation;
use super::{ScalarUdfDecl, UdfModule};
use crate::{ModuleKind, Sandbox};

/// `ln(1 + a) * 0.7 + sqrt(b) * 0.3`, as `guests/udf-light` computes it,
/// bit for bit: with the guest's logarithm, [`soft_ln`].
pub fn light(a: f64, b: f64) -> f64 {
    soft_ln(1.0 + a) * 0.7 + b.sqrt() * 0.3
}

/// [`light`] with the platform's `f64::ln` (glibc's on Linux).
pub fn light_std(a: f64, b: f64) -> f64 {
    (1.0 + a).ln() * 0.7 + b.sqrt() * 0.3
}

/// The natural logarithm as `f64::ln` computes it in a wasm32 guest: the
/// `log` of Rust's `libm` (`compiler_builtins`), a port of FreeBSD's
/// `e_log.c`, kept here so the native baseline runs the guest's code.
/// Error below 1 ulp.
///
/// Original notice: Copyright (C) 1993 by Sun Microsystems, Inc. All
/// rights reserved. Developed at SunSoft, a Sun Microsystems, Inc.
/// business. Permission to use, copy, modify, and distribute this software
/// is freely granted, provided that this notice is preserved.
pub fn soft_ln(mut x: f64) -> f64 {
    // The constants by their bits, as e_log.c gives them.
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    const LG1: f64 = f64::from_bits(0x3fe5_5555_5555_5593);
    const LG2: f64 = f64::from_bits(0x3fd9_9999_9997_fa04);
    const LG3: f64 = f64::from_bits(0x3fd2_4924_9422_9359);
    const LG4: f64 = f64::from_bits(0x3fcc_71c5_1d8e_78af);
    const LG5: f64 = f64::from_bits(0x3fc7_4664_96cb_03de);
    const LG6: f64 = f64::from_bits(0x3fc3_9a09_d078_c69f);
    const LG7: f64 = f64::from_bits(0x3fc2_f112_df3e_5244);
    let x1p54 = f64::from_bits(0x4350_0000_0000_0000); // 2^54

    let mut ui = x.to_bits();
    let mut hx = (ui >> 32) as u32;
    let mut k: i32 = 0;
    if hx < 0x0010_0000 || (hx >> 31) != 0 {
        if ui << 1 == 0 {
            return -1. / (x * x); // log(±0) = -inf
        }
        if hx >> 31 != 0 {
            return f64::NAN; // log(negative) = NaN
        }
        // Subnormal: scale up.
        k -= 54;
        x *= x1p54;
        ui = x.to_bits();
        hx = (ui >> 32) as u32;
    } else if hx >= 0x7ff0_0000 {
        return x;
    } else if hx == 0x3ff0_0000 && ui << 32 == 0 {
        return 0.;
    }
    // Reduce x into [sqrt(2)/2, sqrt(2)].
    hx += 0x3ff0_0000 - 0x3fe6_a09e;
    k += ((hx >> 20) as i32) - 0x3ff;
    hx = (hx & 0x000f_ffff) + 0x3fe6_a09e;
    ui = (u64::from(hx) << 32) | (ui & 0xffff_ffff);
    x = f64::from_bits(ui);

    let f = x - 1.0;
    let hfsq = 0.5 * f * f;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG2 + w * (LG4 + w * LG6));
    let t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
    let r = t2 + t1;
    let dk = f64::from(k);
    s * (hfsq + r) + dk * LN2_LO - hfsq + f + dk * LN2_HI
}

/// Euclid's algorithm: 64-bit divisions until both operands fit 32 bits,
/// then a loop of 32-bit divisions: the same source as the guest's. (LLVM
/// narrows the division on its own for native x86-64; Cranelift does not,
/// and a 64-bit division is several times slower, so the guest spells it
/// out and the baseline matches it.)
fn gcd_u64(mut x: u64, mut y: u64) -> u64 {
    while (x | y) >> 32 != 0 {
        if y == 0 {
            return x;
        }
        (x, y) = (y, x % y);
    }
    let (mut x, mut y) = (x as u32, y as u32);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    u64::from(x)
}

/// `gcd(|a|, |b|)`, as `guests/udf-gcd` computes it: `None` when the
/// result does not fit an `i64` (2⁶³).
pub fn gcd(a: i64, b: i64) -> Option<i64> {
    i64::try_from(gcd_u64(a.unsigned_abs(), b.unsigned_abs())).ok()
}

/// Which native function a [`NativeScalarUdf`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NativeFn {
    /// [`light`] over `(Float64, Float64) -> Float64`.
    Light,
    /// [`light_std`] over `(Float64, Float64) -> Float64`.
    LightStd,
    /// [`gcd`] over `(Int64, Int64) -> Int64`.
    Gcd,
}

/// The baseline: [`light`] or [`gcd`] as a native DataFusion UDF.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NativeScalarUdf {
    name: String,
    function: NativeFn,
    signature: Signature,
}

impl NativeScalarUdf {
    /// A native UDF called `name` in SQL.
    pub fn new(name: impl Into<String>, function: NativeFn) -> Self {
        let ty = match function {
            NativeFn::Light | NativeFn::LightStd => DataType::Float64,
            NativeFn::Gcd => DataType::Int64,
        };
        NativeScalarUdf {
            name: name.into(),
            function,
            signature: Signature::exact(vec![ty.clone(), ty], Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for NativeScalarUdf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(match self.function {
            NativeFn::Light | NativeFn::LightStd => DataType::Float64,
            NativeFn::Gcd => DataType::Int64,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [a, b] = arrays.as_slice() else {
            return Err(DataFusionError::Plan(format!(
                "{} takes two arguments",
                self.name
            )));
        };
        let out: ArrayRef = match self.function {
            NativeFn::Light | NativeFn::LightStd => {
                let f = if self.function == NativeFn::Light {
                    light
                } else {
                    light_std
                };
                let out: Float64Array = binary(
                    a.as_primitive::<Float64Type>(),
                    b.as_primitive::<Float64Type>(),
                    f,
                )?;
                Arc::new(out)
            }
            NativeFn::Gcd => {
                let (a, b) = (a.as_primitive::<Int64Type>(), b.as_primitive::<Int64Type>());
                let fast: Int64Array = binary(a, b, |x, y| {
                    gcd_u64(x.unsigned_abs(), y.unsigned_abs()) as i64
                })?;
                // Only 2⁶³ wraps negative; such a batch takes the slow path.
                if fast.values().iter().any(|v| *v < 0) {
                    Arc::new(
                        a.iter()
                            .zip(b.iter())
                            .map(|(x, y)| gcd(x?, y?))
                            .collect::<Int64Array>(),
                    )
                } else {
                    Arc::new(fast)
                }
            }
        };
        if all_scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct UdfBenchConfig {
    /// Rows in the table.
    pub rows: usize,
    /// Rows per record batch.
    pub batch_rows: usize,
    /// Table partitions, and DataFusion's target partitions.
    pub partitions: usize,
    /// Timed runs of each query, after one warm-up run.
    pub repeats: usize,
    /// Instantiations timed for the p50/p99.
    pub instantiations: usize,
}

impl Default for UdfBenchConfig {
    fn default() -> Self {
        UdfBenchConfig {
            rows: 10_000_000,
            batch_rows: 8_192,
            partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            repeats: 3,
            instantiations: 1_000,
        }
    }
}

/// Measured times (medians) and their ratios to native.
#[derive(Debug, Clone)]
pub struct UdfBenchReport {
    pub config: UdfBenchConfig,
    /// `SELECT SUM(light(a, b))` with the wasm UDF.
    pub light_wasm: Duration,
    /// The same with the native UDF.
    pub light_native: Duration,
    /// `light_wasm / light_native`.
    pub light_ratio: f64,
    /// The same wasm UDF through the same loop, without row isolation
    /// (no restore between rows, no instruction cap): what isolation costs.
    pub light_unisolated: Duration,
    /// `light_unisolated / light_native`.
    pub light_unisolated_ratio: f64,
    /// The same query with the platform's `ln` ([`NativeFn::LightStd`]).
    pub light_native_std: Duration,
    /// `light_wasm / light_native_std`.
    pub light_std_ratio: f64,
    /// `SELECT SUM(gcd(x, y))` with the wasm UDF.
    pub gcd_wasm: Duration,
    /// The same with the native UDF.
    pub gcd_native: Duration,
    /// `gcd_wasm / gcd_native`.
    pub gcd_ratio: f64,
    /// The gcd UDF without row isolation (as `light_unisolated`).
    pub gcd_unisolated: Duration,
    /// `gcd_unisolated / gcd_native`.
    pub gcd_unisolated_ratio: f64,
    /// Median time to instantiate the cached light module from its `InstancePre`.
    pub instantiate_p50: Duration,
    /// 99th percentile of the same.
    pub instantiate_p99: Duration,
    /// Median time to instantiate the rewritten module that runs scalar
    /// functions row by row, its pristine copy of memory 0 included. Once
    /// per instance: instances serve batch after batch.
    pub row_instantiate_p50: Duration,
    /// The sums each query returned, wasm then native, as a sanity check.
    pub light_sums: (f64, f64),
    pub gcd_sums: (i64, i64),
}

impl fmt::Display for UdfBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "{} rows, batches of {}, {} partitions, median of {} runs",
            c.rows, c.batch_rows, c.partitions, c.repeats
        )?;
        writeln!(
            f,
            "light: wasm {:?}, native {:?}, ratio {:.3} (native with the platform's ln {:?}, ratio {:.3})",
            self.light_wasm,
            self.light_native,
            self.light_ratio,
            self.light_native_std,
            self.light_std_ratio
        )?;
        writeln!(
            f,
            "gcd:   wasm {:?}, native {:?}, ratio {:.3}",
            self.gcd_wasm, self.gcd_native, self.gcd_ratio
        )?;
        writeln!(
            f,
            "without row isolation: light {:?} ({:.3}), gcd {:?} ({:.3})",
            self.light_unisolated,
            self.light_unisolated_ratio,
            self.gcd_unisolated,
            self.gcd_unisolated_ratio
        )?;
        write!(
            f,
            "instantiation of a cached module ({} runs): p50 {:?}, p99 {:?}; of its row-isolated rewrite with the pristine copy: p50 {:?}",
            c.instantiations, self.instantiate_p50, self.instantiate_p99, self.row_instantiate_p50
        )
    }
}

/// A deterministic stream of numbers (SplitMix64).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Table `t(a, b: Float64; x, y: Int64)` of `rows` deterministic rows:
/// `a` in [0, 10⁶), `b` in [0, 10⁴), `x` and `y` in [1, 2³¹).
pub fn bench_table(rows: usize, batch_rows: usize, partitions: usize) -> Result<MemTable> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Float64, true),
        Field::new("b", DataType::Float64, true),
        Field::new("x", DataType::Int64, true),
        Field::new("y", DataType::Int64, true),
    ]));
    let partitions = partitions.max(1);
    let batch_rows = batch_rows.max(1);
    let mut parts = vec![Vec::new(); partitions];
    let mut rng = SplitMix(0x5eed);
    let mut start = 0;
    let mut index = 0;
    while start < rows {
        let n = batch_rows.min(rows - start);
        let a: Float64Array = (0..n).map(|_| rng.unit() * 1e6).collect();
        let b: Float64Array = (0..n).map(|_| rng.unit() * 1e4).collect();
        let x: Int64Array = (0..n).map(|_| (rng.next() >> 33) as i64 + 1).collect();
        let y: Int64Array = (0..n).map(|_| (rng.next() >> 33) as i64 + 1).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(a), Arc::new(b), Arc::new(x), Arc::new(y)],
        )?;
        parts[index % partitions].push(batch);
        start += n;
        index += 1;
    }
    MemTable::try_new(schema, parts)
}

fn sandbox_error(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

async fn timed_sum(
    ctx: &SessionContext,
    sql: &str,
    repeats: usize,
) -> Result<(Duration, ScalarValue)> {
    let mut times = Vec::with_capacity(repeats);
    let mut value = ScalarValue::Null;
    for run in 0..=repeats {
        let started = Instant::now();
        let batches = ctx.sql(sql).await?.collect().await?;
        let elapsed = started.elapsed();
        value = ScalarValue::try_from_array(batches[0].column(0), 0)?;
        if run > 0 {
            times.push(elapsed);
        }
    }
    times.sort();
    Ok((times[times.len() / 2], value))
}

fn as_f64(v: &ScalarValue) -> f64 {
    match v {
        ScalarValue::Float64(Some(x)) => *x,
        _ => f64::NAN,
    }
}

fn as_i64(v: &ScalarValue) -> i64 {
    match v {
        ScalarValue::Int64(Some(x)) => *x,
        _ => i64::MIN,
    }
}

/// Runs the benchmark. `light_wasm` and `gcd_wasm` are the modules of
/// `guests/udf-light` and `guests/udf-gcd`.
pub fn run(
    sandbox: &Sandbox,
    light_wasm: &[u8],
    gcd_wasm: &[u8],
    config: &UdfBenchConfig,
) -> Result<UdfBenchReport> {
    let light_module = sandbox
        .validate(light_wasm, ModuleKind::Udf)
        .and_then(|m| UdfModule::new(sandbox, &m))
        .map_err(sandbox_error)?;
    let gcd_module = sandbox
        .validate(gcd_wasm, ModuleKind::Udf)
        .and_then(|m| UdfModule::new(sandbox, &m))
        .map_err(sandbox_error)?;
    // The same modules through the loop alone, to measure the isolation.
    let unisolated = |bytes: &[u8]| {
        let mut m = sandbox.validate(bytes, ModuleKind::Udf)?;
        m.rows = Some(sandbox.isolate(bytes, &m.functions, Isolation::BenchLoopOnly)?);
        UdfModule::new(sandbox, &m)
    };
    let light_loop_only = unisolated(light_wasm).map_err(sandbox_error)?;
    let gcd_loop_only = unisolated(gcd_wasm).map_err(sandbox_error)?;

    let ctx = SessionContext::new_with_config(
        SessionConfig::new().with_target_partitions(config.partitions.max(1)),
    );
    let table = Arc::new(bench_table(
        config.rows,
        config.batch_rows,
        config.partitions,
    )?);
    ctx.register_table("t", table.clone())?;
    // The same table and functions, the wasm ones without isolation.
    let loop_ctx = SessionContext::new_with_config(
        SessionConfig::new().with_target_partitions(config.partitions.max(1)),
    );
    loop_ctx.register_table("t", table)?;
    let light_decl = || {
        ScalarUdfDecl::new(
            "light",
            vec![DataType::Float64, DataType::Float64],
            DataType::Float64,
        )
    };
    let gcd_decl = || {
        ScalarUdfDecl::new(
            "gcd",
            vec![DataType::Int64, DataType::Int64],
            DataType::Int64,
        )
    };
    ctx.register_udf(ScalarUDF::from(light_module.scalar(light_decl())?));
    ctx.register_udf(ScalarUDF::from(gcd_module.scalar(gcd_decl())?));
    loop_ctx.register_udf(ScalarUDF::from(light_loop_only.scalar(light_decl())?));
    loop_ctx.register_udf(ScalarUDF::from(gcd_loop_only.scalar(gcd_decl())?));
    ctx.register_udf(ScalarUDF::from(NativeScalarUdf::new(
        "light_native",
        NativeFn::Light,
    )));
    ctx.register_udf(ScalarUDF::from(NativeScalarUdf::new(
        "light_native_std",
        NativeFn::LightStd,
    )));
    ctx.register_udf(ScalarUDF::from(NativeScalarUdf::new(
        "gcd_native",
        NativeFn::Gcd,
    )));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.partitions.max(1))
        .build()
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let repeats = config.repeats.max(1);
    let light = "SELECT SUM(light(a, b)) FROM t";
    let gcd = "SELECT SUM(gcd(x, y)) FROM t";
    let (light_wasm, light_native, light_native_std, light_unisolated) =
        runtime.block_on(async {
            Ok::<_, DataFusionError>((
                timed_sum(&ctx, light, repeats).await?,
                timed_sum(&ctx, "SELECT SUM(light_native(a, b)) FROM t", repeats).await?,
                timed_sum(&ctx, "SELECT SUM(light_native_std(a, b)) FROM t", repeats).await?,
                timed_sum(&loop_ctx, light, repeats).await?,
            ))
        })?;
    let (gcd_wasm, gcd_native, gcd_unisolated) = runtime.block_on(async {
        Ok::<_, DataFusionError>((
            timed_sum(&ctx, gcd, repeats).await?,
            timed_sum(&ctx, "SELECT SUM(gcd_native(x, y)) FROM t", repeats).await?,
            timed_sum(&loop_ctx, gcd, repeats).await?,
        ))
    })?;

    let mut times = Vec::with_capacity(config.instantiations.max(1));
    for _ in 0..config.instantiations.max(1) {
        let started = Instant::now();
        let instance = light_module.inner.instantiate().map_err(sandbox_error)?;
        times.push(started.elapsed());
        drop(instance);
    }
    times.sort();
    let percentile = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
    // What serves scalar functions: an instance of the rewritten module,
    // with its pristine copy of memory 0 taken.
    let mut row_times = Vec::with_capacity(config.instantiations.max(1));
    if let Some(rows) = &light_module.inner.rows {
        for _ in 0..config.instantiations.max(1) {
            let started = Instant::now();
            let instance = rows
                .instantiate(
                    &light_module.inner.engine,
                    &light_module.inner.limits,
                    &light_module.inner.live,
                )
                .map_err(sandbox_error)?;
            row_times.push(started.elapsed());
            drop(instance);
        }
    }
    row_times.sort();
    let row_p50 = row_times
        .get(row_times.len() / 2)
        .copied()
        .unwrap_or_default();

    let ratio = |w: Duration, n: Duration| w.as_secs_f64() / n.as_secs_f64().max(f64::MIN_POSITIVE);
    Ok(UdfBenchReport {
        config: config.clone(),
        light_ratio: ratio(light_wasm.0, light_native.0),
        light_std_ratio: ratio(light_wasm.0, light_native_std.0),
        light_native_std: light_native_std.0,
        gcd_ratio: ratio(gcd_wasm.0, gcd_native.0),
        light_unisolated: light_unisolated.0,
        light_unisolated_ratio: ratio(light_unisolated.0, light_native.0),
        gcd_unisolated: gcd_unisolated.0,
        gcd_unisolated_ratio: ratio(gcd_unisolated.0, gcd_native.0),
        light_sums: (as_f64(&light_wasm.1), as_f64(&light_native.1)),
        gcd_sums: (as_i64(&gcd_wasm.1), as_i64(&gcd_native.1)),
        light_wasm: light_wasm.0,
        light_native: light_native.0,
        gcd_wasm: gcd_wasm.0,
        gcd_native: gcd_native.0,
        instantiate_p50: percentile(50),
        instantiate_p99: percentile(99),
        row_instantiate_p50: row_p50,
    })
}
