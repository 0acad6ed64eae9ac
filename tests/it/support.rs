//! Running CLI commands in-process and capturing everything they print and log.

use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// Everything logged through `tracing` by any test in this binary.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the binary's log filter at its most verbose (TRACE) and records
/// every line it lets through.
pub fn capture_logs() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(|| LogWriter),
            )
            .with(unseen::logging::filter(
                tracing_subscriber::filter::LevelFilter::TRACE,
            ))
            .try_init();
    });
}

/// All log text captured so far.
pub fn logs() -> Vec<u8> {
    LOGS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Tokens the CLI printed (`user add`, `user token`) or a test issued,
/// by (data directory, user).
static TOKENS: Mutex<std::collections::BTreeMap<(String, String), String>> =
    Mutex::new(std::collections::BTreeMap::new());

/// Records `user`'s current token in `data`, for commands that act as them.
pub fn remember_token(data: &str, user: &str, token: &str) {
    TOKENS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((data.to_string(), user.to_string()), token.to_string());
}

/// `user`'s token in `data`, as last printed or remembered.
pub fn token_of(data: &str, user: &str) -> String {
    TOKENS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(data.to_string(), user.to_string()))
        .cloned()
        .unwrap_or_else(|| panic!("no token of `{user}` in {data} was printed"))
}

/// Issues `user` a new token directly through `domain` (as an admin
/// would) and remembers it for later commands.
pub fn rotate(domain: &unseen::Domain, user: &str) -> String {
    let token = domain.rotate_token("admin", user).unwrap();
    remember_token(domain.dir().to_str().unwrap(), user, &token);
    token
}

fn flag<'a>(args: &[&'a str], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| *a == name)
        .and_then(|i| args.get(i + 1))
        .copied()
}

/// Runs `unseen ARGS...` as a user would: a local command acting `--as` a
/// user carries that user's token (`--token`), as local mode requires of
/// everyone but the operator's admin; tokens are the ones the CLI printed.
/// Returns (succeeded, stdout + error text).
pub fn unseen(args: &[&str]) -> (bool, String) {
    let data = flag(args, "--data-dir").unwrap_or_default();
    let token = match flag(args, "--as") {
        Some(user) if !args.contains(&"--token") && !args.contains(&"--server") => TOKENS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(data.to_string(), user.to_string()))
            .cloned(),
        _ => None,
    };
    let mut argv: Vec<&str> = args.to_vec();
    if let Some(token) = &token {
        argv.extend(["--token", token.as_str()]);
    }
    let (ok, text) = unseen_exact(&argv);
    let printed_for = match args {
        ["user", "add", ..] => flag(args, "--id"),
        ["user", "token", id, ..] => Some(*id),
        _ => None,
    };
    if let (true, Some(user)) = (ok, printed_for) {
        let token = match serde_json::from_str::<serde_json::Value>(text.trim()) {
            Ok(v) => v["token"].as_str().map(str::to_string),
            Err(_) => text
                .lines()
                .find(|l| l.contains("token"))
                .and_then(|l| l.split_whitespace().last())
                .map(str::to_string),
        };
        if let Some(token) = token {
            remember_token(data, user, &token);
        }
    }
    (ok, text)
}

/// Runs `unseen ARGS...` exactly as given (no token added).
pub fn unseen_exact(args: &[&str]) -> (bool, String) {
    let mut argv = vec!["unseen".to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let mut out = Vec::new();
    let result = unseen::cli::run(&argv, &mut out);
    let mut text = String::from_utf8(out).expect("CLI output is UTF-8");
    let ok = match result {
        Ok(()) => true,
        Err(e) => {
            text.push_str(&format!("error: {}\n", unseen::cli::said_once(&e)));
            false
        }
    };
    (ok, text)
}

/// The outputs of `job` as a reviewer reads them: a developer sees a
/// module job's outputs only once a reviewer decided them.
pub fn job_outputs(data: &str, job: &str) -> Vec<String> {
    let view: serde_json::Value = serde_json::from_str(&ok(&[
        "job",
        "status",
        job,
        "--json",
        "--as",
        "rev",
        "--data-dir",
        data,
    ]))
    .expect("job status is JSON");
    view["job"]["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|o| o.as_str().expect("output id").to_string())
        .collect()
}

/// Runs a command that must succeed.
pub fn ok(args: &[&str]) -> String {
    let (ok, text) = unseen(args);
    assert!(ok, "`unseen {}` failed:\n{text}", args.join(" "));
    text
}

/// Runs a command that must fail.
pub fn fails(args: &[&str]) -> String {
    let (ok, text) = unseen(args);
    assert!(
        !ok,
        "`unseen {}` should have failed:\n{text}",
        args.join(" ")
    );
    text
}

/// Every file under `dir`, with its bytes.
pub fn all_files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read file");
                found.push((path, bytes));
            }
        }
    }
    found
}

/// True when `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A data directory with `rows` synthetic residents registered, an admin
/// `admin`, a developer `dev` and a reviewer `rev`.
pub fn residents_dir(rows: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let parquet = dir.path().join("r.parquet");
    ok(&[
        "dataset",
        "generate",
        "residents",
        "--rows",
        rows,
        "--out",
        parquet.to_str().unwrap(),
    ]);
    let data = residents_dir_from(dir.path(), &parquet);
    (dir, data)
}

/// A data directory `d` under `dir` with the residents of `parquet`
/// registered, an admin `admin`, a developer `dev` and a reviewer `rev`;
/// its path.
pub fn residents_dir_from(dir: &Path, parquet: &Path) -> String {
    let data = dir.join("d").to_str().unwrap().to_string();
    let manifest = dir.join("r.toml");
    std::fs::write(&manifest, ok(&["dataset", "manifest", "residents"])).unwrap();
    ok(&[
        "user",
        "add",
        "--id",
        "admin",
        "--name",
        "A",
        "--role",
        "admin",
        "--data-dir",
        &data,
    ]);
    ok(&[
        "user",
        "add",
        "--id",
        "dev",
        "--name",
        "D",
        "--role",
        "developer",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    ok(&[
        "user",
        "add",
        "--id",
        "rev",
        "--name",
        "R",
        "--role",
        "reviewer",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    ok(&[
        "dataset",
        "register",
        "--name",
        "residents",
        "--parquet",
        parquet.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    data
}

/// Issues a grant over `residents` to `dev` with total `epsilon` and 1 per
/// query; `extra` flags are passed on (e.g. `--allow-extracts`).
pub fn issue_grant(data: &str, epsilon: &str, extra: &[&str]) -> String {
    issue_grant_on(data, "residents", epsilon, extra)
}

/// Issues a grant over `dataset` to `dev` with total `epsilon` and 1 per
/// query; `extra` flags are passed on (e.g. `--join residents`).
pub fn issue_grant_on(data: &str, dataset: &str, epsilon: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "grant",
        "issue",
        "--dataset",
        dataset,
        "--developer",
        "dev",
        "--purpose",
        "t",
        "--epsilon",
        epsilon,
        "--query-epsilon",
        "1",
        "--as",
        "admin",
        "--json",
        "--data-dir",
        data,
    ];
    args.extend_from_slice(extra);
    let issued = ok(&args);
    serde_json::from_str::<serde_json::Value>(&issued).unwrap()["grant"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `unseen query --json` as `dev` under `grant`, with `extra` flags
/// (`--udf`, `--input`, ...): whether it succeeded, and its output.
pub fn query_as_dev(data: &str, grant: &str, extra: &[&str], sql: &str) -> (bool, String) {
    let mut args = vec!["query", "--grant", grant];
    args.extend_from_slice(extra);
    args.extend(["--json", "--as", "dev", "--data-dir", data, sql]);
    unseen(&args)
}

/// Generates `rows` rows of the built-in dataset `name` (drawing on
/// `related` rows of its parent) and registers it in `data` as admin.
pub fn register_generated(dir: &Path, data: &str, name: &str, rows: &str, related: &str) {
    let parquet = dir.join(format!("{name}.parquet"));
    let manifest = dir.join(format!("{name}.toml"));
    ok(&[
        "dataset",
        "generate",
        name,
        "--rows",
        rows,
        "--related-rows",
        related,
        "--out",
        parquet.to_str().unwrap(),
    ]);
    std::fs::write(&manifest, ok(&["dataset", "manifest", name])).unwrap();
    ok(&[
        "dataset",
        "register",
        "--name",
        name,
        "--parquet",
        parquet.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--as",
        "admin",
        "--data-dir",
        data,
    ]);
}

/// A guest module built from `guests/` for wasm32 (built once per test run).
pub fn guest(crate_name: &str) -> Vec<u8> {
    use std::path::PathBuf;
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guests-target");
        unseen_guest_build::build(&target).unwrap_or_else(|e| panic!("{e}"))
    });
    let path = unseen_guest_build::wasm_path(dir, crate_name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A server on a loopback port over an opened data directory; stopped on drop.
pub struct TestServer {
    pub base: String,
    pub domain: std::sync::Arc<unseen::Domain>,
    /// The ledger's size once the domain was open, before the server
    /// appended anything (its `service.started` entry first).
    pub ledger_at_open: u64,
    _server: unseen::server::Background,
}

impl TestServer {
    pub fn start(data: &str, max_running_jobs: usize) -> TestServer {
        TestServer::start_with(
            data,
            unseen::server::ServerOptions {
                max_running_jobs,
                ..Default::default()
            },
        )
    }

    /// A server with these options (connection limits, job slots).
    pub fn start_with(data: &str, options: unseen::server::ServerOptions) -> TestServer {
        let domain = std::sync::Arc::new(unseen::Domain::open(Path::new(data)).unwrap());
        let ledger_at_open = domain.ledger_head().unwrap().size;
        let server = unseen::server::Background::start(std::sync::Arc::clone(&domain), options)
            .expect("start the server");
        let base = server.url();
        // The port listens before the server records its start in the
        // ledger and accepts; one answered request means both are done, so
        // a test that reads the ledger next sees the `service.started` entry.
        let health = unseen::client::Client::new(&base, None).get("/v1/health");
        assert!(health.is_ok(), "the server does not answer: {health:?}");
        TestServer {
            base,
            domain,
            ledger_at_open,
            _server: server,
        }
    }

    /// A client acting with `token`.
    pub fn client(&self, token: &str) -> unseen::client::Client {
        unseen::client::Client::new(&self.base, Some(token))
    }
}

/// The entries of the ledger in `ledger`, as written.
pub fn entries(ledger: &Path) -> Vec<unseen_ledger::Entry> {
    std::fs::read(ledger.join("entries.jsonl"))
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| unseen_ledger::Entry::parse_line(l).unwrap())
        .collect()
}

/// The entries as canonical lines, entry `at` changed by `edit` and every
/// later `prev` recomputed.
pub fn rechained(
    entries: &[unseen_ledger::Entry],
    at: usize,
    edit: impl Fn(&mut unseen_ledger::EntryDraft),
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev: unseen_ledger::Hash = [0; 32];
    for (i, e) in entries.iter().enumerate() {
        let mut d = unseen_ledger::EntryDraft {
            kind: e.kind.clone(),
            actor: e.actor.clone(),
            time: e.time.clone(),
            body: e.body.clone(),
        };
        if i == at {
            edit(&mut d);
        }
        let e = unseen_ledger::Entry::from_draft(i as u64, &prev, d);
        prev = e.hash();
        out.extend_from_slice(&e.canonical_bytes());
        out.push(b'\n');
    }
    out
}

/// Runs the ignored test `name` of this binary in a process of its own,
/// with `var` set to `value`; its stdout is piped, its stderr dropped.
pub fn child_test(name: &str, var: &str, value: &std::ffi::OsStr) -> std::process::Child {
    child_test_command(name, var, value)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// The command [`child_test`] runs, for a caller that spawns it itself.
pub fn child_test_command(name: &str, var: &str, value: &std::ffi::OsStr) -> std::process::Command {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(var, value);
    command
}
