//! One timer queue for the whole engine.
//!
//! Entries are never removed early: each holds a deadline, a rule and a key, and the rule
//! checks on firing whether the entry is still the one it wants (a heartbeat whose deadline
//! moved reschedules itself). So arming costs O(log n), a message that merely pushes a
//! deadline later costs nothing, and a tick costs O(expired entries), not O(keys).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

/// A scheduled wake-up. 32 bytes: there is one per tracked heartbeat key.
#[derive(Debug, Clone)]
pub(crate) struct Timer {
    pub(crate) deadline: i64,
    /// Insertion order (wrapping): ties fire in the order they were set, so runs are
    /// deterministic.
    seq: u32,
    /// Rule index (high 24 bits) and what the rule set it for (low 8 bits).
    rule_tag: u32,
    pub(crate) key: Arc<str>,
}

impl Timer {
    pub(crate) fn rule(&self) -> u32 {
        self.rule_tag >> 8
    }

    pub(crate) fn tag(&self) -> u32 {
        self.rule_tag & 0xff
    }
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest deadline must come out first.
    /// Ties fire by rule, then key, then insertion: a canonical order, so an engine restored
    /// from saved state fires simultaneous timers in the same order as the original.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.deadline, other.rule_tag, &other.key, other.seq).cmp(&(
            self.deadline,
            self.rule_tag,
            &self.key,
            self.seq,
        ))
    }
}

/// The queue.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Timer>,
    next_seq: u32,
}

impl Timers {
    /// Sets a timer; `rule` must be below 2^24 and `tag` below 256.
    pub(crate) fn set(&mut self, deadline: i64, rule: u32, key: Arc<str>, tag: u32) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.heap.push(Timer { deadline, seq, rule_tag: (rule << 8) | (tag & 0xff), key });
    }

    /// The earliest pending deadline.
    pub(crate) fn next_deadline(&self) -> Option<i64> {
        self.heap.peek().map(|t| t.deadline)
    }

    /// Removes and returns the earliest timer if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: i64) -> Option<Timer> {
        if self.heap.peek().is_some_and(|t| t.deadline <= now) { self.heap.pop() } else { None }
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Keeps only the entries for which `keep` holds.
    pub(crate) fn retain(&mut self, keep: impl FnMut(&Timer) -> bool) {
        self.heap.retain(keep);
    }

    /// Renumbers rules after a reload: `map(old index)` is the new index, or `None` for a
    /// rule that went away (its timers are dropped).
    pub(crate) fn remap(&mut self, map: impl Fn(u32) -> Option<u32>) {
        let old = std::mem::take(&mut self.heap);
        self.heap = old
            .into_iter()
            .filter_map(|mut t| {
                t.rule_tag = (map(t.rule())? << 8) | t.tag();
                Some(t)
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_deadline_then_insertion_order() {
        let mut t = Timers::default();
        let k: Arc<str> = "k".into();
        t.set(30, 0, k.clone(), 1);
        t.set(10, 0, k.clone(), 2);
        t.set(10, 0, k.clone(), 3);
        t.set(20, 0, k, 4);
        assert_eq!(t.next_deadline(), Some(10));
        let mut fired = Vec::new();
        while let Some(x) = t.pop_due(25) {
            fired.push(x.tag());
        }
        assert_eq!(fired, [2, 3, 4]);
        assert_eq!(t.len(), 1);
        assert!(t.pop_due(29).is_none());
    }
}
