//! Stuck sensors: a value that has not moved (beyond a tolerance) for a while.
//!
//! Judged on each reading: the reading that shows the value unchanged for `for` fires once;
//! the first reading that moves re-arms the rule.

use super::Keyed;
use super::{Cx, Ev, entry};
use crate::declare::number;
use crate::func::Func;
use rhai::{Dynamic, Map};

/// One key's reference value.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct StuckState {
    value: f64,
    since: i64,
    fired: bool,
}

pub(crate) fn on_event(
    cx: &mut Cx<'_>,
    (for_ms, tolerance, value): (i64, f64, Option<&Func>),
    state: &mut Keyed<StuckState>,
    key: &str,
    x: &Ev<'_>,
) {
    let v = match value {
        Some(f) => match cx.call(f, [x.dynamic().clone()]) {
            Some(v) => v,
            None => return,
        },
        None => cx.value(x),
    };
    let Some(v) = number(&v).filter(|v| v.is_finite()) else {
        // Not a reading (a status message on the same topic, say): nothing to judge.
        return;
    };
    let t = x.time();
    let Some((key, s)) = entry(state, key, cx, || StuckState { value: v, since: t, fired: false }) else {
        return;
    };
    if (v - s.value).abs() > tolerance {
        *s = StuckState { value: v, since: t, fired: false };
        return;
    }
    if !s.fired && t - s.since >= for_ms {
        s.fired = true;
        let mut m = Map::new();
        m.insert("value".into(), Dynamic::from_float(s.value));
        m.insert("since".into(), Dynamic::from_int(s.since));
        m.insert("for_ms".into(), Dynamic::from_int(t - s.since));
        let data = Dynamic::from_map(m);
        cx.emit(&key, t, || super::with_field(x.dynamic(), "stuck", data.clone()), || data.clone(), x.event.id);
    }
}
