//! Outside data brought in with approval: a developer proposes a file (a
//! bank's enterprise list with loan outcomes, a hospital's cohort) for use
//! under one of their grants; it is quarantined and checked, registered
//! only when a data provider approves it, joinable under that grant only on
//! the privacy unit and only below a DP aggregate, charged to its own
//! budget layer, and destroyed with the grant.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a proposed import stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportStatus {
    /// Quarantined and checked; waiting for a data provider.
    Proposed,
    /// Registered as a dataset joined to its grant.
    Approved,
    /// Refused; its quarantined file is deleted.
    Rejected,
    /// Registered, then destroyed with its grant (or by an admin).
    Destroyed,
}

impl ImportStatus {
    /// The word the API and the store use.
    pub fn as_str(self) -> &'static str {
        match self {
            ImportStatus::Proposed => "proposed",
            ImportStatus::Approved => "approved",
            ImportStatus::Rejected => "rejected",
            ImportStatus::Destroyed => "destroyed",
        }
    }

    /// The status a word names, if any.
    pub fn parse(word: &str) -> Option<ImportStatus> {
        [
            ImportStatus::Proposed,
            ImportStatus::Approved,
            ImportStatus::Rejected,
            ImportStatus::Destroyed,
        ]
        .into_iter()
        .find(|s| s.as_str() == word)
    }
}

impl std::fmt::Display for ImportStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What the checks of a proposed file found (counts, never values).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImportChecks {
    pub rows: u64,
    pub bytes: u64,
    /// The key column (the privacy unit the file joins on).
    pub key: String,
    /// The format its values were checked against, with check characters
    /// (`GB 32100-2015 unified social credit code`,
    /// `GB 11643-1999 citizen identity number`), or `non-empty`.
    pub key_format: String,
}

/// An import as its proposer, the providers and auditors see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Import {
    pub id: String,
    /// The dataset it becomes.
    pub dataset: String,
    /// The grant it is for; it is destroyed with it.
    pub grant: String,
    pub proposed_by: String,
    pub status: ImportStatus,
    pub source_sha256: String,
    pub checks: ImportChecks,
    pub proposed_at: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    pub reason: String,
    /// Its own budget layer, set at approval.
    pub epsilon_total: Option<f64>,
}

/// `POST /v1/imports`: a file proposed for a grant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    pub grant: String,
    /// The name the dataset would have (also its manifest's `name`).
    pub name: String,
    /// Its manifest (TOML): classes, types, bounds; its privacy unit is
    /// the key it joins on, and it may have no open column.
    pub manifest: String,
    /// The Parquet file, base64.
    pub parquet_base64: String,
}

/// `POST /v1/imports/{id}/decision`: a data provider's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportDecision {
    pub approve: bool,
    pub reason: String,
    /// The dataset's own budget layer (needed to approve).
    #[serde(default)]
    pub epsilon: Option<f64>,
}

/// `GET /v1/imports`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Imports {
    pub imports: Vec<Import>,
}

/// One import, after a step or as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImportShown {
    pub import: Import,
}
