//! Adversarial: imports WASI's `fd_write` to reach a file descriptor.
use udf_sdk::{Ctx, JobResult};

#[link(wasm_import_module = "wasi_snapshot_preview1")]
unsafe extern "C" {
    fn fd_write(fd: i32, iovs: *const u32, iovs_len: usize, written: *mut usize) -> i32;
}

fn run(_ctx: &mut Ctx) -> JobResult {
    let text = b"leak\n";
    let iov = [text.as_ptr() as u32, text.len() as u32];
    let mut written = 0usize;
    // SAFETY: `iov` and `written` are live for the call; the host never links it.
    let rc = unsafe { fd_write(1, iov.as_ptr(), 1, &mut written) };
    if rc == 0 {
        Ok(())
    } else {
        Err(udf_sdk::Error::new("fd_write failed"))
    }
}

udf_sdk::job!(run);
