//! Row isolation: the rewrite every UDF module gets at upload.
//!
//! A scalar UDF's per-row function `udf_row_<name>` is written by the
//! analyst and sees one person's raw values. The host must be sure that
//! what it returns for a row depends on that row alone, and that a row on
//! which it fails changes nothing but that row. This module rewrites the
//! module, once, so that this holds by construction:
//!
//! - **A second memory** (`unseen_batch`) holds the batch's inputs and
//!   outputs and a pristine copy of memory 0 taken right after
//!   instantiation. The original code may reference memory 0 only (checked:
//!   a module defines exactly one memory), so it can never read another
//!   row's input or an earlier output.
//! - **A trusted loop** `unseen_rows_<name>` per function, generated here,
//!   which for each row: restores the part of memory 0 the previous row
//!   dirtied from the pristine copy, resets every mutable global to its
//!   initial value and the virtual memory size, refills the per-row
//!   instruction budget, copies the row's strings into a scratch area of
//!   memory 0 (cleared again by the next row's restore), calls the row
//!   function and writes its value and validity into `unseen_batch`.
//! - **Dirty tracking.** Every store, `memory.fill` and `memory.copy` of the
//!   original code first widens two injected globals `[lo, hi)` to cover the
//!   bytes it writes; a function that stores nothing pays nothing.
//! - **An instruction budget.** Every function entry and loop header of the
//!   original code subtracts, from an injected counter, the number of
//!   instructions the code up to the next loop header or call can execute,
//!   and traps when the counter would go negative. A function without loops
//!   whose callees are all like it (and that is neither exported nor in a
//!   table) is *prepaid*: its callers add the most it can execute to the
//!   region of the call, and it checks nothing itself, so a light row
//!   function that calls a few leaf functions pays one check, not one per
//!   call ([`prepaid_costs`]). `memory.fill` and
//!   `memory.copy` cost [`BULK_OP_INSTRUCTIONS`] and, before they run, one
//!   more per [`BULK_BYTES_PER_INSTRUCTION`] bytes they touch, so that no
//!   instruction does unbounded work for one unit of the budget. The same
//!   row always stops at the same place: the cap is deterministic, not
//!   wall-clock.
//! - **A fixed memory size.** `memory.grow` and `memory.size` act on a
//!   virtual size that starts at the module's own minimum and may grow into
//!   [`HEAP_PAGES`] spare pages; it is reset every row, so one row's
//!   allocations are invisible to the next.
//!
//! What cannot be reset is refused, naming the function and the
//! instruction: imports of any kind, a start function, more than one memory,
//! `table.set/grow/fill/copy/init`, `elem.drop`, `memory.init` and
//! `data.drop`.
//!
//! The host ([`super::isolated`]) records a trap on row `i` (a panic, the
//! budget, the stack) as a null and resumes the loop at row `i + 1`: it
//! reads `i` from the exported global `unseen_row`.

use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{
    BlockType, CodeSection, ConstExpr, DataCountSection, DataSection, ElementSection, ExportKind,
    ExportSection, Function, FunctionSection, GlobalSection, GlobalType, InstructionSink, MemArg,
    MemorySection, MemoryType, Module, TableSection, TypeSection, ValType,
};
use wasmparser::{ExternalKind, FuncType, Operator, Parser, Payload};

use udf_sdk::udf::UdfType;

use crate::SandboxError;

/// What a `memory.fill` or `memory.copy` costs of a row's instruction
/// budget besides its bytes: the host call behind it takes about as long
/// as this many simple instructions.
pub(crate) const BULK_OP_INSTRUCTIONS: u64 = 16;
/// Bytes a `memory.fill` or `memory.copy` may touch per unit of the
/// budget (the bytes are charged before the operation runs).
pub(crate) const BULK_BYTES_PER_INSTRUCTION: u32 = 8;

/// Pages memory 0 may virtually grow by within one row.
pub(crate) const HEAP_PAGES: u32 = 16;
/// Pages after the heap that hold one row's string arguments.
pub(crate) const SCRATCH_PAGES: u32 = 4;
const PAGE: u32 = 65_536;

/// The export of the trusted loop for `name`.
pub(crate) fn loop_export(name: &str) -> String {
    format!("unseen_rows_{name}")
}
/// The second memory, which holds the pristine copy and the batch.
pub(crate) const BATCH_MEMORY: &str = "unseen_batch";
/// The global holding the row the loop is on (read by the host after a trap).
pub(crate) const ROW_GLOBAL: &str = "unseen_row";

/// A rewritten module and the layout its host needs.
#[derive(Debug, Clone)]
pub(crate) struct Isolated {
    pub(crate) bytes: Vec<u8>,
    /// Bytes of memory 0 (fixed for the instance's life), and so of the
    /// pristine copy at the start of `unseen_batch`.
    pub(crate) snapshot_bytes: u32,
    /// Where a row's strings go in memory 0, and how many bytes fit.
    pub(crate) scratch: (u32, u32),
}

/// What the rewrite guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isolation {
    /// Every row starts from the pristine state under its instruction cap:
    /// what every UDF module served to a query gets.
    Rows,
    /// The same trusted loop and batch memory, without restoring state or
    /// counting instructions: only for `super::bench` to measure what the
    /// isolation costs. Never serves a query, and exists only in builds
    /// with the `bench` feature.
    #[cfg(feature = "bench")]
    BenchLoopOnly,
}

/// One scalar function to give a loop: its SQL name, argument and result
/// types.
pub(crate) struct RowFunction<'a> {
    pub(crate) name: &'a str,
    pub(crate) args: &'a [UdfType],
    pub(crate) returns: UdfType,
}

fn refuse(reason: impl Into<String>) -> SandboxError {
    SandboxError::NotIsolable {
        reason: reason.into(),
    }
}

fn parse_err(e: impl std::fmt::Display) -> SandboxError {
    refuse(format!("the module cannot be parsed: {e}"))
}

/// Everything of the original module the rewrite needs, in its own order.
#[derive(Default)]
struct Parts<'a> {
    types: Vec<FuncType>,
    type_section: Option<wasmparser::TypeSectionReader<'a>>,
    func_types: Vec<u32>,
    tables: Option<wasmparser::TableSectionReader<'a>>,
    memory: Option<wasmparser::MemoryType>,
    globals: Vec<wasmparser::Global<'a>>,
    exports: Vec<wasmparser::Export<'a>>,
    elements: Option<wasmparser::ElementSectionReader<'a>>,
    data_count: Option<u32>,
    bodies: Vec<wasmparser::FunctionBody<'a>>,
    data: Option<wasmparser::DataSectionReader<'a>>,
}

fn parts(bytes: &[u8]) -> Result<Parts<'_>, SandboxError> {
    let mut p = Parts::default();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(parse_err)? {
            Payload::TypeSection(r) => {
                for ty in r.clone().into_iter_err_on_gc_types() {
                    p.types.push(ty.map_err(parse_err)?);
                }
                p.type_section = Some(r);
            }
            Payload::ImportSection(r) if r.count() > 0 => {
                return Err(refuse(
                    "it imports something; a UDF module may import nothing at all",
                ));
            }
            Payload::FunctionSection(r) => {
                for ty in r {
                    p.func_types.push(ty.map_err(parse_err)?);
                }
            }
            Payload::TableSection(r) => p.tables = Some(r),
            Payload::MemorySection(r) => {
                for m in r {
                    if p.memory.replace(m.map_err(parse_err)?).is_some() {
                        return Err(refuse(
                            "it defines more than one memory; a UDF module has exactly one",
                        ));
                    }
                }
            }
            Payload::GlobalSection(r) => {
                for g in r {
                    p.globals.push(g.map_err(parse_err)?);
                }
            }
            Payload::ExportSection(r) => {
                for e in r {
                    p.exports.push(e.map_err(parse_err)?);
                }
            }
            Payload::StartSection { func, .. } => {
                return Err(refuse(format!(
                    "it has a start function (function #{func}); its effects would be part of every row's state and could not be reset; remove it"
                )));
            }
            Payload::ElementSection(r) => p.elements = Some(r),
            Payload::DataCountSection { count, .. } => p.data_count = Some(count),
            Payload::CodeSectionEntry(body) => p.bodies.push(body),
            Payload::DataSection(r) => p.data = Some(r),
            Payload::TagSection(_) => {
                return Err(refuse("it defines exception tags; UDF modules may not"));
            }
            _ => {}
        }
    }
    Ok(p)
}

/// Rewrites `bytes` (a module wasmtime already validated) so that every
/// function in `functions` runs each row in a fresh state; see the module
/// documentation.
pub(crate) fn isolate(
    bytes: &[u8],
    functions: &[RowFunction<'_>],
    isolation: Isolation,
) -> Result<Isolated, SandboxError> {
    let p = parts(bytes)?;
    let memory = p
        .memory
        .ok_or_else(|| refuse("it defines no memory; a UDF module defines exactly one"))?;
    if memory.memory64 || memory.shared || memory.page_size_log2.is_some() {
        return Err(refuse(
            "its memory is 64-bit, shared or of a custom page size",
        ));
    }
    let own_pages = u32::try_from(memory.initial)
        .ok()
        .filter(|&n| n <= 65_536 - HEAP_PAGES - SCRATCH_PAGES)
        .ok_or_else(|| refuse("its memory's initial size is too large"))?;
    let layout = Layout::new(own_pages, p.globals.len() as u32);
    let names = function_names(&p.exports);

    let mut types = TypeSection::new();
    if let Some(r) = p.type_section.clone() {
        RoundtripReencoder
            .parse_type_section(&mut types, r)
            .map_err(parse_err)?;
    }
    let mut funcs = FunctionSection::new();
    for &ty in &p.func_types {
        funcs.function(ty);
    }
    let prepaid = prepaid_costs(&p).map_err(parse_err)?;
    let mut code = CodeSection::new();
    for (i, body) in p.bodies.iter().enumerate() {
        let ty = p
            .func_types
            .get(i)
            .and_then(|&t| p.types.get(t as usize))
            .ok_or_else(|| refuse(format!("function #{i} has no type")))?;
        let name = names
            .iter()
            .find(|(f, _)| *f == i as u32)
            .map_or_else(|| format!("function #{i}"), |(_, n)| format!("`{n}`"));
        code.function(&instrument(i, body, ty, &layout, &prepaid, isolation).map_err(|e| match e {
            Instrument::Refused(op) => refuse(format!(
                "{name} uses `{op}`, whose effect on the module's state cannot be undone between rows; UDFs may not use it"
            )),
            Instrument::Parse(e) => parse_err(e),
        })?);
    }
    let mut exports = ExportSection::new();
    for e in &p.exports {
        let kind = match e.kind {
            ExternalKind::Func => ExportKind::Func,
            ExternalKind::Table => ExportKind::Table,
            ExternalKind::Memory => ExportKind::Memory,
            ExternalKind::Global => ExportKind::Global,
            ExternalKind::Tag | ExternalKind::FuncExact => {
                return Err(refuse(format!(
                    "export `{}` is of a kind UDFs may not have",
                    e.name
                )));
            }
        };
        exports.export(e.name, kind, e.index);
    }
    let written = written(&p.bodies).map_err(parse_err)?;
    let first_loop = p.func_types.len() as u32;
    for (k, f) in functions.iter().enumerate() {
        let row_export = format!("{}{}", udf_sdk::udf::ROW_EXPORT_PREFIX, f.name);
        let row_fn = p
            .exports
            .iter()
            .find(|e| e.name == row_export && e.kind == ExternalKind::Func)
            .map(|e| e.index)
            .ok_or_else(|| {
                refuse(format!(
                    "`{}` is declared but the module has no function export `{row_export}`; declare it with `udf_sdk::scalar_udf!`",
                    f.name
                ))
            })?;
        check_row_type(
            f,
            &row_export,
            &p.types[p.func_types[row_fn as usize] as usize],
        )?;
        let params = loop_params(f.args);
        let ty = types.len();
        types.ty().function(params.iter().copied(), [ValType::I32]);
        funcs.function(ty);
        code.function(&row_loop(
            f, row_fn, &layout, &p.globals, &written, isolation,
        )?);
        exports.export(
            &loop_export(f.name),
            ExportKind::Func,
            first_loop + k as u32,
        );
    }
    exports.export(BATCH_MEMORY, ExportKind::Memory, 1);
    exports.export(ROW_GLOBAL, ExportKind::Global, layout.row);

    let bytes = emit(
        &p,
        &layout,
        Sections {
            types,
            funcs,
            exports,
            code,
        },
    )?;
    Ok(Isolated {
        bytes,
        snapshot_bytes: layout.total_pages * PAGE,
        scratch: (layout.scratch, SCRATCH_PAGES * PAGE),
    })
}

/// The sections of the rewritten module built from code.
struct Sections {
    types: TypeSection,
    funcs: FunctionSection,
    exports: ExportSection,
    code: CodeSection,
}

/// Writes the rewritten module: the original's sections with memory 0
/// fixed at its full size, the batch memory and the injected globals.
fn emit(p: &Parts<'_>, layout: &Layout, sections: Sections) -> Result<Vec<u8>, SandboxError> {
    let Sections {
        types,
        funcs,
        exports,
        code,
    } = sections;
    let own_pages = layout.own_pages;
    let mut module = Module::new();
    module.section(&types);
    module.section(&funcs);
    if let Some(r) = p.tables.clone() {
        let mut tables = TableSection::new();
        RoundtripReencoder
            .parse_table_section(&mut tables, r)
            .map_err(parse_err)?;
        module.section(&tables);
    }
    let mut memories = MemorySection::new();
    let total = u64::from(layout.total_pages);
    memories.memory(MemoryType {
        minimum: total,
        maximum: Some(total),
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    memories.memory(MemoryType {
        minimum: total,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    module.section(&memories);
    let mut globals = GlobalSection::new();
    for g in &p.globals {
        RoundtripReencoder
            .parse_global(&mut globals, g.clone())
            .map_err(parse_err)?;
    }
    let mutable = |val_type| GlobalType {
        val_type,
        mutable: true,
        shared: false,
    };
    globals.global(mutable(ValType::I32), &ConstExpr::i32_const(-1)); // lo
    globals.global(mutable(ValType::I32), &ConstExpr::i32_const(0)); // hi
    // The budget starts unlimited for the host's one data-free call before
    // the first row (`unseen_row_null_addr`); the loop sets it every row.
    globals.global(mutable(ValType::I64), &ConstExpr::i64_const(i64::MAX));
    globals.global(
        mutable(ValType::I32),
        &ConstExpr::i32_const(own_pages as i32),
    ); // virtual size
    globals.global(mutable(ValType::I32), &ConstExpr::i32_const(0)); // row
    module.section(&globals);
    module.section(&exports);
    if let Some(r) = p.elements.clone() {
        let mut elements = ElementSection::new();
        RoundtripReencoder
            .parse_element_section(&mut elements, r)
            .map_err(parse_err)?;
        module.section(&elements);
    }
    if let Some(count) = p.data_count {
        module.section(&DataCountSection { count });
    }
    module.section(&code);
    if let Some(r) = p.data.clone() {
        let mut data = DataSection::new();
        RoundtripReencoder
            .parse_data_section(&mut data, r)
            .map_err(parse_err)?;
        module.section(&data);
    }
    Ok(module.finish())
}

/// Where things are: injected globals and memory 0's regions.
struct Layout {
    lo: u32,
    hi: u32,
    fuel: u32,
    vsize: u32,
    row: u32,
    own_pages: u32,
    /// Pages `memory.grow` may reach.
    heap_limit: u32,
    total_pages: u32,
    scratch: u32,
}

impl Layout {
    fn new(own_pages: u32, globals: u32) -> Self {
        let heap_limit = own_pages + HEAP_PAGES;
        Layout {
            lo: globals,
            hi: globals + 1,
            fuel: globals + 2,
            vsize: globals + 3,
            row: globals + 4,
            own_pages,
            heap_limit,
            total_pages: heap_limit + SCRATCH_PAGES,
            scratch: heap_limit * PAGE,
        }
    }
}

/// Exported function indices and their names, to name functions in errors.
fn function_names<'a>(exports: &[wasmparser::Export<'a>]) -> Vec<(u32, &'a str)> {
    exports
        .iter()
        .filter(|e| e.kind == ExternalKind::Func)
        .map(|e| (e.index, e.name))
        .collect()
}

/// The wasm type of an argument of the row ABI: strings are one `i64`,
/// the scratch address in the low and the length in the high 32 bits.
fn row_param(ty: UdfType) -> wasmparser::ValType {
    match ty {
        UdfType::Float64 => wasmparser::ValType::F64,
        UdfType::Int64 | UdfType::Utf8 => wasmparser::ValType::I64,
    }
}

fn check_row_type(f: &RowFunction<'_>, export: &str, ty: &FuncType) -> Result<(), SandboxError> {
    let want_params: Vec<_> = f.args.iter().map(|&t| row_param(t)).collect();
    let want_result = row_param(f.returns);
    if ty.params() == want_params.as_slice() && ty.results() == [want_result] {
        return Ok(());
    }
    let show = |v: &[wasmparser::ValType]| {
        v.iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(refuse(format!(
        "the export `{export}` has type ({}) -> ({}), but `{}` is declared so that it needs ({}) -> {want_result}; declare it with `udf_sdk::scalar_udf!`",
        show(ty.params()),
        show(ty.results()),
        f.name,
        show(&want_params)
    )))
}

/// The loop's parameters: `start, rows, skip, out, valid, fuel, flag`, then
/// one address per numeric argument and two (offsets, bytes) per string.
fn loop_params(args: &[UdfType]) -> Vec<ValType> {
    let mut params = vec![
        ValType::I32,
        ValType::I32,
        ValType::I32,
        ValType::I32,
        ValType::I32,
        ValType::I64,
        ValType::I32,
    ];
    for &a in args {
        params.push(ValType::I32);
        if a == UdfType::Utf8 {
            params.push(ValType::I32);
        }
    }
    params
}

const P_START: u32 = 0;
const P_ROWS: u32 = 1;
const P_SKIP: u32 = 2;
const P_OUT: u32 = 3;
const P_VALID: u32 = 4;
const P_FUEL: u32 = 5;
/// Address of the null flag in memory 0, or -1 when the module has none.
const P_FLAG: u32 = 6;
const P_ARGS: u32 = 7;

fn mem(memory_index: u32, align: u32) -> MemArg {
    MemArg {
        offset: 0,
        align,
        memory_index,
    }
}

/// The trusted loop for one function; see the module documentation.
fn row_loop(
    f: &RowFunction<'_>,
    row_fn: u32,
    l: &Layout,
    globals: &[wasmparser::Global<'_>],
    written: &Written,
    isolation: Isolation,
) -> Result<Function, SandboxError> {
    let n_params = loop_params(f.args).len() as u32;
    // Locals: i, hi, cursor, start, len, ok, then one (ptr|len) i64 per
    // string argument and the result.
    let (i, hi, cursor, start, len, ok) = (
        n_params,
        n_params + 1,
        n_params + 2,
        n_params + 3,
        n_params + 4,
        n_params + 5,
    );
    let strings = f.args.iter().filter(|&&t| t == UdfType::Utf8).count() as u32;
    let packed = n_params + 6;
    let result = packed + strings;
    let result_ty = match f.returns {
        UdfType::Float64 => ValType::F64,
        _ => ValType::I64,
    };
    let mut func = Function::new([(6, ValType::I32), (strings, ValType::I64), (1, result_ty)]);
    let mut s = func.instructions();
    s.local_get(P_START).local_set(i);
    s.block(BlockType::Empty).loop_(BlockType::Empty);
    s.local_get(i).local_get(P_ROWS).i32_ge_u().br_if(1);
    s.local_get(i).global_set(l.row);
    if isolation == Isolation::Rows {
        reset_row(&mut func, l, globals, written, hi)?;
    }
    let mut s = func.instructions();
    if written.grows && isolation == Isolation::Rows {
        s.i32_const(l.own_pages as i32).global_set(l.vsize);
    }
    if isolation == Isolation::Rows {
        s.local_get(P_FUEL).global_set(l.fuel);
    }
    s.local_get(P_SKIP)
        .local_get(i)
        .i32_add()
        .i32_load8_u(mem(1, 0))
        .if_(BlockType::Empty)
        .local_get(P_VALID)
        .local_get(i)
        .i32_add()
        .i32_const(0)
        .i32_store8(mem(1, 0))
        .else_();
    copy_strings(&mut s, f.args, l, i, [cursor, start, len, packed]);
    let (mut param, mut k) = (P_ARGS, 0);
    for &a in f.args {
        match a {
            UdfType::Utf8 => {
                s.local_get(packed + k);
                param += 2;
                k += 1;
            }
            UdfType::Int64 | UdfType::Float64 => {
                s.local_get(param)
                    .local_get(i)
                    .i32_const(3)
                    .i32_shl()
                    .i32_add();
                if a == UdfType::Int64 {
                    s.i64_load(mem(1, 3));
                } else {
                    s.f64_load(mem(1, 3));
                }
                param += 1;
            }
        }
    }
    s.call(row_fn).local_set(result);
    // Valid unless the row set the null flag, or (floats) returned NaN. A
    // row that wrote no memory (`hi` is 0) cannot have set the flag, which
    // the host checked is 0 in the pristine state.
    s.local_get(P_FLAG)
        .i32_const(0)
        .i32_lt_s()
        .global_get(l.hi)
        .i32_eqz()
        .i32_or()
        .if_(BlockType::Result(ValType::I32))
        .i32_const(1)
        .else_()
        .local_get(P_FLAG)
        .i32_load(mem(0, 0))
        .i32_eqz()
        .end();
    if f.returns == UdfType::Float64 {
        s.local_get(result).local_get(result).f64_eq().i32_and();
    }
    s.local_set(ok);
    s.local_get(P_OUT)
        .local_get(i)
        .i32_const(3)
        .i32_shl()
        .i32_add()
        .local_get(result);
    if f.returns == UdfType::Float64 {
        s.f64_store(mem(1, 3));
    } else {
        s.i64_store(mem(1, 3));
    }
    s.local_get(P_VALID)
        .local_get(i)
        .i32_add()
        .local_get(ok)
        .i32_store8(mem(1, 0));
    s.end(); // if skipped
    s.local_get(i).i32_const(1).i32_add().local_set(i).br(0);
    s.end().end();
    s.local_get(i).end();
    Ok(func)
}

/// What the module's code can change besides memory: the globals some
/// `global.set` writes, and whether it ever grows memory.
struct Written {
    globals: Vec<u32>,
    grows: bool,
}

fn written(
    bodies: &[wasmparser::FunctionBody<'_>],
) -> Result<Written, wasmparser::BinaryReaderError> {
    let mut w = Written {
        globals: Vec::new(),
        grows: false,
    };
    for body in bodies {
        let mut ops = body.get_operators_reader()?;
        while !ops.eof() {
            match ops.read()? {
                Operator::GlobalSet { global_index } if !w.globals.contains(&global_index) => {
                    w.globals.push(global_index);
                }
                Operator::MemoryGrow { .. } => w.grows = true,
                _ => {}
            }
        }
    }
    Ok(w)
}

/// The start of every row: restore `[lo, min(hi, snapshot))` of memory 0
/// from the pristine copy, clear the dirty range and set every mutable
/// global to its initial value. `hi` is a scratch local.
fn reset_row(
    func: &mut Function,
    l: &Layout,
    globals: &[wasmparser::Global<'_>],
    written: &Written,
    hi: u32,
) -> Result<(), SandboxError> {
    let snapshot = (l.total_pages * PAGE) as i32;
    let mut s = func.instructions();
    // `hi` is 0 unless the previous row wrote memory: then nothing to do.
    s.global_get(l.hi).if_(BlockType::Empty);
    s.global_get(l.hi)
        .i32_const(snapshot)
        .global_get(l.hi)
        .i32_const(snapshot)
        .i32_lt_u()
        .select()
        .local_tee(hi)
        .global_get(l.lo)
        .i32_gt_u()
        .if_(BlockType::Empty)
        .global_get(l.lo)
        .global_get(l.lo)
        .local_get(hi)
        .global_get(l.lo)
        .i32_sub()
        .memory_copy(0, 1)
        .end();
    s.i32_const(-1)
        .global_set(l.lo)
        .i32_const(0)
        .global_set(l.hi)
        .end();
    // Only the globals some `global.set` writes can differ from their
    // initial values.
    for (g, global) in globals.iter().enumerate() {
        if !global.ty.mutable || !written.globals.contains(&(g as u32)) {
            continue;
        }
        let mut ops = global.init_expr.get_operators_reader();
        loop {
            let op = ops.read().map_err(parse_err)?;
            if matches!(op, Operator::End) {
                break;
            }
            func.instruction(&RoundtripReencoder.instruction(op).map_err(parse_err)?);
        }
        func.instructions().global_set(g as u32);
    }
    Ok(())
}

/// Copies the row's strings into the scratch area of memory 0 (the host
/// has checked that they fit), packs each as `addr | len << 32` into its
/// local and marks the scratch bytes dirty, so the next row's restore
/// clears them. `locals` are `cursor, start, len` and the first packed one.
fn copy_strings(
    s: &mut InstructionSink<'_>,
    args: &[UdfType],
    l: &Layout,
    i: u32,
    locals: [u32; 4],
) {
    let [cursor, start, len, packed] = locals;
    let strings = args.iter().filter(|&&t| t == UdfType::Utf8).count() as u32;
    if strings > 0 {
        s.i32_const(l.scratch as i32).local_set(cursor);
    }
    // Strings into scratch: the host has checked that they fit.
    let mut param = P_ARGS;
    let mut k = 0;
    for &a in args {
        if a == UdfType::Utf8 {
            let (offsets, bytes) = (param, param + 1);
            s.local_get(offsets)
                .local_get(i)
                .i32_const(2)
                .i32_shl()
                .i32_add()
                .local_tee(start)
                .i32_load(mem(1, 2))
                .local_get(start)
                .i32_load(MemArg {
                    offset: 4,
                    align: 2,
                    memory_index: 1,
                })
                .local_get(start)
                .i32_load(mem(1, 2))
                .local_set(start)
                .local_get(start)
                .i32_sub()
                .local_set(len)
                .drop();
            s.local_get(cursor)
                .local_get(bytes)
                .local_get(start)
                .i32_add()
                .local_get(len)
                .memory_copy(0, 1);
            s.local_get(cursor)
                .i64_extend_i32_u()
                .local_get(len)
                .i64_extend_i32_u()
                .i64_const(32)
                .i64_shl()
                .i64_or()
                .local_set(packed + k);
            s.local_get(cursor)
                .local_get(len)
                .i32_add()
                .local_set(cursor);
            param += 2;
            k += 1;
        } else {
            param += 1;
        }
    }
    if strings > 0 {
        // The strings are this row's dirt too: cleared by the next restore.
        s.i32_const(l.scratch as i32)
            .global_set(l.lo)
            .local_get(cursor)
            .global_set(l.hi);
    }
}

enum Instrument {
    Refused(&'static str),
    Parse(String),
}

fn reencode(op: Operator<'_>) -> Result<wasm_encoder::Instruction<'_>, Instrument> {
    RoundtripReencoder
        .instruction(op)
        .map_err(|e| Instrument::Parse(e.to_string()))
}

impl From<wasmparser::BinaryReaderError> for Instrument {
    fn from(e: wasmparser::BinaryReaderError) -> Self {
        Instrument::Parse(e.to_string())
    }
}

/// The most a prepaid function can execute, prepaid callees included: at
/// most this, so that paying for branches not taken costs a row little.
const PREPAID_MAX: u64 = 10_000;

/// For each function, the most it can execute if it is *prepaid* (its
/// callers pay that up front at the call and it checks nothing), or `None`
/// if it charges its own entry.
///
/// A function is prepaid when it has no loops, cannot be reached but by a
/// direct `call` (it is not exported, in an element segment or named by a
/// `ref.func`), every function it calls is either prepaid or charges
/// itself, it is not part of a cycle of such functions (recursion must be
/// charged at every entry), and its cost with its prepaid callees' is at
/// most [`PREPAID_MAX`]. Its cost is the sum over all its instructions (an
/// upper bound for any path, since nothing repeats), so a row pays at least
/// what it executes: deterministic, and never less than the exact count.
fn prepaid_costs(p: &Parts<'_>) -> Result<Vec<Option<u64>>, wasmparser::BinaryReaderError> {
    let n = p.bodies.len();
    let mut reachable_otherwise = vec![false; n];
    let mut mark = |f: u32| {
        if let Some(slot) = reachable_otherwise.get_mut(f as usize) {
            *slot = true;
        }
    };
    for e in &p.exports {
        if e.kind == ExternalKind::Func {
            mark(e.index);
        }
    }
    if let Some(elements) = p.elements.clone() {
        for element in elements {
            match element?.items {
                wasmparser::ElementItems::Functions(funcs) => {
                    for f in funcs {
                        mark(f?);
                    }
                }
                wasmparser::ElementItems::Expressions(_, exprs) => {
                    for expr in exprs {
                        let mut ops = expr?.get_operators_reader();
                        while !ops.eof() {
                            if let Operator::RefFunc { function_index } = ops.read()? {
                                mark(function_index);
                            }
                        }
                    }
                }
            }
        }
    }
    for g in &p.globals {
        let mut ops = g.init_expr.get_operators_reader();
        while !ops.eof() {
            if let Operator::RefFunc { function_index } = ops.read()? {
                mark(function_index);
            }
        }
    }
    // Per function: whether it loops, and whom it calls directly.
    let mut loops = vec![false; n];
    let mut callees: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (f, body) in p.bodies.iter().enumerate() {
        let mut ops = body.get_operators_reader()?;
        while !ops.eof() {
            match ops.read()? {
                Operator::Loop { .. } => loops[f] = true,
                Operator::Call { function_index } => callees[f].push(function_index),
                Operator::RefFunc { function_index } => mark(function_index),
                _ => {}
            }
        }
    }
    // Candidates become prepaid from the leaves up; one whose cost is over
    // the limit charges itself, which may let its callers resolve; what is
    // left unresolved (cycles of calls, and their callers) charges itself.
    // A function that calls itself is never a candidate.
    let mut candidate: Vec<bool> = (0..n)
        .map(|f| !loops[f] && !reachable_otherwise[f] && !callees[f].contains(&(f as u32)))
        .collect();
    let mut total: Vec<Option<u64>> = vec![None; n];
    loop {
        let mut changed = false;
        for f in 0..n {
            if !candidate[f] || total[f].is_some() {
                continue;
            }
            let blocked = callees[f].iter().any(|&g| {
                let g = g as usize;
                candidate.get(g) == Some(&true) && total[g].is_none()
            });
            if blocked {
                continue;
            }
            let cost = region_costs(&p.bodies[f], &|g| {
                total.get(g as usize).copied().flatten().unwrap_or(0)
            });
            let Ok(cost) = cost else {
                // Refusals and parse errors are reported by `instrument`.
                candidate[f] = false;
                changed = true;
                continue;
            };
            if cost[0] <= PREPAID_MAX {
                total[f] = Some(cost[0]);
            } else {
                candidate[f] = false;
            }
            changed = true;
        }
        if !changed {
            break;
        }
    }
    Ok(total)
}

/// Instructions the code from a function's entry, or a loop's header, can
/// execute before the next loop header or call: one count per region,
/// the function first, then its loops in order. A call to a prepaid
/// function counts what `callee` says that function can execute.
fn region_costs(
    body: &wasmparser::FunctionBody<'_>,
    callee: &dyn Fn(u32) -> u64,
) -> Result<Vec<u64>, Instrument> {
    let mut costs = vec![0u64];
    // For each open block: the region it belongs to and whether it is a loop.
    let mut frames: Vec<(usize, bool)> = vec![(0, false)];
    let mut ops = body.get_operators_reader()?;
    while !ops.eof() {
        let op = ops.read()?;
        let region = frames.last().map_or(0, |f| f.0);
        let cost = match op {
            Operator::MemoryFill { .. } | Operator::MemoryCopy { .. } => BULK_OP_INSTRUCTIONS,
            Operator::Call { function_index } => 1u64.saturating_add(callee(function_index)),
            _ => 1,
        };
        costs[region] = costs[region].saturating_add(cost);
        match op {
            Operator::Loop { .. } => {
                costs.push(1);
                frames.push((costs.len() - 1, true));
            }
            Operator::Block { .. } | Operator::If { .. } | Operator::TryTable { .. } => {
                frames.push((region, false));
            }
            Operator::End => {
                frames.pop();
            }
            _ => {}
        }
    }
    Ok(costs)
}

/// Locals the instrumentation adds after a function's own.
struct Scratch {
    a: u32,
    e: u32,
    x: u32,
    y: u32,
    v_i32: u32,
    v_i64: u32,
    v_f32: u32,
    v_f64: u32,
    v_v128: u32,
}

/// The body of a function of the original module with dirty tracking, the
/// virtual memory size and the instruction budget; `prepaid` as
/// [`prepaid_costs`] found (this function checks its entry unless its own
/// entry there is `Some`).
fn instrument(
    index: usize,
    body: &wasmparser::FunctionBody<'_>,
    ty: &FuncType,
    l: &Layout,
    prepaid: &[Option<u64>],
    isolation: Isolation,
) -> Result<Function, Instrument> {
    let isolating = isolation == Isolation::Rows;
    let costs = region_costs(body, &|g| {
        prepaid.get(g as usize).copied().flatten().unwrap_or(0)
    })?;
    let mut locals = Vec::new();
    let mut own = 0u32;
    for local in body.get_locals_reader()? {
        let (count, ty) = local?;
        own += count;
        locals.push((
            count,
            RoundtripReencoder
                .val_type(ty)
                .map_err(|_| Instrument::Refused("a local of a type UDFs may not use"))?,
        ));
    }
    let base = ty.params().len() as u32 + own;
    let t = Scratch {
        a: base,
        e: base + 1,
        x: base + 2,
        y: base + 3,
        v_i32: base + 4,
        v_i64: base + 5,
        v_f32: base + 6,
        v_f64: base + 7,
        v_v128: base + 8,
    };
    locals.extend([
        (5, ValType::I32),
        (1, ValType::I64),
        (1, ValType::F32),
        (1, ValType::F64),
        (1, ValType::V128),
    ]);
    let mut f = Function::new(locals);
    if isolating && prepaid.get(index).copied().flatten().is_none() {
        charge(&mut f, l, costs[0]);
    }
    let mut next_loop = 1;
    let mut ops = body.get_operators_reader()?;
    while !ops.eof() {
        let op = ops.read()?;
        if let Some(forbidden) = forbidden(&op) {
            return Err(Instrument::Refused(forbidden));
        }
        if let Some((memarg, bytes, value)) = store_kind(&op).filter(|_| isolating) {
            {
                let v = match value {
                    ValType::I32 => t.v_i32,
                    ValType::I64 => t.v_i64,
                    ValType::F32 => t.v_f32,
                    ValType::F64 => t.v_f64,
                    _ => t.v_v128,
                };
                let mut s = f.instructions();
                s.local_set(v).local_tee(t.a);
                if memarg.offset != 0 {
                    s.i32_const(memarg.offset as u32 as i32).i32_add();
                }
                s.local_set(t.x);
                track(&mut f, l, &t, t.x, Len::Const(bytes));
                f.instructions().local_get(t.a).local_get(v);
                f.instruction(&reencode(op)?);
                continue;
            }
        }
        match op {
            Operator::MemoryFill { .. } if isolating => {
                f.instructions()
                    .local_set(t.y)
                    .local_set(t.v_i32)
                    .local_set(t.a);
                track(&mut f, l, &t, t.a, Len::Local(t.y));
                charge_bytes(&mut f, l, t.y);
                f.instructions()
                    .local_get(t.a)
                    .local_get(t.v_i32)
                    .local_get(t.y)
                    .memory_fill(0);
            }
            Operator::MemoryCopy { .. } if isolating => {
                f.instructions()
                    .local_set(t.y)
                    .local_set(t.x)
                    .local_set(t.a);
                track(&mut f, l, &t, t.a, Len::Local(t.y));
                charge_bytes(&mut f, l, t.y);
                f.instructions()
                    .local_get(t.a)
                    .local_get(t.x)
                    .local_get(t.y)
                    .memory_copy(0, 0);
            }
            Operator::MemorySize { .. } => {
                f.instructions().global_get(l.vsize);
            }
            Operator::MemoryGrow { .. } => {
                // Grows only the virtual size, within the spare pages; the
                // real memory never changes size.
                f.instructions()
                    .local_set(t.a)
                    .i32_const(l.heap_limit as i32)
                    .global_get(l.vsize)
                    .i32_sub()
                    .local_get(t.a)
                    .i32_ge_u()
                    .if_(BlockType::Result(ValType::I32))
                    .global_get(l.vsize)
                    .global_get(l.vsize)
                    .local_get(t.a)
                    .i32_add()
                    .global_set(l.vsize)
                    .else_()
                    .i32_const(-1)
                    .end();
            }
            Operator::Loop { .. } => {
                f.instruction(&reencode(op)?);
                if isolating {
                    charge(&mut f, l, costs[next_loop]);
                }
                next_loop += 1;
            }
            op => {
                f.instruction(&reencode(op)?);
            }
        }
    }
    Ok(f)
}

/// Subtracts `cost` from the row's budget, trapping first when it would go
/// negative.
fn charge(f: &mut Function, l: &Layout, cost: u64) {
    let cost = cost.min(i64::MAX as u64) as i64;
    f.instructions()
        .global_get(l.fuel)
        .i64_const(cost)
        .i64_lt_s()
        .if_(BlockType::Empty)
        .unreachable()
        .end()
        .global_get(l.fuel)
        .i64_const(cost)
        .i64_sub()
        .global_set(l.fuel);
}

/// Subtracts one unit per [`BULK_BYTES_PER_INSTRUCTION`] of the byte
/// count in local `len` (an unsigned `i32`) from the row's budget, trapping
/// first when it would go negative: a bulk operation is paid for before it
/// runs.
fn charge_bytes(f: &mut Function, l: &Layout, len: u32) {
    let shift = BULK_BYTES_PER_INSTRUCTION.trailing_zeros() as i32;
    let mut s = f.instructions();
    s.global_get(l.fuel)
        .local_get(len)
        .i32_const(shift)
        .i32_shr_u()
        .i64_extend_i32_u()
        .i64_lt_s()
        .if_(BlockType::Empty)
        .unreachable()
        .end()
        .global_get(l.fuel)
        .local_get(len)
        .i32_const(shift)
        .i32_shr_u()
        .i64_extend_i32_u()
        .i64_sub()
        .global_set(l.fuel);
}

enum Len {
    Const(u32),
    Local(u32),
}

/// Widens `[lo, hi)` to cover `len` bytes from the address in local
/// `start`. A range that wraps around 2^32 cannot be written (the access
/// traps), so wrapping arithmetic never hides a write.
fn track(f: &mut Function, l: &Layout, t: &Scratch, start: u32, len: Len) {
    let mut s = f.instructions();
    s.local_get(start)
        .global_get(l.lo)
        .i32_lt_u()
        .if_(BlockType::Empty)
        .local_get(start)
        .global_set(l.lo)
        .end();
    s.local_get(start);
    match len {
        Len::Const(n) => s.i32_const(n as i32),
        Len::Local(n) => s.local_get(n),
    };
    s.i32_add()
        .local_tee(t.e)
        .global_get(l.hi)
        .i32_gt_u()
        .if_(BlockType::Empty)
        .local_get(t.e)
        .global_set(l.hi)
        .end();
}

/// The instructions whose effects cannot be undone between rows.
fn forbidden(op: &Operator<'_>) -> Option<&'static str> {
    Some(match op {
        Operator::TableSet { .. } => "table.set",
        Operator::TableGrow { .. } => "table.grow",
        Operator::TableFill { .. } => "table.fill",
        Operator::TableCopy { .. } => "table.copy",
        Operator::TableInit { .. } => "table.init",
        Operator::ElemDrop { .. } => "elem.drop",
        Operator::MemoryInit { .. } => "memory.init",
        Operator::DataDrop { .. } => "data.drop",
        Operator::MemoryDiscard { .. } => "memory.discard",
        _ => return None,
    })
}

/// A store's memory argument, the bytes it writes and its value's type.
fn store_kind(op: &Operator<'_>) -> Option<(wasmparser::MemArg, u32, ValType)> {
    use ValType::{F32, F64, I32, I64, V128};
    Some(match *op {
        Operator::I32Store { memarg } => (memarg, 4, I32),
        Operator::I64Store { memarg } => (memarg, 8, I64),
        Operator::F32Store { memarg } => (memarg, 4, F32),
        Operator::F64Store { memarg } => (memarg, 8, F64),
        Operator::I32Store8 { memarg } => (memarg, 1, I32),
        Operator::I32Store16 { memarg } => (memarg, 2, I32),
        Operator::I64Store8 { memarg } => (memarg, 1, I64),
        Operator::I64Store16 { memarg } => (memarg, 2, I64),
        Operator::I64Store32 { memarg } => (memarg, 4, I64),
        Operator::V128Store { memarg } => (memarg, 16, V128),
        Operator::V128Store8Lane { memarg, .. } => (memarg, 1, V128),
        Operator::V128Store16Lane { memarg, .. } => (memarg, 2, V128),
        Operator::V128Store32Lane { memarg, .. } => (memarg, 4, V128),
        Operator::V128Store64Lane { memarg, .. } => (memarg, 8, V128),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The code section body of a module with one function `body`.
    fn costs_of(body: impl FnOnce(&mut InstructionSink<'_>)) -> Vec<u64> {
        let mut f = Function::new([]);
        body(&mut f.instructions());
        let mut types = TypeSection::new();
        types.ty().function([], []);
        let mut funcs = FunctionSection::new();
        funcs.function(0);
        let mut code = CodeSection::new();
        code.function(&f);
        let mut module = Module::new();
        module.section(&types).section(&funcs).section(&code);
        let bytes = module.finish();
        for payload in Parser::new(0).parse_all(&bytes) {
            if let Payload::CodeSectionEntry(body) = payload.unwrap() {
                return region_costs(&body, &|_| 0).ok().unwrap();
            }
        }
        unreachable!("the module has a body")
    }

    #[test]
    fn each_region_counts_what_can_run_before_the_next_loop_header() {
        // nop; loop { nop; loop { nop; br 0 } ; br 0 }; end
        let costs = costs_of(|s| {
            s.nop()
                .loop_(BlockType::Empty)
                .nop()
                .loop_(BlockType::Empty)
                .nop()
                .br(0)
                .end()
                .br(0)
                .end()
                .end();
        });
        // Function: nop, loop, end (function). Outer loop: nop, loop, br,
        // end, plus its header's own charge. Inner: nop, br, end, plus one.
        assert_eq!(costs, vec![3, 5, 4]);
    }

    #[test]
    fn bulk_memory_operations_cost_more_than_one_instruction() {
        const _: () = assert!(BULK_BYTES_PER_INSTRUCTION.is_power_of_two());
        let costs = costs_of(|s| {
            s.i32_const(0)
                .i32_const(0)
                .i32_const(8)
                .memory_fill(0)
                .end();
        });
        // Three constants and the end, and the fill's fixed cost (its bytes
        // are charged when it runs).
        assert_eq!(costs, vec![4 + BULK_OP_INSTRUCTIONS]);
    }

    /// A module whose function `i` has body `bodies[i]` (all `() -> ()`),
    /// exporting function 0 and putting `in_table` in an element segment.
    fn module_of(bodies: &[&dyn Fn(&mut InstructionSink<'_>)], in_table: &[u32]) -> Vec<u8> {
        let mut types = TypeSection::new();
        types.ty().function([], []);
        let mut funcs = FunctionSection::new();
        let mut code = CodeSection::new();
        for body in bodies {
            funcs.function(0);
            let mut f = Function::new([]);
            body(&mut f.instructions());
            code.function(&f);
        }
        let mut tables = TableSection::new();
        tables.table(wasm_encoder::TableType {
            element_type: wasm_encoder::RefType::FUNCREF,
            minimum: 4,
            maximum: Some(4),
            table64: false,
            shared: false,
        });
        let mut exports = ExportSection::new();
        exports.export("row", ExportKind::Func, 0);
        let mut elements = ElementSection::new();
        elements.active(
            Some(0),
            &ConstExpr::i32_const(0),
            wasm_encoder::Elements::Functions(in_table.into()),
        );
        let mut module = Module::new();
        module
            .section(&types)
            .section(&funcs)
            .section(&tables)
            .section(&exports)
            .section(&elements)
            .section(&code);
        module.finish()
    }

    #[test]
    fn leaf_functions_called_directly_are_paid_for_by_their_callers() {
        let bytes = module_of(
            &[
                // 0, exported: calls 1 twice and 3.
                &|s| {
                    s.call(1).call(1).call(3).end();
                },
                // 1: no loops, calls 2.
                &|s| {
                    s.nop().call(2).end();
                },
                // 2: a leaf.
                &|s| {
                    s.nop().nop().end();
                },
                // 3: loops.
                &|s| {
                    s.loop_(BlockType::Empty).end().end();
                },
                // 4: calls itself.
                &|s| {
                    s.call(4).end();
                },
                // 5: a leaf, but in a table (reachable by call_indirect).
                &|s| {
                    s.nop().end();
                },
                // 6: calls 4 (which charges itself) and 5.
                &|s| {
                    s.call(4).call(5).end();
                },
            ],
            &[5],
        );
        let parts = parts(&bytes).unwrap();
        let prepaid = prepaid_costs(&parts).unwrap();
        // 2: nop, nop, end. 1: nop, call (1 + 3), end. 6: two calls and end,
        // its callees charging themselves.
        assert_eq!(prepaid, [None, Some(6), Some(3), None, None, None, Some(3)]);
        // The exported function pays for both calls of 1 at its entry.
        let costs = region_costs(&parts.bodies[0], &|g| prepaid[g as usize].unwrap_or(0))
            .ok()
            .unwrap();
        assert_eq!(costs, vec![(1 + 6) * 2 + 1 + 1]);
    }

    #[test]
    fn forbidden_instructions_are_named() {
        assert_eq!(
            forbidden(&Operator::TableSet { table: 0 }),
            Some("table.set")
        );
        assert_eq!(
            forbidden(&Operator::DataDrop { data_index: 0 }),
            Some("data.drop")
        );
        assert_eq!(forbidden(&Operator::Nop), None);
    }
}
