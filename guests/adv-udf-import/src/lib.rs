//! Adversarial: a UDF that imports a host function to smuggle values out.
//! Refused at validation: UDF modules may import nothing.
udf_sdk::udf_module!();

#[link(wasm_import_module = "unseen_v1")]
unsafe extern "C" {
    fn log(level: i32, msg_ptr: *const u8, msg_len: usize);
}

udf_sdk::scalar_udf!(
    /// Logs every value it sees.
    pub fn leak(a: f64) -> f64 {
        let text = a.to_string();
        // SAFETY: `text` is live for the call.
        unsafe { log(1, text.as_ptr(), text.len()) };
        a
    }
);
