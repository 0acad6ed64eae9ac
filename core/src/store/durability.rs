//! Durable commits without holding the store's lock through a flush.
//!
//! With `synchronous=FULL` every commit flushes the write-ahead log while
//! the one connection is locked, so every other request waits for the
//! disk: at about 1 ms a flush and six commits a job, that lock was the
//! service's ceiling. A recorded change is instead committed with
//! `synchronous=NORMAL` (its frames are written to the log, not flushed)
//! and then made durable by [`WalSync::sync_through`] after the lock is
//! released, before its ledger entry is appended. Concurrent callers share
//! one flush: a flush covers every commit written before it started.
//!
//! Order per change: commit (store, not yet durable) → flush the log →
//! append the entry. A crash before the flush may lose the commit and its
//! pending record, and then the entry was never written either: the store
//! and the ledger still agree. SQLite itself flushes the log before each
//! checkpoint and the database after it, so a commit already moved into
//! the database file is durable there whatever the log holds later.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use rusqlite::Connection;

use crate::DomainError;

/// Flushes the store's write-ahead log for commits made without a flush.
pub(crate) struct WalSync {
    wal: PathBuf,
    /// Commits made without a flush so far; a commit's ticket is its count.
    committed: AtomicU64,
    /// The highest ticket known durable, and the open log file.
    synced: Mutex<(u64, Option<File>)>,
}

impl WalSync {
    /// For the store at `db_path` (its log is `db_path` + `-wal`).
    pub(crate) fn new(db_path: &Path) -> Self {
        let mut wal = db_path.as_os_str().to_owned();
        wal.push("-wal");
        WalSync {
            wal: PathBuf::from(wal),
            committed: AtomicU64::new(0),
            synced: Mutex::new((0, None)),
        }
    }

    /// Runs `write` (which commits) on `db` with flushes turned off, and
    /// returns its result with the ticket to pass to [`Self::sync_through`].
    /// Call with the store locked; `FULL` is restored whatever `write` did.
    pub(crate) fn unflushed<T, E: From<rusqlite::Error>>(
        &self,
        db: &mut Connection,
        write: impl FnOnce(&mut Connection) -> Result<T, E>,
    ) -> Result<(T, u64), E> {
        set_synchronous(db, "NORMAL")?;
        let written = write(db);
        // Tickets are taken under the store's lock, after the commit's
        // frames were written: a flush started later covers them.
        let ticket = self.committed.fetch_add(1, Ordering::SeqCst) + 1;
        let restored = set_synchronous(db, "FULL");
        let value = written?;
        restored?;
        Ok((value, ticket))
    }

    /// Returns once every commit up to `ticket` is on the disk. Callers
    /// arriving during a flush wait for it and, when it covered them,
    /// return without a flush of their own.
    pub(crate) fn sync_through(&self, ticket: u64) -> std::io::Result<()> {
        let mut synced = self
            .synced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if synced.0 >= ticket {
            return Ok(());
        }
        let covered = self.committed.load(Ordering::SeqCst);
        let file = self.log_file(&mut synced.1)?;
        file.sync_data()?;
        synced.0 = synced.0.max(covered);
        Ok(())
    }

    /// The open log file, reopened if SQLite replaced it since (it only
    /// deletes it when the last connection closes, but a flush of a
    /// replaced file would be a silent loss).
    fn log_file<'a>(&self, open: &'a mut Option<File>) -> std::io::Result<&'a File> {
        let current = std::fs::symlink_metadata(&self.wal)?.ino();
        let stale = match open {
            Some(f) => f.metadata()?.ino() != current,
            None => true,
        };
        if stale {
            *open = Some(
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&self.wal)?,
            );
        }
        open.as_ref()
            .ok_or_else(|| std::io::Error::other("the store's log file is not open"))
    }
}

/// How many log frames (pages) make the committing connection checkpoint
/// itself while a [`BackgroundCheckpoint`] runs: a safety net (SQLite's
/// default is 1000). By then the background thread has copied all but its
/// last interval's frames, so the checkpoint under the store's lock is
/// short, and it lets the next commit restart the log from its start.
const LOCKED_CHECKPOINT_FRAMES: i64 = 10_000;

/// How often the background thread looks for new commits to copy.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Copies the store's log into the database file on a thread of its own.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses its
/// threshold, with the store's lock held: every ~35 jobs one request
/// copied ~1000 pages and flushed the log and the database file (up to
/// 5 ms each) while all others queued behind it (the service's p99). This
/// thread runs a `PASSIVE` checkpoint on its own connection, which neither
/// waits for nor blocks the service's connection; SQLite flushes the log
/// before copying and the database file after, so what it copies is
/// durable whatever mode the commit used.
pub(crate) struct BackgroundCheckpoint {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for BackgroundCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundCheckpoint")
            .finish_non_exhaustive()
    }
}

impl BackgroundCheckpoint {
    /// Starts checkpointing the store at `db_path`, whose service
    /// connection `main` then checkpoints itself only past
    /// [`LOCKED_CHECKPOINT_FRAMES`].
    pub(crate) fn start(db_path: &Path, main: &Connection) -> Result<Self, DomainError> {
        use rusqlite::OpenFlags;
        let conn = Connection::open_with_flags(
            db_path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        main.pragma_update(None, "wal_autocheckpoint", LOCKED_CHECKPOINT_FRAMES)?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("unseen-store-checkpoint".into())
            .spawn(move || checkpoint_until_stopped(&conn, &signal))
            .map_err(|e| {
                DomainError::Internal(format!(
                    "the store's checkpoint thread could not start: {e}"
                ))
            })?;
        Ok(BackgroundCheckpoint {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for BackgroundCheckpoint {
    fn drop(&mut self) {
        let (stopped, wake) = &*self.stop;
        *stopped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn checkpoint_until_stopped(conn: &Connection, stop: &(Mutex<bool>, Condvar)) {
    let (stopped, wake) = stop;
    // Changes only when another connection committed: an idle store is
    // not touched.
    let data_version = |conn: &Connection| -> rusqlite::Result<i64> {
        conn.prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))
    };
    let mut copied = None;
    loop {
        {
            let guard = stopped
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (guard, _) = wake
                .wait_timeout_while(guard, CHECKPOINT_INTERVAL, |stopped| !*stopped)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *guard {
                return;
            }
        }
        let checkpoint = data_version(conn).and_then(|version| {
            if copied == Some(version) {
                return Ok(());
            }
            conn.prepare_cached("PRAGMA wal_checkpoint(PASSIVE)")?
                .query_row([], |_| Ok(()))?;
            copied = Some(version);
            Ok(())
        });
        if let Err(e) = checkpoint {
            // The service's own checkpoint (past the frame limit) still
            // bounds the log; nothing is lost.
            tracing::warn!(error = %e, "the store's background checkpoint failed; the next commit past the log limit checkpoints instead");
        }
    }
}

fn set_synchronous(db: &Connection, mode: &str) -> rusqlite::Result<()> {
    db.pragma_update(None, "synchronous", mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit made without a flush is in the store, and one flush
    /// covers every commit made before it.
    #[test]
    fn unflushed_commits_are_kept_and_flushed_together() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut db = super::super::open(&path).unwrap();
        let wal = WalSync::new(&path);
        let mut tickets = Vec::new();
        for id in ["a", "b"] {
            let ((), ticket) = wal
                .unflushed(&mut db, |db| {
                    db.execute(
                        "INSERT INTO users(id, name, role, org, created_at) VALUES (?1, 'n', 'developer', 'o', 'now')",
                        [id],
                    )
                    .map(|_| ())
                })
                .unwrap();
            tickets.push(ticket);
        }
        assert_eq!(tickets, [1, 2]);
        let mode: i64 = db
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, 2, "FULL is restored after the commit");
        wal.sync_through(1).unwrap();
        assert_eq!(wal.synced.lock().unwrap().0, 2, "the flush covered both");
        wal.sync_through(2).unwrap();
        let users: i64 = db
            .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))
            .unwrap();
        assert_eq!(users, 2);
    }

    /// A write that fails still leaves the connection flushing.
    #[test]
    fn a_failed_write_restores_full_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut db = super::super::open(&path).unwrap();
        let wal = WalSync::new(&path);
        let failed: Result<((), u64), rusqlite::Error> = wal.unflushed(&mut db, |db| {
            db.execute("INSERT INTO nowhere VALUES (1)", []).map(|_| ())
        });
        assert!(failed.is_err());
        let mode: i64 = db
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, 2);
    }

    /// The background thread copies committed pages into the database
    /// file although the service's connection would not checkpoint yet.
    #[test]
    fn the_background_thread_copies_commits_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let db = super::super::open(&path).unwrap();
        db.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        let checkpoint = BackgroundCheckpoint::start(&path, &db).unwrap();
        let limit: i64 = db
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(limit, LOCKED_CHECKPOINT_FRAMES);
        for i in 0..200 {
            db.execute(
                "INSERT INTO users(id, name, role, org, created_at) VALUES (?1, ?2, 'developer', 'o', 'now')",
                [format!("u{i}"), "x".repeat(500)],
            )
            .unwrap();
        }
        // Far below the service connection's own limit: only the thread
        // can have grown the database file.
        let grown = (0..600).any(|_| {
            std::thread::sleep(CHECKPOINT_INTERVAL);
            std::fs::metadata(&path).unwrap().len() > before
        });
        drop(checkpoint);
        assert!(grown, "the database file never received the log's pages");
        let users: i64 = db
            .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))
            .unwrap();
        assert_eq!(users, 200);
    }
}
