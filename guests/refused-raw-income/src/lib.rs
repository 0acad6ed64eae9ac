//! Tries to read raw `annual_income` rows, a conditional column that may
//! leave only as a DP aggregate. The policy must refuse it.
use udf_sdk::{Ctx, JobResult};

fn run(ctx: &mut Ctx) -> JobResult {
    let released = ctx.query("SELECT district, annual_income FROM residents")?;
    ctx.emit("raw_incomes", &released.table)
}

udf_sdk::job!(run);
