//! Sequences: ordered steps within a time limit, with repetition and negation.
//!
//! Every event that matches the first step starts a partial match (at most `max_partial`
//! per key; the oldest goes first). An event advances each partial whose next step it
//! matches, and kills each partial with an active negated step it matches (a negated step is
//! active from the step before it until the step after it matches). A partial is complete
//! when its last positive step matches; if only negated steps remain, it completes when its
//! time is up with none of them seen ("door opened, then no badge within 10 s"). Partials
//! that run out of time otherwise are dropped.

use super::Keyed;
use super::{Cx, Ev, entry};
use crate::event::EventId;
use crate::lineage::{Ref, Trail};
use crate::rule::Step;
use rhai::{Dynamic, Map};
use std::sync::Arc;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Partial {
    /// Event time of the first step.
    start: i64,
    /// Index of the next step to satisfy.
    pos: usize,
    /// Matches of step `pos` so far (for `times`).
    count: u32,
    /// Step name -> the last event that matched it.
    #[serde(with = "super::map_serde")]
    matches: Map,
    /// Input that started it: timeouts derive their ids from it.
    start_id: EventId,
    /// The inputs its steps matched (lineage).
    #[serde(default)]
    trail: Trail,
}

/// One key's partial matches.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct SeqState {
    partials: Vec<Partial>,
}

/// What a step remembers of the event that matched it.
fn summary(x: &Ev<'_>) -> Dynamic {
    let mut m = Map::new();
    m.insert("time".into(), Dynamic::from_int(x.time()));
    m.insert("topic".into(), x.event.topic.as_str().into());
    m.insert("value".into(), x.value());
    Dynamic::from_map(m)
}

/// Only negated steps remain (and none of them is half-satisfied).
fn waiting_on_absence(steps: &[Step], p: &Partial) -> bool {
    steps[p.pos..].iter().all(|s| s.absent)
}

fn complete(cx: &mut Cx<'_>, key: &str, p: &Partial, time: i64, x: Option<&Ev<'_>>, input: EventId) {
    let ctx = || {
        let mut ctx: Map = x.and_then(|x| x.dynamic().read_lock::<Map>().map(|m| m.clone())).unwrap_or_default();
        ctx.insert("key".into(), Dynamic::from(key.to_owned()));
        ctx.insert("time".into(), Dynamic::from_int(time));
        ctx.insert("started".into(), Dynamic::from_int(p.start));
        ctx.insert("matches".into(), Dynamic::from_map(p.matches.clone()));
        Dynamic::from_map(ctx)
    };
    let data = || {
        let mut data = Map::new();
        data.insert("started".into(), Dynamic::from_int(p.start));
        data.insert("duration_ms".into(), Dynamic::from_int(time - p.start));
        data.insert("matches".into(), Dynamic::from_map(p.matches.clone()));
        Dynamic::from_map(data)
    };
    cx.causes = Some(p.trail.causes());
    cx.emit(key, time, ctx, data, input);
}

fn timeout_input(p: &Partial) -> EventId {
    EventId::from_content("\0sequence-timeout", &p.start_id.0.to_le_bytes())
}

/// Completes or drops the partials whose time is up at `t`.
fn expire(cx: &mut Cx<'_>, steps: &[Step], within_ms: i64, key: &str, s: &mut SeqState, t: i64, inclusive: bool) {
    let mut i = 0;
    while i < s.partials.len() {
        let deadline = s.partials[i].start + within_ms;
        let due = if inclusive { deadline <= t } else { deadline < t };
        if due {
            let p = s.partials.remove(i);
            if waiting_on_absence(steps, &p) && p.count == 0 {
                complete(cx, key, &p, deadline, None, timeout_input(&p));
            }
        } else {
            i += 1;
        }
    }
}

pub(crate) fn on_event(
    cx: &mut Cx<'_>,
    (steps, within_ms, max_partial): (&[Step], i64, usize),
    state: &mut Keyed<SeqState>,
    key: &str,
    x: &Ev<'_>,
) {
    let t = x.time();
    let Some((key, s)) = entry(state, key, cx, SeqState::default) else { return };
    // Time that passed without a timer firing (event time ahead of the clock).
    expire(cx, steps, within_ms, &key, s, t, false);

    // Each step's predicate is evaluated at most once per event, however many partials ask.
    let mut verdicts: Vec<Option<bool>> = vec![None; steps.len()];
    let mut eval = |cx: &mut Cx<'_>, i: usize| -> bool {
        if let Some(v) = verdicts[i] {
            return v;
        }
        let v = cx.test("sequence step `when`", &steps[i].when, x) == Some(true);
        verdicts[i] = Some(v);
        v
    };

    let mut i = 0;
    while i < s.partials.len() {
        let pos = s.partials[i].pos;
        let mut j = pos;
        let mut killed = false;
        while j < steps.len() && steps[j].absent {
            if eval(cx, j) {
                killed = true;
                break;
            }
            j += 1;
        }
        if killed {
            s.partials.remove(i);
            continue;
        }
        if j < steps.len() && eval(cx, j) {
            let p = &mut s.partials[i];
            p.count += 1;
            p.matches.insert(steps[j].name.clone().into(), summary(x));
            p.trail.push(Ref::of(x.event));
            if p.count >= steps[j].times {
                p.pos = j + 1;
                p.count = 0;
            }
            if p.pos == steps.len() {
                let p = s.partials.remove(i);
                complete(cx, &key, &p, t, Some(x), x.event.id);
                continue;
            }
        }
        i += 1;
    }

    if eval(cx, 0) {
        let mut p =
            Partial { start: t, pos: 0, count: 1, matches: Map::new(), start_id: x.event.id, trail: Trail::default() };
        p.matches.insert(steps[0].name.clone().into(), summary(x));
        p.trail.push(Ref::of(x.event));
        if steps[0].times <= 1 {
            p.pos = 1;
            p.count = 0;
        }
        if p.pos == steps.len() {
            complete(cx, &key, &p, t, Some(x), x.event.id);
        } else {
            if s.partials.len() >= max_partial {
                s.partials.remove(0);
                cx.out.partials_dropped += 1;
            }
            s.partials.push(p);
            cx.set_timer(t + within_ms, &key, 0);
        }
    }
    if s.partials.is_empty() {
        let k: &str = &key;
        state.remove(k);
    }
}

pub(crate) fn on_timer(
    cx: &mut Cx<'_>,
    (steps, within_ms): (&[Step], i64),
    state: &mut Keyed<SeqState>,
    key: &Arc<str>,
    deadline: i64,
) {
    let k: &str = key;
    let Some(s) = state.get_mut(k) else { return };
    cx.touch(key);
    expire(cx, steps, within_ms, key, s, deadline, true);
    // `within` may have grown since these timers were set (a reload): wake up again for the
    // earliest partial still running.
    if let Some(next) = s.partials.iter().map(|p| p.start + within_ms).filter(|d| *d > deadline).min() {
        cx.set_timer(next, key, 0);
    }
    if s.partials.is_empty() {
        state.remove(k);
    }
}

/// Can partial matches survive a reload? The same number of steps, with the same `times`
/// and `absent`; a new `within` applies to the partials running.
pub(crate) fn compatible(old: &[Step], new: &[Step]) -> bool {
    old.len() == new.len() && old.iter().zip(new).all(|(x, y)| x.times == y.times && x.absent == y.absent)
}

/// Restores one key's partial matches and re-arms their deadlines.
pub(crate) fn restore(cx: &mut Cx<'_>, within_ms: i64, state: &mut Keyed<SeqState>, key: Arc<str>, s: SeqState) {
    for p in &s.partials {
        cx.set_timer(p.start + within_ms, &key, 0);
    }
    state.insert(key, s);
}
