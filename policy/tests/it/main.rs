//! Policy integration tests: the attack corpus, admissions, DP releases and manifests.

mod attacks;
mod checks;
mod dp;
mod manifest;
mod support;
