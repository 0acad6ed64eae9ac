//! Witnesses against the insider who holds `ledger.key`: they rewrite an
//! early entry, re-chain everything after it and sign a fresh checkpoint
//! with the ledger's own key. Verification with that key alone cannot tell;
//! the witness refuses to co-sign the fork, and verification that demands
//! the witness's co-signature fails.

use std::fs;
use std::path::Path;

use crate::support::{entries, fails, ok, rechained};
use unseen_ledger::witness::WitnessDir;
use unseen_ledger::{Checkpoint, ORIGIN, PublicKey, SigningKey, merkle};

fn add_user(data: &str, id: &str, role: &str) {
    ok(&[
        "user",
        "add",
        "--id",
        id,
        "--name",
        "N",
        "--role",
        role,
        "--as",
        "admin",
        "--data-dir",
        data,
    ]);
}

/// The insider's rewrite: entry `at` gets another actor, later entries are
/// re-chained and the checkpoint re-signed with `ledger.key`.
fn rewrite_with_the_key(ledger: &Path, at: usize) {
    let out = rechained(&entries(ledger), at, |d| d.actor = "someone-else".into());
    let leaves = unseen_ledger::proof::leaf_hashes(&out).unwrap();
    let key = SigningKey::load(&ledger.join("ledger.key")).unwrap();
    let note = Checkpoint {
        origin: ORIGIN.into(),
        size: leaves.len() as u64,
        root: merkle::root(&leaves),
    }
    .sign(&key)
    .unwrap();
    fs::write(ledger.join("entries.jsonl"), out).unwrap();
    fs::write(ledger.join("checkpoint"), note).unwrap();
}

/// A data directory with its first admin.
fn data_dir_with_admin(tmp: &tempfile::TempDir) -> String {
    let data = tmp.path().join("d").to_str().unwrap().to_string();
    ok(&[
        "user",
        "add",
        "--id",
        "admin",
        "--name",
        "A",
        "--role",
        "admin",
        "--data-dir",
        &data,
    ]);
    data
}

/// `witness` serving the log of `log_key` on a free port.
fn serve_witness(witness: WitnessDir, log_key: PublicKey) -> unseen::server::Background {
    unseen::server::Background::start_router(
        unseen::witness::witness_router(witness, log_key),
        Default::default(),
    )
    .unwrap()
}

#[test]
fn a_history_rewritten_with_the_ledger_key_is_caught_by_the_witness() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir_with_admin(&tmp);
    add_user(&data, "dev", "developer");
    let ledger = Path::new(&data).join("ledger");

    let wdir = tmp.path().join("witness");
    let init = ok(&[
        "witness",
        "init",
        "--dir",
        wdir.to_str().unwrap(),
        "--name",
        "witness.test",
    ]);
    let vkey = init.lines().next().unwrap().to_string();
    assert_eq!(
        ok(&["witness", "key", "--dir", wdir.to_str().unwrap()]).trim(),
        vkey
    );
    let log_key = PublicKey::load(&ledger.join("ledger.pub")).unwrap();
    let server = serve_witness(WitnessDir::open(&wdir).unwrap(), log_key);
    let url = server.url();

    let first = ok(&[
        "ledger",
        "witness",
        "--url",
        &url,
        "--witness-key",
        &vkey,
        "--data-dir",
        &data,
    ]);
    assert!(first.contains("it held 0 before"), "{first}");
    add_user(&data, "rev", "reviewer");
    let second = ok(&[
        "ledger",
        "witness",
        "--url",
        &url,
        "--witness-key",
        &vkey,
        "--json",
        "--data-dir",
        &data,
    ]);
    let second: serde_json::Value = serde_json::from_str(&second).unwrap();
    assert!(second["from_size"].as_u64().unwrap() > 0, "{second}");
    let witnessed_size = second["size"].as_u64().unwrap();
    let fine = ok(&[
        "ledger",
        "verify",
        "--witness-key",
        &vkey,
        "--data-dir",
        &data,
    ]);
    assert!(fine.contains("witness `witness.test` co-signed"), "{fine}");
    ok(&[
        "ledger",
        "verify",
        "--witness-key",
        &vkey,
        "--witnessed",
        &url,
        "--data-dir",
        &data,
    ]);

    rewrite_with_the_key(&ledger, 1);
    // The ledger's key alone cannot tell: the rewrite is signed with it.
    let alone = ok(&["ledger", "verify", "--data-dir", &data]);
    assert!(alone.contains("ledger OK"), "{alone}");
    // Demanding the witness's co-signature catches it, from the copy
    // beside the ledger and from the witness itself.
    for extra in [vec![], vec!["--witnessed", url.as_str()]] {
        let mut args = vec![
            "ledger",
            "verify",
            "--witness-key",
            &vkey,
            "--data-dir",
            &data,
        ];
        args.extend(extra);
        let caught = fails(&args);
        assert!(caught.contains("FAILED against the witness"), "{caught}");
        assert!(
            caught.contains(&format!("size {witnessed_size}")),
            "{caught}"
        );
    }
    // The witness refuses to co-sign the forked history.
    let refused = fails(&[
        "ledger",
        "witness",
        "--url",
        &url,
        "--witness-key",
        &vkey,
        "--data-dir",
        &data,
    ]);
    assert!(
        refused.contains("422") && refused.contains("fork"),
        "{refused}"
    );
    let latest = WitnessDir::open(&wdir)
        .unwrap()
        .latest(ORIGIN, &log_key)
        .unwrap()
        .unwrap()
        .1;
    assert_eq!(latest.size, witnessed_size);
}

#[test]
fn witness_keys_and_requests_that_are_wrong_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir_with_admin(&tmp);
    let bad = fails(&[
        "ledger",
        "verify",
        "--witness-key",
        "not-a-key",
        "--data-dir",
        &data,
    ]);
    assert!(
        bad.contains("expect `<name>+<hex key id>+<base64 key>`"),
        "{bad}"
    );
    let wdir = tmp.path().join("w");
    let vkey = ok(&[
        "witness",
        "init",
        "--dir",
        wdir.to_str().unwrap(),
        "--name",
        "w.test",
    ]);
    let vkey = vkey.lines().next().unwrap();
    let none = fails(&[
        "ledger",
        "verify",
        "--witness-key",
        vkey,
        "--data-dir",
        &data,
    ]);
    assert!(none.contains("run `unseen ledger witness` first"), "{none}");
    let again = fails(&[
        "witness",
        "init",
        "--dir",
        wdir.to_str().unwrap(),
        "--name",
        "w.test",
    ]);
    assert!(again.contains("witness.key"), "{again}");
    // A witness for another ledger refuses this one's checkpoints.
    let other = SigningKey::generate().unwrap().verifying_key();
    let server = serve_witness(WitnessDir::open(&wdir).unwrap(), other);
    let refused = fails(&[
        "ledger",
        "witness",
        "--url",
        &server.url(),
        "--witness-key",
        vkey,
        "--data-dir",
        &data,
    ]);
    assert!(refused.contains("403"), "{refused}");
}

#[test]
fn serve_with_a_witness_keeps_the_ledger_co_signed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir_with_admin(&tmp);
    let ledger = Path::new(&data).join("ledger");
    let wdir = tmp.path().join("w");
    let witness = WitnessDir::init(&wdir, "w.test").unwrap();
    let key = witness.witness_key();
    let log_key = PublicKey::load(&ledger.join("ledger.pub")).unwrap();
    let server = serve_witness(witness, log_key);
    let domain = std::sync::Arc::new(unseen::Domain::open(Path::new(&data)).unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.spawn(unseen::witness::keep_witnessed(
        std::sync::Arc::clone(&domain),
        server.url(),
        key.clone(),
        std::time::Duration::from_millis(20),
    ));
    domain
        .record("admin", "test.event", serde_json::json!({"n": 1}))
        .unwrap();
    let size = domain.ledger_head().unwrap().size;
    // Liveness only: wait until the background task has caught up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let cosigned = unseen_ledger::witness::load_cosigned(&ledger, &key).unwrap();
        if cosigned.as_ref().is_some_and(|(_, cp)| cp.size == size) {
            let (note, _) = cosigned.unwrap();
            unseen_ledger::witness::open_cosigned(&note, ORIGIN, &log_key, &key).unwrap();
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never co-signed size {size}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
