//! An insider with write access to the ledger directory, but not the key,
//! must not be able to get a forged history signed by reopening the
//! ledger: every attack below is refused on open, stays detectable by
//! `verify_dir` and `verify_since` with the trusted key, and `recover`
//! quarantines only what no signature proves.

use crate::{draft, ledger_with};
use serde_json::json;
use std::fs;
use std::path::Path;
use unseen_ledger::store::{
    CHECKPOINT_FILE, ENTRIES_FILE, INTENT_FILES, KEY_FILE, PUBLIC_KEY_FILE, QUARANTINE_DIR,
    RECOVERED_KIND,
};
use unseen_ledger::{
    Entry, EntryDraft, Hash, Ledger, LedgerError, PublicKey, verify_dir, verify_since,
};

/// The canonical lines of `entries`, re-chained from entry `from` on (each
/// `prev` recomputed), after `edit` changed entry `from`.
fn rechained(entries: &[Entry], from: usize, edit: impl FnOnce(&mut EntryDraft)) -> Vec<u8> {
    let mut edit = Some(edit);
    let mut out = Vec::new();
    let mut prev: Hash = [0; 32];
    for (i, e) in entries.iter().enumerate() {
        let mut d = EntryDraft {
            kind: e.kind.clone(),
            actor: e.actor.clone(),
            time: e.time.clone(),
            body: e.body.clone(),
        };
        if let Some(edit) = edit.take_if(|_| i == from) {
            edit(&mut d);
        }
        let entry = Entry::from_draft(i as u64, &prev, d);
        prev = entry.hash();
        out.extend_from_slice(&entry.canonical_bytes());
        out.push(b'\n');
    }
    out
}

/// A ledger of `n` entries, its trusted public key, and its checkpoint at
/// `early` entries (saved by an auditor, or kept by the attacker).
fn history(dir: &Path, n: u64, early: u64) -> (PublicKey, String) {
    let mut ledger = ledger_with(dir, early);
    let saved = ledger.checkpoint_text().to_owned();
    for i in early..n {
        ledger.append(draft(i)).unwrap();
    }
    (ledger.public_key(), saved)
}

/// Checks that opening refuses, and that verification with the trusted key
/// (alone and since the saved checkpoint) fails afterwards too.
fn refused_and_detected(dir: &Path, key: &PublicKey, saved: &str) -> LedgerError {
    let before = fs::read(dir.join(ENTRIES_FILE)).unwrap();
    let err = Ledger::open(dir).unwrap_err();
    // A second attempt refuses the same way: nothing was signed meanwhile.
    let again = Ledger::open(dir).unwrap_err();
    assert_eq!(err.to_string(), again.to_string());
    assert_eq!(fs::read(dir.join(ENTRIES_FILE)).unwrap(), before);
    assert!(verify_dir(dir, key).is_err(), "verify passed after {err}");
    assert!(
        verify_since(dir, saved, key).is_err(),
        "verify --since passed after {err}"
    );
    err
}

#[test]
fn appended_forged_entry_is_refused_not_signed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (key, saved) = history(dir, 20, 8);
    let entries = Ledger::open(dir).unwrap().entries().unwrap();
    let forged = EntryDraft {
        kind: "grant.revoked".into(),
        actor: "admin".into(),
        time: "2025-03-01T11:00:00Z".into(),
        body: json!({"grant": "g-1"}),
    };
    let last = entries.last().unwrap();
    let e = Entry::from_draft(20, &last.hash(), forged);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(dir.join(ENTRIES_FILE))
        .unwrap();
    std::io::Write::write_all(&mut f, &[e.canonical_bytes(), b"\n".to_vec()].concat()).unwrap();
    drop(f);

    let err = refused_and_detected(dir, &key, &saved);
    assert!(
        matches!(
            err,
            LedgerError::Unproven {
                first: 20,
                entries: 21,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("entry 20") && text.contains("unseen ledger recover"),
        "{text}"
    );
}

#[test]
fn edited_and_rechained_entries_with_the_checkpoint_deleted_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (key, saved) = history(dir, 20, 8);
    let entries = Ledger::open(dir).unwrap().entries().unwrap();
    let edited = rechained(&entries, 12, |d| d.body["spend"]["epsilon"] = json!(0.0));
    fs::write(dir.join(ENTRIES_FILE), edited).unwrap();
    fs::remove_file(dir.join(CHECKPOINT_FILE)).unwrap();

    let err = refused_and_detected(dir, &key, &saved);
    assert!(
        matches!(err, LedgerError::CheckpointMissing { entries: 20, .. }),
        "{err}"
    );
    // The checkpoint is not recreated.
    assert!(!dir.join(CHECKPOINT_FILE).exists());
}

#[test]
fn edit_after_an_older_checkpoint_with_that_checkpoint_installed_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (key, saved) = history(dir, 20, 8);
    let entries = Ledger::open(dir).unwrap().entries().unwrap();
    // Every entry after the old checkpoint, down to the last one, which the
    // most recent write-ahead record lists.
    for at in [8, 12, 19] {
        let edited = rechained(&entries, at, |d| d.body["spend"]["epsilon"] = json!(0.0));
        fs::write(dir.join(ENTRIES_FILE), edited).unwrap();
        fs::write(dir.join(CHECKPOINT_FILE), &saved).unwrap();
        let err = refused_and_detected(dir, &key, &saved);
        match err {
            LedgerError::Unproven {
                first, entries: 20, ..
            } => assert!(
                first <= at as u64,
                "entry {at} edited, {first} is the first unproven"
            ),
            other => panic!("entry {at}: {other}"),
        }
    }
}

#[test]
fn deleted_key_and_checkpoint_are_refused_never_a_fresh_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (key, saved) = history(dir, 20, 8);
    let public = fs::read(dir.join(PUBLIC_KEY_FILE)).unwrap();
    fs::remove_file(dir.join(KEY_FILE)).unwrap();
    fs::remove_file(dir.join(CHECKPOINT_FILE)).unwrap();

    let err = refused_and_detected(dir, &key, &saved);
    assert!(
        matches!(err, LedgerError::KeyMissing { entries: 20, .. }),
        "{err}"
    );
    assert!(!dir.join(KEY_FILE).exists() && !dir.join(CHECKPOINT_FILE).exists());
    assert_eq!(fs::read(dir.join(PUBLIC_KEY_FILE)).unwrap(), public);
    // Recovery needs the key too.
    assert!(matches!(
        Ledger::recover(dir, "admin"),
        Err(LedgerError::KeyMissing { .. })
    ));
}

#[test]
fn intents_signed_by_another_key_prove_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (key, saved) = history(dir, 10, 10);
    // The attacker appends an entry and writes an intent for it with a key
    // of their own, in the ledger's exact format.
    let mut other = Ledger::open(tmp.path().join("other").as_path()).unwrap();
    for i in 0..10 {
        other.append(draft(i)).unwrap();
    }
    drop(other);
    let ours = fs::read(dir.join(ENTRIES_FILE)).unwrap();
    let theirs = fs::read(tmp.path().join("other").join(ENTRIES_FILE)).unwrap();
    assert_eq!(ours, theirs, "same drafts, same times: same entries");
    let mut attacker = Ledger::open(tmp.path().join("other").as_path()).unwrap();
    attacker.append(draft(99)).unwrap();
    drop(attacker);
    for f in [ENTRIES_FILE, INTENT_FILES[0], INTENT_FILES[1]] {
        fs::copy(tmp.path().join("other").join(f), dir.join(f)).unwrap();
    }
    let err = refused_and_detected(dir, &key, &saved);
    assert!(
        matches!(err, LedgerError::Unproven { first: 10, .. }),
        "{err}"
    );
}

#[test]
fn recover_quarantines_the_unproven_tail_and_records_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (key, saved) = history(dir, 20, 8);
    let entries = Ledger::open(dir).unwrap().entries().unwrap();
    let proven = fs::read(dir.join(ENTRIES_FILE)).unwrap();
    // Entries 8.. edited and re-chained, the old checkpoint installed, and
    // a torn line at the end for good measure.
    let mut edited = rechained(&entries, 8, |d| d.body["secret"] = json!("s3cr3t-value"));
    edited.extend_from_slice(b"{\"actor\":\"x");
    fs::write(dir.join(ENTRIES_FILE), &edited).unwrap();
    fs::write(dir.join(CHECKPOINT_FILE), &saved).unwrap();
    assert!(matches!(
        Ledger::open(dir),
        Err(LedgerError::Unproven { first: 8, .. })
    ));

    let (ledger, report) = Ledger::recover(dir, "admin-ana").unwrap();
    let report = report.expect("something was quarantined");
    assert_eq!((report.first_index, report.entries), (8, 12));
    let cut = &edited[line_start(&edited, 8)..];
    assert_eq!(report.bytes, cut.len() as u64);
    assert_eq!(fs::read(&report.file).unwrap(), cut);
    assert!(report.file.starts_with(dir.join(QUARANTINE_DIR)));

    // Entries 0..8 are kept as they were, then one record of the cut.
    let now = ledger.entries().unwrap();
    assert_eq!(now.len(), 9);
    assert_eq!(&now[..8], &entries[..8]);
    let rec = &now[8];
    assert_eq!(
        (rec.kind.as_str(), rec.actor.as_str()),
        (RECOVERED_KIND, "admin-ana")
    );
    assert_eq!(rec.body["first_index"], 8);
    assert_eq!(rec.body["quarantined_entries"], 12);
    assert_eq!(rec.body["sha256"], report.sha256_hex);
    // Counts and hashes, never what the entries said.
    assert!(!rec.body.to_string().contains("s3cr3t"));
    drop(ledger);

    assert_eq!(verify_dir(dir, &key).unwrap().size, 9);
    assert_eq!(verify_since(dir, &saved, &key).unwrap().size, 9);
    let mut again = Ledger::open(dir).unwrap();
    again.append(draft(50)).unwrap();
    drop(again);
    assert_eq!(verify_dir(dir, &key).unwrap().size, 10);
    assert!(
        fs::read(dir.join(ENTRIES_FILE))
            .unwrap()
            .starts_with(&proven[..line_start(&proven, 8)])
    );

    // Nothing left to recover: recover is then an ordinary open.
    let (l, nothing) = Ledger::recover(dir, "admin-ana").unwrap();
    assert!(nothing.is_none());
    assert_eq!(l.size(), 10);
}

#[test]
fn recover_never_cuts_signed_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    history(dir, 12, 12);
    let entries = Ledger::open(dir).unwrap().entries().unwrap();
    let edited = rechained(&entries, 5, |d| d.body["n"] = json!(500));
    fs::write(dir.join(ENTRIES_FILE), &edited).unwrap();
    let err = Ledger::recover(dir, "admin").unwrap_err();
    assert!(
        matches!(err, LedgerError::CheckpointMismatch { size: 12 }),
        "{err}"
    );
    assert_eq!(fs::read(dir.join(ENTRIES_FILE)).unwrap(), edited);
    assert!(!dir.join(QUARANTINE_DIR).exists());
}

#[test]
fn recover_with_the_checkpoint_deleted_keeps_what_intents_prove() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (key, _) = history(dir, 20, 8);
    fs::remove_file(dir.join(CHECKPOINT_FILE)).unwrap();
    assert!(matches!(
        Ledger::open(dir),
        Err(LedgerError::CheckpointMissing { .. })
    ));
    // The last group's intent proves every entry (its base root commits to
    // all before it): nothing is cut, the checkpoint is signed again.
    let (ledger, report) = Ledger::recover(dir, "admin").unwrap();
    assert!(report.is_none(), "{report:?}");
    assert_eq!(ledger.size(), 20);
    drop(ledger);
    assert_eq!(verify_dir(dir, &key).unwrap().size, 20);
}

/// Byte offset of line `index` (`index` > 0).
fn line_start(bytes: &[u8], index: usize) -> usize {
    let newline = bytes
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .nth(index - 1)
        .unwrap();
    newline.0 + 1
}

#[test]
fn an_interrupted_recovery_is_recorded_by_the_next_open() {
    use unseen_ledger::store::RECOVERY_FILE;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (key, _) = history(dir, 6, 6);
    let kept = fs::read(dir.join(ENTRIES_FILE)).unwrap();
    // The state `recover` leaves if the process dies after cutting the
    // tail, before its record is appended: the note says what was cut.
    let note = json!({
        "dropped_bytes": 321,
        "kept_len": kept.len(),
        "quarantine": {
            "file": "quarantine/entries-from-6-1.jsonl",
            "first_index": 6,
            "entries": 2,
            "sha256": "ab".repeat(32),
            "actor": "admin-ana",
        },
    });
    fs::write(dir.join(RECOVERY_FILE), format!("{note}\n")).unwrap();
    let ledger = Ledger::open(dir).unwrap();
    let last = ledger.entries().unwrap().pop().unwrap();
    assert_eq!((last.index, last.kind.as_str()), (6, RECOVERED_KIND));
    assert_eq!(last.actor, "admin-ana");
    assert_eq!(last.body["quarantined_entries"], 2);
    assert_eq!(last.body["file"], "quarantine/entries-from-6-1.jsonl");
    drop(ledger);
    assert!(!dir.join(RECOVERY_FILE).exists());
    // Recorded once: opening again adds nothing.
    assert_eq!(Ledger::open(dir).unwrap().size(), 7);
    assert_eq!(verify_dir(dir, &key).unwrap().size, 7);
}
