//! The ledger directory: creation, durability, recovery, locking, keys.

use crate::{draft, ledger_with};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use unseen_ledger::merkle::{leaf_hash, verify_consistency, verify_inclusion};
use unseen_ledger::store::{
    CHECKPOINT_FILE, ENTRIES_FILE, KEY_FILE, PUBLIC_KEY_FILE, RECOVERED_KIND,
};
use unseen_ledger::{
    Checkpoint, EntryDraft, EntryError, KeyError, Ledger, LedgerError, ORIGIN, PublicKey,
    VerifyError, ZERO_HASH_HEX, verify_dir,
};

#[test]
fn new_directory_gets_empty_ledger_keys_and_a_verifiable_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let ledger = Ledger::open(&dir).unwrap();
    let head = ledger.head();
    assert_eq!(head.size, 0);
    assert_eq!(head.last_entry_hash_hex, ZERO_HASH_HEX);
    assert_eq!(
        head.root_hex,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(fs::read(dir.join(ENTRIES_FILE)).unwrap(), b"");
    let mode = fs::metadata(dir.join(KEY_FILE))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let pub_text = fs::read_to_string(dir.join(PUBLIC_KEY_FILE)).unwrap();
    assert_eq!(pub_text, format!("{}\n", ledger.public_key_hex()));
    let pk = PublicKey::load(&dir.join(PUBLIC_KEY_FILE)).unwrap();
    assert_eq!(
        fs::read_to_string(dir.join(CHECKPOINT_FILE)).unwrap(),
        ledger.checkpoint_text()
    );
    let report = verify_dir(&dir, &pk).unwrap();
    assert_eq!((report.size, report.root_hex), (0, head.root_hex));
}

#[test]
fn appended_entries_are_on_disk_chained_and_covered_by_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(tmp.path()).unwrap();
    let r0 = ledger.append(draft(0)).unwrap();
    let r1 = ledger.append(draft(1)).unwrap();
    assert_eq!((r0.index, r1.index), (0, 1));

    let bytes = fs::read(tmp.path().join(ENTRIES_FILE)).unwrap();
    let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
    assert_eq!(lines.len(), 2);
    let sha = |b: &[u8]| hex::encode(ring::digest::digest(&ring::digest::SHA256, b));
    assert_eq!(
        r0.entry_hash_hex,
        sha(lines[0].strip_suffix(b"\n").unwrap())
    );
    assert_eq!(
        r1.entry_hash_hex,
        sha(lines[1].strip_suffix(b"\n").unwrap())
    );

    let entries = ledger.entries().unwrap();
    assert_eq!(entries[0].prev, ZERO_HASH_HEX);
    assert_eq!(entries[1].prev, r0.entry_hash_hex);
    assert_eq!(entries[1].kind, draft(1).kind);
    assert_eq!(entries[1].body, draft(1).body);

    let head = ledger.head();
    assert_eq!(head.size, 2);
    assert_eq!(head.last_entry_hash_hex, r1.entry_hash_hex);
    let cp = Checkpoint::open(ledger.checkpoint_text(), ORIGIN, &ledger.public_key()).unwrap();
    assert_eq!((cp.size, hex::encode(cp.root)), (2, head.root_hex.clone()));
    let report = verify_dir(tmp.path(), &ledger.public_key()).unwrap();
    assert_eq!(report.root_hex, head.root_hex);
}

#[test]
fn reopening_restores_the_same_head_and_continues_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = ledger_with(tmp.path(), 20);
    let (head, key) = (ledger.head(), ledger.public_key_hex());
    drop(ledger);
    let mut again = Ledger::open(tmp.path()).unwrap();
    assert_eq!(again.head(), head);
    assert_eq!(again.public_key_hex(), key);
    let r = again.append(draft(20)).unwrap();
    assert_eq!(r.index, 20);
    assert_eq!(again.entries().unwrap()[20].prev, head.last_entry_hash_hex);
    verify_dir(tmp.path(), &again.public_key()).unwrap();
}

#[test]
fn batch_is_written_whole_or_not_at_all() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = ledger_with(tmp.path(), 2);
    let receipts = ledger.append_batch((2..12).map(draft).collect()).unwrap();
    assert_eq!(
        receipts.iter().map(|r| r.index).collect::<Vec<_>>(),
        (2..12).collect::<Vec<_>>()
    );
    assert_eq!(
        ledger.head().last_entry_hash_hex,
        receipts[9].entry_hash_hex
    );
    assert!(ledger.append_batch(Vec::new()).unwrap().is_empty());

    let before = (
        ledger.head(),
        fs::read(tmp.path().join(ENTRIES_FILE)).unwrap(),
    );
    let mut drafts: Vec<EntryDraft> = (12..16).map(draft).collect();
    drafts[2].kind.clear();
    let err = ledger.append_batch(drafts).unwrap_err();
    assert!(matches!(
        err,
        LedgerError::BadDraft {
            position: 2,
            source: EntryError::EmptyKind
        }
    ));
    assert!(err.to_string().contains("draft 2 of the batch was refused"));
    assert_eq!(
        (
            ledger.head(),
            fs::read(tmp.path().join(ENTRIES_FILE)).unwrap()
        ),
        before
    );
    verify_dir(tmp.path(), &ledger.public_key()).unwrap();
}

#[test]
fn proofs_from_the_ledger_check_against_signed_roots() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = ledger_with(tmp.path(), 13);
    let old = Checkpoint::open(ledger.checkpoint_text(), ORIGIN, &ledger.public_key()).unwrap();
    for i in 13..21 {
        ledger.append(draft(i)).unwrap();
    }
    let new = Checkpoint::open(ledger.checkpoint_text(), ORIGIN, &ledger.public_key()).unwrap();
    let proof = ledger.consistency_proof(old.size, new.size).unwrap();
    verify_consistency(old.size, new.size, &old.root, &new.root, &proof).unwrap();

    let entries = ledger.entries().unwrap();
    for (i, e) in entries.iter().enumerate() {
        let i = i as u64;
        let leaf = leaf_hash(&e_bytes(e));
        assert_eq!(ledger.leaf_hash(i), Some(leaf));
        let proof = ledger.inclusion_proof(i, new.size).unwrap();
        verify_inclusion(i, new.size, &leaf, &proof, &new.root).unwrap();
    }
    assert!(ledger.inclusion_proof(new.size, new.size).is_err());
    assert!(ledger.consistency_proof(5, new.size + 1).is_err());
}

fn e_bytes(e: &unseen_ledger::Entry) -> Vec<u8> {
    e.canonical_bytes()
}

#[test]
fn torn_last_line_is_cut_off_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = ledger_with(tmp.path(), 5);
    let pk = ledger.public_key();
    drop(ledger);
    // A crash in the middle of writing entry 5: part of a line, no newline.
    let partial = br#"{"actor":"analyst-1","body":{"n":5,"spe"#;
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(tmp.path().join(ENTRIES_FILE))
        .unwrap();
    f.write_all(partial).unwrap();
    drop(f);
    assert!(matches!(
        verify_dir(tmp.path(), &pk),
        Err(VerifyError::UnterminatedLine { index: 5 })
    ));

    let ledger = Ledger::open(tmp.path()).unwrap();
    assert_eq!(ledger.head().size, 6);
    let last = ledger.entries().unwrap().pop().unwrap();
    assert_eq!((last.index, last.kind.as_str()), (5, RECOVERED_KIND));
    assert_eq!(last.body["dropped_bytes"], partial.len());
    assert!(
        last.time.ends_with('Z') && last.time.len() == 20,
        "{}",
        last.time
    );
    let report = verify_dir(tmp.path(), &pk).unwrap();
    assert_eq!(report.size, 6);
}

#[test]
fn checkpoint_left_behind_by_a_crash_is_rewritten_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let cp_path = tmp.path().join(CHECKPOINT_FILE);
    let ledger = ledger_with(tmp.path(), 4);
    let stale = fs::read(&cp_path).unwrap();
    drop(ledger);
    let mut ledger = Ledger::open(tmp.path()).unwrap();
    ledger.append(draft(4)).unwrap();
    let pk = ledger.public_key();
    drop(ledger);
    fs::write(&cp_path, stale).unwrap();
    assert!(matches!(
        verify_dir(tmp.path(), &pk),
        Err(VerifyError::SizeMismatch {
            checkpoint: 4,
            entries: 5
        })
    ));
    let ledger = Ledger::open(tmp.path()).unwrap();
    assert_eq!(ledger.head().size, 5);
    assert_eq!(verify_dir(tmp.path(), &pk).unwrap().size, 5);
}

#[test]
fn open_refuses_when_acknowledged_entries_are_missing_or_altered() {
    let tmp = tempfile::tempdir().unwrap();
    let entries = tmp.path().join(ENTRIES_FILE);
    drop(ledger_with(tmp.path(), 6));
    let original = fs::read(&entries).unwrap();

    // Last entry cut in half: its group's intent still holds it, and the
    // open writes it back.
    fs::write(&entries, &original[..original.len() - 10]).unwrap();
    drop(Ledger::open(tmp.path()).unwrap());
    assert_eq!(fs::read(&entries).unwrap(), original);

    // Entry 1 cut in half, before the groups the intents hold: the
    // checkpoint covers 6, only 1 remains whole.
    let second_line = original.iter().position(|&b| b == b'\n').unwrap() + 1;
    fs::write(&entries, &original[..second_line + 10]).unwrap();
    let err = Ledger::open(tmp.path()).unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::CheckpointAhead {
                checkpoint: 6,
                entries: 1
            }
        ),
        "{err}"
    );

    // A byte of an entry changed: the chain breaks.
    let mut edited = original.clone();
    let pos = edited.iter().position(|&b| b == b'5').unwrap();
    edited[pos] = b'6';
    fs::write(&entries, &edited).unwrap();
    let err = Ledger::open(tmp.path()).unwrap_err();
    assert!(matches!(err, LedgerError::Damaged { .. }), "{err}");
    assert!(err.to_string().contains("restore"), "{err}");
}

#[test]
fn second_open_of_the_same_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let _first = Ledger::open(tmp.path()).unwrap();
    let err = Ledger::open(tmp.path()).unwrap_err();
    assert!(matches!(err, LedgerError::Locked { .. }), "{err}");
}

#[test]
fn key_readable_by_others_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    drop(Ledger::open(tmp.path()).unwrap());
    let key = tmp.path().join(KEY_FILE);
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let err = Ledger::open(tmp.path()).unwrap_err();
    assert!(
        matches!(err, LedgerError::Key(KeyError::TooOpen { mode: 0o644, .. })),
        "{err}"
    );
    assert!(err.to_string().contains("chmod 600"));
}

#[test]
fn replaced_signing_key_is_detected_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    drop(ledger_with(tmp.path(), 3));
    let key = tmp.path().join(KEY_FILE);
    fs::remove_file(&key).unwrap();
    let other = unseen_ledger::SigningKey::generate().unwrap();
    fs::write(&key, other.pkcs8()).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let err = Ledger::open(tmp.path()).unwrap_err();
    assert!(matches!(err, LedgerError::BadCheckpoint { .. }), "{err}");
}

#[test]
fn deleted_signing_key_is_refused_never_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = ledger_with(tmp.path(), 3);
    let public = fs::read(tmp.path().join(PUBLIC_KEY_FILE)).unwrap();
    drop(ledger);
    let key = tmp.path().join(KEY_FILE);
    fs::remove_file(&key).unwrap();
    let err = Ledger::open(tmp.path()).unwrap_err();
    assert!(
        matches!(err, LedgerError::KeyMissing { entries: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("restore ledger.key"), "{err}");
    // Nothing was created or rewritten.
    assert!(!key.exists());
    assert_eq!(fs::read(tmp.path().join(PUBLIC_KEY_FILE)).unwrap(), public);
}

const UMASK_DIR_VAR: &str = "UNSEEN_LEDGER_UMASK_DIR";

#[test]
#[ignore = "run with umask 000 as a child process by modes_are_owner_only_whatever_the_umask"]
fn umask_child_writes_a_ledger() {
    let Some(dir) = std::env::var_os(UMASK_DIR_VAR) else {
        return;
    };
    let dir = std::path::Path::new(&dir);
    let mut ledger = ledger_with(dir, 3);
    ledger.append(draft(3)).unwrap();
    drop(ledger);
    // An unproven line, so that recovery makes its quarantine file too.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(dir.join(ENTRIES_FILE))
        .unwrap();
    f.write_all(b"{\"not\":\"proven\"}\n").unwrap();
    drop(f);
    Ledger::recover(dir, "admin").unwrap();
}

#[test]
fn modes_are_owner_only_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    // A directory someone made world-writable beforehand is narrowed too.
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new("sh")
        .args(["-c", "umask 000 && exec \"$0\" \"$@\""])
        .arg(&exe)
        .args([
            "--exact",
            "files::umask_child_writes_a_ledger",
            "--ignored",
            "--test-threads=1",
        ])
        .env(UMASK_DIR_VAR, &dir)
        .status()
        .unwrap();
    assert!(status.success(), "the child failed: {status}");
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&dir), 0o700);
    let quarantine = dir.join(unseen_ledger::store::QUARANTINE_DIR);
    assert_eq!(mode(&quarantine), 0o700);
    let mut files = vec![
        dir.join(ENTRIES_FILE),
        dir.join(CHECKPOINT_FILE),
        dir.join(KEY_FILE),
        dir.join(PUBLIC_KEY_FILE),
    ];
    files.extend(
        unseen_ledger::store::INTENT_FILES
            .iter()
            .map(|f| dir.join(f)),
    );
    files.extend(
        fs::read_dir(&quarantine)
            .unwrap()
            .map(|e| e.unwrap().path()),
    );
    assert_eq!(files.len(), 7, "{files:?}");
    for f in files {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    // Every file in the directory was checked (no stray temporary files).
    let all = fs::read_dir(&dir).unwrap().count();
    assert_eq!(all, 7, "one quarantine directory and six files");
}

#[test]
fn ledger_files_are_not_read_through_links_or_past_their_size() {
    use unseen_ledger::FileError;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pk = ledger_with(dir, 3).public_key();
    let entries = dir.join(ENTRIES_FILE);
    let saved = fs::read(&entries).unwrap();

    // entries.jsonl replaced by a link to an endless device.
    fs::remove_file(&entries).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &entries).unwrap();
    let err = Ledger::open(dir).unwrap_err();
    assert!(
        matches!(err, LedgerError::File(FileError::Symlink { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("symbolic link"), "{err}");
    let err = verify_dir(dir, &pk).unwrap_err();
    assert!(
        matches!(err, VerifyError::File(FileError::Symlink { .. })),
        "{err}"
    );

    // A link to a file with the right contents is refused as well.
    let elsewhere = tmp.path().join("elsewhere.jsonl");
    fs::write(&elsewhere, &saved).unwrap();
    fs::remove_file(&entries).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &entries).unwrap();
    assert!(matches!(
        verify_dir(dir, &pk),
        Err(VerifyError::File(FileError::Symlink { .. }))
    ));
    fs::remove_file(&entries).unwrap();
    fs::write(&entries, &saved).unwrap();

    // Something that is not a regular file.
    let cp = dir.join(CHECKPOINT_FILE);
    let cp_saved = fs::read(&cp).unwrap();
    fs::remove_file(&cp).unwrap();
    fs::create_dir(&cp).unwrap();
    let err = Ledger::open(dir).unwrap_err();
    assert!(
        matches!(err, LedgerError::File(FileError::NotRegular { .. })),
        "{err}"
    );
    fs::remove_dir(&cp).unwrap();

    // A checkpoint far larger than one can be.
    fs::write(&cp, vec![b'a'; 1 << 20]).unwrap();
    let err = Ledger::open(dir).unwrap_err();
    assert!(
        matches!(err, LedgerError::File(FileError::TooLarge { .. })),
        "{err}"
    );
    assert!(matches!(
        verify_dir(dir, &pk),
        Err(VerifyError::File(FileError::TooLarge { .. }))
    ));
    fs::write(&cp, cp_saved).unwrap();

    // The secret key behind a link is refused; ledger.pub, which the
    // ledger derives from the key, is replaced by a regular file.
    let key = dir.join(KEY_FILE);
    let key_bytes = fs::read(&key).unwrap();
    let moved = tmp.path().join("moved.key");
    fs::rename(&key, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &key).unwrap();
    let err = Ledger::open(dir).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    fs::remove_file(&key).unwrap();
    fs::rename(&moved, &key).unwrap();
    let public = dir.join(PUBLIC_KEY_FILE);
    fs::remove_file(&public).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &public).unwrap();
    drop(Ledger::open(dir).unwrap());
    assert!(fs::symlink_metadata(&public).unwrap().is_file());
    assert_eq!(PublicKey::load(&public).unwrap(), pk);
    assert_eq!(fs::read(&key).unwrap(), key_bytes);
    assert_eq!(Ledger::open(dir).unwrap().size(), 3);
}
