//! Counters the agent keeps about itself, and the log line that goes with each.
//!
//! Each event owns both its counter and its log line, so the two never drift (the habit
//! from Vector's `internal_events`). Counters are plain atomics: cheap on the hot path,
//! readable from any task for the demo's summary and, later, for a metrics exporter.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters since start.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages received on subscribed topics.
    pub received: AtomicU64,
    /// Messages that decoded and went through the engine.
    pub processed: AtomicU64,
    /// Payloads that could not be decoded (any reason, including too large).
    pub decode_errors: AtomicU64,
    /// Of those, payloads over the size limit.
    pub oversized: AtomicU64,
    /// Messages no rule listens to.
    pub unmatched: AtomicU64,
    /// Composite events produced.
    pub events: AtomicU64,
    /// Rule calls that failed.
    pub rule_faults: AtomicU64,
    /// Composite events handed to the upstream connection.
    pub published: AtomicU64,
    /// Publishes acknowledged by the upstream broker (QoS 1).
    pub acked: AtomicU64,
    /// Dead letters published.
    pub dead_letters: AtomicU64,
    /// Connection failures, both brokers.
    pub disconnects: AtomicU64,
    /// Rule files (and lookup tables) that failed to load.
    pub rule_file_errors: AtomicU64,
    /// Duplicate messages dropped.
    pub duplicates: AtomicU64,
    /// Messages older than the allowed lateness, dead-lettered.
    pub late: AtomicU64,
    /// Batches written to disk.
    pub flushes: AtomicU64,
    /// Time spent writing them, in microseconds (sum), and the longest.
    pub flush_micros: AtomicU64,
    pub flush_max_micros: AtomicU64,
    /// Reloads that changed the rules.
    pub reloads: AtomicU64,
    /// Rule files (or tables) that failed at a reload.
    pub reload_errors: AtomicU64,
    /// Events dropped from a full outbox.
    pub outbox_dropped: AtomicU64,
    /// New keys rules refused at their key limit (or too long), and old keys they evicted
    /// to make room.
    pub keys_refused: AtomicU64,
    pub keys_evicted: AtomicU64,
    /// Recent flush durations (µs), for percentiles; bounded.
    pub flush_samples: std::sync::Mutex<Vec<u32>>,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub received: u64,
    pub processed: u64,
    pub decode_errors: u64,
    pub oversized: u64,
    pub unmatched: u64,
    pub events: u64,
    pub rule_faults: u64,
    pub published: u64,
    pub acked: u64,
    pub dead_letters: u64,
    pub disconnects: u64,
    pub rule_file_errors: u64,
    pub duplicates: u64,
    pub late: u64,
}

impl Stats {
    /// Reads every counter.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            received: self.received.load(Relaxed),
            processed: self.processed.load(Relaxed),
            decode_errors: self.decode_errors.load(Relaxed),
            oversized: self.oversized.load(Relaxed),
            unmatched: self.unmatched.load(Relaxed),
            events: self.events.load(Relaxed),
            rule_faults: self.rule_faults.load(Relaxed),
            published: self.published.load(Relaxed),
            acked: self.acked.load(Relaxed),
            dead_letters: self.dead_letters.load(Relaxed),
            disconnects: self.disconnects.load(Relaxed),
            rule_file_errors: self.rule_file_errors.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            late: self.late.load(Relaxed),
        }
    }

    pub(crate) fn decode_failed(&self, topic: &str, error: &crate::decode::DecodeError) {
        self.decode_errors.fetch_add(1, Relaxed);
        if matches!(error, crate::decode::DecodeError::TooLarge { .. }) {
            self.oversized.fetch_add(1, Relaxed);
        }
        tracing::warn!(topic, reason = error.reason(), %error, "Payload could not be decoded; dead-lettered.");
    }

    pub(crate) fn rule_failed(&self, fault: &edgewatch_engine::RuleFault) {
        self.rule_faults.fetch_add(1, Relaxed);
        tracing::warn!(rule = %fault.rule, location = %fault.location, error = %fault.message, "Rule failed on an event.");
    }

    pub(crate) fn record_flush(&self, took: std::time::Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.flushes.fetch_add(1, Relaxed);
        self.flush_micros.fetch_add(us, Relaxed);
        self.flush_max_micros.fetch_max(us, Relaxed);
        if let Ok(mut s) = self.flush_samples.lock() {
            if s.len() < 100_000 {
                s.push(u32::try_from(us).unwrap_or(u32::MAX));
            }
        }
    }

    pub(crate) fn keys_limited(&self, refused: usize, evicted: usize) {
        if refused > 0 {
            self.keys_refused.fetch_add(refused as u64, Relaxed);
        }
        if evicted > 0 {
            self.keys_evicted.fetch_add(evicted as u64, Relaxed);
        }
    }

    /// Logs a rule's key-limit report; returns the data of the `key_limit` agent event.
    pub(crate) fn key_limit(&self, report: &edgewatch_engine::KeyLimitReport) -> serde_json::Value {
        tracing::warn!(
            rule = %report.rule,
            max_keys = report.max_keys,
            on_full = report.on_full.as_str(),
            refused = report.refused,
            evicted = report.evicted,
            "Rule at its key limit."
        );
        serde_json::json!({
            "rule": &*report.rule,
            "max_keys": report.max_keys,
            "on_full": report.on_full.as_str(),
            "refused": report.refused,
            "evicted": report.evicted,
            "since": report.since.to_rfc3339(),
            "message": report.to_string(),
        })
    }

    pub(crate) fn unmatched(&self, topic: &str) {
        self.unmatched.fetch_add(1, Relaxed);
        tracing::debug!(topic, "No rule listens to this topic.");
    }

    pub(crate) fn disconnected(&self, connection: &str, error: &str, retry_in: std::time::Duration) {
        self.disconnects.fetch_add(1, Relaxed);
        tracing::warn!(connection, error, retry_in = ?retry_in, "MQTT connection failed; will retry.");
    }
}

impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "messages in: {}, processed: {}, decode errors: {} ({} oversized), unmatched: {}, \
             duplicates: {}, late: {}, events out: {}, published: {}, acked: {}, rule faults: {}, dead letters: {}, \
             disconnects: {}",
            self.received,
            self.processed,
            self.decode_errors,
            self.oversized,
            self.unmatched,
            self.duplicates,
            self.late,
            self.events,
            self.published,
            self.acked,
            self.rule_faults,
            self.dead_letters,
            self.disconnects
        )
    }
}
