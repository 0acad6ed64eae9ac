//! The metadata store: SQLite in WAL mode under the data directory.
//!
//! Every SQL statement on the store is written in this module, one
//! submodule per topic; the rest of the core calls typed functions that
//! take the connection (or a transaction, which derefs to it). Locking,
//! transactions and the ledger records that go with a change stay with the
//! callers.

pub(crate) mod access;
pub(crate) mod applications;
pub(crate) mod budget;
pub(crate) mod charges;
pub(crate) mod cluster;
pub(crate) mod datasets;
pub(crate) mod durability;
pub(crate) mod grants;
pub(crate) mod imports;
pub(crate) mod jobs;
pub(crate) mod metrics;
pub(crate) mod reconcile;
pub(crate) mod records;
pub(crate) mod recovery;
pub(crate) mod releases;
pub(crate) mod review;
pub(crate) mod users;

use std::path::Path;

use rusqlite::Connection;

use crate::DomainError;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS users(
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'developer', 'reviewer', 'auditor')),
    org TEXT NOT NULL,
    created_at TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    epsilon_total REAL CHECK (epsilon_total IS NULL OR epsilon_total > 0),
    epsilon_spent REAL NOT NULL DEFAULT 0,
    token_sha256 TEXT UNIQUE,
    token_issued_at TEXT
);
CREATE TABLE IF NOT EXISTS datasets(
    name TEXT PRIMARY KEY,
    manifest TEXT NOT NULL,
    manifest_version INTEGER NOT NULL,
    file TEXT NOT NULL,
    wrapped_key BLOB,
    rows INTEGER NOT NULL,
    unit_unique INTEGER NOT NULL,
    within_bounds TEXT NOT NULL DEFAULT '[]',
    source_sha256 TEXT NOT NULL,
    registered_by TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    epsilon_total REAL CHECK (epsilon_total IS NULL OR epsilon_total > 0),
    epsilon_spent REAL NOT NULL DEFAULT 0,
    destroyed_at TEXT
);
CREATE TABLE IF NOT EXISTS grants(
    id TEXT PRIMARY KEY,
    dataset TEXT NOT NULL REFERENCES datasets(name),
    developer TEXT NOT NULL REFERENCES users(id),
    purpose TEXT NOT NULL,
    epsilon_total REAL NOT NULL CHECK (epsilon_total > 0),
    epsilon_spent REAL NOT NULL DEFAULT 0 CHECK (epsilon_spent <= epsilon_total + 1e-9),
    query_epsilon REAL NOT NULL CHECK (query_epsilon > 0),
    allow_extracts INTEGER NOT NULL DEFAULT 0,
    issued_by TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked_at TEXT,
    scenario TEXT NOT NULL DEFAULT '',
    allow_modules INTEGER NOT NULL DEFAULT 1,
    allow_sql INTEGER NOT NULL DEFAULT 1,
    windows TEXT NOT NULL DEFAULT '[]',
    designated TEXT NOT NULL DEFAULT '[]',
    max_runs INTEGER CHECK (max_runs IS NULL OR max_runs > 0),
    runs INTEGER NOT NULL DEFAULT 0,
    max_downloads INTEGER CHECK (max_downloads IS NULL OR max_downloads > 0),
    downloads INTEGER NOT NULL DEFAULT 0,
    derived_reuse INTEGER NOT NULL DEFAULT 0,
    approvals_required INTEGER NOT NULL DEFAULT 1 CHECK (approvals_required IN (1, 2)),
    columns TEXT NOT NULL DEFAULT '[]',
    join_datasets TEXT NOT NULL DEFAULT '[]',
    delta_total REAL NOT NULL DEFAULT 0 CHECK (delta_total >= 0 AND delta_total < 1),
    query_delta REAL NOT NULL DEFAULT 0,
    delta_spent REAL NOT NULL DEFAULT 0,
    allow_udfs INTEGER NOT NULL DEFAULT 0,
    max_open_queries INTEGER CHECK (max_open_queries IS NULL OR max_open_queries >= 0),
    open_query_window INTEGER NOT NULL DEFAULT 3600 CHECK (open_query_window > 0),
    open_queries INTEGER NOT NULL DEFAULT 0,
    udf_row_instructions INTEGER NOT NULL DEFAULT 1000000 CHECK (udf_row_instructions > 0)
);
-- Open-column queries of each grant inside its window (older rows are
-- deleted as they fall out of it); the total is `grants.open_queries`.
CREATE TABLE IF NOT EXISTS open_queries(
    id INTEGER PRIMARY KEY,
    grant_id TEXT NOT NULL REFERENCES grants(id),
    at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS modules(
    sha256 TEXT PRIMARY KEY,
    bytes BLOB NOT NULL,
    uploaded_by TEXT NOT NULL,
    uploaded_at TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'job' CHECK (kind IN ('job', 'udf')),
    functions TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS jobs(
    id TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL REFERENCES grants(id),
    module TEXT REFERENCES modules(sha256),
    sql TEXT,
    submitter TEXT NOT NULL REFERENCES users(id),
    status TEXT NOT NULL,
    error TEXT,
    submitted_at TEXT NOT NULL,
    ended_at TEXT,
    fuel INTEGER,
    queries INTEGER,
    params TEXT NOT NULL DEFAULT '{}',
    started_at TEXT,
    run_ms INTEGER,
    rows_scanned INTEGER,
    epsilon REAL,
    logs TEXT NOT NULL DEFAULT '[]',
    udf_modules TEXT NOT NULL DEFAULT '[]',
    inputs TEXT NOT NULL DEFAULT '[]',
    visible TEXT CHECK (visible IS NULL OR visible IN ('finished', 'stopped', 'refused')),
    stopped_by TEXT,
    reason TEXT,
    refusals TEXT NOT NULL DEFAULT '[]',
    outcome_output TEXT,
    shown_end_ms INTEGER
);
CREATE TABLE IF NOT EXISTS release_cache(
    grant_id TEXT NOT NULL REFERENCES grants(id),
    fingerprint TEXT NOT NULL,
    result BLOB NOT NULL,
    epsilon REAL NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (grant_id, fingerprint)
);
CREATE TABLE IF NOT EXISTS spends(
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    grant_id TEXT NOT NULL,
    epsilon REAL NOT NULL,
    delta REAL NOT NULL DEFAULT 0,
    query_sha256 TEXT NOT NULL,
    at TEXT NOT NULL,
    datasets TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS outputs(
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'quarantined',
    findings TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'table' CHECK (kind IN ('table', 'outcome', 'extract')),
    disclosure TEXT
);
CREATE TABLE IF NOT EXISTS reviews(
    id INTEGER PRIMARY KEY,
    output_id TEXT NOT NULL REFERENCES outputs(id),
    reviewer TEXT NOT NULL REFERENCES users(id),
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS releases(
    id TEXT PRIMARY KEY,
    output_id TEXT NOT NULL UNIQUE REFERENCES outputs(id),
    document TEXT NOT NULL,
    signature TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS downloads(
    id INTEGER PRIMARY KEY,
    release_id TEXT NOT NULL REFERENCES releases(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    at TEXT NOT NULL
);
-- Grant applications: the terms asked for and, once approved, the terms
-- the grant was issued with; each step taken on them, oldest first.
CREATE TABLE IF NOT EXISTS applications(
    id TEXT PRIMARY KEY,
    applicant TEXT NOT NULL REFERENCES users(id),
    status TEXT NOT NULL CHECK (status IN ('submitted', 'returned', 'in_review', 'approved', 'rejected', 'withdrawn')),
    request TEXT NOT NULL,
    granted TEXT,
    grant_id TEXT REFERENCES grants(id),
    submitted_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS application_steps(
    seq INTEGER PRIMARY KEY,
    application TEXT NOT NULL REFERENCES applications(id),
    step TEXT NOT NULL,
    actor TEXT NOT NULL,
    at TEXT NOT NULL,
    reason TEXT NOT NULL,
    rating INTEGER CHECK (rating IS NULL OR rating BETWEEN 1 AND 5)
);
-- Outside data proposed for a grant: quarantined (encrypted under
-- `imports/`) until a data provider decides; approved ones are datasets.
CREATE TABLE IF NOT EXISTS imports(
    id TEXT PRIMARY KEY,
    dataset TEXT NOT NULL,
    grant_id TEXT NOT NULL REFERENCES grants(id),
    proposed_by TEXT NOT NULL REFERENCES users(id),
    status TEXT NOT NULL CHECK (status IN ('proposed', 'approved', 'rejected', 'destroyed')),
    manifest TEXT NOT NULL,
    wrapped_key BLOB,
    source_sha256 TEXT NOT NULL,
    checks TEXT NOT NULL,
    proposed_at TEXT NOT NULL,
    decided_by TEXT,
    decided_at TEXT,
    reason TEXT NOT NULL DEFAULT '',
    epsilon_total REAL CHECK (epsilon_total IS NULL OR epsilon_total > 0)
);
CREATE TABLE IF NOT EXISTS pending_records(
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    time TEXT NOT NULL,
    body TEXT NOT NULL,
    ledger_from INTEGER NOT NULL
);
-- Executors enrolled to read data on a cluster (`cluster.rs`); a name
-- enrolled again gets a new enrolment and secret.
CREATE TABLE IF NOT EXISTS executors(
    name TEXT PRIMARY KEY,
    enrolment TEXT NOT NULL UNIQUE,
    wrapped_secret BLOB NOT NULL,
    enrolled_at TEXT NOT NULL,
    enrolled_by TEXT NOT NULL,
    revoked_at TEXT
);
-- The cluster's certificate authority (`cluster.rs`): one row, its key
-- sealed by the master key.
CREATE TABLE IF NOT EXISTS cluster_authority(
    id INTEGER PRIMARY KEY CHECK (id = 1),
    certificate TEXT NOT NULL,
    sealed_key BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_grant ON jobs(grant_id);
CREATE INDEX IF NOT EXISTS steps_by_application ON application_steps(application, seq);
CREATE INDEX IF NOT EXISTS outputs_by_job ON outputs(job_id);
-- The output checks read a grant's approved outputs, and job views sum a
-- job's spends, once per job: without these both scan what every earlier
-- job left, so a long run slows down as it goes.
CREATE INDEX IF NOT EXISTS outputs_by_status ON outputs(status, job_id);
CREATE INDEX IF NOT EXISTS spends_by_job ON spends(job_id);
CREATE INDEX IF NOT EXISTS open_queries_by_grant ON open_queries(grant_id, at);
"#;

/// Version of [`SCHEMA`], kept in SQLite's `user_version`.
pub const SCHEMA_VERSION: i64 = 17;

/// How a store of an earlier version becomes the current one, in the same
/// transaction as the version bump: `(from, statements)`.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        8,
    "ALTER TABLE modules ADD COLUMN kind TEXT NOT NULL DEFAULT 'job' CHECK (kind IN ('job', 'udf'));
     ALTER TABLE modules ADD COLUMN functions TEXT NOT NULL DEFAULT '[]';
     ALTER TABLE grants ADD COLUMN allow_udfs INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE jobs ADD COLUMN udf_modules TEXT NOT NULL DEFAULT '[]';",
    ),
    (
        9,
        "ALTER TABLE jobs ADD COLUMN inputs TEXT NOT NULL DEFAULT '[]';",
    ),
    // What developers see of a job, and outputs by kind. Jobs that ended
    // before are shown as finished (or stopped, when cancelled): their
    // failures cannot be told from the guest's own after the fact, so
    // nothing of them is shown.
    (
        10,
        "ALTER TABLE jobs ADD COLUMN visible TEXT CHECK (visible IS NULL OR visible IN ('finished', 'stopped', 'refused'));
     ALTER TABLE jobs ADD COLUMN stopped_by TEXT;
     ALTER TABLE jobs ADD COLUMN reason TEXT;
     ALTER TABLE jobs ADD COLUMN refusals TEXT NOT NULL DEFAULT '[]';
     ALTER TABLE jobs ADD COLUMN outcome_output TEXT;
     UPDATE jobs SET visible = 'finished' WHERE status IN ('succeeded', 'failed', 'trapped');
     UPDATE jobs SET visible = 'stopped', stopped_by = 'cancelled', reason = error WHERE status = 'cancelled';
     ALTER TABLE outputs ADD COLUMN kind TEXT NOT NULL DEFAULT 'table' CHECK (kind IN ('table', 'outcome', 'extract'));
     ALTER TABLE outputs ADD COLUMN disclosure TEXT;",
    ),
    // Version 12 adds `pending_records` (see `records.rs`), which the
    // schema creates; nothing older changes.
    (11, ""),
    // Grants issued before open-column queries were limited keep no limit
    // (NULL): their terms do not change under them.
    (
        12,
        "ALTER TABLE grants ADD COLUMN max_open_queries INTEGER CHECK (max_open_queries IS NULL OR max_open_queries >= 0);
     ALTER TABLE grants ADD COLUMN open_query_window INTEGER NOT NULL DEFAULT 3600 CHECK (open_query_window > 0);
     ALTER TABLE grants ADD COLUMN open_queries INTEGER NOT NULL DEFAULT 0;",
    ),
    // Grants issued before per-grant caps get the host's default cap; jobs
    // that ended before shown end times were shown as they ended; earlier
    // spends name no dataset (their jobs have all ended).
    (
        13,
        "ALTER TABLE grants ADD COLUMN udf_row_instructions INTEGER NOT NULL DEFAULT 1000000 CHECK (udf_row_instructions > 0);
     ALTER TABLE jobs ADD COLUMN shown_end_ms INTEGER;
     ALTER TABLE spends ADD COLUMN datasets TEXT NOT NULL DEFAULT '[]';",
    ),
    // Version 15 adds grant applications and imports, which the schema creates.
    (14, ""),
    // Version 16 adds enrolled cluster executors, which the schema creates.
    (15, ""),
    // Version 17 adds the cluster's certificate authority, which the schema
    // creates.
    (16, ""),
];

/// Opens (creating on first run) the store in WAL mode. The store and its
/// `-wal` and `-shm` files are owner-only: SQLite gives the side files the
/// database file's mode, and the database file is created 0600 here first.
pub fn open(path: &Path) -> Result<Connection, DomainError> {
    if !path.exists() {
        crate::util::create_private(path).map_err(|e| DomainError::io(path, e))?;
    }
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    for side in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(side);
        let side = std::path::PathBuf::from(name);
        if side.exists() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&side, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| DomainError::io(&side, e))?;
        }
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Deleted content (a destroyed data key) is overwritten, not left in free pages.
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Every statement is prepared once per connection (see `prepare_cached`).
    conn.set_prepared_statement_cache_capacity(256);
    let tables: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'")?
        .query_row([], |r| r.get(0))?;
    let mut version: i64 = conn
        .prepare_cached("PRAGMA user_version")?
        .query_row([], |r| r.get(0))?;
    let tx = conn.unchecked_transaction()?;
    if tables > 0 {
        for (from, statements) in MIGRATIONS {
            if version == *from {
                tx.execute_batch(statements)?;
                version = from + 1;
            }
        }
    }
    if tables > 0 && version != SCHEMA_VERSION {
        return Err(DomainError::StoreVersion {
            path: path.display().to_string(),
            found: version,
            expected: SCHEMA_VERSION,
        });
    }
    tx.execute_batch(SCHEMA)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 13 store (before per-grant UDF caps and shown end times)
    /// opens as the current version: its grants get the default cap, its
    /// jobs no shown end time.
    #[test]
    fn a_version_13_store_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        {
            let conn = open(&path).unwrap();
            conn.execute_batch(
                "INSERT INTO users(id, name, role, org, created_at) VALUES ('dev', 'Dev', 'developer', 'o', 'now');
                 INSERT INTO datasets(name, manifest, manifest_version, file, rows, unit_unique, source_sha256, registered_by, registered_at)
                     VALUES ('d', '', 1, 'f', 1, 1, 's', 'admin', 'now');
                 INSERT INTO grants(id, dataset, developer, purpose, epsilon_total, query_epsilon, issued_by, issued_at, expires_at, allow_udfs)
                     VALUES ('g', 'd', 'dev', 'p', 1.0, 0.5, 'admin', 'now', 'later', 1);
                 INSERT INTO jobs(id, grant_id, submitter, status, submitted_at) VALUES ('j', 'g', 'dev', 'succeeded', 'now');
                 ALTER TABLE grants DROP COLUMN udf_row_instructions;
                 ALTER TABLE jobs DROP COLUMN shown_end_ms;
                 ALTER TABLE spends DROP COLUMN datasets;
                 PRAGMA user_version = 13;",
            )
            .unwrap();
        }
        let conn = open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let cap: i64 = conn
            .query_row(
                "SELECT udf_row_instructions FROM grants WHERE id = 'g'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(cap, unseen_sandbox::DEFAULT_ROW_INSTRUCTIONS as i64);
        let shown: Option<i64> = conn
            .query_row("SELECT shown_end_ms FROM jobs WHERE id = 'j'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(shown, None);
        conn.prepare("SELECT datasets FROM spends").unwrap();
    }

    /// A version 8 store (before UDF modules, release inputs and open-query
    /// limits) opens as the current version with its rows kept: modules are
    /// job modules, grants allow no UDFs and keep no open-query limit, jobs
    /// read no releases.
    #[test]
    fn a_version_8_store_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        {
            let conn = open(&path).unwrap();
            conn.execute(
                "INSERT INTO modules(sha256, bytes, uploaded_by, uploaded_at) VALUES ('m', x'00', 'dev', 'now')",
                [],
            )
            .unwrap();
            // Back to the version 8 shape.
            conn.execute_batch(
                "ALTER TABLE modules DROP COLUMN functions;
                 ALTER TABLE jobs DROP COLUMN udf_modules;
                 ALTER TABLE jobs DROP COLUMN inputs;
                 ALTER TABLE jobs DROP COLUMN visible;
                 ALTER TABLE jobs DROP COLUMN stopped_by;
                 ALTER TABLE jobs DROP COLUMN reason;
                 ALTER TABLE jobs DROP COLUMN refusals;
                 ALTER TABLE jobs DROP COLUMN outcome_output;
                 ALTER TABLE outputs DROP COLUMN kind;
                 ALTER TABLE outputs DROP COLUMN disclosure;
                 ALTER TABLE grants DROP COLUMN allow_udfs;
                 ALTER TABLE grants DROP COLUMN max_open_queries;
                 ALTER TABLE grants DROP COLUMN open_query_window;
                 ALTER TABLE grants DROP COLUMN open_queries;
                 ALTER TABLE grants DROP COLUMN udf_row_instructions;
                 ALTER TABLE jobs DROP COLUMN shown_end_ms;
                 ALTER TABLE spends DROP COLUMN datasets;
                 CREATE TABLE modules_v8(sha256 TEXT PRIMARY KEY, bytes BLOB NOT NULL, uploaded_by TEXT NOT NULL, uploaded_at TEXT NOT NULL);
                 INSERT INTO modules_v8 SELECT sha256, bytes, uploaded_by, uploaded_at FROM modules;
                 DROP TABLE modules;
                 ALTER TABLE modules_v8 RENAME TO modules;
                 PRAGMA user_version = 8;",
            )
            .unwrap();
        }
        let conn = open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let (kind, functions): (String, String) = conn
            .query_row(
                "SELECT kind, functions FROM modules WHERE sha256 = 'm'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((kind.as_str(), functions.as_str()), ("job", "[]"));
        conn.prepare(
            "SELECT allow_udfs, max_open_queries, open_query_window, open_queries FROM grants",
        )
        .unwrap();
        conn.prepare("SELECT udf_modules, inputs FROM jobs")
            .unwrap();
        conn.prepare("SELECT visible, stopped_by, reason, refusals, outcome_output FROM jobs")
            .unwrap();
        conn.prepare("SELECT kind, disclosure FROM outputs")
            .unwrap();
        let older = dir.path().join("older.db");
        {
            let conn = open(&older).unwrap();
            conn.pragma_update(None, "user_version", 7).unwrap();
        }
        let refused = open(&older).unwrap_err().to_string();
        assert!(refused.contains("schema version 7"), "{refused}");
    }
}
