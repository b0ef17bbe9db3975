//! Configuration: defaults, then the TOML file, then `EDGEWATCH_*` environment variables.
//!
//! Two stages, as in ripgrep and Vector: [`RawConfig`] mirrors the file (serde, unknown keys
//! rejected, defaults named), then [`RawConfig::validate`] turns it into a [`Config`] whose
//! every field is already checked. Every error names the file (or variable) and the key path.
//!
//! Environment variables name a key path with `__` between levels:
//! `EDGEWATCH_SOURCE__URL=mqtt://10.0.0.2:1883`, `EDGEWATCH_AGENT__ID=gw-7`. A value is read
//! as TOML when it parses (`1`, `true`, `["a"]`) and as a string otherwise. Variables whose
//! first level is not a config section (`EDGEWATCH_LOG`, ...) are not config and are ignored.

use crate::decode::Format;
pub use crate::emit::TopicTemplate;
use edgewatch_engine::TopicPattern;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Prefix of environment variables that override the file.
pub const ENV_PREFIX: &str = "EDGEWATCH_";

/// A configuration that cannot be used. The agent exits with code 2 on any of these.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the configuration: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{origin}: `{path}`: {message}")]
    Invalid { origin: String, path: String, message: String },
}

/// A secret (password): never shown by `Debug` or in errors.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

// ---------------------------------------------------------------- raw stage

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
const SECTIONS: &[&str] =
    &["agent", "rules", "source", "subscriptions", "upstream", "limits", "engine", "tables", "state"];

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

/// A broker connection. Every field is optional so `[upstream.broker]` can inherit from
/// `[source]` field by field.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBroker {
    pub url: Option<String>,
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    /// Name of an environment variable holding the password.
    pub password_env: Option<String>,
    /// PEM CA certificates to trust for `mqtts://` (default: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) and private key, for mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub protocol: Option<Protocol>,
    #[serde(default, with = "humantime_serde")]
    pub keep_alive: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub reconnect_min: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub reconnect_max: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSubscription {
    pub topic: String,
    #[serde(default = "default_qos")]
    pub qos: u8,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub strip_prefix: Option<String>,
}

fn default_qos() -> u8 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Where composite events go; absent means the source broker.
    pub broker: Option<RawBroker>,
    /// Topic prefix; default `edgewatch/<agent id>`.
    pub topic_prefix: Option<String>,
    /// Where each composite event goes: a template with `{prefix}`, `{agent}`, `{rule}` and
    /// `{key}`; default `{prefix}/events/{rule}`.
    pub event_topic: Option<String>,
    #[serde(default = "default_qos")]
    pub qos: u8,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream { broker: None, topic_prefix: None, event_topic: None, qos: default_qos() }
    }
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

/// MQTT protocol version: `"3.1.1"` (also `"v4"`, `4`) or `"5"` (also `"v5"`, `5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    V311,
    V5,
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
            Float(f64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(s) => s,
            Raw::Int(i) => i.to_string(),
            Raw::Float(f) => f.to_string(),
        };
        match text.trim_start_matches(['v', 'V']) {
            "3.1.1" | "4" | "311" => Ok(Protocol::V311),
            "5" | "5.0" => Ok(Protocol::V5),
            _ => Err(serde::de::Error::custom(format!("unknown MQTT protocol `{text}` (expected \"3.1.1\" or \"5\")"))),
        }
    }
}

// ---------------------------------------------------------------- validated stage

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Names this gateway in event sources and topics; safe to put in a topic level.
    pub agent_id: String,
    pub state_dir: PathBuf,
    /// Where `/metrics` and `/healthz` are served, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Threads for the agent's tasks: 1 runs them all on one thread, which costs the least CPU
    /// per message (no hand-offs between threads); the engine is one task whatever this is.
    pub threads: usize,
    pub rules_dir: PathBuf,
    /// Rhai operations per rule call.
    pub max_operations: u64,
    /// Reload rules when their files change.
    pub watch_rules: bool,
    /// Reload on messages to `<prefix>/control/reload` (opt-in).
    pub control_topic: Option<String>,
    pub source: BrokerConfig,
    pub subscriptions: Vec<Subscription>,
    pub upstream: UpstreamConfig,
    pub max_payload_bytes: usize,
    /// Capacity of each internal queue: bounded so a slow stage pushes back instead of
    /// growing without limit.
    pub queue_capacity: usize,
    /// Deepest JSON nesting and longest string a payload may have (see [`Config::decode_limits`]).
    pub max_json_depth: usize,
    pub max_string_bytes: usize,
    /// Deliveries of a message that crashed the agent before it is quarantined.
    pub max_deliveries: u32,
    /// How the engine treats input (event time, lateness, duplicates, chaining).
    pub engine: edgewatch_engine::EngineConfig,
    /// Lookup tables named in the file: name -> path. Tables in `<rules dir>/tables/` are
    /// loaded too.
    pub tables: std::collections::BTreeMap<String, PathBuf>,
    /// Durability settings.
    pub state: StateConfig,
}

/// Durability settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    pub durable: bool,
    pub cache_bytes: u64,
    pub max_outbox_bytes: u64,
    pub snapshot_interval: Duration,
    pub max_batch: usize,
    pub flush_interval: Duration,
}

/// One broker connection, ready to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub credentials: Option<(String, Secret)>,
    pub protocol: Protocol,
    pub keep_alive: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// `mqtts://`: TLS, never a fallback to plaintext.
    pub tls: Option<crate::tls::TlsConfig>,
}

/// A topic filter the agent subscribes to, and how its payloads are decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub filter: String,
    /// Compiled form of `filter`, to find the subscription of an incoming topic.
    pub pattern: TopicPattern,
    pub qos: u8,
    pub format: Format,
    /// Taken off the front of each topic of this subscription before the rules see it
    /// (empty: nothing), so rules written for `sensors/...` work on a broker where the
    /// topics arrive as `site-a/sensors/...` (a bridge's prefix, or the demo's private tree).
    pub strip_prefix: String,
}

/// Where and how composite events are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub broker: BrokerConfig,
    /// Status, dead letters and errors go under it; events by default too.
    pub topic_prefix: String,
    /// Where each composite event goes.
    pub event_topic: TopicTemplate,
    pub qos: u8,
}

impl UpstreamConfig {
    /// The topic an event of `rule` about `key` is published on. Rule and key can never
    /// add a level, a wildcard or a `$` topic: see [`TopicTemplate`].
    pub fn event_topic(&self, rule: &str, key: &str) -> String {
        self.event_topic.render(&self.topic_prefix, rule, key)
    }

    /// Where malformed input is reported.
    pub fn deadletter_topic(&self) -> String {
        format!("{}/deadletter", self.topic_prefix)
    }

    /// The agent's retained `online`/`offline` status.
    pub fn agent_status_topic(&self) -> String {
        format!("{}/status", self.topic_prefix)
    }

    /// The retained status of the rules.
    pub fn rules_status_topic(&self) -> String {
        format!("{}/status/rules", self.topic_prefix)
    }

    /// Where rule failures are reported.
    pub fn errors_topic(&self) -> String {
        format!("{}/errors", self.topic_prefix)
    }
}

impl Config {
    /// What a payload may hold: `[limits]`.
    pub fn decode_limits(&self) -> crate::decode::DecodeLimits {
        crate::decode::DecodeLimits {
            max_payload_bytes: self.max_payload_bytes,
            max_json_depth: self.max_json_depth,
            max_string_bytes: self.max_string_bytes,
        }
    }

    /// Loads `path`, applies the environment, validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        Config::from_toml(&text, &file, std::env::vars())
    }

    /// Parses `text` (named `file` in errors), applies `env`, validates.
    pub fn from_toml(
        text: &str,
        file: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax { file: file.to_owned(), message: e.to_string() })?;
        let mut from_env: Vec<(String, String)> = Vec::new();
        for (var, value) in env {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else { continue };
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            if !SECTIONS.contains(&path[0].as_str()) {
                continue;
            }
            set_path(&mut table, &path, parse_env_value(&value)).map_err(|message| ConfigError::Invalid {
                origin: format!("environment variable {var}"),
                path: path.join("."),
                message,
            })?;
            from_env.push((path.join("."), var));
        }
        let origin_of = |path: &str| -> String {
            from_env
                .iter()
                .find(|(p, _)| path == p || path.starts_with(&format!("{p}.")))
                .map(|(_, var)| format!("environment variable {var}"))
                .unwrap_or_else(|| file.to_owned())
        };
        let raw: RawConfig = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let path = e.path().to_string();
            // toml repeats the key path on a second line; the path is already shown.
            let message = e.into_inner().to_string();
            let message = message.lines().next().unwrap_or_default().to_owned();
            ConfigError::Invalid { origin: origin_of(&path), path, message }
        })?;
        raw.validate().map_err(|(path, message)| ConfigError::Invalid { origin: origin_of(&path), path, message })
    }
}

fn parse_env_value(value: &str) -> toml::Value {
    // A bare TOML value: parse it as the right-hand side of a key.
    match format!("v = {value}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(value.to_owned())),
        Err(_) => toml::Value::String(value.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key path")?;
    let mut t = table;
    for p in parents {
        let entry = t.entry(p.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = match entry {
            toml::Value::Table(inner) => inner,
            _ => return Err(format!("`{p}` is not a table, so it has no keys to set")),
        };
    }
    t.insert(last.clone(), value);
    Ok(())
}

type Invalid = (String, String);

fn invalid(path: &str, message: impl Into<String>) -> Invalid {
    (path.to_owned(), message.into())
}

/// A topic level (agent id, ...) must not contain what MQTT treats as syntax.
fn check_level(path: &str, s: &str) -> Result<(), Invalid> {
    if s.is_empty() {
        return Err(invalid(path, "must not be empty"));
    }
    if let Some(c) = s.chars().find(|c| matches!(c, '/' | '+' | '#') || c.is_control()) {
        return Err(invalid(path, format!("must not contain {c:?}: it is used as one MQTT topic level")));
    }
    Ok(())
}

fn check_qos(path: &str, qos: u8) -> Result<u8, Invalid> {
    if qos > 2 {
        return Err(invalid(path, format!("QoS must be 0, 1 or 2, not {qos}")));
    }
    Ok(qos)
}

impl RawConfig {
    /// The second stage: every value checked, defaults filled in.
    pub fn validate(self) -> Result<Config, Invalid> {
        check_level("agent.id", &self.agent.id)?;
        let source =
            validate_broker("source", &self.source, &RawBroker::default(), &format!("edgewatch-{}", self.agent.id))?;
        if self.subscriptions.is_empty() {
            return Err(invalid("subscriptions", "at least one `[[subscriptions]]` entry is required"));
        }
        let mut subscriptions = Vec::with_capacity(self.subscriptions.len());
        for (i, s) in self.subscriptions.into_iter().enumerate() {
            let path = format!("subscriptions[{i}]");
            if s.topic.contains('{') {
                return Err(invalid(&format!("{path}.topic"), "is an MQTT filter: use `+` and `#`, not `{name}`"));
            }
            let pattern =
                TopicPattern::parse(&s.topic).map_err(|e| invalid(&format!("{path}.topic"), e.to_string()))?;
            let qos = check_qos(&format!("{path}.qos"), s.qos)?;
            let strip_prefix = s.strip_prefix.unwrap_or_default();
            if !strip_prefix.is_empty() {
                let key = format!("{path}.strip_prefix");
                let Some(levels) = strip_prefix.strip_suffix('/').filter(|_| !strip_prefix.contains(['+', '#'])) else {
                    return Err(invalid(&key, "must be whole topic levels ending in `/`, without `+` or `#`"));
                };
                // Each level of the prefix must be matched literally by the filter, and the filter
                // must go on with a level that is not `#` (which would also match the prefix's
                // parent): else some topics of the subscription would keep it and others lose it.
                let literal = levels.split('/').zip(s.topic.split('/')).all(|(p, f)| p == f);
                let rest = s.topic.get(strip_prefix.len()..).unwrap_or("");
                if !literal || !s.topic.starts_with(strip_prefix.as_str()) || rest.is_empty() || rest.starts_with('#') {
                    return Err(invalid(&key, format!("must be how `{}` begins, level by level", s.topic)));
                }
            }
            subscriptions.push(Subscription { filter: s.topic, pattern, qos, format: s.format, strip_prefix });
        }
        let upstream_broker = match &self.upstream.broker {
            Some(b) => validate_broker("upstream.broker", b, &self.source, &format!("edgewatch-{}-up", self.agent.id))?,
            None => BrokerConfig { client_id: format!("{}-up", source.client_id), ..source.clone() },
        };
        let metrics_listen = match &self.agent.metrics_listen {
            None => None,
            Some(addr) => Some(addr.parse::<std::net::SocketAddr>().map_err(|_| {
                invalid("agent.metrics_listen", format!("`{addr}` is not an address and port like `127.0.0.1:9898`"))
            })?),
        };
        let topic_prefix = self.upstream.topic_prefix.unwrap_or_else(|| format!("edgewatch/{}", self.agent.id));
        if topic_prefix.is_empty() || topic_prefix.starts_with('/') || topic_prefix.ends_with('/') {
            return Err(invalid("upstream.topic_prefix", "must be non-empty and neither start nor end with `/`"));
        }
        for level in topic_prefix.split('/') {
            check_level("upstream.topic_prefix", level)?;
        }
        let qos = check_qos("upstream.qos", self.upstream.qos)?;
        let event_topic =
            TopicTemplate::parse(self.upstream.event_topic.as_deref().unwrap_or("{prefix}/events/{rule}"))
                .map_err(|m| invalid("upstream.event_topic", m))?;
        if self.limits.max_payload_bytes == 0 || self.limits.max_payload_bytes > 256 * 1024 * 1024 {
            return Err(invalid("limits.max_payload_bytes", "must be between 1 and 268435456"));
        }
        if self.limits.queue_capacity == 0 {
            return Err(invalid("limits.queue_capacity", "must be at least 1"));
        }
        if !(2..=100).contains(&self.limits.max_deliveries) {
            return Err(invalid("limits.max_deliveries", "must be between 2 and 100"));
        }
        if !(1..=100).contains(&self.limits.max_json_depth) {
            return Err(invalid("limits.max_json_depth", "must be between 1 and 100"));
        }
        if self.limits.max_string_bytes == 0 {
            return Err(invalid("limits.max_string_bytes", "must be at least 1"));
        }
        if self.limits.max_keys_per_rule == 0 {
            return Err(invalid("limits.max_keys_per_rule", "must be at least 1"));
        }
        if self.rules.max_operations == 0 {
            return Err(invalid("rules.max_operations", "must be at least 1"));
        }
        if self.engine.max_failures == 0 {
            return Err(invalid("engine.max_failures", "must be at least 1"));
        }
        for (name, path) in &self.tables {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !matches!(ext, "csv" | "toml") {
                return Err(invalid(&format!("tables.{name}"), "must name a .csv or .toml file"));
            }
        }
        let mut engine = self.engine.to_engine_config(&format!("{topic_prefix}/events"));
        engine.max_keys_per_rule = self.limits.max_keys_per_rule;
        if self.state.cache_mb == 0 || self.state.cache_mb > 4096 {
            return Err(invalid("state.cache_mb", "must be between 1 and 4096"));
        }
        if self.state.max_outbox_mb == 0 {
            return Err(invalid("state.max_outbox_mb", "must be at least 1"));
        }
        if self.state.max_batch == 0 {
            return Err(invalid("state.max_batch", "must be at least 1"));
        }
        if self.state.snapshot_interval < Duration::from_secs(1) {
            return Err(invalid("state.snapshot_interval", "must be at least 1s"));
        }
        let state = StateConfig {
            durable: self.state.durable,
            cache_bytes: self.state.cache_mb * 1024 * 1024,
            max_outbox_bytes: self.state.max_outbox_mb * 1024 * 1024,
            snapshot_interval: self.state.snapshot_interval,
            max_batch: self.state.max_batch,
            flush_interval: self.state.flush_interval,
        };
        if state.flush_interval > Duration::from_secs(1) {
            return Err(invalid("state.flush_interval", "must be at most 1s (messages wait this long for their ack)"));
        }
        let threads = match usize::try_from(self.agent.threads) {
            Ok(n @ 1..=64) => n,
            _ => return Err(invalid("agent.threads", "must be from 1 to 64")),
        };
        Ok(Config {
            agent_id: self.agent.id.clone(),
            state_dir: self.agent.state_dir,
            metrics_listen,
            threads,
            rules_dir: self.rules.dir,
            max_operations: self.rules.max_operations,
            watch_rules: self.rules.watch,
            control_topic: self.rules.control_topic.then(|| format!("{topic_prefix}/control/reload")),
            source,
            subscriptions,
            upstream: UpstreamConfig {
                broker: upstream_broker,
                event_topic: event_topic.with_agent(&self.agent.id),
                topic_prefix,
                qos,
            },
            max_payload_bytes: self.limits.max_payload_bytes,
            queue_capacity: self.limits.queue_capacity,
            max_json_depth: self.limits.max_json_depth,
            max_string_bytes: self.limits.max_string_bytes,
            max_deliveries: self.limits.max_deliveries,
            engine,
            tables: self.tables,
            state,
        })
    }
}

/// Checks a broker section; fields it lacks come from `inherit` (the source broker, for
/// upstream), then from the defaults.
fn validate_broker(
    section: &str,
    raw: &RawBroker,
    inherit: &RawBroker,
    default_client_id: &str,
) -> Result<BrokerConfig, Invalid> {
    let key = |k: &str| format!("{section}.{k}");
    let url = raw.url.clone().or_else(|| inherit.url.clone()).unwrap_or_else(|| "mqtt://127.0.0.1:1883".into());
    let (host, port, tls) = parse_url(&url).map_err(|m| invalid(&key("url"), m))?;
    let client_id = raw.client_id.clone().unwrap_or_else(|| default_client_id.to_owned());
    if client_id.is_empty() || client_id.chars().any(char::is_control) {
        return Err(invalid(&key("client_id"), "must be non-empty, without control characters"));
    }
    let own_credentials =
        raw.username.is_some() || raw.password.is_some() || raw.password_file.is_some() || raw.password_env.is_some();
    let creds = if own_credentials { raw } else { inherit };
    let given = [creds.password.is_some(), creds.password_file.is_some(), creds.password_env.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(invalid(&key("password"), "give one of `password`, `password_file` or `password_env`"));
    }
    let password = match (&creds.password, &creds.password_file, &creds.password_env) {
        (Some(p), _, _) => Some(p.clone()),
        (None, Some(file), _) => {
            // The error names the file, never its content.
            let text = std::fs::read_to_string(file)
                .map_err(|e| invalid(&key("password_file"), format!("cannot read {}: {e}", file.display())))?;
            Some(Secret(text.trim_end_matches(['\r', '\n']).to_owned()))
        }
        (None, None, Some(var)) => match std::env::var(var) {
            Ok(p) => Some(Secret(p)),
            Err(_) => return Err(invalid(&key("password_env"), format!("environment variable `{var}` is not set"))),
        },
        (None, None, None) => None,
    };
    let credentials = match (&creds.username, password) {
        (Some(u), Some(p)) => Some((u.clone(), p)),
        (Some(u), None) => Some((u.clone(), Secret(String::new()))),
        (None, Some(_)) => return Err(invalid(&key("username"), "a password needs a username")),
        (None, None) => None,
    };
    let pick = |a: Option<Duration>, b: Option<Duration>, d: Duration| a.or(b).unwrap_or(d);
    let keep_alive = pick(raw.keep_alive, inherit.keep_alive, Duration::from_secs(30));
    if keep_alive < Duration::from_secs(5) || keep_alive > Duration::from_secs(65535) {
        return Err(invalid(&key("keep_alive"), "must be between 5s and 65535s"));
    }
    let reconnect_min = pick(raw.reconnect_min, inherit.reconnect_min, Duration::from_millis(200));
    let reconnect_max = pick(raw.reconnect_max, inherit.reconnect_max, Duration::from_secs(30));
    if reconnect_min.is_zero() || reconnect_min > reconnect_max {
        return Err(invalid(&key("reconnect_min"), "must be above zero and at most `reconnect_max`"));
    }
    let ca_file = raw.ca_file.clone().or_else(|| inherit.ca_file.clone());
    let client_cert = raw.client_cert.clone().or_else(|| inherit.client_cert.clone());
    let client_key = raw.client_key.clone().or_else(|| inherit.client_key.clone());
    let tls = if tls {
        let client_auth = match (client_cert, client_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => return Err(invalid(&key("client_key"), "a client certificate needs its key")),
            (None, Some(_)) => return Err(invalid(&key("client_cert"), "a client key needs its certificate")),
        };
        let files = crate::tls::TlsFiles { ca_file: ca_file.clone(), client_auth: client_auth.clone() };
        let loaded = files.load().map_err(|e| {
            let which = match e.file() {
                Some(f) if client_auth.as_ref().is_some_and(|(_, k)| k.display().to_string() == f) => "client_key",
                Some(f) if client_auth.as_ref().is_some_and(|(c, _)| c.display().to_string() == f) => "client_cert",
                _ => "ca_file",
            };
            invalid(&key(which), e.to_string())
        })?;
        Some(loaded)
    } else {
        // TLS files with a plaintext URL are a mistake, not a request for plaintext.
        for (name, set) in [("ca_file", &ca_file), ("client_cert", &client_cert), ("client_key", &client_key)] {
            if set.is_some() {
                return Err(invalid(&key(name), "is set but the URL is not `mqtts://`: TLS would not be used"));
            }
        }
        None
    };
    Ok(BrokerConfig {
        host,
        port,
        client_id,
        credentials,
        protocol: raw.protocol.or(inherit.protocol).unwrap_or_default(),
        keep_alive,
        reconnect_min,
        reconnect_max,
        tls,
    })
}

/// `mqtt://host[:port]` or `mqtts://host[:port]` -> (host, port, TLS).
pub(crate) fn parse_url(url: &str) -> Result<(String, u16, bool), String> {
    let (rest, tls) = match url.split_once("://") {
        Some(("mqtt" | "tcp", rest)) => (rest, false),
        Some(("mqtts" | "ssl", rest)) => (rest, true),
        Some((scheme, _)) => {
            return Err(format!("`{url}`: unknown scheme `{scheme}` (expected `mqtt://` or `mqtts://`)"));
        }
        None => return Err(format!("`{url}` is not a URL: expected `mqtt://host:port`")),
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.contains('@') {
        return Err(format!("`{url}`: expected only `mqtt://host:port` (credentials go in `username`/`password`)"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port: u16 = p.parse().map_err(|_| format!("`{url}`: `{p}` is not a port number"))?;
            (h, port)
        }
        _ => (rest, if tls { 8883 } else { 1883 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(format!("`{url}`: needs a host and a non-zero port"));
    }
    Ok((host.to_owned(), port, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[agent]
id = "gw-1"
[[subscriptions]]
topic = "sensors/#"
"#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml(text, "edgewatch.toml", env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn error(text: &str, env: &[(&str, &str)]) -> String {
        load(text, env).expect_err("config must be rejected").to_string()
    }

    #[test]
    fn defaults_fill_a_minimal_file() {
        let c = load(MINIMAL, &[]).expect("valid");
        assert_eq!(c.agent_id, "gw-1");
        assert_eq!((c.source.host.as_str(), c.source.port), ("127.0.0.1", 1883));
        assert_eq!(c.source.client_id, "edgewatch-gw-1");
        assert_eq!(c.upstream.broker.client_id, "edgewatch-gw-1-up");
        assert_eq!(c.upstream.broker.port, 1883);
        assert_eq!(c.upstream.event_topic("overheat", "t-1"), "edgewatch/gw-1/events/overheat");
        assert_eq!(c.subscriptions[0].qos, 1);
        // A section left out gets the same defaults as an empty one.
        assert_eq!(c.upstream.qos, 1);
        assert_eq!(c.max_payload_bytes, 64 * 1024);
        assert_eq!(c.decode_limits(), crate::decode::DecodeLimits::default());
        assert_eq!(c.engine.max_keys_per_rule, edgewatch_engine::EngineConfig::default().max_keys_per_rule);
        assert_eq!(c.max_operations, edgewatch_engine::Limits::default().max_operations);
        assert_eq!(c.subscriptions[0].format, Format::Auto);
    }

    #[test]
    fn a_strip_prefix_must_be_whole_literal_levels_of_its_filter() {
        let sub = |topic: &str, prefix: &str| {
            format!("[agent]\nid = \"gw\"\n[[subscriptions]]\ntopic = \"{topic}\"\nstrip_prefix = \"{prefix}\"\n")
        };
        let c = load(&sub("site-a/sensors/#", "site-a/"), &[]).expect("valid");
        assert_eq!(c.subscriptions[0].strip_prefix, "site-a/");
        let c = load(&sub("x/y/sensors/+/t", "x/y/"), &[]).expect("valid");
        assert_eq!(c.subscriptions[0].strip_prefix, "x/y/");
        assert_eq!(load(MINIMAL, &[]).expect("valid").subscriptions[0].strip_prefix, "");
        for (topic, prefix) in [
            ("site-a/sensors/#", "site-a"),  // not a whole level
            ("site-a/sensors/#", "site-b/"), // not how the filter begins
            ("+/sensors/#", "site-a/"),      // a wildcard level would strip different text per topic
            ("site-a/#", "site-a/sensors/"), // likewise, under `#`
            ("site-a/sensors/#", "site-+/"), // a wildcard in the prefix
            ("site-a/", "site-a/"),          // nothing left
            ("site-a/#", "site-a/"),         // `#` also matches `site-a` itself, which cannot lose the prefix
            ("a/x/#", "a//"),                // an empty level is not how the filter begins
        ] {
            let e = error(&sub(topic, prefix), &[]);
            assert!(e.contains("`subscriptions[0].strip_prefix`"), "{topic} {prefix}: {e}");
        }
    }

    #[test]
    fn threads_default_to_one_and_are_bounded() {
        assert_eq!(load(MINIMAL, &[]).expect("valid").threads, 1);
        let with = |n: &str| format!("[agent]\nid = \"gw\"\nthreads = {n}\n[[subscriptions]]\ntopic = \"sensors/#\"\n");
        assert_eq!(load(&with("4"), &[]).expect("valid").threads, 4);
        for bad in ["0", "65", "-1"] {
            let e = error(&with(bad), &[]);
            assert!(e.contains("agent.threads"), "{bad}: {e}");
        }
    }

    #[test]
    fn payload_limits_are_read_and_checked() {
        let c =
            load(&format!("{MINIMAL}\n[limits]\nmax_json_depth = 8\nmax_string_bytes = 100\n"), &[]).expect("valid");
        let l = c.decode_limits();
        assert_eq!((l.max_payload_bytes, l.max_json_depth, l.max_string_bytes), (64 * 1024, 8, 100));
        let e = error(&format!("{MINIMAL}\n[limits]\nmax_json_depth = 0\n"), &[]);
        assert!(e.contains("`limits.max_json_depth`"), "{e}");
        let e = error(&format!("{MINIMAL}\n[limits]\nmax_json_depth = 129\n"), &[]);
        assert!(e.contains("`limits.max_json_depth`"), "{e}");
        let e = error(MINIMAL, &[("EDGEWATCH_LIMITS__MAX_STRING_BYTES", "0")]);
        assert!(e.contains("`limits.max_string_bytes`"), "{e}");
        let c = load(MINIMAL, &[("EDGEWATCH_LIMITS__MAX_KEYS_PER_RULE", "500")]).expect("valid");
        assert_eq!(c.engine.max_keys_per_rule, 500);
        let e = error(&format!("{MINIMAL}\n[limits]\nmax_keys_per_rule = 0\n"), &[]);
        assert!(e.contains("`limits.max_keys_per_rule`"), "{e}");
    }

    #[test]
    fn unknown_keys_are_named_with_their_path_and_file() {
        let e = error(&format!("{MINIMAL}\n[source]\nurll = \"mqtt://x\"\n"), &[]);
        assert!(e.starts_with("edgewatch.toml: `source.urll`:"), "{e}");
        let e = error(&format!("{MINIMAL}\n[[subscriptions]]\ntopic = \"a\"\nformt = \"json\"\n"), &[]);
        assert!(e.contains("`subscriptions[1].formt`"), "{e}");
        let e = error("bogus = 1\n", &[]);
        assert!(e.contains("`bogus`"), "{e}");
    }

    #[test]
    fn wrong_values_are_named_with_their_path() {
        let e = error(&format!("{MINIMAL}\n[source]\nurl = \"http://x\"\n"), &[]);
        assert!(e.contains("`source.url`") && e.contains("unknown scheme"), "{e}");
        let e = error(&MINIMAL.replace("sensors/#", "sensors/#/x"), &[]);
        assert!(e.contains("`subscriptions[0].topic`"), "{e}");
        let e = error(&format!("{MINIMAL}\n[upstream]\nqos = 3\n"), &[]);
        assert!(e.contains("`upstream.qos`"), "{e}");
        let e = error(&MINIMAL.replace("gw-1", "gw/1"), &[]);
        assert!(e.contains("`agent.id`"), "{e}");
        let e = error(&format!("{MINIMAL}\n[source]\nprotocol = \"6\"\n"), &[]);
        assert!(e.contains("`source.protocol`"), "{e}");
        let e = error(&format!("{MINIMAL}\n[source]\nkeep_alive = \"soon\"\n"), &[]);
        assert!(e.contains("`source.keep_alive`"), "{e}");
        let e = error("[agent]\nid = \"x\"\n", &[]);
        assert!(e.contains("`subscriptions`"), "{e}");
        let e = error("[agent\n", &[]);
        assert!(e.starts_with("edgewatch.toml: "), "{e}");
    }

    #[test]
    fn environment_overrides_the_file_and_is_named_in_errors() {
        let c = load(
            MINIMAL,
            &[("EDGEWATCH_SOURCE__URL", "mqtt://broker.local:1884"), ("EDGEWATCH_SOURCE__PROTOCOL", "5")],
        )
        .expect("valid");
        assert_eq!((c.source.host.as_str(), c.source.port, c.source.protocol), ("broker.local", 1884, Protocol::V5));
        // Upstream inherits the source broker.
        assert_eq!(c.upstream.broker.host, "broker.local");
        let e = error(MINIMAL, &[("EDGEWATCH_SOURCE__URLL", "mqtt://x")]);
        assert!(e.starts_with("environment variable EDGEWATCH_SOURCE__URLL: `source.urll`"), "{e}");
        // Not config: ignored.
        assert!(load(MINIMAL, &[("EDGEWATCH_REQUIRE_MOSQUITTO", "1"), ("EDGEWATCH_LOG", "debug")]).is_ok());
    }

    #[test]
    fn upstream_broker_inherits_what_it_does_not_set() {
        let text = format!(
            "{MINIMAL}\n[source]\nurl = \"mqtt://a:1\"\nusername = \"u\"\npassword = \"p\"\n[upstream.broker]\nurl = \"mqtt://b:2\"\n"
        );
        let c = load(&text, &[]).expect("valid");
        assert_eq!((c.upstream.broker.host.as_str(), c.upstream.broker.port), ("b", 2));
        assert_eq!(c.upstream.broker.credentials.as_ref().map(|(u, _)| u.as_str()), Some("u"));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let text = format!("{MINIMAL}\n[source]\nusername = \"u\"\npassword = \"hunter2\"\n");
        let c = load(&text, &[]).expect("valid");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.source.credentials.as_ref().map(|(_, p)| p.expose()), Some("hunter2"));
    }

    #[test]
    fn urls() {
        assert_eq!(parse_url("mqtt://h"), Ok(("h".into(), 1883, false)));
        assert_eq!(parse_url("mqtt://h:99/"), Ok(("h".into(), 99, false)));
        assert_eq!(parse_url("mqtt://[::1]:99"), Ok(("::1".into(), 99, false)));
        assert_eq!(parse_url("mqtts://h"), Ok(("h".into(), 8883, true)));
        assert_eq!(parse_url("ssl://h:1"), Ok(("h".into(), 1, true)));
        assert!(parse_url("mqtt://h:x").is_err());
        assert!(parse_url("mqtt://u:p@h").is_err());
        assert!(parse_url("ws://h").is_err());
        assert!(parse_url("h:1883").is_err());
    }
}
