//! Builds the example guests in `guests/` for wasm32 and embeds them, so the
//! `unseen` binary carries the demo's jobs with it.

use std::path::PathBuf;
use std::process::Command;

const GUESTS: &[&str] = &[
    "district_income",
    "chronic_disease",
    "refused_id_number",
    "refused_raw_income",
    "udf_light",
    "udf_gcd",
    "sme_credit_risk",
    "udf_sme_score",
];

/// Exports the versions of the engines the binary links, as `Cargo.lock`
/// pins them, for `unseen --version`.
fn engine_versions(lock: &std::path::Path) {
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(lock).unwrap_or_default();
    for (package, var) in [
        ("wasmtime", "UNSEEN_WASMTIME_VERSION"),
        ("datafusion", "UNSEEN_DATAFUSION_VERSION"),
        ("opendp", "UNSEEN_OPENDP_VERSION"),
    ] {
        let wanted = format!("name = \"{package}\"");
        let version = text
            .split("[[package]]")
            .find(|block| block.lines().any(|l| l.trim() == wanted))
            .and_then(|block| {
                block
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("version = "))
                    .map(|v| v.trim_matches('"').to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        println!("cargo:rustc-env={var}={version}");
    }
}

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    engine_versions(&manifest_dir.join("../Cargo.lock"));
    let guests = manifest_dir.join("../guests");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target = out.join("guests-target");
    println!("cargo:rerun-if-changed={}", guests.display());
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../udf-sdk/src").display()
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guests)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "--target-dir",
        ])
        .arg(&target);
    // The outer build's flags and wrappers are for the host, not for wasm32.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("failed to run cargo for the guests");
    if !status.success() {
        panic!(
            "building the guests for wasm32 failed; install the target with `rustup target add wasm32-unknown-unknown`"
        );
    }
    let mut code = String::new();
    for guest in GUESTS {
        let path = target
            .join("wasm32-unknown-unknown/release")
            .join(format!("{guest}.wasm"));
        code.push_str(&format!(
            "/// The `{guest}` guest module.\npub const {}: &[u8] = include_bytes!({:?});\n",
            guest.to_uppercase(),
            path.display().to_string()
        ));
    }
    std::fs::write(out.join("guests.rs"), code).expect("write guests.rs");
}
