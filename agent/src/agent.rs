//! The running agent: MQTT in -> decode -> engine -> state + outbox -> MQTT out.
//!
//! ```text
//!  source broker                                                         upstream broker
//!  ──▶ source task ─Input─▶ engine task ──commit──▶ sled (state, outbox) ──▶ publisher ──▶
//!      (persistent    │      (decode, Engine::process, batch,      │           (in order,
//!       session,      │       flush, then acks)                    │            QoS 1, delete
//!       manual acks)  └──────────── acker task ◀── acks ───────────┘            on PUBACK)
//! ```
//!
//! Durability: the effects of a message (state changes and the events it caused) are
//! written in one sled batch and flushed before the message is acknowledged to the sensor
//! broker, so a crash at any point loses nothing: an unacknowledged message is redelivered,
//! and its duplicate is recognised by its id (device + sequence number). Events leave from the
//! outbox in order and are deleted only on PUBACK; their ids are deterministic, so a replay
//! after a crash produces the same ids. Batches form by themselves under load (everything
//! already queued is written together) and stay one message when idle.
//!
//! One bad message never stops it: an oversized one is read past by the connection and
//! dead-lettered, and after a crash the first redeliveries are counted before they are
//! processed, so one that crashes the agent again and again is quarantined (`poison`).
//!
//! Every queue is bounded (the outbox by `state.max_outbox_mb`, on disk or in memory).
//! Shutdown and reload requests are values passed to [`Agent::run`]; the library installs
//! no signal handler. At shutdown the source stops handing messages on but keeps its
//! connection until the acknowledgements of what the engine committed have gone out, the
//! engine commits what it has, and the publisher sends what it can for a few seconds.

use crate::config::{Config, Subscription};
use crate::decode::{DecodeError, Format, decode_with};
use crate::emit::CloudEvent;
use crate::health::Readiness;
use crate::outbox::Outbox;
use crate::mqtt::{self, AckToken, Client, ConnectOptions, Incoming};
use crate::reload::{self, RuleFiles, Scan, Trigger};
use crate::rules;
use crate::store::{self, Batch, Opened, OutboxEntry, Store};
use crate::telemetry::{Snapshot, Stats};
use bytes::Bytes;
use edgewatch_engine::{Engine, Event, Limits, Outputs, Sandbox, Timestamp, Touched};
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

/// How long the publisher keeps sending after shutdown is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Most events handed to the upstream connection and not yet acknowledged. It bounds upstream
/// throughput to the window over the broker's PUBACK round trip, which grows under load: 64
/// capped the agent near 11k events/s on a loaded loopback broker.
const PUBLISH_WINDOW: usize = 1024;
/// How often the agent records that it is alive (for the downtime after a crash).
const ALIVE_EVERY: Duration = Duration::from_secs(5);
/// When the first snapshot is taken after a start (or `state.snapshot_interval`, if shorter).
const FIRST_SNAPSHOT_AFTER: Duration = Duration::from_secs(10);
/// After a crash, how many of the first messages on the resumed session may be redeliveries
/// of the one that crashed it. A broker resends unacknowledged messages first, at most its
/// in-flight window (Mosquitto's default is 20; rumqttd's is configured). Each of these
/// costs a flush before it is processed, only after a crash.
const REDELIVERY_WINDOW: usize = 100;
/// How often gauges that need the engine (keys per rule) are refreshed for `/metrics`.
const GAUGES_EVERY: Duration = Duration::from_secs(1);

/// Why the agent could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    RulesDir(#[from] rules::RulesDirError),
    /// The I/O error is part of the message (not a `source`), so a chain says it once.
    #[error("cannot create the state directory {dir}: {error}")]
    StateDir { dir: String, error: std::io::Error },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("an agent task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::ListenError),
}

/// What the source task hands the engine task.
#[derive(Debug)]
enum Input {
    Message {
        topic: String,
        payload: Bytes,
        format: Format,
        received: Timestamp,
        /// When it came off the socket, for the latency histogram.
        arrived: Instant,
        ack: Option<AckToken>,
        /// Maybe a redelivery of the message the last run crashed on.
        suspect: bool,
    },
    /// A message over the size limit, read past by the connection: dead-lettered, never
    /// decoded. Only its size is known; the payload was never kept.
    TooLarge {
        topic: String,
        size: usize,
        received: Timestamp,
        arrived: Instant,
        ack: Option<AckToken>,
    },
    /// The sensor link went down: silence says nothing about devices meanwhile.
    LinkDown,
    LinkUp,
    /// New rules (and maybe tables), swapped in between two events.
    Reload(Box<Scan>),
    /// A message with nothing to process (the control topic, an unroutable topic) whose
    /// acknowledgement must still go out in order, after those received before it.
    Ack(AckToken),
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
    outbox: Outbox,
    /// Events about the agent itself to send first (restart, recovery).
    startup_events: Vec<(&'static str, serde_json::Value)>,
    /// The rule files, for reloads.
    files: RuleFiles,
    /// The rules' status at start, published retained.
    initial_status: serde_json::Value,
    /// The `/metrics` and `/healthz` listener, bound at start (a taken port refuses to start).
    metrics: Option<std::net::TcpListener>,
    /// The last run did not stop cleanly: the first redeliveries may include the message it
    /// crashed on, and are counted before they are processed (poison-message quarantine).
    after_crash: bool,
}

impl Agent {
    /// Loads the rules of `config.rules_dir` and the saved state. Rule files that fail to
    /// compile are logged with `file:line:col` and left out; the agent still starts with the
    /// others. An unreadable database is moved aside and the latest snapshot restored.
    pub async fn new(config: Config) -> Result<Agent, AgentError> {
        std::fs::create_dir_all(&config.state_dir)
            .map_err(|error| AgentError::StateDir { dir: config.state_dir.display().to_string(), error })?;
        let sandbox = Arc::new(Sandbox::new(Limits { max_operations: config.max_operations, ..Limits::default() }));
        let mut files = RuleFiles::new(&config.rules_dir, config.tables.clone(), sandbox.clone());
        let scan = files.scan(wall_clock())?;
        let stats = Arc::new(Stats::new(config.subscriptions.iter().map(|s| s.filter.clone()).collect()));
        for error in &scan.errors {
            stats.rule_file_errors.fetch_add(1, Relaxed);
            error.log();
        }
        tracing::info!(dir = %config.rules_dir.display(), rules = scan.rules.len(), "Rules loaded.");
        if scan.rules.is_empty() {
            tracing::warn!(dir = %config.rules_dir.display(), "No rules: events will be received but nothing will fire.");
        }
        stats.detail.rules_loaded.store(scan.rules.len() as u64, Relaxed);
        let mut engine =
            Engine::with_config(sandbox, scan.rules, scan.tables.unwrap_or_default(), config.engine.clone());
        let mut startup_events = Vec::new();
        let mut after_crash = false;
        let initial_status = scan.status;
        let outbox = if config.state.durable {
            let (store, opened) =
                store::open_or_recover(&config.state_dir, config.state.cache_bytes, config.state.max_outbox_bytes)
                    .await?;
            let saved = store.load_state()?;
            let mut refused = 0usize;
            for (what, bytes) in &saved {
                if let Err(error) = engine.import(what, bytes) {
                    refused += 1;
                    tracing::warn!(%error, "Saved state dropped.");
                }
            }
            let restored_keys = saved.len() - refused;
            startup_events.extend(restart_events(&mut engine, &opened, store.last_alive(), restored_keys));
            after_crash = !store.take_clean_stop()?;
            // On disk before anything else happens: a crash of this run must be seen as one.
            store.flush().await?;
            Outbox::durable(store)
        } else {
            Outbox::memory(config.state.max_outbox_bytes)
        };
        let (ready, _) = watch::channel(Readiness::default());
        let metrics = config.metrics_listen.map(crate::metrics::bind).transpose()?;
        Ok(Agent { config, engine, stats, ready, outbox, startup_events, files, initial_status, metrics, after_crash })
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

    /// Runs until `shutdown` completes, then drains and returns the final counters. Each
    /// trigger received on `reloads` rescans the rules (the binary sends one per SIGHUP; the
    /// library installs no signal handler). A closed `reloads` only ends those requests.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        reloads: mpsc::Receiver<Trigger>,
    ) -> Result<Snapshot, AgentError> {
        let Agent { config, engine, stats, ready, outbox, startup_events, files, initial_status, metrics, after_crash } =
            self;
        let config = Arc::new(config);
        let ready = Arc::new(ready);
        let cap = config.queue_capacity;

        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });

        let metrics_server = metrics.map(|listener| {
            let sources = Arc::new(metrics_sources(&outbox, stats.clone(), ready.subscribe()));
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(error) = crate::metrics::serve(listener, sources, stopped).await {
                    tracing::error!(%error, "Metrics listener failed.");
                }
            })
        });
        let (in_tx, in_rx) = mpsc::channel::<Input>(cap);
        // Unbounded on purpose, and still bounded: it holds acks of messages the broker has
        // delivered and not had acknowledged, at most its in-flight window. A bounded channel
        // here closes a cycle under overload: committer waits for the acker, the acker for the
        // source connection's request queue, which only the source task drains, and the
        // source task waits for room in the engine's queue, which waits for the committer.
        let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Vec<AckToken>>();
        let packet = config.max_payload_bytes.saturating_add(64 * 1024);
        let durable = outbox.store().is_some();

        let (src_client, src_conn) = mqtt::connect(
            &config.source,
            "source",
            &ConnectOptions {
                request_capacity: 256,
                max_packet_size: packet,
                last_will: None,
                persistent: durable,
                manual_acks: durable,
                inflight: 100,
            },
        );
        // If the gateway dies, the broker says so: a retained `offline` on the status topic.
        let will = serde_json::json!({ "status": "offline", "agent": config.agent_id, "reason": "connection lost" });
        let (up_client, up_conn) = mqtt::connect(
            &config.upstream.broker,
            "upstream",
            &ConnectOptions {
                request_capacity: PUBLISH_WINDOW * 2,
                max_packet_size: packet,
                last_will: Some((config.upstream.agent_status_topic(), will.to_string().into(), 1, true)),
                persistent: true,
                manual_acks: false,
                inflight: PUBLISH_WINDOW as u16,
            },
        );
        let sent = Arc::new(Notify::new());
        let inflight: Arc<Mutex<Inflight>> = Arc::default();

        let (reload_tx, reload_rx) = mpsc::channel::<Trigger>(8);
        let mut subscriptions = config.subscriptions.clone();
        if let Some(topic) = &config.control_topic {
            if let Ok(pattern) = edgewatch_engine::TopicPattern::parse(topic) {
                subscriptions.push(Subscription {
                    filter: topic.clone(),
                    pattern,
                    qos: 1,
                    format: Format::Scalar,
                    strip_prefix: String::new(),
                });
            }
        }
        let reloader = tokio::spawn(reload_task(
            files,
            (reload_tx.clone(), reload_rx, reloads),
            in_tx.clone(),
            config.clone(),
            stop_rx.clone(),
        ));
        let (acks_done_tx, acks_done_rx) = watch::channel(false);
        let source = tokio::spawn(source_task(
            (src_conn, src_client.clone()),
            subscriptions,
            (in_tx, reload_tx, config.control_topic.clone()),
            if after_crash { REDELIVERY_WINDOW } else { 0 },
            stats.clone(),
            ready.clone(),
            (stop_rx, acks_done_rx),
        ));
        let acker = tokio::spawn(acker_task(src_client, ack_rx, acks_done_tx));
        let (connected_tx, connected_rx) = watch::channel(0u64);
        let engine_task = tokio::spawn(engine_task(
            engine,
            (in_rx, connected_rx),
            ack_tx,
            outbox.clone(),
            sent.clone(),
            config.clone(),
            stats.clone(),
            (startup_events, initial_status),
        ));
        let (done_tx, done_rx) = watch::channel(false);
        let (engine_done_tx, engine_done_rx) = watch::channel(false);
        let poller = tokio::spawn(upstream_poll_task(
            up_conn,
            outbox.clone(),
            (inflight.clone(), connected_tx),
            sent.clone(),
            stats.clone(),
            ready.clone(),
            done_rx,
        ));
        let store = outbox.store().cloned();
        let publisher = tokio::spawn(publisher_task(
            up_client,
            outbox,
            (inflight, ready.subscribe()),
            sent.clone(),
            stats.clone(),
            engine_done_rx,
            done_tx,
        ));

        source.await?;
        reloader.await?;
        engine_task.await?;
        let _ = engine_done_tx.send(true);
        sent.notify_one();
        acker.await?;
        publisher.await?;
        poller.await?;
        if let Some(store) = store {
            // What was acknowledged during the drain: delete it, or the next start sends it again.
            if let Err(error) = store.commit(Batch::default()).await {
                tracing::error!(%error, "Acknowledged events not deleted from the outbox; they will be sent again.");
            }
        }
        if let Some(server) = metrics_server {
            server.await?;
        }
        let summary = stats.snapshot();
        tracing::info!(%summary, "Agent stopped.");
        Ok(summary)
    }
}

/// After a restart, whether from the database or from the snapshot after a restore: gives
/// every tracked device a full timeout from now (no storm of `missing`), and returns the
/// events that say so: `restored` (what opening the store had to do) and `restarted`.
/// `last_alive` is the store's "alive" mark (a restored snapshot's, after a restore); none
/// and a clean open means a first start.
fn restart_events(
    engine: &mut Engine,
    opened: &Opened,
    last_alive: Option<i64>,
    restored_keys: usize,
) -> Vec<(&'static str, serde_json::Value)> {
    let mut events = Vec::new();
    let (restored_from, snapshot_time) = match opened {
        Opened::Clean => ("database", None),
        Opened::Recovered { reason, quarantined, snapshot } => {
            let snapshot_time = snapshot.as_ref().ok().map(|t| Timestamp(*t).to_rfc3339());
            let lost = match snapshot {
                Ok(_) => "changes since the snapshot".to_owned(),
                Err(why) => format!("all state and waiting events: {why}"),
            };
            events.push((
                "restored",
                serde_json::json!({
                    "reason": reason,
                    "quarantined": quarantined.display().to_string(),
                    "restored": snapshot.is_ok(),
                    "snapshot_time": snapshot_time,
                    "lost": lost,
                }),
            ));
            (if snapshot.is_ok() { "snapshot" } else { "nothing" }, snapshot_time)
        }
    };
    if last_alive.is_none() && matches!(opened, Opened::Clean) {
        return events;
    }
    let now = wall_clock();
    engine.grace_after_restart(now, &mut Outputs::default());
    let downtime = last_alive.map(|last| (now.millis() - last).max(0));
    tracing::info!(restored_keys, restored_from, downtime_ms = downtime, "State restored after a restart.");
    let mut data = serde_json::json!({
        "down_since": last_alive.map(|t| Timestamp(t).to_rfc3339()),
        "downtime_ms": downtime,
        "restored_keys": restored_keys,
        "restored_from": restored_from,
    });
    if let Some(t) = snapshot_time {
        data["snapshot_time"] = serde_json::json!(t);
    }
    events.push(("restarted", data));
    events
}

/// What `/metrics` reads from this agent.
fn metrics_sources(outbox: &Outbox, stats: Arc<Stats>, ready: watch::Receiver<Readiness>) -> crate::metrics::Sources {
    let (a, b) = (outbox.clone(), outbox.clone());
    let depth: crate::metrics::OutboxGauge = Box::new(move || {
        let (n, bytes) = a.depth();
        (n as u64, bytes)
    });
    let disk: crate::metrics::DiskGauge = Box::new(move || b.size_on_disk());
    crate::metrics::Sources { stats, ready, outbox: depth, disk }
}

async fn source_task(
    (mut conn, client): (mqtt::Connection, Client),
    subs: Vec<Subscription>,
    (in_tx, reload_tx, control_topic): (mpsc::Sender<Input>, mpsc::Sender<Trigger>, Option<String>),
    // Of the first messages on a session resumed after a crash, how many are suspects.
    mut suspects: usize,
    stats: Arc<Stats>,
    ready: Arc<watch::Sender<Readiness>>,
    (mut stop, mut acks_done): (watch::Receiver<bool>, watch::Receiver<bool>),
) {
    let mut subacks = 0usize;
    let mut first_connection = true;
    let mut link_up = false;
    // At a stop, the engine is let go (its input closes) and this task keeps polling the
    // connection until the acknowledgements of what the engine committed have gone out, or
    // DRAIN_TIMEOUT: a message whose effects are on disk must not be redelivered.
    let mut in_tx = Some(in_tx);
    let mut drain_until: Option<Instant> = None;
    loop {
        let incoming = tokio::select! {
            _ = stop.wait_for(|s| *s), if drain_until.is_none() => {
                in_tx = None;
                drain_until = Some(Instant::now() + DRAIN_TIMEOUT);
                continue;
            }
            _ = acks_done.wait_for(|d| *d), if drain_until.is_some() => break,
            () = sleep_until(drain_until) => break,
            incoming = conn.poll() => incoming,
        };
        // Draining: what arrives now stays unacknowledged, for the next run.
        let Some(in_tx) = &in_tx else { continue };
        match incoming {
            Incoming::Connected { session_present } => {
                // Only the session this process resumes first holds redeliveries from before a
                // crash; later reconnects of this process follow no crash.
                if !std::mem::take(&mut first_connection) || !session_present {
                    suspects = 0;
                }
                stats.connected(conn.name());
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
                if !link_up {
                    link_up = true;
                    if in_tx.send(Input::LinkUp).await.is_err() {
                        break;
                    }
                }
            }
            Incoming::SubAck => {
                subacks += 1;
                if subacks == subs.len() {
                    tracing::info!(subscriptions = subs.len(), "Subscribed to every sensor topic.");
                    ready.send_modify(|r| r.source_subscribed = true);
                }
            }
            Incoming::Publish { topic, ack, .. } if control_topic.as_deref() == Some(topic.as_str()) => {
                tracing::info!(topic, "Reload asked for on the control topic.");
                let _ = reload_tx.try_send(Trigger::Control);
                // Never await the client here: this task is what drains its request queue.
                if let Some(ack) = ack {
                    if in_tx.send(Input::Ack(ack)).await.is_err() {
                        break;
                    }
                }
            }
            Incoming::Publish { mut topic, payload, ack } => {
                let arrived = Instant::now();
                let format = route(&subs, &stats, &mut topic);
                let received = Timestamp::from_system_time(SystemTime::now());
                // Only a message that will be redelivered if unacknowledged can be poison.
                let suspect = ack.is_some() && suspects > 0;
                suspects = suspects.saturating_sub(usize::from(ack.is_some()));
                let message = Input::Message { topic, payload, format, received, arrived, ack, suspect };
                if in_tx.send(message).await.is_err() {
                    break;
                }
                let depth = in_tx.max_capacity() - in_tx.capacity();
                stats.detail.queue_depth.store(depth as u64, Relaxed);
            }
            Incoming::TooLarge { mut topic, size, ack } => {
                let arrived = Instant::now();
                route(&subs, &stats, &mut topic);
                let received = Timestamp::from_system_time(SystemTime::now());
                if in_tx.send(Input::TooLarge { topic, size, received, arrived, ack }).await.is_err() {
                    break;
                }
            }
            Incoming::Unroutable { ack } => {
                stats.decode_errors.fetch_add(1, Relaxed);
                if let Some(ack) = ack {
                    if in_tx.send(Input::Ack(ack)).await.is_err() {
                        break;
                    }
                }
            }
            Incoming::Disconnected { error, retry_in } => {
                ready.send_modify(|r| r.source_subscribed = false);
                stats.disconnected(conn.name(), &error, retry_in);
                if link_up {
                    link_up = false;
                    if in_tx.send(Input::LinkDown).await.is_err() {
                        break;
                    }
                }
            }
            Incoming::PubAck => {}
        }
    }
    conn.close(&client, Duration::from_millis(500)).await;
}

/// Counts a received message against its subscription, strips the subscription's prefix
/// from its topic, and says how its payload is decoded.
fn route(subs: &[Subscription], stats: &Stats, topic: &mut String) -> Format {
    stats.received.fetch_add(1, Relaxed);
    let sub = subs.iter().position(|s| s.pattern.matches(topic));
    if let Some(counter) = sub.and_then(|i| stats.detail.received_by_subscription.get(i)) {
        counter.fetch_add(1, Relaxed);
    }
    let sub = sub.and_then(|i| subs.get(i));
    if let Some(prefix) = sub.map(|s| s.strip_prefix.as_str()).filter(|p| !p.is_empty()) {
        if topic.starts_with(prefix) {
            topic.drain(..prefix.len());
        }
    }
    sub.map(|s| s.format).unwrap_or_default()
}

/// Acknowledges messages to the sensor broker, in the order they were received, once their
/// effects are on disk. A task of its own: acks go through rumqttc's request queue, which
/// the task polling the connection must never wait on.
async fn acker_task(client: Client, mut acks: mpsc::UnboundedReceiver<Vec<AckToken>>, done: watch::Sender<bool>) {
    while let Some(batch) = acks.recv().await {
        for token in &batch {
            if let Err(error) = client.ack(token).await {
                tracing::warn!(%error, "Acknowledgement not sent; the broker will redeliver.");
            }
        }
    }
    let _ = done.send(true);
}

/// The engine task's batch: effects of messages not yet on disk, and their acks.
struct Pending {
    batch: Batch,
    acks: Vec<AckToken>,
    /// Arrival of each message in the batch, for the commit latency.
    arrived: Vec<Instant>,
    touched: HashSet<Touched>,
    /// Outbox entries queued so far (both outboxes), to wake the publisher when it grows.
    queued: u64,
    messages: usize,
    /// When the first message of the batch arrived.
    started: Instant,
}

impl Pending {
    fn new() -> Self {
        Pending {
            batch: Batch::default(),
            acks: Vec::new(),
            arrived: Vec::new(),
            touched: HashSet::new(),
            queued: 0,
            messages: 0,
            started: Instant::now(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn engine_task(
    mut engine: Engine,
    (mut in_rx, mut connected): (mpsc::Receiver<Input>, watch::Receiver<u64>),
    ack_tx: mpsc::UnboundedSender<Vec<AckToken>>,
    outbox: Outbox,
    sent: Arc<Notify>,
    config: Arc<Config>,
    stats: Arc<Stats>,
    (startup_events, initial_status): (Vec<(&'static str, serde_json::Value)>, serde_json::Value),
) {
    let source = format!("edgewatch/{}", config.agent_id);
    let mut outputs = Outputs::default();
    let mut pending = Pending::new();
    let (commits, commit_rx) = mpsc::channel::<CommitJob>(1);
    let store = outbox.store().cloned();
    let committer = tokio::spawn(committer_task(store, commit_rx, ack_tx, sent.clone(), stats.clone()));
    for (kind, data) in startup_events {
        tracing::warn!(kind, %data, "Agent event.");
        queue(&outbox, &mut pending, agent_event(&config, &source, kind, data));
    }
    // The rules' status as last published: published again, with live counts, when a rule
    // first meets a message without the value it reads.
    let mut rules_status = initial_status;
    queue(&outbox, &mut pending, status_entry(&config, &rules_status, &stats));
    let started = wall_clock();
    let rule_count = |engine: &Engine| engine.rules().len();
    let mut next_alive = Instant::now();
    let mut next_gauges = Instant::now();
    // The first snapshot soon after the start, not one interval later: until then a damaged
    // database could lose everything since the last one (or all, on a first start).
    let mut next_snapshot = Instant::now() + config.state.snapshot_interval.min(FIRST_SNAPSHOT_AFTER);
    // Events dropped for space and not yet reported upstream, and when the next report may go.
    let mut unreported_drops = 0u64;
    let mut next_drop_report = Instant::now();
    loop {
        // Sleep until the engine's next timer (a missing heartbeat, a window closing), or
        // until input arrives, whichever is first.
        let wake = engine.next_deadline().map(|d| {
            let wait = d.millis().saturating_sub(wall_clock().millis()).max(0);
            Instant::now() + Duration::from_millis(u64::try_from(wait).unwrap_or(0))
        });
        let housekeeping = next_alive.min(next_snapshot).min(next_gauges);
        let wake = Some(wake.map_or(housekeeping, |w| w.min(housekeeping)));
        let has_pending = pending.messages > 0 || !pending.batch.is_empty();
        if connected.has_changed().unwrap_or(false) {
            connected.borrow_and_update();
            queue(&outbox, &mut pending, agent_status(&config, "online", started, rule_count(&engine)));
            pending.messages = pending.messages.max(1);
            continue;
        }
        let input = if has_pending {
            match in_rx.try_recv() {
                Ok(m) => Some(m),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Nothing queued: commit once the batch is `flush_interval` old and the
                    // committer can take it; until then keep adding to it (group commit:
                    // under load one flush covers many messages, idle it costs the interval).
                    let due = pending.started + config.state.flush_interval;
                    tokio::select! {
                        biased;
                        permit = async {
                            tokio::time::sleep_until(due).await;
                            commits.reserve().await
                        } => {
                            match permit {
                                Ok(permit) => commit(&engine, &outbox, &mut pending, (permit, None), &sent),
                                Err(_) => break,
                            }
                            continue;
                        }
                        msg = in_rx.recv() => match msg {
                            Some(m) => Some(m),
                            None => break,
                        },
                    }
                }
            }
        } else {
            tokio::select! {
                msg = in_rx.recv() => match msg {
                    Some(m) => Some(m),
                    None => break,
                },
                () = sleep_until(wake) => None,
                _ = connected.changed() => {
                    queue(&outbox, &mut pending, agent_status(&config, "online", started, rule_count(&engine)));
                    pending.messages = pending.messages.max(1);
                    continue;
                }
            }
        };
        outputs.clear();
        let queued = pending.queued;
        match input {
            None => engine.tick(wall_clock(), &mut outputs),
            Some(Input::LinkDown) => {
                tracing::warn!("Sensor link down: absence detection paused.");
                engine.pause_absence(wall_clock());
            }
            Some(Input::LinkUp) => {
                engine.resume_absence(wall_clock(), &mut outputs);
            }
            Some(Input::Ack(ack)) => {
                if pending.messages == 0 {
                    pending.started = Instant::now();
                }
                pending.messages += 1;
                pending.acks.push(ack);
            }
            Some(Input::Reload(scan)) => {
                let Scan { rules, tables, changed, errors, summary, status } = *scan;
                if changed {
                    stats.detail.rules_loaded.store(rules.len() as u64, Relaxed);
                    engine.reload(rules, wall_clock());
                    if let Some(tables) = tables {
                        engine.set_tables(tables);
                    }
                    stats.reloads.fetch_add(1, Relaxed);
                    tracing::info!(%summary, "Rules reloaded.");
                }
                // New errors only: a broken file is reported once, not at every reload.
                for error in &errors {
                    stats.reload_errors.fetch_add(1, Relaxed);
                    error.log();
                }
                rules_status = status;
                queue(&outbox, &mut pending, status_entry(&config, &rules_status, &stats));
                // Commit the status promptly even with no message in the batch.
                pending.messages = pending.messages.max(1);
            }
            Some(Input::TooLarge { topic, size, received, arrived, ack }) => {
                if pending.messages == 0 {
                    pending.started = Instant::now();
                }
                pending.messages += 1;
                pending.arrived.push(arrived);
                if let Some(ack) = ack {
                    pending.acks.push(ack);
                }
                let error = DecodeError::TooLarge { size, max: config.max_payload_bytes };
                undecodable(&config, &stats, (&outbox, &mut pending), (&topic, &[], size), received, &error);
            }
            Some(Input::Message { topic, payload, format, received, arrived, ack, suspect }) => {
                // A possible redelivery of what the last run crashed on: its delivery is on disk
                // before it is processed.
                let delivery = match (outbox.store(), suspect) {
                    (Some(store), true) => {
                        let parts = (&engine, store, &outbox);
                        let committer = (&commits, sent.as_ref());
                        match count_delivery(parts, &config, &mut pending, committer, &topic, &payload).await {
                            Some(delivery) => delivery,
                            None => break,
                        }
                    }
                    _ => Delivery::Process(None),
                };
                if pending.messages == 0 {
                    pending.started = Instant::now();
                }
                pending.messages += 1;
                pending.arrived.push(arrived);
                pending.acks.extend(ack);
                match delivery {
                    Delivery::Quarantine => {
                        quarantine(&config, &stats, (&outbox, &mut pending), (&topic, &payload), received);
                    }
                    Delivery::Process(hash) => {
                        if let (Some(hash), Some(store)) = (hash, outbox.store()) {
                            // Gone with the message's effects: only a delivery that never completes
                            // stays counted.
                            store.forget_delivery(&mut pending.batch, hash);
                        }
                        #[cfg(feature = "failpoints")]
                        failpoint::crash_on(&payload);
                        match decode_with(format, &payload, &config.decode_limits()) {
                            Err(error) => {
                                let what = (topic.as_str(), payload.as_ref(), payload.len());
                                undecodable(&config, &stats, (&outbox, &mut pending), what, received, &error);
                            }
                            Ok(value) => {
                                let event = Event::new(topic, value, &payload, received);
                                let topic = event.topic.clone();
                                let began = std::time::Instant::now();
                                engine.process(event, wall_clock(), &mut outputs);
                                stats.detail.engine_seconds.observe(began.elapsed().as_secs_f64());
                                let mut first = false;
                                for rule in &outputs.value_missing {
                                    first |= stats.value_missing(rule, &topic);
                                }
                                if first {
                                    queue(&outbox, &mut pending, status_entry(&config, &rules_status, &stats));
                                }
                                stats.processed.fetch_add(1, Relaxed);
                                if outputs.matched == 0 && outputs.duplicates == 0 && outputs.late.is_empty() {
                                    stats.unmatched(&topic);
                                }
                            }
                        }
                    }
                }
            }
        }
        collect(&outputs, &outbox, &mut pending, &config, &source, &stats);
        if Instant::now() >= next_gauges {
            next_gauges = Instant::now() + GAUGES_EVERY;
            // Acknowledged events are deleted with the next batch; when idle, make one.
            if outbox.has_acked() {
                pending.messages = pending.messages.max(1);
            }
            let keys = engine.tracked_keys().map(|(rule, n)| (Arc::<str>::from(rule), n as u64)).collect();
            if let Ok(mut tracked) = stats.detail.tracked_keys.lock() {
                *tracked = keys;
            }
        }
        if Instant::now() >= next_alive {
            if let Some(store) = outbox.store() {
                store.mark_alive(&mut pending.batch, wall_clock().millis());
            }
            next_alive = Instant::now() + ALIVE_EVERY;
        }
        // The outbox overflowed (a long upstream outage): say so, in order, once the link is
        // up, at most once a second. A report queued into the full outbox during the outage
        // would push out an older event, and be pushed out itself, count and all.
        let dropped = outbox.take_dropped();
        if dropped > 0 {
            if unreported_drops == 0 {
                tracing::warn!(dropped, "Outbox full: oldest events dropped.");
            }
            stats.outbox_dropped.fetch_add(dropped, Relaxed);
            unreported_drops += dropped;
        }
        let upstream_up = stats.detail.connection("upstream").connected.load(Relaxed);
        if unreported_drops > 0 && upstream_up && Instant::now() >= next_drop_report {
            let data = drop_report(std::mem::take(&mut unreported_drops));
            queue(&outbox, &mut pending, agent_event(&config, &source, "dropped", data));
            next_drop_report = Instant::now() + Duration::from_secs(1);
        }
        if pending.queued != queued {
            // New events are readable in the outbox already: the publisher need not wait for
            // the batch to be written.
            sent.notify_one();
        }
        if pending.messages >= config.state.max_batch {
            match commits.reserve().await {
                Ok(permit) => commit(&engine, &outbox, &mut pending, (permit, None), &sent),
                Err(_) => break,
            }
        }
        if Instant::now() >= next_snapshot {
            next_snapshot = Instant::now() + config.state.snapshot_interval;
            if let Some(store) = outbox.store() {
                write_snapshot(store).await;
            }
        }
    }
    if unreported_drops > 0 {
        // Sent by the next run if the link is down now.
        queue(&outbox, &mut pending, agent_event(&config, &source, "dropped", drop_report(unreported_drops)));
    }
    // A clean stop says so itself (the last will is only for a lost connection).
    queue(&outbox, &mut pending, agent_status(&config, "offline", started, rule_count(&engine)));
    if let Ok(permit) = commits.reserve().await {
        commit(&engine, &outbox, &mut pending, (permit, None), &sent);
    }
    drop(commits);
    let _ = committer.await;
    if let Some(store) = outbox.store() {
        let mut b = Batch::default();
        store.mark_alive(&mut b, wall_clock().millis());
        store.mark_clean_stop(&mut b);
        let _ = store.commit(b).await;
        write_snapshot(store).await;
    }
}

/// What to do with a message that may be a redelivery of the one the last run crashed on.
enum Delivery {
    /// Process it; forget its delivery count (by this hash) with its effects.
    Process(Option<u64>),
    /// It crashed the agent on its earlier deliveries: dead-letter it unprocessed.
    Quarantine,
}

/// Counts a delivery of a message that may have crashed the last run, and makes the count
/// durable (with everything before it) before the message is processed: if it crashes this
/// run too, the next one knows. After `max_deliveries` (the first, uncounted, included), it
/// is quarantined. `None`: the committer is gone (stopping).
///
/// A delivery is recognised by a hash of topic and payload: rumqttd gives redeliveries new
/// packet ids, and Mosquitto's `dup` flag is not sent by every broker.
async fn count_delivery(
    (engine, store, outbox): (&Engine, &Store, &Outbox),
    config: &Config,
    pending: &mut Pending,
    (commits, sent): (&mpsc::Sender<CommitJob>, &Notify),
    topic: &str,
    payload: &[u8],
) -> Option<Delivery> {
    let hash = xxhash_rust::xxh3::xxh3_64_with_seed(payload, xxhash_rust::xxh3::xxh3_64(topic.as_bytes()));
    // The first delivery, before the crash, was not counted (the normal path writes nothing).
    let failed = store.deliveries(hash).saturating_add(1);
    if failed >= config.max_deliveries {
        store.forget_delivery(&mut pending.batch, hash);
        return Some(Delivery::Quarantine);
    }
    store.count_delivery(&mut pending.batch, hash, failed);
    let permit = commits.reserve().await.ok()?;
    let (done_tx, done_rx) = oneshot::channel();
    commit(engine, outbox, pending, (permit, Some(done_tx)), sent);
    // Not written (a disk error): process it anyway, as any message whose state cannot be
    // written; it stays unacknowledged.
    if !done_rx.await.unwrap_or(false) {
        tracing::warn!(topic, "Delivery count not written; processing the message anyway.");
    }
    Some(Delivery::Process(Some(hash)))
}

/// A message the agent crashed on each time it was delivered: dead-lettered unprocessed and
/// acknowledged, so the session moves on.
fn quarantine(
    config: &Config,
    stats: &Stats,
    (outbox, pending): (&Outbox, &mut Pending),
    (topic, payload): (&str, &[u8]),
    received: Timestamp,
) {
    let error = format!(
        "the agent stopped without finishing it on {} deliveries; quarantined unprocessed",
        config.max_deliveries
    );
    tracing::error!(topic, size = payload.len(), "Poison message quarantined unprocessed.");
    let letter = dead_letter(topic, payload, payload.len(), received, "poison", &error);
    queue(
        outbox,
        pending,
        OutboxEntry { topic: config.upstream.deadletter_topic(), payload: letter.into(), qos: 1, retain: false },
    );
    stats.dead_letters.fetch_add(1, Relaxed);
    stats.quarantined.fetch_add(1, Relaxed);
}

/// A payload that cannot be decoded: counted and dead-lettered (with at most a prefix of it).
fn undecodable(
    config: &Config,
    stats: &Stats,
    (outbox, pending): (&Outbox, &mut Pending),
    (topic, payload, size): (&str, &[u8], usize),
    received: Timestamp,
    error: &DecodeError,
) {
    stats.decode_failed(topic, error);
    let letter = dead_letter(topic, payload, size, received, error.reason(), &error.to_string());
    queue(
        outbox,
        pending,
        OutboxEntry { topic: config.upstream.deadletter_topic(), payload: letter.into(), qos: 1, retain: false },
    );
    stats.dead_letters.fetch_add(1, Relaxed);
}

/// The data of an `edgewatch.agent.dropped` event.
fn drop_report(dropped: u64) -> serde_json::Value {
    serde_json::json!({ "dropped": dropped, "reason": "outbox full (state.max_outbox_mb)" })
}

/// Turns what the engine produced into outbox entries and state to persist.
fn collect(outputs: &Outputs, outbox: &Outbox, pending: &mut Pending, config: &Config, source: &str, stats: &Stats) {
    if outputs.duplicates > 0 {
        stats.duplicates.fetch_add(outputs.duplicates as u64, Relaxed);
    }
    stats.keys_limited(outputs.keys_refused, outputs.keys_evicted);
    for report in &outputs.key_limits {
        // At most one per rule per `key_report_interval_ms`: the engine rate-limits them.
        let data = stats.key_limit(report);
        queue(outbox, pending, agent_event(config, source, "key_limit", data));
    }
    for late in &outputs.late {
        stats.late.fetch_add(1, Relaxed);
        let raw = serde_json::to_vec(&late.payload).unwrap_or_default();
        let letter = dead_letter(&late.topic, &raw, raw.len(), late.time, "late", "older than the allowed lateness");
        queue(
            outbox,
            pending,
            OutboxEntry { topic: config.upstream.deadletter_topic(), payload: letter.into(), qos: 1, retain: false },
        );
        stats.dead_letters.fetch_add(1, Relaxed);
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
        queue(
            outbox,
            pending,
            OutboxEntry {
                topic: config.upstream.errors_topic(),
                payload: report.to_string().into(),
                qos: 1,
                retain: false,
            },
        );
    }
    if let (Some(first), Ok(mut by_rule)) = (outputs.events.first(), stats.detail.by_rule.lock()) {
        // Events of one input usually come from one rule: look it up once.
        let mut rule = first.rule.clone();
        let mut n = 0u64;
        for composite in &outputs.events {
            if composite.rule != rule {
                by_rule.entry(std::mem::replace(&mut rule, composite.rule.clone())).or_default().events += n;
                n = 0;
            }
            n += 1;
        }
        by_rule.entry(rule).or_default().events += n;
    }
    for composite in &outputs.events {
        stats.events.fetch_add(1, Relaxed);
        tracing::debug!(rule = %composite.rule, key = %composite.key, id = %composite.id, "Composite event.");
        let payload = CloudEvent::new(composite, source).to_json();
        let topic = config.upstream.event_topic(&composite.rule, &composite.key);
        queue(outbox, pending, OutboxEntry { topic, payload: payload.into(), qos: config.upstream.qos, retain: false });
    }
    if outbox.store().is_some() {
        pending.touched.extend(outputs.touched.iter().cloned());
    }
}

/// Queues an event: readable by the publisher at once, in either outbox.
fn queue(outbox: &Outbox, pending: &mut Pending, entry: OutboxEntry) {
    pending.queued += 1;
    outbox.push(&mut pending.batch, entry);
}

/// Hands the batch to the committer (durable) or the in-memory outbox, with its acks.
/// `done` hears whether the batch is on disk (always `true` in memory).
fn commit(
    engine: &Engine,
    outbox: &Outbox,
    pending: &mut Pending,
    (permit, done): (mpsc::Permit<'_, CommitJob>, Option<oneshot::Sender<bool>>),
    sent: &Notify,
) {
    let acks = std::mem::take(&mut pending.acks);
    let arrived = std::mem::take(&mut pending.arrived);
    pending.messages = 0;
    match outbox.store() {
        Some(store) => {
            for what in pending.touched.drain() {
                let value = engine.export(&what);
                store.put_state(&mut pending.batch, &what, value.as_deref());
            }
            pending.batch.alive_at(wall_clock().millis());
            let batch = std::mem::take(&mut pending.batch);
            permit.send(CommitJob { batch, acks, arrived, done });
        }
        None => {
            permit.send(CommitJob { batch: Batch::default(), acks, arrived, done });
            sent.notify_one();
        }
    }
}

/// A batch on its way to disk, and the acks that must wait for it.
struct CommitJob {
    batch: Batch,
    acks: Vec<AckToken>,
    arrived: Vec<Instant>,
    /// Told whether the batch is on disk, for a caller that must wait for it.
    done: Option<oneshot::Sender<bool>>,
}

/// Writes batches in order and flushes them, then releases their acks and wakes the
/// publisher. The engine keeps processing meanwhile; batches that queue up while a flush
/// runs share the next flush (group commit).
async fn committer_task(
    store: Option<Store>,
    mut jobs: mpsc::Receiver<CommitJob>,
    ack_tx: mpsc::UnboundedSender<Vec<AckToken>>,
    sent: Arc<Notify>,
    stats: Arc<Stats>,
) {
    while let Some(first) = jobs.recv().await {
        let mut group = vec![first];
        while let Ok(more) = jobs.try_recv() {
            group.push(more);
        }
        let mut acks = Vec::new();
        let arrived: Vec<Instant> = group.iter_mut().flat_map(|j| std::mem::take(&mut j.arrived)).collect();
        let waiting: Vec<oneshot::Sender<bool>> = group.iter_mut().filter_map(|j| j.done.take()).collect();
        let mut ok = true;
        if let Some(store) = &store {
            let started = Instant::now();
            let mut wrote = false;
            // Off the runtime's thread: with `agent.threads = 1` a large batch would hold up
            // both MQTT connections for as long as sled takes to write it.
            let batches: Vec<Batch> = group.iter_mut().map(|j| std::mem::take(&mut j.batch)).collect();
            let s = store.clone();
            let results = tokio::task::spawn_blocking(move || batches.into_iter().map(|b| s.apply(b)).collect())
                .await
                .unwrap_or_else(|_| {
                    vec![Err(store::StoreError::Db { path: String::new(), message: "the write task panicked".into() })]
                });
            for result in results {
                match result {
                    Ok(applied) => {
                        wrote |= applied.wrote;
                        stats.outbox_written.fetch_add(applied.events, Relaxed);
                    }
                    Err(error) => {
                        tracing::error!(%error, "State not written; messages stay unacknowledged.");
                        ok = false;
                    }
                }
            }
            for job in group {
                acks.extend(job.acks);
            }
            sent.notify_one();
            // Nothing written (no state changed, every event already acknowledged upstream):
            // nothing to flush.
            if ok && wrote {
                match store.flush().await {
                    Ok(()) => stats.record_flush(started.elapsed()),
                    Err(error) => {
                        tracing::error!(%error, "State not flushed; messages stay unacknowledged.");
                        ok = false;
                    }
                }
            }
        } else {
            acks.extend(group.into_iter().flat_map(|j| j.acks));
        }
        if ok {
            let now = Instant::now();
            for t in &arrived {
                stats.detail.commit_latency_seconds.observe(now.duration_since(*t).as_secs_f64());
            }
        }
        for done in waiting {
            let _ = done.send(ok);
        }
        // Not on disk: no acks. The broker redelivers after a restart.
        if ok && !acks.is_empty() && ack_tx.send(acks).is_err() {
            tracing::debug!("Acker gone.");
        }
        sent.notify_one();
    }
}

async fn write_snapshot(store: &Store) {
    let store = store.clone();
    let written = tokio::task::spawn_blocking(move || {
        let now = wall_clock().millis();
        // Taken by the running agent: it is alive now.
        let snap = store::Snapshot { alive_ms: Some(now), ..store.snapshot(now)? };
        store.write_snapshot_file(&snap)
    })
    .await;
    match written {
        Ok(Ok(path)) => tracing::debug!(path = %path.display(), "State snapshot written."),
        Ok(Err(error)) => tracing::error!(%error, "State snapshot not written."),
        Err(error) => tracing::error!(%error, "State snapshot task failed."),
    }
}

/// The agent's own status, retained on `<prefix>/status`: `online` (with version, uptime and
/// rule count) on every connection to the upstream broker, `offline` at a clean stop; the
/// broker publishes the last will `offline` if the connection is lost.
fn agent_status(config: &Config, status: &str, started: Timestamp, rules: usize) -> OutboxEntry {
    let now = wall_clock();
    let doc = serde_json::json!({
        "status": status,
        "agent": config.agent_id,
        "version": env!("CARGO_PKG_VERSION"),
        "started": started.to_rfc3339(),
        "uptime_s": (now.millis() - started.millis()).max(0) / 1000,
        "rules": rules,
        "time": now.to_rfc3339(),
    });
    OutboxEntry { topic: config.upstream.agent_status_topic(), payload: doc.to_string().into(), qos: 1, retain: true }
}

/// The rules' status document, retained on `<prefix>/status/rules`, with each rule's count of
/// messages whose `e.value` it read and found missing (why a rule may never fire).
fn status_entry(config: &Config, status: &serde_json::Value, stats: &Stats) -> OutboxEntry {
    let mut doc = status.clone();
    doc["agent"] = serde_json::json!(config.agent_id);
    if let (Some(rules), Ok(counts)) = (doc["rules"].as_array_mut(), stats.detail.by_rule.lock()) {
        for rule in rules {
            let missing = rule["name"].as_str().and_then(|n| counts.get(n)).map_or(0, |c| c.value_missing);
            rule["value_missing"] = serde_json::json!(missing);
        }
    }
    OutboxEntry { topic: config.upstream.rules_status_topic(), payload: doc.to_string().into(), qos: 1, retain: true }
}

/// Rescans the rules on each trigger (file changes, the control topic, and requests from
/// outside: SIGHUP in the binary) and hands the result to the engine task.
async fn reload_task(
    files: RuleFiles,
    (watch_tx, mut triggers, external): (mpsc::Sender<Trigger>, mpsc::Receiver<Trigger>, mpsc::Receiver<Trigger>),
    in_tx: mpsc::Sender<Input>,
    config: Arc<Config>,
    mut stop: watch::Receiver<bool>,
) {
    // Kept alive for as long as the task runs.
    let _watcher = if config.watch_rules {
        match reload::watch(&config.rules_dir, watch_tx) {
            Ok(w) => Some(w),
            Err(error) => {
                tracing::warn!(dir = %config.rules_dir.display(), %error, "Cannot watch the rules directory; reload with SIGHUP.");
                None
            }
        }
    } else {
        None
    };
    let mut files = Some(files);
    let mut external = Some(external);
    loop {
        let requested = async {
            match external.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let trigger = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            t = triggers.recv() => match t {
                Some(t) => t,
                None => break,
            },
            t = requested => match t {
                Some(t) => t,
                None => {
                    // Whoever asked for reloads is gone; the other triggers still work.
                    external = None;
                    continue;
                }
            },
        };
        while triggers.try_recv().is_ok() {}
        let Some(mut f) = files.take() else { break };
        let scanned = tokio::task::spawn_blocking(move || {
            let scan = f.scan(wall_clock());
            (f, scan)
        })
        .await;
        let Ok((f, scan)) = scanned else { break };
        files = Some(f);
        match scan {
            Ok(scan) => {
                tracing::debug!(?trigger, changed = scan.changed, "Rules rescanned.");
                if in_tx.send(Input::Reload(Box::new(scan))).await.is_err() {
                    break;
                }
            }
            Err(error) => tracing::error!(%error, "Rules not reloaded."),
        }
    }
}

/// An event about the agent itself, on `<prefix>/agent/events`.
fn agent_event(config: &Config, source: &str, kind: &str, data: serde_json::Value) -> OutboxEntry {
    let now = wall_clock();
    let id = edgewatch_engine::CompositeId::derive(
        "agent",
        kind,
        edgewatch_engine::EventId::from_content(kind, &now.millis().to_le_bytes()),
        0,
    );
    let event = CloudEvent::about_agent(kind, id.to_string(), (source, &config.agent_id), now.to_rfc3339(), &data);
    OutboxEntry {
        topic: format!("{}/agent/events", config.upstream.topic_prefix),
        payload: event.to_json().into(),
        qos: 1,
        retain: false,
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

/// The dead letter for a payload that could not be processed: where it came from, why, and
/// (a bounded prefix of) what it was. `size` is the whole payload's: `payload` may be less
/// (nothing, for a message too large to have been kept).
fn dead_letter(topic: &str, payload: &[u8], size: usize, time: Timestamp, reason: &str, error: &str) -> Vec<u8> {
    const SHOWN: usize = 256;
    let shown = &payload[..payload.len().min(SHOWN)];
    serde_json::json!({
        "topic": topic,
        "reason": reason,
        "error": error,
        "size": size,
        "received": time.to_rfc3339(),
        "payload_prefix": String::from_utf8_lossy(shown),
    })
    .to_string()
    .into_bytes()
}

/// Events handed to the upstream client and not yet acknowledged.
#[derive(Debug, Default)]
struct Inflight {
    /// QoS 1 events in the order they were published: each PUBACK acknowledges the oldest.
    seqs: VecDeque<u64>,
    /// Set on a new session: the publisher sends again from here.
    resend_from: Option<u64>,
}

/// Polls the upstream connection. QoS 1 PUBACKs come in the order the publishes went out
/// (MQTT 3.1.1 §4.6), so each one acknowledges the oldest event in flight.
async fn upstream_poll_task(
    mut conn: mqtt::Connection,
    outbox: Outbox,
    (inflight, connected): (Arc<Mutex<Inflight>>, watch::Sender<u64>),
    sent: Arc<Notify>,
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
            Incoming::Connected { session_present } => {
                if !session_present {
                    // A new session: the client dropped what it had in flight (rumqttc clears
                    // its pending publishes then). Send those events again, from the oldest.
                    if let Ok(mut f) = inflight.lock() {
                        f.resend_from = f.seqs.front().copied().or(f.resend_from);
                        f.seqs.clear();
                    }
                }
                stats.connected(conn.name());
                tracing::info!(connection = "upstream", "Connected to the upstream broker.");
                ready.send_modify(|r| r.upstream_connected = true);
                // The engine task publishes `online` (the last will may have said otherwise).
                connected.send_modify(|n| *n += 1);
                sent.notify_one();
            }
            Incoming::PubAck => {
                let seq = inflight.lock().ok().and_then(|mut f| f.seqs.pop_front());
                if let Some(seq) = seq {
                    outbox.acked(seq);
                    stats.acked.fetch_add(1, Relaxed);
                    sent.notify_one();
                }
            }
            Incoming::Disconnected { error, retry_in } => {
                ready.send_modify(|r| r.upstream_connected = false);
                stats.disconnected(conn.name(), &error, retry_in);
            }
            Incoming::Publish { .. } | Incoming::TooLarge { .. } | Incoming::Unroutable { .. } | Incoming::SubAck => {}
        }
    }
}

/// Sends outbox entries in order, keeping at most [`PUBLISH_WINDOW`] unacknowledged. The
/// session is persistent, so rumqttc itself resends what is in flight after a reconnect;
/// after a restart, everything still in the outbox is sent again (same ids).
async fn publisher_task(
    client: Client,
    outbox: Outbox,
    (inflight, mut ready): (Arc<Mutex<Inflight>>, watch::Receiver<Readiness>),
    sent: Arc<Notify>,
    stats: Arc<Stats>,
    mut engine_done: watch::Receiver<bool>,
    done: watch::Sender<bool>,
) {
    let mut next_seq = 0u64;
    let mut deadline: Option<Instant> = None;
    loop {
        // Handed to the client only while connected: what it holds across a disconnect is
        // resent by the client itself (same session) or by us (new session, below).
        let up = ready.borrow_and_update().upstream_connected;
        let room = match inflight.lock() {
            Ok(mut f) => {
                if let Some(from) = f.resend_from.take() {
                    tracing::info!(from, "New upstream session: resending the events in flight.");
                    next_seq = next_seq.min(from);
                }
                PUBLISH_WINDOW.saturating_sub(f.seqs.len())
            }
            Err(_) => 0,
        };
        let batch = if room > 0 && up { outbox.next(next_seq, room) } else { Vec::new() };
        let published = !batch.is_empty();
        for (seq, entry) in batch {
            next_seq = seq + 1;
            if entry.qos > 0 {
                if let Ok(mut f) = inflight.lock() {
                    f.seqs.push_back(seq);
                }
            }
            match client.publish(&entry.topic, entry.qos, entry.retain, entry.payload).await {
                Ok(()) => {
                    stats.published.fetch_add(1, Relaxed);
                    if entry.qos == 0 {
                        outbox.acked(seq);
                    }
                }
                Err(error) => {
                    tracing::error!(topic = %entry.topic, %error, "Event not handed to the upstream connection.")
                }
            }
        }
        if published {
            continue;
        }
        if *engine_done.borrow() {
            let empty = outbox.depth().0 == 0;
            let at = *deadline.get_or_insert_with(|| Instant::now() + DRAIN_TIMEOUT);
            if empty || Instant::now() >= at {
                if !empty {
                    tracing::warn!(
                        waiting = outbox.depth().0,
                        "Stopping with events not yet acknowledged upstream; they stay in the outbox."
                    );
                }
                break;
            }
        }
        tokio::select! {
            () = sent.notified() => {}
            _ = engine_done.changed() => {}
            _ = ready.changed() => {}
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), client.disconnect()).await;
    let _ = done.send(true);
}

/// Fault injection for tests (feature `failpoints`, which the packages never have): the
/// process aborts, as in a crash or a power cut, just before it processes a payload that
/// contains the text in `EDGEWATCH_FAILPOINT_CRASH_ON`.
#[cfg(feature = "failpoints")]
mod failpoint {
    use std::sync::OnceLock;

    pub(super) fn crash_on(payload: &[u8]) {
        static NEEDLE: OnceLock<Option<Vec<u8>>> = OnceLock::new();
        let needle = NEEDLE.get_or_init(|| {
            std::env::var("EDGEWATCH_FAILPOINT_CRASH_ON").ok().filter(|n| !n.is_empty()).map(String::into_bytes)
        });
        if let Some(n) = needle {
            if payload.windows(n.len()).any(|w| w == n.as_slice()) {
                eprintln!("failpoint: crashing on a payload with {:?}", String::from_utf8_lossy(n));
                std::process::abort();
            }
        }
    }
}
