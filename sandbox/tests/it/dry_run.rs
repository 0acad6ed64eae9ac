//! The `dry_run` import: the policy's verdict without spending.

use udf_sdk::{ColumnValues, abi};
use unseen_sandbox::{Limits, Sandbox, SandboxError};

use crate::support::{MockHost, assert_limit, canned_dry_run, run, run_with, shared};

#[test]
fn dry_run_verdict_reaches_the_job() {
    let host = MockHost {
        dry_run: Some(abi::encode_dry_run(&canned_dry_run())),
        ..MockHost::new()
    };
    let (result, host) = run_with(shared(), "dry-run-probe", host);
    let report = result.expect("the probe succeeds");
    assert_eq!((report.dry_runs, report.queries), (1, 0));
    let seen = host.seen();
    assert_eq!(seen.dry_runs.len(), 1);
    assert!(seen.queries.is_empty(), "a dry run is not a query");
    let (name, table) = &seen.emits[0];
    assert_eq!(name, "dry_run");
    assert_eq!(table.column("admitted"), Some(&ColumnValues::Int(vec![1])));
    assert_eq!(
        table.column("epsilon"),
        Some(&ColumnValues::Float(vec![0.25]))
    );
    assert_eq!(
        table.column("reason"),
        Some(&ColumnValues::Text(vec![canned_dry_run().reason]))
    );
}

#[test]
fn host_without_dry_runs_answers_with_a_message() {
    // `MockHost` with no verdict falls back to the trait's wording.
    let (result, _) = run(shared(), "dry-run-probe");
    match result {
        Err(SandboxError::JobFailed { code, message, .. }) => {
            assert_eq!(code, 1);
            assert_eq!(message, "dry runs are not supported by this host");
        }
        other => panic!("expected the job to fail on the refusal, got {other:?}"),
    }
}

#[test]
fn trait_default_refuses_dry_runs() {
    struct Minimal;
    impl unseen_sandbox::JobHost for Minimal {
        fn query(&mut self, _: &str) -> Result<Vec<u8>, String> {
            Err("no".into())
        }
        fn emit(&mut self, _: &str, _: udf_sdk::Table) -> Result<(), String> {
            Ok(())
        }
        fn log(&mut self, _: unseen_sandbox::LogLevel, _: &str) {}
        fn param(&self, _: &str) -> Option<String> {
            None
        }
    }
    assert_eq!(
        unseen_sandbox::JobHost::dry_run(&mut Minimal, "SELECT 1"),
        Err("dry runs are not supported by this host".to_string())
    );
}

#[test]
fn dry_runs_have_their_own_limit() {
    let sandbox = Sandbox::new(Limits {
        max_dry_runs: 0,
        ..Limits::default()
    })
    .unwrap();
    let host = MockHost {
        dry_run: Some(abi::encode_dry_run(&canned_dry_run())),
        ..MockHost::new()
    };
    let (result, host) = run_with(&sandbox, "dry-run-probe", host);
    let detail = assert_limit(result, "dry runs");
    assert!(detail.contains("dry run 1 of at most 0"), "{detail}");
    assert!(host.seen().dry_runs.is_empty());
}

#[test]
fn malformed_verdict_is_an_error_for_the_job_not_the_host() {
    let host = MockHost {
        dry_run: Some(b"UDR1\x01".to_vec()),
        ..MockHost::new()
    };
    match run_with(shared(), "dry-run-probe", host).0 {
        Err(SandboxError::JobFailed { message, .. }) => {
            assert!(message.contains("truncated"), "{message}")
        }
        other => panic!("expected the job to fail on the bad verdict, got {other:?}"),
    }
}
