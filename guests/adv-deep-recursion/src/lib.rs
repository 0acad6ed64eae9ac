//! Adversarial: recurses without bound. Only scalars live in each frame, so
//! it exhausts the host's wasm stack limit rather than the shadow stack in
//! linear memory.
use udf_sdk::{Ctx, JobResult};

fn deep(n: u64, limit: u64) -> u64 {
    if n >= limit {
        return n;
    }
    // Work after the call keeps it from becoming a loop.
    deep(n + 1, limit).wrapping_mul(31) ^ n
}

fn run(ctx: &mut Ctx) -> JobResult {
    // The host supplies no such parameter, but the compiler cannot know that.
    let limit = ctx
        .param("depth")
        .and_then(|d| d.parse().ok())
        .unwrap_or(u64::MAX);
    let r = deep(0, limit);
    ctx.log(udf_sdk::LogLevel::Info, &format!("reached {r}"));
    Ok(())
}

udf_sdk::job!(run);
