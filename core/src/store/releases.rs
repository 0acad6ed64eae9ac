//! Released outputs and their downloads.

use rusqlite::{Connection, OptionalExtension, params};

/// The cached result of a measurement under a grant, as stored.
pub(crate) fn cached(
    db: &Connection,
    grant: &str,
    fingerprint: &str,
) -> rusqlite::Result<Option<Vec<u8>>> {
    db.prepare_cached("SELECT result FROM release_cache WHERE grant_id = ?1 AND fingerprint = ?2")?
        .query_row(params![grant, fingerprint], |r| r.get(0))
        .optional()
}

/// Caches a measurement's result under a grant; the first cached stays.
pub(crate) fn cache(
    db: &Connection,
    grant: &str,
    fingerprint: &str,
    result: &[u8],
    epsilon: f64,
    created_at: &str,
) -> rusqlite::Result<()> {
    db.prepare_cached(
        "INSERT OR IGNORE INTO release_cache(grant_id, fingerprint, result, epsilon, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")?.execute(
        params![grant, fingerprint, result, epsilon, created_at],
    )?;
    Ok(())
}

/// A dataset's source hash and manifest version, for a release's input
/// snapshot.
pub(crate) fn dataset_snapshot(db: &Connection, name: &str) -> rusqlite::Result<(String, i64)> {
    db.prepare_cached("SELECT source_sha256, manifest_version FROM datasets WHERE name = ?1")?
        .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
}

/// The epsilon a job spent in all.
pub(crate) fn job_epsilon(db: &Connection, job: &str) -> rusqlite::Result<f64> {
    db.prepare_cached("SELECT COALESCE(SUM(epsilon), 0) FROM spends WHERE job_id = ?1")?
        .query_row([job], |r| r.get(0))
}

/// A signed release's row.
pub(crate) struct NewRelease<'a> {
    pub id: &'a str,
    pub output: &'a str,
    /// The canonical release document, as signed.
    pub document: &'a str,
    /// Base64 signature of the document.
    pub signature: &'a str,
    pub at: &'a str,
}

/// Adds a signed release.
pub(crate) fn insert(db: &Connection, r: &NewRelease<'_>) -> rusqlite::Result<()> {
    db.prepare_cached(
        "INSERT INTO releases(id, output_id, document, signature, at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![r.id, r.output, r.document, r.signature, r.at])?;
    Ok(())
}

/// A release's document, signature and output id.
pub(crate) fn signed(db: &Connection, id: &str) -> rusqlite::Result<(String, String, String)> {
    db.prepare_cached("SELECT document, signature, output_id FROM releases WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
}
