//! What a developer can see of how long their work took.
//!
//! A UDF may burn its whole per-row instruction cap on one person's row
//! only, so a query over data that holds that row takes longer than the
//! same query over a neighbouring dataset that does not. A job that read
//! protected data is therefore shown to its developer to end at a *shown
//! end*, a random delay uniform in `[0, quantum)` after it did
//! (`unseen::jobs`), and every answer the developer can time waits for it.
//! The always-on tests check that mechanism; the ignored one measures the
//! channel as a developer would, over the CLI and HTTP.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use arrow::datatypes::Int64Type;
use serde_json::{Value, json};

use crate::support::{TestServer, guest, issue_grant, ok, residents_dir, token_of};

fn ms_since_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn seconds(stamp: &Value) -> i64 {
    let text = stamp
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {stamp}"));
    unseen::util::parse_rfc3339(text).unwrap_or_else(|| panic!("not RFC 3339: {text}")) as i64
}

/// A query or job whose run reads protected data is answered to its
/// developer no earlier than its shown end, which lies within one quantum
/// after its real end; until then the developer sees it running, without
/// outputs or spend, and a cancellation stops it as it would a running
/// job. Reviewers see the real times. Nothing a developer may
/// read (health, the ledger checkpoint) grows as jobs run.
#[test]
fn a_developer_is_shown_a_protected_jobs_end_only_at_its_shown_end() {
    let (_dir, data) = residents_dir("300");
    let grant = issue_grant(&data, "100", &[]);
    let server = TestServer::start(&data, 2);
    let quantum = Duration::from_millis(1_500);
    server.domain.set_timing_quantum(quantum).unwrap();
    let dev = server.client(&token_of(&data, "dev"));
    let rev = server.client(&token_of(&data, "rev"));

    // Synchronous queries: the answer waits for the shown end.
    for run in 0..3 {
        let sql = format!(
            "SELECT district, COUNT(*) AS n FROM residents WHERE annual_income > {} GROUP BY district",
            1_000 * run
        );
        let asked = ms_since_epoch();
        let answer = dev
            .post("/v1/queries", &json!({"grant": grant, "sql": sql}))
            .unwrap();
        let answered = ms_since_epoch();
        assert_eq!(answer["status"], "finished", "{answer}");
        let job = answer["job"].as_str().unwrap();
        let exact = rev.get(&format!("/v1/jobs/{job}")).unwrap()["job"].clone();
        let shown_end = exact["shown_end_ms"].as_i64().unwrap();
        let ended = seconds(&exact["ended_at"]) * 1000;
        assert!(
            shown_end >= ended && shown_end < ended + 1000 + quantum.as_millis() as i64,
            "the shown end lies within a quantum after the end: {exact}"
        );
        assert!(
            answered >= shown_end && shown_end >= asked,
            "answered at {answered}, before the shown end {shown_end}"
        );
        let seen = dev.get(&format!("/v1/jobs/{job}")).unwrap()["job"].clone();
        assert_eq!(seen["status"], "finished", "{seen}");
        assert!(seen.get("shown_end_ms").is_none(), "{seen}");
        assert!(
            seen["ended_at"].is_null() && seen["started_at"].is_null(),
            "developers are shown no times of a job: {seen}"
        );
        assert!(
            seen["run_ms"].is_null() && seen["queries"].is_null(),
            "{seen}"
        );
    }

    // A queued job, watched by its developer and by a reviewer: while the
    // job has ended but its end is not shown yet, the developer sees it
    // running. The window is a uniform draw from [0, quantum) after the
    // end, less the time the end takes to commit, which under a loaded
    // disk can be seconds: a longer quantum here keeps the window open
    // long enough to be polled. On a quiet machine one job almost always
    // shows it; under load each poll is slow and a job can slip through,
    // so up to twelve jobs are tried, stopping at the first that shows it.
    server
        .domain
        .set_timing_quantum(Duration::from_secs(6))
        .unwrap();
    let module = dev
        .post_bytes("/v1/modules", &guest("district-income"), "application/wasm")
        .unwrap()["module"]
        .as_str()
        .unwrap()
        .to_string();
    let mut window_seen = false;
    for _ in 0..12 {
        let submitted = dev
            .post("/v1/jobs", &json!({"grant": grant, "module": module}))
            .unwrap();
        let job = submitted["job"].as_str().unwrap().to_string();
        let path = format!("/v1/jobs/{job}");
        let started = Instant::now();
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "job {job} never ended"
            );
            let exact = rev.get(&path).unwrap()["job"].clone();
            let seen = dev.get(&path).unwrap()["job"].clone();
            let now = ms_since_epoch();
            let status = exact["status"].as_str().unwrap();
            if status == "queued" || status == "running" {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let shown_end = exact["shown_end_ms"].as_i64().unwrap();
            // The developer's view was read after the reviewer's: if the
            // shown end had not come when it was read, it says running.
            if now < shown_end {
                window_seen = true;
                assert_eq!(seen["status"], "running", "{seen}");
                assert!(seen["ended_at"].is_null(), "{seen}");
                assert_eq!(seen["outputs"], json!([]), "{seen}");
                assert_eq!(seen["epsilon_spent"], 0.0, "{seen}");
                // Nor does the grant's spend count it yet for the developer.
                let spent = |client: &unseen::client::Client| {
                    client.get(&format!("/v1/grants/{grant}/budget")).unwrap()["epsilon_spent"]
                        .as_f64()
                        .unwrap()
                };
                let (by_dev, by_rev) = (spent(&dev), spent(&rev));
                if ms_since_epoch() < shown_end {
                    let job_spent = exact["epsilon_spent"].as_f64().unwrap();
                    assert!(job_spent > 0.0, "{exact}");
                    assert!(
                        (by_rev - by_dev - job_spent).abs() < 1e-9,
                        "the developer sees {by_dev} spent, the reviewer {by_rev}"
                    );
                }
                // A cancellation now is answered as for a running job, and
                // the job ends cancelled, as a running one would.
                let cancelled = dev
                    .post(
                        &format!("{path}/cancel"),
                        &json!({"reason": "changed my mind"}),
                    )
                    .unwrap();
                assert_eq!(cancelled["state"], "stopping", "{cancelled}");
                let left = shown_end - ms_since_epoch();
                std::thread::sleep(Duration::from_millis(left.max(0) as u64 + 5));
                let seen = dev.get(&path).unwrap()["job"].clone();
                assert_eq!(seen["status"], "stopped", "{seen}");
                assert_eq!(seen["stopped_by"], "cancelled", "{seen}");
                break;
            }
            if seen["status"] != "running" {
                assert_eq!(seen["status"], exact["status"], "{seen}");
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if window_seen {
            break;
        }
    }
    assert!(
        window_seen,
        "never saw a job between its end and its shown end"
    );

    // What anyone may read without a token, and the checkpoint, which
    // grows with every entry, say nothing of the ledger's size to a
    // developer.
    let health = unseen::client::Client::new(&server.base, None)
        .get("/v1/health")
        .unwrap();
    assert_eq!(health, json!({"ok": true}));
    let refused = dev.get("/v1/ledger/checkpoint").unwrap_err().to_string();
    assert!(refused.contains("role"), "{refused}");
    rev.get("/v1/ledger/checkpoint").unwrap();
    // Nor does the grant's usage: how many queries, how much fuel and time.
    let usage = dev.get(&format!("/v1/grants/{grant}/usage")).unwrap()["usage"].clone();
    for withheld in ["queries", "fuel_used", "rows_read", "run_ms"] {
        assert!(usage[withheld].is_null(), "{withheld}: {usage}");
    }
}

/// Developer-visible durations over `runs` runs per neighbour, by channel.
#[derive(Default)]
struct Durations {
    target: Vec<f64>,
    neighbour: Vec<f64>,
}

impl Durations {
    fn push(&mut self, is_target: bool, value: f64) {
        if is_target {
            self.target.push(value);
        } else {
            self.neighbour.push(value);
        }
    }
}

/// The best accuracy of a threshold classifier telling `a` from `b`
/// (either direction), over every threshold between observed values.
fn best_threshold_accuracy(a: &[f64], b: &[f64]) -> f64 {
    let mut cuts: Vec<f64> = a.iter().chain(b).copied().collect();
    cuts.push(f64::NEG_INFINITY);
    let n = (a.len() + b.len()) as f64;
    cuts.iter()
        .map(|&cut| {
            let right =
                a.iter().filter(|&&x| x > cut).count() + b.iter().filter(|&&x| x <= cut).count();
            let right = right as f64 / n;
            right.max(1.0 - right)
        })
        .fold(0.0, f64::max)
}

#[test]
fn the_threshold_classifier_measures_what_it_should() {
    assert_eq!(best_threshold_accuracy(&[2.0, 3.0], &[0.0, 1.0]), 1.0);
    assert_eq!(best_threshold_accuracy(&[1.0, 1.0], &[1.0, 1.0]), 0.5);
    assert_eq!(best_threshold_accuracy(&[1.0, 3.0], &[2.0, 4.0]), 0.75);
}

/// The residents of `parquet` with `annual_income` of row `row` set to
/// `income`, written to `out`.
fn with_income(parquet: &Path, out: &Path, row: usize, income: i64) {
    let file = std::fs::File::open(parquet).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let schema = batches[0].schema();
    let writer_file = std::fs::File::create(out).unwrap();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(writer_file, schema.clone(), None).unwrap();
    let column = schema.index_of("annual_income").unwrap();
    let mut first = 0;
    for batch in batches {
        let rows = batch.num_rows();
        let mut columns = batch.columns().to_vec();
        if (first..first + rows).contains(&row) {
            let incomes = columns[column].as_primitive::<Int64Type>();
            let changed: Int64Array = (0..rows)
                .map(|r| {
                    if first + r == row {
                        Some(income)
                    } else {
                        (!incomes.is_null(r)).then(|| incomes.value(r))
                    }
                })
                .collect();
            columns[column] = Arc::new(changed);
        }
        writer
            .write(&RecordBatch::try_new(schema.clone(), columns).unwrap())
            .unwrap();
        first += rows;
    }
    writer.close().unwrap();
}

/// The incomes in `parquet`.
fn incomes(parquet: &Path) -> Vec<i64> {
    let file = std::fs::File::open(parquet).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let incomes = batch
            .column_by_name("annual_income")
            .unwrap()
            .as_primitive::<Int64Type>();
        out.extend(incomes.iter().map(|v| v.unwrap_or(-1)));
    }
    out
}

/// Two data directories identical but for one resident's income, each
/// with the residents registered and a grant.
struct Neighbours {
    _dir: tempfile::TempDir,
    /// `(data directory, grant)`: the target's dataset first.
    sides: Vec<(String, String)>,
    /// The target's income in the first; the second has it plus one.
    target_income: i64,
}

/// The target is resident 7 of 2,000, whose income no one else has.
fn neighbours(grant_flags: &[&str]) -> Neighbours {
    const TARGET_ROW: usize = 7;
    let dir = tempfile::tempdir().unwrap();
    let generated = dir.path().join("r.parquet");
    ok(&[
        "dataset",
        "generate",
        "residents",
        "--rows",
        "2000",
        "--out",
        generated.to_str().unwrap(),
    ]);
    let all = incomes(&generated);
    let target_income = all[TARGET_ROW];
    for income in [target_income, target_income + 1] {
        assert_eq!(
            all.iter().filter(|&&i| i == income).count(),
            usize::from(income == target_income),
            "the target's income is unique, and its neighbour's is no one's"
        );
    }
    let mut sides = Vec::new();
    for (name, income) in [("target", target_income), ("neighbour", target_income + 1)] {
        let sub = dir.path().join(name);
        std::fs::create_dir(&sub).unwrap();
        let parquet = sub.join("r.parquet");
        with_income(&generated, &parquet, TARGET_ROW, income);
        let data = crate::support::residents_dir_from(&sub, &parquet);
        let grant = issue_grant(&data, "100000", grant_flags);
        sides.push((data, grant));
    }
    Neighbours {
        _dir: dir,
        sides,
        target_income,
    }
}

/// Runs per neighbour: `UNSEEN_TIMING_RUNS` (default 200, at least 30).
/// In-sample, the best of all thresholds fits noise: with 30 runs per side
/// and no signal at all it is above 60% about 4 times in 10, with 200 about
/// once in 1,000, so 200 is what makes a pass or a failure mean something.
fn timing_runs() -> usize {
    std::env::var("UNSEEN_TIMING_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(200)
        .max(30)
}

/// Runs `sql(run)` (a new query each run, so that none is answered from
/// the release cache) `runs` times on each neighbour, alternating, through
/// the CLI and then over HTTP, with `udf` if given; prints what each
/// duration tells apart and returns the best threshold classifier's
/// accuracy over the durations a developer observes: the CLI's wall time
/// and an HTTP request's. The developer's job view carries no time at all.
fn developer_timing(
    n: &Neighbours,
    runs: usize,
    sql: &dyn Fn(usize) -> String,
    udf: Option<&Path>,
) -> f64 {
    let udf_path = udf.map(|p| p.to_str().unwrap().to_string());
    let mut cli = Durations::default();
    let mut reviewer_run_ms = Durations::default();
    for run in 0..2 * runs {
        let is_target = run % 2 == 0;
        let (data, grant) = &n.sides[run % 2];
        let query = sql(run / 2);
        let mut args = vec!["query", "--grant", grant.as_str()];
        if let Some(path) = &udf_path {
            args.extend(["--udf", path.as_str()]);
        }
        args.extend([
            "--json",
            "--as",
            "dev",
            "--data-dir",
            data.as_str(),
            query.as_str(),
        ]);
        let started = Instant::now();
        let (answered, out) = crate::support::unseen(&args);
        let elapsed = started.elapsed().as_secs_f64() * 1e3;
        assert!(answered, "{out}");
        let outcome: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert_eq!(outcome["status"], "finished", "{outcome}");
        let job = outcome["job"].as_str().unwrap();
        cli.push(is_target, elapsed);
        let seen: Value = serde_json::from_str::<serde_json::Value>(&ok(&[
            "job",
            "status",
            job,
            "--json",
            "--as",
            "dev",
            "--data-dir",
            data,
        ]))
        .unwrap()["job"]
            .clone();
        for time in ["started_at", "ended_at", "run_ms"] {
            assert!(
                seen[time].is_null(),
                "{time} shown to the developer: {seen}"
            );
        }
        let exact: Value = serde_json::from_str::<serde_json::Value>(&ok(&[
            "job",
            "status",
            job,
            "--json",
            "--as",
            "rev",
            "--data-dir",
            data,
        ]))
        .unwrap()["job"]
            .clone();
        reviewer_run_ms.push(is_target, exact["run_ms"].as_f64().unwrap());
    }

    let servers: Vec<TestServer> = n
        .sides
        .iter()
        .map(|(data, _)| TestServer::start(data, 1))
        .collect();
    let clients: Vec<_> = n
        .sides
        .iter()
        .zip(&servers)
        .map(|((data, _), server)| server.client(&token_of(data, "dev")))
        .collect();
    let modules: Vec<Option<String>> = clients
        .iter()
        .map(|c| {
            udf.map(|path| {
                c.post_bytes(
                    "/v1/modules?kind=udf",
                    &std::fs::read(path).unwrap(),
                    "application/wasm",
                )
                .unwrap()["module"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
        })
        .collect();
    let mut http = Durations::default();
    for run in 0..2 * runs {
        let is_target = run % 2 == 0;
        let side = run % 2;
        let mut body = json!({"grant": n.sides[side].1, "sql": sql(runs + run / 2)});
        if let Some(module) = &modules[side] {
            body["udf_modules"] = json!([module]);
        }
        let started = Instant::now();
        let outcome = clients[side].post("/v1/queries", &body).unwrap();
        let elapsed = started.elapsed().as_secs_f64() * 1e3;
        assert_eq!(outcome["status"], "finished", "{outcome}");
        http.push(is_target, elapsed);
    }

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let mut worst = 0.0f64;
    for (channel, d, seen_by_developer) in [
        ("CLI wall time (ms)", &cli, true),
        ("HTTP request time (ms)", &http, true),
        (
            "run time the reviewer sees (ms; not shown to developers)",
            &reviewer_run_ms,
            false,
        ),
    ] {
        let accuracy = best_threshold_accuracy(&d.target, &d.neighbour);
        println!(
            "{channel}: target mean {:.3}, neighbour mean {:.3}, best threshold classifier {:.1}% over {} runs each",
            mean(&d.target),
            mean(&d.neighbour),
            accuracy * 100.0,
            d.target.len()
        );
        if seen_by_developer {
            worst = worst.max(accuracy);
        }
    }
    worst
}

/// Issue 15, item 4: a UDF that burns its whole per-row cap (the default,
/// 1,000,000 instructions) only on the target's row, run on the target's
/// dataset and on a neighbour where the target's income differs; the best
/// threshold classifier over the durations a developer observes must be
/// right at most 60% of the time. About ten minutes in a debug build:
/// `cargo test --workspace --test it timing::timing_of_a_row_that_burns -- --ignored --nocapture`.
#[test]
#[ignore = "timing measurement, several minutes; run alone"]
fn timing_of_a_row_that_burns_its_cap_only_on_the_target_is_hidden_from_developers() {
    let n = neighbours(&["--allow-udfs"]);
    let dir = tempfile::tempdir().unwrap();
    let udf_path = dir.path().join("spin.wasm");
    std::fs::write(&udf_path, guest("adv-time-iff")).unwrap();
    let target_income = n.target_income;
    let sql = |run: usize| {
        format!(
            "SELECT SUM(LEAST(GREATEST(spin_iff(annual_income, {target_income}), 0), {})) AS s FROM residents",
            1 + run
        )
    };
    let worst = developer_timing(&n, timing_runs(), &sql, Some(&udf_path));
    assert!(
        worst <= 0.6,
        "a developer-visible duration tells the neighbours apart {:.1}% of the time",
        worst * 100.0
    );
}

/// Issue 14, timing test: plain SQL built to be slow only on the target's
/// row. `repeat` with a size from data is refused at admission
/// (`policy::total`) and a query holds at most 64 operators, so the
/// slowest a row can be made is a sum of 64
/// bounded terms (each three passes over a 1,000-character string built
/// with a literal size) evaluated only where the CASE picks the target. Same
/// neighbours, runs and bound as the UDF measurement:
/// `cargo test --workspace --test it timing::timing_of_sql -- --ignored --nocapture`.
#[test]
#[ignore = "timing measurement, several minutes; run alone"]
fn timing_of_sql_slow_only_on_the_target_row_is_hidden_from_developers() {
    // The CLI runs in this process: plan on a stack like the binary's
    // threads have, not a test thread's 2 MiB.
    std::thread::Builder::new()
        .stack_size(unseen::QUERY_THREAD_STACK)
        .spawn(sql_timing)
        .unwrap()
        .join()
        .unwrap();
}

fn sql_timing() {
    let n = neighbours(&[]);
    let target_income = n.target_income;
    // As many terms as the operator limit allows (`policy::MAX_OPERATORS`:
    // the CASE's test is one), or `UNSEEN_TIMING_SQL_TERMS`: planning takes
    // about a second in a debug build, so a quicker measurement takes fewer.
    let terms: usize = std::env::var("UNSEEN_TIMING_SQL_TERMS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(unseen::MAX_QUERY_OPERATORS)
        .clamp(1, unseen::MAX_QUERY_OPERATORS);
    let heavy = (0..terms)
        .map(|i| format!("length(replace(upper(repeat(gender, 1000)), 'F', '{i}'))"))
        .collect::<Vec<_>>()
        .join(" + ");
    let sql = |run: usize| {
        format!(
            "SELECT SUM(LEAST(GREATEST(CASE WHEN annual_income = {target_income} THEN {heavy} ELSE 0 END, 0), {})) AS s FROM residents",
            1 + run
        )
    };
    let worst = developer_timing(&n, timing_runs(), &sql, None);
    assert!(
        worst <= 0.6,
        "a developer-visible duration tells the neighbours apart {:.1}% of the time",
        worst * 100.0
    );
}
