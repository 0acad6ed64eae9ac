//! The crate boundaries `ARCHITECTURE.md` promises, read from `Cargo.lock`:
//! the service core links no command-line parser, HTTP server or client.

use std::collections::{BTreeMap, BTreeSet};

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
