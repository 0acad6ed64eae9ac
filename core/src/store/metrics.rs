//! What the metrics read of budgets when scraped, beyond jobs (see
//! `jobs::count_by_status`).

use rusqlite::Connection;

/// `(key, epsilon_spent)` of every row of a two-column query.
fn spent(db: &Connection, sql: &str) -> rusqlite::Result<Vec<(String, f64)>> {
    let mut stmt = db.prepare_cached(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?)))?;
    rows.collect()
}

/// Epsilon spent per grant: `(grant, epsilon)`.
pub(crate) fn grant_epsilon_spent(db: &Connection) -> rusqlite::Result<Vec<(String, f64)>> {
    spent(db, "SELECT id, epsilon_spent FROM grants")
}

/// Epsilon spent per dataset layer: `(dataset, epsilon)`.
pub(crate) fn dataset_epsilon_spent(db: &Connection) -> rusqlite::Result<Vec<(String, f64)>> {
    spent(db, "SELECT name, epsilon_spent FROM datasets")
}
