//! Command-line conventions: usage errors, `--version`, completions, pipes.

use crate::support::unseen_exact;

fn run(args: &[&str], out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let mut argv = vec!["unseen".to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    unseen::cli::run(&argv, out)
}

/// A reader that has gone away, as `head` does once it has its lines.
struct ClosedPipe;

impl std::io::Write for ClosedPipe {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::BrokenPipe.into())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_usage_mistake_exits_2_with_clap_s_own_message_once() {
    for args in [
        &["completions", "nosh"][..],
        &["grant", "issue", "--epsilon", "lots"],
        &["no-such-command"],
    ] {
        let error = run(args, &mut Vec::new()).unwrap_err();
        let (code, message) = unseen::cli::failure(&error);
        let message = message.unwrap();
        assert_eq!(code, 2, "{args:?}: {message}");
        assert!(message.starts_with("error: "), "{message}");
        assert!(!message.contains("error: error:"), "{message}");
    }
    // Help and the version are not mistakes.
    let (ok, help) = unseen_exact(&["--help"]);
    assert!(ok && help.contains("Usage: unseen"), "{help}");
}

#[test]
fn version_names_the_engines_it_was_built_with() {
    let (ok, text) = unseen_exact(&["--version"]);
    assert!(ok, "{text}");
    // The commit: 12 hex digits, or `unknown` when built outside a git
    // checkout.
    let commit = text
        .split("(commit ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no commit in {text}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{text}"
    );
    let lock = std::fs::read_to_string(
        std::path::PathBuf::from(
            std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
        )
        .join("../Cargo.lock"),
    )
    .unwrap();
    for (engine, package) in [
        ("wasmtime", "wasmtime"),
        ("DataFusion", "datafusion"),
        ("OpenDP", "opendp"),
    ] {
        let pinned = lock
            .split("[[package]]")
            .find(|b| {
                b.lines()
                    .any(|l| l.trim() == format!("name = \"{package}\""))
            })
            .and_then(|b| b.lines().find_map(|l| l.trim().strip_prefix("version = ")))
            .unwrap()
            .trim_matches('"');
        assert!(text.contains(&format!("{engine} {pinned}")), "{text}");
    }
}

#[test]
fn completions_are_printed_for_each_shell_and_a_closed_pipe_is_quiet() {
    for (shell, marker) in [
        ("bash", "_unseen()"),
        ("zsh", "#compdef unseen"),
        ("fish", "complete -c unseen"),
    ] {
        let (ok, script) = unseen_exact(&["completions", shell]);
        assert!(ok && script.contains(marker), "{shell}: {script:.200}");
        assert!(
            script.contains("grant"),
            "{shell}: subcommands are completed"
        );
    }
    let error = run(&["completions", "bash"], &mut ClosedPipe).unwrap_err();
    assert_eq!(unseen::cli::failure(&error), (0, None));
    // Any other failure says `error:` once and exits 1.
    let error = run(
        &["ledger", "verify", "--data-dir", "/nonexistent/unseen"],
        &mut Vec::new(),
    )
    .unwrap_err();
    let (code, message) = unseen::cli::failure(&error);
    assert_eq!(code, 1);
    assert!(!message.unwrap().contains("error: error:"));
}

#[test]
fn man_pages_are_written_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let (ok, said) = unseen_exact(&["man", "--out", out.to_str().unwrap()]);
    assert!(ok, "{said}");
    let page = |name: &str| {
        std::fs::read_to_string(out.join(format!("{name}.1")))
            .unwrap_or_else(|e| panic!("{name}.1: {e}; wrote {said}"))
    };
    let top = page("unseen");
    assert!(top.starts_with(".ie") || top.contains(".TH"), "{top:.300}");
    assert!(top.contains("grant"), "the top page lists the commands");
    // A nested command has its own page, with its options and example.
    let issue = page("unseen-grant-issue");
    assert!(
        issue.contains("unseen\\-grant\\-issue") || issue.contains("unseen-grant-issue"),
        "{issue:.300}"
    );
    assert!(issue.contains("epsilon"), "{issue:.600}");
    let pages = std::fs::read_dir(&out).unwrap().count();
    assert!(
        said.contains(&format!("wrote {pages} manual pages")),
        "{said}"
    );
    assert!(pages > 40, "{pages} pages");
}

#[test]
fn lists_are_tables_aligned_by_display_width_with_cjk_names() {
    use unicode_width::UnicodeWidthStr;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    crate::support::ok(&[
        "user",
        "add",
        "--id",
        "admin",
        "--name",
        "Admin",
        "--role",
        "admin",
        "--data-dir",
        d,
    ]);
    for (id, name, org, role) in [
        ("zhang", "张三", "市大数据局", "developer"),
        ("li", "李四光", "Health Commission", "reviewer"),
    ] {
        crate::support::ok(&[
            "user",
            "add",
            "--id",
            id,
            "--name",
            name,
            "--org",
            org,
            "--role",
            role,
            "--as",
            "admin",
            "--data-dir",
            d,
        ]);
    }
    let listed = crate::support::ok(&["user", "list", "--as", "admin", "--data-dir", d]);
    let lines: Vec<&str> = listed.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 4, "a header and three users:\n{listed}");
    assert!(lines[0].starts_with("USER"), "{listed}");
    // Where each column starts, in display columns: the same on every line.
    let starts = |line: &str, words: &[&str]| -> Vec<usize> {
        // After the first column (a user id may read like a role).
        let mut from = line.find(' ').unwrap_or(0);
        words
            .iter()
            .map(|w| {
                let at = from
                    + line[from..]
                        .find(w)
                        .unwrap_or_else(|| panic!("{w} in {line}"));
                from = at + w.len();
                line[..at].width()
            })
            .collect()
    };
    let header = starts(lines[0], &["ROLE", "NAME", "ORG", "STATE"]);
    for line in &lines[1..] {
        let words = match line.split_whitespace().next() {
            Some("admin") => ["admin", "Admin", "", "enabled"],
            Some("zhang") => ["developer", "张三", "市大数据局", "enabled"],
            Some("li") => ["reviewer", "李四光", "Health Commission", "enabled"],
            other => panic!("unexpected row {other:?}: {listed}"),
        };
        let words: Vec<&str> = words.into_iter().filter(|w| !w.is_empty()).collect();
        let got = starts(line, &words);
        let want: Vec<usize> = if words.len() == 3 {
            vec![header[0], header[1], header[3]]
        } else {
            header.clone()
        };
        assert_eq!(
            got, want,
            "misaligned line {line:?} under {:?}\n{listed}",
            lines[0]
        );
    }
}

/// Commands that print no result a script would parse: shell and manual
/// files, the narrated demo, long-running servers, and commands whose
/// output is JSON already.
const NO_JSON_FLAG: &[&str] = &[
    "unseen completions",
    "unseen man",
    "unseen demo",
    "unseen serve",
    "unseen witness serve",
    "unseen cluster scheduler",
    "unseen cluster executor",
    "unseen dataset manifest",
    "unseen dataset marginals",
    "unseen ledger proof",
];

/// Walks the command tree as clap sees it, so that a command added later
/// is held to the same conventions by construction.
fn conventions_missing(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if arg.is_hide_set() || id == "help" || id == "version" {
            continue;
        }
        if arg.get_help().is_none() && arg.get_long_help().is_none() {
            missing.push(format!("{path}: argument `{id}` has no help text"));
        }
    }
    let subcommands: Vec<_> = command
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .collect();
    if subcommands.is_empty() {
        let about = command
            .get_long_about()
            .or(command.get_about())
            .map(|a| a.to_string())
            .unwrap_or_default();
        match about.split_once("Example: `") {
            None => missing.push(format!("{path}: no example in its help")),
            Some((_, rest)) => {
                let example = rest.split('`').next().unwrap_or_default();
                if let Err(e) = example_parses(example) {
                    missing.push(format!(
                        "{path}: its example `{example}` does not parse: {e}"
                    ));
                }
            }
        }
        let has_json = command.get_arguments().any(|a| a.get_id() == "json");
        if !has_json && !NO_JSON_FLAG.contains(&path) {
            missing.push(format!("{path}: no --json"));
        }
    }
    for sub in subcommands {
        conventions_missing(sub, &format!("{path} {}", sub.get_name()), missing);
    }
}

/// Parses an example command line as the shell would split it (double
/// quotes group words; a redirection or `&&` ends the command).
fn example_parses(example: &str) -> Result<(), String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in example.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            _ => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let end = words
        .iter()
        .position(|w| w == ">" || w == "&&" || w == "|")
        .unwrap_or(words.len());
    unseen::cli::definition()
        .try_get_matches_from(&words[..end])
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn every_command_has_an_example_every_argument_help_and_json_output() {
    let cli = unseen::cli::definition();
    let mut missing = Vec::new();
    conventions_missing(&cli, "unseen", &mut missing);
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// `--server` and `--ca-cert` show in the help of commands that can reach
/// a server only; `--token` also where it says who acts on a data
/// directory. Where hidden, a command that runs on local files still
/// accepts them, and one that needs the data directory refuses `--server`
/// with a sentence, not a usage error.
#[test]
fn connection_flags_show_only_where_they_apply() {
    let help = |path: &[&str]| {
        let mut args = path.to_vec();
        args.push("--help");
        crate::support::ok(&args)
    };
    let shows = |text: &str, flag: &str| text.lines().any(|l| l.trim_start().starts_with(flag));
    for path in [
        &["grant", "list"][..],
        &["query"],
        &["ledger", "verify"],
        &["release", "download"],
    ] {
        let text = help(path);
        for flag in ["--server", "--ca-cert", "--token"] {
            assert!(shows(&text, flag), "{path:?} should show {flag}:\n{text}");
        }
    }
    for path in [&["serve"][..], &["logs", "prune"], &["ledger", "export"]] {
        let text = help(path);
        assert!(shows(&text, "--token"), "{path:?}:\n{text}");
        for flag in ["--server", "--ca-cert"] {
            assert!(!shows(&text, flag), "{path:?} should hide {flag}:\n{text}");
        }
    }
    for path in [
        &["dataset", "generate"][..],
        &["dataset", "manifest"],
        &["completions"],
        &["config", "check"],
        &["release", "verify"],
        &["witness", "init"],
    ] {
        let text = help(path);
        for flag in ["--server", "--ca-cert", "--token"] {
            assert!(!shows(&text, flag), "{path:?} should hide {flag}:\n{text}");
        }
    }
    let manifest = crate::support::ok(&[
        "dataset",
        "manifest",
        "residents",
        "--server",
        "http://127.0.0.1:9",
        "--token",
        "unused",
    ]);
    assert!(manifest.contains("residents"), "{manifest}");
    let dir = tempfile::tempdir().unwrap();
    let refused = crate::support::fails(&[
        "ledger",
        "export",
        "--from",
        "0",
        "--to",
        "1",
        "--out",
        dir.path().join("s.json").to_str().unwrap(),
        "--server",
        "http://127.0.0.1:9",
        "--token",
        "t",
    ]);
    assert!(
        refused.contains("not available over --server") && !refused.contains("Usage:"),
        "{refused}"
    );
}

/// Commands that act (revoke, disable, set, export) print, with `--json`,
/// one JSON object with the facts their sentence gives.
#[test]
fn actions_print_one_json_object_with_json() {
    let (dir, data) = crate::support::residents_dir("300");
    let grant = crate::support::issue_grant(&data, "5", &[]);
    let json = |args: &[&str]| -> serde_json::Value {
        let mut argv = args.to_vec();
        argv.extend(["--json", "--data-dir", &data]);
        let out = crate::support::ok(&argv);
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    let set = json(&[
        "budget",
        "set",
        "--dataset",
        "residents",
        "--epsilon",
        "40",
        "--as",
        "admin",
    ]);
    assert_eq!(set["layer"], "dataset", "{set}");
    assert_eq!(set["epsilon_total"], 40.0, "{set}");
    let key = json(&["ledger", "public-key"]);
    assert_eq!(key["public_key"].as_str().unwrap().len(), 64, "{key}");
    let checkpoint = json(&["ledger", "checkpoint"]);
    assert!(
        checkpoint["checkpoint"]
            .as_str()
            .unwrap()
            .contains("unseen"),
        "{checkpoint}"
    );
    let segment = dir.path().join("segment.json");
    let exported = json(&[
        "ledger",
        "export",
        "--from",
        "0",
        "--to",
        "2",
        "--out",
        segment.to_str().unwrap(),
    ]);
    assert_eq!(exported["to"], 2, "{exported}");
    let revoked = json(&[
        "grant", "revoke", &grant, "--reason", "done", "--as", "admin",
    ]);
    assert_eq!(revoked["grant"], grant.as_str(), "{revoked}");
    assert_eq!(revoked["revoked"], true, "{revoked}");
    let disabled = json(&[
        "user", "disable", "dev", "--reason", "left", "--as", "admin",
    ]);
    assert_eq!(disabled["user"], "dev", "{disabled}");
    // Without --json the same command speaks in a sentence.
    let said = crate::support::ok(&[
        "budget",
        "set",
        "--dataset",
        "residents",
        "--epsilon",
        "41",
        "--as",
        "admin",
        "--data-dir",
        &data,
    ]);
    assert_eq!(
        said.trim(),
        "budget of `residents` set to epsilon 41",
        "{said}"
    );
}

/// A mistyped `--data-dir` is an error that names the fix, and leaves no
/// empty data directory behind; only adding a first admin creates one.
#[test]
fn a_missing_data_directory_is_named_and_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo");
    let (ok, said) = crate::support::unseen(&[
        "user",
        "list",
        "--as",
        "admin",
        "--data-dir",
        missing.to_str().unwrap(),
    ]);
    assert!(!ok, "{said}");
    assert!(said.contains("is not a data directory"), "{said}");
    assert!(said.contains("user add"), "{said}");
    assert!(
        !missing.exists(),
        "listing users created {}",
        missing.display()
    );
    crate::support::ok(&[
        "user",
        "add",
        "--id",
        "admin",
        "--name",
        "Admin",
        "--role",
        "admin",
        "--data-dir",
        missing.to_str().unwrap(),
    ]);
    assert!(unseen::Domain::is_data_dir(&missing));
}
