//! kill -9 during appends, in a child process, many times over.
//!
//! The child is this test binary itself, running only
//! [`crash_child_appends_until_killed`]; it appends from several threads
//! and prints `index hash` for every append after it returned. The parent
//! kills it at a random moment, reopens the ledger and checks that every
//! printed entry is there, unchanged, and that the directory verifies.

use crate::{Rng, draft, slow};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use unseen_ledger::store::PUBLIC_KEY_FILE;
use unseen_ledger::{Ledger, PublicKey, SharedLedger, verify_dir};

const DIR_VAR: &str = "UNSEEN_LEDGER_CRASH_DIR";
const CHILD: &str = "crash::crash_child_appends_until_killed";

#[test]
#[ignore = "run as a child process by kill_during_append_loses_no_acknowledged_entry"]
fn crash_child_appends_until_killed() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let shared = Arc::new(SharedLedger::open(Path::new(&dir)).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                for i in 0.. {
                    let mut d = draft(i);
                    d.actor = format!("crash-writer-{t}");
                    let r = shared.append(d).unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{} {}", r.index, r.entry_hash_hex).unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn acknowledged(stdout: &[u8]) -> Vec<(u64, String)> {
    // Only whole lines: a line cut by the kill was not fully printed.
    let text = String::from_utf8_lossy(stdout);
    text.split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .filter_map(|l| {
            let (i, h) = l.split_once(' ')?;
            let i = i.parse().ok()?;
            (h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())).then(|| (i, h.to_owned()))
        })
        .collect()
}

#[test]
fn kill_during_append_loses_no_acknowledged_entry() {
    let rounds = if slow() { 200 } else { 20 };
    let mut rng = Rng::from_env("kill_during_append");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let key: PublicKey = Ledger::open(dir).unwrap().public_key();
    assert_eq!(PublicKey::load(&dir.join(PUBLIC_KEY_FILE)).unwrap(), key);
    let exe = std::env::current_exe().unwrap();
    let mut all_acked: Vec<(u64, String)> = Vec::new();
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                CHILD,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_VAR, dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(5 + rng.below(120)));
        child.kill().unwrap(); // SIGKILL
        let mut out = Vec::new();
        child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the child ended by itself: {status}"
        );
        let acked = acknowledged(&out);
        all_acked.extend(acked.iter().cloned());

        let ledger = Ledger::open(dir).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let entries = ledger.entries().unwrap();
        for (index, hash) in &all_acked {
            let e = entries
                .get(*index as usize)
                .unwrap_or_else(|| panic!("round {round}: acknowledged entry {index} is gone"));
            assert_eq!(
                &hex::encode(e.hash()),
                hash,
                "round {round}: entry {index} changed"
            );
        }
        drop(ledger);
        let report = verify_dir(dir, &key).unwrap_or_else(|e| panic!("round {round}: {e}"));
        eprintln!(
            "round {round}: {} acknowledged, ledger holds {}",
            acked.len(),
            report.size
        );
    }
    assert!(
        !all_acked.is_empty(),
        "no child ever acknowledged an append; lengthen the delays"
    );
}
