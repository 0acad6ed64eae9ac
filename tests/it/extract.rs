//! Masked extracts: masks from the manifest, k-anonymity with a report,
//! only under grants that allow them.

use crate::support::{fails, issue_grant, ok, residents_dir};

fn setup(allow: bool) -> (tempfile::TempDir, String, String) {
    let (dir, data) = residents_dir("5000");
    let extra: &[&str] = if allow { &["--allow-extracts"] } else { &[] };
    let grant = issue_grant(&data, "1", extra);
    (dir, data, grant)
}

#[test]
fn extracts_are_masked_and_k_anonymous() {
    let (_dir, data, grant) = setup(true);
    let out = ok(&[
        "extract",
        "--grant",
        &grant,
        "--columns",
        "id_number,name,phone,gender,district,birth_year,annual_income",
        "--sample",
        "0.5",
        "--as",
        "dev",
        "--json",
        "--data-dir",
        &data,
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let report = &v["suppression"];
    assert_eq!(report["k"], 8);
    assert_eq!(
        report["quasi_identifiers"],
        serde_json::json!(["gender", "district", "birth_year"])
    );
    let output = v["outputs"][0].as_str().unwrap();
    let shown = ok(&["review", "show", output, "--as", "rev", "--data-dir", &data]);
    let rows: Vec<Vec<&str>> = shown
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with("    "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len() as u64, report["rows_released"].as_u64().unwrap());
    let mut classes = std::collections::BTreeMap::new();
    for row in &rows {
        let [id, name, phone, gender, district, birth, income] = row[..] else {
            panic!("{row:?}")
        };
        assert!(id.len() == 18 && &id[6..14] == "********", "{id}");
        assert!(name.chars().skip(1).all(|c| c == '*'), "{name}");
        assert!(phone.len() == 11 && &phone[3..7] == "****", "{phone}");
        assert!(birth.ends_with('9') && birth.contains('-'), "{birth}");
        assert!(income.contains('-'), "{income}");
        *classes.entry((gender, district, birth)).or_insert(0) += 1;
    }
    assert!(
        classes.values().all(|n| *n >= 8),
        "every quasi-identifier class has at least k rows"
    );
    assert!(
        shown.contains("automatic checks: no findings"),
        "masked values trip no detector: {shown}"
    );
}

#[test]
fn extracts_need_a_grant_that_allows_them_and_a_mask_for_every_column() {
    let (_dir, data, grant) = setup(false);
    let out = fails(&[
        "extract",
        "--grant",
        &grant,
        "--columns",
        "gender",
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]);
    assert!(out.contains("does not allow masked extracts"), "{out}");
    let (_dir2, data2, grant2) = setup(true);
    let out = fails(&[
        "extract",
        "--grant",
        &grant2,
        "--columns",
        "gender,household_size",
        "--as",
        "dev",
        "--data-dir",
        &data2,
    ]);
    assert!(
        out.contains("`household_size`") && out.contains("no mask rule"),
        "{out}"
    );
}
