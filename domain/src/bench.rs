//! `unseen bench`: runs a crate's timing functions, prints the results with
//! their targets, and can write them as JSON plus an SVG chart.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};

/// One measured quantity with its target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Measure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    /// The target as text, e.g. ">= 50000" or "<= 1.10".
    pub target: String,
    pub met: bool,
}

impl Measure {
    /// A measure that should be at least `target`.
    pub fn at_least(name: &str, value: f64, unit: &str, target: f64) -> Measure {
        Measure {
            name: name.into(),
            value,
            unit: unit.into(),
            target: format!(">= {target}"),
            met: value >= target,
        }
    }

    /// A measure that should be at most `target`.
    pub fn at_most(name: &str, value: f64, unit: &str, target: f64) -> Measure {
        Measure {
            name: name.into(),
            value,
            unit: unit.into(),
            target: format!("<= {target}"),
            met: value <= target,
        }
    }

    /// A measure without a target (a baseline).
    pub fn baseline(name: &str, value: f64, unit: &str) -> Measure {
        Measure {
            name: name.into(),
            value,
            unit: unit.into(),
            target: "baseline".into(),
            met: true,
        }
    }
}

/// Prints measures as a table.
pub fn print(out: &mut dyn Write, title: &str, measures: &[Measure]) -> std::io::Result<()> {
    writeln!(out, "{title}")?;
    for m in measures {
        let verdict = if m.target == "baseline" {
            ""
        } else if m.met {
            "  met"
        } else {
            "  MISSED"
        };
        writeln!(
            out,
            "  {:<48} {:>14.3} {:<10} target {}{verdict}",
            m.name, m.value, m.unit, m.target
        )?;
    }
    Ok(())
}

/// Writes `NAME.json` and `NAME.svg` (a bar per measure, scaled to its
/// target so 1.0 is the line to beat) into `dir`.
pub fn write(
    dir: &Path,
    name: &str,
    machine: &str,
    command: &str,
    measures: &[Measure],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let doc: Value =
        json!({"bench": name, "machine": machine, "command": command, "measures": measures});
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(&doc)?,
    )?;
    std::fs::write(dir.join(format!("{name}.svg")), svg(name, measures))?;
    Ok(())
}

/// Value over target (for "at least") or target over value (for "at most"):
/// above 1.0 means the target is met, whatever its direction.
fn score(m: &Measure) -> Option<f64> {
    let (op, t) = m.target.split_once(' ')?;
    let t: f64 = t.parse().ok()?;
    match op {
        ">=" if t > 0.0 => Some(m.value / t),
        "<=" if m.value > 0.0 => Some(t / m.value),
        _ => None,
    }
}

fn svg(name: &str, measures: &[Measure]) -> String {
    let scored: Vec<(&Measure, f64)> = measures
        .iter()
        .filter_map(|m| score(m).map(|s| (m, s)))
        .collect();
    let (width, row, left) = (760.0, 34.0, 300.0);
    let height = 60.0 + row * scored.len() as f64;
    let max = scored
        .iter()
        .map(|(_, s)| *s)
        .fold(1.5_f64, f64::max)
        .min(20.0);
    let x = |v: f64| left + (width - left - 40.0) * (v.min(max) / max);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"10\" y=\"20\" font-size=\"14\">unseen bench {name}: measured / target (right of the line = target met)</text>\n"
    );
    for (i, (m, s)) in scored.iter().enumerate() {
        let y = 40.0 + row * i as f64;
        let colour = if m.met { "#3a7" } else { "#c44" };
        out.push_str(&format!(
            "<text x=\"10\" y=\"{:.0}\">{}</text><rect x=\"{left}\" y=\"{:.0}\" width=\"{:.1}\" height=\"18\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{:.0}\">{:.2}x ({:.3} {})</text>\n",
            y + 13.0,
            xml(&m.name),
            y,
            x(*s) - left,
            x(*s) + 4.0,
            y + 13.0,
            s,
            m.value,
            xml(&m.unit)
        ));
    }
    out.push_str(&format!(
        "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"30\" y2=\"{1:.0}\" stroke=\"#000\" stroke-dasharray=\"4 3\"/>\n</svg>\n",
        x(1.0),
        height - 10.0
    ));
    out
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A one-line description of this machine for result files.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "{cores} cores, {cpu}, {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// The ledger benchmarks against a raw write+fsync baseline in the same run.
pub fn ledger(
    scratch: &Path,
    entries: u64,
    threads: usize,
    proof_size: u64,
    verify_entries: u64,
) -> Result<Vec<Measure>> {
    let appends = unseen_ledger::bench::bench_appends(scratch, entries, 200, threads)
        .context("append benchmark failed")?;
    let verify = unseen_ledger::bench::bench_verify(verify_entries);
    let proof = unseen_ledger::bench::bench_inclusion_proof(proof_size);
    Ok(vec![
        Measure::at_least(
            &format!("durable appends/s, group commit, {threads} threads"),
            appends.appends_per_sec,
            "entries/s",
            50_000.0,
        ),
        Measure::baseline(
            "raw write+fdatasync per batch of the same size",
            appends.raw_batched_per_sec,
            "entries/s",
        ),
        Measure::baseline(
            "raw write+fdatasync per entry",
            appends.raw_single_per_sec,
            "entries/s",
        ),
        Measure::baseline("mean commit group", appends.mean_group, "entries"),
        Measure::at_least(
            "full verification",
            verify.entries_per_sec,
            "entries/s",
            1_500_000.0,
        ),
        Measure::at_most(
            &format!("inclusion proof at {proof_size} entries"),
            proof.per_proof.as_secs_f64() * 1e3,
            "ms",
            1.0,
        ),
    ])
}

/// `rows` generated residents registered in a throwaway data directory
/// (`scratch/residents.parquet` keeps the plaintext for native baselines).
fn residents_domain(
    scratch: &Path,
    rows: u64,
    seed: u64,
    runtime: &tokio::runtime::Runtime,
) -> Result<(std::sync::Arc<crate::Domain>, String)> {
    let kind = unseen_datasets::DatasetKind::Residents;
    let parquet = scratch.join("residents.parquet");
    unseen_datasets::generate_to_path(
        kind,
        &unseen_datasets::GenerateOptions::new(rows, seed),
        &parquet,
        &mut |_| {},
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let manifest = unseen_datasets::manifest_toml(kind);
    Ok(crate::dev::throwaway_domain(
        scratch,
        runtime.handle(),
        &parquet,
        manifest,
    )?)
}

/// The most memory registration may take, whole process, at any row
/// count: the hashes it holds before spilling (32 MiB for the prohibited
/// index, 64 MiB for the privacy units), one row group being encrypted,
/// one batch read, and the engine's scan for the bounds.
pub const REGISTER_PEAK_MB: f64 = 512.0;

/// This process's peak resident memory so far, in MB (`VmHWM`).
fn peak_memory_mb() -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .ok_or_else(|| anyhow::anyhow!("/proc/self/status has no VmHWM line"))
}

/// Generates `rows` residents and registers them in a new data directory,
/// with the process's peak memory before and after registering.
pub fn register(
    scratch: &Path,
    runtime: &tokio::runtime::Runtime,
    rows: u64,
) -> Result<Vec<Measure>> {
    use std::time::Instant;
    let kind = unseen_datasets::DatasetKind::Residents;
    let parquet = scratch.join("residents.parquet");
    let started = Instant::now();
    unseen_datasets::generate_to_path(
        kind,
        &unseen_datasets::GenerateOptions::new(rows, 3),
        &parquet,
        &mut |_| {},
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let generated = started.elapsed().as_secs_f64();
    let before = peak_memory_mb()?;
    let domain = crate::Domain::open(&scratch.join("data"))?;
    domain.add_user(None, "admin", "Admin", crate::Role::Admin, "")?;
    let started = Instant::now();
    let ingested = runtime.block_on(domain.register_dataset(
        "admin",
        "residents",
        &parquet,
        unseen_datasets::manifest_toml(kind),
    ))?;
    let registered = started.elapsed().as_secs_f64();
    let peak = peak_memory_mb()?;
    Ok(vec![
        Measure::baseline("rows", ingested.rows as f64, "rows"),
        Measure::baseline("generate (baseline)", generated, "s"),
        Measure::baseline("register", registered, "s"),
        Measure::baseline("register rate", ingested.rows as f64 / registered, "rows/s"),
        Measure::baseline(
            "distinct prohibited values indexed",
            ingested.prohibited_values as f64,
            "values",
        ),
        Measure::baseline("peak memory before registering", before, "MB"),
        Measure::at_most("peak memory, whole process", peak, "MB", REGISTER_PEAK_MB),
    ])
}

/// Latency percentiles of `samples` (seconds), in milliseconds.
fn percentile_ms(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)] * 1e3
}

/// End-to-end small jobs over HTTP on the loopback (submit, run in the
/// sandbox, quarantine), against the same jobs called in-process on the
/// same data directory in the same run, and with the server's metrics and
/// access log against a server without them.
pub fn service(scratch: &Path, jobs: usize, clients: usize, rows: u64) -> Result<Vec<Measure>> {
    use std::sync::Arc;
    use std::time::Instant;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (domain, token) = residents_domain(scratch, rows, 7, &runtime)?;
    let grant = domain.issue_grant(
        "admin",
        &crate::GrantRequest::new("residents", "dev", "service benchmark", 10.0),
    )?;
    let module = domain.upload_module("dev", crate::guests::DISTRICT_INCOME)?;
    // The first run pays for the release; later runs are served from the
    // release cache, like a dashboard refreshing a published statistic.
    domain.run_job(
        runtime.handle(),
        "dev",
        &grant,
        &module,
        Default::default(),
        &Default::default(),
    )?;

    let per_client = jobs.div_ceil(clients.max(1));
    let total = per_client * clients.max(1);
    let in_process = {
        let started = Instant::now();
        std::thread::scope(|scope| -> Result<()> {
            let handles: Vec<_> = (0..clients.max(1))
                .map(|_| {
                    let (domain, handle, grant, module) = (
                        Arc::clone(&domain),
                        runtime.handle().clone(),
                        &grant,
                        &module,
                    );
                    scope.spawn(move || -> Result<()> {
                        for _ in 0..per_client {
                            let o = domain.run_job(
                                &handle,
                                "dev",
                                grant,
                                module,
                                Default::default(),
                                &Default::default(),
                            )?;
                            anyhow::ensure!(o.succeeded(), "job {} {}", o.job_id, o.ending_word());
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a bench thread panicked"))??;
            }
            Ok(())
        })?;
        total as f64 / started.elapsed().as_secs_f64()
    };

    // Observed (metrics and access log, as `serve` runs) and bare servers
    // alternate, so drift on a shared machine falls on both alike; the
    // cost is the median of the rounds' ratios.
    let mut latencies = Vec::new();
    let mut observed_rates = Vec::new();
    let mut ratios = Vec::new();
    for _ in 0..OBSERVATION_ROUNDS {
        let bare = jobs_over_http(&domain, &token, &grant, &module, clients, per_client, false)?;
        let observed = jobs_over_http(&domain, &token, &grant, &module, clients, per_client, true)?;
        ratios.push(observed.0 / bare.0);
        observed_rates.push(observed.0);
        latencies.extend(observed.1);
    }
    let over_http = median(&mut observed_rates);
    let observed_over_bare = median(&mut ratios);
    Ok(vec![
        Measure::at_least(
            &format!("small jobs over HTTP, {clients} clients (submit, run, quarantine)"),
            over_http,
            "jobs/s",
            200.0,
        ),
        Measure::baseline(
            &format!("the same jobs in-process, {clients} threads"),
            in_process,
            "jobs/s",
        ),
        Measure::baseline("HTTP throughput / in-process", over_http / in_process, "x"),
        Measure::at_least(
            "with metrics and access log / without (median of rounds)",
            observed_over_bare,
            "x",
            0.97,
        ),
        Measure::baseline("latency p50", percentile_ms(&mut latencies, 50.0), "ms"),
        Measure::at_most(
            "latency p99",
            percentile_ms(&mut latencies, 99.0),
            "ms",
            50.0,
        ),
    ])
}

/// Rounds of bare and observed HTTP runs in `unseen bench service`.
const OBSERVATION_ROUNDS: usize = 3;

/// The median of `values` (which it sorts).
/// The shortest of `sorted` times in seconds, in ms, named for `engine`.
fn fastest(engine: &str, sorted: &[f64]) -> Measure {
    let seconds = sorted.first().copied().unwrap_or(0.0);
    Measure::baseline(&format!("fastest {engine}"), seconds * 1e3, "ms")
}

/// The longest of `sorted` times in seconds, in ms, named for `engine`.
fn slowest(engine: &str, sorted: &[f64]) -> Measure {
    let seconds = sorted.last().copied().unwrap_or(0.0);
    Measure::baseline(&format!("slowest {engine}"), seconds * 1e3, "ms")
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Runs `per_client` jobs from each of `clients` threads over HTTP against
/// a fresh server (with or without metrics and the access log): jobs per
/// second and each request's latency in seconds.
fn jobs_over_http(
    domain: &std::sync::Arc<crate::Domain>,
    token: &str,
    grant: &str,
    module: &str,
    clients: usize,
    per_client: usize,
    observe: bool,
) -> Result<(f64, Vec<f64>)> {
    let server = crate::server::Background::start(
        std::sync::Arc::clone(domain),
        crate::server::ServerOptions {
            max_running_jobs: clients.max(1),
            observe,
            ..Default::default()
        },
    )?;
    let client = crate::client::Client::new(&server.url(), Some(token));
    let body = json!({"grant": grant, "module": module, "wait": true});
    let started = std::time::Instant::now();
    let latencies: Vec<f64> = std::thread::scope(|scope| -> Result<Vec<f64>> {
        let handles: Vec<_> = (0..clients.max(1))
            .map(|_| {
                let (client, body) = (client.clone(), &body);
                scope.spawn(move || -> Result<Vec<f64>> {
                    let mut seen = Vec::with_capacity(per_client);
                    for _ in 0..per_client {
                        let t = std::time::Instant::now();
                        let o = client.post("/v1/jobs", body)?;
                        seen.push(t.elapsed().as_secs_f64());
                        anyhow::ensure!(o["status"] == "finished", "job {o}");
                    }
                    Ok(seen)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a bench client panicked"))??,
            );
        }
        Ok(all)
    })?;
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    drop(server);
    Ok((rate, latencies))
}

/// Policy admission latency and the cost of a DP release over the same
/// exact aggregate in DataFusion, in the same run.
pub fn policy(
    runtime: &tokio::runtime::Runtime,
    runs: usize,
    rows: u64,
    repeats: usize,
) -> Result<Vec<Measure>> {
    let admission = runtime
        .block_on(unseen_policy::bench::admission(runs))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let dp = runtime
        .block_on(unseen_policy::bench::dp_overhead(rows, repeats))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    Ok(vec![
        Measure::at_most(
            "admission p50 (planned query to verdict)",
            ms(admission.admit_p50),
            "ms",
            1.0,
        ),
        Measure::baseline("admission p99", ms(admission.admit_p99), "ms"),
        Measure::baseline(
            "SQL text to verdict p50 (DataFusion planning included)",
            ms(admission.sql_to_verdict_p50),
            "ms",
        ),
        Measure::baseline(
            &format!("exact aggregate in DataFusion, {rows} rows"),
            ms(dp.exact),
            "ms",
        ),
        Measure::baseline("the same as a DP release", ms(dp.dp), "ms"),
        Measure::at_most("DP release / exact aggregate", dp.ratio, "x", 1.05),
    ])
}

/// Wasm scalar UDFs inside DataFusion against the same functions as native
/// `ScalarUDFImpl`s, and instantiation of a cached module.
pub fn udf(rows: usize) -> Result<Vec<Measure>> {
    use unseen_sandbox::udf::bench::{UdfBenchConfig, run};
    let sandbox = unseen_sandbox::Sandbox::new(unseen_sandbox::Limits::default())?;
    let config = UdfBenchConfig {
        rows,
        ..UdfBenchConfig::default()
    };
    let report = run(
        &sandbox,
        crate::guests::UDF_LIGHT,
        crate::guests::UDF_GCD,
        &config,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(
        report.gcd_sums.0 == report.gcd_sums.1,
        "the wasm and native gcd disagree: {:?}",
        report.gcd_sums
    );
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    Ok(vec![
        Measure::baseline(
            "native light(a, b), the guest's ln, SUM over the table",
            ms(report.light_native),
            "ms",
        ),
        Measure::baseline(
            "native light(a, b) with the platform's ln",
            ms(report.light_native_std),
            "ms",
        ),
        Measure::baseline("wasm light(a, b)", ms(report.light_wasm), "ms"),
        Measure::baseline(
            "wasm / native with the platform's ln",
            report.light_std_ratio,
            "x",
        ),
        Measure::at_most(
            "wasm / native, light arithmetic",
            report.light_ratio,
            "x",
            1.5,
        ),
        Measure::baseline("native gcd(x, y)", ms(report.gcd_native), "ms"),
        Measure::baseline("wasm gcd(x, y)", ms(report.gcd_wasm), "ms"),
        Measure::at_most("wasm / native, gcd", report.gcd_ratio, "x", 1.10),
        Measure::baseline(
            "wasm light(a, b) without row isolation (same loop, no restore, no cap) / native",
            report.light_unisolated_ratio,
            "x",
        ),
        Measure::baseline(
            "wasm gcd(x, y) without row isolation / native",
            report.gcd_unisolated_ratio,
            "x",
        ),
        Measure::at_most(
            "instantiation of a cached module p50",
            report.instantiate_p50.as_secs_f64() * 1e6,
            "µs",
            50.0,
        ),
        Measure::baseline(
            "instantiation p99",
            report.instantiate_p99.as_secs_f64() * 1e6,
            "µs",
        ),
        Measure::baseline(
            "instantiation of the row-isolated rewrite with its pristine copy, p50",
            report.row_instantiate_p50.as_secs_f64() * 1e6,
            "µs",
        ),
    ])
}

/// A host that answers every query with one canned release: the sandbox's
/// own cost per job, without data or policy.
struct CannedHost {
    answer: Vec<u8>,
    started: std::time::Instant,
    first_query: std::sync::Arc<std::sync::Mutex<Option<std::time::Duration>>>,
}

impl unseen_sandbox::JobHost for CannedHost {
    fn query(&mut self, _sql: &str) -> std::result::Result<Vec<u8>, String> {
        let mut first = self.first_query.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert_with(|| self.started.elapsed());
        Ok(self.answer.clone())
    }
    fn emit(&mut self, _name: &str, _table: udf_sdk::Table) -> std::result::Result<(), String> {
        Ok(())
    }
    fn log(&mut self, _level: unseen_sandbox::LogLevel, _message: &str) {}
    fn param(&self, _name: &str) -> Option<String> {
        None
    }
}

/// The job sandbox: bare jobs per second and submit-to-first-query with a
/// canned host, and a DP job through sandbox, policy and encrypted storage
/// against the same aggregate run natively by DataFusion on the plaintext
/// Parquet, in the same run.
pub fn sandbox(jobs: usize, rows: u64, repeats: usize) -> Result<Vec<Measure>> {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    use udf_sdk::{ColumnValues, Estimate, QueryResult, Table};

    let sandbox = unseen_sandbox::Sandbox::new(unseen_sandbox::Limits::default())?;
    let module = sandbox.validate(
        crate::guests::DISTRICT_INCOME,
        unseen_sandbox::ModuleKind::Job,
    )?;
    let estimate = |v: f64| Estimate {
        value: v,
        lower: v - 1.0,
        upper: v + 1.0,
    };
    let districts: Vec<String> = (0..12).map(|i| format!("district-{i}")).collect();
    let answer = udf_sdk::abi::encode_query_result(&QueryResult {
        confidence: 0.95,
        epsilon_spent: 1.0,
        cached: false,
        table: Table::default()
            .with("district", ColumnValues::Text(districts))
            .with(
                "residents",
                ColumnValues::Estimate((0..12).map(|i| estimate(f64::from(i))).collect()),
            )
            .with(
                "mean_income",
                ColumnValues::Estimate((0..12).map(|i| estimate(f64::from(i) * 1e3)).collect()),
            ),
    });
    let mut to_first_query = Vec::with_capacity(jobs);
    let started = Instant::now();
    for _ in 0..jobs {
        let first = Arc::new(Mutex::new(None));
        let host = CannedHost {
            answer: answer.clone(),
            started: Instant::now(),
            first_query: Arc::clone(&first),
        };
        sandbox.run_job(&module, Box::new(host))?;
        let at = first.lock().unwrap_or_else(|p| p.into_inner()).take();
        to_first_query.push(at.map_or(0.0, |d| d.as_secs_f64()));
    }
    let bare = jobs as f64 / started.elapsed().as_secs_f64();

    // A real DP job: fresh grants so no release is served from the cache.
    let scratch = tempfile::Builder::new()
        .prefix("unseen-bench-sandbox-")
        .tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (domain, _) = residents_domain(scratch.path(), rows, 11, &runtime)?;
    let parquet = scratch.path().join("residents.parquet");
    let sha = domain.upload_module("dev", crate::guests::DISTRICT_INCOME)?;
    let native_ctx = datafusion::prelude::SessionContext::new();
    runtime.block_on(native_ctx.register_parquet(
        "residents",
        parquet.to_str().unwrap_or_default(),
        datafusion::prelude::ParquetReadOptions::default(),
    ))?;
    let sql = "SELECT district, COUNT(*) AS residents, AVG(annual_income) AS mean_income \
               FROM residents GROUP BY district ORDER BY district";
    let mut through_sandbox = Vec::new();
    let mut native = Vec::new();
    for round in 0..=repeats {
        let grant = domain.issue_grant(
            "admin",
            &crate::GrantRequest {
                query_epsilon: 1.0,
                ..crate::GrantRequest::new("residents", "dev", "sandbox benchmark", 1.0)
            },
        )?;
        let t = Instant::now();
        let o = domain.run_job(
            runtime.handle(),
            "dev",
            &grant,
            &sha,
            Default::default(),
            &Default::default(),
        )?;
        anyhow::ensure!(o.succeeded(), "job {} {}", o.job_id, o.ending_word());
        let dp = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let batches = runtime.block_on(async { native_ctx.sql(sql).await?.collect().await })?;
        let exact = t.elapsed().as_secs_f64();
        anyhow::ensure!(!batches.is_empty(), "the native query returned nothing");
        // The first round warms caches on both sides.
        if round > 0 {
            through_sandbox.push(dp);
            native.push(exact);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let (dp, exact) = (median(&mut through_sandbox), median(&mut native));
    Ok(vec![
        Measure::at_least(
            "bare jobs/s (district-income, canned host, 1 thread)",
            bare,
            "jobs/s",
            500.0,
        ),
        Measure::at_most(
            "submit to first query p50",
            percentile_ms(&mut to_first_query, 50.0),
            "ms",
            1.0,
        ),
        Measure::baseline(
            "submit to first query p99",
            percentile_ms(&mut to_first_query, 99.0),
            "ms",
        ),
        Measure::baseline(
            &format!("native DataFusion, exact aggregate, {rows} rows, plaintext"),
            exact * 1e3,
            "ms",
        ),
        Measure::baseline(
            "the same as a DP job: sandbox, admission, charge, ledger, decryption",
            dp * 1e3,
            "ms",
        ),
        Measure::at_most("DP job / native", dp / exact, "x", 1.10),
    ])
}

/// The same DP release's exact aggregation (the aggregate below the noise
/// of [`unseen_policy::bench::AGGREGATE_QUERY`], over `rows` generated
/// residents encrypted as registration stores them) in this process and on
/// a local cluster of `executors` executors of `slots` tasks each, every
/// one a process of `program` on loopback; alternating `runs` times after
/// one warm-up each, checking every time that both computed the same values.
pub fn cluster(
    scratch: &Path,
    program: &Path,
    rows: u64,
    runs: usize,
    executors: usize,
    slots: usize,
) -> Result<Vec<Measure>> {
    use std::time::Instant;

    use crate::cluster::ExecutorSecret;
    use crate::data::{Facts, Remote, SessionLimits, session_with};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(crate::QUERY_THREAD_STACK)
        .enable_all()
        .build()?;
    let datasets = vec![encrypted_dataset(
        scratch,
        unseen_datasets::DatasetKind::Residents,
        "residents",
        &unseen_datasets::GenerateOptions::new(rows, 11),
        crate::util::random_bytes::<32>(),
    )?];
    let secrets: Vec<ExecutorSecret> = (1..=executors.max(1))
        .map(|i| ExecutorSecret {
            name: format!("exec-{i}"),
            secret: crate::util::random_bytes::<32>(),
        })
        .collect();
    // A cluster authority of the bench's own: no service keeps it.
    let authority = unseen_cluster::tls::ClusterAuthority::generate()?;
    let cluster = crate::cluster_engine::LocalCluster::start(
        program,
        scratch,
        &authority,
        &secrets,
        slots.max(1),
    )?;
    let local = SessionLimits::default();
    let remote = SessionLimits {
        remote: Some(Remote {
            engine: cluster.engine(),
            executors: secrets,
        }),
        ..Default::default()
    };
    let sql = unseen_policy::bench::AGGREGATE_QUERY;
    let time = |limits: &SessionLimits| -> Result<(f64, Vec<Vec<Vec<f64>>>)> {
        runtime.block_on(async {
            let started = Instant::now();
            let (ctx, manifests) = session_with(&datasets, &[], &[], limits).await?;
            let values =
                unseen_policy::bench::exact_release_values(&ctx, sql, &manifests, Facts(&datasets))
                    .await?;
            Ok((started.elapsed().as_secs_f64(), values))
        })
    };
    time(&local)?;
    time(&remote)?;
    let (mut here, mut there) = (Vec::new(), Vec::new());
    let mut agree = true;
    for _ in 0..runs.max(1) {
        let (t_here, v_here) = time(&local)?;
        let (t_there, v_there) = time(&remote)?;
        here.push(t_here);
        there.push(t_there);
        agree &= same_values(&v_here, &v_there);
    }
    let (here_ms, there_ms) = (
        percentile_ms(&mut here, 50.0),
        percentile_ms(&mut there, 50.0),
    );
    Ok(vec![
        Measure::baseline("rows", datasets[0].rows as f64, "rows"),
        Measure::baseline("executors", executors.max(1) as f64, "processes"),
        Measure::baseline("task slots per executor", slots.max(1) as f64, "tasks"),
        Measure::baseline(
            "exact aggregate in process (baseline), median",
            here_ms,
            "ms",
        ),
        fastest("in process", &here),
        slowest("in process", &here),
        Measure::baseline("exact aggregate on the cluster, median", there_ms, "ms"),
        fastest("on the cluster", &there),
        slowest("on the cluster", &there),
        Measure::baseline(
            "cluster / in process",
            there_ms / here_ms.max(f64::MIN_POSITIVE),
            "x",
        ),
        Measure::at_least(
            "runs whose exact values agree (1 = all)",
            if agree { 1.0 } else { 0.0 },
            "",
            1.0,
        ),
    ])
}

/// Dataset `kind` generated under `dir` and encrypted under `key` as
/// registration stores it (the plain file removed), opened as a query
/// would open it, for comparing engines on it.
pub fn encrypted_dataset(
    dir: &Path,
    kind: unseen_datasets::DatasetKind,
    name: &str,
    options: &unseen_datasets::GenerateOptions,
    key: [u8; 32],
) -> Result<crate::data::OpenDataset> {
    let plain = dir.join(format!("{name}-plain.parquet"));
    unseen_datasets::generate_to_path(kind, options, &plain, &mut |_| {})
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let manifest = unseen_policy::Manifest::parse(unseen_datasets::manifest_toml(kind))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let path = dir.join(format!("{name}.parquet"));
    let ingested = crate::data::ingest(
        &plain,
        &path,
        &dir.join(format!("{name}.index")),
        &key,
        name,
        &manifest,
    )?;
    std::fs::remove_file(&plain)?;
    Ok(crate::data::OpenDataset {
        name: name.to_string(),
        path,
        key,
        manifest,
        scope: None,
        rows: ingested.rows,
        unit_unique: ingested.one_row_per_unit,
        within_bounds: Vec::new(),
    })
}

/// The same exact values, but for float sums, whose order of addition
/// differs between engines.
pub fn same_values(a: &[Vec<Vec<f64>>], b: &[Vec<Vec<f64>>]) -> bool {
    a.len() == b.len()
        && a.iter().flatten().zip(b.iter().flatten()).all(|(x, y)| {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(x, y)| (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0))
        })
}
