//! Row isolation against the attacks of a UDF author who knows one
//! person's quasi-identifiers: every channel a row could use to tell later
//! rows, batches or queries about that person's value, and every failure
//! that could tell the query's author. Each attack runs on two neighbouring
//! datasets that differ only in the target's income (90,000 or 10,000,
//! against a threshold of 50,000); the exact (pre-noise) release
//! `SUM(LEAST(GREATEST(probe(id, income), 0), 1))` may then differ by at
//! most the target's own clamped contribution, 1. Before isolation they
//! differed by every row after the target's (thousands), or the query
//! failed iff the income was over the threshold.

use std::sync::Arc;

use arrow::array::{Array, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use unseen_sandbox::{Limits, ModuleKind, Sandbox, SandboxError, UdfModule};
use wasm_encoder::{
    BlockType, CodeSection, ConstExpr, CustomSection, DataCountSection, DataSection,
    ElementSection, Elements, ExportKind, ExportSection, Function, FunctionSection, GlobalSection,
    GlobalType, MemorySection, MemoryType, Module, RefType, StartSection, TableSection, TableType,
    TypeSection, ValType,
};

use crate::support::{test_limits, wasm};
use crate::udf::query;

const ROWS: usize = 3_000;
const TARGET_ROW: usize = 7;
const RICH: f64 = 90_000.0;
const POOR: f64 = 10_000.0;
const RELEASE: &str = "SELECT SUM(LEAST(GREATEST(probe(id, income), 0), 1)) FROM people";

/// A sandbox whose rows stop after 50,000 instructions, so that an endless
/// loop ends quickly.
fn sandbox() -> &'static Sandbox {
    static SANDBOX: std::sync::OnceLock<Sandbox> = std::sync::OnceLock::new();
    SANDBOX.get_or_init(|| {
        Sandbox::new(Limits {
            udf_row_instructions: 50_000,
            ..test_limits()
        })
        .unwrap()
    })
}

fn prepare(bytes: &[u8]) -> Result<UdfModule, SandboxError> {
    let validated = sandbox().validate(bytes, ModuleKind::Udf)?;
    UdfModule::new(sandbox(), &validated)
}

/// `people(id, income)`: ids 0.., incomes between 20,000 and 45,000 (all
/// under the threshold) except the target's, in batches of `batch` rows.
fn people(target_income: f64, batch: usize) -> MemTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("income", DataType::Float64, false),
    ]));
    let batches = (0..ROWS)
        .step_by(batch)
        .map(|start| {
            let rows = start..(start + batch).min(ROWS);
            let ids: Int64Array = rows.clone().map(|r| r as i64).collect();
            let incomes: Float64Array = rows
                .map(|r| match r {
                    TARGET_ROW => target_income,
                    r => 20_000.0 + (r * 7_919 % 25_000) as f64,
                })
                .collect();
            RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(incomes)]).unwrap()
        })
        .collect();
    MemTable::try_new(schema, vec![batches]).unwrap()
}

/// The exact release of `sql` over the people with the target's income
/// set to `target_income`, with `module`'s `probe`, in one partition.
async fn release(module: &UdfModule, target_income: f64, batch: usize, sql: &str) -> f64 {
    let ctx = SessionContext::new_with_config(
        SessionConfig::new()
            .with_target_partitions(1)
            .with_batch_size(batch),
    );
    ctx.register_table("people", Arc::new(people(target_income, batch)))
        .unwrap();
    for f in module.functions().unwrap() {
        f.register(&ctx);
    }
    let cols = query(&ctx, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let sum = cols[0].as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!(sum.len(), 1);
    if sum.is_null(0) { 0.0 } else { sum.value(0) }
}

/// Runs the attack of `bytes` on both neighbours, each as its own job (its
/// own module), and checks that the releases differ by at most one row.
async fn assert_bounded(what: &str, bytes: &[u8], batch: usize) -> (f64, f64) {
    let rich = release(&prepare(bytes).unwrap(), RICH, batch, RELEASE).await;
    let poor = release(&prepare(bytes).unwrap(), POOR, batch, RELEASE).await;
    assert!(
        rich.is_finite() && poor.is_finite(),
        "{what}: releases {rich} and {poor}"
    );
    assert!(
        (rich - poor).abs() <= 1.0,
        "{what}: the neighbours' releases differ by {} (> one row)",
        (rich - poor).abs()
    );
    (rich, poor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_does_not_carry_a_row_to_later_rows() {
    // One batch: every row after the target would answer.
    let (rich, poor) = assert_bounded("static", &wasm("adv-static-rows"), ROWS).await;
    // Only the target's own row could say 1.
    assert_eq!((rich, poor), (1.0, 0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heap_does_not_carry_a_row_to_later_batches() {
    // Batches of 100: the target is in the first, 29 batches follow.
    let (rich, poor) = assert_bounded("heap", &wasm("adv-static-batches"), 100).await;
    assert_eq!((rich, poor), (1.0, 0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_does_not_carry_a_row_to_later_queries_of_a_job() {
    // One job (one prepared module): the first query reads the target's
    // row, the second reads everyone else. Each query takes its own handle,
    // as the service does; its instances die with it.
    let bytes = wasm("adv-static-queries");
    let mut seconds = Vec::new();
    for income in [RICH, POOR] {
        let job = prepare(&bytes).unwrap();
        assert_eq!(job.live_instances(), 0, "nothing runs before a query");
        let query = job.for_query();
        let first = release(
            &query,
            income,
            ROWS,
            &format!("{RELEASE} WHERE id = {TARGET_ROW}"),
        )
        .await;
        assert!(first <= 1.0);
        // The instance that saw the target waits for the next batch of
        // the same query only...
        assert!(query.idle_instances() > 0);
        assert_eq!(job.live_instances(), query.idle_instances());
        drop(query);
        // ...and is gone when the query ends: the next query cannot reach
        // its memory, whatever the module left there.
        assert_eq!(job.live_instances(), 0, "an instance outlived its query");
        let next = job.for_query();
        assert_eq!(next.idle_instances(), 0);
        seconds.push(
            release(
                &next,
                income,
                ROWS,
                &format!("{RELEASE} WHERE id <> {TARGET_ROW}"),
            )
            .await,
        );
        drop(next);
        assert_eq!(job.live_instances(), 0);
    }
    assert_eq!(
        seconds[0], seconds[1],
        "a query without the target's row cannot depend on it"
    );
    assert_eq!(seconds[0], 0.0);
    // Within one query too.
    assert_bounded("top of memory", &bytes, ROWS).await;
}

#[test]
fn exports_that_read_other_rows_or_fail_per_batch_are_refused() {
    for guest in ["adv-batch-reader", "adv-invalid-iff"] {
        match prepare(&wasm(guest)) {
            Err(SandboxError::MistypedExport { name, expected, .. }) => {
                assert_eq!(name, "udf_probe");
                assert!(expected.contains("can read other rows"), "{expected}");
            }
            other => panic!("{guest}: expected the batch export refused, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_does_not_carry_a_row_to_later_rows() {
    let (rich, poor) = assert_bounded("global.set", &global_smuggler(), ROWS).await;
    assert_eq!((rich, poor), (1.0, 0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_iff_the_target_matches_changes_only_the_targets_row() {
    for guest in ["adv-trap-iff", "adv-loop-iff", "adv-nan-iff"] {
        let module = prepare(&wasm(guest)).unwrap();
        let rich = release(&module, RICH, 500, RELEASE).await;
        let failed = module.rows_failed();
        let poor = release(&prepare(&wasm(guest)).unwrap(), POOR, 500, RELEASE).await;
        // Every other row says 1; the target's failed row is a null, which
        // the sum counts as the clamp's lower bound, 0.
        assert_eq!(poor, ROWS as f64, "{guest}");
        assert_eq!(rich, ROWS as f64 - 1.0, "{guest}");
        // The service (not the query's author) learns that a row failed.
        let expected_failures = u64::from(guest != "adv-nan-iff");
        assert_eq!(failed, expected_failures, "{guest}");
    }
}

// ---- Hand-assembled modules: what Rust does not emit. ----

/// The declaration record of `probe(Int64, Float64) -> Float64`.
fn probe_declaration() -> Vec<u8> {
    let mut record = vec![5];
    record.extend_from_slice(b"probe");
    record.extend_from_slice(&[2, 1, 2, 2]);
    record
}

/// A UDF module with `udf_row_probe(id: i64, income: f64) -> f64` whose
/// body is `probe`, the ABI's version and allocator exports, and `extra`
/// applied to the module's sections before they are written.
struct Assembled {
    types: TypeSection,
    functions: FunctionSection,
    exports: ExportSection,
    code: CodeSection,
    globals: GlobalSection,
    tables: Option<(TableSection, ElementSection)>,
    data: Option<DataSection>,
    start: Option<u32>,
    memory_pages: u64,
}

impl Assembled {
    fn new(probe: Function) -> Self {
        let mut types = TypeSection::new();
        types
            .ty()
            .function([ValType::I64, ValType::F64], [ValType::F64]);
        types.ty().function([], [ValType::I32]);
        types.ty().function([ValType::I32], [ValType::I32]);
        let mut functions = FunctionSection::new();
        functions.function(0).function(1).function(2);
        let mut exports = ExportSection::new();
        exports
            .export("memory", ExportKind::Memory, 0)
            .export("udf_row_probe", ExportKind::Func, 0)
            .export("unseen_udf_abi_version", ExportKind::Func, 1)
            .export("unseen_alloc", ExportKind::Func, 2);
        let mut code = CodeSection::new();
        code.function(&probe);
        let mut version = Function::new([]);
        version.instructions().i32_const(2).end();
        code.function(&version);
        let mut alloc = Function::new([]);
        alloc.instructions().i32_const(1024).end();
        code.function(&alloc);
        Assembled {
            types,
            functions,
            exports,
            code,
            globals: GlobalSection::new(),
            tables: None,
            data: None,
            start: None,
            memory_pages: 1,
        }
    }

    /// Adds an exported function `evil: () -> ()` with `body`.
    fn with_evil(mut self, body: impl FnOnce(&mut Function)) -> Self {
        let ty = self.types.len();
        self.types.ty().function([], []);
        self.functions.function(ty);
        self.exports.export("evil", ExportKind::Func, 3);
        let mut f = Function::new([]);
        body(&mut f);
        f.instructions().end();
        self.code.function(&f);
        self
    }

    fn finish(self) -> Vec<u8> {
        let mut module = Module::new();
        module.section(&self.types).section(&self.functions);
        if let Some((tables, _)) = &self.tables {
            module.section(tables);
        }
        let mut memories = MemorySection::new();
        memories.memory(MemoryType {
            minimum: self.memory_pages,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        module
            .section(&memories)
            .section(&self.globals)
            .section(&self.exports);
        if let Some(start) = self.start {
            module.section(&StartSection {
                function_index: start,
            });
        }
        if let Some((_, elements)) = &self.tables {
            module.section(elements);
        }
        if let Some(data) = &self.data {
            module.section(&DataCountSection { count: data.len() });
        }
        module.section(&self.code);
        if let Some(data) = &self.data {
            module.section(data);
        }
        module.section(&CustomSection {
            name: "unseen_udf".into(),
            data: probe_declaration().into(),
        });
        module.finish()
    }
}

/// `probe` that keeps the target's income in a mutable global and answers
/// 1.0 for every row once it holds an income over the threshold.
fn global_smuggler() -> Vec<u8> {
    let mut probe = Function::new([]);
    probe
        .instructions()
        .local_get(0)
        .i64_const(TARGET_ROW as i64)
        .i64_eq()
        .if_(BlockType::Empty)
        .local_get(1)
        .global_set(0)
        .end()
        .global_get(0)
        .f64_const(50_000.0.into())
        .f64_gt()
        .if_(BlockType::Result(ValType::F64))
        .f64_const(1.0.into())
        .else_()
        .f64_const(0.0.into())
        .end()
        .end();
    let mut m = Assembled::new(probe);
    m.globals.global(
        GlobalType {
            val_type: ValType::F64,
            mutable: true,
            shared: false,
        },
        &ConstExpr::f64_const(0.0.into()),
    );
    m.finish()
}

fn honest_probe() -> Function {
    let mut probe = Function::new([]);
    probe.instructions().f64_const(1.0.into()).end();
    probe
}

/// A module with one table of 4 funcrefs and a passive element segment.
fn with_table(mut m: Assembled) -> Assembled {
    let mut tables = TableSection::new();
    tables.table(TableType {
        element_type: RefType::FUNCREF,
        minimum: 4,
        maximum: Some(8),
        table64: false,
        shared: false,
    });
    let mut elements = ElementSection::new();
    elements.passive(Elements::Functions([0u32][..].into()));
    m.tables = Some((tables, elements));
    m
}

fn with_passive_data(mut m: Assembled) -> Assembled {
    let mut data = DataSection::new();
    data.passive([1u8, 2, 3, 4]);
    m.data = Some(data);
    m
}

fn refusal(bytes: &[u8]) -> String {
    match sandbox().validate(bytes, ModuleKind::Udf) {
        Err(e @ SandboxError::NotIsolable { .. }) => e.to_string(),
        other => panic!("expected a module that cannot be isolated, got {other:?}"),
    }
}

#[test]
fn what_cannot_be_reset_between_rows_is_refused_at_upload() {
    type Build = fn() -> Vec<u8>;
    let cases: [(&str, Build); 8] = [
        ("table.set", || {
            with_table(Assembled::new(honest_probe()).with_evil(|f| {
                f.instructions()
                    .i32_const(0)
                    .ref_null(wasm_encoder::HeapType::FUNC)
                    .table_set(0);
            }))
            .finish()
        }),
        ("table.grow", || {
            with_table(Assembled::new(honest_probe()).with_evil(|f| {
                f.instructions()
                    .ref_null(wasm_encoder::HeapType::FUNC)
                    .i32_const(1)
                    .table_grow(0)
                    .drop();
            }))
            .finish()
        }),
        ("table.copy", || {
            with_table(Assembled::new(honest_probe()).with_evil(|f| {
                f.instructions()
                    .i32_const(0)
                    .i32_const(1)
                    .i32_const(1)
                    .table_copy(0, 0);
            }))
            .finish()
        }),
        ("table.init", || {
            with_table(Assembled::new(honest_probe()).with_evil(|f| {
                f.instructions()
                    .i32_const(0)
                    .i32_const(0)
                    .i32_const(1)
                    .table_init(0, 0);
            }))
            .finish()
        }),
        ("elem.drop", || {
            with_table(Assembled::new(honest_probe()).with_evil(|f| {
                f.instructions().elem_drop(0);
            }))
            .finish()
        }),
        ("memory.init", || {
            with_passive_data(Assembled::new(honest_probe()).with_evil(|f| {
                f.instructions()
                    .i32_const(0)
                    .i32_const(0)
                    .i32_const(4)
                    .memory_init(0, 0);
            }))
            .finish()
        }),
        ("data.drop", || {
            with_passive_data(Assembled::new(honest_probe()).with_evil(|f| {
                f.instructions().data_drop(0);
            }))
            .finish()
        }),
        ("start function", || {
            let mut m = Assembled::new(honest_probe()).with_evil(|_| {});
            m.start = Some(3);
            m.finish()
        }),
    ];
    for (instruction, build) in cases {
        let message = refusal(&build());
        assert!(message.contains(instruction), "{instruction}: {message}");
        if instruction != "start function" {
            assert!(message.contains("`evil`"), "{instruction}: {message}");
        }
    }
    // The honest module passes, and a hand-assembled global smuggler too
    // (its global is reset every row, see above).
    prepare(&Assembled::new(honest_probe()).finish()).unwrap();
}

#[test]
fn a_row_function_of_the_wrong_type_is_refused_at_upload() {
    // The export is (i64, f64) -> f64, but the declaration says the result
    // is Int64.
    let bytes = Assembled::new(honest_probe()).finish();
    let redeclared = crate::udf::with_section(
        crate::udf::without_sections(&bytes),
        "unseen_udf",
        &[5, b'p', b'r', b'o', b'b', b'e', 2, 1, 2, 1],
    );
    let message = refusal(&redeclared);
    assert!(message.contains("udf_row_probe"), "{message}");
    assert!(message.contains("-> i64"), "{message}");
}

/// The best accuracy of a threshold classifier telling `a` from `b`
/// (either direction), over every threshold between observed values.
fn best_threshold_accuracy(a: &[f64], b: &[f64]) -> f64 {
    let mut cuts: Vec<f64> = a.iter().chain(b).copied().collect();
    cuts.push(f64::NEG_INFINITY);
    let n = (a.len() + b.len()) as f64;
    cuts.iter()
        .map(|&cut| {
            let right =
                a.iter().filter(|&&x| x > cut).count() + b.iter().filter(|&&x| x <= cut).count();
            let right = right as f64 / n;
            right.max(1.0 - right)
        })
        .fold(0.0, f64::max)
}

#[test]
fn the_threshold_classifier_measures_what_it_should() {
    assert_eq!(best_threshold_accuracy(&[2.0, 3.0], &[0.0, 1.0]), 1.0);
    assert_eq!(best_threshold_accuracy(&[1.0, 1.0], &[1.0, 1.0]), 0.5);
}

/// The raw channel, inside the engine: how much a row that burns its whole
/// instruction cap only when the target matches shows in the query's
/// duration (what developers see of durations is measured in
/// `tests/it/timing.rs`). 30 runs per neighbour, alternating, each as its own job.
/// Prints the raw channel and asserts that, at the granularity the service
/// shows developers (whole seconds: job timestamps), the best threshold
/// classifier is right at most 60% of the time. Timing: run alone, in
/// release (`cargo test --release -p unseen-sandbox --test it timing -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing measurement; run alone, in release"]
async fn timing_of_a_row_that_burns_its_cap_only_on_the_target() {
    let limits = Limits {
        udf_row_instructions: unseen_sandbox::DEFAULT_ROW_INSTRUCTIONS,
        ..test_limits()
    };
    let sandbox = Sandbox::new(limits).unwrap();
    let bytes = wasm("adv-loop-iff");
    let job = || {
        let validated = sandbox.validate(&bytes, ModuleKind::Udf).unwrap();
        UdfModule::new(&sandbox, &validated).unwrap()
    };
    let (mut rich, mut poor) = (Vec::new(), Vec::new());
    // Warm-up, not counted.
    release(&job(), POOR, 1_000, RELEASE).await;
    for run in 0..60 {
        let income = if run % 2 == 0 { RICH } else { POOR };
        let module = job();
        let started = std::time::Instant::now();
        release(&module, income, 1_000, RELEASE).await;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        if income == RICH {
            rich.push(ms)
        } else {
            poor.push(ms)
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let raw = best_threshold_accuracy(&rich, &poor);
    let seconds = |v: &[f64]| v.iter().map(|ms| (ms / 1e3).ceil()).collect::<Vec<_>>();
    let coarse = best_threshold_accuracy(&seconds(&rich), &seconds(&poor));
    println!(
        "per query: target burns its cap {:.3} ms (mean), does not {:.3} ms; \
         best threshold classifier on raw durations {:.0}%, on whole seconds {:.0}%",
        mean(&rich),
        mean(&poor),
        raw * 100.0,
        coarse * 100.0
    );
    // The channel's bound: one row's whole cap. Measured as 200 rows that
    // each burn it (`spin` never returns).
    let traps = {
        let validated = sandbox
            .validate(&wasm("adv-udf-traps"), ModuleKind::Udf)
            .unwrap();
        UdfModule::new(&sandbox, &validated).unwrap()
    };
    let ctx = SessionContext::new();
    ctx.register_table("people", Arc::new(people(POOR, 1_000)))
        .unwrap();
    for f in traps.functions().unwrap() {
        f.register(&ctx);
    }
    let started = std::time::Instant::now();
    query(&ctx, "SELECT spin(id) FROM people WHERE id < 200")
        .await
        .unwrap();
    println!(
        "one row burning the cap of {} instructions: {:.3} ms",
        unseen_sandbox::DEFAULT_ROW_INSTRUCTIONS,
        started.elapsed().as_secs_f64() * 1e3 / 200.0
    );
    assert!(coarse <= 0.6, "whole-second durations still tell: {coarse}");
}

/// `probe(n, _)` that counts `n` down in a loop and returns 1.0.
fn countdown() -> Vec<u8> {
    let mut probe = Function::new([]);
    probe
        .instructions()
        .block(BlockType::Empty)
        .loop_(BlockType::Empty)
        .local_get(0)
        .i64_eqz()
        .br_if(1)
        .local_get(0)
        .i64_const(1)
        .i64_sub()
        .local_set(0)
        .br(0)
        .end()
        .end()
        .f64_const(1.0.into())
        .end();
    Assembled::new(probe).finish()
}

/// `probe(n, _)` that fills `n` bytes of memory once and returns 1.0.
fn filler() -> Vec<u8> {
    let mut probe = Function::new([]);
    probe
        .instructions()
        .i32_const(0)
        .i32_const(7)
        .local_get(0)
        .i32_wrap_i64()
        .memory_fill(0)
        .f64_const(1.0.into())
        .end();
    let mut m = Assembled::new(probe);
    m.memory_pages = 8;
    m.finish()
}

/// `probe(_, _)` that fills 64 KiB of memory in an endless loop.
fn endless_filler() -> Vec<u8> {
    let mut probe = Function::new([]);
    probe
        .instructions()
        .loop_(BlockType::Empty)
        .i32_const(0)
        .i32_const(7)
        .i32_const(65_536)
        .memory_fill(0)
        .br(0)
        .end()
        .f64_const(1.0.into())
        .end();
    Assembled::new(probe).finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_memory_operations_pay_for_their_bytes() {
    // A cap of 50,000 instructions: filling 8 bytes costs one of them, so
    // 300,000 bytes fit and 500,000 do not, whatever else the row does.
    let module = prepare(&filler()).unwrap();
    let ctx = SessionContext::new();
    ctx.register_table("people", Arc::new(people(POOR, ROWS)))
        .unwrap();
    for f in module.functions().unwrap() {
        f.register(&ctx);
    }
    let cols = query(
        &ctx,
        "SELECT probe(300000, 0.0) IS NULL, probe(500000, 0.0) IS NULL FROM people WHERE id = 0",
    )
    .await
    .unwrap();
    let nulls: Vec<bool> = cols
        .iter()
        .map(|c| {
            c.as_any()
                .downcast_ref::<arrow::array::BooleanArray>()
                .unwrap()
                .value(0)
        })
        .collect();
    assert_eq!(nulls, [false, true]);
    // A loop of large fills ends at the cap like any other loop: one
    // unit per iteration would allow 50,000 fills of 64 KiB (3 GiB of
    // writes) per row.
    let module = prepare(&endless_filler()).unwrap();
    let ctx = SessionContext::new();
    ctx.register_table("people", Arc::new(people(POOR, ROWS)))
        .unwrap();
    for f in module.functions().unwrap() {
        f.register(&ctx);
    }
    query(&ctx, "SELECT probe(id, income) FROM people")
        .await
        .unwrap();
    assert_eq!(module.rows_failed(), ROWS as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_cap_set_for_a_module_nulls_only_the_rows_that_need_more() {
    // Nine instructions per iteration: 3,000 iterations need about 27,000.
    let sql = "SELECT SUM(CASE WHEN probe(3000, income) IS NULL THEN 1 ELSE 0 END), \
               SUM(CASE WHEN probe(100, income) IS NULL THEN 1 ELSE 0 END) FROM people";
    let mut nulls = Vec::new();
    for cap in [50_000, 10_000, 10_000_000] {
        let module = prepare(&countdown()).unwrap().with_row_instructions(cap);
        // Never above the sandbox's own cap.
        assert_eq!(module.row_instructions(), cap.min(50_000));
        let query_handle = module.for_query();
        assert_eq!(query_handle.row_instructions(), module.row_instructions());
        let ctx = SessionContext::new();
        ctx.register_table("people", Arc::new(people(POOR, 1_000)))
            .unwrap();
        for f in query_handle.functions().unwrap() {
            f.register(&ctx);
        }
        let cols = query(&ctx, sql).await.unwrap();
        let get = |c: usize| {
            cols[c]
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0)
        };
        nulls.push((get(0), get(1)));
    }
    assert_eq!(
        nulls,
        [(0, 0), (ROWS as i64, 0), (0, 0)],
        "the lower cap nulls the long rows only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instruction_cap_stops_the_same_rows_every_time() {
    // Nine instructions per iteration: a cap of 50,000 allows about 5,550.
    let sql = "SELECT SUM(CASE WHEN probe(id * 3, income) IS NULL THEN 1 ELSE 0 END), \
               MIN(CASE WHEN probe(id * 3, income) IS NULL THEN id * 3 END), \
               MAX(CASE WHEN probe(id * 3, income) IS NOT NULL THEN id * 3 END) FROM people";
    let mut outcomes = Vec::new();
    for batch in [3_000, 128] {
        let module = prepare(&countdown()).unwrap();
        let ctx = SessionContext::new_with_config(
            SessionConfig::new()
                .with_target_partitions(2)
                .with_batch_size(batch),
        );
        ctx.register_table("people", Arc::new(people(POOR, batch)))
            .unwrap();
        for f in module.functions().unwrap() {
            f.register(&ctx);
        }
        let cols = query(&ctx, sql).await.unwrap();
        let get = |c: usize| {
            cols[c]
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0)
        };
        outcomes.push((get(0), get(1), get(2)));
    }
    let (nulls, first_null, last_valid) = outcomes[0];
    assert!(
        (5_000..6_000).contains(&first_null) && last_valid < first_null,
        "{outcomes:?}"
    );
    assert!(nulls > 1_000, "{outcomes:?}");
    assert_eq!(
        outcomes[0], outcomes[1],
        "the cap does not depend on batching"
    );
}

/// `probe(_, _)` whose body is an endless loop of `body`, with 8 pages of
/// memory: each row burns its whole cap.
fn endless(body: impl Fn(&mut wasm_encoder::InstructionSink<'_>)) -> Vec<u8> {
    let mut probe = Function::new([(1, ValType::I64), (1, ValType::F64)]);
    {
        let mut s = probe.instructions();
        s.i64_const(0x1234_5678_9abc)
            .local_set(2)
            .f64_const(12345.678.into())
            .local_set(3)
            .loop_(BlockType::Empty);
        body(&mut s);
        s.br(0).end().f64_const(1.0.into()).end();
    }
    let mut m = Assembled::new(probe);
    m.memory_pages = 8;
    m.finish()
}

/// What one row can cost at the default cap (1,000,000 instructions), for
/// the timing bound in `udf-sdk/README.md`: rows that burn the whole cap
/// with the cheapest instructions, with the slowest (64-bit division, a
/// float square root), with bulk memory operations (charged one unit per 8
/// bytes), and with stores all over memory (so the next row's restore
/// copies it all back). Prints the time per row over 300 rows of each. The
/// guest's code runs as compiled by Cranelift whatever the host's build, so
/// a debug build measures the same per-row times, apart from the host's
/// work per trap.
/// `cargo test -p unseen-sandbox --test it what_one_row -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing measurement; run alone"]
async fn what_one_row_can_cost_at_the_cap() {
    let sandbox = Sandbox::new(Limits {
        udf_row_instructions: unseen_sandbox::DEFAULT_ROW_INSTRUCTIONS,
        ..test_limits()
    })
    .unwrap();
    type Body = fn(&mut wasm_encoder::InstructionSink<'_>);
    let kinds: [(&str, Body); 6] = [
        ("i64 multiply-add", |s| {
            s.local_get(2)
                .i64_const(31)
                .i64_mul()
                .i64_const(7)
                .i64_add()
                .local_set(2);
        }),
        ("i64 division", |s| {
            s.i64_const(-1)
                .local_get(2)
                .i64_const(3)
                .i64_or()
                .i64_div_u()
                .local_set(2);
        }),
        ("f64 square root", |s| {
            s.local_get(3)
                .f64_sqrt()
                .f64_const(1.5.into())
                .f64_add()
                .local_set(3);
        }),
        ("memory.fill of 64 KiB", |s| {
            s.i32_const(0).i32_const(7).i32_const(65_536).memory_fill(0);
        }),
        ("memory.copy of 64 KiB", |s| {
            s.i32_const(65_536)
                .i32_const(0)
                .i32_const(65_536)
                .memory_copy(0, 0);
        }),
        ("stores 64 KiB apart (the next row restores 512 KiB)", |s| {
            s.local_get(2)
                .i32_wrap_i64()
                .i32_const(0x7_0000)
                .i32_and()
                .local_get(2)
                .i64_store(wasm_encoder::MemArg {
                    offset: 0,
                    align: 3,
                    memory_index: 0,
                })
                .local_get(2)
                .i64_const(65_536)
                .i64_add()
                .local_set(2);
        }),
    ];
    const ROWS_TIMED: i64 = 300;
    for (name, body) in kinds {
        let validated = sandbox.validate(&endless(body), ModuleKind::Udf).unwrap();
        let module = UdfModule::new(&sandbox, &validated).unwrap();
        let ctx = SessionContext::new();
        ctx.register_table("people", Arc::new(people(POOR, 1_000)))
            .unwrap();
        for f in module.functions().unwrap() {
            f.register(&ctx);
        }
        let sql = format!("SELECT probe(id, income) FROM people WHERE id < {ROWS_TIMED}");
        // Warm-up, not counted.
        query(&ctx, &sql).await.unwrap();
        let started = std::time::Instant::now();
        query(&ctx, &sql).await.unwrap();
        let per_row = started.elapsed().as_secs_f64() * 1e3 / ROWS_TIMED as f64;
        assert_eq!(module.rows_failed(), 2 * ROWS_TIMED as u64, "{name}");
        println!("{name}: {per_row:.3} ms per row at the cap");
    }
}
