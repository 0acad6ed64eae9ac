//! Encrypted datasets as a cluster reads them.
//!
//! DataFusion's plan serialisation drops Parquet decryption settings (and
//! would carry a key in clear if it kept them). So on a cluster a dataset is
//! a [`SealedTable`]: the file, and its data key sealed once per enrolled
//! executor. It plans to DataFusion's own Parquet scan (which Ballista
//! slices into tasks) under a [`SealedScanExec`], and this crate's codecs
//! carry only the sealed copies. An executor opens its own copy when it
//! decodes the scan and gives the Parquet reader a key that lives only in
//! that decoded plan, in memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::config::EncryptionFactoryOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileScanConfig, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::parquet_encryption::EncryptionFactory;
use datafusion::logical_expr::Expr;
use datafusion::parquet::encryption::decrypt::FileDecryptionProperties;
use datafusion::parquet::encryption::encrypt::FileEncryptionProperties;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use serde::{Deserialize, Serialize};

use crate::seal::KEY_LEN;

/// One dataset's encrypted file, as every side of the cluster may see it:
/// nothing in it opens without an enrolled executor's secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedFile {
    /// The dataset's name (also the file's AAD prefix).
    pub dataset: String,
    /// The file, on storage the service and the executors share.
    pub path: String,
    /// Its size in bytes, by which the scan is split into ranges.
    pub size: u64,
    /// The data key sealed for each enrolled executor ([`crate::seal`]).
    pub sealed: BTreeMap<String, String>,
}

/// A dataset as a table of a cluster session.
#[derive(Debug)]
pub struct SealedTable {
    file: SealedFile,
    schema: SchemaRef,
}

impl SealedTable {
    pub fn new(file: SealedFile, schema: SchemaRef) -> SealedTable {
        SealedTable { file, schema }
    }

    pub fn file(&self) -> &SealedFile {
        &self.file
    }
}

#[async_trait]
impl TableProvider for SealedTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // The table's schema names only granted columns; the reader maps
        // them onto the file's by name.
        let source = Arc::new(ParquetSource::new(Arc::clone(&self.schema)));
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), source)
            .with_file(PartitionedFile::new(self.file.path.clone(), self.file.size))
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(Arc::new(SealedScanExec::new(
            self.file.clone(),
            DataSourceExec::from_data_source(config),
        )))
    }
}

/// DataFusion's Parquet scan of a sealed file. Until an enrolled executor
/// decodes it ([`SealedScanExec::opened`]) its reader has no key, and the
/// file's encrypted footer does not open.
pub struct SealedScanExec {
    file: SealedFile,
    input: Arc<dyn ExecutionPlan>,
}

impl std::fmt::Debug for SealedScanExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedScanExec")
            .field("dataset", &self.file.dataset)
            .finish_non_exhaustive()
    }
}

impl SealedScanExec {
    pub fn new(file: SealedFile, input: Arc<dyn ExecutionPlan>) -> SealedScanExec {
        SealedScanExec { file, input }
    }

    pub fn file(&self) -> &SealedFile {
        &self.file
    }

    /// This scan with its Parquet reader given `key`. The scan below must be
    /// DataFusion's Parquet scan, as [`SealedTable`] plans it.
    pub fn opened(&self, key: [u8; KEY_LEN]) -> DfResult<SealedScanExec> {
        let not_parquet = || {
            DataFusionError::Internal(format!(
                "the scan of sealed dataset {} is not a Parquet scan",
                self.file.dataset
            ))
        };
        let scan = self
            .input
            .downcast_ref::<DataSourceExec>()
            .ok_or_else(not_parquet)?;
        let config = scan
            .data_source()
            .downcast_ref::<FileScanConfig>()
            .ok_or_else(not_parquet)?;
        let parquet = config
            .file_source()
            .downcast_ref::<ParquetSource>()
            .ok_or_else(not_parquet)?;
        let keyed = parquet.clone().with_encryption_factory(Arc::new(OpenedKey {
            key,
            dataset: self.file.dataset.clone(),
        }));
        let config = FileScanConfigBuilder::from(config.clone())
            .with_source(Arc::new(keyed))
            .build();
        Ok(SealedScanExec::new(
            self.file.clone(),
            DataSourceExec::from_data_source(config),
        ))
    }
}

/// The data key an executor opened, handed to the Parquet reader of one
/// scan. It decrypts; it never encrypts.
struct OpenedKey {
    key: [u8; KEY_LEN],
    dataset: String,
}

impl std::fmt::Debug for OpenedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedKey")
            .field("dataset", &self.dataset)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EncryptionFactory for OpenedKey {
    async fn get_file_encryption_properties(
        &self,
        _config: &EncryptionFactoryOptions,
        _schema: &SchemaRef,
        _file_path: &object_store::path::Path,
    ) -> DfResult<Option<Arc<FileEncryptionProperties>>> {
        Err(DataFusionError::Execution(
            "a cluster executor writes no dataset".into(),
        ))
    }

    async fn get_file_decryption_properties(
        &self,
        _config: &EncryptionFactoryOptions,
        _file_path: &object_store::path::Path,
    ) -> DfResult<Option<Arc<FileDecryptionProperties>>> {
        let properties = FileDecryptionProperties::builder(self.key.to_vec())
            .with_aad_prefix(self.dataset.as_bytes().to_vec())
            .build()?;
        Ok(Some(properties))
    }
}

impl DisplayAs for SealedScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedScanExec: dataset={}", self.file.dataset)
    }
}

impl ExecutionPlan for SealedScanExec {
    fn name(&self) -> &str {
        "SealedScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(SealedScanExec::new(
            self.file.clone(),
            crate::only_child("SealedScanExec", children)?,
        )))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}
