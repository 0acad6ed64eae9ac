//! Derived outputs: a release reused as a table of a later job only where
//! its grant allows derived reuse, only by users the grant designates, and
//! never after the grant is revoked.

use crate::support::{fails, issue_grant, ok, residents_dir};

/// Runs a DP count per district under `grant` and approves it; the release id.
fn released_counts(data: &str, grant: &str) -> String {
    let out = ok(&[
        "query",
        "--grant",
        grant,
        "--json",
        "--as",
        "dev",
        "--data-dir",
        data,
        "SELECT district, COUNT(*) AS n FROM residents GROUP BY district",
    ]);
    let job: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let output = job["outputs"][0].as_str().unwrap();
    let approved: serde_json::Value = serde_json::from_str(&ok(&[
        "review",
        "approve",
        output,
        "--reason",
        "DP counts",
        "--json",
        "--as",
        "rev",
        "--data-dir",
        data,
    ]))
    .unwrap();
    approved["release"].as_str().unwrap().to_string()
}

fn query_on(data: &str, grant: &str, release: &str, sql: &str) -> (bool, String) {
    crate::support::query_as_dev(data, grant, &["--input", release], sql)
}

#[test]
fn a_release_is_an_input_only_where_its_grant_allows_derived_reuse() {
    let (_dir, data) = residents_dir("2000");
    let reusable = issue_grant(&data, "5", &["--derived-reuse"]);
    let sealed = issue_grant(&data, "5", &[]);
    let open_release = released_counts(&data, &reusable);
    let sealed_release = released_counts(&data, &sealed);
    let table = format!("release_{}", open_release.replace('-', "_"));

    // Released values are public: computing on them is exact and free.
    let (admitted, out) = query_on(
        &data,
        &sealed,
        &open_release,
        &format!("SELECT district, n, n_upper - n_lower AS width FROM {table} ORDER BY n DESC"),
    );
    assert!(admitted, "{out}");
    let job: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["epsilon_spent"].as_f64(), Some(0.0), "{job}");

    let (admitted, err) = query_on(&data, &reusable, &sealed_release, "SELECT 1");
    assert!(
        !admitted && err.contains("does not allow its releases to be reused"),
        "{err}"
    );

    // Another developer, not designated on the release's grant.
    ok(&[
        "user",
        "add",
        "--id",
        "other",
        "--name",
        "O",
        "--role",
        "developer",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    let err = fails(&[
        "query",
        "--grant",
        &reusable,
        "--input",
        &open_release,
        "--as",
        "other",
        "--data-dir",
        &data,
        "SELECT 1",
    ]);
    assert!(err.contains("designat"), "{err}");

    ok(&[
        "grant",
        "revoke",
        &reusable,
        "--reason",
        "ended",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    let (admitted, err) = query_on(&data, &sealed, &open_release, "SELECT 1");
    assert!(!admitted && err.contains("was revoked"), "{err}");
}

/// Wasm aggregate UDFs are exact, so the policy admits them where exact
/// answers are allowed (released tables, open columns) and refuses them
/// over conditional data, where only DP aggregates are.
#[test]
fn wasm_aggregates_run_over_releases_and_never_over_conditional_columns() {
    let (dir, data) = residents_dir("2000");
    let grant = issue_grant(&data, "5", &["--derived-reuse", "--allow-udfs"]);
    let release = released_counts(&data, &grant);
    let table = format!("release_{}", release.replace('-', "_"));
    let module = dir.path().join("udf_stats.wasm");
    std::fs::write(&module, crate::support::guest("udf-stats")).unwrap();
    let module = module.to_str().unwrap();

    let (admitted, out) = crate::support::query_as_dev(
        &data,
        &grant,
        &["--input", &release, "--udf", module],
        &format!(
            "SELECT precision_weighted_mean(n, n_lower, n_upper) AS pooled, geo_mean(n) AS geometric, \
             AVG(n) AS arithmetic, MIN(n) AS least, MAX(n) AS most FROM {table}"
        ),
    );
    assert!(admitted, "{out}");
    let job: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["epsilon_spent"].as_f64(), Some(0.0), "{job}");
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
    let text = shown.to_string();
    let value = |name: &str| -> f64 {
        let columns = shown["table"]["columns"]
            .as_array()
            .or_else(|| shown["output"]["table"]["columns"].as_array())
            .unwrap_or_else(|| panic!("no table in {text}"));
        let column = columns
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no column {name} in {text}"));
        let v = &column["values"][0];
        v.as_f64()
            .or_else(|| v["value"].as_f64())
            .unwrap_or_else(|| panic!("{name} is not a number in {text}"))
    };
    let (pooled, geometric) = (value("pooled"), value("geometric"));
    let (arithmetic, least, most) = (value("arithmetic"), value("least"), value("most"));
    assert!(least <= pooled && pooled <= most, "{text}");
    assert!(
        least <= geometric && geometric <= arithmetic + 1e-9,
        "{text}"
    );

    // Over a conditional column a wasm aggregate is an exact aggregate of
    // raw values: refused, and nothing is spent.
    let (admitted, err) = crate::support::query_as_dev(
        &data,
        &grant,
        &["--udf", module],
        "SELECT district, geo_mean(annual_income) FROM residents GROUP BY district",
    );
    assert!(!admitted, "{err}");
    assert!(err.contains("not differentially private"), "{err}");
}
