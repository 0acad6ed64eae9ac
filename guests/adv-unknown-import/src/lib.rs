//! Adversarial: imports a host function the ABI does not have.
use udf_sdk::{Ctx, JobResult};

#[link(wasm_import_module = "unseen_v1")]
unsafe extern "C" {
    fn steal(dst: *mut u8, dst_len: usize) -> i32;
}

fn run(_ctx: &mut Ctx) -> JobResult {
    let mut buf = [0u8; 64];
    // SAFETY: `buf` is live and writable for the call.
    let n = unsafe { steal(buf.as_mut_ptr(), buf.len()) };
    core::hint::black_box((n, buf));
    Ok(())
}

udf_sdk::job!(run);
