//! Adversarial: submits queries until the query limit stops it, ignoring
//! every answer (a differencing attack would look like this).
use udf_sdk::{Ctx, JobResult};

fn run(ctx: &mut Ctx) -> JobResult {
    for i in 0..10_000 {
        let sql = format!("SELECT COUNT(*) AS n FROM residents WHERE annual_income > {i}");
        let _ = core::hint::black_box(ctx.query(&sql));
    }
    Ok(())
}

udf_sdk::job!(run);
