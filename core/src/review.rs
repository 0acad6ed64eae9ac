//! Quarantine and review: outputs checked, queued, shown to reviewers and decided.

use super::*;

impl Domain {
    /// Places an emitted output in quarantine.
    pub(crate) fn quarantine(
        &self,
        actor: &str,
        job_id: &str,
        grant_id: &str,
        datasets: &[OpenDataset],
        name: &str,
        table: &udf_sdk::Table,
    ) -> Result<String, DomainError> {
        self.quarantine_as(
            actor,
            Quarantine {
                job_id,
                grant_id,
                datasets,
                name,
                kind: "table",
                extra_findings: Vec::new(),
                disclosure: None,
            },
            table,
        )
    }

    /// Places an output of any kind in quarantine, with the automatic
    /// findings and, for the reviewer, what its disclosure control did.
    pub(crate) fn quarantine_as(
        &self,
        actor: &str,
        q: Quarantine<'_>,
        table: &udf_sdk::Table,
    ) -> Result<String, DomainError> {
        let bytes = udf_sdk::abi::encode_table(table);
        let sha = sha256_hex(&bytes);
        let id = new_id("out");
        let mut findings = self.check_output(q.grant_id, q.datasets, table)?;
        findings.extend(q.extra_findings);
        let findings_json =
            serde_json::to_string(&findings).map_err(|e| DomainError::Internal(e.to_string()))?;
        let disclosure = q.disclosure.map(|d| d.to_string());
        let body = json!({
            "output": id, "job": q.job_id, "name": q.name, "kind": q.kind, "sha256": sha,
            "rows": table.rows(), "columns": table.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
            "findings": findings.iter().map(|f| json!({"kind": f.kind, "column": f.column, "row": f.row, "blocking": f.blocking})).collect::<Vec<_>>(),
        });
        self.commit_recorded(actor, "output.quarantined", |tx| {
            store::review::insert_output(
                tx,
                &store::review::NewOutput {
                    id: &id,
                    job: q.job_id,
                    name: q.name,
                    data: &bytes,
                    sha256: &sha,
                    findings: &findings_json,
                    created_at: &self.now_rfc3339(),
                    kind: q.kind,
                    disclosure: disclosure.as_deref(),
                },
            )?;
            Ok(Change::Record(body, ()))
        })?;
        Ok(id)
    }

    /// An output's kind (`table`, `outcome` or `extract`) and, for an
    /// extract, what its disclosure control did (for reviewers only).
    pub fn output_details(
        &self,
        output_id: &str,
    ) -> Result<(String, Option<serde_json::Value>), DomainError> {
        let (kind, disclosure) = store::review::kind_and_disclosure(&lock(&self.db), output_id)?
            .ok_or_else(|| DomainError::NotFound {
                what: "output",
                id: output_id.to_string(),
                list: "review list",
            })?;
        let disclosure = disclosure
            .map(|d| serde_json::from_str(&d))
            .transpose()
            .map_err(|e| DomainError::Damaged {
                what: format!("the disclosure report of `{output_id}`"),
                detail: e.to_string(),
            })?;
        Ok((kind, disclosure))
    }

    /// Runs the automatic output checks against the prohibited values of
    /// the grant's datasets and the grant's earlier releases.
    pub(crate) fn check_output(
        &self,
        grant_id: &str,
        datasets: &[OpenDataset],
        table: &udf_sdk::Table,
    ) -> Result<Vec<unseen_policy::checks::Finding>, DomainError> {
        let mut indexes = Vec::new();
        for dataset in datasets {
            let cached = lock(&self.indexes).get(&dataset.name).cloned();
            let index = match cached {
                Some(index) => index,
                None => {
                    let path = self.dir.join(format!("data/{}.prohibited", dataset.name));
                    let index = Arc::new(data::IndexFile::open(&path)?);
                    lock(&self.indexes).insert(dataset.name.clone(), Arc::clone(&index));
                    index
                }
            };
            indexes.push((index, data::ValueHasher::new(&dataset.key)));
        }
        let hashes: Vec<_> = indexes
            .iter()
            .map(|(_, hasher)| move |v: &str| hasher.hash(v))
            .collect();
        let earlier: Vec<udf_sdk::Table> =
            store::review::approved_tables(&lock(&self.db), grant_id)?
                .iter()
                .filter_map(|b| udf_sdk::abi::decode_table(b).ok())
                .collect();
        let ctx = unseen_policy::checks::CheckContext {
            prohibited: indexes
                .iter()
                .zip(&hashes)
                .map(|((index, _), hash)| (index.as_ref() as _, hash as _))
                .collect(),
            min_group_size: datasets
                .iter()
                .map(|d| d.manifest.min_group_size)
                .max()
                .unwrap_or(0),
            earlier: &earlier,
        };
        Ok(unseen_policy::checks::check_output(table, &ctx))
    }

    /// The automatic findings attached to an output.
    pub fn findings(&self, output_id: &str) -> Result<Vec<serde_json::Value>, DomainError> {
        let text = store::review::findings(&lock(&self.db), output_id)?.ok_or_else(|| {
            DomainError::NotFound {
                what: "output",
                id: output_id.to_string(),
                list: "review list",
            }
        })?;
        serde_json::from_str(&text).map_err(|e| DomainError::Damaged {
            what: format!("the findings of `{output_id}`"),
            detail: e.to_string(),
        })
    }

    /// The review queue: every quarantined output with its kind, automatic
    /// findings, the job's module hash or SQL, how the job ended (its
    /// ending, error, fuel, queries and logs: what its developer sees only
    /// once its outcome is approved), spend, approvals so far, a diff
    /// against the grant's latest release of the same name and, for an
    /// extract, what its disclosure control did.
    pub fn review_queue(&self, actor: &str) -> Result<Vec<serde_json::Value>, DomainError> {
        self.require(actor, Role::Reviewer, "read the review queue")?;
        let rows = store::review::quarantined(&lock(&self.db))?;
        let mut queue = Vec::with_capacity(rows.len());
        for store::review::Quarantined {
            output,
            name,
            kind,
            job,
            grant,
        } in rows
        {
            let (_, _, table) = self.output(&output)?;
            let earlier = store::review::latest_approved(&lock(&self.db), &grant, &name, &kind)?;
            let diff = earlier.and_then(|(id, bytes)| {
                udf_sdk::abi::decode_table(&bytes)
                    .ok()
                    .map(|before| crate::releases::table_diff(&id, &before, &table))
            });
            let approvals = store::review::approvals(&lock(&self.db), &output)?;
            let required = self.grant(&grant)?.approvals_required;
            let view = self.job(actor, &job)?;
            let (_, disclosure) = self.output_details(&output)?;
            queue.push(json!({
                "output": output, "name": name, "kind": kind, "job": job, "grant": grant,
                "submitter": view.submitter, "module_sha256": view.module_sha256, "sql": view.sql,
                "job_status": view.status, "job_ending": view.ending, "job_error": view.error,
                "fuel_used": view.fuel_used, "queries": view.queries, "epsilon_spent": view.epsilon_spent,
                "rows": table.rows(), "columns": table.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
                "findings": self.findings(&output)?, "approvals": approvals, "approvals_required": required,
                "diff": diff, "guest_logs": view.logs, "disclosure": disclosure,
            }));
        }
        Ok(queue)
    }

    /// Reads a quarantined or released output.
    pub fn output(&self, id: &str) -> Result<(String, String, udf_sdk::Table), DomainError> {
        let (name, status, data) =
            store::review::output(&lock(&self.db), id)?.ok_or_else(|| DomainError::NotFound {
                what: "output",
                id: id.to_string(),
                list: "review list",
            })?;
        let table = udf_sdk::abi::decode_table(&data).map_err(|e| DomainError::Damaged {
            what: format!("stored output `{id}`"),
            detail: e.to_string(),
        })?;
        Ok((name, status, table))
    }

    /// A reviewer approves or rejects a quarantined output. Approval signs a release.
    pub fn review(
        &self,
        reviewer: &str,
        output_id: &str,
        approve: bool,
        reason: &str,
    ) -> Result<Option<ReleaseRecord>, DomainError> {
        self.require(reviewer, Role::Reviewer, "review outputs")?;
        if reason.trim().is_empty() {
            return Err(DomainError::ReasonRequired {
                action: "a review",
                examples: "",
            });
        }
        // One decision per output at a time: a second reviewer deciding the
        // same output meanwhile is told to look again (it may be released).
        let _claim = ReviewClaim::take(&self.reviewing, output_id).ok_or_else(|| {
            DomainError::NotQuarantined {
                output: output_id.to_string(),
                status: "being decided by another reviewer right now".into(),
            }
        })?;
        let row = store::review::to_review(&lock(&self.db), output_id)?;
        let Some(store::review::ToReview {
            status,
            job,
            submitter,
            output_sha256: output_sha,
            module: module_sha,
            sql: job_sql,
            grant: grant_id,
            name,
        }) = row
        else {
            return Err(DomainError::NotFound {
                what: "output",
                id: output_id.to_string(),
                list: "review list",
            });
        };
        if submitter == reviewer {
            self.record(
                reviewer,
                "review.refused",
                json!({"output": output_id, "job": job, "reason": "reviewer submitted the job"}),
            )?;
            return Err(DomainError::SelfReview {
                reviewer: reviewer.to_string(),
                job,
            });
        }
        // An approval whose signing failed (a full disk, say) left the
        // output approved without a release: approving again finishes it.
        let resuming = approve && status == "approved" && !self.has_release(output_id)?;
        if status != "quarantined" && !resuming {
            return Err(DomainError::NotQuarantined {
                output: output_id.to_string(),
                status,
            });
        }
        if approve {
            let blocking: Vec<String> = self
                .findings(output_id)?
                .iter()
                .filter(|f| f["blocking"] == true)
                .map(|f| {
                    f["detail"]
                        .as_str()
                        .unwrap_or("blocking finding")
                        .to_string()
                })
                .collect();
            if !blocking.is_empty() {
                self.record(
                    reviewer,
                    "review.blocked",
                    json!({"output": output_id, "job": job, "blocking_findings": blocking.len()}),
                )?;
                return Err(DomainError::Blocked {
                    output: output_id.to_string(),
                    findings: blocking.join("; "),
                });
            }
        }
        let at = self.now_rfc3339();
        let grant_now = self.grant(&grant_id)?;
        if approve && let Some(at) = &grant_now.revoked_at {
            return Err(DomainError::Grant {
                grant: grant_id.clone(),
                reason: format!("was revoked at {at}; its outputs can only be rejected"),
            });
        }
        let required = grant_now.approvals_required;
        // Checked and written under one lock and transaction, so two
        // reviewers approving at once are counted exactly.
        let (approvers, complete, review_index) = if resuming {
            let approvers = store::review::approvers(&lock(&self.db), output_id)?;
            let index = self.record(
                reviewer,
                "review.release_resumed",
                json!({"output": output_id, "job": job, "reason": reason}),
            )?;
            (approvers, true, index)
        } else {
            self.decide(reviewer, output_id, &job, approve, reason, required, &at)?
        };
        if !approve || !complete {
            return Ok(None);
        }
        self.sign_release(SignRequest {
            reviewer,
            output_id,
            job: &job,
            submitter: &submitter,
            output_sha: &output_sha,
            module_sha: module_sha.as_deref(),
            job_sql: job_sql.as_deref(),
            grant_id: &grant_id,
            name: &name,
            approvers: &approvers,
            review_index,
            at: &at,
        })
        .map(Some)
    }

    pub(crate) fn has_release(&self, output_id: &str) -> Result<bool, DomainError> {
        Ok(store::review::has_release(&lock(&self.db), output_id)?)
    }

    /// Records one reviewer's decision under one lock and transaction, so
    /// two reviewers approving at once are counted exactly. Returns the
    /// approvers so far, whether the decision is final, and its ledger index.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn decide(
        &self,
        reviewer: &str,
        output_id: &str,
        job: &str,
        approve: bool,
        reason: &str,
        required: u32,
        at: &str,
    ) -> Result<(Vec<String>, bool, u64), DomainError> {
        let decision = if approve { "approved" } else { "rejected" };
        let ((approvers, complete), review_index) =
            self.commit_recorded(reviewer, &format!("review.{decision}"), |tx| {
            let status = store::review::status(tx, output_id)?;
            if status != "quarantined" {
                return Err(DomainError::NotQuarantined {
                    output: output_id.to_string(),
                    status,
                });
            }
            let mut approvers = store::review::approvers(tx, output_id)?;
            if approve && approvers.iter().any(|a| a == reviewer) {
                return Err(DomainError::AlreadyApproved {
                    reviewer: reviewer.to_string(),
                    output: output_id.to_string(),
                    required,
                });
            }
            if approve {
                approvers.push(reviewer.to_string());
            }
            let complete = !approve || approvers.len() >= required as usize;
            if complete {
                store::review::set_status(tx, output_id, decision)?;
            }
            store::review::insert_review(tx, output_id, reviewer, decision, reason, at)?;
            Ok(Change::Record(
                json!({"output": output_id, "job": job, "reason": reason, "approvals": approvers.len(), "approvals_required": required}),
                (approvers, complete),
            ))
        })?;
        let review_index = review_index
            .ok_or_else(|| DomainError::Internal("the review decision was not recorded".into()))?;
        Ok((approvers, complete, review_index))
    }
}
