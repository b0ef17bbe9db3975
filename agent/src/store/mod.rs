//! Durable state in sled: the engine's per-key state, duplicate windows, the outbox's
//! entries, and a little metadata.
//!
//! One tree, keys by prefix, so a batch that changes state and adds outbox entries is
//! applied atomically:
//!
//! ```text
//! m/schema            schema version
//! m/alive             last time (ms) the agent was known running: downtime after a stop or crash
//! m/audit             the last audit entry queued for upstream (`crate::audit`)
//! m/clean             present after a clean stop, removed at start: a start without it
//!                     follows a crash, and the first redeliveries may be what crashed it
//! p/<hash: u64 BE>    deliveries of a possibly poisonous message that did not complete
//! s/<rule>\0<key>     a rule's state for one key (the engine's export)
//! d/<name>            a duplicate-detection entry
//! h/<name>            an event held for reordering (allowed lateness)
//! w/watermark         the event-time watermark (older input is late)
//! r/<key>\0<field>    a history series' open roll-ups
//! q/c/, q/o/          a rule's past for one key: closed buckets, open ones
//! j/<seq: u64 BE>     the state journal: changes to the keys above not yet folded into
//!                     them, applied over them in order (`journal.rs`)
//! o/<seq: u64 BE>     an outbox entry, in the order it must go upstream
//! a/<sink>\0<seq: u64 BE>  an action waiting for its sink (`notify`, `act`)
//! ```
//!
//! Nothing is acknowledged to the sensor broker before the batch holding its effects is
//! flushed. The outbox's bookkeeping is [`crate::outbox::Book`], the same as in memory; the
//! store only writes an applied batch's entries, deletes dropped and acknowledged ones (with
//! the next batch rather than one write per PUBACK), and reads back what did not fit the
//! cache or what an earlier run left. If the database cannot be opened (sled has open reports
//! of unreadable files after power loss), it is moved aside and the latest snapshot is
//! restored, "alive" mark included: the agent sees a restart. One another process holds is
//! never moved aside.
//!
//! # Layout
//! - this file: opening, recovery of a damaged database, batches and how they are applied;
//! - `state.rs`: engine state, the alive and clean-stop marks, delivery counts;
//! - `journal.rs`: how engine state is written: journal records, folded into place later;
//! - `outbox.rs`: the outbox's entries on disk around the bookkeeping;
//! - `actions.rs`: the sinks' actions on disk;
//! - `snapshot.rs`: [`Snapshot`], export, import, restore, and `state inspect`.

mod actions;
mod journal;
mod outbox;
mod snapshot;
mod state;

pub use crate::outbox::entry::OutboxEntry;
pub use snapshot::{Snapshot, inspect, read_snapshot, write_snapshot};

use crate::history::HistoryLog;
use crate::outbox::book::Book;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The on-disk layout version.
pub const SCHEMA_VERSION: u64 = 1;

/// Bytes of outbox entries kept in memory for the publisher. Past it (a long upstream
/// outage), entries wait on disk only and are read back from there.
const CACHE_BYTES: u64 = 4 << 20;

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database {path}: {message}")]
    Db { path: String, message: String },
    /// sled found the files damaged (or failed reading them): the agent moves the database
    /// aside and restores the snapshot.
    #[error("state database {path} is damaged: {detail}")]
    Damaged { path: String, detail: String },
    /// Another process has it open (sled allows one at a time): never moved aside.
    #[error("state database {path} is in use by another process (is the agent running? stop it first)")]
    Locked { path: String },
    #[error("snapshot {path}: {message}")]
    Snapshot { path: String, message: String },
    #[error("state database {path} has schema {found}, this agent knows {SCHEMA_VERSION}")]
    Schema { path: String, found: u64 },
}

/// A batch of changes, applied atomically by [`Store::commit`].
#[derive(Debug, Default)]
pub struct Batch {
    inner: sled::Batch,
    /// The outbox entries it adds (encoded already if the book's cache had no room for them):
    /// written when applied, unless acknowledged upstream by then.
    outbox: Vec<(u64, Option<Vec<u8>>)>,
    /// Written outbox entries it deletes (dropped for space).
    deletes: usize,
    /// Engine state changes: written as journal records when applied (`journal.rs`).
    state: Vec<journal::Change>,
    changes: usize,
    /// When the agent was running with this batch's state: recorded as the "alive" mark if
    /// the batch writes anyway (never a write of its own).
    alive_ms: Option<i64>,
    /// History roll-ups whose period closed: written to the history log before the rest,
    /// so a crash can repeat them (the reader keeps one) but never lose them.
    pub closed: Vec<edgewatch_engine::history::Closed>,
}

impl Batch {
    /// How many changes it holds.
    pub fn len(&self) -> usize {
        self.changes
    }

    /// Nothing to write?
    pub fn is_empty(&self) -> bool {
        self.changes == 0
    }

    /// A change of the engine state under stored key `key` (`None`: removed): into the
    /// journal, unless its kind is always written in place (see [`journal::journaled`]).
    fn put_state(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        if journal::journaled(&key) {
            self.state.push((key, value));
        } else {
            match value {
                Some(v) => self.inner.insert(key, v),
                None => self.inner.remove(key),
            }
        }
        self.changes += 1;
    }

    /// Records `now_ms` as the agent's "alive" mark along with this batch, if it writes
    /// anything: one more key in a write that happens anyway, so the downtime after a crash
    /// counts from the last commit rather than the last periodic mark.
    pub fn alive_at(&mut self, now_ms: i64) {
        self.alive_ms = Some(now_ms);
    }
}

/// Describes a failure of sled to open (or first read) a database: damaged, locked by
/// another process, or another error.
fn open_error(path: &Path, e: &sled::Error) -> StoreError {
    let path = path.display().to_string();
    match e {
        sled::Error::Corruption { .. } => {
            StoreError::Damaged { path, detail: "sled found corrupt data in its files".into() }
        }
        sled::Error::ReportableBug(what) => {
            StoreError::Damaged { path, detail: format!("sled found its files inconsistent ({what})") }
        }
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => StoreError::Locked { path },
        sled::Error::Io(io) => StoreError::Db { path, message: format!("cannot read its files: {io}") },
        other => StoreError::Db { path, message: other.to_string() },
    }
}

/// What [`Store::apply`] wrote.
#[derive(Debug)]
pub struct Applied {
    /// Anything at all (if not, there is nothing to flush).
    pub wrote: bool,
    /// Outbox entries written (the others were acknowledged upstream already).
    pub events: u64,
    /// How many closed roll-ups the batch had, and what the history log did with them.
    pub history: Option<(usize, Result<crate::history::Appended, crate::history::HistoryError>)>,
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    /// The outbox's bookkeeping, shared by the engine loop (push, apply) and the publisher
    /// (read, acknowledge): rebuilt from disk at open.
    book: Arc<Mutex<Book>>,
    /// The state directory: the database is `db` in it, the snapshot `snapshot.json`.
    dir: PathBuf,
    /// The state journal's bookkeeping, rebuilt at open; held while a batch is applied, so
    /// records go to disk in the order of their numbers.
    journal: Arc<Mutex<journal::Journal>>,
    /// Where closed history roll-ups go, before the batch that closed them is applied (see
    /// [`Batch::closed`]); none until [`Store::attach_history`].
    history: Option<Arc<Mutex<HistoryLog>>>,
}

/// A two-byte prefix and a big-endian number: keys that scan in numeric order.
fn u64_key(prefix: &[u8; 2], n: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(prefix);
    k[2..].copy_from_slice(&n.to_be_bytes());
    k
}

impl Store {
    /// Opens (or creates) the database in `dir`/db.
    pub fn open(dir: &Path, cache_bytes: u64, max_outbox_bytes: u64) -> Result<Store, StoreError> {
        Store::open_with_cache(dir, cache_bytes, Book::new(max_outbox_bytes, CACHE_BYTES))
    }

    /// Opens with `book` (empty) for the outbox: tests give it a smaller cache.
    fn open_with_cache(dir: &Path, cache_bytes: u64, book: Book) -> Result<Store, StoreError> {
        let path = dir.join("db");
        let damaged = |detail: &str| StoreError::Damaged { path: path.display().to_string(), detail: detail.into() };
        // A damaged file can make sled panic instead of returning an error: contain both.
        let opened = std::panic::catch_unwind(|| sled::Config::new().path(&path).cache_capacity(cache_bytes).open())
            .map_err(|_| damaged("sled failed while reading its files"))?
            .map_err(|e| open_error(&path, &e))?;
        let schema = match opened.get(b"m/schema").map_err(|e| open_error(&path, &e))? {
            None => {
                opened.insert(b"m/schema", &SCHEMA_VERSION.to_be_bytes()).map_err(|e| open_error(&path, &e))?;
                SCHEMA_VERSION
            }
            Some(v) => {
                v.as_ref().try_into().map(u64::from_be_bytes).map_err(|_| damaged("unreadable schema version"))?
            }
        };
        if schema != SCHEMA_VERSION {
            return Err(StoreError::Schema { path: path.display().to_string(), found: schema });
        }
        let book = outbox::recover(&opened, &path, book)?;
        let journal = journal::Journal::recover(&opened, journal::MAX_BYTES).map_err(|e| damaged(&e.to_string()))?;
        Ok(Store {
            db: opened,
            book: Arc::new(Mutex::new(book)),
            dir: dir.to_owned(),
            history: None,
            journal: Arc::new(Mutex::new(journal)),
        })
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        // A panic while holding the lock leaves consistent data (every change is one step).
        self.book.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn db_err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Db { path: self.dir.join("db").display().to_string(), message: e.to_string() }
    }

    /// Writes `batch` and waits until it is on disk.
    pub async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if self.apply(batch)?.wrote {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes `batch` (atomically, not yet durably: see [`Store::flush`]): its changes, its
    /// outbox entries not acknowledged upstream meanwhile, and the deletion of the written
    /// entries acknowledged since the last batch.
    pub fn apply(&self, mut batch: Batch) -> Result<Applied, StoreError> {
        // First, and on disk (fsync'd) before the state that says they are closed: a crash in
        // between repeats them after the restart, which readers recognise; the reverse
        // order would lose them. A failure costs the roll-ups, never the batch.
        let history = match (&self.history, batch.closed.is_empty()) {
            (Some(log), false) => {
                // The commit's time (set by the engine loop); else the latest period closed,
                // which is no later than now: retention then errs on keeping.
                let latest = || batch.closed.iter().map(|c| c.start).max().unwrap_or(0);
                let now_ms = batch.alive_ms.unwrap_or_else(latest);
                let mut log = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                Some((batch.closed.len(), log.append(&batch.closed, now_ms)))
            }
            _ => None,
        };
        let mut book = self.book();
        let acked = book.take_acked();
        let mut writes = batch.changes - batch.outbox.len() + batch.deletes + acked.len();
        let mut written = Vec::with_capacity(batch.outbox.len());
        for (seq, bytes) in batch.outbox.drain(..) {
            // Still waiting: written now (an acknowledgement from here on deletes it again).
            // Encoded now if it was kept in the cache (see `push_outbox`).
            let Some(bytes) = bytes.or_else(|| book.cached(seq).map(outbox::encode)) else { continue };
            if book.mark_written(seq) {
                batch.inner.insert(&outbox::key(seq), bytes);
                written.push(seq);
            }
        }
        drop(book);
        writes += written.len();
        for seq in &acked {
            batch.inner.remove(&outbox::key(*seq));
        }
        if let Some(now_ms) = batch.alive_ms.filter(|_| writes > 0) {
            batch.inner.insert(b"m/alive".as_slice(), &now_ms.to_be_bytes());
        }
        // Held until sled took the batch: journal records go to disk in the order of their numbers.
        let mut journal = self.journal.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let applied =
            journal.plan(&self.db, &batch.state, &mut batch.inner).map_err(|e| self.db_err(e)).and_then(|plan| {
                let wrote = writes > 0 || plan.writes();
                if wrote {
                    self.db.apply_batch(batch.inner).map_err(|e| self.db_err(e))?;
                    journal.commit(plan);
                }
                Ok(wrote)
            });
        drop(journal);
        match applied {
            Ok(wrote) => Ok(Applied { wrote, events: written.len() as u64, history }),
            Err(e) => {
                // The deletions go with a later batch; the new entries stay in memory only.
                let mut book = self.book();
                book.return_acked(acked);
                for seq in written {
                    book.unmark_written(seq);
                }
                Err(e)
            }
        }
    }

    /// Waits until everything applied so far is on disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await.map(|_| ()).map_err(|e| self.db_err(e))
    }

    /// Closed roll-ups go to `log` from now on, written with the batch that closed them.
    pub fn attach_history(&mut self, log: HistoryLog) {
        self.history = Some(Arc::new(Mutex::new(log)));
    }

    /// Bytes of history on disk, if a log is attached.
    pub fn history_bytes(&self) -> Option<u64> {
        let log = self.history.as_ref()?.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(log.usage().bytes)
    }

    /// Bytes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// What opening the store had to do.
#[derive(Debug)]
pub enum Opened {
    /// The database opened as it was.
    Clean,
    /// The database could not be opened: it was moved to `quarantined`, and the latest
    /// snapshot restored if there was a usable one.
    Recovered {
        /// Why the database could not be opened, as a sentence for people.
        reason: String,
        quarantined: PathBuf,
        /// When the restored snapshot was taken, or why none could be restored (a sentence).
        snapshot: Result<i64, String>,
    },
}

/// Opens the store; if the database is unreadable, moves it aside and restores the latest
/// snapshot, so the agent still starts. A database another process holds is an error, never
/// moved aside.
pub async fn open_or_recover(
    dir: &Path,
    cache_bytes: u64,
    max_outbox_bytes: u64,
) -> Result<(Store, Opened), StoreError> {
    let detail = match Store::open(dir, cache_bytes, max_outbox_bytes) {
        Ok(s) => return Ok((s, Opened::Clean)),
        Err(StoreError::Damaged { detail, .. }) => format!("its files are damaged: {detail}"),
        Err(StoreError::Db { message, .. }) => message,
        Err(e) => return Err(e),
    };
    let reason = format!("The state database could not be opened: {detail}.");
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let quarantined = dir.join(format!("db.corrupt-{stamp}"));
    std::fs::rename(dir.join("db"), &quarantined).map_err(|e| StoreError::Db {
        path: dir.join("db").display().to_string(),
        message: format!("unreadable ({detail}) and cannot be moved aside: {e}"),
    })?;
    tracing::error!(%reason, quarantined = %quarantined.display(), "State database unreadable; moved aside.");
    let store = Store::open(dir, cache_bytes, max_outbox_bytes)?;
    let snapshot_path = dir.join("snapshot.json");
    let snapshot = match read_snapshot(&snapshot_path) {
        Ok(snap) => {
            store.restore(&snap).await?;
            tracing::warn!(
                snapshot = %snapshot_path.display(),
                taken = %edgewatch_engine::Timestamp(snap.taken_ms).to_rfc3339(),
                "State restored from the snapshot."
            );
            Ok(snap.taken_ms)
        }
        Err(e) => {
            let why = match std::fs::metadata(&snapshot_path) {
                Err(m) if m.kind() == std::io::ErrorKind::NotFound => {
                    format!("there is no snapshot ({} does not exist)", snapshot_path.display())
                }
                _ => format!("the snapshot is unreadable ({e})"),
            };
            tracing::error!(%why, "No usable snapshot: starting with empty state.");
            Err(why)
        }
    };
    Ok((store, Opened::Recovered { reason, quarantined, snapshot }))
}

#[cfg(test)]
mod tests;
