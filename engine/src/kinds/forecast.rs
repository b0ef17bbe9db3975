//! Forecasts: the trend of a value, and a warning when it is about to cross a threshold.
//!
//! Each key keeps a weighted line through its readings ([`TrendFit`]). Once the fit has seen
//! `learn` of history, every reading asks it when the line reaches the threshold: within
//! `horizon`, with at least `confidence`, the rule fires once; it re-arms when the predicted
//! crossing leaves the horizon (later than 1.5 × `horizon`, so a prediction hovering at the
//! edge does not fire again and again) or when the trend turns away.

use super::Keyed;
use super::{Cx, Ev, entry, with_field};
use crate::declare::number;
use crate::detect::forecast::TrendFit;
use crate::rule::ForecastSpec;
use rhai::{Dynamic, Map};

/// A re-armed rule waits until the predicted crossing is this many horizons away.
const REARM: f64 = 1.5;

/// One key's fit.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct ForecastState {
    fit: Option<TrendFit>,
    /// Fired and not re-armed yet.
    fired: bool,
}

pub(crate) fn on_event(cx: &mut Cx<'_>, spec: &ForecastSpec, state: &mut Keyed<ForecastState>, key: &str, x: &Ev<'_>) {
    let v = match &spec.value {
        Some(f) => match cx.call(f, [x.dynamic().clone()]) {
            Some(v) => v,
            None => return,
        },
        None => cx.value(x),
    };
    let Some(v) = number(&v).filter(|v| v.is_finite()) else {
        // Not a reading: nothing to fit.
        return;
    };
    let t = x.time();
    let Some((key, s)) = entry(state, key, cx, ForecastState::default) else { return };
    // A reading `window` old weighs e^-3 (5%) of a new one.
    let tau_h = spec.window_ms as f64 / 3_600_000.0 / 3.0;
    match &mut s.fit {
        Some(f) => f.push(t, v, tau_h),
        None => s.fit = Some(TrendFit::new(t, v)),
    }
    let Some(fit) = s.fit.as_ref().filter(|f| f.span_ms() >= spec.learn_ms).and_then(TrendFit::fit) else {
        return;
    };
    let horizon_h = spec.horizon_ms as f64 / 3_600_000.0;
    let crossing = fit.crossing(spec.threshold, spec.below, horizon_h);
    if s.fired {
        if crossing.is_none_or(|c| c.hours > REARM * horizon_h) {
            s.fired = false;
        }
        return;
    }
    let Some(c) = crossing.filter(|c| c.hours <= horizon_h && c.confidence >= spec.confidence) else { return };
    s.fired = true;
    let in_ms = (c.hours * 3_600_000.0).round() as i64;
    let mut m = Map::new();
    m.insert("value".into(), Dynamic::from_float(v));
    m.insert("level".into(), Dynamic::from_float(fit.level));
    m.insert("slope_per_hour".into(), Dynamic::from_float(fit.slope));
    m.insert("threshold".into(), Dynamic::from_float(spec.threshold));
    m.insert("direction".into(), (if spec.below { "below" } else { "above" }).into());
    m.insert("crossing".into(), Dynamic::from_int(t.saturating_add(in_ms)));
    m.insert("in_ms".into(), Dynamic::from_int(in_ms));
    m.insert("confidence".into(), Dynamic::from_float((c.confidence * 1000.0).round() / 1000.0));
    let data = Dynamic::from_map(m);
    cx.emit(&key, t, || with_field(x.dynamic(), "forecast", data.clone()), || data.clone(), x.event.id);
}
