//! The batch the engine loop is filling: the effects of messages not yet on disk (state
//! changes, outbox entries) and the acknowledgements that must wait for them.
//!
//! Group commit: a batch is handed on when nothing more is queued and it is
//! `state.flush_interval` old, or when it holds `state.max_batch` messages. Under load one
//! flush covers many messages; idle, a message waits at most the interval. Plain data with
//! the time passed in, so the policy is tested without a runtime.

use crate::mqtt::AckToken;
use crate::store::Batch;
use edgewatch_engine::{FastSet, Touched};
use std::time::Duration;
use tokio::time::Instant;

/// Effects waiting for the next commit.
#[derive(Debug)]
pub(super) struct Pending {
    /// State changes and outbox entries, written atomically.
    pub batch: Batch,
    /// Acknowledgements of the messages behind `batch`, in the order they were received.
    pub acks: Vec<AckToken>,
    /// Arrival of each message in the batch, for the commit latency histogram.
    pub arrived: Vec<Instant>,
    /// Engine state touched since the last commit: exported once per commit, not per message.
    pub touched: FastSet<Touched>,
    /// Outbox entries queued so far (ever): a change says the upstream side has more to send.
    pub queued: u64,
    /// Inputs in the batch (messages, or a reason to commit soon).
    inputs: usize,
    /// When the first input of the batch came: the batch is due `flush_interval` after it.
    started: Instant,
}

impl Pending {
    /// An empty batch.
    pub fn new(now: Instant) -> Pending {
        Pending {
            batch: Batch::default(),
            acks: Vec::new(),
            arrived: Vec::new(),
            touched: FastSet::default(),
            queued: 0,
            inputs: 0,
            started: now,
        }
    }

    /// A received message joins the batch (`arrived`: when it came off the socket; none for
    /// one with nothing to process whose ack must still keep its place in line).
    pub fn message(&mut self, now: Instant, arrived: Option<Instant>, ack: Option<AckToken>) {
        if self.inputs == 0 {
            self.started = now;
        }
        self.inputs += 1;
        self.arrived.extend(arrived);
        self.acks.extend(ack);
    }

    /// Something must be committed even with no message in the batch (a status document,
    /// acknowledged events to delete): it goes with the batch now due, or the next one.
    pub fn nudge(&mut self) {
        self.inputs = self.inputs.max(1);
    }

    /// Nothing waits to be committed.
    pub fn is_empty(&self) -> bool {
        self.inputs == 0 && self.batch.is_empty()
    }

    /// When the batch must be committed if nothing else arrives.
    pub fn due(&self, flush_interval: Duration) -> Instant {
        self.started + flush_interval
    }

    /// The batch holds as many messages as one commit may.
    pub fn is_full(&self, max_batch: usize) -> bool {
        self.inputs >= max_batch
    }

    /// Takes the batch's acknowledgements and arrivals for a commit; the batch starts over.
    /// (The state and outbox parts are taken by whoever writes them.)
    pub fn take_acks(&mut self) -> (Vec<AckToken>, Vec<Instant>) {
        self.inputs = 0;
        (std::mem::take(&mut self.acks), std::mem::take(&mut self.arrived))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(5);

    #[test]
    fn a_batch_is_due_an_interval_after_its_first_message() {
        let t0 = Instant::now();
        let mut p = Pending::new(t0);
        assert!(p.is_empty());
        p.message(t0 + Duration::from_millis(3), Some(t0), None);
        p.message(t0 + Duration::from_millis(4), Some(t0), None);
        assert!(!p.is_empty());
        // The second message does not push the deadline out: idle latency stays bounded.
        assert_eq!(p.due(INTERVAL), t0 + Duration::from_millis(8));
        let (acks, arrived) = p.take_acks();
        assert!(acks.is_empty());
        assert_eq!(arrived.len(), 2);
        assert!(p.is_empty());
        p.message(t0 + Duration::from_millis(20), None, None);
        assert_eq!(p.due(INTERVAL), t0 + Duration::from_millis(25), "a new batch, a new deadline");
        assert!(p.arrived.is_empty(), "an ack-only message is not timed");
    }

    #[test]
    fn a_batch_is_full_at_max_batch_messages() {
        let t0 = Instant::now();
        let mut p = Pending::new(t0);
        for _ in 0..3 {
            assert!(!p.is_full(3));
            p.message(t0, Some(t0), None);
        }
        assert!(p.is_full(3));
        p.take_acks();
        assert!(!p.is_full(3));
    }

    #[test]
    fn a_nudge_commits_with_no_message_and_keeps_the_deadline() {
        let t0 = Instant::now();
        let mut p = Pending::new(t0);
        p.nudge();
        assert!(!p.is_empty());
        assert_eq!(p.due(INTERVAL), t0 + INTERVAL);
        p.message(t0 + Duration::from_millis(2), None, None);
        assert_eq!(p.due(INTERVAL), t0 + INTERVAL, "the batch already had an input");
        p.take_acks();
        assert!(p.is_empty());
    }
}
