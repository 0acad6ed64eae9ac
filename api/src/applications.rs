//! Grant applications: an operating agency applies for access for one
//! scenario, the data provider pre-reviews and reviews it, and an approval
//! issues the grant exactly as reviewed.
//!
//! The states, in order: `submitted` → (pre-review) `in_review` or
//! `returned` (incomplete; the applicant amends it back to `submitted`) →
//! (review) `approved` (the grant is issued) or `rejected`. The applicant
//! may withdraw it before the decision and give feedback after approval.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::GrantRequest;

/// Where an application stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationStatus {
    /// Waiting for the provider's pre-review (completeness).
    Submitted,
    /// Found incomplete at pre-review; the applicant amends it.
    Returned,
    /// Complete; waiting for the provider's decision.
    InReview,
    /// Approved: the grant is issued as reviewed.
    Approved,
    /// Rejected, with reasons.
    Rejected,
    /// Withdrawn by the applicant before a decision.
    Withdrawn,
}

impl ApplicationStatus {
    /// The word the API and the store use.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplicationStatus::Submitted => "submitted",
            ApplicationStatus::Returned => "returned",
            ApplicationStatus::InReview => "in_review",
            ApplicationStatus::Approved => "approved",
            ApplicationStatus::Rejected => "rejected",
            ApplicationStatus::Withdrawn => "withdrawn",
        }
    }

    /// The status a word names, if any.
    pub fn parse(word: &str) -> Option<ApplicationStatus> {
        [
            ApplicationStatus::Submitted,
            ApplicationStatus::Returned,
            ApplicationStatus::InReview,
            ApplicationStatus::Approved,
            ApplicationStatus::Rejected,
            ApplicationStatus::Withdrawn,
        ]
        .into_iter()
        .find(|s| s.as_str() == word)
    }

    /// Whether nothing but feedback can happen to it any more.
    pub fn is_decided(self) -> bool {
        matches!(
            self,
            ApplicationStatus::Approved
                | ApplicationStatus::Rejected
                | ApplicationStatus::Withdrawn
        )
    }
}

impl std::fmt::Display for ApplicationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One step of an application's history: what its applicant is notified of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApplicationStep {
    /// `submitted`, `amended`, `pre_reviewed`, `returned`, `approved`,
    /// `rejected`, `withdrawn` or `feedback`.
    pub step: String,
    /// Who took it.
    pub actor: String,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// The reasons given (the feedback's text for feedback).
    pub reason: String,
    /// The feedback's rating (1 to 5), for feedback.
    pub rating: Option<u8>,
}

/// An application as its applicant, the provider and auditors see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Application {
    pub id: String,
    /// The developer who applied; the grant's developer.
    pub applicant: String,
    pub status: ApplicationStatus,
    /// The terms asked for (its `developer` is the applicant).
    pub requested: GrantRequest,
    /// The terms approved, when approved: the grant was issued with these.
    pub granted: Option<GrantRequest>,
    /// The grant issued, when approved.
    pub grant: Option<String>,
    pub submitted_at: String,
    pub updated_at: String,
    /// Every step, oldest first.
    pub history: Vec<ApplicationStep>,
}

impl Application {
    /// The last step someone other than the applicant took: what the
    /// applicant was last notified of.
    pub fn last_notice(&self) -> Option<&ApplicationStep> {
        self.history
            .iter()
            .rev()
            .find(|s| s.actor != self.applicant)
    }
}

/// `POST /v1/applications/{id}/pre-review`: the completeness check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreReview {
    /// True when the application is complete and goes to review; false
    /// returns it to the applicant, who amends it.
    pub complete: bool,
    /// What is missing (needed when returning it) or a note.
    #[serde(default)]
    pub reason: String,
}

/// How a reviewer narrows the terms asked for before approving them. Every
/// field is optional and may only narrow: a smaller budget, a shorter term,
/// fewer columns, users, runs or downloads, operations turned off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Narrowing {
    #[serde(default)]
    pub epsilon_total: Option<f64>,
    #[serde(default)]
    pub query_epsilon: Option<f64>,
    #[serde(default)]
    pub valid_days: Option<u32>,
    /// The columns granted (a subset of those asked for).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// The further users granted (a subset of those asked for).
    #[serde(default)]
    pub designated: Option<Vec<String>>,
    #[serde(default)]
    pub max_runs: Option<u32>,
    #[serde(default)]
    pub max_downloads: Option<u32>,
    /// Distinct approvals each release needs (at least as many as asked).
    #[serde(default)]
    pub approvals_required: Option<u32>,
    /// The time windows granted (of those asked; any when none were asked).
    #[serde(default)]
    pub windows: Option<Vec<String>>,
    /// The joined datasets granted (a subset of those asked).
    #[serde(default)]
    pub join_datasets: Option<Vec<String>>,
    /// Releases may not be read back by later queries although asked for.
    #[serde(default)]
    pub deny_derived_reuse: bool,
    /// Operations turned off although asked for.
    #[serde(default)]
    pub deny_modules: bool,
    #[serde(default)]
    pub deny_sql: bool,
    #[serde(default)]
    pub deny_extracts: bool,
    #[serde(default)]
    pub deny_udfs: bool,
}

impl Narrowing {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Narrowing::default()
    }
}

/// `POST /v1/applications/{id}/decision`: the review's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplicationDecision {
    /// True approves (issuing the grant), false rejects.
    pub approve: bool,
    /// The reasons, told to the applicant (always needed).
    pub reason: String,
    /// Narrower terms than those asked for (approval only).
    #[serde(default)]
    pub narrowing: Narrowing,
}

/// `POST /v1/applications/{id}/feedback`: the applicant's feedback on the
/// grant's use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplicationFeedback {
    /// 1 (poor) to 5 (good).
    pub rating: u8,
    pub text: String,
}

/// `GET /v1/applications`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Applications {
    pub applications: Vec<Application>,
}

/// One application, after a step or as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApplicationShown {
    pub application: Application,
}
