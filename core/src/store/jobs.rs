//! Jobs, their runs, outputs and module uploads.

use rusqlite::{Connection, OptionalExtension, params};
use unseen_api::{JobStatus, JobView, OutcomeReview, RunEnding};

// Modules.

/// Stores a module unless one with its hash is stored already (then
/// nothing changes, whatever its kind).
pub(crate) fn insert_module(
    db: &Connection,
    sha256: &str,
    bytes: &[u8],
    uploaded_by: &str,
    uploaded_at: &str,
    kind: &str,
    functions: &str,
) -> rusqlite::Result<()> {
    db.prepare_cached(
        "INSERT OR IGNORE INTO modules(sha256, bytes, uploaded_by, uploaded_at, kind, functions) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(
        params![sha256, bytes, uploaded_by, uploaded_at, kind, functions],
    )?;
    Ok(())
}

/// The kind (`job` or `udf`) of the module stored under `sha256`, if any.
pub(crate) fn module_kind(db: &Connection, sha256: &str) -> rusqlite::Result<Option<String>> {
    db.prepare_cached("SELECT kind FROM modules WHERE sha256 = ?1")?
        .query_row([sha256], |r| r.get(0))
        .optional()
}

/// Whether a job module is stored under `sha256`.
pub(crate) fn has_job_module(db: &Connection, sha256: &str) -> rusqlite::Result<bool> {
    let known: Option<i64> = db
        .prepare_cached("SELECT 1 FROM modules WHERE sha256 = ?1 AND kind = 'job'")?
        .query_row([sha256], |r| r.get(0))
        .optional()?;
    Ok(known.is_some())
}

/// The declared functions (a JSON array) of the UDF module stored under
/// `sha256`, if there is one.
pub(crate) fn udf_functions(db: &Connection, sha256: &str) -> rusqlite::Result<Option<String>> {
    db.prepare_cached("SELECT functions FROM modules WHERE sha256 = ?1 AND kind = 'udf'")?
        .query_row([sha256], |r| r.get(0))
        .optional()
}

/// The bytes of the UDF module stored under `sha256`, if there is one.
pub(crate) fn udf_module_bytes(db: &Connection, sha256: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    db.prepare_cached("SELECT bytes FROM modules WHERE sha256 = ?1 AND kind = 'udf'")?
        .query_row([sha256], |r| r.get(0))
        .optional()
}

/// The bytes of the module stored under `sha256`, whatever its kind.
pub(crate) fn module_bytes(db: &Connection, sha256: &str) -> rusqlite::Result<Vec<u8>> {
    db.prepare_cached("SELECT bytes FROM modules WHERE sha256 = ?1")?
        .query_row([sha256], |r| r.get(0))
}

// Admission.

/// Counts a run against a grant if it has runs left; false when it has none.
pub(crate) fn count_run(db: &Connection, grant: &str) -> rusqlite::Result<bool> {
    let counted = db.prepare_cached(
        "UPDATE grants SET runs = runs + 1 WHERE id = ?1 AND (max_runs IS NULL OR runs < max_runs)")?.execute(
        [grant],
    )?;
    Ok(counted == 1)
}

/// A job as admitted, before it is queued.
pub(crate) struct NewJob<'a> {
    pub id: &'a str,
    pub grant: &'a str,
    pub module: Option<&'a str>,
    pub sql: Option<&'a str>,
    pub submitter: &'a str,
    pub submitted_at: &'a str,
    /// JSON object of the job's parameters.
    pub params: &'a str,
    /// JSON array of the UDF modules its queries may call.
    pub udf_modules: &'a str,
    /// JSON array of the releases it may read.
    pub inputs: &'a str,
}

/// Records an admitted job as queued.
pub(crate) fn insert_queued(db: &Connection, job: &NewJob<'_>) -> rusqlite::Result<()> {
    db.prepare_cached(
        "INSERT INTO jobs(id, grant_id, module, sql, submitter, status, submitted_at, params, udf_modules, inputs) VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?8, ?9)")?.execute(
        params![job.id, job.grant, job.module, job.sql, job.submitter, job.submitted_at, job.params, job.udf_modules, job.inputs],
    )?;
    Ok(())
}

// Runs.

/// What starting a job reads of it; the lists are JSON as stored.
pub(crate) struct ToStart {
    pub grant: String,
    pub submitter: String,
    pub status: String,
    pub params: String,
    pub udf_modules: String,
    pub inputs: String,
}

/// What starting the job `id` needs, if there is such a job.
pub(crate) fn to_start(db: &Connection, id: &str) -> rusqlite::Result<Option<ToStart>> {
    db.prepare_cached(
        "SELECT grant_id, submitter, status, params, udf_modules, inputs FROM jobs WHERE id = ?1",
    )?
    .query_row([id], |r| {
        Ok(ToStart {
            grant: r.get(0)?,
            submitter: r.get(1)?,
            status: r.get(2)?,
            params: r.get(3)?,
            udf_modules: r.get(4)?,
            inputs: r.get(5)?,
        })
    })
    .optional()
}

/// Moves a queued job to running; false when it is no longer queued.
pub(crate) fn set_running(db: &Connection, id: &str, started_at: &str) -> rusqlite::Result<bool> {
    let moved = db.prepare_cached(
        "UPDATE jobs SET status = 'running', started_at = ?2 WHERE id = ?1 AND status = 'queued'")?.execute(
        params![id, started_at],
    )?;
    Ok(moved == 1)
}

/// Whether the job `id` runs a module (a guest), not SQL or an extract.
pub(crate) fn has_module(db: &Connection, id: &str) -> rusqlite::Result<bool> {
    db.prepare_cached("SELECT module IS NOT NULL FROM jobs WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
}

/// The module the job `id` runs: `None` when there is no such job or it
/// runs none.
pub(crate) fn module_of(db: &Connection, id: &str) -> rusqlite::Result<Option<String>> {
    db.prepare_cached("SELECT module FROM jobs WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()
        .map(Option::flatten)
}

/// How a run ended, as the job's record keeps it.
pub(crate) struct RunEnd<'a> {
    pub id: &'a str,
    pub status: &'a str,
    pub error: Option<&'a str>,
    pub ended_at: &'a str,
    pub fuel: i64,
    pub queries: i64,
    pub run_ms: Option<i64>,
    pub rows_scanned: i64,
    pub epsilon: f64,
    /// JSON array of the guest's log lines.
    pub logs: &'a str,
    /// JSON array of the refusals of its queries.
    pub refusals: &'a str,
    pub visible: &'a str,
    pub stopped_by: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub shown_end_ms: i64,
}

/// Records how a queued or running job ended; false when it had ended
/// already.
pub(crate) fn set_ended(db: &Connection, end: &RunEnd<'_>) -> rusqlite::Result<bool> {
    let ended = db.prepare_cached(
        "UPDATE jobs SET status = ?2, error = ?3, ended_at = ?4, fuel = ?5, queries = ?6, run_ms = ?7, rows_scanned = ?8, epsilon = ?9, logs = ?10,
             refusals = ?11, visible = ?12, stopped_by = ?13, reason = ?14, shown_end_ms = ?15
         WHERE id = ?1 AND status IN ('queued', 'running')")?.execute(
        params![end.id, end.status, end.error, end.ended_at, end.fuel, end.queries, end.run_ms, end.rows_scanned, end.epsilon, end.logs,
            end.refusals, end.visible, end.stopped_by, end.reason, end.shown_end_ms],
    )?;
    Ok(ended == 1)
}

/// Ends a queued or running job as stopped by the service, without
/// metering; false when it had ended already.
pub(crate) fn set_stopped(
    db: &Connection,
    id: &str,
    status: &str,
    error: &str,
    ended_at: &str,
    stopped_by: &str,
    reason: &str,
) -> rusqlite::Result<bool> {
    let ended = db.prepare_cached(
        "UPDATE jobs SET status = ?2, error = ?3, ended_at = ?4, visible = 'stopped', stopped_by = ?5, reason = ?6
         WHERE id = ?1 AND status IN ('queued', 'running')")?.execute(
        params![id, status, error, ended_at, stopped_by, reason],
    )?;
    Ok(ended == 1)
}

/// Links a job to its outcome output.
pub(crate) fn set_outcome_output(db: &Connection, id: &str, output: &str) -> rusqlite::Result<()> {
    db.prepare_cached("UPDATE jobs SET outcome_output = ?2 WHERE id = ?1")?
        .execute(params![id, output])?;
    Ok(())
}

/// Jobs whose guest ran and whose end is recorded but whose outcome output
/// is not, as `(id, submitter)`.
pub(crate) fn without_outcome(db: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = db.prepare_cached(
        "SELECT id, submitter FROM jobs
         WHERE module IS NOT NULL AND outcome_output IS NULL AND shown_end_ms IS NOT NULL
           AND visible IN ('finished', 'stopped')
           AND status IN ('succeeded', 'failed', 'trapped', 'cancelled')",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

// Cancellation and revocation.

/// Cancels a queued job (its reason is also its error); false when it is
/// not queued.
pub(crate) fn cancel_queued(
    db: &Connection,
    id: &str,
    reason: &str,
    ended_at: &str,
    stopped_by: Option<&str>,
) -> rusqlite::Result<bool> {
    let cancelled = db.prepare_cached(
        "UPDATE jobs SET status = 'cancelled', error = ?2, ended_at = ?3, visible = 'stopped', stopped_by = ?4, reason = ?2
         WHERE id = ?1 AND status = 'queued'")?.execute(
        params![id, reason, ended_at, stopped_by],
    )?;
    Ok(cancelled == 1)
}

/// Turns a job that ended but whose end is shown after `now_ms` into a
/// cancelled one; false when there is no such job.
pub(crate) fn cancel_unshown(
    db: &Connection,
    id: &str,
    error: &str,
    stopped_by: Option<&str>,
    reason: &str,
    now_ms: i64,
) -> rusqlite::Result<bool> {
    let cancelled = db.prepare_cached(
        "UPDATE jobs SET status = 'cancelled', error = ?2, visible = 'stopped', stopped_by = ?3, reason = ?4
         WHERE id = ?1 AND status IN ('succeeded', 'failed', 'trapped') AND shown_end_ms > ?5")?.execute(
        params![id, error, stopped_by, reason, now_ms],
    )?;
    Ok(cancelled == 1)
}

/// Jobs queued or running, anywhere.
pub(crate) fn unfinished(db: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        db.prepare_cached("SELECT id FROM jobs WHERE status IN ('queued', 'running')")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// Marks a grant revoked.
pub(crate) fn revoke_grant(db: &Connection, grant: &str, at: &str) -> rusqlite::Result<()> {
    db.prepare_cached("UPDATE grants SET revoked_at = ?2 WHERE id = ?1")?
        .execute(params![grant, at])?;
    Ok(())
}

/// Jobs queued or running under a grant.
pub(crate) fn unfinished_under(db: &Connection, grant: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = db.prepare_cached(
        "SELECT id FROM jobs WHERE grant_id = ?1 AND status IN ('queued', 'running')",
    )?;
    let rows = stmt.query_map([grant], |r| r.get(0))?;
    rows.collect()
}

// Views.

const JOB_COLUMNS: &str = "j.id, j.grant_id, j.submitter, j.module, j.sql, j.status, j.error, j.submitted_at, j.started_at, j.ended_at, j.fuel, j.queries, j.rows_scanned, j.run_ms, COALESCE((SELECT SUM(epsilon) FROM spends s WHERE s.job_id = j.id), 0), j.logs, j.visible, j.stopped_by, j.reason, j.refusals, j.outcome_output, (SELECT o.status FROM outputs o WHERE o.id = j.outcome_output), j.shown_end_ms";

/// The status everyone sees of a job whose record says `status` (queued,
/// running, or how its run ended) and `visible` (what the service decided,
/// once it ended).
fn shown_status(status: &str, visible: Option<&str>) -> rusqlite::Result<JobStatus> {
    let shown = match (JobStatus::parse(status), visible) {
        (Some(waiting @ (JobStatus::Queued | JobStatus::Running)), _) => Some(waiting),
        (_, Some(visible)) => JobStatus::parse(visible).filter(|s| s.has_ended()),
        // Ended before the service recorded what it decided (schema 11).
        (_, None) => match RunEnding::parse(status) {
            Some(RunEnding::Cancelled) => Some(JobStatus::Stopped),
            Some(_) => Some(JobStatus::Finished),
            None => None,
        },
    };
    shown.ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            5,
            rusqlite::types::Type::Text,
            format!("job status `{status}` (shown as {visible:?}) is not one this version knows")
                .into(),
        )
    })
}

fn job_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobView> {
    let list = |i: usize| -> rusqlite::Result<Vec<String>> {
        let text: String = r.get(i)?;
        Ok(serde_json::from_str(&text).unwrap_or_default())
    };
    let status: String = r.get(5)?;
    let visible: Option<String> = r.get(16)?;
    let outcome_output: Option<String> = r.get(20)?;
    let outcome_status: Option<String> = r.get(21)?;
    Ok(JobView {
        id: r.get(0)?,
        grant: r.get(1)?,
        submitter: r.get(2)?,
        module_sha256: r.get(3)?,
        sql: r.get(4)?,
        // Queued and running are the same for everyone; an ended job
        // shows what the service decided.
        status: shown_status(&status, visible.as_deref())?,
        stopped_by: r.get(17)?,
        reason: r.get(18)?,
        outcome: outcome_output.map(|output| OutcomeReview {
            output,
            review: outcome_status.unwrap_or_else(|| "quarantined".into()),
        }),
        submitted_at: r.get(7)?,
        epsilon_spent: r.get(14)?,
        outputs: Vec::new(),
        releases: Vec::new(),
        ending: RunEnding::parse(&status),
        error: r.get(6)?,
        started_at: r.get(8)?,
        ended_at: r.get(9)?,
        fuel_used: r.get(10)?,
        queries: r.get(11)?,
        rows_read: r.get(12)?,
        run_ms: r.get(13)?,
        logs: list(15)?,
        refusals: list(19)?,
        shown_end_ms: r.get(22)?,
    })
}

/// The full record of the job `id` (without its outputs), if there is one.
pub(crate) fn view(db: &Connection, id: &str) -> rusqlite::Result<Option<JobView>> {
    db.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs j WHERE j.id = ?1"))?
        .query_row([id], job_from_row)
        .optional()
}

/// A job's outputs other than its outcome, in the order it made them.
pub(crate) fn output_ids(db: &Connection, id: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = db.prepare_cached(
        "SELECT id FROM outputs WHERE job_id = ?1 AND kind != 'outcome' ORDER BY created_at, rowid",
    )?;
    stmt.query_map([id], |r| r.get(0))?.collect()
}

/// A job's outputs other than its outcome that a reviewer decided
/// (approved or rejected), in the order it made them.
pub(crate) fn decided_output_ids(db: &Connection, id: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = db.prepare_cached(
        "SELECT id FROM outputs WHERE job_id = ?1 AND kind != 'outcome' AND status IN ('approved', 'rejected') ORDER BY created_at, rowid",
    )?;
    let rows = stmt.query_map([id], |r| r.get(0))?;
    rows.collect()
}

/// Jobs, newest first and at most 1000, of one submitter and one grant
/// where given.
pub(crate) fn ids(
    db: &Connection,
    submitter: Option<&str>,
    grant: Option<&str>,
) -> rusqlite::Result<Vec<String>> {
    let mut stmt = db.prepare_cached(
        "SELECT id FROM jobs WHERE (?1 IS NULL OR submitter = ?1) AND (?2 IS NULL OR grant_id = ?2) ORDER BY submitted_at DESC, id LIMIT 1000",
    )?;
    let rows = stmt.query_map(params![submitter, grant], |r| r.get(0))?;
    rows.collect()
}

// Usage.

/// A grant's jobs counted by shown status.
pub(crate) fn count_shown_by_status(
    db: &Connection,
    grant: &str,
    developer: bool,
    now_ms: i64,
) -> rusqlite::Result<Vec<(String, i64)>> {
    // By what everyone sees (a guest chooses whether it fails); a
    // developer sees a job running until its end is shown.
    let mut stmt = db.prepare_cached(
        "SELECT CASE WHEN ?2 AND status IN ('succeeded', 'failed', 'trapped', 'cancelled') AND COALESCE(shown_end_ms, 0) > ?3 THEN 'running' ELSE COALESCE(visible, status) END AS shown, COUNT(*)
         FROM jobs WHERE grant_id = ?1 GROUP BY shown",
    )?;
    let rows = stmt.query_map(params![grant, developer, now_ms], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    rows.collect()
}

/// What a grant's jobs used in all: `(queries, fuel, rows read, run ms)`.
pub(crate) fn metering(db: &Connection, grant: &str) -> rusqlite::Result<(i64, i64, i64, i64)> {
    db.prepare_cached(
        "SELECT COALESCE(SUM(queries), 0), COALESCE(SUM(fuel), 0), COALESCE(SUM(rows_scanned), 0), COALESCE(SUM(run_ms), 0) FROM jobs WHERE grant_id = ?1")?.query_row(
        [grant],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
}

/// How many outputs a grant's jobs made and how many of them were
/// released: `(outputs, releases)`.
pub(crate) fn outputs_and_releases(db: &Connection, grant: &str) -> rusqlite::Result<(i64, i64)> {
    db.prepare_cached(
        "SELECT COUNT(o.id), COUNT(r.id) FROM outputs o JOIN jobs j ON j.id = o.job_id LEFT JOIN releases r ON r.output_id = o.id WHERE j.grant_id = ?1")?.query_row(
        [grant],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Jobs by status as recorded, for the metrics: `(status, count)`.
pub(crate) fn count_by_status(db: &Connection) -> rusqlite::Result<Vec<(String, f64)>> {
    let mut stmt =
        db.prepare_cached("SELECT status, CAST(COUNT(*) AS REAL) FROM jobs GROUP BY status")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?)))?;
    rows.collect()
}

// Log retention.

/// Outcome outputs not released (quarantined or rejected) of jobs that
/// ended before `cutoff` and still keep logs, as `(id, data)`.
pub(crate) fn outcomes_with_logs_before(
    db: &Connection,
    cutoff: &str,
) -> rusqlite::Result<Vec<(String, Vec<u8>)>> {
    let mut stmt = db.prepare_cached(
        "SELECT o.id, o.data FROM outputs o JOIN jobs j ON j.outcome_output = o.id
         WHERE j.ended_at IS NOT NULL AND j.ended_at < ?1 AND j.logs != '[]' AND o.status IN ('quarantined', 'rejected')",
    )?;
    let rows = stmt.query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Replaces an outcome output not released by its pruned table, which
/// leaves review (`pruned`).
pub(crate) fn prune_outcome(
    db: &Connection,
    output: &str,
    data: &[u8],
    sha256: &str,
) -> rusqlite::Result<()> {
    db.prepare_cached(
        "UPDATE outputs SET data = ?2, sha256 = ?3, status = 'pruned' WHERE id = ?1 AND status IN ('quarantined', 'rejected')")?.execute(
        params![output, data, sha256],
    )?;
    Ok(())
}

/// Clears the logs of jobs that ended before `cutoff`; returns how many
/// jobs had some.
pub(crate) fn clear_logs_before(db: &Connection, cutoff: &str) -> rusqlite::Result<usize> {
    db.prepare_cached(
        "UPDATE jobs SET logs = '[]' WHERE ended_at IS NOT NULL AND ended_at < ?1 AND logs != '[]'",
    )?
    .execute([cutoff])
}

/// The releases of a job's outputs other than its outcome, in the order
/// the outputs were made.
pub(crate) fn release_ids(db: &Connection, id: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = db.prepare_cached(
        "SELECT r.id FROM releases r JOIN outputs o ON o.id = r.output_id WHERE o.job_id = ?1 AND o.kind != 'outcome' ORDER BY o.created_at, o.rowid",
    )?;
    let rows = stmt.query_map([id], |r| r.get(0))?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_endings_read_back_as_written_and_unknown_words_are_errors() {
        for status in [JobStatus::Queued, JobStatus::Running] {
            assert_eq!(shown_status(status.as_str(), None).unwrap(), status);
        }
        for (ending, visible, shown) in [
            ("succeeded", Some("finished"), JobStatus::Finished),
            ("failed", Some("refused"), JobStatus::Refused),
            ("trapped", Some("stopped"), JobStatus::Stopped),
            // Before schema 11 nothing recorded what the service decided.
            ("cancelled", None, JobStatus::Stopped),
            ("failed", None, JobStatus::Finished),
        ] {
            assert_eq!(
                shown_status(ending, visible).unwrap(),
                shown,
                "{ending} {visible:?}"
            );
            assert_eq!(RunEnding::parse(ending).unwrap().as_str(), ending);
        }
        assert!(shown_status("exploded", None).is_err());
        assert!(shown_status("succeeded", Some("queued")).is_err());
        assert_eq!(
            serde_json::to_value(JobStatus::Refused).unwrap(),
            serde_json::json!("refused")
        );
    }
}
