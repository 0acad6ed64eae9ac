//! Asks the policy what a query would cost before spending on it, and emits
//! the verdict so the submitter can see it.
use udf_sdk::{ColumnValues, Ctx, JobResult, LogLevel, Table};

const SQL: &str = "SELECT district, COUNT(*) AS residents FROM residents GROUP BY district";

fn run(ctx: &mut Ctx) -> JobResult {
    let verdict = ctx.dry_run(SQL)?;
    ctx.log(
        LogLevel::Info,
        &format!(
            "admitted: {}; epsilon {:.3} at {:.0}% confidence; {}",
            verdict.admitted,
            verdict.epsilon,
            verdict.confidence * 100.0,
            verdict.reason
        ),
    );
    let table = Table::default()
        .with(
            "admitted",
            ColumnValues::Int(vec![i64::from(verdict.admitted)]),
        )
        .with("epsilon", ColumnValues::Float(vec![verdict.epsilon]))
        .with("confidence", ColumnValues::Float(vec![verdict.confidence]))
        .with("reason", ColumnValues::Text(vec![verdict.reason]));
    ctx.emit("dry_run", &table)
}

udf_sdk::job!(run);
