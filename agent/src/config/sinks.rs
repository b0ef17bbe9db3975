//! `[[sinks]]`: where rules' actions go besides upstream (`notify`, `act` in rule files),
//! raw, then checked. Secrets stay here, never in rule files.
//!
//! ```toml
//! [[sinks]]
//! name = "pager"
//! kind = "http"
//! url = "https://events.example.com/v2/enqueue"
//! headers = { Authorization = "env:PAGER_TOKEN" }   # "env:NAME": from the environment
//! body = "cloudevents"      # the CloudEvents HTTP binding (default), or "data": the body `act` shaped
//! timeout = "10s"
//! ca_file = "/etc/edgewatch/ca.pem"                  # trusted besides the system's roots
//!
//! [[sinks]]
//! name = "heaters"
//! kind = "mqtt"
//! topic = "devices/{key}/cmd"   # {key} (the event's key), {rule}, {agent}
//! qos = 1
//! ```
//! Every sink also takes `dry_run`, `max_queue_mb`, `retry = { min_wait, max_wait, max_attempts, max_age }` and
//! `rate = { burst, per_second }`.

use super::Invalid;
use crate::delivery::RetryPolicy;
use crate::emit::TopicTemplate;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// `[[sinks]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    pub name: String,
    pub kind: SinkKindName,
    /// http: where to POST.
    pub url: Option<String>,
    /// http: header name -> value, or `env:NAME` for the value of an environment variable.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// http: `cloudevents` (default) or `data`.
    pub body: Option<BodyName>,
    /// http: the whole request, connection included.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// http: PEM CA certificates to trust besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// mqtt: the topic template.
    pub topic: Option<String>,
    /// mqtt: the QoS of its publishes.
    pub qos: Option<u8>,
    /// Log and count actions, send nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Actions waiting, on disk or in memory; the oldest go first past it (counted).
    #[serde(default = "default_queue_mb")]
    pub max_queue_mb: u64,
    #[serde(default)]
    pub retry: RawRetry,
    pub rate: Option<RawRate>,
}

fn default_queue_mb() -> u64 {
    4
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKindName {
    Http,
    Mqtt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyName {
    Cloudevents,
    Data,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// The first wait after a failed attempt; each later one doubles, up to `max_wait`.
    #[serde(default, with = "humantime_serde")]
    pub min_wait: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub max_wait: Option<Duration>,
    pub max_attempts: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRate {
    pub burst: u32,
    pub per_second: f64,
}

/// A checked sink.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub name: String,
    pub kind: SinkKind,
    pub dry_run: bool,
    pub max_queue_bytes: u64,
    pub retry: RetryPolicy,
    /// (burst, per second).
    pub rate: Option<(u32, f64)>,
}

/// What a sink sends to.
#[derive(Debug, Clone)]
pub enum SinkKind {
    Http(HttpSink),
    Mqtt { topic: TopicTemplate, qos: u8 },
}

/// A webhook.
#[derive(Clone)]
pub struct HttpSink {
    pub url: String,
    /// Header names and values, the environment's read in; values are secrets.
    pub headers: Vec<(String, String)>,
    /// `true`: the CloudEvents HTTP binding; `false`: the body the rule shaped.
    pub cloudevents: bool,
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for HttpSink {
    /// Header values are secrets: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("HttpSink")
            .field("url", &self.url)
            .field("headers", &names)
            .field("cloudevents", &self.cloudevents)
            .field("timeout", &self.timeout)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl RawSink {
    /// Checks sink `i`; `env` reads environment variables (`env:NAME` header values).
    pub(super) fn validate(self, i: usize, env: &dyn Fn(&str) -> Option<String>) -> Result<SinkConfig, Invalid> {
        let path = |k: &str| format!("sinks[{i}].{k}");
        let bad = |k: &str, m: String| Err((path(k), m));
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return bad("name", "must be non-empty and use only letters, digits, `_` and `-`".into());
        }
        let only = |k: &str, set: bool, kind: &str| -> Result<(), Invalid> {
            if set { Err((path(k), format!("does not apply to a {kind} sink"))) } else { Ok(()) }
        };
        let kind = match self.kind {
            SinkKindName::Http => {
                only("topic", self.topic.is_some(), "http")?;
                only("qos", self.qos.is_some(), "http")?;
                let Some(url) = self.url else { return bad("url", "an http sink needs `url`".into()) };
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return bad("url", "must start with https:// or http://".into());
                }
                let mut headers = Vec::new();
                for (name, value) in self.headers {
                    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
                        return bad("headers", format!("`{name}` is not a header name"));
                    }
                    let value = match value.strip_prefix("env:") {
                        Some(var) => env(var).ok_or_else(|| {
                            (path(&format!("headers.{name}")), format!("environment variable {var} is not set"))
                        })?,
                        None => value,
                    };
                    if value.bytes().any(|b| b.is_ascii_control()) {
                        return bad(&format!("headers.{name}"), "must not contain control characters".into());
                    }
                    headers.push((name, value));
                }
                let timeout = self.timeout.unwrap_or(Duration::from_secs(10));
                if timeout.is_zero() {
                    return bad("timeout", "must be more than 0".into());
                }
                let cloudevents = self.body != Some(BodyName::Data);
                SinkKind::Http(HttpSink { url, headers, cloudevents, timeout, ca_file: self.ca_file })
            }
            SinkKindName::Mqtt => {
                for (k, set) in [
                    ("url", self.url.is_some()),
                    ("headers", !self.headers.is_empty()),
                    ("body", self.body.is_some()),
                    ("timeout", self.timeout.is_some()),
                    ("ca_file", self.ca_file.is_some()),
                ] {
                    only(k, set, "mqtt")?;
                }
                let Some(topic) = self.topic else { return bad("topic", "an mqtt sink needs `topic`".into()) };
                let topic = TopicTemplate::parse(&topic).map_err(|m| (path("topic"), m))?;
                let qos = self.qos.unwrap_or(1);
                if qos > 1 {
                    // One publish at a time, done at its PUBACK: QoS 2's extra round trip
                    // would buy nothing the idempotency key does not.
                    return bad("qos", "must be 0 or 1".into());
                }
                SinkKind::Mqtt { topic, qos }
            }
        };
        if self.max_queue_mb == 0 {
            return bad("max_queue_mb", "must be at least 1".into());
        }
        let mut retry = RetryPolicy::default();
        if let Some(n) = self.retry.max_attempts {
            if n == 0 {
                return bad("retry.max_attempts", "must be at least 1".into());
            }
            retry.max_attempts = n;
        }
        if let Some(age) = self.retry.max_age {
            retry.max_age = age;
        }
        if let Some(w) = self.retry.min_wait {
            if w.is_zero() {
                return bad("retry.min_wait", "must be more than 0".into());
            }
            retry.min_wait = w;
            retry.max_wait = retry.max_wait.max(w);
        }
        if let Some(w) = self.retry.max_wait {
            if w < retry.min_wait {
                return bad("retry.max_wait", format!("must be at least retry.min_wait ({:?})", retry.min_wait));
            }
            retry.max_wait = w;
        }
        let rate = match self.rate {
            None => None,
            Some(r) if r.burst == 0 => return bad("rate.burst", "must be at least 1".into()),
            Some(r) if !(r.per_second > 0.0 && r.per_second.is_finite()) => {
                return bad("rate.per_second", "must be a number above 0".into());
            }
            Some(r) => Some((r.burst, r.per_second)),
        };
        Ok(SinkConfig {
            name: self.name,
            kind,
            dry_run: self.dry_run,
            max_queue_bytes: self.max_queue_mb << 20,
            retry,
            rate,
        })
    }
}

/// Checks every sink, and that no name is used twice.
pub(super) fn validate(raw: Vec<RawSink>, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<SinkConfig>, Invalid> {
    let mut out: Vec<SinkConfig> = Vec::with_capacity(raw.len());
    for (i, s) in raw.into_iter().enumerate() {
        let s = s.validate(i, env)?;
        if out.iter().any(|o| o.name == s.name) {
            return Err((format!("sinks[{i}].name"), format!("`{}` names another sink already", s.name)));
        }
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Vec<SinkConfig>, Invalid> {
        #[derive(Deserialize)]
        struct T {
            sinks: Vec<RawSink>,
        }
        let t: T = toml::from_str(toml_text).expect("TOML");
        validate(t.sinks, &|v| (v == "TOKEN").then(|| "Bearer s3cret".to_owned()))
    }

    #[test]
    fn sinks_are_checked_naming_the_key_and_secrets_are_never_printed() {
        let ok = parse(
            r#"
            [[sinks]]
            name = "pager"
            kind = "http"
            url = "https://example.com/hook"
            headers = { Authorization = "env:TOKEN", X-Team = "ops" }
            [[sinks]]
            name = "heaters"
            kind = "mqtt"
            topic = "devices/{key}/cmd"
            qos = 0
            rate = { burst = 5, per_second = 0.5 }
            "#,
        )
        .expect("valid");
        let SinkKind::Http(h) = &ok[0].kind else { panic!("http") };
        assert_eq!(
            h.headers,
            [("Authorization".to_owned(), "Bearer s3cret".to_owned()), ("X-Team".into(), "ops".into())]
        );
        assert!(h.cloudevents);
        assert!(!format!("{ok:?}").contains("s3cret"), "{ok:?}");
        assert!(matches!(ok[1].kind, SinkKind::Mqtt { qos: 0, .. }) && ok[1].rate == Some((5, 0.5)));
        for (text, key) in [
            ("name = \"a b\"\nkind = \"http\"\nurl = \"https://x\"", "sinks[0].name"),
            ("name = \"a\"\nkind = \"http\"", "sinks[0].url"),
            ("name = \"a\"\nkind = \"http\"\nurl = \"ftp://x\"", "sinks[0].url"),
            (
                "name = \"a\"\nkind = \"http\"\nurl = \"https://x\"\nheaders = { A = \"env:NOPE\" }",
                "sinks[0].headers.A",
            ),
            ("name = \"a\"\nkind = \"http\"\nurl = \"https://x\"\ntopic = \"t\"", "sinks[0].topic"),
            ("name = \"a\"\nkind = \"mqtt\"\ntopic = \"a/#\"", "sinks[0].topic"),
            ("name = \"a\"\nkind = \"mqtt\"\ntopic = \"a\"\nqos = 3", "sinks[0].qos"),
            ("name = \"a\"\nkind = \"mqtt\"\ntopic = \"a\"\nurl = \"https://x\"", "sinks[0].url"),
            (
                "name = \"a\"\nkind = \"mqtt\"\ntopic = \"a\"\nrate = { burst = 0, per_second = 1.0 }",
                "sinks[0].rate.burst",
            ),
        ] {
            let e = parse(&format!("[[sinks]]\n{text}\n")).expect_err(text);
            assert_eq!(e.0, key, "{text}: {}", e.1);
        }
        let e = parse("[[sinks]]\nname = \"a\"\nkind = \"mqtt\"\ntopic = \"x\"\n[[sinks]]\nname = \"a\"\nkind = \"mqtt\"\ntopic = \"y\"\n")
            .expect_err("twice");
        assert_eq!(e.0, "sinks[1].name");
    }
}
