//! End-to-end tests of Unseen across crates live in `it/`: the demo flow,
//! canaries in prohibited columns, ledger tampering and CLI error paths.
#![forbid(unsafe_code)]
