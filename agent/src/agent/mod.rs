//! The running agent: MQTT in -> decode -> engine -> state + outbox -> MQTT out.
//!
//! ```text
//!  source broker ─▶ source ─Input─▶ step (engine loop) ─CommitJob─▶ commit ─▶ sled
//!                    ▲               │ decode, Engine::process,      │ apply, flush
//!                    │               │ outbox entries, group commit  │
//!                    └─── acks ──────┼───────────────────────────────┘ (Acker: try_ack, in order)
//!                                    └─ Upstream::pump ─▶ upstream ─▶ upstream broker
//!                                         (window of 1024, PUBACK deletes from the outbox)
//! ```
//!
//! Four tasks move data between the sockets and plain state machines: `source` (polls the
//! sensor connection), `step` (owns the engine and the batch, `batch::Pending`), `commit`
//! (writes and flushes, durable mode only: in memory the engine loop acknowledges at once),
//! and `upstream` (polls the upstream connection; the publish `upstream::Window` is filled
//! by whoever makes an event sendable, without waking a task). `reloader` rescans the rules
//! on a trigger; `reports` says what the agent says about itself; `poison` counts the
//! deliveries of what may have crashed the last run; `parts` opens or builds what the rest is
//! wired from (the audit trail, the journal, the event log, the sinks' deliveries, what the
//! console and `/metrics` read). A message's path out is source ─▶ step ─▶ (commit) ─▶
//! upstream connection; its acknowledgement's path back is commit (or step) ─▶ the source
//! connection's request queue.
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
//! Shutdown (a [`CancellationToken`]) and reload requests are values passed to
//! [`Agent::run`]; the library installs no signal handler. At shutdown the source stops
//! handing messages on but keeps its connection until the engine loop is done and the
//! acknowledgements of what it committed have gone out, the engine loop commits what it has,
//! and the upstream side sends what it can for a few seconds.

mod batch;
mod commit;
mod parts;
mod poison;
mod reloader;
mod reports;
mod source;
mod step;
mod upstream;

use crate::config::Config;
use crate::health::{Health, Readiness};
use crate::mqtt::{self, ConnectOptions};
use crate::outbox::Outbox;
use crate::reload::{RuleFiles, Trigger};
use crate::rules;
use crate::sinks::Sinks;
use crate::store::{self, Batch};
use crate::telemetry::{Snapshot, Stats};
use commit::{Acker, CommitJob, DRAIN_TIMEOUT};
use edgewatch_engine::{Engine, Limits, Sandbox};
use reports::wall_clock;
use source::Source;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use step::{Input, Sink, Step};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use upstream::{PUBLISH_WINDOW, Upstream};

/// After a crash, how many of the first messages on the resumed session may be redeliveries
/// of the one that crashed it. A broker resends unacknowledged messages first, at most its
/// in-flight window (Mosquitto's default is 20; rumqttd's is configured). Each of these
/// costs a flush before it is processed, only after a crash.
const REDELIVERY_WINDOW: usize = 100;

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
    #[error(transparent)]
    Console(#[from] crate::console::ListenError),
}

/// A configured agent, ready to run.
#[derive(Debug)]
pub struct Agent {
    config: Config,
    engine: Engine,
    /// Shared with whoever wants to read the counters while the agent runs.
    stats: Arc<Stats>,
    /// The one connection state; receivers come from [`Agent::readiness`].
    health: Health,
    outbox: Outbox,
    /// Events about the agent itself to send first (restart, recovery).
    startup_events: Vec<(&'static str, serde_json::Value)>,
    /// The rule files, for reloads.
    files: RuleFiles,
    /// The rules' status at start, published retained.
    initial_status: serde_json::Value,
    /// The `/metrics` and `/healthz` listener, bound at start (a taken port refuses to start).
    metrics: Option<std::net::TcpListener>,
    /// The console's listener (`[console]`), bound at start too.
    console: Option<std::net::TcpListener>,
    /// The last run did not stop cleanly: the first redeliveries may include the message it
    /// crashed on, and are counted before they are processed (poison-message quarantine).
    after_crash: bool,
    /// The sinks' queues (`[[sinks]]`), with what the last run left undelivered.
    sinks: Arc<Sinks>,
    /// The audit trail, with its entries not yet queued upstream (this start's among them).
    audit: Option<(crate::audit::AuditLog, Vec<crate::audit::Entry>)>,
}

impl Agent {
    /// Loads the rules of `config.rules_dir` and the saved state. Rule files that fail to
    /// compile are logged with `file:line:col` and left out; the agent still starts with the
    /// others. An unreadable database is moved aside and the latest snapshot restored.
    pub async fn new(config: Config) -> Result<Agent, AgentError> {
        std::fs::create_dir_all(&config.state_dir)
            .map_err(|error| AgentError::StateDir { dir: config.state_dir.display().to_string(), error })?;
        let sandbox = Arc::new(Sandbox::new(Limits { max_operations: config.max_operations, ..Limits::default() }));
        let mut files = RuleFiles::new(&config.rules_dir, config.tables.clone(), sandbox.clone())
            .against(crate::reload::Against::config(&config));
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
            let (mut store, opened) =
                store::open_or_recover(&config.state_dir, config.state.cache_bytes, config.state.max_outbox_bytes)
                    .await?;
            startup_events.extend(reports::open_history(&mut store, &config, &stats));
            let saved = store.load_state()?;
            let mut refused = 0usize;
            for (what, bytes) in &saved {
                if let Err(error) = engine.import(what, bytes) {
                    refused += 1;
                    tracing::warn!(%error, "Saved state dropped.");
                }
            }
            let restored_keys = saved.len() - refused;
            startup_events.extend(reports::restart_events(&mut engine, &opened, store.last_alive(), restored_keys));
            after_crash = !store.take_clean_stop()?;
            // On disk before anything else happens: a crash of this run must be seen as one.
            store.flush().await?;
            Outbox::durable(store)
        } else {
            Outbox::memory(config.state.max_outbox_bytes)
        };
        let audit = parts::open_audit(&config, &files, outbox.store(), &startup_events);
        let sinks = Arc::new(Sinks::new(&config.sinks, outbox.store())?);
        let health = Health::new(stats.clone());
        let metrics = config.metrics_listen.map(crate::metrics::bind).transpose()?;
        let console = config.console.as_ref().map(|c| crate::console::bind(c.listen)).transpose()?;
        Ok(Agent {
            config,
            engine,
            stats,
            health,
            outbox,
            startup_events,
            files,
            initial_status,
            metrics,
            console,
            after_crash,
            sinks,
            audit,
        })
    }

    /// The counters, live.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Connection state, live.
    pub fn readiness(&self) -> watch::Receiver<Readiness> {
        self.health.subscribe()
    }

    /// Where the console listens, if it is on (its port was bound at [`Agent::new`]).
    pub fn console_addr(&self) -> Option<std::net::SocketAddr> {
        self.console.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Names of the loaded rules.
    pub fn rule_names(&self) -> Vec<String> {
        self.engine.rules().iter().map(|r| r.name.to_string()).collect()
    }

    /// Runs until `shutdown` is cancelled, then drains and returns the final counters. Each
    /// trigger received on `reloads` rescans the rules (the binary sends one per SIGHUP; the
    /// library installs no signal handler). A closed `reloads` only ends those requests.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        reloads: mpsc::Receiver<Trigger>,
    ) -> Result<Snapshot, AgentError> {
        let Agent {
            config,
            engine,
            stats,
            health,
            outbox,
            startup_events,
            files,
            initial_status,
            metrics,
            console,
            after_crash,
            sinks,
            audit,
        } = self;
        let config = Arc::new(config);
        // Cancelled when the engine loop is done: every acknowledgement is queued, and the
        // upstream side may stop once the outbox is empty.
        let engine_done = CancellationToken::new();

        let metrics_server = metrics.map(|listener| {
            let sources = Arc::new(parts::metrics_sources(&outbox, stats.clone(), health.subscribe(), sinks.clone()));
            let stop = shutdown.clone();
            tokio::spawn(async move {
                if let Err(error) = crate::metrics::serve(listener, sources, stop).await {
                    tracing::error!(%error, "Metrics listener failed.");
                }
            })
        });
        let packet = config.max_payload_bytes.saturating_add(64 * 1024);
        let durable = outbox.store().is_some();
        // As a Sparkplug primary host application: `online` on each connection, and the same
        // with `offline` as the will (one timestamp for both, as Sparkplug 3.0 asks).
        let host_state =
            config.sparkplug.host_id.as_deref().and_then(crate::sparkplug::command::state_topic).map(|t| {
                let at = u64::try_from(wall_clock().millis()).unwrap_or(0);
                (
                    t,
                    crate::sparkplug::command::state_payload(true, at),
                    crate::sparkplug::command::state_payload(false, at),
                )
            });
        let (src_client, src_conn) = mqtt::connect(
            &config.source,
            "source",
            &ConnectOptions {
                request_capacity: 256,
                max_packet_size: packet,
                last_will: host_state
                    .as_ref()
                    .map(|(topic, _, off)| (topic.clone(), bytes::Bytes::from(off.clone()), 1, true)),
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
        let event_log = parts::open_event_log(&config, &stats);
        let upstream = Upstream::new(up_client, outbox.clone(), stats.clone(), event_log.clone());
        let acker = Acker::new(src_client.clone());
        let sink = match outbox.store() {
            Some(store) => {
                let (jobs, rx) = mpsc::channel::<CommitJob>(1);
                let committer = tokio::spawn(commit::committer(
                    store.clone(),
                    rx,
                    acker,
                    upstream.clone(),
                    stats.clone(),
                    sinks.clone(),
                ));
                Sink::Disk { store: store.clone(), jobs, committer }
            }
            None => Sink::Memory(acker),
        };

        let (inputs, inputs_rx) = mpsc::channel::<Input>(config.queue_capacity);
        let (watch_tx, watch_rx) = mpsc::channel::<Trigger>(8);
        let triggers = reloader::Triggers { internal: (watch_tx.clone(), watch_rx), external: reloads };
        let console_reloads = watch_tx.clone();
        let reloader = tokio::spawn(reloader::run(files, triggers, inputs.clone(), config.clone(), shutdown.clone()));
        let rebirths = src_client.clone();
        let source = Source {
            host_state: host_state.map(|(topic, on, off)| (topic, bytes::Bytes::from(on), bytes::Bytes::from(off))),
            conn: src_conn,
            client: src_client,
            subs: parts::subscriptions(&config),
            control_topic: config.control_topic.clone(),
            alarms_topic: config.alarms_topic.clone(),
            reloads: watch_tx,
            suspects: if after_crash { REDELIVERY_WINDOW } else { 0 },
            stats: stats.clone(),
            health: health.clone(),
        };
        let source = tokio::spawn(source.run(inputs.clone(), shutdown.clone(), engine_done.clone()));
        let step = Step::new(
            (engine, outbox.clone(), upstream.clone(), sink),
            config.clone(),
            stats.clone(),
            health.subscribe(),
            startup_events,
            initial_status,
        );
        let mut step = step;
        step.journal = parts::open_journal(&config, &stats);
        step.sinks = sinks.clone();
        step.event_log = event_log;
        step.sparkplug.send_requests_through(rebirths);
        if let Some((log, backlog)) = audit {
            for entry in &backlog {
                step.queue_audit(entry);
            }
            step.audit = Some(log);
        }
        let deliveries = parts::spawn_deliveries(&config, &sinks, &outbox, &inputs, &shutdown);
        let console_server = console.map(|listener| {
            let feed = Arc::new(crate::console::feed::Feed::default());
            step.feed = Some(crate::console::feed::Teller::new(feed.clone()));
            let api = parts::console_api(&config, &stats, &inputs, (console_reloads, feed, shutdown.clone()));
            let tls = config.console.as_ref().and_then(|c| c.tls.clone());
            let stop = shutdown.clone();
            tokio::spawn(async move {
                if let Err(error) = crate::console::serve(listener, Arc::new(api), tls, stop).await {
                    tracing::error!(%error, "Console listener failed.");
                }
            })
        });
        drop(inputs);
        let step = tokio::spawn(step.run(inputs_rx));
        let upstream = tokio::spawn(upstream.run(up_conn, health, engine_done.clone(), DRAIN_TIMEOUT));

        // The engine loop ends when its inputs close: the source lets go at shutdown, the
        // reloader stops.
        let stepped = step.await;
        engine_done.cancel();
        stepped?;
        source.await?;
        reloader.await?;
        upstream.await?;
        for delivery in deliveries {
            delivery.await?;
        }
        if let Some(store) = outbox.store() {
            // What was acknowledged during the drain: delete it, or the next start sends it again.
            if let Err(error) = store.commit(Batch::default()).await {
                tracing::error!(%error, "Acknowledged events not deleted from the outbox; they will be sent again.");
            }
        }
        if let Some(server) = metrics_server {
            server.await?;
        }
        if let Some(server) = console_server {
            server.await?;
        }
        let summary = stats.snapshot();
        tracing::info!(%summary, "Agent stopped.");
        Ok(summary)
    }
}
