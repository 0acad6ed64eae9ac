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
    // district-income, chronic-disease, sme-credit-risk and the default
    // rates over the imported bank loans
    assert_eq!(count("release.signed"), Some(4));
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
    // 1 for district-income, 2 for chronic-disease's two queries, 1 for
    // sme-credit-risk, 1 for the default rates over the imported loans
    let rows: serde_json::Value = serde_json::from_str(epsilon.trim()).unwrap();
    let spent = rows[0]["spent"].as_f64().unwrap();
    assert!((spent - 5.0).abs() < 1e-9, "{epsilon}");
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
    let grants = v["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 3, "{v}");
    let g = grants
        .iter()
        .find(|g| g["dataset"] == "residents")
        .unwrap_or_else(|| panic!("no residents grant: {v}"));
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

#[test]
fn proofs_segments_and_rollback_detection_work_from_the_cli() {
    let (dir, data) = demo_dir();
    let ledger = std::path::Path::new(&data).join("ledger");
    // The auditor's copy of the public key, exported once.
    let key = dir.path().join("exported.pub");
    ok(&[
        "ledger",
        "public-key",
        "--out",
        key.to_str().unwrap(),
        "--data-dir",
        &data,
    ]);
    let checkpoint = dir.path().join("checkpoint.saved");
    std::fs::copy(ledger.join("checkpoint"), &checkpoint).unwrap();

    // Inclusion proof, checked without the ledger, against the signed checkpoint.
    let proof = ok(&["ledger", "proof", "--index", "3", "--data-dir", &data]);
    let proof_file = dir.path().join("proof.json");
    std::fs::write(&proof_file, &proof).unwrap();
    let (p, c, k) = (
        proof_file.to_str().unwrap(),
        checkpoint.to_str().unwrap(),
        key.to_str().unwrap(),
    );
    let checked = ok(&[
        "ledger",
        "check-proof",
        p,
        "--checkpoint",
        c,
        "--public-key",
        k,
    ]);
    assert!(
        checked.contains("inclusion proof OK") && checked.contains("signed"),
        "{checked}"
    );
    // A wrong proof (one path hash altered) is refused.
    let mut v: serde_json::Value = serde_json::from_str(&proof).unwrap();
    let first = v["path"][0].as_str().unwrap().to_string();
    let flipped = format!(
        "{}{}",
        if first.starts_with('0') { "1" } else { "0" },
        &first[1..]
    );
    v["path"][0] = serde_json::json!(flipped);
    std::fs::write(&proof_file, v.to_string()).unwrap();
    assert!(
        fails(&[
            "ledger",
            "check-proof",
            p,
            "--checkpoint",
            c,
            "--public-key",
            k
        ])
        .contains("proof check FAILED")
    );

    // Export a segment and verify it with the public key only.
    let segment = dir.path().join("segment.json");
    ok(&[
        "ledger",
        "export",
        "--from",
        "2",
        "--to",
        "9",
        "--out",
        segment.to_str().unwrap(),
        "--data-dir",
        &data,
    ]);
    let verified = ok(&[
        "ledger",
        "verify-segment",
        segment.to_str().unwrap(),
        "--public-key",
        k,
    ]);
    assert!(!verified.is_empty());

    // The ledger grows; it still extends the saved checkpoint.
    let before: Vec<_> = ["entries.jsonl", "checkpoint"]
        .iter()
        .map(|f| std::fs::read(ledger.join(f)).unwrap())
        .collect();
    ok(&["report", "disclosure", "--data-dir", &data]);
    ok(&[
        "budget",
        "set",
        "--dataset",
        "residents",
        "--epsilon",
        "50",
        "--as",
        "wang.min",
        "--data-dir",
        &data,
    ]);
    ok(&["ledger", "verify", "--since", c, "--data-dir", &data]);
    // Rolling the ledger back to the older state is caught against a newer saved checkpoint.
    let newer = dir.path().join("checkpoint.newer");
    std::fs::copy(ledger.join("checkpoint"), &newer).unwrap();
    for (f, bytes) in ["entries.jsonl", "checkpoint"].iter().zip(&before) {
        std::fs::write(ledger.join(f), bytes).unwrap();
    }
    let out = fails(&[
        "ledger",
        "verify",
        "--since",
        newer.to_str().unwrap(),
        "--data-dir",
        &data,
    ]);
    assert!(out.contains("FAILED"), "{out}");
}
