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
    session_in(SessionContext::new(), rows)
}

/// [`session`] in `ctx` (a session with limits, for example).
pub fn session_in(ctx: SessionContext, rows: u64) -> (SessionContext, BTreeMap<String, Manifest>) {
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
    joined_session_in(SessionContext::new(), rows, visits)
}

/// [`joined_session`] in `ctx`.
pub fn joined_session_in(
    ctx: SessionContext,
    rows: u64,
    visits: u64,
) -> (SessionContext, BTreeMap<String, Manifest>) {
    let (ctx, mut manifests) = session_in(ctx, rows);
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

/// `t(person_id, amount)` with `amount` conditional and bounded as given,
/// one row per person, the rows dealt in turn into `partitions` partitions.
pub fn amounts(
    values: Vec<Option<i64>>,
    bounds: (i64, i64),
    partitions: usize,
) -> (SessionContext, Manifest) {
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    let manifest = Manifest::parse(&format!(
        r#"
name = "t"
version = 1
privacy_unit = "person_id"
max_contributions = 1
[[columns]]
name = "person_id"
type = "int64"
class = "prohibited"
[[columns]]
name = "amount"
type = "int64"
class = "conditional"
bounds = [{}, {}]
"#,
        bounds.0, bounds.1
    ))
    .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("person_id", DataType::Int64, false),
        Field::new("amount", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..values.len() as i64)),
            Arc::new(Int64Array::from(values)),
        ],
    )
    .unwrap();
    let per_part = batch.num_rows().div_ceil(partitions.max(1)).max(1);
    let parts: Vec<Vec<RecordBatch>> = (0..batch.num_rows())
        .step_by(per_part)
        .map(|at| vec![batch.slice(at, per_part.min(batch.num_rows() - at))])
        .collect();
    let ctx = SessionContext::new();
    ctx.register_table("t", Arc::new(MemTable::try_new(schema, parts).unwrap()))
        .unwrap();
    (ctx, manifest)
}

/// A budget in memory that accepts every charge and keeps what it was
/// charged: the policy tests measure releases, the service's budgets are
/// tested end to end.
#[derive(Default)]
pub struct Ledgerless {
    pub charged: std::sync::Mutex<Vec<unseen_policy::Cost>>,
}

impl unseen_policy::Budget for Ledgerless {
    type Refusal = std::convert::Infallible;

    fn charge(&self, cost: unseen_policy::Cost) -> Result<(), Self::Refusal> {
        self.charged.lock().unwrap().push(cost);
        Ok(())
    }
}

/// `plan`, charged to a budget that accepts everything.
pub fn charged(plan: unseen_policy::DpPlan) -> unseen_policy::Charged<unseen_policy::DpPlan> {
    match plan.charge(&Ledgerless::default()) {
        Ok(charged) => charged,
        Err(never) => match never {},
    }
}
