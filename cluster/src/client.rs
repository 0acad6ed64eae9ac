//! The service's side: sessions whose plans run on the cluster, and the
//! sealed tables they read.

use std::path::Path;
use std::sync::Arc;

use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use datafusion::arrow::datatypes::Schema;
use datafusion::datasource::TableProvider;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionState;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use datafusion::parquet::encryption::decrypt::FileDecryptionProperties;

use crate::ClusterError;
use crate::cancel::{CancellingPlanner, SchedulerLink};
use crate::codec::UnseenLogicalCodec;
use crate::limits::ClusterLimits;
use crate::scan::{SealedFile, SealedTable};
use crate::seal::{Enrolled, KEY_LEN, seal_for_all};
use crate::tls::Identity;

/// A cluster as the service uses it: its scheduler, reached (like every
/// executor it fetches results from) over mutual TLS with the service's
/// identity.
#[derive(Debug, Clone)]
pub struct ClusterClient {
    scheduler: SchedulerLink,
    identity: Identity,
}

impl ClusterClient {
    /// The way to the scheduler.
    pub fn scheduler(&self) -> &SchedulerLink {
        &self.scheduler
    }

    /// A client of the scheduler at `scheduler` (`HOST:PORT`), as the
    /// member `identity` names.
    pub fn new(scheduler: &str, identity: Identity) -> ClusterClient {
        ClusterClient {
            scheduler: SchedulerLink::new(scheduler, &identity),
            identity,
        }
    }

    /// What the service shows the cluster's members.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// `state`, made to send the plans it executes to the scheduler: the
    /// same analyzer rules (so plans are total before they leave) and the
    /// same narrowed functions, the join row cap (`crate::limits`), Unseen's
    /// codec for what it carries, and
    /// jobs cancelled when their answer is no longer read
    /// ([`crate::cancel`]).
    pub fn distribute(&self, state: SessionState) -> Result<SessionState, ClusterError> {
        let join_rows = unseen_policy::ExecutionLimits::of(&state).join_rows;
        let config = state
            .config()
            .clone()
            .with_option_extension(ClusterLimits::with_join_rows(join_rows))
            .upgrade_for_ballista()
            .with_ballista_logical_extension_codec(Arc::new(UnseenLogicalCodec::default()))
            .with_ballista_job_name("unseen")
            // Pull tracking learns the job's id as soon as the scheduler
            // accepts it (push tracking only with its first status change),
            // so a query stopped early can always cancel its job; the price
            // is up to 50 ms between polls of its status.
            .set_bool(ballista_core::config::BALLISTA_CLIENT_PULL, true)
            .with_ballista_use_tls(true)
            .with_ballista_override_create_grpc_client_endpoint(self.scheduler.endpoint());
        let state = SessionStateBuilder::new_from_existing(state)
            .with_config(config)
            .build()
            .upgrade_for_ballista(self.scheduler.url.clone())
            .map_err(|e| ClusterError::Process(format!("the cluster session: {e}")))?;
        let planner = CancellingPlanner {
            inner: Arc::clone(state.query_planner()),
            scheduler: self.scheduler.clone(),
        };
        Ok(unseen_policy::limits::query_functions(
            SessionStateBuilder::new_from_existing(state).with_query_planner(Arc::new(planner)),
        )
        .build())
    }

    /// Dataset `dataset`'s encrypted file at `path` as a table of a cluster
    /// session, with only `columns` (all if `None`). Its key is sealed
    /// afresh for each of the `enrolled` executors; with none, nothing could
    /// read it, and that is an error here rather than on the cluster.
    pub fn table(
        &self,
        dataset: &str,
        path: &Path,
        key: &[u8; KEY_LEN],
        columns: Option<&[String]>,
        enrolled: &[Enrolled],
    ) -> Result<Arc<dyn TableProvider>, ClusterError> {
        if enrolled.is_empty() {
            return Err(ClusterError::NoExecutors);
        }
        let unreadable = |e: &dyn std::fmt::Display| ClusterError::Unreadable {
            dataset: dataset.to_string(),
            reason: e.to_string(),
        };
        let file = std::fs::File::open(path).map_err(|e| unreadable(&e))?;
        let size = file.metadata().map_err(|e| unreadable(&e))?.len();
        let decryption = FileDecryptionProperties::builder(key.to_vec())
            .with_aad_prefix(dataset.as_bytes().to_vec())
            .build()
            .map_err(|e| unreadable(&e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(
            file,
            ArrowReaderOptions::new().with_file_decryption_properties(decryption),
        )
        .map_err(|e| unreadable(&e))?;
        let full = reader.schema();
        let schema = match columns {
            None => Arc::clone(full),
            Some(columns) => Arc::new(Schema::new(
                full.fields()
                    .iter()
                    .filter(|f| columns.contains(f.name()))
                    .cloned()
                    .collect::<Vec<_>>(),
            )),
        };
        let path = path
            .to_str()
            .ok_or_else(|| unreadable(&"its path is not UTF-8"))?
            .to_string();
        let sealed = seal_for_all(enrolled, dataset, key)?;
        Ok(Arc::new(SealedTable::new(
            SealedFile {
                dataset: dataset.to_string(),
                path,
                size,
                sealed,
            },
            schema,
        )))
    }
}
