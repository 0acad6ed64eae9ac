//! Jobs and their logs.

use super::*;

pub(super) fn run(
    command: JobCommand,
    token: Option<&str>,
    runtime: &tokio::runtime::Runtime,
    out: &mut dyn Write,
) -> Result<()> {
    match command {
        JobCommand::Submit {
            grant,
            module,
            params,
            udfs,
            inputs,
            no_wait: _,
            actor,
            json,
            dir,
        } => {
            let (domain, actor) = open_as(&dir, actor, token)?;
            let bytes = std::fs::read(&module)
                .with_context(|| format!("cannot read module {}", module.display()))?;
            let extras = crate::jobs::JobExtras {
                udfs: upload_udfs_local(&domain, &actor, &udfs)?,
                inputs,
            };
            let sha = domain.upload_module(&actor, &bytes)?;
            let params = parse_params(&params)?;
            let handle = runtime.handle().clone();
            let outcome = domain.run_job(&handle, &actor, &grant, &sha, params, &extras)?;
            // The submitter reads what the service would return.
            let (_, left) = domain.budget_seen_by(&actor, &grant)?;
            print_developer_outcome(out, &outcome, None, left, json)?;
            if outcome.status != crate::JobStatus::Finished {
                bail!(
                    "job {} {}: {}",
                    outcome.job_id,
                    outcome.status,
                    outcome.reason.as_deref().unwrap_or_default()
                );
            }
            Ok(())
        }
        JobCommand::Status {
            id,
            actor,
            json,
            dir,
        } => {
            let (domain, actor) = open_as(&dir, actor, token)?;
            let job = domain.job(&actor, &id)?;
            print_job(out, &job, json)
        }
        JobCommand::List {
            grant,
            actor,
            json,
            dir,
        } => {
            let (domain, actor) = open_as(&dir, actor, token)?;
            let jobs = domain.jobs(&actor, grant.as_deref())?;
            if json {
                writeln!(out, "{}", json!({"jobs": jobs}))?;
            }
            if !json {
                let rows = jobs
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
                )?;
            }
            Ok(())
        }
        JobCommand::Cancel {
            id,
            reason,
            actor,
            json,
            dir,
        } => {
            let (domain, actor) = open_as(&dir, actor, token)?;
            let state = domain.cancel_job(&actor, &id, &reason)?;
            say(
                out,
                json,
                json!({"job": id, "state": state}),
                format_args!("job {id}: {state}"),
            )
        }
    }
}

pub(super) fn logs(
    command: LogsCommand,
    token: Option<&str>,
    _runtime: &tokio::runtime::Runtime,
    out: &mut dyn Write,
) -> Result<()> {
    match command {
        LogsCommand::Prune {
            older_than_days,
            actor,
            json,
            dir,
        } => {
            let (domain, actor) = open_as(&dir, actor, token)?;
            let pruned = domain.prune_job_logs(&actor, older_than_days)?;
            say(
                out,
                json,
                json!({"jobs_cleared": pruned, "older_than_days": older_than_days}),
                format_args!(
                    "cleared the logs of {pruned} jobs that ended more than {older_than_days} days ago"
                ),
            )
        }
    }
}

pub(super) fn query(
    args: QueryArgs,
    token: Option<&str>,
    runtime: &tokio::runtime::Runtime,
    out: &mut dyn Write,
) -> Result<()> {
    let QueryArgs {
        sql,
        grant,
        dry_run,
        udfs,
        inputs,
        actor,
        json,
        dir,
    } = args;
    let (domain, actor) = open_as(&dir, actor, token)?;
    let handle = runtime.handle().clone();
    let extras = crate::jobs::JobExtras {
        udfs: upload_udfs_local(&domain, &actor, &udfs)?,
        inputs,
    };
    if dry_run {
        let verdict = domain.dry_run(&handle, &actor, &grant, &sql, &extras)?;
        if json {
            writeln!(out, "{}", serde_json::to_value(&verdict)?)?;
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
    let outcome = domain.run_sql(&handle, &actor, &grant, &sql, &extras)?;
    let (_, left) = domain.budget_seen_by(&actor, &grant)?;
    print_developer_outcome(out, &outcome, None, left, json)?;
    if outcome.status != crate::JobStatus::Finished {
        bail!(
            "query {}: {}",
            outcome.status,
            outcome.reason.as_deref().unwrap_or_default()
        );
    }
    Ok(())
}

pub(super) fn extract(
    args: ExtractArgs,
    token: Option<&str>,
    runtime: &tokio::runtime::Runtime,
    out: &mut dyn Write,
) -> Result<()> {
    let ExtractArgs {
        grant,
        columns,
        sample,
        actor,
        json,
        dir,
    } = args;
    let (domain, actor) = open_as(&dir, actor, token)?;
    let handle = runtime.handle().clone();
    let (outcome, plan) = domain.run_extract(&handle, &actor, &grant, &columns, sample)?;
    let (_, left) = domain.budget_seen_by(&actor, &grant)?;
    print_developer_outcome(out, &outcome, Some(&plan), left, json)?;
    if outcome.status != crate::JobStatus::Finished {
        bail!(
            "extract {}: {}",
            outcome.status,
            outcome.reason.as_deref().unwrap_or_default()
        );
    }
    Ok(())
}
