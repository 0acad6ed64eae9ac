//! Users and their roles.

use rusqlite::{Connection, OptionalExtension, params};

/// How many users the store holds (none before the first admin).
pub(crate) fn count(db: &Connection) -> rusqlite::Result<i64> {
    db.prepare_cached("SELECT COUNT(*) FROM users")?
        .query_row([], |r| r.get(0))
}

/// A user's role as stored and whether the user is disabled.
pub(crate) fn role_and_disabled(
    db: &Connection,
    user: &str,
) -> rusqlite::Result<Option<(String, bool)>> {
    db.prepare_cached("SELECT role, disabled FROM users WHERE id = ?1")?
        .query_row([user], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? != 0)))
        .optional()
}

/// Adds a user; false when the id is taken (nothing changes then).
pub(crate) fn insert(
    db: &Connection,
    id: &str,
    name: &str,
    role: &str,
    org: &str,
    created_at: &str,
) -> rusqlite::Result<bool> {
    let inserted = db.prepare_cached(
        "INSERT OR IGNORE INTO users(id, name, role, org, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")?.execute(
        params![id, name, role, org, created_at],
    )?;
    Ok(inserted == 1)
}
