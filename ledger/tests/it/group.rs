//! Group commit from many threads, and crashes at every byte of a write.

use crate::{draft, ledger_with};
use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use unseen_ledger::store::{
    CHECKPOINT_FILE, ENTRIES_FILE, INTENT_FILES, RECOVERED_KIND, RECOVERY_FILE,
};
use unseen_ledger::{EntryDraft, EntryError, Ledger, LedgerError, SharedLedger, verify_dir};

#[test]
fn many_threads_append_at_once_and_every_receipt_is_durable_and_distinct() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = Arc::new(SharedLedger::open(tmp.path()).unwrap());
    let (threads, each) = (8u64, 60u64);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                (0..each)
                    .map(|i| {
                        let mut d = draft(i);
                        d.actor = format!("thread-{t}");
                        d.body = serde_json::json!({"thread": t, "i": i});
                        (t, i, shared.append(d).unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let receipts: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let total = threads * each;
    let indices: HashSet<u64> = receipts.iter().map(|(_, _, r)| r.index).collect();
    assert_eq!(indices, (0..total).collect::<HashSet<_>>());

    let stats = shared.stats();
    assert_eq!(stats.entries, total);
    assert!(stats.groups >= 1 && stats.groups <= total, "{stats:?}");
    eprintln!(
        "{total} appends in {} groups (largest {})",
        stats.groups, stats.largest
    );

    let head = shared.head().unwrap();
    assert_eq!(head.size, total);
    let key = shared.public_key().unwrap();
    let ledger = Arc::into_inner(shared).unwrap().into_inner().unwrap();
    let entries = ledger.entries().unwrap();
    for (t, i, r) in &receipts {
        let e = &entries[r.index as usize];
        assert_eq!(hex::encode(e.hash()), r.entry_hash_hex);
        assert_eq!(e.body, serde_json::json!({"thread": t, "i": i}));
    }
    // Each thread's entries are in the order it appended them.
    for t in 0..threads {
        let mine: Vec<u64> = receipts
            .iter()
            .filter(|(tt, _, _)| *tt == t)
            .map(|(_, _, r)| r.index)
            .collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]));
    }
    assert_eq!(verify_dir(tmp.path(), &key).unwrap().size, total);
}

#[test]
fn a_refused_draft_fails_alone_in_a_busy_group() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = Arc::new(SharedLedger::open(tmp.path()).unwrap());
    let handles: Vec<_> = (0..6u64)
        .map(|t| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                for i in 0..30u64 {
                    let mut d = draft(i);
                    if t == 0 && i % 3 == 0 {
                        d.kind.clear();
                    }
                    outcomes.push((t == 0 && i % 3 == 0, shared.append(d)));
                }
                outcomes
            })
        })
        .collect();
    let mut ok = 0;
    for h in handles {
        for (bad, outcome) in h.join().unwrap() {
            match (bad, outcome) {
                (
                    true,
                    Err(LedgerError::BadDraft {
                        position: 0,
                        source: EntryError::EmptyKind,
                    }),
                ) => {}
                (false, Ok(_)) => ok += 1,
                (bad, other) => panic!("bad={bad}: {other:?}"),
            }
        }
    }
    assert_eq!(ok, 180 - 10);
    let key = shared.public_key().unwrap();
    // The checkpoint file is written beside the appends; settle waits for it.
    shared.settle().unwrap();
    assert_eq!(verify_dir(tmp.path(), &key).unwrap().size, ok);
}

#[test]
fn shared_ledger_answers_reads_and_signs() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = SharedLedger::open(tmp.path()).unwrap();
    shared.append(draft(0)).unwrap();
    shared.append(draft(1)).unwrap();
    let key = shared.public_key().unwrap();
    assert!(key.verify(b"m", &shared.sign(b"m").unwrap()));
    let note = shared.checkpoint_text().unwrap();
    assert!(note.starts_with("unseen.local/ledger\n2\n"));
    assert_eq!(shared.inclusion_proof(1, 2).unwrap().len(), 1);
    assert_eq!(shared.consistency_proof(1, 2).unwrap().len(), 1);
    assert_eq!(shared.with(Ledger::size).unwrap(), 2);
}

/// Writes a ledger directory state: `entries` and `checkpoint` bytes.
fn set_state(dir: &Path, entries: &[u8], checkpoint: &[u8]) {
    fs::write(dir.join(ENTRIES_FILE), entries).unwrap();
    fs::write(dir.join(CHECKPOINT_FILE), checkpoint).unwrap();
}

fn recovered_entries(dir: &Path) -> Vec<unseen_ledger::Entry> {
    Ledger::open(dir).unwrap().entries().unwrap()
}

fn intent_files(dir: &Path) -> Vec<Vec<u8>> {
    INTENT_FILES
        .iter()
        .map(|f| fs::read(dir.join(f)).unwrap())
        .collect()
}

#[test]
fn crash_at_every_byte_of_a_group_write_recovers_every_acknowledged_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ledger = ledger_with(dir, 10);
    let key = ledger.public_key();
    drop(ledger);
    let acked = fs::read(dir.join(ENTRIES_FILE)).unwrap();
    let old_cp = fs::read(dir.join(CHECKPOINT_FILE)).unwrap();
    let old_intents = intent_files(dir);
    let mut ledger = Ledger::open(dir).unwrap();
    ledger.append_batch((10..13).map(draft).collect()).unwrap();
    drop(ledger);
    let full = fs::read(dir.join(ENTRIES_FILE)).unwrap();
    let new_cp = fs::read(dir.join(CHECKPOINT_FILE)).unwrap();
    // The group's write-ahead record, holding its lines, is written and
    // synced before any of them: part of the state at every crash point.
    let new_intents = intent_files(dir);
    let tail = &full[acked.len()..];
    let (acked_entries, all_entries) = {
        set_state(dir, &full, &new_cp);
        let all = Ledger::open(dir).unwrap().entries().unwrap();
        (all[..10].to_vec(), all)
    };

    for cut in 0..=tail.len() {
        // The process died with `cut` bytes of the group written; the
        // checkpoint is replaced only after the whole group is durable.
        for cp in [&old_cp, &new_cp] {
            if cp == &new_cp && cut < tail.len() {
                continue;
            }
            // With the group's intent durable, the group is restored whole
            // (its callers may have been answered already).
            let _ = fs::remove_file(dir.join(RECOVERY_FILE));
            let state = [&acked[..], &tail[..cut]].concat();
            set_state(dir, &state, cp);
            for (f, bytes) in INTENT_FILES.iter().zip(&new_intents) {
                fs::write(dir.join(f), bytes).unwrap();
            }
            assert_eq!(recovered_entries(dir), all_entries, "cut {cut}");
            assert_eq!(fs::read(dir.join(ENTRIES_FILE)).unwrap(), full);
            verify_dir(dir, &key).unwrap();

            // Bytes with no durable intent behind them were never
            // acknowledged: a torn line is cut off and the cut recorded.
            if cp == &new_cp {
                continue;
            }
            set_state(dir, &state, cp);
            for (f, bytes) in INTENT_FILES.iter().zip(&old_intents) {
                fs::write(dir.join(f), bytes).unwrap();
            }
            let whole = tail[..cut].iter().filter(|&&b| b == b'\n').count();
            let torn = cut
                - tail[..cut]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
            if whole > 0 {
                // Whole lines no intent proves are refused, as forgeries are.
                assert!(
                    matches!(
                        Ledger::open(dir),
                        Err(LedgerError::Unproven { first: 10, .. })
                    ),
                    "cut {cut}"
                );
                continue;
            }
            let entries = recovered_entries(dir);
            assert_eq!(&entries[..10], &acked_entries[..], "cut {cut}");
            if torn > 0 {
                assert_eq!(entries.len(), 11, "cut {cut}");
                let last = entries.last().unwrap();
                assert_eq!(last.kind, RECOVERED_KIND);
                assert_eq!(last.body["dropped_bytes"], torn);
            } else {
                assert_eq!(entries.len(), 10, "cut {cut}");
            }
            assert!(!dir.join(RECOVERY_FILE).exists());
            verify_dir(dir, &key).unwrap();
        }
    }
}

#[test]
fn entries_the_disk_lost_are_restored_from_the_last_two_intents() {
    // The machine (not only the process) went down: the last groups' lines
    // had been written but not yet synced, and are gone from the file,
    // while their intents, synced before any caller was answered, are not.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut ledger = ledger_with(dir, 10);
    let key = ledger.public_key();
    let synced = fs::read(dir.join(ENTRIES_FILE)).unwrap();
    let cp = fs::read(dir.join(CHECKPOINT_FILE)).unwrap();
    ledger.append_batch((10..14).map(draft).collect()).unwrap();
    ledger.append_batch((14..17).map(draft).collect()).unwrap();
    let expected = ledger.entries().unwrap();
    drop(ledger);
    let full = fs::read(dir.join(ENTRIES_FILE)).unwrap();
    for lost_from in [synced.len(), synced.len() + 7, full.len() - 3] {
        set_state(dir, &full[..lost_from], &cp);
        assert_eq!(
            recovered_entries(dir),
            expected,
            "lost from byte {lost_from}"
        );
        assert_eq!(fs::read(dir.join(ENTRIES_FILE)).unwrap(), full);
        verify_dir(dir, &key).unwrap();
    }
    // A line the intents do not hold in place of a lost one is not
    // overwritten: the open is refused as for any unproven entry.
    let mut other = full[..synced.len()].to_vec();
    let line = &full[synced.len()..];
    let line = &line[..=line.iter().position(|&b| b == b'\n').unwrap()];
    other.extend_from_slice(&line.to_ascii_uppercase());
    set_state(dir, &other, &cp);
    assert!(Ledger::open(dir).is_err());
}

#[test]
fn crash_during_recovery_still_records_the_cut_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ledger = ledger_with(dir, 6);
    let key = ledger.public_key();
    drop(ledger);
    let acked = fs::read(dir.join(ENTRIES_FILE)).unwrap();
    let cp = fs::read(dir.join(CHECKPOINT_FILE)).unwrap();
    let note = format!("{{\"dropped_bytes\":17,\"kept_len\":{}}}\n", acked.len());
    let count_recoveries = |dir: &Path| {
        let entries = Ledger::open(dir).unwrap().entries().unwrap();
        let r: Vec<_> = entries
            .iter()
            .filter(|e| e.kind == RECOVERED_KIND)
            .cloned()
            .collect();
        (entries.len(), r)
    };

    // Died after cutting the torn line, before appending the record.
    set_state(dir, &acked, &cp);
    fs::write(dir.join(RECOVERY_FILE), &note).unwrap();
    let (len, rec) = count_recoveries(dir);
    assert_eq!((len, rec.len()), (7, 1));
    assert_eq!(rec[0].body["dropped_bytes"], 17);
    assert!(!dir.join(RECOVERY_FILE).exists());
    let with_record = fs::read(dir.join(ENTRIES_FILE)).unwrap();
    let cp_with_record = fs::read(dir.join(CHECKPOINT_FILE)).unwrap();

    // Died after the record was durable, before the note was removed
    // (checkpoint written or not).
    for c in [&cp, &cp_with_record] {
        set_state(dir, &with_record, c);
        fs::write(dir.join(RECOVERY_FILE), &note).unwrap();
        let (len, rec) = count_recoveries(dir);
        assert_eq!((len, rec.len()), (7, 1));
        assert!(!dir.join(RECOVERY_FILE).exists());
        verify_dir(dir, &key).unwrap();
    }

    // Died in the middle of writing the record itself.
    for cut in [1, 20, with_record.len() - acked.len() - 1] {
        set_state(dir, &with_record[..acked.len() + cut], &cp);
        fs::write(dir.join(RECOVERY_FILE), &note).unwrap();
        let (len, rec) = count_recoveries(dir);
        assert_eq!((len, rec.len()), (7, 1), "cut {cut}");
        assert_eq!(rec[0].body["dropped_bytes"], 17);
        verify_dir(dir, &key).unwrap();
    }

    // A note that is not one.
    fs::write(dir.join(RECOVERY_FILE), "garbage").unwrap();
    assert!(matches!(
        Ledger::open(dir),
        Err(LedgerError::BadRecoveryNote { .. })
    ));
}

#[test]
fn empty_draft_list_and_prepared_drafts_work_on_the_plain_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(tmp.path()).unwrap();
    assert!(ledger.append_prepared(&[]).unwrap().is_empty());
    let prepared: Vec<_> = (0..5)
        .map(|i| unseen_ledger::PreparedDraft::new(draft(i)).unwrap())
        .collect();
    let r = ledger.append_prepared(&prepared).unwrap();
    assert_eq!(r.len(), 5);
    let entries = ledger.entries().unwrap();
    for (i, e) in entries.iter().enumerate() {
        let d: EntryDraft = draft(i as u64);
        assert_eq!((e.kind.clone(), e.body.clone()), (d.kind, d.body));
    }
    verify_dir(tmp.path(), &ledger.public_key()).unwrap();
}
