//! What the engine knows, as plain values for people: every rule with its keys and its
//! state, every heartbeat key with its liveness, every alarm that is not idle. Read by the
//! agent's console between two events; nothing here changes the engine or reads a clock.
//!
//! ```text
//! Engine::rule_views()   per rule: name, kind, keys tracked, disabled, alarms kept and active
//! Engine::devices()      per heartbeat key: up / missing / flapping / never seen, per rule
//! Engine::alarms()       per rule and key: the alarm's condition, snooze, out of service
//! ```
//!
//! The cost is one pass over the state asked for (10 000 heartbeat keys take a few ms), paid
//! only when someone asks.

use crate::alarm::Alarm;
use crate::engine::Engine;
use crate::kinds::KindState;
use std::sync::Arc;

/// One rule as the console lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleView {
    pub name: Arc<str>,
    pub kind: &'static str,
    /// Keys (devices) whose state the rule keeps.
    pub keys: usize,
    /// Switched off after failing across keys, until the next reload.
    pub disabled: bool,
    /// Alarms kept (not idle), and of those the active ones.
    pub alarms: usize,
    pub active_alarms: usize,
}

pub use crate::kinds::heartbeat::Liveness;

/// One heartbeat rule's view of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceView {
    pub key: Arc<str>,
    pub rule: Arc<str>,
    pub state: Liveness,
    /// Processing time (ms) of the last sign of life; `None`: never seen.
    pub last_seen: Option<i64>,
    /// Since when it is missing (ms).
    pub missing_since: Option<i64>,
}

/// One rule and key's alarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmView {
    pub rule: Arc<str>,
    pub key: Arc<str>,
    pub alarm: Alarm,
}

impl Engine {
    /// Every rule in force, in rule order.
    pub fn rule_views(&self) -> Vec<RuleView> {
        self.rules
            .iter()
            .zip(&self.runtime)
            .map(|(r, rt)| RuleView {
                name: r.name.clone(),
                kind: r.kind(),
                keys: rt.state.keys(),
                disabled: rt.disabled,
                alarms: rt.alarms.len(),
                active_alarms: rt.alarms.values().filter(|a| a.alarm.condition.is_active()).count(),
            })
            .collect()
    }

    /// Every key of every heartbeat rule, by rule then key; `key` keeps only that key's.
    pub fn devices(&self, key: Option<&str>) -> Vec<DeviceView> {
        let mut out = Vec::new();
        for (r, rt) in self.rules.iter().zip(&self.runtime) {
            let KindState::Heartbeat(h) = &rt.state else { continue };
            let mut one = |k: &Arc<str>, hb: &crate::kinds::heartbeat::Hb| {
                let (state, last_seen, missing_since) = hb.liveness();
                out.push(DeviceView { key: k.clone(), rule: r.name.clone(), state, last_seen, missing_since });
            };
            match key {
                Some(key) => {
                    if let Some((k, hb)) = h.keys.get_key_value(key) {
                        one(k, hb);
                    }
                }
                None => h.keys.iter().for_each(|(k, hb)| one(k, hb)),
            }
        }
        out
    }

    /// Every alarm that is not idle, by rule then key; `key` keeps only that key's.
    pub fn alarms(&self, key: Option<&str>) -> Vec<AlarmView> {
        let mut out = Vec::new();
        for (r, rt) in self.rules.iter().zip(&self.runtime) {
            let mut of_rule: Vec<AlarmView> = rt
                .alarms
                .iter()
                .filter(|(k, _)| key.is_none_or(|key| &***k == key))
                .map(|(k, a)| AlarmView { rule: r.name.clone(), key: k.clone(), alarm: a.alarm.clone() })
                .collect();
            of_rule.sort_by(|a, b| a.key.cmp(&b.key));
            out.extend(of_rule);
        }
        out
    }
}
