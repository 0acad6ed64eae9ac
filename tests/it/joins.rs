//! Grants over several datasets about the same person: DP aggregates join
//! them on the privacy unit, spend is charged to every dataset read, and the
//! unit itself never comes out.

use crate::support::{fails, ok, residents_dir};

/// Residents plus 6,000 health visits of those 2,000 residents, registered
/// in the same data directory.
fn with_visits() -> (tempfile::TempDir, String) {
    let (dir, data) = residents_dir("2000");
    let parquet = dir.path().join("v.parquet");
    let manifest = dir.path().join("v.toml");
    ok(&[
        "dataset",
        "generate",
        "health_visits",
        "--rows",
        "6000",
        "--related-rows",
        "2000",
        "--out",
        parquet.to_str().unwrap(),
    ]);
    std::fs::write(&manifest, ok(&["dataset", "manifest", "health_visits"])).unwrap();
    ok(&[
        "dataset",
        "register",
        "--name",
        "health_visits",
        "--parquet",
        parquet.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    (dir, data)
}

fn grant(data: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "grant",
        "issue",
        "--dataset",
        "health_visits",
        "--developer",
        "dev",
        "--purpose",
        "chronic disease rates by district",
        "--epsilon",
        "3",
        "--query-epsilon",
        "1",
        "--as",
        "admin",
        "--json",
        "--data-dir",
        data,
    ];
    args.extend_from_slice(extra);
    let out = ok(&args);
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["grant"]
        .as_str()
        .unwrap()
        .to_string()
}

const RATE: &str = "SELECT r.district, COUNT(*) AS visits FROM health_visits h \
     JOIN residents r ON h.person_id = r.person_id \
     WHERE h.diagnosis_code = 'I10' GROUP BY r.district";

fn query(data: &str, grant: &str, sql: &str) -> (bool, String) {
    crate::support::unseen(&[
        "query",
        "--grant",
        grant,
        "--json",
        "--as",
        "dev",
        "--data-dir",
        data,
        sql,
    ])
}

#[test]
fn a_join_grant_runs_a_joined_dp_aggregate_and_charges_both_datasets() {
    let (_dir, data) = with_visits();
    let grant = grant(&data, &["--join", "residents"]);
    let (admitted, out) = query(&data, &grant, RATE);
    assert!(admitted, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["epsilon_spent"].as_f64(), Some(1.0), "{v}");
    let budget: serde_json::Value = serde_json::from_str(&ok(&[
        "budget",
        "show",
        "--grant",
        &grant,
        "--json",
        "--data-dir",
        &data,
    ]))
    .unwrap();
    let layers = budget["layers"].as_array().unwrap();
    let dataset_spend = |name: &str| {
        layers
            .iter()
            .find(|l| l["layer"] == "dataset" && l["id"] == name)
            .and_then(|l| l["spent"].as_f64())
    };
    assert_eq!(dataset_spend("health_visits"), Some(1.0), "{budget}");
    assert_eq!(dataset_spend("residents"), Some(1.0), "{budget}");

    // A query reading one dataset charges only that one.
    let (admitted, out) = query(
        &data,
        &grant,
        "SELECT diagnosis_code, COUNT(*) AS n FROM health_visits GROUP BY diagnosis_code",
    );
    assert!(admitted, "{out}");
    let budget: serde_json::Value = serde_json::from_str(&ok(&[
        "budget",
        "show",
        "--grant",
        &grant,
        "--json",
        "--data-dir",
        &data,
    ]))
    .unwrap();
    let layers = budget["layers"].as_array().unwrap();
    let spent = |name: &str| {
        layers
            .iter()
            .find(|l| l["layer"] == "dataset" && l["id"] == name)
            .and_then(|l| l["spent"].as_f64())
    };
    assert_eq!(
        (spent("health_visits"), spent("residents")),
        (Some(2.0), Some(1.0))
    );
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
    let parquet = dir.path().join("e.parquet");
    let manifest = dir.path().join("e.toml");
    ok(&[
        "dataset",
        "generate",
        "enterprises",
        "--rows",
        "100",
        "--out",
        parquet.to_str().unwrap(),
    ]);
    std::fs::write(&manifest, ok(&["dataset", "manifest", "enterprises"])).unwrap();
    ok(&[
        "dataset",
        "register",
        "--name",
        "enterprises",
        "--parquet",
        parquet.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
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
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        job["epsilon_spent"].as_f64(),
        Some(2.0),
        "two queries: {job}"
    );
    let output = job["outputs"][0].as_str().unwrap().to_string();
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

    // A bad parameter is refused by the guest before any query runs.
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
    assert!(!succeeded, "{text}");
}

/// `tax_records.year` is a group key without a public domain: released
/// only through DP partition selection, which needs the grant's delta.
#[test]
fn a_key_without_public_domain_needs_a_delta_budget() {
    let (dir, data) = crate::support::residents_dir("10");
    let parquet = dir.path().join("t.parquet");
    let manifest = dir.path().join("t.toml");
    ok(&[
        "dataset",
        "generate",
        "tax_records",
        "--rows",
        "3000",
        "--related-rows",
        "600",
        "--out",
        parquet.to_str().unwrap(),
    ]);
    std::fs::write(&manifest, ok(&["dataset", "manifest", "tax_records"])).unwrap();
    ok(&[
        "dataset",
        "register",
        "--name",
        "tax_records",
        "--parquet",
        parquet.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    let issue = |extra: &[&str]| {
        let mut args = vec![
            "grant",
            "issue",
            "--dataset",
            "tax_records",
            "--developer",
            "dev",
            "--purpose",
            "tax by year",
            "--epsilon",
            "4",
            "--query-epsilon",
            "1",
            "--as",
            "admin",
            "--json",
            "--data-dir",
            &data,
        ];
        args.extend_from_slice(extra);
        let out = ok(&args);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["grant"]
            .as_str()
            .unwrap()
            .to_string()
    };
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
