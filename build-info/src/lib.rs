//! What the `unseen` binary was built from, fixed at compile time: the
//! provenance half of an attestation (the binary's own SHA-256, the
//! measurement half, is taken when it runs) and `unseen --version`.
#![forbid(unsafe_code)]

/// The git commit the binary was built from (`unknown` outside a checkout).
pub const GIT_COMMIT: &str = env!("UNSEEN_GIT_COMMIT");
/// The workspace's `Cargo.lock`, whose SHA-256 names every dependency version.
pub const CARGO_LOCK: &[u8] = include_bytes!("../../Cargo.lock");
/// The product's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The locked versions of the engines that handle data.
pub const WASMTIME: &str = env!("UNSEEN_WASMTIME_VERSION");
pub const DATAFUSION: &str = env!("UNSEEN_DATAFUSION_VERSION");
pub const OPENDP: &str = env!("UNSEEN_OPENDP_VERSION");

/// `unseen --version`: the version, the commit and the engines.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("UNSEEN_GIT_COMMIT_SHORT"),
    ")\nwasmtime ",
    env!("UNSEEN_WASMTIME_VERSION"),
    ", DataFusion ",
    env!("UNSEEN_DATAFUSION_VERSION"),
    ", OpenDP ",
    env!("UNSEEN_OPENDP_VERSION"),
);
