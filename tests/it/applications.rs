//! Grant applications: apply, pre-review, review (narrowing), notify,
//! obtain, feedback; every step in the ledger and the disclosure report,
//! and every refusal.

use serde_json::{Value, json};

use crate::support::*;

fn add_user(data: &str, id: &str, role: &str) {
    ok(&[
        "user",
        "add",
        "--id",
        id,
        "--name",
        id,
        "--role",
        role,
        "--as",
        "admin",
        "--data-dir",
        data,
    ]);
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `dev` applies for district statistics on `residents`; the application.
fn apply(data: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "application",
        "apply",
        "--dataset",
        "residents",
        "--scenario",
        "district services",
        "--purpose",
        "District income statistics",
        "--epsilon",
        "4",
        "--query-epsilon",
        "1",
        "--days",
        "90",
        "--columns",
        "district,annual_income,birth_year",
    ];
    args.extend_from_slice(extra);
    args.extend(["--json", "--as", "dev", "--data-dir", data]);
    json_of(&ok(&args))["application"].clone()
}

/// `user` applies for a small grant on `residents` with `extra` flags,
/// which must be refused; the refusal.
fn apply_refused(data: &str, user: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "application",
        "apply",
        "--dataset",
        "residents",
        "--scenario",
        "s",
        "--purpose",
        "p",
        "--epsilon",
        "1",
    ];
    args.extend_from_slice(extra);
    args.extend(["--as", user, "--data-dir", data]);
    fails(&args)
}

fn status(data: &str, user: &str, id: &str) -> String {
    let shown = json_of(&ok(&[
        "application",
        "show",
        id,
        "--json",
        "--as",
        user,
        "--data-dir",
        data,
    ]));
    shown["application"]["status"].as_str().unwrap().to_string()
}

#[test]
fn an_application_is_pre_reviewed_returned_amended_narrowed_approved_and_rated() {
    let (_dir, data) = residents_dir("300");
    add_user(&data, "aud", "auditor");
    let application = apply(&data, &[]);
    let id = application["id"].as_str().unwrap().to_string();
    assert_eq!(application["status"], "submitted");
    assert_eq!(application["applicant"], "dev");
    assert_eq!(application["requested"]["developer"], "dev");

    // Returning it needs a reason; the applicant is told it.
    let refused = fails(&[
        "application",
        "pre-review",
        &id,
        "--incomplete",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    assert!(refused.contains("needs a reason"), "{refused}");
    ok(&[
        "application",
        "pre-review",
        &id,
        "--incomplete",
        "--reason",
        "say why the scenario needs birth years",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    let listed = ok(&["application", "list", "--as", "dev", "--data-dir", &data]);
    assert!(listed.contains("returned"), "{listed}");
    assert!(
        listed.contains("returned by admin")
            && listed.contains("say why the scenario needs birth years"),
        "the applicant is notified of the return and its reason: {listed}"
    );
    // A returned application is not decided until amended and pre-reviewed.
    let early = fails(&[
        "application",
        "decide",
        &id,
        "--approve",
        "--reason",
        "r",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    assert!(
        early.contains("is returned") && early.contains("in_review"),
        "{early}"
    );
    ok(&[
        "application",
        "amend",
        &id,
        "--dataset",
        "residents",
        "--scenario",
        "district services",
        "--purpose",
        "District income statistics by age band",
        "--epsilon",
        "4",
        "--query-epsilon",
        "1",
        "--days",
        "90",
        "--columns",
        "district,annual_income,birth_year",
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]);
    assert_eq!(status(&data, "dev", &id), "submitted");
    ok(&[
        "application",
        "pre-review",
        &id,
        "--complete",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    assert_eq!(status(&data, "admin", &id), "in_review");

    // Approval may only narrow what was asked.
    for (flags, says) in [
        (vec!["--epsilon", "5"], "epsilon_total 5 is more than the 4"),
        (vec!["--days", "91"], "valid_days 91 is more than the 90"),
        (
            vec!["--columns", "gender"],
            "column `gender` was not asked for",
        ),
        (
            vec!["--designate", "rev"],
            "designated user `rev` was not asked for",
        ),
        (
            vec!["--join", "residents"],
            "joined dataset `residents` was not asked for",
        ),
        (
            vec!["--approvals", "0"],
            "0 approvals per release is fewer than the 1",
        ),
    ] {
        let mut args = vec![
            "application",
            "decide",
            &id,
            "--approve",
            "--reason",
            "r",
            "--as",
            "admin",
            "--data-dir",
            &data,
        ];
        args.extend(flags);
        let refused = fails(&args);
        assert!(refused.contains(says), "{says}: {refused}");
    }
    assert_eq!(
        status(&data, "admin", &id),
        "in_review",
        "refusals change nothing"
    );
    let decided = json_of(&ok(&[
        "application",
        "decide",
        &id,
        "--approve",
        "--epsilon",
        "2",
        "--days",
        "30",
        "--columns",
        "district,annual_income",
        "--window",
        "00:00-23:59",
        "--approvals",
        "2",
        "--reason",
        "birth years are not needed for district totals",
        "--json",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]))["application"]
        .clone();
    assert_eq!(decided["status"], "approved");
    let grant_id = decided["grant"].as_str().unwrap().to_string();
    // The grant is issued exactly as reviewed.
    let grant = json_of(&ok(&[
        "grant",
        "show",
        &grant_id,
        "--json",
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]))["grant"]
        .clone();
    assert_eq!(grant["developer"], "dev");
    assert_eq!(grant["epsilon_total"], 2.0);
    assert_eq!(grant["query_epsilon"], 1.0);
    assert_eq!(grant["columns"], json!(["district", "annual_income"]));
    assert_eq!(grant["scenario"], "district services");
    assert_eq!(grant["purpose"], "District income statistics by age band");
    assert_eq!(decided["granted"]["valid_days"], 30);
    assert_eq!(grant["windows"], json!(["00:00-23:59"]));
    assert_eq!(grant["approvals_required"], 2);
    // The grant works, and only on the granted columns.
    let (answered, text) = query_as_dev(
        &data,
        &grant_id,
        &[],
        "SELECT district, COUNT(*) AS n FROM residents GROUP BY district",
    );
    assert!(answered, "{text}");
    let (answered, text) = query_as_dev(
        &data,
        &grant_id,
        &[],
        "SELECT AVG(birth_year) AS a FROM residents",
    );
    assert!(!answered, "birth_year was not granted: {text}");

    // Feedback, by the applicant, after approval.
    let bad = fails(&[
        "application",
        "feedback",
        &id,
        "--rating",
        "6",
        "--text",
        "x",
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]);
    assert!(bad.contains("from 1 (poor) to 5"), "{bad}");
    ok(&[
        "application",
        "feedback",
        &id,
        "--rating",
        "4",
        "--text",
        "intervals were wide for small districts",
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]);
    let shown = ok(&[
        "application",
        "show",
        &id,
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]);
    for step in [
        "submitted by dev",
        "returned by admin",
        "amended by dev",
        "pre_reviewed by admin",
        "approved by admin",
        "feedback by dev",
        "(rating 4)",
    ] {
        assert!(shown.contains(step), "history has `{step}`: {shown}");
    }

    // Every step is in the ledger, and the disclosure report tells it.
    let ledger = entries(&std::path::Path::new(&data).join("ledger"));
    let kinds: Vec<&str> = ledger
        .iter()
        .filter(|e| {
            e.kind.starts_with("application.")
                || e.body.get("application").and_then(Value::as_str) == Some(id.as_str())
        })
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "application.submitted",
            "application.pre_reviewed",
            "application.amended",
            "application.pre_reviewed",
            "grant.issued",
            "application.feedback",
        ]
    );
    let report = json_of(&ok(&[
        "report",
        "disclosure",
        "--json",
        "--data-dir",
        &data,
    ]));
    let disclosed = &report["applications"][0];
    assert_eq!(disclosed["application"], id.as_str());
    assert_eq!(disclosed["status"], "approved");
    assert_eq!(disclosed["grant"], grant_id.as_str());
    assert_eq!(disclosed["epsilon_asked"], 4.0);
    assert_eq!(disclosed["epsilon_granted"], 2.0);
    assert_eq!(disclosed["decided_by"], "admin");
    assert_eq!(disclosed["ratings"], json!([4]));
    let granted = report["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["grant"] == grant_id.as_str())
        .unwrap();
    assert_eq!(granted["application"], id.as_str());
    // Store and ledger agree after every step.
    let reconciled = ok(&["ledger", "reconcile", "--as", "admin", "--data-dir", &data]);
    assert!(!reconciled.contains("differ"), "{reconciled}");
    // The auditor reads applications too.
    assert_eq!(status(&data, "aud", &id), "approved");
}

#[test]
fn each_step_is_refused_to_the_wrong_person_and_in_the_wrong_state() {
    let (_dir, data) = residents_dir("200");
    add_user(&data, "dev2", "developer");
    add_user(&data, "aud", "auditor");
    let id = apply(&data, &[])["id"].as_str().unwrap().to_string();

    // Nobody but a developer applies, and only for themselves.
    for user in ["admin", "rev", "aud"] {
        let refused = apply_refused(&data, user, &[]);
        assert!(refused.contains("apply for grants"), "{user}: {refused}");
    }
    let refused = fails(&[
        "application",
        "apply",
        "--dataset",
        "residents",
        "--purpose",
        "p",
        "--epsilon",
        "1",
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]);
    assert!(refused.contains("one scenario"), "{refused}");
    let refused = fails(&[
        "application",
        "apply",
        "--dataset",
        "nope",
        "--scenario",
        "s",
        "--purpose",
        "p",
        "--epsilon",
        "1",
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]);
    assert!(
        refused.contains("dataset `nope` does not exist"),
        "{refused}"
    );
    let refused = apply_refused(&data, "dev", &["--columns", "salary"]);
    assert!(
        refused.contains("column `salary` is in no dataset"),
        "{refused}"
    );

    // The applicant takes no provider step on it (no self-review), nor
    // does a reviewer or an auditor.
    for user in ["dev", "rev", "aud"] {
        let refused = fails(&[
            "application",
            "pre-review",
            &id,
            "--complete",
            "--as",
            user,
            "--data-dir",
            &data,
        ]);
        assert!(
            refused.contains("needs the admin role"),
            "{user}: {refused}"
        );
        let refused = fails(&[
            "application",
            "decide",
            &id,
            "--approve",
            "--reason",
            "r",
            "--as",
            user,
            "--data-dir",
            &data,
        ]);
        assert!(
            refused.contains("needs the admin role"),
            "{user}: {refused}"
        );
    }
    // Another developer neither sees nor touches it; a reviewer sees none.
    let other = fails(&[
        "application",
        "show",
        &id,
        "--as",
        "dev2",
        "--data-dir",
        &data,
    ]);
    assert!(other.contains("does not exist"), "{other}");
    let other = fails(&[
        "application",
        "withdraw",
        &id,
        "--as",
        "dev2",
        "--data-dir",
        &data,
    ]);
    assert!(other.contains("does not exist"), "{other}");
    let listed = json_of(&ok(&[
        "application",
        "list",
        "--json",
        "--as",
        "dev2",
        "--data-dir",
        &data,
    ]));
    assert_eq!(listed["applications"], json!([]));
    let refused = fails(&["application", "list", "--as", "rev", "--data-dir", &data]);
    assert!(refused.contains("read grant applications"), "{refused}");

    // Wrong states.
    let refused = fails(&[
        "application",
        "feedback",
        &id,
        "--rating",
        "3",
        "--text",
        "t",
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]);
    assert!(refused.contains("is submitted"), "{refused}");
    let refused = fails(&[
        "application",
        "decide",
        &id,
        "--reject",
        "--reason",
        "r",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    assert!(refused.contains("is submitted"), "{refused}");
    ok(&[
        "application",
        "pre-review",
        &id,
        "--complete",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    let refused = fails(&[
        "application",
        "pre-review",
        &id,
        "--complete",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    assert!(refused.contains("is in_review"), "{refused}");
    let refused = fails(&[
        "application",
        "decide",
        &id,
        "--reject",
        "--reason",
        "",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    assert!(refused.contains("needs a reason"), "{refused}");
    let refused = fails(&[
        "application",
        "decide",
        &id,
        "--reject",
        "--epsilon",
        "1",
        "--reason",
        "no",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    assert!(refused.contains("a rejection grants nothing"), "{refused}");
    let rejected = json_of(&ok(&[
        "application",
        "decide",
        &id,
        "--reject",
        "--reason",
        "the scenario is served by published marginals",
        "--json",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]))["application"]
        .clone();
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(rejected["grant"], Value::Null);
    let refused = fails(&[
        "application",
        "decide",
        &id,
        "--approve",
        "--reason",
        "changed my mind",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    assert!(refused.contains("is rejected"), "{refused}");
    let refused = fails(&[
        "application",
        "withdraw",
        &id,
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]);
    assert!(refused.contains("is rejected"), "{refused}");
    let listed = ok(&["application", "list", "--as", "dev", "--data-dir", &data]);
    assert!(
        listed.contains("rejected by admin") && listed.contains("served by published marginals"),
        "{listed}"
    );
    // No grant came of it.
    let grants = json_of(&ok(&[
        "grant",
        "list",
        "--json",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]));
    assert_eq!(grants["grants"], json!([]));

    // Withdrawn before the decision, it can be neither reviewed nor decided.
    let second = apply(&data, &[])["id"].as_str().unwrap().to_string();
    ok(&[
        "application",
        "withdraw",
        &second,
        "--reason",
        "scenario dropped",
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]);
    let refused = fails(&[
        "application",
        "pre-review",
        &second,
        "--complete",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    assert!(refused.contains("is withdrawn"), "{refused}");
}

/// The same path over HTTP and `--server`: statuses, and one approval
/// issuing one grant when two admins decide at once.
#[test]
fn over_the_api_two_simultaneous_approvals_issue_one_grant() {
    let (_dir, data) = residents_dir("200");
    add_user(&data, "admin2", "admin");
    let server = TestServer::start(&data, 2);
    let dev = token_of(&data, "dev");
    let applied = ok(&[
        "application",
        "apply",
        "--dataset",
        "residents",
        "--scenario",
        "s",
        "--purpose",
        "p",
        "--epsilon",
        "2",
        "--json",
        "--server",
        &server.base,
        "--token",
        &dev,
    ]);
    let id = json_of(&applied)["application"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let admin = server.client(&token_of(&data, "admin"));
    let admin2 = server.client(&token_of(&data, "admin2"));
    let shown: Value = admin
        .call(
            &format!("/v1/applications/{id}/pre-review"),
            &json!({"complete": true}),
        )
        .unwrap();
    assert_eq!(shown["application"]["status"], "in_review");
    let decide = |client: unseen::client::Client, id: String| {
        std::thread::spawn(move || {
            client.call::<_, Value>(
                &format!("/v1/applications/{id}/decision"),
                &json!({"approve": true, "reason": "fits the scenario"}),
            )
        })
    };
    let first = decide(admin, id.clone());
    let second = decide(admin2, id.clone());
    let answers = [first.join().unwrap(), second.join().unwrap()];
    let approved = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(approved, 1, "{answers:?}");
    let refusal = answers
        .iter()
        .find_map(|a| a.as_ref().err())
        .unwrap()
        .to_string();
    assert!(refusal.contains("is approved"), "{refusal}");
    let grants = server.domain.grants("admin").unwrap();
    assert_eq!(grants.len(), 1, "exactly one grant issued");
    // A malformed decision is a 400 that names the field, not a 500.
    let dev_client = server.client(&dev);
    let err = dev_client
        .call::<_, Value>(
            &format!("/v1/applications/{id}/feedback"),
            &json!({"rating": "five", "text": "t"}),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("400") || err.contains("rating"), "{err}");
    let listed = ok(&[
        "application",
        "list",
        "--server",
        &server.base,
        "--token",
        &dev,
    ]);
    assert!(listed.contains("approved by admin"), "{listed}");
}

/// Over HTTP an application may leave `developer` out (the applicant is
/// meant), and a withdrawal needs no body (its reason is optional), as
/// `docs/api.md` says.
#[test]
fn over_the_api_an_application_omits_the_developer_and_a_withdrawal_its_body() {
    let (_dir, data) = residents_dir("100");
    let server = TestServer::start(&data, 2);
    let dev = server.client(&token_of(&data, "dev"));
    let applied = dev
        .post(
            "/v1/applications",
            &json!({"dataset": "residents", "scenario": "s", "purpose": "p", "epsilon_total": 1.0}),
        )
        .unwrap();
    assert_eq!(applied["application"]["requested"]["developer"], "dev");
    let id = applied["application"]["id"].as_str().unwrap().to_string();
    let answer = dev
        .send(
            "POST",
            &format!("/v1/applications/{id}/withdraw"),
            None,
            "application/json",
        )
        .unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["application"]["status"], "withdrawn");
}

/// Designating users in an application reveals nothing about who exists:
/// an unknown id, a disabled developer and a reviewer get the same refusal.
#[test]
fn designating_users_does_not_tell_who_exists_or_their_role() {
    let (_dir, data) = residents_dir("300");
    add_user(&data, "gone", "developer");
    ok(&[
        "user",
        "disable",
        "gone",
        "--reason",
        "left",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    let refusal =
        |who: &str| apply_refused(&data, "dev", &["--designate", who]).replace(who, "WHO");
    let unknown = refusal("nobody");
    assert!(unknown.contains("is not an active developer"), "{unknown}");
    assert_eq!(refusal("gone"), unknown);
    assert_eq!(refusal("rev"), unknown);
    assert_eq!(refusal("admin"), unknown);
}
