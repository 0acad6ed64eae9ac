//! From SQL text to an admitted plan, under options that forbid anything but
//! a read-only query over the grant's tables.

use std::collections::BTreeMap;

use arrow::array::AsArray;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{DataFrame, SessionContext};
use udf_sdk::{ColumnValues, QueryResult, Table};

use crate::admission::{self, Admitted, Refusal};
use crate::manifest::Manifest;

/// Why a query produced no release.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy refused the query; nothing was read or spent.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The SQL could not be parsed or planned.
    #[error("the query could not be planned: {0}; check the SQL and the column names")]
    Sql(String),
    /// A budget argument was invalid.
    #[error("budget: {0}")]
    Budget(String),
    /// opendp could not build or run a mechanism.
    #[error("noise mechanism failed: {0}")]
    Noise(String),
    /// An open extract was larger than allowed.
    #[error("the open extract has more than {limit} rows; add a WHERE clause or aggregate")]
    TooManyRows { limit: usize },
    /// DataFusion failed while executing an admitted plan.
    #[error("query execution failed: {0}")]
    Execution(String),
    /// The query needed more than a per-query limit allows (memory, join
    /// output); shown only for open-column queries.
    #[error("the query is too large: {0}")]
    TooLarge(String),
    /// The query ran past the per-query time limit and was stopped; shown
    /// only for open-column queries.
    #[error(
        "the query was stopped after the per-query time limit of {seconds} s; filter or aggregate earlier, or ask the operator for a longer `serve --query-timeout`"
    )]
    TimedOut { seconds: f64 },
}

impl From<DataFusionError> for PolicyError {
    fn from(e: DataFusionError) -> Self {
        PolicyError::Execution(e.to_string())
    }
}

impl From<arrow::error::ArrowError> for PolicyError {
    fn from(e: arrow::error::ArrowError) -> Self {
        PolicyError::Execution(e.to_string())
    }
}

/// Options under which analysts' SQL is planned: read-only queries only.
pub fn sql_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Tables (with their joins and comma-separated entries) a query may read.
pub const MAX_RELATIONS: usize = 32;
/// `SELECT`s a query may hold (its subqueries and set operations).
pub const MAX_SELECTS: usize = 64;
/// Operators (arithmetic, comparison, concatenation, `AND`, `OR`...) a
/// query may hold. A chain `a + b + c + ...` parses into a tree as deep as
/// it is long, and planning walks it recursively: a thousand terms
/// overflowed a 2 MiB thread's stack and aborted the service. Planning time
/// grows faster than the chain (a 250-term sum planned for about 20 s in a
/// debug build, 40 terms in about 1 s), and planning is free, so the limit
/// is kept low.
pub const MAX_OPERATORS: usize = 64;

/// Refuses, from the query's tokens alone, a query too large to plan: the
/// planner recurses once per set operation and per join, so a chain of
/// thousands of `UNION ALL`s overflows its stack (taking the service with
/// it), and thousands of comma-separated tables take minutes to plan. The
/// tokenizer itself is a flat loop, so no input can make this check costly.
fn check_size(sql: &str) -> Result<(), PolicyError> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

    // A query the tokenizer cannot read is reported by the parser next.
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(());
    };
    let (mut relations, mut selects, mut operators) = (0usize, 0usize, 0usize);
    // Per parenthesis depth: whether its tokens are in a FROM list, where a
    // comma separates two tables.
    let mut in_from = vec![false];
    for token in &tokens {
        match token {
            Token::LParen => in_from.push(false),
            Token::RParen if in_from.len() > 1 => {
                in_from.pop();
            }
            Token::Comma if in_from.last() == Some(&true) => relations += 1,
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::DuckIntDiv
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Spaceship
            | Token::Ampersand
            | Token::Pipe
            | Token::Caret
            | Token::ShiftLeft
            | Token::ShiftRight => operators += 1,
            Token::Word(w)
                if w.quote_style.is_none()
                    && matches!(
                        w.keyword,
                        Keyword::AND | Keyword::OR | Keyword::XOR | Keyword::LIKE | Keyword::ILIKE
                    ) =>
            {
                operators += 1;
            }
            Token::Word(w) if w.quote_style.is_none() => {
                let here = in_from.last_mut().expect("the outermost level stays");
                match w.keyword {
                    Keyword::SELECT => {
                        selects += 1;
                        *here = false;
                    }
                    Keyword::FROM => {
                        relations += 1;
                        *here = true;
                    }
                    Keyword::JOIN => relations += 1,
                    Keyword::WHERE
                    | Keyword::GROUP
                    | Keyword::HAVING
                    | Keyword::ORDER
                    | Keyword::LIMIT
                    | Keyword::UNION
                    | Keyword::INTERSECT
                    | Keyword::EXCEPT
                    | Keyword::ON
                    | Keyword::USING => *here = false,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if relations > MAX_RELATIONS || selects > MAX_SELECTS {
        return Err(PolicyError::Refused(Refusal::new(
            "too-complex",
            None,
            format!(
                "the query reads {relations} tables and holds {selects} SELECTs; a query may read at most {MAX_RELATIONS} tables (counting joins and comma-separated entries) and hold at most {MAX_SELECTS} SELECTs. Split it into several queries, or aggregate before combining"
            ),
        )));
    }
    if operators > MAX_OPERATORS {
        return Err(PolicyError::Refused(Refusal::new(
            "too-complex",
            None,
            format!(
                "the query holds {operators} operators; a query may hold at most {MAX_OPERATORS} (arithmetic, comparisons, AND, OR, LIKE, ||). Split the computation into several queries"
            ),
        )));
    }
    Ok(())
}

/// Plans `sql` in `ctx` (which must hold only the grant's tables) and admits it.
pub async fn plan_query(
    ctx: &SessionContext,
    sql: &str,
    manifests: &BTreeMap<String, Manifest>,
) -> Result<Admitted, PolicyError> {
    check_size(sql)?;
    let df = ctx
        .sql_with_options(sql, sql_options())
        .await
        .map_err(|e| PolicyError::Sql(planning_message(e)))?;
    let plan = df.logical_plan().clone();
    // Before the optimizer folds any constant: folding an unbounded
    // `repeat` alone could take the service down.
    crate::total::check_cost(&plan).map_err(PolicyError::Refused)?;
    crate::total::install(ctx);
    let optimized = ctx
        .state()
        .optimize(&plan)
        .map_err(|e| PolicyError::Sql(planning_message(e)))?;
    admission::admit(&plan, &optimized, manifests).map_err(PolicyError::Refused)
}

/// Refuses to run an admitted plan in a session whose expressions are not
/// total: an evaluation error there could tell whether some row exists.
pub(crate) fn require_total(
    state: &datafusion::execution::context::SessionState,
) -> Result<(), PolicyError> {
    if crate::total::is_installed(state) {
        Ok(())
    } else {
        Err(PolicyError::Execution(
            "the session does not make expressions total; plan the query with plan_query in this session first".to_string(),
        ))
    }
}

fn planning_message(e: DataFusionError) -> String {
    // Planning never reads data, so its messages hold only the query's own text.
    e.strip_backtrace().trim().to_string()
}

/// Runs an admitted open-columns query and returns its rows as a table.
pub async fn release_open(
    ctx: &SessionContext,
    plan: datafusion::logical_expr::LogicalPlan,
    max_rows: usize,
) -> Result<QueryResult, PolicyError> {
    let state = ctx.state();
    require_total(&state)?;
    let limits = crate::limits::ExecutionLimits::of(&state);
    let df = DataFrame::new(state, plan).limit(0, Some(max_rows + 1))?;
    let schema = df.schema().clone();
    // The data read here is open, so which limit stopped the query may be said.
    let batches = crate::limits::within_time(&limits, async {
        df.collect().await.map_err(|e| {
            crate::limits::too_large(&e, &limits)
                .or_else(|| crate::limits::timed_out(&e, &limits))
                .unwrap_or_else(|| e.into())
        })
    })
    .await?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows > max_rows {
        return Err(PolicyError::TooManyRows { limit: max_rows });
    }
    let mut table = Table::default();
    for (i, field) in schema.fields().iter().enumerate() {
        let values = match field.data_type() {
            DataType::Int64 => ColumnValues::Int(
                batches
                    .iter()
                    .flat_map(|b| {
                        b.column(i)
                            .as_primitive::<Int64Type>()
                            .iter()
                            .map(|v| v.unwrap_or(0))
                            .collect::<Vec<_>>()
                    })
                    .collect(),
            ),
            DataType::Float64 => ColumnValues::Float(
                batches
                    .iter()
                    .flat_map(|b| {
                        b.column(i)
                            .as_primitive::<Float64Type>()
                            .iter()
                            .map(|v| v.unwrap_or(f64::NAN))
                            .collect::<Vec<_>>()
                    })
                    .collect(),
            ),
            _ => {
                let mut text = Vec::with_capacity(rows);
                for b in &batches {
                    let c = arrow::compute::cast(b.column(i), &DataType::Utf8)?;
                    text.extend(
                        c.as_string::<i32>()
                            .iter()
                            .map(|v| v.unwrap_or("").to_string()),
                    );
                }
                ColumnValues::Text(text)
            }
        };
        table = table.with(field.name().clone(), values);
    }
    Ok(QueryResult {
        confidence: 1.0,
        epsilon_spent: 0.0,
        cached: false,
        table,
    })
}
