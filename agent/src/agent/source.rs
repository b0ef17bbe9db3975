//! The way in: polls the source connection and hands each message to the engine loop, with
//! its subscription's format and its acknowledgement token (acknowledged by the committer
//! once its effects are on disk).
//!
//! At a stop the engine is let go (its input closes) and this task keeps polling until the
//! engine loop is done, so that the acknowledgements of what it committed go out, or the
//! drain timeout passes: a message whose effects are on disk must not be redelivered.

use super::commit::DRAIN_TIMEOUT;
use super::step::Input;
use crate::config::Subscription;
use crate::health::{Health, Link};
use crate::mqtt::{self, Client, Incoming};
use crate::reload::Trigger;
use crate::telemetry::Stats;
use edgewatch_engine::Timestamp;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The source task's parts.
pub(super) struct Source {
    pub conn: mqtt::Connection,
    pub client: Client,
    pub subs: Vec<Subscription>,
    /// Messages on it ask for a reload instead of being processed.
    pub control_topic: Option<String>,
    /// Alarm commands arrive here (opt-in); handed to the engine loop, never decoded as readings.
    pub alarms_topic: Option<String>,
    pub reloads: mpsc::Sender<Trigger>,
    /// Of the first messages on a session resumed after a crash, how many are suspects.
    pub suspects: usize,
    pub stats: Arc<Stats>,
    pub health: Health,
    /// A Sparkplug primary host application's STATE topic (`sparkplug.host_id`) and its
    /// `online` and `offline` payloads: `online` retained on each connection, `offline` before
    /// a clean disconnect (the will says it otherwise).
    pub host_state: Option<(String, bytes::Bytes, bytes::Bytes)>,
}

impl Source {
    /// Runs until `stop`, then until `engine_done` (or the drain timeout), then disconnects.
    pub async fn run(mut self, inputs: mpsc::Sender<Input>, stop: CancellationToken, engine_done: CancellationToken) {
        let mut subacks = 0usize;
        let mut first_connection = true;
        let mut link_up = false;
        let mut inputs = Some(inputs);
        let mut drain_until: Option<Instant> = None;
        loop {
            let incoming = match drain_until {
                None => tokio::select! {
                    () = stop.cancelled() => {
                        inputs = None;
                        drain_until = Some(Instant::now() + DRAIN_TIMEOUT);
                        continue;
                    }
                    incoming = self.conn.poll() => incoming,
                },
                Some(at) => tokio::select! {
                    () = engine_done.cancelled() => break,
                    () = tokio::time::sleep_until(at) => break,
                    incoming = self.conn.poll() => incoming,
                },
            };
            // Draining: what arrives now stays unacknowledged, for the next run.
            let Some(tx) = &inputs else { continue };
            let input = match incoming {
                Incoming::Connected { session_present } => {
                    // Only the session this process resumes first holds redeliveries from
                    // before a crash; later reconnects of this process follow no crash.
                    if !std::mem::take(&mut first_connection) || !session_present {
                        self.suspects = 0;
                    }
                    self.health.connected(Link::Source);
                    tracing::info!(connection = "source", session_present, "Connected to the source broker.");
                    subacks = 0;
                    self.host_state(true);
                    self.subscribe();
                    (!std::mem::replace(&mut link_up, true)).then_some(Input::LinkUp)
                }
                Incoming::SubAck => {
                    subacks += 1;
                    if subacks == self.subs.len() {
                        tracing::info!(subscriptions = subacks, "Subscribed to every sensor topic.");
                        self.health.subscribed();
                    }
                    None
                }
                Incoming::Publish { topic, payload, ack } if self.control_topic.as_deref() == Some(topic.as_str()) => {
                    // Who asked, if the payload says (`{"by": "..."}`): informational, for the
                    // audit trail; the broker's ACL decides who may ask at all.
                    let by = serde_json::from_slice::<serde_json::Value>(&payload)
                        .ok()
                        .and_then(|v| Some(v.get("by")?.as_str()?.chars().take(128).collect::<String>()));
                    tracing::info!(topic, by = by.as_deref().unwrap_or(""), "Reload asked for on the control topic.");
                    let _ = self.reloads.try_send(Trigger::Control { by });
                    ack.map(Input::Ack)
                }
                Incoming::Publish { topic, payload, ack } if self.alarms_topic.as_deref() == Some(topic.as_str()) => {
                    Some(Input::Alarm { payload, ack })
                }
                Incoming::Publish { mut topic, payload, ack } => {
                    let arrived = Instant::now();
                    let (format, sub) = route(&self.subs, &self.stats, &mut topic);
                    let received = Timestamp::from_system_time(SystemTime::now());
                    // Only a message that will be redelivered if unacknowledged can be poison.
                    let suspect = ack.is_some() && self.suspects > 0;
                    self.suspects = self.suspects.saturating_sub(usize::from(ack.is_some()));
                    Some(Input::Message { topic, payload, format, sub, received, arrived, ack, suspect })
                }
                Incoming::TooLarge { mut topic, size, ack } => {
                    let arrived = Instant::now();
                    route(&self.subs, &self.stats, &mut topic);
                    let received = Timestamp::from_system_time(SystemTime::now());
                    Some(Input::TooLarge { topic, size, received, arrived, ack })
                }
                Incoming::Unroutable { ack } => {
                    self.stats.decode_errors.fetch_add(1, Relaxed);
                    ack.map(Input::Ack)
                }
                Incoming::Disconnected { error, retry_in } => {
                    self.health.disconnected(Link::Source, &error, retry_in);
                    std::mem::take(&mut link_up).then_some(Input::LinkDown)
                }
                Incoming::PubAck => None,
            };
            if let Some(input) = input {
                if tx.send(input).await.is_err() {
                    break;
                }
                let depth = tx.max_capacity() - tx.capacity();
                self.stats.detail.queue_depth.store(depth as u64, Relaxed);
            }
        }
        self.host_state(false);
        self.conn.close(&self.client, Duration::from_millis(500)).await;
    }

    /// Publishes this host application's Sparkplug STATE, if it has one: retained, QoS 1.
    fn host_state(&self, online: bool) {
        let Some((topic, on, off)) = &self.host_state else { return };
        let payload = if online { on } else { off };
        if let Err(error) = self.client.try_publish(topic.clone(), 1, true, payload.clone()) {
            tracing::warn!(%error, online, "Sparkplug host STATE not published.");
        }
    }

    /// Subscribes to every sensor topic. Never awaits the client: this task is what drains its
    /// request queue. A full queue (rare: right after a reconnect) subscribes from a task.
    fn subscribe(&self) {
        for (i, s) in self.subs.iter().enumerate() {
            if self.client.try_subscribe(&s.filter, s.qos).is_err() {
                let (client, rest) = (self.client.clone(), self.subs[i..].to_vec());
                tokio::spawn(async move {
                    for s in &rest {
                        if let Err(error) = client.subscribe(&s.filter, s.qos).await {
                            tracing::error!(filter = %s.filter, %error, "Subscription not sent.");
                        }
                    }
                });
                return;
            }
        }
    }
}

/// Counts a received message against its subscription, strips the subscription's prefix
/// from its topic, and says how its payload is decoded and which subscription it came by
/// (its index, for its schema).
fn route(subs: &[Subscription], stats: &Stats, topic: &mut String) -> (crate::decode::Format, Option<u16>) {
    stats.received.fetch_add(1, Relaxed);
    let sub = subs.iter().position(|s| s.pattern.matches(topic));
    if let Some(counter) = sub.and_then(|i| stats.detail.received_by_subscription.get(i)) {
        counter.fetch_add(1, Relaxed);
    }
    let index = sub.and_then(|i| u16::try_from(i).ok());
    let sub = sub.and_then(|i| subs.get(i));
    if let Some(prefix) = sub.map(|s| s.strip_prefix.as_str()).filter(|p| !p.is_empty()) {
        if topic.starts_with(prefix) {
            topic.drain(..prefix.len());
        }
    }
    (sub.map(|s| s.format).unwrap_or_default(), index)
}
