//! Hostile jobs: each is stopped cleanly with its own error, and the same
//! sandbox runs a well-behaved job afterwards.

use std::time::{Duration, Instant};

use unseen_sandbox::{ModuleKind, Sandbox, SandboxError};

use crate::support::{
    MockHost, asm, assert_limit, assert_still_serves, deadline_limits, run, run_with, shared,
    test_limits, wasm,
};

#[test]
fn infinite_loop_is_stopped_by_fuel() {
    let sandbox = shared();
    let detail = assert_limit(run(sandbox, "adv-infinite-loop").0, "fuel");
    assert!(detail.contains("200000000"), "{detail}");
    assert_still_serves(sandbox);
}

#[test]
fn infinite_loop_with_unlimited_fuel_is_stopped_by_the_deadline() {
    let sandbox = Sandbox::new(deadline_limits(Duration::from_millis(300))).unwrap();
    let started = Instant::now();
    let detail = assert_limit(run(&sandbox, "adv-infinite-loop").0, "deadline");
    let took = started.elapsed();
    assert_eq!(detail, "ran longer than 300 ms");
    assert!(
        took >= Duration::from_millis(250),
        "stopped early: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "stopped late: {took:?}");
    assert_still_serves(&sandbox);
}

#[test]
fn a_spinning_job_is_stopped_by_its_cancel_handle_with_the_reason() {
    let sandbox = Sandbox::new(deadline_limits(Duration::from_secs(60))).unwrap();
    let module = sandbox
        .validate(&wasm("adv-infinite-loop"), ModuleKind::Job)
        .unwrap();
    let cancel = unseen_sandbox::Cancel::new();
    let remote = cancel.clone();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        remote.cancel("grant revoked");
        remote.cancel("a later reason is ignored");
    });
    let result = sandbox.run_job_cancellable(&module, Box::new(MockHost::new()), &cancel);
    stopper.join().unwrap();
    match result {
        Err(SandboxError::Cancelled { reason }) => assert_eq!(reason, "grant revoked"),
        other => panic!("expected a cancellation, got {other:?}"),
    }
    // Already cancelled: refused before instantiation.
    let again = sandbox.run_job_cancellable(&module, Box::new(MockHost::new()), &cancel);
    assert!(
        matches!(again, Err(SandboxError::Cancelled { .. })),
        "{again:?}"
    );
    assert_still_serves(&sandbox);
}

#[test]
fn default_deadline_is_reported_in_seconds() {
    let sandbox = Sandbox::new(deadline_limits(Duration::from_secs(1))).unwrap();
    let detail = assert_limit(run(&sandbox, "adv-infinite-loop").0, "deadline");
    assert_eq!(detail, "ran longer than 1 s");
    let shown = SandboxError::LimitExceeded {
        limit: "deadline",
        detail: "ran longer than 30 s".into(),
    }
    .to_string();
    assert_eq!(
        shown,
        "job stopped: deadline limit exceeded (ran longer than 30 s)"
    );
}

#[test]
fn memory_bomb_is_stopped_by_the_memory_limit() {
    let sandbox = shared();
    let detail = assert_limit(run(sandbox, "adv-memory-bomb").0, "memory");
    assert!(
        detail.contains(&format!("the limit is {} bytes", 64 << 20)),
        "{detail}"
    );
    assert_still_serves(sandbox);
}

#[test]
fn deep_recursion_is_stopped_by_the_stack_limit() {
    let sandbox = shared();
    let detail = assert_limit(run(sandbox, "adv-deep-recursion").0, "stack");
    assert!(detail.contains(&(512 << 10).to_string()), "{detail}");
    assert_still_serves(sandbox);
}

#[test]
fn huge_output_is_stopped_by_the_output_size_limit() {
    let sandbox = shared();
    let (result, host) = run(sandbox, "adv-huge-output");
    let detail = assert_limit(result, "output size");
    assert!(
        detail.contains(&format!("limit of {} bytes", 4 << 20)),
        "{detail}"
    );
    assert!(host.seen().emits.is_empty(), "nothing reached quarantine");
    assert_still_serves(sandbox);
}

#[test]
fn output_flood_is_stopped_by_the_emit_limit() {
    let sandbox = shared();
    let (result, host) = run(sandbox, "adv-output-flood");
    let detail = assert_limit(result, "emits");
    assert!(detail.contains("output 17 of at most 16"), "{detail}");
    assert_eq!(host.seen().emits.len(), 16, "the first 16 were accepted");
    assert_still_serves(sandbox);
}

#[test]
fn query_flood_is_stopped_by_the_query_limit() {
    let sandbox = shared();
    let (result, host) = run(sandbox, "adv-query-flood");
    let detail = assert_limit(result, "queries");
    assert!(detail.contains("query 65 of at most 64"), "{detail}");
    assert_eq!(
        host.seen().queries.len(),
        64,
        "the 65th never reached the host"
    );
    assert_still_serves(sandbox);
}

#[track_caller]
fn assert_refused_import(bytes: &[u8], module: &str, name: &str) -> String {
    match shared().validate(bytes, ModuleKind::Job) {
        Err(SandboxError::ForbiddenImport {
            module: m,
            name: n,
            reason,
        }) => {
            assert_eq!((m.as_str(), n.as_str()), (module, name), "{reason}");
            reason
        }
        other => panic!("expected `{module}::{name}` to be refused, got {other:?}"),
    }
}

#[test]
fn wasi_import_is_refused_at_upload() {
    let reason = assert_refused_import(
        &wasm("adv-wasi-import"),
        "wasi_snapshot_preview1",
        "fd_write",
    );
    assert!(reason.contains("WASI is not available"), "{reason}");
    assert_still_serves(shared());
}

#[test]
fn unknown_host_function_is_refused_at_upload() {
    let reason = assert_refused_import(&wasm("adv-unknown-import"), "unseen_v1", "steal");
    assert!(reason.contains("not a host function"), "{reason}");
    assert!(
        reason.contains("dry_run"),
        "lists the known imports: {reason}"
    );
    assert_still_serves(shared());
}

#[test]
fn module_built_for_another_abi_is_refused_at_upload() {
    match shared().validate(&wasm("adv-abi-v2-import"), ModuleKind::Job) {
        Err(SandboxError::AbiVersion { found, host, .. }) => {
            assert_eq!(found, "unseen_v2");
            assert_eq!(host, 1);
        }
        other => panic!("expected an ABI version error, got {other:?}"),
    }
    assert_still_serves(shared());
}

#[test]
fn module_claiming_abi_version_2_is_stopped_before_main() {
    let sandbox = shared();
    let (result, host) = run(sandbox, "adv-abi-version-2");
    match result {
        Err(SandboxError::AbiVersion { found, host, .. }) => {
            assert_eq!(found, "version 2");
            assert_eq!(host, 1);
        }
        other => panic!("expected an ABI version error, got {other:?}"),
    }
    assert!(host.seen().logs.is_empty(), "unseen_main never ran");
    assert_still_serves(sandbox);
}

#[test]
fn malformed_modules_are_refused_at_upload() {
    let sandbox = shared();
    let good = wasm("district-income");
    let truncated = &good[..good.len() / 2];
    assert!(matches!(
        sandbox.validate(truncated, ModuleKind::Job),
        Err(SandboxError::Invalid { .. })
    ));
    // Deterministic noise after a valid header and version.
    let mut noise = asm::HEADER.to_vec();
    let mut x: u32 = 0x2545_f491;
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push(x as u8);
    }
    assert!(matches!(
        sandbox.validate(&noise, ModuleKind::Job),
        Err(SandboxError::Invalid { .. })
    ));
    assert!(matches!(
        sandbox.validate(b"\0asm", ModuleKind::Job),
        Err(SandboxError::Invalid { .. })
    ));
    assert!(matches!(
        sandbox.validate(b"#!/bin/sh\nrm -rf /\n", ModuleKind::Job),
        Err(SandboxError::NotWasm)
    ));
    assert_still_serves(sandbox);
}

#[test]
fn oversized_module_is_refused_before_compiling() {
    let sandbox = shared();
    let mut big = asm::HEADER.to_vec();
    big.resize(sandbox.limits().max_module_bytes + 1, 0);
    assert!(matches!(
        sandbox.validate(&big, ModuleKind::Job),
        Err(SandboxError::TooLarge { .. })
    ));
}

#[test]
fn module_importing_a_memory_is_refused_at_upload() {
    let reason = assert_refused_import(
        &asm::job_importing_memory("unseen_v1", "memory"),
        "unseen_v1",
        "memory",
    );
    assert!(reason.contains("a memory"), "{reason}");
    let reason =
        assert_refused_import(&asm::job_importing_memory("env", "memory"), "env", "memory");
    assert!(
        reason.contains("only host functions of `unseen_v1`"),
        "{reason}"
    );
    assert_still_serves(shared());
}

#[test]
fn module_without_unseen_main_is_refused_at_upload() {
    match shared().validate(&wasm("adv-missing-main"), ModuleKind::Job) {
        Err(SandboxError::MissingExport { name, .. }) => assert_eq!(name, "unseen_main"),
        other => panic!("expected a missing export error, got {other:?}"),
    }
    assert_still_serves(shared());
}

#[test]
fn module_with_imports_is_refused_as_a_udf() {
    match shared().validate(&wasm("district-income"), ModuleKind::Udf) {
        Err(SandboxError::ForbiddenImport { reason, .. }) => {
            assert!(reason.contains("may import nothing"), "{reason}")
        }
        other => panic!("expected a UDF with imports to be refused, got {other:?}"),
    }
}

#[test]
fn panic_in_the_host_ends_the_run_not_the_process() {
    let sandbox = shared();
    let host = MockHost {
        panic_on_query: true,
        ..MockHost::new()
    };
    match run_with(sandbox, "district-income", host).0 {
        Err(SandboxError::HostPanic { function, message }) => {
            assert_eq!(function, "query");
            assert!(message.contains("mock host bug"), "{message}");
        }
        other => panic!("expected a host panic error, got {other:?}"),
    }
    assert_still_serves(sandbox);
}

#[test]
fn module_validated_elsewhere_is_not_run() {
    let other = Sandbox::new(test_limits()).unwrap();
    let module = other
        .validate(&wasm("district-income"), ModuleKind::Job)
        .unwrap();
    assert!(matches!(
        shared().run_job(&module, Box::new(MockHost::new())),
        Err(SandboxError::ForeignModule)
    ));
}

#[test]
fn every_adversary_in_turn_leaves_one_sandbox_serving() {
    // The same sandbox, sequentially: no state carries from one run to the next.
    let sandbox = Sandbox::new(test_limits()).unwrap();
    for guest in [
        "adv-infinite-loop",
        "adv-memory-bomb",
        "adv-deep-recursion",
        "adv-huge-output",
        "adv-output-flood",
        "adv-query-flood",
        "adv-abi-version-2",
    ] {
        let (result, _) = run(&sandbox, guest);
        assert!(result.is_err(), "{guest} should not succeed");
        assert_still_serves(&sandbox);
    }
}
