//! DP aggregates over datasets joined on their shared privacy unit: what is
//! admitted, how the noise covers every scan's bound, and that each unit's
//! rows are really cut before the join.

use udf_sdk::ColumnValues;
use unseen_policy::admission::{Admitted, Scan};
use unseen_policy::{PolicyError, plan_query, plan_release, release_aggregate};

use crate::support::{charged, joined_session};

const CHRONIC: &str = "SELECT r.district, COUNT(*) AS visits, AVG(h.cost) AS mean_cost \
     FROM health_visits h JOIN residents r ON h.person_id = r.person_id \
     WHERE h.diagnosis_code IN ('I10', 'E11.9') GROUP BY r.district ORDER BY r.district";

#[tokio::test]
async fn a_join_on_the_privacy_unit_is_admitted_with_every_scan_bounded() {
    let (ctx, manifests) = joined_session(500, 3_000);
    let Admitted::Aggregate(q) = plan_query(&ctx, CHRONIC, &manifests).await.unwrap() else {
        panic!("not an aggregate")
    };
    let scan = |table: &str, k| Scan {
        table: table.into(),
        unit: "person_id".into(),
        max_contributions: k,
    };
    assert_eq!(
        q.scans,
        vec![scan("health_visits", 10), scan("residents", 1)]
    );
    let plan = charged(plan_release(&q, 1.0, |_: &str| false).unwrap());
    assert!((plan.epsilon() - 1.0).abs() < 1e-9, "{}", plan.epsilon());
    let release = release_aggregate(&ctx.state(), &q, &plan).await.unwrap();
    assert_eq!(release.result.table.rows(), 12, "every public district");
}

#[tokio::test]
async fn the_noise_covers_the_product_of_the_joined_bounds() {
    let (ctx, manifests) = joined_session(200, 1_000);
    let alone = "SELECT diagnosis_code, COUNT(*) AS n FROM health_visits GROUP BY diagnosis_code";
    let joined = "SELECT h.diagnosis_code, COUNT(*) AS n FROM health_visits h \
                  JOIN health_visits g ON h.person_id = g.person_id GROUP BY h.diagnosis_code";
    let scale = |sql: &'static str| {
        let ctx = ctx.clone();
        let manifests = manifests.clone();
        async move {
            let Admitted::Aggregate(q) = plan_query(&ctx, sql, &manifests).await.unwrap() else {
                panic!("not an aggregate")
            };
            let r = release_aggregate(
                &ctx.state(),
                &q,
                &charged(plan_release(&q, 1.0, |_: &str| false).unwrap()),
            )
            .await
            .unwrap();
            r.noise[0].scale
        }
    };
    let (one, two) = (scale(alone).await, scale(joined).await);
    // Laplace scale = sensitivity / epsilon: 10 rows alone, 10 x 10 self-joined.
    assert!((one - 10.0).abs() < 1e-6, "alone: {one}");
    assert!((two - 100.0).abs() < 1e-6, "self-joined: {two}");
}

/// One person with 50 visits among ten with one each: after the join, the
/// person counts `max_contributions` (10) times, not 50.
#[tokio::test]
async fn each_units_rows_are_cut_before_the_join() {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;

    let (ctx, mut manifests) = joined_session(20, 0);
    let mut persons = vec![1i64; 50];
    persons.extend(2..12);
    let codes = vec!["I10"; persons.len()];
    let costs = vec![100i64; persons.len()];
    let schema = Arc::new(Schema::new(vec![
        Field::new("person_id", DataType::Int64, false),
        Field::new("diagnosis_code", DataType::Utf8, false),
        Field::new("cost", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(persons)),
            Arc::new(StringArray::from(codes)),
            Arc::new(Int64Array::from(costs)),
        ],
    )
    .unwrap();
    ctx.deregister_table("health_visits").unwrap();
    ctx.register_table(
        "health_visits",
        Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap()),
    )
    .unwrap();
    let visits = manifests.get_mut("health_visits").unwrap();
    visits.columns.retain(|c| c.name != "visit_date");
    let sql = "SELECT h.diagnosis_code, COUNT(*) AS n FROM health_visits h \
               JOIN residents r ON h.person_id = r.person_id GROUP BY h.diagnosis_code";
    let Admitted::Aggregate(q) = plan_query(&ctx, sql, &manifests).await.unwrap() else {
        panic!("not an aggregate")
    };
    let count = |bounded: bool| {
        let (ctx, q) = (ctx.clone(), q.clone());
        async move {
            // A huge epsilon makes the noise negligible, so the exact count shows.
            let plan = charged(plan_release(&q, 1e6, |_: &str| !bounded).unwrap());
            let r = release_aggregate(&ctx.state(), &q, &plan).await.unwrap();
            let ColumnValues::Text(codes) = r.result.table.column("diagnosis_code").unwrap() else {
                panic!()
            };
            let ColumnValues::Estimate(n) = r.result.table.column("n").unwrap() else {
                panic!()
            };
            let at = codes.iter().position(|c| c == "I10").unwrap();
            n[at].value
        }
    };
    let bounded = count(true).await;
    assert!(
        (bounded - 20.0).abs() < 0.5,
        "10 + 10 single visits, got {bounded}"
    );
    // Control: without the cut the person would count 50 times.
    let unbounded = count(false).await;
    assert!((unbounded - 60.0).abs() < 0.5, "control, got {unbounded}");
}

#[tokio::test]
async fn a_join_refusal_says_how_to_join() {
    let (ctx, manifests) = joined_session(50, 100);
    let sql = "SELECT r.district, COUNT(*) FROM health_visits h JOIN residents r \
               ON h.cost = r.annual_income GROUP BY r.district";
    let Err(PolicyError::Refused(r)) = plan_query(&ctx, sql, &manifests).await else {
        panic!("a join on conditional values was admitted")
    };
    assert_eq!(r.rule, "join-condition");
    assert!(
        r.message.contains("h.person_id = r.person_id"),
        "{}",
        r.message
    );
}
