//! The engine proper: data quality, routing, the rule kinds, timers, chaining.
//!
//! ```text
//! process(event, now):  fire due timers ─▶ dedup ─▶ event time / reorder ─▶ for each rule
//!                         listening: key ─▶ kind (filter, threshold, window, stuck, sequence,
//!                         heartbeat, handler) ─▶ composites ─▶ fed back as events (chaining)
//! tick(now):            fire due timers, release held events
//! ```

use crate::context;
use crate::event::{Event, EventId};
use crate::kinds::{self, Cx, Ev, KeyLimit, KindState};
use crate::output::{KeyLimitReport, Outputs, RuleFault, Touched};
use crate::quality::{self, Dedup, Reorder};
use crate::rule::{Rule, RuleKind, RuleSet};
use crate::sandbox::Sandbox;
use crate::tables::Tables;
use crate::time::Timestamp;
use crate::timers::Timers;
use crate::topic::MAX_NAMES;
use rhai::{Dynamic, Map};
use std::cell::OnceCell;
use std::sync::Arc;

/// How the engine treats its input. The defaults suit messages timed by their arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Payload field holding the event time (integer ms, float seconds, or RFC 3339 text).
    /// Absent, or missing from a payload: the arrival time.
    pub time_field: Option<String>,
    /// How late (in event time) a payload-timed event may arrive and still be processed in
    /// order. Events are held this long; later ones are returned as late.
    pub lateness_ms: i64,
    /// Drop duplicates (same `device` and `seq`, or the same `id_field`).
    pub dedup: bool,
    /// Payload field that identifies a message, for deduplication.
    pub id_field: Option<String>,
    /// Composite events re-enter as events on `<chain_prefix>/<rule>`; `None` disables it.
    pub chain_prefix: Option<String>,
    /// How many times an event may be re-fed (a loop of rules stops here).
    pub max_chain_depth: u8,
    /// Consecutive failures after which a rule is disabled until reloaded.
    pub max_failures: u32,
    /// Most keys a rule tracks when it does not say (`max_keys`), so every rule is bounded.
    pub max_keys_per_rule: usize,
    /// A rule that refused or evicted keys is reported in [`Outputs::key_limits`] at most
    /// once per this many milliseconds of processing time (the first time at once).
    pub key_report_interval_ms: i64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            time_field: None,
            lateness_ms: 0,
            dedup: true,
            id_field: None,
            chain_prefix: None,
            max_chain_depth: 4,
            max_failures: 10,
            max_keys_per_rule: 100_000,
            key_report_interval_ms: 60_000,
        }
    }
}

/// A rule's run-time state.
#[derive(Debug)]
struct Runtime {
    state: KindState,
    /// Consecutive failed evaluations.
    failures: u32,
    /// The key of the first failure of the current run, and whether another key has failed
    /// since: a rule is disabled only for failures across keys, so one device's hostile
    /// payloads cannot switch a rule off for the whole fleet.
    failing_key: Option<Box<str>>,
    failures_spread: bool,
    disabled: bool,
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
    sandbox: Arc<Sandbox>,
    config: EngineConfig,
    /// The rules in force; replaced whole on reload, between two events.
    rules: RuleSet,
    /// Parallel to `rules`.
    runtime: Vec<Runtime>,
    /// Lookup tables, shared with the native functions during calls.
    tables: Arc<Tables>,
    /// Timers on processing time: heartbeats, handlers' `after`.
    clock: Timers,
    /// Timers on event time: tumbling windows closing, sequences running out of time. They
    /// fire as the watermark passes them, so held (reordered) events are never overtaken.
    event_timers: Timers,
    /// Event time up to which input has been released; older input is late.
    watermark: i64,
    dedup: Dedup,
    reorder: Reorder,
    /// Reused buffer of events released by `reorder`.
    ready: Vec<Event>,
    /// Absence detection is paused since then (the sensor link is down).
    absence_paused_since: Option<i64>,
    /// State of rules removed by a reload, kept a while in case they come back.
    retired: Vec<Retired>,
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
type Exported = (Touched, Vec<u8>);

/// A removed rule's exported state.
#[derive(Debug)]
struct Retired {
    name: Arc<str>,
    kind: &'static str,
    saved: Vec<Exported>,
    at: i64,
}

/// Can a rule's state carry over to its new version?
fn compatible(old: &Rule, new: &Rule) -> bool {
    match (&old.kind, &new.kind) {
        (RuleKind::Window { spec: a, .. }, RuleKind::Window { spec: b, .. }) => {
            a.tumbling == b.tumbling && std::mem::discriminant(&a.extent) == std::mem::discriminant(&b.extent)
        }
        (RuleKind::Sequence { steps: a, .. }, RuleKind::Sequence { steps: b, .. }) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.times == y.times && x.absent == y.absent)
        }
        (a, b) => a.name() == b.name(),
    }
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

    /// Replaces the lookup tables; heartbeat registries are re-read on the next step.
    pub fn set_tables(&mut self, tables: Tables) {
        self.tables = Arc::new(tables);
        for rt in &mut self.runtime {
            if let KindState::Heartbeat(h) = &mut rt.state {
                h.registry_loaded = false;
            }
        }
    }

    /// Swaps in a new rule set between two events (see [`Engine::reload`]).
    pub fn replace_rules(&mut self, rules: RuleSet) {
        self.reload(rules, Timestamp(0));
    }

    /// Swaps in a new rule set between two events, at processing time `now`.
    ///
    /// - A rule that keeps its name and stays compatible keeps its per-key state, partial
    ///   matches, heartbeat deadlines and timers: its predicates and outputs may change
    ///   freely. Compatible means the same kind and, for windows, the same flavour (sliding
    ///   or tumbling, time or count: a new size applies from the next event, evicting what
    ///   falls outside it), and for sequences the same number of steps with the same
    ///   `times` and `absent` (a new `within` applies to running partial matches).
    /// - A rule that goes away keeps its state for [`RETIRED_GRACE_MS`]: if a rule of that
    ///   name and kind comes back meanwhile (an accidental delete, a rename undone), its
    ///   state comes back with it.
    /// - Disabled rules are enabled again.
    pub fn reload(&mut self, rules: RuleSet, now: Timestamp) {
        let now = now.millis();
        self.retired.retain(|r| now - r.at < RETIRED_GRACE_MS);
        let mut old: Vec<Option<(Arc<Rule>, Runtime)>> =
            self.rules.iter().cloned().zip(self.runtime.drain(..)).map(Some).collect();
        let mut mapping: Vec<Option<u32>> = vec![None; old.len()];
        let mut runtime = Vec::with_capacity(rules.len());
        let mut revive: Vec<Vec<Exported>> = Vec::new();
        for (new_idx, rule) in rules.iter().enumerate() {
            let found =
                old.iter().position(|o| o.as_ref().is_some_and(|(r, _)| r.name == rule.name && compatible(r, rule)));
            match found.and_then(|i| old[i].take().map(|o| (i, o))) {
                Some((i, (_, mut rt))) => {
                    mapping[i] = u32::try_from(new_idx).ok();
                    rt.failures = 0;
                    rt.failing_key = None;
                    rt.failures_spread = false;
                    rt.disabled = false;
                    if let Some(keys) = rt.state.key_set_mut() {
                        keys.set_limit(key_limit(rule, &self.config));
                    }
                    if let KindState::Heartbeat(h) = &mut rt.state {
                        h.registry_loaded = false;
                    }
                    runtime.push(rt);
                }
                None => {
                    runtime.push(fresh_runtime(rule, &self.config));
                    if let Some(pos) = self.retired.iter().position(|r| r.name == rule.name && r.kind == rule.kind()) {
                        revive.push(self.retired.remove(pos).saved);
                    }
                }
            }
        }
        // What goes away is kept, exported, for a while.
        let gone: Vec<(Arc<Rule>, Runtime)> = old.into_iter().flatten().collect();
        for (rule, rt) in gone {
            // Export through a one-rule engine view: same code as persistence.
            self.rules = RuleSet::from_rules([rule.clone()]).0;
            self.runtime = vec![rt];
            let saved: Vec<Exported> =
                self.export_all().into_iter().filter(|(t, _)| matches!(t, Touched::Rule { .. })).collect();
            self.retired.push(Retired { name: rule.name.clone(), kind: rule.kind(), saved, at: now });
        }
        self.clock.remap(|idx| mapping.get(idx as usize).copied().flatten());
        self.event_timers.remap(|idx| mapping.get(idx as usize).copied().flatten());
        self.rules = rules;
        self.runtime = runtime;
        for saved in revive {
            for (what, bytes) in saved {
                if let Err(error) = self.import(&what, &bytes) {
                    tracing::warn!(%error, "Retired state not revived.");
                }
            }
        }
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
        self.rules.iter().zip(&self.runtime).any(|(rule, rt)| match (&rule.kind, &rt.state) {
            (RuleKind::Heartbeat { spec, .. }, KindState::Heartbeat(h)) => {
                !h.registry_loaded && spec.expected.is_some()
            }
            _ => false,
        })
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
            let rt = &mut self.runtime[idx];
            if let (RuleKind::Heartbeat { spec, .. }, KindState::Heartbeat(h)) = (&rule.kind, &mut rt.state) {
                if !h.registry_loaded {
                    let mut cx = Cx::new(self.sandbox.engine(), rule, idx as u32, &mut self.clock, out, now);
                    kinds::heartbeat::load_registry(&mut cx, spec, &self.tables, h);
                }
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
                match (&rule.kind, &mut self.runtime[idx].state) {
                    (RuleKind::Window { spec, when, .. }, KindState::Window(s)) => {
                        kinds::window::on_timer(&mut cx, (spec, when.as_ref()), s, &t.key, t.deadline);
                    }
                    (RuleKind::Sequence { steps, within_ms, .. }, KindState::Sequence(s)) => {
                        kinds::sequence::on_timer(&mut cx, (steps, *within_ms), s, &t.key, t.deadline);
                    }
                    (RuleKind::Heartbeat { spec, .. }, KindState::Heartbeat(s)) => {
                        kinds::heartbeat::on_timer(&mut cx, spec, s, &t.key, t.deadline, t.tag());
                    }
                    (RuleKind::Handler { on_timer, .. }, KindState::Handler(s)) => {
                        kinds::handler::on_timer(&mut cx, on_timer.as_ref(), s, &t.key, t.deadline);
                    }
                    _ => {}
                }
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
            let timers = if event_timed(&rule) { &mut self.event_timers } else { &mut self.clock };
            let mut cx = Cx::new(self.sandbox.engine(), &rule, idx as u32, timers, out, now);
            let key = key_of(&mut cx, &x, device);
            if let Some(key) = &key {
                dispatch(&mut cx, &self.tables, &mut self.runtime[idx].state, key, &x);
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

/// Rules whose timers follow event time.
fn event_timed(rule: &Rule) -> bool {
    matches!(rule.kind, RuleKind::Window { .. } | RuleKind::Sequence { .. })
}

fn fresh_runtime(rule: &Rule, config: &EngineConfig) -> Runtime {
    Runtime {
        state: KindState::for_rule(rule, key_limit(rule, config)),
        failures: 0,
        failing_key: None,
        failures_spread: false,
        disabled: false,
        last_key_report: None,
    }
}

fn key_limit(rule: &Rule, config: &EngineConfig) -> KeyLimit {
    KeyLimit { max: rule.max_keys(config.max_keys_per_rule).max(1), on_full: rule.on_full() }
}

fn dispatch(cx: &mut Cx<'_>, tables: &Tables, state: &mut KindState, key: &str, x: &Ev<'_>) {
    let rule = cx.rule;
    match (&rule.kind, state) {
        (RuleKind::Filter { when }, _) => kinds::filter::on_event_filter(cx, when.as_ref(), key, x),
        (RuleKind::Threshold { when, clear, emit_clear }, KindState::Threshold(s)) => {
            kinds::filter::on_event_threshold(cx, (when, clear.as_ref(), emit_clear.as_ref()), s, key, x);
        }
        (RuleKind::Window { spec, when, clear }, KindState::Window(s)) => {
            kinds::window::on_event(cx, (spec, when.as_ref(), clear.as_ref()), s, key, x);
        }
        (RuleKind::Stuck { for_ms, tolerance, value }, KindState::Stuck(s)) => {
            kinds::stuck::on_event(cx, (*for_ms, *tolerance, value.as_ref()), s, key, x);
        }
        (RuleKind::Sequence { steps, within_ms, max_partial }, KindState::Sequence(s)) => {
            kinds::sequence::on_event(cx, (steps, *within_ms, *max_partial), s, key, x);
        }
        (RuleKind::Heartbeat { spec, when }, KindState::Heartbeat(s)) => {
            kinds::heartbeat::on_event(cx, (spec, when.as_ref()), tables, s, key, x);
        }
        (RuleKind::Handler { on_event, init, .. }, KindState::Handler(s)) => {
            kinds::handler::on_event(cx, (on_event, init), s, key, x);
        }
        _ => {}
    }
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

/// Saved state could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state of {what}: {message}")]
pub struct StateError {
    pub what: String,
    pub message: String,
}

/// The persisted form of one rule's state for one key. Tagged with the kind, so state saved
/// by a rule that has since changed kind is recognised and dropped.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Saved {
    Threshold { active: bool },
    Window(kinds::window::SavedWindow),
    Stuck(kinds::stuck::StuckState),
    Sequence(kinds::sequence::SeqState),
    Heartbeat(kinds::heartbeat::Hb),
    Handler(kinds::handler::HandlerState),
}

/// Persistence: the engine names what changed in `Outputs::touched`; the caller exports
/// those pieces and stores them; after a restart it imports them back.
impl Engine {
    /// The persisted form of `what`, or `None` if it no longer exists (delete it).
    pub fn export(&self, what: &Touched) -> Option<Vec<u8>> {
        match what {
            Touched::Dedup(name) => self.dedup.export(name),
            Touched::Held(name) => self.reorder.export(name),
            Touched::Watermark => (self.config.time_field.is_some() && self.watermark != i64::MIN)
                .then(|| self.watermark.to_string().into_bytes()),
            Touched::Rule { rule, key } => {
                let idx = self.rules.iter().position(|r| r.name == *rule)?;
                let k: &str = key;
                let saved = match &self.runtime[idx].state {
                    KindState::Stateless => None,
                    KindState::Threshold(m) => m.get(k).map(|a| Saved::Threshold { active: *a }),
                    KindState::Window(m) => m.get(k).map(|w| Saved::Window(kinds::window::save(w))),
                    KindState::Stuck(m) => m.get(k).map(|s| Saved::Stuck(*s)),
                    KindState::Sequence(m) => m.get(k).map(|s| Saved::Sequence(s.clone())),
                    KindState::Heartbeat(h) => h.keys.get(k).map(|hb| Saved::Heartbeat(hb.clone())),
                    KindState::Handler(m) => m.get(k).map(|s| Saved::Handler(s.clone())),
                }?;
                serde_json::to_vec(&saved).ok()
            }
        }
    }

    /// Everything there is, for snapshots and `state export`.
    pub fn export_all(&self) -> Vec<(Touched, Vec<u8>)> {
        let mut all = Vec::new();
        for (rule, rt) in self.rules.iter().zip(&self.runtime) {
            let keys: Vec<Arc<str>> = match &rt.state {
                KindState::Stateless => Vec::new(),
                KindState::Threshold(m) => m.keys().cloned().collect(),
                KindState::Window(m) => m.keys().cloned().collect(),
                KindState::Stuck(m) => m.keys().cloned().collect(),
                KindState::Sequence(m) => m.keys().cloned().collect(),
                KindState::Heartbeat(h) => h.keys.keys().cloned().collect(),
                KindState::Handler(m) => m.keys().cloned().collect(),
            };
            for key in keys {
                let t = Touched::Rule { rule: rule.name.clone(), key };
                if let Some(bytes) = self.export(&t) {
                    all.push((t, bytes));
                }
            }
        }
        if let Some(bytes) = self.export(&Touched::Watermark) {
            all.push((Touched::Watermark, bytes));
        }
        for name in self.reorder.names() {
            let t = Touched::Held(name);
            if let Some(bytes) = self.export(&t) {
                all.push((t, bytes));
            }
        }
        for name in self.dedup.names() {
            let t = Touched::Dedup(name.into());
            if let Some(bytes) = self.export(&t) {
                all.push((t, bytes));
            }
        }
        all.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
        all
    }

    /// Restores one piece of state saved by [`Engine::export`], re-arming its timers. State
    /// of a rule that no longer exists, or that changed kind, is refused with an error (the
    /// caller logs and drops it).
    pub fn import(&mut self, what: &Touched, bytes: &[u8]) -> Result<(), StateError> {
        let err = |message: String| StateError { what: format!("{what:?}"), message };
        match what {
            Touched::Dedup(name) => self.dedup.import(name, bytes).map_err(err),
            Touched::Held(name) => self.reorder.import(name, bytes).map_err(err),
            Touched::Watermark => {
                let w = std::str::from_utf8(bytes).ok().and_then(|t| t.parse::<i64>().ok());
                self.watermark = w.ok_or_else(|| err("unreadable watermark".into()))?;
                Ok(())
            }
            Touched::Rule { rule, key } => {
                let idx = self.rules.iter().position(|r| r.name == *rule).ok_or_else(|| err("no such rule".into()))?;
                let saved: Saved = serde_json::from_slice(bytes).map_err(|e| err(e.to_string()))?;
                let rule = self.rules.as_slice()[idx].clone();
                let mut out = Outputs::default();
                let timers = if event_timed(&rule) { &mut self.event_timers } else { &mut self.clock };
                let mut cx = Cx::new(self.sandbox.engine(), &rule, idx as u32, timers, &mut out, 0);
                let key = key.clone();
                match (saved, &mut self.runtime[idx].state, &rule.kind) {
                    (Saved::Threshold { active }, KindState::Threshold(m), _) => {
                        m.insert(key, active);
                    }
                    (Saved::Window(w), KindState::Window(m), RuleKind::Window { spec, .. }) => {
                        kinds::window::restore(&mut cx, spec, m, key, w);
                    }
                    (Saved::Stuck(s), KindState::Stuck(m), _) => {
                        m.insert(key, s);
                    }
                    (Saved::Sequence(s), KindState::Sequence(m), RuleKind::Sequence { within_ms, .. }) => {
                        kinds::sequence::restore(&mut cx, *within_ms, m, key, s);
                    }
                    (Saved::Heartbeat(hb), KindState::Heartbeat(h), _) => {
                        kinds::heartbeat::restore(&mut cx, h, key, hb)
                    }
                    (Saved::Handler(s), KindState::Handler(m), _) => kinds::handler::restore(&mut cx, m, key, s),
                    _ => return Err(err(format!("saved state does not fit a {} rule", rule.kind()))),
                }
                Ok(())
            }
        }
    }

    /// Absence detection stops: heartbeat deadlines wait until [`Engine::resume_absence`].
    /// For when the agent loses the sensor broker: silence then says nothing about devices.
    pub fn pause_absence(&mut self, now: Timestamp) {
        if self.absence_paused_since.is_none() {
            self.absence_paused_since = Some(now.millis());
        }
    }

    /// Absence detection resumes: every present key's deadline moves by the time it was
    /// paused. Changed state is named in `out.touched`.
    pub fn resume_absence(&mut self, now: Timestamp, out: &mut Outputs) {
        let Some(since) = self.absence_paused_since.take() else { return };
        let paused = (now.millis() - since).max(0);
        self.move_deadlines(&move |deadline, _| deadline + paused, out);
    }

    /// After the agent itself was down: every present key gets at least one full timeout from
    /// `now` to speak, instead of a storm of `missing` for deadlines that passed meanwhile.
    /// Devices that really went silent are still reported, one timeout later.
    pub fn grace_after_restart(&mut self, now: Timestamp, out: &mut Outputs) {
        let now = now.millis();
        self.move_deadlines(&move |deadline, timeout| deadline.max(now + timeout), out);
    }

    fn move_deadlines(&mut self, shift: &dyn Fn(i64, i64) -> i64, out: &mut Outputs) {
        for idx in 0..self.rules.len() {
            let rule = self.rules.as_slice()[idx].clone();
            if let KindState::Heartbeat(h) = &mut self.runtime[idx].state {
                let mut cx = Cx::new(self.sandbox.engine(), &rule, idx as u32, &mut self.clock, out, 0);
                kinds::heartbeat::move_deadlines(&mut cx, h, shift);
            }
        }
    }
}
