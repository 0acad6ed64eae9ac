//! Privacy budgets.

use super::*;

pub(super) fn run(
    command: BudgetCommand,
    token: Option<&str>,
    _runtime: &tokio::runtime::Runtime,
    out: &mut dyn Write,
) -> Result<()> {
    match command {
        BudgetCommand::Set {
            dataset,
            developer,
            epsilon,
            actor,
            json,
            dir,
        } => {
            let (domain, actor) = open_as(&dir, actor, token)?;
            let (layer, id, layer_name) = match (dataset, developer) {
                (Some(d), _) => (crate::BudgetLayer::Dataset, d, "dataset"),
                (None, Some(u)) => (crate::BudgetLayer::Developer, u, "developer"),
                (None, None) => bail!("name a --dataset or a --developer"),
            };
            domain.set_budget(&actor, layer, &id, epsilon)?;
            say(
                out,
                json,
                json!({"layer": layer_name, "id": id, "epsilon": epsilon}),
                format_args!("budget of `{id}` set to epsilon {epsilon}"),
            )
        }
        BudgetCommand::Show { grant, json, dir } => {
            let domain = open(&dir)?;
            let layers = domain.budget_layers(&grant)?;
            let (spent, left) = domain.budget(&grant)?;
            let g = domain.grant(&grant)?;
            if json {
                writeln!(
                    out,
                    "{}",
                    json!({"grant": grant, "epsilon_spent": spent, "epsilon_left": left,
                        "delta_spent": g.delta_spent, "delta_total": g.delta_total, "layers": layers})
                )?;
            } else {
                writeln!(
                    out,
                    "grant {grant}: epsilon spent {spent:.3}, left {left:.3}; delta spent {:e} of {:e}",
                    g.delta_spent, g.delta_total
                )?;
                for l in &layers {
                    match l.total {
                        Some(t) => writeln!(
                            out,
                            "  {:<9} {:<24} spent {:.3} of {:.3}, left {:.3}",
                            l.layer,
                            l.id,
                            l.spent,
                            t,
                            (t - l.spent).max(0.0)
                        )?,
                        None => writeln!(
                            out,
                            "  {:<9} {:<24} spent {:.3}, no limit set",
                            l.layer, l.id, l.spent
                        )?,
                    }
                }
            }
            Ok(())
        }
    }
}
