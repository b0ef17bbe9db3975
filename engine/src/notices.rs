//! What the engine does with alarms across rules and over time (see [`crate::alarm`] for
//! one alarm's lifecycle, and `kinds::notify` for what a rule's step does with it):
//! commands, restoring saved alarms, and their deadlines (a snooze ends, folded
//! notifications and escalations fall due, a held notification's hold ends), and
//! inhibition: a rule's notification for a key is held while another rule's alarm is active
//! for the key's parent, and released when it clears.

use crate::engine::{AlarmCommandError, Engine};
use crate::output::{Outputs, Touched};
use crate::rule::Rule;
use crate::runtime::ALARM_TAG;
use crate::time::Timestamp;
use std::sync::Arc;

impl Engine {
    /// Applies a person's (or a program's) `command` to rule `rule`'s alarm for `key` at
    /// `now`, and reports the transition in `out.alarm_changes`. An alarm that is not kept
    /// (it was idle) is in its normal, in-service state: commands apply to it as well.
    pub fn alarm_command(
        &mut self,
        rule: &str,
        key: &str,
        command: crate::alarm::Command,
        now: Timestamp,
        out: &mut Outputs,
    ) -> Result<(), AlarmCommandError> {
        let idx = self
            .rules
            .as_slice()
            .iter()
            .position(|r| &*r.name == rule)
            .ok_or_else(|| AlarmCommandError::UnknownRule(rule.to_owned()))?;
        let r = &self.rules.as_slice()[idx];
        if !r.keeps_alarms() {
            return Err(AlarmCommandError::NoAlarms(rule.to_owned()));
        }
        let rt = &mut self.runtime[idx];
        let key: Arc<str> = key.into();
        let slot = rt.alarms.entry(key.clone()).or_default();
        let change = slot.alarm.command(command, now.millis());
        let condition = slot.alarm.condition;
        let deadline = r.alarm_deadline(&slot.alarm);
        if slot.alarm.is_idle() && deadline.is_none() {
            rt.alarms.remove(&key);
        }
        let change = change?;
        if let Some(deadline) = deadline {
            self.clock.set(deadline, idx as u32, key.clone(), ALARM_TAG);
        }
        out.touched.push(Touched::Rule { rule: r.name.clone(), key: key.clone() });
        out.alarm_changes.push(crate::output::AlarmTransition {
            rule: r.name.clone(),
            key: key.to_string(),
            change,
            condition,
            time: now,
        });
        Ok(())
    }

    /// Puts a restored alarm back and re-arms its deadline.
    pub(crate) fn restore_alarm(&mut self, idx: usize, key: Arc<str>, alarm: crate::runtime::KeyAlarm) {
        let Some(rule) = self.rules.as_slice().get(idx) else { return };
        let window_end = rule.every_ms.zip(alarm.alarm.last_sent).map(|(every, last)| last.saturating_add(every));
        let next = rule.alarm_deadline(&alarm.alarm);
        if let Some(at) = next.or(window_end) {
            self.clock.set(at, idx as u32, key.clone(), ALARM_TAG);
        }
        if let Some(rt) = self.runtime.get_mut(idx) {
            rt.alarms.insert(key, alarm);
        }
    }

    /// An alarm's deadline at `now`: a snooze runs out, a rate-limit window ends (its
    /// folded notifications go out as one "and N more" per sink, about the last one folded),
    /// and an alarm left idle is forgotten.
    pub(crate) fn alarm_due(&mut self, idx: usize, rule: &Rule, key: &Arc<str>, now: i64, out: &mut Outputs) {
        let Some(rt) = self.runtime.get_mut(idx) else { return };
        let Some(slot) = rt.alarms.get_mut(key) else { return };
        if let Some(change) = slot.alarm.expire(now) {
            out.alarm_changes.push(crate::output::AlarmTransition {
                rule: rule.name.clone(),
                key: key.to_string(),
                change,
                condition: slot.alarm.condition,
                time: Timestamp(now),
            });
        }
        if let Some(every) = rule.every_ms {
            if let Some(folded) = slot.alarm.folded_due(now, every) {
                if let Some((hi, lo, time)) = slot.folded_event.take() {
                    let event = (u128::from(hi) << 64) | u128::from(lo);
                    for spec in &rule.actions {
                        out.actions.push(crate::output::Action {
                            event: crate::output::CompositeId(event),
                            rule: rule.name.clone(),
                            key: key.to_string(),
                            time: Timestamp(time),
                            sink: spec.sink.clone(),
                            data: None,
                            folded,
                            level: 0,
                        });
                    }
                }
            }
        }
        while let Some((_, level)) = rule.escalation_at(&slot.alarm).filter(|&(at, _)| at <= now) {
            slot.alarm.escalated_to(level);
            let (Some(spec), Some((hi, lo, time))) = (rule.escalate.get(usize::from(level) - 1), slot.activation_event)
            else {
                continue;
            };
            for sink in &spec.to {
                out.actions.push(crate::output::Action {
                    event: crate::output::CompositeId((u128::from(hi) << 64) | u128::from(lo)),
                    rule: rule.name.clone(),
                    key: key.to_string(),
                    time: Timestamp(time),
                    sink: sink.clone(),
                    data: None,
                    folded: 0,
                    level,
                });
            }
        }
        let next = rule.alarm_deadline(&slot.alarm);
        let window_open = rule.every_ms.zip(slot.alarm.last_sent).is_some_and(|(every, last)| now < last + every);
        out.touched.push(Touched::Rule { rule: rule.name.clone(), key: key.clone() });
        if slot.alarm.is_idle() && next.is_none() && !window_open {
            rt.alarms.remove(key);
        } else if let Some(next) = next.filter(|&n| n > now) {
            self.clock.set(next, idx as u32, key.clone(), ALARM_TAG);
        }
    }
}
