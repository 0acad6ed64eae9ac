//! Grant applications: apply, pre-review, review, notify, obtain, feedback.
//!
//! An operating agency's developer applies for one scenario's access (the
//! terms of a grant); an admin — the data provider — pre-reviews it for
//! completeness (sending it to review or returning it to be amended) and
//! then decides it with reasons, possibly narrowing the terms. Approval
//! issues the grant with exactly the reviewed terms, in the same commit and
//! ledger entry (`grant.issued`, naming the application). Every step is a
//! ledger entry and a line of the application's history, which is what its
//! applicant is notified of; nobody takes a provider's step on their own
//! application.
//!
//! Each step checks the application's state inside its transaction, so two
//! steps taken at once cannot both apply.

use unseen_api::{
    Application, ApplicationDecision, ApplicationFeedback, ApplicationStatus, ApplicationStep,
    Narrowing, PreReview,
};

use super::*;

/// Longest feedback text, in characters.
pub const MAX_FEEDBACK_CHARS: usize = 2000;

/// What is wrong with an application or a step on it: one variant per
/// mistake.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApplicationProblem {
    #[error(
        "an application is made by the developer who will hold the grant; you are `{actor}` but it names `{developer}`: leave the developer out, and name colleagues with --designate"
    )]
    ForAnother { actor: String, developer: String },
    #[error("an application names its one scenario (\"one scenario, one review\"); add --scenario")]
    NoScenario,
    #[error(
        "approval may only narrow the terms asked for: {term} {given} is more than the {asked} asked for"
    )]
    Widens {
        term: &'static str,
        asked: String,
        given: String,
    },
    #[error(
        "approval may only narrow the terms asked for: {what} `{value}` was not asked for (asked: {asked})"
    )]
    NotAsked {
        what: &'static str,
        value: String,
        asked: String,
    },
    #[error(
        "approval may only narrow the terms asked for: {given} approvals per release is fewer than the {asked} asked for"
    )]
    FewerApprovals { asked: u32, given: u32 },
    #[error("a rejection grants nothing: leave the narrowing out")]
    NarrowedRejection,
    #[error("the rating is {0}; rate the grant's use from 1 (poor) to 5 (good)")]
    Rating(u8),
    #[error("feedback needs a text of 1 to {MAX_FEEDBACK_CHARS} characters; it has {0}")]
    FeedbackText(usize),
}

/// An application's approval, recorded with the grant it issues.
pub(crate) struct Approval<'a> {
    pub(crate) application: &'a str,
    pub(crate) reason: &'a str,
}

impl Approval<'_> {
    /// Marks the application approved with the terms `granted` and grant
    /// `grant`, inside the grant's own transaction.
    pub(crate) fn record(
        &self,
        tx: &rusqlite::Transaction<'_>,
        actor: &str,
        granted: &GrantRequest,
        grant: &str,
        at: &str,
    ) -> Result<(), DomainError> {
        advance(
            tx,
            self.application,
            &[ApplicationStatus::InReview],
            ApplicationStatus::Approved,
            at,
            "approve",
        )?;
        store::applications::set_granted(tx, self.application, granted, grant)?;
        store::applications::add_step(
            tx,
            self.application,
            &step("approved", actor, at, self.reason),
        )?;
        Ok(())
    }
}

fn step(name: &str, actor: &str, at: &str, reason: &str) -> ApplicationStep {
    ApplicationStep {
        step: name.to_string(),
        actor: actor.to_string(),
        at: at.to_string(),
        reason: reason.to_string(),
        rating: None,
    }
}

/// Moves application `id` from one of `from` to `to`, or says why not.
fn advance(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    from: &[ApplicationStatus],
    to: ApplicationStatus,
    at: &str,
    action: &'static str,
) -> Result<(), DomainError> {
    if store::applications::advance(tx, id, from, to, at)? {
        return Ok(());
    }
    let found = store::applications::by_id(tx, id)?.ok_or_else(|| not_found(id))?;
    Err(DomainError::ApplicationState {
        application: id.to_string(),
        status: found.status,
        action,
        expected: from
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" or "),
    })
}

fn not_found(id: &str) -> DomainError {
    DomainError::NotFound {
        what: "application",
        id: id.to_string(),
        list: "application list",
    }
}

/// The terms `asked` narrowed by `n`; refuses anything that widens them.
pub fn narrow(asked: &GrantRequest, n: &Narrowing) -> Result<GrantRequest, ApplicationProblem> {
    let mut granted = asked.clone();
    let at_most = |term: &'static str, given: f64, asked: f64| {
        if given <= asked {
            Ok(given)
        } else {
            Err(ApplicationProblem::Widens {
                term,
                asked: asked.to_string(),
                given: given.to_string(),
            })
        }
    };
    if let Some(e) = n.epsilon_total {
        granted.epsilon_total = at_most("epsilon_total", e, asked.epsilon_total)?;
    }
    if let Some(e) = n.query_epsilon {
        granted.query_epsilon = at_most("query_epsilon", e, asked.query_epsilon)?;
    }
    if let Some(days) = n.valid_days {
        at_most("valid_days", f64::from(days), f64::from(asked.valid_days))?;
        granted.valid_days = days;
    }
    let limit = |term: &'static str, given: Option<u32>, asked: Option<u32>| match (given, asked) {
        (Some(g), Some(a)) if g > a => Err(ApplicationProblem::Widens {
            term,
            asked: a.to_string(),
            given: g.to_string(),
        }),
        (Some(g), _) => Ok(Some(g)),
        (None, a) => Ok(a),
    };
    granted.max_runs = limit("max_runs", n.max_runs, asked.max_runs)?;
    granted.max_downloads = limit("max_downloads", n.max_downloads, asked.max_downloads)?;
    if let Some(columns) = &n.columns {
        // No columns asked for means all of them: any subset narrows that,
        // but granting "all" again where a list was asked would widen it.
        if !asked.columns.is_empty() {
            if columns.is_empty() {
                return Err(ApplicationProblem::NotAsked {
                    what: "column",
                    value: "(all columns)".into(),
                    asked: asked.columns.join(", "),
                });
            }
            subset("column", columns, &asked.columns)?;
        }
        granted.columns = columns.clone();
    }
    if let Some(designated) = &n.designated {
        subset("designated user", designated, &asked.designated)?;
        granted.designated = designated.clone();
    }
    if let Some(joins) = &n.join_datasets {
        subset("joined dataset", joins, &asked.join_datasets)?;
        granted.join_datasets = joins.clone();
    }
    if let Some(windows) = &n.windows {
        // No window asked means any time: any window narrows that.
        if !asked.windows.is_empty() {
            if windows.is_empty() {
                return Err(ApplicationProblem::NotAsked {
                    what: "time window",
                    value: "(any time)".into(),
                    asked: asked.windows.join(", "),
                });
            }
            subset("time window", windows, &asked.windows)?;
        }
        granted.windows = windows.clone();
    }
    if let Some(approvals) = n.approvals_required {
        if approvals < asked.approvals_required {
            return Err(ApplicationProblem::FewerApprovals {
                asked: asked.approvals_required,
                given: approvals,
            });
        }
        granted.approvals_required = approvals;
    }
    if n.deny_derived_reuse {
        granted.derived_reuse = false;
    }
    if n.deny_modules {
        granted.allow_modules = false;
    }
    if n.deny_sql {
        granted.allow_sql = false;
    }
    if n.deny_extracts {
        granted.allow_extracts = false;
    }
    if n.deny_udfs {
        granted.allow_udfs = false;
        granted.udf_row_instructions = MAX_UDF_ROW_INSTRUCTIONS;
    }
    Ok(granted)
}

fn subset(
    what: &'static str,
    given: &[String],
    asked: &[String],
) -> Result<(), ApplicationProblem> {
    match given.iter().find(|g| !asked.contains(g)) {
        None => Ok(()),
        Some(extra) => Err(ApplicationProblem::NotAsked {
            what,
            value: extra.clone(),
            asked: if asked.is_empty() {
                "none".into()
            } else {
                asked.join(", ")
            },
        }),
    }
}

impl Domain {
    /// The terms `request` as `actor`'s application: the applicant holds the
    /// grant, the scenario is named, and the grant could be issued as asked.
    fn application_terms(
        &self,
        actor: &str,
        request: &GrantRequest,
    ) -> Result<GrantRequest, DomainError> {
        self.require(actor, Role::Developer, "apply for grants")?;
        if !request.developer.is_empty() && request.developer != actor {
            return Err(ApplicationProblem::ForAnother {
                actor: actor.to_string(),
                developer: request.developer.clone(),
            }
            .into());
        }
        if request.scenario.trim().is_empty() {
            return Err(ApplicationProblem::NoScenario.into());
        }
        let terms = GrantRequest {
            developer: actor.to_string(),
            ..request.clone()
        };
        self.check_grant_request(&terms)?;
        Ok(terms)
    }

    /// `actor` (a developer) applies for a grant with the terms `request`.
    pub fn apply(&self, actor: &str, request: &GrantRequest) -> Result<String, DomainError> {
        let terms = self.application_terms(actor, request)?;
        let id = new_id("app");
        let at = self.now_rfc3339();
        let body = json!({"application": id, "applicant": actor, "terms": terms});
        self.commit_recorded(actor, "application.submitted", |tx| {
            store::applications::insert(tx, &id, actor, &terms, &at)?;
            store::applications::add_step(tx, &id, &step("submitted", actor, &at, ""))?;
            Ok(Change::Record(body, ()))
        })?;
        Ok(id)
    }

    /// The applicant amends a returned application; it is submitted again.
    pub fn amend_application(
        &self,
        actor: &str,
        id: &str,
        request: &GrantRequest,
    ) -> Result<(), DomainError> {
        self.own_application(actor, id)?;
        let terms = self.application_terms(actor, request)?;
        let at = self.now_rfc3339();
        let body = json!({"application": id, "terms": terms});
        self.commit_recorded(actor, "application.amended", |tx| {
            advance(
                tx,
                id,
                &[ApplicationStatus::Returned],
                ApplicationStatus::Submitted,
                &at,
                "amend",
            )?;
            store::applications::set_request(tx, id, &terms)?;
            store::applications::add_step(tx, id, &step("amended", actor, &at, ""))?;
            Ok(Change::Record(body, ()))
        })?;
        Ok(())
    }

    /// The applicant withdraws an application that is not yet decided.
    pub fn withdraw_application(
        &self,
        actor: &str,
        id: &str,
        reason: &str,
    ) -> Result<(), DomainError> {
        self.own_application(actor, id)?;
        let at = self.now_rfc3339();
        let body = json!({"application": id, "reason": reason});
        self.commit_recorded(actor, "application.withdrawn", |tx| {
            advance(
                tx,
                id,
                &[
                    ApplicationStatus::Submitted,
                    ApplicationStatus::Returned,
                    ApplicationStatus::InReview,
                ],
                ApplicationStatus::Withdrawn,
                &at,
                "withdraw",
            )?;
            store::applications::add_step(tx, id, &step("withdrawn", actor, &at, reason))?;
            Ok(Change::Record(body, ()))
        })?;
        Ok(())
    }

    /// The provider's pre-review: complete applications go to review,
    /// incomplete ones back to the applicant with what is missing.
    pub fn pre_review_application(
        &self,
        actor: &str,
        id: &str,
        pre_review: &PreReview,
    ) -> Result<(), DomainError> {
        self.provider_step(actor, id, "pre-review applications")?;
        if !pre_review.complete && pre_review.reason.trim().is_empty() {
            return Err(DomainError::ReasonRequired {
                action: "returning an application",
                examples: ": say what is missing, e.g. --reason \"name the columns the scenario needs\"",
            });
        }
        let (to, name) = if pre_review.complete {
            (ApplicationStatus::InReview, "pre_reviewed")
        } else {
            (ApplicationStatus::Returned, "returned")
        };
        let at = self.now_rfc3339();
        let body = json!({"application": id, "complete": pre_review.complete, "reason": pre_review.reason});
        self.commit_recorded(actor, "application.pre_reviewed", |tx| {
            advance(
                tx,
                id,
                &[ApplicationStatus::Submitted],
                to,
                &at,
                "pre-review",
            )?;
            store::applications::add_step(tx, id, &step(name, actor, &at, &pre_review.reason))?;
            Ok(Change::Record(body, ()))
        })?;
        Ok(())
    }

    /// The provider's decision on an application in review. Approval
    /// issues the grant with the terms asked for, narrowed as decided; its
    /// id is returned.
    pub fn decide_application(
        &self,
        actor: &str,
        id: &str,
        decision: &ApplicationDecision,
    ) -> Result<Option<String>, DomainError> {
        let application = self.provider_step(actor, id, "decide applications")?;
        if decision.reason.trim().is_empty() {
            return Err(DomainError::ReasonRequired {
                action: "deciding an application",
                examples: ": the applicant is told why, e.g. --reason \"the scenario needs no birth dates\"",
            });
        }
        if decision.approve {
            let granted = narrow(&application.requested, &decision.narrowing)?;
            let approval = Approval {
                application: id,
                reason: &decision.reason,
            };
            return self
                .issue_checked(actor, &granted, Some(&approval))
                .map(Some);
        }
        if !decision.narrowing.is_empty() {
            return Err(ApplicationProblem::NarrowedRejection.into());
        }
        let at = self.now_rfc3339();
        let body = json!({"application": id, "reason": decision.reason});
        self.commit_recorded(actor, "application.rejected", |tx| {
            advance(
                tx,
                id,
                &[ApplicationStatus::InReview],
                ApplicationStatus::Rejected,
                &at,
                "decide",
            )?;
            store::applications::add_step(tx, id, &step("rejected", actor, &at, &decision.reason))?;
            Ok(Change::Record(body, ()))
        })?;
        Ok(None)
    }

    /// The applicant's feedback on the use of the grant an application
    /// obtained.
    pub fn application_feedback(
        &self,
        actor: &str,
        id: &str,
        feedback: &ApplicationFeedback,
    ) -> Result<(), DomainError> {
        let application = self.own_application(actor, id)?;
        if !(1..=5).contains(&feedback.rating) {
            return Err(ApplicationProblem::Rating(feedback.rating).into());
        }
        let chars = feedback.text.trim().chars().count();
        if chars == 0 || chars > MAX_FEEDBACK_CHARS {
            return Err(ApplicationProblem::FeedbackText(chars).into());
        }
        let at = self.now_rfc3339();
        let body = json!({"application": id, "grant": application.grant, "rating": feedback.rating, "text": feedback.text});
        self.commit_recorded(actor, "application.feedback", |tx| {
            // Approved stays approved: this only checks it is.
            advance(
                tx,
                id,
                &[ApplicationStatus::Approved],
                ApplicationStatus::Approved,
                &at,
                "give feedback on",
            )?;
            let mut given = step("feedback", actor, &at, &feedback.text);
            given.rating = Some(feedback.rating);
            store::applications::add_step(tx, id, &given)?;
            Ok(Change::Record(body, ()))
        })?;
        Ok(())
    }

    /// Applications `actor` may read: an admin's or auditor's all, a
    /// developer's own.
    pub fn applications(&self, actor: &str) -> Result<Vec<Application>, DomainError> {
        let role = self.require_any(
            actor,
            &[Role::Admin, Role::Auditor, Role::Developer],
            "read grant applications",
        )?;
        let mine = (role == Role::Developer).then_some(actor);
        Ok(store::applications::list(&lock(&self.db), mine)?)
    }

    /// One application, if `actor` may read it (another developer's is
    /// reported as not existing).
    pub fn application(&self, actor: &str, id: &str) -> Result<Application, DomainError> {
        let role = self.require_any(
            actor,
            &[Role::Admin, Role::Auditor, Role::Developer],
            "read grant applications",
        )?;
        let found = store::applications::by_id(&lock(&self.db), id)?
            .filter(|a| role != Role::Developer || a.applicant == actor);
        found.ok_or_else(|| not_found(id))
    }

    /// The application, when `actor` is its applicant.
    fn own_application(&self, actor: &str, id: &str) -> Result<Application, DomainError> {
        self.require(actor, Role::Developer, "act on their grant applications")?;
        self.application(actor, id)
    }

    /// The application, when `actor` may take the provider's steps on it.
    fn provider_step(
        &self,
        actor: &str,
        id: &str,
        action: &'static str,
    ) -> Result<Application, DomainError> {
        self.require(actor, Role::Admin, action)?;
        let application = self.application(actor, id)?;
        if application.applicant == actor {
            return Err(DomainError::OwnApplication {
                user: actor.to_string(),
                application: id.to_string(),
            });
        }
        Ok(application)
    }
}
