//! Aggregates over values the query computes and bounds itself
//! (`LEAST(GREATEST(<expression>, lo), hi)`): admitted with the query's
//! bounds, released like a column with manifest bounds, and refused when
//! the bounds are not literal, not ordered, or the expression reads what it
//! may not.

use unseen_policy::admission::Admitted;
use unseen_policy::manifest::ColumnType;
use unseen_policy::{PolicyError, plan_query, plan_release, release_aggregate};

use crate::support::{charged, session};

const SCALED: &str = "SELECT district, AVG(LEAST(GREATEST(annual_income / 1000.0, 0), 500)) AS k \
     FROM residents GROUP BY district ORDER BY district";

#[tokio::test]
async fn a_bounded_expression_is_aggregated_with_the_querys_bounds() {
    let (ctx, manifests) = session(3_000);
    let Admitted::Aggregate(q) = plan_query(&ctx, SCALED, &manifests).await.unwrap() else {
        panic!("not an aggregate")
    };
    let (table, column, ty, bounds) = q.aggregates[0].source.clone().unwrap();
    assert_eq!(table, "", "a computed value belongs to no dataset");
    assert!(column.contains("annual_income"), "{column}");
    assert_eq!((ty, bounds), (ColumnType::Float64, (0.0, 500.0)));

    // With a large epsilon the released means sit on the exact ones.
    let plan = charged(plan_release(&q, 10_000.0, |_: &str| false).unwrap());
    let release = release_aggregate(&ctx.state(), &q, &plan).await.unwrap();
    let exact = ctx
        .sql("SELECT district, AVG(LEAST(GREATEST(annual_income / 1000.0, 0), 500)) AS k FROM residents GROUP BY district ORDER BY district")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let exact: Vec<f64> = exact
        .iter()
        .flat_map(|b| {
            use datafusion::arrow::array::AsArray;
            b.column(1)
                .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                .values()
                .to_vec()
        })
        .collect();
    let udf_sdk::ColumnValues::Estimate(released) = &release.result.table.columns[1].values else {
        panic!("estimates expected")
    };
    assert_eq!(released.len(), exact.len());
    for (r, e) in released.iter().zip(&exact) {
        assert!(
            (r.value - e).abs() < 1.0,
            "released {} vs exact {e}",
            r.value
        );
    }
    // The noise is calibrated to the query's bound of 500, not the
    // manifest's income bound: the sum's scale is 500 / epsilon share.
    let sum_note = release
        .noise
        .iter()
        .find(|n| n.component.starts_with("sum("))
        .expect("a sum component");
    assert!(sum_note.scale < 1.0, "{sum_note:?}");
}

#[tokio::test]
async fn both_orders_and_integer_values_are_recognised() {
    let (ctx, manifests) = session(500);
    for (sql, ty) in [
        (
            "SELECT district, SUM(GREATEST(LEAST(household_size * 2, 20), 0)) FROM residents GROUP BY district",
            ColumnType::Int64,
        ),
        (
            "SELECT district, SUM(LEAST(20, GREATEST(0, household_size + 1))) FROM residents GROUP BY district",
            ColumnType::Int64,
        ),
        (
            "SELECT district, MEDIAN(LEAST(GREATEST(LN(1 + annual_income), 0.0), 20.0)) FROM residents GROUP BY district",
            ColumnType::Float64,
        ),
    ] {
        match plan_query(&ctx, sql, &manifests).await {
            Ok(Admitted::Aggregate(q)) => {
                let (_, _, got, _) = q.aggregates[0].source.clone().unwrap();
                assert_eq!(got, ty, "{sql}");
                let plan = charged(plan_release(&q, 1.0, |_: &str| false).unwrap());
                release_aggregate(&ctx.state(), &q, &plan)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn bounds_that_are_not_literal_ordered_numbers_are_refused() {
    let (ctx, manifests) = session(200);
    for (sql, rule) in [
        (
            "SELECT SUM(LEAST(GREATEST(annual_income, 500), 100)) FROM residents",
            "bounds",
        ),
        (
            "SELECT SUM(LEAST(GREATEST(annual_income, 0), birth_year)) FROM residents",
            "derived-column",
        ),
        (
            "SELECT SUM(LEAST(annual_income, 100)) FROM residents",
            "derived-column",
        ),
        (
            "SELECT SUM(LEAST(GREATEST(LENGTH(id_number), 0), 20)) FROM residents",
            "prohibited-column",
        ),
    ] {
        match plan_query(&ctx, sql, &manifests).await {
            Err(PolicyError::Refused(r)) => assert_eq!(r.rule, rule, "{sql}: {}", r.message),
            other => panic!("{sql}: expected {rule}, got {other:?}"),
        }
    }
    let Err(PolicyError::Refused(r)) = plan_query(
        &ctx,
        "SELECT SUM(annual_income * 2) FROM residents",
        &manifests,
    )
    .await
    else {
        panic!("a computed sum without bounds must be refused")
    };
    assert!(
        r.message
            .contains("LEAST(GREATEST(<expression>, <lower>), <upper>)"),
        "{}",
        r.message
    );
}
