//! Policy integration tests: the attack corpus, admissions, DP releases and manifests.

mod attacks;
mod checks;
mod clamped_sum;
mod computed;
mod dp;
mod dp_audit;
mod dp_more;
mod extract;
mod joins;
mod limits;
mod manifest;
mod oracles;
mod selection;
mod support;
