//! `unseen dev run`: guests tested against mock data made from a manifest.

use crate::support::{fails, guest, ok};

#[test]
fn a_guest_runs_against_mock_data_and_meets_the_same_policy() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("district_income.wasm");
    std::fs::write(&module, guest("district-income")).unwrap();
    let out = ok(&[
        "dev",
        "run",
        module.to_str().unwrap(),
        "--dataset",
        "residents",
        "--rows",
        "3000",
        "--json",
    ]);
    let run: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["mock_rows"], 3000);
    let table = &run["outputs"][0]["table"];
    assert_eq!(table["rows"], 12, "one row per declared district: {table}");
    // DP applies as on the service: counts come with intervals.
    assert!(
        table["columns"][1]["values"][0]["lower"].is_number(),
        "{table}"
    );

    let refused = dir.path().join("refused.wasm");
    std::fs::write(&refused, guest("refused-id-number")).unwrap();
    let text = fails(&[
        "dev",
        "run",
        refused.to_str().unwrap(),
        "--dataset",
        "residents",
    ]);
    assert!(text.contains("prohibited"), "{text}");

    // A manifest file works too, and its mistakes are named.
    let manifest = dir.path().join("bad.toml");
    std::fs::write(&manifest, "name = \"x\"\n").unwrap();
    let text = fails(&[
        "dev",
        "run",
        module.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    assert!(text.contains("manifest"), "{text}");
}
