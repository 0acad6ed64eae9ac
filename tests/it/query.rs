//! `unseen query`: one SQL statement through the same admission, DP, budget,
//! quarantine and review path as a wasm job.

use crate::support::{fails, ok};

/// A data directory with residents registered and a grant of epsilon 2 (1 per query).
fn setup() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d").to_str().unwrap().to_string();
    let parquet = dir.path().join("r.parquet");
    let manifest = dir.path().join("r.toml");
    ok(&[
        "dataset",
        "generate",
        "residents",
        "--rows",
        "3000",
        "--out",
        parquet.to_str().unwrap(),
    ]);
    std::fs::write(&manifest, ok(&["dataset", "manifest", "residents"])).unwrap();
    ok(&[
        "user",
        "add",
        "--id",
        "admin",
        "--name",
        "A",
        "--role",
        "admin",
        "--data-dir",
        &data,
    ]);
    ok(&[
        "user",
        "add",
        "--id",
        "dev",
        "--name",
        "D",
        "--role",
        "developer",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    ok(&[
        "dataset",
        "register",
        "--name",
        "residents",
        "--parquet",
        parquet.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    let issued = ok(&[
        "grant",
        "issue",
        "--dataset",
        "residents",
        "--developer",
        "dev",
        "--purpose",
        "t",
        "--epsilon",
        "2",
        "--query-epsilon",
        "1",
        "--as",
        "admin",
        "--json",
        "--data-dir",
        &data,
    ]);
    let grant = serde_json::from_str::<serde_json::Value>(&issued).unwrap()["grant"]
        .as_str()
        .unwrap()
        .to_string();
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
        "--as",
        "dev",
        "--data-dir",
        &data,
        "SELECT district,  COUNT(*) AS people, AVG(annual_income) AS mean FROM residents GROUP BY district",
    ]);
    assert_eq!(spent(&data, &grant), 1.0);
    let numbers = |s: &str| {
        s.lines()
            .skip(2)
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        numbers(&first),
        numbers(&again),
        "the cached release is returned, not fresh noise"
    );
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
fn engine_errors_are_withheld_because_they_can_quote_values() {
    let (_dir, data, grant) = setup();
    let out = fails(&[
        "query",
        "--grant",
        &grant,
        "--as",
        "dev",
        "--data-dir",
        &data,
        "SELECT COUNT(*) FROM residents WHERE CAST(chronic_condition AS INT) > 0",
    ]);
    assert!(out.contains("withheld"), "{out}");
    for value in ["hypertension", "diabetes", "copd", "heart_disease"] {
        assert!(
            !out.contains(value),
            "the engine's message quoted `{value}`: {out}"
        );
    }
}
