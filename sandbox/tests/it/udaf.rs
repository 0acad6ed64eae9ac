//! WebAssembly aggregate UDFs inside real DataFusion queries: grouped and
//! ungrouped results equal the same aggregates written in native SQL across
//! partial and final aggregation, and lying or endless aggregates are
//! stopped with their own error while the session keeps working.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::logical_expr::AggregateUDF;
use datafusion::prelude::SessionContext;
use unseen_sandbox::{Limits, ModuleKind, Sandbox, UdfError, UdfModule};

use crate::support::{shared, test_limits, wasm};
use crate::udf::{module, module_of, query, session, udf_error};

/// Registers every aggregate `module` declares.
fn register_all(ctx: &SessionContext, module: &UdfModule) {
    for udaf in module.declared_aggregates().expect("declared aggregates") {
        ctx.register_udaf(AggregateUDF::from(udaf));
    }
}

fn assert_close(found: f64, expected: f64, what: &str) {
    let scale = expected.abs().max(1.0);
    assert!(
        (found - expected).abs() <= 1e-9 * scale,
        "{what}: wasm {found}, native {expected}"
    );
}

#[test]
fn modules_declare_their_aggregates_and_state_sizes() {
    let validated = shared()
        .validate(&wasm("udf-stats"), ModuleKind::Udf)
        .unwrap();
    assert!(validated.functions().is_empty());
    let mut declared: Vec<(String, Vec<DataType>, DataType, usize)> = validated
        .aggregates()
        .iter()
        .map(|a| {
            (
                a.function.name.clone(),
                a.function.args.clone(),
                a.function.returns.clone(),
                a.state_bytes,
            )
        })
        .collect();
    declared.sort();
    use DataType::{Float64, Int64, Utf8};
    assert_eq!(
        declared,
        vec![
            ("geo_mean".into(), vec![Float64], Float64, 16),
            ("industries_seen".into(), vec![Utf8], Int64, 8),
            (
                "precision_weighted_mean".into(),
                vec![Float64, Float64, Float64],
                Float64,
                16
            ),
            ("weighted_mean".into(), vec![Float64, Float64], Float64, 16),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_and_ungrouped_aggregates_equal_native_sql() {
    // Three partitions: partial states cross partitions and are merged.
    let ctx = session(3);
    register_all(&ctx, &module("udf-stats"));

    let cols = query(
        &ctx,
        "SELECT x % 7 AS k, \
                weighted_mean(a, b), SUM(a * b) / SUM(b) FILTER (WHERE a IS NOT NULL), \
                geo_mean(a), EXP(AVG(LN(a)) FILTER (WHERE a > 0)), \
                weighted_mean(a, b) FILTER (WHERE y > 0), \
                SUM(a * b) FILTER (WHERE y > 0) / SUM(b) FILTER (WHERE y > 0 AND a IS NOT NULL), \
                COUNT(*) \
         FROM t WHERE b IS NOT NULL GROUP BY k ORDER BY k",
    )
    .await
    .expect("grouped query");
    let groups = cols[0].len();
    assert!(groups >= 13, "{groups} groups");
    for i in 0..groups {
        for (wasm_col, native_col, what) in [
            (1, 2, "weighted_mean"),
            (3, 4, "geo_mean"),
            (5, 6, "weighted_mean with FILTER"),
        ] {
            let (w, n) = (
                cols[wasm_col].as_primitive::<Float64Type>(),
                cols[native_col].as_primitive::<Float64Type>(),
            );
            assert_eq!(w.is_null(i), n.is_null(i), "{what}, group {i}");
            if n.is_valid(i) {
                assert_close(w.value(i), n.value(i), what);
            }
        }
    }

    let cols = query(
        &ctx,
        "SELECT geo_mean(a), EXP(AVG(LN(a)) FILTER (WHERE a > 0)), \
                industries_seen(s), \
                COUNT(DISTINCT s) FILTER (WHERE s IN ('retail', 'software', 'catering', \
                    'manufacturing', 'construction', 'logistics', 'finance', 'agriculture')), \
                weighted_mean(a, b) FILTER (WHERE a < 0) \
         FROM t",
    )
    .await
    .expect("ungrouped query");
    assert_close(
        cols[0].as_primitive::<Float64Type>().value(0),
        cols[1].as_primitive::<Float64Type>().value(0),
        "ungrouped geo_mean",
    );
    assert_eq!(
        cols[2].as_primitive::<Int64Type>().value(0),
        cols[3].as_primitive::<Int64Type>().value(0)
    );
    assert!(
        cols[4].is_null(0),
        "no rows: the finished empty state is null"
    );

    // An empty table: the empty state, finished.
    let cols = query(
        &ctx,
        "SELECT industries_seen(s), geo_mean(a) FROM t WHERE 1 = 0",
    )
    .await
    .unwrap();
    assert_eq!(cols[0].as_primitive::<Int64Type>().value(0), 0);
    assert!(cols[1].is_null(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_and_endless_aggregates_are_stopped_with_their_own_error() {
    let sandbox = Sandbox::new(Limits {
        deadline: std::time::Duration::from_millis(300),
        ..test_limits()
    })
    .unwrap();
    let ctx = session(1);
    register_all(&ctx, &module_of(&sandbox, "udf-stats"));
    register_all(&ctx, &module_of(&sandbox, "adv-udaf"));

    let e = query(&ctx, "SELECT short(a) FROM t").await.unwrap_err();
    match udf_error(&e) {
        UdfError::BadOutput { udf, problem } => {
            assert_eq!(udf, "short");
            assert!(problem.contains("2 rows for a batch of 1"), "{problem}");
        }
        other => panic!("expected an invalid result, got {other}"),
    }
    let e = query(&ctx, "SELECT unknown_status(a) FROM t GROUP BY x % 3")
        .await
        .unwrap_err();
    match udf_error(&e) {
        UdfError::BadOutput { udf, problem } => {
            assert_eq!(udf, "unknown_status");
            assert!(problem.contains("status 77"), "{problem}");
        }
        other => panic!("expected an undefined status, got {other}"),
    }
    let e = query(&ctx, "SELECT spin(x) FROM t").await.unwrap_err();
    match udf_error(&e) {
        UdfError::LimitExceeded { udf, limit, .. } => {
            assert_eq!(udf, "spin");
            assert_eq!(*limit, "deadline");
        }
        other => panic!("expected the deadline, got {other}"),
    }
    let cols = query(&ctx, "SELECT industries_seen(s) FROM t")
        .await
        .expect("the session keeps working");
    assert_eq!(cols[0].as_primitive::<Int64Type>().value(0), 2);
}

#[test]
fn aggregate_declarations_must_match_their_exports() {
    // `adv-udaf` declares `short`, `unknown_status` and `spin`; a module
    // whose section also declares an aggregate without exports is refused.
    let bytes = wasm("adv-udaf");
    let mut record = vec![5u8];
    record.extend_from_slice(b"ghost");
    record.extend_from_slice(&[1, 2, 2, 8, 0]);
    let with_ghost = crate::udf::with_section(bytes.clone(), "unseen_udaf", &record);
    let e = shared()
        .validate(&with_ghost, ModuleKind::Udf)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no export `udaf_ghost_init`"), "{e}");

    // Without its declarations, the exports are refused as undeclared.
    let stripped = crate::udf::without_sections(&bytes);
    let e = shared()
        .validate(&stripped, ModuleKind::Udf)
        .unwrap_err()
        .to_string();
    assert!(e.contains("custom section"), "{e}");
}
