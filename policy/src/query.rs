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

/// Plans `sql` in `ctx` (which must hold only the grant's tables) and admits it.
pub async fn plan_query(
    ctx: &SessionContext,
    sql: &str,
    manifests: &BTreeMap<String, Manifest>,
) -> Result<Admitted, PolicyError> {
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
    require_total(&ctx.state())?;
    let df = DataFrame::new(ctx.state(), plan).limit(0, Some(max_rows + 1))?;
    let schema = df.schema().clone();
    let batches = df.collect().await?;
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
