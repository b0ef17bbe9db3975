//! The engine's side of a rule's past (see [`crate::past`]): folding readings in, the saved
//! pieces, and seeding from the agent's history.
//!
//! ```text
//! route, after the rule ran on the event for its key ─▶ Engine::fold_past
//!   ─▶ reading(event, field) per declared field ─▶ FieldPast::place
//!   ─▶ Touched::PastOpen (always), Touched::Past (a bucket closed); skips counted per rule
//! persist ─▶ export_past / import_past (restoring a field means it is not wanted)
//! agent, after load and import, before events:
//!   Engine::past_wanted ─▶ roll-ups of its history log ─▶ Engine::seed_past ─▶ Engine::past_seeded
//! ```
//!
//! Seeding keeps the engine pure: the agent reads its disk and passes roll-ups in; the
//! engine only merges them into buckets (at processing time `now`, an argument).

use crate::engine::Engine;
use crate::event::Event;
use crate::history::{Rollup, Skip};
use crate::output::{Outputs, Touched};
use crate::past::{self, FieldPast, KeyPast, MAX_FIELDS, MAX_READING, PastWant, SeedError, Seeded, Summary};
use crate::remember::reading;
use crate::time::Timestamp;
use std::sync::Arc;

impl Engine {
    /// Folds this event's readings into rule `idx`'s past for `key`, after the rule ran on
    /// it (so its closures saw the past without the present).
    pub(crate) fn fold_past(&mut self, idx: usize, key: &str, event: &Event, now: i64, out: &mut Outputs) {
        let Some(rule) = self.rules.as_slice().get(idx) else { return };
        let Some(rt) = self.runtime.get_mut(idx) else { return };
        // A rule without per-key state of its kind reports its past's key limit instead.
        let counts_keys = rt.state.key_set().is_none();
        let Some(past) = rt.past.as_deref_mut() else { return };
        // Readings first: an event with none of the fields creates no key.
        let mut readings = [None; MAX_FIELDS];
        for (slot, spec) in readings.iter_mut().zip(past.specs.iter()) {
            match reading(event, &spec.field) {
                Ok(v) if v.is_finite() && v.abs() <= MAX_READING => *slot = Some(v),
                Ok(_) => out.history_skipped.push((rule.name.clone(), Skip::NonFinite)),
                Err(skip) => out.history_skipped.push((rule.name.clone(), skip)),
            }
        }
        if readings.iter().all(Option::is_none) {
            return;
        }
        let specs = Arc::clone(&past.specs);
        let mut evicted = Vec::new();
        let entry = past.entry(key, now, &mut evicted);
        for gone in evicted {
            out.keys_evicted += usize::from(counts_keys);
            out.touched.push(Touched::Past { rule: rule.name.clone(), key: Arc::clone(&gone) });
            out.touched.push(Touched::PastOpen { rule: rule.name.clone(), key: gone });
        }
        let Some((key, kp)) = entry else {
            out.keys_refused += usize::from(counts_keys);
            return;
        };
        let time = event.time.millis();
        let mut closed = false;
        let mut placed = false;
        for (i, (spec, v)) in specs.iter().zip(readings).enumerate() {
            let Some(v) = v else { continue };
            match kp.field_mut(i).place(spec.buckets(), time.div_euclid(spec.every_ms), &Summary::of(v)) {
                Ok(ring) => (closed, placed) = (closed | ring, true),
                Err(_) => out.history_skipped.push((rule.name.clone(), Skip::OutOfRange)),
            }
        }
        if closed {
            out.touched.push(Touched::Past { rule: rule.name.clone(), key: Arc::clone(&key) });
        }
        if placed {
            out.touched.push(Touched::PastOpen { rule: rule.name.clone(), key });
        }
    }

    /// A saved piece of `rule`'s past for `key`: its closed buckets, or its open ones.
    /// `None`: nothing of that (delete it).
    pub(crate) fn export_past(&self, rule: &str, key: &str, closed: bool) -> Option<Vec<u8>> {
        let idx = self.rules.iter().position(|r| &*r.name == rule)?;
        let past = self.runtime.get(idx)?.past.as_deref()?;
        let kp = past.keys.get(key)?;
        if closed { kp.save_closed(&past.specs) } else { kp.save_open(&past.specs) }
    }

    /// Every saved piece of every rule's past, for `export_all`.
    pub(crate) fn past_pieces(&self) -> Vec<Touched> {
        let mut all = Vec::new();
        for (rule, rt) in self.rules.iter().zip(&self.runtime) {
            let Some(past) = rt.past.as_deref() else { continue };
            for key in past.keys.keys() {
                all.push(Touched::Past { rule: rule.name.clone(), key: Arc::clone(key) });
                all.push(Touched::PastOpen { rule: rule.name.clone(), key: Arc::clone(key) });
            }
        }
        all
    }

    /// Restores a piece saved by [`Engine::export_past`]. Fields whose declaration changed
    /// since are dropped; the fields restored are no longer wanted for seeding.
    pub(crate) fn import_past(&mut self, rule: &str, key: &Arc<str>, closed: bool, bytes: &[u8]) -> Result<(), String> {
        let idx = self.rules.iter().position(|r| &*r.name == rule).ok_or("no such rule")?;
        let past = self.runtime[idx].past.as_deref_mut().ok_or("the rule declares no `past`")?;
        let specs = Arc::clone(&past.specs);
        let mut kp = past.keys.get_mut(key).map(std::mem::take).unwrap_or_else(|| KeyPast::new(specs.len()));
        let restored = if closed { kp.restore_closed(&specs, bytes) } else { kp.restore_open(&specs, bytes) };
        let any = restored.as_ref().is_ok_and(|r| !r.is_empty());
        for &i in restored.as_deref().unwrap_or_default() {
            if let Some(w) = past.wanted.get_mut(i) {
                *w = false;
            }
        }
        match past.keys.get_mut(key) {
            Some(slot) => *slot = kp,
            // Restored state is kept whatever the limit, as the kinds' is.
            None if any => past.keys.insert(Arc::clone(key), kp),
            None => {}
        }
        restored.map(|_| ()).map_err(|e| e.to_string())
    }

    /// The rules' fields whose past started empty at this load or reload, and that no
    /// restored state or seeding has filled since: what the agent may seed.
    pub fn past_wanted(&self) -> Vec<PastWant> {
        let mut wants = Vec::new();
        for (rule, rt) in self.rules.iter().zip(&self.runtime) {
            let Some(past) = rt.past.as_deref() else { continue };
            for (spec, _) in past.specs.iter().zip(&past.wanted).filter(|(_, w)| **w) {
                wants.push(PastWant {
                    rule: rule.name.clone(),
                    field: Arc::clone(&spec.field),
                    span_ms: spec.span_ms,
                    every_ms: spec.every_ms,
                });
            }
        }
        wants
    }

    /// The agent seeded (or will not seed) `rule`'s `field`: no longer wanted.
    pub fn past_seeded(&mut self, rule: &str, field: &str) {
        let Some(idx) = self.rules.iter().position(|r| &*r.name == rule) else { return };
        let Some(past) = self.runtime[idx].past.as_deref_mut() else { return };
        if let Some(i) = past.field_index(field) {
            past.wanted[i] = false;
        }
    }

    /// Seeds `rule`'s past of `field` for `key` from history roll-ups, each `(start, roll-up)`
    /// of `period_ms` (which must divide the field's bucket width: fine roll-ups merge into
    /// a coarser bucket), at processing time `now`. Roll-ups not aligned to their period,
    /// outside the span kept, or in a bucket that already holds readings are ignored (and
    /// counted); give all roll-ups of a key and field in one call. The key is created
    /// within the rule's key limit if something is merged. Changed state is named in
    /// `out.touched`.
    #[allow(clippy::too_many_arguments)]
    pub fn seed_past(
        &mut self,
        rule: &str,
        key: &str,
        field: &str,
        period_ms: i64,
        rollups: &[(i64, Rollup)],
        now: Timestamp,
        out: &mut Outputs,
    ) -> Result<Seeded, SeedError> {
        let idx = self.rules.iter().position(|r| &*r.name == rule).ok_or_else(|| SeedError::NoRule(rule.into()))?;
        let name = self.rules.as_slice()[idx].name.clone();
        let rt = &mut self.runtime[idx];
        let counts_keys = rt.state.key_set().is_none();
        let no_field = || SeedError::NoField { rule: rule.into(), field: field.into() };
        let past = rt.past.as_deref_mut().ok_or_else(no_field)?;
        let fi = past.field_index(field).ok_or_else(no_field)?;
        let spec = past.specs[fi].clone();
        if period_ms <= 0 || spec.every_ms % period_ms != 0 {
            return Err(SeedError::Period { field: field.into(), period_ms, every_ms: spec.every_ms });
        }
        let now = now.millis();
        let seeded = match past.keys.get_mut(key) {
            Some(kp) => past::seed(kp.field_mut(fi), &spec, period_ms, rollups, now),
            None => {
                // Into a field of its own first, so a seed that merges nothing adds no key.
                let mut f = FieldPast::default();
                let seeded = past::seed(&mut f, &spec, period_ms, rollups, now);
                if seeded.merged > 0 {
                    let mut evicted = Vec::new();
                    let entry = past.entry(key, now, &mut evicted);
                    for gone in evicted {
                        out.keys_evicted += usize::from(counts_keys);
                        out.touched.push(Touched::Past { rule: name.clone(), key: Arc::clone(&gone) });
                        out.touched.push(Touched::PastOpen { rule: name.clone(), key: gone });
                    }
                    let Some((_, kp)) = entry else {
                        out.keys_refused += usize::from(counts_keys);
                        return Err(SeedError::Refused { rule: rule.into(), key: key.into() });
                    };
                    *kp.field_mut(fi) = f;
                }
                seeded
            }
        };
        if seeded.merged > 0 {
            out.touched.push(Touched::Past { rule: name.clone(), key: key.into() });
            out.touched.push(Touched::PastOpen { rule: name, key: key.into() });
        }
        Ok(seeded)
    }

    /// An estimate of the bytes `rule`'s past holds for `key` (see the `past` module: about 3.5 KB for "7d by 1h").
    pub fn past_bytes(&self, rule: &str, key: &str) -> Option<usize> {
        let idx = self.rules.iter().position(|r| &*r.name == rule)?;
        let past = self.runtime.get(idx)?.past.as_deref()?;
        past.keys.get(key).map(|kp| past::RulePast::key_bytes(key, kp))
    }
}
