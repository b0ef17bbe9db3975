//! One task per sink: takes the front action of its lane once it is committed, waits for the
//! sink's rate limit, sends it (an HTTP POST, an MQTT publish acknowledged by the broker, or
//! nothing in a dry run), and then deletes it, tries it again after a backoff, or gives it
//! up. The decisions are [`crate::delivery`]'s plain functions; this only moves bytes.

use super::http::{Answer, HttpClient};
use super::queue::Pending;
use super::{Lane, Sinks, kind_name};
use crate::config::BrokerConfig;
use crate::config::SinkKind;
use crate::delivery::{Outcome, RetryPolicy, TokenBucket, classify};
use crate::mqtt::{self, ConnectOptions, Incoming};
use crate::store::Store;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long an MQTT sink waits for the broker's PUBACK before it counts the attempt failed.
const PUBACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Reports an action given up (its sink, event, last error) as an agent event upstream.
pub type Report = Arc<dyn Fn(serde_json::Value) + Send + Sync>;

/// What the delivery tasks share.
#[derive(Clone)]
pub struct Ctx {
    /// Where delivered actions are deleted from (none in memory).
    pub store: Option<Store>,
    pub report: Report,
    /// The source broker: mqtt sinks publish there, each on a connection of its own.
    pub broker: BrokerConfig,
    pub stop: CancellationToken,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("durable", &self.store.is_some()).finish_non_exhaustive()
    }
}

/// Starts one task per sink.
pub fn spawn_all(sinks: &Arc<Sinks>, ctx: &Ctx) -> Vec<JoinHandle<()>> {
    sinks
        .lanes()
        .iter()
        .map(|lane| {
            let (lane, ctx) = (lane.clone(), ctx.clone());
            tokio::spawn(async move {
                let sender = match Sender::new(&lane, &ctx) {
                    Ok(s) => s,
                    Err(error) => {
                        // Checked at start already (URL, CA file); kept on disk for the next run.
                        tracing::error!(sink = %lane.config.name, %error, "Sink not usable; its actions wait on disk.");
                        return;
                    }
                };
                run(lane, sender, ctx).await;
            })
        })
        .collect()
}

/// What one attempt came to.
enum Sent {
    Delivered,
    /// A dry run: logged and counted, not sent.
    Logged,
    Retry {
        hint: Option<Duration>,
        error: String,
    },
    Failed {
        error: String,
    },
}

enum Sender {
    Http(HttpClient),
    Mqtt(MqttSink),
    DryRun,
}

impl Sender {
    fn new(lane: &Lane, ctx: &Ctx) -> Result<Sender, String> {
        if lane.config.dry_run {
            return Ok(Sender::DryRun);
        }
        match &lane.config.kind {
            SinkKind::Http(h) => HttpClient::new(h).map(Sender::Http).map_err(|e| e.to_string()),
            SinkKind::Mqtt { qos, .. } => Ok(Sender::Mqtt(MqttSink::start(&lane.config.name, *qos, ctx))),
        }
    }

    async fn send(&mut self, lane: &Lane, action: &Pending) -> Sent {
        match self {
            Sender::DryRun => {
                tracing::info!(sink = %lane.config.name, kind = kind_name(&lane.config.kind), rule = %action.rule, key = %action.key, event = %action.event, id = %action.id, body = %action.body, "Dry run: action not sent.");
                lane.stats.dry_run.fetch_add(1, Relaxed);
                Sent::Logged
            }
            Sender::Http(client) => {
                let cloudevents = matches!(&lane.config.kind, SinkKind::Http(h) if h.cloudevents);
                let content_type = if cloudevents { "application/cloudevents+json" } else { "application/json" };
                match client.post(Bytes::from(action.body.clone()), content_type, &action.id).await {
                    Ok(Answer { status, retry_after }) => {
                        match classify(status, retry_after.as_deref(), SystemTime::now()) {
                            Outcome::Delivered => Sent::Delivered,
                            Outcome::Retry { hint } => Sent::Retry { hint, error: format!("HTTP {status}") },
                            Outcome::Failed => Sent::Failed { error: format!("HTTP {status}") },
                        }
                    }
                    Err(e) => Sent::Retry { hint: None, error: e.to_string() },
                }
            }
            Sender::Mqtt(sink) => sink.publish(action).await,
        }
    }
}

/// Milliseconds since the epoch, now.
fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Sleeps `d`, or less if the agent stops: `false` then.
async fn pause(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = stop.cancelled() => false,
    }
}

async fn run(lane: Arc<Lane>, mut sender: Sender, ctx: Ctx) {
    let policy: RetryPolicy = lane.config.retry;
    let mut bucket = lane.config.rate.map(|(burst, per_second)| TokenBucket::new(burst, per_second, now_ms()));
    loop {
        let Some((seq, action)) = lane.front() else {
            tokio::select! {
                () = lane.wake.notified() => continue,
                () = ctx.stop.cancelled() => return,
            }
        };
        if let Some(b) = &mut bucket {
            if let Err(at) = b.take(now_ms()) {
                let wait = Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0));
                if !pause(wait, &ctx.stop).await {
                    return;
                }
                continue;
            }
        }
        let Some((attempts, first)) = lane.queue().attempted(seq, now_ms()) else { continue };
        let sent = tokio::select! {
            sent = sender.send(&lane, &action) => sent,
            // Mid-request at a stop: the action stays on disk and is sent again next start.
            () = ctx.stop.cancelled() => return,
        };
        let give_up = match sent {
            Sent::Logged => None,
            Sent::Delivered => {
                lane.stats.sent.fetch_add(1, Relaxed);
                let latency = (now_ms() - action.made).max(0) as f64 / 1000.0;
                lane.stats.latency_seconds.observe(latency);
                None
            }
            Sent::Failed { error } => Some(error),
            Sent::Retry { hint, error } => {
                let age = Duration::from_millis(u64::try_from(now_ms() - first).unwrap_or(0));
                match policy.next(attempts, age, hint, rand::random::<f64>()) {
                    Some(wait) => {
                        lane.stats.retried.fetch_add(1, Relaxed);
                        tracing::warn!(sink = %lane.config.name, attempts, retry_in = ?wait, %error, "Action not delivered; trying again.");
                        if !pause(wait, &ctx.stop).await {
                            return;
                        }
                        continue;
                    }
                    None => Some(format!("{error} (gave up after {attempts} attempts)")),
                }
            }
        };
        if let Some(error) = &give_up {
            lane.stats.failed.fetch_add(1, Relaxed);
            tracing::error!(sink = %lane.config.name, event = %action.event, rule = %action.rule, key = %action.key, %error, "Action given up.");
            (ctx.report)(serde_json::json!({
                "sink": lane.config.name,
                "event": action.event,
                "action": action.id,
                "rule": action.rule,
                "key": action.key,
                "attempts": attempts,
                "error": error,
            }));
        }
        if lane.queue().done(seq) {
            if let Some(store) = &ctx.store {
                if let Err(error) = store.remove_action(&lane.config.name, seq) {
                    tracing::warn!(sink = %lane.config.name, %error, "Delivered action not deleted; it may be sent again after a restart.");
                }
            }
        }
    }
}

/// An mqtt sink: its own connection to the source broker, polled by a task of its own so
/// that keep-alives and PUBACKs flow while the sink waits. One publish at a time: the next
/// PUBACK is this publish's.
struct MqttSink {
    client: mqtt::Client,
    qos: u8,
    /// PUBACKs, and `false` on each disconnection (an unacknowledged publish then counts as
    /// failed and is tried again).
    events: mpsc::Receiver<bool>,
}

impl MqttSink {
    fn start(name: &str, qos: u8, ctx: &Ctx) -> MqttSink {
        let mut broker = ctx.broker.clone();
        broker.client_id = format!("{}-sink-{name}", broker.client_id);
        let (client, mut conn) = mqtt::connect(
            &broker,
            "sink",
            &ConnectOptions {
                request_capacity: 16,
                max_packet_size: 1 << 20,
                last_will: None,
                persistent: false,
                manual_acks: false,
                inflight: 1,
            },
        );
        let (tx, events) = mpsc::channel(16);
        let stop = ctx.stop.clone();
        let sink = name.to_owned();
        tokio::spawn(async move {
            loop {
                let incoming = tokio::select! {
                    i = conn.poll() => i,
                    () = stop.cancelled() => return,
                };
                let event = match incoming {
                    Incoming::PubAck => true,
                    Incoming::Disconnected { error, retry_in } => {
                        tracing::warn!(sink = %sink, %error, ?retry_in, "Sink connection lost.");
                        false
                    }
                    _ => continue,
                };
                // The sink may not be waiting: drop the news rather than block the connection.
                let _ = tx.try_send(event);
            }
        });
        MqttSink { client, qos, events }
    }

    async fn publish(&mut self, action: &Pending) -> Sent {
        while self.events.try_recv().is_ok() {}
        let payload = Bytes::from(action.body.clone());
        if let Err(e) = self.client.publish(&action.topic, self.qos, false, payload).await {
            return Sent::Retry { hint: None, error: e.to_string() };
        }
        if self.qos == 0 {
            return Sent::Delivered;
        }
        match tokio::time::timeout(PUBACK_TIMEOUT, self.events.recv()).await {
            Ok(Some(true)) => Sent::Delivered,
            Ok(Some(false)) => Sent::Retry { hint: None, error: "disconnected before PUBACK".into() },
            Ok(None) => Sent::Retry { hint: None, error: "connection task ended".into() },
            Err(_) => Sent::Retry { hint: None, error: format!("no PUBACK within {PUBACK_TIMEOUT:?}") },
        }
    }
}
