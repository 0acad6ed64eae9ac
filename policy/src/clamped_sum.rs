//! Clamped sums as one DataFusion aggregate, for the sum components of a
//! DP release (see [`crate::dp`]).
//!
//! A DP sum needs every value clamped to the column's manifest bounds, with
//! a null counting as the lower bound. Written as SQL that is
//! `SUM(LEAST(GREATEST(x, lo), hi))`: two arrays materialised per batch
//! before the sum reads them, and an `i64` SUM that wraps on overflow. The
//! aggregate here clamps inside its accumulation loop instead, so each value
//! is read once and never written back, and sums `Int64` columns in `i128`.
//!
//! # Exactness
//!
//! An `i128` holds any sum of fewer than 2^64 values of magnitude at most
//! 2^63, so integer sums are exact for every table DataFusion can scan (its
//! row counts are `usize`) in one pass, with no overflow check per row and no
//! second pass. Integer sums come out as `Decimal128(38, 0)` (the `i128`
//! unchanged), which the release saturates into `i64` before noise. `Float64`
//! sums are accumulated in `f64`, as DataFusion's SUM does; a sum whose
//! magnitude passes `f64::MAX` (possible only for bounds beyond about 1e298)
//! is saturated to `±f64::MAX` rather than released as infinity. Saturation
//! is 1-Lipschitz, so it never raises a sum's sensitivity.
//!
//! # Clamping
//!
//! The clamp is exactly the SQL one: a null becomes the lower bound, NaN
//! becomes the upper bound (DataFusion's GREATEST and LEAST order NaN above
//! every number), infinities become the nearer bound. An `Int64` column is
//! clamped to the bounds cast to `i64`. A sum built with `clamp: false`
//! (registration found every value present and within bounds) adds values as
//! they are, but still counts a null as the lower bound.
//!
//! A group that receives no rows (only possible with an aggregate `FILTER`)
//! sums to zero rather than null: an empty cell's clamped sum is zero.

use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, PrimitiveArray};
use arrow::buffer::ScalarBuffer;
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Decimal128Type, Field, FieldRef, Float64Type, Int64Type,
};
use datafusion::common::{Result, ScalarValue, exec_err, internal_err, not_impl_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::{AggregateOrderSensitivity, format_state_name};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, Expr, GroupsAccumulator, ReversedUDAF,
    Signature, Volatility,
};

use crate::manifest::ColumnType;

/// What a [`ClampedSum`] adds up per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Output {
    /// The clamped value. `Int64` input: `Decimal128(38, 0)`; `Float64`
    /// input: `Float64`.
    Sum,
    /// The squared deviation of the clamped value from the bounds' midpoint,
    /// in `f64` (`Float64` output for either input).
    SquaredDeviations,
}

/// A sum of a numeric column clamped to `bounds`, as a DataFusion aggregate
/// function of one argument. The bounds live in the function itself rather
/// than in literal arguments, because DataFusion evaluates every argument of
/// an aggregate into an array per batch.
#[derive(Debug, Clone)]
pub struct ClampedSum {
    output: Output,
    ty: ColumnType,
    bounds: (f64, f64),
    clamp: bool,
    signature: Signature,
}

/// What defines a [`ClampedSum`], so that another process (a cluster
/// executor) rebuilds the same function: the bounds travel in it, not in the
/// query's arguments.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClampedSumSpec {
    pub squared_deviations: bool,
    /// `Float64` input; otherwise `Int64`.
    pub float: bool,
    pub lower: f64,
    pub upper: f64,
    pub clamp: bool,
}

impl ClampedSum {
    /// This function's definition.
    pub fn spec(&self) -> ClampedSumSpec {
        ClampedSumSpec {
            squared_deviations: self.output == Output::SquaredDeviations,
            float: self.ty == ColumnType::Float64,
            lower: self.bounds.0,
            upper: self.bounds.1,
            clamp: self.clamp,
        }
    }

    /// The function `spec` defines, checked as [`ClampedSum::new`] checks.
    pub fn from_spec(spec: ClampedSumSpec) -> std::result::Result<Self, crate::PolicyError> {
        let output = if spec.squared_deviations {
            Output::SquaredDeviations
        } else {
            Output::Sum
        };
        let ty = if spec.float {
            ColumnType::Float64
        } else {
            ColumnType::Int64
        };
        ClampedSum::new(output, ty, (spec.lower, spec.upper), spec.clamp)
    }

    /// A clamped sum over a column of manifest type `ty` (`Int64` or
    /// `Float64`). `clamp: false` skips the clamp for present values (only
    /// for columns whose every value is known to be within bounds);
    /// squared deviations are always clamped.
    pub fn new(
        output: Output,
        ty: ColumnType,
        bounds: (f64, f64),
        clamp: bool,
    ) -> std::result::Result<Self, crate::PolicyError> {
        let input = match ty {
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            other => {
                return Err(crate::PolicyError::Execution(format!(
                    "a clamped sum needs an int64 or float64 column, not {}",
                    other.as_str()
                )));
            }
        };
        // NaN bounds would make every comparison false: the clamp would
        // pass values through unbounded.
        if bounds.0.is_nan() || bounds.1.is_nan() || bounds.0 > bounds.1 {
            return Err(crate::PolicyError::Execution(format!(
                "clamp bounds must be ordered numbers, got [{}, {}]",
                bounds.0, bounds.1
            )));
        }
        Ok(Self {
            output,
            ty,
            bounds,
            clamp: clamp || output == Output::SquaredDeviations,
            // `uniform` lets DataFusion coerce a narrower column (Int32 to
            // Int64), so the accumulator sees exactly the manifest's type.
            signature: Signature::uniform(1, vec![input], Volatility::Immutable),
        })
    }

    /// This aggregate applied to `input`.
    pub fn call(self, input: Expr) -> Expr {
        AggregateUDF::from(self).call(vec![input])
    }

    fn integer(&self) -> bool {
        self.ty == ColumnType::Int64
    }

    fn int_bounds(&self) -> (i64, i64) {
        // The same saturating cast the SQL clamp used for its literals.
        (self.bounds.0 as i64, self.bounds.1 as i64)
    }

    fn midpoint(&self) -> f64 {
        (self.bounds.0 + self.bounds.1) / 2.0
    }

    /// The fold of this output and column type, as an accumulator of kind
    /// `M`. Squared deviations always clamp, as they did before this
    /// aggregate: only sums may skip the clamp on registration facts.
    fn make<M: MakeAccumulator>(&self) -> M::Out {
        let (lo, hi) = self.bounds;
        let (ilo, ihi) = self.int_bounds();
        let mid = self.midpoint();
        match (self.output, self.integer()) {
            (Output::Sum, true) => M::make(IntSum { lo: ilo, hi: ihi }, self.clamp),
            (Output::Sum, false) => M::make(FloatSum { lo, hi }, self.clamp),
            (Output::SquaredDeviations, true) => M::make(
                IntSquares {
                    lo: ilo,
                    hi: ihi,
                    mid,
                },
                true,
            ),
            (Output::SquaredDeviations, false) => M::make(FloatSquares { lo, hi, mid }, true),
        }
    }

    fn result_type(&self) -> DataType {
        match (self.output, self.integer()) {
            (Output::Sum, true) => DataType::Decimal128(38, 0),
            _ => DataType::Float64,
        }
    }

    fn check_input(&self, args: &AccumulatorArgs) -> Result<()> {
        if args.is_distinct {
            return not_impl_err!("{} has no DISTINCT form", self.name());
        }
        let expected = if self.integer() {
            DataType::Int64
        } else {
            DataType::Float64
        };
        match args.expr_fields {
            [field] if *field.data_type() == expected => Ok(()),
            fields => exec_err!(
                "{} takes one {expected} argument, got {:?}",
                self.name(),
                fields.iter().map(|f| f.data_type()).collect::<Vec<_>>()
            ),
        }
    }
}

/// Equality and hashing by the bounds' bits, so that two sums with different
/// bounds are different expressions to the optimizer.
impl PartialEq for ClampedSum {
    fn eq(&self, other: &Self) -> bool {
        self.output == other.output
            && self.ty == other.ty
            && self.bounds.0.to_bits() == other.bounds.0.to_bits()
            && self.bounds.1.to_bits() == other.bounds.1.to_bits()
            && self.clamp == other.clamp
    }
}

impl Eq for ClampedSum {}

impl Hash for ClampedSum {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.output.hash(state);
        self.ty.as_str().hash(state);
        self.bounds.0.to_bits().hash(state);
        self.bounds.1.to_bits().hash(state);
        self.clamp.hash(state);
    }
}

impl AggregateUDFImpl for ClampedSum {
    fn name(&self) -> &str {
        match self.output {
            Output::Sum => "unseen_clamped_sum",
            Output::SquaredDeviations => "unseen_clamped_squared_deviations",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.result_type())
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "sum"),
            self.result_type(),
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.check_input(&args)?;
        Ok(self.make::<MakeSingle>())
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        !args.is_distinct
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        self.check_input(&args)?;
        Ok(self.make::<MakeGroups>())
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }
}

/// Makes one kind of accumulator (plain or grouped) from any fold, so the
/// choice of fold is made in one place ([`ClampedSum::make`]).
trait MakeAccumulator {
    type Out;
    fn make<F: Fold>(fold: F, clamp: bool) -> Self::Out;
}

struct MakeSingle;

impl MakeAccumulator for MakeSingle {
    type Out = Box<dyn Accumulator>;
    fn make<F: Fold>(fold: F, clamp: bool) -> Self::Out {
        Box::new(Single::new(fold, clamp))
    }
}

struct MakeGroups;

impl MakeAccumulator for MakeGroups {
    type Out = Box<dyn GroupsAccumulator>;
    fn make<F: Fold>(fold: F, clamp: bool) -> Self::Out {
        Box::new(Groups::new(fold, clamp))
    }
}

/// One kind of clamped term and how terms add up. `In` is the column's
/// Arrow type, `State` the type of partial and final sums.
trait Fold: Copy + Debug + Send + Sync + 'static {
    type In: ArrowPrimitiveType + Debug;
    type State: SumState;

    /// What a present value adds; clamped when `CLAMP`.
    fn term<const CLAMP: bool>(
        &self,
        value: <Self::In as ArrowPrimitiveType>::Native,
    ) -> <Self::State as ArrowPrimitiveType>::Native;

    /// What a null adds: the term of the lower bound.
    fn null_term(&self) -> <Self::State as ArrowPrimitiveType>::Native;
}

/// How sums of one state type add up and leave: `i128` in `Decimal128(38,
/// 0)` for integer sums, `f64` for float sums and squared deviations.
trait SumState: ArrowPrimitiveType + Debug {
    fn add(a: Self::Native, b: Self::Native) -> Self::Native;

    /// The released form of a sum (saturated where it could overflow).
    fn finish(sum: Self::Native) -> Self::Native;

    /// An array of sums, with the state's full data type.
    fn array(sums: Vec<Self::Native>) -> Result<ArrayRef>;

    fn scalar(sum: Self::Native) -> ScalarValue;
}

type Native<T> = <T as ArrowPrimitiveType>::Native;

/// `x` clamped to `[lo, hi]` as LEAST(GREATEST(x, lo), hi) orders floats:
/// NaN compares false both times and ends at `hi`.
#[inline(always)]
fn clamp_f64(x: f64, lo: f64, hi: f64) -> f64 {
    let x = if x < lo { lo } else { x };
    if x <= hi { x } else { hi }
}

/// A float sum that passed `f64::MAX` saturates; NaN can only come from
/// partial sums that overflowed in opposite directions, whose true total
/// is unknown, so it becomes zero rather than leave as NaN.
fn saturate_f64(sum: f64) -> f64 {
    if sum.is_nan() {
        0.0
    } else {
        sum.clamp(f64::MIN, f64::MAX)
    }
}

fn f64_array(sums: Vec<f64>) -> Result<ArrayRef> {
    Ok(Arc::new(PrimitiveArray::<Float64Type>::new(
        ScalarBuffer::from(sums),
        None,
    )))
}

impl SumState for Decimal128Type {
    #[inline(always)]
    fn add(a: i128, b: i128) -> i128 {
        // Cannot wrap: fewer than 2^64 terms of magnitude at most 2^63 (see
        // the module documentation); wrapping only avoids an overflow check
        // per row.
        a.wrapping_add(b)
    }

    fn finish(sum: i128) -> i128 {
        sum
    }

    fn array(sums: Vec<i128>) -> Result<ArrayRef> {
        Ok(Arc::new(
            PrimitiveArray::<Decimal128Type>::new(ScalarBuffer::from(sums), None)
                .with_precision_and_scale(38, 0)?,
        ))
    }

    fn scalar(sum: i128) -> ScalarValue {
        ScalarValue::Decimal128(Some(sum), 38, 0)
    }
}

impl SumState for Float64Type {
    #[inline(always)]
    fn add(a: f64, b: f64) -> f64 {
        a + b
    }

    fn finish(sum: f64) -> f64 {
        saturate_f64(sum)
    }

    fn array(sums: Vec<f64>) -> Result<ArrayRef> {
        f64_array(sums)
    }

    fn scalar(sum: f64) -> ScalarValue {
        ScalarValue::Float64(Some(sum))
    }
}

#[derive(Debug, Clone, Copy)]
struct IntSum {
    lo: i64,
    hi: i64,
}

impl Fold for IntSum {
    type In = Int64Type;
    type State = Decimal128Type;

    #[inline(always)]
    fn term<const CLAMP: bool>(&self, value: i64) -> i128 {
        let v = if CLAMP {
            value.max(self.lo).min(self.hi)
        } else {
            value
        };
        i128::from(v)
    }

    fn null_term(&self) -> i128 {
        i128::from(self.lo)
    }
}

#[derive(Debug, Clone, Copy)]
struct FloatSum {
    lo: f64,
    hi: f64,
}

impl Fold for FloatSum {
    type In = Float64Type;
    type State = Float64Type;

    #[inline(always)]
    fn term<const CLAMP: bool>(&self, value: f64) -> f64 {
        if CLAMP {
            clamp_f64(value, self.lo, self.hi)
        } else {
            value
        }
    }

    fn null_term(&self) -> f64 {
        self.lo
    }
}

#[derive(Debug, Clone, Copy)]
struct IntSquares {
    lo: i64,
    hi: i64,
    mid: f64,
}

impl Fold for IntSquares {
    type In = Int64Type;
    type State = Float64Type;

    #[inline(always)]
    fn term<const CLAMP: bool>(&self, value: i64) -> f64 {
        let v = if CLAMP {
            value.max(self.lo).min(self.hi)
        } else {
            value
        };
        let d = v as f64 - self.mid;
        d * d
    }

    fn null_term(&self) -> f64 {
        let d = self.lo as f64 - self.mid;
        d * d
    }
}

#[derive(Debug, Clone, Copy)]
struct FloatSquares {
    lo: f64,
    hi: f64,
    mid: f64,
}

impl Fold for FloatSquares {
    type In = Float64Type;
    type State = Float64Type;

    #[inline(always)]
    fn term<const CLAMP: bool>(&self, value: f64) -> f64 {
        let v = if CLAMP {
            clamp_f64(value, self.lo, self.hi)
        } else {
            value
        };
        let d = v - self.mid;
        d * d
    }

    fn null_term(&self) -> f64 {
        let d = self.lo - self.mid;
        d * d
    }
}

/// Whether row `i` passes the aggregate's FILTER (a null filter value
/// rejects, as in SQL).
#[inline]
fn passes(filter: Option<&BooleanArray>, i: usize) -> bool {
    filter.is_none_or(|f| f.is_valid(i) && f.value(i))
}

fn single_array<'a, T: ArrowPrimitiveType>(
    values: &'a [ArrayRef],
    what: &str,
) -> Result<&'a PrimitiveArray<T>> {
    match values {
        [array] => match array.as_primitive_opt::<T>() {
            Some(array) => Ok(array),
            None => internal_err!(
                "clamped sum {what}: expected {}, got {}",
                T::DATA_TYPE,
                array.data_type()
            ),
        },
        _ => internal_err!(
            "clamped sum {what}: expected one array, got {}",
            values.len()
        ),
    }
}

/// The clamped sum of every group, for GROUP BY.
#[derive(Debug)]
struct Groups<F: Fold> {
    fold: F,
    clamp: bool,
    sums: Vec<Native<F::State>>,
}

impl<F: Fold> Groups<F> {
    fn new(fold: F, clamp: bool) -> Self {
        Self {
            fold,
            clamp,
            sums: Vec::new(),
        }
    }

    /// The hot loop: no nulls, no filter. `CLAMP` is a constant so that the
    /// loop carries no branch on it; indexing is checked (the crate forbids
    /// unsafe code) and an index out of range is DataFusion breaking its
    /// contract, reported rather than panicking.
    fn add_dense<const CLAMP: bool>(
        &mut self,
        groups: &[usize],
        values: &[Native<F::In>],
    ) -> Result<()> {
        for (&g, &v) in groups.iter().zip(values) {
            let Some(sum) = self.sums.get_mut(g) else {
                return out_of_range(g, self.sums.len());
            };
            *sum = F::State::add(*sum, self.fold.term::<CLAMP>(v));
        }
        Ok(())
    }

    /// Nulls (as the lower bound) or a FILTER: a check per row.
    fn add_sparse(
        &mut self,
        groups: &[usize],
        values: &PrimitiveArray<F::In>,
        filter: Option<&BooleanArray>,
    ) -> Result<()> {
        let data = values.values();
        for (i, (&g, &v)) in groups.iter().zip(data.iter()).enumerate() {
            if !passes(filter, i) {
                continue;
            }
            let term = if values.is_null(i) {
                self.fold.null_term()
            } else if self.clamp {
                self.fold.term::<true>(v)
            } else {
                self.fold.term::<false>(v)
            };
            let Some(sum) = self.sums.get_mut(g) else {
                return out_of_range(g, self.sums.len());
            };
            *sum = F::State::add(*sum, term);
        }
        Ok(())
    }
}

fn out_of_range(group: usize, groups: usize) -> Result<()> {
    internal_err!("clamped sum: group index {group} outside {groups} groups")
}

fn check_len(groups: usize, values: usize) -> Result<()> {
    if groups == values {
        Ok(())
    } else {
        internal_err!("clamped sum: {groups} group indices for {values} values")
    }
}

impl<F: Fold> GroupsAccumulator for Groups<F> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let values = single_array::<F::In>(values, "input")?;
        check_len(group_indices.len(), values.len())?;
        self.sums
            .resize(total_num_groups, Native::<F::State>::default());
        if values.null_count() > 0 || opt_filter.is_some() {
            self.add_sparse(group_indices, values, opt_filter)
        } else if self.clamp {
            self.add_dense::<true>(group_indices, values.values())
        } else {
            self.add_dense::<false>(group_indices, values.values())
        }
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let sums = emit_to.take_needed(&mut self.sums);
        F::State::array(sums.into_iter().map(F::State::finish).collect())
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        // Partial sums unsaturated: saturating before the merge would lose
        // exactness when partial sums of opposite signs cancel.
        Ok(vec![F::State::array(emit_to.take_needed(&mut self.sums))?])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        let partial = single_array::<F::State>(values, "state")?;
        check_len(group_indices.len(), partial.len())?;
        self.sums
            .resize(total_num_groups, Native::<F::State>::default());
        for (i, (&g, &v)) in group_indices.iter().zip(partial.values()).enumerate() {
            // States are never null here; a null would be an empty partial.
            if partial.is_null(i) {
                continue;
            }
            let Some(sum) = self.sums.get_mut(g) else {
                return out_of_range(g, self.sums.len());
            };
            *sum = F::State::add(*sum, v);
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let values = single_array::<F::In>(values, "input")?;
        let terms = values
            .values()
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if !passes(opt_filter, i) {
                    Native::<F::State>::default()
                } else if values.is_null(i) {
                    self.fold.null_term()
                } else if self.clamp {
                    self.fold.term::<true>(v)
                } else {
                    self.fold.term::<false>(v)
                }
            })
            .collect();
        Ok(vec![F::State::array(terms)?])
    }

    fn size(&self) -> usize {
        self.sums.capacity() * size_of::<Native<F::State>>()
    }
}

/// The clamped sum of one group, for aggregates without GROUP BY.
#[derive(Debug)]
struct Single<F: Fold> {
    fold: F,
    clamp: bool,
    sum: Native<F::State>,
}

impl<F: Fold> Single<F> {
    fn new(fold: F, clamp: bool) -> Self {
        Self {
            fold,
            clamp,
            sum: Native::<F::State>::default(),
        }
    }
}

impl<F: Fold> Accumulator for Single<F> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = single_array::<F::In>(values, "input")?;
        let fold = self.fold;
        let sum = if values.null_count() > 0 {
            values.iter().fold(self.sum, |acc, v| {
                let term = match v {
                    None => fold.null_term(),
                    Some(v) if self.clamp => fold.term::<true>(v),
                    Some(v) => fold.term::<false>(v),
                };
                F::State::add(acc, term)
            })
        } else if self.clamp {
            values
                .values()
                .iter()
                .fold(self.sum, |acc, &v| F::State::add(acc, fold.term::<true>(v)))
        } else {
            values.values().iter().fold(self.sum, |acc, &v| {
                F::State::add(acc, fold.term::<false>(v))
            })
        };
        self.sum = sum;
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(F::State::scalar(F::State::finish(self.sum)))
    }

    fn size(&self) -> usize {
        size_of::<Self>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![F::State::scalar(self.sum)])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let partial = single_array::<F::State>(states, "state")?;
        self.sum = partial.iter().flatten().fold(self.sum, F::State::add);
        Ok(())
    }
}
