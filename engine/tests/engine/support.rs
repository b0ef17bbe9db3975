//! A harness that drives an engine under virtual time.

use edgewatch_engine::{Dynamic, Engine, EngineConfig, Event, Outputs, RuleSet, Sandbox, Table, Tables, Timestamp};
use serde_json::Value;
use std::sync::Arc;

/// One composite event, simplified for assertions: (rule, key, time, data).
pub type Out = (String, String, i64, Value);

pub struct H {
    pub engine: Engine,
    pub out: Outputs,
    /// Every fault seen, as text.
    pub faults: Vec<String>,
}

impl H {
    pub fn new(src: &str) -> H {
        H::with(src, Tables::new(), EngineConfig::default())
    }

    pub fn with(src: &str, tables: Tables, config: EngineConfig) -> H {
        let sandbox = Arc::new(Sandbox::default());
        let (rules, errors) = RuleSet::compile(&sandbox, [("test.rhai", src)]);
        assert!(errors.is_empty(), "compile errors: {errors:?}");
        H { engine: Engine::with_config(sandbox, rules, tables, config), out: Outputs::default(), faults: Vec::new() }
    }

    /// The outputs so far, as (rule, key, time, data); clears them.
    pub fn take(&mut self) -> Vec<Out> {
        self.drain()
    }

    fn drain(&mut self) -> Vec<Out> {
        self.faults.extend(self.out.faults.iter().map(|f| f.to_string()));
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
