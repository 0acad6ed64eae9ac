//! Budgets: charging every layer at once, open-query windows, and the spends each user may see.

use super::*;

impl Domain {
    /// Charges a spend to every budget layer it names — the grant (and
    /// its delta), each dataset the measurement reads and the grant's
    /// developer — and records it as a `kind` entry with `body` (the
    /// datasets and the spend are added to it), in one transaction with
    /// the entry: all or none ([`Domain::commit_recorded`]). Returns the
    /// layer that was short and its id, if any (nothing is spent or
    /// recorded then). The one path by which epsilon is spent.
    pub(crate) fn charge(
        &self,
        actor: &str,
        kind: &str,
        spend: &Spend<'_>,
        mut body: serde_json::Value,
    ) -> Result<Option<(&'static str, String)>, DomainError> {
        body["datasets"] = json!(spend.datasets);
        body["epsilon"] = json!(spend.epsilon);
        if spend.delta > 0.0 {
            body["delta"] = json!(spend.delta);
        }
        let (short, _) = self.commit_recorded(actor, kind, |tx| {
            Ok(match charge_layers(tx, spend, &self.now_rfc3339())? {
                // Dropping the transaction rolls back the layers already charged.
                Some(short) => Change::Abandon(Some(short)),
                None => Change::Record(body, None),
            })
        })?;
        Ok(short)
    }

    /// Counts one open-column query against `grant`'s limit, or says why it
    /// may not run (nothing is counted then). Open-column queries spend no
    /// epsilon, so without this a grant could run them without end; the
    /// count and the check are one transaction, so concurrent queries
    /// cannot pass the limit together.
    pub(crate) fn count_open_query(
        &self,
        grant: &Grant,
    ) -> Result<Option<PolicyError>, DomainError> {
        let now = i64::try_from(self.unix_now()).unwrap_or(i64::MAX);
        let window = i64::from(grant.open_query_window);
        let mut db = lock(&self.db);
        let tx = db.transaction()?;
        // What fell out of the window no longer counts, and need not be kept.
        store::budget::forget_open_queries_before(&tx, &grant.id, now - window)?;
        if let Some(max) = grant.max_open_queries {
            let (used, oldest) = store::budget::open_queries_kept(&tx, &grant.id)?;
            if used >= i64::from(max) {
                let wait = oldest.map_or(window, |at| (at + window - now).max(1));
                return Ok(Some(PolicyError::Budget(format!(
                    "grant `{}` allows {max} open-column queries per {window} s and has used them; nothing was run. The next one is allowed in {wait} s, or ask the data provider for a higher `--max-open-queries`",
                    grant.id
                ))));
            }
        }
        store::budget::record_open_query(&tx, &grant.id, now)?;
        tx.commit()?;
        Ok(None)
    }

    /// Open-column queries counted against `grant`'s limit now.
    pub(crate) fn open_queries_in_window(&self, grant: &Grant) -> Result<u64, DomainError> {
        let now = i64::try_from(self.unix_now()).unwrap_or(i64::MAX);
        let n = store::budget::open_queries_after(
            &lock(&self.db),
            &grant.id,
            now - i64::from(grant.open_query_window),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Sets the total epsilon of a dataset or developer layer (admins only).
    pub fn set_budget(
        &self,
        actor: &str,
        layer: BudgetLayer,
        id: &str,
        epsilon_total: f64,
    ) -> Result<(), DomainError> {
        self.require(actor, Role::Admin, "set budgets")?;
        if !(epsilon_total.is_finite() && epsilon_total > 0.0) {
            return Err(DomainError::OutOfRange {
                what: "epsilon",
                value: epsilon_total.to_string(),
                expected: "give a positive number".into(),
            });
        }
        let (what, list) = match layer {
            BudgetLayer::Dataset => ("dataset", "dataset list"),
            BudgetLayer::Developer => ("developer", "user list"),
        };
        self.commit_recorded(actor, "budget.set", |tx| {
            if !store::budget::set_total(tx, layer, id, epsilon_total)? {
                return Err(DomainError::NotFound {
                    what,
                    id: id.to_string(),
                    list,
                });
            }
            Ok(Change::Record(
                json!({"layer": what, "id": id, "epsilon_total": epsilon_total}),
                (),
            ))
        })?;
        Ok(())
    }

    /// What jobs whose end their developers have not been shown yet
    /// (queued, running, or ended before their shown end) have spent, by
    /// budget layer. Developers' views of budgets leave it out: a job's
    /// spend grows as each query is charged, and when it grows would time
    /// the job's queries; it is counted once the job's end is shown.
    pub(crate) fn unshown_spends(&self) -> Result<UnshownSpends, DomainError> {
        let db = lock(&self.db);
        let rows = store::budget::unshown_spends(&db, self.now_ms())?;
        let mut unshown = UnshownSpends::default();
        for store::budget::UnshownSpend {
            grant,
            developer,
            epsilon,
            delta,
            datasets,
        } in rows
        {
            let g = unshown.grants.entry(grant).or_default();
            g.0 += epsilon;
            g.1 += delta;
            *unshown.developers.entry(developer).or_default() += epsilon;
            let datasets: Vec<String> = serde_json::from_str(&datasets).unwrap_or_default();
            for d in datasets {
                *unshown.datasets.entry(d).or_default() += epsilon;
            }
        }
        Ok(unshown)
    }

    /// A grant's spends as `actor` may see them: a developer without the
    /// spends of jobs whose end is not shown yet ([`Domain::unshown_spends`]).
    pub(crate) fn grant_as_seen_by(
        &self,
        actor: &str,
        mut grant: Grant,
    ) -> Result<Grant, DomainError> {
        if self.role_of(actor)? == Role::Developer {
            let (epsilon, delta) = self.unshown_spends()?.grant(&grant.id);
            grant.epsilon_spent = (grant.epsilon_spent - epsilon).max(0.0);
            grant.delta_spent = (grant.delta_spent - delta).max(0.0);
        }
        Ok(grant)
    }

    /// [`Domain::budget_layers`] as `actor` may see them: a developer
    /// without the spends of jobs whose end is not shown yet.
    pub fn budget_layers_seen_by(
        &self,
        actor: &str,
        grant_id: &str,
    ) -> Result<Vec<BudgetStatus>, DomainError> {
        let mut layers = self.budget_layers(grant_id)?;
        if self.role_of(actor)? == Role::Developer {
            let unshown = self.unshown_spends()?;
            for layer in &mut layers {
                let hidden = match layer.layer.as_str() {
                    "grant" => unshown.grant(&layer.id).0,
                    "dataset" => unshown.datasets.get(&layer.id).copied().unwrap_or(0.0),
                    _ => unshown.developers.get(&layer.id).copied().unwrap_or(0.0),
                };
                layer.spent = (layer.spent - hidden).max(0.0);
            }
        }
        Ok(layers)
    }

    /// Epsilon spent and left on a grant as `actor` may see them (see
    /// [`Domain::grant_as_seen_by`]).
    pub fn budget_seen_by(&self, actor: &str, grant_id: &str) -> Result<(f64, f64), DomainError> {
        let g = self.grant_as_seen_by(actor, self.grant(grant_id)?)?;
        Ok((
            g.epsilon_spent,
            (g.epsilon_total - g.epsilon_spent).max(0.0),
        ))
    }

    /// Spent and total epsilon at every layer above a grant: the grant,
    /// each of its datasets and its developer.
    pub fn budget_layers(&self, grant_id: &str) -> Result<Vec<BudgetStatus>, DomainError> {
        let g = self.grant(grant_id)?;
        let db = lock(&self.db);
        let mut layers = vec![BudgetStatus {
            layer: "grant".into(),
            id: g.id.clone(),
            spent: g.epsilon_spent,
            total: Some(g.epsilon_total),
        }];
        for dataset in g.datasets() {
            let (spent, total) = store::budget::dataset_epsilon(&db, dataset)?;
            layers.push(BudgetStatus {
                layer: "dataset".into(),
                id: dataset.to_string(),
                spent,
                total,
            });
        }
        let (spent, total) = store::budget::user_epsilon(&db, &g.developer)?;
        layers.push(BudgetStatus {
            layer: "developer".into(),
            id: g.developer.clone(),
            spent,
            total,
        });
        Ok(layers)
    }

    /// Epsilon spent and left on a grant.
    pub fn budget(&self, grant_id: &str) -> Result<(f64, f64), DomainError> {
        let g = self.grant(grant_id)?;
        Ok((
            g.epsilon_spent,
            (g.epsilon_total - g.epsilon_spent).max(0.0),
        ))
    }
}
