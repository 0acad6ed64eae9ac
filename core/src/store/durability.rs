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
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::Connection;

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
}
