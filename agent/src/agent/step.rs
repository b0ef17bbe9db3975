//! The engine loop: each input through decode and the engine, its effects into the batch,
//! the batch to its commit, and the timers (missing heartbeats, windows closing) in between.
//!
//! ```text
//!  Input ──▶ decode ──▶ Engine::process ──Outputs──▶ outbox entries + touched state ──▶ Pending
//!                                                        │ Upstream::pump              │ commit
//!                                                        ▼                             ▼
//!                                              upstream connection        committer (disk) or Acker (memory)
//! ```
//!
//! One task owns the engine, so rules run one message at a time in arrival order; time is
//! read here and passed to the engine as an argument.

use super::batch::Pending;
use super::commit::CommitJob;
use super::poison::{self, Delivery};
use super::reports::{self, wall_clock};
use super::upstream::Upstream;
use crate::config::Config;
use crate::decode::DecodeError;
use crate::health::Readiness;
use crate::outbox::Outbox;
use crate::reload::Scan;
use crate::telemetry::Stats;
use edgewatch_engine::{Engine, Outputs, Timestamp};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// How often the agent records that it is alive (for the downtime after a crash).
const ALIVE_EVERY: Duration = Duration::from_secs(5);
/// When the first snapshot is taken after a start (or `state.snapshot_interval`, if shorter).
const FIRST_SNAPSHOT_AFTER: Duration = Duration::from_secs(10);
/// How often gauges that need the engine (keys per rule) are refreshed for `/metrics`.
const GAUGES_EVERY: Duration = Duration::from_secs(1);

// What the loop is handed (input); more of `Step`'s methods: a message through decode and the
// engine (message), what the engine produced, as outbox entries (effects), the periodic work
// and the stop (chores), reloads and seeding rules' pasts (rules).
mod audit;
mod chores;
mod console;
mod control;
mod effects;
mod input;
mod message;
mod rules;
mod sparkplug;
pub(super) use input::{Input, Sink};
pub(super) use sparkplug::Sparkplug;

/// The engine loop's state.
pub(super) struct Step {
    pub engine: Engine,
    pub outbox: Outbox,
    pub upstream: Upstream,
    pub sink: Sink,
    pub config: Arc<Config>,
    pub stats: Arc<Stats>,
    pub health: watch::Receiver<Readiness>,
    pending: Pending,
    /// Reused between inputs: its vectors keep their capacity.
    outputs: Outputs,
    /// The CloudEvents `source` of everything this agent emits.
    source: String,
    /// The rules' status as last published: published again, with live counts, when a rule
    /// first meets a message without the value it reads.
    rules_status: serde_json::Value,
    started: Timestamp,
    /// Upstream sessions already greeted with a retained `online`.
    sessions: u64,
    next_alive: Instant,
    next_gauges: Instant,
    next_snapshot: Instant,
    /// Events dropped for space and not yet reported upstream, and when the next report may go.
    unreported_drops: u64,
    next_drop_report: Instant,
    /// The input journal, when `[journal]` is on: each input is encoded into it, and each
    /// batch's inputs are handed to its thread at the commit.
    pub journal: Option<crate::journal::Journal>,
    /// Where rules' actions go (`notify`, `act`): queued with the batch of the input that
    /// caused them. Empty without `[[sinks]]`.
    pub sinks: Arc<crate::sinks::Sinks>,
    /// Protects subscriptions' private fields (`privacy`) with the configured secret.
    protector: crate::privacy::Protector,
    /// The audit trail (`None` if it could not be opened: the agent runs, and says so).
    pub audit: Option<crate::audit::AuditLog>,
    /// The event log (`None`: turned off, or it could not be opened): each composite event
    /// queued upstream is recorded, and handed to its thread with the batch.
    pub event_log: Option<crate::events::EventLog>,
    /// The console's live stream (`None`: no console): told of events, device and alarm
    /// changes, and the rules' status, only while a client watches.
    pub feed: Option<crate::console::feed::Teller>,
    /// The heartbeat rules, by name: their events are device state changes for the feed.
    heartbeat_rules: std::collections::HashSet<Arc<str>>,
    /// Each running rule's version, `<file>#<content hash>`, from the rules' status: the
    /// `edgewatchrule` attribute of its events.
    rule_versions: std::collections::HashMap<Arc<str>, Arc<str>>,
    /// Sparkplug B edge nodes' sessions (subscriptions with `format = "sparkplug"`).
    pub sparkplug: Sparkplug,
}

impl Step {
    /// Ready to run, with the events about the start (`restarted`, `restored`) and the rules'
    /// status queued first.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        (engine, outbox, upstream, sink): (Engine, Outbox, Upstream, Sink),
        config: Arc<Config>,
        stats: Arc<Stats>,
        health: watch::Receiver<Readiness>,
        startup_events: Vec<(&'static str, serde_json::Value)>,
        rules_status: serde_json::Value,
    ) -> Step {
        let now = Instant::now();
        let protector = crate::privacy::Protector::new(config.privacy_key.as_ref().map(|k| k.expose()));
        let sparkplug = Sparkplug::new(config.sparkplug.clone());
        let mut step = Step {
            engine,
            outbox,
            upstream,
            sink,
            source: format!("edgewatch/{}", config.agent_id),
            next_snapshot: now + config.state.snapshot_interval.min(FIRST_SNAPSHOT_AFTER),
            config,
            stats,
            health,
            pending: Pending::new(now),
            outputs: Outputs::default(),
            rule_versions: rules::rule_versions(&rules_status),
            heartbeat_rules: rules::heartbeat_rules(&rules_status),
            rules_status,
            started: wall_clock(),
            sessions: 0,
            next_alive: now,
            next_gauges: now,
            unreported_drops: 0,
            next_drop_report: now,
            journal: None,
            sinks: Arc::default(),
            protector,
            audit: None,
            event_log: None,
            feed: None,
            sparkplug,
        };
        step.restore_sparkplug();
        for (kind, data) in startup_events {
            tracing::warn!(kind, %data, "Agent event.");
            step.queue(reports::agent_event(&step.config, &step.source, kind, data));
        }
        step.queue(reports::status_entry(&step.config, &step.rules_status, &step.stats));
        step
    }

    /// Runs until `inputs` closes, then commits what it has and marks a clean stop.
    pub async fn run(mut self, mut inputs: mpsc::Receiver<Input>) {
        let jobs = match &self.sink {
            Sink::Disk { jobs, .. } => Some(jobs.clone()),
            Sink::Memory(_) => None,
        };
        self.seed_past();
        loop {
            if self.health.has_changed().unwrap_or(false) {
                self.greet_new_session();
            }
            let input = if self.pending.is_empty() {
                let wake = self.wake_at();
                tokio::select! {
                    msg = inputs.recv() => match msg {
                        Some(m) => Some(m),
                        None => break,
                    },
                    () = tokio::time::sleep_until(wake) => None,
                    _ = self.health.changed() => continue,
                }
            } else {
                match inputs.try_recv() {
                    Ok(m) => Some(m),
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        // Nothing queued: commit once the batch is `flush_interval` old and the
                        // committer can take it; until then keep adding to it.
                        let due = self.pending.due(self.config.state.flush_interval);
                        tokio::select! {
                            biased;
                            permit = reserve_after(jobs.as_ref(), due) => {
                                let Ok(permit) = permit else { break };
                                self.commit(permit, None);
                                continue;
                            }
                            msg = inputs.recv() => match msg {
                                Some(m) => Some(m),
                                None => break,
                            },
                        }
                    }
                }
            };
            if !self.handle(input, jobs.as_ref()).await {
                break;
            }
            self.housekeeping().await;
            if self.pending.is_full(self.config.state.max_batch) {
                let Ok(permit) = reserve_after(jobs.as_ref(), Instant::now()).await else { break };
                self.commit(permit, None);
            }
        }
        self.finish(jobs).await;
    }

    /// When to wake with no input: the engine's next timer, or housekeeping.
    fn wake_at(&self) -> Instant {
        let housekeeping = self.next_alive.min(self.next_snapshot).min(self.next_gauges);
        let engine = self.engine.next_deadline().map(Timestamp::millis);
        let timer = engine.into_iter().chain(self.sparkplug.next_deadline()).min().map(|d| {
            let wait = d.saturating_sub(wall_clock().millis()).max(0);
            Instant::now() + Duration::from_millis(u64::try_from(wait).unwrap_or(0))
        });
        let acks = match &self.sink {
            Sink::Memory(acker) => acker.retry_at(),
            Sink::Disk { .. } => None,
        };
        let feed = self.feed.as_ref().and_then(crate::console::feed::Teller::due);
        [timer, acks, feed].into_iter().flatten().fold(housekeeping, Instant::min)
    }

    /// A new upstream session: the retained status says `online` again (the broker may have
    /// published the last will meanwhile).
    fn greet_new_session(&mut self) {
        let sessions = self.health.borrow_and_update().upstream_sessions;
        if sessions != self.sessions {
            self.sessions = sessions;
            let rules = self.engine.rules().len();
            self.queue(reports::agent_status(&self.config, "online", self.started, rules));
            self.pending.nudge();
        }
    }

    /// One input. `false`: the committer is gone (stopping).
    async fn handle(&mut self, input: Option<Input>, jobs: Option<&mpsc::Sender<CommitJob>>) -> bool {
        self.outputs.clear();
        let queued = self.pending.queued;
        let now = wall_clock();
        match input {
            None => {
                self.engine.tick(now, &mut self.outputs);
                self.sparkplug_due(now.millis());
            }
            Some(Input::LinkDown) => {
                tracing::warn!("Sensor link down: absence detection paused.");
                if let Some(j) = &mut self.journal {
                    j.link(now.millis(), false);
                    j.hand_over();
                }
                self.engine.pause_absence(now);
            }
            Some(Input::LinkUp) => {
                if let Some(j) = &mut self.journal {
                    j.link(now.millis(), true);
                    j.hand_over();
                }
                self.engine.resume_absence(now, &mut self.outputs);
            }
            Some(Input::Ack(ack)) => self.pending.message(Instant::now(), None, Some(ack)),
            Some(Input::Reload(scan)) => self.reload(*scan),
            Some(Input::Alarm { payload, ack }) => {
                self.pending.message(Instant::now(), None, ack);
                self.alarm_command(&payload, now);
            }
            Some(Input::Query(query)) => self.answer(query, now),
            Some(Input::Report { kind, data }) => {
                self.queue(reports::agent_event(&self.config, &self.source, kind, data));
                self.pending.nudge();
            }
            Some(Input::TooLarge { topic, size, received, arrived, ack }) => {
                self.pending.message(Instant::now(), Some(arrived), ack);
                let error = DecodeError::TooLarge { size, max: self.config.max_payload_bytes };
                self.undecodable((&topic, Some(&[]), size), received, &error);
            }
            Some(Input::Message { topic, payload, format, sub, received, arrived, ack, suspect }) => {
                // A possible redelivery of what the last run crashed on: its delivery count is on
                // disk before it is processed.
                let delivery = match (&self.sink, suspect) {
                    (Sink::Disk { store, .. }, true) => {
                        let hash = poison::delivery_hash(&topic, &payload);
                        let delivery = poison::count(store, &mut self.pending.batch, hash, self.config.max_deliveries);
                        if delivery != Delivery::Quarantine && !self.commit_now(jobs, &topic).await {
                            return false;
                        }
                        delivery
                    }
                    _ => Delivery::Process(None),
                };
                self.pending.message(Instant::now(), Some(arrived), ack);
                match delivery {
                    Delivery::Quarantine => {
                        // A protected subscription's dead letters hold none of its bytes.
                        let private = self.private(sub).is_some();
                        self.quarantine(&topic, (!private).then_some(&payload[..]), payload.len(), received);
                    }
                    Delivery::Process(hash) => {
                        if let (Some(hash), Sink::Disk { store, .. }) = (hash, &self.sink) {
                            // Gone with the message's effects: only a delivery that never
                            // completes stays counted.
                            store.forget_delivery(&mut self.pending.batch, hash);
                        }
                        #[cfg(feature = "failpoints")]
                        poison::crash_on(&payload);
                        self.process(topic, payload, (format, sub), received);
                    }
                }
            }
        }
        self.collect();
        if self.pending.queued != queued {
            // New events are readable in the outbox already: they need not wait for the batch
            // to be written.
            self.upstream.pump();
        }
        true
    }

    /// Commits everything so far and waits until it is on disk (a delivery count must be,
    /// before its message is processed). A write that failed is logged and the message
    /// processed anyway, as any message whose state cannot be written: it stays
    /// unacknowledged. `false`: the committer is gone.
    async fn commit_now(&mut self, jobs: Option<&mpsc::Sender<CommitJob>>, topic: &str) -> bool {
        let Ok(permit) = reserve_after(jobs, Instant::now()).await else { return false };
        let (done_tx, done_rx) = oneshot::channel();
        self.commit(permit, Some(done_tx));
        if !done_rx.await.unwrap_or(false) {
            tracing::warn!(topic, "Delivery count not written; processing the message anyway.");
        }
        true
    }

    /// Hands the batch on: to the committer (durable; `permit` is its slot), or, in memory,
    /// straight to acknowledgement. `done` hears whether it is on disk.
    fn commit(&mut self, permit: Option<mpsc::Permit<'_, CommitJob>>, done: Option<oneshot::Sender<bool>>) {
        if let Some(j) = &mut self.journal {
            j.hand_over();
        }
        if let Some(log) = &self.event_log {
            log.hand_over();
        }
        let (acks, arrived) = self.pending.take_acks();
        self.sparkplug_commit();
        match (&mut self.sink, permit) {
            (Sink::Disk { store, .. }, Some(permit)) => {
                for what in self.pending.touched.drain() {
                    let value = self.engine.export(&what);
                    store.put_state(&mut self.pending.batch, &what, value);
                }
                self.pending.batch.alive_at(wall_clock().millis());
                let batch = std::mem::take(&mut self.pending.batch);
                let marks = if self.sinks.is_empty() { Vec::new() } else { self.sinks.marks() };
                permit.send(CommitJob { batch, acks, arrived, done, marks });
            }
            (Sink::Memory(acker), _) => {
                acker.send(acks);
                let now = Instant::now();
                for t in &arrived {
                    self.stats.detail.commit_latency_seconds.observe(now.duration_since(*t).as_secs_f64());
                }
                if let Some(done) = done {
                    let _ = done.send(true);
                }
            }
            (Sink::Disk { .. }, None) => {
                // `reserve_after` always gives a durable sink a slot; without one the messages
                // stay unacknowledged and the broker redelivers them.
                tracing::error!(messages = acks.len(), "Batch not committed: no slot at the committer.");
            }
        }
    }
}

/// A slot at the committer once `at` has passed (none needed in memory). `Err`: the committer
/// is gone (stopping).
async fn reserve_after(
    jobs: Option<&mpsc::Sender<CommitJob>>,
    at: Instant,
) -> Result<Option<mpsc::Permit<'_, CommitJob>>, mpsc::error::SendError<()>> {
    tokio::time::sleep_until(at).await;
    match jobs {
        Some(jobs) => jobs.reserve().await.map(Some),
        None => Ok(None),
    }
}
