//! Windows: count, sum, avg, min, max, variance, stddev, first, last and rate over the last T
//! of event time or the last N events, sliding or tumbling; and `e.window.before`, the same
//! aggregates as the window was when the event arrived (without it).
//!
//! Sliding windows keep their events and update the aggregates incrementally (min and max
//! with monotonic queues; the variance from sums of deviations from a shift that is moved
//! when they wear, see `WindowState::needs_new_shift`), so an event costs O(1) amortised. With `when`, a sliding window
//! fires on the edge and re-arms when `clear` holds (default: when `when` stops holding);
//! without `when` it emits its aggregates for every event that enters it. Tumbling windows
//! are judged once each, when they close: by the next event past their end, or by a timer.

use super::Keyed;
use super::{Cx, Ev, entry, timer_input, with_field};
use crate::declare::number;
use crate::func::Func;
use crate::lineage::{Causes, Ref};
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
    /// The inputs of `events`, in step with it: the causes of what the window emits
    /// (16 bytes an event; saved with it).
    refs: VecDeque<Ref>,
    /// Index the next pushed event gets; the front's index is `pushed - events.len()`.
    pushed: u64,
    /// Candidates for the minimum: increasing values, by index.
    minq: VecDeque<(u64, f64)>,
    /// Candidates for the maximum: decreasing values, by index.
    maxq: VecDeque<(u64, f64)>,
    sum: f64,
    /// Pops since the sum was last recomputed from scratch (bounds float drift).
    pops: u32,
    /// A value near the window's mean that the deviation sums are taken from, so they stay
    /// small and the variance does not cancel away (Σv² - (Σv)²/n would, for readings far
    /// from zero). Moved to the mean when the deviations are recomputed.
    shift: f64,
    /// Σ(v - shift) over the events.
    dev: f64,
    /// Σ(v - shift)² over the events.
    dev2: f64,
    /// Pops since `shift`, `dev` and `dev2` were last recomputed from the events.
    dev_pops: usize,
    /// Σ(v - shift)² over every value added to or taken from `dev2` since then: its
    /// rounding error is about machine epsilon times this.
    churn: f64,
    /// How often the deviation sums were recomputed, for the tests of their cost.
    #[cfg(test)]
    reshifts: usize,
    /// A sliding window's `when` held and has not cleared yet.
    active: bool,
    /// Start of the tumbling time window being filled.
    bucket: Option<i64>,
    /// Deadline of the pending close timer, if any.
    timer_at: Option<i64>,
}

impl WindowState {
    fn push(&mut self, t: i64, v: f64, r: Ref) {
        let idx = self.pushed;
        self.refs.push_back(r);
        self.pushed += 1;
        if self.events.is_empty() {
            self.shift = v;
            (self.dev, self.dev2, self.dev_pops, self.churn) = (0.0, 0.0, 0, 0.0);
        }
        self.events.push_back((t, v));
        self.sum += v;
        let d = v - self.shift;
        self.dev += d;
        self.dev2 += d * d;
        self.churn += d * d;
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
            self.refs.pop_front();
            self.sum -= v;
            let d = v - self.shift;
            self.dev -= d;
            self.dev2 -= d * d;
            self.churn += d * d;
            self.dev_pops += 1;
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
            if self.events.is_empty() {
                (self.dev, self.dev2, self.dev_pops, self.churn) = (0.0, 0.0, 0, 0.0);
            } else if self.needs_new_shift() {
                self.reshift();
            }
        }
    }

    /// The deviation sums are worn: the window turned over since they were recomputed
    /// (amortised O(1) a pop, and it bounds accumulated rounding), or what went through them
    /// (a level change, an outlier that left) dwarfs the spread of what is left, so their
    /// rounding would eat the variance's digits (about 1e-10 of it at the threshold). Right
    /// after [`WindowState::reshift`] the second cannot hold: `shift` is then one of the
    /// window's values, so the churn is at most n times the spread, under the threshold, and
    /// a steady stream never recomputes on every pop.
    fn needs_new_shift(&self) -> bool {
        let n = self.events.len();
        if self.dev_pops >= n {
            return true;
        }
        let spread = self.dev2 - self.dev * self.dev / n as f64;
        self.churn > 1e6_f64.max(4.0 * n as f64) * spread.max(0.0)
    }

    /// Recomputes the deviation sums from the newest value (a value of the window, see
    /// [`WindowState::needs_new_shift`]).
    fn reshift(&mut self) {
        let Some(&(_, newest)) = self.events.back() else { return };
        self.shift = newest;
        (self.dev, self.dev2, self.dev_pops) = (0.0, 0.0, 0);
        for &(_, v) in &self.events {
            let d = v - newest;
            self.dev += d;
            self.dev2 += d * d;
        }
        self.churn = self.dev2;
        #[cfg(test)]
        {
            self.reshifts += 1;
        }
    }

    /// Sample variance (n - 1 in the denominator); `None` below two events.
    fn variance(&self) -> Option<f64> {
        let n = self.events.len();
        (n >= 2).then(|| {
            let spread = self.dev2 - self.dev * self.dev / n as f64;
            spread.max(0.0) / (n - 1) as f64
        })
    }

    /// The inputs in the window, as the causes of what it emits.
    fn causes(&self) -> Causes {
        Causes::of(self.refs.iter().copied())
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
        let variance = self.variance();
        Aggregates {
            count: count as i64,
            variance,
            stddev: variance.map(f64::sqrt),
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

/// Evaluates a window predicate on the event plus `e.window` (with `e.window.before`).
fn judge(cx: &mut Cx<'_>, what: &str, f: &Func, x: &Ev<'_>, aggs: &Aggregates, before: &Aggregates) -> Option<bool> {
    let view = View { window: Some(aggs), ..x.view() };
    cx.test_with(what, f, &view, || with_field(x.dynamic(), "window", aggs.to_dynamic(Some(before))))
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
        let before = w.aggregates(None);
        if let Some(v) = value_of(cx, spec, x) {
            w.push(t, v, Ref::of(x.event));
            if w.events.len() > spec.max_events {
                w.pop_front();
            }
        }
        if let Extent::Count(n) = spec.extent {
            if w.events.len() >= n {
                let aggs = w.aggregates(None);
                let fire = match when {
                    Some(f) => judge(cx, "when", f, x, &aggs, &before) == Some(true),
                    None => true,
                };
                if fire {
                    cx.causes = Some(w.causes());
                    cx.emit(
                        &key,
                        t,
                        || with_field(x.dynamic(), "window", aggs.to_dynamic(Some(&before))),
                        || aggs.to_data(),
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
    // The window as it was when this event arrived: what is still inside it at `t`.
    let before = w.aggregates(None);
    let entered = match value_of(cx, spec, x) {
        Some(v) => {
            w.push(t, v, Ref::of(x.event));
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
    let emit_ctx = || with_field(x.dynamic(), "window", aggs.to_dynamic(Some(&before)));
    match when {
        None => {
            if entered {
                cx.causes = Some(w.causes());
                cx.emit(&key, t, emit_ctx, || aggs.to_data(), x.event.id);
            }
        }
        Some(when) => {
            if !w.active {
                if judge(cx, "when", when, x, &aggs, &before) == Some(true) {
                    w.active = true;
                    cx.alarm_activate(&key, t);
                    cx.causes = Some(w.causes());
                    cx.emit(&key, t, emit_ctx, || aggs.to_data(), x.event.id);
                }
            } else {
                let cleared = match clear {
                    Some(c) => judge(cx, "clear", c, x, &aggs, &before),
                    None => judge(cx, "when", when, x, &aggs, &before).map(|b| !b),
                };
                if cleared == Some(true) {
                    w.active = false;
                    cx.alarm_clear(&key, t);
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
            m.insert("window".into(), aggs.to_dynamic(None));
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
            cx.causes = Some(w.causes());
            cx.emit(key, end, ctx, || aggs.to_data(), timer_input(end, 0));
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
    /// The events' inputs (absent from state saved before lineage: unknown ones then).
    #[serde(default)]
    refs: Vec<Ref>,
    active: bool,
    bucket: Option<i64>,
}

pub(crate) fn save(w: &WindowState) -> SavedWindow {
    SavedWindow {
        events: w.events.iter().copied().collect(),
        refs: w.refs.iter().copied().collect(),
        active: w.active,
        bucket: w.bucket,
    }
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
    let unknown = saved.events.len().saturating_sub(saved.refs.len());
    let refs = std::iter::repeat_n(Ref::default(), unknown).chain(saved.refs);
    for ((t, v), r) in saved.events.into_iter().zip(refs) {
        w.push(t, v, r);
    }
    if let (true, Extent::Time(size), Some(b)) = (spec.tumbling, spec.extent, w.bucket) {
        w.timer_at = Some(b + size);
        cx.set_timer(b + size, &key, 0);
    }
    state.insert(key, w);
}

#[cfg(test)]
mod tests {
    use super::WindowState;

    /// Sample variance by two passes over the values: the reference.
    fn two_pass(w: &WindowState) -> Option<f64> {
        let n = w.events.len();
        let mean = w.events.iter().map(|&(_, v)| v).sum::<f64>() / n as f64;
        (n >= 2).then(|| w.events.iter().map(|&(_, v)| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64)
    }

    /// A deterministic stream (xorshift), so a failure replays.
    struct Stream(u64);
    impl Stream {
        fn unit(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Values of several shapes: noise far from zero, level steps, a slow ramp, a lone
    /// outlier among small values, and constant runs.
    fn value(shape: u32, i: usize, r: &mut Stream) -> f64 {
        match shape {
            0 => 1.0e6 + r.unit(),
            1 => (i / 300) as f64 * 1.0e4 + r.unit() * 0.01,
            2 => i as f64 * 0.5 + r.unit(),
            3 if i.is_multiple_of(500) => 1.0e9,
            3 => r.unit() * 1.0e-3,
            _ => ((i / 100) % 3) as f64 * 7.25,
        }
    }

    fn agrees(w: &WindowState, what: &str) {
        let got = w.variance();
        let want = two_pass(w);
        match (got, want) {
            (Some(g), Some(x)) => {
                // Relative to the variance, with room for the rounding of the values themselves.
                let scale = w.events.iter().map(|&(_, v)| v.abs()).fold(0.0, f64::max);
                let tol = 1e-9 * x + 1e-24 * scale * scale;
                assert!((g - x).abs() <= tol, "{what}: incremental {g}, two-pass {x}, n {}", w.events.len());
                let sd = w.aggregates(None).stddev.unwrap_or(f64::NAN);
                assert!((sd - g.sqrt()).abs() <= 1e-12 * g.sqrt().max(1.0), "{what}: stddev {sd}");
            }
            (None, None) => {}
            other => panic!("{what}: {other:?}"),
        }
    }

    #[test]
    fn sliding_variance_agrees_with_two_passes() {
        for shape in 0..5 {
            for size in [1, 2, 3, 10, 64, 1000] {
                let mut r = Stream(0x9E37_79B9_7F4A_7C15 ^ (shape as u64 * 31 + size as u64));
                let mut w = WindowState::default();
                for i in 0..5000 {
                    w.push(i as i64, value(shape, i, &mut r), crate::lineage::Ref::default());
                    while w.events.len() > size {
                        w.pop_front();
                    }
                    agrees(&w, &format!("shape {shape}, size {size}, event {i}"));
                }
            }
        }
    }

    #[test]
    fn steady_streams_recompute_the_deviations_about_once_a_turnover() {
        for shape in [0, 2, 4] {
            let mut r = Stream(7 + shape as u64);
            let mut w = WindowState::default();
            let size = 500;
            for i in 0..50_000 {
                w.push(i as i64, value(shape, i, &mut r), crate::lineage::Ref::default());
                while w.events.len() > size {
                    w.pop_front();
                }
            }
            assert!(w.reshifts <= 2 * 50_000 / size, "shape {shape}: {} recomputations", w.reshifts);
        }
    }

    #[test]
    fn sliding_time_windows_of_varying_length_agree_too() {
        for shape in 0..5 {
            let mut r = Stream(0xD1B5_4A32_D192_ED03 ^ shape as u64);
            let mut w = WindowState::default();
            for i in 0..5000 {
                // Bursts and gaps: sometimes several leave at once, sometimes all of them.
                let t = i as i64 * 10 + if (i / 700) % 2 == 1 { 5_000 } else { 0 };
                while w.events.front().is_some_and(|&(et, _)| et <= t - 2_000) {
                    w.pop_front();
                }
                w.push(t, value(shape, i, &mut r), crate::lineage::Ref::default());
                agrees(&w, &format!("shape {shape}, event {i}"));
            }
        }
    }

    #[test]
    fn tumbling_variance_agrees_with_two_passes() {
        for shape in 0..5 {
            let mut r = Stream(0x2545_F491_4F6C_DD1D ^ shape as u64);
            let mut w = WindowState::default();
            for i in 0..5000 {
                w.push(i as i64, value(shape, i, &mut r), crate::lineage::Ref::default());
                agrees(&w, &format!("shape {shape}, event {i}"));
                if i % 97 == 96 {
                    w.clear();
                    assert_eq!(w.variance(), None);
                }
            }
        }
    }
}
