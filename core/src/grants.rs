//! Grants: issuing them with their usage controls, and reading them.

use super::*;

/// What is wrong with a grant request: one variant per mistake.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GrantProblem {
    #[error("user `{0}` is not a developer; grants go to developers")]
    NotADeveloper(String),
    #[error(
        "designated user `{0}` is not an active developer; only developers run jobs and download releases"
    )]
    DesignatedNotADeveloper(String),
    #[error("dataset `{0}` is named twice; list each dataset of the grant once")]
    DatasetTwice(String),
    #[error(
        "dataset `{dataset}` has privacy unit `{unit}` but `{primary}` has `{primary_unit}`; a grant joins only datasets about the same privacy unit"
    )]
    OtherPrivacyUnit {
        dataset: String,
        unit: String,
        primary: String,
        primary_unit: String,
    },
    #[error(
        "column `{column}` is in no dataset of the grant; name a column or `dataset.column` among {known}"
    )]
    UnknownColumn { column: String, known: String },
    #[error("a grant needs a purpose: the one scenario it serves")]
    NoPurpose,
    #[error("budget must satisfy 0 < query epsilon ({query}) <= total epsilon ({total})")]
    Epsilon { query: f64, total: f64 },
    #[error(
        "validity of {days} days is outside 1..={max_days}: grants last at most 3 years, or 5 with extended validity"
    )]
    Validity { days: u32, max_days: u32 },
    #[error("approvals_required is {0}; a release needs 1 or 2 independent approvals")]
    Approvals(u32),
    #[error(
        "delta must satisfy 0 <= total delta ({total}) < 1, and 0 < query delta ({query}) <= total delta when the total is above 0"
    )]
    Delta { total: f64, query: f64 },
    #[error("run and download limits must be at least 1 (omit them for no limit)")]
    ZeroLimit,
    #[error(
        "the open-query window of {0} s is outside 1..={MAX_OPEN_QUERY_WINDOW} (one second to 31 days)"
    )]
    OpenQueryWindow(u32),
    #[error(
        "udf_row_instructions is {0}; a UDF's cap per row is 1 to {MAX_UDF_ROW_INSTRUCTIONS} instructions (the default is the most)"
    )]
    UdfRowInstructions(u64),
    #[error(
        "udf_row_instructions limits UDFs, which this grant does not allow; add allow_udfs (--allow-udfs) or leave the cap out"
    )]
    UdfCapWithoutUdfs,
    #[error("the grant allows no operation; allow modules, SQL or extracts")]
    NoOperation,
    #[error(
        "dataset `{0}` was imported for another grant and belongs to it alone; propose the data again for this one (`dataset import`)"
    )]
    ImportedElsewhere(String),
}

impl Domain {
    /// Issues a grant to a developer over one dataset with an epsilon budget
    /// and the usage controls of the authorization agreement.
    pub fn issue_grant(&self, actor: &str, request: &GrantRequest) -> Result<String, DomainError> {
        self.require(actor, Role::Admin, "issue grants")?;
        self.issue_checked(actor, request, None)
    }

    /// Checks that `r` could be issued as a grant now: its users, datasets,
    /// columns, budget, term and controls.
    pub(crate) fn check_grant_request(&self, r: &GrantRequest) -> Result<(), DomainError> {
        if self.role_of(&r.developer)? != Role::Developer {
            return Err(GrantProblem::NotADeveloper(r.developer.clone()).into());
        }
        for user in &r.designated {
            // One answer for an unknown, a disabled and a non-developer
            // user: a developer applying must not learn who else exists
            // or what role they hold.
            match self.role_of(user) {
                Ok(Role::Developer) => {}
                Ok(_) | Err(DomainError::NotFound { .. } | DomainError::UserDisabled { .. }) => {
                    return Err(GrantProblem::DesignatedNotADeveloper(user.clone()).into());
                }
                Err(e) => return Err(e),
            }
        }
        for name in std::iter::once(&r.dataset).chain(&r.join_datasets) {
            if store::imports::is_imported(&lock(&self.db), name)? {
                return Err(GrantProblem::ImportedElsewhere(name.clone()).into());
            }
        }
        let primary = self.open_dataset(&r.dataset)?;
        let mut datasets = vec![primary];
        for name in &r.join_datasets {
            if name == &r.dataset || datasets.iter().any(|d| &d.name == name) {
                return Err(GrantProblem::DatasetTwice(name.clone()).into());
            }
            let joined = self.open_dataset(name)?;
            let unit = &datasets[0].manifest.privacy_unit;
            if &joined.manifest.privacy_unit != unit {
                return Err(GrantProblem::OtherPrivacyUnit {
                    dataset: name.clone(),
                    unit: joined.manifest.privacy_unit.clone(),
                    primary: r.dataset.clone(),
                    primary_unit: unit.clone(),
                }
                .into());
            }
            datasets.push(joined);
        }
        for column in &r.columns {
            let found = datasets.iter().any(|d| {
                d.manifest
                    .columns
                    .iter()
                    .any(|c| data::in_scope(std::slice::from_ref(column), &d.name, &c.name))
            });
            if !found {
                let known: Vec<String> = datasets
                    .iter()
                    .flat_map(|d| {
                        d.manifest
                            .columns
                            .iter()
                            .map(move |c| format!("{}.{}", d.name, c.name))
                    })
                    .collect();
                return Err(GrantProblem::UnknownColumn {
                    column: column.clone(),
                    known: known.join(", "),
                }
                .into());
            }
        }
        if r.purpose.trim().is_empty() {
            return Err(GrantProblem::NoPurpose.into());
        }
        if !(r.epsilon_total.is_finite()
            && r.epsilon_total > 0.0
            && r.query_epsilon.is_finite()
            && r.query_epsilon > 0.0
            && r.query_epsilon <= r.epsilon_total)
        {
            return Err(GrantProblem::Epsilon {
                query: r.query_epsilon,
                total: r.epsilon_total,
            }
            .into());
        }
        let max_days = if r.extended_validity {
            5 * 366
        } else {
            3 * 366
        };
        if r.valid_days == 0 || r.valid_days > max_days {
            return Err(GrantProblem::Validity {
                days: r.valid_days,
                max_days,
            }
            .into());
        }
        for w in &r.windows {
            access::parse_window(w)?;
        }
        if !(1..=2).contains(&r.approvals_required) {
            return Err(GrantProblem::Approvals(r.approvals_required).into());
        }
        if !(0.0..1.0).contains(&r.delta_total)
            || (r.delta_total > 0.0 && !(r.query_delta > 0.0 && r.query_delta <= r.delta_total))
        {
            return Err(GrantProblem::Delta {
                total: r.delta_total,
                query: r.query_delta,
            }
            .into());
        }
        if r.max_runs == Some(0) || r.max_downloads == Some(0) {
            return Err(GrantProblem::ZeroLimit.into());
        }
        if !(1..=MAX_OPEN_QUERY_WINDOW).contains(&r.open_query_window) {
            return Err(GrantProblem::OpenQueryWindow(r.open_query_window).into());
        }
        if !(1..=MAX_UDF_ROW_INSTRUCTIONS).contains(&r.udf_row_instructions) {
            return Err(GrantProblem::UdfRowInstructions(r.udf_row_instructions).into());
        }
        if !r.allow_udfs && r.udf_row_instructions != MAX_UDF_ROW_INSTRUCTIONS {
            return Err(GrantProblem::UdfCapWithoutUdfs.into());
        }
        if !(r.allow_modules || r.allow_sql || r.allow_extracts) {
            return Err(GrantProblem::NoOperation.into());
        }
        Ok(())
    }

    /// Issues the grant `r` after checking it; with `approval`, in the same
    /// commit (and ledger entry) as that application's approval.
    pub(crate) fn issue_checked(
        &self,
        actor: &str,
        r: &GrantRequest,
        approval: Option<&applications::Approval<'_>>,
    ) -> Result<String, DomainError> {
        self.check_grant_request(r)?;
        let id = new_id("grant");
        let now = self.unix_now();
        let expires_at = util::rfc3339(now + u64::from(r.valid_days) * 86_400);
        let mut body = json!({
            "grant": id, "dataset": r.dataset, "join_datasets": r.join_datasets, "developer": r.developer, "scenario": r.scenario, "purpose": r.purpose,
            "epsilon_total": r.epsilon_total, "query_epsilon": r.query_epsilon, "expires_at": expires_at,
            "allow_modules": r.allow_modules, "allow_sql": r.allow_sql, "allow_extracts": r.allow_extracts,
            "allow_udfs": r.allow_udfs, "udf_row_instructions": r.udf_row_instructions, "windows": r.windows, "designated": r.designated, "columns": r.columns, "max_runs": r.max_runs,
            "max_downloads": r.max_downloads, "derived_reuse": r.derived_reuse,
            "approvals_required": r.approvals_required,
            "delta_total": r.delta_total, "query_delta": if r.delta_total > 0.0 { r.query_delta } else { 0.0 },
            "max_open_queries": r.max_open_queries, "open_query_window": r.open_query_window,
        });
        if let Some(a) = approval {
            body["application"] = json!(a.application);
            body["reason"] = json!(a.reason);
        }
        let issued_at = self.now_rfc3339();
        self.commit_recorded(actor, "grant.issued", |tx| {
            store::grants::insert(
                tx,
                r,
                &store::grants::Issued {
                    id: &id,
                    issued_by: actor,
                    issued_at: &issued_at,
                    expires_at: &expires_at,
                    query_delta: if r.delta_total > 0.0 {
                        r.query_delta
                    } else {
                        0.0
                    },
                },
            )?;
            if let Some(a) = approval {
                a.record(tx, actor, r, &id, &issued_at)?;
            }
            Ok(Change::Record(body, ()))
        })?;
        Ok(id)
    }

    /// Reads a grant.
    pub fn grant(&self, id: &str) -> Result<Grant, DomainError> {
        store::grants::by_id(&lock(&self.db), id)?.ok_or_else(|| DomainError::NotFound {
            what: "grant",
            id: id.to_string(),
            list: "grant list",
        })
    }
}
