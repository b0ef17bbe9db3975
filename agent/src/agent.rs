//! The running agent: MQTT in -> decode -> engine -> CloudEvents -> MQTT out.
//!
//! ```text
//!  source broker                                                     upstream broker
//!  ─────────────▶ source task ──Inbound──▶ engine task ──Outbound──▶ publisher task ─▶
//!   (subscribe,   (poll, pick     bounded   (decode, Engine::process,  bounded  (publish QoS n;
//!    backoff)      format)        queue      CloudEvents, dead letters) queue    acks via poll task)
//! ```
//!
//! Every queue is bounded, so a slow upstream pushes back instead of growing memory.
//! Shutdown is a future passed in: the source stops reading, the engine drains what it has,
//! the publisher sends what is left and waits (briefly) for the broker's acks.

use crate::config::{Config, Subscription};
use crate::decode::{Format, decode};
use crate::emit::CloudEvent;
use crate::mqtt::{self, Client, ConnectOptions, Incoming};
use crate::rules;
use crate::telemetry::{Snapshot, Stats};
use bytes::Bytes;
use edgewatch_engine::{Engine, Event, Limits, Outputs, Sandbox, Timestamp};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How long the publisher waits for acks of what it sent before it disconnects at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the agent could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    RulesDir(#[from] rules::RulesDirError),
    #[error("cannot create the state directory {dir}: {source}")]
    StateDir { dir: String, source: std::io::Error },
    #[error("an agent task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Connection state, for readiness checks (tests, the demo, later `/healthz`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Connected to the source broker and every subscription acknowledged.
    pub source_subscribed: bool,
    /// Connected to the upstream broker.
    pub upstream_connected: bool,
}

impl Readiness {
    /// Both sides are up.
    pub fn is_ready(&self) -> bool {
        self.source_subscribed && self.upstream_connected
    }
}

/// A message as received, before decoding.
#[derive(Debug)]
struct Inbound {
    topic: String,
    payload: Bytes,
    format: Format,
    received: Timestamp,
}

/// A message for the upstream broker.
#[derive(Debug)]
struct Outbound {
    topic: String,
    payload: Vec<u8>,
    qos: u8,
}

/// A configured agent, ready to run.
#[derive(Debug)]
pub struct Agent {
    config: Config,
    engine: Engine,
    /// Shared with whoever wants to read the counters while the agent runs.
    stats: Arc<Stats>,
    /// Published connection state; receivers come from [`Agent::readiness`].
    ready: watch::Sender<Readiness>,
}

impl Agent {
    /// Loads the rules of `config.rules_dir`. Rule files that fail to compile are logged with
    /// `file:line:col` and left out; the agent still starts with the others.
    pub fn new(config: Config) -> Result<Agent, AgentError> {
        std::fs::create_dir_all(&config.state_dir)
            .map_err(|source| AgentError::StateDir { dir: config.state_dir.display().to_string(), source })?;
        let sandbox = Arc::new(Sandbox::new(Limits { max_operations: config.max_operations, ..Limits::default() }));
        let loaded = rules::load(&sandbox, &config.rules_dir)?;
        let stats = Arc::new(Stats::default());
        for error in &loaded.errors {
            stats.rule_file_errors.fetch_add(1, Relaxed);
            tracing::error!(%error, "Rule file not loaded.");
        }
        tracing::info!(dir = %config.rules_dir.display(), files = loaded.files, rules = loaded.rules.len(), "Rules loaded.");
        if loaded.rules.is_empty() {
            tracing::warn!(dir = %config.rules_dir.display(), "No rules: events will be received but nothing will fire.");
        }
        let (tables, table_errors) = rules::load_tables(&config.rules_dir, &config.tables);
        for error in &table_errors {
            stats.rule_file_errors.fetch_add(1, Relaxed);
            tracing::error!(%error, "Lookup table not loaded.");
        }
        let engine = Engine::with_config(sandbox, loaded.rules, tables, config.engine.clone());
        let (ready, _) = watch::channel(Readiness::default());
        Ok(Agent { config, engine, stats, ready })
    }

    /// The counters, live.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Connection state, live.
    pub fn readiness(&self) -> watch::Receiver<Readiness> {
        self.ready.subscribe()
    }

    /// Names of the loaded rules.
    pub fn rule_names(&self) -> Vec<String> {
        self.engine.rules().iter().map(|r| r.name.to_string()).collect()
    }

    /// Runs until `shutdown` completes, then drains and returns the final counters.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<Snapshot, AgentError> {
        let Agent { config, engine, stats, ready } = self;
        let config = Arc::new(config);
        let ready = Arc::new(ready);
        let cap = config.queue_capacity;

        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });

        let (in_tx, in_rx) = mpsc::channel::<Inbound>(cap);
        let (out_tx, out_rx) = mpsc::channel::<Outbound>(cap);
        let packet = config.max_payload_bytes.saturating_add(64 * 1024);

        let (src_client, src_conn) = mqtt::connect(
            &config.source,
            "source",
            &ConnectOptions { request_capacity: 64, max_packet_size: packet, last_will: None },
        );
        let (up_client, up_conn) = mqtt::connect(
            &config.upstream.broker,
            "upstream",
            &ConnectOptions { request_capacity: cap, max_packet_size: packet, last_will: None },
        );

        let source = tokio::spawn(source_task(
            src_conn,
            src_client,
            config.subscriptions.clone(),
            in_tx,
            stats.clone(),
            ready.clone(),
            stop_rx,
        ));
        let engine_task = tokio::spawn(engine_task(engine, in_rx, out_tx, config.clone(), stats.clone()));
        let (done_tx, done_rx) = watch::channel(false);
        let poller = tokio::spawn(upstream_poll_task(up_conn, stats.clone(), ready.clone(), done_rx));
        let publisher = tokio::spawn(publisher_task(up_client, out_rx, stats.clone(), done_tx));

        source.await?;
        engine_task.await?;
        publisher.await?;
        poller.await?;
        let summary = stats.snapshot();
        tracing::info!(%summary, "Agent stopped.");
        Ok(summary)
    }
}

async fn source_task(
    mut conn: mqtt::Connection,
    client: Client,
    subs: Vec<Subscription>,
    in_tx: mpsc::Sender<Inbound>,
    stats: Arc<Stats>,
    ready: Arc<watch::Sender<Readiness>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut subacks = 0usize;
    loop {
        let incoming = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            incoming = conn.poll() => incoming,
        };
        match incoming {
            Incoming::Connected { session_present } => {
                tracing::info!(connection = "source", session_present, "Connected to the source broker.");
                subacks = 0;
                // Subscribing goes through the request queue: never await it in this task.
                let client = client.clone();
                let subs = subs.clone();
                tokio::spawn(async move {
                    for s in &subs {
                        if let Err(error) = client.subscribe(&s.filter, s.qos).await {
                            tracing::error!(filter = %s.filter, %error, "Subscription not sent.");
                        }
                    }
                });
            }
            Incoming::SubAck => {
                subacks += 1;
                if subacks == subs.len() {
                    tracing::info!(subscriptions = subs.len(), "Subscribed to every sensor topic.");
                    ready.send_modify(|r| r.source_subscribed = true);
                }
            }
            Incoming::Publish { topic, payload } => {
                stats.received.fetch_add(1, Relaxed);
                let format = subs.iter().find(|s| s.pattern.matches(&topic)).map(|s| s.format).unwrap_or_default();
                let received = Timestamp::from_system_time(SystemTime::now());
                if in_tx.send(Inbound { topic, payload, format, received }).await.is_err() {
                    break;
                }
            }
            Incoming::Disconnected { error, retry_in } => {
                ready.send_modify(|r| r.source_subscribed = false);
                stats.disconnected(conn.name(), &error, retry_in);
            }
            Incoming::PubAck => {}
        }
    }
    if tokio::time::timeout(Duration::from_millis(500), client.disconnect()).await.is_err() {
        tracing::debug!("Source DISCONNECT not sent in time.");
    }
}

async fn engine_task(
    mut engine: Engine,
    mut in_rx: mpsc::Receiver<Inbound>,
    out_tx: mpsc::Sender<Outbound>,
    config: Arc<Config>,
    stats: Arc<Stats>,
) {
    let source = format!("edgewatch/{}", config.agent_id);
    let deadletter_topic = config.upstream.deadletter_topic();
    let errors_topic = config.upstream.errors_topic();
    let mut outputs = Outputs::default();
    loop {
        // Sleep until the engine's next timer (a missing heartbeat, a window closing), or
        // until input arrives, whichever is first.
        let wake = engine.next_deadline().map(|d| {
            let wait = d.millis().saturating_sub(wall_clock().millis()).max(0);
            Instant::now() + Duration::from_millis(u64::try_from(wait).unwrap_or(0))
        });
        let msg = tokio::select! {
            msg = in_rx.recv() => match msg {
                Some(m) => Some(m),
                None => break,
            },
            () = sleep_until(wake) => None,
        };
        outputs.clear();
        match msg {
            None => engine.tick(wall_clock(), &mut outputs),
            Some(msg) => {
                let payload = match decode(msg.format, &msg.payload, config.max_payload_bytes) {
                    Ok(p) => p,
                    Err(error) => {
                        stats.decode_failed(&msg.topic, &error);
                        let letter =
                            dead_letter(&msg.topic, &msg.payload, msg.received, error.reason(), &error.to_string());
                        if out_tx
                            .send(Outbound { topic: deadletter_topic.clone(), payload: letter, qos: 1 })
                            .await
                            .is_ok()
                        {
                            stats.dead_letters.fetch_add(1, Relaxed);
                        }
                        continue;
                    }
                };
                let event = Event::new(msg.topic, payload, &msg.payload, msg.received);
                let topic = event.topic.clone();
                engine.process(event, wall_clock(), &mut outputs);
                stats.processed.fetch_add(1, Relaxed);
                if outputs.matched == 0 && outputs.duplicates == 0 && outputs.late.is_empty() {
                    stats.unmatched(&topic);
                }
            }
        }
        if outputs.duplicates > 0 {
            stats.duplicates.fetch_add(outputs.duplicates as u64, Relaxed);
        }
        for late in &outputs.late {
            stats.late.fetch_add(1, Relaxed);
            let raw = serde_json::to_vec(&late.payload).unwrap_or_default();
            let letter = dead_letter(&late.topic, &raw, late.time, "late", "older than the allowed lateness");
            if out_tx.send(Outbound { topic: deadletter_topic.clone(), payload: letter, qos: 1 }).await.is_ok() {
                stats.dead_letters.fetch_add(1, Relaxed);
            }
        }
        for fault in &outputs.faults {
            stats.rule_failed(fault);
            let report = serde_json::json!({
                "rule": &*fault.rule,
                "location": fault.location,
                "error": fault.message,
                "disabled": fault.disabled,
                "time": wall_clock().to_rfc3339(),
            });
            let msg = Outbound { topic: errors_topic.clone(), payload: report.to_string().into_bytes(), qos: 1 };
            if out_tx.send(msg).await.is_err() {
                return;
            }
        }
        for composite in &outputs.events {
            stats.events.fetch_add(1, Relaxed);
            tracing::debug!(rule = %composite.rule, key = %composite.key, id = %composite.id, "Composite event.");
            let payload = CloudEvent::new(composite, &source).to_json();
            let topic = config.upstream.event_topic(&composite.rule);
            if out_tx.send(Outbound { topic, payload, qos: config.upstream.qos }).await.is_err() {
                return;
            }
        }
    }
}

fn wall_clock() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The dead letter for a payload that did not decode: where it came from, why, and (a
/// bounded prefix of) what it was.
fn dead_letter(topic: &str, payload: &[u8], time: Timestamp, reason: &str, error: &str) -> Vec<u8> {
    const SHOWN: usize = 256;
    let shown = &payload[..payload.len().min(SHOWN)];
    serde_json::json!({
        "topic": topic,
        "reason": reason,
        "error": error,
        "size": payload.len(),
        "received": time.to_rfc3339(),
        "payload_prefix": String::from_utf8_lossy(shown),
    })
    .to_string()
    .into_bytes()
}

async fn upstream_poll_task(
    mut conn: mqtt::Connection,
    stats: Arc<Stats>,
    ready: Arc<watch::Sender<Readiness>>,
    mut done: watch::Receiver<bool>,
) {
    loop {
        let incoming = tokio::select! {
            _ = done.wait_for(|d| *d) => break,
            incoming = conn.poll() => incoming,
        };
        match incoming {
            Incoming::Connected { .. } => {
                tracing::info!(connection = "upstream", "Connected to the upstream broker.");
                ready.send_modify(|r| r.upstream_connected = true);
            }
            Incoming::PubAck => {
                tracing::trace!("PUBACK from upstream.");
                stats.acked.fetch_add(1, Relaxed);
            }
            Incoming::Disconnected { error, retry_in } => {
                ready.send_modify(|r| r.upstream_connected = false);
                stats.disconnected(conn.name(), &error, retry_in);
            }
            Incoming::Publish { .. } | Incoming::SubAck => {}
        }
    }
}

async fn publisher_task(
    client: Client,
    mut out_rx: mpsc::Receiver<Outbound>,
    stats: Arc<Stats>,
    done: watch::Sender<bool>,
) {
    let mut sent_qos1 = 0u64;
    while let Some(msg) = out_rx.recv().await {
        match client.publish(&msg.topic, msg.qos, false, msg.payload).await {
            Ok(()) => {
                stats.published.fetch_add(1, Relaxed);
                if msg.qos > 0 {
                    sent_qos1 += 1;
                }
            }
            Err(error) => tracing::error!(topic = %msg.topic, %error, "Event not handed to the upstream connection."),
        }
    }
    // Engine is done: wait for the broker to acknowledge what we sent, then hang up.
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while stats.acked.load(Relaxed) < sent_qos1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::debug!(sent_qos1, acked = stats.acked.load(Relaxed), "Publisher drained.");
    let unacked = sent_qos1.saturating_sub(stats.acked.load(Relaxed));
    if unacked > 0 {
        tracing::warn!(unacked, "Stopping with events the upstream broker has not acknowledged.");
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), client.disconnect()).await;
    let _ = done.send(true);
}
