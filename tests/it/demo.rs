//! The demo flow end to end, and the ledger it leaves behind.

use crate::support::{fails, ok};

#[test]
fn demo_runs_every_step_and_its_ledger_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let data = data.to_str().unwrap();
    let out = ok(&["demo", "--data-dir", data, "--rows", "20000", "--seed", "3"]);
    for expected in [
        "registered `residents`: 20000 rows",
        "job ", // job ids
        "is in quarantine",
        "epsilon spent 1.000, left 2.000",
        "column `id_number` of `residents` is prohibited",
        "column `annual_income` of `residents` is conditional",
        "may not review outputs",
        "朝阳区",
        "signed release",
        "registered `health_visits`: 40000 visits",
        "health_visits joined to residents on person_id",
        "per_1000_residents",
        "declares industry_risk(Utf8) -> Float64, sme_score(Float64, Float64) -> Float64",
        "risk_adjusted_score",
        "approves it narrowed to epsilon 2.0",
        "rates the grant's use 4 of 5",
        "credit codes checked (GB 32100-2015 check characters, no repeats)",
        "`bank_loans` registered encrypted",
        "default_rate",
        "ledger OK",
    ] {
        assert!(
            out.contains(expected),
            "demo output lacks `{expected}`:\n{out}"
        );
    }
    let verified = ok(&["ledger", "verify", "--data-dir", data]);
    assert!(verified.contains("ledger OK"), "{verified}");
    let entries = std::fs::read_to_string(dir.path().join("d/ledger/entries.jsonl")).unwrap();
    for kind in [
        "dataset.registered",
        "grant.issued",
        "module.uploaded",
        "job.started",
        "query.admitted",
        "query.refused",
        "output.quarantined",
        "review.approved",
        "release.signed",
        "job.ended",
        "application.submitted",
        "application.pre_reviewed",
        "application.feedback",
        "import.proposed",
    ] {
        assert!(
            entries.contains(&format!("\"kind\":\"{kind}\"")),
            "ledger lacks a `{kind}` entry"
        );
    }
    assert!(
        entries.contains("\"rule\":\"prohibited-column\""),
        "the refusal's rule is in the ledger"
    );
}

#[test]
fn ledger_verify_fails_after_any_changed_byte() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let data_s = data.to_str().unwrap();
    ok(&["demo", "--data-dir", data_s, "--rows", "3000"]);
    for file in ["entries.jsonl", "checkpoint"] {
        let path = data.join("ledger").join(file);
        let original = std::fs::read(&path).unwrap();
        // Every 7th byte keeps the test quick; the ledger crate flips every byte.
        for at in (0..original.len()).step_by(7) {
            let mut bytes = original.clone();
            bytes[at] ^= 0x01;
            std::fs::write(&path, &bytes).unwrap();
            let out = fails(&["ledger", "verify", "--data-dir", data_s]);
            assert!(
                out.contains("ledger verification FAILED"),
                "{file} byte {at}: {out}"
            );
        }
        std::fs::write(&path, &original).unwrap();
    }
    ok(&["ledger", "verify", "--data-dir", data_s]);
}

#[test]
fn generate_is_deterministic_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a.parquet"),
        dir.path().join("b.parquet"),
        dir.path().join("c.parquet"),
    );
    for (path, seed) in [(&a, "9"), (&b, "9"), (&c, "10")] {
        ok(&[
            "dataset",
            "generate",
            "residents",
            "--rows",
            "5000",
            "--seed",
            seed,
            "--out",
            path.to_str().unwrap(),
        ]);
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
}

/// `unseen demo` without `--data-dir` must start under a usual umask (022):
/// its scratch directory is owner-only, as `Domain::open` requires.
#[test]
fn the_demos_own_directory_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = unseen::demo::scratch_dir().unwrap();
    let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "demo directory has mode {mode:o}");
    unseen::Domain::open(dir.path()).expect("the demo's directory opens");
}
