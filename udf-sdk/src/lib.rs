//! Guest SDK for Unseen: what a job author links into a `wasm32-unknown-unknown` module.
//!
//! A job never touches raw data. It sends SQL to the host through the
//! [`Ctx`] handle, receives only what the policy released (differentially
//! private estimates with confidence intervals), and emits named tables that
//! go to quarantine for human review. The wire format in [`abi`] is shared
//! with the host, so both sides encode and decode the same bytes.
//!
//! ```ignore
//! use udf_sdk::{Ctx, JobResult, Table};
//!
//! fn run(ctx: &mut Ctx) -> JobResult {
//!     let released = ctx.query("SELECT district, COUNT(*) AS n FROM residents GROUP BY district")?;
//!     ctx.emit("per_district", &released.table)?;
//!     Ok(())
//! }
//! udf_sdk::job!(run);
//! ```
//!
//! A UDF module is different: it runs inside a query, sees raw values and
//! may import nothing. [`udf_module!`] and [`scalar_udf!`] generate its
//! exports; the batch layout is in [`udf`].
#![deny(unsafe_code)]

pub mod abi;
mod table;
pub mod udf;

pub use table::{Column, ColumnValues, Estimate, QueryResult, Table};
pub use udf::{OutputHeader, UdfType};

#[cfg(target_arch = "wasm32")]
mod guest;
#[cfg(target_arch = "wasm32")]
pub use guest::{__run_job, Ctx, JobResult, LogLevel};

/// The policy's verdict on a query, without running it or spending budget.
///
/// Returned by `Ctx::dry_run`: whether the query would be admitted, why
/// (or why not), the epsilon it would cost and the confidence level at
/// which its intervals would be stated.
#[derive(Debug, Clone, PartialEq)]
pub struct DryRun {
    /// True when the policy would admit the query as written.
    pub admitted: bool,
    /// The policy's explanation: the rule that refuses it, or how it would be released.
    pub reason: String,
    /// Epsilon the query would spend if run now (0 for a cached repeat or a refusal).
    pub epsilon: f64,
    /// Confidence level of the intervals a real run would carry, e.g. `0.95`.
    pub confidence: f64,
}

/// An error a job sees: a refusal by the policy, a limit, or a malformed reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    /// What went wrong, as the host or the SDK explained it.
    pub message: String,
}

impl Error {
    /// Creates an error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<abi::DecodeError> for Error {
    fn from(e: abi::DecodeError) -> Self {
        Error::new(e.to_string())
    }
}

/// Declares the job's entry point and the ABI exports the host looks for.
///
/// `job!(run)` where `run: fn(&mut Ctx) -> JobResult`.
#[macro_export]
macro_rules! job {
    ($run:path) => {
        /// Entry point called by the host once per job run.
        #[unsafe(no_mangle)]
        pub extern "C" fn unseen_main() -> i32 {
            $crate::__run_job($run)
        }

        /// The ABI version this module was built against.
        #[unsafe(no_mangle)]
        pub extern "C" fn unseen_abi_version() -> i32 {
            $crate::abi::ABI_VERSION as i32
        }
    };
}
