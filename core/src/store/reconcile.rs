//! Reading the store to reconcile it with the ledger.

use std::collections::BTreeMap;

use rusqlite::Connection;

use crate::reconcile::{DatasetState, GrantState, State, UserState, review_key};

/// The state the store holds, as the reconciliation compares it.
pub(crate) fn state(db: &Connection) -> rusqlite::Result<State> {
    let mut s = State::default();
    {
        let mut stmt = db.prepare_cached(
            "SELECT id, epsilon_total, epsilon_spent, delta_spent, runs, downloads, revoked_at IS NOT NULL FROM grants",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                GrantState {
                    epsilon_total: r.get(1)?,
                    epsilon_spent: r.get(2)?,
                    delta_spent: r.get(3)?,
                    runs: r.get(4)?,
                    downloads: r.get(5)?,
                    revoked: r.get(6)?,
                },
            ))
        })?;
        s.grants = rows.collect::<Result<_, _>>()?;
    }
    {
        let mut stmt = db.prepare_cached(
            "SELECT name, epsilon_total, epsilon_spent, destroyed_at IS NOT NULL FROM datasets",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                DatasetState {
                    epsilon_total: r.get(1)?,
                    epsilon_spent: r.get(2)?,
                    destroyed: r.get(3)?,
                },
            ))
        })?;
        s.datasets = rows.collect::<Result<_, _>>()?;
    }
    {
        let mut stmt =
            db.prepare_cached("SELECT id, epsilon_total, epsilon_spent, disabled FROM users")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                UserState {
                    epsilon_total: r.get(1)?,
                    epsilon_spent: r.get(2)?,
                    disabled: r.get::<_, i64>(3)? != 0,
                },
            ))
        })?;
        s.users = rows.collect::<Result<_, _>>()?;
    }
    let pairs = |sql: &str| -> rusqlite::Result<BTreeMap<String, String>> {
        let mut stmt = db.prepare_cached(sql)?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    };
    s.jobs = pairs("SELECT id, status FROM jobs")?;
    s.outputs = pairs("SELECT id, status FROM outputs")?;
    let counts = |sql: &str| -> rusqlite::Result<BTreeMap<String, i64>> {
        let mut stmt = db.prepare_cached(sql)?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    };
    {
        let mut stmt = db.prepare_cached(
            "SELECT output_id, reviewer, decision, COUNT(*) FROM reviews GROUP BY output_id, reviewer, decision",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                review_key(
                    &r.get::<_, String>(0)?,
                    &r.get::<_, String>(1)?,
                    &r.get::<_, String>(2)?,
                ),
                r.get::<_, i64>(3)?,
            ))
        })?;
        s.reviews = rows.collect::<Result<_, _>>()?;
    }
    s.releases = pairs("SELECT id, '' FROM releases")?
        .into_keys()
        .map(|id| (id, ()))
        .collect();
    s.downloads = counts("SELECT release_id, COUNT(*) FROM downloads GROUP BY release_id")?;
    Ok(s)
}
