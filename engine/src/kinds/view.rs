//! The event as rules see it ([`Ev`]: the Rhai map `e`, built only when a rule needs it),
//! its derived `value`, and the default key of a rule without a `key` closure.

use super::Cx;
use crate::event::Event;
use crate::native::View;
use rhai::{Array, Dynamic, Map};
use std::cell::OnceCell;

/// The event as rules see it, built only as far as needed: native predicates read the event
/// itself; the Rhai map `e` is built on first use, from a base shared by all rules.
pub(crate) struct Ev<'a> {
    pub(crate) event: &'a Event,
    /// The `{name}` levels of the pattern that matched.
    pub(crate) captures: &'a [(&'a str, &'a str)],
    /// `topic`, `levels`, `payload`, `value`, `time`: the same for every rule.
    base: &'a OnceCell<Map>,
    map: OnceCell<Dynamic>,
}

impl<'a> Ev<'a> {
    pub(crate) fn new(event: &'a Event, captures: &'a [(&'a str, &'a str)], base: &'a OnceCell<Map>) -> Self {
        Ev { event, captures, base, map: OnceCell::new() }
    }

    /// The Rhai map `e`.
    pub(crate) fn dynamic(&self) -> &Dynamic {
        self.map.get_or_init(|| {
            let mut m = self.base.get_or_init(|| event_fields(self.event)).clone();
            for (name, value) in self.captures {
                m.insert((*name).into(), (*value).into());
            }
            Dynamic::from_map(m)
        })
    }

    /// `e.value`, without building `e`.
    pub(crate) fn value(&self) -> Dynamic {
        derived_value(self.event)
    }

    /// `e.value` is `()`: checked without cloning it.
    pub(crate) fn value_missing(&self) -> bool {
        match self.event.payload.as_map_ref() {
            Ok(map) => {
                let last = self.event.topic.rsplit('/').next().unwrap_or("");
                map.get("value").or_else(|| map.get(last)).is_none_or(Dynamic::is_unit)
            }
            Err(_) => self.event.payload.is_unit(),
        }
    }

    pub(crate) fn time(&self) -> i64 {
        self.event.time.millis()
    }

    pub(crate) fn view(&self) -> View<'_> {
        View {
            topic: &self.event.topic,
            payload: &self.event.payload,
            time: self.event.time.millis(),
            captures: self.captures,
            window: None,
        }
    }
}

/// `value` is the reading a rule most often wants: a scalar payload itself; else the
/// payload's `value` field; else the field named like the topic's last level (so
/// `{"temperature": 21.5}` on `sensors/t-01/temperature` has `value` 21.5); else `()`.
fn derived_value(event: &Event) -> Dynamic {
    match event.payload.as_map_ref() {
        Ok(map) => {
            let last = event.topic.rsplit('/').next().unwrap_or("");
            map.get("value").or_else(|| map.get(last)).cloned().unwrap_or(Dynamic::UNIT)
        }
        Err(_) => event.payload.clone(),
    }
}

/// The key: the rule's `key` closure, else the `{device}` level of the topic, else the
/// payload's `device` (or, for chained events, `subject`) field, else the topic itself.
pub(crate) fn key_of(cx: &mut Cx<'_>, x: &Ev<'_>, device: Option<&str>) -> Option<String> {
    if let Some(k) = &cx.rule.key {
        let v = cx.call(k, [x.dynamic().clone()])?;
        if v.is_unit() {
            cx.fault("`key` returned nothing".into());
            return None;
        }
        return Some(v.to_string());
    }
    Some(default_key(x.event, device))
}

/// The key without a `key` closure: the `{device}` level, else the payload's `device` (or,
/// for chained events, `subject`) field, else the topic itself.
pub(crate) fn default_key(event: &Event, device: Option<&str>) -> String {
    if let Some(d) = device {
        return d.to_owned();
    }
    if let Some(map) = event.payload.read_lock::<Map>() {
        for field in ["device", "subject"] {
            if let Some(d) = map.get(field).filter(|d| d.is_string()) {
                return d.to_string();
            }
        }
    }
    event.topic.clone()
}

/// The fields every rule sees: `topic`, `levels`, `payload`, `value`, `time`.
fn event_fields(event: &Event) -> Map {
    let mut m = Map::new();
    let levels: Array = event.topic.split('/').map(|l| Dynamic::from(l.to_owned())).collect();
    m.insert("topic".into(), event.topic.as_str().into());
    m.insert("levels".into(), levels.into());
    m.insert("payload".into(), event.payload.clone());
    m.insert("value".into(), derived_value(event));
    m.insert("time".into(), Dynamic::from_int(event.time.millis()));
    m
}
