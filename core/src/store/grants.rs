//! Grants and their usage controls.

use rusqlite::{Connection, OptionalExtension, params};

use crate::Grant;
use unseen_api::GrantRequest;

/// The columns [`from_row`] reads, in its order.
pub(crate) const COLUMNS: &str = "id, dataset, developer, scenario, purpose, epsilon_total, epsilon_spent, query_epsilon, issued_at, expires_at, revoked_at, allow_modules, allow_sql, allow_extracts, windows, designated, max_runs, runs, max_downloads, downloads, derived_reuse, approvals_required, columns, join_datasets, delta_total, query_delta, delta_spent, allow_udfs, max_open_queries, open_query_window, open_queries, udf_row_instructions";

/// A grant from a row of [`COLUMNS`].
pub(crate) fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Grant> {
    let list = |i: usize| -> rusqlite::Result<Vec<String>> {
        let text: String = r.get(i)?;
        Ok(serde_json::from_str(&text).unwrap_or_default())
    };
    Ok(Grant {
        id: r.get(0)?,
        dataset: r.get(1)?,
        developer: r.get(2)?,
        scenario: r.get(3)?,
        purpose: r.get(4)?,
        epsilon_total: r.get(5)?,
        epsilon_spent: r.get(6)?,
        query_epsilon: r.get(7)?,
        issued_at: r.get(8)?,
        expires_at: r.get(9)?,
        revoked_at: r.get(10)?,
        allow_modules: r.get(11)?,
        allow_sql: r.get(12)?,
        allow_extracts: r.get(13)?,
        windows: list(14)?,
        designated: list(15)?,
        max_runs: r.get(16)?,
        runs: r.get(17)?,
        max_downloads: r.get(18)?,
        downloads: r.get(19)?,
        derived_reuse: r.get(20)?,
        approvals_required: r.get(21)?,
        columns: list(22)?,
        join_datasets: list(23)?,
        delta_total: r.get(24)?,
        query_delta: r.get(25)?,
        delta_spent: r.get(26)?,
        allow_udfs: r.get(27)?,
        max_open_queries: r.get(28)?,
        open_query_window: r.get(29)?,
        open_queries: r.get::<_, i64>(30).map(|n| u64::try_from(n).unwrap_or(0))?,
        udf_row_instructions: u64::try_from(r.get::<_, i64>(31)?).unwrap_or(1),
    })
}

/// A grant by id.
pub(crate) fn by_id(db: &Connection, id: &str) -> rusqlite::Result<Option<Grant>> {
    db.prepare_cached(&format!("SELECT {COLUMNS} FROM grants WHERE id = ?1"))?
        .query_row([id], from_row)
        .optional()
}

/// Every grant, oldest first.
pub(crate) fn all(db: &Connection) -> rusqlite::Result<Vec<Grant>> {
    let mut stmt = db.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM grants ORDER BY issued_at, id"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    rows.collect()
}

/// What a new grant row holds beyond its request.
pub(crate) struct Issued<'a> {
    pub id: &'a str,
    pub issued_by: &'a str,
    pub issued_at: &'a str,
    pub expires_at: &'a str,
    /// Zero when the grant has no delta budget.
    pub query_delta: f64,
}

/// Adds a grant as requested.
pub(crate) fn insert(
    db: &Connection,
    r: &GrantRequest,
    issued: &Issued<'_>,
) -> rusqlite::Result<()> {
    let json = |list: &[String]| serde_json::to_string(list).unwrap_or_else(|_| "[]".into());
    db.prepare_cached(
        "INSERT INTO grants(id, dataset, developer, purpose, epsilon_total, query_epsilon, allow_extracts, issued_by, issued_at, expires_at,
            scenario, allow_modules, allow_sql, windows, designated, max_runs, max_downloads, derived_reuse, approvals_required, columns, join_datasets, delta_total, query_delta, allow_udfs,
            max_open_queries, open_query_window, udf_row_instructions)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)")?.execute(
        params![issued.id, r.dataset, r.developer, r.purpose, r.epsilon_total, r.query_epsilon, r.allow_extracts, issued.issued_by, issued.issued_at, issued.expires_at,
            r.scenario, r.allow_modules, r.allow_sql, json(&r.windows), json(&r.designated), r.max_runs, r.max_downloads, r.derived_reuse, r.approvals_required, json(&r.columns), json(&r.join_datasets),
            r.delta_total, issued.query_delta, r.allow_udfs,
            r.max_open_queries, r.open_query_window, r.udf_row_instructions as i64],
    )?;
    Ok(())
}

/// Joins `dataset` to a grant: its queries may join it on the privacy
/// unit; a grant with a column scope gets the dataset's `columns` added to it.
pub(crate) fn join_dataset(
    db: &Connection,
    grant: &str,
    dataset: &str,
    columns: &[String],
) -> rusqlite::Result<()> {
    db.prepare_cached(
        "UPDATE grants SET join_datasets = json_insert(join_datasets, '$[#]', ?2) WHERE id = ?1",
    )?
    .execute(rusqlite::params![grant, dataset])?;
    for column in columns {
        db.prepare_cached(
            "UPDATE grants SET columns = json_insert(columns, '$[#]', ?2) WHERE id = ?1 AND json_array_length(columns) > 0")?.execute(
            rusqlite::params![grant, format!("{dataset}.{column}")],
        )?;
    }
    Ok(())
}
