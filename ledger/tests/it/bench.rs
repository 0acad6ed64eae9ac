//! The benchmark functions: a quick run always, the full one on request.
//!
//! Full run (numbers for the targets):
//! `cargo test -p unseen-ledger --release --test it -- --ignored --exact bench::report --nocapture`

use unseen_ledger::bench::{BenchReport, bench_appends, bench_inclusion_proof, bench_verify};

#[test]
fn bench_functions_run_and_report() {
    let tmp = tempfile::tempdir().unwrap();
    let appends = bench_appends(tmp.path(), 400, 200, 8).unwrap();
    assert_eq!(appends.entries, 400);
    assert!(appends.appends_per_sec > 0.0 && appends.groups >= 1);
    let verify = bench_verify(2_000);
    assert!(verify.entries_per_sec > 0.0);
    let proof = bench_inclusion_proof(100_000);
    assert!(proof.per_proof.as_nanos() > 0);
    let report = BenchReport {
        appends,
        verify,
        proof,
    };
    let text = report.to_string();
    assert!(
        text.contains("durable appends") && text.contains("inclusion proof"),
        "{text}"
    );
}

#[test]
#[ignore = "benchmark; run with --release"]
fn report() {
    let tmp = tempfile::tempdir().unwrap();
    let threads: usize = std::env::var("UNSEEN_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    // Verification and proofs first: the appends leave the kernel busy
    // writing back for a while, which would take CPU from them.
    let verify = bench_verify(1_000_000);
    println!("{verify}");
    let proof = bench_inclusion_proof(10_000_000);
    println!("{proof}");
    let entries: u64 = std::env::var("UNSEEN_BENCH_ENTRIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let appends = bench_appends(tmp.path(), entries, 200, threads).unwrap();
    println!("{appends}");
    println!(
        "{}",
        BenchReport {
            appends,
            verify,
            proof
        }
    );
}
