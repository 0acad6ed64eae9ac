//! Grants: issue, read, revoke, meter.

use super::*;

pub(super) fn run(
    command: GrantCommand,
    token: Option<&str>,
    _runtime: &tokio::runtime::Runtime,
    out: &mut dyn Write,
) -> Result<()> {
    match command {
        GrantCommand::Issue(issue) => {
            let domain = open(&issue.dir)?;
            let actor = who(&domain, issue.actor.clone(), token)?;
            let request = issue.request();
            let id = domain.issue_grant(&actor, &request)?;
            if issue.json {
                writeln!(out, "{}", json!({"grant": id}))?;
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
            let (domain, actor) = open_as(&dir, actor, token)?;
            let grants = domain.grants(&actor)?;
            if json {
                writeln!(out, "{}", json!({"grants": grants}))?;
            }
            if !json {
                let rows = grants
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
            let (domain, actor) = open_as(&dir, actor, token)?;
            let grant = domain.visible_grant(&actor, &id)?;
            let value = serde_json::to_value(&grant)?;
            if json {
                writeln!(out, "{value}")?;
            } else {
                writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
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
            let (domain, actor) = open_as(&dir, actor, token)?;
            let stopped = domain.revoke_grant(&actor, &id, &reason)?;
            say(
                out,
                json,
                json!({"grant": id, "revoked": true, "jobs_stopped": stopped}),
                format_args!("revoked grant {id}; {stopped} running or queued jobs stopped"),
            )
        }
        GrantCommand::Usage {
            id,
            actor,
            json,
            dir,
        } => usage(id, actor, json, dir, token, out),
    }
}

fn usage(
    id: String,
    actor: Option<String>,
    json: bool,
    dir: DataDir,
    token: Option<&str>,
    out: &mut dyn Write,
) -> Result<()> {
    let (domain, actor) = open_as(&dir, actor, token)?;
    let usage = domain.grant_usage(&actor, &id)?;
    if json {
        writeln!(out, "{}", serde_json::to_value(&usage)?)?;
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
