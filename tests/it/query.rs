//! `unseen query`: one SQL statement through the same admission, DP, budget,
//! quarantine and review path as a wasm job.

use crate::support::{fails, issue_grant, ok, residents_dir};

/// A data directory with residents registered and a grant of epsilon 2 (1 per query).
fn setup() -> (tempfile::TempDir, String, String) {
    let (dir, data) = residents_dir("3000");
    let grant = issue_grant(&data, "2", &[]);
    (dir, data, grant)
}

fn spent(data: &str, grant: &str) -> f64 {
    let out = ok(&[
        "budget",
        "show",
        "--grant",
        grant,
        "--json",
        "--data-dir",
        data,
    ]);
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["epsilon_spent"]
        .as_f64()
        .unwrap()
}

const SQL: &str =
    "SELECT district, COUNT(*) AS n, AVG(annual_income) AS income FROM residents GROUP BY district";

#[test]
fn dry_run_reports_cost_and_accuracy_without_spending() {
    let (_dir, data, grant) = setup();
    let out = ok(&[
        "query",
        "--grant",
        &grant,
        "--dry-run",
        "--json",
        "--as",
        "dev",
        "--data-dir",
        &data,
        SQL,
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["admitted"], true);
    assert!((v["epsilon"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    assert_eq!(
        v["accuracy"].as_array().unwrap().len(),
        2,
        "count and sum components: {v}"
    );
    assert_eq!(spent(&data, &grant), 0.0);
    let refused = fails(&[
        "query",
        "--grant",
        &grant,
        "--dry-run",
        "--as",
        "dev",
        "--data-dir",
        &data,
        "SELECT name FROM residents",
    ]);
    assert!(
        refused.contains("`name`") && refused.contains("prohibited"),
        "{refused}"
    );
}

#[test]
fn identical_queries_return_the_cached_release_without_spending_again() {
    let (_dir, data, grant) = setup();
    let first = ok(&[
        "query",
        "--grant",
        &grant,
        "--json",
        "--as",
        "dev",
        "--data-dir",
        &data,
        SQL,
    ]);
    assert_eq!(spent(&data, &grant), 1.0);
    // Same measurement, other aliases and spacing: same release, no new spend.
    let again = ok(&[
        "query",
        "--grant",
        &grant,
        "--json",
        "--as",
        "dev",
        "--data-dir",
        &data,
        "SELECT district,  COUNT(*) AS people, AVG(annual_income) AS mean FROM residents GROUP BY district",
    ]);
    assert_eq!(spent(&data, &grant), 1.0);
    // What the reviewer sees of each output: the numbers, whatever the names.
    let numbers = |out: &str| {
        let job: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let output = job["outputs"][0].as_str().unwrap();
        let shown: serde_json::Value = serde_json::from_str(&ok(&[
            "review",
            "show",
            output,
            "--json",
            "--as",
            "rev",
            "--data-dir",
            &data,
        ]))
        .unwrap();
        shown["table"]["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["values"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        numbers(&first),
        numbers(&again),
        "the cached release is returned, not fresh noise"
    );
    // Each query reads the shared measurement under its own names and in
    // its own column order.
    let names = |out: &str| {
        let job: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let output = job["outputs"][0].as_str().unwrap();
        let shown: serde_json::Value = serde_json::from_str(&ok(&[
            "review",
            "show",
            output,
            "--json",
            "--as",
            "rev",
            "--data-dir",
            &data,
        ]))
        .unwrap();
        shown["table"]["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&again), ["district", "people", "mean"]);
    let reordered = ok(&[
        "query",
        "--grant",
        &grant,
        "--json",
        "--as",
        "dev",
        "--data-dir",
        &data,
        "SELECT COUNT(*) AS n, AVG(annual_income) AS avg_income, district FROM residents GROUP BY district",
    ]);
    assert_eq!(
        spent(&data, &grant),
        1.0,
        "the same measurement, not charged again"
    );
    assert_eq!(names(&reordered), ["n", "avg_income", "district"]);
    let mut by_name = numbers(&reordered);
    by_name.rotate_right(1);
    assert_eq!(by_name, numbers(&first), "the same values, reordered");
}

#[test]
fn budget_exhaustion_refuses_and_spends_nothing() {
    let (_dir, data, grant) = setup();
    ok(&[
        "query",
        "--grant",
        &grant,
        "--as",
        "dev",
        "--data-dir",
        &data,
        "SELECT district, COUNT(*) FROM residents GROUP BY district",
    ]);
    ok(&[
        "query",
        "--grant",
        &grant,
        "--as",
        "dev",
        "--data-dir",
        &data,
        "SELECT chronic_condition, COUNT(*) FROM residents GROUP BY chronic_condition",
    ]);
    let out = fails(&[
        "query",
        "--grant",
        &grant,
        "--as",
        "dev",
        "--json",
        "--data-dir",
        &data,
        SQL,
    ]);
    assert!(
        out.contains("epsilon 0.000 left") && out.contains("Nothing was spent"),
        "{out}"
    );
    assert_eq!(spent(&data, &grant), 2.0);
}

#[test]
fn a_failing_cast_is_answered_and_quotes_no_value() {
    // A cast that fails on data yields NULL (total expressions): the query
    // is answered like any other, and nothing quotes the values it read.
    let (_dir, data, grant) = setup();
    let out = ok(&[
        "query",
        "--grant",
        &grant,
        "--as",
        "dev",
        "--data-dir",
        &data,
        "SELECT COUNT(*) FROM residents WHERE CAST(chronic_condition AS INT) > 0",
    ]);
    for value in ["hypertension", "diabetes", "copd", "heart_disease"] {
        assert!(
            !out.contains(value),
            "the engine's message quoted `{value}`: {out}"
        );
    }
}

/// Job logs are kept for the retention period; pruning older ones keeps the
/// job records and the ledger.
#[test]
fn job_logs_are_kept_for_the_retention_period() {
    let (_dir, data) = residents_dir("1000");
    let grant = issue_grant(&data, "5", &[]);
    ok(&[
        "query",
        "--grant",
        &grant,
        "--as",
        "dev",
        "--data-dir",
        &data,
        "SELECT district, COUNT(*) FROM residents GROUP BY district",
    ]);
    let early = fails(&[
        "logs",
        "prune",
        "--older-than-days",
        "30",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    assert!(early.contains("kept at least 183 days"), "{early}");
    let refused = fails(&[
        "logs",
        "prune",
        "--older-than-days",
        "400",
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]);
    assert!(refused.contains("may not prune logs"), "{refused}");
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
    assert!(pruned.contains("cleared the logs of 0 jobs"), "{pruned}");
    let jobs = ok(&[
        "job",
        "list",
        "--as",
        "admin",
        "--json",
        "--data-dir",
        &data,
    ]);
    let jobs: serde_json::Value = serde_json::from_str(&jobs).unwrap();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1);
    ok(&["ledger", "verify", "--data-dir", &data]);
}

/// A grant's column scope: columns outside it do not exist for its queries.
#[test]
fn a_grant_covers_only_its_columns() {
    let (_dir, data) = residents_dir("1000");
    let unknown = fails(&[
        "grant",
        "issue",
        "--dataset",
        "residents",
        "--developer",
        "dev",
        "--purpose",
        "p",
        "--epsilon",
        "5",
        "--columns",
        "district,salary",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    assert!(
        unknown.contains("column `salary` is in no dataset of the grant")
            && unknown.contains("residents.district"),
        "{unknown}"
    );
    let grant = issue_grant(&data, "5", &["--columns", "district,household_size"]);
    ok(&[
        "query",
        "--grant",
        &grant,
        "--as",
        "dev",
        "--data-dir",
        &data,
        "SELECT district, COUNT(*) FROM residents GROUP BY district",
    ]);
    let outside = fails(&[
        "query",
        "--grant",
        &grant,
        "--as",
        "dev",
        "--data-dir",
        &data,
        "SELECT district, AVG(annual_income) FROM residents GROUP BY district",
    ]);
    assert!(
        outside.contains("covers only the columns district, household_size"),
        "{outside}"
    );
    let shown = ok(&[
        "grant",
        "show",
        &grant,
        "--as",
        "admin",
        "--json",
        "--data-dir",
        &data,
    ]);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        shown["grant"]["columns"],
        serde_json::json!(["district", "household_size"])
    );
}

/// An approval whose release could not be written (here the releases
/// directory is a file) is finished by approving again.
#[test]
fn an_approval_whose_signing_failed_is_finished_by_approving_again() {
    let (_dir, data) = residents_dir("1000");
    let grant = issue_grant(&data, "5", &[]);
    let out = ok(&[
        "query",
        "--grant",
        &grant,
        "--as",
        "dev",
        "--json",
        "--data-dir",
        &data,
        "SELECT district, COUNT(*) FROM residents GROUP BY district",
    ]);
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    let output = out["outputs"][0].as_str().unwrap().to_string();
    let releases = std::path::Path::new(&data).join("releases");
    std::fs::remove_dir(&releases).unwrap();
    std::fs::write(&releases, b"not a directory").unwrap();
    let approve = [
        "review",
        "approve",
        &output,
        "--reason",
        "district counts",
        "--as",
        "rev",
        "--data-dir",
        &data,
    ];
    let failed = fails(&approve);
    assert!(failed.contains("releases"), "{failed}");
    std::fs::remove_file(&releases).unwrap();
    std::fs::create_dir(&releases).unwrap();
    // Owner-only, as the data directory requires at open.
    std::fs::set_permissions(
        &releases,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let mut approve_json = approve.to_vec();
    approve_json.push("--json");
    let done: serde_json::Value = serde_json::from_str(&ok(&approve_json)).unwrap();
    assert_eq!(done["status"], "approved", "{done}");
    let file = std::path::PathBuf::from(done["path"].as_str().unwrap());
    assert!(file.starts_with(&releases), "{done}");
    let verified = ok(&[
        "release",
        "verify",
        file.to_str().unwrap(),
        "--data-dir",
        &data,
    ]);
    assert!(verified.contains("OK"), "{verified}");
    // Once released, approving again is refused.
    let again = fails(&approve);
    assert!(again.contains("not quarantined"), "{again}");
}

/// A job whose run stopped outside the normal path is ended failed, once.
#[test]
fn an_abandoned_job_is_ended_failed_with_its_reason() {
    let (_dir, data) = residents_dir("1000");
    let grant = issue_grant(&data, "5", &[]);
    let domain = unseen::Domain::open(std::path::Path::new(&data)).unwrap();
    let module = domain
        .upload_module("dev", unseen::guests::DISTRICT_INCOME)
        .unwrap();
    let job = domain
        .submit_job(
            "dev",
            &grant,
            &module,
            Default::default(),
            &Default::default(),
        )
        .unwrap();
    assert_eq!(
        domain.job("admin", &job).unwrap().status,
        unseen::JobStatus::Queued
    );
    domain.end_abandoned_job(&job, "internal error").unwrap();
    domain.end_abandoned_job(&job, "a second time").unwrap();
    let view = domain.job("admin", &job).unwrap();
    assert_eq!(view.status, unseen::JobStatus::Stopped);
    assert_eq!(view.stopped_by.as_deref(), Some("service"));
    assert_eq!(view.ending, Some(unseen::RunEnding::Failed));
    assert_eq!(view.error.as_deref(), Some("internal error"));
    drop(domain);
    ok(&["ledger", "verify", "--data-dir", &data]);
}

/// Bins of a column with manifest bounds (`x - x % w`, `FLOOR(x / w) * w`)
/// go through the service's own session rules and release every bin
/// between the bounds; a bin of a prohibited column is refused by name.
#[test]
fn bins_of_a_bounded_column_are_released_as_public_groups() {
    let (_dir, data, grant) = setup();
    let sql = "SELECT birth_year - birth_year % 10 AS decade, COUNT(*) AS n, AVG(annual_income) AS income \
               FROM residents GROUP BY birth_year - birth_year % 10 ORDER BY decade";
    let out = ok(&[
        "query",
        "--grant",
        &grant,
        "--json",
        "--as",
        "dev",
        "--data-dir",
        &data,
        sql,
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let output = v["outputs"][0].as_str().unwrap_or_else(|| panic!("{v}"));
    let shown = ok(&["review", "show", output, "--as", "rev", "--data-dir", &data]);
    for decade in ["1940", "1950", "1960", "1970", "1980", "1990", "2000"] {
        assert!(shown.contains(decade), "bin {decade} in {shown}");
    }
    assert!(
        !shown.contains("1930") && !shown.contains("2010"),
        "{shown}"
    );
    let refused = fails(&[
        "query",
        "--grant",
        &grant,
        "--dry-run",
        "--as",
        "dev",
        "--data-dir",
        &data,
        "SELECT person_id - person_id % 10 AS b, COUNT(*) FROM residents GROUP BY person_id - person_id % 10",
    ]);
    assert!(
        refused.contains("`person_id`") && refused.contains("prohibited"),
        "{refused}"
    );
    let refused = fails(&[
        "query",
        "--grant",
        &grant,
        "--dry-run",
        "--as",
        "dev",
        "--data-dir",
        &data,
        "SELECT FLOOR(annual_income / 2) * 2 AS b, COUNT(*) FROM residents GROUP BY FLOOR(annual_income / 2) * 2",
    ]);
    assert!(refused.contains("use a wider bin"), "{refused}");
}
