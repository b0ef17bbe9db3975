//! The outbox: events waiting to go upstream, in order, until the upstream broker
//! acknowledges them. Durably in sled (`state.durable`), or in memory; bounded by
//! `state.max_outbox_mb` either way, oldest dropped first and counted.

use crate::memory_outbox::MemoryOutbox;
use crate::store::{Batch, OutboxEntry, Store};
use std::sync::Arc;

/// Where outbound events wait. Cloning shares it (the engine loop pushes, the upstream
/// connection reads and acknowledges, `/metrics` reads its depth).
#[derive(Debug, Clone)]
pub struct Outbox {
    inner: Inner,
}

#[derive(Debug, Clone)]
enum Inner {
    Durable(Store),
    Memory(Arc<MemoryOutbox>),
}

impl Outbox {
    /// The outbox in sled, with the rest of the state.
    pub fn durable(store: Store) -> Outbox {
        Outbox { inner: Inner::Durable(store) }
    }

    /// An outbox in memory holding at most `max_bytes` of events.
    pub fn memory(max_bytes: u64) -> Outbox {
        Outbox { inner: Inner::Memory(Arc::new(MemoryOutbox::new(max_bytes))) }
    }

    /// The store behind a durable outbox.
    pub fn store(&self) -> Option<&Store> {
        match &self.inner {
            Inner::Durable(s) => Some(s),
            Inner::Memory(_) => None,
        }
    }

    /// Queues an event, readable by [`Outbox::next`] at once; on disk with `batch`.
    pub fn push(&self, batch: &mut Batch, entry: OutboxEntry) {
        match &self.inner {
            Inner::Durable(s) => s.push_outbox(batch, entry),
            Inner::Memory(m) => {
                m.push(entry);
            }
        }
    }

    /// Up to `n` waiting events from sequence number `from` on, in order.
    pub fn next(&self, from: u64, n: usize) -> Vec<(u64, OutboxEntry)> {
        match &self.inner {
            Inner::Durable(s) => s.outbox_from(from, n).unwrap_or_else(|error| {
                tracing::error!(%error, "Cannot read the outbox.");
                Vec::new()
            }),
            Inner::Memory(m) => m.from(from, n),
        }
    }

    /// Upstream acknowledged event `seq`.
    pub fn acked(&self, seq: u64) {
        match &self.inner {
            Inner::Durable(s) => s.ack_outbox(seq),
            Inner::Memory(m) => m.ack(seq),
        }
    }

    /// (events, bytes) waiting.
    pub fn depth(&self) -> (usize, u64) {
        match &self.inner {
            Inner::Durable(s) => s.outbox_depth(),
            Inner::Memory(m) => m.depth(),
        }
    }

    /// Events dropped for space (the outbox was full) since the last call.
    pub fn take_dropped(&self) -> u64 {
        match &self.inner {
            Inner::Durable(s) => s.take_dropped(),
            Inner::Memory(m) => m.take_dropped(),
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
