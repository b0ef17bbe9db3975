//! Alarm commands from the control topic, and the alarm transitions published upstream.

use super::Step;
use crate::agent::reports::wall_clock;
use crate::alarms::{Refused, Request, change_word, reply};
use crate::emit::CloudEvent;
use crate::store::OutboxEntry;
use edgewatch_engine::alarm::{Change, Condition};
use edgewatch_engine::{AlarmTransition, CompositeId, EventId, Timestamp};

impl Step {
    /// A command on `<prefix>/control/alarms`: applied to the rule and key's alarm (persisted
    /// with the rule's state, like any change the engine makes), answered on
    /// `<prefix>/control/alarms/reply`, and its transition published with who asked.
    pub(super) fn alarm_command(&mut self, payload: &[u8], now: Timestamp) {
        let (id, result) = match Request::parse(payload, now.millis()) {
            Err((id, error)) => (id, Err(error.to_string())),
            Ok(req) => (req.id.clone(), self.apply_alarm(&req, now).map_err(|e| e.to_string())),
        };
        // The command as sent (bounded by the payload limit), and what came of it.
        let command = serde_json::from_slice::<serde_json::Value>(payload)
            .unwrap_or_else(|_| serde_json::json!({ "unreadable_bytes": payload.len() }));
        self.audit_alarm_command(command, "control", result.as_ref().copied().map_err(String::as_str));
        let topic = format!("{}/control/alarms/reply", self.config.upstream.topic_prefix);
        let payload = reply(id.as_deref(), result).to_string();
        self.queue(OutboxEntry { topic, payload: payload.into(), qos: 1, retain: false, traced: false });
        self.pending.nudge();
    }

    /// The same command from the console (`POST /api/v1/alarms/{rule}/{key}`): applied and
    /// audited as above; the answer goes back to the console instead of the reply topic.
    pub(super) fn console_alarm_command(
        &mut self,
        req: &Request,
        command: serde_json::Value,
        now: Timestamp,
    ) -> Result<Condition, Refused> {
        let result = self.apply_alarm(req, now);
        let shown = result.as_ref().copied().map_err(ToString::to_string);
        self.audit_alarm_command(command, "console", shown.as_ref().copied().map_err(String::as_str));
        self.pending.nudge();
        result
    }

    /// Applies a request to the engine's alarm, and queues its transitions upstream with who
    /// asked: the alarm's state after it.
    fn apply_alarm(&mut self, req: &Request, now: Timestamp) -> Result<Condition, Refused> {
        let applied = self.engine.alarm_command(&req.rule, &req.key, req.command, now, &mut self.outputs);
        let result = applied.map_err(Refused::from).and_then(|()| {
            let changes = std::mem::take(&mut self.outputs.alarm_changes);
            for t in &changes {
                tracing::info!(rule = %t.rule, key = %t.key, change = change_word(&t.change), by = req.by.as_deref().unwrap_or(""), "Alarm command applied.");
                self.queue_transition(t, req.by.as_deref(), req.note.as_deref());
            }
            changes.last().map(|t| t.condition).ok_or(Refused::NothingChanged)
        });
        if let Err(error) = &result {
            tracing::warn!(%error, rule = %req.rule, key = %req.key, "Alarm command refused.");
        }
        result
    }

    /// An alarm command in the audit trail: as sent, where from, and what came of it.
    fn audit_alarm_command(&mut self, command: serde_json::Value, via: &str, result: Result<Condition, &str>) {
        let outcome = match result {
            Ok(state) => serde_json::json!({ "ok": true, "alarmstate": state.as_str() }),
            Err(error) => serde_json::json!({ "ok": false, "error": error }),
        };
        self.audit("alarm_command", serde_json::json!({ "command": command, "via": via, "outcome": outcome }));
    }

    /// An alarm's transition as an upstream event, `edgewatch.alarm.<change>` on
    /// `<prefix>/alarms`: the rule, key, state after it, and who asked (commands only).
    pub(super) fn queue_transition(&mut self, t: &AlarmTransition, by: Option<&str>, note: Option<&str>) {
        let word = change_word(&t.change);
        let mut data = serde_json::json!({
            "rule": &*t.rule,
            "key": t.key,
            "alarmstate": t.condition.as_str(),
            "at": wall_clock().to_rfc3339(),
        });
        if let Change::Shelved { until } = t.change {
            data["until"] = Timestamp(until).to_rfc3339().into();
        }
        if let Some(by) = by {
            data["by"] = by.into();
        }
        if let Some(cause) = &t.cause {
            data["cause"] = cause.as_str().into();
        }
        if let Some(note) = note {
            data["note"] = note.into();
        }
        if let Some(feed) = self.feed.as_mut().filter(|f| f.watched()) {
            feed.tell("alarm", &serde_json::json!({ "change": word, "data": &data }).to_string());
        }
        let what = format!("{}\0{word}", t.rule);
        let id = CompositeId::derive("alarm", &t.key, EventId::from_content(&what, &t.time.millis().to_le_bytes()), 0);
        let ty = format!("edgewatch.alarm.{word}");
        let event = CloudEvent::envelope(id.to_string(), &self.source, ty, (&t.key, t.time.to_rfc3339()), &data);
        let topic = format!("{}/alarms", self.config.upstream.topic_prefix);
        self.queue(OutboxEntry { topic, payload: event.to_json().into(), qos: 1, retain: false, traced: false });
    }
}
