//! Attested builds: the service records which binary handles the data when
//! it starts, signs statements of it, and every release carries it.
//!
//! The attacks: an operator swaps the binary and shows an old statement
//! (the nonce and the file hash catch it), edits a statement to name
//! another build (the signature), or presents one signed by another
//! ledger (the key).

use std::path::Path;

use serde_json::Value;

use crate::support::*;

/// SHA-256 of this test process's executable: the code that runs the
/// service in these tests, and so what it must attest.
fn own_binary_sha256() -> String {
    unseen::data::file_sha256(&std::env::current_exe().unwrap()).unwrap()
}

fn head_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn a_server_records_its_build_at_start_and_signs_statements_checked_offline() {
    let (dir, data) = residents_dir("200");
    let server = TestServer::start(&data, 1);
    // Requests are answered only once the start is recorded.
    ureq::get(&format!("{}/v1/health", server.base))
        .call()
        .unwrap();
    let started: Vec<_> = entries(&Path::new(&data).join("ledger"))
        .into_iter()
        .filter(|e| e.kind == "service.started")
        .collect();
    assert_eq!(started.len(), 1, "one entry for one start");
    let build = &started[0].body["build"];
    assert_eq!(build["binary_sha256"], own_binary_sha256().as_str());
    assert_eq!(build["wasmtime"], "48.0.8");
    assert_eq!(build["datafusion"], "55.2.0");
    assert_eq!(build["opendp"], "0.16.0");
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    assert_eq!(
        build["cargo_lock_sha256"],
        unseen::data::file_sha256(&lock).unwrap().as_str()
    );
    // Built from the checkout under test (a commit made since the build
    // would differ, but the suite builds before it runs).
    if let Some(head) = head_commit() {
        assert_eq!(build["git_commit"], head.as_str());
    }

    let key = dir.path().join("ledger.pub");
    ok(&[
        "ledger",
        "public-key",
        "--out",
        key.to_str().unwrap(),
        "--data-dir",
        &data,
    ]);
    let statement = dir.path().join("attestation.json");
    let token = token_of(&data, "dev");
    let printed = ok(&[
        "attest",
        "--server",
        &server.base,
        "--token",
        &token,
        "--nonce",
        "n-1",
        "--out",
        statement.to_str().unwrap(),
    ]);
    assert!(printed.contains(&own_binary_sha256()), "{printed}");
    let exe = std::env::current_exe().unwrap();
    let nowhere = dir.path().join("no-data-dir");
    let verify = |file: &Path, extra: &[&str]| {
        let mut args = vec![
            "attest",
            "verify",
            file.to_str().unwrap(),
            "--public-key",
            key.to_str().unwrap(),
            "--data-dir",
            nowhere.to_str().unwrap(),
        ];
        args.extend(extra);
        unseen_exact(&args)
    };
    let (passed, text) = verify(
        &statement,
        &["--binary", exe.to_str().unwrap(), "--nonce", "n-1"],
    );
    assert!(passed, "{text}");
    assert!(text.contains("attestation OK"), "{text}");
    let attestation: Value =
        serde_json::from_str(&std::fs::read_to_string(&statement).unwrap()).unwrap();
    assert_eq!(
        attestation["statement"]["started_entry"], started[0].index,
        "the statement points at the start entry"
    );
    // Nothing in it moves while jobs run (no ledger size): developers read it.
    let mut fields: Vec<&str> = attestation["statement"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["at", "build", "nonce", "public_key", "started_entry"]
    );

    // An old statement replayed against a new challenge.
    let (passed, text) = verify(&statement, &["--nonce", "n-2"]);
    assert!(!passed && text.contains("may be a replay"), "{text}");
    // Another binary than the one attested.
    let (passed, text) = verify(&statement, &["--binary", key.to_str().unwrap()]);
    assert!(
        !passed && text.contains("but the attested binary is"),
        "{text}"
    );
    // Any edited field of the statement.
    for field in [
        "binary_sha256",
        "git_commit",
        "cargo_lock_sha256",
        "wasmtime",
        "datafusion",
        "opendp",
    ] {
        let mut edited = attestation.clone();
        edited["statement"]["build"][field] = Value::String("0".repeat(64));
        let path = dir.path().join("edited.json");
        std::fs::write(&path, edited.to_string()).unwrap();
        let (passed, text) = verify(&path, &[]);
        assert!(
            !passed && text.contains("signature does not verify"),
            "{field}: {text}"
        );
    }
    // Another ledger's key.
    let (_other_dir, other) = residents_dir("100");
    let other_key = dir.path().join("other.pub");
    ok(&[
        "ledger",
        "public-key",
        "--out",
        other_key.to_str().unwrap(),
        "--data-dir",
        &other,
    ]);
    let (passed, text) = unseen_exact(&[
        "attest",
        "verify",
        statement.to_str().unwrap(),
        "--public-key",
        other_key.to_str().unwrap(),
        "--data-dir",
        nowhere.to_str().unwrap(),
    ]);
    assert!(!passed && text.contains("but the key given is"), "{text}");

    // Over HTTP: a token is needed, and a malformed challenge is a 400 that says why.
    let anonymous = ureq::get(&format!("{}/v1/attestation", server.base)).call();
    assert!(
        matches!(anonymous, Err(ureq::Error::StatusCode(401))),
        "{anonymous:?}"
    );
    let bad = fails(&[
        "attest",
        "--server",
        &server.base,
        "--token",
        &token,
        "--nonce",
        "a b",
    ]);
    assert!(bad.contains("1 to 64 letters"), "{bad}");
}

#[test]
fn every_release_names_the_build_that_signed_it() {
    let (_dir, data) = residents_dir("500");
    let grant = issue_grant(&data, "5", &[]);
    let (admitted, out) = query_as_dev(
        &data,
        &grant,
        &[],
        "SELECT district, COUNT(*) AS n FROM residents GROUP BY district",
    );
    assert!(admitted, "{out}");
    let output = serde_json::from_str::<Value>(out.trim()).unwrap()["outputs"][0]
        .as_str()
        .unwrap()
        .to_string();
    let approved = ok(&[
        "review",
        "approve",
        &output,
        "--reason",
        "DP counts",
        "--as",
        "rev",
        "--json",
        "--data-dir",
        &data,
    ]);
    let release = serde_json::from_str::<Value>(approved.trim()).unwrap()["release"]
        .as_str()
        .unwrap()
        .to_string();
    let signed = entries(&Path::new(&data).join("ledger"))
        .into_iter()
        .find(|e| e.kind == "release.signed")
        .unwrap();
    assert_eq!(
        signed.body["build"]["binary_sha256"],
        own_binary_sha256().as_str()
    );
    let file = Path::new(&data).join(format!("releases/{release}.json"));
    let verified = ok(&[
        "release",
        "verify",
        file.to_str().unwrap(),
        "--data-dir",
        &data,
    ]);
    assert!(verified.contains("signed by this build"), "{verified}");
    assert!(verified.contains(&own_binary_sha256()), "{verified}");
}
