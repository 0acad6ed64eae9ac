//! Adversarial: spins forever without calling the host. Stopped by fuel, or
//! by the wall-clock deadline when fuel is plentiful.
use udf_sdk::{Ctx, JobResult};

fn run(_ctx: &mut Ctx) -> JobResult {
    let mut x: u64 = 0;
    loop {
        x = core::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}

udf_sdk::job!(run);
