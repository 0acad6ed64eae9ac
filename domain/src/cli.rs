//! The `unseen` command line. Kept in the library so end-to-end tests can
//! drive every command in-process and inspect everything it prints.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::{Domain, Role, demo};

/// Unseen: public data that is usable but invisible.
#[derive(Debug, Parser)]
#[command(name = "unseen", version, long_version = LONG_VERSION, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub remote: Remote,
    #[command(subcommand)]
    pub command: Command,
}

/// Act against a running server instead of a local data directory.
#[derive(Debug, Args, Clone)]
pub struct Remote {
    /// Server URL, like http://127.0.0.1:8787 (then --token says who you are).
    #[arg(long, global = true, env = "UNSEEN_SERVER")]
    pub server: Option<String>,
    /// Bearer token for --server.
    #[arg(long, global = true, env = "UNSEEN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct DataDir {
    /// Data directory (store, ledger, keys, encrypted data). Default: a per-user directory.
    #[arg(long, global = true, env = "UNSEEN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataDir {
    fn path(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }
}

fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("unseen");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/unseen"),
        None => PathBuf::from(".unseen"),
    }
}

/// `unseen --version`: the version, the commit and the engines it was
/// built with (read from git and `Cargo.lock` when it was built).
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("UNSEEN_GIT_COMMIT"),
    ")\nwasmtime ",
    env!("UNSEEN_WASMTIME_VERSION"),
    ", DataFusion ",
    env!("UNSEEN_DATAFUSION_VERSION"),
    ", OpenDP ",
    env!("UNSEEN_OPENDP_VERSION"),
);

/// Writes `rows` under `headers` as columns aligned by display width (CJK
/// characters count two), the `numeric` columns right-aligned, without
/// borders or trailing spaces.
fn write_table(
    out: &mut dyn Write,
    headers: &[&str],
    numeric: &[usize],
    rows: Vec<Vec<String>>,
) -> Result<()> {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(headers.to_vec());
    for row in rows {
        table.add_row(row);
    }
    for &i in numeric {
        if let Some(column) = table.column_mut(i) {
            column.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    for line in table.lines() {
        // The first column's left padding is not part of the layout.
        let line = line.strip_prefix(' ').unwrap_or(&line);
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Writes the page of `command` and of each subcommand below it into
/// `dir` (`unseen.1`, `unseen-grant-issue.1`, ...); returns how many.
fn write_man_pages(command: &clap::Command, dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    // Building names each subcommand by its path (`unseen-grant-issue`).
    let mut root = command.clone();
    root.build();
    let mut written = 0;
    let mut todo = vec![root];
    while let Some(command) = todo.pop() {
        todo.extend(
            command
                .get_subcommands()
                // Not clap's own `help` commands, added by building.
                .filter(|s| !s.is_hide_set() && s.get_name() != "help")
                .cloned(),
        );
        let name = command
            .get_display_name()
            .unwrap_or(command.get_name())
            .to_owned();
        let mut page = Vec::new();
        clap_mangen::Man::new(command).render(&mut page)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
        written += 1;
    }
    Ok(written)
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a completion script for a shell, to stdout.
    ///
    /// Example: `unseen completions bash > ~/.local/share/bash-completion/completions/unseen`
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write a manual page for `unseen` and one for each of its commands
    /// (`unseen-grant-issue.1`, ...) into a directory.
    ///
    /// Example: `unseen man --out /usr/local/share/man/man1 && man unseen-grant-issue`
    Man {
        /// The directory to write the pages into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the whole flow on fresh synthetic data: generate, register, grant,
    /// run guests, review, release, verify the ledger.
    Demo {
        /// Where to keep the demo's data directory (default: a new temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Rows of `residents` to generate.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Seed of the generator.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Run one SQL statement as a one-query job (admission, DP, quarantine,
    /// review), or with --dry-run only print the verdict, cost and accuracy.
    Query {
        sql: String,
        #[arg(long)]
        grant: String,
        /// Print the verdict, epsilon cost and expected accuracy without spending.
        #[arg(long)]
        dry_run: bool,
        /// A UDF module (.wasm) whose functions the query may call
        /// (repeatable); the grant must allow UDFs.
        #[arg(long = "udf")]
        udfs: Vec<PathBuf>,
        /// An earlier release to read as table `release_<id>` (repeatable);
        /// its grant must allow derived reuse.
        #[arg(long = "input")]
        inputs: Vec<String>,
        #[arg(long = "as")]
        actor: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// A sampled, masked, k-anonymised row extract for development, under a
    /// grant that allows extracts; the extract goes to quarantine for review.
    Extract {
        #[arg(long)]
        grant: String,
        /// Columns to extract, comma-separated (each leaves through its mask rule).
        #[arg(long, value_delimiter = ',')]
        columns: Vec<String>,
        /// Fraction of rows to sample, in (0, 1].
        #[arg(long, default_value_t = 0.01)]
        sample: f64,
        #[arg(long = "as")]
        actor: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Serve the HTTP API (JSON, bearer tokens, role checks) on the loopback by default.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: String,
        /// Jobs that run at once; more wait in the queue.
        #[arg(long, default_value_t = 4)]
        max_jobs: usize,
        /// Connections open at once; when full, the oldest idle one is closed.
        #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
        max_connections: u32,
        /// Connections one client address may hold at once.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
        max_connections_per_client: u32,
        /// Seconds a client has to send a request's header before its
        /// connection is closed.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
        header_timeout: u64,
        /// Seconds a client has to send a request's whole body.
        #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86400))]
        body_timeout: u64,
        /// A witness to submit checkpoints to (URL), at start and then every
        /// --witness-every seconds; needs --witness-key.
        #[arg(long, requires = "witness_key")]
        witness: Option<String>,
        /// The witness's verifier key, as `unseen witness init` printed it.
        #[arg(long, requires = "witness")]
        witness_key: Option<String>,
        /// Seconds between submissions to the witness.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
        witness_every: u64,
        /// Memory one query may hold, like 512M or 2G; beyond it the query
        /// spills to the data directory where it can, else fails as too
        /// large (a DP query's release is then computed on fixed defaults).
        #[arg(long, default_value = "512M", value_parser = parse_bytes)]
        query_memory: usize,
        /// Seconds one query may run before it is stopped.
        #[arg(long, default_value_t = crate::data::DEFAULT_QUERY_SECONDS, value_parser = clap::value_parser!(u64).range(1..=86400))]
        query_timeout: u64,
        /// Rows one join may produce before the query is stopped as too large.
        #[arg(long, default_value_t = crate::data::DEFAULT_JOIN_ROWS, value_parser = clap::value_parser!(u64).range(1..))]
        max_join_rows: u64,
        /// Seconds a stopping server (SIGTERM, Ctrl-C) lets running work
        /// finish before it cancels it; it exits within this time.
        #[arg(long, default_value_t = crate::server::DEFAULT_GRACE_SECONDS, value_parser = clap::value_parser!(u64).range(0..=3600))]
        grace_period: u64,
        /// Milliseconds: a job that read protected data is shown to its
        /// developer to end a random 0 to this many milliseconds after it
        /// did, and its answer waits until then, so its duration cannot
        /// tell one person's row (default 500; 0 shows ends as they happen
        /// and lets developers time their queries).
        #[arg(long, env = "UNSEEN_TIMING_QUANTUM_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(0..=60_000))]
        timing_quantum_ms: u64,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Job log retention.
    #[command(subcommand)]
    Logs(LogsCommand),
    /// Develop without seeing data: run a guest locally against mock data.
    #[command(subcommand)]
    Dev(DevCommand),
    /// Generate, register and list datasets.
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// Add and list users.
    #[command(subcommand)]
    User(UserCommand),
    /// Issue and show grants.
    #[command(subcommand)]
    Grant(GrantCommand),
    /// Upload and run jobs.
    #[command(subcommand)]
    Job(JobCommand),
    /// Review quarantined outputs.
    #[command(subcommand)]
    Review(ReviewCommand),
    /// Show a grant's privacy budget.
    #[command(subcommand)]
    Budget(BudgetCommand),
    /// Verify, query and prove the audit ledger.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Verify downloaded releases.
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// Benchmarks, each against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Reports built from the ledger alone.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Run a witness: a second party that co-signs the ledger's checkpoints
    /// and refuses forks (C2SP tlog-witness).
    #[command(subcommand)]
    Witness(WitnessCommand),
}

#[derive(Debug, Subcommand)]
pub enum WitnessCommand {
    /// Create a witness key in DIR and print its verifier key, which the
    /// operator passes to `ledger witness` and auditors to
    /// `ledger verify --witness-key`.
    Init {
        /// The witness's directory (created 0700; holds its key and records).
        #[arg(long)]
        dir: PathBuf,
        /// The witness's name, e.g. `witness.audit.example`.
        #[arg(long)]
        name: String,
    },
    /// Print the verifier key of the witness in DIR.
    Key {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Serve `POST /add-checkpoint` and `GET /latest` for one ledger.
    Serve {
        #[arg(long)]
        dir: PathBuf,
        /// The ledger's public key file (its `ledger.pub`).
        #[arg(long)]
        log_key: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8788")]
        listen: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum LogsCommand {
    /// Clear guest logs of jobs that ended more than N days ago (never
    /// younger than the retention period, default 183 days); job records,
    /// metering and the ledger stay.
    Prune {
        #[arg(long)]
        older_than_days: u32,
        #[arg(long = "as")]
        actor: Option<String>,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Run GUEST.wasm against mock data made from a manifest alone (types,
    /// category domains, bounds; never real rows), through the same sandbox
    /// and policy as the service, in a throwaway data directory.
    Run {
        module: PathBuf,
        /// The dataset's manifest (TOML).
        #[arg(long, conflicts_with = "dataset", required_unless_present = "dataset")]
        manifest: Option<PathBuf>,
        /// Use the built-in manifest of a synthetic dataset (residents, …).
        #[arg(long)]
        dataset: Option<String>,
        #[arg(long, default_value_t = 2000)]
        rows: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Job parameter, `name=value` (repeatable).
        #[arg(long = "param")]
        params: Vec<String>,
        /// A UDF module (.wasm) whose functions the job's queries may call
        /// (repeatable).
        #[arg(long = "udf")]
        udfs: Vec<PathBuf>,
        /// DP marginals from `unseen dataset marginals`: mock columns follow
        /// them instead of being uniform.
        #[arg(long)]
        marginals: Option<PathBuf>,
        /// A downloaded release of a masked extract (`release download`):
        /// one mock row per sample row, with the sample's columns (numbers
        /// drawn within their masked bands); `--rows` is then ignored.
        #[arg(long)]
        sample: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Download a signed release as an offline-verifiable bundle
    /// (designated users, within the grant's limit; counted only once the
    /// file is written).
    Download {
        id: String,
        /// Write the bundle here (default: print it).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace the --out file if it exists.
        #[arg(long, requires = "out")]
        force: bool,
        #[arg(long = "as")]
        actor: Option<String>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Prove a release end to end: signature, content hash, ledger entries,
    /// inclusion under the signed checkpoint. A downloaded bundle needs only
    /// --public-key; a bare release file is checked against DATA_DIR's ledger.
    Verify {
        file: PathBuf,
        /// Public key file (default: `DATA_DIR/ledger/ledger.pub`).
        #[arg(long)]
        public_key: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Durable appends with group commit vs raw write+fsync, full
    /// verification speed, inclusion proofs at ten million entries.
    Ledger {
        #[arg(long, default_value_t = 200_000)]
        entries: u64,
        #[arg(long, default_value_t = 64)]
        threads: usize,
        #[arg(long, default_value_t = 10_000_000)]
        proof_size: u64,
        #[arg(long, default_value_t = 1_000_000)]
        verify_entries: u64,
        /// Write NAME.json and NAME.svg here.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Policy admission latency, and a DP release against the same exact
    /// aggregate in DataFusion.
    Policy {
        #[arg(long, default_value_t = 2000)]
        runs: usize,
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The job sandbox: bare jobs/s, submit-to-first-query, and a DP job
    /// against the same aggregate in native DataFusion.
    Sandbox {
        #[arg(long, default_value_t = 2000)]
        jobs: usize,
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Wasm scalar UDFs in DataFusion against native UDFs, and instantiation.
    Udf {
        #[arg(long, default_value_t = 10_000_000)]
        rows: usize,
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// End-to-end small jobs over HTTP on the loopback (submit, run,
    /// quarantine) with p50/p99 latency, against the same jobs in-process.
    Service {
        #[arg(long, default_value_t = 2000)]
        jobs: usize,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Rows of the residents table the jobs read.
        #[arg(long, default_value_t = 10_000)]
        rows: u64,
        /// Write service.json and service.svg here.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Grants issued and their use (jobs, queries, epsilon, releases), for publication.
    Disclosure {
        #[arg(long)]
        public_key: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Write a deterministic synthetic dataset as Parquet.
    Generate {
        /// residents, health_visits, enterprises, tax_records or utility_usage.
        name: String,
        #[arg(long)]
        rows: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Rows of the related dataset (residents for health_visits, enterprises for tax_records/utility_usage).
        #[arg(long)]
        related_rows: Option<u64>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the built-in manifest of a synthetic dataset.
    Manifest { name: String },
    /// Register a Parquet file with its manifest; stored encrypted.
    Register {
        #[arg(long)]
        name: String,
        #[arg(long)]
        parquet: PathBuf,
        #[arg(long)]
        manifest: PathBuf,
        /// Acting admin.
        #[arg(long = "as")]
        actor: Option<String>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// List registered datasets.
    List {
        #[arg(long = "as")]
        actor: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Destroy a dataset's data key (crypto-shredding): its data becomes
    /// unreadable, its grants are revoked; the ledger keeps the record.
    Destroy {
        name: String,
        #[arg(long)]
        reason: String,
        #[arg(long = "as")]
        actor: Option<String>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Publish DP marginals of a dataset (noisy category counts and
    /// quantiles per column, charged to its budget), for `dev run
    /// --marginals` mock data that follows the real distribution.
    Marginals {
        name: String,
        /// Total epsilon, split evenly over the columns.
        #[arg(long, default_value_t = 1.0)]
        epsilon: f64,
        /// Write the marginals here (default: print them).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long = "as")]
        actor: Option<String>,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user (the first user of a new data directory must be an admin).
    Add {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        /// admin, developer, reviewer or auditor.
        #[arg(long)]
        role: String,
        #[arg(long, default_value = "")]
        org: String,
        /// Acting admin (omit only for the first admin).
        #[arg(long = "as")]
        actor: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// List users (admins and auditors).
    List {
        #[arg(long = "as")]
        actor: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Disable a user and void their token.
    Disable {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long = "as")]
        actor: Option<String>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Issue a new bearer token for a user (the old one stops working); printed once.
    Token {
        id: String,
        #[arg(long = "as")]
        actor: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Debug, Subcommand)]
pub enum GrantCommand {
    /// Issue a grant over a dataset (and datasets joined to it) to one developer.
    Issue(Box<GrantIssue>),
    /// List grants (a developer sees those they are designated on).
    List {
        #[arg(long = "as")]
        actor: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Show one grant with its controls.
    Show {
        id: String,
        #[arg(long = "as")]
        actor: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Revoke a grant at once; its running jobs are stopped.
    Revoke {
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long = "as")]
        actor: Option<String>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Usage of a grant for pricing: runs, queries, fuel, rows read, time, epsilon, downloads.
    Usage {
        id: String,
        #[arg(long = "as")]
        actor: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
}

/// `unseen grant issue`: the authorization agreement's terms.
#[derive(Debug, clap::Args)]
pub struct GrantIssue {
    #[arg(long)]
    dataset: String,
    /// Another dataset about the same privacy unit that DP queries may
    /// join to `--dataset` on that unit (repeatable).
    #[arg(long = "join")]
    join_datasets: Vec<String>,
    #[arg(long)]
    developer: String,
    #[arg(long)]
    purpose: String,
    /// Total epsilon budget.
    #[arg(long)]
    epsilon: f64,
    /// Epsilon charged per DP query.
    #[arg(long, default_value_t = 0.5)]
    query_epsilon: f64,
    /// Total delta for DP partition selection, which lets group keys without
    /// a public domain release the groups that pass a noisy threshold
    /// (default 0: group keys need a public domain).
    #[arg(long, default_value_t = 0.0)]
    delta: f64,
    /// Delta charged per query that selects partitions.
    #[arg(long, default_value_t = 1e-6)]
    query_delta: f64,
    /// Validity in days (at most 5 years).
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// Allow validity beyond 3 years (never more than 5).
    #[arg(long)]
    extended_validity: bool,
    /// Allow masked, k-anonymised row extracts for development.
    #[arg(long)]
    allow_extracts: bool,
    /// Allow jobs and queries to call UDF modules, which see conditional
    /// values inside the engine (their results leave only through DP).
    #[arg(long)]
    allow_udfs: bool,
    /// Instructions a UDF may execute per row under this grant (with
    /// --allow-udfs; at most and by default 1000000): a row that needs
    /// more is NULL. A lower cap also narrows how much one row can change
    /// a query's duration.
    #[arg(long, default_value_t = crate::MAX_UDF_ROW_INSTRUCTIONS)]
    udf_row_instructions: u64,
    /// Refuse wasm module jobs under this grant.
    #[arg(long)]
    no_modules: bool,
    /// Refuse one-statement SQL jobs under this grant.
    #[arg(long)]
    no_sql: bool,
    /// The named scenario ("one scenario, one review").
    #[arg(long, default_value = "")]
    scenario: String,
    /// UTC time window HH:MM-HH:MM in which jobs may start (repeatable).
    #[arg(long = "window")]
    windows: Vec<String>,
    /// Another developer who may run jobs and download releases (repeatable).
    #[arg(long = "designate")]
    designated: Vec<String>,
    /// Columns the grant covers, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    columns: Vec<String>,
    #[arg(long)]
    max_runs: Option<u32>,
    #[arg(long)]
    max_downloads: Option<u32>,
    /// Released outputs may be reused as inputs of later work.
    #[arg(long)]
    derived_reuse: bool,
    /// Independent approvals a release needs (1 or 2).
    #[arg(long, default_value_t = 1)]
    approvals: u32,
    /// Open-column queries (answered without noise, so spending no
    /// epsilon) allowed per --open-query-window; 0 allows none.
    #[arg(long, default_value_t = crate::DEFAULT_MAX_OPEN_QUERIES)]
    max_open_queries: u32,
    /// The window of --max-open-queries, in seconds (at most 31 days).
    #[arg(long, default_value_t = crate::DEFAULT_OPEN_QUERY_WINDOW)]
    open_query_window: u32,
    #[arg(long = "as")]
    actor: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    dir: DataDir,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Upload a module and run it under a grant; outputs go to quarantine.
    Submit {
        #[arg(long)]
        grant: String,
        #[arg(long)]
        module: PathBuf,
        /// Job parameter, `name=value` (repeatable).
        #[arg(long = "param")]
        params: Vec<String>,
        /// A UDF module (.wasm) whose functions the job's queries may call
        /// (repeatable).
        #[arg(long = "udf")]
        udfs: Vec<PathBuf>,
        /// An earlier release the job's queries may read as table
        /// `release_<id>` (repeatable); its grant must allow derived reuse.
        #[arg(long = "input")]
        inputs: Vec<String>,
        /// With --server: return once the job is queued instead of waiting for it.
        #[arg(long)]
        no_wait: bool,
        #[arg(long = "as")]
        actor: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// A job's status and metering.
    Status {
        id: String,
        #[arg(long = "as")]
        actor: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Jobs, newest first (a developer sees their own).
    List {
        #[arg(long)]
        grant: Option<String>,
        #[arg(long = "as")]
        actor: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Cancel a queued or running job.
    Cancel {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long = "as")]
        actor: Option<String>,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// The queue of quarantined outputs with findings, spend and a diff
    /// against the grant's earlier releases.
    List {
        #[arg(long = "as")]
        actor: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Show a quarantined output.
    Show {
        output: String,
        #[arg(long = "as")]
        actor: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Approve an output; signs a release.
    Approve {
        output: String,
        #[arg(long)]
        reason: String,
        #[arg(long = "as")]
        actor: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Reject an output.
    Reject {
        output: String,
        #[arg(long)]
        reason: String,
        #[arg(long = "as")]
        actor: Option<String>,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Debug, Subcommand)]
pub enum BudgetCommand {
    /// Set the total epsilon of a dataset or a developer (every grant over
    /// that dataset, or of that developer, draws from it too).
    Set {
        #[arg(
            long,
            conflicts_with = "developer",
            required_unless_present = "developer"
        )]
        dataset: Option<String>,
        #[arg(long)]
        developer: Option<String>,
        #[arg(long)]
        epsilon: f64,
        #[arg(long = "as")]
        actor: Option<String>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Epsilon spent and left on a grant.
    Show {
        #[arg(long)]
        grant: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Print (or write with --out) the ledger's Ed25519 public key as hex:
    /// the only thing an auditor needs to verify offline.
    PublicKey {
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Print the current signed checkpoint (a C2SP signed note), checked
    /// with the public key first; save it to check proofs against, or to
    /// pass to `ledger verify --since` later.
    Checkpoint {
        #[arg(long)]
        public_key: Option<PathBuf>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Print an inclusion proof of entry INDEX (or, with --consistency OLD, a
    /// consistency proof) against the current signed tree, as JSON.
    Proof {
        /// Entry to prove included.
        #[arg(long, required_unless_present = "consistency")]
        index: Option<u64>,
        /// Prove that the tree of this many entries is a prefix of the current one.
        #[arg(long, conflicts_with = "index")]
        consistency: Option<u64>,
        #[arg(long)]
        public_key: Option<PathBuf>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Check a proof without the ledger; with --checkpoint and --public-key,
    /// also that its root is the signed one.
    CheckProof {
        file: PathBuf,
        #[arg(long, requires = "public_key")]
        checkpoint: Option<PathBuf>,
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Write entries [FROM, TO) with the signed checkpoint and proofs to one
    /// JSON file for an outside auditor.
    Export {
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        public_key: Option<PathBuf>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Verify an exported segment with only the public key.
    VerifySegment {
        file: PathBuf,
        #[arg(long)]
        public_key: PathBuf,
    },
    /// Read-only SQL over the verified ledger: a table `entries` with the entry
    /// fields (index, prev, time, kind, actor, body) and one column per body field.
    Query {
        sql: String,
        #[arg(long)]
        public_key: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Admin action for a ledger the service refuses to open because it
    /// holds entries no signed checkpoint or write-ahead record proves:
    /// move them (and any damaged or partial line after them) to a file
    /// under DATA_DIR/ledger/quarantine/, record the cut (counts and
    /// hashes) in the ledger, and sign. Stop the service first.
    Recover {
        /// The admin recovering (recorded as the entry's actor).
        #[arg(long = "as")]
        actor: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Submit the current checkpoint to a witness with a consistency proof
    /// from the one it co-signed last; keep its co-signature beside the
    /// ledger. Fails loudly if the witness sees a fork.
    Witness {
        /// The witness's URL, e.g. http://witness.example:8788.
        #[arg(long)]
        url: String,
        /// The witness's verifier key, as `unseen witness init` printed it.
        #[arg(long)]
        witness_key: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Compare the store with what the ledger implies: budgets at every
    /// layer (spent and total), each grant's runs and downloads, job
    /// states, review decisions and releases. Prints every difference and
    /// fails if there is any. Admins and auditors.
    Reconcile {
        /// The admin or auditor checking (an auditor needs --token).
        #[arg(long = "as")]
        actor: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Verify the ledger offline with only the public key.
    Verify {
        /// Public key file (default: `DATA_DIR/ledger/ledger.pub`).
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// A checkpoint saved earlier: also prove the ledger is a consistent
        /// extension of it (detects rollback and forks).
        #[arg(long)]
        since: Option<PathBuf>,
        /// Also demand a checkpoint co-signed by this witness (verifier key
        /// as `unseen witness init` printed it) that the ledger extends:
        /// detects history rewritten even with the ledger's own key.
        #[arg(long)]
        witness_key: Option<String>,
        /// Where the co-signed checkpoint is: a file, or the witness's URL
        /// (its `/latest`). Default: the copy kept beside the ledger.
        #[arg(long, requires = "witness_key")]
        witnessed: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
}

/// A command line clap refused, with clap's own message (which says
/// `error:` itself); the binary prints it as is and exits 2.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.trim_end())
    }
}

impl std::error::Error for Usage {}

/// How the binary ends on `error`: its exit code and what it prints to
/// stderr. A usage mistake exits 2 with clap's own message; a closed pipe
/// (output piped into `head`) ends quietly with 0; anything else exits 1
/// with `error:` and the cause.
pub fn failure(error: &anyhow::Error) -> (u8, Option<String>) {
    if let Some(usage) = error.downcast_ref::<Usage>() {
        return (2, Some(usage.to_string()));
    }
    let closed_pipe = error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if closed_pipe {
        return (0, None);
    }
    (1, Some(format!("error: {error:#}")))
}

/// Parses `args` (including the program name) and runs the command, writing
/// everything a user reads to `out`.
pub fn run(args: &[String], out: &mut dyn Write) -> Result<()> {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            write!(out, "{e}")?;
            return Ok(());
        }
        Err(e) => return Err(Usage(e.render().to_string()).into()),
    };
    if let Some(server) = &cli.remote.server {
        let token = cli.remote.token.as_deref().ok_or_else(|| {
            anyhow::anyhow!("--server needs --token TOKEN (or UNSEEN_TOKEN) to say who you are")
        })?;
        let client = crate::client::Client::new(server, Some(token));
        if remote(&cli.command, &client, out)? {
            return Ok(());
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(crate::QUERY_THREAD_STACK)
        .enable_all()
        .build()?;
    let result = execute(cli.command, cli.remote.token.as_deref(), &runtime, out);
    // Work a stopped server abandoned (already cancelled and recorded as
    // ended) must not hold the process past its grace period.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    result
}

/// Percent-encodes a path segment (ids are plain, but never trust that).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Runs a command against a server. Returns false for commands that only
/// work on local files (they then run locally).
impl GrantIssue {
    /// The grant asked for, locally or over HTTP.
    fn request(&self) -> crate::GrantRequest {
        crate::GrantRequest {
            dataset: self.dataset.clone(),
            join_datasets: self.join_datasets.clone(),
            developer: self.developer.clone(),
            scenario: self.scenario.clone(),
            purpose: self.purpose.clone(),
            epsilon_total: self.epsilon,
            query_epsilon: self.query_epsilon,
            valid_days: self.days,
            extended_validity: self.extended_validity,
            allow_modules: !self.no_modules,
            allow_sql: !self.no_sql,
            allow_extracts: self.allow_extracts,
            allow_udfs: self.allow_udfs,
            udf_row_instructions: self.udf_row_instructions,
            windows: self.windows.clone(),
            designated: self.designated.clone(),
            columns: self.columns.clone(),
            max_runs: self.max_runs,
            max_downloads: self.max_downloads,
            derived_reuse: self.derived_reuse,
            approvals_required: self.approvals,
            delta_total: self.delta,
            query_delta: self.query_delta,
            max_open_queries: Some(self.max_open_queries),
            open_query_window: self.open_query_window,
        }
    }
}

/// Reads and uploads UDF modules to the server; their addresses.
fn upload_udfs_remote(client: &crate::client::Client, paths: &[PathBuf]) -> Result<Vec<String>> {
    read_udf_modules(paths)?
        .iter()
        .map(|bytes| {
            let uploaded = client.post_bytes("/v1/modules?kind=udf", bytes, "application/wasm")?;
            Ok(uploaded["module"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

/// Reads and stores UDF modules in a local data directory; their addresses.
fn upload_udfs_local(domain: &Domain, actor: &str, paths: &[PathBuf]) -> Result<Vec<String>> {
    read_udf_modules(paths)?
        .iter()
        .map(|bytes| Ok(domain.upload_udf_module(actor, bytes)?.0))
        .collect()
}

/// The bytes of each UDF module file, or which one could not be read.
fn read_udf_modules(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>> {
    paths
        .iter()
        .map(|path| {
            std::fs::read(path)
                .with_context(|| format!("cannot read UDF module {}", path.display()))
        })
        .collect()
}

fn remote(command: &Command, client: &crate::client::Client, out: &mut dyn Write) -> Result<bool> {
    use crate::client::ClientError;
    let s = segment;
    let answer: Result<serde_json::Value, ClientError> = match command {
        Command::Query {
            sql,
            grant,
            dry_run,
            udfs,
            inputs,
            ..
        } => {
            let udfs = upload_udfs_remote(client, udfs)?;
            client.post(
                "/v1/queries",
                &json!({"grant": grant, "sql": sql, "dry_run": dry_run, "udf_modules": udfs, "inputs": inputs}),
            )
        }
        Command::Extract {
            grant,
            columns,
            sample,
            ..
        } => client.post(
            "/v1/extracts",
            &json!({"grant": grant, "columns": columns, "sample": sample}),
        ),
        Command::Dataset(DatasetCommand::Register {
            name,
            parquet,
            manifest,
            ..
        }) => {
            let bytes = std::fs::read(parquet)
                .with_context(|| format!("cannot read {}", parquet.display()))?;
            let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes);
            client.post(
                "/v1/datasets",
                &json!({"name": name, "manifest": read_text(manifest)?, "parquet_base64": encoded}),
            )
        }
        Command::Dataset(DatasetCommand::List { .. }) => client.get("/v1/datasets"),
        Command::Dataset(DatasetCommand::Destroy { name, reason, .. }) => client.post(
            &format!("/v1/datasets/{}/destroy", s(name)),
            &json!({"reason": reason}),
        ),
        Command::Dataset(DatasetCommand::Marginals {
            name,
            epsilon,
            out: path,
            ..
        }) => {
            let published = client.post(
                &format!("/v1/datasets/{}/marginals", s(name)),
                &json!({"epsilon": epsilon}),
            )?;
            write_marginals(out, &published["marginals"], path.as_deref())?;
            return Ok(true);
        }
        Command::User(UserCommand::Add {
            id,
            name,
            role,
            org,
            ..
        }) => client.post(
            "/v1/users",
            &json!({"id": id, "name": name, "role": role, "org": org}),
        ),
        Command::User(UserCommand::List { .. }) => client.get("/v1/users"),
        Command::User(UserCommand::Disable { id, reason, .. }) => client.post(
            &format!("/v1/users/{}/disable", s(id)),
            &json!({"reason": reason}),
        ),
        Command::User(UserCommand::Token { id, .. }) => {
            client.post(&format!("/v1/users/{}/token", s(id)), &json!({}))
        }
        Command::Grant(GrantCommand::Issue(issue)) => {
            client.post("/v1/grants", &json!(issue.request()))
        }
        Command::Grant(GrantCommand::List { .. }) => client.get("/v1/grants"),
        Command::Grant(GrantCommand::Show { id, .. }) => {
            client.get(&format!("/v1/grants/{}", s(id)))
        }
        Command::Grant(GrantCommand::Revoke { id, reason, .. }) => client.post(
            &format!("/v1/grants/{}/revoke", s(id)),
            &json!({"reason": reason}),
        ),
        Command::Grant(GrantCommand::Usage { id, .. }) => {
            client.get(&format!("/v1/grants/{}/usage", s(id)))
        }
        Command::Budget(BudgetCommand::Show { grant, .. }) => {
            client.get(&format!("/v1/grants/{}/budget", s(grant)))
        }
        Command::Budget(BudgetCommand::Set {
            dataset,
            developer,
            epsilon,
            ..
        }) => client.post(
            "/v1/budgets",
            &json!({"dataset": dataset, "developer": developer, "epsilon": epsilon}),
        ),
        Command::Job(JobCommand::Submit {
            grant,
            module,
            params,
            udfs,
            inputs,
            no_wait,
            ..
        }) => {
            let bytes = std::fs::read(module)
                .with_context(|| format!("cannot read module {}", module.display()))?;
            let udfs = upload_udfs_remote(client, udfs)?;
            let uploaded = client.post_bytes("/v1/modules", &bytes, "application/wasm")?;
            let sha = uploaded["module"].as_str().unwrap_or_default().to_string();
            client.post(
                "/v1/jobs",
                &json!({"grant": grant, "module": sha, "params": parse_params(params)?, "udf_modules": udfs, "inputs": inputs, "wait": !no_wait}),
            )
        }
        Command::Job(JobCommand::Status { id, .. }) => client.get(&format!("/v1/jobs/{}", s(id))),
        Command::Job(JobCommand::List { grant, .. }) => client.get(&match grant {
            Some(g) => format!("/v1/jobs?grant={}", s(g)),
            None => "/v1/jobs".to_string(),
        }),
        Command::Job(JobCommand::Cancel { id, reason, .. }) => client.post(
            &format!("/v1/jobs/{}/cancel", s(id)),
            &json!({"reason": reason}),
        ),
        Command::Review(ReviewCommand::List { .. }) => client.get("/v1/reviews"),
        Command::Review(ReviewCommand::Show { output, .. }) => {
            client.get(&format!("/v1/outputs/{}", s(output)))
        }
        Command::Review(ReviewCommand::Approve { output, reason, .. }) => client.post(
            &format!("/v1/outputs/{}/approve", s(output)),
            &json!({"reason": reason}),
        ),
        Command::Review(ReviewCommand::Reject { output, reason, .. }) => client.post(
            &format!("/v1/outputs/{}/reject", s(output)),
            &json!({"reason": reason}),
        ),
        Command::Release(ReleaseCommand::Download {
            id,
            out: path,
            force,
            ..
        }) => {
            // The destination is checked before the request, which counts.
            let destination = prepare_download(path.as_deref(), *force)?;
            let file = client.get(&format!("/v1/releases/{}", s(id)))?;
            let text = serde_json::to_string_pretty(&file)?;
            finish_download(out, id, &text, path.as_deref(), destination)?;
            return Ok(true);
        }
        Command::Ledger(LedgerCommand::Checkpoint { .. }) => {
            let answer = client.get("/v1/ledger/checkpoint")?;
            write!(out, "{}", answer["checkpoint"].as_str().unwrap_or_default())?;
            return Ok(true);
        }
        Command::Ledger(LedgerCommand::Verify { .. }) => client.get("/v1/ledger/verify"),
        Command::Ledger(LedgerCommand::Reconcile { json, .. }) => {
            let report: crate::reconcile::Reconciliation =
                serde_json::from_value(client.get("/v1/ledger/reconcile")?)
                    .context("the server's reconciliation report is malformed")?;
            print_reconciliation(out, &report, *json)?;
            return Ok(true);
        }
        Command::Ledger(LedgerCommand::Query { sql, .. }) => {
            client.post("/v1/ledger/query", &json!({"sql": sql}))
        }
        Command::Report(ReportCommand::Disclosure { .. }) => client.get("/v1/reports/disclosure"),
        Command::Ledger(LedgerCommand::PublicKey { out: None, .. }) => {
            client.get("/v1/ledger/public-key")
        }
        // Tools on local files only; they touch no data directory.
        Command::Completions { .. }
        | Command::Man { .. }
        | Command::Demo { .. }
        | Command::Dev(_)
        | Command::Bench(_)
        | Command::Dataset(DatasetCommand::Generate { .. } | DatasetCommand::Manifest { .. })
        | Command::Witness(_)
        | Command::Ledger(LedgerCommand::CheckProof { .. } | LedgerCommand::VerifySegment { .. })
        | Command::Release(ReleaseCommand::Verify { .. }) => {
            return Ok(false);
        }
        _ => bail!(
            "this command works on a data directory and is not available over --server; run it where the data directory is, without --server"
        ),
    };
    let value = answer?;
    writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
    // A job or query the service stopped or refused is a failure for
    // scripts, as locally. How a guest itself ended is not: it is reviewed.
    if let Some(status) = value.get("status").and_then(|s| s.as_str())
        && matches!(status, "stopped" | "refused")
    {
        bail!(
            "job {} {status}: {}",
            value["job"].as_str().unwrap_or_default(),
            value["reason"].as_str().unwrap_or_default()
        );
    }
    Ok(true)
}

fn open(dir: &DataDir) -> Result<Arc<Domain>> {
    let path = dir.path();
    Ok(Arc::new(Domain::open(&path).with_context(|| {
        format!("cannot open data directory {}", path.display())
    })?))
}

/// Runs a command on a local data directory; `token` (from `--token` or
/// `UNSEEN_TOKEN`) is how a non-admin user proves who they are.
fn execute(
    command: Command,
    token: Option<&str>,
    runtime: &tokio::runtime::Runtime,
    out: &mut dyn Write,
) -> Result<()> {
    match command {
        Command::Completions { shell } => {
            // Into memory first: the generator panics on a failed write
            // (a closed pipe); `out` reports it as an error instead.
            let mut script = Vec::new();
            let mut cli = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cli, "unseen", &mut script);
            out.write_all(&script)?;
            Ok(())
        }
        Command::Man { out: dir } => {
            let cli = <Cli as clap::CommandFactory>::command();
            let written = write_man_pages(&cli, &dir)?;
            writeln!(
                out,
                "wrote {written} manual pages to {}; read one with `man -l {}`",
                dir.display(),
                dir.join("unseen.1").display()
            )?;
            Ok(())
        }
        Command::Demo {
            data_dir,
            rows,
            seed,
        } => demo::run(
            demo::DemoOptions {
                data_dir,
                rows,
                seed,
            },
            runtime,
            out,
        ),
        Command::Dataset(DatasetCommand::Generate {
            name,
            rows,
            seed,
            related_rows,
            out: path,
        }) => {
            let summary = demo::generate(&name, rows, seed, related_rows, &path)?;
            writeln!(
                out,
                "wrote {} rows of `{name}` (seed {seed}) to {}",
                summary,
                path.display()
            )?;
            Ok(())
        }
        Command::Dataset(DatasetCommand::Manifest { name }) => {
            let kind: unseen_datasets::DatasetKind =
                name.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
            write!(out, "{}", unseen_datasets::manifest_toml(kind))?;
            Ok(())
        }
        Command::Dataset(DatasetCommand::Register {
            name,
            parquet,
            manifest,
            actor,
            dir,
        }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            let text = read_text(&manifest)?;
            let ingested =
                runtime.block_on(domain.register_dataset(&actor, &name, &parquet, &text))?;
            writeln!(
                out,
                "registered `{name}`: {} rows, stored encrypted under {}",
                ingested.rows,
                domain.dir().join("data").display()
            )?;
            Ok(())
        }
        Command::User(UserCommand::Add {
            id,
            name,
            role,
            org,
            actor,
            json,
            dir,
        }) => {
            let domain = open(&dir)?;
            // The first admin of a new directory adds itself without a token.
            let actor = match (actor, token) {
                (None, None) => None,
                (actor, token) => Some(who(&domain, actor, token)?),
            };
            let token = domain.add_user(actor.as_deref(), &id, &name, Role::parse(&role)?, &org)?;
            if json {
                writeln!(out, "{}", json!({"user": id, "token": token}))?;
            } else {
                writeln!(out, "added {role} `{id}` ({name})")?;
                writeln!(out, "token (shown once, keep it secret): {token}")?;
            }
            Ok(())
        }
        Command::Grant(GrantCommand::Issue(issue)) => {
            let domain = open(&issue.dir)?;
            let actor = who(&domain, issue.actor.clone(), token)?;
            let request = issue.request();
            let id = domain.issue_grant(&actor, &request)?;
            if issue.json {
                writeln!(out, "{}", json!({"grant": id}))?;
            } else {
                let joined: String = request
                    .join_datasets
                    .iter()
                    .map(|d| format!(" joined to `{d}`"))
                    .collect();
                let udfs = if request.allow_udfs {
                    format!(
                        ", with UDFs of at most {} instructions per row",
                        request.udf_row_instructions
                    )
                } else {
                    String::new()
                };
                writeln!(
                    out,
                    "issued grant {id}: `{}` may spend epsilon {} on `{}`{joined}{udfs} for: {}",
                    request.developer, request.epsilon_total, request.dataset, request.purpose
                )?;
            }
            Ok(())
        }
        Command::Query {
            sql,
            grant,
            dry_run,
            udfs,
            inputs,
            actor,
            json,
            dir,
        } => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            let handle = runtime.handle().clone();
            let extras = crate::jobs::JobExtras {
                udfs: upload_udfs_local(&domain, &actor, &udfs)?,
                inputs,
            };
            if dry_run {
                let verdict = domain.dry_run(&handle, &actor, &grant, &sql, &extras)?;
                if json {
                    writeln!(out, "{}", serde_json::to_value(&verdict)?)?;
                } else if verdict.admitted {
                    writeln!(
                        out,
                        "admitted: would cost epsilon {:.3}{} (grant has {:.3} left)",
                        verdict.epsilon,
                        if verdict.cached {
                            ", an identical release is cached"
                        } else {
                            ""
                        },
                        verdict.epsilon_left
                    )?;
                    for (component, half_width) in &verdict.accuracy {
                        writeln!(
                            out,
                            "  {component}: ± {half_width:.2} at {:.0}% confidence",
                            verdict.confidence * 100.0
                        )?;
                    }
                } else {
                    writeln!(out, "{}", verdict.reason.as_deref().unwrap_or("refused"))?;
                }
                if !verdict.admitted {
                    bail!(
                        "the query would be refused ({})",
                        verdict.rule.as_deref().unwrap_or("refused")
                    );
                }
                return Ok(());
            }
            let outcome = domain.run_sql(&handle, &actor, &grant, &sql, &extras)?;
            let (_, left) = domain.budget_seen_by(&actor, &grant)?;
            print_developer_outcome(out, &outcome, None, left, json)?;
            if outcome.status != crate::JobStatus::Finished {
                bail!(
                    "query {}: {}",
                    outcome.status,
                    outcome.reason.as_deref().unwrap_or_default()
                );
            }
            Ok(())
        }
        Command::Extract {
            grant,
            columns,
            sample,
            actor,
            json,
            dir,
        } => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            let handle = runtime.handle().clone();
            let (outcome, plan) = domain.run_extract(&handle, &actor, &grant, &columns, sample)?;
            let (_, left) = domain.budget_seen_by(&actor, &grant)?;
            print_developer_outcome(out, &outcome, Some(&plan), left, json)?;
            if outcome.status != crate::JobStatus::Finished {
                bail!(
                    "extract {}: {}",
                    outcome.status,
                    outcome.reason.as_deref().unwrap_or_default()
                );
            }
            Ok(())
        }
        Command::Job(JobCommand::Submit {
            grant,
            module,
            params,
            udfs,
            inputs,
            no_wait: _,
            actor,
            json,
            dir,
        }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            let bytes = std::fs::read(&module)
                .with_context(|| format!("cannot read module {}", module.display()))?;
            let extras = crate::jobs::JobExtras {
                udfs: upload_udfs_local(&domain, &actor, &udfs)?,
                inputs,
            };
            let sha = domain.upload_module(&actor, &bytes)?;
            let params = parse_params(&params)?;
            let handle = runtime.handle().clone();
            let outcome = domain.run_job(&handle, &actor, &grant, &sha, params, &extras)?;
            // The submitter reads what the service would return.
            let (_, left) = domain.budget_seen_by(&actor, &grant)?;
            print_developer_outcome(out, &outcome, None, left, json)?;
            if outcome.status != crate::JobStatus::Finished {
                bail!(
                    "job {} {}: {}",
                    outcome.job_id,
                    outcome.status,
                    outcome.reason.as_deref().unwrap_or_default()
                );
            }
            Ok(())
        }
        Command::Review(ReviewCommand::Show {
            output,
            actor,
            json,
            dir,
        }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            domain.require(&actor, Role::Reviewer, "read quarantined outputs")?;
            let (name, status, table) = domain.output(&output)?;
            let (kind, disclosure) = domain.output_details(&output)?;
            if json {
                let findings = domain.findings(&output)?;
                writeln!(
                    out,
                    "{}",
                    json!({
                        "name": name, "kind": kind, "status": status, "table": crate::table_json(&table),
                        "findings": findings, "disclosure": disclosure,
                    })
                )?;
                return Ok(());
            }
            let what = match kind.as_str() {
                "outcome" => " (the job's outcome: what its guest computed beyond its outputs)",
                "extract" => " (a masked extract)",
                _ => "",
            };
            writeln!(out, "output {output} `{name}`{what} ({status})")?;
            demo::print_table(out, &table)?;
            if let Some(report) = disclosure.as_ref().map(|d| &d["report"]) {
                print_disclosure(out, report)?;
            }
            let findings = domain.findings(&output)?;
            if findings.is_empty() {
                writeln!(out, "automatic checks: no findings")?;
            }
            for f in findings {
                let blocking = if f["blocking"] == true {
                    "BLOCKING "
                } else {
                    ""
                };
                writeln!(
                    out,
                    "{blocking}finding: {}",
                    f["detail"].as_str().unwrap_or_default()
                )?;
            }
            Ok(())
        }
        Command::Review(ReviewCommand::Approve {
            output,
            reason,
            actor,
            json,
            dir,
        }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            let release = domain.review(&actor, &output, true, &reason)?;
            if json {
                let status = if release.is_some() {
                    "approved"
                } else {
                    "awaiting a second approval"
                };
                writeln!(
                    out,
                    "{}",
                    json!({
                        "output": output, "status": status,
                        "release": release.as_ref().map(|r| r.id.clone()),
                        "path": release.as_ref().map(|r| r.path.display().to_string()),
                    })
                )?;
                return Ok(());
            }
            match release {
                Some(r) => writeln!(
                    out,
                    "approved {output}; signed release {} written to {}",
                    r.id,
                    r.path.display()
                )?,
                None => writeln!(
                    out,
                    "approved {output}; its grant needs a second approval by another reviewer"
                )?,
            }
            Ok(())
        }
        Command::Review(ReviewCommand::Reject {
            output,
            reason,
            actor,
            dir,
        }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            domain.review(&actor, &output, false, &reason)?;
            writeln!(out, "rejected {output}")?;
            Ok(())
        }
        Command::Budget(BudgetCommand::Set {
            dataset,
            developer,
            epsilon,
            actor,
            dir,
        }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            let (layer, id) = match (dataset, developer) {
                (Some(d), _) => (crate::BudgetLayer::Dataset, d),
                (None, Some(u)) => (crate::BudgetLayer::Developer, u),
                (None, None) => bail!("name a --dataset or a --developer"),
            };
            domain.set_budget(&actor, layer, &id, epsilon)?;
            writeln!(out, "budget of `{id}` set to epsilon {epsilon}")?;
            Ok(())
        }
        Command::Budget(BudgetCommand::Show { grant, json, dir }) => {
            let domain = open(&dir)?;
            let layers = domain.budget_layers(&grant)?;
            let (spent, left) = domain.budget(&grant)?;
            let g = domain.grant(&grant)?;
            if json {
                writeln!(
                    out,
                    "{}",
                    json!({"grant": grant, "epsilon_spent": spent, "epsilon_left": left,
                        "delta_spent": g.delta_spent, "delta_total": g.delta_total, "layers": layers})
                )?;
            } else {
                writeln!(
                    out,
                    "grant {grant}: epsilon spent {spent:.3}, left {left:.3}; delta spent {:e} of {:e}",
                    g.delta_spent, g.delta_total
                )?;
                for l in &layers {
                    match l.total {
                        Some(t) => writeln!(
                            out,
                            "  {:<9} {:<24} spent {:.3} of {:.3}, left {:.3}",
                            l.layer,
                            l.id,
                            l.spent,
                            t,
                            (t - l.spent).max(0.0)
                        )?,
                        None => writeln!(
                            out,
                            "  {:<9} {:<24} spent {:.3}, no limit set",
                            l.layer, l.id, l.spent
                        )?,
                    }
                }
            }
            Ok(())
        }
        Command::Ledger(LedgerCommand::Query {
            sql,
            public_key,
            json,
            dir,
        }) => {
            let (ledger, _) = verified(&dir, public_key.as_deref())?;
            let batches = runtime.block_on(crate::audit::query(&ledger.entries, &sql))?;
            if json {
                writeln!(out, "{}", batches_json(&batches)?)?;
            } else {
                writeln!(
                    out,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(&batches)?
                )?;
            }
            Ok(())
        }
        Command::Bench(BenchCommand::Ledger {
            entries,
            threads,
            proof_size,
            verify_entries,
            out: dir,
            json,
        }) => {
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
        Command::Bench(BenchCommand::Policy {
            runs,
            rows,
            repeats,
            out: dir,
            json,
        }) => {
            let measures = crate::bench::policy(runtime, runs, rows, repeats)?;
            let command =
                format!("unseen bench policy --runs {runs} --rows {rows} --repeats {repeats}");
            report_bench(out, "policy", &command, dir.as_deref(), &measures, json)
        }
        Command::Bench(BenchCommand::Sandbox {
            jobs,
            rows,
            repeats,
            out: dir,
            json,
        }) => {
            let measures = crate::bench::sandbox(jobs, rows, repeats)?;
            let command =
                format!("unseen bench sandbox --jobs {jobs} --rows {rows} --repeats {repeats}");
            report_bench(out, "sandbox", &command, dir.as_deref(), &measures, json)
        }
        Command::Bench(BenchCommand::Udf {
            rows,
            out: dir,
            json,
        }) => {
            let measures = crate::bench::udf(rows)?;
            let command = format!("unseen bench udf --rows {rows}");
            report_bench(out, "udf", &command, dir.as_deref(), &measures, json)
        }
        Command::Bench(BenchCommand::Service {
            jobs,
            clients,
            rows,
            out: dir,
            json,
        }) => {
            let scratch = tempfile::Builder::new()
                .prefix("unseen-bench-service-")
                .tempdir()?;
            let measures = crate::bench::service(scratch.path(), jobs, clients, rows)?;
            let command =
                format!("unseen bench service --jobs {jobs} --clients {clients} --rows {rows}");
            report_bench(out, "service", &command, dir.as_deref(), &measures, json)
        }
        Command::Report(ReportCommand::Disclosure {
            public_key,
            json,
            dir,
        }) => {
            let (ledger, _) = verified(&dir, public_key.as_deref())?;
            let report = crate::audit::disclosure(&ledger.entries);
            if json {
                writeln!(out, "{}", crate::audit::disclosure_json(&report))?;
                return Ok(());
            }
            writeln!(
                out,
                "Disclosure report: {} grants (ledger verified, {} entries)",
                report.len(),
                ledger.entries.len()
            )?;
            for g in &report {
                writeln!(
                    out,
                    "- grant {} on `{}` to {} for: {}",
                    g.grant, g.dataset, g.developer, g.purpose
                )?;
                writeln!(
                    out,
                    "  issued {} by {}, expires {}",
                    g.issued_at, g.issued_by, g.expires_at
                )?;
                writeln!(
                    out,
                    "  jobs {}, queries admitted {} / refused {}, outputs {}, releases {}, epsilon {:.3} of {:.3}",
                    g.jobs,
                    g.queries_admitted,
                    g.queries_refused,
                    g.outputs,
                    g.releases,
                    g.epsilon_spent,
                    g.epsilon_total
                )?;
            }
            Ok(())
        }
        Command::Release(ReleaseCommand::Verify {
            file,
            public_key,
            json,
            dir,
        }) => {
            let text = read_text(&file)?;
            let proof = if crate::bundle::is_bundle(&text) {
                // A bundle carries its own evidence: only the key is needed.
                let key = self::public_key(&dir.path(), public_key.as_deref())?;
                crate::bundle::verify_bundle(&text, &key)?
            } else {
                let (ledger, key) = verified(&dir, public_key.as_deref())?;
                crate::audit::verify_release(&text, &ledger, &key)
                    .context("release verification FAILED")?
            };
            if json {
                writeln!(out, "{}", serde_json::to_value(&proof)?)?;
            } else {
                writeln!(out, "release {} OK", proof.release)?;
                writeln!(
                    out,
                    "  signature valid; table hashes to output {}",
                    proof.output_sha256
                )?;
                writeln!(
                    out,
                    "  bound by ledger entry {} (module {}, epsilon {:.3}, reviewer {}, approved by {})",
                    proof.ledger_index,
                    proof.module_sha256,
                    proof.epsilon_spent,
                    proof.reviewer,
                    proof.approvers.join(", ")
                )?;
                writeln!(
                    out,
                    "  included under the signed checkpoint of size {} with root {}",
                    proof.tree_size, proof.root
                )?;
            }
            Ok(())
        }
        Command::Ledger(LedgerCommand::Proof {
            index,
            consistency,
            public_key,
            dir,
        }) => {
            let (ledger, _) = verified(&dir, public_key.as_deref())?;
            let tree = unseen_ledger::Tree::from_leaves(ledger.leaves.clone());
            let size = ledger.checkpoint.size;
            let proof = match (index, consistency) {
                (Some(i), _) => unseen_ledger::Proof::Inclusion(
                    unseen_ledger::InclusionProof::build(&tree, i, size).with_context(|| {
                        format!("no inclusion proof for entry {i} in a tree of {size}")
                    })?,
                ),
                (None, Some(old)) => unseen_ledger::Proof::Consistency(
                    unseen_ledger::ConsistencyProof::build(&tree, old, size).with_context(
                        || format!("no consistency proof from size {old} to {size}"),
                    )?,
                ),
                (None, None) => bail!("give --index or --consistency"),
            };
            writeln!(out, "{}", proof.to_json())?;
            Ok(())
        }
        Command::Ledger(LedgerCommand::Checkpoint { public_key, dir }) => {
            let data = dir.path();
            let key = self::public_key(&data, public_key.as_deref())?;
            let path = data.join("ledger/checkpoint");
            let note = read_text(&path)?;
            unseen_ledger::Checkpoint::open(&note, unseen_ledger::ORIGIN, &key)
                .with_context(|| format!("the checkpoint in {} does not verify", path.display()))?;
            write!(out, "{note}")?;
            Ok(())
        }
        Command::Ledger(LedgerCommand::Recover { actor, json, dir }) => {
            let (ledger, recovery) = Domain::recover_ledger(&dir.path(), &actor)?;
            let size = ledger.size();
            if json {
                let cut = recovery.as_ref().map(|r| {
                    json!({"first_index": r.first_index, "entries": r.entries, "bytes": r.bytes,
                           "sha256": r.sha256_hex, "file": r.file.display().to_string()})
                });
                writeln!(out, "{}", json!({"quarantined": cut, "entries": size}))?;
            } else if let Some(r) = recovery {
                writeln!(
                    out,
                    "quarantined {} entries from entry {} on ({} bytes, sha256 {}) to {}",
                    r.entries,
                    r.first_index,
                    r.bytes,
                    r.sha256_hex,
                    r.file.display()
                )?;
                writeln!(
                    out,
                    "recorded as entry {} (ledger.recovered); the ledger holds {size} entries under a new signed checkpoint",
                    size - 1
                )?;
            } else {
                writeln!(
                    out,
                    "nothing to recover: every entry is proven; the ledger holds {size} entries"
                )?;
            }
            Ok(())
        }
        Command::Ledger(LedgerCommand::Reconcile { actor, json, dir }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            let report = domain.reconcile(&actor)?;
            print_reconciliation(out, &report, json)
        }
        Command::Ledger(LedgerCommand::PublicKey { out: path, dir }) => {
            let key = public_key(&dir.path(), None)?;
            match path {
                Some(p) => {
                    std::fs::write(&p, format!("{}\n", key.to_hex()))
                        .with_context(|| format!("cannot write {}", p.display()))?;
                    writeln!(out, "wrote the ledger public key to {}", p.display())?;
                }
                None => writeln!(out, "{}", key.to_hex())?,
            }
            Ok(())
        }
        Command::Ledger(LedgerCommand::CheckProof {
            file,
            checkpoint,
            public_key,
        }) => {
            let text = read_text(&file)?;
            let note = checkpoint.as_deref().map(read_text).transpose()?;
            let key = match &public_key {
                Some(p) => Some(
                    unseen_ledger::PublicKey::from_hex(read_text(p)?.trim())
                        .with_context(|| format!("public key {} is not valid", p.display()))?,
                ),
                None => None,
            };
            let report = unseen_ledger::check_proof(&text, note.as_deref(), key.as_ref())
                .context("proof check FAILED")?;
            writeln!(out, "{report}")?;
            Ok(())
        }
        Command::Ledger(LedgerCommand::Export {
            from,
            to,
            out: path,
            public_key,
            dir,
        }) => {
            let data = dir.path();
            let key = self::public_key(&data, public_key.as_deref())?;
            let segment = unseen_ledger::export_segment(&data.join("ledger"), &key, from, to)
                .context("cannot export the segment")?;
            std::fs::write(&path, segment.to_json())
                .with_context(|| format!("cannot write {}", path.display()))?;
            writeln!(
                out,
                "exported entries {from}..{to} with the signed checkpoint and proofs to {}",
                path.display()
            )?;
            Ok(())
        }
        Command::Ledger(LedgerCommand::VerifySegment { file, public_key }) => {
            let key = unseen_ledger::PublicKey::from_hex(read_text(&public_key)?.trim())
                .with_context(|| format!("public key {} is not valid", public_key.display()))?;
            let report = unseen_ledger::verify_segment(&read_text(&file)?, &key)
                .context("segment verification FAILED")?;
            writeln!(out, "{report}")?;
            Ok(())
        }
        Command::Ledger(LedgerCommand::Verify {
            public_key,
            since,
            witness_key,
            witnessed,
            json,
            dir,
        }) => {
            if let Some(vkey) = &witness_key {
                let data = dir.path();
                let key = self::public_key(&data, public_key.as_deref())?;
                let report =
                    crate::witness::verify_witnessed(&data, &key, vkey, witnessed.as_deref())?;
                writeln!(
                    out,
                    "the ledger of {} entries consistently extends the checkpoint of {} entries witness `{}` co-signed",
                    report.size, report.witnessed_size, report.witness
                )?;
            }
            if let Some(previous) = &since {
                let data = dir.path();
                let key = self::public_key(&data, public_key.as_deref())?;
                let note = read_text(previous)?;
                let report = unseen_ledger::verify_since(&data.join("ledger"), &note, &key)
                    .context(
                        "ledger verification FAILED: it does not extend the saved checkpoint",
                    )?;
                writeln!(
                    out,
                    "the ledger of {} entries consistently extends the saved checkpoint of {} entries",
                    report.size, report.previous_size
                )?;
            }
            let report = verify_ledger(&dir.path(), public_key.as_deref())?;
            if json {
                writeln!(
                    out,
                    "{}",
                    json!({"ok": true, "entries": report.size, "root": report.root_hex})
                )?;
            } else {
                writeln!(
                    out,
                    "ledger OK: {} entries, chain and Merkle root verified, checkpoint signature valid",
                    report.size
                )?;
                writeln!(out, "root {}", report.root_hex)?;
            }
            Ok(())
        }
        Command::Serve {
            listen,
            max_jobs,
            max_connections,
            max_connections_per_client,
            header_timeout,
            body_timeout,
            witness,
            witness_key,
            witness_every,
            query_memory,
            query_timeout,
            max_join_rows,
            grace_period,
            timing_quantum_ms,
            dir,
        } => {
            let addr: std::net::SocketAddr = listen.parse().with_context(|| {
                format!("--listen `{listen}` is not an address like 127.0.0.1:8787")
            })?;
            let witness = match (witness, witness_key) {
                (Some(url), Some(key)) => {
                    Some((url, unseen_ledger::witness::WitnessKey::parse(&key)?))
                }
                _ => None,
            };
            let domain = open(&dir)?;
            if let Some((url, key)) = witness {
                runtime.spawn(crate::witness::keep_witnessed(
                    Arc::clone(&domain),
                    url,
                    key,
                    std::time::Duration::from_secs(witness_every),
                ));
            }
            domain.set_timing_quantum(std::time::Duration::from_millis(timing_quantum_ms))?;
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?;
                let local = listener.local_addr()?;
                writeln!(out, "listening on http://{local}")?;
                out.flush()?;
                tracing::info!(%local, "serving the HTTP API");
                let options = crate::server::ServerOptions {
                    max_running_jobs: max_jobs,
                    limits: crate::conns::ConnectionLimits {
                        max_connections: max_connections as usize,
                        max_per_client: max_connections_per_client as usize,
                        header_timeout: std::time::Duration::from_secs(header_timeout),
                        body_timeout: std::time::Duration::from_secs(body_timeout),
                    },
                    query: crate::data::QueryLimits {
                        memory: query_memory,
                        time: std::time::Duration::from_secs(query_timeout),
                        join_rows: max_join_rows,
                    },
                    grace_period: std::time::Duration::from_secs(grace_period),
                };
                crate::server::serve(domain, listener, options, shutdown_signal()).await?;
                Ok::<_, anyhow::Error>(())
            })
        }
        Command::Ledger(LedgerCommand::Witness {
            url,
            witness_key,
            json,
            dir,
        }) => {
            let witness = unseen_ledger::witness::WitnessKey::parse(&witness_key)?;
            let domain = open(&dir)?;
            let done = crate::witness::witness_ledger(&domain, &url, &witness)
                .context("witnessing FAILED")?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&done)?)?;
            } else {
                writeln!(
                    out,
                    "witness `{}` co-signed the checkpoint of {} entries (it held {} before)",
                    done.witness, done.size, done.from_size
                )?;
            }
            Ok(())
        }
        Command::Witness(command) => crate::witness::run_command(command, runtime, out),
        Command::Dev(DevCommand::Run {
            module,
            manifest,
            dataset,
            rows,
            seed,
            params,
            udfs,
            marginals,
            sample,
            json,
        }) => {
            let bytes = std::fs::read(&module)
                .with_context(|| format!("cannot read module {}", module.display()))?;
            let udfs = read_udf_modules(&udfs)?;
            let manifest_text = match (&manifest, &dataset) {
                (Some(path), _) => read_text(path)?,
                (None, Some(name)) => {
                    let kind: unseen_datasets::DatasetKind =
                        name.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
                    unseen_datasets::manifest_toml(kind).to_string()
                }
                (None, None) => bail!("give --manifest FILE or --dataset NAME"),
            };
            let scratch = tempfile::Builder::new().prefix("unseen-dev-").tempdir()?;
            let run = crate::dev::run(
                scratch.path(),
                runtime.handle(),
                &bytes,
                &manifest_text,
                (rows, seed),
                crate::dev::DevInputs {
                    params: parse_params(&params)?,
                    udfs,
                    marginals: match &marginals {
                        Some(path) => Some(crate::marginals::Marginals::for_manifest(
                            &read_text(path)?,
                            &unseen_policy::Manifest::parse(&manifest_text)
                                .map_err(|e| anyhow::anyhow!("{e}"))?,
                        )?),
                        None => None,
                    },
                    sample: match &sample {
                        Some(path) => {
                            let file: serde_json::Value = serde_json::from_str(&read_text(path)?)
                                .with_context(|| {
                                format!("{} is not a release file", path.display())
                            })?;
                            Some(crate::audit::table_from_json(&file["document"]["table"])?)
                        }
                        None => None,
                    },
                },
            )?;
            if json {
                let outputs: Vec<_> = run
                    .outputs
                    .iter()
                    .map(|(name, t)| json!({"name": name, "table": crate::table_json(t)}))
                    .collect();
                let mut value = crate::server::outcome_json(&run.outcome);
                value["outputs"] = json!(outputs);
                value["mock_rows"] = json!(run.rows);
                writeln!(out, "{value}")?;
            } else {
                writeln!(
                    out,
                    "ran {} against {} mock rows (made from the manifest, not from data): {}",
                    module.display(),
                    run.rows,
                    run.outcome.ending_word()
                )?;
                for line in &run.outcome.logs {
                    writeln!(out, "  log: {line}")?;
                }
                for r in &run.outcome.refusals {
                    writeln!(out, "  refused: {r}")?;
                }
                if let Some(e) = &run.outcome.error {
                    writeln!(out, "  error: {e}")?;
                }
                for (name, table) in &run.outputs {
                    writeln!(
                        out,
                        "  output `{name}` (on the service it would go to review):"
                    )?;
                    demo::print_table(out, table)?;
                }
            }
            if !run.outcome.succeeded() {
                bail!("the guest {}", run.outcome.ending_word());
            }
            Ok(())
        }
        Command::Logs(LogsCommand::Prune {
            older_than_days,
            actor,
            dir,
        }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            let pruned = domain.prune_job_logs(&actor, older_than_days)?;
            writeln!(
                out,
                "cleared the logs of {pruned} jobs that ended more than {older_than_days} days ago"
            )?;
            Ok(())
        }
        Command::Dataset(DatasetCommand::List { actor, json, dir }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            let datasets = domain.datasets(&actor)?;
            if json {
                writeln!(out, "{}", json!({"datasets": datasets}))?;
            }
            if !json {
                let rows = datasets
                    .iter()
                    .map(|d| {
                        vec![
                            d.name.clone(),
                            d.rows.to_string(),
                            format!("v{}", d.manifest_version),
                            d.registered_at.clone(),
                            d.registered_by.clone(),
                            d.destroyed_at
                                .as_ref()
                                .map_or("registered".into(), |at| format!("destroyed {at}")),
                        ]
                    })
                    .collect();
                write_table(
                    out,
                    &["DATASET", "ROWS", "MANIFEST", "REGISTERED", "BY", "STATE"],
                    &[1],
                    rows,
                )?;
            }
            Ok(())
        }
        Command::Dataset(DatasetCommand::Marginals {
            name,
            epsilon,
            out: path,
            actor,
            dir,
        }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            let marginals = domain.publish_marginals(runtime.handle(), &actor, &name, epsilon)?;
            write_marginals(out, &serde_json::to_value(&marginals)?, path.as_deref())
        }
        Command::Dataset(DatasetCommand::Destroy {
            name,
            reason,
            actor,
            dir,
        }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            domain.destroy_dataset(&actor, &name, &reason)?;
            writeln!(
                out,
                "destroyed the data key of `{name}`: its data is unreadable and its grants are revoked; the ledger keeps the record"
            )?;
            Ok(())
        }
        Command::User(UserCommand::List { actor, json, dir }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            let users = domain.users(&actor)?;
            if json {
                writeln!(out, "{}", json!({"users": users}))?;
            }
            if !json {
                let rows = users
                    .iter()
                    .map(|u| {
                        vec![
                            u.id.clone(),
                            u.role.to_string(),
                            u.name.clone(),
                            u.org.clone(),
                            if u.disabled { "disabled" } else { "enabled" }.into(),
                        ]
                    })
                    .collect();
                write_table(out, &["USER", "ROLE", "NAME", "ORG", "STATE"], &[], rows)?;
            }
            Ok(())
        }
        Command::User(UserCommand::Disable {
            id,
            reason,
            actor,
            dir,
        }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            domain.disable_user(&actor, &id, &reason)?;
            writeln!(out, "disabled `{id}`; their token no longer works")?;
            Ok(())
        }
        Command::User(UserCommand::Token {
            id,
            actor,
            json,
            dir,
        }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            let token = domain.rotate_token(&actor, &id)?;
            if json {
                writeln!(out, "{}", json!({"user": id, "token": token}))?;
            } else {
                writeln!(
                    out,
                    "new token for `{id}` (shown once; the old one no longer works): {token}"
                )?;
            }
            Ok(())
        }
        Command::Grant(GrantCommand::List { actor, json, dir }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            let grants = domain.grants(&actor)?;
            if json {
                writeln!(out, "{}", json!({"grants": grants}))?;
            }
            if !json {
                let rows = grants
                    .iter()
                    .map(|g| {
                        vec![
                            g.id.clone(),
                            g.datasets().collect::<Vec<_>>().join(" + "),
                            g.developer.clone(),
                            format!("{:.3} of {:.3}", g.epsilon_spent, g.epsilon_total),
                            g.runs.to_string(),
                            match &g.revoked_at {
                                Some(at) => format!("revoked {at}"),
                                None => format!("expires {}", g.expires_at),
                            },
                            g.purpose.clone(),
                        ]
                    })
                    .collect();
                write_table(
                    out,
                    &[
                        "GRANT",
                        "DATASETS",
                        "DEVELOPER",
                        "EPSILON",
                        "RUNS",
                        "STATE",
                        "PURPOSE",
                    ],
                    &[3, 4],
                    rows,
                )?;
            }
            Ok(())
        }
        Command::Grant(GrantCommand::Show {
            id,
            actor,
            json,
            dir,
        }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            let grant = domain.visible_grant(&actor, &id)?;
            let value = serde_json::to_value(&grant)?;
            if json {
                writeln!(out, "{value}")?;
            } else {
                writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
            }
            Ok(())
        }
        Command::Grant(GrantCommand::Revoke {
            id,
            reason,
            actor,
            dir,
        }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            let stopped = domain.revoke_grant(&actor, &id, &reason)?;
            writeln!(
                out,
                "revoked grant {id}; {stopped} running or queued jobs stopped"
            )?;
            Ok(())
        }
        Command::Grant(GrantCommand::Usage {
            id,
            actor,
            json,
            dir,
        }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            let usage = domain.grant_usage(&actor, &id)?;
            if json {
                writeln!(out, "{}", serde_json::to_value(&usage)?)?;
            } else {
                writeln!(
                    out,
                    "grant {id}: runs {}{}, jobs {:?}, open-column queries {} ({} in the last {} s{}), {}epsilon {:.3}, releases {}, downloads {}{}",
                    usage.runs,
                    usage.max_runs.map_or(String::new(), |m| format!(" of {m}")),
                    usage.jobs_by_status,
                    usage.open_queries,
                    usage.open_queries_in_window,
                    usage.open_query_window,
                    usage
                        .max_open_queries
                        .map_or(String::new(), |m| format!(" of {m}")),
                    match (
                        usage.queries,
                        usage.fuel_used,
                        usage.rows_read,
                        usage.run_ms,
                        usage.outputs
                    ) {
                        (Some(q), Some(f), Some(r), Some(t), Some(o)) => format!(
                            "queries {q}, fuel {f}, rows read {r}, run time {t} ms, outputs {o}, "
                        ),
                        // What guests chose is for reviewers, admins and auditors.
                        _ => String::new(),
                    },
                    usage.epsilon_spent,
                    usage.releases,
                    usage.downloads,
                    usage
                        .max_downloads
                        .map_or(String::new(), |m| format!(" of {m}")),
                )?;
            }
            Ok(())
        }
        Command::Job(JobCommand::Status {
            id,
            actor,
            json,
            dir,
        }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            let job = domain.job(&actor, &id)?;
            print_job(out, &job, json)
        }
        Command::Job(JobCommand::List {
            grant,
            actor,
            json,
            dir,
        }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            let jobs = domain.jobs(&actor, grant.as_deref())?;
            if json {
                writeln!(out, "{}", json!({"jobs": jobs}))?;
            }
            if !json {
                let rows = jobs
                    .iter()
                    .map(|j| {
                        vec![
                            j.id.clone(),
                            j.status.to_string(),
                            j.grant.clone(),
                            j.submitter.clone(),
                            j.submitted_at.clone(),
                        ]
                    })
                    .collect();
                write_table(
                    out,
                    &["JOB", "STATUS", "GRANT", "BY", "SUBMITTED"],
                    &[],
                    rows,
                )?;
            }
            Ok(())
        }
        Command::Job(JobCommand::Cancel {
            id,
            reason,
            actor,
            dir,
        }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            let state = domain.cancel_job(&actor, &id, &reason)?;
            writeln!(out, "job {id}: {state}")?;
            Ok(())
        }
        Command::Review(ReviewCommand::List { actor, json, dir }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            let queue = domain.review_queue(&actor)?;
            if json {
                writeln!(out, "{}", json!({"outputs": queue}))?;
                return Ok(());
            }
            if queue.is_empty() {
                writeln!(out, "the review queue is empty")?;
            }
            let text =
                |o: &serde_json::Value, key: &str| o[key].as_str().unwrap_or_default().to_owned();
            let rows = queue
                .iter()
                .map(|o| {
                    let findings = o["findings"].as_array();
                    let blocking =
                        findings.map_or(0, |f| f.iter().filter(|f| f["blocking"] == true).count());
                    vec![
                        text(o, "output"),
                        text(o, "kind"),
                        text(o, "name"),
                        text(o, "job"),
                        text(o, "submitter"),
                        text(o, "grant"),
                        o["rows"].to_string(),
                        o["epsilon_spent"].to_string(),
                        format!("{} ({blocking} blocking)", findings.map_or(0, Vec::len)),
                        format!("{} of {}", o["approvals"], o["approvals_required"]),
                    ]
                })
                .collect();
            if !queue.is_empty() {
                write_table(
                    out,
                    &[
                        "OUTPUT",
                        "KIND",
                        "NAME",
                        "JOB",
                        "BY",
                        "GRANT",
                        "ROWS",
                        "EPSILON",
                        "FINDINGS",
                        "APPROVALS",
                    ],
                    &[6, 7],
                    rows,
                )?;
            }
            for o in queue.iter().filter(|o| !o["diff"].is_null()) {
                writeln!(
                    out,
                    "{}: diff against the last release: {}",
                    text(o, "output"),
                    o["diff"]
                )?;
            }
            Ok(())
        }
        Command::Release(ReleaseCommand::Download {
            id,
            out: path,
            force,
            actor,
            dir,
        }) => {
            let domain = open(&dir)?;
            let actor = who(&domain, actor, token)?;
            let mut destination = prepare_download(path.as_deref(), force)?;
            let file =
                domain.download_release_into(&actor, &id, |text| match destination.take() {
                    Some(d) => d
                        .commit(text.as_bytes())
                        .map_err(crate::DomainError::Invalid),
                    None => Ok(()),
                })?;
            match &path {
                Some(p) => writeln!(out, "downloaded release {id} to {}", p.display())?,
                None => writeln!(out, "{file}")?,
            }
            Ok(())
        }
    }
}

/// What a developer sees of a job, query or extract they ran locally:
/// exactly what the HTTP API returns (`server::developer_outcome`: status,
/// the host's reason, spend, and output ids of SQL jobs and extracts),
/// never an output, nor what a guest computed, before a reviewer approves.
fn print_developer_outcome(
    out: &mut dyn Write,
    outcome: &crate::JobOutcome,
    plan: Option<&Option<unseen_policy::mask::ExtractPlan>>,
    grant_left: f64,
    json: bool,
) -> Result<()> {
    if json {
        let mut value = crate::server::developer_outcome(outcome);
        if let Some(plan) = plan {
            value["protection"] = serde_json::to_value(plan)?;
        }
        writeln!(out, "{value}")?;
        return Ok(());
    }
    match &outcome.reason {
        Some(reason) => writeln!(
            out,
            "job {} {}{}: {reason}",
            outcome.job_id,
            outcome.status,
            outcome
                .stopped_by
                .as_ref()
                .map_or(String::new(), |by| format!(" ({by})"))
        )?,
        None => writeln!(out, "job {} {}", outcome.job_id, outcome.status)?,
    }
    if outcome.guest {
        if let Some(o) = &outcome.outcome_output {
            writeln!(
                out,
                "  its outcome ({o}) and outputs await review: {}",
                crate::server::WITHHELD
            )?;
        }
    } else {
        for o in &outcome.outputs {
            writeln!(
                out,
                "  output {o} is in quarantine for review; a reviewer must approve it before anyone sees it"
            )?;
        }
    }
    writeln!(
        out,
        "  epsilon spent {:.3}; the grant has {grant_left:.3} left",
        outcome.epsilon_spent
    )?;
    if let Some(Some(p)) = plan {
        let diverse = if p.sensitive.is_empty() {
            String::new()
        } else {
            format!(
                ", each with at least l={} distinct values of ({})",
                p.l,
                p.sensitive.join(", ")
            )
        };
        writeln!(
            out,
            "  released only in classes of at least k={} people alike in ({}){diverse}; what was suppressed is for the reviewer",
            p.k,
            p.identifying.join(", "),
        )?;
    }
    Ok(())
}

/// What a masked extract's disclosure control did, for the reviewer.
fn print_disclosure(out: &mut dyn Write, report: &serde_json::Value) -> Result<()> {
    let list = |key: &str| {
        report[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    writeln!(
        out,
        "disclosure control: k={} over ({}), l={} over ({}), non-identifying ({})",
        report["k"],
        list("identifying"),
        report["l"],
        list("sensitive"),
        list("non_identifying")
    )?;
    writeln!(
        out,
        "  sampled {} rows in {} classes; released {} rows in {} classes; suppressed {} rows in {} classes under k and {} rows in {} classes under l",
        report["rows_sampled"],
        report["classes_sampled"],
        report["rows_released"],
        report["classes_released"],
        report["rows_under_k"],
        report["classes_under_k"],
        report["rows_under_l"],
        report["classes_under_l"]
    )?;
    let sizes: Vec<String> = report["class_sizes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| format!("{} x {}", c["classes"], c["people"]))
                .collect()
        })
        .unwrap_or_default();
    writeln!(
        out,
        "  released class sizes (classes x people): {}",
        if sizes.is_empty() {
            "none".to_string()
        } else {
            sizes.join(", ")
        }
    )?;
    Ok(())
}

/// Prints a benchmark's measures and writes them with a chart when asked.
fn report_bench(
    out: &mut dyn Write,
    name: &str,
    command: &str,
    dir: Option<&Path>,
    measures: &[crate::bench::Measure],
    json: bool,
) -> Result<()> {
    let machine = crate::bench::machine();
    if let Some(dir) = dir {
        crate::bench::write(dir, name, &machine, command, measures)?;
    }
    if json {
        writeln!(
            out,
            "{}",
            json!({"bench": name, "command": command, "machine": machine, "measures": measures})
        )?;
    } else {
        crate::bench::print(out, &format!("{name} ({machine})"), measures)?;
    }
    Ok(())
}

fn print_job(out: &mut dyn Write, job: &crate::jobs::JobView, json: bool) -> Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_value(job)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "job {} {}{} (grant {}, by {})",
        job.id,
        job.status,
        job.stopped_by
            .as_ref()
            .map_or(String::new(), |by| format!(" ({by})")),
        job.grant,
        job.submitter
    )?;
    if let Some(reason) = &job.reason {
        writeln!(out, "  reason: {reason}")?;
    }
    if let Some(o) = &job.outcome {
        writeln!(out, "  outcome output {} ({})", o.output, o.review)?;
    }
    if let Some(ending) = &job.ending {
        writeln!(out, "  ended: {ending}")?;
    }
    if let Some(e) = &job.error {
        writeln!(out, "  error: {e}")?;
    }
    if job.fuel_used.is_some() || job.queries.is_some() || job.run_ms.is_some() {
        writeln!(
            out,
            "  fuel {}, queries {}, rows read {}, run {} ms",
            job.fuel_used.unwrap_or(0),
            job.queries.unwrap_or(0),
            job.rows_read.unwrap_or(0),
            job.run_ms.unwrap_or(0),
        )?;
    }
    writeln!(out, "  epsilon {:.3}", job.epsilon_spent)?;
    for r in &job.refusals {
        writeln!(out, "  refused: {r}")?;
    }
    for l in &job.logs {
        writeln!(out, "  log: {l}")?;
    }
    for o in &job.outputs {
        writeln!(out, "  output {o}")?;
    }
    Ok(())
}

/// Makes ready the file a download goes to, before anything is counted.
fn prepare_download(path: Option<&Path>, force: bool) -> Result<Option<crate::util::Destination>> {
    path.map(|p| crate::util::Destination::prepare(p, force))
        .transpose()
        .map_err(anyhow::Error::msg)
}

/// Writes a downloaded bundle where it was asked for, or prints it.
fn finish_download(
    out: &mut dyn Write,
    id: &str,
    file: &str,
    path: Option<&Path>,
    destination: Option<crate::util::Destination>,
) -> Result<()> {
    match (path, destination) {
        (Some(p), Some(d)) => {
            d.commit(file.as_bytes()).map_err(anyhow::Error::msg)?;
            writeln!(out, "downloaded release {id} to {}", p.display())?;
        }
        _ => writeln!(out, "{file}")?,
    }
    Ok(())
}

/// A size in bytes: a number with an optional K, M or G suffix (powers of
/// 1024), at least 1 MiB.
fn parse_bytes(text: &str) -> Result<usize, String> {
    let trimmed = text.trim();
    let (digits, unit) = match trimmed.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => trimmed.split_at(at),
        None => (trimmed, ""),
    };
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches(['B', 'I'])
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return Err(format!("`{text}` is not a size; write it like 512M or 2G")),
    };
    let bytes = digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1usize << shift))
        .ok_or_else(|| format!("`{text}` is not a size; write it like 512M or 2G"))?;
    if bytes < 1 << 20 {
        return Err(format!(
            "`{text}` is under 1M; a query needs at least that much memory"
        ));
    }
    Ok(bytes)
}

/// Resolves on Ctrl-C or SIGTERM, for a graceful stop of `serve`.
pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// The acting user of a local command. Local mode is for the operator of
/// the host, who owns the data directory and acts as an admin by naming
/// one with `--as`; anyone else (developer, reviewer, auditor) must prove
/// who they are with their token, exactly as over HTTP.
fn who(domain: &Domain, actor: Option<String>, token: Option<&str>) -> Result<String> {
    if let Some(token) = token {
        let (id, _) = domain.authenticate(token)?;
        if let Some(claimed) = actor
            && claimed != id
        {
            bail!(
                "the token given (--token or UNSEEN_TOKEN) is `{id}`'s, but --as names `{claimed}`; drop --as or give `{claimed}`'s token"
            );
        }
        return Ok(id);
    }
    let Some(actor) = actor else {
        bail!(
            "say who is acting: --token TOKEN (or UNSEEN_TOKEN) for any user, or --as ADMIN for the operator of this data directory; with a server, --server URL --token TOKEN"
        );
    };
    let role = domain.role_of(&actor)?;
    if role != Role::Admin {
        bail!(
            "acting locally as `{actor}` ({}) needs their token: pass --token TOKEN or set UNSEEN_TOKEN (the token `user add` printed, or a new one from `unseen user token {actor} --as ADMIN`); without a token, local commands act only as an admin, for the operator of the host",
            role.as_str()
        );
    }
    Ok(actor)
}

/// Prints a reconciliation check; fails if the store and the ledger disagree.
fn print_reconciliation(
    out: &mut dyn Write,
    report: &crate::reconcile::Reconciliation,
    json: bool,
) -> Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(report)?)?;
    } else {
        let checked: Vec<String> = report
            .checked
            .iter()
            .map(|(what, n)| format!("{n} {what}"))
            .collect();
        if report.agrees() {
            writeln!(
                out,
                "the store and the ledger agree: {} entries replayed; checked {}",
                report.ledger_entries,
                checked.join(", ")
            )?;
        } else {
            writeln!(
                out,
                "the store and the ledger DISAGREE on {} fields ({} entries replayed):",
                report.differences.len(),
                report.ledger_entries
            )?;
            for d in &report.differences {
                writeln!(out, "  {d}")?;
            }
        }
        if report.in_flight > 0 {
            writeln!(
                out,
                "({} changes were being recorded during the check; counted as recorded)",
                report.in_flight
            )?;
        }
    }
    if !report.agrees() {
        bail!(
            "the store and the ledger disagree on {} fields. Restart the service (an open records what a crash left unrecorded) and check again; a difference that stays means the store or the ledger was changed outside Unseen: find the entries with `unseen ledger query`",
            report.differences.len()
        );
    }
    Ok(())
}

fn public_key(data_dir: &Path, public_key: Option<&Path>) -> Result<unseen_ledger::PublicKey> {
    crate::audit::read_public_key(data_dir, public_key).context("cannot read the ledger public key")
}

fn verified(
    dir: &DataDir,
    key: Option<&Path>,
) -> Result<(crate::audit::VerifiedLedger, unseen_ledger::PublicKey)> {
    let path = dir.path();
    let key = public_key(&path, key)?;
    Ok((
        crate::audit::load_verified(&path.join("ledger"), &key)?,
        key,
    ))
}

/// Renders record batches as JSON rows (numbers, booleans, text).
pub(crate) fn batches_json(batches: &[arrow::array::RecordBatch]) -> Result<serde_json::Value> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::DataType;
    let mut rows = Vec::new();
    for batch in batches {
        let schema = batch.schema();
        let columns: Vec<(String, arrow::array::ArrayRef)> = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(f, c)| {
                let target = match c.data_type() {
                    t if t.is_integer() => DataType::Int64,
                    t if t.is_numeric() => DataType::Float64,
                    DataType::Boolean => DataType::Boolean,
                    _ => DataType::Utf8,
                };
                Ok((f.name().clone(), arrow::compute::cast(c, &target)?))
            })
            .collect::<Result<_, arrow::error::ArrowError>>()?;
        for r in 0..batch.num_rows() {
            let mut row = serde_json::Map::new();
            for (name, c) in &columns {
                let v = if c.is_null(r) {
                    serde_json::Value::Null
                } else {
                    match c.data_type() {
                        DataType::Int64 => {
                            json!(c.as_primitive::<arrow::datatypes::Int64Type>().value(r))
                        }
                        DataType::Float64 => {
                            json!(c.as_primitive::<arrow::datatypes::Float64Type>().value(r))
                        }
                        DataType::Boolean => json!(c.as_boolean().value(r)),
                        _ => json!(c.as_string::<i32>().value(r)),
                    }
                };
                row.insert(name.clone(), v);
            }
            rows.push(serde_json::Value::Object(row));
        }
    }
    Ok(serde_json::Value::Array(rows))
}

/// Verifies the ledger of a data directory with only its public key.
pub fn verify_ledger(
    data_dir: &Path,
    public_key: Option<&Path>,
) -> Result<unseen_ledger::VerifyReport> {
    let key = self::public_key(data_dir, public_key)?;
    let report = unseen_ledger::verify_dir(&data_dir.join("ledger"), &key)
        .context("ledger verification FAILED")?;
    Ok(report)
}

/// Writes published marginals to `path`, or prints them.
fn write_marginals(
    out: &mut dyn Write,
    marginals: &serde_json::Value,
    path: Option<&Path>,
) -> Result<()> {
    let text = serde_json::to_string_pretty(marginals)?;
    match path {
        Some(path) => {
            std::fs::write(path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let columns = marginals["columns"].as_object().map_or(0, |c| c.len());
            writeln!(
                out,
                "wrote DP marginals of {columns} columns (epsilon {}) to {}",
                marginals["epsilon"],
                path.display()
            )?;
        }
        None => writeln!(out, "{text}")?,
    }
    Ok(())
}

pub(crate) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn parse_params(raw: &[String]) -> Result<BTreeMap<String, String>> {
    raw.iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("parameter `{p}` must look like name=value"),
        })
        .collect()
}
