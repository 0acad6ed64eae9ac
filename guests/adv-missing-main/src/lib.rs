//! Adversarial: declares its ABI version but has no `unseen_main` entry point.

/// The ABI version, without an entry point to go with it.
#[unsafe(no_mangle)]
pub extern "C" fn unseen_abi_version() -> i32 {
    udf_sdk::abi::ABI_VERSION as i32
}

/// A function under another name, so the module is not empty.
#[unsafe(no_mangle)]
pub extern "C" fn main_but_misspelled() -> i32 {
    0
}
