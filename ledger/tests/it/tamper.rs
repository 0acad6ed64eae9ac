//! Offline verification catches every change to a ledger.

use crate::ledger_with;
use std::fs;
use unseen_ledger::store::{CHECKPOINT_FILE, ENTRIES_FILE};
use unseen_ledger::{Checkpoint, Entry, ORIGIN, PublicKey, SigningKey, VerifyError, verify};

struct Fixture {
    entries: Vec<u8>,
    checkpoint: String,
    key: PublicKey,
    _dir: tempfile::TempDir,
}

fn fixture(n: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_with(dir.path(), n);
    let key = ledger.public_key();
    drop(ledger);
    Fixture {
        entries: fs::read(dir.path().join(ENTRIES_FILE)).unwrap(),
        checkpoint: fs::read_to_string(dir.path().join(CHECKPOINT_FILE)).unwrap(),
        key,
        _dir: dir,
    }
}

fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

#[test]
fn untouched_ledger_verifies() {
    let f = fixture(50);
    let report = verify(&f.entries, &f.checkpoint, &f.key).unwrap();
    assert_eq!(report.size, 50);
}

/// Bytes are changed one at a time, in a copy, by XOR with the lowest bit
/// and the ASCII case bit; `UNSEEN_SLOW_TESTS=1` adds the top bit (which
/// breaks UTF-8).
fn masks() -> &'static [u8] {
    if std::env::var_os("UNSEEN_SLOW_TESTS").is_some() {
        &[0x01, 0x20, 0x80]
    } else {
        &[0x01, 0x20]
    }
}

#[test]
fn changing_any_byte_of_the_entries_fails_verification() {
    let f = fixture(50);
    let mut copy = f.entries.clone();
    for pos in 0..copy.len() {
        for &mask in masks() {
            copy[pos] ^= mask;
            assert!(
                verify(&copy, &f.checkpoint, &f.key).is_err(),
                "byte {pos} ^ {mask:#04x} went unnoticed"
            );
            copy[pos] ^= mask;
        }
    }
}

#[test]
fn changing_any_byte_of_the_checkpoint_fails_verification() {
    let f = fixture(50);
    let mut copy = f.checkpoint.clone().into_bytes();
    for pos in 0..copy.len() {
        for &mask in masks() {
            copy[pos] ^= mask;
            // Bytes that are not UTF-8 cannot even be read as a checkpoint.
            if let Ok(text) = std::str::from_utf8(&copy) {
                assert!(
                    verify(&f.entries, text, &f.key).is_err(),
                    "checkpoint byte {pos} ^ {mask:#04x} went unnoticed"
                );
            }
            copy[pos] ^= mask;
        }
    }
}

#[test]
fn dropping_entries_fails_verification() {
    let f = fixture(50);
    let l = lines(&f.entries);
    let without_last = l[..49].concat();
    let err = verify(&without_last, &f.checkpoint, &f.key).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::SizeMismatch {
                checkpoint: 50,
                entries: 49
            }
        ),
        "{err}"
    );

    let without_first = l[1..].concat();
    let err = verify(&without_first, &f.checkpoint, &f.key).unwrap_err();
    assert!(
        matches!(err, VerifyError::WrongIndex { index: 0, found: 1 }),
        "{err}"
    );

    let without_middle = [&l[..20], &l[21..]].concat().concat();
    let err = verify(&without_middle, &f.checkpoint, &f.key).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::WrongIndex {
                index: 20,
                found: 21
            }
        ),
        "{err}"
    );

    let no_newline = &f.entries[..f.entries.len() - 1];
    let err = verify(no_newline, &f.checkpoint, &f.key).unwrap_err();
    assert!(
        matches!(err, VerifyError::UnterminatedLine { index: 49 }),
        "{err}"
    );
}

#[test]
fn reordering_entries_fails_verification() {
    let f = fixture(50);
    let mut l = lines(&f.entries);
    l.swap(10, 11);
    let err = verify(&l.concat(), &f.checkpoint, &f.key).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::WrongIndex {
                index: 10,
                found: 11
            }
        ),
        "{err}"
    );
}

#[test]
fn a_rewritten_entry_is_reported_by_index() {
    let f = fixture(50);
    let mut l = lines(&f.entries);
    let mut e = Entry::parse_line(l[17].strip_suffix(b"\n").unwrap()).unwrap();
    e.prev = "ab".repeat(32);
    l[17] = [e.canonical_bytes(), b"\n".to_vec()].concat();
    let err = verify(&l.concat(), &f.checkpoint, &f.key).unwrap_err();
    assert_eq!(
        err.to_string(),
        "entry 17: prev hash does not match entry 16; the ledger was altered at or before entry 17"
    );

    // Re-chaining everything after an edit still breaks the signed root.
    let mut l = lines(&f.entries);
    let mut prev = None;
    for line in l.iter_mut().skip(30) {
        let mut e = Entry::parse_line(line.strip_suffix(b"\n").unwrap()).unwrap();
        if let Some(p) = prev {
            e.prev = p;
        } else {
            e.body["n"] = serde_json::json!(999);
        }
        prev = Some(hex::encode(e.hash()));
        *line = [e.canonical_bytes(), b"\n".to_vec()].concat();
    }
    let err = verify(&l.concat(), &f.checkpoint, &f.key).unwrap_err();
    assert!(
        matches!(err, VerifyError::RootMismatch { size: 50 }),
        "{err}"
    );
}

#[test]
fn non_canonical_but_equivalent_line_fails_verification() {
    let f = fixture(3);
    let text = String::from_utf8(f.entries.clone()).unwrap();
    let spaced = text.replacen("\"actor\":", "\"actor\": ", 1);
    let err = verify(spaced.as_bytes(), &f.checkpoint, &f.key).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("entry 0: bytes differ from the canonical encoding"),
        "{err}"
    );
}

#[test]
fn checkpoint_signed_by_another_key_fails_verification() {
    let f = fixture(50);
    let cp = Checkpoint::open(&f.checkpoint, ORIGIN, &f.key).unwrap();
    let forger = SigningKey::generate().unwrap();
    let forged = cp.sign(&forger).unwrap();
    let err = verify(&f.entries, &forged, &f.key).unwrap_err();
    assert!(
        err.to_string()
            .contains("no signature by key `unseen.local/ledger`"),
        "{err}"
    );
    // And the real checkpoint does not verify under the forger's key.
    assert!(verify(&f.entries, &f.checkpoint, &forger.verifying_key()).is_err());
}

#[test]
fn empty_ledger_with_its_checkpoint_verifies_and_with_a_later_one_does_not() {
    let f = fixture(2);
    let key = SigningKey::generate().unwrap();
    let empty = Checkpoint {
        origin: ORIGIN.into(),
        size: 0,
        root: unseen_ledger::merkle::empty_root(),
    };
    assert_eq!(
        verify(b"", &empty.sign(&key).unwrap(), &key.verifying_key())
            .unwrap()
            .size,
        0
    );
    assert!(matches!(
        verify(b"", &f.checkpoint, &f.key),
        Err(VerifyError::SizeMismatch {
            checkpoint: 2,
            entries: 0
        })
    ));
}
