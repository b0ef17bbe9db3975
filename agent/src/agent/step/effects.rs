//! What the engine produced, turned into outbox entries and state to persist.

use super::Step;
use crate::agent::reports;
use crate::agent::reports::wall_clock;
use crate::config::SinkKind;
use crate::decode::DecodeError;
use crate::delivery::action_id;
use crate::emit::CloudEvent;
use crate::sinks::queue::Pending;
use crate::store::OutboxEntry;
use edgewatch_engine::{Dynamic, Outputs, Timestamp};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

impl Step {
    /// Queues an event: readable by the upstream side at once, on disk with the batch.
    pub(super) fn queue(&mut self, entry: OutboxEntry) -> u64 {
        self.pending.queued += 1;
        self.outbox.push(&mut self.pending.batch, entry)
    }

    /// A dead letter (see [`reports::dead_letter`]): queued upstream, counted, and kept among
    /// the recent ones the console shows.
    fn dead_letter(&mut self, letter: Vec<u8>) {
        self.stats.dead_letters.fetch_add(1, Relaxed);
        if let Ok(mut recent) = self.stats.detail.recent_dead_letters.lock() {
            if recent.len() == crate::telemetry::RECENT_DEAD_LETTERS {
                recent.pop_front();
            }
            recent.push_back(String::from_utf8_lossy(&letter).into());
        }
        self.queue(reports::dead_letter_entry(&self.config, letter));
    }

    /// Turns the engine's outputs for the last input into outbox entries and state to persist.
    pub(super) fn collect(&mut self) {
        let outputs = std::mem::take(&mut self.outputs);
        if outputs.duplicates > 0 {
            self.stats.duplicates.fetch_add(outputs.duplicates as u64, Relaxed);
        }
        self.stats.keys_limited(outputs.keys_refused, outputs.keys_evicted);
        for report in &outputs.key_limits {
            // At most one per rule per `key_report_interval_ms`: the engine rate-limits them.
            let data = self.stats.key_limit(report);
            self.queue(reports::agent_event(&self.config, &self.source, "key_limit", data));
        }
        for late in &outputs.late {
            self.stats.late.fetch_add(1, Relaxed);
            let raw = serde_json::to_vec(&late.payload).unwrap_or_default();
            let error = "older than the allowed lateness";
            self.dead_letter(reports::dead_letter(&late.topic, Some(&raw), raw.len(), late.time, "late", error));
        }
        for fault in &outputs.faults {
            self.stats.rule_failed(fault);
            self.queue(reports::fault_entry(&self.config, fault));
            if fault.disabled {
                let data = serde_json::json!({
                    "rule": fault.rule.to_string(), "location": fault.location.to_string(), "error": fault.message,
                });
                self.audit("rule_disabled", data);
            }
        }
        if let (Some(first), Ok(mut by_rule)) = (outputs.events.first(), self.stats.detail.by_rule.lock()) {
            // Events of one input usually come from one rule: look it up once.
            let now = wall_clock().millis();
            let mut count = |rule: Arc<str>, n: u64| {
                let c = by_rule.entry(rule).or_default();
                c.events += n;
                c.recent.add(now, n);
            };
            let mut rule = first.rule.clone();
            let mut n = 0u64;
            for composite in &outputs.events {
                if composite.rule != rule {
                    count(std::mem::replace(&mut rule, composite.rule.clone()), n);
                    n = 0;
                }
                n += 1;
            }
            count(rule, n);
        }
        for composite in &outputs.events {
            self.stats.events.fetch_add(1, Relaxed);
            tracing::debug!(rule = %composite.rule, key = %composite.key, id = %composite.id, "Composite event.");
            let version = self.rule_versions.get(&composite.rule).map(|v| &**v);
            let payload: bytes::Bytes = CloudEvent::new(composite, &self.source, version).to_json().into();
            let topic = self.config.upstream.event_topic(&composite.rule, &composite.key);
            let qos = self.config.upstream.qos;
            // The topic is copied only for the event log, when it is on.
            let logged = self.event_log.as_ref().map(|_| topic.clone());
            let traced = logged.is_some();
            let seq = self.queue(OutboxEntry { topic, payload: payload.clone(), qos, retain: false, traced });
            if let (Some(log), Some(topic)) = (&self.event_log, logged) {
                log.event(wall_clock().millis(), seq, composite.id.0, &topic, &payload);
            }
            if let Some(feed) = self.feed.as_mut().filter(|f| f.watched()) {
                tell(feed, composite, &payload, self.heartbeat_rules.contains(&composite.rule));
            }
        }
        if !outputs.actions.is_empty() {
            self.enqueue_actions(&outputs);
        }
        for t in &outputs.alarm_changes {
            self.queue_transition(t, None, None);
        }
        if !outputs.history_skipped.is_empty() {
            self.stats.history_skipped(&outputs.history_skipped);
        }
        if matches!(self.sink, super::Sink::Disk { .. }) {
            self.pending.touched.extend(outputs.touched.iter().cloned());
            if !outputs.closed.is_empty() {
                // Closed by a tick as often as by a message: written with the batch now due.
                self.pending.batch.closed.extend(outputs.closed.iter().cloned());
                self.pending.nudge();
            }
        } else if !outputs.closed.is_empty() {
            self.stats.detail.history.dropped.fetch_add(outputs.closed.len() as u64, Relaxed);
        }
        // Given back, so its vectors keep their capacity for the next input.
        self.outputs = outputs;
    }

    /// Queues each action for its sink, with the batch of the input that caused it. The body:
    /// the event as a CloudEvent (its data replaced by what `act` shaped, if it shaped one),
    /// or, for a sink that wants only data (`body = "data"` for http; a shaped body for mqtt,
    /// as device commands are), the data alone.
    fn enqueue_actions(&mut self, outputs: &Outputs) {
        let made = wall_clock().millis();
        for action in &outputs.actions {
            let Some((i, lane)) = self.sinks.lane(&action.sink) else {
                // Rules are checked against the configured sinks when they load.
                tracing::warn!(sink = %action.sink, rule = %action.rule, "Action for a sink not configured: dropped.");
                continue;
            };
            let composite = outputs.events.iter().find(|c| c.id == action.event);
            // A send the alarm lifecycle made later (an escalation, the folded "and N more")
            // has no event at hand: its data says which send it is.
            let later = (composite.is_none() && action.event_data.is_none()).then(|| {
                let mut m = edgewatch_engine::Map::new();
                m.insert("escalation".into(), Dynamic::from_int(i64::from(action.level)));
                m.insert("folded".into(), Dynamic::from_int(i64::from(action.folded)));
                Dynamic::from_map(m)
            });
            let event_data = composite.map(|c| &c.data).or(action.event_data.as_ref()).or(later.as_ref());
            let envelope = |data: Option<&Dynamic>| {
                let unit = Dynamic::UNIT;
                let data = data.or(event_data).unwrap_or(&unit);
                let ty = format!("edgewatch.{}", action.rule);
                let (id, time) = (action.event.to_string(), action.time.to_rfc3339());
                let mut e = CloudEvent::envelope(id, &self.source, ty, (&action.key, time), data);
                if let Some(c) = composite {
                    e.alarmstate = c.alarm.map(|a| a.as_str());
                    e = e.lineage(c, self.rule_versions.get(&c.rule).map(|v| &**v));
                }
                e.to_json()
            };
            let data_only = |data: Option<&Dynamic>| {
                serde_json::to_vec(&data.or(event_data).unwrap_or(&Dynamic::UNIT)).unwrap_or_default()
            };
            let (body, topic) = match &lane.config.kind {
                SinkKind::Http(h) if h.cloudevents => (envelope(action.data.as_ref()), String::new()),
                SinkKind::Http(_) => (data_only(action.data.as_ref()), String::new()),
                SinkKind::Mqtt { topic, .. } => {
                    let topic = topic.render(&self.config.upstream.topic_prefix, &action.rule, &action.key);
                    match &action.data {
                        Some(d) => (data_only(Some(d)), topic),
                        None => (envelope(None), topic),
                    }
                }
            };
            let event = action.event.to_string();
            let pending = Pending {
                id: action_id(&event, &action.sink, &send_of(action)),
                event,
                rule: action.rule.to_string(),
                key: action.key.clone(),
                time: action.time.millis(),
                body: String::from_utf8(body).unwrap_or_default(),
                topic,
                made,
                attempts: 0,
                first_attempt: 0,
            };
            let durable = match &self.sink {
                super::Sink::Disk { store, .. } => Some((store, &mut self.pending.batch)),
                super::Sink::Memory(_) => None,
            };
            self.sinks.enqueue(i, pending, durable);
            self.stats.actions.fetch_add(1, Relaxed);
        }
    }

    /// A payload that cannot be decoded: counted and dead-lettered (with at most a prefix of it).
    pub(super) fn undecodable(
        &mut self,
        (topic, payload, size): (&str, Option<&[u8]>, usize),
        received: Timestamp,
        error: &DecodeError,
    ) {
        self.stats.decode_failed(topic, error);
        self.dead_letter(reports::dead_letter(topic, payload, size, received, error.reason(), &error.to_string()));
    }

    /// A message the agent crashed on each time it was delivered: dead-lettered unprocessed
    /// and acknowledged, so the session moves on.
    /// `payload` is what the dead letter may show of it (`None` for a protected
    /// subscription), `size` its whole size.
    pub(super) fn quarantine(&mut self, topic: &str, payload: Option<&[u8]>, size: usize, received: Timestamp) {
        let error = crate::agent::poison::quarantine_reason(self.config.max_deliveries);
        tracing::error!(topic, size, "Poison message quarantined unprocessed.");
        self.dead_letter(reports::dead_letter(topic, payload, size, received, "poison", &error));
        self.stats.quarantined.fetch_add(1, Relaxed);
    }
}

/// Tells the console's live stream of a composite event (`payload`, the CloudEvent as
/// queued), and of the device state it reports when it is a heartbeat rule's.
fn tell(
    feed: &mut crate::console::feed::Teller,
    composite: &edgewatch_engine::Composite,
    payload: &[u8],
    heartbeat: bool,
) {
    let event = std::str::from_utf8(payload).unwrap_or("null");
    feed.event(&composite.rule, &composite.key, event);
    if heartbeat {
        let status = composite.data.as_map_ref().ok().and_then(|m| m.get("status").map(ToString::to_string));
        let data = serde_json::json!({ "rule": &*composite.rule, "key": composite.key, "status": status });
        feed.tell("device", &data.to_string());
    }
}

/// Which send of its event an action is, for its id: the first, an escalation level, or the
/// folded "and N more" (whose event is the last one folded).
fn send_of(action: &edgewatch_engine::Action) -> String {
    match (action.level, action.folded) {
        (0, 0) => String::new(),
        (0, _) => "folded".to_owned(),
        (level, _) => format!("escalation-{level}"),
    }
}
