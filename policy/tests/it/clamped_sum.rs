//! The fused clamped sum (`unseen_policy::clamped_sum`) against plain Rust
//! references: random data with nulls, NaN, infinities, values outside the
//! bounds and `i64` extremes, over several partitions so that DataFusion
//! merges partial states, with and without GROUP BY, FILTER and skipped
//! partial aggregation.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::support::charged;
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Decimal128Type, Field, Float64Type, Int64Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Expr, ExprFunctionExt, col};
use datafusion::physical_plan::{ExecutionPlan, collect, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};
use udf_sdk::ColumnValues;
use unseen_policy::admission::Admitted;
use unseen_policy::clamped_sum::{ClampedSum, Output};
use unseen_policy::manifest::ColumnType;
use unseen_policy::{plan_query, plan_release, release_aggregate};

/// splitmix64: reproducible data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One generated row: group, value, FILTER flag (`None` is a null flag).
struct Row<T> {
    group: i64,
    value: Option<T>,
    keep: Option<bool>,
}

/// Integers with nulls, both `i64` extremes, values around and far outside
/// `bounds`.
fn int_rows(rng: &mut Rng, n: usize, groups: i64, (lo, hi): (i64, i64)) -> Vec<Row<i64>> {
    (0..n)
        .map(|_| {
            let value = match rng.below(10) {
                0 => None,
                1 => Some(i64::MAX),
                2 => Some(i64::MIN),
                3 => Some(lo.saturating_sub(rng.below(3) as i64)),
                4 => Some(hi.saturating_add(rng.below(3) as i64)),
                5 => Some(rng.next() as i64),
                _ => {
                    let span = (hi as i128 - lo as i128 + 1) as u128;
                    Some((lo as i128 + (u128::from(rng.next()) % span) as i128) as i64)
                }
            };
            Row {
                group: rng.below(groups as u64) as i64,
                value,
                keep: match rng.below(4) {
                    0 => None,
                    1 => Some(false),
                    _ => Some(true),
                },
            }
        })
        .collect()
}

/// Floats in quarters (so that sums are exact in any order), with nulls,
/// NaN, infinities and values outside `bounds`.
fn float_rows(rng: &mut Rng, n: usize, groups: i64) -> Vec<Row<f64>> {
    (0..n)
        .map(|_| {
            let value = match rng.below(12) {
                0 => None,
                1 => Some(f64::NAN),
                2 => Some(f64::INFINITY),
                3 => Some(f64::NEG_INFINITY),
                4 => Some(-1e300),
                5 => Some(1e300),
                _ => Some((rng.below(40_000) as f64 - 20_000.0) / 4.0),
            };
            Row {
                group: rng.below(groups as u64) as i64,
                value,
                keep: match rng.below(4) {
                    0 => None,
                    1 => Some(false),
                    _ => Some(true),
                },
            }
        })
        .collect()
}

/// `rows` as a table `t(g, v, keep)` of `partitions` partitions, each of a
/// few batches.
fn table<T: Copy>(
    rows: &[Row<T>],
    partitions: usize,
    value_type: DataType,
    array: impl Fn(Vec<Option<T>>) -> ArrayRef,
) -> MemTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("g", DataType::Int64, false),
        Field::new("v", value_type, true),
        Field::new("keep", DataType::Boolean, true),
    ]));
    let mut parts = vec![Vec::new(); partitions];
    let batch_rows = rows.len().div_ceil(partitions * 3).max(1);
    for (i, chunk) in rows.chunks(batch_rows).enumerate() {
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(chunk.iter().map(|r| r.group))),
                array(chunk.iter().map(|r| r.value).collect()),
                Arc::new(BooleanArray::from(
                    chunk.iter().map(|r| r.keep).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap();
        parts[i % partitions].push(batch);
    }
    MemTable::try_new(schema, parts).unwrap()
}

fn int_table(rows: &[Row<i64>], partitions: usize) -> MemTable {
    table(rows, partitions, DataType::Int64, |v| {
        Arc::new(Int64Array::from(v))
    })
}

fn float_table(rows: &[Row<f64>], partitions: usize) -> MemTable {
    table(rows, partitions, DataType::Float64, |v| {
        Arc::new(Float64Array::from(v))
    })
}

/// Four partitions, so that aggregates run as partial then final.
fn context(config: SessionConfig, t: MemTable) -> SessionContext {
    let ctx = SessionContext::new_with_config(config.with_target_partitions(4));
    ctx.register_table("t", Arc::new(t)).unwrap();
    ctx
}

fn int_clamp(v: Option<i64>, (lo, hi): (i64, i64)) -> i64 {
    v.map_or(lo, |v| v.clamp(lo, hi))
}

/// LEAST(GREATEST(v, lo), hi) as DataFusion orders floats: NaN above all.
fn float_clamp(v: Option<f64>, (lo, hi): (f64, f64)) -> f64 {
    match v {
        None => lo,
        Some(v) if v.is_nan() => hi,
        Some(v) => v.clamp(lo, hi),
    }
}

/// Runs `agg` (aliased `s`) grouped by `g` (or over all rows when
/// `grouped` is false) and returns each group's result and the physical
/// plan's text.
async fn run(
    ctx: &SessionContext,
    agg: Expr,
    grouped: bool,
    read: impl Fn(&ArrayRef, usize) -> f64,
) -> (BTreeMap<i64, f64>, String) {
    let group = if grouped { vec![col("g")] } else { vec![] };
    let df = ctx
        .table("t")
        .await
        .unwrap()
        .aggregate(group, vec![agg.alias("s")])
        .unwrap();
    let plan = df.create_physical_plan().await.unwrap();
    let text = displayable(plan.as_ref()).indent(true).to_string();
    let batches = collect(plan, ctx.task_ctx()).await.unwrap();
    let mut out = BTreeMap::new();
    for b in &batches {
        let s = b.column(b.num_columns() - 1);
        for row in 0..b.num_rows() {
            let g = if grouped {
                b.column(0).as_primitive::<Int64Type>().value(row)
            } else {
                0
            };
            assert!(s.is_valid(row), "a clamped sum is never null");
            out.insert(g, read(s, row));
        }
    }
    (out, text)
}

/// As [`run`] for integer sums, exactly as `i128`.
async fn run_int(ctx: &SessionContext, agg: Expr, grouped: bool) -> BTreeMap<i64, i128> {
    let group = if grouped { vec![col("g")] } else { vec![] };
    let batches = ctx
        .table("t")
        .await
        .unwrap()
        .aggregate(group, vec![agg.alias("s")])
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for b in &batches {
        let s = b.column(b.num_columns() - 1);
        assert_eq!(s.data_type(), &DataType::Decimal128(38, 0));
        for row in 0..b.num_rows() {
            let g = if grouped {
                b.column(0).as_primitive::<Int64Type>().value(row)
            } else {
                0
            };
            assert!(s.is_valid(row), "a clamped sum is never null");
            out.insert(g, s.as_primitive::<Decimal128Type>().value(row));
        }
    }
    out
}

fn float_at(s: &ArrayRef, row: usize) -> f64 {
    s.as_primitive::<Float64Type>().value(row)
}

fn int_sum(bounds: (f64, f64), clamp: bool) -> ClampedSum {
    ClampedSum::new(Output::Sum, ColumnType::Int64, bounds, clamp).unwrap()
}

/// Per group, the sum of `term` over the rows `keep` accepts.
fn reference<T: Copy, S: Default + std::ops::AddAssign>(
    rows: &[Row<T>],
    grouped: bool,
    keep: impl Fn(&Row<T>) -> bool,
    term: impl Fn(Option<T>) -> S,
) -> BTreeMap<i64, S> {
    let mut out = BTreeMap::new();
    for r in rows {
        let g = if grouped { r.group } else { 0 };
        let sum = out.entry(g).or_insert_with(S::default);
        if keep(r) {
            *sum += term(r.value);
        }
    }
    out
}

/// Fails on the first group whose sum differs (the maps can hold a group
/// per row, too many to print whole).
fn assert_same<S: PartialEq + std::fmt::Debug>(
    got: &BTreeMap<i64, S>,
    want: &BTreeMap<i64, S>,
    what: &str,
) {
    assert_eq!(got.len(), want.len(), "{what}: number of groups");
    for (g, w) in want {
        assert_eq!(got.get(g), Some(w), "{what}: group {g}");
    }
}

/// Integer clamped sums equal an `i128` reference for narrow, half-range
/// and full `i64` bounds, grouped and not; with full bounds the true sums
/// lie far outside `i64`, where DataFusion's own SUM wraps.
#[tokio::test]
async fn integer_clamped_sums_match_an_exact_reference() {
    let mut rng = Rng(1);
    let cases: [(i64, i64); 3] = [(-1_000, 1_000), (0, 1 << 62), (i64::MIN, i64::MAX)];
    for (case, bounds) in cases.into_iter().enumerate() {
        let rows = int_rows(&mut rng, 20_000, 7, bounds);
        let ctx = context(SessionConfig::new(), int_table(&rows, 4));
        let fbounds = (bounds.0 as f64, bounds.1 as f64);
        for grouped in [true, false] {
            let got = run_int(&ctx, int_sum(fbounds, true).call(col("v")), grouped).await;
            let want = reference(
                &rows,
                grouped,
                |_| true,
                |v| i128::from(int_clamp(v, bounds)),
            );
            assert_same(
                &got,
                &want,
                &format!("bounds {bounds:?}, grouped {grouped}"),
            );
            if case == 2 {
                assert!(
                    want.values().any(|&s| i64::try_from(s).is_err()),
                    "control: some true sum is outside i64"
                );
            }
        }
    }
}

/// Partial states really are merged: the plan aggregates in two phases over
/// several partitions.
#[tokio::test]
async fn clamped_sums_run_as_partial_and_final_aggregates() {
    let mut rng = Rng(2);
    let rows = float_rows(&mut rng, 5_000, 5);
    let ctx = context(SessionConfig::new(), float_table(&rows, 4));
    let sum = ClampedSum::new(Output::Sum, ColumnType::Float64, (-10.0, 10.0), true).unwrap();
    for grouped in [true, false] {
        let (_, plan) = run(&ctx, sum.clone().call(col("v")), grouped, float_at).await;
        assert!(plan.contains("mode=Partial"), "{plan}");
        assert!(plan.contains("mode=Final"), "{plan}");
    }
}

/// Float clamped sums: a null is the lower bound, NaN and +inf the upper,
/// -inf the lower, as LEAST(GREATEST(v, lo), hi) orders them.
#[tokio::test]
async fn float_clamped_sums_match_a_reference() {
    let mut rng = Rng(3);
    let rows = float_rows(&mut rng, 20_000, 6);
    let ctx = context(SessionConfig::new(), float_table(&rows, 4));
    let bounds = (-1_000.5, 2_500.25);
    let sum = ClampedSum::new(Output::Sum, ColumnType::Float64, bounds, true).unwrap();
    for grouped in [true, false] {
        let (got, _) = run(&ctx, sum.clone().call(col("v")), grouped, float_at).await;
        let want = reference(&rows, grouped, |_| true, |v| float_clamp(v, bounds));
        assert_same(&got, &want, &format!("grouped {grouped}"));
    }
    // Control: the same through DataFusion's GREATEST and LEAST.
    let sql = ctx
        .sql("SELECT g, SUM(LEAST(GREATEST(v, -1000.5), 2500.25)) FROM t GROUP BY g")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let want = reference(&rows, true, |_| true, |v| float_clamp(v, bounds));
    for b in &sql {
        for row in 0..b.num_rows() {
            let g = b.column(0).as_primitive::<Int64Type>().value(row);
            let sql_sum = float_at(b.column(1), row);
            // GREATEST skips a null, so it too becomes the lower bound.
            assert_eq!(sql_sum, want[&g], "group {g}");
        }
    }
}

/// Squared deviations from the bounds' midpoint, integer and float input.
#[tokio::test]
async fn squared_deviations_match_a_reference() {
    let mut rng = Rng(4);
    let int = int_rows(&mut rng, 20_000, 5, (-7, 12));
    let ctx = context(SessionConfig::new(), int_table(&int, 3));
    let squares = ClampedSum::new(
        Output::SquaredDeviations,
        ColumnType::Int64,
        (-7.0, 12.0),
        true,
    )
    .unwrap();
    for grouped in [true, false] {
        let (got, _) = run(&ctx, squares.clone().call(col("v")), grouped, float_at).await;
        let want = reference(
            &int,
            grouped,
            |_| true,
            |v| (int_clamp(v, (-7, 12)) as f64 - 2.5).powi(2),
        );
        assert_same(&got, &want, &format!("integer, grouped {grouped}"));
    }

    let float = float_rows(&mut rng, 20_000, 5);
    let ctx = context(SessionConfig::new(), float_table(&float, 3));
    let bounds = (-1_000.5, 2_500.25);
    let mid = (bounds.0 + bounds.1) / 2.0;
    // `clamp: false` is ignored for squared deviations: they always clamp.
    let squares = ClampedSum::new(
        Output::SquaredDeviations,
        ColumnType::Float64,
        bounds,
        false,
    )
    .unwrap();
    for grouped in [true, false] {
        let (got, _) = run(&ctx, squares.clone().call(col("v")), grouped, float_at).await;
        let want = reference(
            &float,
            grouped,
            |_| true,
            |v| (float_clamp(v, bounds) - mid).powi(2),
        );
        assert_same(&got, &want, &format!("float, grouped {grouped}"));
    }
}

/// Without the clamp (registration found every value within bounds),
/// values are added as they are; a null still counts as the lower bound.
#[tokio::test]
async fn an_unclamped_sum_adds_values_as_they_are() {
    let mut rng = Rng(5);
    let rows = int_rows(&mut rng, 10_000, 4, (-5, 5));
    let ctx = context(SessionConfig::new(), int_table(&rows, 4));
    for grouped in [true, false] {
        let got = run_int(&ctx, int_sum((-5.0, 5.0), false).call(col("v")), grouped).await;
        let want = reference(&rows, grouped, |_| true, |v| i128::from(v.unwrap_or(-5)));
        assert_same(&got, &want, &format!("grouped {grouped}"));
        let clamped = reference(
            &rows,
            grouped,
            |_| true,
            |v| i128::from(int_clamp(v, (-5, 5))),
        );
        assert_ne!(got, clamped, "control: the data has values outside bounds");
    }
}

/// Sums of each node of `plan` and its inputs' metric `name`.
fn metric(plan: &Arc<dyn ExecutionPlan>, name: &str) -> usize {
    let own = plan
        .metrics()
        .and_then(|m| m.sum_by_name(name))
        .map_or(0, |v| v.as_usize());
    own + plan
        .children()
        .into_iter()
        .map(|c| metric(c, name))
        .sum::<usize>()
}

/// An aggregate FILTER skips rows whose flag is false or null (a group left
/// without rows sums to zero), both when partial aggregation runs and when
/// DataFusion skips it for a key per row and converts rows to states.
#[tokio::test]
async fn filtered_and_unaggregated_rows_match_a_reference() {
    let mut rng = Rng(6);
    let bounds = (-1_000_i64, 1_000_i64);
    let fbounds = (-1_000.0, 1_000.0);
    let keep = |r: &Row<i64>| r.keep == Some(true);
    let filtered = |agg: Expr| agg.filter(col("keep")).build().unwrap();

    let rows = int_rows(&mut rng, 20_000, 9, bounds);
    let ctx = context(SessionConfig::new(), int_table(&rows, 4));
    for grouped in [true, false] {
        let got = run_int(
            &ctx,
            filtered(int_sum(fbounds, true).call(col("v"))),
            grouped,
        )
        .await;
        let want = reference(&rows, grouped, keep, |v| i128::from(int_clamp(v, bounds)));
        assert_same(&got, &want, &format!("grouped {grouped}"));
    }

    // A group per row, and partial aggregation given up after 100 rows.
    let mut rows = int_rows(&mut rng, 20_000, 1, bounds);
    for (i, r) in rows.iter_mut().enumerate() {
        r.group = i as i64;
    }
    let config = SessionConfig::new()
        .set_usize(
            "datafusion.execution.skip_partial_aggregation_probe_rows_threshold",
            100,
        )
        .set_str(
            "datafusion.execution.skip_partial_aggregation_probe_ratio_threshold",
            "0.1",
        );
    let ctx = context(config, int_table(&rows, 4));
    for (agg, keep) in [
        (filtered(int_sum(fbounds, true).call(col("v"))), true),
        (int_sum(fbounds, true).call(col("v")), false),
    ] {
        let df = ctx
            .table("t")
            .await
            .unwrap()
            .aggregate(vec![col("g")], vec![agg.alias("s")])
            .unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        let batches = collect(plan.clone(), ctx.task_ctx()).await.unwrap();
        assert!(
            metric(&plan, "skipped_aggregation_rows") > 0,
            "control: partial aggregation was skipped"
        );
        let mut got = BTreeMap::new();
        for b in &batches {
            for row in 0..b.num_rows() {
                got.insert(
                    b.column(0).as_primitive::<Int64Type>().value(row),
                    b.column(1).as_primitive::<Decimal128Type>().value(row),
                );
            }
        }
        let want = reference(
            &rows,
            true,
            |r| !keep || r.keep == Some(true),
            |v| i128::from(int_clamp(v, bounds)),
        );
        assert_same(&got, &want, &format!("filter {keep}"));
    }
}

/// A DP release counts a null as the lower bound and clamps values outside
/// the bounds (here `i64::MAX` and a value below the lower bound), with
/// the table split in two partitions.
#[tokio::test]
async fn a_release_sums_nulls_as_the_lower_bound_and_clamps() {
    let values = vec![Some(5), None, Some(-1_000), Some(i64::MAX), Some(7), None];
    let (ctx, manifest) = crate::support::amounts(values, (-100, 1000), 2);
    let manifests = [("t".to_string(), manifest)].into_iter().collect();
    let Admitted::Aggregate(q) = plan_query(&ctx, "SELECT SUM(amount) AS s FROM t", &manifests)
        .await
        .unwrap()
    else {
        panic!("admitted as open columns");
    };
    let plan = charged(plan_release(&q, 1e15, |_: &str| true).unwrap());
    let r = release_aggregate(&ctx.state(), &q, &plan).await.unwrap();
    let ColumnValues::Estimate(e) = r.result.table.column("s").unwrap() else {
        panic!("s is not an estimate");
    };
    // 5 - 100 - 100 + 1000 + 7 - 100
    assert_eq!(e[0].value, 712.0);
}
