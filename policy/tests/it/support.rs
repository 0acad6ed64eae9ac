//! A residents table in memory, for admission and release tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use unseen_datasets::{DatasetKind, GenerateOptions};
use unseen_policy::Manifest;

pub fn residents_manifest() -> Manifest {
    Manifest::parse(unseen_datasets::manifest_toml(DatasetKind::Residents))
        .expect("built-in manifest parses")
}

/// A session with `rows` synthetic residents registered as `residents`.
pub fn session(rows: u64) -> (SessionContext, BTreeMap<String, Manifest>) {
    let mut bytes = Vec::new();
    unseen_datasets::generate(
        DatasetKind::Residents,
        &GenerateOptions::new(rows, 7),
        &mut bytes,
        &mut |_| {},
    )
    .expect("generate residents");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
        bytes::Bytes::from(bytes),
        8192,
    )
    .expect("read back");
    let batches: Vec<_> = reader.map(|b| b.expect("batch")).collect();
    let schema = unseen_datasets::schema(DatasetKind::Residents);
    let table = MemTable::try_new(schema, vec![batches]).expect("memtable");
    let ctx = SessionContext::new();
    ctx.register_table("residents", Arc::new(table))
        .expect("register");
    let mut manifests = BTreeMap::new();
    manifests.insert("residents".to_string(), residents_manifest());
    (ctx, manifests)
}
