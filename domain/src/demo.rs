//! `unseen demo`: the whole product on fresh synthetic data, narrated.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use indicatif::{ProgressBar, ProgressStyle};
use unseen_datasets::{DatasetKind, GenerateOptions};

use unseen_policy::Manifest;

use crate::{Domain, Role, guests};

/// What the demo runs on.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Data directory; a new temporary one when `None`.
    pub data_dir: Option<PathBuf>,
    /// Rows of `residents`.
    pub rows: u64,
    /// Generator seed.
    pub seed: u64,
    /// Run the analysts' queries on a local Ballista cluster (a scheduler
    /// and two enrolled executors, processes of this binary) instead of in
    /// this process.
    pub cluster: bool,
}

/// Generates a synthetic dataset with a progress bar; returns the rows written.
pub fn generate(
    name: &str,
    rows: u64,
    seed: u64,
    related_rows: Option<u64>,
    path: &Path,
) -> Result<u64> {
    let kind: DatasetKind = name.parse().map_err(|e| anyhow!("{e}"))?;
    let mut opts = GenerateOptions::new(rows, seed);
    if let Some(r) = related_rows {
        opts = opts.with_related_rows(r);
    }
    let bar = ProgressBar::new(rows);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} rows ({eta})")
            .map_err(|e| anyhow!("{e}"))?
            .progress_chars("=> "),
    );
    bar.set_message(format!("generating {name}"));
    let summary =
        unseen_datasets::generate_to_path(kind, &opts, path, &mut |done| bar.set_position(done))
            .with_context(|| format!("cannot generate {name} into {}", path.display()))?;
    bar.finish_and_clear();
    Ok(summary.rows)
}

/// Terminal columns a string takes: East Asian wide characters take two.
fn display_width(s: &str) -> usize {
    s.chars()
        .map(|c| {
            if ('\u{1100}'..='\u{FFEF}').contains(&c) {
                2
            } else {
                1
            }
        })
        .sum()
}

/// Prints a released table with its intervals.
pub fn print_table(out: &mut dyn Write, table: &udf_sdk::Table) -> std::io::Result<()> {
    let widths: Vec<usize> = table
        .columns
        .iter()
        .map(|c| {
            (0..table.rows())
                .map(|r| display_width(&c.values.display(r)))
                .chain([display_width(&c.name)])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w.saturating_sub(display_width(c)))))
            .collect::<Vec<_>>()
            .join("  ")
    };
    writeln!(
        out,
        "    {}",
        line(table.columns.iter().map(|c| c.name.clone()).collect())
    )?;
    for r in 0..table.rows() {
        writeln!(
            out,
            "    {}",
            line(table.columns.iter().map(|c| c.values.display(r)).collect())
        )?;
    }
    Ok(())
}

/// A fresh directory for a demo run without `--data-dir`: owner-only from
/// the start, whatever the umask, because `Domain::open` refuses a data
/// directory others may read.
pub fn scratch_dir() -> std::io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix("unseen-demo-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
}

/// Runs the demo end to end, writing the narration to `out`.
pub fn run(
    options: DemoOptions,
    runtime: &tokio::runtime::Runtime,
    out: &mut dyn Write,
) -> Result<()> {
    let dir = match &options.data_dir {
        Some(d) => d.clone(),
        // Kept after exit so the user can inspect and verify it.
        None => scratch_dir()?.keep(),
    };
    writeln!(out, "Unseen demo — data directory {}", dir.display())?;
    writeln!(out)?;

    let (domain, grant) = set_up(&dir, &options, runtime, out)?;
    // Lives until the demo ends; its processes stop when it is dropped.
    let cluster_dir = tempfile::Builder::new()
        .prefix("unseen-cluster-")
        .tempdir()?;
    let _cluster = if options.cluster {
        Some(start_cluster(&domain, cluster_dir.path(), out)?)
    } else {
        None
    };
    let output = district_income(&domain, &grant, runtime, out)?;
    refusals(&domain, &grant, runtime, out)?;
    review_own_and_approve(&domain, &output, out)?;
    chronic_disease(&domain, runtime, out)?;
    sme_credit_risk(&domain, runtime, &options, out)?;
    writeln!(out)?;

    writeln!(
        out,
        "7. Auditor verifies the ledger offline with only the public key"
    )?;
    domain.settle_ledger()?;
    let report = crate::cli::verify_ledger(&dir, None)?;
    writeln!(
        out,
        "   ledger OK: {} entries, root {}",
        report.size, report.root_hex
    )?;
    writeln!(
        out,
        "   verify again any time: unseen ledger verify --data-dir {}",
        dir.display()
    )?;
    // Which code handled the data: a signed statement, checked offline
    // against the key and the binary file itself.
    let attestation = serde_json::to_string(&domain.attest(Some("demo"))?)?;
    let key = crate::audit::read_public_key(&dir, None)?;
    let binary = std::env::current_exe()?;
    let verified =
        crate::attest::verify_attestation(&attestation, &key, Some(&binary), Some("demo"))?;
    writeln!(
        out,
        "   build attested: binary sha256 {} (commit {}), the file {} matches; see `unseen attest`",
        verified.statement.build.binary_sha256,
        verified.statement.build.git_commit,
        binary.display()
    )?;
    Ok(())
}

/// The admin enrols two executors and starts a local cluster of them; the
/// domain's queries run on it from then on.
fn start_cluster(
    domain: &Arc<Domain>,
    dir: &Path,
    out: &mut dyn Write,
) -> Result<crate::cluster_engine::LocalCluster> {
    let mut secrets = Vec::new();
    for name in ["exec-1", "exec-2"] {
        let enrolment = domain.enrol_executor("wang.min", name)?;
        secrets.push(crate::cluster::ExecutorSecret {
            name: name.to_string(),
            secret: enrolment.secret,
        });
    }
    let program = std::env::current_exe()?;
    let authority = crate::cluster_engine::authority(domain)?;
    let cluster =
        crate::cluster_engine::LocalCluster::start(&program, dir, &authority, &secrets, 2)?;
    domain.set_remote_engine(cluster.engine());
    writeln!(
        out,
        "   queries run on a local Ballista cluster: scheduler {}, executors exec-1 and exec-2 (enrolled in the ledger; each opens only the data keys sealed to it, and every connection between them and the service is mutual TLS with identities from the service's cluster authority)",
        cluster.scheduler
    )?;
    Ok(cluster)
}

/// Step 1: the admin adds the users, registers the synthetic datasets and
/// issues the first grant. The domain and that grant.
fn set_up(
    dir: &Path,
    options: &DemoOptions,
    runtime: &tokio::runtime::Runtime,
    out: &mut dyn Write,
) -> Result<(Arc<Domain>, String)> {
    let staging = tempfile::Builder::new()
        .prefix("unseen-staging-")
        .tempdir()?;
    writeln!(out, "1. Platform admin 王敏 sets up the domain")?;
    let domain = Arc::new(Domain::open(dir)?);
    let started = domain.record_start("demo")?;
    let build = crate::attest::running_build()?;
    writeln!(
        out,
        "   the running build is in ledger entry {started}: binary sha256 {}, wasmtime {}, DataFusion {}, OpenDP {}",
        build.binary_sha256, build.wasmtime, build.datafusion, build.opendp
    )?;
    domain.add_user(
        None,
        "wang.min",
        "王敏",
        Role::Admin,
        "Municipal Data Bureau",
    )?;
    domain.add_user(
        Some("wang.min"),
        "li.qiang",
        "李强",
        Role::Developer,
        "Housing Policy Research Centre",
    )?;
    domain.add_user(
        Some("wang.min"),
        "zhang.hua",
        "张华",
        Role::Reviewer,
        "Municipal Data Bureau",
    )?;
    writeln!(
        out,
        "   users: wang.min (admin), li.qiang (developer), zhang.hua (reviewer)"
    )?;

    let parquet = staging.path().join("residents.parquet");
    let rows = generate("residents", options.rows, options.seed, None, &parquet)?;
    writeln!(
        out,
        "   generated {rows} synthetic residents (seed {}) outside the domain",
        options.seed
    )?;
    let manifest = unseen_datasets::manifest_toml(DatasetKind::Residents);
    let ingested =
        runtime.block_on(domain.register_dataset("wang.min", "residents", &parquet, manifest))?;
    // Two visits per resident on average, of the same residents.
    let visits_file = staging.path().join("health_visits.parquet");
    let visits = generate(
        "health_visits",
        options.rows * 2,
        options.seed + 1,
        Some(options.rows),
        &visits_file,
    )?;
    runtime.block_on(domain.register_dataset(
        "wang.min",
        "health_visits",
        &visits_file,
        unseen_datasets::manifest_toml(DatasetKind::HealthVisits),
    ))?;
    drop(staging);
    writeln!(
        out,
        "   registered `residents`: {} rows, encrypted at rest (AES-256-GCM, per-dataset key wrapped by the master key)",
        ingested.rows
    )?;
    writeln!(
        out,
        "   prohibited: person_id, id_number, name, phone · conditional: birth_year, district, household_size, annual_income, chronic_condition · open: gender"
    )?;
    writeln!(
        out,
        "   registered `health_visits`: {visits} visits of those residents (person_id prohibited; diagnosis, date and cost conditional)"
    )?;
    let grant = domain.issue_grant(
        "wang.min",
        &crate::GrantRequest {
            scenario: "affordable-housing plan".into(),
            query_epsilon: 1.0,
            allow_extracts: true,
            ..crate::GrantRequest::new(
                "residents",
                "li.qiang",
                "District income statistics for the affordable-housing plan",
                3.0,
            )
        },
    )?;
    writeln!(
        out,
        "   issued grant {grant} to li.qiang: epsilon budget 3.0, 1.0 per query, valid 365 days"
    )?;
    writeln!(out)?;

    Ok((domain, grant))
}

/// Step 2: a wasm job under the grant; the id of its quarantined output.
fn district_income(
    domain: &Arc<Domain>,
    grant: &str,
    runtime: &tokio::runtime::Runtime,
    out: &mut dyn Write,
) -> Result<String> {
    let handle = runtime.handle().clone();
    writeln!(
        out,
        "2. Developer 李强 submits `district-income` (wasm, no WASI, host ABI only)"
    )?;
    let module = domain.upload_module("li.qiang", guests::DISTRICT_INCOME)?;
    writeln!(out, "   module sha256 {module}")?;
    let outcome = domain.run_job(
        &handle,
        "li.qiang",
        grant,
        &module,
        BTreeMap::new(),
        &Default::default(),
    )?;
    for line in &outcome.logs {
        writeln!(out, "   guest log: {line}")?;
    }
    if !outcome.succeeded() {
        return Err(anyhow!(
            "district-income job {}: {}",
            outcome.ending_word(),
            outcome.error.unwrap_or_default()
        ));
    }
    let output = outcome
        .outputs
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("district-income emitted nothing"))?;
    let (spent, left) = domain.budget(grant)?;
    writeln!(
        out,
        "   job {} succeeded; output {output} is in quarantine",
        outcome.job_id
    )?;
    writeln!(out, "   epsilon spent {spent:.3}, left {left:.3}")?;
    writeln!(out)?;

    Ok(output)
}

/// Step 3: queries the classification forbids are refused and cost nothing.
fn refusals(
    domain: &Arc<Domain>,
    grant: &str,
    runtime: &tokio::runtime::Runtime,
    out: &mut dyn Write,
) -> Result<()> {
    let handle = runtime.handle().clone();
    writeln!(
        out,
        "3. Developer 李强 tries to read what the classification forbids"
    )?;
    for (label, bytes) in [
        (
            "refused-id-number  (SELECT id_number FROM residents)",
            guests::REFUSED_ID_NUMBER,
        ),
        (
            "refused-raw-income (SELECT district, annual_income FROM residents)",
            guests::REFUSED_RAW_INCOME,
        ),
    ] {
        let sha = domain.upload_module("li.qiang", bytes)?;
        let o = domain.run_job(
            &handle,
            "li.qiang",
            grant,
            &sha,
            BTreeMap::new(),
            &Default::default(),
        )?;
        // The developer sees `finished`; the refusals are part of the
        // job's outcome, which the reviewer reads (shown here as such).
        writeln!(
            out,
            "   {label}: job {} (its guest ended {}); in its outcome for the reviewer:",
            o.status,
            o.ending_word()
        )?;
        for r in &o.refusals {
            writeln!(out, "     {r}")?;
        }
        if o.refusals.is_empty() || !o.outputs.is_empty() {
            return Err(anyhow!("the policy did not refuse {label}"));
        }
    }
    let (spent, left) = domain.budget(grant)?;
    writeln!(
        out,
        "   nothing was spent on refusals: epsilon spent {spent:.3}, left {left:.3}"
    )?;
    writeln!(out)?;

    Ok(())
}

/// Step 4: self-review is refused; the reviewer approves.
fn review_own_and_approve(domain: &Domain, output: &str, out: &mut dyn Write) -> Result<()> {
    writeln!(out, "4. Review")?;
    match domain.review("li.qiang", output, true, "looks fine to me") {
        Err(e) => writeln!(
            out,
            "   li.qiang tries to approve his own output: refused — {e}"
        )?,
        Ok(_) => return Err(anyhow!("self-review was not refused")),
    }
    let (name, _, table) = domain.output(output)?;
    writeln!(
        out,
        "   reviewer 张华 inspects `{name}` (95% confidence intervals in brackets):"
    )?;
    print_table(out, &table)?;
    let release = domain
        .review(
            "zhang.hua",
            output,
            true,
            "DP aggregates over public districts; no identifiers",
        )?
        .ok_or_else(|| anyhow!("approval produced no release"))?;
    writeln!(
        out,
        "   zhang.hua approved; signed release {} at {}",
        release.id,
        release.path.display()
    )?;
    writeln!(out)?;

    Ok(())
}

/// Step 5: a second grant joining health visits to residents.
fn chronic_disease(
    domain: &Arc<Domain>,
    runtime: &tokio::runtime::Runtime,
    out: &mut dyn Write,
) -> Result<()> {
    let handle = runtime.handle().clone();
    writeln!(
        out,
        "5. A second grant joins health visits to residents on the person"
    )?;
    let health = domain.issue_grant(
        "wang.min",
        &crate::GrantRequest {
            scenario: "chronic-disease prevention".into(),
            join_datasets: vec!["residents".into()],
            query_epsilon: 1.0,
            ..crate::GrantRequest::new(
                "health_visits",
                "li.qiang",
                "Chronic-disease visit rates per district",
                2.0,
            )
        },
    )?;
    writeln!(
        out,
        "   issued grant {health}: health_visits joined to residents on person_id, epsilon 2.0"
    )?;
    let module = domain.upload_module("li.qiang", guests::CHRONIC_DISEASE)?;
    let outcome = domain.run_job(
        &handle,
        "li.qiang",
        &health,
        &module,
        BTreeMap::new(),
        &Default::default(),
    )?;
    let chronic = first_output("chronic-disease", outcome)?;
    writeln!(
        out,
        "   `chronic-disease` ran two DP counts, one over the join (each person's visits cut to 10, noise scaled to 10 x 1); the person_id never left the engine"
    )?;
    inspect_and_approve(
        domain,
        &chronic,
        "DP counts and rates over public districts",
        out,
    )?;
    writeln!(out)?;

    Ok(())
}

/// Step 6: the finance scenario. Enterprises joined to their tax and
/// electricity records, each scored by a UDF inside the engine, and only
/// the DP mean score per industry released.
fn sme_credit_risk(
    domain: &Arc<Domain>,
    runtime: &tokio::runtime::Runtime,
    options: &DemoOptions,
    out: &mut dyn Write,
) -> Result<()> {
    writeln!(
        out,
        "6. SME credit risk: a UDF scores every enterprise inside the engine"
    )?;
    let staging = tempfile::Builder::new()
        .prefix("unseen-staging-")
        .tempdir()?;
    let enterprises = (options.rows / 20).max(2_000);
    let datasets = [
        ("enterprises", DatasetKind::Enterprises, enterprises, None),
        (
            "tax_records",
            DatasetKind::TaxRecords,
            enterprises * 4,
            Some(enterprises),
        ),
        (
            "utility_usage",
            DatasetKind::UtilityUsage,
            enterprises * 10,
            Some(enterprises),
        ),
    ];
    for (i, (name, kind, rows, related)) in datasets.into_iter().enumerate() {
        let path = staging.path().join(format!("{name}.parquet"));
        let rows = generate(name, rows, options.seed + 10 + i as u64, related, &path)?;
        runtime.block_on(domain.register_dataset(
            "wang.min",
            name,
            &path,
            unseen_datasets::manifest_toml(kind),
        ))?;
        writeln!(
            out,
            "   registered `{name}`: {rows} rows (credit_code prohibited)"
        )?;
    }
    // The agency applies; the provider pre-reviews, narrows and approves.
    let application = domain.apply(
        "li.qiang",
        &crate::GrantRequest {
            scenario: "SME credit risk".into(),
            join_datasets: vec!["tax_records".into(), "utility_usage".into()],
            query_epsilon: 1.0,
            allow_udfs: true,
            ..crate::GrantRequest::new(
                "enterprises",
                "",
                "Credit risk of small and medium enterprises by industry",
                4.0,
            )
        },
    )?;
    writeln!(
        out,
        "   li.qiang applies ({application}): enterprises joined to tax_records and utility_usage on credit_code, UDFs, epsilon 4.0"
    )?;
    domain.pre_review_application(
        "wang.min",
        &application,
        &unseen_api::PreReview {
            complete: true,
            reason: String::new(),
        },
    )?;
    let grant = domain
        .decide_application(
            "wang.min",
            &application,
            &unseen_api::ApplicationDecision {
                approve: true,
                reason: "one DP release per industry needs epsilon 2 at most".into(),
                narrowing: unseen_api::Narrowing {
                    epsilon_total: Some(2.0),
                    ..Default::default()
                },
            },
        )?
        .context("an approval issues a grant")?;
    writeln!(
        out,
        "   wang.min pre-reviews it (complete) and approves it narrowed to epsilon 2.0: grant {grant} issued exactly as reviewed"
    )?;
    let (udf, functions) = domain.upload_udf_module("li.qiang", guests::UDF_SME_SCORE)?;
    writeln!(
        out,
        "   UDF module {} declares {} (no imports at all)",
        &udf[..12],
        functions.join(", ")
    )?;
    let module = domain.upload_module("li.qiang", guests::SME_CREDIT_RISK)?;
    let outcome = domain.run_job(
        runtime.handle(),
        "li.qiang",
        &grant,
        &module,
        BTreeMap::new(),
        &crate::jobs::JobExtras {
            udfs: vec![udf.clone()],
            inputs: Vec::new(),
        },
    )?;
    let output = first_output("sme-credit-risk", outcome)?;
    writeln!(
        out,
        "   `sme-credit-risk` ran one DP query: sme_score(tax, kWh) per enterprise-month, bounded to [300, 850], averaged per industry (noise scaled to 1 x 6 x 12 rows per enterprise)"
    )?;
    inspect_and_approve(
        domain,
        &output,
        "DP means over public industries; scores never left the engine",
        out,
    )?;
    // The bank's own data, brought in with approval and joined on credit_code.
    let enterprises_file = staging.path().join("enterprises.parquet");
    let loans_csv = staging.path().join("bank_loans.csv");
    let loans = bank_loans_csv(&enterprises_file, &loans_csv, options.seed)?;
    let manifest = Manifest::parse(BANK_LOANS_MANIFEST)?;
    let loans_parquet = crate::import::csv_to_parquet(&loans_csv, &manifest, staging.path())?;
    let import = domain.propose_import(
        "li.qiang",
        &grant,
        "bank_loans",
        &loans_parquet,
        BANK_LOANS_MANIFEST,
    )?;
    writeln!(
        out,
        "   li.qiang proposes the bank's loan book ({loans} enterprises by credit_code, CSV) for grant {grant}: import {import}, credit codes checked (GB 32100-2015 check characters, no repeats), quarantined encrypted"
    )?;
    runtime.block_on(domain.decide_import(
        "wang.min",
        &import,
        &unseen_api::ImportDecision {
            approve: true,
            reason: "loan outcomes for the SME credit scenario, joined on credit_code only".into(),
            epsilon: Some(1.0),
        },
    ))?;
    writeln!(
        out,
        "   wang.min approves it: `bank_loans` registered encrypted, joinable under {grant} only on credit_code and only below DP, its own budget epsilon 1.0; destroyed with the grant"
    )?;
    let outcome = domain.run_sql(
        runtime.handle(),
        "li.qiang",
        &grant,
        "SELECT e.industry, AVG(b.defaulted) AS default_rate, COUNT(*) AS loans FROM enterprises e JOIN bank_loans b ON e.credit_code = b.credit_code GROUP BY e.industry",
        &Default::default(),
    )?;
    let defaults = first_output("the default-rate query", outcome)?;
    inspect_and_approve(
        domain,
        &defaults,
        "DP default rates over public industries; no loan left the engine",
        out,
    )?;
    domain.application_feedback(
        "li.qiang",
        &application,
        &unseen_api::ApplicationFeedback {
            rating: 4,
            text: "industry means answered the question; months would help".into(),
        },
    )?;
    writeln!(
        out,
        "   li.qiang rates the grant's use 4 of 5; every step is in the ledger and the disclosure report"
    )?;
    Ok(())
}

/// The job's first output, or an error naming the job and how it ended.
fn first_output(job: &str, outcome: crate::JobOutcome) -> Result<String> {
    match (outcome.succeeded(), outcome.outputs.first()) {
        (true, Some(output)) => Ok(output.clone()),
        _ => Err(anyhow!(
            "{job} job {}: {}",
            outcome.ending_word(),
            outcome.error.unwrap_or_default()
        )),
    }
}

/// The reviewer shows the output and approves it into a signed release.
fn inspect_and_approve(
    domain: &Domain,
    output: &str,
    reason: &str,
    out: &mut dyn Write,
) -> Result<()> {
    let (name, _, table) = domain.output(output)?;
    writeln!(out, "   reviewer 张华 inspects `{name}`:")?;
    print_table(out, &table)?;
    let release = domain
        .review("zhang.hua", output, true, reason)?
        .ok_or_else(|| anyhow!("approval produced no release"))?;
    writeln!(out, "   zhang.hua approved; signed release {}", release.id)?;
    Ok(())
}

/// The manifest of the demo bank's loan book: one row per enterprise it
/// lent to, keyed by credit code.
pub const BANK_LOANS_MANIFEST: &str = r#"name = "bank_loans"
version = 1
description = "A bank's loans to enterprises: the amount lent and whether the loan defaulted. One row per enterprise."
privacy_unit = "credit_code"
max_contributions = 1
min_group_size = 8
join_keys = ["credit_code"]

[[columns]]
name = "credit_code"
type = "utf8"
class = "prohibited"

[[columns]]
name = "loan_amount"
type = "int64"
class = "conditional"
bounds = [0, 10000000]

[[columns]]
name = "defaulted"
type = "int64"
class = "conditional"
bounds = [0, 1]
"#;

/// Writes the demo bank's loan book as CSV: every other enterprise of the
/// `enterprises` Parquet file, with an amount and a default drawn from its
/// position and `seed`. The rows written.
pub fn bank_loans_csv(enterprises: &Path, out: &Path, seed: u64) -> Result<usize> {
    use arrow::array::AsArray;
    let file = std::fs::File::open(enterprises)
        .with_context(|| format!("cannot read {}", enterprises.display()))?;
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let mut text = String::from("credit_code,loan_amount,defaulted\n");
    let (mut index, mut rows) = (0u64, 0usize);
    for batch in reader {
        let batch = batch?;
        let codes = batch
            .column_by_name("credit_code")
            .context("the enterprises file has no credit_code")?
            .as_string::<i32>()
            .clone();
        for code in codes.iter().flatten() {
            index += 1;
            if index % 2 == 1 {
                continue;
            }
            // A small multiplicative hash: varied, reproducible, not noise.
            let mix = (index ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let amount = 50_000 + (mix >> 40) % 5_000_000;
            let defaulted = u8::from((mix >> 20) % 100 < 7);
            text.push_str(&format!("{code},{amount},{defaulted}\n"));
            rows += 1;
        }
    }
    crate::util::write_private(out, text.as_bytes())
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(rows)
}
