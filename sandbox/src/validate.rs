//! Static checks of a module's imports and exports, before it ever runs.

use udf_sdk::{abi, udf};
use wasmtime::{ExternType, FuncType, Module, ValType};

use crate::udf::AggregateUdfDecl;
use crate::{Limits, SandboxError, ScalarUdfDecl};

/// What a module is for; decides which imports and exports it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    /// An orchestrating job: may import the ABI's host functions only.
    Job,
    /// A UDF: sees raw conditional values, so it may import nothing at all.
    Udf,
}

/// The ABI's host functions and their signatures (params, results), all i32.
const HOST_FUNCTIONS: &[(&str, usize, usize)] = &[
    ("query", 2, 1),
    ("dry_run", 2, 1),
    ("param", 2, 1),
    ("response_read", 2, 1),
    ("emit", 4, 1),
    ("log", 3, 0),
];

pub(crate) fn check_imports(module: &Module, kind: ModuleKind) -> Result<(), SandboxError> {
    for import in module.imports() {
        let (m, name) = (import.module(), import.name());
        let refuse = |reason: String| SandboxError::ForbiddenImport {
            module: m.to_string(),
            name: name.to_string(),
            reason,
        };
        if kind == ModuleKind::Udf {
            return Err(refuse(
                "UDF modules see raw conditional values and may import nothing at all; remove every import".into(),
            ));
        }
        if m.starts_with("wasi") {
            return Err(refuse(
                "WASI is not available to jobs (no clock, randomness, filesystem or network); build for wasm32-unknown-unknown without std I/O".into(),
            ));
        }
        if m != abi::IMPORT_MODULE && m.starts_with(abi::IMPORT_MODULE_PREFIX) {
            return Err(SandboxError::AbiVersion {
                found: m.to_string(),
                host: abi::ABI_VERSION,
                expected: abi::IMPORT_MODULE,
            });
        }
        if m != abi::IMPORT_MODULE {
            return Err(refuse(format!(
                "only host functions of `{}` may be imported",
                abi::IMPORT_MODULE
            )));
        }
        let what = match import.ty() {
            ExternType::Func(_) => None,
            ExternType::Memory(_) => Some("a memory; a job defines and exports its own memory"),
            ExternType::Table(_) => Some("a table; a job defines its own tables"),
            ExternType::Global(_) => Some("a global; the host shares no globals"),
            ExternType::Tag(_) => Some("an exception tag; the host defines none"),
        };
        if let Some(what) = what {
            return Err(refuse(format!(
                "the import is {what}; only host functions may be imported"
            )));
        }
        let Some(&(_, params, results)) = HOST_FUNCTIONS.iter().find(|(n, _, _)| *n == name) else {
            let known: Vec<_> = HOST_FUNCTIONS.iter().map(|(n, _, _)| *n).collect();
            return Err(refuse(format!(
                "`{name}` is not a host function of ABI version {}; known: {}",
                abi::ABI_VERSION,
                known.join(", ")
            )));
        };
        match import.ty() {
            ExternType::Func(ty) if is_i32_sig(&ty, params, results) => {}
            other => {
                return Err(refuse(format!(
                    "expected a function of {params} i32 parameters and {results} i32 results, found {other:?}"
                )));
            }
        }
    }
    Ok(())
}

fn is_i32_sig(ty: &FuncType, params: usize, results: usize) -> bool {
    ty.params().len() == params
        && ty.results().len() == results
        && ty
            .params()
            .chain(ty.results())
            .all(|t| matches!(t, ValType::I32))
}

/// Refuses, at upload, a module whose declared sizes could never be instantiated.
pub(crate) fn check_resources(module: &Module, limits: &Limits) -> Result<(), SandboxError> {
    let needs = module.resources_required();
    if needs.num_memories > 1 {
        return Err(SandboxError::Invalid {
            reason: format!(
                "module defines {} memories; only one is allowed (multi-memory is off)",
                needs.num_memories
            ),
        });
    }
    if needs.num_tables > 1 {
        return Err(SandboxError::Invalid {
            reason: format!(
                "module defines {} tables; only one is allowed",
                needs.num_tables
            ),
        });
    }
    let initial_memory = needs
        .max_initial_memory_size
        .unwrap_or(0)
        .saturating_mul(65_536);
    if initial_memory > limits.memory_bytes as u64 {
        return Err(SandboxError::LimitExceeded {
            limit: "memory",
            detail: format!(
                "the module declares {initial_memory} bytes of initial memory, {} over the limit of {} bytes",
                initial_memory - limits.memory_bytes as u64,
                limits.memory_bytes
            ),
        });
    }
    let initial_table = needs.max_initial_table_size.unwrap_or(0);
    if initial_table > limits.table_elements as u64 {
        return Err(SandboxError::LimitExceeded {
            limit: "table",
            detail: format!(
                "the module declares a table of {initial_table} elements, {} over the limit of {}",
                initial_table - limits.table_elements as u64,
                limits.table_elements
            ),
        });
    }
    Ok(())
}

pub(crate) fn check_exports(module: &Module, kind: ModuleKind) -> Result<(), SandboxError> {
    let export = |name: &str| module.exports().find(|e| e.name() == name).map(|e| e.ty());
    match export("memory") {
        Some(ExternType::Memory(_)) => {}
        Some(other) => {
            return Err(SandboxError::MistypedExport {
                name: "memory".into(),
                expected: "a linear memory",
                found: format!("{other:?}"),
            });
        }
        None => {
            return Err(SandboxError::MissingExport {
                name: "memory".into(),
                expected: "the guest's linear memory",
            });
        }
    }
    if kind == ModuleKind::Udf {
        return check_udf_exports(module);
    }
    for name in [abi::ENTRY_EXPORT, abi::VERSION_EXPORT] {
        match export(name) {
            Some(ExternType::Func(ty)) if is_i32_sig(&ty, 0, 1) => {}
            Some(other) => {
                return Err(SandboxError::MistypedExport {
                    name: name.into(),
                    expected: "a function () -> i32",
                    found: format!("{other:?}"),
                });
            }
            None => {
                return Err(SandboxError::MissingExport {
                    name: name.into(),
                    expected: "a function () -> i32; declare the job with `udf_sdk::job!(run)`",
                });
            }
        }
    }
    Ok(())
}

/// A UDF module exports the version, the allocator and at least one
/// per-row function `udf_row_<name>` or aggregate; see `udf-sdk/ABI.md`.
fn check_udf_exports(module: &Module) -> Result<(), SandboxError> {
    let required: [(&str, usize, &'static str); 2] = [
        (
            udf::VERSION_EXPORT,
            0,
            "a function () -> i32; add `udf_sdk::udf_module!()` to the crate",
        ),
        (
            udf::ALLOC_EXPORT,
            1,
            "a function (i32) -> i32; add `udf_sdk::udf_module!()` to the crate",
        ),
    ];
    for (name, params, expected) in required {
        match module.get_export(name) {
            Some(ExternType::Func(ty)) if is_i32_sig(&ty, params, 1) => {}
            Some(other) => {
                return Err(SandboxError::MistypedExport {
                    name: name.into(),
                    expected,
                    found: format!("{other:?}"),
                });
            }
            None => {
                return Err(SandboxError::MissingExport {
                    name: name.into(),
                    expected,
                });
            }
        }
    }
    if let Some(ty) = module.get_export(udf::NULL_FLAG_EXPORT) {
        match ty {
            ExternType::Func(ty) if is_i32_sig(&ty, 0, 1) => {}
            other => {
                return Err(SandboxError::MistypedExport {
                    name: udf::NULL_FLAG_EXPORT.into(),
                    expected: "a function () -> i32; add `udf_sdk::udf_module!()` to the crate",
                    found: format!("{other:?}"),
                });
            }
        }
    }
    let mut functions = 0;
    for export in module.exports() {
        let name = export.name();
        let (params, expected) = if name.starts_with(udf::ROW_EXPORT_PREFIX) {
            // Its exact type follows from its declaration; checked by the rewrite.
            match export.ty() {
                ExternType::Func(_) => {
                    functions += 1;
                    continue;
                }
                other => {
                    return Err(SandboxError::MistypedExport {
                        name: name.into(),
                        expected: "a per-row function; declare it with `udf_sdk::scalar_udf!`",
                        found: format!("{other:?}"),
                    });
                }
            }
        } else if name.starts_with(udf::SCALAR_EXPORT_PREFIX) {
            return Err(SandboxError::MistypedExport {
                name: name.into(),
                expected: "a per-row function `udf_row_<name>`: batch exports `udf_<name>(rows, frame)` of UDF ABI version 1 are no longer accepted, because a batch export can read other rows; rebuild with the current `udf_sdk::scalar_udf!`",
                found: "a batch export".into(),
            });
        } else if name.starts_with(udf::AGGREGATE_EXPORT_PREFIX) {
            let Some(part) = udf::AggregateExport::ALL
                .into_iter()
                .find(|e| name.ends_with(e.suffix()))
            else {
                return Err(SandboxError::MistypedExport {
                    name: name.into(),
                    expected: "an aggregate export `udaf_<name>_init`, `_update`, `_merge` or `_finish`; declare it with `udf_sdk::aggregate_udf!`",
                    found: "an export of another name".into(),
                });
            };
            (
                part.params(),
                "an aggregate export of the ABI's type (all i32); declare it with `udf_sdk::aggregate_udf!`",
            )
        } else {
            continue;
        };
        match export.ty() {
            ExternType::Func(ty) if is_i32_sig(&ty, params, 1) => functions += 1,
            other => {
                return Err(SandboxError::MistypedExport {
                    name: name.into(),
                    expected,
                    found: format!("{other:?}"),
                });
            }
        }
    }
    if functions == 0 {
        return Err(SandboxError::MissingExport {
            name: format!("{}<name>", udf::ROW_EXPORT_PREFIX),
            expected: "at least one scalar UDF `udf_row_<name>` or aggregate UDF; declare them with `udf_sdk::scalar_udf!` or `udf_sdk::aggregate_udf!`",
        });
    }
    Ok(())
}

/// The bytes of every custom section named `name`, concatenated in order.
fn custom_section(bytes: &[u8], name: &str) -> Result<Vec<u8>, SandboxError> {
    let mut section = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| SandboxError::UdfDeclaration {
            reason: format!("the module cannot be parsed: {e}"),
        })?;
        if let wasmparser::Payload::CustomSection(custom) = payload
            && custom.name() == name
        {
            section.extend_from_slice(custom.data());
        }
    }
    Ok(section)
}

/// The checks every declared function passes, scalar or aggregate: a
/// lowercase SQL identifier, declared once, with arguments and a numeric result.
fn check_declaration(d: &udf::Declaration, seen: &[&str]) -> Result<(), String> {
    let valid_name = d
        .name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && d.name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid_name {
        return Err(format!(
            "`{}` is not a lowercase SQL identifier ([a-z_][a-z0-9_]*)",
            d.name
        ));
    }
    if seen.contains(&d.name.as_str()) {
        return Err(format!("`{}` is declared twice", d.name));
    }
    if d.args.is_empty() {
        return Err(format!("`{}` declares no arguments", d.name));
    }
    if d.returns == udf::UdfType::Utf8 {
        return Err(format!(
            "`{}` returns Utf8; version {} results are Int64 or Float64",
            d.name,
            udf::UDF_ABI_VERSION
        ));
    }
    Ok(())
}

/// The functions a UDF module declares: scalar ones in its `unseen_udf`
/// custom section, each matched one to one with a `udf_row_<name>` export, and
/// aggregates in `unseen_udaf`, each with its four `udaf_<name>_*` exports
/// and no other (the exports' types were checked by [`check_exports`]).
pub(crate) fn udf_declarations(
    bytes: &[u8],
    module: &Module,
) -> Result<(Vec<ScalarUdfDecl>, Vec<AggregateUdfDecl>), SandboxError> {
    let refuse = |reason: String| SandboxError::UdfDeclaration { reason };
    let scalar_section = custom_section(bytes, udf::DECLARATION_SECTION)?;
    let aggregate_section = custom_section(bytes, udf::AGGREGATE_DECLARATION_SECTION)?;
    if scalar_section.is_empty() && aggregate_section.is_empty() {
        return Err(refuse(format!(
            "the module has no `{}` or `{}` custom section, so the host cannot tell its functions' SQL names and types",
            udf::DECLARATION_SECTION,
            udf::AGGREGATE_DECLARATION_SECTION
        )));
    }
    let mut seen: Vec<String> = Vec::new();
    let mut functions: Vec<ScalarUdfDecl> = Vec::new();
    for d in udf::decode_declarations(&scalar_section).map_err(refuse)? {
        let names: Vec<&str> = seen.iter().map(String::as_str).collect();
        check_declaration(&d, &names).map_err(refuse)?;
        let export = format!("{}{}", udf::ROW_EXPORT_PREFIX, d.name);
        if module.get_export(&export).is_none() {
            return Err(refuse(format!(
                "`{}` is declared but the module has no export `{export}`",
                d.name
            )));
        }
        seen.push(d.name.clone());
        functions.push(ScalarUdfDecl::new(
            d.name,
            d.args.into_iter().map(arrow_type).collect(),
            arrow_type(d.returns),
        ));
    }
    let mut aggregates: Vec<AggregateUdfDecl> = Vec::new();
    for a in udf::decode_aggregate_declarations(&aggregate_section).map_err(refuse)? {
        let d = a.function;
        let names: Vec<&str> = seen.iter().map(String::as_str).collect();
        check_declaration(&d, &names).map_err(refuse)?;
        for part in udf::AggregateExport::ALL {
            let export = part.export(&d.name);
            if module.get_export(&export).is_none() {
                return Err(refuse(format!(
                    "aggregate `{}` is declared but the module has no export `{export}`",
                    d.name
                )));
            }
        }
        seen.push(d.name.clone());
        aggregates.push(AggregateUdfDecl {
            function: ScalarUdfDecl::new(
                d.name,
                d.args.into_iter().map(arrow_type).collect(),
                arrow_type(d.returns),
            ),
            state_bytes: a.state_bytes,
        });
    }
    for export in module.exports() {
        let name = export.name();
        let declared = if let Some(f) = name.strip_prefix(udf::ROW_EXPORT_PREFIX) {
            functions.iter().any(|d| d.name == f)
        } else if name.starts_with(udf::AGGREGATE_EXPORT_PREFIX) {
            aggregates.iter().any(|a| {
                udf::AggregateExport::ALL
                    .iter()
                    .any(|part| part.export(&a.function.name) == name)
            })
        } else {
            true
        };
        if !declared {
            return Err(refuse(format!("the export `{name}` has no declaration")));
        }
    }
    // By name: the order of the records is the linker's, which changes
    // with unrelated edits to a module; listings should not.
    functions.sort_by(|a, b| a.name.cmp(&b.name));
    aggregates.sort_by(|a, b| a.function.name.cmp(&b.function.name));
    Ok((functions, aggregates))
}

fn arrow_type(ty: udf::UdfType) -> arrow::datatypes::DataType {
    use arrow::datatypes::DataType;
    match ty {
        udf::UdfType::Int64 => DataType::Int64,
        udf::UdfType::Float64 => DataType::Float64,
        udf::UdfType::Utf8 => DataType::Utf8,
    }
}
