//! Proposed imports of outside data.

use rusqlite::{Connection, OptionalExtension, params};
use unseen_api::{Import, ImportChecks, ImportStatus};

fn corrupt(detail: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("an import record does not read: {detail}").into(),
    )
}

/// A proposal as stored.
pub(crate) struct NewImport<'a> {
    pub(crate) id: &'a str,
    pub(crate) dataset: &'a str,
    pub(crate) grant: &'a str,
    pub(crate) proposed_by: &'a str,
    pub(crate) manifest: &'a str,
    pub(crate) wrapped_key: &'a [u8],
    pub(crate) source_sha256: &'a str,
    pub(crate) checks: &'a ImportChecks,
    pub(crate) at: &'a str,
}

pub(crate) fn insert(db: &Connection, i: &NewImport<'_>) -> rusqlite::Result<()> {
    let checks = serde_json::to_string(i.checks).map_err(corrupt)?;
    db.prepare_cached(
        "INSERT INTO imports(id, dataset, grant_id, proposed_by, status, manifest, wrapped_key, source_sha256, checks, proposed_at)
         VALUES (?1, ?2, ?3, ?4, 'proposed', ?5, ?6, ?7, ?8, ?9)")?.execute(
        params![i.id, i.dataset, i.grant, i.proposed_by, i.manifest, i.wrapped_key, i.source_sha256, checks, i.at],
    )?;
    Ok(())
}

/// Whether a proposal waiting for a decision would become `dataset`.
pub(crate) fn pending_named(db: &Connection, dataset: &str) -> rusqlite::Result<bool> {
    db.prepare_cached(
        "SELECT EXISTS(SELECT 1 FROM imports WHERE dataset = ?1 AND status = 'proposed')",
    )?
    .query_row([dataset], |r| r.get(0))
}

/// Records a decision on a proposal; false (nothing changed) when it was
/// no longer proposed.
pub(crate) fn decide(
    db: &Connection,
    id: &str,
    to: ImportStatus,
    by: &str,
    at: &str,
    reason: &str,
    epsilon_total: Option<f64>,
) -> rusqlite::Result<bool> {
    let changed = db.prepare_cached(
        "UPDATE imports SET status = ?2, decided_by = ?3, decided_at = ?4, reason = ?5, epsilon_total = ?6
         WHERE id = ?1 AND status = 'proposed'")?.execute(
        params![id, to.as_str(), by, at, reason, epsilon_total],
    )?;
    Ok(changed == 1)
}

/// Marks the approved import that became `dataset` destroyed.
pub(crate) fn mark_destroyed(db: &Connection, dataset: &str) -> rusqlite::Result<()> {
    db.prepare_cached(
        "UPDATE imports SET status = 'destroyed', wrapped_key = NULL WHERE dataset = ?1 AND status = 'approved'")?.execute(
        [dataset],
    )?;
    Ok(())
}

/// The wrapped data key and manifest of a proposal.
pub(crate) fn key_and_manifest(
    db: &Connection,
    id: &str,
) -> rusqlite::Result<Option<(Vec<u8>, String)>> {
    db.prepare_cached(
        "SELECT wrapped_key, manifest FROM imports WHERE id = ?1 AND wrapped_key IS NOT NULL",
    )?
    .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
    .optional()
}

/// Imports in `status` for grants that are revoked or ended before `now`
/// (RFC 3339): `(import, dataset, grant)`.
pub(crate) fn of_ended_grants(
    db: &Connection,
    status: ImportStatus,
    now: &str,
) -> rusqlite::Result<Vec<(String, String, String)>> {
    let mut stmt = db.prepare_cached(
        "SELECT i.id, i.dataset, g.id FROM imports i JOIN grants g ON g.id = i.grant_id
         WHERE i.status = ?1 AND (g.revoked_at IS NOT NULL OR g.expires_at <= ?2)",
    )?;
    let rows = stmt.query_map(params![status.as_str(), now], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    rows.collect()
}

const COLUMNS: &str = "id, dataset, grant_id, proposed_by, status, source_sha256, checks, proposed_at, decided_by, decided_at, reason, epsilon_total";

fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Import> {
    let status: String = r.get(4)?;
    let checks: String = r.get(6)?;
    Ok(Import {
        id: r.get(0)?,
        dataset: r.get(1)?,
        grant: r.get(2)?,
        proposed_by: r.get(3)?,
        status: ImportStatus::parse(&status).ok_or_else(|| corrupt(&status))?,
        source_sha256: r.get(5)?,
        checks: serde_json::from_str(&checks).map_err(corrupt)?,
        proposed_at: r.get(7)?,
        decided_by: r.get(8)?,
        decided_at: r.get(9)?,
        reason: r.get(10)?,
        epsilon_total: r.get(11)?,
    })
}

pub(crate) fn by_id(db: &Connection, id: &str) -> rusqlite::Result<Option<Import>> {
    db.prepare_cached(&format!("SELECT {COLUMNS} FROM imports WHERE id = ?1"))?
        .query_row([id], read)
        .optional()
}

/// Imports, newest first: all, or one proposer's.
pub(crate) fn list(db: &Connection, proposer: Option<&str>) -> rusqlite::Result<Vec<Import>> {
    let mut stmt = db.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM imports WHERE ?1 IS NULL OR proposed_by = ?1 ORDER BY proposed_at DESC, id"
    ))?;
    let rows = stmt.query_map([proposer], read)?;
    rows.collect()
}

/// Whether `dataset` came in as an import (it belongs to its grant alone).
pub(crate) fn is_imported(db: &Connection, dataset: &str) -> rusqlite::Result<bool> {
    db.prepare_cached(
        "SELECT EXISTS(SELECT 1 FROM imports WHERE dataset = ?1 AND status IN ('approved', 'destroyed'))")?.query_row(
        [dataset],
        |r| r.get(0),
    )
}

/// The current status of an import, if it exists.
pub(crate) fn status(db: &Connection, id: &str) -> rusqlite::Result<Option<ImportStatus>> {
    let status: Option<String> = db
        .prepare_cached("SELECT status FROM imports WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(status.and_then(|s| ImportStatus::parse(&s)))
}
