//! How Unseen's plan parts cross the cluster: sealed datasets, released
//! tables, the clamped-sum aggregate, the total forms of built-ins, wasm
//! UDFs (scalar and aggregate), on top of Ballista's own codecs (which carry
//! its shuffle nodes and DataFusion's built-ins).
//!
//! Every encoding starts with a tag naming what it is, so a buffer of one
//! kind is never read as another; anything not tagged goes to Ballista's
//! codec unchanged.

use std::sync::Arc;

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use serde::Serialize;
use unseen_policy::clamped_sum::{ClampedSum, ClampedSumSpec};
use unseen_policy::total::{TotalArithmetic, TotalFunction};
use unseen_sandbox::udf::{UdfModule, WasmAggregateUdf, WasmScalarUdf};
use unseen_sandbox::{Limits, ModuleKind, Sandbox};

use crate::scan::{SealedFile, SealedScanExec, SealedTable};
use crate::seal::{self, ExecutorSecret};

const SEALED_TABLE: &[u8] = b"unseen.sealed-table.v1\n";
const SEALED_SCAN: &[u8] = b"unseen.sealed-scan.v1\n";
const CLAMPED_SUM: &[u8] = b"unseen.clamped-sum.v1\n";
const TOTAL_FUNCTION: &[u8] = b"unseen.total-function.v1\n";
const TOTAL_ARITHMETIC: &[u8] = b"unseen.total-arithmetic.v1\n";
const WASM_SCALAR: &[u8] = b"unseen.wasm-scalar.v1\n";
const WASM_AGGREGATE: &[u8] = b"unseen.wasm-aggregate.v1\n";
const RELEASED_TABLE: &[u8] = b"unseen.released-table.v1\n";

fn decode_error(what: &str, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("a cluster plan's {what} does not decode: {e}"))
}

fn tagged<'a>(buf: &'a [u8], tag: &[u8]) -> Option<&'a [u8]> {
    buf.strip_prefix(tag)
}

fn encode_json(tag: &[u8], value: &impl Serialize, buf: &mut Vec<u8>) -> DfResult<()> {
    buf.extend_from_slice(tag);
    serde_json::to_writer(&mut *buf, value)
        .map_err(|e| DataFusionError::Internal(format!("a cluster plan part: {e}")))
}

/// The clamped sum travels with its bounds, a wasm aggregate with its
/// module (as a scalar UDF does); any other aggregate as `otherwise`
/// encodes it.
fn encode_aggregate(
    node: &AggregateUDF,
    buf: &mut Vec<u8>,
    otherwise: impl FnOnce(&mut Vec<u8>) -> DfResult<()>,
) -> DfResult<()> {
    if let Some(sum) = node.inner().downcast_ref::<ClampedSum>() {
        encode_json(CLAMPED_SUM, &sum.spec(), buf)
    } else if let Some(udf) = node.inner().downcast_ref::<WasmAggregateUdf>() {
        encode_json(
            WASM_AGGREGATE,
            &WasmMessage::of(udf.module(), &udf.decl().function.name),
            buf,
        )
    } else {
        otherwise(buf)
    }
}

/// A clamped sum or a wasm aggregate, if `buf` holds one.
fn decode_aggregate(buf: &[u8]) -> Option<DfResult<Arc<AggregateUDF>>> {
    if let Some(body) = tagged(buf, WASM_AGGREGATE) {
        return Some((|| {
            let (module, function) = wasm_module(body)?;
            let aggregate = module
                .for_query()
                .declared_aggregates()
                .map_err(|e| decode_error("UDF module", e))?
                .into_iter()
                .find(|f| f.decl().function.name == function)
                .ok_or_else(|| no_such_function(&module, &function))?;
            Ok(Arc::new(AggregateUDF::from(aggregate)))
        })());
    }
    let body = tagged(buf, CLAMPED_SUM)?;
    Some((|| {
        let spec: ClampedSumSpec =
            serde_json::from_slice(body).map_err(|e| decode_error("clamped sum", e))?;
        let sum = ClampedSum::from_spec(spec).map_err(|e| decode_error("clamped sum", e))?;
        Ok(Arc::new(AggregateUDF::new_from_impl(sum)))
    })())
}

/// Wasm UDFs travel with their module, which the other side validates and
/// rewrites for row independence again, as an upload is. The total forms of
/// built-in functions (`policy::total`) travel as the built-in's name and
/// are rebuilt total: by name alone the other side would find the plain
/// built-in, which fails a query where the total one yields NULL. Any other
/// scalar function travels by name (Ballista's way) and is found in the
/// other side's registry, or the plan does not decode.
fn encode_scalar(
    node: &ScalarUDF,
    buf: &mut Vec<u8>,
    otherwise: impl FnOnce(&mut Vec<u8>) -> DfResult<()>,
) -> DfResult<()> {
    if let Some(udf) = node.inner().downcast_ref::<WasmScalarUdf>() {
        encode_json(
            WASM_SCALAR,
            &WasmMessage::of(udf.module(), &udf.decl().name),
            buf,
        )
    } else if let Some(total) = node.inner().downcast_ref::<TotalFunction>() {
        // Rebuilt from the name, it must be the built-in of that name, never
        // a UDF module's function that shadows one (the service refuses
        // those at submission; this keeps a plan from changing meaning).
        if total
            .inner()
            .inner()
            .downcast_ref::<WasmScalarUdf>()
            .is_some()
        {
            return Err(DataFusionError::Plan(format!(
                "UDF `{}` is named like a built-in function and cannot run on the cluster; rename it",
                total.inner().name()
            )));
        }
        buf.extend_from_slice(TOTAL_FUNCTION);
        buf.extend_from_slice(total.inner().name().as_bytes());
        Ok(())
    } else if node.inner().downcast_ref::<TotalArithmetic>().is_some() {
        buf.extend_from_slice(TOTAL_ARITHMETIC);
        buf.extend_from_slice(node.name().as_bytes());
        Ok(())
    } else {
        otherwise(buf)
    }
}

/// A wasm UDF on the wire: its module as uploaded, which the other side
/// validates and rewrites again, the function, and the grant's cap on
/// instructions per row.
#[derive(Serialize, serde::Deserialize)]
struct WasmMessage {
    sha256: String,
    /// The module's bytes, hex.
    module: String,
    function: String,
    row_instructions: u64,
}

impl WasmMessage {
    fn of(module: &UdfModule, function: &str) -> WasmMessage {
        WasmMessage {
            sha256: module.sha256().to_string(),
            module: hex::encode(module.source()),
            function: function.to_string(),
            row_instructions: module.row_instructions(),
        }
    }
}

/// UDF modules validated in this process, by hash and cap: an executor
/// compiles a module once, not once per task.
static WASM_MODULES: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<(String, u64), UdfModule>>,
> = std::sync::LazyLock::new(Default::default);

/// The sandbox UDF modules run in on this side of the cluster.
static SANDBOX: std::sync::LazyLock<Result<Sandbox, String>> =
    std::sync::LazyLock::new(|| Sandbox::new(Limits::default()).map_err(|e| e.to_string()));

/// The module a wasm UDF message carries, validated here (or found among
/// those already validated, by hash and cap), and the function it names.
fn wasm_module(body: &[u8]) -> DfResult<(UdfModule, String)> {
    let message: WasmMessage = serde_json::from_slice(body).map_err(|e| decode_error("UDF", e))?;
    let bytes = hex::decode(&message.module).map_err(|e| decode_error("UDF module", e))?;
    let key = (message.sha256.clone(), message.row_instructions);
    let cached = WASM_MODULES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned();
    let module = match cached {
        Some(module) => module,
        None => {
            let sandbox = SANDBOX.as_ref().map_err(|e| decode_error("sandbox", e))?;
            let validated = sandbox
                .validate(&bytes, ModuleKind::Udf)
                .map_err(|e| decode_error("UDF module", e))?;
            if validated.sha256() != message.sha256 {
                return Err(decode_error(
                    "UDF module",
                    "its bytes do not have the hash the plan names",
                ));
            }
            let module = UdfModule::new(sandbox, &validated)
                .map_err(|e| decode_error("UDF module", e))?
                .with_row_instructions(message.row_instructions);
            WASM_MODULES
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, module.clone());
            module
        }
    };
    Ok((module, message.function))
}

fn no_such_function(module: &UdfModule, function: &str) -> DataFusionError {
    decode_error(
        "UDF",
        format!("module {} declares no {function}", module.sha256()),
    )
}

fn decode_wasm(body: &[u8]) -> DfResult<Arc<ScalarUDF>> {
    let (module, function) = wasm_module(body)?;
    let scalar = module
        .for_query()
        .declared()
        .map_err(|e| decode_error("UDF module", e))?
        .into_iter()
        .find(|f| f.decl().name == function)
        .ok_or_else(|| no_such_function(&module, &function))?;
    Ok(Arc::new(ScalarUDF::from(scalar)))
}

/// A released table travels as its rows (Arrow IPC): released values are
/// public once approved, so they may cross the network in clear.
fn encode_released(table: &MemTable, buf: &mut Vec<u8>) -> DfResult<()> {
    buf.extend_from_slice(RELEASED_TABLE);
    let mut writer = StreamWriter::try_new(&mut *buf, &table.schema())?;
    for partition in &table.batches {
        let batches = partition.try_read().map_err(|_| {
            DataFusionError::Internal("a released table is being written to".into())
        })?;
        for batch in batches.iter() {
            writer.write(batch)?;
        }
    }
    writer.finish()?;
    Ok(())
}

fn decode_released(body: &[u8], schema: SchemaRef) -> DfResult<Arc<dyn TableProvider>> {
    let reader =
        StreamReader::try_new(body, None).map_err(|e| decode_error("released table", e))?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| decode_error("released table", e))?;
    Ok(Arc::new(MemTable::try_new(schema, vec![batches])?))
}

fn decode_scalar(buf: &[u8]) -> Option<DfResult<Arc<ScalarUDF>>> {
    if let Some(body) = tagged(buf, WASM_SCALAR) {
        return Some(decode_wasm(body));
    }
    let named = |body: &[u8]| {
        std::str::from_utf8(body)
            .map(str::to_string)
            .map_err(|e| decode_error("function", e))
    };
    if let Some(body) = tagged(buf, TOTAL_FUNCTION) {
        return Some(named(body).and_then(|name| {
            TotalFunction::of_builtin(&name)
                .map(|f| Arc::new(ScalarUDF::new_from_impl(f)))
                .ok_or_else(|| decode_error("function", format!("no built-in {name}")))
        }));
    }
    if let Some(body) = tagged(buf, TOTAL_ARITHMETIC) {
        return Some(named(body).and_then(|name| {
            TotalArithmetic::named(&name)
                .map(|f| Arc::new(ScalarUDF::new_from_impl(f)))
                .ok_or_else(|| decode_error("function", format!("no operation {name}")))
        }));
    }
    None
}

/// The function methods both codecs share: Unseen's functions first, the
/// rest through Ballista's codec (`self.ballista`).
macro_rules! unseen_functions {
    () => {
        fn try_decode_udf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<ScalarUDF>> {
            decode_scalar(buf).unwrap_or_else(|| self.ballista.try_decode_udf(name, buf))
        }

        fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> DfResult<()> {
            encode_scalar(node, buf, |buf| self.ballista.try_encode_udf(node, buf))
        }

        fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<AggregateUDF>> {
            decode_aggregate(buf).unwrap_or_else(|| self.ballista.try_decode_udaf(name, buf))
        }

        fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> DfResult<()> {
            encode_aggregate(node, buf, |buf| self.ballista.try_encode_udaf(node, buf))
        }
    };
}

/// The logical codec of the service, the scheduler and the executors.
#[derive(Debug, Default)]
pub struct UnseenLogicalCodec {
    ballista: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for UnseenLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> DfResult<Extension> {
        self.ballista.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> DfResult<()> {
        self.ballista.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> DfResult<Arc<dyn TableProvider>> {
        if let Some(body) = tagged(buf, SEALED_TABLE) {
            let file: SealedFile =
                serde_json::from_slice(body).map_err(|e| decode_error("table", e))?;
            return Ok(Arc::new(SealedTable::new(file, schema)));
        }
        if let Some(body) = tagged(buf, RELEASED_TABLE) {
            return decode_released(body, schema);
        }
        self.ballista
            .try_decode_table_provider(buf, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> DfResult<()> {
        if let Some(table) = node.downcast_ref::<SealedTable>() {
            return encode_json(SEALED_TABLE, table.file(), buf);
        }
        if let Some(table) = node.downcast_ref::<MemTable>() {
            return encode_released(table, buf);
        }
        self.ballista
            .try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> DfResult<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> DfResult<()> {
        self.ballista.try_encode_file_format(buf, node)
    }

    unseen_functions!();
}

/// Who decodes sealed scans: an executor opens its own sealed key; the
/// scheduler, which only plans, opens nothing.
#[derive(Debug, Clone)]
pub enum Opener {
    Scheduler,
    Executor {
        name: String,
        secret: ExecutorSecret,
    },
}

/// The physical codec of the scheduler (`Opener::Scheduler`) and of an
/// executor (`Opener::Executor`).
#[derive(Debug)]
pub struct UnseenPhysicalCodec {
    ballista: BallistaPhysicalExtensionCodec,
    opener: Opener,
}

impl UnseenPhysicalCodec {
    pub fn new(opener: Opener) -> UnseenPhysicalCodec {
        UnseenPhysicalCodec {
            ballista: BallistaPhysicalExtensionCodec::default(),
            opener,
        }
    }
}

impl PhysicalExtensionCodec for UnseenPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(body) = tagged(buf, SEALED_SCAN) else {
            // Every stage plan an executor runs is a Ballista node (its
            // shuffle writer) over the rest: its inputs get the job's join
            // row cap here (`crate::limits`), and count the rows their wasm
            // UDFs run on (`crate::udf_rows`).
            let inputs = match &self.opener {
                Opener::Executor { .. } => {
                    crate::udf_rows::counted(&crate::limits::capped(inputs, ctx)?)?
                }
                Opener::Scheduler => inputs.to_vec(),
            };
            return self.ballista.try_decode(buf, &inputs, ctx, proto_converter);
        };
        let file: SealedFile = serde_json::from_slice(body).map_err(|e| decode_error("scan", e))?;
        let [input] = inputs else {
            return Err(decode_error("scan", "it has no input"));
        };
        let scan = SealedScanExec::new(file, Arc::clone(input));
        match &self.opener {
            Opener::Scheduler => Ok(Arc::new(scan)),
            Opener::Executor { name, secret } => {
                let key = seal::open(&scan.file().sealed, name, secret, &scan.file().dataset)
                    .map_err(|e| DataFusionError::Execution(e.to_string()))?;
                tracing::debug!(
                    executor = %name,
                    dataset = %scan.file().dataset,
                    "opened the data key sealed for this executor, for one task"
                );
                Ok(Arc::new(scan.opened(key)?))
            }
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        let Some(scan) = node.downcast_ref::<SealedScanExec>() else {
            return self.ballista.try_encode(node, buf, proto_converter);
        };
        encode_json(SEALED_SCAN, scan.file(), buf)
    }

    unseen_functions!();
}
