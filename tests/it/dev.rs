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
    assert_eq!(run["ending"], "succeeded", "{run}");
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

/// The provider publishes DP marginals; mock data drawn from them follows
/// the real distribution (residents crowd into 朝阳区), where uniform mock
/// data would not, and the marginals hold no prohibited column.
#[test]
fn mock_data_follows_the_published_dp_marginals() {
    let (dir, data) = crate::support::residents_dir("3000");
    let file = dir.path().join("residents.marginals.json");
    let denied = fails(&[
        "dataset",
        "marginals",
        "residents",
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]);
    assert!(denied.contains("admin"), "{denied}");
    ok(&[
        "dataset",
        "marginals",
        "residents",
        "--epsilon",
        "2",
        "--out",
        file.to_str().unwrap(),
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    let marginals: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let columns = marginals["columns"].as_object().unwrap();
    for prohibited in ["person_id", "id_number", "name", "phone"] {
        assert!(!columns.contains_key(prohibited), "{prohibited} published");
    }
    let districts = columns["district"]["counts"].as_object().unwrap();
    assert_eq!(districts.len(), 12, "every public district: {districts:?}");
    let total: f64 = districts.values().map(|c| c.as_f64().unwrap()).sum();
    assert!((total - 3000.0).abs() < 300.0, "noisy total {total}");
    let points = columns["annual_income"]["points"].as_array().unwrap();
    let values: Vec<f64> = points.iter().map(|p| p[1].as_f64().unwrap()).collect();
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "{values:?}");
    let spent = ok(&[
        "ledger",
        "query",
        "SELECT epsilon FROM entries WHERE kind = 'dataset.marginals'",
        "--json",
        "--data-dir",
        &data,
    ]);
    assert!(spent.contains("2.0"), "{spent}");

    let module = dir.path().join("district_income.wasm");
    std::fs::write(&module, guest("district-income")).unwrap();
    let counts = |extra: &[&str]| {
        let mut args = vec![
            "dev",
            "run",
            module.to_str().unwrap(),
            "--dataset",
            "residents",
            "--rows",
            "4000",
            "--json",
        ];
        args.extend_from_slice(extra);
        let run: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
        let table = &run["outputs"][0]["table"];
        let names = table["columns"][0]["values"].as_array().unwrap().clone();
        let n = table["columns"][1]["values"].as_array().unwrap().clone();
        let of = |district: &str| {
            let at = names.iter().position(|d| d == district).unwrap();
            n[at]["value"].as_f64().unwrap()
        };
        (of("朝阳区"), of("门头沟区"))
    };
    let (chaoyang, mentougou) = counts(&["--marginals", file.to_str().unwrap()]);
    assert!(
        chaoyang > 5.0 * mentougou.max(1.0),
        "{chaoyang} vs {mentougou}"
    );
    let (chaoyang, mentougou) = counts(&[]);
    assert!(
        chaoyang < 2.0 * mentougou,
        "uniform: {chaoyang} vs {mentougou}"
    );
}

/// A released masked extract as the mock data: one row per sample row, the
/// district as released and the income drawn within its masked band.
#[test]
fn a_released_masked_sample_is_the_mock_data() {
    let (dir, data) = crate::support::residents_dir("3000");
    let grant = crate::support::issue_grant(&data, "5", &["--allow-extracts"]);
    let extracted: serde_json::Value = serde_json::from_str(
        ok(&[
            "extract",
            "--grant",
            &grant,
            "--columns",
            "district,annual_income",
            "--sample",
            "0.5",
            "--as",
            "dev",
            "--json",
            "--data-dir",
            &data,
        ])
        .trim(),
    )
    .unwrap();
    let output = extracted["outputs"][0].as_str().unwrap();
    // How many rows survived is the reviewer's to read.
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
    let released_rows = shown["disclosure"]["report"]["rows_released"]
        .as_u64()
        .unwrap();
    let approved: serde_json::Value = serde_json::from_str(&ok(&[
        "review",
        "approve",
        output,
        "--reason",
        "masked",
        "--json",
        "--as",
        "rev",
        "--data-dir",
        &data,
    ]))
    .unwrap();
    let release = approved["release"].as_str().unwrap();
    let file = dir.path().join("sample.json");
    ok(&[
        "release",
        "download",
        release,
        "--out",
        file.to_str().unwrap(),
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]);
    let module = dir.path().join("district_income.wasm");
    std::fs::write(&module, guest("district-income")).unwrap();
    let run: serde_json::Value = serde_json::from_str(&ok(&[
        "dev",
        "run",
        module.to_str().unwrap(),
        "--dataset",
        "residents",
        "--sample",
        file.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(run["ending"], "succeeded", "{run}");
    assert_eq!(run["mock_rows"].as_u64(), Some(released_rows), "{run}");
    let table = &run["outputs"][0]["table"];
    let names = table["columns"][0]["values"].as_array().unwrap();
    let counts = table["columns"][1]["values"].as_array().unwrap();
    let of = |district: &str| {
        let at = names.iter().position(|d| d == district).unwrap();
        counts[at]["value"].as_f64().unwrap()
    };
    // The real skew survives in the sample; uniform mock data has none.
    assert!(of("朝阳区") > 5.0 * of("门头沟区").max(1.0), "{table}");

    let text = fails(&[
        "dev",
        "run",
        module.to_str().unwrap(),
        "--dataset",
        "health_visits",
        "--sample",
        file.to_str().unwrap(),
    ]);
    assert!(
        text.contains("is not a column of `health_visits`"),
        "{text}"
    );
}
