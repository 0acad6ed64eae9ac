//! Outside data with approval: a developer proposes a bank's loan book for
//! their grant; it is checked and quarantined encrypted, registered only
//! when a provider approves it, joinable only on the privacy unit below a
//! DP aggregate, charged to its own budget layer, and destroyed with the
//! grant. Every refusal says what was wrong.

use std::path::Path;

use serde_json::Value;
use unseen::demo::{BANK_LOANS_MANIFEST, bank_loans_csv};

use crate::support::*;

struct Scene {
    dir: tempfile::TempDir,
    data: String,
    grant: String,
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Enterprises registered, an admin, developers `dev` and `dev2`, a
/// reviewer; a grant to `dev` on enterprises; the bank's CSV and manifest
/// written next to it.
fn scene() -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d").to_str().unwrap().to_string();
    for (id, role, acting) in [
        ("admin", "admin", None),
        ("dev", "developer", Some("admin")),
        ("dev2", "developer", Some("admin")),
        ("rev", "reviewer", Some("admin")),
    ] {
        let mut args = vec![
            "user",
            "add",
            "--id",
            id,
            "--name",
            id,
            "--role",
            role,
            "--data-dir",
            &data,
        ];
        if let Some(a) = acting {
            args.extend(["--as", a]);
        }
        ok(&args);
    }
    register_generated(dir.path(), &data, "enterprises", "2000", "0");
    let issued = ok(&[
        "grant",
        "issue",
        "--dataset",
        "enterprises",
        "--developer",
        "dev",
        "--purpose",
        "SME credit",
        "--epsilon",
        "5",
        "--query-epsilon",
        "1",
        "--json",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    let grant = json_of(&issued)["grant"].as_str().unwrap().to_string();
    bank_loans_csv(
        &dir.path().join("enterprises.parquet"),
        &dir.path().join("loans.csv"),
        7,
    )
    .unwrap();
    std::fs::write(dir.path().join("loans.toml"), BANK_LOANS_MANIFEST).unwrap();
    Scene { dir, data, grant }
}

impl Scene {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    /// `unseen dataset import` of `csv` with `manifest` as `user`.
    fn propose(&self, user: &str, csv: &str, manifest: &str) -> (bool, String) {
        unseen(&[
            "dataset",
            "import",
            "--grant",
            &self.grant,
            "--name",
            "bank_loans",
            "--csv",
            &self.path(csv),
            "--manifest",
            &self.path(manifest),
            "--json",
            "--as",
            user,
            "--data-dir",
            &self.data,
        ])
    }

    fn decide(&self, id: &str, flags: &[&str]) -> (bool, String) {
        let mut args = vec!["dataset", "decide-import", id];
        args.extend_from_slice(flags);
        args.extend(["--json", "--as", "admin", "--data-dir", &self.data]);
        unseen(&args)
    }
}

const JOIN_SQL: &str = "SELECT e.industry, AVG(b.defaulted) AS default_rate FROM enterprises e JOIN bank_loans b ON e.credit_code = b.credit_code GROUP BY e.industry";

#[test]
fn an_import_is_checked_quarantined_approved_joined_below_dp_charged_and_destroyed_with_its_grant()
{
    let s = scene();
    let csv = std::fs::read_to_string(s.path("loans.csv")).unwrap();
    let planted = csv
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();

    let (proposed, text) = s.propose("dev", "loans.csv", "loans.toml");
    assert!(proposed, "{text}");
    let import = json_of(&text)["import"].clone();
    let id = import["id"].as_str().unwrap().to_string();
    assert_eq!(import["status"], "proposed");
    assert_eq!(import["checks"]["rows"], 1000);
    assert_eq!(
        import["checks"]["key_format"],
        "GB 32100-2015 unified social credit code"
    );
    // Quarantined: not a dataset yet, not joinable, and encrypted on disk.
    let (answered, refused) = query_as_dev(&s.data, &s.grant, &[], JOIN_SQL);
    assert!(!answered, "{refused}");
    for (path, bytes) in all_files(Path::new(&s.data)) {
        assert!(
            !contains(&bytes, planted.as_bytes()),
            "{} holds a credit code of the import in clear",
            path.display()
        );
    }
    // Approval needs a reason and its own budget.
    let (done, text) = s.decide(&id, &["--approve", "--reason", "loan outcomes"]);
    assert!(!done && text.contains("give --epsilon"), "{text}");
    let (done, text) = s.decide(&id, &["--approve", "--epsilon", "1", "--reason", ""]);
    assert!(!done && text.contains("needs a reason"), "{text}");
    let (done, text) = s.decide(
        &id,
        &[
            "--approve",
            "--epsilon",
            "1",
            "--reason",
            "loan outcomes for SME credit",
        ],
    );
    assert!(done, "{text}");
    let decided = json_of(&text)["import"].clone();
    assert_eq!(decided["status"], "approved");
    assert_eq!(decided["epsilon_total"], 1.0);
    let (done, text) = s.decide(&id, &["--reject", "--reason", "again"]);
    assert!(!done && text.contains("only a proposed import"), "{text}");

    // It belongs to its grant alone.
    let refused = fails(&[
        "grant",
        "issue",
        "--dataset",
        "enterprises",
        "--join",
        "bank_loans",
        "--developer",
        "dev2",
        "--purpose",
        "p",
        "--epsilon",
        "1",
        "--as",
        "admin",
        "--data-dir",
        &s.data,
    ]);
    assert!(refused.contains("imported for another grant"), "{refused}");
    // Joinable on the privacy unit below a DP aggregate, and nothing else.
    let (answered, text) = query_as_dev(&s.data, &s.grant, &[], JOIN_SQL);
    assert!(answered, "{text}");
    let (answered, text) = query_as_dev(
        &s.data,
        &s.grant,
        &[],
        "SELECT loan_amount, defaulted FROM bank_loans",
    );
    assert!(!answered, "rows of the import never leave: {text}");
    let (answered, text) =
        query_as_dev(&s.data, &s.grant, &[], "SELECT credit_code FROM bank_loans");
    assert!(!answered, "{text}");
    let (answered, text) = query_as_dev(
        &s.data,
        &s.grant,
        &[],
        "SELECT e.industry, COUNT(*) AS n FROM enterprises e JOIN bank_loans b ON e.registered_capital = b.loan_amount GROUP BY e.industry",
    );
    assert!(
        !answered && text.contains("shared privacy unit"),
        "a join on another key is refused: {text}"
    );
    // Its own budget layer was charged.
    let budget = json_of(&ok(&[
        "budget",
        "show",
        "--grant",
        &s.grant,
        "--json",
        "--data-dir",
        &s.data,
    ]));
    let layer = budget["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == "bank_loans")
        .unwrap_or_else(|| panic!("a bank_loans layer: {budget}"));
    assert_eq!(layer["spent"], 1.0, "{layer}");
    assert_eq!(layer["total"], 1.0, "{layer}");
    // Spent: the next query reading it is refused by its layer.
    let (answered, text) = query_as_dev(
        &s.data,
        &s.grant,
        &[],
        JOIN_SQL.replace("AVG", "SUM").as_str(),
    );
    assert!(!answered && text.contains("bank_loans"), "{text}");

    // Destroyed with its grant.
    ok(&[
        "grant",
        "revoke",
        &s.grant,
        "--reason",
        "scenario ended",
        "--as",
        "admin",
        "--data-dir",
        &s.data,
    ]);
    let imports = json_of(&ok(&[
        "dataset",
        "imports",
        "--json",
        "--as",
        "dev",
        "--data-dir",
        &s.data,
    ]));
    assert_eq!(imports["imports"][0]["status"], "destroyed", "{imports}");
    assert!(!Path::new(&s.data).join("data/bank_loans.parquet").exists());
    let kinds: Vec<String> = entries(&Path::new(&s.data).join("ledger"))
        .iter()
        .filter(|e| {
            e.body.get("dataset").and_then(Value::as_str) == Some("bank_loans")
                || e.kind.starts_with("import.")
        })
        .map(|e| e.kind.clone())
        .collect();
    assert_eq!(
        kinds,
        ["import.proposed", "dataset.registered", "dataset.destroyed"]
    );
    let reconciled = ok(&[
        "ledger",
        "reconcile",
        "--as",
        "admin",
        "--data-dir",
        &s.data,
    ]);
    assert!(reconciled.contains("agree"), "{reconciled}");
}

#[test]
fn a_wrong_file_or_manifest_or_proposer_is_refused_with_what_to_fix() {
    let s = scene();
    let csv = std::fs::read_to_string(s.path("loans.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    // A credit code whose check character is wrong, on data row 3.
    let mut bad = lines.clone();
    let broken = {
        let code = bad[3].split(',').next().unwrap();
        let last = code.chars().last().unwrap();
        let wrong = if last == '0' { '1' } else { '0' };
        bad[3].replacen(code, &format!("{}{wrong}", &code[..17]), 1)
    };
    bad[3] = &broken;
    std::fs::write(s.path("bad.csv"), bad.join("\n")).unwrap();
    let (done, text) = s.propose("dev", "bad.csv", "loans.toml");
    assert!(!done, "{text}");
    assert!(
        text.contains("1 of 1000 keys") && text.contains("check") && text.contains("data row 3"),
        "{text}"
    );
    // A file whose columns are not the manifest's.
    let renamed = csv.replacen("defaulted", "default_flag", 1);
    std::fs::write(s.path("renamed.csv"), renamed).unwrap();
    let (done, text) = s.propose("dev", "renamed.csv", "loans.toml");
    assert!(!done && text.contains("defaulted"), "{text}");
    // A repeated key.
    let mut twice = lines.clone();
    twice.push(lines[1]);
    std::fs::write(s.path("twice.csv"), twice.join("\n")).unwrap();
    let (done, text) = s.propose("dev", "twice.csv", "loans.toml");
    assert!(
        !done && text.contains("repeat a key") && text.contains("data row 1001"),
        "{text}"
    );
    // Manifests: an open column, another privacy unit, a key not prohibited.
    for (change, says) in [
        (
            (
                "name = \"defaulted\"\ntype = \"int64\"\nclass = \"conditional\"",
                "name = \"defaulted\"\ntype = \"int64\"\nclass = \"open\"",
            ),
            "declared open",
        ),
        (
            (
                "privacy_unit = \"credit_code\"",
                "privacy_unit = \"loan_amount\"",
            ),
            "privacy unit is `loan_amount`",
        ),
        (
            (
                "name = \"credit_code\"\ntype = \"utf8\"\nclass = \"prohibited\"",
                "name = \"credit_code\"\ntype = \"utf8\"\nclass = \"conditional\"",
            ),
            "must be declared prohibited",
        ),
    ] {
        let manifest = BANK_LOANS_MANIFEST.replace(change.0, change.1);
        assert_ne!(manifest, BANK_LOANS_MANIFEST, "{says}");
        std::fs::write(s.path("changed.toml"), manifest).unwrap();
        let (done, text) = s.propose("dev", "loans.csv", "changed.toml");
        assert!(!done && text.contains(says), "{says}: {text}");
    }
    // Only the grant's developers propose; admins and reviewers do not.
    let (done, text) = s.propose("dev2", "loans.csv", "loans.toml");
    assert!(
        !done && text.contains("not one of its designated users"),
        "{text}"
    );
    for user in ["admin", "rev"] {
        let (done, text) = s.propose(user, "loans.csv", "loans.toml");
        assert!(!done && text.contains("propose imports"), "{user}: {text}");
    }
    // Nothing was left behind by the refusals; a rejection deletes the file.
    let listed = json_of(&ok(&[
        "dataset",
        "imports",
        "--json",
        "--as",
        "admin",
        "--data-dir",
        &s.data,
    ]));
    assert_eq!(listed["imports"], serde_json::json!([]));
    let (proposed, text) = s.propose("dev", "loans.csv", "loans.toml");
    assert!(proposed, "{text}");
    let id = json_of(&text)["import"]["id"].as_str().unwrap().to_string();
    let (done, text) = s.decide(
        &id,
        &["--reject", "--reason", "the bank's consent is missing"],
    );
    assert!(done, "{text}");
    assert_eq!(json_of(&text)["import"]["status"], "rejected");
    assert!(
        !Path::new(&s.data)
            .join(format!("imports/{id}.parquet"))
            .exists()
    );
    // Over the API: a developer proposes with --server; the name is free again.
    let server = TestServer::start(&s.data, 2);
    let dev = token_of(&s.data, "dev");
    let proposed = ok(&[
        "dataset",
        "import",
        "--grant",
        &s.grant,
        "--name",
        "bank_loans",
        "--csv",
        &s.path("loans.csv"),
        "--manifest",
        &s.path("loans.toml"),
        "--server",
        &server.base,
        "--token",
        &dev,
    ]);
    assert!(proposed.contains("quarantined encrypted"), "{proposed}");
    let listed = ok(&[
        "dataset",
        "imports",
        "--server",
        &server.base,
        "--token",
        &dev,
    ]);
    assert!(
        listed.contains("proposed") && listed.contains("rejected"),
        "{listed}"
    );
}

/// An import of a grant that expires is destroyed by the sweep the server
/// runs at start and hourly, and not before.
#[test]
fn an_import_is_destroyed_when_its_grant_expires() {
    use std::sync::Arc;
    let s = scene();
    let issued = ok(&[
        "grant",
        "issue",
        "--dataset",
        "enterprises",
        "--developer",
        "dev",
        "--purpose",
        "short",
        "--epsilon",
        "2",
        "--days",
        "1",
        "--json",
        "--as",
        "admin",
        "--data-dir",
        &s.data,
    ]);
    let grant = json_of(&issued)["grant"].as_str().unwrap().to_string();
    let clock = Arc::new(unseen::clock::ShiftedClock::new());
    let domain =
        unseen::Domain::open_with_clock(Path::new(&s.data), Arc::clone(&clock) as _).unwrap();
    let manifest = unseen_policy::Manifest::parse(BANK_LOANS_MANIFEST).unwrap();
    let staging = tempfile::tempdir().unwrap();
    let parquet =
        unseen::import::csv_to_parquet(&s.dir.path().join("loans.csv"), &manifest, staging.path())
            .unwrap();
    let id = domain
        .propose_import("dev", &grant, "bank_loans", &parquet, BANK_LOANS_MANIFEST)
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(domain.decide_import(
            "admin",
            &id,
            &unseen_api::ImportDecision {
                approve: true,
                reason: "for a day".into(),
                epsilon: Some(1.0),
            },
        ))
        .unwrap();
    // A second proposal still waits for a decision when the grant ends.
    let waiting_manifest =
        BANK_LOANS_MANIFEST.replace("name = \"bank_loans\"", "name = \"bank_loans_2\"");
    let waiting = domain
        .propose_import("dev", &grant, "bank_loans_2", &parquet, &waiting_manifest)
        .unwrap();
    assert_eq!(
        domain.destroy_ended_imports("system").unwrap(),
        Vec::<String>::new()
    );
    clock.advance(std::time::Duration::from_secs(25 * 3600));
    assert_eq!(
        domain.destroy_ended_imports("system").unwrap(),
        ["bank_loans"]
    );
    assert_eq!(
        domain.import("admin", &id).unwrap().status,
        unseen_api::ImportStatus::Destroyed
    );
    assert!(!Path::new(&s.data).join("data/bank_loans.parquet").exists());
    let rejected = domain.import("admin", &waiting).unwrap();
    assert_eq!(rejected.status, unseen_api::ImportStatus::Rejected);
    assert!(
        rejected.reason.contains("ended before a decision"),
        "{}",
        rejected.reason
    );
    assert!(
        !Path::new(&s.data)
            .join(format!("imports/{waiting}.parquet"))
            .exists()
    );
}

/// The console's imports page: the proposer sees their own import, a
/// reviewer nothing, and the data provider decides it there, with the same
/// rules as the command line (approval needs its own budget).
#[test]
fn an_import_is_listed_and_decided_in_the_console() {
    use crate::console::{form_key, get, post};
    let s = scene();
    let (proposed, text) = s.propose("dev", "loans.csv", "loans.toml");
    assert!(proposed, "{text}");
    let id = json_of(&text)["import"]["id"].as_str().unwrap().to_string();
    let server = TestServer::start(&s.data, 2);
    let base = server.base.as_str();
    let (dev, admin, rev) = (
        token_of(&s.data, "dev"),
        token_of(&s.data, "admin"),
        token_of(&s.data, "rev"),
    );
    let (status, _, page) = get(base, Some(&rev), "/console/imports");
    assert_eq!(status, 403, "reviewers read no imports: {page}");
    let (status, _, page) = get(base, Some(&dev), "/console/imports");
    assert_eq!(status, 200);
    assert!(page.contains(&id) && page.contains(">proposed<"), "{page}");
    assert!(!page.contains("/decision"), "only providers decide: {page}");
    let dev_key = form_key(&page);
    let decision = format!("/console/imports/{id}/decision");
    let (status, _) = post(
        base,
        Some(&dev),
        &decision,
        &[
            ("form_key", &dev_key),
            ("decision", "approve"),
            ("reason", "r"),
            ("epsilon", "1"),
        ],
    );
    assert_eq!(status, 403, "a developer decides nothing");

    let (status, _, page) = get(base, Some(&admin), "/console/imports");
    assert_eq!(status, 200);
    assert!(page.contains(&decision), "{page}");
    let key = form_key(&page);
    let decide = |epsilon: &str| {
        post(
            base,
            Some(&admin),
            &decision,
            &[
                ("form_key", key.as_str()),
                ("decision", "approve"),
                ("reason", "loan outcomes"),
                ("epsilon", epsilon),
            ],
        )
    };
    let (status, page) = decide("");
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("epsilon"), "{page}");
    let (status, page) = decide("lots");
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("must be a number"), "{page}");
    let (status, page) = decide("1");
    assert_eq!(status, 303, "{page}");
    let (_, _, page) = get(base, Some(&dev), "/console/imports");
    assert!(page.contains(">approved<"), "{page}");
    let (_, _, page) = get(base, Some(&admin), "/console/imports");
    assert!(!page.contains(&decision), "decided: no form left: {page}");
}

/// A file over the import limit is refused for its size before any of it
/// is read (a sparse file: its bytes are never written).
#[test]
fn a_file_over_the_import_limit_is_refused_for_its_size_before_it_is_read() {
    let s = scene();
    let big = s.path("big.parquet");
    let limit = unseen::imports::MAX_IMPORT_BYTES;
    std::fs::File::create(&big)
        .unwrap()
        .set_len(limit + 1)
        .unwrap();
    let (proposed, text) = unseen(&[
        "dataset",
        "import",
        "--grant",
        &s.grant,
        "--name",
        "bank_loans",
        "--parquet",
        &big,
        "--manifest",
        &s.path("loans.toml"),
        "--as",
        "dev",
        "--data-dir",
        &s.data,
    ]);
    assert!(!proposed, "{text}");
    assert!(
        text.contains(&format!(
            "the file has {} bytes; an import is at most {limit} bytes",
            limit + 1
        )),
        "{text}"
    );
}
