//! WebAssembly UDFs inside real DataFusion queries: results equal native
//! Rust, nulls propagate, every malformed result and every trap is stopped
//! with its own error, and the session keeps working afterwards.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::{SessionConfig, SessionContext};
use unseen_sandbox::udf::bench::{self, NativeFn, NativeScalarUdf, UdfBenchConfig};
use unseen_sandbox::{
    Limits, ModuleKind, Sandbox, SandboxError, ScalarUdfDecl, UdfError, UdfModule,
};

use crate::support::{shared, test_limits, wasm};

use DataType::{Float64, Int64, Utf8};

/// A UDF module of the shared sandbox, validated and prepared once per test.
pub(crate) fn module(crate_name: &str) -> UdfModule {
    module_of(shared(), crate_name)
}

/// A UDF module of `sandbox`.
pub(crate) fn module_of(sandbox: &Sandbox, crate_name: &str) -> UdfModule {
    let validated = sandbox
        .validate(&wasm(crate_name), ModuleKind::Udf)
        .unwrap_or_else(|e| panic!("{crate_name} should pass validation as a UDF: {e}"));
    UdfModule::new(sandbox, &validated).expect("UDF module")
}

fn light_ref(a: f64, b: f64) -> f64 {
    (1.0 + a).ln() * 0.7 + b.sqrt() * 0.3
}

fn gcd_ref(a: i64, b: i64) -> Option<i64> {
    let (mut x, mut y) = (a.unsigned_abs(), b.unsigned_abs());
    while y != 0 {
        (x, y) = (y, x % y);
    }
    i64::try_from(x).ok()
}

/// `t(a, b: Float64; x, y: Int64; s: Utf8)`, `rows` rows in batches of
/// 1,000 over `partitions` partitions, with nulls in every column, edge values of
/// gcd, and string batches that are slices (offsets not starting at 0).
fn table(rows: usize, partitions: usize) -> MemTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", Float64, true),
        Field::new("b", Float64, true),
        Field::new("x", Int64, true),
        Field::new("y", Int64, true),
        Field::new("s", Utf8, true),
    ]));
    let industries = [
        "Manufacturing",
        "retail",
        "software",
        "fishing",
        "Construction",
    ];
    let mut parts = vec![Vec::new(); partitions];
    for (index, start) in (0..rows).step_by(1000).enumerate() {
        let n = 1000.min(rows - start);
        let row = |i: usize| start + i;
        let a: Float64Array = (0..n)
            .map(|i| (row(i) % 7 != 3).then(|| row(i) as f64 * 13.7))
            .collect();
        let b: Float64Array = (0..n)
            .map(|i| (row(i) % 11 != 5).then(|| (row(i) % 9973) as f64 / 3.0))
            .collect();
        let edge = [0, -12, i64::MIN, i64::MAX, 1];
        let x: Int64Array = (0..n)
            .map(|i| match row(i) {
                r if r < edge.len() => Some(edge[r]),
                r if r % 13 == 0 => None,
                r => Some((r as i64 * 7919) % 1_000_003 - 500_000),
            })
            .collect();
        let y: Int64Array = (0..n)
            .map(|i| match row(i) {
                0 => Some(0),
                1 => Some(18),
                2 => Some(0),
                3 => Some(i64::MAX),
                r if r % 17 == 0 => None,
                r => Some((r as i64 * 104_729) % 999_983),
            })
            .collect();
        let s_full: StringArray = (0..n + 3)
            .map(|i| (i % 5 != 4).then(|| industries[(start + i) % industries.len()]))
            .collect();
        let s = s_full.slice(3, n);
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(a),
                Arc::new(b),
                Arc::new(x),
                Arc::new(y),
                Arc::new(s),
            ],
        )
        .unwrap();
        parts[index % partitions].push(batch);
    }
    MemTable::try_new(schema, parts).unwrap()
}

/// A session over `t`; the table has three partitions, or one when the
/// session runs one, so that then exactly one batch runs at a time.
pub(crate) fn session(partitions: usize) -> SessionContext {
    let ctx =
        SessionContext::new_with_config(SessionConfig::new().with_target_partitions(partitions));
    let parts = if partitions == 1 { 1 } else { 3 };
    ctx.register_table("t", Arc::new(table(10_000, parts)))
        .unwrap();
    ctx
}

fn register(
    ctx: &SessionContext,
    module: &UdfModule,
    name: &str,
    args: Vec<DataType>,
    returns: DataType,
) {
    let udf = module
        .scalar(ScalarUdfDecl::new(name, args, returns))
        .unwrap_or_else(|e| panic!("declare {name}: {e}"));
    ctx.register_udf(ScalarUDF::from(udf));
}

pub(crate) async fn query(
    ctx: &SessionContext,
    sql: &str,
) -> Result<Vec<ArrayRef>, DataFusionError> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let schema = batches.first().map(|b| b.schema());
    let columns = schema.map_or(0, |s| s.fields().len());
    Ok((0..columns)
        .map(|c| {
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
            arrow::compute::concat(&parts).unwrap()
        })
        .collect())
}

/// The [`UdfError`] somewhere in a query error's chain of causes.
pub(crate) fn udf_error(e: &DataFusionError) -> &UdfError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        if let Some(found) = err.downcast_ref::<UdfError>() {
            return found;
        }
        if let Some(DataFusionError::External(inner)) = err.downcast_ref::<DataFusionError>()
            && let Some(found) = inner.downcast_ref::<UdfError>()
        {
            return found;
        }
        cause = err.source();
    }
    panic!("no UdfError in {e}");
}

async fn assert_light_still_works(ctx: &SessionContext) {
    let cols = query(ctx, "SELECT a, b, light(a, b) FROM t ORDER BY a LIMIT 5")
        .await
        .expect("the session keeps working");
    let (a, b, w) = (
        cols[0].as_primitive::<Float64Type>(),
        cols[1].as_primitive::<Float64Type>(),
        cols[2].as_primitive::<Float64Type>(),
    );
    for i in 0..w.len() {
        if a.is_valid(i) && b.is_valid(i) {
            assert_eq!(w.value(i), light_ref(a.value(i), b.value(i)));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn light_equals_native_rust_inside_a_query() {
    let ctx = session(3);
    register(
        &ctx,
        &module("udf-light"),
        "light",
        vec![Float64, Float64],
        Float64,
    );
    ctx.register_udf(ScalarUDF::from(NativeScalarUdf::new(
        "light_native",
        NativeFn::Light,
    )));
    let cols = query(&ctx, "SELECT a, b, light(a, b), light_native(a, b) FROM t")
        .await
        .unwrap();
    let [a, b, w, n] = [0, 1, 2, 3].map(|i| cols[i].as_primitive::<Float64Type>());
    assert_eq!(w.len(), 10_000);
    let mut nulls = 0;
    for i in 0..w.len() {
        if a.is_null(i) || b.is_null(i) {
            assert!(w.is_null(i), "row {i}: a null argument gives a null result");
            assert!(n.is_null(i));
            nulls += 1;
            continue;
        }
        let expected = light_ref(a.value(i), b.value(i));
        let got = w.value(i);
        assert!(
            (got - expected).abs() <= 1e-12 * expected.abs().max(1.0),
            "row {i}: wasm {got}, native {expected}"
        );
        assert!((n.value(i) - expected).abs() <= 1e-12 * expected.abs().max(1.0));
        // The baseline runs the guest's own logarithm: equal bit for bit.
        assert_eq!(got.to_bits(), n.value(i).to_bits(), "row {i}");
    }
    assert_eq!(w.null_count(), nulls);
    assert!(nulls > 1000, "the table has nulls to propagate");

    let sums = query(
        &ctx,
        "SELECT SUM(light(a, b)), SUM(light_native(a, b)) FROM t",
    )
    .await
    .unwrap();
    let (sw, sn) = (
        sums[0].as_primitive::<Float64Type>().value(0),
        sums[1].as_primitive::<Float64Type>().value(0),
    );
    assert!((sw - sn).abs() <= 1e-9 * sn.abs(), "{sw} vs {sn}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcd_equals_native_rust_exactly() {
    let ctx = session(3);
    let gcd = module("udf-gcd");
    register(&ctx, &gcd, "gcd", vec![Int64, Int64], Int64);
    ctx.register_udf(ScalarUDF::from(NativeScalarUdf::new(
        "gcd_native",
        NativeFn::Gcd,
    )));
    let cols = query(
        &ctx,
        "SELECT x, y, gcd(x, y), gcd_native(x, y) FROM t ORDER BY x, y",
    )
    .await
    .unwrap();
    let [x, y, g, n] = [0, 1, 2, 3].map(|i| cols[i].as_primitive::<Int64Type>());
    let mut checked = 0;
    for i in 0..g.len() {
        let expected = match (x.is_valid(i), y.is_valid(i)) {
            (true, true) => gcd_ref(x.value(i), y.value(i)),
            _ => None,
        };
        let got = g.is_valid(i).then(|| g.value(i));
        assert_eq!(
            got,
            expected,
            "row {i}: gcd({:?}, {:?})",
            x.value(i),
            y.value(i)
        );
        assert_eq!(n.is_valid(i).then(|| n.value(i)), expected);
        checked += 1;
    }
    assert_eq!(checked, 10_000);

    // The edge cases by value, through literals too (all-scalar arguments).
    let cols = query(
        &ctx,
        "SELECT gcd(0, 0), gcd(-12, 18), gcd(CAST(-9223372036854775808 AS BIGINT), 0), \
         gcd(9223372036854775807, 9223372036854775807), gcd(NULL, 4)",
    )
    .await
    .unwrap();
    let values: Vec<Option<i64>> = cols
        .iter()
        .map(|c| {
            let c = c.as_primitive::<Int64Type>();
            c.is_valid(0).then(|| c.value(0))
        })
        .collect();
    assert_eq!(values, [Some(0), Some(6), None, Some(i64::MAX), None]);
    assert!(
        gcd.idle_instances() >= 1,
        "instances are kept for the next batch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_arguments_and_several_functions_of_one_module() {
    let ctx = session(2);
    let sme = module("udf-sme-score");
    register(&ctx, &sme, "industry_risk", vec![Utf8], Float64);
    register(&ctx, &sme, "sme_score", vec![Float64, Float64], Float64);
    let cols = query(&ctx, "SELECT s, industry_risk(s), sme_score(a, b) FROM t")
        .await
        .unwrap();
    let s = cols[0].as_string::<i32>();
    let risk = cols[1].as_primitive::<Float64Type>();
    let score = cols[2].as_primitive::<Float64Type>();
    for i in 0..s.len() {
        if s.is_null(i) {
            assert!(risk.is_null(i));
            continue;
        }
        let expected = match s.value(i).to_ascii_lowercase().as_str() {
            "manufacturing" => 1.1,
            "construction" => 1.4,
            "retail" => 1.2,
            "software" => 0.8,
            _ => 1.0,
        };
        assert_eq!(risk.value(i), expected, "row {i}: {}", s.value(i));
    }
    assert!(s.null_count() > 0);
    for i in 0..score.len() {
        if score.is_valid(i) {
            assert!((300.0..=850.0).contains(&score.value(i)));
        }
    }
}

#[test]
fn batch_exports_are_refused_at_upload() {
    // Hand-written exports over a whole batch could read every row; only
    // per-row functions are accepted, whatever the batch export returns.
    for guest in ["adv-udf-wrong-length", "adv-udf-bad-pointer"] {
        match shared().validate(&wasm(guest), ModuleKind::Udf) {
            Err(SandboxError::MistypedExport { name, expected, .. }) => {
                assert!(name.starts_with("udf_"), "{name}");
                assert!(expected.contains("batch exports"), "{expected}");
            }
            other => panic!("{guest}: expected a refused batch export, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_row_is_a_null_and_the_query_goes_on() {
    // A cap of 20,000 instructions per row, so that `spin` is stopped fast.
    let sandbox = Sandbox::new(Limits {
        udf_row_instructions: 20_000,
        ..test_limits()
    })
    .unwrap();
    let ctx = session(1);
    register(
        &ctx,
        &module_of(&sandbox, "udf-light"),
        "light",
        vec![Float64, Float64],
        Float64,
    );
    let traps = module_of(&sandbox, "adv-udf-traps");
    for name in ["spin", "hoard", "fussy"] {
        register(&ctx, &traps, name, vec![Int64], Int64);
    }

    // `fussy` panics on negative values: those rows, and only those, are null.
    let cols = query(&ctx, "SELECT x, fussy(x) FROM t").await.unwrap();
    let (x, f) = (
        cols[0].as_primitive::<Int64Type>(),
        cols[1].as_primitive::<Int64Type>(),
    );
    let mut negative = 0;
    for i in 0..x.len() {
        match x.is_valid(i).then(|| x.value(i)) {
            Some(v) if v >= 0 => assert_eq!(f.value(i), v, "row {i}"),
            Some(_) => {
                negative += 1;
                assert!(f.is_null(i), "row {i}");
            }
            None => assert!(f.is_null(i), "row {i}"),
        }
    }
    assert!(negative > 100, "the table has negative x ({negative})");
    assert_eq!(traps.rows_failed(), negative as u64);

    // An endless loop runs out of its per-row cap; allocating past the
    // spare heap aborts. Every row is null, deterministically, and the
    // query succeeds.
    for name in ["spin", "hoard"] {
        let cols = query(
            &ctx,
            &format!("SELECT {name}(x) FROM t WHERE x IS NOT NULL"),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!cols[0].is_empty());
        assert_eq!(cols[0].null_count(), cols[0].len(), "{name}");
        assert_light_still_works(&ctx).await;
    }
    assert!(traps.idle_instances() >= 1, "the instance serves on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wall_clock_deadline_only_guards_an_overloaded_host() {
    // With a cap far beyond the deadline, the deadline ends the batch and
    // fails the query: the guard for a host too slow to reach the cap.
    let deadline = std::time::Duration::from_millis(300);
    let sandbox = Sandbox::new(Limits {
        deadline,
        udf_row_instructions: u64::MAX / 2,
        ..test_limits()
    })
    .unwrap();
    let ctx = session(1);
    let traps = module_of(&sandbox, "adv-udf-traps");
    register(&ctx, &traps, "spin", vec![Int64], Int64);
    let e = query(&ctx, "SELECT spin(x) FROM t").await.unwrap_err();
    match udf_error(&e) {
        UdfError::LimitExceeded { udf, limit, .. } => {
            assert_eq!(udf, "spin");
            assert_eq!(*limit, "deadline");
        }
        other => panic!("expected the deadline, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declaration_that_does_not_match_the_module_is_refused() {
    let light = module("udf-light");
    match light.scalar(ScalarUdfDecl::new("heavy", vec![Float64], Float64)) {
        Err(UdfError::MissingExport { export, .. }) => assert_eq!(export, "udf_row_heavy"),
        other => panic!("expected a missing export, got {other:?}"),
    }
    match light.scalar(ScalarUdfDecl::new("light", vec![Float64, Float64], Utf8)) {
        Err(UdfError::Declaration { problem, .. }) => {
            assert!(problem.contains("result type Utf8"), "{problem}")
        }
        other => panic!("expected a refused declaration, got {other:?}"),
    }
    // The function exists but was declared for two doubles.
    match light.scalar(ScalarUdfDecl::new("light", vec![Int64, Int64], Float64)) {
        Err(UdfError::SignatureMismatch { udf, .. }) => assert_eq!(udf, "light"),
        other => panic!("expected a signature mismatch, got {other:?}"),
    }
}

#[test]
fn udf_that_imports_anything_is_refused_at_upload() {
    match shared().validate(&wasm("adv-udf-import"), ModuleKind::Udf) {
        Err(SandboxError::ForbiddenImport {
            module,
            name,
            reason,
        }) => {
            assert_eq!((module.as_str(), name.as_str()), ("unseen_v1", "log"));
            assert!(reason.contains("may import nothing"), "{reason}");
        }
        other => panic!("expected the import to be refused, got {other:?}"),
    }
}

#[test]
fn udf_and_job_modules_are_not_interchangeable() {
    match shared().validate(&wasm("udf-light"), ModuleKind::Job) {
        Err(SandboxError::MissingExport { name, .. }) => assert_eq!(name, "unseen_main"),
        other => panic!("a UDF module is not a job: {other:?}"),
    }
    let job = shared()
        .validate(&wasm("dry-run-probe"), ModuleKind::Job)
        .expect("a job module");
    assert!(UdfModule::new(shared(), &job).is_err());
}

#[test]
fn udf_module_without_the_udf_exports_is_refused() {
    // A module with memory but neither the version nor the allocator.
    use crate::support::asm::{HEADER, name, section};
    let mut m = HEADER.to_vec();
    section(5, &[1, 0, 1], &mut m); // one memory, min 1 page
    let mut exports = vec![1];
    name("memory", &mut exports);
    exports.extend_from_slice(&[2, 0]);
    section(7, &exports, &mut m);
    match shared().validate(&m, ModuleKind::Udf) {
        Err(SandboxError::MissingExport { name, expected }) => {
            assert_eq!(name, "unseen_udf_abi_version");
            assert!(expected.contains("udf_module!"), "{expected}");
        }
        other => panic!("expected a missing export, got {other:?}"),
    }
}

/// A small run of the benchmark, always on: the wasm and native sums agree.
#[test]
fn bench_small_run_agrees_with_native() {
    let config = UdfBenchConfig {
        rows: 50_000,
        repeats: 1,
        instantiations: 20,
        ..UdfBenchConfig::default()
    };
    let report = bench::run(shared(), &wasm("udf-light"), &wasm("udf-gcd"), &config).unwrap();
    let (w, n) = report.light_sums;
    assert!((w - n).abs() <= 1e-9 * n.abs(), "{w} vs {n}");
    assert_eq!(report.gcd_sums.0, report.gcd_sums.1);
    assert!(report.instantiate_p50 > std::time::Duration::ZERO);
}

/// The full benchmark: `cargo test --release -p unseen-sandbox -- --ignored bench --nocapture`.
/// Rows from `UNSEEN_UDF_BENCH_ROWS` (default 10,000,000).
#[test]
#[ignore = "slow; run in release"]
fn bench_udf_against_native() {
    let rows = std::env::var("UNSEEN_UDF_BENCH_ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10_000_000);
    let config = UdfBenchConfig {
        rows,
        ..UdfBenchConfig::default()
    };
    let sandbox = unseen_sandbox::Sandbox::new(unseen_sandbox::Limits::default()).unwrap();
    let report = bench::run(&sandbox, &wasm("udf-light"), &wasm("udf-gcd"), &config).unwrap();
    println!("{report}");
    assert_eq!(report.gcd_sums.0, report.gcd_sums.1);
}

/// `bytes` with one more `unseen_udf` custom section holding `record`.
fn with_declaration(bytes: Vec<u8>, record: &[u8]) -> Vec<u8> {
    with_section(bytes, udf_sdk::udf::DECLARATION_SECTION, record)
}

/// `bytes` with one more custom section `section` holding `record`.
pub(crate) fn with_section(mut bytes: Vec<u8>, section: &str, record: &[u8]) -> Vec<u8> {
    let name = section.as_bytes();
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(record);
    assert!(body.len() < 128, "one-byte LEB128 size");
    bytes.push(0);
    bytes.push(body.len() as u8);
    bytes.extend_from_slice(&body);
    bytes
}

/// `bytes` without any declaration section, scalar (`unseen_udf`) or
/// aggregate (`unseen_udaf`).
pub(crate) fn without_sections(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes[..8].to_vec();
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.unwrap();
        let Some((id, range)) = payload.as_section() else {
            continue;
        };
        if let wasmparser::Payload::CustomSection(c) = &payload
            && (c.name() == udf_sdk::udf::DECLARATION_SECTION
                || c.name() == udf_sdk::udf::AGGREGATE_DECLARATION_SECTION)
        {
            continue;
        }
        // Re-emit the section header: id, LEB128 size, then the body.
        out.push(id);
        let mut size = range.len();
        loop {
            let byte = (size & 0x7f) as u8;
            size >>= 7;
            out.push(if size == 0 { byte } else { byte | 0x80 });
            if size == 0 {
                break;
            }
        }
        out.extend_from_slice(&bytes[range]);
    }
    out
}

fn declaration_refusal(bytes: &[u8]) -> String {
    match shared().validate(bytes, ModuleKind::Udf) {
        Err(e @ SandboxError::UdfDeclaration { .. }) => e.to_string(),
        other => panic!("expected a declaration refusal, got {other:?}"),
    }
}

#[test]
fn modules_declare_their_functions_names_and_types() {
    let validated = shared()
        .validate(&wasm("udf_sme_score"), ModuleKind::Udf)
        .unwrap();
    let mut functions = validated.functions().to_vec();
    functions.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        functions,
        vec![
            ScalarUdfDecl::new("industry_risk", vec![Utf8], Float64),
            ScalarUdfDecl::new("sme_score", vec![Float64, Float64], Float64),
        ]
    );
    let job = shared()
        .validate(&wasm("district_income"), ModuleKind::Job)
        .unwrap();
    assert!(job.functions().is_empty());
}

#[test]
fn declarations_must_match_the_exports_one_to_one() {
    let gcd = wasm("udf_gcd");
    let ghost: [u8; udf_sdk::udf::declaration_len("ghost", 1)] = udf_sdk::udf::encode_declaration(
        "ghost",
        &[udf_sdk::udf::UdfType::Int64],
        udf_sdk::udf::UdfType::Int64,
    );
    let message = declaration_refusal(&with_declaration(gcd.clone(), &ghost));
    assert!(
        message.contains("`ghost` is declared but the module has no export `udf_row_ghost`"),
        "{message}"
    );

    let twice: [u8; udf_sdk::udf::declaration_len("gcd", 2)] = udf_sdk::udf::encode_declaration(
        "gcd",
        &[udf_sdk::udf::UdfType::Int64; 2],
        udf_sdk::udf::UdfType::Int64,
    );
    let message = declaration_refusal(&with_declaration(gcd.clone(), &twice));
    assert!(message.contains("`gcd` is declared twice"), "{message}");

    let upper: [u8; udf_sdk::udf::declaration_len("Gcd", 1)] = udf_sdk::udf::encode_declaration(
        "Gcd",
        &[udf_sdk::udf::UdfType::Int64],
        udf_sdk::udf::UdfType::Int64,
    );
    let message = declaration_refusal(&with_declaration(gcd.clone(), &upper));
    assert!(
        message.contains("not a lowercase SQL identifier"),
        "{message}"
    );

    let message = declaration_refusal(&with_declaration(gcd.clone(), &[3, b'g', b'c']));
    assert!(message.contains("ends inside"), "{message}");

    let stripped = without_sections(&gcd);
    assert!(stripped.len() < gcd.len());
    let message = declaration_refusal(&stripped);
    assert!(
        message.contains("no `unseen_udf` or `unseen_udaf` custom section"),
        "{message}"
    );
}

#[tokio::test]
async fn declared_functions_register_and_coerce_their_arguments() {
    let ctx = session(2);
    for udf in module("udf_sme_score").declared().unwrap() {
        ctx.register_udf(ScalarUDF::from(udf));
    }
    // Int64 columns and literals convert to the declared Float64, and a
    // string column to Utf8, without casts in the query.
    let columns = query(
        &ctx,
        "SELECT sme_score(x, 1000) AS s, industry_risk(s) AS r FROM t WHERE x IS NOT NULL AND s IS NOT NULL",
    )
    .await
    .unwrap();
    assert!(columns[0].len() > 1000);
    let scores = columns[0].as_primitive::<Float64Type>();
    assert!(scores.values().iter().all(|v| (300.0..=850.0).contains(v)));
    let risks = columns[1].as_primitive::<Float64Type>();
    assert!(risks.values().contains(&1.1) && risks.values().contains(&1.0));

    let wrong = query(&ctx, "SELECT sme_score(s, a) FROM t")
        .await
        .unwrap_err();
    assert!(
        wrong.to_string().contains("argument 1 is")
            && wrong.to_string().contains("sme_score(Float64, Float64)"),
        "{wrong}"
    );
    let arity = query(&ctx, "SELECT sme_score(a) FROM t").await.unwrap_err();
    assert!(arity.to_string().contains("takes 2 arguments"), "{arity}");
}
