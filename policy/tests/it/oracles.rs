//! The oracle corpus: constructs that could make a query's visible outcome
//! (success, error, its class) depend on one person's row. Each runs on two
//! neighbouring datasets — with and without the target's row — and must
//! give the same outcome; released values may differ only by what one row
//! contributes.

use std::sync::Arc;

use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use unseen_policy::admission::Admitted;
use unseen_policy::{PolicyError, plan_query, plan_release, release_aggregate};

use crate::support::session;

/// A condition true for exactly one resident of the generated data: found
/// from open and conditional columns only, as an attacker with background
/// knowledge would write it.
async fn target(ctx: &SessionContext) -> String {
    let batches = ctx
        .sql(
            "SELECT r.district, r.gender, r.birth_year, r.household_size FROM residents r \
             JOIN (SELECT district, gender, birth_year, household_size FROM residents \
                   GROUP BY district, gender, birth_year, household_size HAVING COUNT(*) = 1) u \
             ON r.district = u.district AND r.gender = u.gender AND r.birth_year = u.birth_year \
                AND r.household_size = u.household_size \
             ORDER BY r.annual_income LIMIT 1",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let row = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    let cast = |i: usize| {
        datafusion::arrow::compute::cast(
            batches[0].column(i),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )
        .unwrap()
    };
    let text = |i: usize| {
        use datafusion::arrow::array::AsArray;
        cast(i).as_string::<i32>().value(0).to_string()
    };
    assert!(!batches.is_empty() && batches[0].num_rows() == 1, "{row}");
    format!(
        "(district = '{}' AND gender = '{}' AND birth_year = {} AND household_size = {})",
        text(0),
        text(1),
        text(2),
        text(3)
    )
}

/// The neighbour of `ctx`'s residents: the same rows without the target.
async fn without(ctx: &SessionContext, target: &str) -> SessionContext {
    let df = ctx
        .sql(&format!("SELECT * FROM residents WHERE NOT {target}"))
        .await
        .unwrap();
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.unwrap();
    let neighbour = SessionContext::new();
    neighbour
        .register_table(
            "residents",
            Arc::new(MemTable::try_new(schema, vec![batches]).unwrap()),
        )
        .unwrap();
    neighbour
}

/// What a developer sees of a query: its outcome class and, when it was
/// released, the first released value (at an epsilon so large that the
/// noise is negligible next to one row).
async fn outcome(
    ctx: &SessionContext,
    manifests: &std::collections::BTreeMap<String, unseen_policy::Manifest>,
    sql: &str,
) -> Result<f64, String> {
    let admitted = plan_query(ctx, sql, manifests).await.map_err(class)?;
    let Admitted::Aggregate(query) = admitted else {
        return Err("open".to_string());
    };
    let plan = crate::support::charged(plan_release(&query, 1e6, |_: &str| false).map_err(class)?);
    // The service fingerprints every release before charging it.
    unseen_policy::fingerprint(&ctx.state(), &query, &plan).map_err(class)?;
    let release = release_aggregate(&ctx.state(), &query, &plan)
        .await
        .map_err(class)?;
    assert!(
        !release.defaulted,
        "{sql}: the total expressions should have prevented every failure"
    );
    let udf_sdk::ColumnValues::Estimate(values) = &release.result.table.columns[0].values else {
        panic!("an estimate first")
    };
    Ok(values[0].value)
}

fn class(e: PolicyError) -> String {
    match e {
        PolicyError::Refused(r) => format!("refused: {}", r.rule),
        PolicyError::Sql(m) => format!("sql: {m}"),
        other => format!("failed: {other}"),
    }
}

/// `{T}` stands for the target's condition.
const CORPUS: &[&str] = &[
    // Division and modulo by zero, and the one integer overflow of `/`.
    "SELECT COUNT(*) FROM residents WHERE 1 / (CASE WHEN {T} THEN 0 ELSE 1 END) = 1",
    "SELECT COUNT(*) FROM residents WHERE 7 % (CASE WHEN {T} THEN 0 ELSE 2 END) = 1",
    "SELECT COUNT(*) FROM residents WHERE 1.0 / (CASE WHEN {T} THEN 0.0 ELSE 1.0 END) = 1.0",
    "SELECT COUNT(*) FROM residents WHERE (CASE WHEN {T} THEN -9223372036854775807 - 1 ELSE 4 END) / -1 <> 0",
    "SELECT COUNT(*) FROM residents WHERE (CASE WHEN {T} THEN -9223372036854775807 - 1 ELSE 4 END) % -1 = 0",
    // Failed casts, explicit and implicit.
    "SELECT COUNT(*) FROM residents WHERE CAST(CASE WHEN {T} THEN 'x' ELSE '1' END AS BIGINT) = 1",
    "SELECT COUNT(*) FROM residents WHERE CAST(CASE WHEN {T} THEN '99999999999' ELSE '1' END AS INT) = 1",
    "SELECT COUNT(*) FROM residents WHERE CAST(CASE WHEN {T} THEN 'nope' ELSE '2020-01-01' END AS DATE) IS NOT NULL",
    // Overflow in functions.
    "SELECT COUNT(*) FROM residents WHERE abs(CASE WHEN {T} THEN -9223372036854775807 - 1 ELSE 1 END) > 0",
    "SELECT COUNT(*) FROM residents WHERE power(CASE WHEN {T} THEN 10 ELSE 2 END, 30) > 0",
    // String functions with data-dependent arguments.
    "SELECT COUNT(*) FROM residents WHERE length(substr(gender, 1, CASE WHEN {T} THEN -1 ELSE 1 END)) >= 0",
    "SELECT COUNT(*) FROM residents WHERE chr(CASE WHEN {T} THEN -1 ELSE 65 END) = 'A'",
    "SELECT COUNT(*) FROM residents WHERE split_part(gender, 'a', 1) = '' OR length(left(gender, CASE WHEN {T} THEN -5 ELSE 1 END)) >= 0",
    // Date parsing.
    "SELECT COUNT(*) FROM residents WHERE to_timestamp(CASE WHEN {T} THEN 'bogus' ELSE '2020-01-01T00:00:00' END) IS NOT NULL",
    "SELECT COUNT(*) FROM residents WHERE to_date(CASE WHEN {T} THEN '2020-13-45' ELSE '2020-01-01' END) IS NOT NULL",
    // Regular expressions: a pattern built from data is refused; an invalid
    // literal pattern evaluated only on the target's row fails nowhere.
    "SELECT COUNT(*) FROM residents WHERE regexp_like(gender, CASE WHEN {T} THEN '(' ELSE 'a' END)",
    "SELECT COUNT(*) FROM residents WHERE CASE WHEN {T} THEN regexp_like(gender, '(') ELSE true END",
    // Work that grows with a value: refused before any constant is folded.
    "SELECT COUNT(*) FROM residents WHERE (CASE WHEN {T} THEN length(repeat(gender, 400000000)) ELSE 0 END) >= 0",
    "SELECT COUNT(*) FROM residents WHERE length(lpad(gender, household_size * 100000)) >= 0",
    "SELECT COUNT(*) FROM residents WHERE length(repeat(repeat(gender, 1000), 1000)) >= 0",
    "SELECT COUNT(*) FROM residents WHERE gender LIKE (CASE WHEN {T} THEN '%a%' ELSE 'b' END)",
];

#[tokio::test]
async fn no_construct_lets_one_row_decide_the_outcome() {
    let (ctx, manifests) = session(2_000);
    let target = target(&ctx).await;
    let neighbour = without(&ctx, &target).await;
    for template in CORPUS {
        let sql = template.replace("{T}", &target);
        let with = outcome(&ctx, &manifests, &sql).await;
        let without = outcome(&neighbour, &manifests, &sql).await;
        match (&with, &without) {
            (Ok(a), Ok(b)) => assert!(
                (a - b).abs() <= 1.5,
                "{template}: released {a} with the target and {b} without; more than one row apart"
            ),
            (Err(a), Err(b)) => assert_eq!(a, b, "{template}: different refusals"),
            _ => panic!("{template}: the outcome depends on one row: {with:?} against {without:?}"),
        }
    }
}

#[tokio::test]
async fn the_binary_search_on_income_learns_nothing() {
    // The attack of the issue: an error iff the target's income is at least
    // the threshold. With total expressions every probe succeeds on both
    // neighbours, so the visible outcomes carry no bit.
    let (ctx, manifests) = session(2_000);
    let target = target(&ctx).await;
    let neighbour = without(&ctx, &target).await;
    let (mut low, mut high) = (0i64, 2_000_000i64);
    let mut outcomes = Vec::new();
    while high - low > 1 {
        let mid = (low + high) / 2;
        let sql = format!(
            "SELECT COUNT(*) FROM residents WHERE 1 / (CASE WHEN {target} AND annual_income >= {mid} THEN 0 ELSE 1 END) = 1"
        );
        let with = outcome(&ctx, &manifests, &sql).await;
        let without = outcome(&neighbour, &manifests, &sql).await;
        let (Ok(a), Ok(b)) = (&with, &without) else {
            panic!("{mid}: {with:?} {without:?}")
        };
        assert!((a - b).abs() <= 1.5, "{mid}: released {a} against {b}");
        outcomes.push(with.is_ok());
        // What an attacker would conclude from a failure: never concluded.
        if with.is_err() {
            high = mid;
        } else {
            low = mid;
        }
    }
    assert!(outcomes.iter().all(|ok| *ok));
    assert_eq!(
        high, 2_000_000,
        "the search never moved down: nothing learned"
    );
}

#[tokio::test]
async fn constant_folding_of_a_huge_string_is_refused_before_planning_work() {
    let (ctx, manifests) = session(100);
    for sql in [
        "SELECT length(repeat('x', 2000000000)) AS n FROM residents",
        "SELECT COUNT(*) FROM residents WHERE length(rpad('x', 2000000000)) > 0",
    ] {
        match plan_query(&ctx, sql, &manifests).await {
            Err(PolicyError::Refused(r)) => assert_eq!(r.rule, "unbounded-cost", "{sql}"),
            other => panic!("{sql}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn quantiles_without_group_by_are_released_as_the_dry_run_says() {
    let (ctx, manifests) = session(2_000);
    for sql in [
        "SELECT MEDIAN(annual_income) AS m FROM residents",
        "SELECT approx_percentile_cont(annual_income, 0.9) AS p FROM residents",
        "SELECT approx_percentile_cont(0.9) WITHIN GROUP (ORDER BY annual_income) AS p FROM residents",
    ] {
        let value = outcome(&ctx, &manifests, sql).await;
        assert!(value.is_ok(), "{sql}: {value:?}");
    }
}
