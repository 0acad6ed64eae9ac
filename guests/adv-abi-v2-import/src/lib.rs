//! Adversarial: built against a future ABI whose imports live in `unseen_v2`.
use udf_sdk::{Ctx, JobResult};

#[link(wasm_import_module = "unseen_v2")]
unsafe extern "C" {
    fn query(sql_ptr: *const u8, sql_len: usize) -> i32;
}

fn run(_ctx: &mut Ctx) -> JobResult {
    let sql = "SELECT COUNT(*) FROM residents";
    // SAFETY: `sql` is live for the call.
    let n = unsafe { query(sql.as_ptr(), sql.len()) };
    core::hint::black_box(n);
    Ok(())
}

udf_sdk::job!(run);
