//! Grants: issue, read, revoke, meter.

use super::*;

pub(super) fn run(command: GrantCommand, session: &Session, out: &mut dyn Write) -> Result<()> {
    match command {
        GrantCommand::Issue(issue) => {
            let request = issue.request();
            let issued = session
                .backend(&issue.dir, issue.actor.clone())?
                .issue_grant(&request)?;
            let id = &issued.grant;
            if issue.json {
                print_json(out, &issued)?;
            } else {
                let joined: String = request
                    .join_datasets
                    .iter()
                    .map(|d| format!(" joined to `{d}`"))
                    .collect();
                let udfs = if request.allow_udfs {
                    format!(
                        ", with UDFs of at most {} instructions per row",
                        request.udf_row_instructions
                    )
                } else {
                    String::new()
                };
                writeln!(
                    out,
                    "issued grant {id}: `{}` may spend epsilon {} on `{}`{joined}{udfs} for: {}",
                    request.developer, request.epsilon_total, request.dataset, request.purpose
                )?;
            }
            Ok(())
        }
        GrantCommand::List { actor, json, dir } => {
            let listed = session.backend(&dir, actor)?.grants()?;
            if json {
                print_json(out, &listed)?;
            }
            if !json {
                let rows = listed
                    .grants
                    .iter()
                    .map(|g| {
                        vec![
                            g.id.clone(),
                            g.datasets().collect::<Vec<_>>().join(" + "),
                            g.developer.clone(),
                            format!("{:.3} of {:.3}", g.epsilon_spent, g.epsilon_total),
                            g.runs.to_string(),
                            match &g.revoked_at {
                                Some(at) => format!("revoked {at}"),
                                None => format!("expires {}", g.expires_at),
                            },
                            g.purpose.clone(),
                        ]
                    })
                    .collect();
                write_table(
                    out,
                    &[
                        "GRANT",
                        "DATASETS",
                        "DEVELOPER",
                        "EPSILON",
                        "RUNS",
                        "STATE",
                        "PURPOSE",
                    ],
                    &[3, 4],
                    rows,
                )?;
            }
            Ok(())
        }
        GrantCommand::Show {
            id,
            actor,
            json,
            dir,
        } => {
            let shown = session.backend(&dir, actor)?.grant(&id)?;
            if json {
                print_json(out, &shown)?;
            } else {
                writeln!(out, "{}", serde_json::to_string_pretty(&shown.grant)?)?;
            }
            Ok(())
        }
        GrantCommand::Revoke {
            id,
            reason,
            actor,
            json,
            dir,
        } => {
            let done = session.backend(&dir, actor)?.revoke_grant(&id, &reason)?;
            say(
                out,
                json,
                &done,
                format_args!(
                    "revoked grant {id}; {} running or queued jobs stopped",
                    done.jobs_stopped
                ),
            )
        }
        GrantCommand::Usage {
            id,
            actor,
            json,
            dir,
        } => usage(id, actor, json, dir, session, out),
    }
}

fn usage(
    id: String,
    actor: Option<String>,
    json: bool,
    dir: DataDir,
    session: &Session,
    out: &mut dyn Write,
) -> Result<()> {
    let answer = session.backend(&dir, actor)?.grant_usage(&id)?;
    let usage = &answer.usage;
    if json {
        print_json(out, &answer)?;
    } else {
        writeln!(
            out,
            "grant {id}: runs {}{}, jobs {:?}, open-column queries {} ({} in the last {} s{}), {}epsilon {:.3}, releases {}, downloads {}{}",
            usage.runs,
            usage.max_runs.map_or(String::new(), |m| format!(" of {m}")),
            usage.jobs_by_status,
            usage.open_queries,
            usage.open_queries_in_window,
            usage.open_query_window,
            usage
                .max_open_queries
                .map_or(String::new(), |m| format!(" of {m}")),
            match (
                usage.queries,
                usage.fuel_used,
                usage.rows_read,
                usage.run_ms,
                usage.outputs
            ) {
                (Some(q), Some(f), Some(r), Some(t), Some(o)) =>
                    format!("queries {q}, fuel {f}, rows read {r}, run time {t} ms, outputs {o}, "),
                // What guests chose is for reviewers, admins and auditors.
                _ => String::new(),
            },
            usage.epsilon_spent,
            usage.releases,
            usage.downloads,
            usage
                .max_downloads
                .map_or(String::new(), |m| format!(" of {m}")),
        )?;
    }
    Ok(())
}
