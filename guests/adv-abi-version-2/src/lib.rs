//! Adversarial: imports only ABI v1 functions but claims ABI version 2.
//! The exports are written by hand instead of with `udf_sdk::job!`.
use udf_sdk::{Ctx, JobResult};

fn run(ctx: &mut Ctx) -> JobResult {
    ctx.log(udf_sdk::LogLevel::Info, "this line must never be written");
    Ok(())
}

/// Entry point.
#[unsafe(no_mangle)]
pub extern "C" fn unseen_main() -> i32 {
    udf_sdk::__run_job(run)
}

/// Claims a version this host does not speak.
#[unsafe(no_mangle)]
pub extern "C" fn unseen_abi_version() -> i32 {
    2
}
