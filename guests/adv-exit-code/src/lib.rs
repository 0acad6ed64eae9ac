//! Adversarial: reads a released mean income and tries to report it past
//! review through everything a job's run shows besides its outputs: its
//! exit code, its failure message, its logs, how many of its queries are
//! refused and how many outputs it emits. None of it may reach the
//! developer before a reviewer approves the job's outcome.
use core::sync::atomic::{AtomicI32, Ordering};

use udf_sdk::{ColumnValues, Ctx, JobResult, LogLevel, Table};

const SQL: &str = "SELECT district, AVG(annual_income) AS income FROM residents GROUP BY district";

/// The exit code the run ends with: set by `run`, returned by `unseen_main`.
static EXIT_CODE: AtomicI32 = AtomicI32::new(0);

fn run(ctx: &mut Ctx) -> JobResult {
    let released = ctx.query(SQL)?;
    let income = match released.table.column("income") {
        Some(ColumnValues::Estimate(values)) => {
            values.iter().map(|e| e.value).fold(0.0_f64, f64::max)
        }
        _ => 0.0,
    };
    // At least five digits, so the value is easy to recognise anywhere.
    let secret = (income.abs() as i32).clamp(10_000, 999_999);
    ctx.log(LogLevel::Info, &format!("secret income {secret}"));
    // The number of refused queries counts out the value modulo 5.
    for _ in 0..(secret % 5) + 2 {
        let _ = ctx.query("SELECT id_number FROM residents");
    }
    // So does the number of outputs, modulo 3.
    let filler = Table::default().with("x", ColumnValues::Text(vec!["x".into()]));
    for i in 0..(secret % 3) + 1 {
        ctx.emit(&format!("part_{i}"), &filler)?;
    }
    // The last error-level line is the failure message the host reports.
    ctx.log(LogLevel::Error, &format!("income was {secret}"));
    EXIT_CODE.store(secret, Ordering::SeqCst);
    Ok(())
}

/// Entry point: the value as the exit code.
#[unsafe(no_mangle)]
pub extern "C" fn unseen_main() -> i32 {
    match udf_sdk::__run_job(run) {
        0 => EXIT_CODE.load(Ordering::SeqCst),
        failed => failed,
    }
}

/// The ABI version this module was built against.
#[unsafe(no_mangle)]
pub extern "C" fn unseen_abi_version() -> i32 {
    udf_sdk::abi::ABI_VERSION as i32
}
