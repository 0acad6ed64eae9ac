//! DP releases: every domain cell present, intervals that cover, noise at the claimed scale.

use udf_sdk::ColumnValues;
use unseen_policy::admission::Admitted;
use unseen_policy::{Budget, Cost, plan_query, plan_release, release_aggregate};

use crate::support::{Ledgerless, charged, session};

/// A budget with no epsilon left.
struct Spent;

impl Budget for Spent {
    type Refusal = String;

    fn charge(&self, cost: Cost) -> Result<(), String> {
        Err(format!("no budget for epsilon {}", cost.epsilon))
    }
}

/// Charging is the only way to a plan `release_aggregate` accepts: the
/// budget is charged the plan's own cost, exactly once, and a refused
/// charge leaves nothing to release.
#[tokio::test]
async fn a_plan_is_released_only_after_its_own_cost_is_charged() {
    let (ctx, manifests) = session(500);
    let sql = "SELECT district, COUNT(*) AS n FROM residents GROUP BY district";
    let Admitted::Aggregate(q) = plan_query(&ctx, sql, &manifests).await.unwrap() else {
        panic!("not an aggregate")
    };
    let plan = plan_release(&q, 0.7, |_: &str| true).unwrap();
    let cost = plan.cost();
    assert!((cost.epsilon - 0.7).abs() < 1e-9, "{cost:?}");
    let budget = Ledgerless::default();
    let charged = plan.charge(&budget).unwrap();
    assert_eq!(*budget.charged.lock().unwrap(), [cost]);
    let release = release_aggregate(&ctx.state(), &q, &charged).await.unwrap();
    assert_eq!(release.result.epsilon_spent, cost.epsilon);
    let refused = plan_release(&q, 0.7, |_: &str| true)
        .unwrap()
        .charge(&Spent)
        .unwrap_err();
    assert_eq!(refused, format!("no budget for epsilon {}", cost.epsilon));
}

#[tokio::test]
async fn district_release_covers_every_public_district_with_intervals() {
    let (ctx, manifests) = session(5_000);
    let sql = "SELECT district, COUNT(*) AS n, AVG(annual_income) AS mean_income FROM residents GROUP BY district ORDER BY district";
    let Admitted::Aggregate(q) = plan_query(&ctx, sql, &manifests).await.unwrap() else {
        panic!("not an aggregate")
    };
    let plan = charged(plan_release(&q, 1.0, |_: &str| true).unwrap());
    assert!(
        (plan.epsilon() - 1.0).abs() < 1e-9,
        "count and sum share epsilon 1.0, got {}",
        plan.epsilon()
    );
    let release = release_aggregate(&ctx.state(), &q, &plan).await.unwrap();
    let t = &release.result.table;
    assert_eq!(t.rows(), 12, "every district of the public domain appears");
    let ColumnValues::Text(districts) = t.column("district").unwrap() else {
        panic!()
    };
    let mut sorted = districts.clone();
    sorted.sort();
    assert_eq!(&sorted, districts, "ORDER BY district was applied");
    let ColumnValues::Estimate(n) = t.column("n").unwrap() else {
        panic!()
    };
    let total: f64 = n.iter().map(|e| e.value).sum();
    assert!(
        (total - 5_000.0).abs() < 200.0,
        "noisy counts sum near 5000, got {total}"
    );
    for e in n {
        assert!(e.lower <= e.value && e.value <= e.upper);
    }
    let ColumnValues::Estimate(m) = t.column("mean_income").unwrap() else {
        panic!()
    };
    for e in m {
        assert!(e.lower >= 0.0 && e.upper <= 1_000_000.0 && e.lower <= e.upper);
    }
}

/// Counts at epsilon 1 over many runs: the mean absolute error must match a
/// Laplace mechanism of scale 1/epsilon (no budget lost to hidden steps),
/// and the empirical coverage of the 95% intervals must be at least 95%.
#[tokio::test]
async fn count_noise_matches_the_claimed_scale_and_coverage() {
    let (ctx, manifests) = session(2_000);
    let exact = ctx
        .sql("SELECT COUNT(*) FROM residents WHERE district = '朝阳区'")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    use arrow::array::AsArray;
    let exact = exact[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0) as f64;
    let sql = "SELECT district, COUNT(*) AS n FROM residents GROUP BY district";
    let Admitted::Aggregate(q) = plan_query(&ctx, sql, &manifests).await.unwrap() else {
        panic!()
    };
    let plan = charged(plan_release(&q, 1.0, |_: &str| true).unwrap());
    let (mut abs_err, mut covered, runs) = (0.0, 0, 300);
    for _ in 0..runs {
        let r = release_aggregate(&ctx.state(), &q, &plan).await.unwrap();
        let ColumnValues::Text(d) = r.result.table.column("district").unwrap() else {
            panic!()
        };
        let ColumnValues::Estimate(n) = r.result.table.column("n").unwrap() else {
            panic!()
        };
        let e = n[d.iter().position(|x| x == "朝阳区").unwrap()];
        abs_err += (e.value - exact).abs();
        covered += usize::from(e.lower <= exact && exact <= e.upper);
    }
    let mae = abs_err / f64::from(runs);
    // Discrete Laplace with scale 1 has E|X| ≈ 0.92; a mechanism with half the noise or double fails.
    assert!(
        (0.6..1.3).contains(&mae),
        "mean absolute error {mae} does not match scale 1"
    );
    assert!(
        covered as f64 / f64::from(runs) >= 0.93,
        "coverage {covered}/{runs}"
    );
}

/// Counts of empty cells under heavy noise: no estimate or interval end
/// is below 0, each interval holds its estimate, and the true count 0.
#[tokio::test]
async fn counts_are_never_released_below_zero() {
    let (ctx, manifests) = session(500);
    let sql = "SELECT district, COUNT(*) AS n FROM residents WHERE district = 'nowhere' GROUP BY district";
    let Admitted::Aggregate(q) = plan_query(&ctx, sql, &manifests).await.unwrap() else {
        panic!("not an aggregate")
    };
    // Epsilon 0.05: noise of scale 20, so about half the raw counts are negative.
    let plan = charged(plan_release(&q, 0.05, |_: &str| true).unwrap());
    let (mut cells, mut covered) = (0, 0);
    for _ in 0..5 {
        let r = release_aggregate(&ctx.state(), &q, &plan).await.unwrap();
        let ColumnValues::Estimate(n) = r.result.table.column("n").unwrap() else {
            panic!("not estimates")
        };
        for e in n {
            assert!(e.lower >= 0.0 && e.value >= 0.0, "{e:?}");
            assert!(e.lower <= e.value && e.value <= e.upper, "{e:?}");
            covered += usize::from(e.lower == 0.0);
            cells += 1;
        }
    }
    assert!(cells >= 50, "{cells} cells");
    // 95% intervals: the true count 0 is inside nearly all of them.
    assert!(
        covered * 10 >= cells * 8,
        "0 covered in {covered} of {cells}"
    );
}

/// One person with 100 rows counts at most `max_contributions` times.
#[tokio::test]
async fn contributions_per_person_are_bounded_before_aggregating() {
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let manifest = unseen_policy::Manifest::parse(
        r#"
name = "visits"
version = 1
privacy_unit = "person_id"
max_contributions = 2
[[columns]]
name = "person_id"
type = "int64"
class = "prohibited"
[[columns]]
name = "code"
type = "utf8"
class = "conditional"
group_key = true
domain = ["a", "b"]
"#,
    )
    .unwrap();
    let mut persons = vec![1i64; 100];
    let mut codes = vec!["a"; 100];
    persons.extend(2..=11);
    codes.extend(["b"; 10]);
    let schema = Arc::new(Schema::new(vec![
        Field::new("person_id", DataType::Int64, false),
        Field::new("code", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(persons)),
            Arc::new(StringArray::from(codes)),
        ],
    )
    .unwrap();
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_table(
        "visits",
        Arc::new(datafusion::datasource::MemTable::try_new(schema, vec![vec![batch]]).unwrap()),
    )
    .unwrap();
    let manifests = [("visits".to_string(), manifest.clone())]
        .into_iter()
        .collect();
    let Admitted::Aggregate(q) = plan_query(
        &ctx,
        "SELECT code, COUNT(*) AS n FROM visits GROUP BY code ORDER BY code",
        &manifests,
    )
    .await
    .unwrap() else {
        panic!("not an aggregate")
    };
    // A huge epsilon makes the noise negligible, so the bounded exact count shows.
    let plan = charged(plan_release(&q, 1e6, |_: &str| false).unwrap());
    let r = release_aggregate(&ctx.state(), &q, &plan).await.unwrap();
    let ColumnValues::Estimate(n) = r.result.table.column("n").unwrap() else {
        panic!()
    };
    assert!(
        (n[0].value - 2.0).abs() < 0.5,
        "person 1 counted {} times, bound is 2",
        n[0].value
    );
    assert!(
        (n[1].value - 10.0).abs() < 0.5,
        "ten single-row people, got {}",
        n[1].value
    );
    // Without bounding the same query would have counted 100.
    let unbounded = charged(plan_release(&q, 1e6, |_: &str| true).unwrap());
    let r = release_aggregate(&ctx.state(), &q, &unbounded)
        .await
        .unwrap();
    let ColumnValues::Estimate(n) = r.result.table.column("n").unwrap() else {
        panic!()
    };
    assert!(
        n[0].value > 90.0,
        "control: unbounded count is about 100, got {}",
        n[0].value
    );
}

/// The exact counts DataFusion gives for `key_sql` (the analyst's own
/// expression), as (bin, count) text pairs.
async fn exact_counts(
    ctx: &datafusion::prelude::SessionContext,
    key_sql: &str,
) -> Vec<(String, i64)> {
    let batches = ctx
        .sql(&format!(
            "SELECT CAST({key_sql} AS BIGINT) AS k, COUNT(*) AS n FROM residents GROUP BY 1 ORDER BY 1"
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut out = Vec::new();
    for b in &batches {
        let k = b
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap();
        let n = b
            .column(1)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap();
        for i in 0..b.num_rows() {
            out.push((k.value(i).to_string(), n.value(i)));
        }
    }
    out
}

/// Bins of a column with manifest bounds are public groups: every bin
/// between the bounds' bins is released, each with its own noise, and
/// (at a huge epsilon) the counts are the exact ones of the expression as
/// the analyst wrote it, in both shapes.
#[tokio::test]
async fn bins_of_a_bounded_column_release_every_bin_with_the_expressions_own_meaning() {
    let (ctx, manifests) = session(3_000);
    for (key_sql, bins) in [
        ("birth_year - birth_year % 10", 7),
        ("FLOOR(birth_year / 10) * 10", 7),
        ("FLOOR(annual_income / 100000) * 100000", 11),
    ] {
        let sql = format!(
            "SELECT {key_sql} AS band, COUNT(*) AS n FROM residents GROUP BY {key_sql} ORDER BY band"
        );
        let Admitted::Aggregate(q) = plan_query(&ctx, &sql, &manifests).await.unwrap() else {
            panic!("{sql} is not an aggregate")
        };
        let plan = charged(plan_release(&q, 1e7, |_: &str| true).unwrap());
        let release = release_aggregate(&ctx.state(), &q, &plan).await.unwrap();
        let t = &release.result.table;
        assert_eq!(t.rows(), bins, "{sql}: every public bin");
        let ColumnValues::Text(bands) = t.column("band").unwrap() else {
            panic!("{sql}: bins are group keys")
        };
        let ColumnValues::Estimate(n) = t.column("n").unwrap() else {
            panic!()
        };
        let released: std::collections::BTreeMap<&str, i64> = bands
            .iter()
            .map(String::as_str)
            .zip(n.iter().map(|e| e.value.round() as i64))
            .collect();
        for (bin, count) in exact_counts(&ctx, key_sql).await {
            assert_eq!(released.get(bin.as_str()), Some(&count), "{sql}: bin {bin}");
        }
        let total: i64 = released.values().sum();
        assert_eq!(total, 3_000, "{sql}: every row in a bin");
    }
}
