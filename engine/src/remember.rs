//! Feeding history: which series an event feeds, and closing periods as time passes.
//!
//! ```text
//! run_event ─▶ (once per event: `fed` cleared) Engine::remember_subscribed: HistoryConfig::remember whose pattern matches,
//!              key by default (`{device}`, payload `device`, topic)
//! route     ─▶ Engine::remember_for_rule: the rule's `remember`, by the rule's key
//!   both ─▶ reading(event, field) ─▶ Recorder::fold (a series is fed once per event)
//! process / tick ─▶ Recorder::close_due ─▶ Outputs::closed
//! ```

use crate::engine::Engine;
use crate::event::Event;
use crate::history::Skip;
use crate::kinds;
use crate::output::Outputs;
use crate::rule::Rule;
use rhai::Map;
use std::sync::Arc;

/// The reading of `field` in `event`: the payload's field of that name; else, when the
/// topic's last level is `field`, the derived value (a plain payload, or its `value`).
pub(crate) fn reading(event: &Event, field: &str) -> Result<f64, Skip> {
    let v = match event.payload.read_lock::<Map>() {
        Some(map) => match map.get(field) {
            Some(v) => v.clone(),
            None if event.topic.rsplit('/').next() == Some(field) => map.get("value").cloned().ok_or(Skip::Missing)?,
            None => return Err(Skip::Missing),
        },
        None if event.topic.rsplit('/').next() == Some(field) => event.payload.clone(),
        None => return Err(Skip::Missing),
    };
    if let Ok(f) = v.as_float() {
        Ok(f)
    } else if let Ok(i) = v.as_int() {
        Ok(i as f64)
    } else if v.is_unit() {
        Err(Skip::Missing)
    } else {
        Err(Skip::NotNumeric)
    }
}

impl Engine {
    /// Feeds the series the configuration remembers for this event.
    pub(crate) fn remember_subscribed(&mut self, event: &Event, now: i64, out: &mut Outputs) {
        // Taken out for the loop (a move, not a copy), so `feed` may borrow the engine.
        let specs = std::mem::take(&mut self.config.history.remember);
        for spec in &specs {
            let mut device = None;
            let matched = spec.pattern.matches_with(&event.topic, |name, value| {
                if name == "device" {
                    device = Some(value);
                }
            });
            if matched {
                let key = kinds::default_key(event, device);
                for field in &spec.fields {
                    self.feed(&spec.source, &key, field, event, now, out);
                }
            }
        }
        self.config.history.remember = specs;
    }

    /// Feeds the series rule `idx` remembers for its key.
    pub(crate) fn remember_for_rule(&mut self, rule: &Rule, key: &str, event: &Event, now: i64, out: &mut Outputs) {
        for field in &rule.remember {
            self.feed(&rule.name, key, field, event, now, out);
        }
    }

    fn feed(&mut self, source: &Arc<str>, key: &str, field: &Arc<str>, event: &Event, now: i64, out: &mut Outputs) {
        // Hashes rather than copies of the key: no allocation per reading. A collision of two
        // keys of one event in 64 bits is not a practical concern.
        let h = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
        if self.fed.iter().any(|(k, f)| *k == h && f == field) {
            return;
        }
        self.fed.push((h, Arc::clone(field)));
        let result = reading(event, field).and_then(|v| {
            let (cfg, lateness) = (&self.config.history, self.config.lateness_ms);
            self.recorder.fold(cfg, lateness, key, field, event.time.millis(), v, now, out)
        });
        if let Err(skip) = result {
            out.history_skipped.push((Arc::clone(source), skip));
        }
    }

    /// Closes the roll-ups whose period is over.
    pub(crate) fn close_history(&mut self, now: i64, out: &mut Outputs) {
        let (cfg, lateness) = (&self.config.history, self.config.lateness_ms);
        self.recorder.close_due(cfg, lateness, now, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;
    use rhai::Dynamic;

    fn ev(topic: &str, payload: Dynamic) -> Event {
        Event { topic: topic.into(), payload, time: Timestamp(0), id: crate::EventId(0), arrived: 0, chained: false }
    }

    #[test]
    fn readings_come_from_the_field_or_the_topic() {
        let mut m = Map::new();
        m.insert("temperature".into(), Dynamic::from_float(21.5));
        m.insert("state".into(), "on".into());
        m.insert("count".into(), Dynamic::from_int(3));
        let e = ev("sensors/t-01/reading", Dynamic::from_map(m));
        assert_eq!(reading(&e, "temperature"), Ok(21.5));
        assert_eq!(reading(&e, "count"), Ok(3.0));
        assert_eq!(reading(&e, "state"), Err(Skip::NotNumeric));
        assert_eq!(reading(&e, "humidity"), Err(Skip::Missing));
        assert_eq!(reading(&ev("sensors/t-01/temperature", Dynamic::from_float(19.0)), "temperature"), Ok(19.0));
        let mut m = Map::new();
        m.insert("value".into(), Dynamic::from_int(7));
        assert_eq!(reading(&ev("sensors/t-01/temperature", Dynamic::from_map(m)), "temperature"), Ok(7.0));
        assert_eq!(reading(&ev("sensors/t-01/humidity", Dynamic::from_float(19.0)), "temperature"), Err(Skip::Missing));
    }
}
