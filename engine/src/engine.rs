//! The engine proper: one step at a time, under time given as an argument.
//!
//! ```text
//! process(event, now):  prepare (kind set-up from tables) ─▶ fire due processing-time timers
//!                       ─▶ dedup ─▶ event time / reorder (watermark) ─▶ for each rule whose
//!                       pattern matches: key ─▶ KindState::on_event ─▶ composites ─▶ fed back
//!                       as events on `<chain_prefix>/<rule>` (chaining); the rule's past
//!                       is lent to its calls for the key, and the event's readings are
//!                       folded into it after (`recall.rs`)
//! tick(now):            fire due timers (KindState::on_timer), release held events
//! after each step:      key-limit reports that are due; purge of timers of forgotten keys
//! ```
//!
//! The engine knows no kind: what a rule does with an event, a timer or saved state is the
//! business of `KindState` (`kinds/`). Persistence ([`Engine::export`], [`Engine::import`])
//! is in `persist.rs`; reloads and absence control ([`Engine::reload`]) in `lifecycle.rs`.

pub use crate::config::EngineConfig;
use crate::context;
use crate::event::Event;
use crate::history::Recorder;
use crate::keyalarm::ALARM_TAG;
use crate::kinds::{self, Cx, Ev, KindState};
use crate::output::{Outputs, Touched};
use crate::quality::{self, Dedup, Reorder};
use crate::rule::{Rule, RuleSet};
pub use crate::runtime::RETIRED_GRACE_MS;
use crate::runtime::{KeyReport, Retired, Runtime};
use crate::sandbox::Sandbox;
use crate::tables::Tables;
use crate::time::Timestamp;
use crate::timers::Timers;
use crate::topic::MAX_NAMES;
use rhai::Map;
use std::cell::OnceCell;
use std::sync::Arc;

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
    /// The open history roll-ups of every remembered series.
    pub(crate) recorder: Recorder,
    /// Series fed by the current event (key hash, field), so two rules remembering the same
    /// field of the same key fold the reading once.
    pub(crate) fed: Vec<(u64, Arc<str>)>,
    /// Timer entries above which entries of keys no longer tracked (evicted, finished) are
    /// dropped: such entries would fire as no-ops, but a stream of evicted keys must not
    /// grow the queues meanwhile.
    timer_purge_at: usize,
}

/// Why [`Engine::alarm_command`] refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlarmCommandError {
    #[error("no rule named `{0}`")]
    UnknownRule(String),
    #[error("rule `{0}` keeps no alarms (it has no `notify` or `act`)")]
    NoAlarms(String),
    #[error(transparent)]
    Refused(#[from] crate::alarm::CommandError),
}

/// The fewest timer entries at which a purge is considered.
const MIN_TIMER_PURGE: usize = 4096;

impl Engine {
    /// An engine running `rules` (compiled by `sandbox`) with the default configuration.
    pub fn new(sandbox: Arc<Sandbox>, rules: RuleSet) -> Self {
        Engine::with_config(sandbox, rules, Tables::new(), EngineConfig::default())
    }

    /// An engine with lookup tables and a configuration.
    pub fn with_config(sandbox: Arc<Sandbox>, rules: RuleSet, tables: Tables, config: EngineConfig) -> Self {
        let runtime = rules.iter().map(|r| Runtime::new(r, &config)).collect();
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
            recorder: Recorder::new(),
            fed: Vec::new(),
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
        if self.recorder.next_close().is_some_and(|t| now >= t) {
            self.close_history(now, out);
        }
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
        self.close_history(now, out);
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
                let Some(rt) = runtime.get(t.rule() as usize) else { return false };
                if t.tag() == ALARM_TAG {
                    return rt.alarms.contains_key(&t.key);
                }
                rt.state.key_set().is_some_and(|keys| keys.tracks(&t.key))
            };
            self.clock.retain(tracked);
            self.event_timers.retain(tracked);
            self.timer_purge_at = (2 * (self.clock.len() + self.event_timers.len())).max(MIN_TIMER_PURGE);
        }
    }

    /// One report per rule that refused or evicted keys, unless it reported less than
    /// `key_report_interval_ms` ago (then it waits, and its counts add up).
    fn report_key_limits(&mut self, now: i64, out: &mut Outputs) {
        let mut next: Option<i64> = None;
        for (rule, rt) in self.rules.iter().zip(&mut self.runtime) {
            match rt.key_report(rule, now, self.config.key_report_interval_ms) {
                KeyReport::Nothing => {}
                KeyReport::Later(due) => next = Some(next.map_or(due, |n| n.min(due))),
                KeyReport::Now(report) => out.key_limits.push(report),
            }
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
        if self.setup_pending() {
            return Some(Timestamp::MIN);
        }
        let event = self
            .event_timers
            .next_deadline()
            .map(|d| if self.config.time_field.is_some() { d + self.config.lateness_ms + 1 } else { d });
        [self.clock.next_deadline(), event, self.recorder.next_close()].into_iter().flatten().min().map(Timestamp)
    }

    /// Some rule's state is to be set up from the tables by the next step (a heartbeat's
    /// registry of expected devices).
    fn setup_pending(&self) -> bool {
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

    /// Sets the call context and sets up rule state from the tables where needed (loads
    /// heartbeat registries not loaded yet).
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
            if t.tag() == ALARM_TAG {
                self.alarm_due(idx, &rule, &t.key, upto, out);
                continue;
            }
            let start = out.events.len();
            let changes = out.alarm_changes.len();
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
                let rt = &mut self.runtime[idx];
                if rule.keeps_alarms() {
                    cx.alarms = Some(&mut rt.alarms);
                }
                context::enter_past(rt.past.as_deref_mut(), &t.key, t.deadline);
                rt.state.on_timer(&mut cx, &t.key, t.deadline, t.tag());
                context::leave_past(rt.past.as_deref_mut(), &t.key);
                cx.faulted
            };
            self.account(idx, &rule, faulted, Some(&t.key), out);
            self.chain(start, t.deadline, 1, out);
            if out.alarm_changes.len() > changes {
                self.release_inhibited(changes, upto, out);
            }
        }
    }

    /// Runs one (ordered, deduplicated) event through every rule listening to its topic.
    fn run_event(&mut self, event: Event, now: i64, out: &mut Outputs) {
        let start = out.events.len();
        let changes = out.alarm_changes.len();
        // History costs nothing to those who keep none: each hook is behind one check.
        if !self.fed.is_empty() {
            self.fed.clear();
        }
        if !self.config.history.remember.is_empty() {
            self.remember_subscribed(&event, now, out);
        }
        self.route(&event, now, out);
        self.chain(start, now, 1, out);
        if out.alarm_changes.len() > changes {
            self.release_inhibited(changes, now, out);
        }
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
            cx.input = Some(event);
            let key = kinds::key_of(&mut cx, &x, device);
            if let Some(key) = &key {
                let rt = &mut self.runtime[idx];
                if rule.keeps_alarms() {
                    cx.alarms = Some(&mut rt.alarms);
                }
                context::enter_past(rt.past.as_deref_mut(), key, event.time.millis());
                rt.state.on_event(&mut cx, &self.tables, key, &x);
                context::leave_past(rt.past.as_deref_mut(), key);
            }
            if cx.value_missing {
                cx.out.value_missing.push(rule.name.clone());
            }
            let faulted = cx.faulted;
            // Who failed: the key, or where the key could not be computed, the device level
            // or the topic.
            let who = key.as_deref().or(device).unwrap_or(&event.topic);
            self.account(idx, &rule, faulted, Some(who), out);
            if let Some(key) = key.as_deref() {
                if !rule.remember.is_empty() {
                    self.remember_for_rule(&rule, key, event, now, out);
                }
                if self.runtime[idx].past.is_some() {
                    self.fold_past(idx, key, event, now, out);
                }
            }
        }
    }

    /// Counts consecutive failures; disables a rule that keeps failing for more than one
    /// key (`key` names who failed).
    fn account(&mut self, idx: usize, rule: &Rule, faulted: bool, key: Option<&str>, out: &mut Outputs) {
        let max = self.config.max_failures;
        if let Some(fault) = self.runtime[idx].account(rule, faulted, key.unwrap_or(""), max) {
            out.faults.push(fault);
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
            let ev = c.to_event(topic);
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
