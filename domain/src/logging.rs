//! Logging: the filter (only Unseen's own crates may log below WARN) and
//! the format of log lines (`UNSEEN_LOG_FORMAT`: `text`, the default, or
//! `json`, one object per line for log shippers; colour only when the
//! output is a terminal, so redirected logs hold no escape codes).
//!
//! Dependencies log what they see, and the engine sees raw data: at TRACE,
//! DataFusion's Parquet pruning prints decrypted page statistics (minimum
//! and maximum values of prohibited columns). So whatever level is asked
//! for applies to Unseen's crates only; everything else is capped at WARN.

use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;

/// Crates whose log lines Unseen writes itself and keeps free of raw values.
const OWN_TARGETS: &[&str] = &[
    "unseen",
    "unseen_core",
    "unseen_cluster",
    "unseen_policy",
    "unseen_sandbox",
    "unseen_ledger",
    "unseen_datasets",
];

/// A filter at `level` for Unseen's crates and WARN for every other crate.
pub fn filter(level: LevelFilter) -> Targets {
    OWN_TARGETS.iter().fold(
        Targets::new().with_default(LevelFilter::WARN.min(level)),
        |t, target| t.with_target(*target, level),
    )
}

/// Reads the level from `UNSEEN_LOG` (error, warn, info, debug, trace).
/// Without it: `info` for `serve` (its access log and events are what an
/// operator ships), `warn` for every other command.
pub fn level_from(args: &[String]) -> LevelFilter {
    std::env::var("UNSEEN_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if args.iter().skip(1).any(|a| a == "serve") {
            LevelFilter::INFO
        } else {
            LevelFilter::WARN
        })
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: time, level, target, fields.
    Json,
}

/// Reads the format from `--log-format` in `args` (as `--log-format X` or
/// `--log-format=X`), else `UNSEEN_LOG_FORMAT`, else `log_format` in the
/// `--config` file (`text` or `json`; default text), before the command
/// line is parsed: logging starts first. A wrong value is an error that
/// names the choices.
pub fn format_from(args: &[String]) -> Result<LogFormat, String> {
    let flag = args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--log-format=")
            .map(str::to_string)
            .or_else(|| (a == "--log-format").then(|| args.get(i + 1).cloned().unwrap_or_default()))
    });
    let from_file = || {
        let path = crate::config::config_path(args)
            .or_else(|| std::env::var_os("UNSEEN_CONFIG").map(std::path::PathBuf::from))?;
        // A file with mistakes is reported by the command that reads it.
        crate::config::ServeConfig::load(&path).ok()?.log_format
    };
    let (value, source) = match (flag, std::env::var("UNSEEN_LOG_FORMAT").ok()) {
        (Some(v), _) => (Some(v), "--log-format"),
        (None, Some(v)) => (Some(v), "UNSEEN_LOG_FORMAT"),
        (None, None) => (from_file(), "log_format in the configuration file"),
    };
    match value.as_deref() {
        None | Some("") | Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => Err(format!("{source} is `{other}`; use `text` or `json`")),
    }
}

/// The layer that writes log lines to `writer` in `format`, with colour
/// only if `ansi` (say, when the output is a terminal).
pub fn layer<S, W>(format: LogFormat, ansi: bool, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_ansi(false)
            .with_writer(writer)
            .boxed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// A writer into shared memory.
    #[derive(Clone, Default)]
    struct Memory(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Memory {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Memory {
        type Writer = Memory;
        fn make_writer(&'w self) -> Memory {
            self.clone()
        }
    }

    fn written(format: LogFormat, ansi: bool) -> String {
        let memory = Memory::default();
        let subscriber = tracing_subscriber::registry()
            .with(layer(format, ansi, memory.clone()))
            .with(filter(LevelFilter::INFO));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "unseen", job = "job-1", "job ended");
        });
        String::from_utf8(memory.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn the_flag_wins_over_the_environment_and_a_wrong_value_is_named() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            format_from(&args(&["unseen", "--log-format", "json", "serve"])),
            Ok(LogFormat::Json)
        );
        assert_eq!(
            format_from(&args(&["unseen", "serve", "--log-format=text"])),
            Ok(LogFormat::Text)
        );
        let wrong = format_from(&args(&["unseen", "--log-format", "xml"])).unwrap_err();
        assert!(wrong.contains("--log-format is `xml`"), "{wrong}");
    }

    #[test]
    fn text_has_colour_only_when_asked_and_json_is_one_object_per_line() {
        let plain = written(LogFormat::Text, false);
        assert!(
            plain.contains("job ended") && plain.contains("job-1"),
            "{plain}"
        );
        assert!(!plain.contains('\u{1b}'), "escape codes in {plain:?}");
        let coloured = written(LogFormat::Text, true);
        assert!(coloured.contains('\u{1b}'), "no colour in {coloured:?}");
        let json = written(LogFormat::Json, true);
        let lines: Vec<&str> = json.lines().collect();
        assert_eq!(lines.len(), 1, "{json}");
        let event: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(event["level"], "INFO", "{event}");
        assert_eq!(event["fields"]["message"], "job ended", "{event}");
        assert_eq!(event["fields"]["job"], "job-1", "{event}");
        assert!(!json.contains('\u{1b}'), "escape codes in {json:?}");
    }
}
