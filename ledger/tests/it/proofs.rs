//! Proof documents, `check_proof`, segments, `verify_since` and
//! equivocation, including a prover that lies.

use crate::{draft, ledger_with};
use std::fs;
use std::path::Path;
use unseen_ledger::store::{CHECKPOINT_FILE, ENTRIES_FILE, KEY_FILE, PUBLIC_KEY_FILE};
use unseen_ledger::{
    Checkpoint, ConsistencyProof, Equivocation, InclusionProof, Ledger, LedgerError, ORIGIN, Proof,
    ProofCheckError, ProofError, SegmentError, SigningKey, SinceError, Tree, check_proof,
    detect_equivocation, export_segment, verify_segment, verify_since,
};

/// Copies a ledger directory, key included, to make a twin that can be
/// driven to a different history (what a dishonest operator could do).
fn twin(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for name in [ENTRIES_FILE, CHECKPOINT_FILE, KEY_FILE, PUBLIC_KEY_FILE] {
        fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

#[test]
fn inclusion_proof_document_has_the_agreed_shape_and_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = ledger_with(tmp.path(), 37);
    let note = ledger.checkpoint_text().to_owned();
    let key = ledger.public_key();
    let doc = Proof::Inclusion(ledger.inclusion_proof_doc(11).unwrap());
    let json = doc.to_json();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["index", "kind", "leaf_hash", "path", "root", "size"]
    );
    assert_eq!(v["kind"], "inclusion");
    assert_eq!(v["index"], 11);
    assert_eq!(v["size"], 37);
    assert_eq!(v["root"], ledger.head().root_hex);
    assert_eq!(v["leaf_hash"], hex::encode(ledger.leaf_hash(11).unwrap()));

    let alone = check_proof(&json, None, None).unwrap();
    assert!(alone.checkpoint.is_none());
    assert!(alone.to_string().contains("not vouched for"), "{alone}");
    let signed = check_proof(&json, Some(&note), Some(&key)).unwrap();
    assert_eq!(signed.checkpoint.unwrap().size, 37);
    assert_eq!(signed.proof, doc);
    assert!(matches!(
        check_proof(&json, Some(&note), None),
        Err(ProofCheckError::NeedNoteAndKey)
    ));
    assert!(matches!(
        check_proof(&json, None, Some(&key)),
        Err(ProofCheckError::NeedNoteAndKey)
    ));
    let upper = json.replace(
        &hex::encode(ledger.leaf_hash(11).unwrap()),
        &hex::encode(ledger.leaf_hash(11).unwrap()).to_uppercase(),
    );
    assert!(matches!(
        check_proof(&upper, None, None),
        Err(ProofCheckError::NotAProof { .. })
    ));
    let extra = json.replacen('{', "{\"note\":1,", 1);
    assert!(matches!(
        check_proof(&extra, None, None),
        Err(ProofCheckError::NotAProof { .. })
    ));
}

#[test]
fn consistency_proof_document_ties_to_either_signed_end() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = ledger_with(tmp.path(), 13);
    let old_note = ledger.checkpoint_text().to_owned();
    for i in 13..40 {
        ledger.append(draft(i)).unwrap();
    }
    let key = ledger.public_key();
    let doc = ledger.consistency_proof_doc(13).unwrap();
    let json = Proof::Consistency(doc.clone()).to_json();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["kind"], "consistency");
    assert_eq!(
        (v["old_size"].as_u64(), v["new_size"].as_u64()),
        (Some(13), Some(40))
    );
    for k in ["old_root", "new_root", "path"] {
        assert!(v.get(k).is_some(), "{k}");
    }
    let new = check_proof(&json, Some(ledger.checkpoint_text()), Some(&key)).unwrap();
    assert_eq!(new.checkpoint.unwrap().size, 40);
    let old = check_proof(&json, Some(&old_note), Some(&key)).unwrap();
    assert_eq!(old.checkpoint.as_ref().unwrap().size, 13);
    assert!(old.to_string().starts_with("consistency proof OK"));
    // A proof from some other old size does not tie to the saved checkpoint.
    let other = Proof::Consistency(ledger.consistency_proof_doc(12).unwrap()).to_json();
    let err = check_proof(&other, Some(&old_note), Some(&key)).unwrap_err();
    assert!(
        matches!(err, ProofCheckError::NotSignedRoot { .. }),
        "{err}"
    );
}

#[test]
fn a_lying_prover_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let honest_dir = tmp.path().join("honest");
    let forked_dir = tmp.path().join("forked");
    let honest = ledger_with(&honest_dir, 20);
    let saved = honest.checkpoint_text().to_owned();
    let key = honest.public_key();
    drop(honest);
    twin(&honest_dir, &forked_dir);
    let mut honest = Ledger::open(&honest_dir).unwrap();
    let mut forked = Ledger::open(&forked_dir).unwrap();
    for i in 20..30 {
        honest.append(draft(i)).unwrap();
        let mut d = draft(i);
        d.actor = "someone-else".into();
        forked.append(d).unwrap();
    }
    let signed = honest.checkpoint_text().to_owned();

    // 1. A self-consistent proof about the forked tree: the hashes check,
    // but the root is not the one the auditor holds a signature for.
    let forked_proof = Proof::Inclusion(forked.inclusion_proof_doc(25).unwrap()).to_json();
    check_proof(&forked_proof, None, None).unwrap();
    let err = check_proof(&forked_proof, Some(&signed), Some(&key)).unwrap_err();
    assert!(
        matches!(
            err,
            ProofCheckError::NotSignedRoot {
                size: 30,
                signed_size: 30,
                ..
            }
        ),
        "{err}"
    );

    // 2. The forked leaf grafted onto the honest root and path.
    let mut grafted = honest.inclusion_proof_doc(25).unwrap();
    grafted.leaf_hash = forked.leaf_hash(25).unwrap();
    let err = check_proof(
        &Proof::Inclusion(grafted).to_json(),
        Some(&signed),
        Some(&key),
    )
    .unwrap_err();
    assert!(
        matches!(err, ProofCheckError::Invalid(ProofError::RootMismatch)),
        "{err}"
    );

    // 3. A real proof for entry 7 presented as entry 6 with entry 6's leaf.
    let mut moved = honest.inclusion_proof_doc(7).unwrap();
    moved.index = 6;
    moved.leaf_hash = honest.leaf_hash(6).unwrap();
    assert!(
        check_proof(
            &Proof::Inclusion(moved).to_json(),
            Some(&signed),
            Some(&key)
        )
        .is_err()
    );

    // 4. A proof for a smaller tree relabelled with the signed size.
    let tree = Tree::from_leaves(honest.tree().leaves()[..29].to_vec());
    let mut small = InclusionProof::build(&tree, 3, 29).unwrap();
    small.size = 30;
    assert!(
        check_proof(
            &Proof::Inclusion(small).to_json(),
            Some(&signed),
            Some(&key)
        )
        .is_err()
    );

    // 5. A consistency proof from the saved checkpoint to the forked head,
    // and one built from the forked tree but claiming the honest roots.
    let to_fork = Proof::Consistency(forked.consistency_proof_doc(20).unwrap()).to_json();
    let err = check_proof(&to_fork, Some(&signed), Some(&key)).unwrap_err();
    assert!(
        matches!(err, ProofCheckError::NotSignedRoot { .. }),
        "{err}"
    );
    assert!(
        check_proof(&to_fork, Some(&saved), Some(&key)).is_ok(),
        "the fork does extend the saved head"
    );
    let mut claimed = forked.consistency_proof_doc(20).unwrap();
    claimed.new_root = honest.tree().root();
    assert!(
        check_proof(
            &Proof::Consistency(claimed).to_json(),
            Some(&signed),
            Some(&key)
        )
        .is_err()
    );
    let mut short = honest.consistency_proof_doc(20).unwrap();
    short.path.pop();
    assert!(
        check_proof(
            &Proof::Consistency(short).to_json(),
            Some(&signed),
            Some(&key)
        )
        .is_err()
    );

    // 6. A checkpoint for the forked root signed by another key.
    let forger = SigningKey::generate().unwrap();
    let fake_note = Checkpoint {
        origin: ORIGIN.into(),
        size: 30,
        root: forked.tree().root(),
    }
    .sign(&forger)
    .unwrap();
    let err = check_proof(&forked_proof, Some(&fake_note), Some(&key)).unwrap_err();
    assert!(matches!(err, ProofCheckError::Checkpoint(_)), "{err}");
}

#[test]
fn segments_export_and_verify_for_every_kind_of_range() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = ledger_with(tmp.path(), 45);
    let key = ledger.public_key();
    for (from, to) in [(0, 1), (0, 45), (10, 11), (44, 45), (7, 30), (16, 32)] {
        let seg = ledger.export_segment(from, to).unwrap();
        let from_dir = export_segment(tmp.path(), &key, from, to).unwrap();
        assert_eq!(seg, from_dir);
        assert_eq!(seg.entries.len() as u64, to - from);
        let report = verify_segment(&seg.to_json(), &key).unwrap();
        assert_eq!(
            (report.from, report.to, report.checkpoint_size),
            (from, to, 45)
        );
        assert_eq!(report.root_hex, ledger.head().root_hex);
    }
    for (from, to) in [(3, 3), (5, 2), (40, 46)] {
        assert!(matches!(
            ledger.export_segment(from, to),
            Err(LedgerError::BadRange { .. })
        ));
        assert!(matches!(
            export_segment(tmp.path(), &key, from, to),
            Err(SegmentError::BadRange { .. })
        ));
    }
    let other = SigningKey::generate().unwrap().verifying_key();
    let seg = ledger.export_segment(5, 9).unwrap();
    assert!(matches!(
        verify_segment(&seg.to_json(), &other),
        Err(SegmentError::Checkpoint(_))
    ));
}

#[test]
fn segment_with_swapped_entries_or_proofs_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = ledger_with(tmp.path(), 30);
    let key = ledger.public_key();
    let seg = ledger.export_segment(5, 15).unwrap();

    let mut s = seg.clone();
    s.entries.swap(2, 3);
    assert!(verify_segment(&s.to_json(), &key).is_err());
    let mut s = seg.clone();
    s.entries.remove(4);
    s.to -= 1;
    assert!(verify_segment(&s.to_json(), &key).is_err());
    let mut s = seg.clone();
    s.entries.pop();
    s.to -= 1;
    assert!(matches!(
        verify_segment(&s.to_json(), &key),
        Err(SegmentError::ProofMismatch { which: "last", .. })
    ));
    let mut s = seg.clone();
    std::mem::swap(&mut s.first, &mut s.last);
    assert!(verify_segment(&s.to_json(), &key).is_err());
    // An older checkpoint of the same ledger does not match the proofs.
    let mut s = seg.clone();
    let older = tempfile::tempdir().unwrap();
    twin(tmp.path(), older.path());
    s.checkpoint = {
        let mut l = Ledger::open(older.path()).unwrap();
        l.append(draft(99)).unwrap();
        l.checkpoint_text().to_owned()
    };
    assert!(matches!(
        verify_segment(&s.to_json(), &key),
        Err(SegmentError::ProofMismatch { .. })
    ));
    // Extending the segment with an entry that is not in the signed tree.
    let mut s = seg;
    s.entries.push(s.entries[0].clone());
    assert!(verify_segment(&s.to_json(), &key).is_err());
}

#[test]
fn verify_since_detects_rollback_and_fork() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let backup = tmp.path().join("backup");
    let ledger = ledger_with(&dir, 15);
    let key = ledger.public_key();
    let at_15 = ledger.checkpoint_text().to_owned();
    drop(ledger);
    twin(&dir, &backup);
    let mut ledger = Ledger::open(&dir).unwrap();
    for i in 15..25 {
        ledger.append(draft(i)).unwrap();
    }
    let at_25 = ledger.checkpoint_text().to_owned();
    drop(ledger);

    let r = verify_since(&dir, &at_15, &key).unwrap();
    assert_eq!((r.previous_size, r.size), (15, 25));
    assert_eq!(verify_since(&dir, &at_25, &key).unwrap().size, 25);

    // Rollback: the operator restores the state of size 15.
    let rolled = tmp.path().join("rolled");
    twin(&backup, &rolled);
    let err = verify_since(&rolled, &at_25, &key).unwrap_err();
    assert!(
        matches!(
            err,
            SinceError::Rollback {
                saved_size: 25,
                current_size: 15
            }
        ),
        "{err}"
    );
    assert!(err.to_string().starts_with("ROLLBACK"));

    // Fork: from the size-15 state, a different history of 25 entries,
    // validly signed with the same key.
    let mut forked = Ledger::open(&rolled).unwrap();
    for i in 15..30 {
        let mut d = draft(i);
        d.body = serde_json::json!({"rewritten": i});
        forked.append(d).unwrap();
    }
    drop(forked);
    verify_since(&rolled, &at_15, &key).unwrap();
    let err = verify_since(&rolled, &at_25, &key).unwrap_err();
    assert!(matches!(err, SinceError::Fork { saved_size: 25 }), "{err}");
    assert!(err.to_string().starts_with("FORK"));

    // A saved checkpoint that is not from this key.
    let other = Checkpoint {
        origin: ORIGIN.into(),
        size: 3,
        root: [0; 32],
    }
    .sign(&SigningKey::generate().unwrap())
    .unwrap();
    assert!(matches!(
        verify_since(&dir, &other, &key),
        Err(SinceError::Saved(_))
    ));
}

#[test]
fn equivocation_is_detected_from_two_signed_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let a_dir = tmp.path().join("a");
    let b_dir = tmp.path().join("b");
    let ledger = ledger_with(&a_dir, 9);
    let key = ledger.public_key();
    let at_9 = ledger.checkpoint_text().to_owned();
    drop(ledger);
    twin(&a_dir, &b_dir);
    let mut a = Ledger::open(&a_dir).unwrap();
    let mut b = Ledger::open(&b_dir).unwrap();
    a.append(draft(9)).unwrap();
    b.append(draft(10)).unwrap();
    let (na, nb) = (
        a.checkpoint_text().to_owned(),
        b.checkpoint_text().to_owned(),
    );
    match detect_equivocation(&na, &nb, &key).unwrap() {
        Equivocation::Detected {
            size,
            root_a_hex,
            root_b_hex,
        } => {
            assert_eq!(size, 10);
            assert_eq!(root_a_hex, a.head().root_hex);
            assert_eq!(root_b_hex, b.head().root_hex);
        }
        other => panic!("not detected: {other:?}"),
    }
    assert_eq!(
        detect_equivocation(&na, &na, &key).unwrap(),
        Equivocation::Same { size: 10 }
    );
    assert_eq!(
        detect_equivocation(&at_9, &na, &key).unwrap(),
        Equivocation::NeedsConsistencyProof {
            old_size: 9,
            new_size: 10
        }
    );
    let other = SigningKey::generate().unwrap().verifying_key();
    assert!(detect_equivocation(&na, &nb, &other).is_err());
    // The honest consistency proof from 9 ties both ends.
    let proof = Proof::Consistency(ConsistencyProof::build(a.tree(), 9, 10).unwrap()).to_json();
    check_proof(&proof, Some(&at_9), Some(&key)).unwrap();
    check_proof(&proof, Some(&na), Some(&key)).unwrap();
    assert!(check_proof(&proof, Some(&nb), Some(&key)).is_err());
}
