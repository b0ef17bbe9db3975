//! What the caller does to a running engine between two steps: swap the rules or the
//! lookup tables, pause and resume absence detection, give devices a grace period after a
//! restart. Each keeps what state it can (see [`Engine::reload`]).

use crate::engine::Engine;
use crate::kinds;
use crate::output::{Outputs, Touched};
use crate::rule::{Rule, RuleSet};
use crate::runtime::{Exported, RETIRED_GRACE_MS, Retired, Runtime};
use crate::tables::Tables;
use crate::time::Timestamp;
use std::sync::Arc;

impl Engine {
    /// Replaces the lookup tables; heartbeat registries are re-read on the next step.
    pub fn set_tables(&mut self, tables: Tables) {
        self.tables = Arc::new(tables);
        for rt in &mut self.runtime {
            rt.state.redo_setup();
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
    /// - A rule's past (`past`) is kept, field by field, where the field keeps its span and
    ///   resolution; other fields start empty (and are wanted for seeding, see
    ///   [`Engine::past_wanted`]). It is kept even when the rule changes kind.
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
            let found = old.iter().position(|o| {
                o.as_ref().is_some_and(|(r, _)| r.name == rule.name && kinds::compatible(&r.kind, &rule.kind))
            });
            match found.and_then(|i| old[i].take().map(|o| (i, o))) {
                Some((i, (_, mut rt))) => {
                    mapping[i] = u32::try_from(new_idx).ok();
                    rt.reloaded(rule, &self.config);
                    runtime.push(rt);
                }
                None => {
                    let mut rt = Runtime::new(rule, &self.config);
                    // A rule that changed kind starts afresh, but keeps its past: it is not
                    // the kind's, and days of it are not lost to an unrelated edit.
                    let same_name = old.iter_mut().flatten().find(|(r, _)| r.name == rule.name);
                    let carried = match same_name {
                        Some((_, old_rt)) if old_rt.past.is_some() => {
                            rt.keep_past(old_rt.past.take(), rule, &self.config);
                            true
                        }
                        _ => false,
                    };
                    runtime.push(rt);
                    if let Some(pos) = self.retired.iter().position(|r| r.name == rule.name && r.kind == rule.kind()) {
                        let mut saved = self.retired.remove(pos).saved;
                        // The past carried over is newer than the retired one.
                        if carried {
                            saved.retain(|(t, _)| matches!(t, Touched::Rule { .. }));
                        }
                        revive.push(saved);
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
            let saved: Vec<Exported> = self
                .export_all()
                .into_iter()
                .filter(|(t, _)| matches!(t, Touched::Rule { .. } | Touched::Past { .. } | Touched::PastOpen { .. }))
                .collect();
            self.retired.push(Retired { name: rule.name.clone(), kind: rule.kind(), saved, at: now });
        }
        self.clock.remap(|idx| mapping.get(idx as usize).copied().flatten());
        self.event_timers.remap(|idx| mapping.get(idx as usize).copied().flatten());
        self.rules = rules;
        self.runtime = runtime;
        for saved in revive {
            for (what, bytes) in saved {
                if let Err(error) = self.import(&what, &bytes) {
                    tracing::warn!(state = ?what, %error, "Retired state not revived.");
                }
            }
        }
        self.release_orphans(now);
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
            if let Some((state, mut cx)) = self.rule_cx(idx, 0, out) {
                state.move_deadlines(&mut cx, shift);
            }
        }
    }
}
