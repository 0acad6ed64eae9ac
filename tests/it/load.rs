//! Load on the loopback: the attacks of issue 14 (an open-column triple
//! self-join on `gender`, and a dry run that would fold a 2 GB constant)
//! against `unseen serve --max-jobs 2`, while 8 ordinary users run
//! ordinary queries. The ordinary users' p99 latency is compared with an
//! idle server's in the same run, the server's peak memory (from /proc)
//! with its configured limit, and SIGTERM must stop it within its grace
//! period.
//!
//! The always-on version is small (2,000 residents, few requests) and
//! checks everything but the latency ratio loosely; `UNSEEN_LOAD_FULL=1`
//! runs 20,000 residents and more requests and holds the ratio to 2x (the
//! machine is noisy, so only a run that asks for it is held to that).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use unseen::client::Client;

use crate::limits::Child;
use crate::support::residents_dir;

const USERS: usize = 8;
const MAX_JOBS: usize = 2;
const QUERY_MEMORY_MIB: u64 = 256;
const GRACE_SECONDS: u64 = 5;

const JOIN_ATTACK: &str = "SELECT COUNT(*) FROM residents a JOIN residents b ON a.gender = b.gender \
                           JOIN residents c ON b.gender = c.gender";
const FOLD_ATTACK: &str = "SELECT length(repeat('x', 2000000000)) AS n FROM residents";

struct Size {
    residents: &'static str,
    requests: usize,
    full: bool,
}

fn size() -> Size {
    if std::env::var("UNSEEN_LOAD_FULL").is_ok_and(|v| v == "1") {
        Size {
            residents: "20000",
            requests: 30,
            full: true,
        }
    } else {
        Size {
            residents: "2000",
            requests: 6,
            full: false,
        }
    }
}

/// One ordinary request of user `i`, round `round`: an open-column count,
/// a DP histogram (a repeat is answered from the cache) or a dry run.
fn ordinary(client: &Client, grant: &str, round: usize) -> Value {
    let body = match round % 3 {
        0 => {
            json!({"grant": grant, "sql": "SELECT gender, COUNT(*) AS n FROM residents GROUP BY gender"})
        }
        1 => {
            json!({"grant": grant, "sql": "SELECT district, COUNT(*) AS n FROM residents GROUP BY district"})
        }
        _ => json!({"grant": grant, "dry_run": true,
            "sql": "SELECT district, AVG(annual_income) AS income FROM residents GROUP BY district"}),
    };
    client.post("/v1/queries", &body).unwrap()
}

fn served(answer: &Value) -> bool {
    answer["status"] == "finished" || answer["admitted"] == true
}

/// Runs every user's `requests` requests at once; all latencies, in ms.
fn users_work(users: &[(Client, String)], requests: usize) -> Vec<f64> {
    std::thread::scope(|scope| {
        let workers: Vec<_> = users
            .iter()
            .map(|(client, grant)| {
                scope.spawn(move || {
                    (0..requests)
                        .map(|round| {
                            let started = Instant::now();
                            let answer = ordinary(client, grant, round);
                            let took = started.elapsed().as_secs_f64() * 1000.0;
                            assert!(served(&answer), "an ordinary request failed: {answer}");
                            took
                        })
                        .collect::<Vec<f64>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    })
}

fn p99(mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    let at = ((ms.len() as f64) * 0.99).ceil() as usize;
    ms[at.clamp(1, ms.len()) - 1]
}

#[test]
fn the_issue_attacks_leave_ordinary_users_served_memory_bounded_and_sigterm_prompt() {
    let size = size();
    let (_dir, data) = residents_dir(size.residents);
    let (attacker, users): ((String, String), Vec<(String, String)>) = {
        let domain = unseen::Domain::open(Path::new(&data)).unwrap();
        let grant_for = |user: &str| {
            domain
                .issue_grant(
                    "admin",
                    &unseen::GrantRequest {
                        query_epsilon: 0.1,
                        ..unseen::GrantRequest::new("residents", user, "load test", 100.0)
                    },
                )
                .unwrap()
        };
        let attacker = (crate::support::rotate(&domain, "dev"), grant_for("dev"));
        let users = (0..USERS)
            .map(|i| {
                let id = format!("user{i}");
                let token = domain
                    .add_user(Some("admin"), &id, "U", unseen::Role::Developer, "agency")
                    .unwrap();
                (token, grant_for(&id))
            })
            .collect();
        (attacker, users)
    };
    let mut child = Child::serve(
        &data,
        &[
            "--max-jobs",
            &MAX_JOBS.to_string(),
            "--query-memory",
            &format!("{QUERY_MEMORY_MIB}M"),
            "--query-timeout",
            "30",
            "--grace-period",
            &GRACE_SECONDS.to_string(),
        ],
    );
    let users: Vec<(Client, String)> = users
        .into_iter()
        .map(|(token, grant)| (Client::new(&child.base, Some(&token)), grant))
        .collect();
    // Warm up (compiled plans, cached DP releases), then the baseline.
    users_work(&users, 3);
    let baseline_kib = child.memory_kib("VmRSS");

    let idle = users_work(&users, size.requests);

    let stop = Arc::new(AtomicBool::new(false));
    let attacks: Vec<_> = (0..2)
        .map(|which| {
            let client = Client::new(&child.base, Some(&attacker.0));
            let (grant, stop) = (attacker.1.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                let mut round = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let (sql, dry) = match (which + round) % 3 {
                        0 => (JOIN_ATTACK, false),
                        1 => (JOIN_ATTACK, true),
                        _ => (FOLD_ATTACK, true),
                    };
                    let body = json!({"grant": grant, "sql": sql, "dry_run": dry});
                    answers.push(client.post("/v1/queries", &body).unwrap());
                    round += 1;
                }
                answers
            })
        })
        .collect();
    let attacked = users_work(&users, size.requests);
    stop.store(true, Ordering::SeqCst);
    let answers: Vec<Value> = attacks
        .into_iter()
        .flat_map(|a| a.join().unwrap())
        .collect();
    let peak_kib = child.memory_kib("VmHWM");
    let exit = child.terminate(Duration::from_secs(GRACE_SECONDS + 60));

    let (idle_p99, attacked_p99) = (p99(idle), p99(attacked));
    let ratio = attacked_p99 / idle_p99;
    let limit_kib = baseline_kib + MAX_JOBS as u64 * QUERY_MEMORY_MIB * 1024;
    println!(
        "load ({} residents, {USERS} users x {} requests, {} attack requests): p99 idle {idle_p99:.1} ms, under attack {attacked_p99:.1} ms, ratio {ratio:.2}; RSS baseline {} MiB, peak {} MiB, limit {} MiB; SIGTERM to exit {:?}",
        size.residents,
        size.requests,
        answers.len(),
        baseline_kib / 1024,
        peak_kib / 1024,
        limit_kib / 1024,
        exit.map(|e| e.1),
    );
    assert!(!answers.is_empty(), "no attack was made");
    for answer in &answers {
        let refused = answer["rule"] == "open-join"
            || answer["rule"] == "unbounded-cost"
            || answer["reason"]
                .as_str()
                .is_some_and(|e| e.contains("public domain of a few categories"));
        assert!(refused, "an attack was not refused: {answer}");
    }
    assert!(
        peak_kib <= limit_kib,
        "peak RSS {peak_kib} kiB over the limit {limit_kib} kiB"
    );
    let (success, took) = exit.expect("the server did not exit after SIGTERM");
    assert!(success, "the server exited with a failure");
    assert!(
        took < Duration::from_secs(GRACE_SECONDS + 3),
        "SIGTERM to exit took {took:?}"
    );
    // The full run holds the issue's bound; the small one only catches a
    // server the attacks stall (on a noisy machine a few requests decide
    // a small run's p99).
    let bound = if size.full { 2.0 } else { 5.0 };
    assert!(
        ratio <= bound,
        "under attack the ordinary users' p99 is {ratio:.2} times the idle one"
    );
}
