//! Windows: count, sum, avg, min, max, first, last and rate over the last T of event time or
//! the last N events, sliding or tumbling.
//!
//! Sliding windows keep their events and update the aggregates incrementally (min and max
//! with monotonic queues), so an event costs O(1) amortised. With `when`, a sliding window
//! fires on the edge and re-arms when `clear` holds (default: when `when` stops holding);
//! without `when` it emits its aggregates for every event that enters it. Tumbling windows
//! are judged once each, when they close: by the next event past their end, or by a timer.

use super::Keyed;
use super::{Cx, Ev, entry, timer_input, with_field};
use crate::declare::number;
use crate::func::Func;
use crate::native::{Aggregates, View};
use crate::rule::{Extent, WindowSpec};
use rhai::{Dynamic, Map};
use std::collections::VecDeque;
use std::sync::Arc;

/// One key's window.
#[derive(Debug, Default)]
pub(crate) struct WindowState {
    /// (event time, value), oldest first.
    events: VecDeque<(i64, f64)>,
    /// Index the next pushed event gets; the front's index is `pushed - events.len()`.
    pushed: u64,
    /// Candidates for the minimum: increasing values, by index.
    minq: VecDeque<(u64, f64)>,
    /// Candidates for the maximum: decreasing values, by index.
    maxq: VecDeque<(u64, f64)>,
    sum: f64,
    /// Pops since the sum was last recomputed from scratch (bounds float drift).
    pops: u32,
    /// A sliding window's `when` held and has not cleared yet.
    active: bool,
    /// Start of the tumbling time window being filled.
    bucket: Option<i64>,
    /// Deadline of the pending close timer, if any.
    timer_at: Option<i64>,
}

impl WindowState {
    fn push(&mut self, t: i64, v: f64) {
        let idx = self.pushed;
        self.pushed += 1;
        self.events.push_back((t, v));
        self.sum += v;
        while self.minq.back().is_some_and(|&(_, m)| m >= v) {
            self.minq.pop_back();
        }
        self.minq.push_back((idx, v));
        while self.maxq.back().is_some_and(|&(_, m)| m <= v) {
            self.maxq.pop_back();
        }
        self.maxq.push_back((idx, v));
    }

    fn pop_front(&mut self) {
        let first = self.pushed - self.events.len() as u64;
        if let Some((_, v)) = self.events.pop_front() {
            self.sum -= v;
            if self.minq.front().is_some_and(|&(i, _)| i == first) {
                self.minq.pop_front();
            }
            if self.maxq.front().is_some_and(|&(i, _)| i == first) {
                self.maxq.pop_front();
            }
            self.pops += 1;
            if self.events.is_empty() {
                self.sum = 0.0;
                self.pops = 0;
            } else if self.pops >= 1024 {
                self.sum = self.events.iter().map(|&(_, v)| v).sum();
                self.pops = 0;
            }
        }
    }

    fn clear(&mut self) {
        while !self.events.is_empty() {
            self.pop_front();
        }
    }

    /// The aggregates rules see as `e.window`.
    fn aggregates(&self, bounds: Option<(i64, i64)>) -> Aggregates {
        let count = self.events.len();
        let (first, last) = (self.events.front(), self.events.back());
        let rate = match (first, last) {
            (Some(&(t0, v0)), Some(&(t1, v1))) if t1 > t0 => Some((v1 - v0) / ((t1 - t0) as f64 / 1000.0)),
            _ => None,
        };
        let span_ms = match (first, last) {
            (Some(&(t0, _)), Some(&(t1, _))) => t1 - t0,
            _ => 0,
        };
        Aggregates {
            count: count as i64,
            sum: self.sum,
            avg: (count > 0).then(|| self.sum / count as f64),
            min: self.minq.front().map(|&(_, v)| v),
            max: self.maxq.front().map(|&(_, v)| v),
            first: first.map(|&(_, v)| v),
            last: last.map(|&(_, v)| v),
            rate,
            span_ms,
            bounds,
        }
    }
}

/// Evaluates a window predicate on the event plus `e.window`.
fn judge(cx: &mut Cx<'_>, what: &str, f: &Func, x: &Ev<'_>, aggs: &Aggregates) -> Option<bool> {
    let view = View { window: Some(aggs), ..x.view() };
    cx.test_with(what, f, &view, || with_field(x.dynamic(), "window", aggs.to_dynamic()))
}

/// The number an event contributes, or `None` (filtered out, or a fault).
fn value_of(cx: &mut Cx<'_>, spec: &WindowSpec, x: &Ev<'_>) -> Option<f64> {
    if let Some(filter) = &spec.filter {
        if cx.test("window.filter", filter, x) != Some(true) {
            return None;
        }
    }
    let v = match &spec.value {
        Some(f) => cx.call(f, [x.dynamic().clone()])?,
        None => x.value(),
    };
    match number(&v) {
        Some(n) if n.is_finite() => Some(n),
        _ => {
            let what = if spec.value.is_some() { "window.value" } else { "e.value" };
            cx.fault(format!("{what} must be a number to enter the window, but is {}", v.type_name()));
            None
        }
    }
}

pub(crate) fn on_event(
    cx: &mut Cx<'_>,
    (spec, when, clear): (&WindowSpec, Option<&Func>, Option<&Func>),
    state: &mut Keyed<WindowState>,
    key: &str,
    x: &Ev<'_>,
) {
    let t = x.time();
    let Some((key, w)) = entry(state, key, cx, WindowState::default) else { return };

    if spec.tumbling {
        if let Extent::Time(size) = spec.extent {
            let bucket = t.div_euclid(size) * size;
            match w.bucket {
                Some(b) if b < bucket => {
                    close(cx, when, &key, w, size);
                    w.bucket = Some(bucket);
                }
                Some(_) => {}
                None => w.bucket = Some(bucket),
            }
            let end = w.bucket.unwrap_or(bucket) + size;
            if w.timer_at != Some(end) {
                w.timer_at = Some(end);
                cx.set_timer(end, &key, 0);
            }
        }
        if let Some(v) = value_of(cx, spec, x) {
            w.push(t, v);
            if w.events.len() > spec.max_events {
                w.pop_front();
            }
        }
        if let Extent::Count(n) = spec.extent {
            if w.events.len() >= n {
                let aggs = w.aggregates(None);
                let fire = match when {
                    Some(f) => judge(cx, "when", f, x, &aggs) == Some(true),
                    None => true,
                };
                if fire {
                    cx.emit(
                        &key,
                        t,
                        || with_field(x.dynamic(), "window", aggs.to_dynamic()),
                        || aggs.to_dynamic(),
                        x.event.id,
                    );
                }
                w.clear();
            }
        }
        return;
    }

    // Sliding.
    if let Extent::Time(size) = spec.extent {
        while w.events.front().is_some_and(|&(et, _)| et <= t - size) {
            w.pop_front();
        }
    }
    let entered = match value_of(cx, spec, x) {
        Some(v) => {
            w.push(t, v);
            true
        }
        None => false,
    };
    let limit = match spec.extent {
        Extent::Count(n) => n.min(spec.max_events),
        Extent::Time(_) => spec.max_events,
    };
    while w.events.len() > limit {
        w.pop_front();
    }
    let aggs = w.aggregates(None);
    let emit_ctx = || with_field(x.dynamic(), "window", aggs.to_dynamic());
    match when {
        None => {
            if entered {
                cx.emit(&key, t, emit_ctx, || aggs.to_dynamic(), x.event.id);
            }
        }
        Some(when) => {
            if !w.active {
                if judge(cx, "when", when, x, &aggs) == Some(true) {
                    w.active = true;
                    cx.emit(&key, t, emit_ctx, || aggs.to_dynamic(), x.event.id);
                }
            } else {
                let cleared = match clear {
                    Some(c) => judge(cx, "clear", c, x, &aggs),
                    None => judge(cx, "when", when, x, &aggs).map(|b| !b),
                };
                if cleared == Some(true) {
                    w.active = false;
                }
            }
        }
    }
    if w.events.is_empty() && !w.active {
        // Nothing left to remember for this key.
        let k: &str = &key;
        state.remove(k);
    }
}

/// Judges and empties a tumbling time window.
fn close(cx: &mut Cx<'_>, when: Option<&Func>, key: &Arc<str>, w: &mut WindowState, size: i64) {
    let Some(start) = w.bucket else { return };
    let end = start + size;
    if !w.events.is_empty() {
        let aggs = w.aggregates(Some((start, end)));
        let ctx = || {
            let mut m = Map::new();
            m.insert("key".into(), Dynamic::from(key.to_string()));
            m.insert("time".into(), Dynamic::from_int(end));
            m.insert("window".into(), aggs.to_dynamic());
            Dynamic::from_map(m)
        };
        let fire = match when {
            Some(f) => {
                let view = View { topic: "", payload: &Dynamic::UNIT, time: end, captures: &[], window: Some(&aggs) };
                cx.test_with("when", f, &view, ctx) == Some(true)
            }
            None => true,
        };
        if fire {
            cx.emit(key, end, ctx, || aggs.to_dynamic(), timer_input(end, 0));
        }
    }
    w.clear();
    w.bucket = None;
}

pub(crate) fn on_timer(
    cx: &mut Cx<'_>,
    (spec, when): (&WindowSpec, Option<&Func>),
    state: &mut Keyed<WindowState>,
    key: &Arc<str>,
    deadline: i64,
) {
    let Extent::Time(size) = spec.extent else { return };
    let k: &str = key;
    let Some(w) = state.get_mut(k) else { return };
    cx.touch(key);
    if w.timer_at != Some(deadline) {
        return;
    }
    w.timer_at = None;
    if w.bucket.map(|b| b + size) == Some(deadline) {
        close(cx, when, key, w, size);
    }
    if w.events.is_empty() {
        state.remove(k);
    }
}

/// Can a window keep its events across a reload? The same flavour: sliding or tumbling,
/// over time or over a count. A new size applies from the next event.
pub(crate) fn compatible(old: &WindowSpec, new: &WindowSpec) -> bool {
    old.tumbling == new.tumbling && std::mem::discriminant(&old.extent) == std::mem::discriminant(&new.extent)
}

/// What is persisted of a window.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct SavedWindow {
    events: Vec<(i64, f64)>,
    active: bool,
    bucket: Option<i64>,
}

pub(crate) fn save(w: &WindowState) -> SavedWindow {
    SavedWindow { events: w.events.iter().copied().collect(), active: w.active, bucket: w.bucket }
}

/// Rebuilds a window (aggregates included) and re-arms a tumbling window's close.
pub(crate) fn restore(
    cx: &mut Cx<'_>,
    spec: &WindowSpec,
    state: &mut Keyed<WindowState>,
    key: Arc<str>,
    saved: SavedWindow,
) {
    let mut w = WindowState { active: saved.active, bucket: saved.bucket, ..WindowState::default() };
    for (t, v) in saved.events {
        w.push(t, v);
    }
    if let (true, Extent::Time(size), Some(b)) = (spec.tumbling, spec.extent, w.bucket) {
        w.timer_at = Some(b + size);
        cx.set_timer(b + size, &key, 0);
    }
    state.insert(key, w);
}
