//! What opening the store repairs after the service stopped.

use rusqlite::{Connection, params};

/// Jobs left `running` or `queued`: (id, submitter, status).
pub(crate) fn unfinished_jobs(db: &Connection) -> rusqlite::Result<Vec<(String, String, String)>> {
    let mut stmt = db.prepare_cached(
        "SELECT id, submitter, status FROM jobs WHERE status IN ('running', 'queued')",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

/// Ends an interrupted job as failed, shown as stopped by the restart.
pub(crate) fn fail_interrupted_job(
    db: &Connection,
    job: &str,
    reason: &str,
    ended_at: &str,
) -> rusqlite::Result<()> {
    db.prepare_cached(
        "UPDATE jobs SET status = 'failed', error = ?2, ended_at = ?3, visible = 'stopped', stopped_by = 'service restart', reason = ?2 WHERE id = ?1")?.execute(
        params![job, reason, ended_at],
    )?;
    Ok(())
}
