//! Privacy budgets.

use super::*;

pub(super) fn run(command: BudgetCommand, session: &Session, out: &mut dyn Write) -> Result<()> {
    match command {
        BudgetCommand::Set {
            dataset,
            developer,
            epsilon,
            actor,
            json,
            dir,
        } => {
            if dataset.is_none() && developer.is_none() {
                bail!("name a --dataset or a --developer");
            }
            let done = session
                .backend(&dir, actor)?
                .set_budget(&unseen_api::BudgetRequest {
                    dataset,
                    developer,
                    epsilon,
                })?;
            say(
                out,
                json,
                &done,
                format_args!("budget of `{}` set to epsilon {epsilon}", done.id),
            )
        }
        BudgetCommand::Show { grant, json, dir } => {
            let budget = session.backend(&dir, None)?.grant_budget(&grant)?;
            if json {
                return print_json(out, &budget);
            }
            writeln!(
                out,
                "grant {grant}: epsilon spent {:.3}, left {:.3}; delta spent {:e} of {:e}",
                budget.epsilon_spent, budget.epsilon_left, budget.delta_spent, budget.delta_total
            )?;
            for l in &budget.layers {
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
            Ok(())
        }
    }
}
