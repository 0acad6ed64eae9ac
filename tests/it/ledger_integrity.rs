//! The laundering attacks on a data directory's ledger, end to end: an
//! insider edits `DATA_DIR/ledger` without the key, an ordinary command
//! follows, and verification with the trusted public key (alone and
//! `--since` a saved checkpoint) must still fail; `ledger recover` is the
//! only way back, and it is recorded.

use crate::support::{entries, fails, ok, rechained};
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};
use unseen_ledger::{Entry, EntryDraft};

/// A data directory with an admin, the trusted public key and a checkpoint
/// saved early (as an auditor would keep them, outside the directory),
/// then more history.
struct Setup {
    _tmp: tempfile::TempDir,
    data: String,
    ledger: PathBuf,
    trusted: PathBuf,
    saved: PathBuf,
}

fn user(data: &str, id: &str, role: &str, admin: Option<&str>) {
    let mut args = vec![
        "user",
        "add",
        "--id",
        id,
        "--name",
        "N",
        "--role",
        role,
        "--data-dir",
        data,
    ];
    if let Some(a) = admin {
        args.extend(["--as", a]);
    }
    ok(&args);
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d").to_str().unwrap().to_string();
    user(&data, "admin", "admin", None);
    let ledger = Path::new(&data).join("ledger");
    let trusted = tmp.path().join("trusted.pub");
    let saved = tmp.path().join("saved.checkpoint");
    fs::copy(ledger.join("ledger.pub"), &trusted).unwrap();
    fs::copy(ledger.join("checkpoint"), &saved).unwrap();
    for (id, role) in [
        ("dev", "developer"),
        ("rev", "reviewer"),
        ("aud", "auditor"),
    ] {
        user(&data, id, role, Some("admin"));
    }
    ok(&["grant", "list", "--as", "admin", "--data-dir", &data]);
    Setup {
        _tmp: tmp,
        data,
        ledger,
        trusted,
        saved,
    }
}

/// An ordinary command refuses to run, and the ledger fails verification
/// with the trusted key, with and without `--since`.
fn refused_and_detected(s: &Setup, what: &str) -> String {
    let out = fails(&["grant", "list", "--as", "admin", "--data-dir", &s.data]);
    assert!(out.contains("ledger"), "{what}: {out}");
    let trusted = s.trusted.to_str().unwrap();
    let saved = s.saved.to_str().unwrap();
    let v = fails(&[
        "ledger",
        "verify",
        "--public-key",
        trusted,
        "--data-dir",
        &s.data,
    ]);
    assert!(v.contains("ledger verification FAILED"), "{what}: {v}");
    let v = fails(&[
        "ledger",
        "verify",
        "--public-key",
        trusted,
        "--since",
        saved,
        "--data-dir",
        &s.data,
    ]);
    assert!(v.contains("FAILED"), "{what}: {v}");
    out
}

fn forged_revocation(after: &Entry) -> Vec<u8> {
    let e = Entry::from_draft(
        after.index + 1,
        &after.hash(),
        EntryDraft {
            kind: "grant.revoked".into(),
            actor: "admin".into(),
            time: after.time.clone(),
            body: json!({"grant": "g-forged", "reason": "forged"}),
        },
    );
    [e.canonical_bytes(), b"\n".to_vec()].concat()
}

#[test]
fn appended_forgery_is_refused_by_ordinary_commands_and_fails_verification() {
    let s = setup();
    let all = entries(&s.ledger);
    let mut bytes = fs::read(s.ledger.join("entries.jsonl")).unwrap();
    bytes.extend(forged_revocation(all.last().unwrap()));
    fs::write(s.ledger.join("entries.jsonl"), bytes).unwrap();
    let out = refused_and_detected(&s, "appended");
    assert!(
        out.contains(&format!("entry {}", all.len())) && out.contains("unseen ledger recover"),
        "{out}"
    );
}

#[test]
fn edit_rechained_with_the_checkpoint_deleted_is_refused() {
    let s = setup();
    let all = entries(&s.ledger);
    let edited = rechained(&all, 2, |d| d.body["role"] = json!("admin"));
    fs::write(s.ledger.join("entries.jsonl"), edited).unwrap();
    fs::remove_file(s.ledger.join("checkpoint")).unwrap();
    let out = refused_and_detected(&s, "checkpoint deleted");
    assert!(
        out.contains("checkpoint") && out.contains("missing"),
        "{out}"
    );
}

#[test]
fn edit_after_an_older_checkpoint_installed_is_refused() {
    let s = setup();
    let all = entries(&s.ledger);
    let early = fs::read_to_string(&s.saved).unwrap();
    let early_size: usize = early.lines().nth(1).unwrap().parse().unwrap();
    let edited = rechained(&all, early_size, |d| d.body["role"] = json!("admin"));
    fs::write(s.ledger.join("entries.jsonl"), edited).unwrap();
    fs::write(s.ledger.join("checkpoint"), &early).unwrap();
    let out = refused_and_detected(&s, "older checkpoint");
    assert!(out.contains(&format!("entry {early_size}")), "{out}");
}

#[test]
fn deleted_key_and_checkpoint_are_refused_not_replaced() {
    let s = setup();
    fs::remove_file(s.ledger.join("ledger.key")).unwrap();
    fs::remove_file(s.ledger.join("checkpoint")).unwrap();
    let out = refused_and_detected(&s, "key deleted");
    assert!(out.contains("ledger.key is missing"), "{out}");
    assert!(!s.ledger.join("ledger.key").exists());
    assert_eq!(
        fs::read(s.ledger.join("ledger.pub")).unwrap(),
        fs::read(&s.trusted).unwrap()
    );
}

#[test]
fn ledger_recover_quarantines_the_forgery_records_it_and_verifies() {
    let s = setup();
    let all = entries(&s.ledger);
    let mut bytes = fs::read(s.ledger.join("entries.jsonl")).unwrap();
    let forged = forged_revocation(all.last().unwrap());
    bytes.extend(&forged);
    fs::write(s.ledger.join("entries.jsonl"), bytes).unwrap();
    fails(&["grant", "list", "--as", "admin", "--data-dir", &s.data]);

    // Only an admin may recover.
    let out = fails(&["ledger", "recover", "--as", "dev", "--data-dir", &s.data]);
    assert!(out.contains("recover the ledger"), "{out}");
    let out = ok(&["ledger", "recover", "--as", "admin", "--data-dir", &s.data]);
    assert!(
        out.contains(&format!("quarantined 1 entries from entry {}", all.len())),
        "{out}"
    );
    let file = out.split(" to ").nth(1).unwrap().lines().next().unwrap();
    assert_eq!(fs::read(file).unwrap(), forged);

    ok(&["grant", "list", "--as", "admin", "--data-dir", &s.data]);
    let trusted = s.trusted.to_str().unwrap();
    let saved = s.saved.to_str().unwrap();
    ok(&[
        "ledger",
        "verify",
        "--public-key",
        trusted,
        "--since",
        saved,
        "--data-dir",
        &s.data,
    ]);
    let rows = ok(&[
        "ledger",
        "query",
        "SELECT actor, quarantined_entries, first_index FROM entries WHERE kind = 'ledger.recovered'",
        "--json",
        "--public-key",
        trusted,
        "--data-dir",
        &s.data,
    ]);
    let rows: serde_json::Value = serde_json::from_str(rows.trim()).unwrap();
    assert_eq!(
        rows,
        json!([{"actor": "admin", "quarantined_entries": 1.0, "first_index": all.len() as f64}])
    );
    let again = ok(&["ledger", "recover", "--as", "admin", "--data-dir", &s.data]);
    assert!(again.contains("nothing to recover"), "{again}");
}

#[test]
fn ledger_directory_is_private_and_never_read_through_a_link() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.ledger), 0o700);
    for f in fs::read_dir(&s.ledger).unwrap() {
        let f = f.unwrap().path();
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    let entries = s.ledger.join("entries.jsonl");
    fs::remove_file(&entries).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &entries).unwrap();
    let trusted = s.trusted.to_str().unwrap();
    let out = fails(&[
        "ledger",
        "verify",
        "--public-key",
        trusted,
        "--data-dir",
        &s.data,
    ]);
    assert!(
        out.contains("ledger verification FAILED") && out.contains("symbolic link"),
        "{out}"
    );
    let out = fails(&["grant", "list", "--as", "admin", "--data-dir", &s.data]);
    assert!(out.contains("symbolic link"), "{out}");
}
