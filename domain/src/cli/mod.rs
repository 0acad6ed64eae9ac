//! The `unseen` command line. Kept in the library so end-to-end tests can
//! drive every command in-process and inspect everything it prints.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::backend::{Backend, Local, ModuleKind, Submitted};
use crate::{Domain, Role, demo};
pub use applications::ApplicationCommand;

mod applications;
mod attest;
mod bench;
mod budget;
mod cluster;
mod data;
mod dev;
mod grants;
mod jobs;
mod ledger;
mod review;
mod serve;
mod users;

/// Unseen: public data that is usable but invisible.
#[derive(Debug, Parser)]
#[command(name = "unseen", version, long_version = unseen_build_info::LONG_VERSION, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub remote: Remote,
    /// How log lines on stderr are written: `text` for people, `json` (one
    /// object per line) for log shippers. Colour only on a terminal.
    #[arg(long, global = true, env = "UNSEEN_LOG_FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// Act against a running server instead of a local data directory.
#[derive(Debug, Args, Clone)]
pub struct Remote {
    /// Server URL, like http://127.0.0.1:8787 (then --token says who you are).
    #[arg(long, global = true, env = "UNSEEN_SERVER")]
    pub server: Option<String>,
    /// Your token, which says who you are: to --server, or to a local data
    /// directory (everyone but its operator's admin).
    #[arg(long, global = true, env = "UNSEEN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificates (PEM) an https --server's certificate chains to,
    /// when it is not under the public roots.
    #[arg(long, global = true, env = "UNSEEN_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

/// A data file: Parquet, or CSV or Arrow IPC read with the manifest's types.
#[derive(Debug, Args, Clone)]
pub struct DataFile {
    /// The Parquet file.
    #[arg(long)]
    parquet: Option<PathBuf>,
    /// A CSV file instead: a header line naming the manifest's columns in
    /// order, values read with its types (a mistake names the line and
    /// column, never the value).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// An Arrow IPC file instead, with the manifest's columns and types.
    #[arg(long)]
    arrow: Option<PathBuf>,
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
/// Commands that only read or write local files: `--server`, `--ca-cert`
/// and `--token` do not apply there and are hidden from their help (given
/// anyway, they are ignored, as `over_server` says).
const LOCAL_FILE_COMMANDS: &[&[&str]] = &[
    &["completions"],
    &["man"],
    &["config"],
    &["demo"],
    &["dev"],
    &["bench"],
    &["dataset", "generate"],
    &["dataset", "manifest"],
    &["witness"],
    &["ledger", "check-proof"],
    &["ledger", "verify-segment"],
    &["release", "verify"],
];

/// Commands that need the data directory itself: `--token` says who acts,
/// `--server` and `--ca-cert` do not apply (given, they are refused).
const DATA_DIR_COMMANDS: &[&[&str]] = &[
    &["serve"],
    &["logs"],
    &["ledger", "proof"],
    &["ledger", "export"],
    &["ledger", "recover"],
    &["ledger", "witness"],
];

/// The command line's definition: the derived one, with the global
/// connection flags hidden where they do not apply.
pub fn definition() -> clap::Command {
    let root = <Cli as clap::CommandFactory>::command();
    let global = |id: &str| {
        root.get_arguments()
            .find(|a| a.get_id() == id)
            .cloned()
            .unwrap_or_else(|| panic!("the command line has no global `{id}`"))
    };
    let remote = [global("server"), global("ca_cert")];
    let token = global("token");
    let mut command = root.clone();
    for path in LOCAL_FILE_COMMANDS {
        let all = [remote[0].clone(), remote[1].clone(), token.clone()];
        command = hide_in(command, path, &all);
    }
    for path in DATA_DIR_COMMANDS {
        command = hide_in(command, path, &remote);
    }
    command
}

/// Gives the subcommand at `path` (and so its own subcommands) hidden
/// copies of the global `args`: clap then keeps them from being propagated
/// there visibly, and still accepts them.
fn hide_in(command: clap::Command, path: &[&str], args: &[clap::Arg]) -> clap::Command {
    match path {
        [] => args
            .iter()
            .fold(command, |c, arg| c.arg(arg.clone().hide(true))),
        [name, rest @ ..] => {
            assert!(
                command.find_subcommand(name).is_some(),
                "no subcommand `{name}` to hide flags in"
            );
            command.mut_subcommand(*name, |sub| hide_in(sub, rest, args))
        }
    }
}

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
pub enum ConfigCommand {
    /// Check a configuration file for `unseen serve --config`: every
    /// mistake at once, with its key and what would be right (exit 1).
    ///
    /// Example: `unseen config check /etc/unseen/unseen.toml`
    Check {
        /// The file to check.
        file: PathBuf,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Configuration files of `unseen serve`.
    #[command(subcommand)]
    Config(ConfigCommand),
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
    ///
    /// Example: `unseen demo --data-dir /tmp/unseen-demo --rows 20000`
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
        /// Where the analysts' queries run: `datafusion` (this process) or
        /// `ballista` (a local cluster: a scheduler and two enrolled
        /// executors, processes of this binary on loopback).
        #[arg(long, default_value = "datafusion", value_parser = ["datafusion", "ballista"])]
        engine: String,
    },
    /// Run one SQL statement as a one-query job (admission, DP, quarantine,
    /// review), or with --dry-run only print the verdict, cost and accuracy.
    ///
    /// Example: `unseen query --grant grant-5e1f0a9c3b --token "$UNSEEN_TOKEN" "SELECT district, AVG(annual_income) AS income FROM residents GROUP BY district"`
    Query(QueryArgs),
    /// A sampled, masked, k-anonymised row extract for development, under a
    /// grant that allows extracts; the extract goes to quarantine for review.
    ///
    /// Example: `unseen extract --grant grant-5e1f0a9c3b --columns district,birth_year --sample 0.01 --token "$UNSEEN_TOKEN"`
    Extract(ExtractArgs),
    /// Serve the HTTP API (JSON, bearer tokens, role checks) on the loopback by default.
    ///
    /// Example: `unseen serve --data-dir /srv/unseen --listen 127.0.0.1:8787 --max-jobs 4`
    Serve(ServeArgs),
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
    /// Apply for grants, and pre-review and decide applications.
    #[command(subcommand)]
    Application(ApplicationCommand),
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
    /// Print a statement of the running build (binary SHA-256, git commit,
    /// Cargo.lock hash, engine versions) signed by the ledger key: the
    /// server's with --server, else this binary's; `attest verify` checks one.
    ///
    /// Example: `unseen attest --nonce 7f3a --out build.json --token "$UNSEEN_TOKEN"`
    Attest(AttestArgs),
    /// Name the extract a leaked file came from — its grant and the user who
    /// ran it, with a confidence — or say it was never released. Reads CSV,
    /// JSON lines, Parquet or a release bundle; rows may be missing,
    /// reordered or columns dropped.
    ///
    /// Example: `unseen trace found_on_a_share.csv --as wang.min`
    Trace {
        /// The leaked file.
        file: PathBuf,
        /// Act as this user: an admin or auditor operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
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
    /// Run queries on a cluster: its scheduler and executors, and the
    /// executors enrolled to read data (`serve --engine ballista://`).
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

/// `unseen cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Enrol an executor under a name (admins): writes its secret and its
    /// cluster identity (a certificate from the service's cluster
    /// authority, for mutual TLS), which the executor starts with, to an
    /// owner-only file. A name enrolled again gets a new secret; the old
    /// one then opens nothing.
    ///
    /// Example: `unseen cluster enrol exec-1 --secret-file exec-1.secret --as admin`
    Enrol {
        /// The executor's name (lowercase letters, digits, `-`, `_`).
        name: String,
        /// Where to write the secret (created owner-only; must not exist).
        #[arg(long)]
        secret_file: PathBuf,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Revoke an executor's enrolment (admins): no query seals a key for it
    /// from now on.
    ///
    /// Example: `unseen cluster revoke exec-1 --as admin`
    Revoke {
        /// The executor's name, as enrolled.
        name: String,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// List enrolled executors (admins, auditors).
    ///
    /// Example: `unseen cluster executors --as auditor`
    Executors {
        /// Act as this user: an admin or auditor operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Write the scheduler's cluster identity (admins): a certificate from
    /// the service's cluster authority and its key, to an owner-only file
    /// the scheduler starts with.
    ///
    /// Example: `unseen cluster scheduler-identity --file scheduler.identity --as admin`
    SchedulerIdentity {
        /// Where to write the identity (created owner-only; must not exist).
        #[arg(long)]
        file: PathBuf,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Replace the service's cluster authority (admins): every identity
    /// the old one issued is refused from then on, so an identity that
    /// must stop working before it expires (a revoked executor's, a lost
    /// file's) does. Then issue the scheduler's identity again, enrol every
    /// executor again, and restart the service.
    ///
    /// Example: `unseen cluster new-authority --as admin`
    NewAuthority {
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Run a cluster's scheduler until stopped. It lets through only peers
    /// with an identity from the same cluster authority (mutual TLS).
    ///
    /// Example: `unseen cluster scheduler --listen 127.0.0.1:50050 --identity-file scheduler.identity`
    Scheduler {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:50050")]
        listen: std::net::SocketAddr,
        /// The identity file `cluster scheduler-identity` wrote.
        #[arg(long)]
        identity_file: PathBuf,
        /// Seconds an executor may be silent before its tasks run elsewhere.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        executor_timeout: u64,
    },
    /// Run an enrolled executor until stopped (SIGINT or SIGTERM, after its
    /// running tasks finish). It reads data files at the paths the service
    /// registered them under, so it must see the same storage.
    ///
    /// Example: `unseen cluster executor --name exec-1 --secret-file exec-1.secret --scheduler 127.0.0.1:50050 --listen 127.0.0.1:50051 --work-dir /dev/shm/unseen-exec-1`
    Executor {
        /// The name it was enrolled under.
        #[arg(long)]
        name: String,
        /// The secret file `cluster enrol` wrote (its secret and its
        /// cluster identity).
        #[arg(long)]
        secret_file: PathBuf,
        /// The scheduler's address.
        #[arg(long)]
        scheduler: std::net::SocketAddr,
        /// Address to serve shuffle data on, to the other executors.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Owner-only directory for shuffle files and spills, which hold
        /// decrypted rows (created if missing). It must be on a
        /// memory-backed file system (tmpfs, for example under /dev/shm).
        #[arg(long)]
        work_dir: PathBuf,
        /// Accept a work directory on disk: only if that disk is encrypted.
        #[arg(long)]
        work_dir_on_disk: bool,
        /// Tasks to run at once [default: the number of CPUs].
        #[arg(long)]
        slots: Option<usize>,
        /// Memory all its tasks together may hold, like 2G, shared evenly
        /// between its slots; beyond it a task spills to the work
        /// directory where it can, else fails [default: 70% of the host's
        /// or cgroup's memory].
        #[arg(long, value_parser = parse_bytes)]
        memory: Option<usize>,
    },
}

/// Arguments of `unseen query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The SQL statement: aggregates are released with DP noise, open columns as they are.
    pub sql: String,
    /// The grant to query under (an id from `grant list`).
    #[arg(long)]
    pub grant: String,
    /// Print the verdict, epsilon cost and expected accuracy without spending.
    #[arg(long)]
    pub dry_run: bool,
    /// A UDF module (.wasm) whose functions the query may call
    /// (repeatable); the grant must allow UDFs.
    #[arg(long = "udf")]
    pub udfs: Vec<PathBuf>,
    /// An earlier release to read as table `release_<id>` (repeatable);
    /// its grant must allow derived reuse.
    #[arg(long = "input")]
    pub inputs: Vec<String>,
    /// Once a reviewer releases the result, write its table to --out in
    /// this format, each estimate as `x`, `x_lower`, `x_upper` (waiting up
    /// to --wait seconds; this counts as a download).
    #[arg(long, value_enum, requires = "out")]
    pub format: Option<crate::export::TableFormat>,
    /// Where --format writes the released table.
    #[arg(long, requires = "format")]
    pub out: Option<PathBuf>,
    /// Replace an existing --out file.
    #[arg(long, requires = "out")]
    pub force: bool,
    /// Seconds to wait for a reviewer to release the result, then print
    /// its values with their intervals (or write them with --format); 0
    /// does not wait (`job status` names the release later).
    #[arg(long, default_value_t = 0)]
    pub wait: u64,
    /// Act as this user: an admin operating this data directory, or the owner of --token.
    #[arg(long = "as")]
    pub actor: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub dir: DataDir,
}

/// Arguments of `unseen extract`.
#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// The grant to extract under (it must allow extracts).
    #[arg(long)]
    pub grant: String,
    /// Columns to extract, comma-separated (each leaves through its mask rule).
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// Fraction of rows to sample, in (0, 1].
    #[arg(long, default_value_t = 0.01)]
    pub sample: f64,
    /// Act as this user: an admin operating this data directory, or the owner of --token.
    #[arg(long = "as")]
    pub actor: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub dir: DataDir,
}

/// Arguments of `unseen serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A configuration file (TOML; see `unseen config check`): flags and
    /// their environment variables override what it says.
    #[arg(long, env = "UNSEEN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8787]. An address other
    /// hosts can reach needs --tls-cert and --tls-key, or --insecure-listen.
    #[arg(long, env = "UNSEEN_LISTEN")]
    pub listen: Option<String>,
    /// The server's certificate chain (PEM): serve HTTPS (HTTP/1.1).
    #[arg(long, env = "UNSEEN_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "UNSEEN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Listen without TLS on an address other hosts can reach (behind a
    /// TLS-terminating proxy, or inside a container's own network).
    #[arg(long, env = "UNSEEN_INSECURE_LISTEN")]
    pub insecure_listen: bool,
    /// Jobs that run at once; more wait in the queue [default: 4].
    #[arg(long, env = "UNSEEN_MAX_JOBS", value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub max_jobs: Option<u64>,
    /// Connections open at once; when full, the oldest idle one is closed
    /// [default: 1024].
    #[arg(long, env = "UNSEEN_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
    /// Connections one client address may hold at once [default: 256].
    #[arg(long, env = "UNSEEN_MAX_CONNECTIONS_PER_CLIENT", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_client: Option<u32>,
    /// Seconds a client has to send a request's header before its
    /// connection is closed [default: 10].
    #[arg(long, env = "UNSEEN_HEADER_TIMEOUT", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout: Option<u64>,
    /// Seconds a client has to send a request's whole body [default: 120].
    #[arg(long, env = "UNSEEN_BODY_TIMEOUT", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub body_timeout: Option<u64>,
    /// A witness to submit checkpoints to (URL), at start and then every
    /// --witness-every seconds; needs --witness-key.
    #[arg(long, env = "UNSEEN_WITNESS")]
    pub witness: Option<String>,
    /// The witness's verifier key, as `unseen witness init` printed it.
    #[arg(long, env = "UNSEEN_WITNESS_KEY")]
    pub witness_key: Option<String>,
    /// Seconds between submissions to the witness [default: 60].
    #[arg(long, env = "UNSEEN_WITNESS_EVERY", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub witness_every: Option<u64>,
    /// Memory one query may hold, like 512M or 2G; beyond it the query
    /// spills to the data directory where it can, else fails as too
    /// large (a DP query's release is then computed on fixed defaults)
    /// [default: 512M].
    #[arg(long, env = "UNSEEN_QUERY_MEMORY", value_parser = parse_bytes)]
    pub query_memory: Option<usize>,
    /// Let queries spill into the data directory's `spill/` although it is
    /// on disk. Spills are decrypted rows, so by default they go only to
    /// memory-backed storage (the data directory on tmpfs, else /dev/shm;
    /// with neither, a query that outgrows --query-memory fails): only for
    /// a disk encrypted at the block layer.
    #[arg(long)]
    pub spill_on_disk: bool,
    /// Where analysts' queries execute: `datafusion`, in this process, or
    /// `ballista://HOST:PORT`, a cluster's scheduler whose executors are
    /// enrolled with `unseen cluster enrol` [default: datafusion].
    #[arg(long, env = "UNSEEN_ENGINE")]
    pub engine: Option<String>,
    /// Seconds one query may run before it is stopped [default: 60].
    #[arg(long, env = "UNSEEN_QUERY_TIMEOUT", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub query_timeout: Option<u64>,
    /// Rows one join may produce before the query is stopped as too large
    /// [default: 50000000].
    #[arg(long, env = "UNSEEN_MAX_JOIN_ROWS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_join_rows: Option<u64>,
    /// Seconds a stopping server (SIGTERM, Ctrl-C) lets running work
    /// finish before it cancels it; it exits within this time [default: 30].
    #[arg(long, env = "UNSEEN_GRACE_PERIOD", value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub grace_period: Option<u64>,
    /// Milliseconds: a job that read protected data is shown to its
    /// developer to end a random 0 to this many milliseconds after it
    /// did, and its answer waits until then, so its duration cannot
    /// tell one person's row (default 500; 0 shows ends as they happen
    /// and lets developers time their queries).
    #[arg(long, env = "UNSEEN_TIMING_QUANTUM_MS", value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub timing_quantum_ms: Option<u64>,
    /// Days job logs are kept (at least 183, six months); when given, the
    /// server clears older guest logs at start and once a day, recorded in
    /// the ledger (without it, only `unseen logs prune` clears them).
    #[arg(long, env = "UNSEEN_LOG_RETENTION_DAYS", value_parser = clap::value_parser!(u32).range(183..=36_500))]
    pub log_retention_days: Option<u32>,
    #[command(flatten)]
    pub dir: DataDir,
}

#[derive(Debug, Subcommand)]
pub enum WitnessCommand {
    /// Create a witness key in DIR and print its verifier key, which the
    /// operator passes to `ledger witness` and auditors to
    /// `ledger verify --witness-key`.
    ///
    /// Example: `unseen witness init --dir /var/lib/unseen-witness --name witness.audit.example`
    Init {
        /// The witness's directory (created 0700; holds its key and records).
        #[arg(long)]
        dir: PathBuf,
        /// The witness's name, e.g. `witness.audit.example`.
        #[arg(long)]
        name: String,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print the verifier key of the witness in DIR.
    ///
    /// Example: `unseen witness key --dir /var/lib/unseen-witness`
    Key {
        /// The witness's directory.
        #[arg(long)]
        dir: PathBuf,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Serve `POST /add-checkpoint` and `GET /latest` for one ledger.
    ///
    /// Example: `unseen witness serve --dir /var/lib/unseen-witness --log-key ledger.pub --listen 0.0.0.0:8788`
    Serve {
        /// The witness's directory, as `witness init` made it.
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
    ///
    /// Example: `unseen logs prune --older-than-days 365 --as wang.min`
    Prune {
        /// Clear the logs of jobs that ended more than this many days ago.
        #[arg(long)]
        older_than_days: u32,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Run GUEST.wasm against mock data made from a manifest alone (types,
    /// category domains, bounds; never real rows), through the same sandbox
    /// and policy as the service, in a throwaway data directory.
    ///
    /// Example: `unseen dev run guests/district-income/target/wasm32-unknown-unknown/release/district_income.wasm --dataset residents --rows 2000`
    Run {
        /// The job module (.wasm) to run.
        module: PathBuf,
        /// The dataset's manifest (TOML).
        #[arg(long, conflicts_with = "dataset", required_unless_present = "dataset")]
        manifest: Option<PathBuf>,
        /// Use the built-in manifest of a synthetic dataset (residents, …).
        #[arg(long)]
        dataset: Option<String>,
        /// Rows of synthetic data to run against.
        #[arg(long, default_value_t = 2000)]
        rows: usize,
        /// Seed of the synthetic data; the same seed gives the same rows.
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
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Download a signed release as an offline-verifiable bundle
    /// (designated users, within the grant's limit; counted only once the
    /// file is written).
    ///
    /// Example: `unseen release download rel-0f4c2a7e91 --out release.json --token "$UNSEEN_TOKEN"`
    Download {
        /// The release to download (an id from `review list` or the approval).
        id: String,
        /// Write the bundle here (default: print it).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace the --out file if it exists.
        #[arg(long, requires = "out")]
        force: bool,
        /// Write the release's table as data instead of the bundle: each
        /// estimate as `x`, `x_lower`, `x_upper` (not verifiable offline;
        /// keep the bundle for that, and `release export` it later).
        #[arg(long, value_enum, requires = "out")]
        format: Option<crate::export::TableFormat>,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Verify a downloaded bundle with the public key, then write its table
    /// as CSV, JSON lines or Parquet, each estimate as `x`, `x_lower`, `x_upper`.
    ///
    /// Example: `unseen release export release.json --format parquet --out release.parquet --public-key ledger.pub`
    Export {
        /// The bundle (as `release download` wrote it).
        file: PathBuf,
        /// The data format: csv, json (one object per line) or parquet.
        #[arg(long, value_enum)]
        format: crate::export::TableFormat,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
        /// Replace the --out file if it exists.
        #[arg(long)]
        force: bool,
        /// Public key file (default: `DATA_DIR/ledger/ledger.pub`).
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Prove a release end to end: signature, content hash, ledger entries,
    /// inclusion under the signed checkpoint. A downloaded bundle needs only
    /// --public-key; a bare release file is checked against DATA_DIR's ledger.
    ///
    /// Example: `unseen release verify release.json --public-key ledger.pub`
    Verify {
        /// The release file to verify (as `release download` wrote it).
        file: PathBuf,
        /// Public key file (default: `DATA_DIR/ledger/ledger.pub`).
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AttestArgs {
    #[command(subcommand)]
    pub verify: Option<AttestVerify>,
    /// A challenge echoed in the signed statement, so it cannot be an old one.
    #[arg(long)]
    pub nonce: Option<String>,
    /// Write the attestation here (default: print it).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Act as this user: an admin operating this data directory, or the owner of --token.
    #[arg(long = "as")]
    pub actor: Option<String>,
    #[command(flatten)]
    pub dir: DataDir,
}

#[derive(Debug, Subcommand)]
pub enum AttestVerify {
    /// Check an attestation offline with the ledger's public key, and
    /// optionally that a binary is the one it names.
    ///
    /// Example: `unseen attest verify build.json --public-key ledger.pub --binary /usr/local/bin/unseen --nonce 7f3a`
    Verify {
        /// The attestation (as `unseen attest --out` wrote it).
        file: PathBuf,
        /// Public key file (default: `DATA_DIR/ledger/ledger.pub`).
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Also check that this file hashes to the attested binary.
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Also check that the statement answers this challenge.
        #[arg(long)]
        nonce: Option<String>,
        /// Print the attestation as JSON once verified.
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
    ///
    /// Example: `unseen bench ledger --entries 200000 --threads 64`
    Ledger {
        /// Entries appended in the append measurement.
        #[arg(long, default_value_t = 200_000)]
        entries: u64,
        /// Threads appending at once.
        #[arg(long, default_value_t = 64)]
        threads: usize,
        /// Size of the tree inclusion proofs are made in.
        #[arg(long, default_value_t = 10_000_000)]
        proof_size: u64,
        /// Entries in the ledger that is verified.
        #[arg(long, default_value_t = 1_000_000)]
        verify_entries: u64,
        /// Write NAME.json and NAME.svg here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Policy admission latency, and a DP release against the same exact
    /// aggregate in DataFusion.
    ///
    /// Example: `unseen bench policy --rows 1000000 --repeats 3`
    Policy {
        /// Queries planned in the admission measurement.
        #[arg(long, default_value_t = 2000)]
        runs: usize,
        /// Rows aggregated in the DP-overhead measurement.
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
        /// Runs of each measurement (the median and range are reported).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Also write the results as a report under this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The job sandbox: bare jobs/s, submit-to-first-query, and a DP job
    /// against the same aggregate in native DataFusion.
    ///
    /// Example: `unseen bench sandbox --jobs 500 --repeats 3`
    Sandbox {
        /// Jobs run in the throughput measurement.
        #[arg(long, default_value_t = 2000)]
        jobs: usize,
        /// Rows each job aggregates.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Runs of each measurement (the median and range are reported).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Also write the results as a report under this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Wasm scalar UDFs in DataFusion against native UDFs, and instantiation.
    ///
    /// Example: `unseen bench udf --rows 1000000`
    Udf {
        /// Rows the UDFs are evaluated over.
        #[arg(long, default_value_t = 10_000_000)]
        rows: usize,
        /// Also write the results as a report under this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The same DP release's exact aggregation in this process and on a
    /// local cluster (a scheduler and executors, processes of this binary
    /// on loopback), alternating; checks both compute the same values.
    ///
    /// Example: `unseen bench cluster --rows 10000000 --runs 3`
    Cluster {
        /// Rows of the generated residents file.
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
        /// Timed runs of each engine (after one warm-up each).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Executors in the local cluster.
        #[arg(long, default_value_t = 2)]
        executors: usize,
        /// Tasks each executor runs at once.
        #[arg(long, default_value_t = 1)]
        slots: usize,
        /// Also write the results as a report under this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Registering a generated `residents` file (encrypt, index the
    /// prohibited values, find the facts), and the process's peak memory,
    /// which must not grow with the row count.
    ///
    /// Example: `unseen bench register --rows 30000000`
    Register {
        /// Rows of the generated residents file.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Write register.json and register.svg here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// End-to-end small jobs over HTTP on the loopback (submit, run,
    /// quarantine) with p50/p99 latency, against the same jobs in-process,
    /// and the cost of the server's metrics and access log (three rounds
    /// with and without them).
    ///
    /// Example: `unseen bench service --jobs 500 --clients 8`
    Service {
        /// Jobs submitted over HTTP in each run (six runs: three rounds of
        /// a bare and an observed server).
        #[arg(long, default_value_t = 2000)]
        jobs: usize,
        /// HTTP clients submitting at once.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Rows of the residents table the jobs read.
        #[arg(long, default_value_t = 10_000)]
        rows: u64,
        /// Write service.json and service.svg here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Grants issued and their use (jobs, queries, epsilon, releases), for publication.
    ///
    /// Example: `unseen report disclosure --public-key ledger.pub --json`
    Disclosure {
        /// The ledger's public key file (default: the data directory's ledger.pub).
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Write a deterministic synthetic dataset as Parquet.
    ///
    /// Example: `unseen dataset generate residents --rows 100000 --seed 7 --out residents.parquet`
    Generate {
        /// residents, health_visits, enterprises, tax_records or utility_usage.
        name: String,
        /// Rows to generate.
        #[arg(long)]
        rows: u64,
        /// Seed; the same seed gives the same rows.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Rows of the related dataset (residents for health_visits, enterprises for tax_records/utility_usage).
        #[arg(long)]
        related_rows: Option<u64>,
        /// The Parquet file to write.
        #[arg(long)]
        out: PathBuf,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print the built-in manifest of a synthetic dataset.
    ///
    /// Example: `unseen dataset manifest residents > residents.toml`
    Manifest {
        /// residents, health_visits, enterprises, tax_records or utility_usage.
        name: String,
    },
    /// Register a Parquet file with its manifest; stored encrypted.
    ///
    /// Example: `unseen dataset register --name residents --parquet residents.parquet --manifest residents.toml --as wang.min`
    #[command(group(clap::ArgGroup::new("source").required(true).args(["parquet", "csv", "arrow"])))]
    Register {
        /// Name to register the dataset under (used in SQL and in grants).
        #[arg(long)]
        name: String,
        #[command(flatten)]
        file: DataFile,
        /// Its manifest: column classes, types and bounds, in TOML (see `dataset manifest`).
        #[arg(long)]
        manifest: PathBuf,
        /// Acting admin.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// List registered datasets.
    ///
    /// Example: `unseen dataset list --as wang.min --json`
    List {
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Destroy a dataset's data key (crypto-shredding): its data becomes
    /// unreadable, its grants are revoked; the ledger keeps the record.
    ///
    /// Example: `unseen dataset destroy residents --reason "retention period over" --as wang.min`
    Destroy {
        /// The dataset whose data key to destroy.
        name: String,
        /// Why, in words; recorded in the ledger.
        #[arg(long)]
        reason: String,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Propose outside data (a bank's enterprise list, a hospital's
    /// cohort) for one of your grants: it is checked — schema, key format
    /// and check characters, duplicate keys, size — and quarantined
    /// encrypted until a data provider approves it; then queries under the
    /// grant may join it on the privacy unit, below a DP aggregate only.
    ///
    /// Example: `unseen dataset import --grant grant-5e1f0a9c3b --name bank_loans --csv loans.csv --manifest loans.toml --token "$UNSEEN_TOKEN"`
    Import {
        /// The grant the data is for (it is destroyed with the grant).
        #[arg(long)]
        grant: String,
        /// The dataset it would become (its manifest's `name`).
        #[arg(long)]
        name: String,
        #[command(flatten)]
        file: DataFile,
        /// Its manifest: the privacy unit is the key it joins on, declared
        /// prohibited; no column may be open.
        #[arg(long)]
        manifest: PathBuf,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// List proposed imports: an admin's or auditor's all, a developer's own.
    ///
    /// Example: `unseen dataset imports --as wang.min`
    Imports {
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Approve a proposed import — registering it encrypted, joined to its
    /// grant, with its own epsilon budget — or reject it, with reasons.
    ///
    /// Example: `unseen dataset decide-import imp-4c1d2e3f5a --approve --epsilon 1 --reason "loan outcomes for the SME scenario" --as wang.min`
    #[command(group = clap::ArgGroup::new("decision").required(true).args(["approve", "reject"]))]
    DecideImport {
        /// The import to decide.
        id: String,
        /// Approve it (with --epsilon).
        #[arg(long)]
        approve: bool,
        /// Reject it: the quarantined file is deleted.
        #[arg(long)]
        reject: bool,
        /// Why (told to the proposer, kept in the ledger).
        #[arg(long)]
        reason: String,
        /// Its own budget layer: total epsilon queries reading it may spend.
        #[arg(long)]
        epsilon: Option<f64>,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Publish DP marginals of a dataset (noisy category counts and
    /// quantiles per column, charged to its budget), for `dev run
    /// --marginals` mock data that follows the real distribution.
    ///
    /// Example: `unseen dataset marginals residents --epsilon 1.0 --as wang.min`
    Marginals {
        /// The dataset to publish DP marginals of.
        name: String,
        /// Total epsilon, split evenly over the columns.
        #[arg(long, default_value_t = 1.0)]
        epsilon: f64,
        /// Write the marginals here (default: print them).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user (the first user of a new data directory must be an admin).
    ///
    /// Example: `unseen user add --id li.qiang --name 李强 --role developer --org "Housing Policy Research Centre" --as wang.min`
    Add {
        /// The user's id (letters, digits, dots, dashes).
        #[arg(long)]
        id: String,
        /// The user's name as people read it.
        #[arg(long)]
        name: String,
        /// admin, developer, reviewer or auditor.
        #[arg(long)]
        role: String,
        /// Their organisation.
        #[arg(long, default_value = "")]
        org: String,
        /// Acting admin (omit only for the first admin).
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// List users (admins and auditors).
    ///
    /// Example: `unseen user list --as wang.min`
    List {
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Disable a user and void their token.
    ///
    /// Example: `unseen user disable li.qiang --reason "left the project" --as wang.min`
    Disable {
        /// The user to disable.
        id: String,
        /// Why, in words; recorded in the ledger.
        #[arg(long, default_value = "")]
        reason: String,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Issue a new bearer token for a user (the old one stops working); printed once.
    ///
    /// Example: `unseen user token li.qiang --as wang.min`
    Token {
        /// The user to issue a new token to (the old one stops working).
        id: String,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Debug, Subcommand)]
pub enum GrantCommand {
    /// Issue a grant over a dataset (and datasets joined to it) to one developer.
    ///
    /// Example: `unseen grant issue --dataset residents --developer li.qiang --purpose "District income statistics" --epsilon 3 --query-epsilon 1 --as wang.min`
    Issue(Box<GrantIssue>),
    /// List grants (a developer sees those they are designated on).
    ///
    /// Example: `unseen grant list --as wang.min`
    List {
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Show one grant with its controls.
    ///
    /// Example: `unseen grant show grant-5e1f0a9c3b --as wang.min --json`
    Show {
        /// The grant to show.
        id: String,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Revoke a grant at once; its running jobs are stopped.
    ///
    /// Example: `unseen grant revoke grant-5e1f0a9c3b --reason "purpose fulfilled" --as wang.min`
    Revoke {
        /// The grant to revoke.
        id: String,
        /// Why, in words; recorded in the ledger.
        #[arg(long)]
        reason: String,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Usage of a grant for pricing: runs, queries, fuel, rows read, time, epsilon, downloads.
    ///
    /// Example: `unseen grant usage grant-5e1f0a9c3b --as wang.min`
    Usage {
        /// The grant whose usage to show.
        id: String,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
}

/// `unseen grant issue`: the authorization agreement's terms.
#[derive(Debug, clap::Args)]
pub struct GrantIssue {
    /// The developer the grant is for.
    #[arg(long)]
    developer: String,
    #[command(flatten)]
    terms: GrantTerms,
    /// Act as this user: an admin operating this data directory, or the owner of --token.
    #[arg(long = "as")]
    actor: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    dir: DataDir,
}

/// The terms of a grant, as issued or applied for.
#[derive(Debug, clap::Args)]
pub struct GrantTerms {
    /// The dataset the grant covers.
    #[arg(long)]
    dataset: String,
    /// Another dataset about the same privacy unit that DP queries may
    /// join to `--dataset` on that unit (repeatable).
    #[arg(long = "join")]
    join_datasets: Vec<String>,
    /// The purpose, shown to reviewers and in the disclosure report.
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
    /// Most jobs and queries the grant may run.
    #[arg(long)]
    max_runs: Option<u32>,
    /// Most downloads of its releases.
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
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Upload a module and run it under a grant; outputs go to quarantine.
    ///
    /// Example: `unseen job submit --grant grant-5e1f0a9c3b --module district_income.wasm --token "$UNSEEN_TOKEN"`
    Submit {
        /// The grant to run under.
        #[arg(long)]
        grant: String,
        /// The job module (.wasm) to upload and run.
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
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// A job's status and metering.
    ///
    /// Example: `unseen job status job-8c2d41e07a --token "$UNSEEN_TOKEN"`
    Status {
        /// The job to show.
        id: String,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Jobs, newest first (a developer sees their own).
    ///
    /// Example: `unseen job list --grant grant-5e1f0a9c3b --token "$UNSEEN_TOKEN"`
    List {
        /// Only the jobs of this grant.
        #[arg(long)]
        grant: Option<String>,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Cancel a queued or running job.
    ///
    /// Example: `unseen job cancel job-8c2d41e07a --reason "wrong parameters" --token "$UNSEEN_TOKEN"`
    Cancel {
        /// The job to cancel.
        id: String,
        /// Why, in words; recorded in the ledger.
        #[arg(long, default_value = "")]
        reason: String,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// The queue of quarantined outputs with findings, spend and a diff
    /// against the grant's earlier releases.
    ///
    /// Example: `unseen review list --token "$REVIEWER_TOKEN"`
    List {
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Show a quarantined output.
    ///
    /// Example: `unseen review show out-3b9e77c1d2 --token "$REVIEWER_TOKEN"`
    Show {
        /// The output to show (an id from `review list`).
        output: String,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Approve an output; signs a release.
    ///
    /// Example: `unseen review approve out-3b9e77c1d2 --reason "DP aggregates over public districts" --token "$REVIEWER_TOKEN"`
    Approve {
        /// The output to approve.
        output: String,
        /// Why, in words; recorded in the ledger.
        #[arg(long)]
        reason: String,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Reject an output.
    ///
    /// Example: `unseen review reject out-3b9e77c1d2 --reason "groups too small to be useful" --token "$REVIEWER_TOKEN"`
    Reject {
        /// The output to reject.
        output: String,
        /// Why, in words; recorded in the ledger.
        #[arg(long)]
        reason: String,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Debug, Subcommand)]
pub enum BudgetCommand {
    /// Set the total epsilon of a dataset or a developer (every grant over
    /// that dataset, or of that developer, draws from it too).
    ///
    /// Example: `unseen budget set --dataset residents --epsilon 20 --as wang.min`
    Set {
        #[arg(
            long,
            conflicts_with = "developer",
            required_unless_present = "developer"
        )]
        /// Set the budget of this dataset's layer (across all its grants).
        dataset: Option<String>,
        /// Set the budget of this developer's layer (across their grants).
        #[arg(long)]
        developer: Option<String>,
        /// Total epsilon of the layer.
        #[arg(long)]
        epsilon: f64,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Epsilon spent and left on a grant.
    ///
    /// Example: `unseen budget show --grant grant-5e1f0a9c3b --json --token "$UNSEEN_TOKEN"`
    Show {
        /// The grant whose budget to show.
        #[arg(long)]
        grant: String,
        /// Print the result as JSON.
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
    ///
    /// Example: `unseen ledger public-key --out ledger.pub`
    PublicKey {
        /// Write the key to this file instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Print the current signed checkpoint (a C2SP signed note), checked
    /// with the public key first; save it to check proofs against, or to
    /// pass to `ledger verify --since` later.
    ///
    /// Example: `unseen ledger checkpoint --public-key ledger.pub > checkpoint.saved`
    Checkpoint {
        /// The ledger's public key file (default: the data directory's ledger.pub).
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Print an inclusion proof of entry INDEX (or, with --consistency OLD, a
    /// consistency proof) against the current signed tree, as JSON.
    ///
    /// Example: `unseen ledger proof --index 42 --public-key ledger.pub > proof.json`
    Proof {
        /// Entry to prove included.
        #[arg(long, required_unless_present = "consistency")]
        index: Option<u64>,
        /// Prove that the tree of this many entries is a prefix of the current one.
        #[arg(long, conflicts_with = "index")]
        consistency: Option<u64>,
        /// The ledger's public key file (default: the data directory's ledger.pub).
        #[arg(long)]
        public_key: Option<PathBuf>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Check a proof without the ledger; with --checkpoint and --public-key,
    /// also that its root is the signed one.
    ///
    /// Example: `unseen ledger check-proof proof.json --checkpoint checkpoint.saved --public-key ledger.pub`
    CheckProof {
        /// The proof file (as `ledger proof` printed it).
        file: PathBuf,
        /// A signed checkpoint the proof's root must match.
        #[arg(long, requires = "public_key")]
        checkpoint: Option<PathBuf>,
        /// The ledger's public key file, to check the checkpoint's signature.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write entries [FROM, TO) with the signed checkpoint and proofs to one
    /// JSON file for an outside auditor.
    ///
    /// Example: `unseen ledger export --from 0 --to 1000 --out segment.json --public-key ledger.pub`
    Export {
        /// First entry to export.
        #[arg(long)]
        from: u64,
        /// The entry after the last one to export.
        #[arg(long)]
        to: u64,
        /// File to write the segment to.
        #[arg(long)]
        out: PathBuf,
        /// The ledger's public key file (default: the data directory's ledger.pub).
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Verify an exported segment with only the public key.
    ///
    /// Example: `unseen ledger verify-segment segment.json --public-key ledger.pub`
    VerifySegment {
        /// The segment file (as `ledger export` wrote it).
        file: PathBuf,
        /// The ledger's public key file, as `ledger public-key --out` wrote it.
        #[arg(long)]
        public_key: PathBuf,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Read-only SQL over the verified ledger: a table `entries` with the entry
    /// fields (index, prev, time, kind, actor, body) and one column per body field.
    ///
    /// Example: `unseen ledger query "SELECT kind, COUNT(*) AS n FROM entries GROUP BY kind" --public-key ledger.pub`
    Query {
        /// A read-only SQL statement over the table `entries`.
        sql: String,
        /// The ledger's public key file (default: the data directory's ledger.pub).
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Print the result as JSON.
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
    ///
    /// Example: `unseen ledger recover --as wang.min`
    Recover {
        /// The admin recovering (recorded as the entry's actor).
        #[arg(long = "as")]
        actor: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Submit the current checkpoint to a witness with a consistency proof
    /// from the one it co-signed last; keep its co-signature beside the
    /// ledger. Fails loudly if the witness sees a fork.
    ///
    /// Example: `unseen ledger witness --url http://witness.example:8788 --witness-key "$WITNESS_VKEY"`
    Witness {
        /// The witness's URL, e.g. http://witness.example:8788.
        #[arg(long)]
        url: String,
        /// The witness's verifier key, as `unseen witness init` printed it.
        #[arg(long)]
        witness_key: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Compare the store with what the ledger implies: budgets at every
    /// layer (spent and total), each grant's runs and downloads, job
    /// states, review decisions and releases. Prints every difference and
    /// fails if there is any. Admins and auditors.
    ///
    /// Example: `unseen ledger reconcile --as wang.min`
    Reconcile {
        /// The admin or auditor checking (an auditor needs --token).
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Verify the ledger offline with only the public key.
    ///
    /// Example: `unseen ledger verify --public-key ledger.pub --since checkpoint.saved`
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
        /// Print the result as JSON.
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
    (1, Some(format!("error: {}", said_once(error))))
}

/// An error with its causes, each said once: a cause whose text its
/// outer error already includes (`invalid grant: {0}`) is not repeated.
pub fn said_once(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let said = cause.to_string();
        if text.contains(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

/// Parses `args` (including the program name) and runs the command, writing
/// everything a user reads to `out`.
pub fn run(args: &[String], out: &mut dyn Write) -> Result<()> {
    let parsed = definition()
        .try_get_matches_from(args)
        .and_then(|matches| <Cli as clap::FromArgMatches>::from_arg_matches(&matches));
    let cli = match parsed {
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
    let server = match &cli.remote.server {
        Some(server) => {
            let token = cli.remote.token.as_deref().ok_or_else(|| {
                anyhow::anyhow!("--server needs --token TOKEN (or UNSEEN_TOKEN) to say who you are")
            })?;
            let client = match &cli.remote.ca_cert {
                Some(ca) => crate::client::Client::with_ca(server, Some(token), ca)?,
                None => crate::client::Client::new(server, Some(token)),
            };
            match over_server(&cli.command) {
                OverServer::Backend => Some(client),
                OverServer::Audit => return remote_audit(&cli.command, &client, out),
                OverServer::LocalFiles => None,
                OverServer::No => bail!(
                    "this command works on a data directory and is not available over --server; run it where the data directory is, without --server"
                ),
            }
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(crate::QUERY_THREAD_STACK)
        .enable_all()
        .build()?;
    let session = Session {
        token: cli.remote.token.as_deref(),
        server,
        runtime: &runtime,
    };
    let result = execute(cli.command, &session, out);
    // Work a stopped server abandoned (already cancelled and recorded as
    // ended) must not hold the process past its grace period.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    result
}

/// How a command reaches the service: the token that says who acts, the
/// server when `--server` is given, the runtime for work done here.
pub(crate) struct Session<'a> {
    token: Option<&'a str>,
    server: Option<crate::client::Client>,
    runtime: &'a tokio::runtime::Runtime,
}

impl Session<'_> {
    /// The service as the user acting: the server, or the data directory
    /// `dir` (which must exist) as `--as`/the token say.
    fn backend(&self, dir: &DataDir, actor: Option<String>) -> Result<Box<dyn Backend>> {
        self.connect(dir, actor, open)
    }

    /// [`Session::backend`] that creates the data directory when missing
    /// (only `user add`, for the first admin of a new directory).
    fn backend_creating(&self, dir: &DataDir, actor: Option<String>) -> Result<Box<dyn Backend>> {
        self.connect(dir, actor, open_or_create)
    }

    fn connect(
        &self,
        dir: &DataDir,
        actor: Option<String>,
        open: fn(&DataDir) -> Result<Arc<Domain>>,
    ) -> Result<Box<dyn Backend>> {
        if let Some(client) = &self.server {
            return Ok(Box::new(crate::backend::Remote::new(client.clone())));
        }
        let domain = open(dir)?;
        // Nobody named is allowed where the operator of the host may act
        // (see `Local`); anyone named must prove it now.
        let actor = match (actor, self.token) {
            (None, None) => Err(who(&domain, None, None)
                .err()
                .map_or_else(String::new, |e| e.to_string())),
            (actor, token) => Ok(who(&domain, actor, token)?),
        };
        Ok(Box::new(Local::new(
            domain,
            actor,
            self.runtime.handle().clone(),
        )))
    }

    /// A local data directory and who acts on it, for the commands that
    /// only run where the data directory is.
    fn open_as(&self, dir: &DataDir, actor: Option<String>) -> Result<(Arc<Domain>, String)> {
        open_as(dir, actor, self.token)
    }
}

/// Where a command runs when `--server` is given.
enum OverServer {
    /// On the server, through [`Backend`].
    Backend,
    /// The server's view of its ledger (`ledger verify` etc.), which
    /// locally reads the files with a trusted key instead.
    Audit,
    /// Here: it reads or writes local files only.
    LocalFiles,
    /// Nowhere: it needs the data directory itself.
    No,
}

fn over_server(command: &Command) -> OverServer {
    match command {
        Command::Query(_)
        | Command::Extract(_)
        | Command::Job(_)
        | Command::Dataset(
            DatasetCommand::Register { .. }
            | DatasetCommand::Import { .. }
            | DatasetCommand::Imports { .. }
            | DatasetCommand::DecideImport { .. }
            | DatasetCommand::List { .. }
            | DatasetCommand::Destroy { .. }
            | DatasetCommand::Marginals { .. },
        )
        | Command::User(_)
        | Command::Grant(_)
        | Command::Application(_)
        | Command::Budget(_)
        | Command::Review(_)
        | Command::Release(ReleaseCommand::Download { .. })
        | Command::Attest(AttestArgs { verify: None, .. })
        | Command::Ledger(LedgerCommand::Reconcile { .. }) => OverServer::Backend,
        Command::Ledger(
            LedgerCommand::Checkpoint { .. }
            | LedgerCommand::Verify { .. }
            | LedgerCommand::Query { .. }
            | LedgerCommand::PublicKey { out: None, .. },
        )
        | Command::Report(ReportCommand::Disclosure { .. }) => OverServer::Audit,
        Command::Completions { .. }
        | Command::Config(_)
        | Command::Man { .. }
        | Command::Demo { .. }
        | Command::Dev(_)
        | Command::Bench(_)
        | Command::Dataset(DatasetCommand::Generate { .. } | DatasetCommand::Manifest { .. })
        | Command::Witness(_)
        | Command::Cluster(ClusterCommand::Scheduler { .. } | ClusterCommand::Executor { .. })
        | Command::Ledger(LedgerCommand::CheckProof { .. } | LedgerCommand::VerifySegment { .. })
        | Command::Release(ReleaseCommand::Verify { .. } | ReleaseCommand::Export { .. })
        | Command::Attest(AttestArgs {
            verify: Some(_), ..
        }) => OverServer::LocalFiles,
        _ => OverServer::No,
    }
}

/// Runs a command against a server. Returns false for commands that only
/// work on local files (they then run locally).
impl GrantIssue {
    /// The grant asked for, locally or over HTTP.
    fn request(&self) -> crate::GrantRequest {
        self.terms.request(&self.developer)
    }
}

impl GrantTerms {
    /// The terms as a grant request for `developer` (empty in an
    /// application: the applicant).
    fn request(&self, developer: &str) -> crate::GrantRequest {
        crate::GrantRequest {
            dataset: self.dataset.clone(),
            join_datasets: self.join_datasets.clone(),
            developer: developer.to_string(),
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

/// Reads and stores UDF modules; their addresses.
fn upload_udfs(backend: &dyn Backend, paths: &[PathBuf]) -> Result<Vec<String>> {
    read_udf_modules(paths)?
        .iter()
        .map(|bytes| backend.upload_module(bytes, ModuleKind::Udf))
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

/// A server's view of its own ledger, for `--server`: checkpoint, verify,
/// query, public key and the disclosure report.
fn remote_audit(
    command: &Command,
    client: &crate::client::Client,
    out: &mut dyn Write,
) -> Result<()> {
    let answer = match command {
        Command::Ledger(LedgerCommand::Checkpoint { json: false, .. }) => {
            let answer: unseen_api::Checkpoint =
                serde_json::from_value(client.get("/v1/ledger/checkpoint")?)
                    .context("the server's checkpoint is malformed")?;
            write!(out, "{}", answer.checkpoint)?;
            return Ok(());
        }
        Command::Ledger(LedgerCommand::Checkpoint { json: true, .. }) => {
            client.get("/v1/ledger/checkpoint")?
        }
        Command::Ledger(LedgerCommand::Verify { .. }) => client.get("/v1/ledger/verify")?,
        Command::Ledger(LedgerCommand::Query { sql, .. }) => client.post(
            "/v1/ledger/query",
            &unseen_api::LedgerQuery { sql: sql.clone() },
        )?,
        Command::Report(ReportCommand::Disclosure { .. }) => {
            client.get("/v1/reports/disclosure")?
        }
        Command::Ledger(LedgerCommand::PublicKey { out: None, .. }) => {
            client.get("/v1/ledger/public-key")?
        }
        _ => bail!("this command does not read a server's ledger"),
    };
    writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
    Ok(())
}

/// Prints what a command did: a sentence for people or, with `--json`,
/// the same facts as one JSON object for scripts.
fn say(
    out: &mut dyn Write,
    json: bool,
    value: &impl serde::Serialize,
    text: impl std::fmt::Display,
) -> Result<()> {
    if json {
        print_json(out, value)?;
    } else {
        writeln!(out, "{text}")?;
    }
    Ok(())
}

/// Prints an answer as one line of JSON (`--json`): the API's response
/// type, so a script reads the same object locally and over `--server`.
fn print_json(out: &mut dyn Write, value: &impl serde::Serialize) -> Result<()> {
    writeln!(out, "{}", serde_json::to_string(value)?)?;
    Ok(())
}

/// Opens an existing data directory. Only `user add` (the first admin of a
/// new directory) creates one: a mistyped `--data-dir` must not leave an
/// empty directory behind and answer as if it were a real one.
fn open(dir: &DataDir) -> Result<Arc<Domain>> {
    let path = dir.path();
    if !Domain::is_data_dir(&path) {
        bail!(
            "{} is not a data directory (it holds no store); check --data-dir or UNSEEN_DATA_DIR, or create one by adding its first admin: `unseen user add --id ID --name NAME --role admin --data-dir {}`",
            path.display(),
            path.display()
        );
    }
    open_or_create(dir)
}

/// Opens an existing data directory and says who is acting (see [`who`]).
fn open_as(
    dir: &DataDir,
    actor: Option<String>,
    token: Option<&str>,
) -> Result<(Arc<Domain>, String)> {
    let domain = open(dir)?;
    let actor = who(&domain, actor, token)?;
    Ok((domain, actor))
}

/// Opens a data directory, creating it when it does not exist.
fn open_or_create(dir: &DataDir) -> Result<Arc<Domain>> {
    let path = dir.path();
    Ok(Arc::new(Domain::open(&path).with_context(|| {
        format!("cannot open data directory {}", path.display())
    })?))
}

/// Runs a command on a local data directory; `token` (from `--token` or
/// `UNSEEN_TOKEN`) is how a non-admin user proves who they are.
fn execute(command: Command, session: &Session, out: &mut dyn Write) -> Result<()> {
    let runtime = session.runtime;
    match command {
        Command::Completions { shell } => {
            // Into memory first: the generator panics on a failed write
            // (a closed pipe); `out` reports it as an error instead.
            let mut script = Vec::new();
            let mut cli = definition();
            clap_complete::generate(shell, &mut cli, "unseen", &mut script);
            out.write_all(&script)?;
            Ok(())
        }
        Command::Man { out: dir } => {
            let written = write_man_pages(&definition(), &dir)?;
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
            engine,
        } => demo::run(
            demo::DemoOptions {
                data_dir,
                rows,
                seed,
                cluster: engine == "ballista",
            },
            runtime,
            out,
        ),
        Command::Query(args) => jobs::query(args, session, out),
        Command::Extract(args) => jobs::extract(args, session, out),
        Command::Serve(args) => serve::serve(args, session, out),
        Command::Config(ConfigCommand::Check { file, json }) => {
            serve::check_config(&file, json, out)
        }
        Command::Witness(command) => crate::witness::run_command(command, runtime, out),
        Command::Trace {
            file,
            actor,
            json,
            dir,
        } => review::trace(&file, actor, json, &dir, session, out),
        Command::Dataset(command) => data::run(command, session, out),
        Command::User(command) => users::run(command, session, out),
        Command::Grant(command) => grants::run(command, session, out),
        Command::Application(command) => applications::run(command, session, out),
        Command::Job(command) => jobs::run(command, session, out),
        Command::Logs(command) => jobs::logs(command, session, out),
        Command::Review(command) => review::run(command, session, out),
        Command::Release(command) => review::release(command, session, out),
        Command::Attest(args) => attest::run(args, session, out),
        Command::Report(command) => review::report(command, out),
        Command::Budget(command) => budget::run(command, session, out),
        Command::Ledger(command) => ledger::run(command, session, out),
        Command::Bench(command) => bench::run(command, session, out),
        Command::Dev(command) => dev::run(command, session, out),
        Command::Cluster(command) => cluster::run(command, session, out),
    }
}

/// What a developer sees of a job, query or extract they ran: exactly
/// what the HTTP API returns (status, the host's reason, spend, and output
/// ids of SQL jobs and extracts), never an output, nor what a guest
/// computed, before a reviewer approves; and what the grant has left.
fn print_developer_outcome(
    out: &mut dyn Write,
    backend: &dyn Backend,
    grant: &str,
    outcome: &unseen_api::DeveloperOutcome,
    json: bool,
) -> Result<()> {
    if json {
        return print_json(out, outcome);
    }
    match &outcome.reason {
        Some(reason) => writeln!(
            out,
            "job {} {}{}: {reason}",
            outcome.job,
            outcome.status,
            outcome
                .stopped_by
                .as_ref()
                .map_or(String::new(), |by| format!(" ({by})"))
        )?,
        None => writeln!(out, "job {} {}", outcome.job, outcome.status)?,
    }
    if let Some(o) = &outcome.outcome {
        writeln!(
            out,
            "  its outcome ({}) and outputs await review: {}",
            o.output,
            outcome
                .withheld
                .as_deref()
                .unwrap_or(crate::backend::WITHHELD)
        )?;
    }
    for o in &outcome.outputs {
        writeln!(
            out,
            "  output {o} is in quarantine for review; a reviewer must approve it before anyone sees it"
        )?;
    }
    let left = backend.grant_budget(grant)?.epsilon_left;
    writeln!(
        out,
        "  epsilon spent {:.3}; the grant has {left:.3} left",
        outcome.epsilon_spent
    )?;
    // An extract's protection (`ExtractPlan` as JSON), when it has one.
    if let Some(p) = outcome.protection.as_ref().filter(|p| !p.is_null()) {
        let names = |key: &str| {
            p[key]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>())
                .unwrap_or_default()
                .join(", ")
        };
        let sensitive = names("sensitive");
        let diverse = if sensitive.is_empty() {
            String::new()
        } else {
            format!(
                ", each with at least l={} distinct values of ({sensitive})",
                p["l"]
            )
        };
        writeln!(
            out,
            "  released only in classes of at least k={} people alike in ({}){diverse}; what was suppressed is for the reviewer",
            p["k"],
            names("identifying"),
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

fn print_job(out: &mut dyn Write, job: &crate::jobs::JobView) -> Result<()> {
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

/// A size in bytes: a number with an optional K, M or G suffix (powers of
/// 1024), at least 1 MiB.
pub(crate) fn parse_bytes(text: &str) -> Result<usize, String> {
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
