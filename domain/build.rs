//! Builds the example guests in `guests/` for wasm32 and embeds them, so the
//! `unseen` binary carries the demo's jobs with it.

use std::path::PathBuf;

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

/// Exports the git commit the binary is built from (`unknown` outside a
/// git checkout), for `unseen --version`. Uncommitted changes are not
/// marked: the build script reruns when HEAD moves, not on every edit.
fn git_commit() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // Rebuilt when HEAD moves (a checkout or a commit on the branch).
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let dir = PathBuf::from(dir);
        println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", dir.join(head_ref).display());
        }
        println!(
            "cargo:rerun-if-changed={}",
            dir.join("packed-refs").display()
        );
    }
    println!("cargo:rustc-env=UNSEEN_GIT_COMMIT={commit}");
}

fn main() {
    git_commit();
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    engine_versions(&manifest_dir.join("../Cargo.lock"));
    let guests = unseen_guest_build::guests_dir();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target = out.join("guests-target");
    println!("cargo:rerun-if-changed={}", guests.display());
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../udf-sdk/src").display()
    );
    let dir = unseen_guest_build::build(&target).unwrap_or_else(|e| panic!("{e}"));
    let mut code = String::new();
    for guest in GUESTS {
        let path = unseen_guest_build::wasm_path(&dir, guest);
        code.push_str(&format!(
            "/// The `{guest}` guest module.\npub const {}: &[u8] = include_bytes!({:?});\n",
            guest.to_uppercase(),
            path.display().to_string()
        ));
    }
    std::fs::write(out.join("guests.rs"), code).expect("write guests.rs");
}
