//! Shared test support: the guests built once for wasm32, a recording mock
//! host, a hand assembler for modules Rust cannot produce, and a check that
//! the sandbox still runs a well-behaved job.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use udf_sdk::{ColumnValues, DryRun, Estimate, QueryResult, Table, abi};
use unseen_sandbox::{
    JobHost, Limits, LogLevel, ModuleKind, RunReport, Sandbox, SandboxError, ValidatedModule,
};

/// Builds `guests/` for wasm32 once per test process and returns the
/// directory holding the `.wasm` files.
fn guest_dir() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guests-target");
        unseen_guest_build::build(&target).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// The bytes of a guest module, by crate name (`adv-memory-bomb`).
pub fn wasm(crate_name: &str) -> Vec<u8> {
    let path = unseen_guest_build::wasm_path(guest_dir(), crate_name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Limits for tests: the defaults, with less fuel so fuel exhaustion is quick.
pub fn test_limits() -> Limits {
    Limits {
        fuel: 200_000_000,
        ..Limits::default()
    }
}

/// One sandbox shared by the tests that run in parallel, so a bad run next
/// to a good one is exercised too.
pub fn shared() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| Sandbox::new(test_limits()).expect("sandbox"))
}

/// What a [`MockHost`] saw during a run.
#[derive(Debug, Default)]
pub struct Record {
    pub queries: Vec<String>,
    pub dry_runs: Vec<String>,
    pub emits: Vec<(String, Table)>,
    pub logs: Vec<(LogLevel, String)>,
}

/// A host that answers every query with [`canned_result`] and records the rest.
#[derive(Debug, Clone, Default)]
pub struct MockHost {
    pub record: Arc<Mutex<Record>>,
    /// Encoded dry-run verdict to return; `None` keeps the trait's default.
    pub dry_run: Option<Vec<u8>>,
    /// Panic inside `query`, to check a host bug cannot take the caller down.
    pub panic_on_query: bool,
}

impl MockHost {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn seen(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The released result every mock query returns.
pub fn canned_result() -> QueryResult {
    let estimate = |value: f64| Estimate {
        value,
        lower: value - 1.0,
        upper: value + 1.0,
    };
    QueryResult {
        confidence: 0.95,
        epsilon_spent: 0.5,
        cached: false,
        table: Table::default()
            .with(
                "district",
                ColumnValues::Text(vec!["east".into(), "west".into()]),
            )
            .with(
                "residents",
                ColumnValues::Estimate(vec![estimate(120.0), estimate(95.0)]),
            )
            .with(
                "mean_income",
                ColumnValues::Estimate(vec![estimate(51_000.0), estimate(48_500.0)]),
            ),
    }
}

impl JobHost for MockHost {
    fn query(&mut self, sql: &str) -> Result<Vec<u8>, String> {
        assert!(!self.panic_on_query, "mock host bug while serving a query");
        self.seen().queries.push(sql.to_string());
        Ok(abi::encode_query_result(&canned_result()))
    }

    fn emit(&mut self, name: &str, table: Table) -> Result<(), String> {
        self.seen().emits.push((name.to_string(), table));
        Ok(())
    }

    fn log(&mut self, level: LogLevel, message: &str) {
        self.seen().logs.push((level, message.to_string()));
    }

    fn param(&self, _name: &str) -> Option<String> {
        None
    }

    fn dry_run(&mut self, sql: &str) -> Result<Vec<u8>, String> {
        self.seen().dry_runs.push(sql.to_string());
        match &self.dry_run {
            Some(bytes) => Ok(bytes.clone()),
            None => Err("dry runs are not supported by this host".into()),
        }
    }
}

/// A verdict for the mock host to return.
pub fn canned_dry_run() -> DryRun {
    DryRun {
        admitted: true,
        reason: "COUNT over the public groups of `district`, Laplace noise".into(),
        epsilon: 0.25,
        confidence: 0.95,
    }
}

/// Validates and runs a guest with a fresh mock host.
pub fn run(sandbox: &Sandbox, crate_name: &str) -> (Result<RunReport, SandboxError>, MockHost) {
    run_with(sandbox, crate_name, MockHost::new())
}

pub fn run_with(
    sandbox: &Sandbox,
    crate_name: &str,
    host: MockHost,
) -> (Result<RunReport, SandboxError>, MockHost) {
    let module = sandbox
        .validate(&wasm(crate_name), ModuleKind::Job)
        .unwrap_or_else(|e| panic!("{crate_name} should pass validation: {e}"));
    let result = sandbox.run_job(&module, Box::new(host.clone()));
    (result, host)
}

/// Asserts that a run stopped on `limit`, and returns the detail.
#[track_caller]
pub fn assert_limit(result: Result<RunReport, SandboxError>, limit: &str) -> String {
    match result {
        Err(SandboxError::LimitExceeded { limit: hit, detail }) if hit == limit => {
            let shown = SandboxError::LimitExceeded {
                limit: hit,
                detail: detail.clone(),
            }
            .to_string();
            assert!(shown.contains(limit), "message names the limit: {shown}");
            detail
        }
        other => panic!("expected the `{limit}` limit, got {other:?}"),
    }
}

/// The host survived: a well-behaved job still runs to completion on it.
#[track_caller]
pub fn assert_still_serves(sandbox: &Sandbox) {
    // The shared sandbox compiles the well-behaved job once (compiling is
    // slow in debug builds); other sandboxes compile it afresh.
    static SHARED_GOOD: OnceLock<ValidatedModule> = OnceLock::new();
    let validate = || {
        sandbox
            .validate(&wasm("district-income"), ModuleKind::Job)
            .expect("district-income is valid")
    };
    let module = if std::ptr::eq(sandbox, shared()) {
        SHARED_GOOD.get_or_init(validate).clone()
    } else {
        validate()
    };
    let host = MockHost::new();
    let result = sandbox.run_job(&module, Box::new(host.clone()));
    let report = result.expect("a well-behaved job runs after an adversarial one");
    assert_eq!(report.queries, 1);
    assert_eq!(report.emits, 1);
    let seen = host.seen();
    assert_eq!(seen.emits.len(), 1);
    assert_eq!(seen.emits[0].0, "income_by_district");
    assert_eq!(seen.emits[0].1.rows(), 2);
}

/// Sandbox limits for the deadline test: fuel that never runs out.
pub fn deadline_limits(deadline: Duration) -> Limits {
    Limits {
        fuel: u64::MAX,
        deadline,
        ..Limits::default()
    }
}

/// A tiny WebAssembly assembler for modules Rust will not produce.
pub mod asm {
    pub const HEADER: &[u8] = b"\0asm\x01\0\0\0";

    pub fn leb(mut n: u32, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    pub fn name(s: &str, out: &mut Vec<u8>) {
        leb(s.len() as u32, out);
        out.extend_from_slice(s.as_bytes());
    }

    pub fn section(id: u8, contents: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(contents.len() as u32, out);
        out.extend_from_slice(contents);
    }

    /// A job that imports its memory from `module::field` instead of
    /// defining it, and exports `unseen_main` and `unseen_abi_version`.
    pub fn job_importing_memory(module: &str, field: &str) -> Vec<u8> {
        let mut m = HEADER.to_vec();
        // type 0: () -> i32
        section(1, &[1, 0x60, 0, 1, 0x7f], &mut m);
        let mut imports = vec![1];
        name(module, &mut imports);
        name(field, &mut imports);
        imports.extend_from_slice(&[0x02, 0x00, 0x01]); // memory, min 1 page
        section(2, &imports, &mut m);
        section(3, &[2, 0, 0], &mut m); // two functions of type 0
        let mut exports = vec![3];
        for (export, kind, index) in [
            ("memory", 2u8, 0u8),
            ("unseen_main", 0, 0),
            ("unseen_abi_version", 0, 1),
        ] {
            name(export, &mut exports);
            exports.extend_from_slice(&[kind, index]);
        }
        section(7, &exports, &mut m);
        // bodies: i32.const 0 / i32.const 1
        section(10, &[2, 4, 0, 0x41, 0, 0x0b, 4, 0, 0x41, 1, 0x0b], &mut m);
        m
    }
}
