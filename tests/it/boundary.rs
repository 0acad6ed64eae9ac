//! The review boundary: a developer sees nothing of an output before a
//! reviewer approves it, in every mode (local CLI, CLI over --server, HTTP),
//! including dry runs and errors.

use std::path::Path;

use serde_json::Value;

use crate::support::{TestServer, issue_grant, ok, residents_dir, unseen};

const SQL: &str =
    "SELECT district, COUNT(*) AS n, AVG(annual_income) AS income FROM residents GROUP BY district";
const EXTRACT_COLUMNS: &str = "gender,district,birth_year,annual_income";

/// Everything a reviewer could read in output `id`, as the strings it would
/// be printed as (text values; numbers in full and to 1–3 decimals).
fn quarantined_values(data: &str, output: &str) -> Vec<String> {
    let shown: Value = serde_json::from_str(&ok(&[
        "review",
        "show",
        output,
        "--json",
        "--as",
        "rev",
        "--data-dir",
        data,
    ]))
    .unwrap();
    assert_eq!(shown["status"], "quarantined", "{shown}");
    let mut values = Vec::new();
    let mut number = |x: f64| {
        // Small and whole numbers (0.000, 1.000) are also spends and
        // counts of the developer's own; noisy values are neither.
        if x.abs() < 100.0 || x.fract() == 0.0 {
            return;
        }
        values.push(serde_json::json!(x).to_string());
        for digits in 1..=3 {
            values.push(format!("{x:.digits$}"));
        }
    };
    let mut texts = Vec::new();
    for column in shown["table"]["columns"].as_array().unwrap() {
        for v in column["values"].as_array().unwrap() {
            match v {
                Value::String(s) => texts.push(s.clone()),
                Value::Number(n) => number(n.as_f64().unwrap()),
                Value::Object(e) => {
                    for k in ["value", "lower", "upper"] {
                        number(e[k].as_f64().unwrap());
                    }
                }
                other => panic!("unexpected value {other}"),
            }
        }
    }
    values.extend(texts);
    // A one-character category (`男`) may occur by chance; every longer
    // printed form is searched.
    values.retain(|v| v.len() >= 4);
    values.sort();
    values.dedup();
    assert!(!values.is_empty(), "output {output} has values to look for");
    values
}

fn outputs_of(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .chain(serde_json::from_str::<Value>(text.trim()).ok())
        .flat_map(|v| {
            v["outputs"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|o| o.as_str().map(str::to_string))
        })
        .collect()
}

/// Runs a developer's command; returns everything it printed, success or not.
fn as_dev(seen: &mut String, args: &[&str]) -> String {
    let (_, text) = unseen(args);
    seen.push_str(&text);
    text
}

#[test]
fn a_developer_sees_nothing_of_a_quarantined_output_in_any_mode() {
    let (dir, data) = residents_dir("3000");
    let grant = issue_grant(&data, "20", &["--allow-extracts"]);
    let module = dir.path().join("district_income.wasm");
    std::fs::write(&module, unseen::guests::DISTRICT_INCOME).unwrap();
    let module = module.to_str().unwrap();
    let d = data.as_str();
    let mut seen = String::new();
    let mut outputs = Vec::new();

    // Locally, text and JSON, dry runs, jobs, extracts, status views, and
    // the refusals a developer meets reaching for an output.
    // The jobs run first: their query is then the first of its kind, not
    // a cached release of one of the queries below.
    let local: Vec<Vec<&str>> = vec![
        vec![
            "job",
            "submit",
            "--grant",
            &grant,
            "--module",
            module,
            "--as",
            "dev",
            "--data-dir",
            d,
        ],
        vec![
            "job",
            "submit",
            "--grant",
            &grant,
            "--module",
            module,
            "--json",
            "--as",
            "dev",
            "--data-dir",
            d,
        ],
        vec![
            "query",
            "--grant",
            &grant,
            "--as",
            "dev",
            "--data-dir",
            d,
            SQL,
        ],
        vec![
            "query",
            "--grant",
            &grant,
            "--json",
            "--as",
            "dev",
            "--data-dir",
            d,
            SQL,
        ],
        vec![
            "query",
            "--grant",
            &grant,
            "--dry-run",
            "--as",
            "dev",
            "--data-dir",
            d,
            SQL,
        ],
        vec![
            "query",
            "--grant",
            &grant,
            "--dry-run",
            "--json",
            "--as",
            "dev",
            "--data-dir",
            d,
            SQL,
        ],
        vec![
            "extract",
            "--grant",
            &grant,
            "--columns",
            EXTRACT_COLUMNS,
            "--sample",
            "0.5",
            "--as",
            "dev",
            "--data-dir",
            d,
        ],
        vec![
            "extract",
            "--grant",
            &grant,
            "--columns",
            EXTRACT_COLUMNS,
            "--sample",
            "0.4",
            "--json",
            "--as",
            "dev",
            "--data-dir",
            d,
        ],
    ];
    for args in &local {
        let text = as_dev(&mut seen, args);
        outputs.extend(outputs_of(&text));
        for line in text.lines() {
            if let Some(id) = line
                .split_whitespace()
                .skip_while(|w| *w != "output")
                .nth(1)
            {
                outputs.push(id.to_string());
            }
        }
    }
    let jobs: Value = serde_json::from_str(&as_dev(
        &mut seen,
        &["job", "list", "--json", "--as", "dev", "--data-dir", d],
    ))
    .unwrap();
    // A module job's outputs are listed to reviewers only, until decided.
    for job in jobs["jobs"].as_array().unwrap() {
        outputs.extend(crate::support::job_outputs(d, job["id"].as_str().unwrap()));
    }
    outputs.sort();
    outputs.dedup();
    assert!(
        outputs.len() >= 6,
        "queries, extracts and jobs each left an output: {outputs:?}\n{seen}"
    );
    for job in jobs["jobs"].as_array().unwrap() {
        let id = job["id"].as_str().unwrap();
        as_dev(
            &mut seen,
            &["job", "status", id, "--as", "dev", "--data-dir", d],
        );
        as_dev(
            &mut seen,
            &[
                "job",
                "status",
                id,
                "--json",
                "--as",
                "dev",
                "--data-dir",
                d,
            ],
        );
    }
    for output in &outputs {
        as_dev(
            &mut seen,
            &["review", "show", output, "--as", "dev", "--data-dir", d],
        );
        as_dev(
            &mut seen,
            &[
                "review",
                "show",
                output,
                "--json",
                "--as",
                "dev",
                "--data-dir",
                d,
            ],
        );
        as_dev(
            &mut seen,
            &[
                "release",
                "download",
                output,
                "--as",
                "dev",
                "--data-dir",
                d,
            ],
        );
    }
    for args in [
        vec!["review", "list", "--as", "dev", "--data-dir", d],
        vec!["grant", "show", &grant, "--as", "dev", "--data-dir", d],
        vec!["grant", "list", "--json", "--as", "dev", "--data-dir", d],
        vec!["budget", "show", "--grant", &grant, "--data-dir", d],
    ] {
        as_dev(&mut seen, &args);
    }

    // Over the service: the CLI with --server, and every route directly.
    let server = TestServer::start(&data, 2);
    let token = crate::support::rotate(&server.domain, "dev");
    // Each command as text and as JSON; the JSON is returned.
    let remote = |seen: &mut String, args: &[&str]| {
        let mut all = vec!["--server", server.base.as_str(), "--token", &token];
        all.extend_from_slice(args);
        as_dev(seen, &all);
        all.push("--json");
        as_dev(seen, &all)
    };
    for args in [
        vec!["query", "--grant", &grant, SQL],
        vec!["query", "--grant", &grant, "--dry-run", SQL],
        vec![
            "extract",
            "--grant",
            &grant,
            "--columns",
            EXTRACT_COLUMNS,
            "--sample",
            "0.3",
        ],
        vec!["job", "submit", "--grant", &grant, "--module", module],
        vec!["job", "list"],
        vec!["review", "list"],
    ] {
        let text = remote(&mut seen, &args);
        outputs.extend(outputs_of(&text));
    }
    outputs.sort();
    outputs.dedup();
    let client = server.client(&token);
    let mut paths = vec![
        "/v1/jobs".to_string(),
        "/v1/reviews".into(),
        format!("/v1/grants/{grant}"),
        format!("/v1/grants/{grant}/budget"),
    ];
    for job in server.domain.jobs("admin", None).unwrap() {
        paths.push(format!("/v1/jobs/{}", job.id));
    }
    for output in &outputs {
        remote(&mut seen, &["review", "show", output]);
        paths.push(format!("/v1/outputs/{output}"));
        paths.push(format!("/v1/releases/{output}"));
    }
    for path in &paths {
        seen.push_str(&client.send("GET", path, None, "").unwrap().body.to_string());
    }
    drop(client);
    drop(server);

    // Nothing the reviewer can read in any of those outputs reached the developer.
    let mut checked = 0;
    for output in &outputs {
        for value in quarantined_values(&data, output) {
            assert!(
                !seen.contains(&value),
                "the developer saw `{value}` of quarantined output {output}:\n{seen}"
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} values were looked for");
}

/// Mode bits of `path`.
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn everything_the_service_writes_is_owner_only() {
    let (_dir, data) = residents_dir("2000");
    let grant = issue_grant(&data, "5", &["--allow-extracts"]);
    let out = ok(&[
        "query",
        "--grant",
        &grant,
        "--json",
        "--as",
        "dev",
        "--data-dir",
        &data,
        SQL,
    ]);
    let output = outputs_of(&out).remove(0);
    ok(&[
        "review",
        "approve",
        &output,
        "--reason",
        "DP only",
        "--as",
        "rev",
        "--data-dir",
        &data,
    ]);
    ok(&["ledger", "verify", "--data-dir", &data]);
    let root = Path::new(&data);
    // The store's -wal and -shm files exist while it is open.
    let domain = unseen::Domain::open(root).unwrap();
    domain
        .add_user(Some("admin"), "aud", "Au", unseen::Role::Auditor, "")
        .unwrap();
    assert_eq!(mode(root), 0o700, "the data directory");
    let mut stack = vec![root.to_path_buf()];
    let mut files = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                assert_eq!(mode(&path), 0o700, "{}", path.display());
                stack.push(path);
                continue;
            }
            // The ledger's own files are the ledger crate's; its key is
            // checked at open like the rest.
            let ledger_public = path.starts_with(root.join("ledger"))
                && path.file_name() != Some("ledger.key".as_ref());
            if !ledger_public {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
                files += 1;
            }
        }
    }
    for file in [
        "unseen.db",
        "unseen.db-wal",
        "unseen.db-shm",
        "keys/master.key",
    ] {
        assert!(root.join(file).exists(), "{file} was written");
    }
    assert!(files >= 8, "{files} files checked");
    drop(domain);
}

#[test]
fn a_data_directory_others_can_read_is_refused_at_open() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, data) = residents_dir("500");
    let root = Path::new(&data);
    for (path, loose, fix) in [
        (root.to_path_buf(), 0o755, 0o700),
        (root.join("unseen.db"), 0o644, 0o600),
        (root.join("keys"), 0o750, 0o700),
        (root.join("keys/master.key"), 0o640, 0o600),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
        let refused =
            crate::support::fails(&["grant", "list", "--as", "admin", "--data-dir", &data]);
        assert!(
            refused.contains(&format!("{} has mode {loose:03o}", path.display()))
                && refused.contains("chmod"),
            "{refused}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(fix)).unwrap();
        ok(&["grant", "list", "--as", "admin", "--data-dir", &data]);
    }
}

#[test]
fn local_commands_act_as_a_developer_or_reviewer_only_with_their_token() {
    use crate::support::{token_of, unseen_exact};
    let (_dir, data) = residents_dir("1000");
    let grant = issue_grant(&data, "5", &[]);
    let d = data.as_str();
    // Without a token, naming a developer or a reviewer is refused.
    for args in [
        vec![
            "query",
            "--grant",
            &grant,
            "--json",
            "--as",
            "dev",
            "--data-dir",
            d,
            SQL,
        ],
        vec!["grant", "list", "--as", "dev", "--data-dir", d],
        vec!["review", "list", "--as", "rev", "--data-dir", d],
    ] {
        let (done, text) = unseen_exact(&args);
        assert!(!done, "{text}");
        assert!(text.contains("needs their token"), "{text}");
    }
    // Another user's token does not make one that user.
    let (done, text) = unseen_exact(&[
        "grant",
        "list",
        "--as",
        "dev",
        "--token",
        &token_of(d, "rev"),
        "--data-dir",
        d,
    ]);
    assert!(
        !done && text.contains("is `rev`'s, but --as names `dev`"),
        "{text}"
    );
    let (done, text) = unseen_exact(&[
        "grant",
        "list",
        "--token",
        "unseen_not-a-token",
        "--data-dir",
        d,
    ]);
    assert!(!done && text.contains("not authenticated"), "{text}");
    // The token alone says who acts; --as may repeat it.
    let (done, text) = unseen_exact(&[
        "query",
        "--grant",
        &grant,
        "--json",
        "--token",
        &token_of(d, "dev"),
        "--data-dir",
        d,
        SQL,
    ]);
    assert!(done, "{text}");
    let output = outputs_of(&text).remove(0);
    let (done, text) = unseen_exact(&[
        "review",
        "approve",
        &output,
        "--reason",
        "DP only",
        "--as",
        "rev",
        "--token",
        &token_of(d, "rev"),
        "--data-dir",
        d,
    ]);
    assert!(done, "{text}");
    // A reviewer's token is a reviewer's: it cannot act as an admin.
    let (done, text) = unseen_exact(&[
        "grant",
        "revoke",
        &grant,
        "--reason",
        "x",
        "--token",
        &token_of(d, "rev"),
        "--data-dir",
        d,
    ]);
    assert!(!done && text.contains("needs the admin role"), "{text}");
    // The operator acts as an admin without a token; a rotated token stops working.
    let old = token_of(d, "dev");
    let rotated = ok(&[
        "user",
        "token",
        "dev",
        "--json",
        "--as",
        "admin",
        "--data-dir",
        d,
    ]);
    assert!(rotated.contains("token"), "{rotated}");
    let (done, text) = unseen_exact(&[
        "grant",
        "list",
        "--as",
        "dev",
        "--token",
        &old,
        "--data-dir",
        d,
    ]);
    assert!(!done && text.contains("not authenticated"), "{text}");
    ok(&["grant", "list", "--as", "dev", "--data-dir", d]);
}
