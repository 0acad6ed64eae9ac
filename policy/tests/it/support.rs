//! Residents and their health visits in memory, for admission and release tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use unseen_datasets::{DatasetKind, GenerateOptions};
use unseen_policy::Manifest;

pub fn residents_manifest() -> Manifest {
    manifest(DatasetKind::Residents)
}

fn manifest(kind: DatasetKind) -> Manifest {
    Manifest::parse(unseen_datasets::manifest_toml(kind)).expect("built-in manifest parses")
}

/// `options` worth of generated `kind` rows as an in-memory table.
fn table(kind: DatasetKind, options: &GenerateOptions) -> MemTable {
    let mut bytes = Vec::new();
    unseen_datasets::generate(kind, options, &mut bytes, &mut |_| {}).expect("generate");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
        bytes::Bytes::from(bytes),
        8192,
    )
    .expect("read back");
    let batches: Vec<_> = reader.map(|b| b.expect("batch")).collect();
    MemTable::try_new(unseen_datasets::schema(kind), vec![batches]).expect("memtable")
}

/// A session with `rows` synthetic residents registered as `residents`.
pub fn session(rows: u64) -> (SessionContext, BTreeMap<String, Manifest>) {
    let ctx = SessionContext::new();
    ctx.register_table(
        "residents",
        Arc::new(table(
            DatasetKind::Residents,
            &GenerateOptions::new(rows, 7),
        )),
    )
    .expect("register");
    let mut manifests = BTreeMap::new();
    manifests.insert("residents".to_string(), residents_manifest());
    (ctx, manifests)
}

/// [`session`] plus `visits` health visits of those residents, registered
/// as `health_visits`.
pub fn joined_session(rows: u64, visits: u64) -> (SessionContext, BTreeMap<String, Manifest>) {
    let (ctx, mut manifests) = session(rows);
    let options = GenerateOptions::new(visits, 8).with_related_rows(rows);
    ctx.register_table(
        "health_visits",
        Arc::new(table(DatasetKind::HealthVisits, &options)),
    )
    .expect("register");
    manifests.insert(
        "health_visits".to_string(),
        manifest(DatasetKind::HealthVisits),
    );
    (ctx, manifests)
}
