//! Durable state in sled: the engine's per-key state, duplicate windows, the outbox of
//! events waiting to go upstream, and a little metadata.
//!
//! One tree, keys by prefix, so a batch that changes state and adds outbox entries is
//! applied atomically:
//!
//! ```text
//! m/schema            schema version
//! m/alive             last time (ms) the agent was known running: downtime after a stop or crash
//! m/clean             present after a clean stop, removed at start: a start without it
//!                     follows a crash, and the first redeliveries may be what crashed it
//! p/<hash: u64 BE>    deliveries of a possibly poisonous message that did not complete
//! s/<rule>\0<key>     a rule's state for one key (the engine's export)
//! d/<name>            a duplicate-detection entry
//! h/<name>            an event held for reordering (allowed lateness)
//! w/watermark         the event-time watermark (older input is late)
//! o/<seq: u64 BE>     an outbox entry, in the order it must go upstream
//! ```
//!
//! Nothing is acknowledged to the sensor broker before the batch holding its effects is
//! flushed. Events are handed to the publisher from memory as soon as their batch is applied
//! (sled is read back only for what an earlier run left, or what did not fit the cache), and
//! acknowledged events are deleted with the next batch rather than one write per PUBACK. If the database cannot be opened (sled has open reports of unreadable files
//! after power loss), it is moved aside and the latest snapshot is restored, "alive" mark
//! included: the agent sees a restart. One another process holds is never moved aside.

use edgewatch_engine::Touched;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The on-disk layout version.
pub const SCHEMA_VERSION: u64 = 1;

/// Bytes of applied outbox entries kept in memory for the publisher. Past it (a long upstream
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

/// An event waiting to go upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub topic: String,
    /// Shared, not copied, between the outbox in memory and the publish.
    #[serde(with = "serde_bytes_hex")]
    pub payload: bytes::Bytes,
    pub qos: u8,
    /// Published with the retain flag (status documents).
    #[serde(default)]
    pub retain: bool,
}

mod serde_bytes_hex {
    use serde::{Deserialize, Deserializer, Serializer};
    pub(super) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(b) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.serialize_str(&format!("hex:{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())),
        }
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bytes::Bytes, D::Error> {
        let s = String::deserialize(d)?;
        match s.strip_prefix("hex:") {
            None => Ok(s.into_bytes().into()),
            Some(h) => (0..h.len())
                .step_by(2)
                .map(|i| h.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
                .collect::<Option<Vec<u8>>>()
                .map(bytes::Bytes::from)
                .ok_or_else(|| serde::de::Error::custom("bad hex")),
        }
    }
}

/// Everything the agent keeps, as one JSON document: `state export`, `state import`, and
/// the periodic snapshot.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub schema: u64,
    /// When it was taken (ms since the epoch).
    pub taken_ms: i64,
    /// When the agent was last known running, as of the snapshot (its `taken_ms` when the
    /// running agent took it): a restore from it is a restart, and the downtime counts from
    /// here. Absent in files of older versions: `taken_ms` stands in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alive_ms: Option<i64>,
    /// (key in the store, value as JSON text).
    pub state: Vec<(String, String)>,
    pub outbox: Vec<OutboxEntry>,
}

/// A batch of changes, applied atomically by [`Store::commit`].
#[derive(Debug, Default)]
pub struct Batch {
    inner: sled::Batch,
    /// The outbox entries it adds, encoded: written when applied, unless acknowledged upstream
    /// by then.
    outbox: Vec<(u64, Vec<u8>)>,
    /// Written outbox entries it deletes (dropped for space).
    deletes: usize,
    changes: usize,
    /// When the agent was running with this batch's state: recorded as the "alive" mark if
    /// the batch writes anyway (never a write of its own).
    alive_ms: Option<i64>,
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
#[derive(Debug, Clone, Copy)]
pub struct Applied {
    /// Anything at all (if not, there is nothing to flush).
    pub wrote: bool,
    /// Outbox entries written (the others were acknowledged upstream already).
    pub events: u64,
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    inner: Arc<std::sync::Mutex<Outbox>>,
    dir: PathBuf,
}

/// The outbox's bookkeeping, in memory (rebuilt from disk at open).
///
/// An entry is readable by the publisher as soon as it is pushed, from memory. It is written
/// to disk when its batch is applied, unless it was acknowledged upstream by then: with a
/// responsive upstream broker most events never touch the disk. That keeps the guarantee:
/// the inputs behind an unwritten event are acknowledged only after their batch is flushed,
/// so after a crash the broker redelivers them and the same event (same id) comes again.
#[derive(Debug, Default)]
struct Outbox {
    next_seq: u64,
    /// Every seq below it is in an applied batch; sled is read only below it.
    applied: u64,
    /// Every entry not yet acknowledged, oldest first (seqs ascending).
    entries: std::collections::VecDeque<Live>,
    bytes: u64,
    max_bytes: u64,
    /// Entries dropped to stay within `max_bytes`, not yet reported.
    dropped: u64,
    /// Entries with consecutive seqs, oldest first, so the publisher need not read back (and
    /// decode) what was just written. At most `cache_cap` bytes; past it (a long upstream
    /// outage) entries wait on disk only and are read back from there.
    cache: std::collections::VecDeque<Cached>,
    cache_bytes: u64,
    /// [`CACHE_BYTES`]; smaller in tests.
    cache_cap: u64,
    /// Acknowledged entries that were written, deleted from disk with the next batch.
    acked: Vec<u64>,
}

/// An outbox entry not yet acknowledged.
#[derive(Debug, Clone, Copy)]
struct Live {
    seq: u64,
    len: u64,
    /// In an applied batch: acknowledging it means deleting it from disk.
    written: bool,
}

/// An outbox entry in memory.
#[derive(Debug)]
struct Cached {
    seq: u64,
    len: u64,
    entry: OutboxEntry,
    /// Acknowledged but behind an older one that is not yet (QoS 0 after QoS 1): it stays
    /// until it reaches the front, so the seqs stay consecutive.
    acked: bool,
}

impl Outbox {
    fn live(&mut self, seq: u64) -> Option<&mut Live> {
        let at = self.entries.binary_search_by_key(&seq, |l| l.seq).ok()?;
        self.entries.get_mut(at)
    }

    /// Where entry `seq` is in the cache, if it is there.
    fn cache_index(&self, seq: u64) -> Option<usize> {
        let first = self.cache.front()?.seq;
        usize::try_from(seq.checked_sub(first)?).ok().filter(|i| *i < self.cache.len())
    }

    fn pop_cached(&mut self) {
        if let Some(c) = self.cache.pop_front() {
            self.cache_bytes -= c.len;
        }
    }

    /// Drops cached entries that are no longer live (dropped for space).
    fn trim_cache(&mut self) {
        let oldest = self.entries.front().map_or(self.next_seq, |l| l.seq);
        while self.cache.front().is_some_and(|c| c.seq < oldest || c.acked) {
            self.pop_cached();
        }
    }

    /// Forgets an acknowledged entry; if it was written, it is deleted with the next batch.
    fn ack(&mut self, seq: u64) {
        let Ok(at) = self.entries.binary_search_by_key(&seq, |l| l.seq) else {
            return; // dropped for space meanwhile, or acknowledged twice
        };
        if let Some(live) = self.entries.remove(at) {
            self.bytes -= live.len;
            if live.written {
                self.acked.push(seq);
            }
        }
        if let Some(c) = self.cache_index(seq).and_then(|i| self.cache.get_mut(i)) {
            c.acked = true;
        }
        self.trim_cache();
    }
}

fn state_key(t: &Touched) -> Vec<u8> {
    match t {
        Touched::Rule { rule, key } => {
            let mut k = Vec::with_capacity(3 + rule.len() + key.len());
            k.extend_from_slice(b"s/");
            k.extend_from_slice(rule.as_bytes());
            k.push(0);
            k.extend_from_slice(key.as_bytes());
            k
        }
        Touched::Dedup(name) => [b"d/".as_slice(), name.as_bytes()].concat(),
        Touched::Held(name) => [b"h/".as_slice(), name.as_bytes()].concat(),
        Touched::Watermark => b"w/watermark".to_vec(),
    }
}

/// The engine's name of a stored state key.
fn touched_of(k: &[u8]) -> Option<Touched> {
    if let Some(rest) = k.strip_prefix(b"s/") {
        let split = rest.iter().position(|b| *b == 0)?;
        let rule = std::str::from_utf8(&rest[..split]).ok()?;
        let key = std::str::from_utf8(&rest[split + 1..]).ok()?;
        return Some(Touched::Rule { rule: rule.into(), key: key.into() });
    }
    if k == b"w/watermark" {
        return Some(Touched::Watermark);
    }
    if let Some(held) = k.strip_prefix(b"h/") {
        return Some(Touched::Held(std::str::from_utf8(held).ok()?.into()));
    }
    let name = std::str::from_utf8(k.strip_prefix(b"d/")?).ok()?;
    Some(Touched::Dedup(name.into()))
}

/// The key of a message's delivery count.
fn delivery_key(hash: u64) -> [u8; 10] {
    u64_key(b"p/", hash)
}

/// A two-byte prefix and a big-endian number: keys that scan in numeric order.
fn u64_key(prefix: &[u8; 2], n: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(prefix);
    k[2..].copy_from_slice(&n.to_be_bytes());
    k
}

fn outbox_key(seq: u64) -> [u8; 10] {
    u64_key(b"o/", seq)
}

impl Store {
    /// Opens (or creates) the database in `dir`/db.
    pub fn open(dir: &Path, cache_bytes: u64, max_outbox_bytes: u64) -> Result<Store, StoreError> {
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
        let mut outbox = Outbox { max_bytes: max_outbox_bytes, cache_cap: CACHE_BYTES, ..Outbox::default() };
        for item in opened.scan_prefix(b"o/") {
            let (k, v) = item.map_err(|e| open_error(&path, &e))?;
            let seq = k
                .get(2..10)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| damaged("unreadable outbox key"))?;
            outbox.entries.push_back(Live { seq, len: v.len() as u64, written: true });
            outbox.bytes += v.len() as u64;
            outbox.next_seq = seq + 1;
        }
        outbox.applied = outbox.next_seq;
        Ok(Store { db: opened, inner: Arc::new(std::sync::Mutex::new(outbox)), dir: dir.to_owned() })
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn db_err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Db { path: self.dir.join("db").display().to_string(), message: e.to_string() }
    }

    /// Every saved engine state, to import at start.
    pub fn load_state(&self) -> Result<Vec<(Touched, Vec<u8>)>, StoreError> {
        let mut v = Vec::new();
        for prefix in [b"s/".as_slice(), b"d/".as_slice(), b"h/".as_slice(), b"w/".as_slice()] {
            for item in self.db.scan_prefix(prefix) {
                let (k, val) = item.map_err(|e| self.db_err(e))?;
                if let Some(t) = touched_of(&k) {
                    v.push((t, val.to_vec()));
                }
            }
        }
        Ok(v)
    }

    /// Records a state change (or deletion) in `batch`.
    pub fn put_state(&self, batch: &mut Batch, what: &Touched, value: Option<&[u8]>) {
        let k = state_key(what);
        match value {
            Some(v) => batch.inner.insert(k, v),
            None => batch.inner.remove(k),
        }
        batch.changes += 1;
    }

    /// Adds an outbox entry to `batch`, readable by the publisher at once. When the outbox is
    /// over its size, the oldest entries are dropped (and counted) in the same batch.
    pub fn push_outbox(&self, batch: &mut Batch, entry: OutboxEntry) {
        let bytes = serde_json::to_vec(&entry).unwrap_or_default();
        let len = bytes.len() as u64;
        let mut ob = self.outbox();
        let seq = ob.next_seq;
        ob.next_seq += 1;
        ob.bytes += len;
        ob.entries.push_back(Live { seq, len, written: false });
        while ob.bytes > ob.max_bytes && ob.entries.len() > 1 {
            if let Some(old) = ob.entries.pop_front() {
                ob.bytes -= old.len;
                ob.dropped += 1;
                if old.written {
                    batch.inner.remove(&outbox_key(old.seq));
                    batch.deletes += 1;
                }
            }
        }
        ob.trim_cache();
        let next_in_line = ob.cache.back().is_none_or(|c| c.seq + 1 == seq);
        if next_in_line && ob.cache_bytes + len <= ob.cache_cap {
            ob.cache.push_back(Cached { seq, len, entry, acked: false });
            ob.cache_bytes += len;
        }
        drop(ob);
        batch.outbox.push((seq, bytes));
        batch.changes += 1;
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
        let mut ob = self.outbox();
        let acked = std::mem::take(&mut ob.acked);
        let mut writes = batch.changes - batch.outbox.len() + batch.deletes + acked.len();
        let mut events = 0;
        let mut applied = ob.applied;
        for (seq, bytes) in batch.outbox.drain(..) {
            applied = applied.max(seq + 1);
            // Still live: written now (an acknowledgement from here on deletes it again).
            if let Some(live) = ob.live(seq) {
                live.written = true;
                batch.inner.insert(&outbox_key(seq), bytes);
                writes += 1;
                events += 1;
            }
        }
        drop(ob);
        for seq in &acked {
            batch.inner.remove(&outbox_key(*seq));
        }
        if let Some(now_ms) = batch.alive_ms.filter(|_| writes > 0) {
            batch.inner.insert(b"m/alive".as_slice(), &now_ms.to_be_bytes());
        }
        if writes > 0 {
            if let Err(e) = self.db.apply_batch(batch.inner) {
                // The deletions go with a later batch; the new entries stay in memory only.
                self.outbox().acked.extend(acked);
                return Err(self.db_err(e));
            }
        }
        self.outbox().applied = applied;
        Ok(Applied { wrote: writes > 0, events })
    }

    /// Acknowledged entries are waiting to be deleted.
    pub fn has_acked(&self) -> bool {
        !self.outbox().acked.is_empty()
    }

    /// Waits until everything applied so far is on disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await.map(|_| ()).map_err(|e| self.db_err(e))
    }

    /// Records that the agent is running now (for downtime after a crash).
    pub fn mark_alive(&self, batch: &mut Batch, now_ms: i64) {
        batch.inner.insert(b"m/alive".as_slice(), &now_ms.to_be_bytes());
        batch.changes += 1;
    }

    /// Records a clean stop: the next start follows no crash.
    pub fn mark_clean_stop(&self, batch: &mut Batch) {
        batch.inner.insert(b"m/clean".as_slice(), b"1".as_slice());
        batch.changes += 1;
    }

    /// Did the last run stop cleanly? Asked once at start: the mark is removed, so that a
    /// crash of this run is seen by the next. A store that never ran counts as clean.
    pub fn take_clean_stop(&self) -> Result<bool, StoreError> {
        let clean = self.db.remove(b"m/clean").map_err(|e| self.db_err(e))?.is_some();
        Ok(clean || self.last_alive().is_none())
    }

    /// How many deliveries of the message with this hash were recorded as started and never
    /// completed (see [`Store::count_delivery`]).
    pub fn deliveries(&self, hash: u64) -> u32 {
        match self.db.get(delivery_key(hash)) {
            Ok(Some(v)) => v.as_ref().try_into().map(u32::from_be_bytes).unwrap_or(0),
            _ => 0,
        }
    }

    /// Records in `batch` that a delivery of the message with this hash starts; written
    /// before it is processed, and removed ([`Store::forget_delivery`]) with its effects.
    pub fn count_delivery(&self, batch: &mut Batch, hash: u64, deliveries: u32) {
        batch.inner.insert(&delivery_key(hash), &deliveries.to_be_bytes());
        batch.changes += 1;
    }

    /// Removes the delivery count of this message, in `batch`.
    pub fn forget_delivery(&self, batch: &mut Batch, hash: u64) {
        batch.inner.remove(&delivery_key(hash));
        batch.changes += 1;
    }

    /// When the agent was last known running, if ever.
    pub fn last_alive(&self) -> Option<i64> {
        let v = self.db.get(b"m/alive").ok()??;
        v.as_ref().try_into().ok().map(i64::from_be_bytes)
    }

    /// Up to `n` outbox entries from `from_seq` on, in order: from memory when they are
    /// there, else from disk.
    pub fn outbox_from(&self, from_seq: u64, n: usize) -> Result<Vec<(u64, OutboxEntry)>, StoreError> {
        {
            let ob = self.outbox();
            if let Some(at) = ob.cache_index(from_seq) {
                return Ok(ob.cache.range(at..).take(n).map(|c| (c.seq, c.entry.clone())).collect());
            }
            // Not in memory: on disk once applied (a cache that overflowed, an earlier run).
            if from_seq >= ob.applied || n == 0 {
                return Ok(Vec::new());
            }
        }
        let mut v = Vec::with_capacity(n.min(1024));
        for item in self.db.range(outbox_key(from_seq)..outbox_key(u64::MAX)).take(n) {
            let (k, val) = item.map_err(|e| self.db_err(e))?;
            let seq = k.get(2..10).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(u64::MAX);
            match serde_json::from_slice(&val) {
                Ok(entry) => v.push((seq, entry)),
                Err(error) => tracing::error!(seq, %error, "Unreadable outbox entry skipped."),
            }
        }
        Ok(v)
    }

    /// Marks an outbox entry acknowledged: it no longer counts, and is deleted from disk with
    /// the next applied batch (after a crash before that, it is sent again: same id).
    pub fn ack_outbox(&self, seq: u64) {
        self.outbox().ack(seq);
    }

    /// (entries, bytes) waiting in the outbox.
    pub fn outbox_depth(&self) -> (usize, u64) {
        let ob = self.outbox();
        (ob.entries.len(), ob.bytes)
    }

    /// Entries dropped for space since the last call.
    pub fn take_dropped(&self) -> u64 {
        std::mem::take(&mut self.outbox().dropped)
    }

    /// Bytes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Everything, as a snapshot document. Its "alive" mark is the store's; the running agent
    /// sets it to `now_ms`.
    pub fn snapshot(&self, now_ms: i64) -> Result<Snapshot, StoreError> {
        let mut s =
            Snapshot { schema: SCHEMA_VERSION, taken_ms: now_ms, alive_ms: self.last_alive(), ..Snapshot::default() };
        for item in self.db.iter() {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            if k.starts_with(b"o/") {
                if let Ok(entry) = serde_json::from_slice(&v) {
                    s.outbox.push(entry);
                }
            } else if k.starts_with(b"s/") || k.starts_with(b"d/") || k.starts_with(b"h/") || k.starts_with(b"w/") {
                s.state.push((String::from_utf8_lossy(&k).into_owned(), String::from_utf8_lossy(&v).into_owned()));
            }
        }
        Ok(s)
    }

    /// Loads a snapshot into this (empty) store, with its "alive" mark (unless this store's
    /// is later): the agent that starts on it sees a restart, and gives every device a full
    /// timeout from then.
    pub async fn restore(&self, snap: &Snapshot) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        for (k, v) in &snap.state {
            batch.inner.insert(k.as_bytes(), v.as_bytes());
            batch.changes += 1;
        }
        let alive = snap.alive_ms.unwrap_or(snap.taken_ms).max(self.last_alive().unwrap_or(i64::MIN));
        self.mark_alive(&mut batch, alive);
        for entry in &snap.outbox {
            self.push_outbox(&mut batch, entry.clone());
        }
        self.commit(batch).await
    }

    /// Writes the snapshot file atomically: temp file, fsync, rename.
    pub fn write_snapshot_file(&self, snap: &Snapshot) -> Result<PathBuf, StoreError> {
        write_snapshot(&self.dir.join("snapshot.json"), snap)
    }
}

/// A readable report of what the store holds: keys per rule, heartbeat status per device,
/// outbox depth, size on disk.
pub fn inspect(store: &Store) -> Result<String, StoreError> {
    use std::collections::BTreeMap;
    use std::fmt::Write;
    let mut per_rule: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let mut devices: Vec<String> = Vec::new();
    let mut dedup = 0usize;
    for (what, bytes) in store.load_state()? {
        match what {
            Touched::Dedup(_) | Touched::Held(_) | Touched::Watermark => dedup += 1,
            Touched::Rule { rule, key } => {
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                let kind = v["kind"].as_str().unwrap_or("?").to_owned();
                let e = per_rule.entry(rule.to_string()).or_insert((0, kind.clone()));
                e.0 += 1;
                if kind == "heartbeat" {
                    let when = |f: &str| {
                        v[f].as_i64().filter(|t| *t != i64::MIN).map(|t| edgewatch_engine::Timestamp(t).to_rfc3339())
                    };
                    let status = if when("missing_since").is_some() { "MISSING" } else { "ok" };
                    devices.push(format!(
                        "  {rule:<16} {key:<24} {status:<8} last seen {}",
                        when("last_seen").unwrap_or_else(|| "never".into())
                    ));
                }
            }
        }
    }
    let mut out = String::new();
    let _ = writeln!(out, "rules:");
    for (rule, (n, kind)) in &per_rule {
        let _ = writeln!(out, "  {rule:<24} {kind:<10} {n} keys");
    }
    let _ = writeln!(out, "duplicate-detection entries: {dedup}");
    if !devices.is_empty() {
        let _ = writeln!(out, "heartbeats:");
        for d in &devices {
            let _ = writeln!(out, "{d}");
        }
    }
    let (n, bytes) = store.outbox_depth();
    let _ = writeln!(out, "outbox: {n} events, {bytes} bytes");
    let _ = writeln!(out, "on disk: {} bytes", store.size_on_disk());
    if let Some(t) = store.last_alive() {
        let _ = writeln!(out, "agent last alive: {}", edgewatch_engine::Timestamp(t).to_rfc3339());
    }
    Ok(out)
}

/// Writes `snap` to `path` atomically (temp file, fsync, rename, fsync of the directory).
pub fn write_snapshot(path: &Path, snap: &Snapshot) -> Result<PathBuf, StoreError> {
    use std::io::Write;
    let err = |e: std::io::Error| StoreError::Snapshot { path: path.display().to_string(), message: e.to_string() };
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec(snap)
        .map_err(|e| StoreError::Snapshot { path: path.display().to_string(), message: e.to_string() })?;
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(&text).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(path.to_owned())
}

/// Reads a snapshot file.
pub fn read_snapshot(path: &Path) -> Result<Snapshot, StoreError> {
    let err = |m: String| StoreError::Snapshot { path: path.display().to_string(), message: m };
    let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    serde_json::from_slice(&text).map_err(|e| err(e.to_string()))
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
mod tests {
    use super::*;

    fn entry(i: usize) -> OutboxEntry {
        OutboxEntry { topic: format!("t/{i}"), payload: format!("payload {i}").into(), qos: 1, retain: false }
    }

    /// The poison-message bookkeeping: a start after a crash is told apart from one after a
    /// clean stop, and delivery counts come and go with batches.
    #[tokio::test]
    async fn a_clean_stop_is_told_apart_from_a_crash_and_delivery_counts_come_and_go() {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = Store::open(dir.path(), 1 << 20, 1 << 20).expect("opens");
        assert!(s.take_clean_stop().expect("reads"), "a store that never ran follows no crash");
        let mut b = Batch::default();
        s.mark_alive(&mut b, 1000);
        s.commit(b).await.expect("commits");
        assert!(!s.take_clean_stop().expect("reads"), "ran, and never stopped cleanly: a crash");
        let mut b = Batch::default();
        s.mark_clean_stop(&mut b);
        s.commit(b).await.expect("commits");
        assert!(s.take_clean_stop().expect("reads"), "a clean stop");
        assert!(!s.take_clean_stop().expect("reads"), "the mark is taken: a crash of this run is seen by the next");

        assert_eq!(s.deliveries(7), 0);
        let mut b = Batch::default();
        s.count_delivery(&mut b, 7, 2);
        s.commit(b).await.expect("commits");
        assert_eq!((s.deliveries(7), s.deliveries(8)), (2, 0));
        let mut b = Batch::default();
        s.forget_delivery(&mut b, 7);
        s.commit(b).await.expect("commits");
        assert_eq!(s.deliveries(7), 0);
        assert!(s.load_state().expect("loads").is_empty(), "delivery counts are not rule state");
    }

    #[tokio::test]
    async fn state_and_outbox_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let s = Store::open(dir.path(), 1 << 20, 1 << 20).expect("opens");
            let mut b = Batch::default();
            s.put_state(&mut b, &Touched::Rule { rule: "r".into(), key: "k\u{1}x".into() }, Some(b"{\"a\":1}"));
            s.put_state(&mut b, &Touched::Dedup("seq:d".into()), Some(b"{}"));
            for i in 0..3 {
                s.push_outbox(&mut b, entry(i));
            }
            s.mark_alive(&mut b, 1234);
            s.commit(b).await.expect("commits");
            s.ack_outbox(0);
            // The deletion goes with the next batch, even an empty one.
            s.commit(Batch::default()).await.expect("commits");
        }
        // sled's background flusher may hold the file lock a moment after the last handle
        // is dropped (seen on a loaded machine): retry, as a restarted process would not need.
        let mut tries = 0;
        let s = loop {
            match Store::open(dir.path(), 1 << 20, 1 << 20) {
                Ok(s) => break s,
                Err(e) if tries < 100 && e.to_string().contains("could not acquire lock") => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("reopens: {e}"),
            }
        };
        let state = s.load_state().expect("loads");
        assert_eq!(state.len(), 2);
        assert!(
            state
                .iter()
                .any(|(t, v)| *t == Touched::Rule { rule: "r".into(), key: "k\u{1}x".into() } && v == b"{\"a\":1}")
        );
        let out = s.outbox_from(0, 10).expect("reads");
        assert_eq!(out.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(out[0].1, entry(1));
        assert_eq!(s.last_alive(), Some(1234));
        // New entries continue the sequence.
        let mut b = Batch::default();
        s.push_outbox(&mut b, entry(9));
        s.commit(b).await.expect("commits");
        assert_eq!(s.outbox_from(0, 10).expect("reads").last().map(|x| x.0), Some(3));
    }

    /// The publisher's view (memory, or disk past the cache) against a model, through random
    /// interleavings of batches, reads, acks in order (QoS 1) and out of order (QoS 0 behind
    /// QoS 1), drops for space, and a reopen.
    #[tokio::test]
    async fn the_outbox_reads_the_same_from_memory_and_from_disk() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for cap in [0u64, 400, 1 << 20] {
            let _ = std::fs::remove_dir_all(dir.path().join("db"));
            let s = Store::open(dir.path(), 1 << 20, 3000).expect("opens");
            s.outbox().cache_cap = cap;
            // The model: every entry pushed, by seq; which are acked; the publisher's cursor.
            let mut model: Vec<OutboxEntry> = Vec::new();
            let mut acked = std::collections::BTreeSet::new();
            let mut cursor = 0u64;
            let mut inflight: std::collections::VecDeque<u64> = Default::default();
            for round in 0..300 {
                let mut b = Batch::default();
                for _ in 0..next(6) {
                    let i = model.len();
                    let mut e = entry(i);
                    e.qos = u8::from(next(3) != 0);
                    let mut p = e.payload.to_vec();
                    p.resize(10 + next(60) as usize, b'x');
                    e.payload = p.into();
                    s.push_outbox(&mut b, e.clone());
                    model.push(e);
                }
                // The publisher reads (and the broker acknowledges) before or after the batch
                // is written: entries acknowledged before it never reach the disk.
                let before = next(2) == 0;
                for phase in [true, false] {
                    if phase != before {
                        s.apply(std::mem::take(&mut b)).expect("applies");
                        continue;
                    }
                    let got = s.outbox_from(cursor, 1 + next(5) as usize).expect("reads");
                    for (seq, e) in got {
                        assert!(seq >= cursor, "cap {cap} round {round}: {seq} before the cursor {cursor}");
                        assert_eq!(e, model[seq as usize], "cap {cap} round {round}: seq {seq}");
                        cursor = seq + 1;
                        if e.qos == 0 {
                            s.ack_outbox(seq);
                            acked.insert(seq);
                        } else {
                            inflight.push_back(seq);
                        }
                    }
                    for _ in 0..next(2) {
                        if let Some(seq) = inflight.pop_front() {
                            s.ack_outbox(seq);
                            acked.insert(seq);
                        }
                    }
                }
            }
            s.commit(Batch::default()).await.expect("commits");
            let dropped = s.take_dropped();
            let (depth, _) = s.outbox_depth();
            assert!(dropped > 0, "cap {cap}: 3000 bytes should have overflowed");
            // What is left on disk is exactly what was never acknowledged nor dropped.
            let on_disk = s.outbox_from(0, usize::MAX >> 1).expect("reads");
            assert_eq!(on_disk.len(), depth, "cap {cap}");
            for (seq, e) in &on_disk {
                assert!(!acked.contains(seq), "cap {cap}: acked {seq} still on disk");
                assert_eq!(*e, model[*seq as usize]);
            }
            // Memory holds no more than the cap, and nothing acknowledged but what waits
            // behind an older unacknowledged entry.
            let ob = s.outbox();
            assert!(ob.cache_bytes <= cap, "cap {cap}: {} bytes cached", ob.cache_bytes);
            assert_eq!(ob.cache_bytes, ob.cache.iter().map(|c| c.len).sum::<u64>());
            assert!(ob.cache.front().is_none_or(|c| !c.acked), "cap {cap}");
            for c in &ob.cache {
                assert!(c.acked || ob.entries.iter().any(|l| l.seq == c.seq), "cap {cap}: {} cached, acked", c.seq);
            }
        }
    }

    #[tokio::test]
    async fn a_full_outbox_drops_the_oldest_and_counts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = Store::open(dir.path(), 1 << 20, 200).expect("opens");
        let mut b = Batch::default();
        for i in 0..10 {
            s.push_outbox(&mut b, entry(i));
        }
        s.commit(b).await.expect("commits");
        let (n, bytes) = s.outbox_depth();
        assert!(bytes <= 200 && n < 10, "{n} entries, {bytes} bytes");
        assert_eq!(s.take_dropped(), 10 - n as u64);
        assert_eq!(s.outbox_from(0, 100).expect("reads").last().map(|e| e.1.topic.clone()), Some("t/9".into()));
    }

    #[tokio::test]
    async fn an_unreadable_database_is_moved_aside_and_the_snapshot_restored() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let s = Store::open(dir.path(), 1 << 20, 1 << 20).expect("opens");
            let mut b = Batch::default();
            s.put_state(&mut b, &Touched::Dedup("seq:d".into()), Some(b"{\"max\":1,\"seen\":1}"));
            s.push_outbox(&mut b, entry(1));
            s.commit(b).await.expect("commits");
            s.write_snapshot_file(&s.snapshot(42).expect("snapshot")).expect("written");
        }
        // Wreck every file of the database.
        for f in walk(&dir.path().join("db")) {
            std::fs::write(&f, b"\xde\xad\xbe\xef garbage").expect("overwrite");
        }
        let (s, opened) = open_or_recover(dir.path(), 1 << 20, 1 << 20).await.expect("still opens");
        match opened {
            Opened::Recovered { snapshot, quarantined, .. } => {
                assert_eq!(snapshot, Ok(42));
                assert!(quarantined.exists());
            }
            Opened::Clean => panic!("the wrecked database opened as if clean"),
        }
        assert_eq!(s.load_state().expect("loads").len(), 1);
        assert_eq!(s.outbox_depth().0, 1);
        // A restore is a restart: the snapshot's alive mark (its time, in older files) is the
        // new database's.
        assert_eq!(s.last_alive(), Some(42));
    }

    #[tokio::test]
    async fn a_restored_snapshot_brings_its_alive_mark_unless_the_store_has_a_later_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = Store::open(dir.path(), 1 << 20, 1 << 20).expect("opens");
        let snap = |alive_ms| Snapshot { schema: SCHEMA_VERSION, taken_ms: 900, alive_ms, ..Snapshot::default() };
        s.restore(&snap(Some(500))).await.expect("restores");
        assert_eq!(s.last_alive(), Some(500));
        s.restore(&snap(None)).await.expect("restores");
        assert_eq!(s.last_alive(), Some(900));
        s.restore(&snap(Some(700))).await.expect("restores");
        assert_eq!(s.last_alive(), Some(900));
    }

    /// Issue 14 C: the alive mark goes with commits that write anyway, never on its own.
    #[tokio::test]
    async fn an_alive_mark_rides_only_with_a_batch_that_writes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = Store::open(dir.path(), 1 << 20, 1 << 20).expect("opens");
        let mut b = Batch::default();
        b.alive_at(100);
        assert!(!s.apply(b).expect("applies").wrote, "an alive mark alone is no write");
        assert_eq!(s.last_alive(), None);
        let mut b = Batch::default();
        s.put_state(&mut b, &Touched::Dedup("seq:d".into()), Some(b"{}"));
        b.alive_at(200);
        assert!(s.apply(b).expect("applies").wrote);
        assert_eq!(s.last_alive(), Some(200));
        // An event acknowledged upstream before its batch is applied is never written: nor is
        // the mark.
        let mut b = Batch::default();
        s.push_outbox(&mut b, entry(1));
        let (seq, _) = s.outbox_from(0, 1).expect("reads")[0].clone();
        s.ack_outbox(seq);
        b.alive_at(300);
        assert!(!s.apply(b).expect("applies").wrote);
        assert_eq!(s.last_alive(), Some(200));
    }

    /// Found with issue 14: a database another process held (a second agent on the same state
    /// directory) was taken for damaged, moved aside under the running agent, and replaced by
    /// the snapshot.
    #[tokio::test]
    async fn a_database_another_process_holds_is_not_moved_aside() {
        let dir = tempfile::tempdir().expect("temp dir");
        let _running = Store::open(dir.path(), 1 << 20, 1 << 20).expect("opens");
        match open_or_recover(dir.path(), 1 << 20, 1 << 20).await {
            Err(StoreError::Locked { .. }) => {}
            Err(e) => panic!("another error: {e}"),
            Ok((_, opened)) => panic!("opened a held database: {opened:?}"),
        }
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("state dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["db"], "nothing moved aside");
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() { v.extend(walk(&p)) } else { v.push(p) }
        }
        v
    }
}
