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
