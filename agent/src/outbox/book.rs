//! The outbox's bookkeeping ([`Book`]): a plain struct with no I/O, used the same way in
//! memory and on disk (see the `outbox` module docs). It imports nothing of the store, so
//! the store can build on it while the `Outbox` facade holds a store.

use super::entry::OutboxEntry;
use std::collections::VecDeque;

/// The outbox's bookkeeping: no I/O, the same in memory and on disk (see the module docs).
///
/// An entry is readable by the publisher as soon as it is pushed. Durably, it is written to
/// disk when its batch is applied, unless it was acknowledged upstream by then: with a
/// responsive upstream broker most events never touch the disk. That keeps the guarantee:
/// the inputs behind an unwritten event are acknowledged only after their batch is flushed,
/// so after a crash the broker redelivers them and the same event (same id) comes again.
#[derive(Debug)]
pub struct Book {
    /// The next entry's sequence number: the order upstream, and the key on disk.
    next_seq: u64,
    /// The entries in sequence order (ascending, gaps allowed after a restart): every one
    /// not yet acknowledged nor dropped, and ones acknowledged behind it. The front is
    /// never gone.
    slots: VecDeque<Slot>,
    /// How many of `slots` are not gone: the outbox's depth.
    live: usize,
    /// What `slots` counts against `max_bytes`.
    bytes: u64,
    /// `state.max_outbox_mb`: past it the oldest entries are dropped.
    max_bytes: u64,
    /// Entries dropped to stay within `max_bytes`, not yet reported upstream.
    dropped: u64,
    /// Bytes of entries held in memory for the publisher, so it need not read back (and
    /// decode) what was just written.
    cache_bytes: u64,
    /// How many entries are held in memory.
    cached: usize,
    /// At most this many bytes are cached; past it (a long upstream outage) entries wait on
    /// disk only. Unlimited in memory, where the cache is the outbox.
    cache_cap: u64,
    /// Cleared when an entry does not fit the cache, set again when the cache empties: what
    /// waits on disk only is then one run, read back in order, not every other entry.
    cache_open: bool,
    /// Acknowledged entries that were written: deleted from disk with the next batch.
    acked: Vec<u64>,
}

/// An entry waiting (or gone, behind one that is).
#[derive(Debug)]
struct Slot {
    seq: u64,
    /// What it counts (see [`OutboxEntry::size`]).
    len: u64,
    /// On disk (in an applied batch): acknowledging or dropping it means deleting it there.
    written: bool,
    /// The entry, if cached; else it is read back from disk.
    entry: Option<OutboxEntry>,
    /// Acknowledged, behind an older entry that is not yet: it no longer counts, and is
    /// removed when it reaches the front.
    gone: bool,
}

/// What [`Book::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// The entries, in order (maybe fewer than asked, maybe none: nothing more is ready).
    Entries(Vec<(u64, OutboxEntry)>),
    /// The first entry asked for is on disk only: read the written entries from there on,
    /// keeping those still [`Book::is_live`].
    Disk,
}

impl Book {
    /// An empty outbox of at most `max_bytes`, caching at most `cache_cap` bytes.
    pub fn new(max_bytes: u64, cache_cap: u64) -> Book {
        Book {
            next_seq: 0,
            slots: VecDeque::new(),
            live: 0,
            bytes: 0,
            max_bytes,
            dropped: 0,
            cache_bytes: 0,
            cached: 0,
            cache_cap,
            cache_open: true,
            acked: Vec::new(),
        }
    }

    /// The whole outbox in memory: everything is cached, nothing is written.
    pub fn in_memory(max_bytes: u64) -> Book {
        Book::new(max_bytes, u64::MAX)
    }

    /// An entry an earlier run wrote (read at open, in order): `None` if it cannot be
    /// decoded (`len` is then what it counts). Cached if it fits.
    pub fn recovered(&mut self, seq: u64, entry: Option<OutboxEntry>, len: u64) {
        if seq < self.next_seq {
            return; // not after the last one: only a damaged store could say so
        }
        let len = entry.as_ref().map_or(len, OutboxEntry::size);
        let entry = entry.filter(|_| self.cache_fits(len));
        self.insert(Slot { seq, len, written: true, entry, gone: false });
        self.next_seq = seq.saturating_add(1);
        self.drop_oldest(|_| {});
    }

    /// Adds an entry at the end and returns its sequence number. While the outbox is over its
    /// bound, drops the oldest entries (never the new one) and counts them; `deleted` is told
    /// each dropped entry that was written, to delete it from disk.
    pub fn push(&mut self, entry: OutboxEntry, deleted: impl FnMut(u64)) -> u64 {
        self.push_uncached(entry, deleted).0
    }

    /// As [`Book::push`], and gives the entry back when the cache has no room for it: the
    /// caller keeps it (the store encodes it at once for the disk). A cached entry is encoded
    /// only if it is still waiting when its batch is applied ([`Book::cached`]).
    pub fn push_uncached(&mut self, entry: OutboxEntry, deleted: impl FnMut(u64)) -> (u64, Option<OutboxEntry>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let len = entry.size();
        let (entry, uncached) = if self.cache_fits(len) { (Some(entry), None) } else { (None, Some(entry)) };
        self.insert(Slot { seq, len, written: false, entry, gone: false });
        self.drop_oldest(deleted);
        (seq, uncached)
    }

    /// Entry `seq`, if it is waiting and in the cache.
    pub fn cached(&self, seq: u64) -> Option<&OutboxEntry> {
        self.find(seq).and_then(|at| self.slots.get(at)).and_then(|s| s.entry.as_ref())
    }

    /// Up to `n` waiting entries from sequence number `from` on, in order.
    pub fn next(&self, from: u64, n: usize) -> Read {
        let mut out = Vec::with_capacity(n.min(self.cached).min(1024));
        let start = self.slots.partition_point(|s| s.seq < from);
        for slot in self.slots.range(start..) {
            if out.len() >= n {
                break;
            }
            if slot.gone {
                continue;
            }
            match &slot.entry {
                Some(entry) => out.push((slot.seq, entry.clone())),
                None if out.is_empty() && slot.written => return Read::Disk,
                // Not cached and not written yet (its batch is not applied): wait for it.
                None => break,
            }
        }
        Read::Entries(out)
    }

    /// Upstream acknowledged entry `seq`: it no longer counts; if it was written, it is to be
    /// deleted with the next batch. An unknown `seq` (dropped meanwhile, acknowledged twice)
    /// is ignored.
    pub fn ack(&mut self, seq: u64) {
        let Some(slot) = self.find(seq).and_then(|at| self.slots.get_mut(at)) else { return };
        slot.gone = true;
        let (len, written, cached) = (slot.len, slot.written, slot.entry.take().is_some());
        self.forget(len, cached);
        if written {
            self.acked.push(seq);
        }
        self.trim();
    }

    /// Entry `seq` goes to disk with the batch being applied: true if it is still waiting
    /// (else it was acknowledged or dropped meanwhile, and is not written at all).
    pub fn mark_written(&mut self, seq: u64) -> bool {
        let at = self.find(seq);
        at.and_then(|at| self.slots.get_mut(at)).map(|s| s.written = true).is_some()
    }

    /// The batch holding entry `seq` failed to apply: it is not on disk after all.
    pub fn unmark_written(&mut self, seq: u64) {
        if let Some(s) = self.find(seq).and_then(|at| self.slots.get_mut(at)) {
            s.written = false;
        }
    }

    /// The written entries acknowledged since the last call, to delete from disk.
    pub fn take_acked(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.acked)
    }

    /// Gives back what [`Book::take_acked`] returned when the deletion failed.
    pub fn return_acked(&mut self, acked: Vec<u64>) {
        self.acked.extend(acked);
    }

    /// Written entries acknowledged and not yet deleted from disk?
    pub fn has_acked(&self) -> bool {
        !self.acked.is_empty()
    }

    /// Is entry `seq` still waiting (neither acknowledged nor dropped)?
    pub fn is_live(&self, seq: u64) -> bool {
        self.find(seq).is_some()
    }

    /// (entries waiting, bytes they count).
    pub fn depth(&self) -> (usize, u64) {
        (self.live, self.bytes)
    }

    /// Entries dropped for space since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    fn cache_fits(&mut self, len: u64) -> bool {
        let fits = self.cache_open && self.cache_bytes.saturating_add(len) <= self.cache_cap;
        self.cache_open = fits;
        fits
    }

    /// Where entry `seq` is, if it is waiting.
    fn find(&self, seq: u64) -> Option<usize> {
        let at = self.slots.binary_search_by_key(&seq, |s| s.seq).ok()?;
        self.slots.get(at).filter(|s| !s.gone).map(|_| at)
    }

    /// Adds an entry after every other (callers give increasing seqs).
    fn insert(&mut self, slot: Slot) {
        self.bytes += slot.len;
        self.live += 1;
        if slot.entry.is_some() {
            self.cache_bytes += slot.len;
            self.cached += 1;
        }
        self.slots.push_back(slot);
    }

    /// Removes gone entries from the front.
    fn trim(&mut self) {
        while self.slots.front().is_some_and(|s| s.gone) {
            self.slots.pop_front();
        }
    }

    /// An entry of `len` bytes (`cached` or not) leaves: the counts follow.
    fn forget(&mut self, len: u64, cached: bool) {
        self.bytes -= len;
        self.live -= 1;
        if cached {
            self.cache_bytes -= len;
            self.cached -= 1;
            if self.cached == 0 {
                self.cache_open = true;
            }
        }
    }

    fn drop_oldest(&mut self, mut deleted: impl FnMut(u64)) {
        while self.bytes > self.max_bytes && self.live > 1 {
            // The front is never gone: it is the oldest entry waiting.
            let Some(slot) = self.slots.pop_front() else { break };
            self.forget(slot.len, slot.entry.is_some());
            self.dropped += 1;
            if slot.written {
                deleted(slot.seq);
            }
            self.trim();
        }
    }

    /// Checks the counts against the entries (tests only: it is a scan).
    #[cfg(test)]
    pub(crate) fn assert_consistent(&self) {
        let waiting = || self.slots.iter().filter(|s| !s.gone);
        let cached: Vec<u64> = waiting().filter(|s| s.entry.is_some()).map(|s| s.len).collect();
        assert_eq!(self.bytes, waiting().map(|s| s.len).sum::<u64>(), "bytes");
        assert_eq!(self.live, waiting().count(), "live");
        assert!(self.slots.front().is_none_or(|s| !s.gone), "a gone entry at the front");
        assert!(self.slots.iter().all(|s| !s.gone || s.entry.is_none()), "a gone entry holds its event");
        assert!(self.slots.iter().zip(self.slots.iter().skip(1)).all(|(a, b)| a.seq < b.seq), "out of order");
        assert_eq!(self.cache_bytes, cached.iter().sum::<u64>(), "cache bytes");
        assert_eq!(self.cached, cached.len(), "cached");
        assert!(self.cache_bytes <= self.cache_cap, "{} bytes cached, cap {}", self.cache_bytes, self.cache_cap);
        assert!(self.bytes <= self.max_bytes || self.live <= 1, "over the bound");
    }
}
