//! What an auditor does with the ledger alone: SQL, the disclosure report,
//! and proving a downloaded release.

use crate::support::{fails, ok};

fn demo_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d").to_str().unwrap().to_string();
    ok(&["demo", "--data-dir", &data, "--rows", "3000"]);
    (dir, data)
}

fn release_file(data: &str) -> std::path::PathBuf {
    let releases = std::path::Path::new(data).join("releases");
    std::fs::read_dir(releases)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

#[test]
fn ledger_query_counts_kinds_and_names_refused_columns() {
    let (_dir, data) = demo_dir();
    let out = ok(&[
        "ledger",
        "query",
        "SELECT kind, COUNT(*) AS n FROM entries GROUP BY kind ORDER BY kind",
        "--json",
        "--data-dir",
        &data,
    ]);
    let rows: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let count = |kind: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == kind)
            .map(|r| r["n"].as_i64().unwrap())
    };
    assert_eq!(count("query.refused"), Some(2));
    assert_eq!(count("release.signed"), Some(1));
    let out = ok(&[
        "ledger",
        "query",
        "SELECT \"column\", rule FROM entries WHERE kind = 'query.refused' ORDER BY index",
        "--data-dir",
        &data,
    ]);
    assert!(
        out.contains("residents.id_number") && out.contains("prohibited-column"),
        "{out}"
    );
    let epsilon = ok(&[
        "ledger",
        "query",
        "SELECT SUM(epsilon) AS spent FROM entries WHERE kind = 'query.admitted'",
        "--json",
        "--data-dir",
        &data,
    ]);
    assert!(epsilon.contains("\"spent\":1.0"), "{epsilon}");
}

#[test]
fn ledger_query_is_read_only_and_explains_mistakes() {
    let (_dir, data) = demo_dir();
    assert!(
        fails(&[
            "ledger",
            "query",
            "DELETE FROM entries",
            "--data-dir",
            &data
        ])
        .contains("DML not supported")
    );
    assert!(
        fails(&[
            "ledger",
            "query",
            "CREATE TABLE t AS SELECT 1",
            "--data-dir",
            &data
        ])
        .contains("could not be planned")
    );
    assert!(
        fails(&[
            "ledger",
            "query",
            "SELECT nope FROM entries",
            "--data-dir",
            &data
        ])
        .contains("the table is `entries`")
    );
}

#[test]
fn disclosure_report_lists_the_grant_and_its_use() {
    let (_dir, data) = demo_dir();
    let out = ok(&["report", "disclosure", "--json", "--data-dir", &data]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let g = &v["grants"][0];
    assert_eq!(g["dataset"], "residents");
    assert_eq!(g["developer"], "li.qiang");
    assert_eq!(g["jobs"], 3);
    assert_eq!(g["queries_admitted"], 1);
    assert_eq!(g["queries_refused"], 2);
    assert_eq!(g["releases"], 1);
    assert!((g["epsilon_spent"].as_f64().unwrap() - 1.0).abs() < 1e-9);
}

#[test]
fn a_release_is_proven_end_to_end_and_any_alteration_fails() {
    let (dir, data) = demo_dir();
    let file = release_file(&data);
    let out = ok(&[
        "release",
        "verify",
        file.to_str().unwrap(),
        "--data-dir",
        &data,
    ]);
    assert!(
        out.contains("OK") && out.contains("included under the signed checkpoint"),
        "{out}"
    );

    let original = std::fs::read_to_string(&file).unwrap();
    let mut release: serde_json::Value = serde_json::from_str(&original).unwrap();
    let altered = dir.path().join("altered.json");
    // Change one released estimate.
    let value = &mut release["document"]["table"]["columns"][1]["values"][0]["value"];
    *value = serde_json::json!(value.as_f64().unwrap() + 1.0);
    std::fs::write(&altered, serde_json::to_string(&release).unwrap()).unwrap();
    let out = fails(&[
        "release",
        "verify",
        altered.to_str().unwrap(),
        "--data-dir",
        &data,
    ]);
    assert!(
        out.contains("release verification FAILED") && out.contains("signature"),
        "{out}"
    );

    // A release from another domain does not verify against this ledger.
    let (_other_dir, other) = demo_dir();
    let out = fails(&[
        "release",
        "verify",
        release_file(&other).to_str().unwrap(),
        "--data-dir",
        &data,
    ]);
    assert!(out.contains("release verification FAILED"), "{out}");
}
