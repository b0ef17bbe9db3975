//! Stuck sensors: a value that has not moved (beyond a tolerance) for a while.
//!
//! Judged on each reading: the reading that shows the value unchanged for `for` fires once;
//! the first reading that moves re-arms the rule.

use super::Keyed;
use super::{Cx, Ev, entry};
use crate::declare::number;
use crate::func::Func;
use crate::lineage::{Ref, Trail};
use rhai::{Dynamic, Map};

/// One key's reference value.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct StuckState {
    value: f64,
    since: i64,
    fired: bool,
    /// The readings of the run so far (lineage).
    #[serde(default)]
    trail: Trail,
}

impl StuckState {
    fn new(value: f64, since: i64, first: Ref) -> StuckState {
        let mut trail = Trail::default();
        trail.push(first);
        StuckState { value, since, fired: false, trail }
    }
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
    let r = Ref::of(x.event);
    let mut new = false;
    let Some((key, s)) = entry(state, key, cx, || {
        new = true;
        StuckState::new(v, t, r)
    }) else {
        return;
    };
    if (v - s.value).abs() > tolerance {
        *s = StuckState::new(v, t, r);
        return;
    }
    if !new && !s.fired {
        s.trail.push(r);
    }
    if !s.fired && t - s.since >= for_ms {
        s.fired = true;
        let mut m = Map::new();
        m.insert("value".into(), Dynamic::from_float(s.value));
        m.insert("since".into(), Dynamic::from_int(s.since));
        m.insert("for_ms".into(), Dynamic::from_int(t - s.since));
        let data = Dynamic::from_map(m);
        cx.causes = Some(s.trail.causes());
        cx.emit(&key, t, || super::with_field(x.dynamic(), "stuck", data.clone()), || data.clone(), x.event.id);
    }
}
