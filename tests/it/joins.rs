//! Grants over several datasets about the same person: DP aggregates join
//! them on the privacy unit, spend is charged to every dataset read, and the
//! unit itself never comes out.

use crate::support::{fails, issue_grant_on, ok, register_generated, residents_dir};

/// Residents plus 6,000 health visits of those 2,000 residents, registered
/// in the same data directory.
fn with_visits() -> (tempfile::TempDir, String) {
    let (dir, data) = residents_dir("2000");
    register_generated(dir.path(), &data, "health_visits", "6000", "2000");
    (dir, data)
}

/// A grant over `health_visits` with epsilon 3, 1 per query.
fn grant(data: &str, extra: &[&str]) -> String {
    issue_grant_on(data, "health_visits", "3", extra)
}

const RATE: &str = "SELECT r.district, COUNT(*) AS visits FROM health_visits h \
     JOIN residents r ON h.person_id = r.person_id \
     WHERE h.diagnosis_code = 'I10' GROUP BY r.district";

fn query(data: &str, grant: &str, sql: &str) -> (bool, String) {
    crate::support::query_as_dev(data, grant, &[], sql)
}

#[test]
fn a_join_grant_runs_a_joined_dp_aggregate_and_charges_both_datasets() {
    let (_dir, data) = with_visits();
    let grant = grant(&data, &["--join", "residents"]);
    let (admitted, out) = query(&data, &grant, RATE);
    assert!(admitted, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["status"], "finished", "{v}");
    assert_eq!(v["epsilon_spent"].as_f64(), Some(1.0), "{v}");
    assert_eq!(
        dataset_spend(&data, &grant),
        [
            ("health_visits".to_string(), 1.0),
            ("residents".to_string(), 1.0)
        ]
    );

    // A query reading one dataset charges only that one.
    let (admitted, out) = query(
        &data,
        &grant,
        "SELECT diagnosis_code, COUNT(*) AS n FROM health_visits GROUP BY diagnosis_code",
    );
    assert!(admitted, "{out}");
    assert_eq!(
        dataset_spend(&data, &grant),
        [
            ("health_visits".to_string(), 2.0),
            ("residents".to_string(), 1.0)
        ]
    );
}

/// Epsilon spent at each dataset layer of a grant, as `budget show` reports it.
fn dataset_spend(data: &str, grant: &str) -> Vec<(String, f64)> {
    let budget: serde_json::Value = serde_json::from_str(&ok(&[
        "budget",
        "show",
        "--grant",
        grant,
        "--json",
        "--data-dir",
        data,
    ]))
    .unwrap();
    budget["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["layer"] == "dataset")
        .map(|l| {
            (
                l["id"].as_str().unwrap().to_string(),
                l["spent"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn without_the_join_grant_the_other_dataset_does_not_exist() {
    let (_dir, data) = with_visits();
    let grant = grant(&data, &[]);
    let (admitted, out) = query(&data, &grant, RATE);
    assert!(
        !admitted,
        "a grant over health_visits alone read residents: {out}"
    );
    assert!(out.contains("residents"), "{out}");
}

#[test]
fn the_unit_stays_inside_the_join() {
    let (_dir, data) = with_visits();
    let grant = grant(&data, &["--join", "residents"]);
    for sql in [
        "SELECT h.person_id, COUNT(*) FROM health_visits h JOIN residents r ON h.person_id = r.person_id GROUP BY h.person_id",
        "SELECT r.district, COUNT(*) FROM health_visits h JOIN residents r ON h.person_id = r.person_id WHERE r.person_id < 10 GROUP BY r.district",
    ] {
        let (admitted, out) = query(&data, &grant, sql);
        assert!(!admitted, "{sql} was admitted: {out}");
        assert!(
            out.contains("person_id") && out.contains("prohibited"),
            "{out}"
        );
    }
}

#[test]
fn a_grant_joins_only_datasets_about_the_same_unit() {
    let (dir, data) = with_visits();
    register_generated(dir.path(), &data, "enterprises", "100", "100");
    let err = fails(&[
        "grant",
        "issue",
        "--dataset",
        "health_visits",
        "--join",
        "enterprises",
        "--developer",
        "dev",
        "--purpose",
        "p",
        "--epsilon",
        "1",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    assert!(
        err.contains("privacy unit") && err.contains("credit_code"),
        "{err}"
    );
    let err = fails(&[
        "grant",
        "issue",
        "--dataset",
        "health_visits",
        "--join",
        "nowhere",
        "--developer",
        "dev",
        "--purpose",
        "p",
        "--epsilon",
        "1",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    assert!(err.contains("nowhere"), "{err}");
}

/// The worked example `guests/chronic-disease`: two DP queries, one over the
/// join, a rate per 1,000 residents computed from the released values, and
/// a release a reviewer signs.
#[test]
fn the_chronic_disease_guest_runs_and_its_output_is_released() {
    let (dir, data) = with_visits();
    let grant = grant(&data, &["--join", "residents"]);
    let module = dir.path().join("chronic.wasm");
    std::fs::write(&module, crate::support::guest("chronic-disease")).unwrap();
    let out = ok(&[
        "job",
        "submit",
        "--grant",
        &grant,
        "--module",
        module.to_str().unwrap(),
        "--param",
        "codes=I10,E11.9",
        "--as",
        "dev",
        "--json",
        "--data-dir",
        &data,
    ]);
    let job: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(
        job["epsilon_spent"].as_f64(),
        Some(2.0),
        "two queries: {job}"
    );
    let output = crate::support::job_outputs(&data, job["job"].as_str().unwrap()).remove(0);
    let queue: serde_json::Value = serde_json::from_str(&ok(&[
        "review",
        "list",
        "--json",
        "--as",
        "rev",
        "--data-dir",
        &data,
    ]))
    .unwrap();
    assert!(queue.to_string().contains("per_1000_residents"), "{queue}");
    let shown = ok(&[
        "review",
        "show",
        &output,
        "--json",
        "--as",
        "rev",
        "--data-dir",
        &data,
    ]);
    assert!(
        shown.contains("东城区") && shown.contains("chronic_visits"),
        "{shown}"
    );
    let approved = ok(&[
        "review",
        "approve",
        &output,
        "--reason",
        "rates only",
        "--json",
        "--as",
        "rev",
        "--data-dir",
        &data,
    ]);
    assert!(approved.contains("release"), "{approved}");

    // A bad parameter is refused by the guest before any query runs. The
    // guest's failure is its own: the job finishes, and its message is in
    // the outcome the reviewer reads.
    let (succeeded, text) = crate::support::unseen(&[
        "job",
        "submit",
        "--grant",
        &grant,
        "--module",
        module.to_str().unwrap(),
        "--param",
        "codes=I10') OR 1=1 --",
        "--as",
        "dev",
        "--json",
        "--data-dir",
        &data,
    ]);
    assert!(succeeded, "{text}");
    let job: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["epsilon_spent"].as_f64(), Some(0.0), "{job}");
    assert!(
        !text.contains("ICD-10"),
        "the guest's message is withheld: {text}"
    );
    let full: serde_json::Value = serde_json::from_str(&ok(&[
        "job",
        "status",
        job["job"].as_str().unwrap(),
        "--json",
        "--as",
        "rev",
        "--data-dir",
        &data,
    ]))
    .unwrap();
    let full = &full["job"];
    assert_eq!(full["ending"], "failed", "{full}");
    assert!(
        full["error"]
            .as_str()
            .unwrap()
            .contains("is not an ICD-10 code"),
        "{full}"
    );
}

/// `tax_records.year` is a group key without a public domain: released
/// only through DP partition selection, which needs the grant's delta.
#[test]
fn a_key_without_public_domain_needs_a_delta_budget() {
    let (dir, data) = crate::support::residents_dir("10");
    register_generated(dir.path(), &data, "tax_records", "3000", "600");
    let issue = |extra: &[&str]| issue_grant_on(&data, "tax_records", "4", extra);
    let sql =
        "SELECT year, COUNT(*) AS n, AVG(tax_paid) AS mean_tax FROM tax_records GROUP BY year";
    let pure = issue(&[]);
    let (admitted, out) = query(&data, &pure, sql);
    assert!(!admitted, "{out}");
    assert!(
        out.contains("no public domain") && out.contains("delta"),
        "{out}"
    );

    let approximate = issue(&["--delta", "1e-5", "--query-delta", "1e-6"]);
    let (admitted, out) = query(&data, &approximate, sql);
    assert!(admitted, "{out}");
    let budget: serde_json::Value = serde_json::from_str(&ok(&[
        "budget",
        "show",
        "--grant",
        &approximate,
        "--json",
        "--data-dir",
        &data,
    ]))
    .unwrap();
    let delta = budget["delta_spent"].as_f64().unwrap();
    assert!(delta > 0.0 && delta <= 1e-6, "{budget}");
    let outputs: serde_json::Value = serde_json::from_str(&ok(&[
        "review",
        "list",
        "--json",
        "--as",
        "rev",
        "--data-dir",
        &data,
    ]))
    .unwrap();
    let output = outputs["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["grant"] == approximate.as_str())
        .unwrap()["output"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = ok(&[
        "review",
        "show",
        &output,
        "--json",
        "--as",
        "rev",
        "--data-dir",
        &data,
    ]);
    // 600 enterprises over 2019-2024: every year has hundreds of records.
    for year in ["2019", "2024"] {
        assert!(shown.contains(year), "{shown}");
    }

    // A per-query delta above the total is refused when the grant is issued.
    let err = fails(&[
        "grant",
        "issue",
        "--dataset",
        "tax_records",
        "--developer",
        "dev",
        "--purpose",
        "p",
        "--epsilon",
        "1",
        "--delta",
        "1e-6",
        "--query-delta",
        "1e-5",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    assert!(err.contains("query delta"), "{err}");
}
