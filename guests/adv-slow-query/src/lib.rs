//! Adversarial: holds a job slot with one long query, given as the
//! parameter `sql` (for example a recursive count that never ends in time).
//! The service must stop it: at its per-query time limit, when its client
//! goes away, or when the service stops.
use udf_sdk::{Ctx, Error, JobResult};

fn run(ctx: &mut Ctx) -> JobResult {
    let sql = ctx
        .param("sql")
        .ok_or_else(|| Error::new("parameter `sql`: the query to run"))?;
    ctx.query(&sql)?;
    Ok(())
}

udf_sdk::job!(run);
