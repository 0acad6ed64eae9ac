//! One truth between the store and the ledger: the two-phase record.
//!
//! Every change the ledger records (a spend, a run counted, a job's state,
//! a review decision, a download, ...) is made by
//! `Domain::commit_recorded`, and by nothing else:
//!
//! 1. in one SQLite transaction, the change itself and a row in
//!    `pending_records` holding the ledger entry to be written (kind,
//!    actor, time, body with a fresh record id under [`RECORD_FIELD`]) and
//!    the ledger size before it (`ledger_from`); commit;
//! 2. append the entry (group commit: durable when this returns);
//! 3. delete the row, in the next such transaction (so the delete costs
//!    no commit of its own).
//!
//! A crash after 1 leaves the row (and a crash after 2, the last few
//! rows whose entries are written). At the next open, before anything else
//! runs, [`reconcile_pending`] looks for each row's record id in the
//! ledger from `ledger_from` on: an entry found was written (the crash
//! came after 2) and the row goes; otherwise the entry is appended now,
//! with its original time, and one [`RECONCILED_KIND`] entry lists what was
//! repaired (record ids, kinds and entry indices; never values). Both are
//! appended as one group (all or none). So a change is in the store and
//! the ledger, or in neither, once the directory is open again.
//!
//! A ledger append that fails without a crash (a full disk) leaves the row
//! too; the ledger refuses further appends after a failed group, and the
//! next open repairs it the same way.
//!
//! Entries that change nothing in the store (a refusal, a cached answer, a
//! dry run) are plain [`Domain::record`] calls.

use rusqlite::{Connection, Transaction};
use serde_json::{Value, json};
use unseen_ledger::{EntryDraft, Ledger};

use crate::util::new_id;
use crate::{Domain, DomainError, lock};

/// Body field of a recorded change's entry: its pending record's id, by
/// which an open after a crash finds whether the entry was written.
pub const RECORD_FIELD: &str = "record";

/// Kind of the entry an open appends after repairing the ledger.
pub const RECONCILED_KIND: &str = "store.reconciled";

/// Environment variable naming a crash point, `KIND:STAGE` with STAGE
/// `after-commit` (the store committed, the ledger not yet appended) or
/// `after-append` (appended, the pending row not yet deleted): recording
/// an entry of KIND there aborts the process. Honoured only in debug
/// builds, for the crash-consistency tests.
pub const CRASH_AT_VAR: &str = "UNSEEN_CRASH_AT";

/// What a change made inside [`Domain::commit_recorded`] decided.
pub(crate) enum Change<T> {
    /// Commit, and record it in the ledger with this body (a JSON object).
    Record(Value, T),
    /// Roll back: nothing changed, so there is nothing to record.
    Abandon(T),
}

/// Aborts the process here if [`CRASH_AT_VAR`] names this point.
#[cfg(debug_assertions)]
fn crash_point(kind: &str, stage: &str) {
    if let Some(at) = std::env::var_os(CRASH_AT_VAR)
        && at.to_str() == Some(&format!("{kind}:{stage}"))
    {
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
fn crash_point(_kind: &str, _stage: &str) {}

impl Domain {
    /// Makes a change in the store and records it in the ledger, durable
    /// together or not at all (see the module docs). `change` runs inside
    /// the transaction with the store locked; it returns the entry's body
    /// and its result, or [`Change::Abandon`] to roll back. An error from
    /// it rolls back too. Returns the result and the entry's index (none
    /// when abandoned).
    pub(crate) fn commit_recorded<T>(
        &self,
        actor: &str,
        kind: &str,
        change: impl FnOnce(&Transaction<'_>) -> Result<Change<T>, DomainError>,
    ) -> Result<(T, Option<u64>), DomainError> {
        let record = new_id("rec");
        let time = self.now_rfc3339();
        let (committed, ticket) = {
            let mut db = lock(&self.db);
            self.wal.unflushed(&mut db, |db| {
                let tx = db.transaction()?;
                let (mut body, value) = match change(&tx)? {
                    // Dropping the transaction rolls it back.
                    Change::Abandon(value) => return Ok(Err(value)),
                    Change::Record(body, value) => (body, value),
                };
                let Some(fields) = body.as_object_mut() else {
                    return Err(DomainError::Internal(format!(
                        "the `{kind}` entry's body is not a JSON object; nothing was changed"
                    )));
                };
                fields.insert(RECORD_FIELD.to_string(), Value::String(record.clone()));
                // The rows of records written since the last commit go in
                // this one: deleting them costs no commit of its own.
                let written = std::mem::take(&mut *lock(&self.written));
                let committed = commit_with_pending(
                    tx,
                    &written,
                    [&record, kind, actor, &time, &body.to_string()],
                    self.ledger_floor(),
                );
                if committed.is_err() {
                    // Rolled back: those rows are still there.
                    lock(&self.written).extend(written);
                }
                committed?;
                Ok(Ok((body, value)))
            })?
        };
        let (body, value) = match committed {
            Ok(recorded) => recorded,
            Err(abandoned) => return Ok((abandoned, None)),
        };
        // Durable before its entry is appended (see `store::durability`);
        // the flush is shared with the commits of other requests.
        self.sync_store(ticket)?;
        crash_point(kind, "after-commit");
        let index = self.append(actor, kind, time, body)?;
        crash_point(kind, "after-append");
        // Deleted by the next commit; if none comes before the process
        // stops, the next open finds the entry and drops the row.
        lock(&self.written).push(record);
        Ok((value, Some(index)))
    }
}

impl Domain {
    /// Returns once the store's commits up to `ticket` (from
    /// `WalSync::unflushed`) are on the disk.
    pub(crate) fn sync_store(&self, ticket: u64) -> Result<(), DomainError> {
        self.wal
            .sync_through(ticket)
            .map_err(|e| DomainError::io(&self.dir.join("unseen.db-wal"), e))
    }
}

impl Drop for Domain {
    /// A process that stops normally leaves no pending rows for the next
    /// open to look up (losing this delete is harmless: see the module docs).
    fn drop(&mut self) {
        let written = std::mem::take(&mut *lock(&self.written));
        if written.is_empty() {
            return;
        }
        let mut db = lock(&self.db);
        let deleted = db.transaction().and_then(|tx| {
            for done in &written {
                crate::store::records::delete(&tx, done)?;
            }
            tx.commit()
        });
        if let Err(e) = deleted {
            tracing::warn!(error = %e, "could not delete the pending rows of written records; the next open drops them");
        }
    }
}

/// Deletes the pending rows of `written` records, inserts the pending row
/// `[id, kind, actor, time, body]` and commits.
fn commit_with_pending(
    tx: Transaction<'_>,
    written: &[String],
    [id, kind, actor, time, body]: [&str; 5],
    ledger_from: u64,
) -> Result<(), DomainError> {
    for done in written {
        crate::store::records::delete(&tx, done)?;
    }
    crate::store::records::insert(&tx, [id, kind, actor, time, body], ledger_from)?;
    tx.commit()?;
    Ok(())
}

/// A change committed to the store whose entry may not be in the ledger.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub id: String,
    pub draft: EntryDraft,
    /// The ledger's size before the entry was appended (a lower bound of
    /// its index).
    pub ledger_from: u64,
}

/// Every pending record in the store, in commit order.
pub(crate) fn pending(db: &Connection) -> Result<Vec<Pending>, DomainError> {
    let mut found = Vec::new();
    for row in crate::store::records::all(db)? {
        let crate::store::records::PendingRow {
            id,
            kind,
            actor,
            time,
            body,
            ledger_from,
        } = row;
        let body: Value = serde_json::from_str(&body).map_err(|e| DomainError::Damaged {
            what: format!("the store's pending record `{id}` ({kind})"),
            detail: e.to_string(),
        })?;
        found.push(Pending {
            id,
            draft: EntryDraft {
                kind,
                actor,
                time,
                body,
            },
            ledger_from: u64::try_from(ledger_from).unwrap_or(0),
        });
    }
    Ok(found)
}

/// The record id an entry carries, if it records a change.
pub(crate) fn record_id(body: &Value) -> Option<&str> {
    body.get(RECORD_FIELD).and_then(Value::as_str)
}

/// What [`reconcile_pending`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Changes whose entries were missing and are now appended: (record
    /// id, kind).
    pub repaired: Vec<(String, String)>,
    /// Changes whose entries were already written (the crash came after
    /// the append).
    pub already_recorded: usize,
}

/// Brings the ledger level with the store after a crash: appends the
/// entry of every pending record the ledger lacks, then one
/// [`RECONCILED_KIND`] entry saying what was repaired (one group: all or
/// none), and deletes the rows. Runs at open, before anything else
/// touches the store or the ledger.
pub(crate) fn reconcile_pending(
    db: &mut Connection,
    ledger: &mut Ledger,
    clock: &dyn crate::clock::Clock,
) -> Result<Reconciled, DomainError> {
    let rows = pending(db)?;
    let Some(from) = rows.iter().map(|p| p.ledger_from).min() else {
        return Ok(Reconciled::default());
    };
    let written: std::collections::HashSet<String> = ledger
        .entries_from(from)?
        .iter()
        .filter_map(|e| record_id(&e.body).map(str::to_string))
        .collect();
    let (already, missing): (Vec<&Pending>, Vec<&Pending>) =
        rows.iter().partition(|p| written.contains(&p.id));
    let mut done = Reconciled {
        repaired: Vec::new(),
        already_recorded: already.len(),
    };
    if !missing.is_empty() {
        let first = ledger.size();
        let repaired: Vec<Value> = missing
            .iter()
            .zip(first..)
            .map(|(p, index)| json!({"record": p.id, "kind": p.draft.kind, "entry": index}))
            .collect();
        let mut drafts: Vec<EntryDraft> = missing.iter().map(|p| p.draft.clone()).collect();
        drafts.push(EntryDraft {
            kind: RECONCILED_KIND.to_string(),
            actor: "system".to_string(),
            time: clock.rfc3339(),
            body: json!({
                "reason": "the service stopped between committing these changes to the store and recording them; their entries were appended at the next open",
                "repaired": repaired,
                "already_recorded": already.len(),
            }),
        });
        ledger.append_batch(drafts)?;
        done.repaired = missing
            .iter()
            .map(|p| (p.id.clone(), p.draft.kind.clone()))
            .collect();
    }
    let tx = db.transaction()?;
    for p in &rows {
        crate::store::records::delete(&tx, &p.id)?;
    }
    tx.commit()?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending_row(db: &Connection, id: &str, kind: &str, ledger_from: u64) {
        let body = json!({"job": "j", RECORD_FIELD: id}).to_string();
        let row = [id, kind, "dev", "2025-01-01T00:00:00Z", &body];
        crate::store::records::insert(db, row, ledger_from).unwrap();
    }

    fn rows(db: &Connection) -> i64 {
        crate::store::records::count(db).unwrap()
    }

    /// A row whose entry was written is dropped silently; a row whose
    /// entry is missing is appended with its original time and body, then
    /// one `store.reconciled` entry names it; a second pass does nothing.
    #[test]
    fn reconciling_appends_only_what_the_ledger_lacks_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = crate::store::open(&dir.path().join("unseen.db")).unwrap();
        let mut ledger = Ledger::open(&dir.path().join("ledger")).unwrap();
        let from = ledger.size();
        pending_row(&db, "rec-written", "job.submitted", from);
        pending_row(&db, "rec-lost", "job.ended", from);
        ledger
            .append(EntryDraft {
                kind: "job.submitted".into(),
                actor: "dev".into(),
                time: "2025-01-01T00:00:00Z".into(),
                body: json!({"job": "j", RECORD_FIELD: "rec-written"}),
            })
            .unwrap();
        let done = reconcile_pending(&mut db, &mut ledger, &crate::clock::SystemClock).unwrap();
        assert_eq!(
            done,
            Reconciled {
                repaired: vec![("rec-lost".into(), "job.ended".into())],
                already_recorded: 1,
            }
        );
        assert_eq!(rows(&db), 0);
        let entries = ledger.entries_from(from).unwrap();
        let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["job.submitted", "job.ended", RECONCILED_KIND]);
        assert_eq!(entries[1].time, "2025-01-01T00:00:00Z");
        assert_eq!(record_id(&entries[1].body), Some("rec-lost"));
        assert_eq!(
            entries[2].body["repaired"],
            json!([{"record": "rec-lost", "kind": "job.ended", "entry": entries[1].index}])
        );
        assert_eq!(entries[2].body["already_recorded"], 1);
        assert_eq!(
            reconcile_pending(&mut db, &mut ledger, &crate::clock::SystemClock).unwrap(),
            Reconciled::default()
        );
        assert_eq!(ledger.size(), entries[2].index + 1);
    }

    /// An entry cut from the ledger after its row noted a larger size
    /// (an operator's `ledger recover`) is still found missing.
    #[test]
    fn a_row_beyond_the_end_of_the_ledger_is_appended() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = crate::store::open(&dir.path().join("unseen.db")).unwrap();
        let mut ledger = Ledger::open(&dir.path().join("ledger")).unwrap();
        pending_row(&db, "rec-late", "grant.revoked", ledger.size() + 10);
        let done = reconcile_pending(&mut db, &mut ledger, &crate::clock::SystemClock).unwrap();
        assert_eq!(done.repaired.len(), 1);
        assert_eq!(rows(&db), 0);
    }
}
