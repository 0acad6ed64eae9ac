//! Pending ledger records: changes committed to the store whose entries
//! may not be in the ledger yet (see `crate::records`).

use rusqlite::{Connection, params};

/// Forgets a pending record whose entry is written.
pub(crate) fn delete(db: &Connection, id: &str) -> rusqlite::Result<()> {
    db.prepare_cached("DELETE FROM pending_records WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

/// A pending record's row.
pub(crate) struct PendingRow {
    pub id: String,
    pub kind: String,
    pub actor: String,
    pub time: String,
    /// The entry body as JSON text.
    pub body: String,
    pub ledger_from: i64,
}

/// Adds a pending record; `ledger_from` is the ledger's size before its
/// entry is appended.
pub(crate) fn insert(
    db: &Connection,
    [id, kind, actor, time, body]: [&str; 5],
    ledger_from: u64,
) -> rusqlite::Result<()> {
    db.prepare_cached(
        "INSERT INTO pending_records(id, kind, actor, time, body, ledger_from) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(
        params![id, kind, actor, time, body, ledger_from as i64],
    )?;
    Ok(())
}

/// Every pending record, in commit order.
pub(crate) fn all(db: &Connection) -> rusqlite::Result<Vec<PendingRow>> {
    let mut stmt = db.prepare_cached(
        "SELECT id, kind, actor, time, body, ledger_from FROM pending_records ORDER BY seq",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(PendingRow {
            id: r.get(0)?,
            kind: r.get(1)?,
            actor: r.get(2)?,
            time: r.get(3)?,
            body: r.get(4)?,
            ledger_from: r.get(5)?,
        })
    })?;
    rows.collect()
}

/// How many pending records the store holds.
#[cfg(test)]
pub(crate) fn count(db: &Connection) -> rusqlite::Result<i64> {
    db.query_row("SELECT COUNT(*) FROM pending_records", [], |r| r.get(0))
}
