//! Who may do what: tokens, open-column query windows, grant checks.

use rusqlite::{Connection, OptionalExtension, params};
use unseen_api::{DatasetView, UserView};

use crate::Role;

/// SQL condition: the grant covers dataset `?1`, as its primary dataset or
/// one joined to it.
const GRANT_COVERS_DATASET: &str =
    "(dataset = ?1 OR EXISTS (SELECT 1 FROM json_each(grants.join_datasets) WHERE value = ?1))";

/// Sets a user's token hash; false when there is no such user.
pub(crate) fn set_token(
    db: &Connection,
    user: &str,
    token_sha256: &str,
    issued_at: &str,
) -> rusqlite::Result<bool> {
    let changed = db
        .prepare_cached("UPDATE users SET token_sha256 = ?2, token_issued_at = ?3 WHERE id = ?1")?
        .execute(params![user, token_sha256, issued_at])?;
    Ok(changed == 1)
}

/// The user holding a token hash: `(id, role, disabled)`.
pub(crate) fn user_by_token(
    db: &Connection,
    token_sha256: &str,
) -> rusqlite::Result<Option<(String, String, i64)>> {
    db.prepare_cached("SELECT id, role, disabled FROM users WHERE token_sha256 = ?1")?
        .query_row([token_sha256], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
}

/// Every user, by id.
pub(crate) fn users(db: &Connection) -> rusqlite::Result<Vec<UserView>> {
    let mut stmt = db.prepare_cached(
        "SELECT id, name, role, org, created_at, disabled, token_issued_at FROM users ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(UserView {
            id: r.get(0)?,
            name: r.get(1)?,
            role: {
                let word: String = r.get(2)?;
                Role::parse(&word).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        2,
                        rusqlite::types::Type::Text,
                        e.to_string().into(),
                    )
                })?
            },
            org: r.get(3)?,
            created_at: r.get(4)?,
            disabled: r.get::<_, i64>(5)? != 0,
            token_issued_at: r.get(6)?,
        })
    })?;
    rows.collect()
}

/// Disables an enabled user and voids their token, unless they are the
/// last enabled admin; false when nothing changed.
pub(crate) fn disable_user(db: &Connection, user: &str) -> rusqlite::Result<bool> {
    let disabled = db.prepare_cached(
        "UPDATE users SET disabled = 1, token_sha256 = NULL WHERE id = ?1 AND disabled = 0
                 AND (role != 'admin' OR (SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled = 0) > 1)")?.execute(
        [user],
    )?;
    Ok(disabled == 1)
}

/// Every registered dataset, by name.
pub(crate) fn datasets(db: &Connection) -> rusqlite::Result<Vec<DatasetView>> {
    let mut stmt = db.prepare_cached(
        "SELECT name, manifest_version, rows, registered_by, registered_at, epsilon_total, epsilon_spent, destroyed_at FROM datasets ORDER BY name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(DatasetView {
            name: r.get(0)?,
            manifest_version: r.get(1)?,
            rows: r.get(2)?,
            registered_by: r.get(3)?,
            registered_at: r.get(4)?,
            epsilon_total: r.get(5)?,
            epsilon_spent: r.get(6)?,
            destroyed_at: r.get(7)?,
        })
    })?;
    rows.collect()
}

/// A dataset's encrypted file and when it was destroyed, if it was.
pub(crate) fn dataset_file(
    db: &Connection,
    name: &str,
) -> rusqlite::Result<Option<(String, Option<String>)>> {
    db.prepare_cached("SELECT file, destroyed_at FROM datasets WHERE name = ?1")?
        .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// The grants not revoked that cover a dataset (primary or joined).
pub(crate) fn live_grants_covering(
    db: &Connection,
    dataset: &str,
) -> rusqlite::Result<Vec<String>> {
    let mut stmt = db.prepare_cached(&format!(
        "SELECT id FROM grants WHERE {GRANT_COVERS_DATASET} AND revoked_at IS NULL"
    ))?;
    let rows = stmt.query_map([dataset], |r| r.get(0))?;
    rows.collect()
}

/// Drops a dataset's wrapped data key and marks it destroyed; false when
/// it was destroyed already (by a concurrent destruction).
pub(crate) fn destroy_key(db: &Connection, name: &str, at: &str) -> rusqlite::Result<bool> {
    let changed = db.prepare_cached(
        "UPDATE datasets SET wrapped_key = NULL, destroyed_at = ?2 WHERE name = ?1 AND destroyed_at IS NULL")?.execute(
        params![name, at],
    )?;
    Ok(changed == 1)
}

/// Forgets the cached releases of every grant covering a dataset.
pub(crate) fn forget_cached_releases(db: &Connection, dataset: &str) -> rusqlite::Result<()> {
    db.prepare_cached(
        &format!("DELETE FROM release_cache WHERE grant_id IN (SELECT id FROM grants WHERE {GRANT_COVERS_DATASET})"))?.execute(
        [dataset],
    )?;
    Ok(())
}

/// Moves every page in the WAL into the store and truncates the WAL, so
/// old page images survive nowhere.
pub(crate) fn checkpoint_wal(db: &Connection) -> rusqlite::Result<()> {
    db.prepare_cached("PRAGMA wal_checkpoint(TRUNCATE)")?
        .query_row([], |_| Ok(()))
}

/// A release's signature and the grant it was released under.
pub(crate) fn release_signature_and_grant(
    db: &Connection,
    release: &str,
) -> rusqlite::Result<Option<(String, String)>> {
    db.prepare_cached(
        "SELECT r.signature, j.grant_id FROM releases r JOIN outputs o ON o.id = r.output_id JOIN jobs j ON j.id = o.job_id WHERE r.id = ?1")?.query_row(
        [release],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// A release's output and the grant it was released under.
pub(crate) fn release_output_and_grant(
    db: &Connection,
    release: &str,
) -> rusqlite::Result<Option<(String, String)>> {
    db.prepare_cached(
        "SELECT r.output_id, j.grant_id FROM releases r JOIN outputs o ON o.id = r.output_id JOIN jobs j ON j.id = o.job_id WHERE r.id = ?1")?.query_row(
        [release],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// Counts one download against a grant if it has downloads left; false
/// when it has none.
pub(crate) fn count_download(db: &Connection, grant: &str) -> rusqlite::Result<bool> {
    let counted = db.prepare_cached(
        "UPDATE grants SET downloads = downloads + 1 WHERE id = ?1 AND (max_downloads IS NULL OR downloads < max_downloads)")?.execute(
        [grant],
    )?;
    Ok(counted == 1)
}

/// Records who downloaded a release, and when.
pub(crate) fn insert_download(
    db: &Connection,
    release: &str,
    user: &str,
    at: &str,
) -> rusqlite::Result<()> {
    db.prepare_cached("INSERT INTO downloads(release_id, user_id, at) VALUES (?1, ?2, ?3)")?
        .execute(params![release, user, at])?;
    Ok(())
}

/// How many downloads a grant has counted.
pub(crate) fn downloads(db: &Connection, grant: &str) -> rusqlite::Result<u32> {
    db.prepare_cached("SELECT downloads FROM grants WHERE id = ?1")?
        .query_row([grant], |r| r.get(0))
}
