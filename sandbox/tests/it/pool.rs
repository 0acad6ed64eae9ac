//! The instance pool: used here, bounded, and shared safely between threads.

use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use udf_sdk::{Table, abi};
use unseen_sandbox::{JobHost, Limits, LogLevel, ModuleKind, Sandbox};

use crate::support::{MockHost, assert_limit, assert_still_serves, canned_result, shared, wasm};

#[test]
fn pooling_allocator_is_available_on_this_machine() {
    assert!(shared().uses_pooling(), "the pool could not be reserved");
}

/// Announces that its query started, then waits to be released.
struct BlockingHost {
    entered: mpsc::Sender<()>,
    release: Arc<Barrier>,
}

impl JobHost for BlockingHost {
    fn query(&mut self, _sql: &str) -> Result<Vec<u8>, String> {
        self.entered.send(()).unwrap();
        self.release.wait();
        Ok(abi::encode_query_result(&canned_result()))
    }
    fn emit(&mut self, _: &str, _: Table) -> Result<(), String> {
        Ok(())
    }
    fn log(&mut self, _: LogLevel, _: &str) {}
    fn param(&self, _: &str) -> Option<String> {
        None
    }
}

#[test]
fn run_beyond_the_pool_is_refused_and_others_finish() {
    let sandbox = Arc::new(
        Sandbox::new(Limits {
            max_concurrent_runs: 2,
            ..Limits::default()
        })
        .unwrap(),
    );
    let module = sandbox
        .validate(&wasm("district-income"), ModuleKind::Job)
        .unwrap();
    let (entered, started) = mpsc::channel();
    let release = Arc::new(Barrier::new(3));
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (sandbox, module) = (Arc::clone(&sandbox), module.clone());
            let host = BlockingHost {
                entered: entered.clone(),
                release: Arc::clone(&release),
            };
            std::thread::spawn(move || sandbox.run_job(&module, Box::new(host)))
        })
        .collect();
    for _ in 0..2 {
        started.recv_timeout(Duration::from_secs(30)).unwrap();
    }
    let third = sandbox.run_job(&module, Box::new(MockHost::new()));
    let detail = assert_limit(third, "concurrent runs");
    assert!(detail.contains("2 jobs are already running"), "{detail}");
    release.wait();
    for run in runs {
        run.join().unwrap().expect("the pooled runs finish");
    }
    assert_still_serves(&sandbox);
}

#[test]
fn many_threads_share_one_sandbox_and_one_module() {
    let sandbox = shared();
    let module = sandbox
        .validate(&wasm("district-income"), ModuleKind::Job)
        .unwrap();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..8 {
                    let host = MockHost::new();
                    let report = sandbox.run_job(&module, Box::new(host.clone())).unwrap();
                    assert_eq!((report.queries, report.emits), (1, 1));
                    assert_eq!(host.seen().emits.len(), 1);
                }
            });
        }
    });
    assert_still_serves(sandbox);
}
