//! A ledger many threads append to at once, with group commit.
//!
//! Each caller checks and encodes its draft on its own thread, then puts it
//! in a queue. If no write is under way the caller becomes the leader: it
//! takes everything queued, writes it with one `write`, one `fdatasync` (of
//! the group's intent, which holds its entries) and one signed checkpoint
//! ([`Ledger::append_prepared`]), hands every caller in the group its
//! receipt and wakes them. Syncing the entries file and writing the
//! checkpoint file are left to a thread of its own ([`CheckpointWriter`]),
//! which works beside the next groups, syncs the entries at once and
//! replaces the checkpoint file with the newest checkpoint at most every
//! 50 ms, so an append waits for one device flush. Callers that arrive while a leader writes wait; when it is
//! done, one of them leads the next group, which holds everything that
//! queued up meanwhile. So the busier the ledger, the larger the groups, and an
//! append still returns only after its entry is on disk.
//!
//! Every waiting caller sleeps until woken by name (`Thread::unpark`): the
//! leader posts each caller's receipt in that caller's own slot, then wakes
//! the callers of its group and one caller of the next group, never all of
//! them, because with many appenders on few cores a wake-all spends more
//! time switching threads than writing. A woken caller takes its receipt
//! from its slot without the queue's lock, so a group's callers do not all
//! contend for that lock on their way out.

use crate::entry::{EntryDraft, Hash, PreparedDraft};
use crate::keys::PublicKey;
use crate::store::CheckpointWrite;
use crate::store::{Head, Ledger, LedgerError, Receipt};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long a leader waits for one more caller to arrive before writing.
const LINGER_SLICE: Duration = Duration::from_micros(40);
/// The most a leader lingers in all: a fraction of one `fdatasync`.
const MAX_LINGER: Duration = Duration::from_micros(400);
/// How often at most the checkpoint file is replaced while appends go on.
/// Durability does not need it (each group's signed intent proves every
/// entry up to its own, see `Intent::proves`), and replacing a file costs
/// a new inode and a flush; readers of the files call `settle` first.
const CHECKPOINT_FILE_INTERVAL: Duration = Duration::from_millis(50);

/// A [`Ledger`] that any number of threads may append to at the same time
/// (share it with `Arc<SharedLedger>`). Entries are written in groups: one
/// write, one `fdatasync` and one checkpoint per group.
#[derive(Debug)]
pub struct SharedLedger {
    /// First, so that it is dropped (and writes the last checkpoint) while
    /// the ledger still holds its lock on the directory.
    checkpoints: CheckpointWriter,
    ledger: Mutex<Ledger>,
    queue: Mutex<Queue>,
}

/// Writes signed checkpoints to the `checkpoint` file, each after syncing
/// the entries it covers, on a thread of its own: appenders hand it the
/// newest and return. A checkpoint it has not written yet is not needed
/// for durability (the group intents hold the entries, and an open signs
/// a new one over them) but is for offline verification, so
/// [`SharedLedger::settle`] waits for it and dropping the ledger writes it.
#[derive(Debug)]
struct CheckpointWriter {
    state: Arc<WriterState>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct WriterState {
    slot: Mutex<WriterSlot>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct WriterSlot {
    /// The newest checkpoint not yet taken by the writer.
    pending: Option<CheckpointWrite>,
    /// Whether the writer is writing one now.
    busy: bool,
    closing: bool,
    /// Callers of [`CheckpointWriter::settle`] waiting now: the file is
    /// written at once for them.
    settling: usize,
    /// Size of the checkpoint last written.
    written: u64,
    /// The first write that failed: appends are refused from then on.
    failed: Option<Arc<LedgerError>>,
}

impl WriterState {
    fn lock(&self) -> MutexGuard<'_, WriterSlot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes what is handed in until closed and nothing is left: the
    /// entries each checkpoint covers are synced at once (the next groups'
    /// intents wait for them), the checkpoint file at most once per
    /// [`CHECKPOINT_FILE_INTERVAL`], unless someone settles or closes.
    fn run(&self) {
        let mut slot = self.lock();
        let mut last_file: Option<Instant> = None;
        loop {
            if let Some(job) = slot.pending.take() {
                let wait = last_file
                    .map(|at| CHECKPOINT_FILE_INTERVAL.saturating_sub(at.elapsed()))
                    .unwrap_or_default();
                let due = slot.closing || slot.settling > 0 || wait.is_zero();
                slot.busy = true;
                let mut written = slot.written;
                drop(slot);
                let (outcome, later) = if due {
                    (job.write(&mut written), None)
                } else {
                    (job.sync_entries(), Some(job))
                };
                slot = self.lock();
                slot.busy = false;
                slot.written = slot.written.max(written);
                if due {
                    last_file = Some(Instant::now());
                }
                if let Err(e) = outcome {
                    slot.failed.get_or_insert_with(|| Arc::new(e));
                } else if let Some(job) = later
                    && slot.pending.as_ref().is_none_or(|p| p.size() < job.size())
                {
                    slot.pending = Some(job);
                }
                self.changed.notify_all();
                if !due && slot.failed.is_none() && slot.settling == 0 && !slot.closing {
                    // Until the file is due, or a newer group, a settle or
                    // the close arrives.
                    slot = self
                        .changed
                        .wait_timeout(slot, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            } else if slot.closing {
                return;
            } else {
                slot = self
                    .changed
                    .wait(slot)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}

impl CheckpointWriter {
    fn start(written: u64) -> CheckpointWriter {
        let state = Arc::new(WriterState::default());
        state.lock().written = written;
        let runner = Arc::clone(&state);
        // Without a thread, checkpoints are written by the appenders.
        let thread = std::thread::Builder::new()
            .name("ledger-checkpoint".into())
            .spawn(move || runner.run())
            .ok();
        CheckpointWriter {
            state,
            thread: Mutex::new(thread),
        }
    }

    fn running(&self) -> bool {
        self.thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Hands over the newest checkpoint (written here and now if there is
    /// no writer thread).
    fn submit(&self, job: CheckpointWrite) -> Result<(), LedgerError> {
        if !self.running() {
            let mut slot = self.state.lock();
            let mut written = slot.written;
            job.write(&mut written)?;
            slot.written = written;
            return Ok(());
        }
        let mut slot = self.state.lock();
        if slot.pending.as_ref().is_none_or(|p| p.size() < job.size()) {
            slot.pending = Some(job);
        }
        self.state.changed.notify_all();
        Ok(())
    }

    /// The first write that failed, if any.
    fn failure(&self) -> Option<Arc<LedgerError>> {
        self.state.lock().failed.clone()
    }

    /// Waits until every checkpoint handed over is written.
    fn settle(&self) -> Result<(), LedgerError> {
        let mut slot = self.state.lock();
        slot.settling += 1;
        self.state.changed.notify_all();
        while (slot.pending.is_some() || slot.busy) && slot.failed.is_none() {
            slot = self
                .state
                .changed
                .wait(slot)
                .unwrap_or_else(PoisonError::into_inner);
        }
        slot.settling -= 1;
        match &slot.failed {
            Some(e) => Err(LedgerError::Group(Arc::clone(e))),
            None => Ok(()),
        }
    }

    /// Writes what is left and stops the thread.
    fn close(&self) -> Result<(), LedgerError> {
        self.state.lock().closing = true;
        self.state.changed.notify_all();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            thread.join().map_err(|_| LedgerError::Poisoned)?;
        }
        self.settle()
    }
}

impl Drop for CheckpointWriter {
    fn drop(&mut self) {
        // Errors were reported to appenders; the entries are durable.
        let _ = self.close();
    }
}

#[derive(Debug, Default)]
struct Queue {
    /// Drafts not yet taken by a leader, with the callers waiting on them.
    waiting: Vec<(Arc<Waiter>, PreparedDraft)>,
    /// Whether a leader is writing a group now.
    leading: bool,
    stats: GroupStats,
    /// Entries in the last group written.
    last_group: u64,
}

/// Where a caller receives the outcome of its append. Each thread has one
/// and reuses it for every append it makes (a thread makes one at a
/// time), so waiting costs no allocation, and the leader posts each
/// outcome without the queue's lock: woken callers return without all
/// taking that lock at once.
#[derive(Debug)]
struct Waiter {
    thread: Thread,
    outcome: Mutex<Option<Result<Receipt, LedgerError>>>,
}

thread_local! {
    static WAITER: Arc<Waiter> = Arc::new(Waiter {
        thread: std::thread::current(),
        outcome: Mutex::new(None),
    });
}

impl Waiter {
    /// This thread's waiter, emptied of anything an earlier append that
    /// unwound may have left.
    fn current() -> Arc<Waiter> {
        let waiter = WAITER.with(Arc::clone);
        waiter.take();
        waiter
    }

    fn lock(&self) -> MutexGuard<'_, Option<Result<Receipt, LedgerError>>> {
        self.outcome.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn post(&self, outcome: Result<Receipt, LedgerError>) {
        *self.lock() = Some(outcome);
    }

    fn take(&self) -> Option<Result<Receipt, LedgerError>> {
        self.lock().take()
    }
}

impl Queue {
    /// Ends the group being written (whose outcomes are posted): no
    /// one leads any more, and the first caller still waiting is returned,
    /// to be woken to lead the next group.
    fn finish_group(&mut self) -> Option<Thread> {
        self.leading = false;
        self.waiting.first().map(|(w, _)| w.thread.clone())
    }
}

/// Wakes the callers of a finished group (but not its leader, who is
/// awake), then the caller who is to lead the next, outside the queue's
/// lock. A wake that comes before its caller parks makes the park return
/// at once, so none is lost.
fn wake(group: &[Arc<Waiter>], leader: &Arc<Waiter>, next: Option<Thread>) {
    for waiter in group {
        if !Arc::ptr_eq(waiter, leader) {
            waiter.thread.unpark();
        }
    }
    if let Some(next) = next {
        next.unpark();
    }
}

/// How appends were grouped since the ledger was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Group commits made (each one write, one `fdatasync`, one checkpoint).
    pub groups: u64,
    /// Entries written by them.
    pub entries: u64,
    /// Entries in the largest group.
    pub largest: u64,
}

impl GroupStats {
    /// Mean entries per group (0 if none).
    pub fn mean_group(&self) -> f64 {
        if self.groups == 0 {
            0.0
        } else {
            self.entries as f64 / self.groups as f64
        }
    }
}

/// Delivers an error to the group if the leader unwinds before finishing.
struct LeaderGuard<'a> {
    shared: &'a SharedLedger,
    leader: Arc<Waiter>,
    group: Vec<Arc<Waiter>>,
    finished: bool,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        for waiter in &self.group {
            waiter.post(Err(LedgerError::Poisoned));
        }
        let next = self.shared.lock_queue().finish_group();
        wake(&self.group, &self.leader, next);
    }
}

impl SharedLedger {
    /// Opens (or creates) the ledger in `dir`; see [`Ledger::open`].
    pub fn open(dir: &Path) -> Result<SharedLedger, LedgerError> {
        Ok(SharedLedger::new(Ledger::open(dir)?))
    }

    /// Wraps an open ledger.
    pub fn new(ledger: Ledger) -> SharedLedger {
        SharedLedger {
            checkpoints: CheckpointWriter::start(ledger.size()),
            ledger: Mutex::new(ledger),
            queue: Mutex::new(Queue::default()),
        }
    }

    /// Gives back the ledger (once no other thread holds this one), with
    /// its checkpoint file written.
    pub fn into_inner(self) -> Result<Ledger, LedgerError> {
        self.checkpoints.close()?;
        self.ledger.into_inner().map_err(|_| LedgerError::Poisoned)
    }

    /// Waits until the `checkpoint` file covers every entry appended so
    /// far (and the entries file holds them synced), for readers of the
    /// files such as [`crate::verify_dir`].
    pub fn settle(&self) -> Result<(), LedgerError> {
        self.checkpoints.settle()
    }

    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        // The queue is left consistent at every unlock, so a panic elsewhere
        // does not make it unusable.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_ledger(&self) -> Result<MutexGuard<'_, Ledger>, LedgerError> {
        self.ledger.lock().map_err(|_| LedgerError::Poisoned)
    }

    /// Appends one entry and returns once it is on disk and covered by a
    /// signed checkpoint. Callable from many threads at once; concurrent
    /// appends are written together. A refused draft fails alone
    /// ([`LedgerError::BadDraft`] with position 0); a failed write fails
    /// its whole group ([`LedgerError::Group`]).
    pub fn append(&self, draft: EntryDraft) -> Result<Receipt, LedgerError> {
        if let Some(failed) = self.checkpoints.failure() {
            return Err(LedgerError::Group(failed));
        }
        let prepared = PreparedDraft::new(draft).map_err(|source| LedgerError::BadDraft {
            position: 0,
            source,
        })?;
        let waiter = Waiter::current();
        let mut q = self.lock_queue();
        q.waiting.push((Arc::clone(&waiter), prepared));
        loop {
            if let Some(outcome) = waiter.take() {
                return outcome;
            }
            if q.leading {
                drop(q);
                // Spurious wakes, and wakes to lead, loop back here.
                std::thread::park();
                if let Some(outcome) = waiter.take() {
                    return outcome;
                }
                q = self.lock_queue();
                continue;
            }
            // No leader and no outcome: this draft is still waiting (a
            // leader takes drafts and sets `leading` under one lock, and
            // posts outcomes before clearing it). Lead the next group.
            q.leading = true;
            if q.last_group > 1 {
                q = self.linger(q);
            }
            let taken = std::mem::take(&mut q.waiting);
            drop(q);
            let (group, drafts): (Vec<Arc<Waiter>>, Vec<PreparedDraft>) = taken.into_iter().unzip();
            let mut guard = LeaderGuard {
                shared: self,
                leader: Arc::clone(&waiter),
                group,
                finished: false,
            };
            let outcome = self
                .lock_ledger()
                .and_then(|mut ledger| ledger.append_prepared_signed(&drafts));
            let n = guard.group.len() as u64;
            let mut checkpoint = None;
            let written = match outcome {
                Ok((receipts, pending)) => {
                    checkpoint = pending;
                    for (w, r) in guard.group.iter().zip(receipts) {
                        w.post(Ok(r));
                    }
                    true
                }
                Err(e) => {
                    let e = Arc::new(e);
                    for w in &guard.group {
                        w.post(Err(LedgerError::Group(Arc::clone(&e))));
                    }
                    false
                }
            };
            q = self.lock_queue();
            if written {
                q.last_group = n;
                q.stats.groups += 1;
                q.stats.entries += n;
                q.stats.largest = q.stats.largest.max(n);
            }
            let next = q.finish_group();
            drop(q);
            guard.finished = true;
            wake(&guard.group, &waiter, next);
            // The group's entries are durable (its intent holds them) and
            // its checkpoint signed; its callers are already woken. The
            // entries file's own sync and the checkpoint file are the
            // writer's.
            if let Some(pending) = checkpoint
                && let Err(e) = self.checkpoints.submit(pending)
            {
                waiter.take();
                return Err(e);
            }
            q = self.lock_queue();
        }
    }

    /// Lets the callers the last group woke join this one, while they
    /// keep arriving. Without this, busy appenders split into two cohorts
    /// that alternate (one queues while the other is written), and each
    /// group holds half of them: waiting a moment for the stream of
    /// arrivals to stop doubles the group for the same two syncs. Only
    /// after a group of more than one, so a lone caller never waits.
    fn linger<'q>(&'q self, mut q: MutexGuard<'q, Queue>) -> MutexGuard<'q, Queue> {
        let started = Instant::now();
        let mut seen = q.waiting.len();
        while started.elapsed() < MAX_LINGER {
            drop(q);
            std::thread::sleep(LINGER_SLICE);
            q = self.lock_queue();
            if q.waiting.len() == seen {
                break;
            }
            seen = q.waiting.len();
        }
        q
    }

    /// How appends were grouped so far.
    pub fn stats(&self) -> GroupStats {
        self.lock_queue().stats
    }

    /// Runs `f` with the ledger locked (appends wait meanwhile).
    pub fn with<R>(&self, f: impl FnOnce(&Ledger) -> R) -> Result<R, LedgerError> {
        Ok(f(&*self.lock_ledger()?))
    }

    /// The current tree head.
    pub fn head(&self) -> Result<Head, LedgerError> {
        self.with(Ledger::head)
    }

    /// The latest signed checkpoint.
    pub fn checkpoint_text(&self) -> Result<String, LedgerError> {
        self.with(|l| l.checkpoint_text().to_owned())
    }

    /// The public key that verifies this ledger's checkpoints.
    pub fn public_key(&self) -> Result<PublicKey, LedgerError> {
        self.with(Ledger::public_key)
    }

    /// Signs `message` with the ledger key; see [`Ledger::sign`].
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, LedgerError> {
        self.with(|l| l.sign(message))
    }

    /// See [`Ledger::inclusion_proof`].
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LedgerError> {
        self.with(|l| l.inclusion_proof(index, size))?
    }

    /// See [`Ledger::consistency_proof`].
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, LedgerError> {
        self.with(|l| l.consistency_proof(old, new))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(n: u64) -> EntryDraft {
        EntryDraft {
            kind: "test.entry".into(),
            actor: "tester".into(),
            time: "2025-03-01T10:00:00Z".into(),
            body: serde_json::json!({ "n": n }),
        }
    }

    #[test]
    fn an_outcome_left_in_a_threads_slot_is_never_taken_for_a_later_append() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = SharedLedger::open(tmp.path()).unwrap();
        // As a leader that unwound would leave it.
        WAITER.with(|w| {
            w.post(Ok(Receipt {
                index: 99,
                entry_hash_hex: "stale".into(),
            }))
        });
        let receipt = shared.append(draft(0)).unwrap();
        assert_eq!(receipt.index, 0);
        assert_ne!(receipt.entry_hash_hex, "stale");
        assert_eq!(shared.append(draft(1)).unwrap().index, 1);
        assert!(WAITER.with(|w| w.take()).is_none());
    }
}
