//! Datasets: generate, register, list, summarise and destroy.

use super::*;

pub(super) fn run(
    command: DatasetCommand,
    token: Option<&str>,
    runtime: &tokio::runtime::Runtime,
    out: &mut dyn Write,
) -> Result<()> {
    match command {
        DatasetCommand::Generate {
            name,
            rows,
            seed,
            related_rows,
            out: path,
            json,
        } => {
            let summary = demo::generate(&name, rows, seed, related_rows, &path)?;
            say(
                out,
                json,
                json!({"dataset": name, "rows": summary.to_string(), "seed": seed, "path": path}),
                format_args!(
                    "wrote {summary} rows of `{name}` (seed {seed}) to {}",
                    path.display()
                ),
            )
        }
        DatasetCommand::Manifest { name } => {
            let kind: unseen_datasets::DatasetKind =
                name.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
            write!(out, "{}", unseen_datasets::manifest_toml(kind))?;
            Ok(())
        }
        DatasetCommand::Register {
            name,
            parquet,
            manifest,
            actor,
            json,
            dir,
        } => {
            let (domain, actor) = open_as(&dir, actor, token)?;
            let text = read_text(&manifest)?;
            let ingested =
                runtime.block_on(domain.register_dataset(&actor, &name, &parquet, &text))?;
            let stored = domain.dir().join("data");
            say(
                out,
                json,
                json!({"dataset": name, "rows": ingested.rows, "stored_under": stored}),
                format_args!(
                    "registered `{name}`: {} rows, stored encrypted under {}",
                    ingested.rows,
                    stored.display()
                ),
            )
        }
        DatasetCommand::List { actor, json, dir } => {
            let (domain, actor) = open_as(&dir, actor, token)?;
            let datasets = domain.datasets(&actor)?;
            if json {
                writeln!(out, "{}", json!({"datasets": datasets}))?;
            }
            if !json {
                let rows = datasets
                    .iter()
                    .map(|d| {
                        vec![
                            d.name.clone(),
                            d.rows.to_string(),
                            format!("v{}", d.manifest_version),
                            d.registered_at.clone(),
                            d.registered_by.clone(),
                            d.destroyed_at
                                .as_ref()
                                .map_or("registered".into(), |at| format!("destroyed {at}")),
                        ]
                    })
                    .collect();
                write_table(
                    out,
                    &["DATASET", "ROWS", "MANIFEST", "REGISTERED", "BY", "STATE"],
                    &[1],
                    rows,
                )?;
            }
            Ok(())
        }
        DatasetCommand::Marginals {
            name,
            epsilon,
            out: path,
            actor,
            dir,
        } => {
            let (domain, actor) = open_as(&dir, actor, token)?;
            let marginals = domain.publish_marginals(runtime.handle(), &actor, &name, epsilon)?;
            write_marginals(out, &serde_json::to_value(&marginals)?, path.as_deref())
        }
        DatasetCommand::Destroy {
            name,
            reason,
            actor,
            json,
            dir,
        } => {
            let (domain, actor) = open_as(&dir, actor, token)?;
            domain.destroy_dataset(&actor, &name, &reason)?;
            say(
                out,
                json,
                json!({"dataset": name, "destroyed": true}),
                format_args!(
                    "destroyed the data key of `{name}`: its data is unreadable and its grants are revoked; the ledger keeps the record"
                ),
            )
        }
    }
}
