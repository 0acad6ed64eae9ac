//! Total expressions: a query's visible outcome may not depend on the data.
//!
//! The attack: `WHERE 1 / (CASE WHEN <target matches> THEN 0 ELSE 1 END) = 1`
//! fails only when the target's row exists, so whether a query fails — or how
//! long it takes — is a bit about one person that no noise covers. Two
//! defences close the class, not the example:
//!
//! - **Totality** ([`TotalExpressions`], an [`AnalyzerRule`] every query
//!   session carries). After type coercion, every `CAST` becomes `TRY_CAST`,
//!   every `/` and `%` a [`total_divide`]/[`total_modulo`] call, and every
//!   built-in scalar function is wrapped in a [`TotalFunction`]. Each of
//!   these evaluates the whole batch at once; when the batch fails, it finds
//!   the failing rows by bisection and gives each of them NULL, a value fixed
//!   before any data was read (the DP clamp then maps it to its lower bound).
//!   An evaluation error can therefore never reach the query's outcome; it
//!   only changes the failing row's own value, which the noise covers like
//!   any other value of that row.
//! - **Bounded cost per row** ([`check_cost`], before any constant folding).
//!   Functions whose work grows with an argument's value (`repeat`, `lpad`,
//!   `rpad`) take only literal sizes up to [`MAX_BUILT_LENGTH`] and may not
//!   be nested; patterns (regular expressions, `LIKE`) and `replace` strings
//!   are literals; functions with quadratic or unbounded work are refused.
//!   So no row can take much longer than another, whichever branch of a
//!   `CASE` it takes. The residual difference (bisection of one failing batch,
//!   a built string of at most `MAX_BUILT_LENGTH` bytes) is microseconds
//!   against the milliseconds a query takes; see `ARCHITECTURE.md`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, new_empty_array, new_null_array};
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::expr::{ScalarFunction, TryCast};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::type_coercion::binary::BinaryTypeCoercer;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, LogicalPlan, Operator, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::prelude::SessionContext;

use crate::admission::Refusal;

/// Largest string a query may build per row with `repeat`, `lpad` or `rpad`.
pub const MAX_BUILT_LENGTH: i64 = 1_000;

/// Name of the analyzer rule; [`is_installed`] looks for it.
pub const RULE_NAME: &str = "unseen_total_expressions";

/// Functions whose argument at the given index sets how much they build.
const BUILDERS: &[(&str, usize)] = &[("repeat", 1), ("lpad", 1), ("rpad", 1)];

/// Functions whose pattern (and flags, replacement) arguments must be
/// literals: compiling a pattern per row costs what the data says.
const PATTERN_FUNCTIONS: &[&str] = &[
    "regexp_like",
    "regexp_match",
    "regexp_replace",
    "regexp_count",
    "regexp_instr",
    "replace",
    "translate",
    "split_part",
    "substr_index",
    "substring_index",
];

/// Functions refused outright: their work grows faster than the row's own
/// size (`levenshtein` is quadratic) or they read no column yet change per
/// call, so that repeats could not be cached.
const REFUSED_FUNCTIONS: &[&str] = &["levenshtein", "generate_series", "range", "random", "uuid"];

/// Adds [`TotalExpressions`] to `ctx` unless it is already there.
pub fn install(ctx: &SessionContext) {
    if !is_installed(&ctx.state()) {
        ctx.add_analyzer_rule(Arc::new(TotalExpressions));
    }
}

/// Whether `state` rewrites its plans into total expressions.
pub fn is_installed(state: &SessionState) -> bool {
    state.analyzer().rules.iter().any(|r| r.name() == RULE_NAME)
}

/// Refuses expressions whose per-row work depends on data values, before
/// the optimizer folds any constant (folding `repeat('x', 2000000000)` alone
/// takes seconds and gigabytes).
pub fn check_cost(plan: &LogicalPlan) -> Result<(), Refusal> {
    let mut refusal = None;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| match cost_refusal(e) {
                Some(r) => {
                    refusal = Some(r);
                    Ok(TreeNodeRecursion::Stop)
                }
                None => Ok(TreeNodeRecursion::Continue),
            })
        })
    })
    .map_err(|e| Refusal::new("sql-error", None, e.strip_backtrace()))?;
    match refusal {
        Some(r) => Err(r),
        None => Ok(()),
    }
}

fn cost_refusal(e: &Expr) -> Option<Refusal> {
    let refuse = |message: String| Some(Refusal::new("unbounded-cost", None, message));
    match e {
        Expr::ScalarFunction(f) => {
            let name = f.func.name().to_ascii_lowercase();
            if REFUSED_FUNCTIONS.contains(&name.as_str()) {
                return refuse(format!(
                    "`{name}` is not allowed in queries: its work or its result does not depend only on the row it reads; compute the value another way"
                ));
            }
            if let Some((_, size_arg)) = BUILDERS.iter().find(|(b, _)| *b == name) {
                let size = f.args.get(*size_arg).and_then(literal_i64);
                match size {
                    Some(n) if n <= MAX_BUILT_LENGTH => {}
                    _ => {
                        return refuse(format!(
                            "`{name}` may build at most {MAX_BUILT_LENGTH} characters per row, given as a literal; a size taken from data or larger than that would make some rows much slower than others"
                        ));
                    }
                }
                if f.args.iter().any(contains_builder) {
                    return refuse(format!(
                        "`{name}` may not be applied to a string that is itself built by repeat, lpad or rpad"
                    ));
                }
            }
            if PATTERN_FUNCTIONS.contains(&name.as_str())
                && f.args.iter().skip(1).any(|a| !is_literal(a))
            {
                return refuse(format!(
                    "`{name}` takes its pattern, replacement and flags as literals only; a pattern built from data costs what the data says"
                ));
            }
            None
        }
        Expr::Like(like) | Expr::SimilarTo(like) if !is_literal(&like.pattern) => refuse(
            "a LIKE or SIMILAR TO pattern must be a literal; a pattern built from data costs what the data says".to_string(),
        ),
        _ => None,
    }
}

fn contains_builder(e: &Expr) -> bool {
    let mut found = false;
    let _ = e.apply(|e| {
        if let Expr::ScalarFunction(f) = e {
            let name = f.func.name().to_ascii_lowercase();
            if BUILDERS.iter().any(|(b, _)| *b == name) {
                found = true;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

fn is_literal(e: &Expr) -> bool {
    match e {
        Expr::Literal(..) => true,
        Expr::Cast(c) => is_literal(&c.expr),
        Expr::TryCast(c) => is_literal(&c.expr),
        Expr::Alias(a) => is_literal(&a.expr),
        Expr::Negative(inner) => is_literal(inner),
        _ => false,
    }
}

fn literal_i64(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(v, _) => match v {
            ScalarValue::Int8(Some(x)) => Some(i64::from(*x)),
            ScalarValue::Int16(Some(x)) => Some(i64::from(*x)),
            ScalarValue::Int32(Some(x)) => Some(i64::from(*x)),
            ScalarValue::Int64(Some(x)) => Some(*x),
            ScalarValue::UInt8(Some(x)) => Some(i64::from(*x)),
            ScalarValue::UInt16(Some(x)) => Some(i64::from(*x)),
            ScalarValue::UInt32(Some(x)) => Some(i64::from(*x)),
            ScalarValue::UInt64(Some(x)) => i64::try_from(*x).ok(),
            _ => None,
        },
        Expr::Cast(c) => literal_i64(&c.expr),
        Expr::TryCast(c) => literal_i64(&c.expr),
        Expr::Alias(a) => literal_i64(&a.expr),
        Expr::Negative(inner) => literal_i64(inner).map(|x| x.saturating_neg()),
        _ => None,
    }
}

/// The analyzer rule that makes every expression total (see the module
/// documentation). It runs after type coercion, so the casts coercion
/// inserts are made total too.
#[derive(Debug, Default)]
pub struct TotalExpressions;

impl AnalyzerRule for TotalExpressions {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            // Names stay as the analyst wrote them: parents refer to their
            // inputs' columns by these names.
            let names = NamePreserver::new(&node);
            node.map_expressions(|e| {
                let name = names.save(&e);
                Ok(e.transform_up(total_expr)?.update_data(|e| name.restore(e)))
            })?
            .map_data(|node| node.recompute_schema())
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        RULE_NAME
    }
}

fn total_expr(e: Expr) -> DfResult<Transformed<Expr>> {
    Ok(match e {
        Expr::Cast(c) => Transformed::yes(try_cast(c)),
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(op, Operator::Divide | Operator::Modulo) =>
        {
            let func = Arc::new(ScalarUDF::from(TotalArithmetic::new(op)));
            Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
                func,
                vec![*left, *right],
            )))
        }
        Expr::ScalarFunction(f) if needs_wrapping(&f.func) => {
            let wrapped = Arc::new(ScalarUDF::from(TotalFunction::new(f.func)));
            Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
                wrapped, f.args,
            )))
        }
        e => Transformed::no(e),
    })
}

/// A cast that yields NULL where it fails (and is therefore nullable).
fn try_cast(c: datafusion::logical_expr::Cast) -> Expr {
    let field = Arc::new(c.field.as_ref().clone().with_nullable(true));
    Expr::TryCast(TryCast::new_from_field(c.expr, field))
}

/// Built-in functions are wrapped; UDF modules handle their own failures
/// row by row in the sandbox, and functions already total need nothing.
fn needs_wrapping(func: &ScalarUDF) -> bool {
    if func.inner().downcast_ref::<TotalFunction>().is_some()
        || func.inner().downcast_ref::<TotalArithmetic>().is_some()
    {
        return false;
    }
    builtin_names().contains(&func.name().to_ascii_lowercase())
}

fn builtin_names() -> &'static std::collections::BTreeSet<String> {
    static NAMES: std::sync::OnceLock<std::collections::BTreeSet<String>> =
        std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        datafusion::functions::all_default_functions()
            .iter()
            .flat_map(|f| {
                std::iter::once(f.name().to_ascii_lowercase())
                    .chain(f.aliases().iter().map(|a| a.to_ascii_lowercase()))
            })
            .collect()
    })
}

/// Evaluates `eval` on the whole batch; if that fails, on halves of it,
/// down to single rows, each of which then gets NULL. One failing row costs
/// about two evaluations of the batch, never an error.
fn evaluate_total(
    args: &ScalarFunctionArgs,
    eval: &dyn Fn(ScalarFunctionArgs) -> DfResult<ColumnarValue>,
) -> DfResult<ColumnarValue> {
    if let Ok(v) = eval(args.clone()) {
        return Ok(v);
    }
    let ty = args.return_field.data_type().clone();
    let all_scalar = args
        .args
        .iter()
        .all(|a| matches!(a, ColumnarValue::Scalar(_)));
    if all_scalar {
        return Ok(ColumnarValue::Scalar(ScalarValue::try_from(&ty)?));
    }
    let n = args.number_rows;
    Ok(ColumnarValue::Array(rows_total(args, 0, n, &ty, eval)?))
}

fn rows_total(
    args: &ScalarFunctionArgs,
    offset: usize,
    len: usize,
    ty: &DataType,
    eval: &dyn Fn(ScalarFunctionArgs) -> DfResult<ColumnarValue>,
) -> DfResult<ArrayRef> {
    if len == 0 {
        return Ok(new_empty_array(ty));
    }
    let sliced = ScalarFunctionArgs {
        args: args
            .args
            .iter()
            .map(|a| match a {
                ColumnarValue::Array(array) => ColumnarValue::Array(array.slice(offset, len)),
                scalar => scalar.clone(),
            })
            .collect(),
        arg_fields: args.arg_fields.clone(),
        number_rows: len,
        return_field: args.return_field.clone(),
        config_options: args.config_options.clone(),
    };
    if let Ok(v) = eval(sliced) {
        let array = v.into_array(len)?;
        if array.len() == len && array.data_type() == ty {
            return Ok(array);
        }
    }
    if len == 1 {
        return Ok(new_null_array(ty, 1));
    }
    let half = len / 2;
    let left = rows_total(args, offset, half, ty, eval)?;
    let right = rows_total(args, offset + half, len - half, ty, eval)?;
    Ok(arrow::compute::concat(&[left.as_ref(), right.as_ref()])?)
}

/// A built-in scalar function that yields NULL on the rows where it fails.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TotalFunction {
    inner: Arc<ScalarUDF>,
}

impl TotalFunction {
    pub fn new(inner: Arc<ScalarUDF>) -> Self {
        TotalFunction { inner }
    }

    /// The built-in function this one makes total.
    pub fn inner(&self) -> &Arc<ScalarUDF> {
        &self.inner
    }

    /// The total form of the built-in scalar function `name` (a name or an
    /// alias of a `datafusion-functions` function), as another process
    /// rebuilds it from a plan.
    pub fn of_builtin(name: &str) -> Option<Self> {
        datafusion::functions::all_default_functions()
            .into_iter()
            .find(|f| f.name() == name || f.aliases().iter().any(|a| a == name))
            .map(TotalFunction::new)
    }
}

/// Makes total what an inner function's simplification produced.
fn rewrap(e: Expr) -> DfResult<Expr> {
    e.transform_up(total_expr).map(|t| t.data)
}

impl ScalarUDFImpl for TotalFunction {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        self.inner.inner().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.inner().return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        // Failing rows become NULL, so the result is always nullable.
        let field = self.inner.return_field_from_args(args)?;
        Ok(Arc::new(field.as_ref().clone().with_nullable(true)))
    }

    fn is_nullable(&self, _args: &[Expr], _schema: &dyn datafusion::common::ExprSchema) -> bool {
        true
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        evaluate_total(&args, &|a| self.inner.invoke_with_args(a))
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        self.inner
            .inner()
            .with_updated_config(config)
            .map(|updated| ScalarUDF::from(TotalFunction::new(Arc::new(updated))))
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> DfResult<ExprSimplifyResult> {
        Ok(match self.inner.simplify(args, info)? {
            ExprSimplifyResult::Simplified(e) => ExprSimplifyResult::Simplified(rewrap(e)?),
            ExprSimplifyResult::Original(args) => ExprSimplifyResult::Original(args),
        })
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }
}

/// `/` or `%` that yields NULL where the operation fails (a zero divisor,
/// `MIN / -1`), instead of failing the query.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TotalArithmetic {
    op: Operator,
    name: &'static str,
    signature: Signature,
}

impl TotalArithmetic {
    fn new(op: Operator) -> Self {
        let name = if op == Operator::Divide {
            "total_divide"
        } else {
            "total_modulo"
        };
        TotalArithmetic {
            op,
            name,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl TotalArithmetic {
    /// `total_divide` or `total_modulo` by name, as another process rebuilds
    /// it from a plan.
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "total_divide" => Some(TotalArithmetic::new(Operator::Divide)),
            "total_modulo" => Some(TotalArithmetic::new(Operator::Modulo)),
            _ => None,
        }
    }
}

impl ScalarUDFImpl for TotalArithmetic {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        let [l, r] = arg_types else {
            return Err(DataFusionError::Plan(format!(
                "{} takes two arguments",
                self.name
            )));
        };
        BinaryTypeCoercer::new(l, &self.op, r).get_result_type()
    }

    fn is_nullable(&self, _args: &[Expr], _schema: &dyn datafusion::common::ExprSchema) -> bool {
        true
    }

    /// Named like the `a / b` it replaces, so that columns derived from it
    /// keep the names the analyst's query gave them.
    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        let [l, r] = args else {
            return Err(DataFusionError::Plan(format!(
                "{} takes two arguments",
                self.name
            )));
        };
        Ok(format!(
            "{} {} {}",
            l.schema_name(),
            self.op,
            r.schema_name()
        ))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let kernel = if self.op == Operator::Divide {
            arrow::compute::kernels::numeric::div
        } else {
            arrow::compute::kernels::numeric::rem
        };
        let ty = args.return_field.data_type().clone();
        evaluate_total(&args, &|a| {
            let [l, r] = a.args.as_slice() else {
                return Err(DataFusionError::Plan("two arguments".to_string()));
            };
            let out = datafusion::physical_expr_common::datum::apply(l, r, kernel)?;
            match out {
                ColumnarValue::Array(array) if array.data_type() != &ty => {
                    Ok(ColumnarValue::Array(arrow::compute::cast(&array, &ty)?))
                }
                ColumnarValue::Scalar(s) if s.data_type() != ty => {
                    Ok(ColumnarValue::Scalar(s.cast_to(&ty)?))
                }
                out => Ok(out),
            }
        })
    }
}
