//! Filters (every matching event) and thresholds (the edge, with hysteresis).

use super::{Cx, entry};
use crate::event::Event;
use crate::func::Func;
use rhai::Dynamic;
use std::collections::HashMap;
use std::sync::Arc;

/// A filter: emit for every event where `when` holds.
pub(crate) fn on_event_filter(cx: &mut Cx<'_>, when: Option<&Func>, key: &str, e: &Dynamic, ev: &Event) {
    if let Some(when) = when {
        match cx.test("when", when, e) {
            Some(true) => {}
            _ => return,
        }
    }
    cx.emit(key, ev.time.millis(), e, || ev.payload.clone(), ev.id);
}

/// A threshold: emit once when `when` starts to hold; re-arm when `clear` holds (or, without
/// `clear`, when `when` no longer does), emitting `emit_clear(e)` then if given.
pub(crate) fn on_event_threshold(
    cx: &mut Cx<'_>,
    (when, clear, emit_clear): (&Func, Option<&Func>, Option<&Func>),
    state: &mut HashMap<Arc<str>, bool>,
    key: &str,
    e: &Dynamic,
    ev: &Event,
) {
    let max_keys = cx.rule.max_keys;
    let Some((_, active)) = entry(state, key, max_keys, cx.out, || false) else { return };
    if !*active {
        if cx.test("when", when, e) == Some(true) {
            *active = true;
            cx.emit(key, ev.time.millis(), e, || ev.payload.clone(), ev.id);
        }
        return;
    }
    let cleared = match clear {
        Some(clear) => cx.test("clear", clear, e),
        None => cx.test("when", when, e).map(|w| !w),
    };
    if cleared == Some(true) {
        *active = false;
        if let Some(f) = emit_clear {
            if let Some(data) = cx.call(f, [e.clone()]) {
                cx.emit_data(key, ev.time.millis(), data, ev.id);
            }
        }
    }
}
