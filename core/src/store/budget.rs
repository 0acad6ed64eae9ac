//! Privacy budgets: users', datasets' and grants' spends.

use rusqlite::{Connection, params};

use crate::BudgetLayer;

/// Forgets a grant's open-column queries at or before `cutoff` (Unix
/// seconds): they fell out of its window.
pub(crate) fn forget_open_queries_before(
    db: &Connection,
    grant: &str,
    cutoff: i64,
) -> rusqlite::Result<()> {
    db.prepare_cached("DELETE FROM open_queries WHERE grant_id = ?1 AND at <= ?2")?
        .execute(params![grant, cutoff])?;
    Ok(())
}

/// How many open-column queries a grant has kept, and when the oldest ran.
pub(crate) fn open_queries_kept(
    db: &Connection,
    grant: &str,
) -> rusqlite::Result<(i64, Option<i64>)> {
    db.prepare_cached("SELECT COUNT(*), MIN(at) FROM open_queries WHERE grant_id = ?1")?
        .query_row([grant], |r| Ok((r.get(0)?, r.get(1)?)))
}

/// Records an open-column query of a grant at `at` (Unix seconds) and adds
/// it to the grant's total.
pub(crate) fn record_open_query(db: &Connection, grant: &str, at: i64) -> rusqlite::Result<()> {
    db.prepare_cached("INSERT INTO open_queries(grant_id, at) VALUES (?1, ?2)")?
        .execute(params![grant, at])?;
    db.prepare_cached("UPDATE grants SET open_queries = open_queries + 1 WHERE id = ?1")?
        .execute([grant])?;
    Ok(())
}

/// How many open-column queries a grant ran after `after` (Unix seconds).
pub(crate) fn open_queries_after(
    db: &Connection,
    grant: &str,
    after: i64,
) -> rusqlite::Result<i64> {
    db.prepare_cached("SELECT COUNT(*) FROM open_queries WHERE grant_id = ?1 AND at > ?2")?
        .query_row(params![grant, after], |r| r.get(0))
}

/// Sets the total epsilon of a dataset, or of a user who is a developer;
/// false when there is no such dataset or developer.
pub(crate) fn set_total(
    db: &Connection,
    layer: BudgetLayer,
    id: &str,
    epsilon_total: f64,
) -> rusqlite::Result<bool> {
    let sql = match layer {
        BudgetLayer::Dataset => "UPDATE datasets SET epsilon_total = ?2 WHERE name = ?1",
        BudgetLayer::Developer => {
            "UPDATE users SET epsilon_total = ?2 WHERE id = ?1 AND role = 'developer'"
        }
    };
    Ok(db
        .prepare_cached(sql)?
        .execute(params![id, epsilon_total])?
        == 1)
}

/// One spend of a job whose end its developer has not been shown yet.
pub(crate) struct UnshownSpend {
    pub grant: String,
    pub developer: String,
    pub epsilon: f64,
    pub delta: f64,
    /// The datasets charged, as a JSON array.
    pub datasets: String,
}

/// The spends of jobs queued, running, or ended with their end shown
/// after `now_ms`.
pub(crate) fn unshown_spends(db: &Connection, now_ms: i64) -> rusqlite::Result<Vec<UnshownSpend>> {
    let mut stmt = db.prepare_cached(
        "SELECT s.grant_id, g.developer, s.epsilon, s.delta, s.datasets
             FROM jobs j JOIN spends s ON s.job_id = j.id JOIN grants g ON g.id = s.grant_id
             WHERE j.status IN ('queued', 'running') OR COALESCE(j.shown_end_ms, 0) > ?1",
    )?;
    let rows = stmt.query_map([now_ms], |r| {
        Ok(UnshownSpend {
            grant: r.get(0)?,
            developer: r.get(1)?,
            epsilon: r.get(2)?,
            delta: r.get(3)?,
            datasets: r.get(4)?,
        })
    })?;
    rows.collect()
}

/// A dataset's spent and total epsilon (no total: unlimited).
pub(crate) fn dataset_epsilon(db: &Connection, name: &str) -> rusqlite::Result<(f64, Option<f64>)> {
    db.prepare_cached("SELECT epsilon_spent, epsilon_total FROM datasets WHERE name = ?1")?
        .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
}

/// A user's spent and total epsilon (no total: unlimited).
pub(crate) fn user_epsilon(db: &Connection, id: &str) -> rusqlite::Result<(f64, Option<f64>)> {
    db.prepare_cached("SELECT epsilon_spent, epsilon_total FROM users WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
}
