//! `unseen bench` commands run end to end at small sizes and report every
//! measure with its target (numbers are not asserted: machines are noisy).

use crate::support::ok;

fn measures(args: &[&str]) -> Vec<serde_json::Value> {
    let out = ok(args);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let measures = report["measures"].as_array().unwrap().clone();
    for m in &measures {
        let value = m["value"].as_f64().unwrap();
        assert!(value.is_finite() && value >= 0.0, "{m}");
        assert!(m["target"].is_string(), "{m}");
    }
    measures
}

#[test]
fn bench_service_udf_and_policy_report_against_their_baselines() {
    let service = measures(&[
        "bench",
        "service",
        "--jobs",
        "12",
        "--clients",
        "3",
        "--rows",
        "1000",
        "--json",
    ]);
    assert!(service[0]["name"].as_str().unwrap().contains("over HTTP"));
    assert!(service[0]["value"].as_f64().unwrap() > 0.0);
    let observed = service
        .iter()
        .find(|m| {
            m["name"]
                .as_str()
                .unwrap()
                .contains("metrics and access log")
        })
        .expect("the cost of observation is measured");
    assert_eq!(observed["target"], ">= 0.97", "{observed}");
    assert!(observed["value"].as_f64().unwrap() > 0.0, "{observed}");
    let sandbox = measures(&[
        "bench",
        "sandbox",
        "--jobs",
        "20",
        "--rows",
        "5000",
        "--repeats",
        "1",
        "--json",
    ]);
    assert!(sandbox.iter().any(|m| m["target"] == "<= 1.1"));
    let udf = measures(&["bench", "udf", "--rows", "20000", "--json"]);
    assert!(
        udf.iter()
            .any(|m| m["name"].as_str().unwrap().contains("gcd"))
    );
    let policy = measures(&[
        "bench",
        "policy",
        "--runs",
        "20",
        "--rows",
        "20000",
        "--repeats",
        "1",
        "--json",
    ]);
    assert!(policy.iter().any(|m| m["target"] == "<= 1.05"));
}

/// Registration's peak memory is under its bound: at a small size always,
/// and at thirty million rows with `UNSEEN_SLOW_TESTS=1` (in release:
/// `UNSEEN_SLOW_TESTS=1 cargo test --release -p unseen-tests --test it
/// bench::registration`).
#[test]
fn registration_memory_stays_under_its_bound_whatever_the_row_count() {
    let rows = if std::env::var_os("UNSEEN_SLOW_TESTS").is_some() {
        "30000000"
    } else {
        "20000"
    };
    let register = measures(&["bench", "register", "--rows", rows, "--json"]);
    let peak = register
        .iter()
        .find(|m| m["name"] == "peak memory, whole process")
        .expect("the peak is measured");
    assert_eq!(peak["target"], "<= 512", "{peak}");
    assert!(peak["value"].as_f64().unwrap() <= 512.0, "{peak}");
    let counted = register.iter().find(|m| m["name"] == "rows").unwrap();
    assert_eq!(
        counted["value"].as_f64().unwrap(),
        rows.parse::<f64>().unwrap()
    );
}
