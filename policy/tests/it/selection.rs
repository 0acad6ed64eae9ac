//! DP partition selection: group keys without a public domain release only
//! the groups whose noisy count passes a threshold, for a delta.

use std::sync::Arc;

use crate::support::charged;
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use udf_sdk::ColumnValues;
use unseen_policy::admission::Admitted;
use unseen_policy::{
    Accounting, Manifest, PolicyError, plan_query, plan_release_with, release_aggregate,
};

/// `t(person_id, city, amount)`: 1,000 people in `a`, 1,000 in `b`, 3 in
/// `rare`; `city` is a group key without a public domain.
fn cities() -> (SessionContext, std::collections::BTreeMap<String, Manifest>) {
    let manifest = Manifest::parse(
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
name = "city"
type = "utf8"
class = "conditional"
group_key = true
[[columns]]
name = "amount"
type = "int64"
class = "conditional"
bounds = [0, 100]
"#,
    )
    .unwrap();
    let mut city = vec!["a"; 1000];
    city.extend(vec!["b"; 1000]);
    city.extend(vec!["rare"; 3]);
    let n = city.len() as i64;
    let schema = Arc::new(Schema::new(vec![
        Field::new("person_id", DataType::Int64, false),
        Field::new("city", DataType::Utf8, false),
        Field::new("amount", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from((0..n).collect::<Vec<_>>())),
            Arc::new(StringArray::from(city)),
            Arc::new(Int64Array::from(vec![50i64; n as usize])),
        ],
    )
    .unwrap();
    let ctx = SessionContext::new();
    ctx.register_table(
        "t",
        Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap()),
    )
    .unwrap();
    (ctx, [("t".to_string(), manifest)].into_iter().collect())
}

const SQL: &str = "SELECT city, COUNT(*) AS n, AVG(amount) AS mean FROM t GROUP BY city";

#[tokio::test]
async fn without_a_delta_a_key_without_public_domain_is_refused() {
    let (ctx, manifests) = cities();
    let Admitted::Aggregate(q) = plan_query(&ctx, SQL, &manifests).await.unwrap() else {
        panic!("not an aggregate")
    };
    let Err(PolicyError::Refused(r)) =
        plan_release_with(&q, Accounting::Pure { epsilon: 1.0 }, |_: &str| true)
    else {
        panic!("released groups of a key without a public domain under pure DP")
    };
    assert_eq!(r.rule, "no-public-domain");
    assert!(r.message.contains("delta"), "{}", r.message);
}

#[tokio::test]
async fn only_groups_whose_noisy_count_passes_the_threshold_are_released() {
    let (ctx, manifests) = cities();
    let Admitted::Aggregate(q) = plan_query(&ctx, SQL, &manifests).await.unwrap() else {
        panic!("not an aggregate")
    };
    let accounting = Accounting::Approximate {
        epsilon: 1.0,
        delta: 1e-6,
    };
    let plan = charged(plan_release_with(&q, accounting, |_: &str| true).unwrap());
    assert!((plan.epsilon() - 1.0).abs() < 1e-9, "{}", plan.epsilon());
    assert!(
        plan.delta() > 0.0 && plan.delta() <= 1e-6,
        "delta {}",
        plan.delta()
    );
    for _ in 0..20 {
        let r = release_aggregate(&ctx.state(), &q, &plan).await.unwrap();
        let ColumnValues::Text(keys) = r.result.table.column("city").unwrap() else {
            panic!()
        };
        assert_eq!(
            keys,
            &["a", "b"],
            "a group of 3 people passed the threshold"
        );
        let ColumnValues::Estimate(n) = r.result.table.column("n").unwrap() else {
            panic!()
        };
        assert!(n.iter().all(|e| (e.value - 1000.0).abs() < 50.0), "{n:?}");
    }
}
