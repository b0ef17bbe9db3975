//! The outbox: events waiting to go upstream, in order, until the upstream broker
//! acknowledges them. Durably in sled (`state.durable`), or in memory; bounded by
//! `state.max_outbox_mb` either way, oldest dropped first and counted.
//!
//! # Design
//!
//! [`Book`] is the whole bookkeeping, a plain struct with no I/O (like rumqttc's `state.rs`):
//! sequence numbers, the entries by sequence number, their size against the bound, the
//! oldest-first drop and its count, the entries kept in memory for the publisher (the
//! cache), and the acknowledged entries whose copy on disk is to be deleted. Both modes use
//! it the same way:
//!
//! - in memory ([`Outbox::memory`]), it is the whole outbox: the cache has no limit, so every
//!   entry is in it and nothing is ever read back;
//! - durably ([`Outbox::durable`]), `store` does only the sled reads and writes around it:
//!   it writes the entries of an applied batch ([`Book::mark_written`]), deletes dropped and
//!   acknowledged ones, and reads back what did not fit the cache or what an earlier run
//!   left ([`Read::Disk`]).
//!
//! Entries are kept in sequence order in a `VecDeque`: a push is O(1), acknowledging and
//! reading from a sequence number are binary searches (O(log n)), never scans. An entry
//! acknowledged behind an older one that is not yet (QoS 0 after QoS 1) is marked gone in
//! place (its entry freed, its bytes no longer counted) and leaves when it reaches the front.
//! (Measured per event, push + read + acknowledge: a `BTreeMap` was about 20% slower than
//! the old memory outbox, which removed from the middle of its `VecDeque`; this is faster.)
//!
//! # Size
//!
//! An entry counts its topic, its payload and [`ENTRY_OVERHEAD`] bytes, in both modes: known
//! without encoding it (the memory outbox never encodes), and a flood of empty events is
//! bounded too. It is not the size on disk, which is the entry's JSON encoding and the
//! database's own overhead.

pub(crate) mod book;
pub(crate) mod entry;

pub use book::{Book, Read};
pub use entry::{ENTRY_OVERHEAD, OutboxEntry};

use crate::store::{Batch, Store};
use std::sync::{Arc, Mutex, MutexGuard};

/// Where outbound events wait. Cloning shares it (the engine loop pushes, the upstream
/// connection reads and acknowledges, `/metrics` reads its depth).
#[derive(Debug, Clone)]
pub struct Outbox {
    inner: Inner,
}

#[derive(Debug, Clone)]
enum Inner {
    Durable(Store),
    /// The bookkeeping alone: the cache holds every entry.
    Memory(Arc<Mutex<Book>>),
}

fn lock(book: &Mutex<Book>) -> MutexGuard<'_, Book> {
    // A panic while holding the lock leaves consistent data (every change is one step).
    book.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Outbox {
    /// The outbox in sled, with the rest of the state.
    pub fn durable(store: Store) -> Outbox {
        Outbox { inner: Inner::Durable(store) }
    }

    /// An outbox in memory holding at most `max_bytes` of events.
    pub fn memory(max_bytes: u64) -> Outbox {
        Outbox { inner: Inner::Memory(Arc::new(Mutex::new(Book::in_memory(max_bytes)))) }
    }

    /// The store behind a durable outbox.
    pub fn store(&self) -> Option<&Store> {
        match &self.inner {
            Inner::Durable(s) => Some(s),
            Inner::Memory(_) => None,
        }
    }

    /// Queues an event, readable by [`Outbox::next`] at once; on disk with `batch`. Returns
    /// its sequence number.
    pub fn push(&self, batch: &mut Batch, entry: OutboxEntry) -> u64 {
        match &self.inner {
            Inner::Durable(s) => s.push_outbox(batch, entry),
            Inner::Memory(m) => lock(m).push(entry, |_| {}),
        }
    }

    /// Up to `n` waiting events from sequence number `from` on, in order.
    pub fn next(&self, from: u64, n: usize) -> Vec<(u64, OutboxEntry)> {
        match &self.inner {
            Inner::Durable(s) => s.outbox_from(from, n).unwrap_or_else(|error| {
                tracing::error!(%error, "Cannot read the outbox.");
                Vec::new()
            }),
            Inner::Memory(m) => match lock(m).next(from, n) {
                Read::Entries(v) => v,
                // Nothing is ever written in memory: it cannot be on disk.
                Read::Disk => Vec::new(),
            },
        }
    }

    /// Upstream acknowledged event `seq`.
    pub fn acked(&self, seq: u64) {
        match &self.inner {
            Inner::Durable(s) => s.ack_outbox(seq),
            Inner::Memory(m) => lock(m).ack(seq),
        }
    }

    /// (events, bytes) waiting.
    pub fn depth(&self) -> (usize, u64) {
        match &self.inner {
            Inner::Durable(s) => s.outbox_depth(),
            Inner::Memory(m) => lock(m).depth(),
        }
    }

    /// Events dropped for space (the outbox was full) since the last call.
    pub fn take_dropped(&self) -> u64 {
        match &self.inner {
            Inner::Durable(s) => s.take_dropped(),
            Inner::Memory(m) => lock(m).take_dropped(),
        }
    }

    /// Acknowledged events wait to be deleted from disk (with the next batch).
    pub fn has_acked(&self) -> bool {
        self.store().is_some_and(Store::has_acked)
    }

    /// Bytes on disk, for a durable outbox.
    pub fn size_on_disk(&self) -> Option<u64> {
        self.store().map(Store::size_on_disk)
    }
}

#[cfg(test)]
mod tests;
