//! The outbox when durability is off (`state.durable = false`): events wait in memory, in
//! order, until upstream acknowledges them, bounded like the durable outbox in `store`.
//!
//! `state.max_outbox_mb` holds for both: when a new event would take the outbox past it
//! (a long upstream outage), the oldest events are dropped first and counted, and the agent
//! reports the count upstream (`edgewatch.agent.dropped`) as it does for the durable one.
//! Entries are kept in sequence order, so reading from a sequence number and acknowledging
//! one are binary searches, not scans.

use crate::store::OutboxEntry;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

/// Bytes counted for an entry besides its topic and payload (sequence number, QoS, flags,
/// allocation), so that a flood of empty events is bounded too.
const ENTRY_OVERHEAD: u64 = 64;

/// Events waiting to go upstream, in memory.
#[derive(Debug)]
pub struct MemoryOutbox {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Waiting events by sequence number, ascending: acknowledged ones are removed.
    entries: VecDeque<(u64, OutboxEntry)>,
    next_seq: u64,
    /// What `entries` counts against `max_bytes`.
    bytes: u64,
    max_bytes: u64,
    /// Dropped for space since the last [`MemoryOutbox::take_dropped`].
    dropped: u64,
}

fn size(entry: &OutboxEntry) -> u64 {
    (entry.topic.len() + entry.payload.len()) as u64 + ENTRY_OVERHEAD
}

impl MemoryOutbox {
    /// An empty outbox holding at most `max_bytes` of events.
    pub fn new(max_bytes: u64) -> Self {
        MemoryOutbox { inner: Mutex::new(Inner { max_bytes, ..Inner::default() }) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every change is one step).
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds an event at the end; returns its sequence number. Drops the oldest events while
    /// the outbox is over its bound (never the new one).
    pub fn push(&self, entry: OutboxEntry) -> u64 {
        let mut q = self.lock();
        let seq = q.next_seq;
        q.next_seq += 1;
        q.bytes += size(&entry);
        q.entries.push_back((seq, entry));
        while q.bytes > q.max_bytes && q.entries.len() > 1 {
            if let Some((_, old)) = q.entries.pop_front() {
                q.bytes -= size(&old);
                q.dropped += 1;
            }
        }
        seq
    }

    /// Up to `n` waiting events from sequence number `from` on, in order.
    pub fn from(&self, from: u64, n: usize) -> Vec<(u64, OutboxEntry)> {
        let q = self.lock();
        let start = q.entries.partition_point(|(s, _)| *s < from);
        q.entries.range(start..).take(n).cloned().collect()
    }

    /// Upstream acknowledged the event `seq`.
    pub fn ack(&self, seq: u64) {
        let mut q = self.lock();
        if let Ok(at) = q.entries.binary_search_by_key(&seq, |(s, _)| *s) {
            if let Some((_, entry)) = q.entries.remove(at) {
                q.bytes -= size(&entry);
            }
        }
    }

    /// (events waiting, bytes they count for).
    pub fn depth(&self) -> (usize, u64) {
        let q = self.lock();
        (q.entries.len(), q.bytes)
    }

    /// Events dropped for space since the last call.
    pub fn take_dropped(&self) -> u64 {
        std::mem::take(&mut self.lock().dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64, payload_len: usize) -> OutboxEntry {
        OutboxEntry { topic: format!("t/{i:03}"), payload: vec![b'x'; payload_len].into(), qos: 1, retain: false }
    }

    #[test]
    fn events_come_out_in_order_from_any_point_and_go_when_acknowledged() {
        let o = MemoryOutbox::new(1 << 20);
        for i in 0..10 {
            assert_eq!(o.push(entry(i, 10)), i);
        }
        let seqs = |v: Vec<(u64, OutboxEntry)>| v.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
        assert_eq!(seqs(o.from(3, 4)), [3, 4, 5, 6]);
        o.ack(4);
        o.ack(0);
        o.ack(42);
        assert_eq!(seqs(o.from(3, 4)), [3, 5, 6, 7]);
        assert_eq!(seqs(o.from(0, 2)), [1, 2]);
        assert_eq!(o.depth().0, 8);
        assert_eq!(o.from(3, 1)[0].1, entry(3, 10));
    }

    /// Issue 15: the in-memory outbox ignored `state.max_outbox_mb` and grew without bound
    /// through an upstream outage.
    #[test]
    fn past_its_bound_the_oldest_events_are_dropped_and_counted() {
        let one = size(&entry(0, 100));
        let o = MemoryOutbox::new(one * 5);
        for i in 0..12 {
            o.push(entry(i, 100));
            assert!(o.depth().1 <= one * 5, "over the bound after {i}");
        }
        assert_eq!(o.take_dropped(), 7);
        assert_eq!(o.take_dropped(), 0, "counted once");
        let left: Vec<u64> = o.from(0, 100).into_iter().map(|(s, _)| s).collect();
        assert_eq!(left, [7, 8, 9, 10, 11], "the newest stay, in order");
        // Acknowledging makes room again.
        o.ack(7);
        o.push(entry(12, 100));
        assert_eq!(o.take_dropped(), 0);
        // An event larger than the whole bound is kept alone rather than lost.
        o.push(entry(13, 10_000));
        assert_eq!(o.from(0, 100).len(), 1);
    }
}
