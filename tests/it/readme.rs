//! The README's command-line walkthrough, run as written: every line of its
//! first `sh` block under "The command line", then the download and offline
//! verification of the release it made, and the block under "Applying for a
//! grant". Placeholders (GRANT, DEV_TOKEN, OUTPUT, REL, APP, DATA_DIR) are filled from what earlier commands printed;
//! the only change is fewer generated rows.

use std::path::Path;

const README: &str = include_str!("../../README.md");

/// The lines of the first `sh` block after `heading`.
fn block_after(heading: &str) -> Vec<&'static str> {
    let start = README.find(heading).expect("the README has the heading");
    let rest = &README[start..];
    let open = rest.find("```sh\n").expect("an sh block follows") + "```sh\n".len();
    let close = rest[open..].find("```").expect("the block ends") + open;
    rest[open..close].lines().collect()
}

/// Splits a command line like a shell would for these lines: words,
/// double-quoted strings, a trailing `# comment`, and `> file`.
fn words(line: &str) -> (Vec<String>, Option<String>) {
    let mut out = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut in_word) = (false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '#' if !quoted && !in_word => break,
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    let redirect = match out.iter().position(|w| w == ">") {
        Some(i) => {
            let file = out.get(i + 1).cloned();
            out.truncate(i);
            file
        }
        None => None,
    };
    (out, redirect)
}

/// The word after `marker` in `text`.
fn after<'a>(text: &'a str, marker: &str) -> &'a str {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("`{marker}` in:\n{text}"));
    text[at + marker.len()..]
        .split(|c: char| c.is_whitespace() || c == ':')
        .find(|w| !w.is_empty())
        .unwrap()
}

#[test]
#[ignore = "run by the_readme_commands_work_as_written in its own working directory"]
fn child_runs_the_readme() {
    let Ok(data) = std::env::var("UNSEEN_README_DATA") else {
        return;
    };
    std::fs::write("district_income.wasm", unseen::guests::DISTRICT_INCOME).unwrap();
    let mut lines = block_after("## The command line");
    // The release made above, downloaded and verified with nothing else.
    let more = block_after("Grants are the authorization agreements");
    for prefix in [
        "unseen release download REL --out rel.json",
        "unseen release verify rel.json",
    ] {
        lines.push(more.iter().find(|l| l.starts_with(prefix)).unwrap());
    }
    // Then a grant applied for, returned, amended and approved.
    lines.extend(block_after("### Applying for a grant"));
    let mut known: Vec<(&str, String)> = Vec::new();
    for line in lines {
        let (argv, redirect) = words(&line.replace("[--public-key ledger.pub]", ""));
        assert_eq!(argv[0], "unseen", "{line}");
        let argv: Vec<String> = argv[1..]
            .iter()
            .map(|w| {
                let w = if w == "1000000" {
                    "2000".to_string()
                } else {
                    w.clone()
                };
                // The data directory last: its random name is not a placeholder.
                known
                    .iter()
                    .fold(w, |w, (k, v)| w.replace(k, v))
                    .replace("DATA_DIR", &data)
            })
            .collect();
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let (done, text) = crate::support::unseen_exact(&args);
        assert!(done, "README line failed:\n{line}\n{text}");
        if let Some(file) = redirect {
            std::fs::write(file, &text).unwrap();
        }
        match args[..] {
            ["user", "add", "--id", "dev", ..] => {
                known.push(("DEV_TOKEN", after(&text, "keep it secret)").into()))
            }
            ["user", "add", "--id", "rev", ..] => {
                known.push(("REV_TOKEN", after(&text, "keep it secret)").into()))
            }
            ["grant", "issue", ..] => known.push(("GRANT", after(&text, "issued grant").into())),
            ["application", "apply", ..] => {
                known.push(("APP", after(&text, "applied: application").into()))
            }
            // The oldest output awaiting review, the query's: the first
            // row under the table's header.
            ["review", "list", ..] => {
                let row = text.lines().nth(1).unwrap_or_default();
                known.push(("OUTPUT", row.split_whitespace().next().unwrap().to_string()))
            }
            ["review", "approve", ..] => known.push(("REL", after(&text, "signed release").into())),
            _ => {}
        }
    }
    let verified = std::fs::read_to_string("rel.json").unwrap();
    assert!(verified.contains("unseen-release-bundle/1"));
}

#[test]
fn the_readme_commands_work_as_written() {
    let cwd = tempfile::tempdir().unwrap();
    let data = cwd.path().join("data");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "readme::child_runs_the_readme",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .current_dir(cwd.path())
        .env("UNSEEN_README_DATA", &data)
        .env("UNSEEN_DATA_DIR", &data)
        .env_remove("UNSEEN_TOKEN")
        .env_remove("UNSEEN_SERVER")
        .status()
        .unwrap();
    assert!(
        status.success(),
        "a README command failed (see its output above)"
    );
    for file in [
        "rel.json",
        "ledger.pub",
        "checkpoint",
        "proof.json",
        "segment.json",
    ] {
        assert!(Path::new(&cwd.path().join(file)).exists(), "{file}");
    }
}
