//! The service's configuration file (`unseen serve --config unseen.toml`),
//! checked as a whole: every mistake is reported at once, with the key it
//! is under and what would be right.
//!
//! What decides a setting, first to last: the command-line flag, its
//! environment variable (`UNSEEN_LISTEN`, `UNSEEN_MAX_JOBS`, ...), the
//! file, the built-in default.
//!
//! ```toml
//! data_dir = "/var/lib/unseen"
//! listen = "127.0.0.1:8787"
//! log_format = "json"        # text | json
//! engine = "datafusion"     # or "ballista://HOST:PORT", a cluster's scheduler
//!
//! [limits]
//! max_jobs = 4
//! max_connections = 1024
//! max_connections_per_client = 256
//! header_timeout = 10        # seconds
//! body_timeout = 120         # seconds
//! query_memory = "512M"
//! query_timeout = 60         # seconds
//! max_join_rows = 50000000
//! grace_period = 30          # seconds
//! timing_quantum_ms = 500
//!
//! [tls]                      # HTTPS; without it only loopback
//! cert = "/etc/unseen/tls/cert.pem"   # unless insecure_listen = true
//! key = "/etc/unseen/tls/key.pem"
//!
//! [logs]
//! retention_days = 183      # at least; serve then clears older job logs daily
//!
//! [witness]
//! url = "https://witness.audit.example"
//! key = "witness.audit.example+..."
//! every = 60                 # seconds
//! ```

use std::path::{Path, PathBuf};

use toml::Value;

/// The settings a configuration file may hold; `None` where it is silent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServeConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub log_format: Option<String>,
    pub engine: Option<String>,
    pub max_jobs: Option<u64>,
    pub max_connections: Option<u64>,
    pub max_connections_per_client: Option<u64>,
    pub header_timeout: Option<u64>,
    pub body_timeout: Option<u64>,
    pub query_memory: Option<usize>,
    pub query_timeout: Option<u64>,
    pub max_join_rows: Option<u64>,
    pub grace_period: Option<u64>,
    pub timing_quantum_ms: Option<u64>,
    pub witness_url: Option<String>,
    pub witness_key: Option<String>,
    pub witness_every: Option<u64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub insecure_listen: Option<bool>,
    pub log_retention_days: Option<u64>,
}

/// Every mistake in a configuration file, one per line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path} has {} mistake(s):\n{}", .mistakes.len(), .mistakes.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors {
    pub path: String,
    pub mistakes: Vec<String>,
}

/// Where a whole number setting goes in [`ServeConfig`].
type Slot = fn(&mut ServeConfig) -> &mut Option<u64>;

/// A whole number key: (section, key, least, most, where it goes).
const NUMBERS: &[(&str, &str, u64, u64, Slot)] = &[
    ("limits", "max_jobs", 1, 1024, |c| &mut c.max_jobs),
    ("limits", "max_connections", 1, u32::MAX as u64, |c| {
        &mut c.max_connections
    }),
    (
        "limits",
        "max_connections_per_client",
        1,
        u32::MAX as u64,
        |c| &mut c.max_connections_per_client,
    ),
    ("limits", "header_timeout", 1, 3600, |c| {
        &mut c.header_timeout
    }),
    ("limits", "body_timeout", 1, 86_400, |c| &mut c.body_timeout),
    ("limits", "query_timeout", 1, 86_400, |c| {
        &mut c.query_timeout
    }),
    ("limits", "max_join_rows", 1, u64::MAX, |c| {
        &mut c.max_join_rows
    }),
    ("limits", "grace_period", 0, 3600, |c| &mut c.grace_period),
    ("limits", "timing_quantum_ms", 0, 60_000, |c| {
        &mut c.timing_quantum_ms
    }),
    ("witness", "every", 1, 86_400, |c| &mut c.witness_every),
    (
        "logs",
        "retention_days",
        unseen_core::jobs::MIN_LOG_RETENTION_DAYS as u64,
        36_500,
        |c| &mut c.log_retention_days,
    ),
];

/// Keys of text: (section, key).
const TEXTS: &[(&str, &str)] = &[
    ("", "data_dir"),
    ("", "listen"),
    ("", "log_format"),
    ("", "engine"),
    ("limits", "query_memory"),
    ("witness", "url"),
    ("witness", "key"),
    ("tls", "cert"),
    ("tls", "key"),
];

impl ServeConfig {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<ServeConfig, ConfigErrors> {
        let errors = |mistakes| ConfigErrors {
            path: path.display().to_string(),
            mistakes,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| errors(vec![format!("cannot be read: {e}")]))?;
        ServeConfig::parse(&text).map_err(errors)
    }

    /// Parses and checks a file's text; every mistake, or the settings.
    pub fn parse(text: &str) -> Result<ServeConfig, Vec<String>> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| vec![format!("is not TOML: {}", e.message())])?;
        let mut mistakes = Vec::new();
        let known = |section: &str, key: &str| {
            NUMBERS.iter().any(|(s, k, ..)| *s == section && *k == key)
                || TEXTS.iter().any(|(s, k)| *s == section && *k == key)
        };
        for (key, value) in &table {
            match value {
                Value::Table(inner) if matches!(key.as_str(), "limits" | "logs" | "witness" | "tls") => {
                    for inner_key in inner.keys() {
                        if !known(key, inner_key) {
                            mistakes.push(format!(
                                "`{key}.{inner_key}` is not a setting; see `unseen serve --help`"
                            ));
                        }
                    }
                }
                _ if known("", key) || key == "insecure_listen" => {}
                _ => mistakes.push(format!(
                    "`{key}` is not a setting (settings: data_dir, listen, log_format, engine, insecure_listen, [limits], [logs], [witness], [tls])"
                )),
            }
        }
        let get = |section: &str, key: &str| -> Option<&Value> {
            if section.is_empty() {
                table.get(key)
            } else {
                table.get(section)?.as_table()?.get(key)
            }
        };
        let name = |section: &str, key: &str| {
            if section.is_empty() {
                format!("`{key}`")
            } else {
                format!("`{section}.{key}`")
            }
        };
        let text_of = |mistakes: &mut Vec<String>, section: &str, key: &str| -> Option<String> {
            match get(section, key)? {
                Value::String(s) => Some(s.clone()),
                other => {
                    mistakes.push(format!(
                        "{} is {}, not text; quote it",
                        name(section, key),
                        other.type_str()
                    ));
                    None
                }
            }
        };
        let mut config = ServeConfig {
            data_dir: text_of(&mut mistakes, "", "data_dir").map(PathBuf::from),
            listen: text_of(&mut mistakes, "", "listen"),
            log_format: text_of(&mut mistakes, "", "log_format"),
            engine: text_of(&mut mistakes, "", "engine"),
            witness_url: text_of(&mut mistakes, "witness", "url"),
            witness_key: text_of(&mut mistakes, "witness", "key"),
            tls_cert: text_of(&mut mistakes, "tls", "cert").map(PathBuf::from),
            tls_key: text_of(&mut mistakes, "tls", "key").map(PathBuf::from),
            ..ServeConfig::default()
        };
        match table.get("insecure_listen") {
            None => {}
            Some(Value::Boolean(b)) => config.insecure_listen = Some(*b),
            Some(other) => mistakes.push(format!(
                "`insecure_listen` is {}, not true or false",
                other.type_str()
            )),
        }
        if config.tls_cert.is_some() != config.tls_key.is_some() {
            mistakes.push("`tls.cert` and `tls.key` go together; give both or neither".into());
        }
        let memory = text_of(&mut mistakes, "limits", "query_memory");
        if let Some(listen) = &config.listen
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            mistakes.push(format!(
                "`listen` is `{listen}`, not an address like 127.0.0.1:8787"
            ));
        }
        if let Some(format) = &config.log_format
            && !matches!(format.as_str(), "text" | "json")
        {
            mistakes.push(format!("`log_format` is `{format}`; use `text` or `json`"));
        }
        if let Some(engine) = &config.engine
            && let Err(e) = crate::cluster_engine::Engine::parse(engine)
        {
            mistakes.push(format!("`engine`: {e}"));
        }
        if config.witness_url.is_some() != config.witness_key.is_some() {
            mistakes
                .push("`witness.url` and `witness.key` go together; give both or neither".into());
        }
        if let Some(memory) = memory {
            match crate::cli::parse_bytes(&memory) {
                Ok(bytes) => config.query_memory = Some(bytes),
                Err(e) => mistakes.push(format!("`limits.query_memory`: {e}")),
            }
        }
        for &(section, key, least, most, slot) in NUMBERS {
            let Some(value) = get(section, key) else {
                continue;
            };
            let number = match value {
                Value::Integer(n) => u64::try_from(*n)
                    .ok()
                    .filter(|n| (least..=most).contains(n)),
                other => {
                    mistakes.push(format!(
                        "{} is {}, not a whole number",
                        name(section, key),
                        other.type_str()
                    ));
                    continue;
                }
            };
            let Some(number) = number else {
                mistakes.push(format!(
                    "{} is {value}, outside {least}..={most}",
                    name(section, key)
                ));
                continue;
            };
            *slot(&mut config) = Some(number);
        }
        if mistakes.is_empty() {
            Ok(config)
        } else {
            Err(mistakes)
        }
    }
}

/// The value after `--config` (or in `--config=`) in raw arguments: for
/// settings needed before the command line is parsed (the log format).
pub fn config_path(args: &[String]) -> Option<PathBuf> {
    args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--config=")
            .map(PathBuf::from)
            .or_else(|| (a == "--config").then(|| args.get(i + 1).map(PathBuf::from))?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_file_gives_every_setting() {
        let config = ServeConfig::parse(
            r#"
            data_dir = "/var/lib/unseen"
            listen = "0.0.0.0:8443"
            log_format = "json"
            engine = "datafusion"
            [limits]
            max_jobs = 8
            query_memory = "2G"
            grace_period = 0
            [witness]
            url = "http://127.0.0.1:9000"
            key = "w+abc"
            every = 30
            "#,
        )
        .unwrap();
        assert_eq!(config.listen.as_deref(), Some("0.0.0.0:8443"));
        assert_eq!(config.max_jobs, Some(8));
        assert_eq!(config.query_memory, Some(2 << 30));
        assert_eq!(config.grace_period, Some(0));
        assert_eq!(config.witness_every, Some(30));
        assert_eq!(config.header_timeout, None);
    }

    #[test]
    fn every_mistake_is_reported_at_once() {
        let mistakes = ServeConfig::parse(
            r#"
            listen = "everywhere"
            log_format = "xml"
            engine = "spark"
            colour = true
            [limits]
            max_jobs = 0
            header_timeout = "ten"
            query_memory = "lots"
            speed = 3
            [witness]
            url = "http://127.0.0.1:9000"
            "#,
        )
        .unwrap_err();
        let all = mistakes.join("\n");
        for expected in [
            "`listen` is `everywhere`",
            "`log_format` is `xml`",
            "`engine`: `spark` is not an engine",
            "`colour` is not a setting",
            "`limits.max_jobs` is 0, outside 1..=1024",
            "`limits.header_timeout` is string, not a whole number",
            "`limits.query_memory`",
            "`limits.speed` is not a setting",
            "`witness.url` and `witness.key` go together",
        ] {
            assert!(all.contains(expected), "missing `{expected}` in:\n{all}");
        }
        assert_eq!(mistakes.len(), 9, "{all}");
    }

    #[test]
    fn a_file_that_is_not_toml_says_so() {
        let mistakes = ServeConfig::parse("listen = ").unwrap_err();
        assert!(mistakes[0].starts_with("is not TOML"), "{mistakes:?}");
    }
}
