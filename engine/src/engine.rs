//! The engine proper: routes each event to the rules that listen to it and runs them.

use crate::event::Event;
use crate::output::{Composite, CompositeId, Outputs, RuleFault};
use crate::rule::{Rule, RuleKind, RuleSet};
use crate::sandbox::{Sandbox, describe};
use crate::time::Timestamp;
use rhai::{Array, Dynamic, EvalAltResult, FnPtr, Map};
use std::sync::Arc;

/// Runs rules over events. Synchronous and deterministic: the same rules, events and times
/// give the same outputs, whatever the machine.
#[derive(Debug)]
pub struct Engine {
    /// The script engine the rules' closures run in; shared with the loader, which must
    /// compile with the same limits and functions.
    sandbox: Arc<Sandbox>,
    /// The rules in force; replaced whole on reload, between two events.
    rules: RuleSet,
}

impl Engine {
    /// An engine running `rules`, which must have been compiled by `sandbox`.
    pub fn new(sandbox: Arc<Sandbox>, rules: RuleSet) -> Self {
        Engine { sandbox, rules }
    }

    /// The rules in force.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The sandbox rules for this engine must be compiled in.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// Swaps in a new rule set; the next event sees only the new rules.
    pub fn replace_rules(&mut self, rules: RuleSet) {
        self.rules = rules;
    }

    /// Runs `event` through every rule that listens to its topic, appending what they
    /// produce to `out`. `now` is the processing time (unused by stateless rules, and the
    /// clock of timers once rules have them).
    pub fn process(&mut self, event: &Event, _now: Timestamp, out: &mut Outputs) {
        let mut base: Option<Map> = None;
        for rule in self.rules.iter() {
            let Some(pattern) = rule.patterns.iter().find(|p| p.matches(&event.topic)) else {
                continue;
            };
            out.matched += 1;
            let fields = base.get_or_insert_with(|| event_fields(event));
            let mut e = fields.clone();
            let mut device: Option<&str> = None;
            pattern.matches_with(&event.topic, |name, value| {
                if name == "device" {
                    device = Some(value);
                }
                e.insert(name.into(), value.into());
            });
            let e = Dynamic::from_map(e);
            match &rule.kind {
                RuleKind::Filter { when, emit } => {
                    if let Some(when) = when {
                        match self.call(rule, when, &e).and_then(|v| as_bool(rule, "when", v)) {
                            Ok(true) => {}
                            Ok(false) => continue,
                            Err(fault) => {
                                out.faults.push(fault);
                                continue;
                            }
                        }
                    }
                    let key = match self.key(rule, &e, device, event) {
                        Ok(k) => k,
                        Err(fault) => {
                            out.faults.push(fault);
                            continue;
                        }
                    };
                    let data = match emit {
                        Some(emit) => match self.call(rule, emit, &e) {
                            Ok(d) => d,
                            Err(fault) => {
                                out.faults.push(fault);
                                continue;
                            }
                        },
                        None => event.payload.clone(),
                    };
                    // `emit` may decline by returning `()`.
                    if data.is_unit() {
                        continue;
                    }
                    out.events.push(Composite {
                        id: CompositeId::derive(&rule.name, &key, event.id, 0),
                        rule: rule.name.clone(),
                        key,
                        time: event.time,
                        data,
                    });
                }
            }
        }
    }

    fn call(&self, rule: &Rule, f: &FnPtr, e: &Dynamic) -> Result<Dynamic, RuleFault> {
        f.call::<Dynamic>(self.sandbox.engine(), &rule.ast, (e.clone(),)).map_err(|err| fault(rule, &err))
    }

    /// The key: the rule's `key` closure, else the `{device}` level of the topic, else the
    /// payload's `device` field, else the topic itself.
    fn key(&self, rule: &Rule, e: &Dynamic, device: Option<&str>, event: &Event) -> Result<String, RuleFault> {
        if let Some(k) = &rule.key {
            let v = self.call(rule, k, e)?;
            if v.is_unit() {
                return Err(simple_fault(rule, "`key` returned nothing".into()));
            }
            return Ok(v.to_string());
        }
        if let Some(d) = device {
            return Ok(d.to_owned());
        }
        if let Ok(map) = event.payload.as_map_ref() {
            if let Some(d) = map.get("device").filter(|d| d.is_string()) {
                return Ok(d.to_string());
            }
        }
        Ok(event.topic.clone())
    }
}

fn as_bool(rule: &Rule, what: &str, v: Dynamic) -> Result<bool, RuleFault> {
    v.as_bool().map_err(|ty| simple_fault(rule, format!("`{what}` must return a bool, but returned {ty}")))
}

fn fault(rule: &Rule, err: &EvalAltResult) -> RuleFault {
    let (pos, message) = describe(err);
    let location = match (pos.line(), pos.position()) {
        (Some(line), Some(col)) => format!("{}:{line}:{col}", rule.origin.file),
        (Some(line), None) => format!("{}:{line}:0", rule.origin.file),
        _ => rule.origin.to_string(),
    };
    RuleFault { rule: rule.name.clone(), location, message }
}

fn simple_fault(rule: &Rule, message: String) -> RuleFault {
    RuleFault { rule: rule.name.clone(), location: rule.origin.to_string(), message }
}

/// The fields every rule sees: `topic`, `levels`, `payload`, `value`, `time`.
///
/// `value` is the reading a rule most often wants: a scalar payload itself; else the
/// payload's `value` field; else the field named like the topic's last level (so
/// `{"temperature": 21.5}` on `sensors/t-01/temperature` has `value` 21.5); else `()`.
fn event_fields(event: &Event) -> Map {
    let mut m = Map::new();
    let levels: Array = event.topic.split('/').map(|l| Dynamic::from(l.to_owned())).collect();
    let value = match event.payload.as_map_ref() {
        Ok(map) => {
            let last = event.topic.rsplit('/').next().unwrap_or("");
            map.get("value").or_else(|| map.get(last)).cloned().unwrap_or(Dynamic::UNIT)
        }
        Err(_) => event.payload.clone(),
    };
    m.insert("topic".into(), event.topic.as_str().into());
    m.insert("levels".into(), levels.into());
    m.insert("payload".into(), event.payload.clone());
    m.insert("value".into(), value);
    m.insert("time".into(), Dynamic::from_int(event.time.millis()));
    m
}
