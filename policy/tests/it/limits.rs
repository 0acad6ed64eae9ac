//! What one query may cost the service: open-column joins that grow with
//! the square of the data are refused before any work, and every query is
//! bounded at run time in join rows, memory and time. An open-column query
//! over a limit gets a clean error naming it; a DP release over a limit is
//! noise over fixed defaults, like any other engine failure, since whether
//! a limit is hit can depend on the data.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use unseen_policy::admission::Admitted;
use unseen_policy::limits::session_state;
use unseen_policy::{
    ExecutionLimits, Manifest, PolicyError, plan_query, plan_release, release_aggregate,
    release_open,
};

use crate::support::{charged, session_in};

fn limited(limits: ExecutionLimits, runtime: Arc<RuntimeEnv>) -> SessionContext {
    SessionContext::new_with_state(session_state(SessionConfig::new(), runtime, limits))
}

fn no_pool() -> Arc<RuntimeEnv> {
    Arc::new(RuntimeEnv::default())
}

async fn open_outcome(
    ctx: &SessionContext,
    sql: &str,
    manifests: &Manifests,
) -> Result<u64, PolicyError> {
    match plan_query(ctx, sql, manifests).await? {
        Admitted::Open(plan) => {
            let result = release_open(ctx, plan, 10).await?;
            match &result.table.columns[0].values {
                udf_sdk::ColumnValues::Int(v) => Ok(v[0] as u64),
                other => panic!("{sql}: {other:?}"),
            }
        }
        Admitted::Aggregate(_) => panic!("{sql} is not an open-column query"),
    }
}

type Manifests = std::collections::BTreeMap<String, Manifest>;

#[tokio::test]
async fn open_joins_on_categories_or_without_an_equality_are_refused_before_any_work() {
    let (ctx, manifests) = session_in(SessionContext::new(), 200);
    for sql in [
        // The attack: an open-column triple self-join on `gender`.
        "SELECT COUNT(*) FROM residents a JOIN residents b ON a.gender = b.gender \
         JOIN residents c ON b.gender = c.gender",
        // The same through functions of the category.
        "SELECT COUNT(*) FROM residents a JOIN residents b ON lower(a.gender) = upper(b.gender)",
        // Products: no equality at all.
        "SELECT COUNT(*) FROM residents a CROSS JOIN residents b",
        "SELECT COUNT(*) FROM residents a, residents b",
        "SELECT COUNT(*) FROM residents a JOIN residents b ON a.gender < b.gender",
        "WITH x AS (SELECT gender FROM residents) SELECT COUNT(*) FROM x a JOIN x b ON a.gender = b.gender",
    ] {
        match plan_query(&ctx, sql, &manifests).await {
            Err(PolicyError::Refused(r)) => {
                assert_eq!(r.rule, "open-join", "{sql}: {r:?}");
                assert!(r.message.contains("join"), "{sql}: {}", r.message);
            }
            other => panic!("{sql} was not refused: {other:?}"),
        }
    }
    // A side with at most one row multiplies nothing.
    let ok = "SELECT COUNT(*) FROM residents WHERE gender = (SELECT MIN(gender) FROM residents)";
    assert!(
        matches!(
            plan_query(&ctx, ok, &manifests).await,
            Ok(Admitted::Open(_))
        ),
        "{ok}"
    );
}

/// `t(person_id, k)` with `k` open and without a domain: `rows` rows with
/// `k = i % keys`, in batches of 1,000.
fn keyed(ctx: &SessionContext, rows: i64, keys: i64) -> Manifests {
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
name = "k"
type = "int64"
class = "open"
"#,
    )
    .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("person_id", DataType::Int64, false),
        Field::new("k", DataType::Int64, false),
    ]));
    let batches = (0..rows)
        .step_by(1_000)
        .map(|at| {
            let ids = at..(at + 1_000).min(rows);
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values(ids.clone())),
                    Arc::new(Int64Array::from_iter_values(ids.map(|i| i % keys))),
                ],
            )
            .unwrap()
        })
        .collect();
    ctx.register_table(
        "t",
        Arc::new(MemTable::try_new(schema, vec![batches]).unwrap()),
    )
    .unwrap();
    [("t".to_string(), manifest)].into_iter().collect()
}

#[tokio::test]
async fn a_join_over_the_row_cap_stops_with_an_error_naming_the_limit() {
    // 2,000 rows on 10 keys: the self-join has 400,000 rows.
    let sql = "SELECT COUNT(*) AS n FROM t a JOIN t b ON a.k = b.k";
    let capped = limited(
        ExecutionLimits {
            join_rows: Some(5_000),
            ..Default::default()
        },
        no_pool(),
    );
    let manifests = keyed(&capped, 2_000, 10);
    match open_outcome(&capped, sql, &manifests).await {
        Err(PolicyError::TooLarge(m)) => assert!(m.contains("more than 5000 rows"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Under the cap the same join is answered exactly.
    let roomy = limited(
        ExecutionLimits {
            join_rows: Some(400_000),
            ..Default::default()
        },
        no_pool(),
    );
    let manifests = keyed(&roomy, 2_000, 10);
    assert_eq!(
        open_outcome(&roomy, sql, &manifests).await.unwrap(),
        400_000
    );
}

#[tokio::test]
async fn an_open_query_past_the_time_limit_is_stopped_with_an_error_naming_it() {
    let ctx = limited(
        ExecutionLimits {
            time: Some(Duration::from_millis(300)),
            ..Default::default()
        },
        no_pool(),
    );
    // 20,000 rows on 2 keys: a self-join of 200,000,000 rows, seconds of work.
    let manifests = keyed(&ctx, 20_000, 2);
    let sql = "SELECT COUNT(*) AS n FROM t a JOIN t b ON a.k = b.k";
    match open_outcome(&ctx, sql, &manifests).await {
        Err(PolicyError::TimedOut { seconds }) => assert_eq!(seconds, 0.3),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_open_query_over_its_memory_gets_a_clean_too_large_error() {
    // A pool too small for a hash table over 20,000 strings, and no spilling.
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(64 << 10)))
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()
        .unwrap();
    let ctx = limited(
        ExecutionLimits {
            memory: Some(64 << 10),
            ..Default::default()
        },
        runtime,
    );
    let manifests = keyed(&ctx, 200_000, 200_000);
    let sql = "SELECT COUNT(*) AS n FROM (SELECT DISTINCT k FROM t)";
    match open_outcome(&ctx, sql, &manifests).await {
        Err(PolicyError::TooLarge(m)) => assert!(m.contains("0 MiB of memory"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_dp_release_over_a_limit_is_noise_over_defaults_not_an_error() {
    for limits in [
        ExecutionLimits {
            time: Some(Duration::from_millis(1)),
            ..Default::default()
        },
        ExecutionLimits {
            memory: Some(1 << 10),
            ..Default::default()
        },
        ExecutionLimits {
            join_rows: Some(10),
            ..Default::default()
        },
    ] {
        let runtime = match limits.memory {
            Some(bytes) => RuntimeEnvBuilder::new()
                .with_memory_pool(Arc::new(FairSpillPool::new(bytes)))
                .with_disk_manager_builder(
                    DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
                )
                .build_arc()
                .unwrap(),
            None => no_pool(),
        };
        // Visits joined to residents on the person, grouped by district: a
        // join, an aggregation and tens of thousands of rows to read.
        let ctx = limited(limits.clone(), runtime);
        let (ctx, manifests) = crate::support::joined_session_in(ctx, 2_000, 40_000);
        let sql = "SELECT r.district, COUNT(*) AS visits FROM health_visits h \
                   JOIN residents r ON h.person_id = r.person_id GROUP BY r.district";
        let Admitted::Aggregate(query) = plan_query(&ctx, sql, &manifests).await.unwrap() else {
            panic!("{sql} is a DP aggregate");
        };
        let plan = charged(plan_release(&query, 1.0, |_: &str| false).unwrap());
        let release = release_aggregate(&ctx.state(), &query, &plan)
            .await
            .unwrap();
        assert!(release.defaulted, "{limits:?}: the limit was not hit");
        assert_eq!(release.result.table.rows(), 12, "{limits:?}");
    }
}

#[tokio::test]
async fn queries_too_large_to_plan_are_refused_from_their_tokens() {
    let (ctx, manifests) = session_in(SessionContext::new(), 50);
    // `SELECT SUM(...)` of `n` bounded terms joined by `op`.
    let sum_of = |n: usize, op: &str| {
        let terms = vec!["length(upper(gender))"; n].join(&format!(" {op} "));
        format!("SELECT SUM(LEAST(GREATEST({terms}, 0), 1)) AS s FROM residents")
    };
    let union = |n: usize| {
        format!(
            "SELECT COUNT(*) AS n FROM ({}) t",
            vec!["SELECT gender FROM residents"; n].join(" UNION ALL ")
        )
    };
    let commas = (0..3000)
        .map(|i| format!("residents r{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let cte = format!(
        "WITH x AS ({}) SELECT COUNT(*) FROM x a JOIN x b ON a.gender = b.gender",
        vec!["SELECT gender FROM residents"; 40].join(" UNION ALL ")
    );
    for sql in [
        // Planning recursed once per UNION and overflowed the stack.
        union(3000),
        // Planning thousands of comma-separated tables took minutes.
        format!("SELECT COUNT(*) FROM {commas}"),
        // Few tables in the text, 80 scans in the plan.
        cte,
        // A thousand-term sum: planning walked its thousand-deep tree and
        // overflowed the stack of the thread serving it.
        sum_of(1_000, "+"),
        format!(
            "SELECT COUNT(*) AS n FROM residents WHERE {}",
            (0..500)
                .map(|i| format!("household_size <> {i}"))
                .collect::<Vec<_>>()
                .join(" AND ")
        ),
    ] {
        match plan_query(&ctx, &sql, &manifests).await {
            Err(PolicyError::Refused(r)) => assert_eq!(r.rule, "too-complex", "{}", r.message),
            other => panic!("{}...: {other:?}", &sql[..80]),
        }
    }
    // Ordinary sizes pass.
    assert!(plan_query(&ctx, &union(20), &manifests).await.is_ok());
    // So does a sum at the operator limit, on a thread with the stack the
    // service gives the threads that plan queries (tokio's 2 MiB, in a
    // debug build, is not enough for it).
    let within = sum_of(unseen_policy::MAX_OPERATORS + 1, "+");
    let planned = std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(async { plan_query(&ctx, &within, &manifests).await.map(|_| ()) })
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(planned.is_ok(), "{planned:?}");
}

/// A build that links a crate turning on DataFusion's `nested_expressions`
/// (the cluster engine's does) must not hand queries array functions, whose
/// work grows with a value (`array_repeat(x, 1000000000)`), or lambdas, which
/// admission's lineage rules do not look inside.
#[tokio::test]
async fn queries_get_no_array_functions_or_lambdas_whatever_datafusion_was_built_with() {
    let ctx = limited(ExecutionLimits::default(), no_pool());
    let state = ctx.state();
    let allowed: std::collections::BTreeSet<String> =
        datafusion::functions::all_default_functions()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
    for (key, function) in state.scalar_functions() {
        assert!(
            allowed.contains(function.name()),
            "`{key}` ({}) is not one of datafusion-functions' own",
            function.name()
        );
    }
    assert!(state.higher_order_functions().is_empty());
    for sql in [
        "SELECT array_repeat(1, 3) AS a",
        "SELECT make_array(1, 2) AS a",
        "SELECT [1, 2] AS a",
        "SELECT array_transform([1, 2], x -> x * 2) AS a",
        "SELECT cardinality(string_to_array('a,b', ',')) AS a",
    ] {
        let planned = ctx.sql(sql).await;
        assert!(planned.is_err(), "{sql} was planned");
    }
    // What queries do use is still there.
    for sql in [
        "SELECT upper('a') AS a",
        "SELECT date_part('year', now()) AS a",
        "SELECT sqrt(4.0) AS a",
        "SELECT regexp_like('a', 'a') AS a",
        "SELECT COUNT(*) AS a FROM (VALUES (1)) AS t(x)",
    ] {
        ctx.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}
