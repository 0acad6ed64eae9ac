//! Count of residents and mean annual income per district, released with
//! differential privacy and emitted for review.
use udf_sdk::{ColumnValues, Ctx, JobResult, LogLevel, Table};

const SQL: &str = "SELECT district, COUNT(*) AS residents, AVG(annual_income) AS mean_income \
                   FROM residents GROUP BY district ORDER BY district";

fn run(ctx: &mut Ctx) -> JobResult {
    let released = ctx.query(SQL)?;
    ctx.log(
        LogLevel::Info,
        &format!(
            "released {} districts at {:.0}% confidence for epsilon {:.3}",
            released.table.rows(),
            released.confidence * 100.0,
            released.epsilon_spent
        ),
    );
    // Post-processing of released values is free: keep the columns the
    // reviewer needs, in a stable order.
    let mut table = Table::default();
    for name in ["district", "residents", "mean_income"] {
        let values = released
            .table
            .column(name)
            .cloned()
            .unwrap_or(ColumnValues::Text(Vec::new()));
        table = table.with(name, values);
    }
    ctx.emit("income_by_district", &table)
}

udf_sdk::job!(run);
