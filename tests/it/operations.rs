//! What an operator reads: the access log and the events of a job's life.

use serde_json::json;

use crate::support::{TestServer, capture_logs, issue_grant, logs, residents_dir, rotate};

/// The captured log lines that mention `needle`.
fn lines_with(needle: &str) -> Vec<String> {
    String::from_utf8_lossy(&logs())
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_jobs_life_is_logged_as_events_and_every_request_once_without_its_token() {
    capture_logs();
    let (_dir, data) = residents_dir("500");
    let grant = issue_grant(&data, "5", &[]);
    let server = TestServer::start(&data, 1);
    let dev_token = rotate(&server.domain, "dev");
    let rev_token = rotate(&server.domain, "rev");
    let dev = server.client(&dev_token);
    let module = dev
        .upload_module(unseen::guests::DISTRICT_INCOME, "job")
        .unwrap()
        .module;
    let done = dev
        .post(
            "/v1/jobs",
            &json!({"grant": grant, "module": module, "wait": true}),
        )
        .unwrap();
    let job = done["job"].as_str().unwrap().to_string();
    let outcome = done["outcome"]["output"].as_str().unwrap().to_string();
    server
        .client(&rev_token)
        .post(
            &format!("/v1/outputs/{outcome}/reject"),
            &json!({"reason": "not needed"}),
        )
        .unwrap();

    // One event per transition, each naming the job.
    let events = lines_with(&format!("job=\"{job}\""));
    for kind in [
        "job.submitted",
        "job.started",
        "query.admitted",
        "job.ended",
        "output.quarantined",
    ] {
        assert!(
            events
                .iter()
                .any(|l| l.contains(&format!("kind=\"{kind}\""))),
            "no `{kind}` event for {job}:\n{}",
            events.join("\n")
        );
    }
    let decided = lines_with(&format!("output=\"{outcome}\""));
    assert!(
        decided.iter().any(|l| l.contains("review")),
        "no review event for {outcome}:\n{}",
        decided.join("\n")
    );
    // The access log: the route as the table names it, the user, the status.
    let access = lines_with("unseen::access");
    assert!(
        access.iter().any(|l| l.contains("route=\"/v1/jobs\"")
            && l.contains("method=POST")
            && l.contains("user=\"dev\"")
            && l.contains("status=200")),
        "{}",
        access.join("\n")
    );
    assert!(
        access
            .iter()
            .any(|l| l.contains("route=\"/v1/outputs/{id}/reject\"") && l.contains("user=\"rev\"")),
        "{}",
        access.join("\n")
    );
    let all = logs();
    for token in [&dev_token, &rev_token] {
        assert!(
            !crate::support::contains(&all, token.as_bytes()),
            "a token was logged"
        );
    }
}
