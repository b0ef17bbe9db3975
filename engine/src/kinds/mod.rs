//! The rule kinds at run time: per-key state and what each kind does with an event or a
//! timer. Each kind is plain Rust over [`Cx`]; Rhai is reached only through [`Cx::call`].

pub(crate) mod filter;
pub(crate) mod handler;
pub(crate) mod heartbeat;
pub(crate) mod sequence;
pub(crate) mod stuck;
pub(crate) mod window;

use crate::event::EventId;
use crate::func::Func;
use crate::output::{Composite, CompositeId, Outputs, RuleFault};
use crate::rule::Rule;
use crate::sandbox::describe;
use crate::timers::Timers;
use rhai::{Dynamic, EvalAltResult, Map};
use std::collections::HashMap;
use std::sync::Arc;

/// Per-key state of one rule.
#[derive(Debug, Default)]
pub(crate) enum KindState {
    #[default]
    Stateless,
    Threshold(HashMap<Arc<str>, bool>),
    Window(HashMap<Arc<str>, window::WindowState>),
    Stuck(HashMap<Arc<str>, stuck::StuckState>),
    Sequence(HashMap<Arc<str>, sequence::SeqState>),
    Heartbeat(heartbeat::HeartbeatState),
    Handler(HashMap<Arc<str>, handler::HandlerState>),
}

impl KindState {
    /// Fresh state for a rule of this kind.
    pub(crate) fn for_rule(rule: &Rule) -> KindState {
        use crate::rule::RuleKind as K;
        match &rule.kind {
            K::Filter { .. } => KindState::Stateless,
            K::Threshold { .. } => KindState::Threshold(HashMap::new()),
            K::Window { .. } => KindState::Window(HashMap::new()),
            K::Stuck { .. } => KindState::Stuck(HashMap::new()),
            K::Sequence { .. } => KindState::Sequence(HashMap::new()),
            K::Heartbeat { .. } => KindState::Heartbeat(heartbeat::HeartbeatState::default()),
            K::Handler { .. } => KindState::Handler(HashMap::new()),
        }
    }

    /// Keys tracked.
    pub(crate) fn keys(&self) -> usize {
        match self {
            KindState::Stateless => 0,
            KindState::Threshold(m) => m.len(),
            KindState::Window(m) => m.len(),
            KindState::Stuck(m) => m.len(),
            KindState::Sequence(m) => m.len(),
            KindState::Heartbeat(h) => h.keys.len(),
            KindState::Handler(m) => m.len(),
        }
    }
}

/// The per-key entry for `key`, created with `init` when new and the rule has room.
/// Returns the shared key and the state, or `None` when the rule is at `max_keys`.
pub(crate) fn entry<'m, S>(
    map: &'m mut HashMap<Arc<str>, S>,
    key: &str,
    max_keys: usize,
    out: &mut Outputs,
    init: impl FnOnce() -> S,
) -> Option<(Arc<str>, &'m mut S)> {
    if !map.contains_key(key) {
        if map.len() >= max_keys {
            out.keys_refused += 1;
            return None;
        }
        map.insert(Arc::from(key), init());
    }
    let k = map.get_key_value(key)?.0.clone();
    let v = map.get_mut(key)?;
    Some((k, v))
}

/// What a kind needs while it handles one event or timer for one rule.
pub(crate) struct Cx<'a> {
    pub(crate) script: &'a rhai::Engine,
    pub(crate) rule: &'a Rule,
    pub(crate) rule_idx: u32,
    pub(crate) timers: &'a mut Timers,
    pub(crate) out: &'a mut Outputs,
    /// Processing time.
    pub(crate) now: i64,
    /// A call of this rule failed during this step.
    pub(crate) faulted: bool,
}

impl Cx<'_> {
    /// Calls `f(args)`; a failure becomes a fault of the rule and `None`.
    pub(crate) fn call(&mut self, f: &Func, args: impl IntoIterator<Item = Dynamic>) -> Option<Dynamic> {
        match f.call(self.script, &self.rule.ast, None, args) {
            Ok(v) => Some(v),
            Err(err) => {
                self.fault_from(&err);
                None
            }
        }
    }

    /// Calls `f(e)` with `this` bound to `this`.
    pub(crate) fn call_this(
        &mut self,
        f: &Func,
        this: &mut Dynamic,
        args: impl IntoIterator<Item = Dynamic>,
    ) -> Option<Dynamic> {
        match f.call(self.script, &self.rule.ast, Some(this), args) {
            Ok(v) => Some(v),
            Err(err) => {
                self.fault_from(&err);
                None
            }
        }
    }

    /// Calls a predicate `f(e)`; anything but a bool is a fault.
    pub(crate) fn test(&mut self, what: &str, f: &Func, e: &Dynamic) -> Option<bool> {
        let v = self.call(f, [e.clone()])?;
        match v.as_bool() {
            Ok(b) => Some(b),
            Err(ty) => {
                self.fault(format!("`{what}` must return a bool, but returned {ty}"));
                None
            }
        }
    }

    pub(crate) fn fault_from(&mut self, err: &EvalAltResult) {
        let (pos, message) = describe(err);
        let location = match (pos.line(), pos.position()) {
            (Some(line), Some(col)) => format!("{}:{line}:{col}", self.rule.origin.file),
            (Some(line), None) => format!("{}:{line}:0", self.rule.origin.file),
            _ => self.rule.origin.to_string(),
        };
        self.faulted = true;
        self.out.faults.push(RuleFault { rule: self.rule.name.clone(), location, message, disabled: false });
    }

    pub(crate) fn fault(&mut self, message: String) {
        self.faulted = true;
        self.out.faults.push(RuleFault {
            rule: self.rule.name.clone(),
            location: self.rule.origin.to_string(),
            message,
            disabled: false,
        });
    }

    /// Emits a composite event: the rule's `emit(e)` when it has one (which may decline with
    /// `()`), else `default_data`.
    pub(crate) fn emit(
        &mut self,
        key: &str,
        time: i64,
        e: &Dynamic,
        default_data: impl FnOnce() -> Dynamic,
        input: EventId,
    ) {
        let data = match &self.rule.emit {
            Some(f) => match self.call(f, [e.clone()]) {
                Some(d) => d,
                None => return,
            },
            None => default_data(),
        };
        self.emit_data(key, time, data, input);
    }

    /// Emits `data` as is (`()` emits nothing).
    pub(crate) fn emit_data(&mut self, key: &str, time: i64, data: Dynamic, input: EventId) {
        if data.is_unit() {
            return;
        }
        let index =
            self.out.events.iter().filter(|c| c.input == input && *c.rule == *self.rule.name && c.key == key).count();
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        self.out.events.push(Composite {
            id: CompositeId::derive(&self.rule.name, key, input, index),
            input,
            rule: self.rule.name.clone(),
            key: key.to_owned(),
            time: crate::Timestamp(time),
            data,
        });
    }

    pub(crate) fn set_timer(&mut self, deadline: i64, key: &Arc<str>, tag: u32) {
        self.timers.set(deadline, self.rule_idx, key.clone(), tag);
    }
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
