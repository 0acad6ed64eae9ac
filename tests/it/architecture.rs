//! The boundaries `ARCHITECTURE.md` promises: read from `Cargo.lock`, the
//! service core links no command-line parser, HTTP server or client; read
//! from its sources, its SQL is written in its store module only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const LOCK: &str = include_str!("../../Cargo.lock");

/// Package name to the names of its dependencies, for every package of the
/// lock file (versions merged: enough to walk names).
fn dependency_graph() -> BTreeMap<String, BTreeSet<String>> {
    let lock: toml::Table = LOCK.parse().expect("Cargo.lock is TOML");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for package in lock["package"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("a name").to_owned();
        let deps = package
            .get("dependencies")
            .and_then(|d| d.as_array())
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str())
            // Entries are `name` or `name version` (or with a source).
            .filter_map(|d| d.split_whitespace().next())
            .map(str::to_owned);
        graph.entry(name).or_default().extend(deps);
    }
    graph
}

/// Every package reachable from `root` (dev-dependencies included: the
/// lock file does not tell them apart, so this errs on the strict side).
fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, root: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_owned()];
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone()) {
            todo.extend(graph.get(&name).into_iter().flatten().cloned());
        }
    }
    seen
}

#[test]
fn the_core_links_no_command_line_parser_http_server_or_client() {
    let graph = dependency_graph();
    let core = reachable(&graph, "unseen-core");
    assert!(
        core.contains("unseen-ledger"),
        "the walk reached the core's crates: {core:?}"
    );
    for adapter in [
        "clap",
        "clap_complete",
        "axum",
        "hyper-util",
        "ureq",
        "indicatif",
        "unseen",
    ] {
        assert!(
            !core.contains(adapter),
            "unseen-core depends on `{adapter}`: transports and terminals belong in the `unseen` crate"
        );
    }
    // anyhow reaches the core only through wasmtime's internals; the core
    // itself uses thiserror.
    assert!(
        !graph["unseen-core"].contains("anyhow"),
        "unseen-core depends on anyhow directly"
    );
}

#[test]
fn the_adapters_do_link_them_so_the_check_above_can_fail() {
    let graph = dependency_graph();
    let adapters = reachable(&graph, "unseen");
    for adapter in ["clap", "axum", "ureq"] {
        assert!(
            adapters.contains(adapter),
            "`unseen` should link `{adapter}`"
        );
    }
}

/// Calls that run SQL on a rusqlite connection or statement.
const SQL_CALLS: [&str; 6] = [
    ".execute(",
    ".execute_batch(",
    ".prepare(",
    ".prepare_cached(",
    ".query_row(",
    ".query_map(",
];

/// The core's SQL lives in `core/src/store/` only: the topic modules call
/// its typed functions. A statement written anywhere else in the core
/// fails here with its file and line.
#[test]
fn the_cores_sql_is_written_only_in_its_store_module() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/src");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            if SQL_CALLS.iter().any(|call| line.contains(call)) {
                found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "SQL outside core/src/store/:\n{}",
        found.join("\n")
    );
    // The check sees the store's own statements, so it can fail.
    let store = std::fs::read_to_string(src.join("store/jobs.rs")).unwrap();
    assert!(SQL_CALLS.iter().any(|call| store.contains(call)));
}
