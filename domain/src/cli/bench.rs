//! Benchmarks from the command line.

use super::*;

pub(super) fn run(command: BenchCommand, session: &Session, out: &mut dyn Write) -> Result<()> {
    let runtime = session.runtime;
    match command {
        BenchCommand::Ledger {
            entries,
            threads,
            proof_size,
            verify_entries,
            out: dir,
            json,
        } => {
            let scratch = tempfile::Builder::new()
                .prefix("unseen-bench-ledger-")
                .tempdir()?;
            let measures =
                crate::bench::ledger(scratch.path(), entries, threads, proof_size, verify_entries)?;
            let command = format!(
                "unseen bench ledger --entries {entries} --threads {threads} --proof-size {proof_size} --verify-entries {verify_entries}"
            );
            report_bench(out, "ledger", &command, dir.as_deref(), &measures, json)
        }
        BenchCommand::Policy {
            runs,
            rows,
            repeats,
            out: dir,
            json,
        } => {
            let measures = crate::bench::policy(runtime, runs, rows, repeats)?;
            let command =
                format!("unseen bench policy --runs {runs} --rows {rows} --repeats {repeats}");
            report_bench(out, "policy", &command, dir.as_deref(), &measures, json)
        }
        BenchCommand::Sandbox {
            jobs,
            rows,
            repeats,
            out: dir,
            json,
        } => {
            let measures = crate::bench::sandbox(jobs, rows, repeats)?;
            let command =
                format!("unseen bench sandbox --jobs {jobs} --rows {rows} --repeats {repeats}");
            report_bench(out, "sandbox", &command, dir.as_deref(), &measures, json)
        }
        BenchCommand::Udf {
            rows,
            out: dir,
            json,
        } => {
            let measures = crate::bench::udf(rows)?;
            let command = format!("unseen bench udf --rows {rows}");
            report_bench(out, "udf", &command, dir.as_deref(), &measures, json)
        }
        BenchCommand::Register {
            rows,
            out: dir,
            json,
        } => {
            let scratch = tempfile::Builder::new()
                .prefix("unseen-bench-register-")
                .tempdir()?;
            let measures = crate::bench::register(scratch.path(), runtime, rows)?;
            let command = format!("unseen bench register --rows {rows}");
            report_bench(out, "register", &command, dir.as_deref(), &measures, json)
        }
        BenchCommand::Cluster {
            rows,
            runs,
            executors,
            slots,
            out: dir,
            json,
        } => {
            let scratch = tempfile::Builder::new()
                .prefix("unseen-bench-cluster-")
                .tempdir()?;
            let program = std::env::current_exe()?;
            let measures =
                crate::bench::cluster(scratch.path(), &program, rows, runs, executors, slots)?;
            let command = format!(
                "unseen bench cluster --rows {rows} --runs {runs} --executors {executors} --slots {slots}"
            );
            report_bench(out, "cluster", &command, dir.as_deref(), &measures, json)
        }
        BenchCommand::Service {
            jobs,
            clients,
            rows,
            out: dir,
            json,
        } => {
            let scratch = tempfile::Builder::new()
                .prefix("unseen-bench-service-")
                .tempdir()?;
            let measures = crate::bench::service(scratch.path(), jobs, clients, rows)?;
            let command =
                format!("unseen bench service --jobs {jobs} --clients {clients} --rows {rows}");
            report_bench(out, "service", &command, dir.as_deref(), &measures, json)
        }
    }
}
