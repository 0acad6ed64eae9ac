//! Downloads counted only once delivered, and offline release bundles that
//! prove themselves with only the ledger's public key.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{TestServer, fails, issue_grant, ok, residents_dir, token_of, unseen};

const SQL: &str = "SELECT district, COUNT(*) AS n FROM residents GROUP BY district";

/// A DP query run by `dev` and approved by `rev` (and `rev2` where the
/// grant needs two approvals); the release id.
fn approved_release(data: &str, grant: &str, reviewers: &[&str]) -> String {
    let out = ok(&[
        "query",
        "--grant",
        grant,
        "--json",
        "--as",
        "dev",
        "--data-dir",
        data,
        SQL,
    ]);
    let job: Value = serde_json::from_str(out.trim()).unwrap();
    let output = job["outputs"][0].as_str().unwrap().to_string();
    let mut release = Value::Null;
    for reviewer in reviewers {
        let approved: Value = serde_json::from_str(&ok(&[
            "review",
            "approve",
            &output,
            "--reason",
            "DP counts",
            "--json",
            "--as",
            reviewer,
            "--data-dir",
            data,
        ]))
        .unwrap();
        release = approved["release"].clone();
    }
    release.as_str().unwrap().to_string()
}

/// Downloads counted on the grant, and `release.downloaded` ledger entries.
fn counted(data: &str, grant: &str) -> (u64, u64) {
    let usage: Value = serde_json::from_str::<Value>(&ok(&[
        "grant",
        "usage",
        grant,
        "--json",
        "--as",
        "admin",
        "--data-dir",
        data,
    ]))
    .unwrap()["usage"]
        .clone();
    let rows: Value = serde_json::from_str(&ok(&[
        "ledger",
        "query",
        "SELECT COUNT(*) AS n FROM entries WHERE kind = 'release.downloaded'",
        "--json",
        "--data-dir",
        data,
    ]))
    .unwrap();
    (
        usage["downloads"].as_u64().unwrap(),
        rows[0]["n"].as_u64().unwrap(),
    )
}

fn is_bundle(path: &Path) -> bool {
    let text = std::fs::read_to_string(path).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["format"] == "unseen-release-bundle/1" && v["document"]["table"].is_object()
}

/// Runs `child_downloads_relative_paths` in a child process whose working
/// directory is `cwd` (the working directory is per process, and tests
/// run in threads of one).
fn download_in(cwd: &Path, data: &str, release: &str, token: &str, server: Option<&str>) {
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "releases::child_downloads_relative_paths",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .current_dir(cwd)
        .env("UNSEEN_DOWNLOAD_TEST", "1")
        .env("UNSEEN_DOWNLOAD_DATA", data)
        .env("UNSEEN_DOWNLOAD_RELEASE", release)
        .env("UNSEEN_DOWNLOAD_TOKEN", token)
        .env("UNSEEN_DOWNLOAD_SERVER", server.unwrap_or(""))
        .status()
        .unwrap();
    assert!(status.success(), "the child's downloads failed");
}

/// In a child process (see [`download_in`]): a bare file name and a
/// relative path succeed, a relative path into a missing directory fails.
#[test]
#[ignore = "run by download_in in its own working directory"]
fn child_downloads_relative_paths() {
    if std::env::var_os("UNSEEN_DOWNLOAD_TEST").is_none() {
        return;
    }
    let var = |k: &str| std::env::var(k).unwrap();
    let (data, release, token, server) = (
        var("UNSEEN_DOWNLOAD_DATA"),
        var("UNSEEN_DOWNLOAD_RELEASE"),
        var("UNSEEN_DOWNLOAD_TOKEN"),
        var("UNSEEN_DOWNLOAD_SERVER"),
    );
    std::fs::create_dir("sub").unwrap();
    for (out, succeeds) in [
        ("rel.json", true),
        ("sub/rel.json", true),
        ("./sub/../rel2.json", true),
        ("missing/rel.json", false),
    ] {
        let mut args = vec![
            "release", "download", &release, "--out", out, "--token", &token,
        ];
        if server.is_empty() {
            args.extend(["--as", "dev", "--data-dir", &data]);
        } else {
            args.extend(["--server", &server]);
        }
        let (done, text) = crate::support::unseen_exact(&args);
        assert_eq!(done, succeeds, "{out}: {text}");
        if succeeds {
            assert!(
                text.contains(&format!("downloaded release {release} to {out}")),
                "{text}"
            );
            assert!(is_bundle(Path::new(out)), "{out}");
        }
    }
}

/// Every way a download can go, locally then over --server: bare, relative
/// and absolute paths succeed and count once each; an existing file (without
/// --force), a directory, a missing or unwritable directory fail and count
/// nothing; nothing is left behind.
#[test]
fn a_download_counts_only_once_the_file_is_written() {
    let (dir, data) = residents_dir("1000");
    let grant = issue_grant(&data, "5", &["--max-downloads", "20"]);
    let release = approved_release(&data, &grant, &["rev"]);
    let token = token_of(&data, "dev");
    let root = dir.path();
    assert_eq!(counted(&data, &grant), (0, 0));

    let cwd = tempfile::tempdir().unwrap();
    download_in(cwd.path(), &data, &release, &token, None);
    assert_eq!(counted(&data, &grant), (3, 3), "three written, one refused");

    let failing = |target: &str, data: &str, remote: Option<&str>| {
        let mut args = vec!["release", "download", &release, "--out", target];
        let on;
        match remote {
            Some(base) => {
                on = ["--server", base, "--token", &token];
                args.extend(on);
            }
            None => args.extend(["--as", "dev", "--data-dir", data]),
        }
        fails(&args)
    };
    let blocker = root.join("a-file");
    std::fs::write(&blocker, "not a directory").unwrap();
    let existing = root.join("existing.json");
    std::fs::write(&existing, "keep me").unwrap();
    let readonly = root.join("readonly");
    std::fs::create_dir(&readonly).unwrap();
    let targets: Vec<(PathBuf, &str)> = vec![
        (
            existing.clone(),
            "already exists; choose another name, or pass --force",
        ),
        (root.to_path_buf(), "is a directory"),
        (root.join("missing/rel.json"), "cannot write in"),
        (blocker.join("rel.json"), "cannot write in"),
    ];
    let check_failures = |remote: Option<&str>| {
        for (target, expected) in &targets {
            let text = failing(target.to_str().unwrap(), &data, remote);
            assert!(text.contains(expected), "{}: {text}", target.display());
        }
        assert_eq!(std::fs::read_to_string(&existing).unwrap(), "keep me");
        if !running_as_root() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&readonly, std::fs::Permissions::from_mode(0o500)).unwrap();
            let text = failing(readonly.join("r.json").to_str().unwrap(), &data, remote);
            assert!(text.contains("cannot write in"), "{text}");
            std::fs::set_permissions(&readonly, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
    };
    check_failures(None);
    assert_eq!(counted(&data, &grant), (3, 3), "failures count nothing");

    // Absolute, and --force over an existing file.
    let absolute = root.join("abs.json");
    ok(&[
        "release",
        "download",
        &release,
        "--out",
        absolute.to_str().unwrap(),
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]);
    ok(&[
        "release",
        "download",
        &release,
        "--out",
        existing.to_str().unwrap(),
        "--force",
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]);
    assert!(is_bundle(&absolute) && is_bundle(&existing));
    assert_eq!(counted(&data, &grant), (5, 5));
    std::fs::write(&existing, "keep me").unwrap();

    // The same over --server.
    {
        let server = TestServer::start(&data, 2);
        let token = crate::support::rotate(&server.domain, "dev");
        let cwd = tempfile::tempdir().unwrap();
        download_in(cwd.path(), &data, &release, &token, Some(&server.base));
        let base = server.base.clone();
        check_failures(Some(&base));
        let remote_abs = root.join("remote-abs.json");
        ok(&[
            "--server",
            &base,
            "--token",
            &token,
            "release",
            "download",
            &release,
            "--out",
            remote_abs.to_str().unwrap(),
        ]);
        ok(&[
            "--server",
            &base,
            "--token",
            &token,
            "release",
            "download",
            &release,
            "--out",
            existing.to_str().unwrap(),
            "--force",
        ]);
        assert!(is_bundle(&remote_abs) && is_bundle(&existing));
    }
    assert_eq!(counted(&data, &grant), (10, 10));
    let leftovers: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".unseen-download-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A data directory with a release approved by two reviewers, downloaded
/// as a bundle into an otherwise empty directory with the public key.
fn bundle_in_empty_dir() -> (
    tempfile::TempDir,
    tempfile::TempDir,
    String,
    PathBuf,
    PathBuf,
) {
    let (dir, data) = residents_dir("1000");
    ok(&[
        "user",
        "add",
        "--id",
        "rev2",
        "--name",
        "R2",
        "--role",
        "reviewer",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    let grant = issue_grant(&data, "5", &["--approvals", "2"]);
    let release = approved_release(&data, &grant, &["rev", "rev2"]);
    let empty = tempfile::tempdir().unwrap();
    let bundle = empty.path().join("bundle.json");
    let key = empty.path().join("ledger.pub");
    ok(&[
        "release",
        "download",
        &release,
        "--out",
        bundle.to_str().unwrap(),
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]);
    ok(&[
        "ledger",
        "public-key",
        "--out",
        key.to_str().unwrap(),
        "--data-dir",
        &data,
    ]);
    (dir, empty, release, bundle, key)
}

#[test]
fn a_downloaded_bundle_verifies_with_only_the_public_key() {
    let (_dir, empty, release, bundle, key) = bundle_in_empty_dir();
    // The data directory the verifier names does not exist: nothing but
    // the bundle and the key is read.
    let nowhere = empty.path().join("no-data-dir");
    let out = ok(&[
        "release",
        "verify",
        bundle.to_str().unwrap(),
        "--public-key",
        key.to_str().unwrap(),
        "--json",
        "--data-dir",
        nowhere.to_str().unwrap(),
    ]);
    let proof: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(proof["release"], release.as_str());
    assert_eq!(proof["approvers"], serde_json::json!(["rev", "rev2"]));
    assert!(!nowhere.exists());
    let text = ok(&[
        "release",
        "verify",
        bundle.to_str().unwrap(),
        "--public-key",
        key.to_str().unwrap(),
        "--data-dir",
        nowhere.to_str().unwrap(),
    ]);
    assert!(text.contains(&format!("release {release} OK")), "{text}");
    assert!(text.contains("approved by rev, rev2"), "{text}");
    assert!(text.contains("signed by this build"), "{text}");
    // The release was signed in this process: its build is this binary.
    let own = unseen::data::file_sha256(&std::env::current_exe().unwrap()).unwrap();
    assert_eq!(proof["build"]["binary_sha256"], own.as_str());
    // Another ledger's key proves nothing.
    let (_other_dir, other) = residents_dir("200");
    let other_key = empty.path().join("other.pub");
    ok(&[
        "ledger",
        "public-key",
        "--out",
        other_key.to_str().unwrap(),
        "--data-dir",
        &other,
    ]);
    let refused = fails(&[
        "release",
        "verify",
        bundle.to_str().unwrap(),
        "--public-key",
        other_key.to_str().unwrap(),
        "--data-dir",
        nowhere.to_str().unwrap(),
    ]);
    assert!(refused.contains("FAILED at the key identity"), "{refused}");
}

/// Sets the value at JSON pointer `at` with `change`.
fn tampered(bundle: &Value, at: &str, change: impl Fn(&mut Value)) -> String {
    let mut copy = bundle.clone();
    change(
        copy.pointer_mut(at)
            .unwrap_or_else(|| panic!("{at} is in the bundle")),
    );
    serde_json::to_string_pretty(&copy).unwrap()
}

fn alter(v: &mut Value) {
    *v = match v.take() {
        Value::String(s) if s.len() > 10 => {
            // Change one character in the middle, keeping the shape.
            let mut chars: Vec<char> = s.chars().collect();
            let i = chars.len() / 2;
            chars[i] = if chars[i] == 'a' { 'b' } else { 'a' };
            Value::String(chars.into_iter().collect())
        }
        Value::String(s) => Value::String(format!("{s}x")),
        Value::Number(n) => match n.as_u64() {
            Some(i) => serde_json::json!(i + 1),
            None => serde_json::json!(n.as_f64().unwrap() + 1.0),
        },
        Value::Null => Value::String("x".into()),
        other => panic!("cannot alter {other}"),
    };
}

#[test]
fn every_tampered_field_of_a_bundle_is_detected_and_named() {
    let (_dir, empty, _release, bundle_path, key) = bundle_in_empty_dir();
    let bundle: Value =
        serde_json::from_str(&std::fs::read_to_string(&bundle_path).unwrap()).unwrap();
    let entries = bundle["ledger"]["entries"].as_array().unwrap().len();
    assert_eq!(entries, 3, "two approvals and the signed release");
    let first_column = &bundle["document"]["table"]["columns"][1]["values"][0];
    assert!(first_column.is_object(), "{first_column}");
    let mut cases: Vec<(String, String, &str)> = vec![
        ("/document/module_sha256", "the release signature"),
        ("/document/sql", "the release signature"),
        (
            "/document/input_snapshot/source_sha256",
            "the release signature",
        ),
        (
            "/document/input_snapshot/manifest_version",
            "the release signature",
        ),
        ("/document/policy_version", "the release signature"),
        ("/document/epsilon_spent", "the release signature"),
        ("/document/reviewer", "the release signature"),
        ("/document/approvers/0", "the release signature"),
        ("/document/output_sha256", "the release signature"),
        ("/document/build/binary_sha256", "the release signature"),
        ("/document/build/git_commit", "the release signature"),
        (
            "/document/table/columns/1/values/0/value",
            "the release signature",
        ),
        (
            "/document/table/columns/0/values/0",
            "the release signature",
        ),
        ("/signature", "the release signature"),
        ("/ledger/public_key", "the key identity"),
        ("/ledger/verifier_key", "the key identity"),
        ("/ledger/checkpoint", "the signed checkpoint"),
        ("/ledger/entries/0/line", "ledger entry 0 of the bundle"),
        ("/ledger/entries/2/line", "ledger entry 2 of the bundle"),
        (
            "/ledger/entries/1/proof/leaf_hash",
            "ledger entry 1 of the bundle",
        ),
        (
            "/ledger/entries/1/proof/root",
            "ledger entry 1 of the bundle",
        ),
        (
            "/ledger/entries/1/proof/size",
            "ledger entry 1 of the bundle",
        ),
        (
            "/ledger/entries/1/proof/index",
            "ledger entry 1 of the bundle",
        ),
        (
            "/ledger/entries/2/proof/path/0",
            "ledger entry 2 of the bundle",
        ),
    ]
    .into_iter()
    .map(|(at, link)| (at.to_string(), tampered(&bundle, at, alter), link))
    .collect();
    // An entry left out: one approval, or the release entry itself.
    for (n, link) in [(0, "the reviewers"), (2, "the release entry")] {
        let mut copy = bundle.clone();
        let list = copy["ledger"]["entries"].as_array_mut().unwrap();
        let removed = list.remove(n);
        let kind = if removed["line"]
            .as_str()
            .unwrap()
            .contains("review.approved")
        {
            "the reviewers"
        } else {
            "the release entry"
        };
        assert_eq!(kind, link, "entry {n} is {removed}");
        cases.push((format!("without entry {n}"), copy.to_string(), link));
    }
    let tampered_path = empty.path().join("tampered.json");
    for (what, text, link) in &cases {
        std::fs::write(&tampered_path, text).unwrap();
        let (verified, out) = unseen(&[
            "release",
            "verify",
            tampered_path.to_str().unwrap(),
            "--public-key",
            key.to_str().unwrap(),
            "--data-dir",
            empty.path().join("none").to_str().unwrap(),
        ]);
        assert!(!verified, "tampering {what} went unnoticed:\n{out}");
        assert!(
            out.contains(&format!("bundle verification FAILED at {link}")),
            "tampering {what} should break {link}:\n{out}"
        );
    }
}

#[test]
fn ledger_checkpoint_prints_the_signed_checkpoint_locally_and_over_the_server() {
    let (dir, data) = residents_dir("300");
    let note = ok(&["ledger", "checkpoint", "--data-dir", &data]);
    let file = std::fs::read_to_string(Path::new(&data).join("ledger/checkpoint")).unwrap();
    assert_eq!(note, file);
    assert!(note.starts_with(unseen_ledger_origin()), "{note}");
    let saved = dir.path().join("saved-checkpoint");
    std::fs::write(&saved, &note).unwrap();
    issue_grant(&data, "1", &[]);
    let since = ok(&[
        "ledger",
        "verify",
        "--since",
        saved.to_str().unwrap(),
        "--data-dir",
        &data,
    ]);
    assert!(since.contains("consistently extends"), "{since}");
    // A proof checks against the printed checkpoint.
    let proof = dir.path().join("proof.json");
    let key = dir.path().join("ledger.pub");
    ok(&[
        "ledger",
        "public-key",
        "--out",
        key.to_str().unwrap(),
        "--data-dir",
        &data,
    ]);
    let now = ok(&["ledger", "checkpoint", "--data-dir", &data]);
    let current = dir.path().join("checkpoint");
    std::fs::write(&current, &now).unwrap();
    std::fs::write(
        &proof,
        ok(&["ledger", "proof", "--index", "3", "--data-dir", &data]),
    )
    .unwrap();
    ok(&[
        "ledger",
        "check-proof",
        proof.to_str().unwrap(),
        "--checkpoint",
        current.to_str().unwrap(),
        "--public-key",
        key.to_str().unwrap(),
    ]);
    let server = TestServer::start(&data, 1);
    let token = crate::support::rotate(&server.domain, "rev");
    let remote = ok(&[
        "--server",
        &server.base,
        "--token",
        &token,
        "ledger",
        "checkpoint",
    ]);
    assert!(remote.starts_with(unseen_ledger_origin()), "{remote}");
    let newest = std::fs::read_to_string(Path::new(&data).join("ledger/checkpoint")).unwrap();
    assert_eq!(remote, newest);
    // Not for developers: the checkpoint's size grows as their jobs run.
    let dev = crate::support::rotate(&server.domain, "dev");
    let refused = crate::support::fails(&[
        "--server",
        &server.base,
        "--token",
        &dev,
        "ledger",
        "checkpoint",
    ]);
    assert!(
        refused.contains("may not read the ledger checkpoint"),
        "{refused}"
    );
}

fn unseen_ledger_origin() -> &'static str {
    "unseen.local/ledger"
}

/// A release as data: `release export` writes a verified bundle's table as
/// CSV, JSON lines or Parquet with each estimate's bounds as columns, and
/// refuses a tampered bundle; `release download --format` writes the table
/// directly and counts as a download.
#[test]
fn a_release_exports_as_csv_json_and_parquet_with_its_bounds() {
    let (_dir, empty, release, bundle, key) = bundle_in_empty_dir();
    let document: Value = serde_json::from_str(&std::fs::read_to_string(&bundle).unwrap()).unwrap();
    let first_n = document["document"]["table"]["columns"][1]["values"][0].clone();
    let nowhere = empty.path().join("no-data-dir");
    let export = |format: &str, file: &str| {
        let out = empty.path().join(file);
        let text = ok(&[
            "release",
            "export",
            bundle.to_str().unwrap(),
            "--format",
            format,
            "--out",
            out.to_str().unwrap(),
            "--public-key",
            key.to_str().unwrap(),
            "--data-dir",
            nowhere.to_str().unwrap(),
        ]);
        assert!(
            text.contains(&format!("release {release} verified")),
            "{text}"
        );
        out
    };
    let csv = std::fs::read_to_string(export("csv", "r.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("district,n,n_lower,n_upper"));
    assert_eq!(lines.count(), 12, "{csv}");
    let json = std::fs::read_to_string(export("json", "r.jsonl")).unwrap();
    let row: Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(row["n"], first_n["value"]);
    assert_eq!(row["n_lower"], first_n["lower"]);
    assert_eq!(row["n_upper"], first_n["upper"]);
    let parquet = std::fs::File::open(export("parquet", "r.parquet")).unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(parquet).unwrap();
    let names: Vec<String> = reader
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["district", "n", "n_lower", "n_upper"]);
    let rows: usize = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 12);
    // A changed estimate is refused before anything is written.
    let tampered_bundle = empty.path().join("tampered.json");
    std::fs::write(
        &tampered_bundle,
        tampered(&document, "/document/table/columns/1/values/0/value", alter),
    )
    .unwrap();
    let refused = fails(&[
        "release",
        "export",
        tampered_bundle.to_str().unwrap(),
        "--format",
        "csv",
        "--out",
        empty.path().join("t.csv").to_str().unwrap(),
        "--public-key",
        key.to_str().unwrap(),
        "--data-dir",
        nowhere.to_str().unwrap(),
    ]);
    assert!(
        refused.contains("FAILED at the release signature"),
        "{refused}"
    );
    assert!(!empty.path().join("t.csv").exists());
}

#[test]
fn a_download_as_data_is_counted_like_a_bundle() {
    let (dir, data) = residents_dir("500");
    let grant = issue_grant(&data, "5", &["--max-downloads", "1"]);
    let release = approved_release(&data, &grant, &["rev"]);
    let csv = dir.path().join("r.csv");
    let text = ok(&[
        "release",
        "download",
        &release,
        "--out",
        csv.to_str().unwrap(),
        "--format",
        "csv",
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]);
    assert!(text.contains("downloaded release"), "{text}");
    let written = std::fs::read_to_string(&csv).unwrap();
    assert!(
        written.starts_with("district,n,n_lower,n_upper\n"),
        "{written}"
    );
    assert_eq!(counted(&data, &grant), (1, 1));
    // The limit holds whatever the format.
    let again = fails(&[
        "release",
        "download",
        &release,
        "--out",
        dir.path().join("again.json").to_str().unwrap(),
        "--as",
        "dev",
        "--data-dir",
        &data,
    ]);
    assert!(again.contains("download"), "{again}");
}

/// `query --format csv --out FILE --wait N` writes the released table once
/// a reviewer approves it, with each estimate's interval as columns; the
/// job's status names its release; without a review in time it says how
/// to fetch it later and writes nothing.
#[test]
fn query_format_writes_the_released_table_once_it_is_approved() {
    let (dir, data) = residents_dir("500");
    let grant = issue_grant(&data, "5", &[]);
    // A data directory is one process's: the developer and the reviewer
    // meet on a server.
    let server = TestServer::start(&data, 2);
    let (dev, rev) = (token_of(&data, "dev"), token_of(&data, "rev"));
    let file = dir.path().join("counts.csv");
    let waited = {
        let (base, dev, grant, file) = (
            server.base.clone(),
            dev.clone(),
            grant.clone(),
            file.clone(),
        );
        std::thread::spawn(move || {
            unseen(&[
                "query",
                "--grant",
                &grant,
                "--format",
                "csv",
                "--out",
                file.to_str().unwrap(),
                "--wait",
                "120",
                "--json",
                "--server",
                &base,
                "--token",
                &dev,
                SQL,
            ])
        })
    };
    // The reviewer approves the output as soon as it is in the queue.
    let approved = approve_when_queued(&server.base, &rev);
    assert!(approved, "the query's output reached the review queue");
    let (done, text) = waited.join().unwrap();
    assert!(done, "{text}");
    let answer: Value = serde_json::from_str(text.trim()).unwrap();
    let release = answer["release"].as_str().unwrap();
    let csv = std::fs::read_to_string(&file).unwrap();
    assert!(csv.starts_with("district,n,n_lower,n_upper"), "{csv}");
    assert!(csv.lines().count() > 10, "a row per district: {csv}");
    let job: Value = serde_json::from_str(&ok(&[
        "job",
        "status",
        answer["job"].as_str().unwrap(),
        "--json",
        "--server",
        &server.base,
        "--token",
        &dev,
    ]))
    .unwrap();
    assert_eq!(job["job"]["releases"][0], release, "{job}");

    // `--wait` alone prints the released values with their intervals.
    let printing = {
        let (base, dev, grant) = (server.base.clone(), dev.clone(), grant.clone());
        std::thread::spawn(move || {
            unseen(&[
                "query",
                "--grant",
                &grant,
                "--wait",
                "120",
                "--json",
                "--server",
                &base,
                "--token",
                &dev,
                "SELECT district, AVG(annual_income) AS n FROM residents GROUP BY district",
            ])
        })
    };
    let approved = approve_when_queued(&server.base, &rev);
    let (done, text) = printing.join().unwrap();
    assert!(approved, "the second query reached the queue: {text}");
    assert!(done, "{text}");
    let answer: Value = serde_json::from_str(text.trim()).unwrap();
    let n = &answer["table"]["columns"][1];
    assert_eq!(n["name"], "n", "{answer}");
    assert!(
        n["values"][0]["lower"].is_number(),
        "values carry their intervals: {answer}"
    );
    // Not reviewed in time: nothing is written, and it says what to do.
    let later = dir.path().join("later.parquet");
    let text = ok(&[
        "query",
        "--grant",
        &grant,
        "--format",
        "parquet",
        "--out",
        later.to_str().unwrap(),
        "--server",
        &server.base,
        "--token",
        &dev,
        "SELECT birth_year - birth_year % 10 AS decade, COUNT(*) AS n FROM residents GROUP BY birth_year - birth_year % 10",
    ]);
    assert!(
        text.contains("not released within 0 s")
            && text.contains("release download REL --format parquet"),
        "{text}"
    );
    assert!(!later.exists());
    // --format needs --out, and an existing file is not replaced.
    let refused = fails(&[
        "query",
        "--grant",
        &grant,
        "--format",
        "csv",
        "--server",
        &server.base,
        "--token",
        &dev,
        SQL,
    ]);
    assert!(refused.contains("--out"), "{refused}");
    let refused = fails(&[
        "query",
        "--grant",
        &grant,
        "--format",
        "csv",
        "--out",
        file.to_str().unwrap(),
        "--server",
        &server.base,
        "--token",
        &dev,
        SQL,
    ]);
    assert!(refused.contains("already exists"), "{refused}");
}

/// Approves, as the reviewer with `token` on the server at `base`, the
/// first output to reach the review queue within two minutes; whether one
/// did.
fn approve_when_queued(base: &str, token: &str) -> bool {
    for _ in 0..1200 {
        let queue: Value = serde_json::from_str(&ok(&[
            "review", "list", "--json", "--server", base, "--token", token,
        ]))
        .unwrap();
        if let Some(o) = queue["outputs"].as_array().and_then(|a| a.first()) {
            ok(&[
                "review",
                "approve",
                o["output"].as_str().unwrap(),
                "--reason",
                "DP counts",
                "--server",
                base,
                "--token",
                token,
            ]);
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}
