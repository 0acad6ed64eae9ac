//! Adversarial: keeps allocating 1 MiB blocks and touching them until the
//! linear memory limit stops it.
use udf_sdk::{Ctx, JobResult};

fn run(_ctx: &mut Ctx) -> JobResult {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; 1 << 20];
        block[hoard.len() % (1 << 20)] = 1;
        hoard.push(core::hint::black_box(block));
    }
}

udf_sdk::job!(run);
