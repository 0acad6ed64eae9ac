//! Review, releases and the disclosure report.

use super::*;

pub(super) fn run(command: ReviewCommand, session: &Session, out: &mut dyn Write) -> Result<()> {
    match command {
        ReviewCommand::Show {
            output,
            actor,
            json,
            dir,
        } => {
            let shown = session.backend(&dir, actor)?.output(&output)?;
            if json {
                return print_json(out, &shown);
            }
            let what = match shown.kind.as_str() {
                "outcome" => " (the job's outcome: what its guest computed beyond its outputs)",
                "extract" => " (a masked extract)",
                _ => "",
            };
            writeln!(
                out,
                "output {output} `{}`{what} ({})",
                shown.name, shown.status
            )?;
            let table = crate::table_from_json(&shown.table)
                .map_err(|e| anyhow::anyhow!("the output's table is malformed: {e}"))?;
            demo::print_table(out, &table)?;
            if !shown.disclosure.is_null() {
                print_disclosure(out, &shown.disclosure["report"])?;
            }
            let findings = shown
                .findings
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
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
        ReviewCommand::Approve {
            output,
            reason,
            actor,
            json,
            dir,
        } => {
            let decision = session
                .backend(&dir, actor)?
                .review(&output, true, &reason)?;
            if json {
                return print_json(out, &decision);
            }
            match (&decision.release, &decision.path) {
                (Some(r), Some(path)) => writeln!(
                    out,
                    "approved {output}; signed release {r} written to {path}"
                )?,
                (Some(r), None) => writeln!(
                    out,
                    "approved {output}; signed release {r}; download it with `unseen release download {r}`"
                )?,
                (None, _) => writeln!(
                    out,
                    "approved {output}; its grant needs a second approval by another reviewer"
                )?,
            }
            Ok(())
        }
        ReviewCommand::Reject {
            output,
            reason,
            actor,
            json,
            dir,
        } => {
            let decision = session
                .backend(&dir, actor)?
                .review(&output, false, &reason)?;
            say(out, json, &decision, format_args!("rejected {output}"))
        }
        ReviewCommand::List { actor, json, dir } => queue(actor, json, dir, session, out),
    }
}

fn queue(
    actor: Option<String>,
    json: bool,
    dir: DataDir,
    session: &Session,
    out: &mut dyn Write,
) -> Result<()> {
    let listed = session.backend(&dir, actor)?.review_queue()?;
    if json {
        return print_json(out, &listed);
    }
    let queue = &listed.outputs;
    if queue.is_empty() {
        writeln!(out, "the review queue is empty")?;
    }
    let text = |o: &serde_json::Value, key: &str| o[key].as_str().unwrap_or_default().to_owned();
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

pub(super) fn report(command: ReportCommand, out: &mut dyn Write) -> Result<()> {
    match command {
        ReportCommand::Disclosure {
            public_key,
            json,
            dir,
        } => {
            let (ledger, _) = verified(&dir, public_key.as_deref())?;
            let report = crate::audit::disclosure(&ledger.entries);
            if json {
                writeln!(out, "{}", crate::audit::disclosure_json(&report))?;
                return Ok(());
            }
            writeln!(
                out,
                "Disclosure report: {} grants, {} applications (ledger verified, {} entries)",
                report.grants.len(),
                report.applications.len(),
                ledger.entries.len()
            )?;
            for g in &report.grants {
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
                if let Some(application) = &g.application {
                    writeln!(out, "  issued on approving application {application}")?;
                }
            }
            for a in &report.applications {
                writeln!(
                    out,
                    "- application {} by {} for `{}` ({}): {}",
                    a.application, a.applicant, a.dataset, a.scenario, a.purpose
                )?;
                let granted = match (&a.grant, a.epsilon_granted) {
                    (Some(grant), Some(epsilon)) => {
                        format!(", grant {grant} with epsilon {epsilon}")
                    }
                    _ => String::new(),
                };
                writeln!(
                    out,
                    "  {}: epsilon {} asked{granted}; {}",
                    a.status,
                    a.epsilon_asked,
                    a.steps.join(", ")
                )?;
                if let Some(by) = &a.decided_by {
                    writeln!(out, "  decided by {by}: {}", a.reason)?;
                }
                if !a.ratings.is_empty() {
                    let ratings: Vec<String> = a.ratings.iter().map(u64::to_string).collect();
                    writeln!(out, "  feedback ratings: {}", ratings.join(", "))?;
                }
            }
            Ok(())
        }
    }
}

pub(super) fn release(
    command: ReleaseCommand,
    session: &Session,
    out: &mut dyn Write,
) -> Result<()> {
    match command {
        ReleaseCommand::Verify {
            file,
            public_key,
            json,
            dir,
        } => {
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
                match &proof.build {
                    Some(build) => {
                        writeln!(out, "  signed by this build:")?;
                        super::attest::write_build(out, build)?;
                    }
                    None => writeln!(out, "  (signed before builds were recorded)")?,
                }
            }
            Ok(())
        }
        ReleaseCommand::Export {
            file,
            format,
            out: path,
            force,
            public_key,
            json,
            dir,
        } => {
            let text = read_text(&file)?;
            let key = self::public_key(&dir.path(), public_key.as_deref())?;
            // Only a table the ledger proves is written out.
            let proof = crate::bundle::verify_bundle(&text, &key)?;
            let bytes = crate::export::release_file_bytes(&text, Some(format))?;
            crate::util::Destination::prepare(&path, force)
                .and_then(|d| d.commit(&bytes))
                .map_err(anyhow::Error::msg)?;
            say(
                out,
                json,
                &json!({"release": proof.release, "path": path, "format": clap::ValueEnum::to_possible_value(&format).map(|v| v.get_name().to_string())}),
                format_args!(
                    "release {} verified; its table written to {}",
                    proof.release,
                    path.display()
                ),
            )
        }
        ReleaseCommand::Download {
            id,
            out: path,
            force,
            format,
            actor,
            json,
            dir,
        } => {
            let backend = session.backend(&dir, actor)?;
            // The destination is made ready before the download, which counts.
            let destination = prepare_download(path.as_deref(), force)?;
            let file = backend.download_release(&id, destination, format)?;
            match &path {
                Some(p) => say(
                    out,
                    json,
                    &json!({"release": id, "path": p}),
                    format_args!("downloaded release {id} to {}", p.display()),
                ),
                // The release file itself is JSON already.
                None => say(out, false, &json!(null), &file),
            }
        }
    }
}

pub(super) fn trace(
    file: &Path,
    actor: Option<String>,
    json: bool,
    dir: &DataDir,
    session: &Session,
    out: &mut dyn Write,
) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let leaked = crate::export::read_table_file(&bytes)
        .with_context(|| format!("{} is not a table Unseen can read", file.display()))?;
    let (domain, actor) = session.open_as(dir, actor)?;
    let sha = crate::util::sha256_hex(&bytes);
    let verdict = domain.trace(session.runtime.handle(), &actor, &leaked, &sha)?;
    if json {
        return print_json(out, &verdict);
    }
    match &verdict.source {
        Some(source) => {
            let downloads = if source.downloaded_by.is_empty() {
                String::new()
            } else {
                format!(
                    "; its release was downloaded by {}",
                    source.downloaded_by.join(", ")
                )
            };
            writeln!(
                out,
                "{} traced to extract {} (job {}) under grant {}, run by {} ({}), confidence {:.6}{downloads}",
                file.display(),
                source.output,
                source.job,
                source.grant,
                source.user,
                source.status,
                verdict.confidence
            )?;
        }
        None => writeln!(
            out,
            "{}: unknown — no released extract explains its {} rows over ({}) beyond chance",
            file.display(),
            verdict.rows,
            verdict.columns.join(", ")
        )?,
    }
    Ok(())
}
