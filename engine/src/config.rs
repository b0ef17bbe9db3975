//! [`EngineConfig`]: how the engine treats its input (event time, lateness, deduplication,
//! chaining, failure and key limits). Plain data; the agent builds it from its own config.

/// How the engine treats its input. The defaults suit messages timed by their arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Payload field holding the event time (integer ms, float seconds, or RFC 3339 text).
    /// Absent, or missing from a payload: the arrival time.
    pub time_field: Option<String>,
    /// How late (in event time) a payload-timed event may arrive and still be processed in
    /// order. Events are held this long; later ones are returned as late.
    pub lateness_ms: i64,
    /// Drop duplicates (same `device` and `seq`, or the same `id_field`).
    pub dedup: bool,
    /// Payload field that identifies a message, for deduplication.
    pub id_field: Option<String>,
    /// Composite events re-enter as events on `<chain_prefix>/<rule>`; `None` disables it.
    pub chain_prefix: Option<String>,
    /// How many times an event may be re-fed (a loop of rules stops here).
    pub max_chain_depth: u8,
    /// Consecutive failures after which a rule is disabled until reloaded.
    pub max_failures: u32,
    /// Most keys a rule tracks when it does not say (`max_keys`), so every rule is bounded.
    pub max_keys_per_rule: usize,
    /// A rule that refused or evicted keys is reported in [`Outputs::key_limits`](crate::Outputs::key_limits) at most
    /// once per this many milliseconds of processing time (the first time at once).
    pub key_report_interval_ms: i64,
    /// What history is kept, and how (see [`crate::history`]).
    pub history: crate::history::HistoryConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            time_field: None,
            lateness_ms: 0,
            dedup: true,
            id_field: None,
            chain_prefix: None,
            max_chain_depth: 4,
            max_failures: 10,
            max_keys_per_rule: 100_000,
            key_report_interval_ms: 60_000,
            history: crate::history::HistoryConfig::default(),
        }
    }
}
