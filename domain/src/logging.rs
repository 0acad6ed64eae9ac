//! Log filtering: only Unseen's own crates may log below WARN.
//!
//! Dependencies log what they see, and the engine sees raw data: at TRACE,
//! DataFusion's Parquet pruning prints decrypted page statistics (minimum
//! and maximum values of prohibited columns). So whatever level is asked
//! for applies to Unseen's crates only; everything else is capped at WARN.

use tracing_subscriber::filter::{LevelFilter, Targets};

/// Crates whose log lines Unseen writes itself and keeps free of raw values.
const OWN_TARGETS: &[&str] = &[
    "unseen",
    "unseen_core",
    "unseen_policy",
    "unseen_sandbox",
    "unseen_ledger",
    "unseen_datasets",
];

/// A filter at `level` for Unseen's crates and WARN for every other crate.
pub fn filter(level: LevelFilter) -> Targets {
    OWN_TARGETS.iter().fold(
        Targets::new().with_default(LevelFilter::WARN.min(level)),
        |t, target| t.with_target(*target, level),
    )
}

/// Reads the level from `UNSEEN_LOG` (error, warn, info, debug, trace; default warn).
pub fn level_from_env() -> LevelFilter {
    std::env::var("UNSEEN_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LevelFilter::WARN)
}
