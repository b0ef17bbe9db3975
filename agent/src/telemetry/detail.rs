//! What the agent keeps about itself beyond the plain counters of [`super::Stats`]: per
//! connection, per rule, per subscription, the last hour, latency histograms and the recent
//! dead letters, for `/metrics`, `/healthz` and the console.

use prometheus_client::metrics::histogram::Histogram;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// Histogram buckets in seconds, 50 µs to 10 s.
fn latency_buckets() -> Histogram {
    Histogram::new([
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
    ])
}

/// Per-connection state (`source`, `upstream`), for metrics and `/healthz`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub connects: AtomicU64,
    /// Attempts that failed plus connections that dropped: every `Disconnected`.
    pub failures: AtomicU64,
    /// Connections that were up and went down (the first failure of an outage).
    pub disconnects: AtomicU64,
    /// The latest failure, as the client library said it (TLS, refused, unreachable).
    pub last_error: Mutex<Option<String>>,
}

/// Counts per rule, by name.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RuleCounts {
    pub events: u64,
    /// Events per minute over the last hour, and the last one's time (the console).
    pub recent: LastHour,
    pub faults: u64,
    pub disabled: bool,
    /// Messages whose `e.value` the rule read and found `()`: it cannot fire on them.
    pub value_missing: u64,
}

/// History: readings not kept, roll-ups written, the budget at work.
#[derive(Debug, Default)]
pub struct HistoryCounts {
    /// Readings not folded, by (who asked: subscription filter or rule, why).
    pub skipped: Mutex<BTreeMap<(Arc<str>, &'static str), u64>>,
    /// Closed roll-ups written to disk.
    pub written: AtomicU64,
    /// Closed roll-ups not written: state kept in memory only, or the disk refused them.
    pub dropped: AtomicU64,
    /// Bytes of the oldest roll-ups deleted to stay within `history.max_mb`.
    pub evicted_bytes: AtomicU64,
    /// Bytes of history on disk.
    pub bytes: AtomicU64,
}

/// How many of something happened in the last hour, by minute, and when the last did: 60
/// counters instead of the times themselves. Wall-clock ms in; a clock that steps back
/// counts into the current minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastHour {
    /// The minute (since the epoch) of the newest count.
    minute: i64,
    counts: [u32; 60],
    pub last: Option<i64>,
}

impl Default for LastHour {
    fn default() -> Self {
        LastHour { minute: i64::MIN, counts: [0; 60], last: None }
    }
}

impl LastHour {
    /// `n` more at `now_ms`.
    pub fn add(&mut self, now_ms: i64, n: u64) {
        let m = now_ms.div_euclid(60_000);
        if m > self.minute {
            // Minutes since the newest count start at zero (all of them after an hour).
            let gap = m.saturating_sub(self.minute).min(60);
            for i in 0..gap {
                self.counts[(m - i).rem_euclid(60) as usize] = 0;
            }
            self.minute = m;
        }
        let slot = &mut self.counts[self.minute.rem_euclid(60) as usize];
        *slot = slot.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        self.last = Some(self.last.map_or(now_ms, |l| l.max(now_ms)));
    }

    /// How many in the hour up to `now_ms`.
    pub fn total(&self, now_ms: i64) -> u64 {
        let m = now_ms.div_euclid(60_000);
        let oldest = m - 59;
        (oldest.max(self.minute.saturating_sub(59))..=self.minute)
            .map(|i| u64::from(self.counts[i.rem_euclid(60) as usize]))
            .sum()
    }
}

/// Dead letters kept for the console (`/api/v1/deadletters`): the newest, each a few
/// hundred bytes (its payload prefix is bounded).
pub const RECENT_DEAD_LETTERS: usize = 100;

/// What the metrics endpoint reads besides the plain counters. Updated off the hot path:
/// per batch of engine outputs, or once a second.
#[derive(Debug)]
pub struct Detail {
    /// Subscription filters, in configuration order; `received_by_subscription` follows it.
    pub subscriptions: Vec<String>,
    pub received_by_subscription: Box<[AtomicU64]>,
    pub decode_errors_by_reason: Mutex<BTreeMap<&'static str, u64>>,
    /// Payloads their subscription's schema refused, by subscription filter and schema
    /// version (`""`: a schema without versions).
    pub schema_rejected: Mutex<BTreeMap<(String, String), u64>>,
    pub by_rule: Mutex<HashMap<Arc<str>, RuleCounts>>,
    /// The newest dead letters as published, oldest first (at most [`RECENT_DEAD_LETTERS`]).
    pub recent_dead_letters: Mutex<std::collections::VecDeque<Arc<str>>>,
    /// Keys (devices) tracked per rule, refreshed about once a second.
    pub tracked_keys: Mutex<Vec<(Arc<str>, u64)>>,
    /// Engine time per message (all rules it reaches).
    pub engine_seconds: Histogram,
    /// From a message's arrival to its effects being durable (state written, events in the
    /// outbox): when it is acknowledged to the sensor broker.
    pub commit_latency_seconds: Histogram,
    /// One disk flush.
    pub flush_seconds: Histogram,
    /// Messages waiting between the source connection and the engine.
    pub queue_depth: AtomicU64,
    pub rules_loaded: AtomicU64,
    /// `[source, upstream]`.
    pub connections: [ConnectionStats; 2],
    pub history: HistoryCounts,
    /// The input journal's counts, shared with its thread.
    pub journal: Arc<crate::journal::JournalCounts>,
    /// The event log's counts, shared with its thread.
    pub event_log: Arc<crate::journal::JournalCounts>,
    pub started: std::time::Instant,
}

impl Default for Detail {
    fn default() -> Self {
        Detail::new(Vec::new())
    }
}

impl Detail {
    pub fn new(subscriptions: Vec<String>) -> Self {
        let received_by_subscription = subscriptions.iter().map(|_| AtomicU64::new(0)).collect();
        Detail {
            subscriptions,
            received_by_subscription,
            decode_errors_by_reason: Mutex::default(),
            schema_rejected: Mutex::default(),
            by_rule: Mutex::default(),
            recent_dead_letters: Mutex::default(),
            tracked_keys: Mutex::default(),
            engine_seconds: latency_buckets(),
            commit_latency_seconds: latency_buckets(),
            flush_seconds: latency_buckets(),
            queue_depth: AtomicU64::new(0),
            rules_loaded: AtomicU64::new(0),
            connections: Default::default(),
            history: HistoryCounts::default(),
            journal: Arc::default(),
            event_log: Arc::default(),
            started: std::time::Instant::now(),
        }
    }

    /// The state of connection `name` (`source` or `upstream`).
    pub fn connection(&self, name: &str) -> &ConnectionStats {
        &self.connections[usize::from(name != "source")]
    }
}
