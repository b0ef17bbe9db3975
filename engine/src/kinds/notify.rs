//! What a rule's step does with its alarms (see [`crate::alarm`]): an event's actions
//! (`notify`, `act`), gated by the key's alarm (rate limit, snooze, out of service) and held
//! back by `inhibit`; the kinds' activations and clearings.

use super::Cx;
use crate::alarm::{Change, Notify};
use crate::keyalarm::{ALARM_TAG, HeldNotice, event_ref};
use crate::output::{Action, Composite};
use crate::sandbox::{check_data, check_finite};
use rhai::Dynamic;
use std::sync::Arc;

impl Cx<'_> {
    /// The actions of an event (`notify`, `act`): a body shaped by `act`'s `data`, checked as
    /// emitted data is; a `data` that fails or returns `()` sends nothing to that sink.
    pub(super) fn actions(&mut self, c: &mut Composite) {
        let rule = self.rule;
        let Some(alarms) = self.alarms.as_deref_mut() else { return };
        let key: Arc<str> = c.key.as_str().into();
        let slot = alarms.entry(key.clone()).or_default();
        if slot.unannounced && !slot.alarm.condition.is_active() {
            slot.unannounced = false;
            c.alarm = Some(slot.alarm.condition);
            self.touch(&key);
            return;
        }
        let notify = slot.alarm.notify(self.now, rule.every_ms);
        c.alarm = Some(slot.alarm.condition);
        if slot.alarm.condition == crate::alarm::Condition::Unacknowledged && slot.activation_event.is_none() {
            slot.activation_event = Some(event_ref(c.id, c.time));
        }
        if notify == Notify::Held(crate::alarm::Held::RateLimited) {
            slot.folded_event = Some(event_ref(c.id, c.time));
        }
        let deadline = match (notify, rule.every_ms) {
            // The window ends then: send what it folded, or forget an idle alarm.
            (Notify::Send { .. }, Some(every)) => slot.alarm.last_sent.map(|l| l.saturating_add(every)),
            _ => None,
        };
        // Without a rate limit, an idle alarm remembers nothing worth keeping.
        if slot.is_idle() && rule.every_ms.is_none() {
            alarms.remove(&key);
        }
        if let Some(deadline) = deadline {
            self.set_timer(deadline, &key, ALARM_TAG);
        }
        // Saved with the rule's state for the key.
        self.touch(&key);
        let folded = match notify {
            Notify::Send { folded } => folded,
            Notify::Held(_) => return,
        };
        let mut made = Vec::with_capacity(rule.actions.len());
        for spec in &rule.actions {
            let data = match &spec.data {
                None => None,
                Some(f) => {
                    let Some(body) = self.call(f, [Dynamic::from_map(c.as_map())]) else { continue };
                    if body.is_unit() {
                        continue;
                    }
                    if let Err(why) = check_data(self.script, &body).and_then(|()| check_finite("data", &body)) {
                        self.fault(format!("the body for sink `{}` {why}; not sent", spec.sink));
                        continue;
                    }
                    Some(body)
                }
            };
            made.push(Action {
                event: c.id,
                rule: c.rule.clone(),
                key: c.key.clone(),
                time: c.time,
                sink: spec.sink.clone(),
                data,
                folded,
                level: 0,
                event_data: None,
            });
        }
        match rule.inhibit.as_ref() {
            None => self.out.actions.extend(made),
            Some(inhibit) => self.hold(&key, c, folded, made, inhibit.hold_ms),
        }
    }

    /// Holds a notification back (`inhibit`) for `hold_ms`: the engine sends it then, unless
    /// the parent's alarm is active (see `notices`). A later one while it waits is counted
    /// into it ("and N more"); the key clearing drops it.
    fn hold(&mut self, key: &Arc<str>, c: &Composite, folded: u32, made: Vec<Action>, hold_ms: i64) {
        let Some(alarms) = self.alarms.as_deref_mut() else { return };
        let slot = alarms.entry(key.clone()).or_default();
        if let Some(held) = &mut slot.held {
            held.folded = held.folded.saturating_add(1).saturating_add(folded);
            return;
        }
        let due = self.now.saturating_add(hold_ms);
        let sends = made.iter().map(|a| (a.sink.to_string(), a.data_json())).collect();
        let data = serde_json::to_value(&c.data).ok();
        slot.held = Some(HeldNotice { event: event_ref(c.id, c.time), due: Some(due), folded, sends, data });
        self.set_timer(due, key, ALARM_TAG);
    }

    /// The situation the rule detects began for `key` at `time`: its alarm becomes active
    /// (call before emitting, so the event carries the new condition).
    pub(crate) fn alarm_activate(&mut self, key: &str, time: i64) {
        self.alarm_transition(key, time, |a, t| a.activate(t));
    }

    /// The situation ended for `key` at `time`: its alarm clears.
    pub(crate) fn alarm_clear(&mut self, key: &str, time: i64) {
        self.alarm_transition(key, time, |a, t| a.clear(t));
    }

    fn alarm_transition(
        &mut self,
        key: &str,
        time: i64,
        apply: impl FnOnce(&mut crate::alarm::Alarm, i64) -> Option<crate::alarm::Change>,
    ) {
        let Some(alarms) = self.alarms.as_deref_mut() else { return };
        let key: Arc<str> = key.into();
        let slot = alarms.entry(key.clone()).or_default();
        let Some(change) = apply(&mut slot.alarm, time) else { return };
        let condition = slot.alarm.condition;
        match change {
            Change::Activated => {
                slot.activation_event = None;
                slot.late_ms = 0;
                slot.unannounced = false;
            }
            // The situation is over: what was held for it is not sent, nor news of its end.
            Change::Cleared { .. } => slot.unannounced = slot.held.take().is_some(),
            _ => {}
        }
        if change == Change::Activated {
            if let Some((at, _)) = self.rule.escalation_at(slot) {
                self.timers.set(at, self.rule_idx, key.clone(), ALARM_TAG);
            }
        }
        if slot.is_idle() && self.rule.every_ms.is_none() {
            alarms.remove(&key);
        }
        self.out.alarm_changes.push(crate::output::AlarmTransition {
            rule: self.rule.name.clone(),
            key: key.to_string(),
            change,
            condition,
            time: crate::Timestamp(time),
            cause: None,
        });
        self.touch(&key);
    }
}
