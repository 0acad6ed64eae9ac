//! Adversarial: emits small tables until the emit limit stops it.
use udf_sdk::{ColumnValues, Ctx, JobResult, Table};

fn run(ctx: &mut Ctx) -> JobResult {
    for i in 0..10_000i64 {
        let table = Table::default().with("i", ColumnValues::Int(vec![i]));
        ctx.emit(&format!("output_{i}"), &table)?;
    }
    Ok(())
}

udf_sdk::job!(run);
