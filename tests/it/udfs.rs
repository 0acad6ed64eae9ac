//! UDF modules called from job SQL: the SME credit-risk worked example end
//! to end, and every way a UDF could be misused refused with its reason.

use std::path::Path;

use crate::support::{issue_grant_on, ok, residents_dir};

/// Users, residents, and 1,000 enterprises with their tax and electricity
/// records (and a guest file per name in `guests`), in one data directory.
fn with_enterprises(guests: &[&str]) -> (tempfile::TempDir, String, Vec<String>) {
    let (dir, data) = residents_dir("200");
    for (name, rows) in [
        ("enterprises", "1000"),
        ("tax_records", "4000"),
        ("utility_usage", "10000"),
    ] {
        crate::support::register_generated(dir.path(), &data, name, rows, "1000");
    }
    let paths = guests
        .iter()
        .map(|g| {
            let path = dir.path().join(format!("{g}.wasm"));
            std::fs::write(&path, crate::support::guest(g)).unwrap();
            path.to_str().unwrap().to_string()
        })
        .collect();
    (dir, data, paths)
}

fn sme_grant(data: &str, extra: &[&str]) -> String {
    let mut flags = vec!["--join", "tax_records", "--join", "utility_usage"];
    flags.extend_from_slice(extra);
    issue_grant_on(data, "enterprises", "10", &flags)
}

fn query(data: &str, grant: &str, udf: &str, sql: &str) -> (bool, String) {
    crate::support::query_as_dev(data, grant, &["--udf", udf], sql)
}

/// `job submit --json` of `module` with the UDF module `udf`, as `dev`.
fn submit(data: &str, grant: &str, module: &str, udf: &str) -> (bool, String) {
    crate::support::unseen(&[
        "job",
        "submit",
        "--grant",
        grant,
        "--module",
        module,
        "--udf",
        udf,
        "--as",
        "dev",
        "--json",
        "--data-dir",
        data,
    ])
}

/// The worked example: `guests/sme-credit-risk` with the UDF module
/// `guests/udf-sme-score`, a DP mean score per industry that a reviewer
/// releases; the ledger names the UDF module and its functions.
#[test]
fn the_sme_credit_risk_job_scores_inside_the_engine_and_releases_dp_means() {
    let (dir, data, paths) = with_enterprises(&["sme-credit-risk", "udf-sme-score"]);
    let grant = sme_grant(&data, &["--allow-udfs"]);
    let (done, out) = submit(&data, &grant, &paths[0], &paths[1]);
    assert!(done, "{out}");
    let job: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(job["status"], "finished", "{job}");
    let spent = job["epsilon_spent"].as_f64().unwrap();
    assert!((spent - 1.0).abs() < 1e-9, "one query: {job}");
    let output = crate::support::job_outputs(&data, job["job"].as_str().unwrap()).remove(0);
    let shown: serde_json::Value = serde_json::from_str(&ok(&[
        "review",
        "show",
        &output,
        "--json",
        "--as",
        "rev",
        "--data-dir",
        &data,
    ]))
    .unwrap();
    let table = shown["table"].to_string();
    for column in [
        "industry",
        "firm_months",
        "mean_score",
        "risk_adjusted_score",
    ] {
        assert!(table.contains(column), "{column} missing: {table}");
    }
    assert!(
        table.contains("software") && table.contains("retail"),
        "{table}"
    );
    ok(&[
        "review",
        "approve",
        &output,
        "--reason",
        "DP means",
        "--as",
        "rev",
        "--data-dir",
        &data,
    ]);
    let entries = std::fs::read_to_string(dir.path().join("d/ledger/entries.jsonl")).unwrap();
    assert!(
        entries.contains("\"kind\":\"udf\"")
            && entries.contains("sme_score(Float64, Float64) -> Float64")
            && entries.contains("\"udf_modules\":["),
        "the ledger records the UDF module, its functions and the job's use of it"
    );
}

#[test]
fn a_grant_must_allow_udfs() {
    let (_dir, data, paths) = with_enterprises(&["sme-credit-risk", "udf-sme-score"]);
    let grant = sme_grant(&data, &[]);
    let (done, err) = submit(&data, &grant, &paths[0], &paths[1]);
    assert!(!done, "{err}");
    assert!(err.contains("does not allow UDF modules"), "{err}");
    let (admitted, err) = query(
        &data,
        &grant,
        &paths[1],
        "SELECT e.industry, AVG(LEAST(GREATEST(industry_risk(e.industry), 0), 2)) FROM enterprises e GROUP BY e.industry",
    );
    assert!(
        !admitted && err.contains("does not allow UDF modules"),
        "{err}"
    );
}

#[test]
fn udf_results_leave_only_through_dp_and_never_touch_prohibited_columns() {
    let (dir, data, paths) = with_enterprises(&["udf-sme-score"]);
    let grant = sme_grant(&data, &["--allow-udfs"]);
    let udf = &paths[0];
    // A score per row is conditional data: raw rows are refused.
    let (admitted, err) = query(
        &data,
        &grant,
        udf,
        "SELECT sme_score(t.tax_paid, 1000) FROM tax_records t",
    );
    assert!(!admitted && err.contains("conditional"), "{err}");
    // A prohibited column cannot be passed to a UDF, not even under DP.
    let (admitted, err) = query(
        &data,
        &grant,
        udf,
        "SELECT e.industry, SUM(LEAST(GREATEST(industry_risk(e.name), 0), 2)) FROM enterprises e GROUP BY e.industry",
    );
    assert!(
        !admitted && err.contains("`name` of `enterprises` is prohibited"),
        "{err}"
    );
    // An unbounded UDF result has no sensitivity.
    let (admitted, err) = query(
        &data,
        &grant,
        udf,
        "SELECT e.industry, AVG(sme_score(t.tax_paid, 0)) FROM enterprises e JOIN tax_records t ON e.credit_code = t.credit_code GROUP BY e.industry",
    );
    assert!(!admitted && err.contains("LEAST(GREATEST("), "{err}");
    // Bounded, it is released with noise and costs epsilon.
    let (admitted, out) = query(
        &data,
        &grant,
        udf,
        "SELECT e.industry, AVG(LEAST(GREATEST(sme_score(t.tax_paid, 0), 300), 850)) AS s FROM enterprises e JOIN tax_records t ON e.credit_code = t.credit_code GROUP BY e.industry",
    );
    assert!(admitted, "{out}");
    let result: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let spent = result["epsilon_spent"].as_f64().unwrap();
    assert!((spent - 1.0).abs() < 1e-9, "{result}");
    // No enterprise name (prohibited) reached the store, logs or ledger.
    let names: Vec<String> = {
        let probe = dir.path().join("probe.parquet");
        ok(&[
            "dataset",
            "generate",
            "enterprises",
            "--rows",
            "1000",
            "--out",
            probe.to_str().unwrap(),
        ]);
        let file = std::fs::File::open(&probe).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let mut names = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            let column = batch.column_by_name("name").unwrap();
            let column = arrow::array::AsArray::as_string::<i32>(column);
            names.extend(column.iter().flatten().take(50).map(str::to_string));
        }
        names
    };
    assert!(!names.is_empty());
    for (path, bytes) in crate::support::all_files(&dir.path().join("d")) {
        for name in &names {
            assert!(
                !crate::support::contains(&bytes, name.as_bytes()),
                "enterprise name `{name}` found in {}",
                path.display()
            );
        }
    }
}

#[test]
fn udf_modules_are_checked_at_submission() {
    let (_dir, data, paths) = with_enterprises(&["sme-credit-risk", "udf-gcd", "district-income"]);
    let grant = sme_grant(&data, &["--allow-udfs"]);
    // `gcd` is also a built-in SQL function: a UDF never silently replaces one.
    let (done, err) = submit(&data, &grant, &paths[0], &paths[1]);
    assert!(!done, "{err}");
    assert!(
        err.contains("has the name of a built-in SQL function"),
        "{err}"
    );
    // A job module is not a UDF module: it imports host functions.
    let (done, err) = submit(&data, &grant, &paths[0], &paths[2]);
    assert!(!done, "{err}");
    assert!(err.contains("may import nothing at all"), "{err}");
}

/// A UDF that fails on some rows: those rows are NULL, the query is
/// answered as any other, the developer learns nothing of the failures, and
/// the ledger counts them for the provider and auditors.
#[test]
fn failing_udf_rows_are_answered_as_null_and_counted_only_in_the_ledger() {
    let (dir, data) = residents_dir("500");
    let udf = dir.path().join("traps.wasm");
    std::fs::write(&udf, crate::support::guest("adv-udf-traps")).unwrap();
    let grant = issue_grant_on(&data, "residents", "10", &["--allow-udfs"]);
    // fussy() traps on a negative argument: household sizes 1 and 2 here.
    let (answered, out) = query(
        &data,
        &grant,
        udf.to_str().unwrap(),
        "SELECT COUNT(*) AS n FROM residents WHERE fussy(household_size - 3) >= 0",
    );
    assert!(answered, "{out}");
    for word in ["trap", "fail", "negative input", "rows_failed"] {
        assert!(
            !out.to_lowercase().contains(word),
            "the developer was told `{word}`: {out}"
        );
    }
    let entries =
        std::fs::read_to_string(std::path::Path::new(&data).join("ledger/entries.jsonl")).unwrap();
    let total = |key: &str| -> u64 {
        entries
            .lines()
            .filter(|l| l.contains("\"job.ended\""))
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                find_key(&v, key)
            })
            .sum()
    };
    let failed = total("udf_rows_failed");
    assert!(failed > 0, "the ledger should count the failed rows");
    // And every row the functions were called on, failed ones included.
    assert!(total("udf_rows") > failed, "{}", total("udf_rows"));
}

fn find_key(v: &serde_json::Value, key: &str) -> Option<u64> {
    match v {
        serde_json::Value::Object(m) => m
            .get(key)
            .and_then(|x| x.as_u64())
            .or_else(|| m.values().find_map(|x| find_key(x, key))),
        serde_json::Value::Array(a) => a.iter().find_map(|x| find_key(x, key)),
        _ => None,
    }
}

/// The provider sets a UDF's per-row instruction cap in the grant: the
/// same module and query under two grants, one with the default cap and one
/// with 50,000 instructions. A row whose work needs more than 50,000 (a
/// loop of 20,000 rounds) is NULL under the second grant only, answered as
/// the clamp's lower bound; a light row is answered under both. The cap is
/// in the grant's views (CLI and HTTP) and in its ledger entry.
#[test]
fn a_grants_row_instruction_cap_nulls_only_the_rows_that_need_more() {
    let (dir, data) = residents_dir("400");
    let udf = dir.path().join("work.wasm");
    std::fs::write(&udf, crate::support::guest("udf-work")).unwrap();
    let udf = udf.to_str().unwrap();
    let issue = |extra: &[&str]| -> String {
        let mut args = vec![
            "grant",
            "issue",
            "--dataset",
            "residents",
            "--developer",
            "dev",
            "--purpose",
            "t",
            "--epsilon",
            "1000",
            "--query-epsilon",
            "50",
            "--allow-udfs",
            "--as",
            "admin",
            "--json",
            "--data-dir",
            &data,
        ];
        args.extend_from_slice(extra);
        let issued: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
        issued["grant"].as_str().unwrap().to_string()
    };
    let roomy = issue(&[]);
    let tight = issue(&["--udf-row-instructions", "50000"]);
    // Epsilon 50 per query: noise of about 0.04 per sum, so each sum is
    // either about 400 or about 0.
    let sql = "SELECT SUM(LEAST(GREATEST(work(20000, annual_income), 0), 1)) AS heavy, \
               SUM(LEAST(GREATEST(work(10, annual_income), 0), 1)) AS light FROM residents";
    let sums = |grant: &str| -> (f64, f64) {
        let (answered, out) = crate::support::unseen(&[
            "query",
            "--grant",
            grant,
            "--udf",
            udf,
            "--json",
            "--as",
            "dev",
            "--data-dir",
            &data,
            sql,
        ]);
        assert!(answered, "{out}");
        // The released table goes to review: read it as the reviewer does.
        let job: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        let output = job["outputs"][0].as_str().unwrap().to_string();
        let shown: serde_json::Value = serde_json::from_str(&ok(&[
            "review",
            "show",
            &output,
            "--json",
            "--as",
            "rev",
            "--data-dir",
            &data,
        ]))
        .unwrap();
        let value = |name: &str| -> f64 {
            let column = shown["table"]["columns"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name)
                .unwrap_or_else(|| panic!("no column {name}: {shown}"));
            let v = &column["values"][0];
            v["value"].as_f64().or_else(|| v.as_f64()).unwrap()
        };
        (value("heavy"), value("light"))
    };
    let (heavy, light) = sums(&roomy);
    assert!(
        (heavy - 400.0).abs() < 5.0,
        "default cap: heavy rows answered: {heavy}"
    );
    assert!((light - 400.0).abs() < 5.0, "{light}");
    let (heavy, light) = sums(&tight);
    assert!(
        heavy.abs() < 5.0,
        "cap 50,000: heavy rows are NULL: {heavy}"
    );
    assert!(
        (light - 400.0).abs() < 5.0,
        "cap 50,000: light rows answered: {light}"
    );
    // The cap is part of the grant, shown to whoever may read it, and in
    // the ledger.
    let shown: serde_json::Value = serde_json::from_str::<serde_json::Value>(&ok(&[
        "grant",
        "show",
        &tight,
        "--json",
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]))
    .unwrap()["grant"]
        .clone();
    assert_eq!(shown["udf_row_instructions"], 50_000, "{shown}");
    let server = crate::support::TestServer::start(&data, 1);
    let over_http = server
        .client(&crate::support::token_of(&data, "dev"))
        .get(&format!("/v1/grants/{roomy}"))
        .unwrap();
    assert_eq!(
        over_http["grant"]["udf_row_instructions"],
        unseen::MAX_UDF_ROW_INSTRUCTIONS,
        "{over_http}"
    );
    drop(server);
    let entries = std::fs::read_to_string(Path::new(&data).join("ledger/entries.jsonl")).unwrap();
    assert!(
        entries.lines().any(|l| l.contains("\"grant.issued\"")
            && l.contains(&tight)
            && l.contains("\"udf_row_instructions\":50000")),
        "grant.issued records the cap"
    );
    // Out of range, or without UDFs: refused, saying what to do.
    for (flags, expected) in [
        (
            vec!["--allow-udfs", "--udf-row-instructions", "0"],
            "1 to 1000000",
        ),
        (
            vec!["--allow-udfs", "--udf-row-instructions", "2000000"],
            "1 to 1000000",
        ),
        (vec!["--udf-row-instructions", "5000"], "add allow_udfs"),
    ] {
        let mut args = vec![
            "grant",
            "issue",
            "--dataset",
            "residents",
            "--developer",
            "dev",
            "--purpose",
            "t",
            "--epsilon",
            "1",
            "--as",
            "admin",
            "--data-dir",
            &data,
        ];
        args.extend(flags);
        let err = crate::support::fails(&args);
        assert!(err.contains(expected), "{err}");
    }
}
