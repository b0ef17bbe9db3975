//! Filters (every matching event) and thresholds (the edge, with hysteresis).

use super::Keyed;
use super::{Cx, Ev, entry};
use crate::func::Func;

/// A filter: emit for every event where `when` holds.
pub(crate) fn on_event_filter(cx: &mut Cx<'_>, when: Option<&Func>, key: &str, x: &Ev<'_>) {
    if let Some(when) = when {
        if cx.test("when", when, x) != Some(true) {
            return;
        }
    }
    cx.emit(key, x.time(), || x.dynamic().clone(), || x.event.payload.clone(), x.event.id);
}

/// A threshold: emit once when `when` starts to hold; re-arm when `clear` holds (or, without
/// `clear`, when `when` no longer does), emitting `emit_clear(e)` then if given.
pub(crate) fn on_event_threshold(
    cx: &mut Cx<'_>,
    (when, clear, emit_clear): (&Func, Option<&Func>, Option<&Func>),
    state: &mut Keyed<bool>,
    key: &str,
    x: &Ev<'_>,
) {
    let Some((_, active)) = entry(state, key, cx, || false) else { return };
    if !*active {
        if cx.test("when", when, x) == Some(true) {
            *active = true;
            cx.alarm_activate(key, x.time());
            cx.emit(key, x.time(), || x.dynamic().clone(), || x.event.payload.clone(), x.event.id);
        }
        return;
    }
    let cleared = match clear {
        Some(clear) => cx.test("clear", clear, x),
        None => cx.test("when", when, x).map(|w| !w),
    };
    if cleared == Some(true) {
        *active = false;
        cx.alarm_clear(key, x.time());
        if let Some(f) = emit_clear {
            if let Some(data) = cx.call(f, [x.dynamic().clone()]) {
                cx.emit_data(key, x.time(), data, x.event.id);
            }
        }
    }
}
