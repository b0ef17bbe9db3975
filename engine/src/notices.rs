//! What the engine does with alarms across rules and over time (see [`crate::alarm`] for
//! one alarm's lifecycle, and `kinds::notify` for what a rule's step does with it):
//! commands, restoring saved alarms, and their deadlines (a snooze ends, folded
//! notifications and escalations fall due, a held notification's hold ends), and
//! inhibition: a rule's notification for a key is held while another rule's alarm is active
//! for the key's parent, and released when it clears.

use crate::alarm::Change;
use crate::engine::{AlarmCommandError, Engine};
use crate::keyalarm::{ALARM_TAG, event_of};
use crate::output::Action;
use crate::output::{Outputs, Touched};
use crate::rule::{Inhibit, Rule};
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
        let deadline = r.alarm_deadline(slot);
        if slot.is_idle() && deadline.is_none() {
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
            cause: None,
        });
        Ok(())
    }

    /// Puts a restored alarm back and re-arms its deadline.
    pub(crate) fn restore_alarm(&mut self, idx: usize, key: Arc<str>, alarm: crate::keyalarm::KeyAlarm) {
        let Some(rule) = self.rules.as_slice().get(idx) else { return };
        let window_end = rule.every_ms.zip(alarm.alarm.last_sent).map(|(every, last)| last.saturating_add(every));
        let next = rule.alarm_deadline(&alarm);
        if let Some(at) = next.or(window_end) {
            self.clock.set(at, idx as u32, key.clone(), ALARM_TAG);
        }
        if let Some(rt) = self.runtime.get_mut(idx) {
            rt.alarms.insert(key, alarm);
        }
    }

    /// An alarm's deadline at `now`: a snooze runs out, a held notification's hold ends (it
    /// goes, unless the parent's alarm is active: then it waits for that to clear), a
    /// rate-limit window ends (its folded notifications go out as one "and N more" per sink,
    /// about the last one folded), escalation levels fall due, and an alarm left idle is
    /// forgotten.
    pub(crate) fn alarm_due(&mut self, idx: usize, rule: &Rule, key: &Arc<str>, now: i64, out: &mut Outputs) {
        let held_due = self.runtime.get(idx).and_then(|rt| rt.alarms.get(key)?.held.as_ref()?.due);
        let inhibitor = match (held_due, &rule.inhibit) {
            (Some(due), Some(inhibit)) if due <= now => Some(self.active_parent(inhibit, key)),
            _ => None,
        };
        let Some(rt) = self.runtime.get_mut(idx) else { return };
        let Some(slot) = rt.alarms.get_mut(key) else { return };
        let transition = |change, condition, cause| crate::output::AlarmTransition {
            rule: rule.name.clone(),
            key: key.to_string(),
            change,
            condition,
            time: Timestamp(now),
            cause,
        };
        if let Some(change) = slot.alarm.expire(now) {
            out.alarm_changes.push(transition(change, slot.alarm.condition, None));
        }
        match inhibitor {
            None => {}
            Some(Some(parent)) => {
                if let Some(held) = &mut slot.held {
                    held.due = None;
                }
                out.alarm_changes.push(transition(Change::Inhibited, slot.alarm.condition, Some(parent)));
            }
            Some(None) => {
                if let Some(held) = slot.held.take() {
                    let (event, time) = event_of(held.event);
                    slot.late_ms = slot.alarm.since.map_or(0, |since| now.saturating_sub(since).max(0));
                    let event_data = held.data.and_then(|d| rhai::serde::to_dynamic(d).ok());
                    for (sink, data) in held.sends {
                        let data = data.and_then(|d| rhai::serde::to_dynamic(d).ok());
                        out.actions.push(Action {
                            event,
                            rule: rule.name.clone(),
                            key: key.to_string(),
                            time,
                            sink: sink.into(),
                            data,
                            folded: held.folded,
                            level: 0,
                            event_data: event_data.clone(),
                        });
                    }
                }
            }
        }
        if let Some(every) = rule.every_ms {
            if let Some(folded) = slot.alarm.folded_due(now, every) {
                if let Some((event, time)) = slot.folded_event.take().map(event_of) {
                    for spec in &rule.actions {
                        out.actions.push(later_send(rule, key, (event, time), &spec.sink, folded, 0));
                    }
                }
            }
        }
        while let Some((_, level)) = rule.escalation_at(slot).filter(|&(at, _)| at <= now) {
            slot.alarm.escalated_to(level);
            let (Some(spec), Some((event, time))) =
                (rule.escalate.get(usize::from(level) - 1), slot.activation_event.map(event_of))
            else {
                continue;
            };
            for sink in &spec.to {
                out.actions.push(later_send(rule, key, (event, time), sink, 0, level));
            }
        }
        let next = rule.alarm_deadline(slot);
        let window_open = rule.every_ms.zip(slot.alarm.last_sent).is_some_and(|(every, last)| now < last + every);
        out.touched.push(Touched::Rule { rule: rule.name.clone(), key: key.clone() });
        if slot.is_idle() && next.is_none() && !window_open {
            rt.alarms.remove(key);
        } else if let Some(next) = next.filter(|&n| n > now) {
            self.clock.set(next, idx as u32, key.clone(), ALARM_TAG);
        }
    }

    /// The parent of `key` under `inhibit`, as `rule/parent key`, if the parent's alarm is
    /// active. A key with no row or no parent in the table, or a `by` that names no rule
    /// keeping alarms, is never inhibited (`edgewatch check` reports the latter).
    fn active_parent(&self, inhibit: &Inhibit, key: &str) -> Option<String> {
        let parent = self.tables.get(&*inhibit.table)?.get(key)?.get(&*inhibit.column)?;
        if parent.is_unit() {
            return None;
        }
        let parent = parent.to_string();
        let idx = self.rules.as_slice().iter().position(|r| r.name == inhibit.by)?;
        let active = self.runtime.get(idx)?.alarms.get(parent.as_str())?.alarm.condition.is_active();
        active.then(|| format!("{}/{parent}", inhibit.by))
    }

    /// Releases what alarms that cleared since `out.alarm_changes[from]` inhibited: each
    /// child whose notification waits for one of them waits the rule's hold again (the
    /// children that come back with their parent clear within it), then goes. One pass over
    /// the child rule's alarms per parent that clears, which is rare.
    pub(crate) fn release_inhibited(&mut self, from: usize, now: i64, out: &mut Outputs) {
        let cleared: Vec<(Arc<str>, String)> = out
            .alarm_changes
            .get(from..)
            .unwrap_or_default()
            .iter()
            .filter(|t| matches!(t.change, Change::Cleared { .. }))
            .map(|t| (t.rule.clone(), t.key.clone()))
            .collect();
        for (parent_rule, parent) in cleared {
            for (idx, child) in self.rules.as_slice().iter().enumerate() {
                let Some(inhibit) = child.inhibit.as_ref().filter(|i| i.by == parent_rule) else { continue };
                let Some(table) = self.tables.get(&*inhibit.table) else { continue };
                let Some(rt) = self.runtime.get_mut(idx) else { continue };
                let due = now.saturating_add(inhibit.hold_ms);
                for (key, slot) in &mut rt.alarms {
                    let Some(held) = slot.held.as_mut().filter(|h| h.due.is_none()) else { continue };
                    let of = table.get(key).and_then(|row| row.get(&*inhibit.column)).map(|p| p.to_string());
                    if of.as_deref() == Some(parent.as_str()) {
                        held.due = Some(due);
                        self.clock.set(due, idx as u32, key.clone(), ALARM_TAG);
                        out.touched.push(Touched::Rule { rule: child.name.clone(), key: key.clone() });
                    }
                }
            }
        }
    }

    /// After a reload: a notification held for a parent whose alarm is no longer active (its
    /// rule went away, changed kind and started afresh, or stopped notifying) waits out its
    /// hold again and goes, as after the parent cleared; it is never held for good.
    pub(crate) fn release_orphans(&mut self, now: i64) {
        let mut orphans: Vec<(usize, Arc<str>, i64)> = Vec::new();
        for (idx, rule) in self.rules.as_slice().iter().enumerate() {
            let Some(inhibit) = &rule.inhibit else { continue };
            let Some(rt) = self.runtime.get(idx) else { continue };
            for (key, slot) in &rt.alarms {
                let inhibited = slot.held.as_ref().is_some_and(|h| h.due.is_none());
                if inhibited && self.active_parent(inhibit, key).is_none() {
                    orphans.push((idx, key.clone(), now.saturating_add(inhibit.hold_ms)));
                }
            }
        }
        for (idx, key, due) in orphans {
            if let Some(held) = self.runtime[idx].alarms.get_mut(&key).and_then(|s| s.held.as_mut()) {
                held.due = Some(due);
                self.clock.set(due, idx as u32, key, ALARM_TAG);
            }
        }
    }
}

/// A send the lifecycle makes later, about an earlier event (the folded "and N more", an
/// escalation level): the sink's default body, and no event data at hand.
fn later_send(
    rule: &Rule,
    key: &str,
    (event, time): (crate::output::CompositeId, Timestamp),
    sink: &Arc<str>,
    folded: u32,
    level: u8,
) -> Action {
    Action {
        event,
        rule: rule.name.clone(),
        key: key.to_owned(),
        time,
        sink: sink.clone(),
        data: None,
        folded,
        level,
        event_data: None,
    }
}
