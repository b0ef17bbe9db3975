//! The raw stage: the file as written, in serde structs.
//!
//! Unknown keys are rejected (`deny_unknown_fields`) and every default is a named function,
//! so that what a missing key means is written once, here. Nothing is checked beyond types:
//! [`RawConfig::validate`](super::RawConfig::validate) (in `validate.rs`) does that.

pub use super::raw_mqtt::{Protocol, RawBroker, RawSubscription, RawUpstream};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub agent: RawAgent,
    #[serde(default)]
    pub rules: RawRules,
    #[serde(default)]
    pub source: RawBroker,
    #[serde(default)]
    pub subscriptions: Vec<RawSubscription>,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub engine: RawEngine,
    /// Lookup tables: name -> CSV or TOML file (by extension).
    #[serde(default)]
    pub tables: std::collections::BTreeMap<String, PathBuf>,
    #[serde(default)]
    pub state: RawState,
    #[serde(default)]
    pub history: super::history::RawHistory,
    #[serde(default)]
    pub journal: super::journal::RawJournal,
    #[serde(default)]
    pub event_log: super::journal::RawJournal,
    #[serde(default)]
    pub sinks: Vec<super::sinks::RawSink>,
    #[serde(default)]
    pub alarms: RawAlarms,
    /// Payload schemas by name, for subscriptions' `schema`.
    #[serde(default)]
    pub schemas: std::collections::BTreeMap<String, super::schemas::RawSchema>,
    /// The pseudonyms' secret (subscriptions' `privacy` says what is protected).
    #[serde(default)]
    pub privacy: super::privacy::RawPrivacyKey,
    #[serde(default)]
    pub audit: RawAudit,
    /// The web console and its JSON API.
    #[serde(default)]
    pub console: super::console::RawConsole,
    /// Sparkplug B host application settings.
    #[serde(default)]
    pub sparkplug: super::sparkplug::RawSparkplug,
}

/// The audit trail (always kept): its size on disk.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// Most MiB its files take; the oldest file goes first beyond it.
    #[serde(default = "default_audit_mb")]
    pub max_mb: u64,
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit { max_mb: default_audit_mb() }
    }
}

/// Entries are a few hundred bytes and come with starts, reloads and commands: 16 MiB is
/// tens of thousands of them, years of a gateway's changes.
fn default_audit_mb() -> u64 {
    16
}

/// The alarm lifecycle's commands.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlarms {
    /// Take acknowledge, snooze, disable and enable commands on `<prefix>/control/alarms` on
    /// the source broker (off by default: whoever may publish there may silence alarms).
    #[serde(default)]
    pub control_topic: bool,
}

/// Durability.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// Keep state and the outbox in sled and acknowledge input only once it is on disk.
    #[serde(default = "default_true")]
    pub durable: bool,
    /// sled's page cache, in MiB (its own default is 1 GiB, more than a gateway has).
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,
    /// Largest outbox on disk, in MiB; beyond it the oldest events are dropped (and counted).
    #[serde(default = "default_outbox_mb")]
    pub max_outbox_mb: u64,
    /// How often the whole state is written to `snapshot.json` (restored if the database
    /// becomes unreadable).
    #[serde(default = "default_snapshot_interval", with = "humantime_serde")]
    pub snapshot_interval: Duration,
    /// Most messages whose effects are written (and then acknowledged) together.
    #[serde(default = "default_batch")]
    pub max_batch: usize,
    /// How long a batch may collect messages before it is written: one flush then covers
    /// everything that arrived meanwhile. Also the latency durability adds when idle.
    #[serde(default = "default_flush_interval", with = "humantime_serde")]
    pub flush_interval: Duration,
}

impl Default for RawState {
    fn default() -> Self {
        RawState {
            durable: true,
            cache_mb: default_cache_mb(),
            max_outbox_mb: default_outbox_mb(),
            snapshot_interval: default_snapshot_interval(),
            max_batch: default_batch(),
            flush_interval: default_flush_interval(),
        }
    }
}

/// Long enough that one flush covers many messages, and that most events are acknowledged
/// upstream (and so never written) before their batch is; short next to a broker's
/// redelivery patience. Only the inputs' acks wait for it, not the events.
fn default_flush_interval() -> Duration {
    Duration::from_millis(5)
}

fn default_cache_mb() -> u64 {
    16
}
fn default_outbox_mb() -> u64 {
    64
}
fn default_snapshot_interval() -> Duration {
    Duration::from_secs(600)
}
fn default_batch() -> usize {
    512
}

/// Top-level sections; an environment variable must start with one of them to be config.
pub(super) const SECTIONS: &[&str] = &[
    "agent",
    "rules",
    "source",
    "subscriptions",
    "upstream",
    "limits",
    "engine",
    "tables",
    "state",
    "history",
    "journal",
    "event_log",
    "privacy",
    "audit",
    "console",
    "sparkplug",
];

/// How the engine treats input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEngine {
    /// Payload field with the event time; absent: arrival time.
    pub time_field: Option<String>,
    /// How late a payload-timed event may be and still be processed in order.
    #[serde(default, with = "humantime_serde")]
    pub lateness: Option<Duration>,
    #[serde(default = "default_true")]
    pub dedup: bool,
    /// Payload field identifying a message, for deduplication.
    pub id_field: Option<String>,
    /// Feed composite events back in on their topics, so rules can react to other rules.
    #[serde(default = "default_true")]
    pub chaining: bool,
    #[serde(default = "default_chain_depth")]
    pub max_chain_depth: u8,
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
}

impl Default for RawEngine {
    fn default() -> Self {
        RawEngine {
            time_field: None,
            lateness: None,
            dedup: true,
            id_field: None,
            chaining: true,
            max_chain_depth: default_chain_depth(),
            max_failures: default_max_failures(),
        }
    }
}

impl RawEngine {
    /// The engine's configuration; chained events go to `<events_prefix>/<rule>`.
    pub fn to_engine_config(&self, events_prefix: &str) -> edgewatch_engine::EngineConfig {
        edgewatch_engine::EngineConfig {
            time_field: self.time_field.clone(),
            lateness_ms: self.lateness.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0),
            dedup: self.dedup,
            id_field: self.id_field.clone(),
            chain_prefix: self.chaining.then(|| events_prefix.to_owned()),
            max_chain_depth: self.max_chain_depth,
            max_failures: self.max_failures,
            ..edgewatch_engine::EngineConfig::default()
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_chain_depth() -> u8 {
    4
}
fn default_max_failures() -> u32 {
    10
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    #[serde(default = "default_agent_id")]
    pub id: String,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Opt-in HTTP listener for `/metrics` (Prometheus) and `/healthz`, e.g. `127.0.0.1:9898`.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// Threads running the agent's tasks (MQTT in and out, the engine, the store).
    #[serde(default = "default_threads")]
    pub threads: u64,
}

impl Default for RawAgent {
    fn default() -> Self {
        RawAgent {
            id: default_agent_id(),
            state_dir: default_state_dir(),
            metrics_listen: None,
            threads: default_threads(),
        }
    }
}

fn default_threads() -> u64 {
    1
}

fn default_agent_id() -> String {
    "edgewatch".into()
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/edgewatch")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRules {
    #[serde(default = "default_rules_dir")]
    pub dir: PathBuf,
    #[serde(default = "default_max_operations")]
    pub max_operations: u64,
    /// Reload when files in the rules directory change.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// Also reload on any message to `<prefix>/control/reload` on the source broker.
    #[serde(default)]
    pub control_topic: bool,
}

impl Default for RawRules {
    fn default() -> Self {
        RawRules {
            dir: default_rules_dir(),
            max_operations: default_max_operations(),
            watch: true,
            control_topic: false,
        }
    }
}

fn default_rules_dir() -> PathBuf {
    PathBuf::from("/etc/edgewatch/rules")
}
fn default_max_operations() -> u64 {
    edgewatch_engine::Limits::default().max_operations
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    /// Deepest nesting of JSON arrays and objects in a payload.
    #[serde(default = "default_max_json_depth")]
    pub max_json_depth: usize,
    /// Longest string in a payload (JSON string or key, plain text), in bytes.
    #[serde(default = "default_max_string_bytes")]
    pub max_string_bytes: usize,
    /// Most keys (devices) a rule tracks unless it sets `max_keys` itself.
    #[serde(default = "default_max_keys_per_rule")]
    pub max_keys_per_rule: usize,
    /// Most deliveries of a message that the agent never got through (it crashed while
    /// processing it) before it is quarantined: dead-lettered and acknowledged unprocessed.
    #[serde(default = "default_max_deliveries")]
    pub max_deliveries: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_payload_bytes: default_max_payload(),
            queue_capacity: default_queue(),
            max_json_depth: default_max_json_depth(),
            max_string_bytes: default_max_string_bytes(),
            max_keys_per_rule: default_max_keys_per_rule(),
            max_deliveries: default_max_deliveries(),
        }
    }
}

fn default_max_deliveries() -> u32 {
    3
}

fn default_max_keys_per_rule() -> usize {
    edgewatch_engine::EngineConfig::default().max_keys_per_rule
}

fn default_max_json_depth() -> usize {
    crate::decode::DecodeLimits::default().max_json_depth
}
fn default_max_string_bytes() -> usize {
    crate::decode::DecodeLimits::default().max_string_bytes
}

fn default_max_payload() -> usize {
    64 * 1024
}
fn default_queue() -> usize {
    1024
}
