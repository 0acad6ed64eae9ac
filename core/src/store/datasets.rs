//! Registered datasets.

use rusqlite::{Connection, OptionalExtension, params};

/// Whether a dataset of this name is registered (destroyed ones included:
/// their names are not reused).
pub(crate) fn exists(db: &Connection, name: &str) -> rusqlite::Result<bool> {
    let found: Option<String> = db
        .prepare_cached("SELECT name FROM datasets WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    Ok(found.is_some())
}

/// A new dataset's row.
pub(crate) struct NewDataset<'a> {
    pub name: &'a str,
    pub manifest: &'a str,
    pub manifest_version: u32,
    /// The encrypted file, relative to the data directory.
    pub file: &'a str,
    pub wrapped_key: &'a [u8],
    pub rows: u64,
    pub unit_unique: bool,
    pub source_sha256: &'a str,
    pub registered_by: &'a str,
    pub registered_at: &'a str,
    /// The columns found within their declared bounds, as a JSON array.
    pub within_bounds: &'a str,
}

/// Registers a dataset.
pub(crate) fn insert(db: &Connection, d: &NewDataset<'_>) -> rusqlite::Result<()> {
    db.prepare_cached(
        "INSERT INTO datasets(name, manifest, manifest_version, file, wrapped_key, rows, unit_unique, source_sha256, registered_by, registered_at, within_bounds)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)")?.execute(
        params![d.name, d.manifest, d.manifest_version, d.file, d.wrapped_key, d.rows as i64, d.unit_unique, d.source_sha256, d.registered_by, d.registered_at, d.within_bounds],
    )?;
    Ok(())
}

/// What the engine needs to open a dataset; `wrapped_key` is `None` once
/// the dataset is destroyed.
pub(crate) struct Stored {
    pub manifest: String,
    pub file: String,
    pub wrapped_key: Option<Vec<u8>>,
    pub unit_unique: bool,
    pub rows: i64,
    /// JSON array of column names.
    pub within_bounds: String,
}

/// A registered dataset's stored row.
pub(crate) fn stored(db: &Connection, name: &str) -> rusqlite::Result<Option<Stored>> {
    db.prepare_cached(
        "SELECT manifest, file, wrapped_key, unit_unique, rows, within_bounds FROM datasets WHERE name = ?1")?.query_row(
        [name],
        |r| {
            Ok(Stored {
                manifest: r.get(0)?,
                file: r.get(1)?,
                wrapped_key: r.get(2)?,
                unit_unique: r.get(3)?,
                rows: r.get(4)?,
                within_bounds: r.get(5)?,
            })
        },
    )
    .optional()
}
