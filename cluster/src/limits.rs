//! The service's join row cap on the cluster.
//!
//! The service enforces a query's limits with `policy::limits::LimitRule`, a
//! physical optimizer rule; a cluster plans physically on its scheduler,
//! whose adaptive planner runs a fixed set of rules of its own. So the cap
//! travels as a setting of the job (`unseen.join_rows`, a DataFusion
//! configuration extension the scheduler and executors know), and each
//! executor caps the joins of every stage plan it decodes
//! (`policy::limits::cap_joins`). On the cluster the cap counts the rows of
//! one join in one task, not over all tasks together. The time limit stays
//! on the service, which cancels the job when it passes (`crate::cancel`).

use std::any::Any;
use std::sync::Arc;

use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;

/// What a cluster session's jobs carry of the service's limits. (Written
/// out rather than with DataFusion's `extensions_options!`, whose entries
/// leave out the `unseen.` prefix a job's settings need.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterLimits {
    /// Rows one join may produce in one task; 0 is no cap.
    pub join_rows: u64,
}

impl ConfigExtension for ClusterLimits {
    const PREFIX: &'static str = "unseen";
}

impl ExtensionOptions for ClusterLimits {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> DfResult<()> {
        match key {
            "join_rows" => {
                self.join_rows = value.parse().map_err(|e| {
                    DataFusionError::Configuration(format!(
                        "unseen.join_rows is a number of rows, not `{value}`: {e}"
                    ))
                })?;
                Ok(())
            }
            _ => Err(DataFusionError::Configuration(format!(
                "there is no setting unseen.{key}"
            ))),
        }
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        vec![ConfigEntry {
            key: format!("{}.join_rows", Self::PREFIX),
            value: Some(self.join_rows.to_string()),
            description: "Rows one join may produce in one task; 0 is no cap",
        }]
    }
}

impl ClusterLimits {
    /// Limits carrying a cap of `join_rows` (none if `None`).
    pub fn with_join_rows(join_rows: Option<u64>) -> ClusterLimits {
        ClusterLimits {
            join_rows: join_rows.unwrap_or(0),
        }
    }
}

/// `inputs` with every join capped at the job's `unseen.join_rows` (as they
/// are if it sets none).
pub(crate) fn capped(
    inputs: &[Arc<dyn ExecutionPlan>],
    ctx: &TaskContext,
) -> DfResult<Vec<Arc<dyn ExecutionPlan>>> {
    let cap = ctx
        .session_config()
        .options()
        .extensions
        .get::<ClusterLimits>()
        .map_or(0, |limits| limits.join_rows);
    if cap == 0 {
        return Ok(inputs.to_vec());
    }
    inputs
        .iter()
        .map(|input| unseen_policy::limits::cap_joins(Arc::clone(input), cap))
        .collect()
}
