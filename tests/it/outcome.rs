//! A job's outcome is reviewed like its outputs: the developer sees that a
//! job finished or was stopped by a named cause, and its spend; how the
//! guest ended (exit code, message), its logs, refusals, metering and how
//! many outputs it emitted wait in the job's outcome output until a
//! reviewer approves it — in every mode (local CLI, CLI over --server, raw
//! HTTP).

use serde_json::{Value, json};

use crate::support::{TestServer, guest, issue_grant, ok, residents_dir, rotate, unseen};

/// Runs a developer's command; returns everything it printed, success or not.
fn as_dev(seen: &mut String, args: &[&str]) -> String {
    let (_, text) = unseen(args);
    seen.push_str(&text);
    text
}

/// What the guest of `adv-exit-code` reported, as the reviewer reads it.
#[derive(Debug, PartialEq)]
struct Reported {
    secret: i64,
    refusals: usize,
    outputs: usize,
}

/// Reads what a job reported from a view that shows the guest's part.
fn reported(view: &Value) -> Reported {
    assert_eq!(view["ending"], "failed", "{view}");
    let error = view["error"].as_str().unwrap();
    let secret: i64 = error
        .strip_prefix("job returned exit code ")
        .and_then(|rest| rest.split(':').next())
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no exit code in {error}"));
    assert!(error.contains(&format!("income was {secret}")), "{error}");
    let logs = view["logs"].as_array().unwrap();
    assert!(
        logs.iter().any(|l| l
            .as_str()
            .unwrap()
            .contains(&format!("secret income {secret}"))),
        "{view}"
    );
    assert!(view["fuel_used"].as_i64().unwrap() > 0, "{view}");
    assert!(view["queries"].as_i64().unwrap() >= 3, "{view}");
    Reported {
        secret,
        refusals: view["refusals"].as_array().unwrap().len(),
        outputs: view["outputs"].as_array().unwrap().len(),
    }
}

/// The developer's view of a module job before review: status, spend and
/// the outcome output's id; nothing the guest chose.
fn assert_withheld(view: &Value) {
    assert_eq!(view["status"], "finished", "{view}");
    assert!(
        view["stopped_by"].is_null() && view["reason"].is_null(),
        "{view}"
    );
    assert_eq!(view["outputs"], json!([]), "{view}");
    for key in ["logs", "refusals"] {
        assert!(
            view[key].is_null() || view[key] == json!([]),
            "{key}: {view}"
        );
    }
    for key in [
        "ending",
        "error",
        "fuel_used",
        "queries",
        "rows_read",
        "run_ms",
        "started_at",
        "ended_at",
        "logs_withheld",
    ] {
        assert!(view[key].is_null(), "{key}: {view}");
    }
    assert!(view["epsilon_spent"].as_f64().is_some(), "{view}");
}

#[test]
fn a_developer_sees_nothing_a_guest_reports_beyond_finished_before_review() {
    let (dir, data) = residents_dir("3000");
    let grant = issue_grant(&data, "20", &[]);
    let wasm = guest("adv-exit-code");
    let module = dir.path().join("adv_exit_code.wasm");
    std::fs::write(&module, &wasm).unwrap();
    let module = module.to_str().unwrap();
    let d = data.as_str();
    let mut seen = String::new();

    // Locally, in text and JSON: the job finished; the CLI succeeds,
    // whatever the guest's exit code.
    let text = as_dev(
        &mut seen,
        &[
            "job",
            "submit",
            "--grant",
            &grant,
            "--module",
            module,
            "--as",
            "dev",
            "--data-dir",
            d,
        ],
    );
    assert!(text.contains(" finished"), "{text}");
    let local: Value = serde_json::from_str(&ok(&[
        "job",
        "submit",
        "--grant",
        &grant,
        "--module",
        module,
        "--json",
        "--as",
        "dev",
        "--data-dir",
        d,
    ]))
    .unwrap();
    seen.push_str(&local.to_string());
    assert_withheld(&local);
    assert_eq!(local["outcome"]["review"], "quarantined", "{local}");
    // Local views (the data directory is the operator's: no server runs).
    let text_job = text.split_whitespace().nth(1).unwrap().to_string();
    for job in [text_job.as_str(), local["job"].as_str().unwrap()] {
        seen.push_str(&ok(&["job", "status", job, "--as", "dev", "--data-dir", d]));
        let view: Value = serde_json::from_str::<serde_json::Value>(&ok(&[
            "job",
            "status",
            job,
            "--json",
            "--as",
            "dev",
            "--data-dir",
            d,
        ]))
        .unwrap()["job"]
            .clone();
        seen.push_str(&view.to_string());
        assert_withheld(&view);
    }
    seen.push_str(&ok(&["job", "list", "--as", "dev", "--data-dir", d]));
    let usage: Value = serde_json::from_str::<Value>(&ok(&[
        "grant",
        "usage",
        &grant,
        "--json",
        "--as",
        "dev",
        "--data-dir",
        d,
    ]))
    .unwrap()["usage"]
        .clone();
    seen.push_str(&usage.to_string());
    assert_eq!(usage["jobs_by_status"], json!({"finished": 2}), "{usage}");
    seen.push_str(&ok(&[
        "grant",
        "usage",
        &grant,
        "--as",
        "dev",
        "--data-dir",
        d,
    ]));

    // Over the service: the CLI with --server, and the raw API.
    let server = TestServer::start(&data, 2);
    let token = rotate(&server.domain, "dev");
    let remote = |seen: &mut String, args: &[&str]| {
        let mut all = vec!["--server", server.base.as_str(), "--token", &token];
        all.extend_from_slice(args);
        as_dev(seen, &all)
    };
    let text = remote(
        &mut seen,
        &[
            "job", "submit", "--grant", &grant, "--module", module, "--json",
        ],
    );
    let served: Value = serde_json::from_str(&text).unwrap();
    assert_withheld(&served);
    let dev = server.client(&token);
    let sha = dev
        .post_bytes("/v1/modules", &wasm, "application/wasm")
        .unwrap()["module"]
        .as_str()
        .unwrap()
        .to_string();
    let done = dev
        .post(
            "/v1/jobs",
            &json!({"grant": grant, "module": sha, "wait": true}),
        )
        .unwrap();
    seen.push_str(&done.to_string());
    assert_withheld(&done);

    // Every view a developer has of the jobs and the grant.
    let listed = dev.get("/v1/jobs").unwrap();
    seen.push_str(&listed.to_string());
    let jobs: Vec<String> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(jobs.len(), 4, "{listed}");
    for job in listed["jobs"].as_array().unwrap() {
        assert_withheld(job);
    }
    for job in &jobs {
        let view = dev.get(&format!("/v1/jobs/{job}")).unwrap();
        seen.push_str(&view.to_string());
        assert_withheld(&view["job"]);
        remote(&mut seen, &["job", "status", job]);
    }
    remote(&mut seen, &["job", "list"]);
    let usage = dev.get(&format!("/v1/grants/{grant}/usage")).unwrap();
    seen.push_str(&usage.to_string());
    assert_eq!(
        usage["usage"]["jobs_by_status"],
        json!({"finished": 4}),
        "{usage}"
    );
    for key in ["queries", "fuel_used", "rows_read", "run_ms", "outputs"] {
        assert!(usage["usage"][key].is_null(), "{key}: {usage}");
    }
    remote(&mut seen, &["grant", "usage", &grant]);

    // The reviewer sees all of it, the same in every job (the query's
    // release is cached, so every run read the same value).
    let rev = server.client(&rotate(&server.domain, "rev"));
    let mut what = Vec::new();
    for job in &jobs {
        let view = rev.get(&format!("/v1/jobs/{job}")).unwrap()["job"].clone();
        assert_eq!(view["status"], "finished", "{view}");
        what.push(reported(&view));
    }
    let first = &what[0];
    assert!(what.iter().all(|w| w == first), "{what:?}");
    let secret = first.secret;
    assert_eq!(
        first.refusals as i64,
        secret % 5 + 2,
        "the refusal count carries the value"
    );
    assert_eq!(
        first.outputs as i64,
        secret % 3 + 1,
        "so does the output count"
    );
    let queue = rev.get("/v1/reviews").unwrap();
    let outcomes: Vec<&Value> = queue["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "outcome")
        .collect();
    assert_eq!(outcomes.len(), 4, "{queue}");
    assert!(
        outcomes.iter().all(|o| o["job_error"]
            .as_str()
            .unwrap()
            .contains(&secret.to_string())),
        "{queue}"
    );

    // None of it reached the developer, in any mode.
    for leaked in [
        secret.to_string(),
        "returned exit code".to_string(),
        "income was".to_string(),
        "secret income".to_string(),
        // The refusals' text names the column the guest reached for.
        "id_number".to_string(),
        "part_".to_string(),
    ] {
        assert!(
            !seen.contains(&leaked),
            "the developer saw `{leaked}`:\n{seen}"
        );
    }

    // After a reviewer approves the outcome, its developer sees exactly
    // what was approved, in every mode; the other jobs stay withheld.
    let outcome = done["outcome"]["output"].as_str().unwrap();
    let job = done["job"].as_str().unwrap();
    let shown = rev.get(&format!("/v1/outputs/{outcome}")).unwrap();
    assert_eq!(shown["kind"], "outcome", "{shown}");
    rev.post(
        &format!("/v1/outputs/{outcome}/approve"),
        &json!({"reason": "the job's failure says nothing of a person"}),
    )
    .unwrap();
    let after = dev.get(&format!("/v1/jobs/{job}")).unwrap()["job"].clone();
    assert_eq!(after["outcome"]["review"], "approved", "{after}");
    assert_eq!(reported(&after), *first, "{after}");
    let approved_table = &shown["table"]["columns"][1]["values"];
    assert!(
        approved_table.as_array().unwrap().contains(&after["error"]),
        "the developer reads the approved error: {after}\n{shown}"
    );
    let served: Value = serde_json::from_str(&remote(
        &mut String::new(),
        &["job", "status", job, "--json"],
    ))
    .unwrap();
    assert_eq!(reported(&served["job"]), *first);
    for other in jobs.iter().filter(|j| *j != job) {
        assert_withheld(&dev.get(&format!("/v1/jobs/{other}")).unwrap()["job"]);
    }
    drop((dev, rev, remote));
    drop(server);
    let local: Value = serde_json::from_str::<serde_json::Value>(&ok(&[
        "job",
        "status",
        job,
        "--json",
        "--as",
        "dev",
        "--data-dir",
        d,
    ]))
    .unwrap()["job"]
        .clone();
    assert_eq!(reported(&local), *first);
    for other in jobs.iter().filter(|j| *j != job) {
        let view: Value = serde_json::from_str::<serde_json::Value>(&ok(&[
            "job",
            "status",
            other,
            "--json",
            "--as",
            "dev",
            "--data-dir",
            d,
        ]))
        .unwrap()["job"]
            .clone();
        assert_withheld(&view);
    }
}

/// A job the service stops shows the cause by name, without the details a
/// guest chose (how much memory it asked for), and its CLI run fails.
#[test]
fn a_stopped_job_names_its_limit_and_nothing_more() {
    let (dir, data) = residents_dir("500");
    let grant = issue_grant(&data, "5", &[]);
    let module = dir.path().join("bomb.wasm");
    std::fs::write(&module, guest("adv-memory-bomb")).unwrap();
    let (done, text) = unseen(&[
        "job",
        "submit",
        "--grant",
        &grant,
        "--module",
        module.to_str().unwrap(),
        "--json",
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]);
    assert!(!done, "{text}");
    let view: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(view["status"], "stopped", "{view}");
    assert_eq!(view["stopped_by"], "memory", "{view}");
    assert_eq!(view["reason"], "the job reached its memory limit", "{view}");
    assert!(!text.contains("tried to grow"), "{text}");
    // The reviewer reads the detail.
    let job = view["job"].as_str().unwrap();
    let full: Value = serde_json::from_str::<serde_json::Value>(&ok(&[
        "job",
        "status",
        job,
        "--json",
        "--as",
        "rev",
        "--data-dir",
        &data,
    ]))
    .unwrap()["job"]
        .clone();
    assert!(
        full["error"].as_str().unwrap().contains("tried to grow"),
        "{full}"
    );
}

/// Pruning logs after the retention period clears them from the job
/// record and from an outcome output no one approved, which then leaves
/// review; the ledger records which outputs were rewritten.
#[test]
fn pruned_logs_leave_unapproved_outcomes() {
    let (dir, data) = residents_dir("500");
    let grant = issue_grant(&data, "5", &[]);
    let module = dir.path().join("district_income.wasm");
    std::fs::write(&module, unseen::guests::DISTRICT_INCOME).unwrap();
    let done: Value = serde_json::from_str(&ok(&[
        "job",
        "submit",
        "--grant",
        &grant,
        "--module",
        module.to_str().unwrap(),
        "--json",
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]))
    .unwrap();
    let (job, outcome) = (
        done["job"].as_str().unwrap(),
        done["outcome"]["output"].as_str().unwrap(),
    );
    let shown = ok(&[
        "review",
        "show",
        outcome,
        "--as",
        "rev",
        "--data-dir",
        &data,
    ]);
    assert!(shown.contains("released 12 districts"), "{shown}");
    // The job ended long ago.
    rusqlite::Connection::open(std::path::Path::new(&data).join("unseen.db"))
        .unwrap()
        .execute(
            "UPDATE jobs SET ended_at = '2020-01-01T00:00:00Z' WHERE id = ?1",
            [job],
        )
        .unwrap();
    let pruned = ok(&[
        "logs",
        "prune",
        "--older-than-days",
        "400",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    assert!(pruned.contains("cleared the logs of 1 jobs"), "{pruned}");
    let shown: Value = serde_json::from_str(&ok(&[
        "review",
        "show",
        outcome,
        "--json",
        "--as",
        "rev",
        "--data-dir",
        &data,
    ]))
    .unwrap();
    assert_eq!(shown["status"], "pruned", "{shown}");
    assert!(
        !shown.to_string().contains("released 12 districts"),
        "{shown}"
    );
    assert!(
        shown.to_string().contains("fuel_used"),
        "the rest stays: {shown}"
    );
    let view: Value = serde_json::from_str::<serde_json::Value>(&ok(&[
        "job",
        "status",
        job,
        "--json",
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]))
    .unwrap()["job"]
        .clone();
    assert_eq!(view["outcome"]["review"], "pruned", "{view}");
    let queue = ok(&[
        "review",
        "list",
        "--json",
        "--as",
        "rev",
        "--data-dir",
        &data,
    ]);
    assert!(!queue.contains(outcome), "{queue}");
    let entries =
        std::fs::read_to_string(std::path::Path::new(&data).join("ledger/entries.jsonl")).unwrap();
    assert!(
        entries
            .lines()
            .any(|l| l.contains("\"kind\":\"logs.pruned\"") && l.contains(outcome)),
        "{entries}"
    );
    ok(&["ledger", "verify", "--data-dir", &data]);
}

/// A server given a log retention clears the guest logs of jobs that ended
/// before it, on its own at start (recorded as `system`), keeps younger
/// ones, and refuses a retention shorter than six months.
#[test]
fn a_server_with_a_retention_clears_expired_logs_itself() {
    let (dir, data) = residents_dir("300");
    let grant = issue_grant(&data, "5", &[]);
    let module = dir.path().join("district_income.wasm");
    std::fs::write(&module, unseen::guests::DISTRICT_INCOME).unwrap();
    let submit = || -> String {
        let done: Value = serde_json::from_str(&ok(&[
            "job",
            "submit",
            "--grant",
            &grant,
            "--module",
            module.to_str().unwrap(),
            "--json",
            "--as",
            "dev",
            "--data-dir",
            &data,
        ]))
        .unwrap();
        done["job"].as_str().unwrap().to_string()
    };
    let (old, young) = (submit(), submit());
    let store =
        || rusqlite::Connection::open(std::path::Path::new(&data).join("unseen.db")).unwrap();
    store()
        .execute(
            "UPDATE jobs SET ended_at = '2020-01-01T00:00:00Z' WHERE id = ?1",
            [&old],
        )
        .unwrap();
    let logs_of = |job: &str| -> String {
        store()
            .query_row("SELECT logs FROM jobs WHERE id = ?1", [job], |r| r.get(0))
            .unwrap()
    };
    assert_ne!(logs_of(&old), "[]");
    let refused =
        crate::support::fails(&["serve", "--log-retention-days", "30", "--data-dir", &data]);
    assert!(refused.contains("183..=36500"), "{refused}");
    let domain = unseen::Domain::open(std::path::Path::new(&data)).unwrap();
    let short = domain.set_log_retention_days(30).unwrap_err().to_string();
    assert!(short.contains("at least 183 days"), "{short}");
    drop(domain);
    let server = crate::support::TestServer::start_with(
        &data,
        unseen::server::ServerOptions {
            log_retention_days: Some(200),
            ..Default::default()
        },
    );
    let entries = std::path::Path::new(&data).join("ledger/entries.jsonl");
    let pruned = || {
        std::fs::read_to_string(&entries)
            .unwrap()
            .lines()
            .any(|l| l.contains("\"kind\":\"logs.pruned\"") && l.contains("\"actor\":\"system\""))
    };
    let mut waited = 0;
    while !pruned() {
        assert!(waited < 600, "no logs.pruned entry by the service");
        std::thread::sleep(std::time::Duration::from_millis(50));
        waited += 1;
    }
    assert_eq!(logs_of(&old), "[]");
    assert_ne!(logs_of(&young), "[]", "younger logs are kept");
    drop(server);
    ok(&["ledger", "verify", "--data-dir", &data]);
}
