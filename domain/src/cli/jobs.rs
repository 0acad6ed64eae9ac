//! Jobs and their logs.

use super::*;

pub(super) fn run(command: JobCommand, session: &Session, out: &mut dyn Write) -> Result<()> {
    match command {
        JobCommand::Submit {
            grant,
            module,
            params,
            udfs,
            inputs,
            no_wait,
            actor,
            json,
            dir,
        } => {
            let backend = session.backend(&dir, actor)?;
            let bytes = std::fs::read(&module)
                .with_context(|| format!("cannot read module {}", module.display()))?;
            let udf_modules = upload_udfs(&*backend, &udfs)?;
            let module = backend.upload_module(&bytes, ModuleKind::Job)?;
            let submitted = backend.submit_job(&unseen_api::JobRequest {
                grant: grant.clone(),
                module,
                params: parse_params(&params)?,
                udf_modules,
                inputs,
                wait: !no_wait,
            })?;
            match submitted {
                Submitted::Ended(outcome) => {
                    print_developer_outcome(out, &*backend, &grant, &outcome, json)?;
                    ended_or_fail("job", &outcome)
                }
                Submitted::Queued(queued) => say(
                    out,
                    json,
                    &queued,
                    format_args!(
                        "job {} queued; follow it with `unseen job status {}`",
                        queued.job, queued.job
                    ),
                ),
            }
        }
        JobCommand::Status {
            id,
            actor,
            json,
            dir,
        } => {
            let shown = session.backend(&dir, actor)?.job(&id)?;
            if json {
                return print_json(out, &shown);
            }
            print_job(out, &shown.job)
        }
        JobCommand::List {
            grant,
            actor,
            json,
            dir,
        } => {
            let listed = session.backend(&dir, actor)?.jobs(grant.as_deref())?;
            if json {
                return print_json(out, &listed);
            }
            let rows = listed
                .jobs
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
            )
        }
        JobCommand::Cancel {
            id,
            reason,
            actor,
            json,
            dir,
        } => {
            let done = session.backend(&dir, actor)?.cancel_job(&id, &reason)?;
            say(out, json, &done, format_args!("job {id}: {}", done.state))
        }
    }
}

/// Fails (exit 1) when the service stopped or refused the work: for
/// scripts, as the HTTP status would. How a guest itself ended is not a
/// failure: a reviewer reads it.
fn ended_or_fail(what: &str, outcome: &unseen_api::DeveloperOutcome) -> Result<()> {
    if outcome.status != crate::JobStatus::Finished {
        bail!(
            "{what} {} {}: {}",
            outcome.job,
            outcome.status,
            outcome.reason.as_deref().unwrap_or_default()
        );
    }
    Ok(())
}

pub(super) fn logs(command: LogsCommand, session: &Session, out: &mut dyn Write) -> Result<()> {
    match command {
        LogsCommand::Prune {
            older_than_days,
            actor,
            json,
            dir,
        } => {
            let (domain, actor) = session.open_as(&dir, actor)?;
            let pruned = domain.prune_job_logs(&actor, older_than_days)?;
            say(
                out,
                json,
                &json!({"jobs_cleared": pruned, "older_than_days": older_than_days}),
                format_args!(
                    "cleared the logs of {pruned} jobs that ended more than {older_than_days} days ago"
                ),
            )
        }
    }
}

pub(super) fn query(args: QueryArgs, session: &Session, out: &mut dyn Write) -> Result<()> {
    let QueryArgs {
        sql,
        grant,
        dry_run,
        udfs,
        inputs,
        format,
        out: table_path,
        force,
        wait,
        actor,
        json,
        dir,
    } = args;
    // Checked before anything is spent.
    let destination = match (&format, &table_path) {
        (Some(_), Some(path)) if !dry_run => Some(prepare_download(Some(path), force)?),
        _ => None,
    };
    let backend = session.backend(&dir, actor)?;
    let request = unseen_api::QueryRequest {
        grant: grant.clone(),
        sql,
        dry_run,
        udf_modules: upload_udfs(&*backend, &udfs)?,
        inputs,
    };
    if dry_run {
        let verdict = backend.dry_run(&request)?;
        if json {
            print_json(out, &verdict)?;
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
    let outcome = backend.query(&request)?;
    let (Some(format), Some(path), Some(destination)) = (format, table_path, destination) else {
        if wait > 0 {
            return print_release_when_approved(out, &*backend, &grant, &outcome, wait, json);
        }
        print_developer_outcome(out, &*backend, &grant, &outcome, json)?;
        return ended_or_fail("query", &outcome);
    };
    if !json {
        print_developer_outcome(out, &*backend, &grant, &outcome, false)?;
    }
    ended_or_fail("query", &outcome)?;
    let release = wait_for_release(&*backend, &outcome.job, wait)?;
    let written = match &release {
        Some(release) => {
            backend.download_release(release, destination, Some(format))?;
            true
        }
        None => false,
    };
    let format_name = format!("{format:?}").to_lowercase();
    let said = match &release {
        Some(release) => format!(
            "release {release} written to {} as {format_name}",
            path.display()
        ),
        None => format!(
            "not released within {wait} s; once a reviewer approves it, `unseen job status {}` names its release and `unseen release download REL --format {format_name} --out {}` writes it",
            outcome.job,
            path.display()
        ),
    };
    say(
        out,
        json,
        &json!({"job": outcome.job, "outputs": outcome.outputs, "epsilon_spent": outcome.epsilon_spent, "release": release, "path": written.then_some(&path), "format": format_name}),
        said,
    )
}

/// `query --wait N` without `--format`: the outcome, then the released
/// table with each estimate's interval once a reviewer approves it (a
/// download of the release), or how to fetch it later.
fn print_release_when_approved(
    out: &mut dyn Write,
    backend: &dyn Backend,
    grant: &str,
    outcome: &unseen_api::DeveloperOutcome,
    wait: u64,
    json: bool,
) -> Result<()> {
    if !json {
        print_developer_outcome(out, backend, grant, outcome, false)?;
    }
    ended_or_fail("query", outcome)?;
    let release = wait_for_release(backend, &outcome.job, wait)?;
    let table = match &release {
        Some(release) => {
            let file: serde_json::Value =
                serde_json::from_str(&backend.download_release(release, None, None)?)
                    .context("the release file is not JSON")?;
            Some(file["document"]["table"].clone())
        }
        None => None,
    };
    if json {
        return print_json(
            out,
            &json!({"job": outcome.job, "outputs": outcome.outputs, "epsilon_spent": outcome.epsilon_spent, "release": release, "table": table}),
        );
    }
    match (&release, &table) {
        (Some(release), Some(table)) => {
            writeln!(out, "released as {release}:")?;
            let table = crate::audit::table_from_json(table)?;
            crate::demo::print_table(out, &table)?;
        }
        _ => writeln!(
            out,
            "not released within {wait} s; once a reviewer approves it, `unseen job status {}` names its release",
            outcome.job
        )?,
    }
    Ok(())
}

/// The first release of `job`, polling its status for up to `wait`
/// seconds (once when 0).
fn wait_for_release(backend: &dyn Backend, job: &str, wait: u64) -> Result<Option<String>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
    loop {
        let shown = backend.job(job)?;
        if let Some(release) = shown.job.releases.first() {
            return Ok(Some(release.clone()));
        }
        if std::time::Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

pub(super) fn extract(args: ExtractArgs, session: &Session, out: &mut dyn Write) -> Result<()> {
    let ExtractArgs {
        grant,
        columns,
        sample,
        actor,
        json,
        dir,
    } = args;
    let backend = session.backend(&dir, actor)?;
    let outcome = backend.extract(&unseen_api::ExtractRequest {
        grant: grant.clone(),
        columns,
        sample,
    })?;
    print_developer_outcome(out, &*backend, &grant, &outcome, json)?;
    ended_or_fail("extract", &outcome)
}
