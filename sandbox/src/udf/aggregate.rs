//! Aggregate UDFs backed by WebAssembly: DataFusion `AggregateUDFImpl`s
//! whose states the host owns (see `udf-sdk/ABI.md`, "Aggregate functions").
//!
//! Every group's state is `state_bytes` opaque bytes in a host vector. Per
//! batch the host copies the argument columns, the rows' group indices and
//! the states of all groups into one instance, calls `udaf_<name>_update`,
//! and copies the states back; merging partial states (DataFusion's final
//! aggregation) and finishing them work the same way. So a state never
//! lives in guest memory between calls: an instance that trapped is dropped
//! without losing anything but its batch's error, partitions exchange
//! states as `FixedSizeBinary` columns, and any instance can serve any call.
//! The cost is a copy of every group's state per batch, which is why states
//! are small ([`abi::MAX_STATE_BYTES`]).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, FixedSizeBinaryArray};
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::{AggregateOrderSensitivity, format_state_name};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use udf_sdk::udf::{self as abi, AggregateExport, UdfType};
use wasmtime::ExternType;

use super::{
    GROUPS_SLOT, OTHERS_SLOT, STATES_SLOT, ScalarUdfDecl, UdfError, UdfInstance, UdfModule,
    abi_types, bad_input, bad_output, batch_rows, coerce_to_declared, read_column, write_frame,
};

/// What an aggregate UDF is called in SQL, its types and the size of one
/// group's state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AggregateUdfDecl {
    /// Name, argument types and result type, as for a scalar UDF.
    pub function: ScalarUdfDecl,
    /// Bytes of one group's state.
    pub state_bytes: usize,
}

impl UdfModule {
    /// Every aggregate the module declares (see
    /// [`ValidatedModule::aggregates`](crate::ValidatedModule::aggregates)),
    /// ready to register in a session.
    pub fn declared_aggregates(&self) -> Result<Vec<WasmAggregateUdf>, UdfError> {
        self.inner
            .aggregates
            .iter()
            .map(|d| self.aggregate(d.clone()))
            .collect()
    }

    /// An aggregate UDF backed by the module's four `udaf_<name>_*`
    /// exports. Runs `udaf_<name>_init` once, for the state of an empty
    /// group.
    pub fn aggregate(&self, decl: AggregateUdfDecl) -> Result<WasmAggregateUdf, UdfError> {
        let udf = decl.function.name.clone();
        let exports = AggregateExport::ALL.map(|part| part.export(&udf));
        for export in &exports {
            match self.inner.pre.module().get_export(export) {
                Some(ExternType::Func(_)) => {}
                _ => {
                    return Err(UdfError::MissingExport {
                        udf,
                        export: export.clone(),
                    });
                }
            }
        }
        let (args, returns) = abi_types(&decl.function)?;
        if decl.state_bytes == 0 || decl.state_bytes > abi::MAX_STATE_BYTES {
            return Err(bad_input(
                &udf,
                format!(
                    "a state of {} bytes; 1 to {} are allowed",
                    decl.state_bytes,
                    abi::MAX_STATE_BYTES
                ),
            ));
        }
        let mut aggregate = WasmAggregateUdf {
            decl,
            exports,
            args,
            returns,
            empty_state: Vec::new(),
            signature: Signature::user_defined(Volatility::Immutable),
            module: self.clone(),
        };
        aggregate.empty_state = aggregate.init()?;
        Ok(aggregate)
    }
}

/// A DataFusion aggregate UDF whose state and arithmetic live in a
/// WebAssembly module.
///
/// Arguments are coerced like a [`WasmScalarUdf`](super::WasmScalarUdf)'s.
/// Grouped aggregation uses a [`GroupsAccumulator`] (one guest call per
/// batch for all groups); an aggregate without GROUP BY an [`Accumulator`].
/// Register it with `ctx.register_udaf(AggregateUDF::from(udf))`.
#[derive(Debug, Clone)]
pub struct WasmAggregateUdf {
    decl: AggregateUdfDecl,
    /// In the order of [`AggregateExport::ALL`].
    exports: [String; 4],
    args: Vec<UdfType>,
    returns: UdfType,
    /// The state of a group with no rows, from `udaf_<name>_init`.
    empty_state: Vec<u8>,
    signature: Signature,
    module: UdfModule,
}

impl PartialEq for WasmAggregateUdf {
    fn eq(&self, other: &Self) -> bool {
        self.decl == other.decl && self.module.sha256() == other.module.sha256()
    }
}

impl Eq for WasmAggregateUdf {}

impl Hash for WasmAggregateUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.decl.hash(state);
        self.module.sha256().hash(state);
    }
}

/// The rows of a call and which group each belongs to: `None` when all are
/// in group 0 (the guest is passed address 0).
struct Rows<'a> {
    count: usize,
    groups: Option<&'a [u32]>,
}

impl WasmAggregateUdf {
    /// The declaration it was made from.
    pub fn decl(&self) -> &AggregateUdfDecl {
        &self.decl
    }

    /// The module serving it.
    pub fn module(&self) -> &UdfModule {
        &self.module
    }

    fn name_str(&self) -> &str {
        &self.decl.function.name
    }

    fn export(&self, part: AggregateExport) -> &str {
        let index = AggregateExport::ALL
            .iter()
            .position(|p| *p == part)
            .unwrap_or_default();
        &self.exports[index]
    }

    fn width(&self) -> usize {
        self.decl.state_bytes
    }

    /// The state of an empty group, from the guest's `init`.
    fn init(&self) -> Result<Vec<u8>, UdfError> {
        let udf = self.name_str();
        let inner = &self.module.inner;
        self.module.with_instance(udf, |inst| {
            let empty = vec![0u8; self.width()];
            let ptr = inst
                .put(STATES_SLOT, &empty)
                .map_err(|p| bad_input(udf, p))?;
            let status = inst.call::<i32>(
                udf,
                self.export(AggregateExport::Init),
                ptr as i32,
                &inner.limits,
            )?;
            self.check_status(AggregateExport::Init, status)?;
            read_back(inst, ptr, self.width()).map_err(|p| bad_output(udf, p))
        })
    }

    fn check_status(&self, part: AggregateExport, status: i32) -> Result<(), UdfError> {
        match status {
            abi::STATUS_OK => Ok(()),
            abi::STATUS_MISMATCH => Err(UdfError::SignatureMismatch {
                udf: self.name_str().to_string(),
                export: self.export(part).to_string(),
                declared: format!(
                    "({}) -> {} with a state of {} bytes",
                    self.args
                        .iter()
                        .map(|t| t.name())
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.returns.name(),
                    self.width()
                ),
            }),
            abi::STATUS_BAD_GROUP => Err(bad_output(
                self.name_str(),
                format!(
                    "`{}` reported a group index out of range, which the host never sends",
                    self.export(part)
                ),
            )),
            other => Err(bad_output(
                self.name_str(),
                format!(
                    "`{}` returned status {other}, which the ABI does not define",
                    self.export(part)
                ),
            )),
        }
    }

    /// Folds `rows` of `arrays` into `states` (the states of every group).
    fn update(&self, states: &mut [u8], arrays: &[ArrayRef], rows: Rows<'_>) -> DfResult<()> {
        let udf = self.name_str();
        if arrays.len() != self.args.len() || arrays.iter().any(|a| a.len() != rows.count) {
            return Err(bad_input(
                udf,
                format!(
                    "called with {} arguments of lengths {:?} for {} rows",
                    arrays.len(),
                    arrays.iter().map(|a| a.len()).collect::<Vec<_>>(),
                    rows.count
                ),
            )
            .into());
        }
        if rows.count == 0 {
            return Ok(());
        }
        let out = self.module.with_instance(udf, |inst| {
            let frame = write_frame(inst, udf, arrays, &self.args, rows.count)?;
            self.fold(inst, AggregateExport::Update, frame, states, &rows)
        })?;
        states.copy_from_slice(&out);
        Ok(())
    }

    /// Merges `partials` (one state per row) into `states`.
    fn merge(&self, states: &mut [u8], partials: &ArrayRef, rows: Rows<'_>) -> DfResult<()> {
        let udf = self.name_str();
        let partials = partials
            .as_fixed_size_binary_opt()
            .filter(|p| p.value_length() as usize == self.width() && p.len() == rows.count)
            .ok_or_else(|| {
                DataFusionError::Internal(format!(
                    "aggregate `{udf}`: partial states are not {} states of {} bytes",
                    rows.count,
                    self.width()
                ))
            })?;
        if partials.null_count() > 0 {
            return Err(DataFusionError::Internal(format!(
                "aggregate `{udf}`: a partial state is null"
            )));
        }
        if rows.count == 0 {
            return Ok(());
        }
        let bytes = contiguous(partials);
        let out = self.module.with_instance(udf, |inst| {
            let others = inst
                .put(OTHERS_SLOT, &bytes)
                .map_err(|p| bad_input(udf, p))?;
            self.fold(inst, AggregateExport::Merge, others, states, &rows)
        })?;
        states.copy_from_slice(&out);
        Ok(())
    }

    /// Copies the group indices and `states` in, calls `update` or `merge`
    /// with `input` (the frame or the partial states), and returns the
    /// states the guest left.
    fn fold(
        &self,
        inst: &mut UdfInstance,
        part: AggregateExport,
        input: usize,
        states: &[u8],
        rows: &Rows<'_>,
    ) -> Result<Vec<u8>, UdfError> {
        let udf = self.name_str();
        let groups = match rows.groups {
            None => 0,
            Some(groups) => {
                let bytes: Vec<u8> = groups.iter().flat_map(|g| g.to_le_bytes()).collect();
                inst.put(GROUPS_SLOT, &bytes)
                    .map_err(|p| bad_input(udf, p))?
            }
        };
        let states_ptr = inst
            .put(STATES_SLOT, states)
            .map_err(|p| bad_input(udf, p))?;
        let n_groups = batch_rows(udf, states.len() / self.width())?;
        let status = inst.call::<(i32, i32, i32, i32, i32)>(
            udf,
            self.export(part),
            (
                batch_rows(udf, rows.count)?,
                input as i32,
                groups as i32,
                states_ptr as i32,
                n_groups,
            ),
            &self.module.inner.limits,
        )?;
        self.check_status(part, status)?;
        read_back(inst, states_ptr, states.len()).map_err(|p| bad_output(udf, p))
    }

    /// The results of `states`, one row per state, checked like a scalar
    /// UDF's result column.
    fn finish(&self, states: &[u8]) -> DfResult<ArrayRef> {
        let udf = self.name_str();
        let n = states.len() / self.width();
        if n == 0 {
            return Ok(arrow::array::new_empty_array(&self.decl.function.returns));
        }
        let inner = &self.module.inner;
        Ok(self.module.with_instance(udf, |inst| {
            let ptr = inst
                .put(STATES_SLOT, states)
                .map_err(|p| bad_input(udf, p))?;
            let header = inst.call::<(i32, i32)>(
                udf,
                self.export(AggregateExport::Finish),
                (batch_rows(udf, n)?, ptr as i32),
                &inner.limits,
            )? as u32 as usize;
            if header == 0 {
                self.check_status(AggregateExport::Finish, abi::STATUS_MISMATCH)?;
            }
            read_column(inst.memory.data(&inst.store), udf, self.returns, header, n)
        })?)
    }

    fn states_array(&self, states: Vec<u8>) -> DfResult<ArrayRef> {
        let size = i32::try_from(self.width()).unwrap_or(i32::MAX);
        Ok(Arc::new(FixedSizeBinaryArray::try_new(
            size,
            Buffer::from_vec(states),
            None,
        )?))
    }
}

/// `len` bytes at `ptr` in guest memory (a buffer the host allocated).
fn read_back(inst: &UdfInstance, ptr: usize, len: usize) -> Result<Vec<u8>, String> {
    let memory = inst.memory.data(&inst.store);
    ptr.checked_add(len)
        .and_then(|end| memory.get(ptr..end))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format!("its state buffer at {ptr} left its memory"))
}

/// The values of a `FixedSizeBinary` array as one run of bytes, whatever
/// its offset.
fn contiguous(array: &FixedSizeBinaryArray) -> Vec<u8> {
    let width = array.value_length() as usize;
    let mut out = Vec::with_capacity(array.len() * width);
    for i in 0..array.len() {
        out.extend_from_slice(array.value(i));
    }
    out
}

/// Group indices as the ABI's `u32`s, with [`abi::SKIP_ROW`] where
/// `filter` drops the row.
fn abi_groups(udf: &str, indices: &[usize], filter: Option<&BooleanArray>) -> DfResult<Vec<u32>> {
    indices
        .iter()
        .enumerate()
        .map(|(row, &g)| {
            if filter.is_some_and(|f| !f.is_valid(row) || !f.value(row)) {
                return Ok(abi::SKIP_ROW);
            }
            u32::try_from(g)
                .ok()
                .filter(|g| *g != abi::SKIP_ROW)
                .ok_or_else(|| {
                    DataFusionError::ResourcesExhausted(format!(
                        "aggregate `{udf}` serves at most {} groups",
                        abi::SKIP_ROW
                    ))
                })
        })
        .collect()
}

impl AggregateUDFImpl for WasmAggregateUdf {
    fn name(&self) -> &str {
        self.name_str()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.decl.function.returns.clone())
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        coerce_to_declared(&self.decl.function, arg_types)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        let size = i32::try_from(self.width()).unwrap_or(i32::MAX);
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "state"),
            DataType::FixedSizeBinary(size),
            false,
        ))])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        Ok(Box::new(Single {
            state: self.empty_state.clone(),
            udf: self.clone(),
        }))
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        !args.is_distinct
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> DfResult<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Groups {
            states: Vec::new(),
            udf: self.clone(),
        }))
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }
}

/// The states of every group, `state_bytes` each, in group order.
#[derive(Debug)]
struct Groups {
    states: Vec<u8>,
    udf: WasmAggregateUdf,
}

impl Groups {
    fn grow(&mut self, total_num_groups: usize) {
        let width = self.udf.width();
        while self.states.len() < total_num_groups * width {
            self.states.extend_from_slice(&self.udf.empty_state);
        }
    }

    /// The states of the groups `emit_to` names, removed from the rest.
    fn take(&mut self, emit_to: EmitTo) -> Vec<u8> {
        match emit_to {
            EmitTo::All => std::mem::take(&mut self.states),
            EmitTo::First(n) => {
                let cut = (n * self.udf.width()).min(self.states.len());
                let rest = self.states.split_off(cut);
                std::mem::replace(&mut self.states, rest)
            }
        }
    }
}

impl GroupsAccumulator for Groups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> DfResult<()> {
        self.grow(total_num_groups);
        let groups = abi_groups(self.udf.name_str(), group_indices, opt_filter)?;
        let rows = Rows {
            count: groups.len(),
            groups: Some(&groups),
        };
        self.udf.update(&mut self.states, values, rows)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> DfResult<ArrayRef> {
        let states = self.take(emit_to);
        self.udf.finish(&states)
    }

    fn state(&mut self, emit_to: EmitTo) -> DfResult<Vec<ArrayRef>> {
        let states = self.take(emit_to);
        Ok(vec![self.udf.states_array(states)?])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> DfResult<()> {
        self.grow(total_num_groups);
        let groups = abi_groups(self.udf.name_str(), group_indices, None)?;
        let [partials] = values else {
            return Err(DataFusionError::Internal(format!(
                "aggregate `{}` merges one state column, not {}",
                self.udf.name_str(),
                values.len()
            )));
        };
        let rows = Rows {
            count: groups.len(),
            groups: Some(&groups),
        };
        self.udf.merge(&mut self.states, partials, rows)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> DfResult<Vec<ArrayRef>> {
        // Each row its own group: one call folds every row into its own state.
        let count = values.first().map_or(0, |a| a.len());
        let own: Vec<usize> = (0..count).collect();
        let groups = abi_groups(self.udf.name_str(), &own, opt_filter)?;
        let mut states = self.udf.empty_state.repeat(count);
        let rows = Rows {
            count,
            groups: Some(&groups),
        };
        self.udf.update(&mut states, values, rows)?;
        Ok(vec![self.udf.states_array(states)?])
    }

    fn size(&self) -> usize {
        self.states.capacity() + size_of::<Self>()
    }
}

/// The state of an aggregate without GROUP BY.
#[derive(Debug)]
struct Single {
    state: Vec<u8>,
    udf: WasmAggregateUdf,
}

impl Accumulator for Single {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        let count = values.first().map_or(0, |a| a.len());
        self.udf.update(
            &mut self.state,
            values,
            Rows {
                count,
                groups: None,
            },
        )
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        let column = self.udf.finish(&self.state)?;
        ScalarValue::try_from_array(&column, 0)
    }

    fn size(&self) -> usize {
        self.state.capacity() + size_of::<Self>()
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        let size = i32::try_from(self.udf.width()).unwrap_or(i32::MAX);
        Ok(vec![ScalarValue::FixedSizeBinary(
            size,
            Some(self.state.clone()),
        )])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        let [partials] = states else {
            return Err(DataFusionError::Internal(format!(
                "aggregate `{}` merges one state column, not {}",
                self.udf.name_str(),
                states.len()
            )));
        };
        let rows = Rows {
            count: partials.len(),
            groups: None,
        };
        self.udf.merge(&mut self.state, partials, rows)
    }
}
