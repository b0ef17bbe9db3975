//! The engine proper: one step at a time, under time given as an argument.
//!
//! ```text
//! process(event, now):  prepare (kind set-up from tables) ─▶ fire due processing-time timers
//!                       ─▶ dedup ─▶ event time / reorder (watermark) ─▶ for each rule whose
//!                       pattern matches: key ─▶ KindState::on_event ─▶ composites ─▶ fed back
//!                       as events on `<chain_prefix>/<rule>` (chaining)
//! tick(now):            fire due timers (KindState::on_timer), release held events
//! after each step:      key-limit reports that are due; purge of timers of forgotten keys
//! ```
//!
//! The engine knows no kind: what a rule does with an event, a timer or saved state is
//! [`KindState`]'s business (`kinds/`). Persistence is in [`crate::persist`]; reloads and
//! absence control in [`crate::lifecycle`].

pub use crate::config::EngineConfig;
use crate::context;
use crate::event::{Event, EventId};
use crate::kinds::{self, Cx, Ev, KeyLimit, KindState};
use crate::output::{KeyLimitReport, Outputs, RuleFault, Touched};
use crate::quality::{self, Dedup, Reorder};
use crate::rule::{Rule, RuleSet};
use crate::sandbox::Sandbox;
use crate::tables::Tables;
use crate::time::Timestamp;
use crate::timers::Timers;
use crate::topic::MAX_NAMES;
use rhai::{Dynamic, Map};
use std::cell::OnceCell;
use std::sync::Arc;

/// A rule's run-time state.
#[derive(Debug)]
pub(crate) struct Runtime {
    /// What the rule's kind remembers per key; the kind's module handles it.
    pub(crate) state: KindState,
    /// Consecutive failed evaluations.
    pub(crate) failures: u32,
    /// The key of the first failure of the current run, and whether another key has failed
    /// since: a rule is disabled only for failures across keys, so one device's hostile
    /// payloads cannot switch a rule off for the whole fleet.
    pub(crate) failing_key: Option<Box<str>>,
    pub(crate) failures_spread: bool,
    pub(crate) disabled: bool,
    /// Processing time of the last key-limit report.
    last_key_report: Option<i64>,
}

/// What the engine holds, for status reports and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// (rule, kind, keys tracked, disabled).
    pub rules: Vec<(String, &'static str, usize, bool)>,
    /// Pending timer entries.
    pub timers: usize,
    /// Events held for reordering.
    pub buffered: usize,
}

/// Runs rules over events. Synchronous and deterministic: the same rules, tables, events and
/// times give the same outputs, whatever the machine.
#[derive(Debug)]
pub struct Engine {
    /// The script engine the rules' closures run in; rules must be compiled by it.
    pub(crate) sandbox: Arc<Sandbox>,
    /// How input is treated; fixed for the engine's life.
    pub(crate) config: EngineConfig,
    /// The rules in force; replaced whole on reload, between two events.
    pub(crate) rules: RuleSet,
    /// Parallel to `rules`.
    pub(crate) runtime: Vec<Runtime>,
    /// Lookup tables, shared with the native functions during calls.
    pub(crate) tables: Arc<Tables>,
    /// Timers on processing time: heartbeats, handlers' `after`.
    pub(crate) clock: Timers,
    /// Timers on event time: tumbling windows closing, sequences running out of time. They
    /// fire as the watermark passes them, so held (reordered) events are never overtaken.
    pub(crate) event_timers: Timers,
    /// Event time up to which input has been released; older input is late.
    pub(crate) watermark: i64,
    /// Recent message ids, so a redelivered message is processed once.
    pub(crate) dedup: Dedup,
    /// Payload-timed events held until the watermark passes them.
    pub(crate) reorder: Reorder,
    /// Reused buffer of events released by `reorder`.
    ready: Vec<Event>,
    /// Absence detection is paused since then (the sensor link is down).
    pub(crate) absence_paused_since: Option<i64>,
    /// State of rules removed by a reload, kept a while in case they come back.
    pub(crate) retired: Vec<Retired>,
    /// Some rule refused or evicted keys and has not reported it yet; the earliest time a
    /// report may go.
    key_report_due: Option<i64>,
    /// Timer entries above which entries of keys no longer tracked (evicted, finished) are
    /// dropped: such entries would fire as no-ops, but a stream of evicted keys must not
    /// grow the queues meanwhile.
    timer_purge_at: usize,
}

/// The fewest timer entries at which a purge is considered.
const MIN_TIMER_PURGE: usize = 4096;

/// How long the state of a removed rule is kept (10 minutes).
pub const RETIRED_GRACE_MS: i64 = 10 * 60 * 1000;

/// One piece of exported state.
pub(crate) type Exported = (Touched, Vec<u8>);

/// A removed rule's exported state (see [`Engine::reload`]).
#[derive(Debug)]
pub(crate) struct Retired {
    /// It comes back only to a rule of the same name and kind.
    pub(crate) name: Arc<str>,
    pub(crate) kind: &'static str,
    pub(crate) saved: Vec<Exported>,
    /// Processing time of its removal; it is dropped [`RETIRED_GRACE_MS`] later.
    pub(crate) at: i64,
}

impl Engine {
    /// An engine running `rules` (compiled by `sandbox`) with the default configuration.
    pub fn new(sandbox: Arc<Sandbox>, rules: RuleSet) -> Self {
        Engine::with_config(sandbox, rules, Tables::new(), EngineConfig::default())
    }

    /// An engine with lookup tables and a configuration.
    pub fn with_config(sandbox: Arc<Sandbox>, rules: RuleSet, tables: Tables, config: EngineConfig) -> Self {
        let runtime = rules.iter().map(|r| fresh_runtime(r, &config)).collect();
        Engine {
            sandbox,
            config,
            rules,
            runtime,
            tables: Arc::new(tables),
            clock: Timers::default(),
            event_timers: Timers::default(),
            watermark: i64::MIN,
            dedup: Dedup::default(),
            reorder: Reorder::default(),
            ready: Vec::new(),
            absence_paused_since: None,
            retired: Vec::new(),
            key_report_due: None,
            timer_purge_at: MIN_TIMER_PURGE,
        }
    }

    /// Keys tracked per rule, in rule order (0 for rules without per-key state). Cheap: one
    /// length per rule.
    pub fn tracked_keys(&self) -> impl Iterator<Item = (&str, usize)> {
        self.rules.iter().zip(&self.runtime).map(|(r, rt)| (&*r.name, rt.state.keys()))
    }

    /// The rules in force.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The sandbox rules for this engine must be compiled in.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Rule `idx`'s state, and a step context for it at `now` on the rule's own clock.
    pub(crate) fn rule_cx<'a>(
        &'a mut self,
        idx: usize,
        now: i64,
        out: &'a mut Outputs,
    ) -> Option<(&'a mut KindState, Cx<'a>)> {
        let rule = self.rules.as_slice().get(idx)?;
        let timers = if kinds::event_timed(&rule.kind) { &mut self.event_timers } else { &mut self.clock };
        let cx = Cx::new(self.sandbox.engine(), rule, idx as u32, timers, out, now);
        Some((&mut self.runtime.get_mut(idx)?.state, cx))
    }

    /// Processes one input event at processing time `now`, appending what it causes to `out`.
    pub fn process(&mut self, event: Event, now: Timestamp, out: &mut Outputs) {
        self.process_event(event, now.millis(), out);
        self.finish_step(now.millis(), out);
    }

    fn process_event(&mut self, mut event: Event, now: i64, out: &mut Outputs) {
        self.prepare(now, out);
        self.fire(Clock::Processing, now, out);
        if self.config.dedup
            && self.dedup.is_duplicate(&event.payload, self.config.id_field.as_deref(), &mut out.touched)
        {
            out.duplicates += 1;
            return;
        }
        let timed = self.config.time_field.as_deref().and_then(|f| quality::payload_time(&event.payload, f));
        match timed {
            None => {
                // Timed by arrival: in order by construction.
                let t = event.time.millis();
                self.fire(Clock::Event, t.saturating_sub(1), out);
                self.run_event(event, now, out);
                self.watermark = self.watermark.max(t);
                self.fire(Clock::Event, self.watermark, out);
            }
            Some(t) => {
                if t < self.watermark {
                    event.time = Timestamp(t);
                    out.late.push(event);
                    return;
                }
                event.time = Timestamp(t);
                let mut ready = std::mem::take(&mut self.ready);
                self.reorder.push(event, &mut ready, &mut out.touched);
                let upto = self.reorder.max_seen().unwrap_or(t).saturating_sub(self.config.lateness_ms);
                self.advance(upto, ready, now, out);
            }
        }
    }

    /// Advances processing time: fires due timers and releases held events whose lateness
    /// has passed.
    pub fn tick(&mut self, now: Timestamp, out: &mut Outputs) {
        let now = now.millis();
        self.prepare(now, out);
        self.fire(Clock::Processing, now, out);
        if self.config.time_field.is_some() {
            let ready = std::mem::take(&mut self.ready);
            self.advance(now.saturating_sub(self.config.lateness_ms), ready, now, out);
        } else {
            self.watermark = self.watermark.max(now);
            self.fire(Clock::Event, self.watermark, out);
        }
        self.finish_step(now, out);
    }

    /// After each step: reports of rules at their key limit that are due, and a purge of
    /// timer entries for keys no longer tracked once they have piled up.
    fn finish_step(&mut self, now: i64, out: &mut Outputs) {
        if (out.keys_refused > 0 || out.keys_evicted > 0) && self.key_report_due.is_none() {
            self.key_report_due = Some(now);
        }
        if self.key_report_due.is_some_and(|due| now >= due) {
            self.report_key_limits(now, out);
        }
        if self.clock.len() + self.event_timers.len() > self.timer_purge_at {
            let runtime = &self.runtime;
            let tracked = |t: &crate::timers::Timer| {
                runtime.get(t.rule() as usize).and_then(|rt| rt.state.key_set()).is_some_and(|keys| keys.tracks(&t.key))
            };
            self.clock.retain(tracked);
            self.event_timers.retain(tracked);
            self.timer_purge_at = (2 * (self.clock.len() + self.event_timers.len())).max(MIN_TIMER_PURGE);
        }
    }

    /// One report per rule that refused or evicted keys, unless it reported less than
    /// `key_report_interval_ms` ago (then it waits, and its counts add up).
    fn report_key_limits(&mut self, now: i64, out: &mut Outputs) {
        let interval = self.config.key_report_interval_ms;
        let mut next: Option<i64> = None;
        for (rule, rt) in self.rules.iter().zip(&mut self.runtime) {
            let Some(keys) = rt.state.key_set_mut() else { continue };
            if keys.pending().is_none() {
                continue;
            }
            let due = rt.last_key_report.map_or(now, |t| t.saturating_add(interval));
            if now < due {
                next = Some(next.map_or(due, |n| n.min(due)));
                continue;
            }
            let (refused, evicted, since) = keys.take_counts();
            let limit = keys.limit();
            out.key_limits.push(KeyLimitReport {
                rule: rule.name.clone(),
                max_keys: limit.max,
                on_full: limit.on_full,
                refused,
                evicted,
                since: Timestamp(since),
            });
            rt.last_key_report = Some(now);
        }
        self.key_report_due = next;
    }

    /// Moves the watermark to `upto`: releases held events up to it in event-time order,
    /// firing event-time timers in between, then the timers strictly before it.
    fn advance(&mut self, upto: i64, mut ready: Vec<Event>, now: i64, out: &mut Outputs) {
        let upto = upto.max(self.watermark);
        self.reorder.release(upto, &mut ready, &mut out.touched);
        for e in ready.drain(..) {
            self.fire(Clock::Event, e.time.millis().saturating_sub(1), out);
            self.run_event(e, now, out);
        }
        self.ready = ready;
        if upto != self.watermark {
            out.touched.push(Touched::Watermark);
        }
        self.watermark = upto;
        // An event at exactly the watermark is still on time, so timers at it wait.
        self.fire(Clock::Event, upto.saturating_sub(1), out);
    }

    /// When `tick` next has work: the earliest timer (a caller that sleeps until then detects
    /// absences on time). A heartbeat registry not loaded yet (at start, after new tables or
    /// a reload) is work due at once: [`Timestamp::MIN`], so the grace of expected devices
    /// runs from then, not from whatever step comes next.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        if self.registry_pending() {
            return Some(Timestamp::MIN);
        }
        let event = self
            .event_timers
            .next_deadline()
            .map(|d| if self.config.time_field.is_some() { d + self.config.lateness_ms + 1 } else { d });
        match (self.clock.next_deadline(), event) {
            (Some(a), Some(b)) => Some(Timestamp(a.min(b))),
            (a, b) => a.or(b).map(Timestamp),
        }
    }

    /// Some heartbeat rule has an `expected` registry that the next step loads.
    fn registry_pending(&self) -> bool {
        self.rules.iter().zip(&self.runtime).any(|(rule, rt)| rt.state.needs_setup(&rule.kind))
    }

    /// What the engine holds.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            rules: self
                .rules
                .iter()
                .zip(&self.runtime)
                .map(|(r, rt)| (r.name.to_string(), r.kind(), rt.state.keys(), rt.disabled))
                .collect(),
            timers: self.clock.len() + self.event_timers.len(),
            buffered: self.reorder.len(),
        }
    }

    /// Sets the call context and loads heartbeat registries not loaded yet.
    fn prepare(&mut self, now: i64, out: &mut Outputs) {
        context::enter(&self.tables, now);
        for (idx, rule) in self.rules.as_slice().iter().enumerate() {
            let state = &mut self.runtime[idx].state;
            if state.needs_setup(&rule.kind) {
                let timers = if kinds::event_timed(&rule.kind) { &mut self.event_timers } else { &mut self.clock };
                let mut cx = Cx::new(self.sandbox.engine(), rule, idx as u32, timers, out, now);
                state.setup(&mut cx, &self.tables);
            }
        }
    }

    fn fire(&mut self, clock: Clock, upto: i64, out: &mut Outputs) {
        loop {
            let t = match clock {
                Clock::Processing => self.clock.pop_due(upto),
                Clock::Event => self.event_timers.pop_due(upto),
            };
            let Some(t) = t else { break };
            let idx = t.rule() as usize;
            let Some(rule) = self.rules.as_slice().get(idx).cloned() else { continue };
            if self.runtime[idx].disabled {
                continue;
            }
            let start = out.events.len();
            let faulted = {
                let timers = match clock {
                    Clock::Processing => &mut self.clock,
                    Clock::Event => &mut self.event_timers,
                };
                let mut cx = Cx::new(
                    self.sandbox.engine(),
                    &rule,
                    t.rule(),
                    timers,
                    out,
                    if clock == Clock::Processing { upto } else { self.watermark.max(t.deadline) },
                );
                cx.absence_paused = self.absence_paused_since.is_some();
                self.runtime[idx].state.on_timer(&mut cx, &t.key, t.deadline, t.tag());
                cx.faulted
            };
            self.account(idx, &rule, faulted, Some(&t.key), out);
            self.chain(start, t.deadline, 1, out);
        }
    }

    /// Runs one (ordered, deduplicated) event through every rule listening to its topic.
    fn run_event(&mut self, event: Event, now: i64, out: &mut Outputs) {
        let start = out.events.len();
        self.route(&event, now, out);
        self.chain(start, now, 1, out);
    }

    fn route(&mut self, event: &Event, now: i64, out: &mut Outputs) {
        // The event's map is built once for all rules, and only if some rule needs it.
        let base: OnceCell<Map> = OnceCell::new();
        for idx in 0..self.rules.len() {
            let rule = self.rules.as_slice()[idx].clone();
            let Some(pattern) = rule.patterns.iter().find(|p| p.matches(&event.topic)) else { continue };
            if self.runtime[idx].disabled {
                continue;
            }
            out.matched += 1;
            let mut captures = [("", ""); MAX_NAMES];
            let mut n = 0;
            let mut device: Option<&str> = None;
            pattern.matches_with(&event.topic, |name, value| {
                if name == "device" {
                    device = Some(value);
                }
                if let Some(slot) = captures.get_mut(n) {
                    *slot = (name, value);
                    n += 1;
                }
            });
            let x = Ev::new(event, &captures[..n], &base);
            let timers = if kinds::event_timed(&rule.kind) { &mut self.event_timers } else { &mut self.clock };
            let mut cx = Cx::new(self.sandbox.engine(), &rule, idx as u32, timers, out, now);
            let key = key_of(&mut cx, &x, device);
            if let Some(key) = &key {
                self.runtime[idx].state.on_event(&mut cx, &self.tables, key, &x);
            }
            if cx.value_missing {
                cx.out.value_missing.push(rule.name.clone());
            }
            let faulted = cx.faulted;
            // Who failed: the key, or where the key could not be computed, the device level
            // or the topic.
            let who = key.as_deref().or(device).unwrap_or(&event.topic);
            self.account(idx, &rule, faulted, Some(who), out);
        }
    }

    /// Counts consecutive failures; disables a rule that keeps failing for more than one
    /// key (`key` names who failed).
    fn account(&mut self, idx: usize, rule: &Rule, faulted: bool, key: Option<&str>, out: &mut Outputs) {
        let rt = &mut self.runtime[idx];
        if !faulted {
            rt.failures = 0;
            rt.failing_key = None;
            rt.failures_spread = false;
            return;
        }
        rt.failures += 1;
        let key = key.unwrap_or("");
        match &rt.failing_key {
            None => rt.failing_key = Some(key.into()),
            Some(first) => rt.failures_spread |= **first != *key,
        }
        if rt.failures >= self.config.max_failures && rt.failures_spread && !rt.disabled {
            rt.disabled = true;
            out.faults.push(RuleFault {
                rule: rule.name.clone(),
                location: rule.origin.to_string(),
                message: format!("failed {} times in a row", rt.failures),
                disabled: true,
            });
        }
    }

    /// Feeds composites `out.events[start..]` back in as events, up to the depth limit.
    fn chain(&mut self, start: usize, now: i64, depth: u8, out: &mut Outputs) {
        let Some(prefix) = self.config.chain_prefix.clone() else { return };
        if depth > self.config.max_chain_depth {
            return;
        }
        let end = out.events.len();
        for i in start..end {
            let c = &out.events[i];
            let topic = format!("{prefix}/{}", c.rule);
            if !self.rules.iter().any(|r| r.listens_to(&topic)) {
                continue;
            }
            let mut m = Map::new();
            m.insert("type".into(), format!("edgewatch.{}", c.rule).into());
            m.insert("id".into(), c.id.to_string().into());
            m.insert("subject".into(), c.key.clone().into());
            m.insert("time".into(), Dynamic::from_int(c.time.millis()));
            m.insert("data".into(), c.data.clone());
            let ev = Event { topic, payload: Dynamic::from_map(m), time: c.time, id: EventId(c.id.0) };
            let inner_start = out.events.len();
            self.route(&ev, now, out);
            self.chain(inner_start, now, depth + 1, out);
        }
    }
}

/// Which clock a timer runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clock {
    Processing,
    Event,
}

pub(crate) fn fresh_runtime(rule: &Rule, config: &EngineConfig) -> Runtime {
    Runtime {
        state: KindState::for_rule(rule, key_limit(rule, config)),
        failures: 0,
        failing_key: None,
        failures_spread: false,
        disabled: false,
        last_key_report: None,
    }
}

pub(crate) fn key_limit(rule: &Rule, config: &EngineConfig) -> KeyLimit {
    KeyLimit { max: rule.max_keys(config.max_keys_per_rule).max(1), on_full: rule.on_full() }
}

/// The key: the rule's `key` closure, else the `{device}` level of the topic, else the
/// payload's `device` (or, for chained events, `subject`) field, else the topic itself.
fn key_of(cx: &mut Cx<'_>, x: &Ev<'_>, device: Option<&str>) -> Option<String> {
    if let Some(k) = &cx.rule.key {
        let v = cx.call(k, [x.dynamic().clone()])?;
        if v.is_unit() {
            cx.fault("`key` returned nothing".into());
            return None;
        }
        return Some(v.to_string());
    }
    if let Some(d) = device {
        return Some(d.to_owned());
    }
    if let Some(map) = x.event.payload.read_lock::<Map>() {
        for field in ["device", "subject"] {
            if let Some(d) = map.get(field).filter(|d| d.is_string()) {
                return Some(d.to_string());
            }
        }
    }
    Some(x.event.topic.clone())
}
