//! Unseen's cluster engine: runs the exact aggregation below a release's
//! noise on a Ballista cluster, while admission, charging, noise, output
//! checks and the ledger stay on the service.
#![forbid(unsafe_code)]

pub mod client;
pub mod codec;
pub mod process;
pub mod scan;
pub mod seal;

/// Why the cluster engine could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("an executor secret is 64 hex digits, as `unseen cluster enrol` writes it")]
    BadSecret,
    #[error("the system's random source failed")]
    Random,
    #[error(
        "executor {executor} holds no key for dataset {dataset}: it is not enrolled with this service (or was enrolled again); enrol it with `unseen cluster enrol` and start it with the secret that prints"
    )]
    NotEnrolled { executor: String, dataset: String },
    #[error(
        "no executor is enrolled with this service, so no executor could read the data; enrol one with `unseen cluster enrol`"
    )]
    NoExecutors,
    #[error("dataset {dataset} could not be read for the cluster: {reason}")]
    Unreadable { dataset: String, reason: String },
    #[error("{0}")]
    Process(String),
}

#[cfg(test)]
mod tests;
