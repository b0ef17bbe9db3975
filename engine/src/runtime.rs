//! One rule's run-time bookkeeping, beside its kind's state: consecutive failures (a rule
//! that keeps failing across keys is disabled until reloaded), and when it last reported
//! refused or evicted keys. Plain state: the engine calls it and pushes what it returns to
//! the outputs. A rule removed by a reload leaves its state here, exported, as [`Retired`].
//! Beside the kind's state, whatever the kind: the rule's past (`past`), per key.

use crate::config::EngineConfig;
use crate::kinds::{KeyLimit, KeySet, KindState};
use crate::output::{KeyLimitReport, RuleFault, Touched};
use crate::past::RulePast;
use crate::rule::Rule;
use crate::time::Timestamp;
use std::sync::Arc;

/// A rule's run-time state.
#[derive(Debug)]
pub(crate) struct Runtime {
    /// What the rule's kind remembers per key; the kind's module handles it.
    pub(crate) state: KindState,
    /// The past the rule declared (`past`), per key; `None` without `past`. Beside the
    /// kind's state, not in it: any kind may keep a past, and it outlives kind changes.
    pub(crate) past: Option<Box<RulePast>>,
    /// One alarm per key, for rules that notify or act (see [`crate::alarm`]): it gates
    /// their notifications (rate limit, snooze, out of service). Keys whose alarm is idle
    /// are not kept. Saved with the kind's state for the key (see `persist`).
    pub(crate) alarms: std::collections::HashMap<std::sync::Arc<str>, crate::keyalarm::KeyAlarm>,
    /// Consecutive failed evaluations.
    failures: u32,
    /// The key of the first failure of the current run, and whether another key has failed
    /// since: a rule is disabled only for failures across keys, so one device's hostile
    /// payloads cannot switch a rule off for the whole fleet.
    failing_key: Option<Box<str>>,
    failures_spread: bool,
    /// Failed too often: skipped by events and timers until reloaded.
    pub(crate) disabled: bool,
    /// Processing time of the last key-limit report.
    last_key_report: Option<i64>,
}

/// What a rule has to say about its key limit at a given time.
pub(crate) enum KeyReport {
    /// Nothing refused or evicted since the last report.
    Nothing,
    /// Something to report, but not before this time (it reported too recently).
    Later(i64),
    Now(KeyLimitReport),
}

impl Runtime {
    /// Fresh state for `rule`.
    pub(crate) fn new(rule: &Rule, config: &EngineConfig) -> Runtime {
        Runtime {
            state: KindState::for_rule(rule, key_limit(rule, config)),
            past: past_for(rule, config),
            alarms: std::collections::HashMap::new(),
            failures: 0,
            failing_key: None,
            failures_spread: false,
            disabled: false,
            last_key_report: None,
        }
    }

    /// The rule was reloaded and keeps this state: failures are forgotten, the rule is
    /// enabled, its (possibly new) key limit applies, and its kind sets up again.
    pub(crate) fn reloaded(&mut self, rule: &Rule, config: &EngineConfig) {
        self.reset_failures();
        self.disabled = false;
        if let Some(keys) = self.state.key_set_mut() {
            keys.set_limit(key_limit(rule, config));
        }
        self.state.redo_setup();
        let past = self.past.take();
        self.keep_past(past, rule, config);
    }

    /// Takes over `past` (the rule's past before a reload) as far as the new declaration
    /// keeps the same fields with the same span and resolution (see [`RulePast::reconcile`]).
    pub(crate) fn keep_past(&mut self, past: Option<Box<RulePast>>, rule: &Rule, config: &EngineConfig) {
        self.past = match past {
            Some(mut p) if !rule.past.is_empty() => {
                p.reconcile(Arc::clone(&rule.past), key_limit(rule, config));
                Some(p)
            }
            _ => past_for(rule, config),
        };
    }

    fn reset_failures(&mut self) {
        self.failures = 0;
        self.failing_key = None;
        self.failures_spread = false;
    }

    /// Counts consecutive failures (`key` names who failed); returns the fault to report
    /// when the rule is disabled now, after `max_failures` in a row across more than one key.
    #[inline]
    pub(crate) fn account(&mut self, rule: &Rule, faulted: bool, key: &str, max_failures: u32) -> Option<RuleFault> {
        if !faulted {
            self.reset_failures();
            return None;
        }
        self.failures += 1;
        match &self.failing_key {
            None => self.failing_key = Some(key.into()),
            Some(first) => self.failures_spread |= **first != *key,
        }
        if self.failures < max_failures || !self.failures_spread || self.disabled {
            return None;
        }
        self.disabled = true;
        Some(RuleFault {
            rule: rule.name.clone(),
            location: rule.origin.to_string(),
            message: format!("failed {} times in a row", self.failures),
            disabled: true,
        })
    }

    /// A report of keys refused or evicted, unless the last one went less than `interval`
    /// ms before `now` (then the counts add up until it may go).
    pub(crate) fn key_report(&mut self, rule: &Rule, now: i64, interval: i64) -> KeyReport {
        let Some(keys) = reported_keys(&mut self.state, &mut self.past) else { return KeyReport::Nothing };
        if keys.pending().is_none() {
            return KeyReport::Nothing;
        }
        let due = self.last_key_report.map_or(now, |t| t.saturating_add(interval));
        if now < due {
            return KeyReport::Later(due);
        }
        let (refused, evicted, since) = keys.take_counts();
        let limit = keys.limit();
        self.last_key_report = Some(now);
        KeyReport::Now(KeyLimitReport {
            rule: rule.name.clone(),
            max_keys: limit.max,
            on_full: limit.on_full,
            refused,
            evicted,
            since: Timestamp(since),
        })
    }
}

/// How many keys `rule` may track, and what a new key meets at the limit.
fn key_limit(rule: &Rule, config: &EngineConfig) -> KeyLimit {
    KeyLimit { max: rule.max_keys(config.max_keys_per_rule).max(1), on_full: rule.on_full() }
}

/// The keys whose limit is reported: the kind's, else (a filter's) its past's.
fn reported_keys<'a>(state: &'a mut KindState, past: &'a mut Option<Box<RulePast>>) -> Option<&'a mut dyn KeySet> {
    match state.key_set_mut() {
        Some(keys) => Some(keys),
        None => past.as_deref_mut().map(|p| &mut p.keys as &mut dyn KeySet),
    }
}

/// A fresh past for `rule`, if it declares one.
fn past_for(rule: &Rule, config: &EngineConfig) -> Option<Box<RulePast>> {
    (!rule.past.is_empty()).then(|| Box::new(RulePast::new(Arc::clone(&rule.past), key_limit(rule, config))))
}

/// How long the state of a removed rule is kept (10 minutes).
pub const RETIRED_GRACE_MS: i64 = 10 * 60 * 1000;

/// One piece of exported state.
pub(crate) type Exported = (Touched, Vec<u8>);

/// A removed rule's exported state (see [`crate::Engine::reload`]).
#[derive(Debug)]
pub(crate) struct Retired {
    /// It comes back only to a rule of the same name and kind.
    pub(crate) name: Arc<str>,
    pub(crate) kind: &'static str,
    pub(crate) saved: Vec<Exported>,
    /// Processing time of its removal; it is dropped [`RETIRED_GRACE_MS`] later.
    pub(crate) at: i64,
}
