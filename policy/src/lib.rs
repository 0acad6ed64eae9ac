//! The policy engine: what a query may compute and what of it may leave.
//!
//! Input: a DataFusion logical plan, the manifests of the datasets a grant
//! exposes, and an epsilon to spend. Output: a refusal that names the column
//! and the rule, or a release — DP estimates from `opendp` with confidence
//! intervals, or open columns as they are.
//!
//! Invariants:
//! - admission looks at plans, never at SQL text;
//! - no function here returns a value of a prohibited column;
//! - a conditional value leaves only inside a noised aggregate;
//! - the cost of a release is known before any data is read, so the caller
//!   can charge the budget first.
#![forbid(unsafe_code)]

pub mod admission;
#[cfg(feature = "bench")]
pub mod bench;
pub mod checks;
pub mod clamped_sum;
pub mod dp;
pub mod facts;
pub mod limits;
pub mod manifest;
pub mod mask;
mod query;
pub mod total;

pub use admission::{Admitted, Refusal};
pub use dp::{
    Accounting, Budget, Charged, Cost, DpPlan, Measured, Release, fingerprint, plan_release,
    plan_release_with, plan_release_zcdp, release_aggregate, render,
};
pub use facts::{DataFacts, TableFacts, find_bound_facts, find_table_facts};
pub use limits::ExecutionLimits;
pub use manifest::{Class, Manifest, ManifestError, ManifestErrors};
pub use query::{MAX_OPERATORS, PolicyError, plan_query, release_open, sql_options};
