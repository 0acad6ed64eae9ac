//! Randomised tampering: every change to entries, proofs, checkpoints and
//! segments is caught (100%, not "most").

use crate::{Rng, draft, ledger_with, slow};
use std::fs;
use unseen_ledger::store::{CHECKPOINT_FILE, ENTRIES_FILE};
use unseen_ledger::{Ledger, Proof, check_proof, verify, verify_extends, verify_segment};

fn trials() -> usize {
    if slow() { 20_000 } else { 2_000 }
}

/// `bytes` with 1 to 3 random bytes at distinct positions changed (each
/// XORed with a non-zero mask), so the copy always differs.
fn flip(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut copy = bytes.to_vec();
    let mut done = Vec::new();
    for _ in 0..=rng.below(3) {
        let pos = rng.below(copy.len() as u64) as usize;
        if done.contains(&pos) {
            continue;
        }
        done.push(pos);
        copy[pos] ^= (rng.below(255) + 1) as u8;
    }
    assert_ne!(copy, bytes);
    copy
}

#[test]
fn random_byte_flips_in_entries_and_checkpoints_are_all_caught() {
    let mut rng = Rng::from_env("random_byte_flips_in_entries");
    let tmp = tempfile::tempdir().unwrap();
    let ledger = ledger_with(tmp.path(), 60);
    let key = ledger.public_key();
    drop(ledger);
    let entries = fs::read(tmp.path().join(ENTRIES_FILE)).unwrap();
    let note = fs::read_to_string(tmp.path().join(CHECKPOINT_FILE)).unwrap();
    verify(&entries, &note, &key).unwrap();
    for _ in 0..trials() {
        let bad = flip(&mut rng, &entries);
        assert!(
            verify(&bad, &note, &key).is_err(),
            "{}",
            String::from_utf8_lossy(&bad)
        );
        let bad = flip(&mut rng, note.as_bytes());
        if let Ok(text) = std::str::from_utf8(&bad) {
            assert!(verify(&entries, text, &key).is_err(), "{text}");
        }
    }
}

#[test]
fn random_truncation_and_reordering_are_all_caught() {
    let mut rng = Rng::from_env("random_truncation_and_reordering");
    let tmp = tempfile::tempdir().unwrap();
    let ledger = ledger_with(tmp.path(), 60);
    let key = ledger.public_key();
    drop(ledger);
    let entries = fs::read(tmp.path().join(ENTRIES_FILE)).unwrap();
    let note = fs::read_to_string(tmp.path().join(CHECKPOINT_FILE)).unwrap();
    let lines: Vec<&[u8]> = entries.split_inclusive(|&b| b == b'\n').collect();
    for _ in 0..trials() / 4 {
        let cut = rng.below(entries.len() as u64) as usize;
        assert!(
            verify(&entries[..cut], &note, &key).is_err(),
            "cut at {cut}"
        );
        let (a, b) = (rng.below(60) as usize, rng.below(60) as usize);
        if a != b {
            let mut l = lines.clone();
            l.swap(a, b);
            assert!(verify(&l.concat(), &note, &key).is_err(), "swap {a} {b}");
        }
        let mut l = lines.clone();
        l.remove(a);
        assert!(verify(&l.concat(), &note, &key).is_err(), "remove {a}");
        let mut l = lines.clone();
        l.insert(a, lines[b]);
        assert!(
            verify(&l.concat(), &note, &key).is_err(),
            "duplicate {b} at {a}"
        );
    }
}

#[test]
fn random_byte_flips_in_proofs_and_segments_are_all_caught() {
    let mut rng = Rng::from_env("random_byte_flips_in_proofs");
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = ledger_with(tmp.path(), 41);
    let saved = ledger.checkpoint_text().to_owned();
    for i in 41..77 {
        ledger.append(draft(i)).unwrap();
    }
    let key = ledger.public_key();
    let note = ledger.checkpoint_text().to_owned();
    let inclusion: Vec<String> = [0, 1, 40, 63, 76]
        .iter()
        .map(|&i| Proof::Inclusion(ledger.inclusion_proof_doc(i).unwrap()).to_json())
        .collect();
    let consistency = Proof::Consistency(ledger.consistency_proof_doc(41).unwrap()).to_json();
    let segment = ledger.export_segment(30, 50).unwrap().to_json();
    for p in &inclusion {
        check_proof(p, Some(&note), Some(&key)).unwrap();
    }
    check_proof(&consistency, Some(&note), Some(&key)).unwrap();
    check_proof(&consistency, Some(&saved), Some(&key)).unwrap();
    verify_segment(&segment, &key).unwrap();

    for _ in 0..trials() {
        let p = &inclusion[rng.below(inclusion.len() as u64) as usize];
        let bad = flip(&mut rng, p.as_bytes());
        if let Ok(text) = std::str::from_utf8(&bad) {
            assert!(
                check_proof(text, Some(&note), Some(&key)).is_err(),
                "{text}"
            );
        }
        let bad = flip(&mut rng, consistency.as_bytes());
        if let Ok(text) = std::str::from_utf8(&bad) {
            // Tied to the new signed head and to the saved one.
            let new = check_proof(text, Some(&note), Some(&key));
            let old = check_proof(text, Some(&saved), Some(&key));
            assert!(new.is_err() || old.is_err(), "{text}");
        }
        let bad = flip(&mut rng, note.as_bytes());
        if let Ok(text) = std::str::from_utf8(&bad) {
            assert!(
                check_proof(&inclusion[0], Some(text), Some(&key)).is_err(),
                "{text}"
            );
        }
        let bad = flip(&mut rng, segment.as_bytes());
        if let Ok(text) = std::str::from_utf8(&bad) {
            assert!(verify_segment(text, &key).is_err(), "{text}");
        }
    }
}

#[test]
fn random_rollbacks_are_caught_by_verify_since() {
    let mut rng = Rng::from_env("random_rollbacks");
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(tmp.path()).unwrap();
    let mut states = vec![(
        fs::read(tmp.path().join(ENTRIES_FILE)).unwrap(),
        ledger.checkpoint_text().to_owned(),
    )];
    for i in 0..30 {
        ledger.append(draft(i)).unwrap();
        states.push((
            fs::read(tmp.path().join(ENTRIES_FILE)).unwrap(),
            ledger.checkpoint_text().to_owned(),
        ));
    }
    let key = ledger.public_key();
    for _ in 0..200 {
        let (a, b) = (rng.below(31) as usize, rng.below(31) as usize);
        let (entries, note) = &states[a];
        let outcome = verify_extends(entries, note, &states[b].1, &key);
        assert_eq!(
            outcome.is_ok(),
            a >= b,
            "state {a} against saved {b}: {outcome:?}"
        );
    }
}

#[test]
fn large_ledgers_checked_on_several_threads_catch_every_change() {
    let mut rng = Rng::from_env("large_ledgers");
    let (bytes, note, key) = unseen_ledger::bench::make_ledger_bytes(25_000);
    let key = key.verifying_key();
    assert!(bytes.len() > 4 << 20, "big enough to be checked on threads");
    assert_eq!(verify(&bytes, &note, &key).unwrap().size, 25_000);
    for _ in 0..20 {
        let bad = flip(&mut rng, &bytes);
        assert!(verify(&bad, &note, &key).is_err());
    }
    // Lines swapped across the middle, where the input is cut in pieces:
    // the first error is still the one at the earlier line.
    let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
    for (a, b) in [(12_499, 12_500), (100, 24_000), (12_000, 13_000)] {
        let mut l = lines.clone();
        l.swap(a, b);
        let err = verify(&l.concat(), &note, &key).unwrap_err();
        assert!(
            matches!(err, unseen_ledger::VerifyError::WrongIndex { index, .. } if index == a as u64),
            "{err}"
        );
    }
    let mut l = lines.clone();
    l.remove(12_500);
    let err = verify(&l.concat(), &note, &key).unwrap_err();
    assert!(
        matches!(
            err,
            unseen_ledger::VerifyError::WrongIndex {
                index: 12_500,
                found: 12_501
            }
        ),
        "{err}"
    );
}
