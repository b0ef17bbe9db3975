//! A harness that drives an engine under virtual time.

use edgewatch_engine::alarm::Condition;
use edgewatch_engine::history::{Closed, Skip};
use edgewatch_engine::{
    Action, AlarmTransition, Dynamic, Engine, EngineConfig, Event, KeyLimitReport, Outputs, RuleFault, RuleSet,
    Sandbox, Table, Tables, Timestamp, Touched,
};
use serde_json::Value;
use std::sync::Arc;

/// One composite event, simplified for assertions: (rule, key, time, data).
pub type Out = (String, String, i64, Value);

pub struct H {
    pub engine: Engine,
    pub out: Outputs,
    /// Every fault seen, as text, and as reported.
    pub faults: Vec<String>,
    pub fault_list: Vec<RuleFault>,
    /// Keys refused and evicted so far, and the key-limit reports.
    pub refused: usize,
    pub evicted: usize,
    pub key_limits: Vec<KeyLimitReport>,
    /// State named as changed, when `record_touched` is set.
    pub touched: Vec<Touched>,
    pub record_touched: bool,
    /// Rules that read `e.value` of an event that has none, once per (rule, event).
    pub value_missing: Vec<String>,
    /// History roll-ups closed so far, and readings not folded (by whom, why).
    pub closed: Vec<Closed>,
    pub skipped: Vec<(String, Skip)>,
    /// Actions so far: (sink, rule, key, shaped body, the id of their event).
    pub actions: Vec<(String, String, String, Option<Value>, String)>,
    /// Actions so far, as produced.
    pub full_actions: Vec<Action>,
    /// Alarm transitions so far.
    pub alarm_changes: Vec<AlarmTransition>,
    /// The `alarm` condition of every event so far, in order.
    pub alarm_states: Vec<Option<Condition>>,
    /// The causes of every event so far, in order, with its id.
    pub causes: Vec<(edgewatch_engine::CompositeId, edgewatch_engine::Causes)>,
}

impl H {
    pub fn new(src: &str) -> H {
        H::with(src, Tables::new(), EngineConfig::default())
    }

    pub fn with(src: &str, tables: Tables, config: EngineConfig) -> H {
        H::with_sandbox(Sandbox::default(), src, tables, config)
    }

    pub fn with_sandbox(sandbox: Sandbox, src: &str, tables: Tables, config: EngineConfig) -> H {
        let sandbox = Arc::new(sandbox);
        let (rules, errors) = RuleSet::compile(&sandbox, [("test.rhai", src)]);
        assert!(errors.is_empty(), "compile errors: {errors:?}");
        H {
            engine: Engine::with_config(sandbox, rules, tables, config),
            out: Outputs::default(),
            faults: Vec::new(),
            fault_list: Vec::new(),
            refused: 0,
            evicted: 0,
            key_limits: Vec::new(),
            touched: Vec::new(),
            record_touched: false,
            value_missing: Vec::new(),
            closed: Vec::new(),
            skipped: Vec::new(),
            actions: Vec::new(),
            full_actions: Vec::new(),
            alarm_changes: Vec::new(),
            alarm_states: Vec::new(),
            causes: Vec::new(),
        }
    }

    /// The outputs so far, as (rule, key, time, data); clears them.
    pub fn take(&mut self) -> Vec<Out> {
        self.drain()
    }

    fn drain(&mut self) -> Vec<Out> {
        self.faults.extend(self.out.faults.iter().map(|f| f.to_string()));
        self.fault_list.extend(self.out.faults.iter().cloned());
        self.refused += self.out.keys_refused;
        self.evicted += self.out.keys_evicted;
        self.key_limits.append(&mut self.out.key_limits);
        self.value_missing.extend(self.out.value_missing.iter().map(|r| r.to_string()));
        self.closed.append(&mut self.out.closed);
        self.skipped.extend(self.out.history_skipped.iter().map(|(s, k)| (s.to_string(), *k)));
        self.actions.extend(
            self.out
                .actions
                .iter()
                .map(|a| (a.sink.to_string(), a.rule.to_string(), a.key.clone(), a.data_json(), a.event.to_string())),
        );
        self.full_actions.extend(self.out.actions.iter().cloned());
        self.alarm_changes.append(&mut self.out.alarm_changes);
        self.alarm_states.extend(self.out.events.iter().map(|c| c.alarm));
        self.causes.extend(self.out.events.iter().map(|c| (c.id, c.causes.clone())));
        if self.record_touched {
            self.touched.append(&mut self.out.touched);
        }
        let v = self
            .out
            .events
            .iter()
            .map(|c| (c.rule.to_string(), c.key.clone(), c.time.millis(), c.data_json()))
            .collect();
        self.out.clear();
        v
    }

    /// A JSON payload on `topic` at time `t` (also the processing time).
    pub fn send(&mut self, t: i64, topic: &str, json: &str) -> Vec<Out> {
        let payload: Dynamic = serde_json::from_str(json).expect("test payload is JSON");
        self.engine.process(Event::new(topic, payload, json.as_bytes(), Timestamp(t)), Timestamp(t), &mut self.out);
        self.drain()
    }

    /// Processing time moves to `t`.
    pub fn tick(&mut self, t: i64) -> Vec<Out> {
        self.engine.tick(Timestamp(t), &mut self.out);
        self.drain()
    }
}

pub fn table_csv(name: &str, csv: &str) -> Tables {
    let mut t = Tables::new();
    t.insert(name.to_owned(), Arc::new(Table::from_csv(name, csv).expect("valid table")));
    t
}

/// Just the keys of some outputs.
pub fn keys(outs: &[Out]) -> Vec<&str> {
    outs.iter().map(|o| o.1.as_str()).collect()
}
