//! The cluster engine across processes: a Ballista scheduler and two
//! enrolled executors, each a process of its own on loopback, read the
//! encrypted files of a data directory with data keys sealed to them. The
//! exact aggregates below the noise equal the single-process ones; the
//! service runs DP queries on the cluster end to end; an executor not
//! enrolled reads nothing; and an executor killed mid-query costs neither a
//! wrong answer nor a second charge. Wasm aggregates and released tables
//! travel; a cluster without a live executor costs nothing; a query whose
//! answer is no longer read is cancelled on the scheduler.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use unseen::cluster::ExecutorSecret;
use unseen::cluster_engine::{BallistaEngine, LocalCluster};
use unseen::data::{Facts, OpenDataset, Remote, SessionLimits, session_with};
use unseen_datasets::{DatasetKind, GenerateOptions};

use crate::support::{issue_grant_on, ok, register_generated, residents_dir};

const ARGS_VAR: &str = "UNSEEN_CLUSTER_CHILD_ARGS";
const SEPARATOR: char = '\u{1f}';

/// Rows of `residents` where exact values are compared across engines.
const RESIDENTS: u64 = 1_000_000;
/// Rows of `residents` where only the cluster's behaviour is tested.
const FEW_RESIDENTS: u64 = 100_000;

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Run by the tests below in processes of their own: `unseen ARGS...`.
#[test]
#[ignore = "run by the cluster tests as a scheduler or executor process"]
fn child_runs_unseen() {
    let Some(args) = std::env::var(ARGS_VAR).ok() else {
        return;
    };
    let mut argv = vec!["unseen".to_string()];
    argv.extend(args.split(SEPARATOR).map(str::to_string));
    // Logged as the binary logs, at every level Unseen's own crates have,
    // so the canary tests search all they could write.
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        tracing_subscriber::registry()
            .with(unseen::logging::layer(
                unseen::logging::LogFormat::Text,
                false,
                std::io::stderr,
            ))
            .with(unseen::logging::filter(
                tracing_subscriber::filter::LevelFilter::TRACE,
            ))
            .init();
    }
    let mut out = std::io::stdout();
    if let Err(e) = unseen::cli::run(&argv, &mut out) {
        println!("error: {}", unseen::cli::said_once(&e));
    }
}

/// `unseen ARGS...` as a process of its own: this test binary running
/// [`child_runs_unseen`].
fn child_unseen(args: &[String]) -> std::process::Command {
    crate::support::child_test_command(
        "cluster::child_runs_unseen",
        ARGS_VAR,
        args.join(&SEPARATOR.to_string()).as_ref(),
    )
}

/// Enrols executor `name` in `data` with `unseen cluster enrol`; the secret
/// file it wrote, in `dir`.
fn enrol_by_cli(dir: &Path, data: &str, name: &str) -> std::path::PathBuf {
    let secret_file = dir.join(format!("{name}.secret"));
    ok(&[
        "cluster",
        "enrol",
        name,
        "--secret-file",
        secret_file.to_str().unwrap(),
        "--as",
        "admin",
        "--data-dir",
        data,
    ]);
    secret_file
}

/// `unseen cluster scheduler-identity --file FILE --as ACTOR` in `data`.
fn scheduler_identity_cli(data: &str, file: &Path, actor: &str) -> (bool, String) {
    crate::support::unseen(&[
        "cluster",
        "scheduler-identity",
        "--file",
        file.to_str().unwrap(),
        "--as",
        actor,
        "--data-dir",
        data,
    ])
}

/// `unseen cluster executor` as `exec-1`, run to its end (the tests start
/// it only where it must refuse to start).
fn executor_cli(secret_file: &str, scheduler: &str, work_dir: &str) -> (bool, String) {
    crate::support::unseen(&[
        "cluster",
        "executor",
        "--name",
        "exec-1",
        "--secret-file",
        secret_file,
        "--scheduler",
        scheduler,
        "--listen",
        "127.0.0.1:0",
        "--work-dir",
        work_dir,
    ])
}

/// A scheduler and two executors enrolled in `data` (their secrets written
/// by `unseen cluster enrol`), each a process of its own; the secrets.
pub(crate) fn start_cluster(dir: &Path, data: &str) -> (LocalCluster, Vec<ExecutorSecret>) {
    let secrets: Vec<ExecutorSecret> = ["exec-1", "exec-2"]
        .into_iter()
        .map(|name| {
            let secret_file = enrol_by_cli(dir, data, name);
            let text = std::fs::read_to_string(&secret_file).unwrap();
            let (secret, _identity) = unseen::cluster_engine::read_secret_file_text(&text).unwrap();
            ExecutorSecret {
                name: name.to_string(),
                secret: hex::decode(secret.to_hex()).unwrap().try_into().unwrap(),
            }
        })
        .collect();
    let cluster =
        LocalCluster::start_with(&child_unseen, dir, &authority_of(data), &secrets, 2).unwrap();
    (cluster, secrets)
}

/// The cluster authority of the service of data directory `data`.
pub(crate) fn authority_of(data: &str) -> unseen_cluster::tls::ClusterAuthority {
    let domain = unseen::Domain::open(Path::new(data)).unwrap();
    unseen::cluster_engine::authority(&domain).unwrap()
}

/// Kills whichever executor of `cluster` first starts work on a job it
/// had not seen (a new job directory in its work directory) while `work`
/// runs (which one the scheduler hands the first task to varies with the
/// machine's load); `work`'s result, and the executor killed before `work`
/// ended, if one was.
fn kill_mid_job<T: Send>(
    cluster: &mut LocalCluster,
    work: impl FnOnce() -> T + Send,
) -> (T, Option<&'static str>) {
    let names = ["exec-1", "exec-2"];
    let work_dirs = names.map(|name| cluster.work_dir(name));
    let jobs = || {
        work_dirs
            .clone()
            .map(|d| std::fs::read_dir(d).map_or(0, |d| d.count()))
    };
    let seen = jobs();
    std::thread::scope(|s| {
        let running = s.spawn(work);
        let mut killed = None;
        'watch: while !running.is_finished() {
            for ((name, now), before) in names.into_iter().zip(jobs()).zip(seen) {
                if now > before {
                    cluster.kill(name);
                    killed = (!running.is_finished()).then_some(name);
                    break 'watch;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (running.join().unwrap(), killed)
    })
}

/// `kind` generated and encrypted under `key` as registration does, its
/// rows related to `residents` residents.
fn encrypted(
    dir: &Path,
    kind: DatasetKind,
    name: &str,
    rows: u64,
    residents: u64,
    key: [u8; 32],
) -> OpenDataset {
    let options = GenerateOptions {
        rows,
        seed: 7,
        related_rows: Some(residents),
    };
    unseen::bench::encrypted_dataset(dir, kind, name, &options, key).unwrap()
}

/// `residents` of [`FEW_RESIDENTS`] rows, encrypted.
fn few_residents(dir: &Path) -> Vec<OpenDataset> {
    vec![encrypted(
        dir,
        DatasetKind::Residents,
        "residents",
        FEW_RESIDENTS,
        FEW_RESIDENTS,
        [5; 32],
    )]
}

fn assert_same(sql: &str, here: &[Vec<Vec<f64>>], there: &[Vec<Vec<f64>>]) {
    assert!(
        unseen::bench::same_values(here, there),
        "{sql}: {here:?} here, {there:?} on the cluster"
    );
}

#[test]
fn a_cluster_of_processes_computes_below_the_noise_what_one_process_computes() {
    let (dir, data) = residents_dir("100");
    let (mut cluster, secrets) = start_cluster(dir.path(), &data);
    let datasets = vec![
        encrypted(
            dir.path(),
            DatasetKind::Residents,
            "residents",
            RESIDENTS,
            RESIDENTS,
            [5; 32],
        ),
        encrypted(
            dir.path(),
            DatasetKind::HealthVisits,
            "health_visits",
            RESIDENTS * 2,
            RESIDENTS,
            [6; 32],
        ),
    ];
    let local = SessionLimits::default();
    let remote = SessionLimits {
        remote: Some(Remote {
            engine: cluster.engine(),
            executors: secrets.clone(),
        }),
        ..Default::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let queries = [
        "SELECT district, COUNT(*) AS n FROM residents GROUP BY district",
        "SELECT district, SUM(annual_income) AS total FROM residents GROUP BY district",
        "SELECT gender, AVG(annual_income) AS mean_income FROM residents GROUP BY gender",
        "SELECT r.district, COUNT(*) AS visits FROM health_visits h \
         JOIN residents r ON h.person_id = r.person_id GROUP BY r.district",
        "SELECT district, SUM(LEAST(GREATEST(light(annual_income, household_size), 0), 20)) \
         AS l FROM residents GROUP BY district",
    ];
    // A scalar UDF module travels with the plan; executors validate it and
    // run it row by row in their own sandbox.
    // (`light` is no built-in's name: an executor without the module would
    // not find it.)
    let light = udf_module("udf-light");
    let exact = |limits: &SessionLimits, sql: &'static str| {
        runtime.block_on(async {
            let udfs = light.for_query().functions().unwrap();
            let (ctx, manifests) = session_with(&datasets, &udfs, &[], limits).await.unwrap();
            unseen_policy::bench::exact_release_values(&ctx, sql, &manifests, Facts(&datasets))
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        })
    };
    // The rows the UDF ran on, and failed on, as the service's records
    // count them: on the cluster the executors report theirs back.
    let counted = || (light.rows_evaluated(), light.rows_failed());
    for sql in queries {
        let before = counted();
        let here = exact(&local, sql);
        let after_here = counted();
        let there = exact(&remote, sql);
        let after_there = counted();
        assert!(here.iter().flatten().flatten().any(|v| *v != 0.0), "{sql}");
        assert_same(sql, &here, &there);
        let ran = |from: (u64, u64), to: (u64, u64)| (to.0 - from.0, to.1 - from.1);
        assert_eq!(
            ran(before, after_here),
            ran(after_here, after_there),
            "{sql}: UDF rows (evaluated, failed) here and on the cluster"
        );
        if sql.contains("light(") {
            assert!(ran(before, after_here).0 > 0, "{sql}");
        }
    }

    // Where exact answers are allowed (open columns, released tables), a
    // session with wasm aggregates and released tables runs on the cluster
    // too: the aggregates travel with their module, released tables with
    // their rows.
    let stats = udf_module("udf-stats");
    let districts = runtime.block_on(async {
        let (ctx, _) = session_with(&datasets, &[], &[], &local).await.unwrap();
        rows(
            &ctx,
            "SELECT DISTINCT district FROM residents ORDER BY district",
        )
        .await
    });
    let released = udf_sdk::Table {
        columns: vec![
            udf_sdk::Column {
                name: "district".into(),
                values: udf_sdk::ColumnValues::Text(
                    districts.iter().map(|row| row[0].clone()).collect(),
                ),
            },
            udf_sdk::Column {
                name: "weight".into(),
                values: udf_sdk::ColumnValues::Float(
                    (0..districts.len()).map(|i| 1.5 + i as f64).collect(),
                ),
            },
        ],
    };
    let releases = [("release_weights".to_string(), released)];
    let exact_rows = |limits: &SessionLimits, sql: &'static str| {
        runtime.block_on(async {
            let udfs = stats.for_query().functions().unwrap();
            let (ctx, _) = session_with(&datasets, &udfs, &releases, limits)
                .await
                .unwrap();
            let (physical, rows) = plan_and_rows(&ctx, sql).await;
            (physical.contains("CancelOnDropExec"), rows)
        })
    };
    for sql in [
        "SELECT district, geo_mean(annual_income) AS g, \
         weighted_mean(annual_income, household_size) AS w FROM residents GROUP BY district",
        "SELECT geo_mean(weight) AS g, COUNT(*) AS n FROM release_weights",
        "SELECT r.district, SUM(w.weight) AS s, COUNT(*) AS n FROM residents r \
         JOIN release_weights w ON r.district = w.district GROUP BY r.district",
    ] {
        let (here_remote, here) = exact_rows(&local, sql);
        let (there_remote, there) = exact_rows(&remote, sql);
        assert!(
            !here_remote && there_remote,
            "{sql} did not run on the cluster"
        );
        assert!(!here.is_empty(), "{sql}");
        assert_same_rows(sql, &here, &there);
    }

    // Keys sealed for executors that are not running open on none that is.
    let strangers = SessionLimits {
        remote: Some(Remote {
            engine: cluster.engine(),
            executors: vec![ExecutorSecret {
                name: "exec-9".into(),
                secret: [9; 32],
            }],
        }),
        ..Default::default()
    };
    let refused = runtime.block_on(async {
        let (ctx, manifests) = session_with(&datasets, &[], &[], &strangers).await.unwrap();
        unseen_policy::bench::exact_release_values(&ctx, queries[0], &manifests, Facts(&datasets))
            .await
            .unwrap_err()
            .to_string()
    });
    assert!(refused.contains("not enrolled"), "{refused}");

    // One executor killed mid-query: its tasks run again on the other,
    // once the scheduler has missed it for its timeout (5 s here).
    let sql = HEAVY;
    let here = exact(&local, sql);
    let (there, killed) = kill_mid_job(&mut cluster, || exact(&remote, sql));
    assert!(
        killed.is_some(),
        "the query ended before an executor could be killed"
    );
    assert_same(sql, &here, &there);
    // And the next query runs on the executor left.
    assert_same(
        queries[0],
        &exact(&local, queries[0]),
        &exact(&remote, queries[0]),
    );
}

/// A validated UDF module of guest `crate_name`.
fn udf_module(crate_name: &str) -> unseen_sandbox::UdfModule {
    let sandbox = unseen_sandbox::Sandbox::new(Default::default()).unwrap();
    let bytes = crate::support::guest(crate_name);
    let validated = sandbox
        .validate(&bytes, unseen_sandbox::ModuleKind::Udf)
        .unwrap();
    unseen_sandbox::UdfModule::new(&sandbox, &validated).unwrap()
}

/// `sql`'s rows in `ctx`, each value as text, sorted.
async fn rows(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Vec<Vec<String>> {
    plan_and_rows(ctx, sql).await.1
}

/// `sql`'s physical plan as text, and its rows as [`rows`] gives them.
async fn plan_and_rows(
    ctx: &datafusion::prelude::SessionContext,
    sql: &str,
) -> (String, Vec<Vec<String>>) {
    use datafusion::arrow::util::display::array_value_to_string;
    let frame = ctx.sql(sql).await.unwrap();
    let plan = frame.clone().create_physical_plan().await.unwrap();
    let shown = datafusion::physical_plan::displayable(plan.as_ref())
        .indent(false)
        .to_string();
    let batches = frame
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut rows: Vec<Vec<String>> = batches
        .iter()
        .flat_map(|batch| {
            (0..batch.num_rows()).map(move |i| {
                batch
                    .columns()
                    .iter()
                    .map(|column| array_value_to_string(column, i).unwrap())
                    .collect()
            })
        })
        .collect();
    rows.sort();
    (shown, rows)
}

/// Rows equal value by value; numbers to a relative 1e-9 (partial states
/// merge in another order on a cluster).
fn assert_same_rows(sql: &str, here: &[Vec<String>], there: &[Vec<String>]) {
    let same = |a: &String, b: &String| match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    };
    assert!(
        here.len() == there.len()
            && here
                .iter()
                .zip(there)
                .all(|(a, b)| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))),
        "{sql}: {here:?} here, {there:?} on the cluster"
    );
}

/// A query that keeps both executors busy for a while.
const HEAVY: &str = "SELECT district, gender, COUNT(*) AS n, SUM(annual_income) AS total, \
     AVG(household_size) AS size FROM residents GROUP BY district, gender";

#[test]
fn the_service_runs_dp_queries_on_the_cluster_and_ledgers_its_executors() {
    let (dir, data) = residents_dir("100000");
    register_generated(dir.path(), &data, "health_visits", "200000", "100000");
    let grant = issue_grant_on(&data, "health_visits", "10", &["--join", "residents"]);
    let residents_grant = issue_grant_on(&data, "residents", "10", &[]);
    let (mut cluster, secrets) = start_cluster(dir.path(), &data);
    let server = crate::support::TestServer::start(&data, 2);
    server.domain.set_remote_engine(cluster.engine());
    let dev = server.client(&crate::support::rotate(&server.domain, "dev"));
    for sql in [
        "SELECT diagnosis_code, COUNT(*) AS n FROM health_visits GROUP BY diagnosis_code",
        "SELECT r.district, COUNT(*) AS visits FROM health_visits h \
         JOIN residents r ON h.person_id = r.person_id GROUP BY r.district",
    ] {
        let run: Value = dev
            .post("/v1/queries", &json!({"grant": grant, "sql": sql}))
            .unwrap();
        assert_eq!(run["status"], "finished", "{sql}: {run}");
        assert_eq!(run["epsilon_spent"].as_f64(), Some(1.0), "{run}");
    }
    // An executor killed while the service's query runs: the query is
    // answered (its tasks run again on the executor left), charged once,
    // and recorded once.
    let before = spent(&data, &residents_grant);
    let (run, killed): (Value, _) = kill_mid_job(&mut cluster, || {
        dev.post(
            "/v1/queries",
            &json!({"grant": residents_grant, "sql": HEAVY}),
        )
        .unwrap()
    });
    assert!(
        killed.is_some(),
        "the query ended before an executor could be killed"
    );
    assert_eq!(run["status"], "finished", "{run}");
    assert!((spent(&data, &residents_grant) - before - 1.0).abs() < 1e-9);
    let entries = crate::support::entries(&Path::new(&data).join("ledger"));
    let admitted = entries
        .iter()
        .filter(|e| e.kind == "query.admitted" && e.body["job"] == run["job"])
        .count();
    assert_eq!(admitted, 1);
    let enrolled: Vec<&str> = entries
        .iter()
        .filter(|e| e.kind == "cluster.executor_enrolled")
        .map(|e| e.body["executor"].as_str().unwrap())
        .collect();
    assert_eq!(enrolled, ["exec-1", "exec-2"]);
    // No secret is in the ledger.
    let ledger = std::fs::read(Path::new(&data).join("ledger/entries.jsonl")).unwrap();
    for secret in &secrets {
        let hex = hex::encode(secret.secret);
        assert!(!crate::support::contains(&ledger, hex.as_bytes()));
    }
    assert!(
        !entries.iter().any(|e| e.kind == "query.defaulted"),
        "a query fell back to defaults"
    );
}

/// Epsilon spent on `grant`, from the store.
fn spent(data: &str, grant: &str) -> f64 {
    let db = rusqlite::Connection::open(Path::new(data).join("unseen.db")).unwrap();
    db.query_row(
        "SELECT epsilon_spent FROM grants WHERE id = ?1",
        [grant],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn a_cluster_that_does_not_answer_is_named_and_costs_nothing() {
    let (dir, data) = residents_dir("2000");
    let grant = crate::support::issue_grant(&data, "10", &[]);
    let server = crate::support::TestServer::start(&data, 1);
    // Nothing listens there.
    let nowhere = free_port();
    let identity = unseen::cluster_engine::authority(&server.domain)
        .unwrap()
        .issue("service")
        .unwrap();
    server
        .domain
        .set_remote_engine(Arc::new(BallistaEngine::new(
            &nowhere.to_string(),
            identity,
        )));
    let dev = server.client(&crate::support::rotate(&server.domain, "dev"));
    // The query is refused for a reason that says all of `said`, and
    // nothing is spent.
    let refused_saying = |said: &[&str]| {
        let sql = "SELECT district, COUNT(*) AS n FROM residents GROUP BY district";
        let answer: Value = dev
            .post("/v1/queries", &json!({"grant": grant, "sql": sql}))
            .unwrap();
        assert_eq!(answer["status"], "refused", "{answer}");
        let reason = answer["reason"].as_str().unwrap();
        assert!(said.iter().all(|s| reason.contains(s)), "{answer}");
        assert_eq!(answer["epsilon_spent"].as_f64(), Some(0.0), "{answer}");
        assert_eq!(spent(&data, &grant), 0.0);
    };
    refused_saying(&["does not answer", &nowhere.to_string()]);
    let authority = unseen::cluster_engine::authority(&server.domain).unwrap();

    // A scheduler without a live executor: refused the same way, rather
    // than admitted, charged and released as noise over defaults.
    let cluster = LocalCluster::start_with(&child_unseen, dir.path(), &authority, &[], 1).unwrap();
    server.domain.set_remote_engine(cluster.engine());
    refused_saying(&["no executor alive", "0/1 executors"]);
    // A scheduler whose identity another service issued (or a service it
    // does not know): refused, saying so.
    let foreign = unseen_cluster::tls::ClusterAuthority::generate()
        .unwrap()
        .issue("service")
        .unwrap();
    server
        .domain
        .set_remote_engine(Arc::new(BallistaEngine::new(
            &cluster.scheduler.to_string(),
            foreign,
        )));
    refused_saying(&["do not accept each other's identity", "scheduler-identity"]);
    let entries = crate::support::entries(&Path::new(&data).join("ledger"));
    assert!(!entries.iter().any(|e| e.kind == "query.admitted"));
}

/// A query whose answer the service stops reading (its deadline passed,
/// its client left) is cancelled on the scheduler, rather than left to keep
/// the executors busy for nobody.
#[test]
fn a_query_whose_answer_is_not_read_is_cancelled_on_the_cluster() {
    use futures::StreamExt as _;
    use unseen_cluster::cancel::{CancelOnDropExec, JobState, job_state};

    let (dir, data) = residents_dir("100");
    let (cluster, secrets) = start_cluster(dir.path(), &data);
    let datasets = few_residents(dir.path());
    let remote = SessionLimits {
        remote: Some(Remote {
            engine: cluster.engine(),
            executors: secrets,
        }),
        ..Default::default()
    };
    let scheduler = cluster.scheduler_link();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (ctx, _) = session_with(&datasets, &[], &[], &remote).await.unwrap();
        // Every pair of residents of one district: far more work than this
        // test waits for.
        let plan = ctx
            .sql("SELECT COUNT(*) FROM residents a JOIN residents b ON a.district = b.district")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let mut stream = plan.execute(0, ctx.task_ctx()).unwrap();
        let reading = tokio::spawn(async move { stream.next().await.map(|b| b.is_ok()) });
        let wrapper = plan
            .downcast_ref::<CancelOnDropExec>()
            .expect("a cluster plan is cancellable");
        let mut job = None;
        for _ in 0..600 {
            job = wrapper.job_id();
            if job.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if job.is_none() && reading.is_finished() {
            panic!("the query ended: {:?}", reading.await);
        }
        let job = job.expect("the scheduler accepted the job");
        let before = job_state(&scheduler, &job).await.unwrap();
        assert!(
            matches!(
                before,
                JobState::Queued | JobState::Running | JobState::Unknown
            ),
            "{before:?}"
        );
        // The reader goes away, as a query past its deadline does.
        reading.abort();
        assert!(reading.await.unwrap_err().is_cancelled());
        let mut state = before;
        for _ in 0..600 {
            state = job_state(&scheduler, &job).await.unwrap();
            if matches!(state, JobState::Failed(_) | JobState::Succeeded) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match state {
            JobState::Failed(reason) => assert!(reason.contains("ancel"), "{reason}"),
            other => panic!("job {job} was not cancelled: {other:?}"),
        }

        // Dropped before the scheduler even said which job it is: the
        // submission goes on, and the job is cancelled once it has an id.
        let plan = ctx
            .sql("SELECT COUNT(*) FROM residents a JOIN residents b ON a.gender = b.gender")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let wrapper = plan.downcast_ref::<CancelOnDropExec>().unwrap();
        drop(plan.execute(0, ctx.task_ctx()).unwrap());
        let job = until("the scheduler names the job", || async { wrapper.job_id() }).await;
        let cancelled = until("the job ends cancelled", || async {
            match job_state(&scheduler, &job).await.unwrap() {
                JobState::Failed(reason) => Some(reason),
                JobState::Succeeded => panic!("job {job} ran to its end"),
                _ => None,
            }
        })
        .await;
        assert!(cancelled.contains("ancel"), "{cancelled}");
    });
}

/// The first `Some` `check` gives, asked every 100 ms for two minutes at
/// most (`what` names it if it never comes).
async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    check: impl Fn() -> F,
) -> T {
    for _ in 0..1200 {
        if let Some(found) = check().await {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within two minutes");
}

#[test]
fn enrolment_is_for_admins_names_are_checked_and_revocation_is_recorded() {
    let (dir, data) = residents_dir("100");
    let secret = |name: &str| dir.path().join(format!("{name}.secret"));
    let enrol = |name: &str, actor: &str| {
        crate::support::unseen(&[
            "cluster",
            "enrol",
            name,
            "--secret-file",
            secret(name).to_str().unwrap(),
            "--as",
            actor,
            "--data-dir",
            &data,
        ])
    };
    // Only admins enrol; a bad name says what a name may hold; neither
    // leaves a secret file behind.
    let (done, said) = enrol("exec-1", "dev");
    assert!(!done && said.contains("admin"), "{said}");
    assert!(!secret("exec-1").exists());
    let (done, said) = enrol("Exec One", "admin");
    assert!(!done && said.contains("lowercase letters"), "{said}");
    assert!(!secret("Exec One").exists());

    let (done, said) = enrol("exec-1", "admin");
    assert!(done, "{said}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(secret("exec-1")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // The secret file is never overwritten.
    let (done, said) = enrol("exec-1", "admin");
    assert!(!done && said.contains("must not exist"), "{said}");

    let listed = ok(&[
        "cluster",
        "executors",
        "--json",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    let listed: Value = serde_json::from_str(listed.trim()).unwrap();
    assert_eq!(listed["executors"][0]["name"], "exec-1", "{listed}");
    assert_eq!(
        listed["executors"][0]["revoked_at"],
        Value::Null,
        "{listed}"
    );

    ok(&[
        "cluster",
        "revoke",
        "exec-1",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    let (done, said) = crate::support::unseen(&[
        "cluster",
        "revoke",
        "exec-9",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    assert!(!done && said.contains("exec-9"), "{said}");
    let entries = crate::support::entries(&Path::new(&data).join("ledger"));
    let kinds: Vec<&str> = entries
        .iter()
        .filter(|e| e.kind.starts_with("cluster."))
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "cluster.authority_created",
            "cluster.executor_enrolled",
            "cluster.identity_issued",
            "cluster.executor_revoked"
        ]
    );
    // The secret file holds the executor's cluster identity, whose
    // certificate the ledger names by its hash (never its key).
    let text = std::fs::read_to_string(secret("exec-1")).unwrap();
    let (_, identity) = unseen::cluster_engine::read_secret_file_text(&text).unwrap();
    let issued = entries
        .iter()
        .find(|e| e.kind == "cluster.identity_issued")
        .unwrap();
    assert_eq!(issued.body["member"], "exec-1");
    assert_eq!(
        issued.body["certificate_sha256"],
        unseen::util::sha256_hex(identity.certificate_pem().as_bytes())
    );
    let ledger = std::fs::read_to_string(Path::new(&data).join("ledger/entries.jsonl")).unwrap();
    assert!(!ledger.contains("PRIVATE KEY"));
    // A secret file without an identity (written before the cluster used
    // mutual TLS) is refused with what to do.
    let old = dir.path().join("old.secret");
    std::fs::write(&old, format!("{}\n", text.lines().next().unwrap())).unwrap();
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (done, said) = executor_cli(
        old.to_str().unwrap(),
        "127.0.0.1:1",
        dir.path().join("w").to_str().unwrap(),
    );
    assert!(!done && said.contains("enrol the executor again"), "{said}");
    // The scheduler's identity: admins only, owner-only, never overwritten.
    let scheduler_identity = dir.path().join("scheduler.identity");
    let issue = |actor: &str| scheduler_identity_cli(&data, &scheduler_identity, actor);
    let (done, said) = issue("dev");
    assert!(!done && said.contains("admin"), "{said}");
    assert!(!scheduler_identity.exists());
    let (done, said) = issue("admin");
    assert!(done, "{said}");
    let (done, said) = issue("admin");
    assert!(!done && said.contains("must not exist"), "{said}");
    unseen_cluster::tls::Identity::from_pem(&std::fs::read_to_string(&scheduler_identity).unwrap())
        .unwrap();
    // The other members' names are not executors'.
    let (done, said) = enrol("service", "admin");
    assert!(!done && said.contains("other than `service`"), "{said}");

    // A new authority: every identity the old one issued stops working.
    let replace = |actor: &str| {
        crate::support::unseen(&[
            "cluster",
            "new-authority",
            "--as",
            actor,
            "--data-dir",
            &data,
        ])
    };
    let (done, said) = replace("dev");
    assert!(!done && said.contains("admin"), "{said}");
    let (done, said) = replace("admin");
    assert!(
        done && said.contains("enrol every executor again"),
        "{said}"
    );
    let renewed = dir.path().join("renewed.identity");
    let (done, said) = scheduler_identity_cli(&data, &renewed, "admin");
    assert!(done, "{said}");
    let cluster_dir = dir.path().join("renewed");
    std::fs::create_dir(&cluster_dir).unwrap();
    let members = unseen::cluster_engine::Members {
        scheduler: &renewed,
        executors: &[],
        service: authority_of(&data).issue("service").unwrap(),
    };
    let cluster = LocalCluster::start_members(&child_unseen, &cluster_dir, members, 1).unwrap();
    let (done, said) = executor_cli(
        secret("exec-1").to_str().unwrap(),
        &cluster.scheduler.to_string(),
        cluster.work_dir("exec-1").to_str().unwrap(),
    );
    assert!(
        !done && said.contains("do not accept each other's identity"),
        "{said}"
    );
    let entries = crate::support::entries(&Path::new(&data).join("ledger"));
    let replaced = entries
        .iter()
        .find(|e| e.kind == "cluster.authority_replaced")
        .unwrap();
    assert_ne!(
        replaced.body["previous_sha256"],
        replaced.body["certificate_sha256"]
    );
    // An executor refuses a secret file others may read.
    let loose = dir.path().join("loose.secret");
    std::fs::copy(secret("exec-1"), &loose).unwrap();
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (done, said) = executor_cli(
        loose.to_str().unwrap(),
        "127.0.0.1:1",
        dir.path().join("w").to_str().unwrap(),
    );
    assert!(!done && said.contains("chmod 600"), "{said}");
    // And a work directory on disk: shuffle files and spills hold
    // decrypted rows. (The test's directory is on disk, as a checkout is.)
    let on_disk = Path::new(env!("CARGO_MANIFEST_DIR")).join("target-work-dir-test");
    let (done, said) = executor_cli(
        secret("exec-1").to_str().unwrap(),
        "127.0.0.1:1",
        on_disk.to_str().unwrap(),
    );
    assert!(!on_disk.exists(), "a refused work directory is left behind");
    assert!(
        !done && said.contains("is on disk") && said.contains("--work-dir-on-disk"),
        "{said}"
    );
}

/// The service's join row cap holds on the cluster: it travels with the
/// job and executors enforce it, so a many-to-many join fails there as it
/// does here rather than keeping the executors busy.
#[test]
fn a_join_past_the_row_cap_fails_on_the_cluster_as_it_does_here() {
    let (dir, data) = residents_dir("100");
    let (cluster, secrets) = start_cluster(dir.path(), &data);
    let datasets = few_residents(dir.path());
    let capped = |remote: Option<Remote>| SessionLimits {
        remote,
        execution: unseen_policy::ExecutionLimits {
            join_rows: Some(10_000),
            ..Default::default()
        },
        ..Default::default()
    };
    let here = capped(None);
    let there = capped(Some(Remote {
        engine: cluster.engine(),
        executors: secrets,
    }));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let failed = |limits: &SessionLimits| {
        runtime.block_on(async {
            let (ctx, _) = session_with(&datasets, &[], &[], limits).await.unwrap();
            ctx.sql("SELECT COUNT(*) FROM residents a JOIN residents b ON a.district = b.district")
                .await
                .unwrap()
                .collect()
                .await
                .expect_err("the join passed the cap")
                .to_string()
        })
    };
    for (engine, limits) in [("here", &here), ("on the cluster", &there)] {
        let error = failed(limits);
        assert!(error.contains("unseen join row cap"), "{engine}: {error}");
    }
}

/// The deployment the README and `deploy/README.md` describe, from the
/// files an operator holds: the scheduler's identity and each executor's
/// secret file as the CLI wrote them, `serve --engine ballista://` in a
/// process of its own, and a developer's query over HTTP. Every connection
/// is mutual TLS: an executor with an identity from another authority
/// never joins (the scheduler refuses its handshake and still counts two
/// executors).
#[test]
fn the_documented_deployment_runs_over_mutual_tls_and_strangers_never_join() {
    let (dir, data) = residents_dir("2000");
    let grant = crate::support::issue_grant(&data, "10", &[]);
    let file = |name: &str| dir.path().join(name);
    let scheduler_identity = file("scheduler.identity");
    let (done, said) = scheduler_identity_cli(&data, &scheduler_identity, "admin");
    assert!(done, "{said}");
    let executors: Vec<(String, std::path::PathBuf)> = ["exec-1", "exec-2"]
        .into_iter()
        .map(|name| (name.to_string(), enrol_by_cli(dir.path(), &data, name)))
        .collect();
    // A stranger: a well-formed secret file, with an identity from an
    // authority of its own.
    let stranger_file = file("stranger.secret");
    let stranger_identity = unseen_cluster::tls::ClusterAuthority::generate()
        .unwrap()
        .issue("exec-3")
        .unwrap();
    std::fs::write(
        &stranger_file,
        unseen::cluster_engine::secret_file_text(
            &unseen_cluster::seal::ExecutorSecret::from_bytes([7; 32]),
            &stranger_identity,
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &stranger_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let (service, dev_token) = {
        let domain = unseen::Domain::open(Path::new(&data)).unwrap();
        (
            unseen::cluster_engine::authority(&domain)
                .unwrap()
                .issue("service")
                .unwrap(),
            crate::support::rotate(&domain, "dev"),
        )
    };
    let cluster_dir = file("cluster");
    std::fs::create_dir(&cluster_dir).unwrap();
    let members = unseen::cluster_engine::Members {
        scheduler: &scheduler_identity,
        executors: &executors,
        service,
    };
    let cluster = LocalCluster::start_members(&child_unseen, &cluster_dir, members, 2).unwrap();
    let stranger_log = std::fs::File::create(cluster_dir.join("stranger.log")).unwrap();
    let mut stranger = child_unseen(&[
        "cluster".into(),
        "executor".into(),
        "--name".into(),
        "exec-3".into(),
        "--secret-file".into(),
        stranger_file.to_str().unwrap().into(),
        "--scheduler".into(),
        cluster.scheduler.to_string(),
        "--listen".into(),
        free_port().to_string(),
        "--work-dir".into(),
        cluster.work_dir("exec-3").to_str().unwrap().into(),
    ])
    .stdout(std::fs::File::create(cluster_dir.join("stranger.out")).unwrap())
    .stderr(stranger_log)
    .spawn()
    .unwrap();

    let mut server = crate::limits::Child::serve(
        &data,
        &["--engine", &format!("ballista://{}", cluster.scheduler)],
    );
    let dev = unseen::client::Client::new(&server.base, Some(&dev_token));
    let answer: Value = dev
        .post(
            "/v1/queries",
            &json!({"grant": grant, "sql": "SELECT district, COUNT(*) AS n FROM residents GROUP BY district"}),
        )
        .unwrap();
    assert_eq!(answer["status"], "finished", "{answer}");
    let readiness = cluster.readiness().unwrap();
    // The stranger gives up at once, saying why.
    let started = std::time::Instant::now();
    while stranger.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the stranger still runs"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let said = std::fs::read_to_string(cluster_dir.join("stranger.out")).unwrap();
    assert!(
        said.contains("do not accept each other's identity") && said.contains("cluster enrol"),
        "{said}"
    );
    let _ = server.process.kill();
    let _ = server.process.wait();

    let log =
        |name: &str| std::fs::read_to_string(cluster_dir.join(format!("{name}.log"))).unwrap();
    // The query ran on the executors: one opened its sealed key.
    assert!(
        log("exec-1").contains("opened the data key")
            || log("exec-2").contains("opened the data key"),
        "no executor ran the query"
    );
    // The stranger never joined.
    assert!(readiness.starts_with("ready: 2 executors"), "{readiness}");
    assert!(
        log("scheduler").contains("refused a connection"),
        "the scheduler's log names no refused handshake"
    );
    assert!(!log("stranger").contains("opened the data key"));
}
