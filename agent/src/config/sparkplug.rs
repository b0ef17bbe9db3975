//! The `[sparkplug]` section: how the agent behaves as a Sparkplug B host application, for
//! the subscriptions with `format = "sparkplug"`. Raw, then checked.
//!
//! ```toml
//! [sparkplug]
//! rebirth = false            # ask an edge node to rebirth (NCMD) when its data cannot be read
//! rebirth_interval = "30s"   # at most one request per node per interval
//! reorder_timeout = "5s"     # a seq gap not healed by a birth within this asks for a rebirth
//! host_id = ""               # publish spBv1.0/STATE/<host_id> (online, offline as the will)
//! max_nodes = 1024           # edge nodes followed
//! max_devices = 256          # devices per edge node
//! max_metrics = 1024         # metrics per node or device, and per message
//! ```

use super::Invalid;
use crate::sparkplug::Limits;
use serde::Deserialize;
use std::time::Duration;

/// `[sparkplug]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSparkplug {
    #[serde(default)]
    pub rebirth: bool,
    #[serde(default, with = "humantime_serde")]
    pub rebirth_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub reorder_timeout: Option<Duration>,
    #[serde(default)]
    pub host_id: Option<String>,
    #[serde(default)]
    pub max_nodes: Option<usize>,
    #[serde(default)]
    pub max_devices: Option<usize>,
    #[serde(default)]
    pub max_metrics: Option<usize>,
}

/// `[sparkplug]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparkplugConfig {
    /// Send rebirth requests (opt-in: a command to someone else's equipment).
    pub rebirth: bool,
    pub rebirth_interval: Duration,
    pub reorder_timeout: Duration,
    /// Publish this primary host application's STATE (opt-in): edge nodes configured to wait
    /// for a primary host publish only while it is online.
    pub host_id: Option<String>,
    pub limits: Limits,
}

impl Default for SparkplugConfig {
    fn default() -> Self {
        SparkplugConfig {
            rebirth: false,
            // Long enough for a node to publish a few hundred births; short enough that a
            // gateway restarted behind it recovers within a minute.
            rebirth_interval: Duration::from_secs(30),
            // The Sparkplug 3.0 specification's example value (§5.9).
            reorder_timeout: Duration::from_secs(5),
            host_id: None,
            limits: Limits::default(),
        }
    }
}

impl RawSparkplug {
    pub(super) fn validate(self) -> Result<SparkplugConfig, Invalid> {
        let bad = |key: &str, m: String| Err((format!("sparkplug.{key}"), m));
        let d = SparkplugConfig::default();
        let rebirth_interval = self.rebirth_interval.unwrap_or(d.rebirth_interval);
        if rebirth_interval < Duration::from_secs(1) {
            return bad("rebirth_interval", "must be at least 1s".into());
        }
        let reorder_timeout = self.reorder_timeout.unwrap_or(d.reorder_timeout);
        if reorder_timeout < Duration::from_millis(100) || reorder_timeout > Duration::from_secs(3600) {
            return bad("reorder_timeout", "must be from 100ms to 1h".into());
        }
        if let Some(host) = &self.host_id {
            if crate::sparkplug::command::state_topic(host).is_none() {
                return bad("host_id", format!("`{host}` cannot be a topic level (empty, or holding `/`, `+` or `#`)"));
            }
        }
        let mut limits = d.limits;
        for (key, value, slot, max) in [
            ("max_nodes", self.max_nodes, &mut limits.max_nodes, 100_000),
            ("max_devices", self.max_devices, &mut limits.max_devices, 100_000),
            ("max_metrics", self.max_metrics, &mut limits.max_metrics, 100_000),
        ] {
            match value {
                Some(n) if !(1..=max).contains(&n) => return bad(key, format!("must be from 1 to {max}")),
                Some(n) => *slot = n,
                None => {}
            }
        }
        Ok(SparkplugConfig { rebirth: self.rebirth, rebirth_interval, reorder_timeout, host_id: self.host_id, limits })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values_name_their_key() {
        assert_eq!(RawSparkplug::default().validate().expect("valid"), SparkplugConfig::default());
        let e = RawSparkplug { host_id: Some("a/b".into()), ..RawSparkplug::default() }.validate();
        assert_eq!(e.expect_err("invalid").0, "sparkplug.host_id");
        let e = RawSparkplug { max_nodes: Some(0), ..RawSparkplug::default() }.validate();
        assert_eq!(e.expect_err("invalid").0, "sparkplug.max_nodes");
        let e = RawSparkplug { rebirth_interval: Some(Duration::from_millis(10)), ..RawSparkplug::default() };
        assert_eq!(e.validate().expect_err("invalid").0, "sparkplug.rebirth_interval");
        let ok = RawSparkplug { max_metrics: Some(20), rebirth: true, ..RawSparkplug::default() }.validate();
        let ok = ok.expect("valid");
        assert!(ok.rebirth);
        assert_eq!(ok.limits.max_metrics, 20);
    }
}
