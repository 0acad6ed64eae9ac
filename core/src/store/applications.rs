//! Grant applications and their steps.

use rusqlite::{Connection, OptionalExtension, params};
use unseen_api::{Application, ApplicationStatus, ApplicationStep, GrantRequest};

/// A stored request that no longer reads as one: the store was altered.
fn corrupt(what: &str, detail: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("application {what} does not read: {detail}").into(),
    )
}

fn request_of(text: &str) -> rusqlite::Result<GrantRequest> {
    serde_json::from_str(text).map_err(|e| corrupt("terms", e))
}

/// A new application, `submitted`.
pub(crate) fn insert(
    db: &Connection,
    id: &str,
    applicant: &str,
    request: &GrantRequest,
    at: &str,
) -> rusqlite::Result<()> {
    let terms = serde_json::to_string(request).map_err(|e| corrupt("terms", e))?;
    db.prepare_cached(
        "INSERT INTO applications(id, applicant, status, request, submitted_at, updated_at) VALUES (?1, ?2, 'submitted', ?3, ?4, ?4)")?.execute(
        params![id, applicant, terms, at],
    )?;
    Ok(())
}

/// Moves an application from `from` to `to`; false (nothing changed) when
/// it was not in `from`, so two concurrent steps cannot both apply.
pub(crate) fn advance(
    db: &Connection,
    id: &str,
    from: &[ApplicationStatus],
    to: ApplicationStatus,
    at: &str,
) -> rusqlite::Result<bool> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let from = serde_json::to_string(&from).map_err(|e| corrupt("status", e))?;
    let changed = db.prepare_cached(
        "UPDATE applications SET status = ?1, updated_at = ?2 WHERE id = ?3 AND status IN (SELECT value FROM json_each(?4))")?.execute(
        params![to.as_str(), at, id, from],
    )?;
    Ok(changed == 1)
}

/// Replaces the terms asked for (an amendment).
pub(crate) fn set_request(
    db: &Connection,
    id: &str,
    request: &GrantRequest,
) -> rusqlite::Result<()> {
    let terms = serde_json::to_string(request).map_err(|e| corrupt("terms", e))?;
    db.prepare_cached("UPDATE applications SET request = ?1 WHERE id = ?2")?
        .execute(params![terms, id])?;
    Ok(())
}

/// Records the terms approved and the grant issued with them.
pub(crate) fn set_granted(
    db: &Connection,
    id: &str,
    granted: &GrantRequest,
    grant: &str,
) -> rusqlite::Result<()> {
    let terms = serde_json::to_string(granted).map_err(|e| corrupt("terms", e))?;
    db.prepare_cached("UPDATE applications SET granted = ?1, grant_id = ?2 WHERE id = ?3")?
        .execute(params![terms, grant, id])?;
    Ok(())
}

/// Adds a step to an application's history.
pub(crate) fn add_step(db: &Connection, id: &str, step: &ApplicationStep) -> rusqlite::Result<()> {
    db.prepare_cached(
        "INSERT INTO application_steps(application, step, actor, at, reason, rating) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(
        params![id, step.step, step.actor, step.at, step.reason, step.rating],
    )?;
    Ok(())
}

fn steps(db: &Connection, id: &str) -> rusqlite::Result<Vec<ApplicationStep>> {
    let mut statement = db.prepare_cached(
        "SELECT step, actor, at, reason, rating FROM application_steps WHERE application = ?1 ORDER BY seq",
    )?;
    statement
        .query_map([id], |r| {
            Ok(ApplicationStep {
                step: r.get(0)?,
                actor: r.get(1)?,
                at: r.get(2)?,
                reason: r.get(3)?,
                rating: r.get(4)?,
            })
        })?
        .collect()
}

const COLUMNS: &str = "id, applicant, status, request, granted, grant_id, submitted_at, updated_at";

fn read(db: &Connection, r: &rusqlite::Row<'_>) -> rusqlite::Result<Application> {
    let id: String = r.get(0)?;
    let status: String = r.get(2)?;
    let granted: Option<String> = r.get(4)?;
    Ok(Application {
        applicant: r.get(1)?,
        status: ApplicationStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        requested: request_of(&r.get::<_, String>(3)?)?,
        granted: granted.as_deref().map(request_of).transpose()?,
        grant: r.get(5)?,
        submitted_at: r.get(6)?,
        updated_at: r.get(7)?,
        history: steps(db, &id)?,
        id,
    })
}

/// One application with its history.
pub(crate) fn by_id(db: &Connection, id: &str) -> rusqlite::Result<Option<Application>> {
    db.prepare_cached(&format!("SELECT {COLUMNS} FROM applications WHERE id = ?1"))?
        .query_row([id], |r| read(db, r))
        .optional()
}

/// Applications, newest first: all, or one applicant's.
pub(crate) fn list(db: &Connection, applicant: Option<&str>) -> rusqlite::Result<Vec<Application>> {
    let mut statement = db.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM applications WHERE ?1 IS NULL OR applicant = ?1 ORDER BY submitted_at DESC, id"
    ))?;
    statement.query_map([applicant], |r| read(db, r))?.collect()
}
