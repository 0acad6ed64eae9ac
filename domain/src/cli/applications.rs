//! Grant applications: apply, amend, withdraw, pre-review, decide, feedback.

use unseen_api::{Application, ApplicationDecision, ApplicationFeedback, Narrowing, PreReview};

use super::*;

#[derive(Debug, Subcommand)]
pub enum ApplicationCommand {
    /// Apply for a grant for one scenario (you are the applicant and the
    /// grant's developer); the data provider pre-reviews and decides it.
    ///
    /// Example: `unseen application apply --dataset residents --scenario "district services" --purpose "District income statistics" --epsilon 3 --token "$UNSEEN_TOKEN"`
    Apply(Box<ApplicationApply>),
    /// List applications: an admin's or auditor's all, a developer's own
    /// with the last notice on each.
    ///
    /// Example: `unseen application list --token "$UNSEEN_TOKEN"`
    List {
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Show one application: its terms, its state and every step.
    ///
    /// Example: `unseen application show app-3b9c1d2e4f --as wang.min`
    Show {
        /// The application to show.
        id: String,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Amend a returned application with complete terms; it is submitted again.
    ///
    /// Example: `unseen application amend app-3b9c1d2e4f --dataset residents --scenario "district services" --purpose "District income statistics" --epsilon 2 --columns district,income --token "$UNSEEN_TOKEN"`
    Amend(Box<ApplicationAmend>),
    /// Withdraw your application before it is decided.
    ///
    /// Example: `unseen application withdraw app-3b9c1d2e4f --reason "scenario cancelled" --token "$UNSEEN_TOKEN"`
    Withdraw {
        /// The application to withdraw.
        id: String,
        /// Why (told to the provider and kept in the ledger).
        #[arg(long, default_value = "")]
        reason: String,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Pre-review an application (the provider's completeness check): send
    /// it to review, or return it saying what is missing.
    ///
    /// Example: `unseen application pre-review app-3b9c1d2e4f --complete --as wang.min`
    #[command(group = clap::ArgGroup::new("completeness").required(true).args(["complete", "incomplete"]))]
    PreReview {
        /// The application to pre-review.
        id: String,
        /// It is complete: it goes to review.
        #[arg(long)]
        complete: bool,
        /// It is incomplete: it goes back to the applicant (with --reason).
        #[arg(long)]
        incomplete: bool,
        /// What is missing, or a note (told to the applicant).
        #[arg(long, default_value = "")]
        reason: String,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Decide an application in review, with reasons: approve it (issuing
    /// the grant with the terms asked for, or narrower ones) or reject it.
    ///
    /// Example: `unseen application decide app-3b9c1d2e4f --approve --epsilon 2 --reason "two releases a quarter suffice" --as wang.min`
    Decide(Box<ApplicationDecide>),
    /// Give feedback on the use of the grant your application obtained.
    ///
    /// Example: `unseen application feedback app-3b9c1d2e4f --rating 4 --text "intervals were wide for small districts" --token "$UNSEEN_TOKEN"`
    Feedback {
        /// The approved application.
        id: String,
        /// 1 (poor) to 5 (good).
        #[arg(long)]
        rating: u8,
        /// What worked and what did not.
        #[arg(long)]
        text: String,
        /// Act as this user: an admin operating this data directory, or the owner of --token.
        #[arg(long = "as")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDir,
    },
}

/// `unseen application apply`.
#[derive(Debug, clap::Args)]
pub struct ApplicationApply {
    #[command(flatten)]
    terms: GrantTerms,
    /// Act as this user: an admin operating this data directory, or the owner of --token.
    #[arg(long = "as")]
    actor: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    dir: DataDir,
}

/// `unseen application amend`.
#[derive(Debug, clap::Args)]
pub struct ApplicationAmend {
    /// The returned application to amend.
    id: String,
    #[command(flatten)]
    terms: GrantTerms,
    /// Act as this user: an admin operating this data directory, or the owner of --token.
    #[arg(long = "as")]
    actor: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    dir: DataDir,
}

/// `unseen application decide`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("decision").required(true).args(["approve", "reject"]))]
pub struct ApplicationDecide {
    /// The application to decide.
    id: String,
    /// Approve it: the grant is issued with the terms as narrowed here.
    #[arg(long)]
    approve: bool,
    /// Reject it.
    #[arg(long)]
    reject: bool,
    /// Why (told to the applicant, kept in the ledger and the disclosure report).
    #[arg(long)]
    reason: String,
    /// Grant less total epsilon than asked.
    #[arg(long)]
    epsilon: Option<f64>,
    /// Charge less epsilon per query than asked.
    #[arg(long)]
    query_epsilon: Option<f64>,
    /// Grant fewer days than asked.
    #[arg(long)]
    days: Option<u32>,
    /// Grant only these of the columns asked, comma-separated.
    #[arg(long, value_delimiter = ',')]
    columns: Option<Vec<String>>,
    /// Grant only these of the further users asked (repeatable).
    #[arg(long = "designate")]
    designated: Option<Vec<String>>,
    /// Grant only these of the joined datasets asked (repeatable).
    #[arg(long = "join")]
    join_datasets: Option<Vec<String>>,
    /// Grant only these UTC time windows HH:MM-HH:MM (repeatable; of those
    /// asked, or any when none were).
    #[arg(long = "window")]
    windows: Option<Vec<String>>,
    /// Require this many distinct approvals per release (at least as many as asked).
    #[arg(long)]
    approvals: Option<u32>,
    /// Releases may not be read back by later queries although asked for.
    #[arg(long)]
    deny_derived_reuse: bool,
    /// Allow at most this many runs.
    #[arg(long)]
    max_runs: Option<u32>,
    /// Allow at most this many downloads.
    #[arg(long)]
    max_downloads: Option<u32>,
    /// Refuse wasm module jobs although asked for.
    #[arg(long)]
    deny_modules: bool,
    /// Refuse SQL jobs although asked for.
    #[arg(long)]
    deny_sql: bool,
    /// Refuse extracts although asked for.
    #[arg(long)]
    deny_extracts: bool,
    /// Refuse UDFs although asked for.
    #[arg(long)]
    deny_udfs: bool,
    /// Act as this user: an admin operating this data directory, or the owner of --token.
    #[arg(long = "as")]
    actor: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    dir: DataDir,
}

impl ApplicationDecide {
    fn decision(&self) -> ApplicationDecision {
        ApplicationDecision {
            approve: self.approve,
            reason: self.reason.clone(),
            narrowing: Narrowing {
                epsilon_total: self.epsilon,
                query_epsilon: self.query_epsilon,
                valid_days: self.days,
                columns: self.columns.clone(),
                designated: self.designated.clone(),
                max_runs: self.max_runs,
                max_downloads: self.max_downloads,
                approvals_required: self.approvals,
                windows: self.windows.clone(),
                join_datasets: self.join_datasets.clone(),
                deny_derived_reuse: self.deny_derived_reuse,
                deny_modules: self.deny_modules,
                deny_sql: self.deny_sql,
                deny_extracts: self.deny_extracts,
                deny_udfs: self.deny_udfs,
            },
        }
    }
}

pub(super) fn run(
    command: ApplicationCommand,
    session: &Session,
    out: &mut dyn Write,
) -> Result<()> {
    use ApplicationCommand as C;
    let (shown, json, said) = match command {
        C::Apply(apply) => {
            let backend = session.backend(&apply.dir, apply.actor.clone())?;
            let shown = backend.apply(&apply.terms.request(""))?;
            let said = format!(
                "applied: application {} is submitted; the data provider pre-reviews it next",
                shown.application.id
            );
            (shown, apply.json, said)
        }
        C::List { actor, json, dir } => {
            let listed = session.backend(&dir, actor)?.applications()?;
            if json {
                return print_json(out, &listed);
            }
            return list(out, &listed.applications);
        }
        C::Show {
            id,
            actor,
            json,
            dir,
        } => {
            let shown = session.backend(&dir, actor)?.application(&id)?;
            if json {
                return print_json(out, &shown);
            }
            return show(out, &shown.application);
        }
        C::Amend(amend) => {
            let backend = session.backend(&amend.dir, amend.actor.clone())?;
            let shown = backend.amend_application(&amend.id, &amend.terms.request(""))?;
            let said = format!("amended application {}: it is submitted again", amend.id);
            (shown, amend.json, said)
        }
        C::Withdraw {
            id,
            reason,
            actor,
            json,
            dir,
        } => {
            let shown = session
                .backend(&dir, actor)?
                .withdraw_application(&id, &reason)?;
            (shown, json, format!("withdrew application {id}"))
        }
        C::PreReview {
            id,
            complete,
            incomplete: _,
            reason,
            actor,
            json,
            dir,
        } => {
            let shown = session
                .backend(&dir, actor)?
                .pre_review_application(&id, &PreReview { complete, reason })?;
            let said = if complete {
                format!("application {id} is complete and in review")
            } else {
                format!("returned application {id} to its applicant to amend")
            };
            (shown, json, said)
        }
        C::Decide(decide) => {
            let backend = session.backend(&decide.dir, decide.actor.clone())?;
            let shown = backend.decide_application(&decide.id, &decide.decision())?;
            let a = &shown.application;
            let said = match (&a.grant, &a.granted) {
                (Some(grant), Some(terms)) => format!(
                    "approved application {}: issued grant {grant} to `{}` with epsilon {} (asked {}) on `{}`",
                    a.id,
                    a.applicant,
                    terms.epsilon_total,
                    a.requested.epsilon_total,
                    terms.dataset
                ),
                _ => format!("rejected application {}", a.id),
            };
            (shown, decide.json, said)
        }
        C::Feedback {
            id,
            rating,
            text,
            actor,
            json,
            dir,
        } => {
            let shown = session
                .backend(&dir, actor)?
                .application_feedback(&id, &ApplicationFeedback { rating, text })?;
            (
                shown,
                json,
                format!("recorded feedback on application {id}"),
            )
        }
    };
    say(out, json, &shown, said)
}

fn list(out: &mut dyn Write, applications: &[Application]) -> Result<()> {
    let rows = applications
        .iter()
        .map(|a| {
            let terms = a.granted.as_ref().unwrap_or(&a.requested);
            vec![
                a.id.clone(),
                a.applicant.clone(),
                terms.dataset.clone(),
                terms.scenario.clone(),
                terms.epsilon_total.to_string(),
                a.status.to_string(),
                a.grant.clone().unwrap_or_default(),
                a.last_notice().map(notice).unwrap_or_default(),
            ]
        })
        .collect();
    write_table(
        out,
        &[
            "APPLICATION",
            "APPLICANT",
            "DATASET",
            "SCENARIO",
            "EPSILON",
            "STATUS",
            "GRANT",
            "LAST NOTICE",
        ],
        &[4],
        rows,
    )
}

fn notice(step: &unseen_api::ApplicationStep) -> String {
    let said = if step.reason.is_empty() {
        String::new()
    } else {
        format!(": {}", step.reason)
    };
    format!("{} by {} at {}{said}", step.step, step.actor, step.at)
}

fn show(out: &mut dyn Write, a: &Application) -> Result<()> {
    writeln!(
        out,
        "application {} by {}: {}{}",
        a.id,
        a.applicant,
        a.status,
        a.grant
            .as_ref()
            .map_or(String::new(), |g| format!(", grant {g}"))
    )?;
    writeln!(out, "asked for:")?;
    writeln!(out, "{}", serde_json::to_string_pretty(&a.requested)?)?;
    if let Some(granted) = &a.granted {
        writeln!(out, "granted:")?;
        writeln!(out, "{}", serde_json::to_string_pretty(granted)?)?;
    }
    writeln!(out, "history:")?;
    for step in &a.history {
        let rating = step
            .rating
            .map_or(String::new(), |r| format!(" (rating {r})"));
        writeln!(out, "  {}{rating}", notice(step))?;
    }
    Ok(())
}
