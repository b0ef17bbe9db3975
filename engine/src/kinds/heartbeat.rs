//! Heartbeats: the absence of an expected message is itself an event.
//!
//! Lifecycle per key: a message (that `when` accepts) is a sign of life and pushes the
//! deadline to `now + timeout`; a deadline that passes reports `missing` (with the last-seen
//! time); the next sign of life reports `recovered` (with the downtime). A message that
//! `offline` accepts (an MQTT last will) reports `missing` at once. Keys of the `expected`
//! table that never report are `missing` after the start-up grace. A key that changes state
//! more than `flap.max` times within `flap.window` is reported once as `flapping`, then once
//! more with the count when it has been stable for a window.
//!
//! Timing uses processing time (`now`): absence is about arrival, whatever the device clock
//! says. One timer entry per key at most; a message only moves the deadline, and the entry
//! reschedules itself when it fires early, so a tick costs O(expired).

use super::{Cx, Ev, KeyLimit, Keyed, entry_pinned, timer_input};
use crate::declare::duration_ms;
use crate::event::EventId;
use crate::func::Func;
use crate::lineage::{Causes, Ref};
use crate::rule::HeartbeatSpec;
use crate::tables::Tables;
use crate::time::Timestamp;
use rhai::{Dynamic, Map};
use std::sync::Arc;

const NONE: i64 = i64::MIN;

/// Timeouts are kept as u32 milliseconds (up to 49 days) to keep per-key state small.
fn clamp_ms(ms: i64) -> u32 {
    u32::try_from(ms.max(1)).unwrap_or(u32::MAX)
}
const TAG_DEADLINE: u32 = 0;
const TAG_FLAP: u32 = 1;

/// A heartbeat key's liveness, from one heartbeat rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Up,
    Missing,
    Flapping,
    /// Expected (registry) or announced, and never heard from.
    NeverSeen,
}

impl Liveness {
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Up => "up",
            Liveness::Missing => "missing",
            Liveness::Flapping => "flapping",
            Liveness::NeverSeen => "never_seen",
        }
    }

    /// How bad it is: a key's state over several rules is its worst.
    pub fn severity(self) -> u8 {
        match self {
            Liveness::Up => 0,
            Liveness::NeverSeen => 1,
            Liveness::Flapping => 2,
            Liveness::Missing => 3,
        }
    }
}

/// One key's liveness. Kept small (56 bytes): 100k devices is an ordinary gateway load.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Hb {
    last_seen: i64,
    deadline: i64,
    /// Deadline of this key's pending timer entry (`NONE`: no entry).
    timer_at: i64,
    missing_since: i64,
    timeout_ms: u32,
    never_seen: bool,
    /// Flap tracking, only for keys that have changed state.
    flap: Option<Box<Flap>>,
    /// The first 64 bits of the last input's id (0: none), seen at `last_seen`: the cause of
    /// a `missing` (lineage). 8 bytes, not a whole `Ref`: the time is `last_seen`.
    #[serde(default, skip_serializing_if = "is_zero")]
    last_id: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Flap {
    start: i64,
    timer_at: i64,
    count: u32,
    flapping: bool,
}

impl Hb {
    /// The key's state for people: up, missing, flapping or never seen; when it was last
    /// seen; since when it is missing.
    pub(crate) fn liveness(&self) -> (Liveness, Option<i64>, Option<i64>) {
        let some = |t: i64| (t != NONE).then_some(t);
        let state = if self.flap.as_ref().is_some_and(|f| f.flapping) {
            Liveness::Flapping
        } else if self.missing_since != NONE {
            Liveness::Missing
        } else if self.never_seen {
            Liveness::NeverSeen
        } else {
            Liveness::Up
        };
        (state, some(self.last_seen), some(self.missing_since))
    }

    fn new(now: i64, timeout_ms: i64) -> Hb {
        Hb {
            last_seen: NONE,
            deadline: now + timeout_ms,
            timer_at: NONE,
            missing_since: NONE,
            timeout_ms: clamp_ms(timeout_ms),
            never_seen: true,
            flap: None,
            last_id: 0,
        }
    }
}

/// Every key of one heartbeat rule.
#[derive(Debug)]
pub(crate) struct HeartbeatState {
    pub(crate) keys: Keyed<Hb>,
    /// The expected-devices registry has been loaded into `keys`.
    pub(crate) registry_loaded: bool,
}

impl HeartbeatState {
    pub(crate) fn new(limit: KeyLimit) -> Self {
        HeartbeatState { keys: Keyed::new(limit), registry_loaded: false }
    }
}

/// Loads the registry of expected keys: each one not yet tracked gets a deadline of
/// `now + grace`.
pub(crate) fn load_registry(cx: &mut Cx<'_>, spec: &HeartbeatSpec, tables: &Tables, state: &mut HeartbeatState) {
    state.registry_loaded = true;
    let Some(name) = &spec.expected else { return };
    let Some(table) = tables.get(name) else {
        cx.fault(format!("heartbeat.expected: no lookup table named `{name}`"));
        return;
    };
    for key in table.keys() {
        if state.keys.contains_key(key) {
            continue;
        }
        if state.keys.len() >= state.keys.limit().max {
            state.keys.count_refused(cx.now);
            cx.out.keys_refused += 1;
            continue;
        }
        let timeout = table_timeout(spec, tables, key).unwrap_or(spec.timeout_ms);
        let mut hb = Hb::new(cx.now, timeout);
        hb.deadline = cx.now + spec.grace_ms.max(timeout);
        hb.timer_at = hb.deadline;
        let k: Arc<str> = Arc::from(key);
        cx.set_timer(hb.deadline, &k, TAG_DEADLINE);
        cx.touch(&k);
        state.keys.insert(k, hb);
    }
}

fn table_timeout(spec: &HeartbeatSpec, tables: &Tables, key: &str) -> Option<i64> {
    let column = spec.timeout_column.as_ref()?;
    let v = tables.get(spec.expected.as_ref()?)?.get(key)?.get(column.as_str())?;
    duration_ms(v).ok()
}

/// Reports `what` (missing, recovered, flapping) for `key`, caused by `input` at `time`.
fn status(
    cx: &mut Cx<'_>,
    (key, hb): (&str, &Hb),
    what: &str,
    (time, input): (i64, EventId),
    extra: &[(&str, Dynamic)],
    x: Option<&Ev<'_>>,
) {
    let mut data = Map::new();
    data.insert("status".into(), Dynamic::from(what.to_owned()));
    let last_seen = if hb.last_seen == NONE { Dynamic::UNIT } else { Timestamp(hb.last_seen).to_rfc3339().into() };
    data.insert("last_seen".into(), last_seen);
    // `()` for a `sparkplug: true` rule without a timeout: only deaths make its keys missing.
    let timeout = if i64::from(hb.timeout_ms) == crate::rule::NO_TIMEOUT_MS {
        Dynamic::UNIT
    } else {
        Dynamic::from_int(i64::from(hb.timeout_ms))
    };
    data.insert("timeout_ms".into(), timeout);
    for (k, v) in extra {
        data.insert((*k).into(), v.clone());
    }
    let last_seen_ms = hb.last_seen;
    let ctx = || {
        let mut ctx: Map = x.and_then(|x| x.dynamic().read_lock::<Map>().map(|m| m.clone())).unwrap_or_default();
        ctx.insert("key".into(), Dynamic::from(key.to_owned()));
        ctx.insert("time".into(), Dynamic::from_int(time));
        let ms = if last_seen_ms == NONE { Dynamic::UNIT } else { Dynamic::from_int(last_seen_ms) };
        ctx.insert("last_seen_ms".into(), ms);
        for (k, v) in &data {
            ctx.insert(k.clone(), v.clone());
        }
        Dynamic::from_map(ctx)
    };
    match what {
        "missing" => cx.alarm_activate(key, time),
        "recovered" => cx.alarm_clear(key, time),
        _ => {}
    }
    if x.is_none() {
        // Caused by the silence after the last input seen (none for a device never seen).
        let last = (hb.last_id != 0).then_some(Ref { id: hb.last_id, at: hb.last_seen });
        cx.causes = Some(last.map(Causes::one).unwrap_or_default());
    }
    cx.emit(key, time, ctx, || Dynamic::from_map(data.clone()), input);
}

/// Counts a transition; `false` when flap suppression swallows it.
fn report_transition(
    cx: &mut Cx<'_>,
    spec: &HeartbeatSpec,
    key: &Arc<str>,
    hb: &mut Hb,
    at: i64,
    input: EventId,
) -> bool {
    let Some((window, max)) = spec.flap else { return true };
    let f = hb.flap.get_or_insert_with(|| Box::new(Flap { start: at, timer_at: NONE, count: 0, flapping: false }));
    if at - f.start > window && !f.flapping {
        f.start = at;
        f.count = 0;
    }
    f.count += 1;
    if f.flapping {
        f.timer_at = at + window;
        return false;
    }
    if f.count > max {
        f.flapping = true;
        f.timer_at = at + window;
        let (timer_at, count) = (f.timer_at, f.count);
        cx.set_timer(timer_at, key, TAG_FLAP);
        let extra = [("transitions", Dynamic::from_int(i64::from(count))), ("window_ms", Dynamic::from_int(window))];
        status(cx, (key, hb), "flapping", (at, input), &extra, None);
        return false;
    }
    true
}

fn go_missing(
    cx: &mut Cx<'_>,
    spec: &HeartbeatSpec,
    key: &Arc<str>,
    hb: &mut Hb,
    at: i64,
    reason: &str,
    input: EventId,
) {
    hb.missing_since = at;
    if report_transition(cx, spec, key, hb, at, input) {
        let never = Dynamic::from_bool(hb.never_seen);
        status(cx, (key, hb), "missing", (at, input), &[("reason", reason.into()), ("never_seen", never)], None);
    }
}

pub(crate) fn on_event(
    cx: &mut Cx<'_>,
    (spec, when): (&HeartbeatSpec, Option<&Func>),
    tables: &Tables,
    state: &mut HeartbeatState,
    key: &str,
    x: &Ev<'_>,
) {
    if let Some(when) = when {
        if cx.test("when", when, x) != Some(true) {
            return;
        }
    }
    let now = cx.now;
    let death = spec.sparkplug && sparkplug_death(&x.event.payload);
    let offline = match &spec.offline {
        Some(f) if !death => match cx.test("heartbeat.offline", f, x) {
            Some(b) => b,
            None => return,
        },
        _ => death,
    };
    let timeout = if offline {
        spec.timeout_ms
    } else {
        let from_payload = match &spec.timeout_of {
            Some(f) => match cx.call(f, [x.dynamic().clone()]) {
                Some(v) if v.is_unit() => None,
                Some(v) => match duration_ms(&v) {
                    Ok(ms) => Some(ms),
                    Err(m) => {
                        cx.fault(format!("heartbeat.timeout_of: the timeout {m}"));
                        None
                    }
                },
                None => None,
            },
            None => None,
        };
        from_payload.or_else(|| table_timeout(spec, tables, key)).unwrap_or(spec.timeout_ms)
    };
    // Devices of the expected registry are never evicted to make room for others.
    let registry = spec.expected.as_deref().and_then(|name| tables.get(name));
    let pinned = |k: &str| registry.is_some_and(|t| t.get(k).is_some());
    let Some((key, hb)) = entry_pinned(&mut state.keys, key, cx, || Hb::new(now, timeout), &pinned) else { return };

    if offline {
        if hb.missing_since == NONE {
            go_missing(cx, spec, &key, hb, now, if death { "death" } else { "offline" }, x.event.id);
        }
        return;
    }
    let was_missing = hb.missing_since != NONE;
    let previously_seen = hb.last_seen;
    hb.timeout_ms = clamp_ms(timeout);
    hb.deadline = now + timeout;
    if was_missing {
        let downtime = now - hb.missing_since;
        hb.missing_since = NONE;
        if report_transition(cx, spec, &key, hb, now, x.event.id) {
            let mut tmp = hb.clone();
            tmp.last_seen = previously_seen;
            let extra = [("downtime_ms", Dynamic::from_int(downtime))];
            status(cx, (&key, &tmp), "recovered", (now, x.event.id), &extra, Some(x));
        }
    }
    hb.last_seen = now;
    hb.last_id = Ref::of(x.event).id;
    hb.never_seen = false;
    if hb.timer_at == NONE || hb.timer_at > hb.deadline {
        hb.timer_at = hb.deadline;
        cx.set_timer(hb.deadline, &key, TAG_DEADLINE);
    }
}

/// Is this the agent's form of a Sparkplug NDEATH or DDEATH (`payload.sparkplug.type`)?
fn sparkplug_death(payload: &Dynamic) -> bool {
    let Some(payload) = payload.read_lock::<Map>() else { return false };
    let Some(spb) = payload.get("sparkplug").and_then(|s| s.read_lock::<Map>()) else { return false };
    spb.get("type")
        .and_then(|t| t.read_lock::<rhai::ImmutableString>())
        .is_some_and(|t| matches!(t.as_str(), "NDEATH" | "DDEATH"))
}

pub(crate) fn on_timer(
    cx: &mut Cx<'_>,
    spec: &HeartbeatSpec,
    state: &mut HeartbeatState,
    key: &Arc<str>,
    at: i64,
    tag: u32,
) {
    let k: &str = key;
    let Some(hb) = state.keys.get_mut(k) else { return };
    cx.touch(key);
    match tag {
        TAG_DEADLINE => {
            if hb.timer_at != at {
                return;
            }
            hb.timer_at = NONE;
            if hb.missing_since != NONE || cx.absence_paused {
                // Missing already, or absence is paused: `resume` re-arms the timer.
                return;
            }
            if hb.deadline > at {
                hb.timer_at = hb.deadline;
                cx.set_timer(hb.deadline, key, TAG_DEADLINE);
                return;
            }
            let deadline = hb.deadline;
            go_missing(cx, spec, key, hb, deadline, "timeout", timer_input(deadline, TAG_DEADLINE));
        }
        _ => {
            let Some(f) = hb.flap.as_deref_mut() else { return };
            if f.timer_at != at || !f.flapping {
                if f.flapping && f.timer_at > at {
                    let t = f.timer_at;
                    cx.set_timer(t, key, TAG_FLAP);
                }
                return;
            }
            // Stable for a whole window: report where it settled, with the count.
            let flaps = Dynamic::from_int(i64::from(f.count));
            hb.flap = None;
            let settled = if hb.missing_since != NONE { "missing" } else { "recovered" };
            let snapshot = hb.clone();
            status(cx, (key, &snapshot), settled, (at, timer_input(at, TAG_FLAP)), &[("flaps", flaps)], None);
        }
    }
}

/// Restores one key and re-arms its timer.
pub(crate) fn restore(cx: &mut Cx<'_>, state: &mut HeartbeatState, key: Arc<str>, mut hb: Hb) {
    hb.timer_at = NONE;
    if hb.missing_since == NONE {
        hb.timer_at = hb.deadline;
        cx.set_timer(hb.deadline, &key, TAG_DEADLINE);
    }
    if let Some(f) = hb.flap.as_deref().filter(|f| f.flapping) {
        cx.set_timer(f.timer_at, &key, TAG_FLAP);
    }
    state.keys.insert(key, hb);
}

/// Moves deadlines: each present key's deadline becomes `shift(deadline, timeout)`; timers are
/// re-armed where needed. Used to pause absence while the sensor link is down, and to give
/// every device a full timeout after the agent itself was down.
pub(crate) fn move_deadlines(cx: &mut Cx<'_>, state: &mut HeartbeatState, shift: &dyn Fn(i64, i64) -> i64) {
    let keys: Vec<Arc<str>> = state.keys.keys().cloned().collect();
    for key in keys {
        let k: &str = &key;
        let Some(hb) = state.keys.get_mut(k) else { continue };
        if hb.missing_since != NONE {
            continue;
        }
        hb.deadline = shift(hb.deadline, i64::from(hb.timeout_ms));
        if hb.timer_at == NONE || hb.timer_at > hb.deadline {
            hb.timer_at = hb.deadline;
            let d = hb.deadline;
            cx.set_timer(d, &key, TAG_DEADLINE);
        }
        cx.touch(&key);
    }
}
