//! Datasets: generate, register, list, summarise and destroy.

use super::*;
use unseen_policy::manifest::Manifest;

pub(super) fn run(command: DatasetCommand, session: &Session, out: &mut dyn Write) -> Result<()> {
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
                &json!({"dataset": name, "rows": summary.to_string(), "seed": seed, "path": path}),
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
            csv,
            arrow,
            manifest,
            actor,
            json,
            dir,
        } => {
            let text = read_text(&manifest)?;
            let backend = session.backend(&dir, actor)?;
            // CSV and Arrow become Parquet in a private scratch directory
            // first (kept until registered), read with the manifest's types.
            let mut staging = None;
            let mut convert = |read: fn(&Path, &Manifest, &Path) -> Result<PathBuf>,
                               file: &Path| {
                let checked = Manifest::parse(&text).map_err(|e| {
                    anyhow::anyhow!("{}: manifest has mistakes:\n{e}", manifest.display())
                })?;
                let dir = staging.insert(
                    tempfile::Builder::new()
                        .prefix("unseen-import-")
                        .tempdir()?,
                );
                read(file, &checked, dir.path())
            };
            let parquet = match (parquet, csv, arrow) {
                (Some(p), _, _) => p,
                (None, Some(c), _) => convert(crate::import::csv_to_parquet, &c)?,
                (None, None, Some(a)) => convert(crate::import::arrow_to_parquet, &a)?,
                (None, None, None) => bail!("name the data file: --parquet, --csv or --arrow"),
            };
            let done = backend.register_dataset(&name, &parquet, &text)?;
            say(
                out,
                json,
                &done,
                format_args!("registered `{name}`: {} rows, stored encrypted", done.rows),
            )
        }
        DatasetCommand::List { actor, json, dir } => {
            let listed = session.backend(&dir, actor)?.datasets()?;
            if json {
                return print_json(out, &listed);
            }
            let rows = listed
                .datasets
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
            )
        }
        DatasetCommand::Marginals {
            name,
            epsilon,
            out: path,
            actor,
            dir,
        } => {
            let published = session
                .backend(&dir, actor)?
                .publish_marginals(&name, epsilon)?;
            write_marginals(out, &published.marginals, path.as_deref())
        }
        DatasetCommand::Destroy {
            name,
            reason,
            actor,
            json,
            dir,
        } => {
            let done = session
                .backend(&dir, actor)?
                .destroy_dataset(&name, &reason)?;
            say(
                out,
                json,
                &done,
                format_args!(
                    "destroyed the data key of `{name}`: its data is unreadable and its grants are revoked; the ledger keeps the record"
                ),
            )
        }
    }
}
