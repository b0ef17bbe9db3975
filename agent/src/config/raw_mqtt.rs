//! The raw stage of the MQTT sections: the brokers (`[source]`, `[upstream.broker]`), the
//! subscriptions and `[upstream]`, as written (see `raw.rs` for the rules of this stage).

use super::Secret;
use crate::decode::Format;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Numeric fields kept in history for every message of this subscription.
    #[serde(default)]
    pub remember: Vec<String>,
    /// The `[schemas.<name>]` its payloads must have.
    pub schema: Option<String>,
    /// Fields dropped, masked or pseudonymised before anything else sees them.
    pub privacy: Option<super::privacy::RawPrivacy>,
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
