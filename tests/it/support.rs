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
            .with(tracing_subscriber::fmt::layer().with_writer(|| LogWriter))
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

/// Runs `unseen ARGS...`; returns (succeeded, stdout + error text).
pub fn unseen(args: &[&str]) -> (bool, String) {
    let mut argv = vec!["unseen".to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let mut out = Vec::new();
    let result = unseen::cli::run(&argv, &mut out);
    let mut text = String::from_utf8(out).expect("CLI output is UTF-8");
    let ok = match result {
        Ok(()) => true,
        Err(e) => {
            text.push_str(&format!("error: {e:#}\n"));
            false
        }
    };
    (ok, text)
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
