//! Running a guest locally against synthetic data.

use super::*;

pub(super) fn run(command: DevCommand, session: &Session, out: &mut dyn Write) -> Result<()> {
    let runtime = session.runtime;
    match command {
        DevCommand::Run {
            module,
            manifest,
            dataset,
            rows,
            seed,
            params,
            udfs,
            marginals,
            sample,
            json,
        } => {
            let bytes = std::fs::read(&module)
                .with_context(|| format!("cannot read module {}", module.display()))?;
            let udfs = read_udf_modules(&udfs)?;
            let manifest_text = match (&manifest, &dataset) {
                (Some(path), _) => read_text(path)?,
                (None, Some(name)) => {
                    let kind: unseen_datasets::DatasetKind =
                        name.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
                    unseen_datasets::manifest_toml(kind).to_string()
                }
                (None, None) => bail!("give --manifest FILE or --dataset NAME"),
            };
            let scratch = tempfile::Builder::new().prefix("unseen-dev-").tempdir()?;
            let run = crate::dev::run(
                scratch.path(),
                runtime.handle(),
                &bytes,
                &manifest_text,
                (rows, seed),
                crate::dev::DevInputs {
                    params: parse_params(&params)?,
                    udfs,
                    marginals: match &marginals {
                        Some(path) => Some(crate::marginals::Marginals::for_manifest(
                            &read_text(path)?,
                            &unseen_policy::Manifest::parse(&manifest_text)
                                .map_err(|e| anyhow::anyhow!("{e}"))?,
                        )?),
                        None => None,
                    },
                    sample: match &sample {
                        Some(path) => {
                            let file: serde_json::Value = serde_json::from_str(&read_text(path)?)
                                .with_context(|| {
                                format!("{} is not a release file", path.display())
                            })?;
                            Some(crate::audit::table_from_json(&file["document"]["table"])?)
                        }
                        None => None,
                    },
                },
            )?;
            if json {
                let outputs: Vec<_> = run
                    .outputs
                    .iter()
                    .map(|(name, t)| json!({"name": name, "table": crate::table_json(t)}))
                    .collect();
                let mut value = crate::server::outcome_json(&run.outcome);
                value["outputs"] = json!(outputs);
                value["mock_rows"] = json!(run.rows);
                writeln!(out, "{value}")?;
            } else {
                writeln!(
                    out,
                    "ran {} against {} mock rows (made from the manifest, not from data): {}",
                    module.display(),
                    run.rows,
                    run.outcome.ending_word()
                )?;
                for line in &run.outcome.logs {
                    writeln!(out, "  log: {line}")?;
                }
                for r in &run.outcome.refusals {
                    writeln!(out, "  refused: {r}")?;
                }
                if let Some(e) = &run.outcome.error {
                    writeln!(out, "  error: {e}")?;
                }
                for (name, table) in &run.outputs {
                    writeln!(
                        out,
                        "  output `{name}` (on the service it would go to review):"
                    )?;
                    demo::print_table(out, table)?;
                }
            }
            if !run.outcome.succeeded() {
                bail!("the guest {}", run.outcome.ending_word());
            }
            Ok(())
        }
    }
}
