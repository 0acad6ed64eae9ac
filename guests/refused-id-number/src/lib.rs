//! Tries to read resident ID numbers, a prohibited column. The policy must
//! refuse it; the job reports the refusal and emits nothing.
use udf_sdk::{Ctx, JobResult};

fn run(ctx: &mut Ctx) -> JobResult {
    let released = ctx.query("SELECT id_number FROM residents")?;
    ctx.emit("id_numbers", &released.table)
}

udf_sdk::job!(run);
