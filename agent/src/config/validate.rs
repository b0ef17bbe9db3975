//! The second stage: [`RawConfig`] -> [`Config`], every value checked and every default filled
//! in. An error is a key path and a message ([`Invalid`]); `Config::from_toml` adds the file or
//! environment variable it came from.

use super::{
    BrokerConfig, Config, RawBroker, RawConfig, Secret, StateConfig, Subscription, TopicTemplate, UpstreamConfig,
};
use edgewatch_engine::TopicPattern;
use std::time::Duration;

use super::{Invalid, invalid};

/// A topic level (agent id, ...) must not contain what MQTT treats as syntax: the wire crate's
/// check, the one the simulator uses for device ids and channels too.
fn check_level(path: &str, s: &str) -> Result<(), Invalid> {
    edgewatch_wire::check_topic_level(s).map_err(|e| invalid(path, e.to_string()))
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
        let schemas = super::schemas::validate(self.schemas)?;
        let privacy_key = super::privacy::key(&self.privacy)?;
        let key_fields = super::privacy::key_fields(self.engine.id_field.as_deref());
        let mut subscriptions = Vec::with_capacity(self.subscriptions.len());
        let mut remember = Vec::new();
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
            if s.format == crate::decode::Format::Sparkplug {
                let key = format!("{path}.format");
                if !s.topic.starts_with("spBv1.0/") {
                    return Err(invalid(&key, format!("`sparkplug` reads topics under `spBv1.0/`, not `{}`", s.topic)));
                }
                let unsupported = [
                    ("strip_prefix", !strip_prefix.is_empty()),
                    ("schema", s.schema.is_some()),
                    ("privacy", s.privacy.is_some()),
                    ("remember", !s.remember.is_empty()),
                ];
                if let Some((what, _)) = unsupported.iter().find(|(_, set)| *set) {
                    return Err(invalid(&format!("{path}.{what}"), "does not apply to `format = \"sparkplug\"`"));
                }
            }
            let schema = match &s.schema {
                None => None,
                Some(name) => match schemas.get(name) {
                    Some(schema) => Some(std::sync::Arc::new(schema.clone())),
                    None => {
                        let known = schemas.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
                        return Err(invalid(
                            &format!("{path}.schema"),
                            format!("no `[schemas.{name}]` is declared (declared: {known})"),
                        ));
                    }
                },
            };
            let privacy = match s.privacy {
                None => None,
                Some(raw) => {
                    let p = super::privacy::validate(&path, raw, privacy_key.is_some(), &key_fields)?;
                    // History keeps numbers: a field dropped or made a pseudonym has none to keep.
                    if let Some(f) = s.remember.iter().find(|f| {
                        p.fields.iter().any(|r| {
                            &r.name == *f
                                && matches!(
                                    r.protect,
                                    crate::privacy::Protect::Drop | crate::privacy::Protect::Pseudonym { .. }
                                )
                        })
                    }) {
                        return Err(invalid(
                            &format!("{path}.remember"),
                            format!("`{f}` is dropped or pseudonymised by `privacy`: no number is left to remember"),
                        ));
                    }
                    (!p.fields.is_empty()).then(|| std::sync::Arc::new(p))
                }
            };
            let sub = Subscription { filter: s.topic, pattern, qos, format: s.format, strip_prefix, schema, privacy };
            if let Some(r) = super::history::remembered(&path, &sub, &s.remember)? {
                if !self.state.durable {
                    return Err(invalid(
                        &format!("{path}.remember"),
                        "history is kept on disk: it needs `state.durable = true`",
                    ));
                }
                remember.push(r);
            }
            subscriptions.push(sub);
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
        let console = self.console.validate()?;
        if let (Some(c), Some(m)) = (&console, metrics_listen) {
            if c.listen == m && m.port() != 0 {
                return Err(invalid("console.listen", "is `agent.metrics_listen` too: give the console its own port"));
            }
        }
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
        let (engine_history, history) = self.history.validate(remember)?;
        engine.history = engine_history;
        let journal = self.journal.validate()?;
        let sparkplug = self.sparkplug.validate()?;
        let event_log = self.event_log.validate_event_log()?;
        let mut sinks = super::sinks::validate(self.sinks, &|var| std::env::var(var).ok())?;
        for sink in &mut sinks {
            if let super::SinkKind::Mqtt { topic, .. } = &mut sink.kind {
                *topic = topic.clone().with_agent(&self.agent.id);
            }
        }
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
        if !(1..=4096).contains(&self.audit.max_mb) {
            return Err(invalid("audit.max_mb", "must be between 1 and 4096"));
        }
        let audit = crate::audit::AuditLimits { max_bytes: self.audit.max_mb * 1024 * 1024 };
        let threads = match usize::try_from(self.agent.threads) {
            Ok(n @ 1..=64) => n,
            _ => return Err(invalid("agent.threads", "must be from 1 to 64")),
        };
        Ok(Config {
            agent_id: self.agent.id.clone(),
            state_dir: self.agent.state_dir,
            metrics_listen,
            console,
            file: None,
            threads,
            rules_dir: self.rules.dir,
            max_operations: self.rules.max_operations,
            watch_rules: self.rules.watch,
            control_topic: self.rules.control_topic.then(|| format!("{topic_prefix}/control/reload")),
            alarms_topic: self.alarms.control_topic.then(|| format!("{topic_prefix}/control/alarms")),
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
            history,
            journal,
            event_log,
            sinks,
            privacy_key,
            audit,
            sparkplug,
            fingerprint: String::new(),
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
