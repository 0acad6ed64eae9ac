//! No query can take the service down: per-query limits (memory, time, join
//! rows) with a clean error for open-column queries and an invisible
//! default for DP ones, open-column joins on categories refused at once,
//! huge constants refused before folding, dry runs queued like runs, work
//! cancelled when its client leaves, open-column queries limited per
//! grant, and SIGTERM that drains and exits within a grace period.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use unseen::client::Client;

use crate::support::{TestServer, guest, issue_grant, ok, query_as_dev, residents_dir};

/// The ledger's entries as JSON (`kind`, `actor`, `body`, ...), in order.
pub fn ledger(data: &str) -> Vec<Value> {
    std::fs::read(Path::new(data).join("ledger/entries.jsonl"))
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

/// Index of the first ledger entry of `kind` whose body has `key` = `value`.
fn entry_at(entries: &[Value], kind: &str, key: &str, value: &str) -> Option<usize> {
    entries
        .iter()
        .position(|e| e["kind"] == kind && e["body"][key] == value)
}

/// Waits until the ledger holds an entry of `kind` whose body has `key` =
/// `value` (a job's status is stored just before its entry is appended);
/// the entries and its index.
fn wait_entry(data: &str, kind: &str, key: &str, value: &str) -> (Vec<Value>, usize) {
    let started = Instant::now();
    loop {
        let entries = ledger(data);
        if let Some(at) = entry_at(&entries, kind, key, value) {
            return (entries, at);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no {kind} entry with {key} = {value}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An open-column query that reads `residents` `scans` times (at most 31)
/// and builds and rewrites a 100-character string per row: seconds of
/// ordinary, bounded work in batches (each a checkpoint for limits and
/// cancellation), admitted like any open-column query.
pub fn slow_sql(scans: usize) -> String {
    let one = "SELECT gender FROM residents";
    format!(
        "SELECT COUNT(*) AS n FROM ({}) t WHERE length(regexp_replace(repeat(gender, 100), 'F', 'xy', 'g')) > 0",
        vec![one; scans].join(" UNION ALL ")
    )
}

/// Query limits roomy enough for `slow_sql` to run until stopped.
fn roomy() -> unseen::data::QueryLimits {
    unseen::data::QueryLimits {
        time: Duration::from_secs(600),
        ..Default::default()
    }
}

fn server(data: &str, max_running_jobs: usize, query: unseen::data::QueryLimits) -> TestServer {
    TestServer::start_with(
        data,
        unseen::server::ServerOptions {
            max_running_jobs,
            query,
            ..Default::default()
        },
    )
}

/// Uploads `adv-slow-query` and submits `count` jobs of it under `grant`,
/// each running `slow_sql(30)` until it is cancelled; their ids.
fn submit_slow_jobs(dev: &Client, grant: &str, count: usize) -> Vec<String> {
    let module = dev
        .upload_module(&guest("adv-slow-query"), "job")
        .unwrap()
        .module;
    let params = BTreeMap::from([("sql".to_string(), slow_sql(30))]);
    (0..count)
        .map(|_| {
            let queued: unseen_api::JobQueued = dev
                .call(
                    "/v1/jobs",
                    &unseen_api::JobRequest {
                        grant: grant.to_string(),
                        module: module.clone(),
                        params: params.clone(),
                        udf_modules: Vec::new(),
                        inputs: Vec::new(),
                        wait: false,
                    },
                )
                .unwrap();
            queued.job
        })
        .collect()
}

/// Waits until `job` (or, with `None`, some job) is `running`; its id.
fn wait_running(admin: &Client, job: Option<&str>) -> String {
    let started = Instant::now();
    loop {
        let jobs = admin.get("/v1/jobs").unwrap();
        let found = jobs["jobs"].as_array().unwrap().iter().find(|j| {
            j["status"] == "running" && job.is_none_or(|id| j["id"].as_str() == Some(id))
        });
        if let Some(j) = found {
            return j["id"].as_str().unwrap().to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no job started running: {jobs}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `job` has ended; its view as an admin sees it.
fn wait_ended(admin: &Client, job: &str) -> Value {
    let started = Instant::now();
    loop {
        let view = admin.get(&format!("/v1/jobs/{job}")).unwrap()["job"].clone();
        if !["queued", "running"].contains(&view["status"].as_str().unwrap()) {
            return view;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "job {job} never ended: {view}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn over_a_query_limit_an_open_query_names_it_and_a_dp_query_is_answered_on_defaults() {
    let (_dir, data) = residents_dir("2000");
    let grant = issue_grant(&data, "100", &[]);
    // Every query's first batch comes after its deadline.
    let s = server(
        &data,
        2,
        unseen::data::QueryLimits {
            time: Duration::from_millis(1),
            ..Default::default()
        },
    );
    let dev = s.client(&crate::support::rotate(&s.domain, "dev"));
    let open = dev
        .post(
            "/v1/queries",
            &json!({"grant": grant, "sql": "SELECT gender, COUNT(*) AS n FROM residents GROUP BY gender"}),
        )
        .unwrap();
    assert_eq!(open["status"], "refused", "{open}");
    let error = open["reason"].as_str().unwrap();
    assert!(error.contains("per-query time limit"), "{error}");
    // A DP query over the same limit: answered like any other, never an
    // error, since whether the limit is hit can depend on the data.
    let dp = dev
        .post(
            "/v1/queries",
            &json!({"grant": grant, "sql": "SELECT district, COUNT(*) AS n FROM residents GROUP BY district"}),
        )
        .unwrap();
    assert_eq!(dp["status"], "finished", "{dp}");
    assert_eq!(dp["reason"], Value::Null, "{dp}");
    let entries = ledger(&data);
    let open_job = open["job"].as_str().unwrap();
    let refused = entry_at(&entries, "query.refused", "job", open_job).expect("refusal recorded");
    assert_eq!(entries[refused]["body"]["rule"], "time-limit");
    let dp_job = dp["job"].as_str().unwrap();
    assert!(
        entry_at(&entries, "query.defaulted", "job", dp_job).is_some(),
        "the provider's ledger says the DP release was computed on defaults"
    );
    drop(s);

    // Memory: an aggregate whose state outgrows the pool and cannot spill.
    let s = server(
        &data,
        2,
        unseen::data::QueryLimits {
            memory: 1 << 20,
            ..Default::default()
        },
    );
    let dev = s.client(&crate::support::rotate(&s.domain, "dev"));
    let big = format!(
        "SELECT length(string_agg(repeat(gender, 100), ',')) AS n FROM ({}) t",
        vec!["SELECT gender FROM residents"; 20].join(" UNION ALL ")
    );
    let open = dev
        .post("/v1/queries", &json!({"grant": grant, "sql": big}))
        .unwrap();
    assert_eq!(open["status"], "refused", "{open}");
    let error = open["reason"].as_str().unwrap();
    assert!(
        error.contains("too large") && error.contains("1 MiB of memory"),
        "{error}"
    );
}

#[test]
fn an_open_join_on_a_category_is_refused_before_any_work_in_runs_and_dry_runs() {
    let (_dir, data) = residents_dir("2000");
    let grant = issue_grant(&data, "100", &[]);
    let attack = "SELECT COUNT(*) FROM residents a JOIN residents b ON a.gender = b.gender \
                  JOIN residents c ON b.gender = c.gender";
    let (done, text) = query_as_dev(&data, &grant, &[], attack);
    assert!(!done || text.contains("refused"), "{text}");
    assert!(text.contains("public domain of a few categories"), "{text}");
    let (_, dry) = crate::support::unseen(&[
        "query",
        "--grant",
        &grant,
        "--dry-run",
        "--json",
        "--as",
        "dev",
        "--data-dir",
        &data,
        attack,
    ]);
    let dry: Value = serde_json::from_str(dry.lines().next().unwrap()).unwrap();
    assert_eq!(dry["admitted"], false, "{dry}");
    assert_eq!(dry["rule"], "open-join", "{dry}");
    let entries = ledger(&data);
    assert!(
        entries
            .iter()
            .any(|e| e["kind"] == "query.refused" && e["body"]["rule"] == "open-join"),
        "the refusal is in the ledger"
    );
}

#[test]
fn a_dry_run_that_would_fold_a_huge_constant_is_refused_with_its_rule() {
    let (_dir, data) = residents_dir("200");
    let grant = issue_grant(&data, "100", &[]);
    let s = server(&data, 1, Default::default());
    let dev = s.client(&crate::support::rotate(&s.domain, "dev"));
    for sql in [
        "SELECT length(repeat('x', 2000000000)) AS n FROM residents",
        "SELECT length(repeat('x', 2000000000)) AS n",
    ] {
        let dry = dev
            .post(
                "/v1/queries",
                &json!({"grant": grant, "sql": sql, "dry_run": true}),
            )
            .unwrap();
        assert_eq!(dry["admitted"], false, "{sql}: {dry}");
        assert_eq!(dry["rule"], "unbounded-cost", "{sql}: {dry}");
        let run = dev
            .post("/v1/queries", &json!({"grant": grant, "sql": sql}))
            .unwrap();
        assert_eq!(run["status"], "refused", "{sql}: {run}");
        assert!(
            run["reason"].as_str().unwrap().contains("at most 1000"),
            "{sql}: {run}"
        );
    }
}

#[test]
fn dry_runs_wait_for_a_place_like_runs() {
    let (_dir, data) = residents_dir("20000");
    let grant = issue_grant(&data, "100", &[]);
    let s = server(&data, 1, roomy());
    let dev = s.client(&crate::support::rotate(&s.domain, "dev"));
    let admin = s.client(&crate::support::rotate(&s.domain, "admin"));
    // The one place is held by a job that runs until it is cancelled.
    let job = submit_slow_jobs(&dev, &grant, 1).remove(0);
    wait_running(&admin, Some(&job));
    let dry = {
        let (dev, grant) = (dev.clone(), grant.clone());
        std::thread::spawn(move || {
            dev.post(
                "/v1/queries",
                &json!({"grant": grant, "sql": "SELECT district, COUNT(*) AS n FROM residents GROUP BY district", "dry_run": true}),
            )
            .unwrap()
        })
    };
    // Give a dry run that skipped the queue ample time to answer.
    let waited = Instant::now();
    while !dry.is_finished() && waited.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let answered_early = dry.is_finished();
    admin
        .post(
            &format!("/v1/jobs/{job}/cancel"),
            &json!({"reason": "test"}),
        )
        .unwrap();
    let verdict = dry.join().unwrap();
    assert_eq!(verdict["admitted"], true, "{verdict}");
    assert!(
        !answered_early,
        "the dry run did not wait for the running job"
    );
    // The ledger agrees: the dry run came after the job ended.
    let (entries, ended) = wait_entry(&data, "job.ended", "job", &job);
    let dry_at = entries
        .iter()
        .rposition(|e| e["kind"] == "query.dry_run")
        .expect("dry run recorded");
    assert!(dry_at > ended, "dry run at {dry_at}, job ended at {ended}");
}

/// Sends `body` to `path` as `token` on a raw connection and returns it
/// open, the request in progress.
fn raw_post(base: &str, path: &str, token: &str, body: &Value) -> std::net::TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let body = serde_json::to_vec(body).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body).unwrap();
    stream.flush().unwrap();
    stream
}

#[test]
fn work_whose_client_disconnects_is_cancelled_and_the_ledger_says_so() {
    let (_dir, data) = residents_dir("20000");
    let grant = issue_grant(&data, "100", &[]);
    let s = server(&data, 2, roomy());
    let dev_token = crate::support::rotate(&s.domain, "dev");
    let dev = s.client(&dev_token);
    let admin = s.client(&crate::support::rotate(&s.domain, "admin"));

    // A synchronous query.
    let stream = raw_post(
        &s.base,
        "/v1/queries",
        &dev_token,
        &json!({"grant": grant, "sql": slow_sql(30)}),
    );
    let job = wait_running(&admin, None);
    drop(stream);
    let view = wait_ended(&admin, &job);
    assert_eq!(
        (&view["status"], &view["ending"]),
        (&json!("stopped"), &json!("cancelled")),
        "{view}"
    );
    assert!(
        view["error"]
            .as_str()
            .unwrap()
            .contains("client disconnected"),
        "{view}"
    );
    let (entries, ended) = wait_entry(&data, "job.ended", "job", &job);
    assert_eq!(entries[ended]["body"]["status"], "cancelled");

    // A module job submitted with `wait`.
    let module = dev
        .post_bytes("/v1/modules", &guest("adv-slow-query"), "application/wasm")
        .unwrap()["module"]
        .as_str()
        .unwrap()
        .to_string();
    let mut params = BTreeMap::new();
    params.insert("sql".to_string(), slow_sql(30));
    let mut stream = raw_post(
        &s.base,
        "/v1/jobs",
        &dev_token,
        &json!({"grant": grant, "module": module, "params": params, "wait": true}),
    );
    let job = wait_running(&admin, None);
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    drop(stream);
    let view = wait_ended(&admin, &job);
    assert_eq!(view["ending"], "cancelled", "{view}");
    let (entries, cancelled) = wait_entry(&data, "job.cancelled", "job", &job);
    assert_eq!(entries[cancelled]["actor"], "system");
    assert!(
        entries[cancelled]["body"]["reason"]
            .as_str()
            .unwrap()
            .contains("client disconnected"),
        "{}",
        entries[cancelled]
    );
}

#[test]
fn open_column_queries_are_limited_per_grant_and_shown_in_usage() {
    let (_dir, data) = residents_dir("200");
    let grant = issue_grant(
        &data,
        "100",
        &["--max-open-queries", "2", "--open-query-window", "86400"],
    );
    let sql = "SELECT gender, COUNT(*) AS n FROM residents GROUP BY gender";
    for _ in 0..2 {
        let (done, text) = query_as_dev(&data, &grant, &[], sql);
        assert!(done && text.contains("finished"), "{text}");
    }
    let (_, text) = query_as_dev(&data, &grant, &[], sql);
    assert!(
        text.contains("allows 2 open-column queries per 86400 s"),
        "{text}"
    );
    // DP queries spend epsilon instead and are not counted.
    let (done, text) = query_as_dev(
        &data,
        &grant,
        &[],
        "SELECT district, COUNT(*) AS n FROM residents GROUP BY district",
    );
    assert!(done && text.contains("finished"), "{text}");
    let usage = ok(&[
        "grant",
        "usage",
        &grant,
        "--json",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    let usage: Value = serde_json::from_str::<Value>(usage.trim()).unwrap()["usage"].clone();
    assert_eq!(usage["open_queries"], 2, "{usage}");
    assert_eq!(usage["open_queries_in_window"], 2, "{usage}");
    assert_eq!(usage["max_open_queries"], 2, "{usage}");
    let text = ok(&[
        "grant",
        "usage",
        &grant,
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    assert!(
        text.contains("open-column queries 2 (2 in the last 86400 s of 2)"),
        "{text}"
    );
    // A bad window is refused with what to do.
    let refused = crate::support::fails(&[
        "grant",
        "issue",
        "--dataset",
        "residents",
        "--developer",
        "dev",
        "--purpose",
        "t",
        "--epsilon",
        "1",
        "--query-epsilon",
        "1",
        "--open-query-window",
        "0",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    assert!(refused.contains("open-query window"), "{refused}");
}

/// Child side of the SIGTERM tests: serves the data directory with the
/// arguments in `UNSEEN_SERVE_ARGS` (JSON) until it is told to stop.
#[test]
#[ignore = "run by the SIGTERM and load tests"]
fn child_serves_until_terminated() {
    let Ok(data) = std::env::var("UNSEEN_SERVE_TEST_DIR") else {
        return;
    };
    let extra: Vec<String> = std::env::var("UNSEEN_SERVE_ARGS")
        .ok()
        .and_then(|a| serde_json::from_str(&a).ok())
        .unwrap_or_default();
    let mut args: Vec<String> = [
        "unseen",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra);
    let mut stdout = std::io::stdout();
    unseen::cli::run(&args, &mut stdout).unwrap();
}

/// `unseen serve` in a child process, for signals and its memory.
pub struct Child {
    pub process: std::process::Child,
    pub base: String,
}

impl Child {
    pub fn serve(data: &str, args: &[&str]) -> Child {
        let mut process = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "limits::child_serves_until_terminated",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("UNSEEN_SERVE_TEST_DIR", data)
            .env("UNSEEN_SERVE_ARGS", serde_json::to_string(args).unwrap())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(process.stdout.take().unwrap()).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("the server printed its address")
                .unwrap();
            // The test harness prints the test's name on the same line first.
            if let Some(at) = line.find("listening on ") {
                break line[at + "listening on ".len()..].trim().to_string();
            }
        };
        // Keep reading what it prints, so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Child { process, base }
    }

    /// A line of `/proc/PID/status` in kiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.process.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// Sends SIGTERM and waits, at most `patience`, for the exit: whether
    /// it exited successfully and how long it took (None: still running).
    pub fn terminate(&mut self, patience: Duration) -> Option<(bool, Duration)> {
        let sent = Instant::now();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.process.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
        while sent.elapsed() < patience {
            if let Some(exit) = self.process.try_wait().unwrap() {
                return Some((exit.success(), sent.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[test]
fn sigterm_drains_cancels_what_outlives_the_grace_period_and_exits() {
    let (_dir, data) = residents_dir("20000");
    let grant = issue_grant(&data, "100", &[]);
    let (dev_token, admin_token) = {
        let domain = unseen::Domain::open(Path::new(&data)).unwrap();
        (
            crate::support::rotate(&domain, "dev"),
            crate::support::rotate(&domain, "admin"),
        )
    };
    let grace = 8;
    let mut child = Child::serve(
        &data,
        &[
            "--max-jobs",
            "2",
            "--grace-period",
            &grace.to_string(),
            "--query-timeout",
            "600",
        ],
    );
    let dev = Client::new(&child.base, Some(&dev_token));
    let admin = Client::new(&child.base, Some(&admin_token));
    // Two jobs hold both places; a third waits in the queue.
    let jobs = submit_slow_jobs(&dev, &grant, 3);
    wait_running(&admin, Some(&jobs[0]));
    wait_running(&admin, Some(&jobs[1]));
    let exit = child.terminate(Duration::from_secs(grace + 60));
    let (success, took) = exit.expect("the server did not exit after SIGTERM");
    assert!(success, "the server exited with a failure");
    println!("SIGTERM to exit: {took:?} (grace period {grace} s)");
    assert!(
        took < Duration::from_secs(grace + 3),
        "exit took {took:?}, grace period {grace} s"
    );

    let domain = unseen::Domain::open(Path::new(&data)).unwrap();
    for job in &jobs[..2] {
        let view = domain.job("admin", job).unwrap();
        assert_eq!(
            view.ending,
            Some(unseen::RunEnding::Cancelled),
            "{job}: {view:?}"
        );
        assert!(
            view.error
                .as_deref()
                .unwrap_or_default()
                .contains("stopping"),
            "{view:?}"
        );
    }
    let queued = domain.job("admin", &jobs[2]).unwrap();
    assert_eq!(queued.ending, Some(unseen::RunEnding::Failed), "{queued:?}");
    assert!(
        queued
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("before the job started"),
        "{queued:?}"
    );
    drop(domain);
    let entries = ledger(&data);
    for job in &jobs {
        assert!(
            entry_at(&entries, "job.ended", "job", job).is_some(),
            "{job} has no job.ended entry"
        );
        assert!(
            entry_at(&entries, "job.recovered", "job", job).is_none(),
            "{job} was left for recovery at the next start"
        );
    }
    let out = ok(&["ledger", "verify", "--data-dir", &data]);
    assert!(out.contains("ledger OK"), "{out}");
}

/// At the end of a grace period a running job asked to stop may still be
/// in an engine poll on a loaded machine when the service ends what is
/// left: it is then ended as it would have ended itself (cancelled, with
/// the reason it was given), never as "interrupted", and once only.
#[test]
fn a_job_asked_to_stop_at_shutdown_ends_cancelled_whoever_records_its_end() {
    let (_dir, data) = residents_dir("20000");
    let grant = issue_grant(&data, "100", &[]);
    let s = server(&data, 2, roomy());
    let dev = s.client(&crate::support::rotate(&s.domain, "dev"));
    let admin = s.client(&crate::support::rotate(&s.domain, "admin"));
    let job = submit_slow_jobs(&dev, &grant, 1).remove(0);
    wait_running(&admin, Some(&job));
    assert_eq!(s.domain.stop_running_jobs("the service is stopping"), 1);
    // Straight after the request to stop: the job has not reached its next
    // epoch tick yet, so the service records its end.
    let ended = s
        .domain
        .end_unfinished_jobs("the service stopped before the job could end")
        .unwrap();
    assert!(ended <= 1, "{ended}");
    let view = wait_ended(&admin, &job);
    assert_eq!(view["stopped_by"], "cancelled", "{view}");
    let record = s.domain.job("admin", &job).unwrap();
    assert_eq!(
        record.ending,
        Some(unseen::RunEnding::Cancelled),
        "{record:?}"
    );
    assert!(
        record
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("the service is stopping"),
        "{record:?}"
    );
    let entries = ledger(&data);
    let ends = entries
        .iter()
        .filter(|e| e["kind"] == "job.ended" && e["body"]["job"] == job.as_str())
        .count();
    assert_eq!(ends, 1, "{job}: {ends} job.ended entries");
}

/// A thousand-term sum in one query overflowed the stack of the server
/// thread planning it and aborted `unseen serve`: it is refused from its
/// tokens now, and the server goes on answering. A sum within the limit is
/// planned and answered on the server's own threads.
#[test]
fn a_deep_expression_is_refused_and_the_server_stays_up() {
    let (_dir, data) = residents_dir("2000");
    let grant = issue_grant(&data, "100", &[]);
    let s = server(&data, 2, unseen::data::QueryLimits::default());
    let dev = s.client(&crate::support::rotate(&s.domain, "dev"));
    let sum_of = |n: usize| {
        let terms = vec!["length(replace(upper(repeat(gender, 1000)), 'F', 'x'))"; n].join(" + ");
        format!("SELECT SUM(LEAST(GREATEST({terms}, 0), 1)) AS s FROM residents")
    };
    let deep = dev
        .post(
            "/v1/queries",
            &json!({"grant": grant, "sql": sum_of(1_000)}),
        )
        .unwrap();
    assert_eq!(deep["status"], "refused", "{deep}");
    assert!(
        deep["reason"].as_str().unwrap().contains("at most 64"),
        "{deep}"
    );
    let within = dev
        .post(
            "/v1/queries",
            &json!({"grant": grant, "sql": sum_of(unseen::MAX_QUERY_OPERATORS + 1)}),
        )
        .unwrap();
    assert_eq!(within["status"], "finished", "{within}");
    let health = Client::new(&s.base, None).get("/v1/health").unwrap();
    assert_eq!(health["ok"], true, "{health}");
}

/// Spill files are plaintext Arrow IPC of decrypted rows: the service sets
/// them aside only on memory-backed storage (the data directory when it is
/// on tmpfs, else a directory of its own on /dev/shm, removed with it), or
/// nowhere; on disk only when the operator says the disk is encrypted.
#[test]
fn queries_spill_decrypted_rows_only_to_memory_unless_told_otherwise() {
    let (_dir, data) = residents_dir("100");
    let data_spill = Path::new(&data).join("spill");
    let spill = {
        let domain = unseen::Domain::open(Path::new(&data)).unwrap();
        let spill = domain.spill_dir().unwrap();
        match &spill {
            Some(dir) => {
                assert!(
                    unseen::util::memory_backed(dir).unwrap(),
                    "{}",
                    dir.display()
                );
                assert!(dir.is_dir());
            }
            None => assert!(!unseen::util::memory_backed(Path::new("/dev/shm")).unwrap_or(false)),
        }
        domain.allow_spill_on_disk();
        assert_eq!(domain.spill_dir().unwrap(), Some(data_spill.clone()));
        spill
    };
    // A directory of its own is removed with the domain.
    if let Some(dir) = spill.filter(|d| *d != data_spill) {
        assert!(!dir.exists(), "{} is left behind", dir.display());
    }
}
