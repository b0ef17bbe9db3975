//! Counters the agent keeps about itself, and the log line that goes with each.
//!
//! Each event owns both its counter and its log line, so the two never drift (the habit
//! from Vector's `internal_events`). Counters are plain atomics: cheap on the hot path,
//! readable from any task: the summary at a stop, `/metrics` and the console. What goes
//! beyond plain counters (per connection, rule and subscription, histograms) is in `detail`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

mod detail;

pub use detail::{ConnectionStats, Detail, HistoryCounts, LastHour, RECENT_DEAD_LETTERS, RuleCounts};

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
    /// Actions queued for sinks (`notify`, `act`).
    pub actions: AtomicU64,
    /// Rule calls that failed.
    pub rule_faults: AtomicU64,
    /// Composite events handed to the upstream connection.
    pub published: AtomicU64,
    /// Publishes acknowledged by the upstream broker (QoS 1).
    pub acked: AtomicU64,
    /// Dead letters published.
    pub dead_letters: AtomicU64,
    /// Messages quarantined unprocessed: the agent crashed on each of their last deliveries.
    pub quarantined: AtomicU64,
    /// Payload fields protected by their subscription's `privacy` (dropped, masked,
    /// pseudonymised as declared), and those that could not be protected as declared (a mask
    /// of a number on a text) and were dropped instead.
    pub privacy_protected: AtomicU64,
    pub privacy_dropped_instead: AtomicU64,
    /// Audit entries that could not be written (a full or failing disk).
    pub audit_errors: AtomicU64,
    /// Sparkplug B: messages whose `seq` was not the one after their node's previous message
    /// (lost, repeated or reordered); messages ignored as the specification asks (an old
    /// session's NDEATH, other applications' commands and STATE); rebirth requests sent.
    pub sparkplug_seq_gaps: AtomicU64,
    pub sparkplug_ignored: AtomicU64,
    pub sparkplug_rebirths: AtomicU64,
    /// Connections that were up and went down, both brokers: one per outage.
    pub disconnects: AtomicU64,
    /// Connection attempts that failed, both brokers (the retries during an outage, and
    /// those before the first connection).
    pub failed_attempts: AtomicU64,
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
    /// Events written to disk: not acknowledged upstream by the time their batch was written.
    pub outbox_written: AtomicU64,
    /// New keys rules refused at their key limit (or too long), and old keys they evicted
    /// to make room.
    pub keys_refused: AtomicU64,
    pub keys_evicted: AtomicU64,
    /// Recent flush durations (µs), for percentiles; bounded.
    pub flush_samples: std::sync::Mutex<Vec<u32>>,
    /// Labelled counters, gauges and histograms for `/metrics`.
    pub detail: Detail,
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
    pub quarantined: u64,
    pub disconnects: u64,
    pub failed_attempts: u64,
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
            quarantined: self.quarantined.load(Relaxed),
            disconnects: self.disconnects.load(Relaxed),
            failed_attempts: self.failed_attempts.load(Relaxed),
            rule_file_errors: self.rule_file_errors.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            late: self.late.load(Relaxed),
        }
    }

    /// Counters for an agent with these subscription filters.
    pub fn new(subscriptions: Vec<String>) -> Self {
        Stats { detail: Detail::new(subscriptions), ..Stats::default() }
    }

    /// A payload its subscription's schema refused (then dead-lettered as any undecodable one).
    pub(crate) fn schema_rejected(&self, subscription: &str, version: &str) {
        if let Ok(mut m) = self.detail.schema_rejected.lock() {
            *m.entry((subscription.to_owned(), version.to_owned())).or_default() += 1;
        }
    }

    pub(crate) fn decode_failed(&self, topic: &str, error: &crate::decode::DecodeError) {
        self.decode_errors.fetch_add(1, Relaxed);
        if let Ok(mut m) = self.detail.decode_errors_by_reason.lock() {
            *m.entry(error.reason()).or_default() += 1;
        }
        if matches!(error, crate::decode::DecodeError::TooLarge { .. }) {
            self.oversized.fetch_add(1, Relaxed);
        }
        tracing::warn!(topic, reason = error.reason(), %error, "Payload could not be decoded; dead-lettered.");
    }

    pub(crate) fn rule_failed(&self, fault: &edgewatch_engine::RuleFault) {
        self.rule_faults.fetch_add(1, Relaxed);
        if let Ok(mut m) = self.detail.by_rule.lock() {
            let c = m.entry(fault.rule.clone()).or_default();
            c.faults += 1;
            c.disabled |= fault.disabled;
        }
        tracing::warn!(rule = %fault.rule, location = %fault.location, error = %fault.message, "Rule failed on an event.");
    }

    /// `rule` read `e.value` of a message on `topic` that has none. Counted every time,
    /// logged the first time for the rule: a rule that never fires then says why.
    /// Counts a message whose `e.value` `rule` read and found missing; `true` the first time
    /// for that rule.
    pub(crate) fn value_missing(&self, rule: &Arc<str>, topic: &str) -> bool {
        let first = match self.detail.by_rule.lock() {
            Ok(mut m) => {
                let c = m.entry(rule.clone()).or_default();
                c.value_missing += 1;
                c.value_missing == 1
            }
            Err(_) => false,
        };
        if first {
            tracing::warn!(
                rule = %rule,
                topic,
                "Rule read e.value of a message that has none; counted in edgewatch_rule_value_missing_total, logged once per rule."
            );
        }
        first
    }

    /// Counts readings that were not folded into history, logging the first of each
    /// (source, reason): a misnamed field then says so once, not at every message.
    pub(crate) fn history_skipped(&self, skipped: &[(Arc<str>, edgewatch_engine::history::Skip)]) {
        let Ok(mut m) = self.detail.history.skipped.lock() else { return };
        for (source, why) in skipped {
            let n = m.entry((source.clone(), why.as_str())).or_default();
            *n += 1;
            if *n == 1 {
                tracing::warn!(
                    source = %source,
                    reason = why.as_str(),
                    "Reading not kept in history; counted in edgewatch_history_skipped_total, logged once."
                );
            }
        }
    }

    /// Counts what the history log did with a batch's closed roll-ups; logs a failure and
    /// the first eviction for room (the budget then keeps evicting, counted).
    pub(crate) fn history_appended(
        &self,
        closed: usize,
        result: Result<crate::history::Appended, crate::history::HistoryError>,
        bytes: Option<u64>,
    ) {
        let h = &self.detail.history;
        match result {
            Ok(a) => {
                h.written.fetch_add(a.records, Relaxed);
                h.dropped.fetch_add(a.too_old + a.out_of_range + a.dropped, Relaxed);
                if a.evicted.bytes > 0 && h.evicted_bytes.fetch_add(a.evicted.bytes, Relaxed) == 0 {
                    tracing::warn!(
                        files = a.evicted.files,
                        bytes = a.evicted.bytes,
                        "History reached history.max_mb: the oldest roll-ups go first from now on (counted in edgewatch_history_evicted_bytes_total)."
                    );
                }
            }
            Err(error) => {
                h.dropped.fetch_add(closed as u64, Relaxed);
                tracing::error!(%error, closed, "History not written; processing goes on without these roll-ups.");
            }
        }
        if let Some(b) = bytes {
            h.bytes.store(b, Relaxed);
        }
    }

    pub(crate) fn record_flush(&self, took: std::time::Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.flushes.fetch_add(1, Relaxed);
        self.flush_micros.fetch_add(us, Relaxed);
        self.flush_max_micros.fetch_max(us, Relaxed);
        self.detail.flush_seconds.observe(took.as_secs_f64());
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

    pub(crate) fn connected(&self, connection: &str) {
        let c = self.detail.connection(connection);
        c.connects.fetch_add(1, Relaxed);
    }

    /// The connection failed: a disconnect if it `was_up`, else a failed attempt.
    pub(crate) fn disconnected(&self, connection: &str, error: &str, retry_in: std::time::Duration, was_up: bool) {
        let c = self.detail.connection(connection);
        c.failures.fetch_add(1, Relaxed);
        if was_up {
            self.disconnects.fetch_add(1, Relaxed);
            c.disconnects.fetch_add(1, Relaxed);
        } else {
            self.failed_attempts.fetch_add(1, Relaxed);
        }
        if let Ok(mut last) = c.last_error.lock() {
            *last = Some(error.to_owned());
        }
        if was_up {
            tracing::warn!(connection, error, retry_in = ?retry_in, "MQTT connection lost; will reconnect.");
        } else {
            tracing::warn!(connection, error, retry_in = ?retry_in, "MQTT connection attempt failed; will retry.");
        }
    }
}

impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "messages in: {}, processed: {}, decode errors: {} ({} oversized), unmatched: {}, \
             duplicates: {}, late: {}, events out: {}, published: {}, acked: {}, rule faults: {}, dead letters: {}, \
             disconnects: {}, failed connection attempts: {}",
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
            self.disconnects,
            self.failed_attempts
        )
    }
}

#[cfg(test)]
mod tests {
    use super::LastHour;

    #[test]
    fn the_last_hour_counts_by_minute_and_forgets_what_is_older() {
        const MIN: i64 = 60_000;
        let t0 = 1_764_928_800_000;
        let mut h = LastHour::default();
        assert_eq!((h.total(t0), h.last), (0, None));
        h.add(t0, 2);
        h.add(t0 + 30 * MIN, 3);
        assert_eq!(h.total(t0 + 30 * MIN), 5);
        assert_eq!(h.total(t0 + 59 * MIN), 5);
        assert_eq!(h.total(t0 + 60 * MIN), 3, "the first minute is over an hour old");
        assert_eq!(h.total(t0 + 90 * MIN), 0);
        // A clock that steps back counts into the newest minute; the last time stays the newest.
        h.add(t0 + 10 * MIN, 1);
        assert_eq!((h.total(t0 + 30 * MIN), h.last), (6, Some(t0 + 30 * MIN)));
        // After a long quiet, the old minutes are cleared as the new ones start.
        h.add(t0 + 200 * MIN, 4);
        assert_eq!(h.total(t0 + 200 * MIN), 4);
        h.add(t0 + 230 * MIN, u64::MAX);
        assert_eq!(h.total(t0 + 230 * MIN), 4 + u64::from(u32::MAX), "saturates");
    }
}
