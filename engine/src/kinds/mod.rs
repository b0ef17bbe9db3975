//! The rule kinds at run time: per-key state and what each kind does with an event, a timer
//! or saved state. Each kind is plain Rust over [`Cx`] in its own file (`filter.rs` also
//! holds thresholds); Rhai is reached only through [`Cx::call`] and its relatives.
//!
//! ```text
//! engine ─▶ KindState::{on_event, on_timer, export, import, setup, move_deadlines}
//!             └─ one match per method, here ─▶ <kind>.rs: on_event / on_timer / restore
//! ```
//!
//! This file is the one registration site of the run-time side: a new kind adds its
//! [`KindState`] variant, its [`Saved`] variant and an arm in each method below. (Its spec
//! is still a `RuleKind` variant in `rule.rs`, checked in `declare.rs`.) Also here: the
//! per-key entries within the rule's key limit ([`entry`]). The step context [`Cx`] is in
//! `cx.rs`; the event as rules see it ([`Ev`]) and the default key ([`key_of`]) in `view.rs`.

pub(crate) mod anomaly;
mod cx;
pub(crate) mod filter;
pub(crate) mod forecast;
pub(crate) mod handler;
pub(crate) mod heartbeat;
pub(crate) mod keys;
pub(crate) mod sequence;
pub(crate) mod stuck;
pub(crate) mod window;

#[cfg(test)]
mod native_agrees;
mod notify;
mod view;

pub(crate) use cx::Cx;
pub(crate) use view::{Ev, default_key, key_of};

use crate::event::EventId;
use crate::rule::{Rule, RuleKind, RuleKind as K};
use crate::tables::Tables;
pub(crate) use keys::{KeyLimit, Keyed};
use rhai::{Dynamic, Map};
use std::sync::Arc;

/// Per-key state of one rule.
#[derive(Debug, Default)]
pub(crate) enum KindState {
    #[default]
    Stateless,
    Threshold(Keyed<bool>),
    Window(Keyed<window::WindowState>),
    Stuck(Keyed<stuck::StuckState>),
    Sequence(Keyed<sequence::SeqState>),
    Heartbeat(heartbeat::HeartbeatState),
    Anomaly(Keyed<anomaly::AnomalyState>),
    Forecast(Keyed<forecast::ForecastState>),
    Handler(Keyed<handler::HandlerState>),
}

/// What the engine asks of any rule's keys, whatever their state type.
pub(crate) trait KeySet {
    fn len(&self) -> usize;
    fn tracks(&self, key: &str) -> bool;
    fn limit(&self) -> KeyLimit;
    fn set_limit(&mut self, limit: KeyLimit);
    /// When the first refusal or eviction not reported yet happened, if there is one.
    fn pending(&self) -> Option<i64>;
    /// Refused and evicted since the last call, and when the first of them happened.
    fn take_counts(&mut self) -> (u64, u64, i64);
    /// The keys tracked.
    fn names(&self) -> Vec<Arc<str>>;
}

impl<S> KeySet for Keyed<S> {
    fn len(&self) -> usize {
        Keyed::len(self)
    }
    fn tracks(&self, key: &str) -> bool {
        self.contains_key(key)
    }
    fn limit(&self) -> KeyLimit {
        Keyed::limit(self)
    }
    fn set_limit(&mut self, limit: KeyLimit) {
        Keyed::set_limit(self, limit);
    }
    fn pending(&self) -> Option<i64> {
        self.since
    }
    fn take_counts(&mut self) -> (u64, u64, i64) {
        Keyed::take_counts(self)
    }
    fn names(&self) -> Vec<Arc<str>> {
        self.keys().cloned().collect()
    }
}

/// The persisted form of one rule's state for one key. Tagged with the kind, so state saved
/// by a rule that has since changed kind is recognised and refused.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Saved {
    Threshold { active: bool },
    Window(window::SavedWindow),
    Stuck(stuck::StuckState),
    Sequence(sequence::SeqState),
    Heartbeat(heartbeat::Hb),
    Anomaly(Box<anomaly::AnomalyState>),
    Forecast(forecast::ForecastState),
    Handler(handler::HandlerState),
}

/// The one place that knows every kind: each method hands the rule's spec and its state to
/// the kind's own module. The engine calls these and matches on no kind itself.
impl KindState {
    /// Fresh state for a rule of this kind, tracking keys within `limit`.
    pub(crate) fn for_rule(rule: &Rule, limit: KeyLimit) -> KindState {
        match &rule.kind {
            K::Filter { .. } => KindState::Stateless,
            K::Threshold { .. } => KindState::Threshold(Keyed::new(limit)),
            K::Window { .. } => KindState::Window(Keyed::new(limit)),
            K::Stuck { .. } => KindState::Stuck(Keyed::new(limit)),
            K::Sequence { .. } => KindState::Sequence(Keyed::new(limit)),
            K::Heartbeat { .. } => KindState::Heartbeat(heartbeat::HeartbeatState::new(limit)),
            K::Anomaly { .. } => KindState::Anomaly(Keyed::new(limit)),
            K::Forecast { .. } => KindState::Forecast(Keyed::new(limit)),
            K::Handler { .. } => KindState::Handler(Keyed::new(limit)),
        }
    }

    /// One event for `key` (`cx.rule` is the rule this state belongs to).
    #[inline]
    pub(crate) fn on_event(&mut self, cx: &mut Cx<'_>, tables: &Tables, key: &str, x: &Ev<'_>) {
        let rule = cx.rule;
        match (&rule.kind, self) {
            (K::Filter { when }, _) => filter::on_event_filter(cx, when.as_ref(), key, x),
            (K::Threshold { when, clear, emit_clear }, KindState::Threshold(s)) => {
                filter::on_event_threshold(cx, (when, clear.as_ref(), emit_clear.as_ref()), s, key, x);
            }
            (K::Window { spec, when, clear }, KindState::Window(s)) => {
                window::on_event(cx, (spec, when.as_ref(), clear.as_ref()), s, key, x);
            }
            (K::Stuck { for_ms, tolerance, value }, KindState::Stuck(s)) => {
                stuck::on_event(cx, (*for_ms, *tolerance, value.as_ref()), s, key, x);
            }
            (K::Sequence { steps, within_ms, max_partial }, KindState::Sequence(s)) => {
                sequence::on_event(cx, (steps, *within_ms, *max_partial), s, key, x);
            }
            (K::Heartbeat { spec, when }, KindState::Heartbeat(s)) => {
                heartbeat::on_event(cx, (spec, when.as_ref()), tables, s, key, x);
            }
            (K::Anomaly { spec }, KindState::Anomaly(s)) => anomaly::on_event(cx, spec, s, key, x),
            (K::Forecast { spec }, KindState::Forecast(s)) => forecast::on_event(cx, spec, s, key, x),
            (K::Handler { on_event, init, .. }, KindState::Handler(s)) => {
                handler::on_event(cx, (on_event, init), s, key, x);
            }
            _ => {}
        }
    }

    /// A timer of this rule for `key`, due at `deadline`, fired (`tag` tells a kind's timers
    /// apart).
    pub(crate) fn on_timer(&mut self, cx: &mut Cx<'_>, key: &Arc<str>, deadline: i64, tag: u32) {
        let rule = cx.rule;
        match (&rule.kind, self) {
            (K::Window { spec, when, .. }, KindState::Window(s)) => {
                window::on_timer(cx, (spec, when.as_ref()), s, key, deadline);
            }
            (K::Sequence { steps, within_ms, .. }, KindState::Sequence(s)) => {
                sequence::on_timer(cx, (steps, *within_ms), s, key, deadline);
            }
            (K::Heartbeat { spec, .. }, KindState::Heartbeat(s)) => {
                heartbeat::on_timer(cx, spec, s, key, deadline, tag);
            }
            (K::Handler { on_timer, .. }, KindState::Handler(s)) => {
                handler::on_timer(cx, on_timer.as_ref(), s, key, deadline);
            }
            _ => {}
        }
    }

    /// The persisted form of `key`'s state, or `None` if the rule does not track it.
    pub(crate) fn export(&self, key: &str) -> Option<Vec<u8>> {
        let saved = match self {
            KindState::Stateless => None,
            KindState::Threshold(m) => m.get(key).map(|a| Saved::Threshold { active: *a }),
            KindState::Window(m) => m.get(key).map(|w| Saved::Window(window::save(w))),
            KindState::Stuck(m) => m.get(key).map(|s| Saved::Stuck(s.clone())),
            KindState::Sequence(m) => m.get(key).map(|s| Saved::Sequence(s.clone())),
            KindState::Heartbeat(h) => h.keys.get(key).map(|hb| Saved::Heartbeat(hb.clone())),
            KindState::Anomaly(m) => m.get(key).map(|s| Saved::Anomaly(Box::new(s.clone()))),
            KindState::Forecast(m) => m.get(key).map(|s| Saved::Forecast(s.clone())),
            KindState::Handler(m) => m.get(key).map(|s| Saved::Handler(s.clone())),
        }?;
        serde_json::to_vec(&saved).ok()
    }

    /// Restores `key`'s state from [`KindState::export`]'s bytes and re-arms its timers
    /// (`cx.rule` is the rule this state belongs to). Bytes of another kind are refused.
    pub(crate) fn import(&mut self, cx: &mut Cx<'_>, key: Arc<str>, bytes: &[u8]) -> Result<(), String> {
        let saved: Saved = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let rule = cx.rule;
        match (saved, self, &rule.kind) {
            (Saved::Threshold { active }, KindState::Threshold(m), _) => m.insert(key, active),
            (Saved::Window(w), KindState::Window(m), K::Window { spec, .. }) => window::restore(cx, spec, m, key, w),
            (Saved::Stuck(s), KindState::Stuck(m), _) => m.insert(key, s),
            (Saved::Sequence(s), KindState::Sequence(m), K::Sequence { within_ms, .. }) => {
                sequence::restore(cx, *within_ms, m, key, s);
            }
            (Saved::Heartbeat(hb), KindState::Heartbeat(h), _) => heartbeat::restore(cx, h, key, hb),
            (Saved::Anomaly(s), KindState::Anomaly(m), _) => m.insert(key, *s),
            (Saved::Forecast(s), KindState::Forecast(m), _) => m.insert(key, s),
            (Saved::Handler(s), KindState::Handler(m), _) => handler::restore(cx, m, key, s),
            _ => return Err(format!("saved state does not fit a {} rule", rule.kind())),
        }
        Ok(())
    }

    /// State to set up from the lookup tables before the next step (a heartbeat's registry
    /// of expected devices, not loaded yet).
    pub(crate) fn needs_setup(&self, kind: &RuleKind) -> bool {
        match (kind, self) {
            (K::Heartbeat { spec, .. }, KindState::Heartbeat(h)) => !h.registry_loaded && spec.expected.is_some(),
            _ => false,
        }
    }

    /// Sets up what [`KindState::needs_setup`] says.
    pub(crate) fn setup(&mut self, cx: &mut Cx<'_>, tables: &Tables) {
        let rule = cx.rule;
        if let (K::Heartbeat { spec, .. }, KindState::Heartbeat(h)) = (&rule.kind, self) {
            heartbeat::load_registry(cx, spec, tables, h);
        }
    }

    /// The tables changed, or the rule was reloaded: set up again from the tables.
    pub(crate) fn redo_setup(&mut self) {
        if let KindState::Heartbeat(h) = self {
            h.registry_loaded = false;
        }
    }

    /// Moves absence deadlines: each becomes `shift(deadline, timeout)` (see
    /// [`heartbeat::move_deadlines`]); other kinds have none.
    pub(crate) fn move_deadlines(&mut self, cx: &mut Cx<'_>, shift: &dyn Fn(i64, i64) -> i64) {
        if let KindState::Heartbeat(h) = self {
            heartbeat::move_deadlines(cx, h, shift);
        }
    }

    /// The keys, if the rule keeps per-key state.
    pub(crate) fn key_set(&self) -> Option<&dyn KeySet> {
        match self {
            KindState::Stateless => None,
            KindState::Threshold(m) => Some(m),
            KindState::Window(m) => Some(m),
            KindState::Stuck(m) => Some(m),
            KindState::Sequence(m) => Some(m),
            KindState::Heartbeat(h) => Some(&h.keys),
            KindState::Anomaly(m) => Some(m),
            KindState::Forecast(m) => Some(m),
            KindState::Handler(m) => Some(m),
        }
    }

    pub(crate) fn key_set_mut(&mut self) -> Option<&mut dyn KeySet> {
        match self {
            KindState::Stateless => None,
            KindState::Threshold(m) => Some(m),
            KindState::Window(m) => Some(m),
            KindState::Stuck(m) => Some(m),
            KindState::Sequence(m) => Some(m),
            KindState::Heartbeat(h) => Some(&mut h.keys),
            KindState::Anomaly(m) => Some(m),
            KindState::Forecast(m) => Some(m),
            KindState::Handler(m) => Some(m),
        }
    }

    /// Keys tracked.
    pub(crate) fn keys(&self) -> usize {
        self.key_set().map_or(0, KeySet::len)
    }

    /// The keys tracked, for exporting everything.
    pub(crate) fn key_names(&self) -> Vec<Arc<str>> {
        self.key_set().map_or_else(Vec::new, KeySet::names)
    }
}

/// Whose timers follow event time (windows closing, sequences running out of time); the
/// others' follow processing time.
pub(crate) fn event_timed(kind: &RuleKind) -> bool {
    matches!(kind, K::Window { .. } | K::Sequence { .. })
}

/// Can a rule's state carry over to its new version (a reload)? The same kind, and for
/// windows and sequences the same shape (see [`window::compatible`], [`sequence::compatible`]).
pub(crate) fn compatible(old: &RuleKind, new: &RuleKind) -> bool {
    match (old, new) {
        (K::Window { spec: a, .. }, K::Window { spec: b, .. }) => window::compatible(a, b),
        (K::Sequence { steps: a, .. }, K::Sequence { steps: b, .. }) => sequence::compatible(a, b),
        (a, b) => a.name() == b.name(),
    }
}

/// The per-key entry for `key`, created with `init` when new; a sighting of the key.
/// Returns the shared key and the state, or `None` when the key is refused (the rule is full
/// and refuses, or the key is longer than [`keys::MAX_KEY_BYTES`]).
pub(crate) fn entry<'m, S>(
    keyed: &'m mut Keyed<S>,
    key: &str,
    cx: &mut Cx<'_>,
    init: impl FnOnce() -> S,
) -> Option<(Arc<str>, &'m mut S)> {
    entry_pinned(keyed, key, cx, init, &|_| false)
}

/// [`entry`], where keys for which `pinned` holds are never evicted to make room.
pub(crate) fn entry_pinned<'m, S>(
    keyed: &'m mut Keyed<S>,
    key: &str,
    cx: &mut Cx<'_>,
    init: impl FnOnce() -> S,
    pinned: &dyn Fn(&str) -> bool,
) -> Option<(Arc<str>, &'m mut S)> {
    if !keyed.contains_key(key) {
        if key.len() > keys::MAX_KEY_BYTES {
            keyed.count_refused(cx.now);
            cx.out.keys_refused += 1;
            return None;
        }
        let mut evicted = Vec::new();
        let room = keyed.make_room(pinned, &mut evicted, cx.now);
        for gone in &evicted {
            cx.out.keys_evicted += 1;
            cx.touch(gone);
        }
        if !room {
            cx.out.keys_refused += 1;
            return None;
        }
        keyed.insert(Arc::from(key), init());
    }
    let k = keyed.saw(key)?;
    cx.touch(&k);
    let v = keyed.get_mut(key)?;
    Some((k, v))
}

/// `e` plus `field = value`.
pub(crate) fn with_field(e: &Dynamic, field: &str, value: Dynamic) -> Dynamic {
    let mut m: Map = e.read_lock::<Map>().map(|m| m.clone()).unwrap_or_default();
    m.insert(field.into(), value);
    Dynamic::from_map(m)
}

/// An input id for outputs caused by a timer rather than a message.
pub(crate) fn timer_input(deadline: i64, tag: u32) -> EventId {
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&deadline.to_le_bytes());
    bytes[8..].copy_from_slice(&tag.to_le_bytes());
    EventId::from_content("\0timer", &bytes)
}

/// Serde for Rhai object maps (their keys are not serde types themselves).
pub(crate) mod map_serde {
    use rhai::{Dynamic, Map};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<S: Serializer>(m: &Map, s: S) -> Result<S::Ok, S::Error> {
        Dynamic::from_map(m.clone()).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Map, D::Error> {
        Dynamic::deserialize(d)?.try_cast::<Map>().ok_or_else(|| serde::de::Error::custom("expected an object map"))
    }
}
