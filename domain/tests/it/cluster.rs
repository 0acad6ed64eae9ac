//! `unseen demo --engine ballista` and `unseen bench cluster`, each on a
//! local cluster of processes of the binary.

use std::process::Command;

/// `unseen ARGS...`'s standard output, once it exited successfully.
fn unseen(args: &[&str], data_dir: Option<&std::path::Path>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_unseen"));
    command.args(args);
    if let Some(dir) = data_dir {
        command.arg("--data-dir").arg(dir);
    }
    let run = command.output().unwrap();
    let said = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    said
}

#[test]
fn the_demo_runs_on_a_local_cluster_and_its_ledger_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let said = unseen(
        &["demo", "--engine", "ballista", "--rows", "5000"],
        Some(&data),
    );
    assert!(
        said.contains("queries run on a local Ballista cluster"),
        "{said}"
    );
    assert!(said.contains("ledger OK"), "{said}");
    let ledger = std::fs::read_to_string(data.join("ledger/entries.jsonl")).unwrap();
    let kinds: Vec<String> = ledger
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].to_string())
        .collect();
    let count = |kind: &str| kinds.iter().filter(|k| k.trim_matches('"') == kind).count();
    assert_eq!(count("cluster.executor_enrolled"), 2);
    assert!(count("query.admitted") >= 1);
    // Every DP release was computed, none fell back to defaults.
    assert_eq!(count("query.defaulted"), 0);
}

#[test]
fn the_cluster_benchmark_finds_both_engines_agree() {
    let said = unseen(
        &[
            "bench", "cluster", "--rows", "20000", "--runs", "1", "--json",
        ],
        None,
    );
    let report: serde_json::Value = serde_json::from_str(&said).unwrap();
    let agree = report["measures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["name"]
                .as_str()
                .unwrap()
                .starts_with("runs whose exact values agree")
        })
        .unwrap();
    assert_eq!(agree["value"].as_f64(), Some(1.0), "{report}");
    assert_eq!(agree["met"], true, "{report}");
}
