//! Executors enrolled to read data on a cluster.

use rusqlite::{Connection, params};

/// One enrolled executor's row; its secret stays wrapped by the master key.
#[derive(Debug, Clone)]
pub(crate) struct ExecutorRow {
    pub name: String,
    pub enrolment: String,
    pub wrapped_secret: Vec<u8>,
    pub enrolled_at: String,
    pub enrolled_by: String,
    pub revoked_at: Option<String>,
}

/// Enrols `name`, replacing an earlier enrolment of that name (whose
/// secret then opens nothing). Returns whether one was replaced.
pub(crate) fn enrol(conn: &Connection, row: &ExecutorRow) -> rusqlite::Result<bool> {
    let replaced: bool = conn
        .prepare_cached("SELECT COUNT(*) > 0 FROM executors WHERE name = ?1")?
        .query_row([&row.name], |r| r.get(0))?;
    conn.prepare_cached(
        "INSERT INTO executors(name, enrolment, wrapped_secret, enrolled_at, enrolled_by, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, NULL)
         ON CONFLICT(name) DO UPDATE SET enrolment = excluded.enrolment,
           wrapped_secret = excluded.wrapped_secret, enrolled_at = excluded.enrolled_at,
           enrolled_by = excluded.enrolled_by, revoked_at = NULL",
    )?
    .execute(params![
        row.name,
        row.enrolment,
        row.wrapped_secret,
        row.enrolled_at,
        row.enrolled_by
    ])?;
    Ok(replaced)
}

/// Revokes `name`'s enrolment; false when it is not enrolled (or already
/// revoked).
pub(crate) fn revoke(conn: &Connection, name: &str, at: &str) -> rusqlite::Result<bool> {
    let changed = conn
        .prepare_cached(
            "UPDATE executors SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
        )?
        .execute(params![name, at])?;
    Ok(changed == 1)
}

/// Every executor ever enrolled, by name.
pub(crate) fn all(conn: &Connection) -> rusqlite::Result<Vec<ExecutorRow>> {
    conn.prepare_cached(
        "SELECT name, enrolment, wrapped_secret, enrolled_at, enrolled_by, revoked_at
         FROM executors ORDER BY name",
    )?
    .query_map([], |r| {
        Ok(ExecutorRow {
            name: r.get(0)?,
            enrolment: r.get(1)?,
            wrapped_secret: r.get(2)?,
            enrolled_at: r.get(3)?,
            enrolled_by: r.get(4)?,
            revoked_at: r.get(5)?,
        })
    })?
    .collect()
}

/// The cluster authority's certificate and sealed key, once made.
pub(crate) fn authority(conn: &Connection) -> rusqlite::Result<Option<(String, Vec<u8>)>> {
    use rusqlite::OptionalExtension as _;
    conn.prepare_cached("SELECT certificate, sealed_key FROM cluster_authority WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// Keeps the cluster authority; false when one was kept first (the caller
/// then uses that one).
pub(crate) fn keep_authority(
    conn: &Connection,
    certificate: &str,
    sealed_key: &[u8],
    at: &str,
) -> rusqlite::Result<bool> {
    let added = conn
        .prepare_cached(
            "INSERT INTO cluster_authority(id, certificate, sealed_key, created_at)
             VALUES (1, ?1, ?2, ?3) ON CONFLICT(id) DO NOTHING",
        )?
        .execute(params![certificate, sealed_key, at])?;
    Ok(added == 1)
}

/// Keeps `certificate` and its sealed key as the cluster authority, in place
/// of any kept before.
pub(crate) fn replace_authority(
    conn: &Connection,
    certificate: &str,
    sealed_key: &[u8],
    at: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO cluster_authority(id, certificate, sealed_key, created_at)
         VALUES (1, ?1, ?2, ?3) ON CONFLICT(id) DO UPDATE SET certificate = excluded.certificate,
           sealed_key = excluded.sealed_key, created_at = excluded.created_at",
    )?
    .execute(params![certificate, sealed_key, at])?;
    Ok(())
}
