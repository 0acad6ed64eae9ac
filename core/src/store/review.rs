//! The review queue, approvals and rejections.

use rusqlite::{Connection, OptionalExtension, params};

/// A quarantined output's row.
pub(crate) struct NewOutput<'a> {
    pub id: &'a str,
    pub job: &'a str,
    pub name: &'a str,
    /// The table, ABI-encoded.
    pub data: &'a [u8],
    pub sha256: &'a str,
    /// The automatic findings, as a JSON array.
    pub findings: &'a str,
    pub created_at: &'a str,
    pub kind: &'a str,
    /// What the disclosure control did, as JSON.
    pub disclosure: Option<&'a str>,
}

/// Adds an output, quarantined.
pub(crate) fn insert_output(db: &Connection, o: &NewOutput<'_>) -> rusqlite::Result<()> {
    db.prepare_cached(
        "INSERT INTO outputs(id, job_id, name, data, sha256, findings, created_at, kind, disclosure) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")?.execute(
        params![o.id, o.job, o.name, o.data, o.sha256, o.findings, o.created_at, o.kind, o.disclosure],
    )?;
    Ok(())
}

/// An output's kind and its disclosure report (JSON), if any.
pub(crate) fn kind_and_disclosure(
    db: &Connection,
    output: &str,
) -> rusqlite::Result<Option<(String, Option<String>)>> {
    db.prepare_cached("SELECT kind, disclosure FROM outputs WHERE id = ?1")?
        .query_row([output], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// The encoded tables of a grant's approved outputs; rows that cannot be
/// read are left out, as the checks compare against what can be.
pub(crate) fn approved_tables(db: &Connection, grant: &str) -> rusqlite::Result<Vec<Vec<u8>>> {
    let mut stmt = db.prepare_cached(
        "SELECT o.data FROM outputs o JOIN jobs j ON j.id = o.job_id WHERE j.grant_id = ?1 AND o.status = 'approved'",
    )?;
    let rows = stmt.query_map([grant], |r| r.get::<_, Vec<u8>>(0))?;
    Ok(rows.filter_map(Result::ok).collect())
}

/// An output's automatic findings, as a JSON array.
pub(crate) fn findings(db: &Connection, output: &str) -> rusqlite::Result<Option<String>> {
    db.prepare_cached("SELECT findings FROM outputs WHERE id = ?1")?
        .query_row([output], |r| r.get(0))
        .optional()
}

/// A quarantined output in the review queue.
pub(crate) struct Quarantined {
    pub output: String,
    pub name: String,
    pub kind: String,
    pub job: String,
    pub grant: String,
}

/// Every quarantined output, oldest first.
pub(crate) fn quarantined(db: &Connection) -> rusqlite::Result<Vec<Quarantined>> {
    let mut stmt = db.prepare_cached(
        "SELECT o.id, o.name, o.kind, o.job_id, j.grant_id
                 FROM outputs o JOIN jobs j ON j.id = o.job_id WHERE o.status = 'quarantined' ORDER BY o.created_at, o.rowid",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Quarantined {
            output: r.get(0)?,
            name: r.get(1)?,
            kind: r.get(2)?,
            job: r.get(3)?,
            grant: r.get(4)?,
        })
    })?;
    rows.collect()
}

/// The latest approved output of a grant with this name and kind: its id
/// and encoded table.
pub(crate) fn latest_approved(
    db: &Connection,
    grant: &str,
    name: &str,
    kind: &str,
) -> rusqlite::Result<Option<(String, Vec<u8>)>> {
    db.prepare_cached(
        "SELECT o.id, o.data FROM outputs o JOIN jobs j ON j.id = o.job_id
                     WHERE j.grant_id = ?1 AND o.name = ?2 AND o.kind = ?3 AND o.status = 'approved' ORDER BY o.created_at DESC LIMIT 1")?.query_row(
        params![grant, name, kind],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// How many approvals an output has.
pub(crate) fn approvals(db: &Connection, output: &str) -> rusqlite::Result<i64> {
    db.prepare_cached(
        "SELECT COUNT(*) FROM reviews WHERE output_id = ?1 AND decision = 'approved'",
    )?
    .query_row([output], |r| r.get(0))
}

/// An output's name, status and encoded table.
pub(crate) fn output(
    db: &Connection,
    id: &str,
) -> rusqlite::Result<Option<(String, String, Vec<u8>)>> {
    db.prepare_cached("SELECT name, status, data FROM outputs WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
}

/// What a review decides on: the output and the job that emitted it.
pub(crate) struct ToReview {
    pub status: String,
    pub job: String,
    pub submitter: String,
    pub output_sha256: String,
    pub module: Option<String>,
    pub sql: Option<String>,
    pub grant: String,
    pub name: String,
}

/// An output with its job, for a review.
pub(crate) fn to_review(db: &Connection, output: &str) -> rusqlite::Result<Option<ToReview>> {
    db.prepare_cached(
        "SELECT o.status, o.job_id, j.submitter, o.sha256, j.module, j.sql, j.grant_id, o.name FROM outputs o JOIN jobs j ON j.id = o.job_id WHERE o.id = ?1")?.query_row(
        [output],
        |r| {
            Ok(ToReview {
                status: r.get(0)?,
                job: r.get(1)?,
                submitter: r.get(2)?,
                output_sha256: r.get(3)?,
                module: r.get(4)?,
                sql: r.get(5)?,
                grant: r.get(6)?,
                name: r.get(7)?,
            })
        },
    )
    .optional()
}

/// Whether an output has a signed release.
pub(crate) fn has_release(db: &Connection, output: &str) -> rusqlite::Result<bool> {
    Ok(db
        .prepare_cached("SELECT 1 FROM releases WHERE output_id = ?1")?
        .query_row([output], |_| Ok(()))
        .optional()?
        .is_some())
}

/// An output's status.
pub(crate) fn status(db: &Connection, output: &str) -> rusqlite::Result<String> {
    db.prepare_cached("SELECT status FROM outputs WHERE id = ?1")?
        .query_row([output], |r| r.get(0))
}

/// Who approved an output so far, in order.
pub(crate) fn approvers(db: &Connection, output: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = db.prepare_cached(
        "SELECT reviewer FROM reviews WHERE output_id = ?1 AND decision = 'approved' ORDER BY id",
    )?;
    let rows = stmt.query_map([output], |r| r.get(0))?;
    rows.collect()
}

/// Sets an output's status (`approved` or `rejected`).
pub(crate) fn set_status(db: &Connection, output: &str, status: &str) -> rusqlite::Result<()> {
    db.prepare_cached("UPDATE outputs SET status = ?2 WHERE id = ?1")?
        .execute(params![output, status])?;
    Ok(())
}

/// Records one reviewer's decision on an output.
pub(crate) fn insert_review(
    db: &Connection,
    output: &str,
    reviewer: &str,
    decision: &str,
    reason: &str,
    at: &str,
) -> rusqlite::Result<()> {
    db.prepare_cached(
        "INSERT INTO reviews(output_id, reviewer, decision, reason, at) VALUES (?1, ?2, ?3, ?4, ?5)")?.execute(
        params![output, reviewer, decision, reason, at],
    )?;
    Ok(())
}

/// An extract output as a candidate source of a leaked file.
pub(crate) struct ExtractOutput {
    pub(crate) output: String,
    pub(crate) job: String,
    pub(crate) grant: String,
    pub(crate) user: String,
    pub(crate) dataset: String,
    pub(crate) status: String,
    pub(crate) downloaded_by: Vec<String>,
    pub(crate) data: Vec<u8>,
}

/// Every extract output, oldest first, with who downloaded its release.
pub(crate) fn extract_outputs(db: &Connection) -> rusqlite::Result<Vec<ExtractOutput>> {
    let mut stmt = db.prepare_cached(
        "SELECT o.id, j.id, j.grant_id, j.submitter, g.dataset, o.status, o.data,
                (SELECT json_group_array(d.user_id) FROM downloads d JOIN releases r ON r.id = d.release_id WHERE r.output_id = o.id)
         FROM outputs o JOIN jobs j ON j.id = o.job_id JOIN grants g ON g.id = j.grant_id
         WHERE o.kind = 'extract' ORDER BY o.created_at, o.id",
    )?;
    let rows = stmt.query_map([], |r| {
        let downloads: String = r.get(7)?;
        Ok(ExtractOutput {
            output: r.get(0)?,
            job: r.get(1)?,
            grant: r.get(2)?,
            user: r.get(3)?,
            dataset: r.get(4)?,
            status: r.get(5)?,
            data: r.get(6)?,
            downloaded_by: serde_json::from_str(&downloads).unwrap_or_default(),
        })
    })?;
    rows.collect()
}
