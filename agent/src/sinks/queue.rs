//! One sink's queue of actions, as bookkeeping with no I/O: bounded in bytes (the oldest go
//! first, counted), delivered in order, and only once committed (durably: once the batch
//! that produced them is on disk, so that the delivery's delete never races their insert).

use std::collections::VecDeque;

/// Bytes counted for an action besides its body (ids, names, bookkeeping).
pub const ACTION_OVERHEAD: u64 = 128;

/// An action waiting for its sink.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    /// The Idempotency-Key: [`crate::delivery::action_id`] of event, sink and send.
    pub id: String,
    /// The composite event's id, rule, key and time (ms).
    pub event: String,
    pub rule: String,
    pub key: String,
    pub time: i64,
    /// The body as it will be sent (JSON text).
    pub body: String,
    /// mqtt sinks: the topic, rendered when the action was made (empty for http).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub topic: String,
    /// When the action was made (wall clock, ms): its latency counts from here.
    #[serde(default)]
    pub made: i64,
    /// Attempts so far, and when the first was made (ms; 0: none yet).
    pub attempts: u32,
    pub first_attempt: i64,
}

impl Pending {
    pub fn size(&self) -> u64 {
        (self.id.len() + self.event.len() + self.rule.len() + self.key.len() + self.body.len() + self.topic.len())
            as u64
            + ACTION_OVERHEAD
    }
}

/// A sink's queue.
#[derive(Debug)]
pub struct SinkQueue {
    next_seq: u64,
    entries: VecDeque<(u64, Pending)>,
    bytes: u64,
    max_bytes: u64,
    /// Entries up to this sequence number are committed and may be delivered.
    committed: u64,
    /// Dropped for space since the last report.
    dropped: u64,
}

impl SinkQueue {
    pub fn new(max_bytes: u64) -> SinkQueue {
        SinkQueue { next_seq: 1, entries: VecDeque::new(), bytes: 0, max_bytes, committed: 0, dropped: 0 }
    }

    /// An entry an earlier run left on disk: committed already.
    pub fn recovered(&mut self, seq: u64, entry: Pending) {
        self.bytes += entry.size();
        self.next_seq = self.next_seq.max(seq + 1);
        self.committed = self.committed.max(seq);
        self.entries.push_back((seq, entry));
    }

    /// Adds an action; returns its sequence number and those dropped to make room (oldest
    /// first: their deletes go in the same batch).
    pub fn push(&mut self, entry: Pending) -> (u64, Vec<u64>) {
        let size = entry.size();
        let mut dropped = Vec::new();
        while self.bytes + size > self.max_bytes {
            let Some((seq, old)) = self.entries.pop_front() else { break };
            self.bytes -= old.size();
            self.dropped += 1;
            dropped.push(seq);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += size;
        self.entries.push_back((seq, entry));
        (seq, dropped)
    }

    /// The sequence number of the last action pushed (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Everything pushed up to `seq` is committed (its batch is on disk, or there is no disk).
    pub fn commit(&mut self, seq: u64) {
        self.committed = self.committed.max(seq);
    }

    /// Everything pushed so far is committed.
    pub fn commit_all(&mut self) {
        self.commit(self.last_seq());
    }

    /// The next action to deliver, if it is committed.
    pub fn front(&self) -> Option<&(u64, Pending)> {
        self.entries.front().filter(|(seq, _)| *seq <= self.committed)
    }

    /// Records an attempt at action `seq` at `now`, if it is still the front one (it may have
    /// been dropped for space meanwhile); its attempts so far and when the first was made.
    pub fn attempted(&mut self, seq: u64, now: i64) -> Option<(u32, i64)> {
        let (s, e) = self.entries.front_mut()?;
        if *s != seq {
            return None;
        }
        if e.attempts == 0 {
            e.first_attempt = now;
        }
        e.attempts = e.attempts.saturating_add(1);
        Some((e.attempts, e.first_attempt))
    }

    /// Action `seq` is done with (delivered, or given up): removed if it is still the front
    /// one. `false`: dropped for space meanwhile (its delete is in a batch already).
    pub fn done(&mut self, seq: u64) -> bool {
        match self.entries.front() {
            Some((s, _)) if *s == seq => {
                if let Some((_, e)) = self.entries.pop_front() {
                    self.bytes -= e.size();
                }
                true
            }
            _ => false,
        }
    }

    /// (actions, bytes) waiting.
    pub fn depth(&self) -> (usize, u64) {
        (self.entries.len(), self.bytes)
    }

    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(i: u32, body: usize) -> Pending {
        Pending {
            id: format!("id-{i}"),
            event: format!("ev-{i}"),
            rule: "hot".into(),
            key: "t-1".into(),
            time: i64::from(i),
            body: "x".repeat(body),
            topic: String::new(),
            made: 0,
            attempts: 0,
            first_attempt: 0,
        }
    }

    #[test]
    fn in_order_only_once_committed_and_bounded_oldest_first() {
        let mut q = SinkQueue::new(4 * (ACTION_OVERHEAD + 1000));
        let (s1, d) = q.push(action(1, 980));
        assert!(d.is_empty());
        assert_eq!(q.front(), None, "not committed yet");
        q.commit_all();
        assert_eq!(q.front().map(|f| f.0), Some(s1));
        for i in 2..=4 {
            q.push(action(i, 980));
        }
        assert_eq!(q.front().map(|f| f.0), Some(s1), "order kept; 2..4 not committed yet");
        // A fifth does not fit: the oldest goes, counted.
        let (_, dropped) = q.push(action(5, 980));
        assert_eq!(dropped, vec![s1]);
        assert_eq!(q.take_dropped(), 1);
        assert_eq!(q.depth().0, 4);
        q.commit(4);
        assert_eq!(q.attempted(2, 100), Some((1, 100)));
        assert_eq!(q.attempted(2, 200), Some((2, 100)));
        let front = &q.front().expect("front").1;
        assert_eq!((front.attempts, front.first_attempt, front.id.as_str()), (2, 100, "id-2"));
        assert!(q.done(2));
        assert!(!q.done(2), "only the front one");
        // 5 was pushed after the commit mark: not deliverable until its batch is written.
        assert!(q.done(3) && q.done(4));
        assert_eq!(q.front(), None);
        q.commit(5);
        assert_eq!(q.front().map(|f| f.0), Some(5));
        // Dropped for space while being delivered: its attempt and its end change nothing.
        let mut small = SinkQueue::new(ACTION_OVERHEAD + 1000);
        let (a, _) = small.push(action(1, 900));
        small.commit_all();
        small.push(action(2, 900));
        assert_eq!(small.attempted(a, 5), None);
        assert!(!small.done(a));
        // A restart: what was on disk is committed at once, and numbering goes on after it.
        let mut r = SinkQueue::new(1 << 20);
        r.recovered(7, action(7, 10));
        assert_eq!(r.front().map(|f| f.0), Some(7));
        assert_eq!(r.push(action(8, 10)).0, 8);
    }
}
