//! Adversarial: emits one table far larger than the output limit.
use udf_sdk::{ColumnValues, Ctx, JobResult, Table};

fn run(ctx: &mut Ctx) -> JobResult {
    // One 5 MiB cell: cheap to build, over the 4 MiB output limit.
    let cell = "x".repeat(5 << 20);
    let table = Table::default().with("padding", ColumnValues::Text(vec![cell]));
    ctx.emit("everything", &table)
}

udf_sdk::job!(run);
