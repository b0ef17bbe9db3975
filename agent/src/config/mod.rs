//! Configuration: defaults, then the TOML file, then `EDGEWATCH_*` environment variables.
//!
//! Two stages, as in ripgrep and Vector: [`RawConfig`] mirrors the file (serde, unknown keys
//! rejected, defaults named), then [`RawConfig::validate`] turns it into a [`Config`] whose
//! every field is already checked. Every error names the file (or variable) and the key path.
//!
//! # Layout
//!
//! ```text
//! TOML text ─▶ toml::Table ─(EDGEWATCH_* set_path)─▶ RawConfig (raw.rs) ─validate─▶ Config (here)
//!                                                                     (validate.rs)
//! ```
//!
//! - this file: [`Config::load`] / [`Config::from_toml`] (the file, then the environment,
//!   errors given their origin), the checked types ([`Config`], [`BrokerConfig`], ...) and
//!   [`Secret`].
//! - `raw.rs`: the serde structs as read ([`RawConfig`] and its sections), their named
//!   defaults, [`Protocol`].
//! - `validate.rs`: [`RawConfig::validate`], broker sections with inheritance, URLs.
//! - `history.rs`: `[history]` and the subscriptions' `remember`, raw and checked.
//! - `journal.rs`: `[journal]` and `[event_log]`, raw and checked.
//! - `sinks.rs`: `[[sinks]]`, raw and checked.
//! - `schemas.rs`: `[schemas.<name>]`, payload schemas, raw and checked.
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

mod console;
mod history;
mod journal;
mod privacy;
mod raw;
mod raw_mqtt;
mod schemas;
mod secret;
mod sinks;
mod sparkplug;
mod validate;

/// A key path and what is wrong with its value: what the checked stage (`validate.rs`,
/// `history.rs`) reports, and `Config::from_toml` gives its origin.
pub(super) type Invalid = (String, String);

/// An [`Invalid`] for the key at `path`.
pub(super) fn invalid(path: &str, message: impl Into<String>) -> Invalid {
    (path.to_owned(), message.into())
}

pub use console::{ConsoleConfig, RawConsole, Token};
pub use history::RawHistory;
pub use journal::RawJournal;
pub use privacy::PrivacyKey;
pub use secret::SecretBytes;
use secret::secret;
pub use sinks::{HttpSink, RawSink, SinkConfig, SinkKind};
pub use sparkplug::SparkplugConfig;

use raw::SECTIONS;
pub use raw::{
    Protocol, RawAgent, RawBroker, RawConfig, RawEngine, RawLimits, RawRules, RawState, RawSubscription, RawUpstream,
};
pub(crate) use validate::parse_url;

// ---------------------------------------------------------------- validated stage

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Names this gateway in event sources and topics; safe to put in a topic level.
    pub agent_id: String,
    pub state_dir: PathBuf,
    /// Where `/metrics` and `/healthz` are served, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The web console and its JSON API (`[console]`), if on.
    pub console: Option<ConsoleConfig>,
    /// The file this configuration was read from (`None`: from text): a console backtest runs
    /// `edgewatch backtest --config` on it.
    pub file: Option<PathBuf>,
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
    /// History on disk: its size and retention (what is remembered is in `engine.history`).
    pub history: crate::history::HistoryLimits,
    /// The input journal's limits; `None`: no journal (the default).
    pub journal: Option<crate::journal::JournalLimits>,
    /// The event log's limits (`[event_log]`, on by default); `None`: off.
    pub event_log: Option<crate::journal::JournalLimits>,
    /// Where rules' actions go (`notify`, `act`), by name.
    pub sinks: Vec<SinkConfig>,
    /// Alarm commands are taken on this topic (`<prefix>/control/alarms`, opt-in) and answered
    /// on `<prefix>/control/alarms/reply`.
    pub alarms_topic: Option<String>,
    /// The secret pseudonyms are keyed with (`[privacy]`); required by any `pseudonymise`.
    pub privacy_key: Option<PrivacyKey>,
    /// The audit trail's size on disk (`[audit]`).
    pub audit: crate::audit::AuditLimits,
    /// How the agent acts as a Sparkplug B host application (`[sparkplug]`).
    pub sparkplug: SparkplugConfig,
    /// SHA-256 of the effective configuration, secrets left out (see `fingerprint`): the
    /// audit trail records it at each start, so a change of configuration shows.
    pub fingerprint: String,
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
    /// What its payloads must look like (`schema`); checked right after decoding.
    pub schema: Option<std::sync::Arc<crate::schema::Schema>>,
    /// Its protected fields (`privacy`), applied right after the schema check.
    pub privacy: Option<std::sync::Arc<crate::privacy::Privacy>>,
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
    /// Fields some subscription pseudonymises with a rotation: a rule's `key` must not read
    /// them (`reload.rs` refuses such a rule), as a key that changes every period is a new
    /// device every period.
    pub fn rotating_fields(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .subscriptions
            .iter()
            .filter_map(|s| s.privacy.as_deref())
            .flat_map(|p| &p.fields)
            .filter(|f| matches!(f.protect, crate::privacy::Protect::Pseudonym { rotate_ms: Some(_) }))
            .map(|f| f.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

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
        let mut config = Config::from_toml(&text, &file, std::env::vars())?;
        config.file = Some(path.to_owned());
        Ok(config)
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
        let fingerprint = fingerprint(&table);
        let raw: RawConfig = firmware_sim::toml_keys::deserialize(toml::Value::Table(table))
            .map_err(|(path, message)| ConfigError::Invalid { origin: origin_of(&path), path, message })?;
        let mut config = raw.validate().map_err(|(path, message)| ConfigError::Invalid {
            origin: origin_of(&path),
            path,
            message,
        })?;
        config.fingerprint = fingerprint;
        Ok(config)
    }
}

/// SHA-256 (hex) of the effective configuration (the file with the environment's values
/// applied), as compact JSON, with what may hold a secret replaced by `<redacted>`: every
/// `password`, every header value, and sinks' URLs (a chat webhook's URL is its secret). A
/// secret never enters the hash, so the hash cannot be used to guess one.
fn fingerprint(table: &toml::Table) -> String {
    fn redact(v: &mut serde_json::Value, in_sinks: bool) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    if k == "password" || k == "headers" || (in_sinks && k == "url") {
                        *v = "<redacted>".into();
                    } else {
                        redact(v, in_sinks || k == "sinks");
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|v| redact(v, in_sinks)),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(table).unwrap_or_default();
    redact(&mut value, false);
    let digest = ring::digest::digest(&ring::digest::SHA256, value.to_string().as_bytes());
    firmware_sim::record::hex(digest.as_ref())
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
    fn a_sparkplug_subscription_reads_spbv1_topics_and_nothing_it_cannot_apply() {
        let sub = |topic: &str, extra: &str| {
            format!("[agent]\nid = \"gw\"\n[[subscriptions]]\ntopic = \"{topic}\"\nformat = \"sparkplug\"\n{extra}")
        };
        let c = load(&sub("spBv1.0/plant1/#", "[sparkplug]\nrebirth = true\n"), &[]).expect("valid");
        assert_eq!(c.subscriptions[0].format, crate::decode::Format::Sparkplug);
        assert!(c.sparkplug.rebirth);
        for (topic, extra, key) in [
            ("sensors/#", "", "subscriptions[0].format"),
            ("#", "", "subscriptions[0].format"),
            ("spBv1.0/#", "strip_prefix = \"spBv1.0/\"\n", "subscriptions[0].strip_prefix"),
            ("spBv1.0/#", "remember = [\"x\"]\n", "subscriptions[0].remember"),
            ("spBv1.0/#", "[sparkplug]\nhost_id = \"a/b\"\n", "sparkplug.host_id"),
            ("spBv1.0/#", "[sparkplug]\nrebirth = \"yes\"\n", "sparkplug.rebirth"),
        ] {
            let e = error(&sub(topic, extra), &[]);
            assert!(e.contains(&format!("`{key}`")), "{topic} {extra}: {e}");
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

    /// Issue 20: the start entry of the audit trail names the configuration by a hash that
    /// changes with any setting, the environment's included, and never with a secret.
    #[test]
    fn the_fingerprint_follows_settings_and_leaves_secrets_out() {
        let base = "[agent]\nid = \"gw\"\n[source]\nusername = \"u\"\npassword = \"one\"\n[[subscriptions]]\ntopic = \"a/#\"\n\
                    [[sinks]]\nname = \"chat\"\nkind = \"http\"\nurl = \"https://hooks.example/T1/secret-1\"\n\
                    headers = { Authorization = \"Bearer t-1\" }\n";
        let fp =
            |text: &str, env: Vec<(String, String)>| Config::from_toml(text, "f.toml", env).expect("valid").fingerprint;
        let a = fp(base, Vec::new());
        assert_eq!(a.len(), 64);
        assert_eq!(a, fp(base, Vec::new()), "deterministic");
        let secrets = base.replace("\"one\"", "\"two\"").replace("secret-1", "secret-2").replace("t-1", "t-2");
        assert_eq!(a, fp(&secrets, Vec::new()), "secrets are not in it");
        assert_ne!(a, fp(&base.replace("\"gw\"", "\"gw2\""), Vec::new()), "a setting is");
        let env = vec![("EDGEWATCH_LIMITS__QUEUE_CAPACITY".to_owned(), "77".to_owned())];
        assert_ne!(a, fp(base, env), "and the environment's settings");
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
