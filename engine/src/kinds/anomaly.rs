//! Anomalies: each key's readings judged against what is normal for that key.
//!
//! Every reading goes through the key's [`Detector`] (learning first, then judging and
//! learning). With `report: "every"` the rule emits each reading's score; by default it
//! emits once per episode ([`Episode`]): when the score reaches the threshold the
//! `sensitivity` sets, and not again until it has calmed down.

use super::Keyed;
use super::{Cx, Ev, entry, with_field};
use crate::context;
use crate::declare::number;
use crate::detect::anomaly::{Change, Detector, Episode, Judgement};
use crate::past::Ask;
use crate::rule::{AnomalySpec, Baseline};
use rhai::{Array, Dynamic, Map};

/// One key's detector and episode.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct AnomalyState {
    detector: Detector,
    episode: Episode,
}

pub(crate) fn on_event(cx: &mut Cx<'_>, spec: &AnomalySpec, state: &mut Keyed<AnomalyState>, key: &str, x: &Ev<'_>) {
    let v = match &spec.value {
        Some(f) => match cx.call(f, [x.dynamic().clone()]) {
            Some(v) => v,
            None => return,
        },
        None => cx.value(x),
    };
    let Some(v) = number(&v).filter(|v| v.is_finite()) else {
        // Not a reading: nothing to judge.
        return;
    };
    let t = x.time();
    let Some((key, s)) = entry(state, key, cx, AnomalyState::default) else { return };
    let baseline = spec.baseline.as_ref().and_then(baseline_at);
    let j = s.detector.step(&spec.params, t, v, baseline);
    if spec.every {
        let data = data(&j, v, None);
        cx.emit(&key, t, || with_field(x.dynamic(), "anomaly", data.clone()), || data.clone(), x.event.id);
        return;
    }
    if j.learning {
        return;
    }
    match s.episode.update(&j, v, spec.params.threshold(), t) {
        Change::Started(opened, kind) => {
            let j = Judgement {
                score: opened.score,
                expected: opened.expected,
                low: opened.low,
                high: opened.high,
                kind,
                ..j
            };
            let data = data(&j, opened.observed, Some(opened.at));
            cx.alarm_activate(&key, t);
            cx.emit(&key, t, || with_field(x.dynamic(), "anomaly", data.clone()), || data.clone(), x.event.id);
        }
        Change::Ended => cx.alarm_clear(&key, t),
        Change::None => {}
    }
}

/// The mean and standard deviation of the same hour in the past days or weeks the rule's
/// `past` holds for this key (lent for this step by the engine), once they hold
/// [`MIN_BASELINE`] readings.
fn baseline_at(b: &Baseline) -> Option<(f64, f64)> {
    let ask = Ask { span_ms: b.every_ms, offset_ms: b.period_ms, times: b.times };
    let s = context::with(|c| {
        let call = c.past.as_ref()?;
        call.state.history(&call.specs, &b.field, ask, call.at).ok()
    })?;
    (s.count >= MIN_BASELINE).then_some(())?;
    Some((s.avg()?, s.stddev()?))
}

/// Readings the baseline needs before it is used.
const MIN_BASELINE: u64 = 3;

/// The event's data: `score`, `observed`, `expected`, `band`, `kind`, and `since` (episodes)
/// or `learning` (every reading).
fn data(j: &Judgement, observed: f64, since: Option<i64>) -> Dynamic {
    let round = |v: f64| (v * 1e6).round() / 1e6;
    let mut m = Map::new();
    m.insert("score".into(), Dynamic::from_float(round(j.score)));
    m.insert("observed".into(), Dynamic::from_float(observed));
    m.insert("expected".into(), Dynamic::from_float(round(j.expected)));
    let band: Array = vec![Dynamic::from_float(round(j.low)), Dynamic::from_float(round(j.high))];
    m.insert("band".into(), band.into());
    m.insert("kind".into(), j.kind.as_str().into());
    match since {
        Some(t) => m.insert("since".into(), Dynamic::from_int(t)),
        None => m.insert("learning".into(), Dynamic::from_bool(j.learning)),
    };
    Dynamic::from_map(m)
}
