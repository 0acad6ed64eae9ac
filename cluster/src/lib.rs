//! Unseen's cluster engine: runs the exact aggregation below a release's
//! noise on a Ballista cluster, while admission, charging, noise, output
//! checks and the ledger stay on the service.
#![forbid(unsafe_code)]

pub mod cancel;
pub mod client;
pub mod codec;
pub mod limits;
pub mod process;
pub mod scan;
pub mod seal;
pub mod tls;
pub mod udf_rows;

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
    #[error(
        "the cluster identity could not be read ({0}): give the file `unseen cluster enrol` or `unseen cluster scheduler-identity` wrote"
    )]
    BadIdentity(String),
    #[error("cluster TLS: {0}")]
    Tls(String),
    #[error(
        "the cluster member at {address} and this one do not accept each other's identity ({reason}): every member's identity must come from the cluster authority of the service that runs the queries (`unseen cluster enrol` for an executor, `unseen cluster scheduler-identity` for the scheduler, both on that service)"
    )]
    IdentityRefused { address: String, reason: String },
    #[error("the cluster member at {address} does not answer: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("{0}")]
    Process(String),
}

/// The one input of a single-input plan node, from `children` as
/// DataFusion hands them to `replace_children`.
pub(crate) fn only_child(
    node: &str,
    mut children: Vec<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>,
) -> datafusion::error::Result<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
    if children.len() != 1 {
        return Err(datafusion::error::DataFusionError::Internal(format!(
            "{node} takes one input, not {}",
            children.len()
        )));
    }
    Ok(children.swap_remove(0))
}

#[cfg(test)]
mod tests;
