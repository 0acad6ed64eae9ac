//! Builds the guests in `guests/` for wasm32, for the `unseen` build script
//! (which embeds the example guests in the binary) and for the test suites
//! (which also load the adversarial ones): one nested `cargo build`, written
//! once.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Variables of the outer build that are for the host, not for wasm32.
const HOST_ONLY: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
];

/// Why the guests were not built.
#[derive(Debug)]
pub struct BuildError(String);

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BuildError {}

/// The `guests/` directory of this workspace, next to the crate that
/// asks: read when called (cargo sets `CARGO_MANIFEST_DIR` for build
/// scripts and test runs), because cargo reuses a compiled crate from a
/// copy of the workspace at another path, whose compile-time path may be
/// gone.
pub fn guests_dir() -> PathBuf {
    let caller = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    caller.join("../guests")
}

/// Builds every guest crate for `wasm32-unknown-unknown` in release mode
/// into `target_dir` and returns the directory holding the `.wasm` files.
/// Uses the `cargo` of the outer build (`$CARGO`) when there is one.
pub fn build(target_dir: &Path) -> Result<PathBuf, BuildError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(guests_dir())
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "--target-dir",
        ])
        .arg(target_dir);
    for var in HOST_ONLY {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .map_err(|e| BuildError(format!("could not run cargo to build the guests: {e}")))?;
    if !status.success() {
        return Err(BuildError(
            "building the guests for wasm32 failed; install the target with `rustup target add wasm32-unknown-unknown`".into(),
        ));
    }
    Ok(target_dir.join("wasm32-unknown-unknown/release"))
}

/// The `.wasm` file of the guest crate `crate_name` (`adv-memory-bomb`) in
/// a directory [`build`] returned.
pub fn wasm_path(dir: &Path, crate_name: &str) -> PathBuf {
    dir.join(format!("{}.wasm", crate_name.replace('-', "_")))
}
