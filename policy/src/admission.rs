//! Admission: decides from DataFusion's logical plan, never from the SQL
//! text, whether a query may run and in what form its result may leave.
//!
//! Two passes. The optimised plan tells which columns are actually read from
//! storage (after aliases, CTEs and subqueries are resolved into scans), which
//! is where prohibited columns are caught. The analysed plan gives the shape:
//! a query over open columns only is released as is; anything touching a
//! conditional column must be a DP aggregate over public group domains.
//!
//! **Joins.** A DP aggregate may read several datasets joined on their
//! shared privacy unit (`health_visits JOIN residents ON h.person_id =
//! r.person_id`). The unit is prohibited, so it may appear nowhere else: not
//! in a select list, a filter, a group key, an aggregate or a computation,
//! only passed through unchanged and compared in the join condition. Every
//! scan is then bounded to its dataset's `max_contributions` rows per unit,
//! so one unit contributes at most the product of those bounds to the joined
//! rows, and the noise is calibrated to that product.

use std::collections::BTreeMap;

use datafusion::common::Column;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan, SortExpr};

use crate::manifest::{Class, ColumnType, Manifest};

/// Why a query was refused: the column (if one is to blame), the rule and
/// what is allowed instead.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// `table.column` the refusal is about, if any.
    pub column: Option<String>,
    /// Short stable name of the rule, for ledgers and tests.
    pub rule: &'static str,
    /// Full explanation for the analyst.
    pub message: String,
}

impl Refusal {
    pub(crate) fn new(rule: &'static str, column: Option<String>, message: String) -> Self {
        Refusal {
            column,
            rule,
            message,
        }
    }
}

/// A DP aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateKind {
    Count,
    Sum,
    Mean,
    /// VAR/VAR_SAMP (`sample`) or VAR_POP; a standard deviation when
    /// `root` (STDDEV, STDDEV_SAMP, STDDEV_POP).
    Variance {
        sample: bool,
        root: bool,
    },
    /// MEDIAN, APPROX_MEDIAN or a percentile: the value with a fraction
    /// `millionths / 1_000_000` of the values below it.
    Quantile {
        millionths: u32,
    },
}

/// One GROUP BY key with its public domain.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupKey {
    /// The key's column in the input plan.
    pub input: Column,
    /// Source column name in the dataset.
    pub source: String,
    /// Public categories; every one appears in the result. `None`: the key
    /// has no public domain, and its groups are chosen by DP partition
    /// selection (which needs a delta).
    pub domain: Option<Vec<String>>,
}

/// One aggregate to release with noise.
#[derive(Debug, Clone, PartialEq)]
pub struct DpAggregate {
    pub kind: AggregateKind,
    /// The aggregated column in the input plan (`None` for COUNT(*)).
    pub input: Option<Column>,
    /// Source dataset and column, the column's type and clamping bounds.
    /// For a value the query computes and bounds itself
    /// (`LEAST(GREATEST(<expression>, lo), hi)`), the dataset is empty, the
    /// column is the expression as written and the bounds are the query's.
    pub source: Option<(String, String, ColumnType, (f64, f64))>,
}

/// Where an output column comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputSource {
    Key(usize),
    Aggregate(usize),
}

/// One scan below a DP aggregate and how many rows each privacy unit may
/// contribute through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    pub table: String,
    /// The dataset's privacy unit column.
    pub unit: String,
    /// The manifest's `max_contributions`.
    pub max_contributions: u32,
}

/// An admitted DP aggregate query.
#[derive(Debug, Clone)]
pub struct AggregateQuery {
    /// Every scan below the aggregate: one, or several joined on their
    /// shared privacy unit (a self-join scans one dataset twice).
    pub scans: Vec<Scan>,
    /// The plan below the aggregate (scan and filters).
    pub input: LogicalPlan,
    pub keys: Vec<GroupKey>,
    pub aggregates: Vec<DpAggregate>,
    /// Output columns, named as the query named them.
    pub outputs: Vec<(String, OutputSource)>,
    /// ORDER BY over outputs: (output index, ascending).
    pub order: Vec<(usize, bool)>,
}

/// The verdict on an admitted query.
#[derive(Debug, Clone)]
pub enum Admitted {
    /// Reads only open columns: released without noise.
    Open(LogicalPlan),
    /// A DP aggregate.
    Aggregate(AggregateQuery),
}

/// Admits a query given its analysed and optimised plans and the manifests
/// of the tables the grant exposes (keyed by table name).
pub fn admit(
    plan: &LogicalPlan,
    optimized: &LogicalPlan,
    manifests: &BTreeMap<String, Manifest>,
) -> Result<Admitted, Refusal> {
    check_scans(optimized)?;
    let scanned = scanned_columns(optimized, manifests)?;
    if scanned.iter().all(|(_, _, class)| *class == Class::Open) {
        check_open_joins(optimized, manifests)?;
        return Ok(Admitted::Open(plan.clone()));
    }
    // A privacy unit read for a join: the query must be a DP aggregate, and
    // the key may appear only in join conditions (checked below).
    let internal = scanned
        .iter()
        .find(|(_, _, class)| *class == Class::Prohibited)
        .map(|(table, column, _)| prohibited(table, column, &manifests[table]));
    admit_aggregate(plan, manifests, internal)
}

/// Table scans a query's plan may hold: each runs with its own buffers at
/// once, and a `UNION ALL` of a thousand scans holds gigabytes that no
/// memory pool counts.
pub const MAX_SCANS: usize = 64;

/// Refuses a plan with more than [`MAX_SCANS`] table scans (a CTE read many
/// times is a scan each time, whatever the SQL text looked like).
fn check_scans(optimized: &LogicalPlan) -> Result<(), Refusal> {
    let mut scans = 0usize;
    let _ = optimized.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(_) = node {
            scans += 1;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if scans > MAX_SCANS {
        return Err(Refusal::new(
            "too-complex",
            None,
            format!(
                "the query reads tables {scans} times (CTEs count once per use); at most {MAX_SCANS} reads are allowed in one query. Read each table once and combine the results, or split the query"
            ),
        ));
    }
    Ok(())
}

/// An open-column query may join only on a key that can be selective: a
/// join with no equality condition (a cross join, or only `<`, `<>`...) is
/// a product of its inputs, and a join whose every equality compares two
/// columns that both have a public domain (a few categories, like `gender`)
/// matches each row with a share of the other side. Either grows with the
/// square of the data (a triple self-join on `gender` of 20,000 residents
/// is 2 x 10^12 rows) and is refused here, before any work; a side that
/// holds at most one row (an aggregate without GROUP BY, a scalar subquery)
/// multiplies nothing. Whatever passes is still bounded at run time by the
/// session's join row cap (`limits::JoinRowCap`), since a key without a
/// domain may repeat too.
fn check_open_joins(
    optimized: &LogicalPlan,
    manifests: &BTreeMap<String, Manifest>,
) -> Result<(), Refusal> {
    let mut refusal = None;
    let _ = optimized.apply_with_subqueries(|node| {
        let LogicalPlan::Join(join) = node else {
            return Ok(TreeNodeRecursion::Continue);
        };
        if !joins_both_sides(join.join_type)
            || [&join.left, &join.right]
                .iter()
                .any(|side| side.max_rows().is_some_and(|n| n <= 1))
        {
            return Ok(TreeNodeRecursion::Continue);
        }
        if join.on.is_empty() {
            refusal = Some(Refusal::new(
                "open-join",
                None,
                "a join without an equality condition (a cross join, or one on `<`, `<>` or an expression only) pairs every row with every other and its size grows with the square of the data; join on `a.key = b.key` with a selective key, or aggregate each side first".into(),
            ));
            return Ok(TreeNodeRecursion::Stop);
        }
        // A key computed only from columns with a domain (`lower(gender)`)
        // has no more values than they have together.
        let categorical = |side: &LogicalPlan, key: &Expr| -> Option<String> {
            let mut named = Vec::new();
            for c in key.column_refs() {
                let (table, column) = source_of(side, side.schema().index_of_column(c).ok()?)?;
                let spec = manifests.get(&table)?.column(&column)?;
                spec.domain.as_ref()?;
                named.push(format!("{table}.{column}"));
            }
            Some(if named.is_empty() {
                key.to_string()
            } else {
                named.join(", ")
            })
        };
        let keys: Option<Vec<(String, String)>> = join
            .on
            .iter()
            .map(|(l, r)| Some((categorical(&join.left, l)?, categorical(&join.right, r)?)))
            .collect();
        if let Some(keys) = keys {
            let (left, right) = &keys[0];
            refusal = Some(Refusal::new(
                "open-join",
                Some(left.clone()),
                format!(
                    "the join matches `{left}` with `{right}`, and both have a public domain of a few categories, so each row pairs with a large share of the other side and the result grows with the square of the data; join on a selective key (an identifier-like column without a domain), or aggregate each side by the category first and join the aggregates"
                ),
            ));
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    match refusal {
        Some(r) => Err(r),
        None => Ok(()),
    }
}

/// Every (table, column, class) read from storage, refusing prohibited
/// columns other than privacy units and join keys.
fn scanned_columns(
    optimized: &LogicalPlan,
    manifests: &BTreeMap<String, Manifest>,
) -> Result<Vec<(String, String, Class)>, Refusal> {
    let mut found = Vec::new();
    let mut refusal = None;
    let _ = optimized.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let table = scan.table_name.table().to_string();
            let Some(manifest) = manifests.get(&table) else {
                refusal = Some(Refusal::new(
                    "unknown-table",
                    None,
                    format!("table `{table}` is not covered by this grant; query only the grant's datasets"),
                ));
                return Ok(TreeNodeRecursion::Stop);
            };
            for field in scan.projected_schema.fields() {
                let name = field.name();
                let Some(spec) = manifest.column(name) else {
                    refusal = Some(Refusal::new(
                        "undeclared-column",
                        Some(format!("{table}.{name}")),
                        format!("column `{name}` of `{table}` is not declared in the manifest and is never readable"),
                    ));
                    return Ok(TreeNodeRecursion::Stop);
                };
                if spec.class == Class::Prohibited && !manifest.is_internal_key(name) {
                    refusal = Some(prohibited(&table, name, manifest));
                    return Ok(TreeNodeRecursion::Stop);
                }
                found.push((table.clone(), name.clone(), spec.class));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    match refusal {
        Some(r) => Err(r),
        None => Ok(found),
    }
}

fn prohibited(table: &str, column: &str, manifest: &Manifest) -> Refusal {
    let internal = if manifest.is_internal_key(column) {
        " It is the privacy unit or a join key: it may appear only unchanged in a join condition below a DP aggregate, for example `... FROM a JOIN b ON a.{unit} = b.{unit}`, and the engine uses it to bound each unit's contribution."
    } else {
        ""
    };
    Refusal::new(
        "prohibited-column",
        Some(format!("{table}.{column}")),
        format!(
            "column `{column}` of `{table}` is prohibited (不予开放): it never leaves storage in any form and may not appear in a select list, predicate, group key, UDF argument or computation.{} Query open columns, or conditional columns through DP aggregates.",
            internal.replace("{unit}", &manifest.privacy_unit)
        ),
    )
}

fn conditional_raw(table: &str, column: &str) -> Refusal {
    Refusal::new(
        "conditional-raw",
        Some(format!("{table}.{column}")),
        format!(
            "column `{column}` of `{table}` is conditional (有条件开放): it may leave only inside a differentially private aggregate. Use COUNT(*), SUM({column}) or AVG({column}) with GROUP BY over a public group key, for example `SELECT district, AVG({column}) FROM {table} GROUP BY district`."
        ),
    )
}

fn conditional_group_key_raw(table: &str, column: &str) -> Refusal {
    Refusal::new(
        "conditional-raw",
        Some(format!("{table}.{column}")),
        format!(
            "column `{column}` of `{table}` is conditional (有条件开放): its row values may not leave, but it may be a GROUP BY key of a DP aggregate, for example `SELECT {column}, COUNT(*) FROM {table} GROUP BY {column}`."
        ),
    )
}

/// The dataset column an output field of `plan` passes through from, if it
/// is a plain column (no computation) all the way down to a scan.
fn source_of(plan: &LogicalPlan, index: usize) -> Option<(String, String)> {
    match plan {
        LogicalPlan::TableScan(scan) => Some((
            scan.table_name.table().to_string(),
            scan.projected_schema.field(index).name().clone(),
        )),
        LogicalPlan::Projection(p) => match strip_alias(p.expr.get(index)?) {
            Expr::Column(c) => source_of(&p.input, p.input.schema().index_of_column(c).ok()?),
            _ => None,
        },
        LogicalPlan::Filter(f) => source_of(&f.input, index),
        LogicalPlan::SubqueryAlias(a) => source_of(&a.input, index),
        LogicalPlan::Sort(s) => source_of(&s.input, index),
        LogicalPlan::Join(j) if joins_both_sides(j.join_type) => {
            let left = j.left.schema().fields().len();
            if index < left {
                source_of(&j.left, index)
            } else {
                source_of(&j.right, index - left)
            }
        }
        _ => None,
    }
}

/// Join types whose output is the left columns followed by the right ones.
fn joins_both_sides(t: JoinType) -> bool {
    matches!(
        t,
        JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full
    )
}

fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        other => other,
    }
}

fn describe(plan: &LogicalPlan) -> &'static str {
    match plan {
        LogicalPlan::Join(_) => "JOIN",
        LogicalPlan::Union(_) => "UNION",
        LogicalPlan::Window(_) => "a window function",
        LogicalPlan::Limit(_) => "LIMIT",
        LogicalPlan::Distinct(_) => "DISTINCT",
        LogicalPlan::Values(_) => "VALUES",
        LogicalPlan::Unnest(_) => "UNNEST",
        LogicalPlan::RecursiveQuery(_) => "a recursive CTE",
        LogicalPlan::Subquery(_) => "a subquery",
        LogicalPlan::Aggregate(_) => "a nested aggregate",
        _ => "this operator",
    }
}

/// `internal` is the refusal to give if the query reads a privacy unit but
/// is not a DP aggregate.
fn admit_aggregate(
    plan: &LogicalPlan,
    manifests: &BTreeMap<String, Manifest>,
    internal: Option<Refusal>,
) -> Result<Admitted, Refusal> {
    // Peel post-processing (projection of outputs, ORDER BY) down to the aggregate.
    let mut node = plan;
    let mut projection: Option<&datafusion::logical_expr::Projection> = None;
    let mut sorts: Vec<&SortExpr> = Vec::new();
    let aggregate = loop {
        match node {
            LogicalPlan::Projection(p) if projection.is_none() => {
                projection = Some(p);
                node = &p.input;
            }
            LogicalPlan::Sort(s) => {
                if s.fetch.is_some() {
                    return Err(limit_refusal());
                }
                sorts.extend(s.expr.iter());
                node = &s.input;
            }
            LogicalPlan::Limit(_) => return Err(limit_refusal()),
            LogicalPlan::Filter(f) if matches!(f.input.as_ref(), LogicalPlan::Aggregate(_)) => {
                return Err(Refusal::new(
                    "having",
                    None,
                    "HAVING selects groups by their exact aggregate values, which reveals them before any noise; drop HAVING and filter the released table inside the job".into(),
                ));
            }
            LogicalPlan::Aggregate(a) => break a,
            other => {
                return Err(internal.unwrap_or_else(|| raw_rows_refusal(plan, other, manifests)));
            }
        }
    };
    let input = aggregate.input.as_ref();
    check_aggregate_input(input, manifests)?;
    let scans = scans(input, manifests);
    let manifest = scans.first().map(|s| &manifests[&s.table]).ok_or_else(|| {
        Refusal::new(
            "aggregate-input",
            None,
            "a DP aggregate must read at least one of the grant's datasets".into(),
        )
    })?;

    for expr in aggregate.group_expr.iter().chain(&aggregate.aggr_expr) {
        no_prohibited_refs(expr, input, manifests)?;
    }
    let mut keys = Vec::new();
    let mut binned = Vec::new();
    for expr in &aggregate.group_expr {
        if let Some(bin) = bin_of(expr, input) {
            let (key, projected) = bin_key(bin, keys.len(), input, manifests)?;
            binned.push((key.input.name.clone(), projected));
            keys.push(key);
            continue;
        }
        let Expr::Column(c) = expr else {
            return Err(Refusal::new(
                "group-key-expression",
                None,
                format!(
                    "GROUP BY `{expr}` is an expression; group by a declared group-key column with a public domain, or bin a column with manifest bounds: `x - x % 10` or `FLOOR(x / 10) * 10`"
                ),
            ));
        };
        let (src_table, src) = resolve(input, c)?;
        let spec = manifests[&src_table]
            .column(&src)
            .ok_or_else(|| conditional_raw(&src_table, &src))?;
        if spec.class == Class::Prohibited {
            return Err(prohibited(&src_table, &src, &manifests[&src_table]));
        }
        if spec.class == Class::Conditional && !spec.group_key {
            return Err(Refusal::new(
                "not-a-group-key",
                Some(format!("{src_table}.{src}")),
                format!(
                    "column `{src}` of `{src_table}` is conditional and the manifest does not allow it as a group key; group by one of: {}",
                    group_keys(manifest)
                ),
            ));
        }
        keys.push(GroupKey {
            input: c.clone(),
            source: src,
            domain: spec.domain.clone(),
        });
    }

    let mut aggregates = Vec::new();
    let mut computed = Vec::new();
    for expr in &aggregate.aggr_expr {
        let (agg, value) = dp_aggregate(strip_alias(expr), input, manifests)?;
        aggregates.push(agg);
        computed.push(value);
    }
    let bounded_input = project_computed(input, &mut aggregates, computed)?;
    let bounded_input = with_columns(&bounded_input, binned)?;

    // Map every output column to a key or an aggregate of the Aggregate node.
    let agg_schema = aggregate.schema.as_ref();
    let n_keys = keys.len();
    let from_agg_index = |i: usize| {
        if i < n_keys {
            OutputSource::Key(i)
        } else {
            OutputSource::Aggregate(i - n_keys)
        }
    };
    let outputs: Vec<(String, OutputSource)> = match projection {
        Some(p) => p
            .expr
            .iter()
            .zip(p.schema.fields())
            .map(|(e, field)| match strip_alias(e) {
                Expr::Column(c) => agg_schema
                    .index_of_column(c)
                    .map(|i| (field.name().clone(), from_agg_index(i)))
                    .map_err(|_| post_expression_refusal(e)),
                _ => Err(post_expression_refusal(e)),
            })
            .collect::<Result<_, _>>()?,
        None => agg_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name().clone(), from_agg_index(i)))
            .collect(),
    };
    let mut order = Vec::new();
    for sort in sorts {
        let Expr::Column(c) = strip_alias(&sort.expr) else {
            return Err(post_expression_refusal(&sort.expr));
        };
        let index = outputs
            .iter()
            .position(|(name, _)| name == &c.name)
            .or_else(|| {
                let i = agg_schema.index_of_column(c).ok()?;
                outputs.iter().position(|(_, s)| *s == from_agg_index(i))
            })
            .ok_or_else(|| post_expression_refusal(&sort.expr))?;
        order.push((index, sort.asc));
    }
    Ok(Admitted::Aggregate(AggregateQuery {
        scans,
        input: bounded_input,
        keys,
        aggregates,
        outputs,
        order,
    }))
}

fn limit_refusal() -> Refusal {
    Refusal::new(
        "limit",
        None,
        "LIMIT is not admitted on queries over conditional data: every group of the public domain is released. Sort and slice the released table inside the job.".into(),
    )
}

fn post_expression_refusal(e: &Expr) -> Refusal {
    Refusal::new(
        "post-expression",
        None,
        format!(
            "`{e}` computes over aggregate outputs inside the query; select the aggregates themselves and compute on the released values inside the job (post-processing is free)"
        ),
    )
}

fn group_keys(manifest: &Manifest) -> String {
    let keys: Vec<_> = manifest
        .columns
        .iter()
        .filter(|c| {
            c.class != Class::Prohibited
                && c.domain.is_some()
                && (c.group_key || c.class == Class::Open)
        })
        .map(|c| c.name.as_str())
        .collect();
    if keys.is_empty() {
        "(none in this dataset)".into()
    } else {
        keys.join(", ")
    }
}

/// A query without a top-level aggregate that reads conditional data:
/// name the first conditional column its output would release.
fn raw_rows_refusal(
    top: &LogicalPlan,
    inner: &LogicalPlan,
    manifests: &BTreeMap<String, Manifest>,
) -> Refusal {
    // Name a column whose values are the real leak first (not a group key),
    // then a conditional group key released row by row.
    let mut group_key = None;
    for i in 0..top.schema().fields().len() {
        let Some((table, column)) = source_of(top, i) else {
            continue;
        };
        let Some(spec) = manifests.get(&table).and_then(|m| m.column(&column)) else {
            continue;
        };
        if spec.class != Class::Conditional {
            continue;
        }
        if !spec.group_key {
            return conditional_raw(&table, &column);
        }
        group_key.get_or_insert((table, column));
    }
    if let Some((table, column)) = group_key {
        return conditional_group_key_raw(&table, &column);
    }
    Refusal::new(
        "conditional-rows",
        None,
        format!(
            "the query reads conditional columns but its result is not a DP aggregate ({} at the top); conditional data leaves only as COUNT, SUM or AVG over public group keys",
            describe(inner)
        ),
    )
}

/// Only scans, filters, projections, aliases and joins on the privacy unit
/// may feed a DP aggregate, and no expression among them may read a
/// prohibited column.
fn check_aggregate_input(
    input: &LogicalPlan,
    manifests: &BTreeMap<String, Manifest>,
) -> Result<(), Refusal> {
    let mut refusal = None;
    let _ = input.apply(|node| {
        let bad = match node {
            LogicalPlan::TableScan(_) | LogicalPlan::SubqueryAlias(_) => None,
            LogicalPlan::Projection(p) if p.expr.iter().any(has_subquery) => Some("a subquery"),
            LogicalPlan::Projection(p) => {
                // Passing a column through unchanged is not reading it.
                let computed = p
                    .expr
                    .iter()
                    .filter(|e| !matches!(strip_alias(e), Expr::Column(_)));
                refusal = computed
                    .map(|e| no_prohibited_refs(e, &p.input, manifests))
                    .find_map(Result::err);
                None
            }
            LogicalPlan::Filter(f) if f.predicate.contains_outer() => Some("a correlated subquery"),
            LogicalPlan::Filter(f) if has_subquery(&f.predicate) => Some("a subquery in WHERE"),
            LogicalPlan::Filter(f) => {
                refusal = no_prohibited_refs(&f.predicate, &f.input, manifests).err();
                None
            }
            LogicalPlan::Join(j) if !joins_both_sides(j.join_type) => Some("a semi or anti join"),
            LogicalPlan::Join(j) => {
                refusal = check_join(node, j, manifests).err();
                None
            }
            other => Some(describe(other)),
        };
        if let Some(what) = bad {
            refusal = Some(Refusal::new(
                "aggregate-input",
                None,
                format!("{what} below a DP aggregate is not admitted: one person could then change many released cells. Aggregate directly over the grant's datasets, joined on their privacy unit, with WHERE filters on their columns"),
            ));
        }
        Ok(if refusal.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    refusal.map_or(Ok(()), Err)
}

/// The dataset column `c` passes through from, if any.
fn source_column(
    c: &Column,
    input: &LogicalPlan,
    manifests: &BTreeMap<String, Manifest>,
) -> Option<(String, String, Class)> {
    let (table, column) = source_of(input, input.schema().index_of_column(c).ok()?)?;
    let class = manifests.get(&table)?.column(&column)?.class;
    Some((table, column, class))
}

/// Refuses if `expr`, evaluated over `input`, reads a prohibited column.
/// A column computed from one is caught where it is computed, since there
/// it is still a plain pass-through of the scan.
fn no_prohibited_refs(
    expr: &Expr,
    input: &LogicalPlan,
    manifests: &BTreeMap<String, Manifest>,
) -> Result<(), Refusal> {
    for c in expr.column_refs() {
        if let Some((table, column, Class::Prohibited)) = source_column(c, input, manifests) {
            return Err(prohibited(&table, &column, &manifests[&table]));
        }
    }
    Ok(())
}

/// A join below a DP aggregate matches rows of the same privacy unit: at
/// least one condition equates the unit of a left-side dataset with the
/// same unit of a right-side dataset. Other conditions are filters and may
/// not read prohibited columns.
fn check_join(
    node: &LogicalPlan,
    join: &datafusion::logical_expr::Join,
    manifests: &BTreeMap<String, Manifest>,
) -> Result<(), Refusal> {
    let left_width = join.left.schema().fields().len();
    let schema = node.schema();
    // A unit column of the join's output: (side is left, table, unit).
    let unit_of = |e: &Expr| -> Option<(bool, String, String)> {
        let Expr::Column(c) = strip_alias(e) else {
            return None;
        };
        let index = schema.index_of_column(c).ok()?;
        let (table, column) = source_of(node, index)?;
        (manifests.get(&table)?.privacy_unit == column).then_some((
            index < left_width,
            table,
            column,
        ))
    };
    let mut conditions: Vec<Expr> = join
        .on
        .iter()
        .map(|(l, r)| l.clone().eq(r.clone()))
        .collect();
    if let Some(filter) = &join.filter {
        conditions.extend(
            datafusion::logical_expr::utils::split_conjunction(filter)
                .into_iter()
                .cloned(),
        );
    }
    let mut matched = false;
    for condition in &conditions {
        if let Expr::BinaryExpr(b) = condition
            && b.op == datafusion::logical_expr::Operator::Eq
            && let (Some(l), Some(r)) = (unit_of(&b.left), unit_of(&b.right))
        {
            if l.0 == r.0 || l.2 != r.2 {
                return Err(join_refusal(
                    Some(format!("{}.{}", r.1, r.2)),
                    format!(
                        "`{condition}` does not match one side's `{}` with the other side's: join two datasets on their shared privacy unit",
                        l.2
                    ),
                ));
            }
            matched = true;
            continue;
        }
        if let Some((table, column, Class::Prohibited)) = condition
            .column_refs()
            .into_iter()
            .find_map(|c| source_column(c, node, manifests))
            .filter(|(_, _, class)| *class == Class::Prohibited)
        {
            return Err(join_refusal(
                Some(format!("{table}.{column}")),
                format!(
                    "`{condition}` uses `{column}` of `{table}` other than as `a.{column} = b.{column}`; a prohibited key may only be matched for equality with the same key of the other dataset"
                ),
            ));
        }
    }
    if matched {
        Ok(())
    } else {
        Err(join_refusal(
            None,
            "this join does not match rows of the same privacy unit, so one person's rows could multiply without bound".into(),
        ))
    }
}

fn join_refusal(column: Option<String>, why: String) -> Refusal {
    Refusal::new(
        "join-condition",
        column,
        format!(
            "{why}. Below a DP aggregate, datasets may be joined only on their shared privacy unit, for example `health_visits h JOIN residents r ON h.person_id = r.person_id`; other conditions belong in WHERE"
        ),
    )
}

fn has_subquery(e: &Expr) -> bool {
    e.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_)
        ))
    })
    .unwrap_or(true)
}

/// Every scan below the aggregate, in plan order.
fn scans(input: &LogicalPlan, manifests: &BTreeMap<String, Manifest>) -> Vec<Scan> {
    let mut scans = Vec::new();
    let _ = input.apply(|node| {
        if let LogicalPlan::TableScan(s) = node {
            let table = s.table_name.table().to_string();
            // Every scanned table was found in `manifests` by `scanned_columns`.
            if let Some(m) = manifests.get(&table) {
                scans.push(Scan {
                    table,
                    unit: m.privacy_unit.clone(),
                    max_contributions: m.max_contributions,
                });
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    scans
}

fn resolve(input: &LogicalPlan, c: &Column) -> Result<(String, String), Refusal> {
    input
        .schema()
        .index_of_column(c)
        .ok()
        .and_then(|i| source_of(input, i))
        .ok_or_else(|| {
            Refusal::new(
                "derived-column",
                Some(c.name.clone()),
                format!("`{}` is computed, not a dataset column; aggregate and group only plain dataset columns, so their manifest bounds and domains apply", c.name),
            )
        })
}

/// The DP aggregate `expr` computes, and for an explicitly bounded
/// computation (see [`explicitly_bounded`]) the value to aggregate.
fn dp_aggregate(
    expr: &Expr,
    input: &LogicalPlan,
    manifests: &BTreeMap<String, Manifest>,
) -> Result<(DpAggregate, Option<Computed>), Refusal> {
    let Expr::AggregateFunction(f) = expr else {
        return Err(Refusal::new(
            "aggregate-function",
            None,
            format!("`{expr}` is not an aggregate function"),
        ));
    };
    let name = f.func.name().to_ascii_lowercase();
    let params = &f.params;
    let arg_column = |i: usize| match params.args.get(i).map(strip_alias) {
        Some(Expr::Column(c)) => Some(c.clone()),
        _ => None,
    };
    let named_source = || {
        params.args.iter().find_map(|a| {
            let mut found = None;
            let _ = a.apply(|e| {
                if let Expr::Column(c) = e {
                    found = resolve(input, c).ok();
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            });
            found
        })
    };
    // Ordered-set aggregates carry their ordering column in WITHIN GROUP;
    // that ORDER BY is part of the function, not a modifier.
    let ordered_set = matches!(
        name.as_str(),
        "approx_percentile_cont" | "percentile_cont" | "quantile_cont"
    );
    if params.distinct
        || params.filter.is_some()
        || (!params.order_by.is_empty() && !ordered_set)
        || params.order_by.len() > 1
    {
        return Err(Refusal::new(
            "aggregate-modifier",
            named_source().map(|(t, c)| format!("{t}.{c}")),
            format!(
                "`{expr}`: DISTINCT, FILTER and ORDER BY inside aggregates are not admitted (their sensitivity is unbounded); use a WHERE clause and plain COUNT/SUM/AVG"
            ),
        ));
    }
    let kind = aggregate_kind(expr, &name, params, ordered_set, &named_source)?;
    if kind == AggregateKind::Count {
        return match params.args.first().map(strip_alias) {
            None | Some(Expr::Literal(..)) => Ok((
                DpAggregate {
                    kind,
                    input: None,
                    source: None,
                },
                None,
            )),
            Some(Expr::Column(c)) => {
                let (table, column) = resolve(input, c)?;
                if manifests[&table].column(&column).map(|s| s.class) == Some(Class::Prohibited) {
                    return Err(prohibited(&table, &column, &manifests[&table]));
                }
                Ok((
                    DpAggregate {
                        kind,
                        input: Some(c.clone()),
                        source: None,
                    },
                    None,
                ))
            }
            Some(other) => Err(Refusal::new(
                "derived-column",
                None,
                format!(
                    "COUNT({other}) counts a computed expression; count rows with COUNT(*) and filter with WHERE"
                ),
            )),
        };
    }
    let Some(c) = arg_column(0) else {
        if let Some(arg) = params.args.first().map(strip_alias)
            && let Some(computed) = explicitly_bounded(arg, input)?
        {
            return Ok((
                DpAggregate {
                    kind,
                    input: None,
                    source: None,
                },
                Some(computed),
            ));
        }
        return Err(Refusal::new(
            "derived-column",
            named_source().map(|(t, c)| format!("{t}.{c}")),
            format!(
                "`{expr}` aggregates a computed expression; aggregate a plain dataset column so its manifest bounds apply, or bound the expression in the query: `LEAST(GREATEST(<expression>, <lower>), <upper>)` with literal bounds"
            ),
        ));
    };
    let (table, source) = resolve(input, &c)?;
    let spec = manifests[&table]
        .column(&source)
        .ok_or_else(|| conditional_raw(&table, &source))?;
    if spec.class == Class::Prohibited {
        return Err(prohibited(&table, &source, &manifests[&table]));
    }
    if !spec.ty.is_numeric() {
        return Err(Refusal::new(
            "non-numeric",
            Some(format!("{table}.{source}")),
            format!(
                "column `{source}` of `{table}` is {}; SUM, AVG, VAR, STDDEV and quantiles need an int64 or float64 column",
                spec.ty.as_str()
            ),
        ));
    }
    let Some(bounds) = spec.bounds else {
        return Err(Refusal::new(
            "no-bounds",
            Some(format!("{table}.{source}")),
            format!(
                "column `{source}` of `{table}` has no bounds in the manifest, so its sum, spread or quantile has unbounded sensitivity; ask the data provider to declare bounds"
            ),
        ));
    };
    Ok((
        DpAggregate {
            kind,
            input: Some(c),
            source: Some((table, source, spec.ty, bounds)),
        },
        None,
    ))
}

/// The kind of DP aggregate a function name asks for; a refusal for any
/// other aggregate or a percentile that is not a literal in [0, 1].
fn aggregate_kind(
    expr: &Expr,
    name: &str,
    params: &datafusion::logical_expr::expr::AggregateFunctionParams,
    ordered_set: bool,
    named_source: &dyn Fn() -> Option<(String, String)>,
) -> Result<AggregateKind, Refusal> {
    Ok(match name {
        "count" => AggregateKind::Count,
        "sum" => AggregateKind::Sum,
        "avg" | "mean" => AggregateKind::Mean,
        "var" | "var_samp" | "var_sample" | "variance" | "variance_samp" => {
            AggregateKind::Variance {
                sample: true,
                root: false,
            }
        }
        "var_pop" | "var_population" | "variance_pop" => AggregateKind::Variance {
            sample: false,
            root: false,
        },
        "stddev" | "stddev_samp" => AggregateKind::Variance {
            sample: true,
            root: true,
        },
        "stddev_pop" => AggregateKind::Variance {
            sample: false,
            root: true,
        },
        "median" | "approx_median" => AggregateKind::Quantile {
            millionths: 500_000,
        },
        _ if ordered_set => {
            let q = quantile_literal(params.args.get(1));
            let Some(q) = q else {
                return Err(Refusal::new(
                    "quantile-argument",
                    named_source().map(|(t, c)| format!("{t}.{c}")),
                    format!(
                        "`{expr}`: the percentile must be a literal number between 0 and 1, for example `approx_percentile_cont(0.9) WITHIN GROUP (ORDER BY x)`"
                    ),
                ));
            };
            // ORDER BY x DESC asks for the percentile counted from the top.
            let descending = params.order_by.first().is_some_and(|s| !s.asc);
            let q = if descending { 1.0 - q } else { q };
            AggregateKind::Quantile {
                millionths: (q * 1e6).round() as u32,
            }
        }
        other => {
            let column = named_source();
            let about = column
                .as_ref()
                .map(|(t, c)| format!(" over `{c}` of `{t}`"))
                .unwrap_or_default();
            return Err(Refusal::new(
                "non-dp-aggregate",
                column.map(|(t, c)| format!("{t}.{c}")),
                format!(
                    "aggregate `{other}`{about} is not differentially private (MIN, MAX and exact single values reveal one person's value); use COUNT, SUM, AVG, VAR, STDDEV, MEDIAN or approx_percentile_cont, which are released with noise"
                ),
            ));
        }
    })
}

/// The percentile argument of an ordered-set aggregate, if it is a literal
/// number (possibly cast) between 0 and 1.
fn quantile_literal(arg: Option<&Expr>) -> Option<f64> {
    arg.map(strip_alias)
        .and_then(|e| match e {
            Expr::Literal(v, _) => v
                .cast_to(&datafusion::arrow::datatypes::DataType::Float64)
                .ok(),
            Expr::Cast(c) => match strip_alias(&c.expr) {
                Expr::Literal(v, _) => v
                    .cast_to(&datafusion::arrow::datatypes::DataType::Float64)
                    .ok(),
                _ => None,
            },
            _ => None,
        })
        .and_then(|v| match v {
            datafusion::common::ScalarValue::Float64(Some(q)) => Some(q),
            _ => None,
        })
        .filter(|q| (0.0..=1.0).contains(q))
}

/// A value computed per row (from dataset columns, built-in functions or
/// UDFs) that the query bounds itself with literal bounds.
#[derive(Debug, Clone)]
struct Computed {
    /// The expression inside the bounds, cast to `ty`.
    expr: Expr,
    ty: ColumnType,
    bounds: (f64, f64),
    /// How the query wrote it, for names and messages.
    display: String,
}

/// `LEAST(GREATEST(e, lo), hi)` or `GREATEST(LEAST(e, hi), lo)` with
/// literal `lo < hi`: the analyst bounds a computed value, so its
/// sensitivity is known without manifest bounds. The DP layer clamps to
/// the same bounds again, so a value outside them (a UDF that lies about
/// its range) cannot widen the sensitivity. `None` when `arg` is not of
/// that shape; a refusal when it is but the bounds or type do not work.
fn explicitly_bounded(arg: &Expr, input: &LogicalPlan) -> Result<Option<Computed>, Refusal> {
    use datafusion::logical_expr::ExprSchemable;

    let two_args = |e: &Expr, name: &str| -> Option<(Expr, Expr)> {
        let Expr::ScalarFunction(f) = strip_alias(e) else {
            return None;
        };
        (f.func.name().eq_ignore_ascii_case(name) && f.args.len() == 2)
            .then(|| (f.args[0].clone(), f.args[1].clone()))
    };
    // One argument a literal bound, the other the value.
    let split = |(a, b): (Expr, Expr)| match (literal_f64(&a), literal_f64(&b)) {
        (None, Some(bound)) => Some((a, bound)),
        (Some(bound), None) => Some((b, bound)),
        _ => None,
    };
    let outer_inner = two_args(arg, "least")
        .and_then(split)
        .and_then(|(inner, hi)| Some((two_args(&inner, "greatest").and_then(split)?, hi)))
        .map(|((value, lo), hi)| (value, lo, hi))
        .or_else(|| {
            two_args(arg, "greatest")
                .and_then(split)
                .and_then(|(inner, lo)| Some((two_args(&inner, "least").and_then(split)?, lo)))
                .map(|((value, hi), lo)| (value, lo, hi))
        });
    let Some((value, lo, hi)) = outer_inner else {
        return Ok(None);
    };
    let value = strip_alias(&value).clone();
    let display = format!("{value}");
    let refuse = |rule: &'static str, why: String| Err(Refusal::new(rule, None, why));
    if has_subquery(&value) {
        return refuse(
            "aggregate-input",
            format!(
                "`{display}` holds a subquery; compute per-row values from the row's own columns"
            ),
        );
    }
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return refuse(
            "bounds",
            format!(
                "the bounds [{lo}, {hi}] of `{display}` must be finite numbers with the lower below the upper"
            ),
        );
    }
    let ty = value
        .get_type(input.schema())
        .map_err(|e| Refusal::new("sql-error", None, e.strip_backtrace()))?;
    let (expr, ty) = match ty {
        datafusion::arrow::datatypes::DataType::Int64 => (value, ColumnType::Int64),
        t if t.is_numeric() => (
            Expr::Cast(datafusion::logical_expr::Cast::new(
                Box::new(value),
                datafusion::arrow::datatypes::DataType::Float64,
            )),
            ColumnType::Float64,
        ),
        t => {
            return refuse(
                "non-numeric",
                format!("`{display}` is {t}; SUM, AVG, VAR, STDDEV and quantiles need a number"),
            );
        }
    };
    Ok(Some(Computed {
        expr,
        ty,
        bounds: (lo, hi),
        display,
    }))
}

/// How SQL rounds `value / width` in the bin expression as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rounding {
    /// `FLOOR(x / w) * w` over a non-integer division.
    Floor,
    /// `x - x % w`, and `FLOOR(x / w) * w` where `x / w` is integer
    /// division (which truncates before FLOOR sees it).
    Trunc,
}

/// A GROUP BY that bins a numeric column: `x - x % w` or `FLOOR(x / w) * w`.
#[derive(Debug)]
struct Bin {
    column: Column,
    width: f64,
    rounding: Rounding,
    display: String,
}

/// The expression without the aliases and casts the analyser added.
fn uncast(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => uncast(&a.expr),
        Expr::Cast(c) => uncast(&c.expr),
        Expr::TryCast(c) => uncast(&c.expr),
        other => other,
    }
}

/// `expr` as a bin of a column, when it has one of the two shapes.
fn bin_of(expr: &Expr, input: &LogicalPlan) -> Option<Bin> {
    use datafusion::logical_expr::{BinaryExpr, ExprSchemable, Operator};
    let column = |e: &Expr| match uncast(e) {
        Expr::Column(c) => Some(c.clone()),
        _ => None,
    };
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = uncast(expr) else {
        return None;
    };
    let display = format!("{}", strip_alias(expr));
    match op {
        Operator::Minus => {
            let x = column(left)?;
            let Expr::BinaryExpr(BinaryExpr {
                left: dividend,
                op: Operator::Modulo,
                right: width,
            }) = uncast(right)
            else {
                return None;
            };
            (column(dividend)? == x).then_some(())?;
            Some(Bin {
                column: x,
                width: literal_f64(width)?,
                rounding: Rounding::Trunc,
                display,
            })
        }
        Operator::Multiply => {
            let width = literal_f64(right)?;
            let Expr::ScalarFunction(f) = uncast(left) else {
                return None;
            };
            if !f.func.name().eq_ignore_ascii_case("floor") || f.args.len() != 1 {
                return None;
            }
            let division = uncast(&f.args[0]);
            let Expr::BinaryExpr(BinaryExpr {
                left: dividend,
                op: Operator::Divide,
                right: divisor,
            }) = division
            else {
                return None;
            };
            let x = column(dividend)?;
            (literal_f64(divisor)? == width).then_some(())?;
            let integer = division
                .get_type(input.schema())
                .is_ok_and(|t| t.is_integer());
            Some(Bin {
                column: x,
                width,
                rounding: if integer {
                    Rounding::Trunc
                } else {
                    Rounding::Floor
                },
                display,
            })
        }
        _ => None,
    }
}

/// Which bin `value` falls in, exactly as the projected key computes it.
fn bin_value(value: f64, width: f64, rounding: Rounding) -> i64 {
    let q = value / width;
    let rounded = match rounding {
        Rounding::Floor => q.floor(),
        Rounding::Trunc => q.trunc(),
    };
    // Integral and within the bounds' range (checked by the caller).
    (rounded * width) as i64
}

/// The group key of a bin: its public domain is every bin between the
/// bins of the column's manifest bounds, and the value it groups by is the
/// column clamped to those bounds and binned (so every row falls in a
/// public bin, and the groups depend on no data). Also the projected
/// expression, named as the key's input column.
fn bin_key(
    bin: Bin,
    index: usize,
    input: &LogicalPlan,
    manifests: &BTreeMap<String, Manifest>,
) -> Result<(GroupKey, Expr), Refusal> {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{Cast, lit, when};
    let (table, src) = resolve(input, &bin.column)?;
    let at = Some(format!("{table}.{src}"));
    let spec = manifests[&table]
        .column(&src)
        .ok_or_else(|| conditional_raw(&table, &src))?;
    if spec.class == Class::Prohibited {
        return Err(prohibited(&table, &src, &manifests[&table]));
    }
    let Some((lo, hi)) = spec.bounds.filter(|_| spec.ty != ColumnType::Utf8) else {
        return Err(Refusal::new(
            "bin-without-bounds",
            at,
            format!(
                "GROUP BY `{}` bins column `{src}` of `{table}`, which has no bounds in the manifest, so its bins are not public; bin a numeric column with bounds",
                bin.display
            ),
        ));
    };
    let width = bin.width;
    if !(width >= 1.0 && width.fract() == 0.0 && width <= 1e15) {
        return Err(Refusal::new(
            "bin-width",
            at,
            format!(
                "GROUP BY `{}` bins by {width}; use a positive whole number as the bin width",
                bin.display
            ),
        ));
    }
    // Bins of width 1 over whole numbers are the raw values, which the
    // manifest does not let this column be grouped by.
    if spec.class == Class::Conditional
        && !spec.group_key
        && spec.ty == ColumnType::Int64
        && width == 1.0
    {
        return Err(Refusal::new(
            "not-a-group-key",
            at,
            format!(
                "GROUP BY `{}` groups by the raw values of `{src}`, which the manifest does not allow as a group key; use bins wider than 1",
                bin.display
            ),
        ));
    }
    let (first, last) = (
        bin_value(lo, width, bin.rounding),
        bin_value(hi, width, bin.rounding),
    );
    let count = (last - first) / width as i64 + 1;
    if count > crate::dp::MAX_CELLS as i64 {
        return Err(Refusal::new(
            "too-many-bins",
            at,
            format!(
                "GROUP BY `{}` makes {count} bins over the bounds [{lo}, {hi}] of `{src}`; use a wider bin (at most {} bins)",
                bin.display,
                crate::dp::MAX_CELLS
            ),
        ));
    }
    let domain = (0..count)
        .map(|k| (first + k * width as i64).to_string())
        .collect();
    let value = Expr::Cast(Cast::new(
        Box::new(Expr::Column(bin.column.clone())),
        DataType::Float64,
    ));
    let clamped = when(value.clone().lt(lit(lo)), lit(lo))
        .when(value.clone().gt(lit(hi)), lit(hi))
        .otherwise(value)
        .map_err(|e| Refusal::new("sql-error", None, e.strip_backtrace()))?;
    let quotient = clamped / lit(width);
    let rounded = match bin.rounding {
        Rounding::Floor => datafusion::functions::math::expr_fn::floor(quotient),
        Rounding::Trunc => datafusion::functions::math::expr_fn::trunc(vec![quotient]),
    };
    let key = Expr::Cast(Cast::new(Box::new(rounded * lit(width)), DataType::Int64));
    let name = format!("__unseen_bin{index}");
    Ok((
        GroupKey {
            input: Column::new_unqualified(&name),
            source: src,
            domain: Some(domain),
        },
        key,
    ))
}

/// `input` with its columns and `extra` named columns after them.
fn with_columns(input: &LogicalPlan, extra: Vec<(String, Expr)>) -> Result<LogicalPlan, Refusal> {
    if extra.is_empty() {
        return Ok(input.clone());
    }
    let mut exprs: Vec<Expr> = input
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    exprs.extend(extra.into_iter().map(|(name, e)| e.alias(name)));
    datafusion::logical_expr::LogicalPlanBuilder::from(input.clone())
        .project(exprs)
        .and_then(|b| b.build())
        .map_err(|e| Refusal::new("sql-error", None, e.strip_backtrace()))
}

/// A literal number, possibly behind casts the analyser added.
fn literal_f64(e: &Expr) -> Option<f64> {
    match strip_alias(e) {
        Expr::Literal(v, _) => match v
            .cast_to(&datafusion::arrow::datatypes::DataType::Float64)
            .ok()?
        {
            datafusion::common::ScalarValue::Float64(Some(x)) => Some(x),
            _ => None,
        },
        Expr::Cast(c) => literal_f64(&c.expr),
        Expr::TryCast(c) => literal_f64(&c.expr),
        Expr::Negative(inner) => literal_f64(inner).map(|x| -x),
        _ => None,
    }
}

/// `input` with one more column per computed aggregate argument, and the
/// aggregates pointed at them.
fn project_computed(
    input: &LogicalPlan,
    aggregates: &mut [DpAggregate],
    computed: Vec<Option<Computed>>,
) -> Result<LogicalPlan, Refusal> {
    let mut extra = Vec::new();
    for (i, (agg, c)) in aggregates.iter_mut().zip(computed).enumerate() {
        let Some(c) = c else { continue };
        let name = format!("__unseen_computed{i}");
        agg.input = Some(Column::new_unqualified(&name));
        agg.source = Some((String::new(), c.display, c.ty, c.bounds));
        extra.push((name, c.expr));
    }
    with_columns(input, extra)
}
