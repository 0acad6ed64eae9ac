//! Reads, at compile time, what the binary is built from: the git commit
//! and the locked versions of the engines that handle data. (The SHA-256 of
//! `Cargo.lock` is taken from the file the crate embeds.)

use std::path::{Path, PathBuf};

/// Exports the versions of the engines the binary links, as `Cargo.lock`
/// pins them.
fn engine_versions(lock: &Path) {
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
/// git checkout). Uncommitted changes are not marked: the build script
/// reruns when HEAD moves, not on every edit (the binary's own SHA-256,
/// taken when it runs, is what identifies the code).
fn git_commit(root: &Path) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    };
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
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
    let short: String = commit.chars().take(12).collect();
    println!("cargo:rustc-env=UNSEEN_GIT_COMMIT_SHORT={short}");
}

fn main() {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("..");
    git_commit(&root);
    engine_versions(&root.join("Cargo.lock"));
}
