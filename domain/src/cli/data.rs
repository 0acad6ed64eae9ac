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
        DatasetCommand::Import {
            grant,
            name,
            file,
            manifest,
            actor,
            json,
            dir,
        } => {
            let text = read_text(&manifest)?;
            let backend = session.backend(&dir, actor)?;
            let (parquet, _staging) = file.parquet(&text, &manifest)?;
            let shown = backend.propose_import(&grant, &name, &parquet, &text)?;
            let i = &shown.import;
            say(
                out,
                json,
                &shown,
                format_args!(
                    "proposed import {} of `{name}` for grant {grant}: {} rows, keys checked ({}), quarantined encrypted until a data provider decides",
                    i.id, i.checks.rows, i.checks.key_format
                ),
            )
        }
        DatasetCommand::Imports { actor, json, dir } => {
            let listed = session.backend(&dir, actor)?.imports()?;
            if json {
                return print_json(out, &listed);
            }
            let rows = listed
                .imports
                .iter()
                .map(|i| {
                    vec![
                        i.id.clone(),
                        i.dataset.clone(),
                        i.grant.clone(),
                        i.proposed_by.clone(),
                        i.checks.rows.to_string(),
                        i.status.to_string(),
                        i.epsilon_total.map_or(String::new(), |e| e.to_string()),
                        i.reason.clone(),
                    ]
                })
                .collect();
            write_table(
                out,
                &[
                    "IMPORT",
                    "DATASET",
                    "GRANT",
                    "PROPOSED BY",
                    "ROWS",
                    "STATUS",
                    "EPSILON",
                    "REASON",
                ],
                &[4, 6],
                rows,
            )
        }
        DatasetCommand::DecideImport {
            id,
            approve,
            reject: _,
            reason,
            epsilon,
            actor,
            json,
            dir,
        } => {
            let decision = unseen_api::ImportDecision {
                approve,
                reason,
                epsilon,
            };
            let shown = session
                .backend(&dir, actor)?
                .decide_import(&id, &decision)?;
            let i = &shown.import;
            let said = if approve {
                format!(
                    "approved import {id}: registered `{}` ({} rows, encrypted), joined to grant {} with its own budget of epsilon {}",
                    i.dataset,
                    i.checks.rows,
                    i.grant,
                    i.epsilon_total.unwrap_or_default()
                )
            } else {
                format!("rejected import {id}; its quarantined file is deleted")
            };
            say(out, json, &shown, said)
        }
        DatasetCommand::Manifest { name } => {
            let kind: unseen_datasets::DatasetKind =
                name.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
            write!(out, "{}", unseen_datasets::manifest_toml(kind))?;
            Ok(())
        }
        DatasetCommand::Register {
            name,
            file,
            manifest,
            actor,
            json,
            dir,
        } => {
            let text = read_text(&manifest)?;
            let backend = session.backend(&dir, actor)?;
            let (parquet, _staging) = file.parquet(&text, &manifest)?;
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

impl DataFile {
    /// The file as Parquet: itself, or CSV or Arrow converted with the
    /// manifest's types into a private scratch directory (returned, to be
    /// kept until the file is used).
    fn parquet(
        &self,
        manifest_text: &str,
        manifest_path: &Path,
    ) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
        let convert = |read: fn(&Path, &Manifest, &Path) -> Result<PathBuf>, file: &Path| {
            let checked = Manifest::parse(manifest_text).map_err(|e| {
                anyhow::anyhow!("{}: manifest has mistakes:\n{e}", manifest_path.display())
            })?;
            let dir = tempfile::Builder::new()
                .prefix("unseen-import-")
                .tempdir()?;
            let parquet = read(file, &checked, dir.path())?;
            Ok::<_, anyhow::Error>((parquet, Some(dir)))
        };
        match (&self.parquet, &self.csv, &self.arrow) {
            (Some(p), _, _) => Ok((p.clone(), None)),
            (None, Some(c), _) => convert(crate::import::csv_to_parquet, c),
            (None, None, Some(a)) => convert(crate::import::arrow_to_parquet, a),
            (None, None, None) => bail!("name the data file: --parquet, --csv or --arrow"),
        }
    }
}
