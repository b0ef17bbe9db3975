//! The step context: what a kind has at hand while it handles one event or timer for one
//! rule (the script engine, the rule, its timers, the outputs, the key's alarm), and how it
//! calls the rule's closures, reports faults and emits events.

use super::Ev;
use crate::event::EventId;
use crate::func::Func;
use crate::lineage::{Causes, Ref};
use crate::native::View;
use crate::output::{Composite, CompositeId, Outputs, RuleFault, Touched};
use crate::rule::Rule;
use crate::sandbox::{check_data, check_finite, describe};
use crate::timers::Timers;
use rhai::{Dynamic, EvalAltResult};
use std::sync::Arc;

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
    /// Length of `out.events` when this step began: what it emitted is after this.
    pub(crate) start: usize,
    /// Absence detection is paused (the sensor link is down): heartbeat deadlines wait.
    pub(crate) absence_paused: bool,
    /// The rule read `e.value` of this event and found `()` (see [`Outputs::value_missing`]).
    pub(crate) value_missing: bool,
    /// The rule's alarms per key, when it keeps any ([`Rule::keeps_alarms`]); `None` costs
    /// the hot path one check.
    pub(crate) alarms: Option<&'a mut std::collections::HashMap<Arc<str>, crate::keyalarm::KeyAlarm>>,
    /// The input being handled (`None` for a timer): the cause of what is emitted, unless
    /// the kind names the causes itself (`causes`).
    pub(crate) input: Option<&'a crate::Event>,
    /// The causes of the next emitted event, set by kinds whose events have several
    /// (a window's inputs, a sequence's steps); taken by [`Cx::emit_data`].
    pub(crate) causes: Option<Causes>,
}

impl<'a> Cx<'a> {
    pub(crate) fn new(
        script: &'a rhai::Engine,
        rule: &'a Rule,
        rule_idx: u32,
        timers: &'a mut Timers,
        out: &'a mut Outputs,
        now: i64,
    ) -> Self {
        let start = out.events.len();
        Cx {
            script,
            rule,
            rule_idx,
            timers,
            out,
            now,
            faulted: false,
            start,
            absence_paused: false,
            value_missing: false,
            alarms: None,
            input: None,
            causes: None,
        }
    }

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

    /// Evaluates predicate `f` on the event: natively when it is a simple comparison, else
    /// through Rhai.
    pub(crate) fn test(&mut self, what: &str, f: &Func, x: &Ev<'_>) -> Option<bool> {
        let native = f.native(&self.rule.ast);
        let judged = native.and_then(|p| p.eval(&x.view()));
        let held = match judged {
            Some(b) => Some(b),
            None => self.test_dyn(what, f, x.dynamic()),
        };
        // Only when it did not hold, so a rule that matches pays nothing. A native predicate
        // says whether this event's evaluation read `e.value`; for Rhai, whether the closure
        // mentions it at all.
        if held != Some(true) && !self.value_missing && f.reads_value(&self.rule.ast) && x.value_missing() {
            self.value_missing = match (native, judged) {
                (Some(p), Some(_)) => p.reads_value(&x.view()),
                _ => true,
            };
        }
        held
    }

    /// `e.value` for a kind's default value (the stuck-sensor reading), noting when it is `()`.
    pub(crate) fn value(&mut self, x: &Ev<'_>) -> Dynamic {
        let v = x.value();
        self.value_missing |= v.is_unit();
        v
    }

    /// Evaluates `f` natively on `view` if it can, else calls it with `ctx()`.
    pub(crate) fn test_with(
        &mut self,
        what: &str,
        f: &Func,
        view: &View<'_>,
        ctx: impl FnOnce() -> Dynamic,
    ) -> Option<bool> {
        if let Some(b) = f.native(&self.rule.ast).and_then(|p| p.eval(view)) {
            return Some(b);
        }
        self.test_dyn(what, f, &ctx())
    }

    /// Calls a predicate `f(e)`; anything but a bool is a fault.
    pub(crate) fn test_dyn(&mut self, what: &str, f: &Func, e: &Dynamic) -> Option<bool> {
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

    /// Emits a composite event: the rule's `emit(ctx())` when it has one (which may decline
    /// with `()`), else `default_data()`.
    pub(crate) fn emit(
        &mut self,
        key: &str,
        time: i64,
        ctx: impl FnOnce() -> Dynamic,
        default_data: impl FnOnce() -> Dynamic,
        input: EventId,
    ) {
        let data = match &self.rule.emit {
            Some(f) => match self.call(f, [ctx()]) {
                Some(d) => d,
                None => {
                    self.causes = None;
                    return;
                }
            },
            None => default_data(),
        };
        self.emit_data(key, time, data, input);
    }

    /// Emits `data` as is (`()` emits nothing).
    pub(crate) fn emit_data(&mut self, key: &str, time: i64, data: Dynamic, input: EventId) {
        let causes = self.causes.take();
        if data.is_unit() {
            return;
        }
        if let Err(why) = check_data(self.script, &data) {
            self.fault(format!("the event's data {why}; not emitted"));
            return;
        }
        if let Err(why) = check_finite("data", &data) {
            // JSON has no NaN or infinity: it would go out as `null`.
            self.fault(format!("emitted {why}, which JSON cannot carry; not emitted"));
            return;
        }
        // Only this step (one rule, one input) can have emitted for the same rule, key and
        // input: count among its own outputs.
        let index = self.out.events[self.start.min(self.out.events.len())..]
            .iter()
            .filter(|c| c.input == input && c.key == key)
            .count();
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        let mut causes = causes.unwrap_or_else(|| match self.input {
            Some(e) => Causes::one(Ref::of(e)),
            None => Causes::default(),
        });
        if let Some(e) = self.input.filter(|e| e.chained) {
            causes.parent = Some(CompositeId(e.id.0));
        }
        let composite = Composite {
            id: CompositeId::derive(&self.rule.name, key, input, index),
            input,
            rule: self.rule.name.clone(),
            key: key.to_owned(),
            time: crate::Timestamp(time),
            data,
            alarm: None,
            causes,
        };
        let mut composite = composite;
        if self.alarms.is_some() {
            self.actions(&mut composite);
        }
        self.out.events.push(composite);
    }

    /// Records that this rule's state for `key` changed (or went away), so the caller can
    /// persist it.
    pub(crate) fn touch(&mut self, key: &Arc<str>) {
        self.out.touched.push(Touched::Rule { rule: self.rule.name.clone(), key: key.clone() });
    }

    pub(crate) fn set_timer(&mut self, deadline: i64, key: &Arc<str>, tag: u32) {
        self.timers.set(deadline, self.rule_idx, key.clone(), tag);
    }
}
