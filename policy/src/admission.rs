//! Admission: decides from DataFusion's logical plan, never from the SQL
//! text, whether a query may run and in what form its result may leave.
//!
//! Two passes. The optimised plan tells which columns are actually read from
//! storage (after aliases, CTEs and subqueries are resolved into scans), which
//! is where prohibited columns are caught. The analysed plan gives the shape:
//! a query over open columns only is released as is; anything touching a
//! conditional column must be a DP aggregate over public group domains.

use std::collections::BTreeMap;

use datafusion::common::Column;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan, SortExpr};

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
    fn new(rule: &'static str, column: Option<String>, message: String) -> Self {
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
    /// Public categories; every one appears in the result.
    pub domain: Vec<String>,
}

/// One aggregate to release with noise.
#[derive(Debug, Clone, PartialEq)]
pub struct DpAggregate {
    pub kind: AggregateKind,
    /// The aggregated column in the input plan (`None` for COUNT(*)).
    pub input: Option<Column>,
    /// Source column name, its type and clamping bounds.
    pub source: Option<(String, ColumnType, (f64, f64))>,
}

/// Where an output column comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputSource {
    Key(usize),
    Aggregate(usize),
}

/// An admitted DP aggregate query.
#[derive(Debug, Clone)]
pub struct AggregateQuery {
    /// The dataset aggregated over.
    pub table: String,
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
    let scanned = scanned_columns(optimized, manifests)?;
    if scanned.iter().all(|(_, _, class)| *class == Class::Open) {
        return Ok(Admitted::Open(plan.clone()));
    }
    admit_aggregate(plan, manifests)
}

/// Every (table, column, class) read from storage, refusing prohibited ones.
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
                if spec.class == Class::Prohibited {
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
        " It is the privacy unit or a join key: the engine uses it internally for contribution bounding and joins, but no query may read it."
    } else {
        ""
    };
    Refusal::new(
        "prohibited-column",
        Some(format!("{table}.{column}")),
        format!(
            "column `{column}` of `{table}` is prohibited (不予开放): it never leaves storage in any form and may not appear in a select list, predicate, group key, UDF argument or join.{internal} Query open columns, or conditional columns through DP aggregates."
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
        _ => None,
    }
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

fn admit_aggregate(
    plan: &LogicalPlan,
    manifests: &BTreeMap<String, Manifest>,
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
            other => return Err(raw_rows_refusal(plan, other, manifests)),
        }
    };
    let input = aggregate.input.as_ref();
    check_aggregate_input(input)?;
    let table = single_table(input)?;
    let manifest = &manifests[&table];

    let mut keys = Vec::new();
    for expr in &aggregate.group_expr {
        let Expr::Column(c) = expr else {
            return Err(Refusal::new(
                "group-key-expression",
                None,
                format!(
                    "GROUP BY `{expr}` is an expression; group only by a declared group-key column with a public domain"
                ),
            ));
        };
        let (src_table, src) = resolve(input, c)?;
        let spec = manifests[&src_table]
            .column(&src)
            .ok_or_else(|| conditional_raw(&src_table, &src))?;
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
        let Some(domain) = spec.domain.clone() else {
            return Err(Refusal::new(
                "no-public-domain",
                Some(format!("{src_table}.{src}")),
                format!(
                    "column `{src}` of `{src_table}` has no public domain in the manifest, so its groups cannot be released without DP partition selection; group by one of: {}",
                    group_keys(manifest)
                ),
            ));
        };
        keys.push(GroupKey {
            input: c.clone(),
            source: src,
            domain,
        });
    }

    let mut aggregates = Vec::new();
    for expr in &aggregate.aggr_expr {
        aggregates.push(dp_aggregate(strip_alias(expr), input, manifests)?);
    }

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
        table,
        input: input.clone(),
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

/// Only scans, filters, projections and aliases may feed a DP aggregate.
fn check_aggregate_input(input: &LogicalPlan) -> Result<(), Refusal> {
    let mut refusal = None;
    let _ = input.apply(|node| {
        let bad = match node {
            LogicalPlan::TableScan(_)
            | LogicalPlan::Projection(_)
            | LogicalPlan::SubqueryAlias(_) => None,
            LogicalPlan::Filter(f) if f.predicate.contains_outer() => Some("a correlated subquery"),
            LogicalPlan::Filter(f) if has_subquery(&f.predicate) => Some("a subquery in WHERE"),
            LogicalPlan::Filter(_) => None,
            other => Some(describe(other)),
        };
        if let Some(what) = bad {
            refusal = Some(Refusal::new(
                "aggregate-input",
                None,
                format!("{what} below a DP aggregate is not admitted: one person could then change many released cells. Aggregate directly over one dataset, with WHERE filters on its columns"),
            ));
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    refusal.map_or(Ok(()), Err)
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

fn single_table(input: &LogicalPlan) -> Result<String, Refusal> {
    let mut tables = Vec::new();
    let _ = input.apply(|node| {
        if let LogicalPlan::TableScan(s) = node {
            tables.push(s.table_name.table().to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    match tables.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(Refusal::new(
            "aggregate-input",
            None,
            format!(
                "a DP aggregate must read exactly one dataset; this one reads {}",
                tables.len()
            ),
        )),
    }
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

fn dp_aggregate(
    expr: &Expr,
    input: &LogicalPlan,
    manifests: &BTreeMap<String, Manifest>,
) -> Result<DpAggregate, Refusal> {
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
    let kind = match name.as_str() {
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
            let q = params
                .args
                .get(1)
                .map(strip_alias)
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
                .filter(|q| (0.0..=1.0).contains(q));
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
    };
    if kind == AggregateKind::Count {
        return match params.args.first().map(strip_alias) {
            None | Some(Expr::Literal(..)) => Ok(DpAggregate {
                kind,
                input: None,
                source: None,
            }),
            Some(Expr::Column(c)) => {
                resolve(input, c)?;
                Ok(DpAggregate {
                    kind,
                    input: Some(c.clone()),
                    source: None,
                })
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
        return Err(Refusal::new(
            "derived-column",
            named_source().map(|(t, c)| format!("{t}.{c}")),
            format!(
                "`{expr}` aggregates a computed expression; aggregate a plain dataset column so its manifest bounds apply"
            ),
        ));
    };
    let (table, source) = resolve(input, &c)?;
    let spec = manifests[&table]
        .column(&source)
        .ok_or_else(|| conditional_raw(&table, &source))?;
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
    Ok(DpAggregate {
        kind,
        input: Some(c),
        source: Some((source, spec.ty, bounds)),
    })
}
