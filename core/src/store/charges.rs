//! Charging a spend to its budget layers, in the caller's transaction.
//!
//! Each layer's update is conditional on the layer having the budget, so a
//! short layer changes nothing and the caller rolls the whole spend back.

use rusqlite::{Connection, params};

/// Adds `epsilon` to a live grant's spend if it stays within its total.
pub(crate) fn grant_epsilon(db: &Connection, grant: &str, epsilon: f64) -> rusqlite::Result<bool> {
    let changed = db.prepare_cached(
        "UPDATE grants SET epsilon_spent = epsilon_spent + ?2 WHERE id = ?1 AND epsilon_spent + ?2 <= epsilon_total + 1e-9 AND revoked_at IS NULL")?.execute(
        params![grant, epsilon],
    )?;
    Ok(changed == 1)
}

/// Adds `epsilon` to a dataset's spend if it stays within its total (if any).
pub(crate) fn dataset_epsilon(
    db: &Connection,
    dataset: &str,
    epsilon: f64,
) -> rusqlite::Result<bool> {
    let changed = db.prepare_cached(
        "UPDATE datasets SET epsilon_spent = epsilon_spent + ?2 WHERE name = ?1 AND (epsilon_total IS NULL OR epsilon_spent + ?2 <= epsilon_total + 1e-9)")?.execute(
        params![dataset, epsilon],
    )?;
    Ok(changed == 1)
}

/// Adds `epsilon` to a developer's spend if it stays within their total (if any).
pub(crate) fn developer_epsilon(
    db: &Connection,
    developer: &str,
    epsilon: f64,
) -> rusqlite::Result<bool> {
    let changed = db.prepare_cached(
        "UPDATE users SET epsilon_spent = epsilon_spent + ?2 WHERE id = ?1 AND (epsilon_total IS NULL OR epsilon_spent + ?2 <= epsilon_total + 1e-9)")?.execute(
        params![developer, epsilon],
    )?;
    Ok(changed == 1)
}

/// Adds `delta` to a grant's delta spend if it stays within its total.
pub(crate) fn grant_delta(db: &Connection, grant: &str, delta: f64) -> rusqlite::Result<bool> {
    let changed = db.prepare_cached(
        "UPDATE grants SET delta_spent = delta_spent + ?2 WHERE id = ?1 AND delta_spent + ?2 <= delta_total * (1 + 1e-9)")?.execute(
        params![grant, delta],
    )?;
    Ok(changed == 1)
}

/// The developer a grant was issued to.
pub(crate) fn grant_developer(db: &Connection, grant: &str) -> rusqlite::Result<String> {
    db.prepare_cached("SELECT developer FROM grants WHERE id = ?1")?
        .query_row([grant], |r| r.get(0))
}

/// One charged spend, as `spends` records it.
pub(crate) struct SpendRow<'a> {
    pub job: &'a str,
    pub grant: &'a str,
    pub epsilon: f64,
    pub delta: f64,
    pub query_sha256: &'a str,
    pub at: &'a str,
    /// The datasets charged, as a JSON array.
    pub datasets: &'a str,
}

/// Records a charged spend.
pub(crate) fn record_spend(db: &Connection, spend: &SpendRow<'_>) -> rusqlite::Result<()> {
    db.prepare_cached(
        "INSERT INTO spends(job_id, grant_id, epsilon, delta, query_sha256, at, datasets) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?.execute(
        params![spend.job, spend.grant, spend.epsilon, spend.delta, spend.query_sha256, spend.at, spend.datasets],
    )?;
    Ok(())
}
