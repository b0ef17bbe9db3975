//! The past inside rules: what a rule declares with `past` (a span and a resolution per
//! field), kept per key as a ring of buckets on event time, and asked with
//! `history(field, span)`, `history(field, span, offset)` or `history(field, span, offset, times)`.
//!
//! ```text
//! declare: past: #{ temperature: "7d by 1h" } ─▶ Rule::past: [PastSpec]
//! route, once the rule's key is known:
//!   context::enter_past: the key's KeyPast moves into the call context (a move, no copy)
//!   ─▶ KindState::on_event: closures call history(...) ─▶ KeyPast::history ─▶ #{count, avg, ...}
//!   ─▶ context::leave_past: moved back
//!   ─▶ Engine::fold_past: remember::reading(event, field) ─▶ FieldPast::place
//!        ─▶ Touched::PastOpen (each reading), Touched::Past (when a bucket closes)
//! agent, after load: Engine::past_wanted ─▶ roll-ups from its history log ─▶ Engine::seed_past
//! ```
//!
//! The current reading is folded in after the rule ran, so `history(...)` compares the
//! present with the past without itself. The engine never reads the disk: the past is what
//! it kept itself (saved and restored like any rule state), or what the agent hands in.
//!
//! - `ring`: `FieldPast`, one field's buckets (the open one in f64, closed ones in
//!   20-byte f32 buckets), and the bytes per key.
//! - `saved`: the two saved pieces per key: closed buckets (JSON text), open ones (raw bytes).

pub(crate) mod ring;
mod saved;

pub(crate) use ring::FieldPast;
pub use saved::PastError;

use crate::history::Rollup;
use crate::kinds::keys::{KeyLimit, Keyed, MAX_KEY_BYTES};
use rhai::Dynamic;
use std::sync::Arc;

/// Most buckets one field's past keeps (`span / every`).
pub const MAX_BUCKETS: i64 = 1_000;
/// Most fields one rule's `past` declares.
pub const MAX_FIELDS: usize = 8;
/// Readings larger than this in magnitude are not folded (counted as non-finite): a closed
/// bucket keeps f32 values, and the sum of squared deviations of such readings would not fit.
pub const MAX_READING: f64 = 1e15;

/// One field of a rule's `past`: `"7d by 1h"` is a span of 7 days in buckets of an hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastSpec {
    /// The field, read as history reads it (see `remember::reading`).
    pub field: Arc<str>,
    /// How far back the past goes, before the current bucket; a multiple of `every_ms`.
    pub span_ms: i64,
    /// Bucket width, ms; buckets are aligned to multiples of it since the epoch (UTC).
    pub every_ms: i64,
}

impl PastSpec {
    /// Closed buckets kept (before the current one): `span / every`.
    pub fn buckets(&self) -> usize {
        usize::try_from(self.span_ms / self.every_ms).unwrap_or(0).max(1)
    }

    /// As declared: `7d by 1h`.
    pub fn describe(&self) -> String {
        format!("{} by {}", ms_text(self.span_ms), ms_text(self.every_ms))
    }

    /// The same span and resolution (a reload that keeps them keeps the field's past).
    pub fn same_shape(&self, other: &PastSpec) -> bool {
        self.field == other.field && self.span_ms == other.span_ms && self.every_ms == other.every_ms
    }

    /// Checks an ask against what this field keeps; returns it in buckets.
    fn plan(&self, ask: Ask) -> Result<Plan, String> {
        let every = self.every_ms;
        let whole = |ms: i64, what: &str| -> Result<i64, String> {
            if ms % every != 0 {
                return Err(format!(
                    "history: the {what} {} is not a whole number of `{}` buckets (`past.{}` is {})",
                    ms_text(ms),
                    ms_text(every),
                    self.field,
                    self.describe()
                ));
            }
            Ok(ms / every)
        };
        let span = whole(ask.span_ms, "span")?;
        let offset = whole(ask.offset_ms, "offset")?;
        if ask.times < 1 {
            return Err(format!("history: `times` must be at least 1, not {}", ask.times));
        }
        if ask.times > 1 && offset < span {
            return Err(format!(
                "history: {} spans of {} every {} would overlap: the offset must be at least the span",
                ask.times,
                ms_text(ask.span_ms),
                ms_text(ask.offset_ms)
            ));
        }
        // Buckets back from the current one that the ask reaches, the current one being 0.
        let reach = offset.saturating_mul(ask.times).saturating_add(span - 1);
        if reach > self.buckets() as i64 {
            return Err(format!(
                "history: `{}` asked {} back, but `past.{}` is {}: at most {} back (the span plus the current bucket)",
                self.field,
                ms_text(reach.saturating_add(1).saturating_mul(every)),
                self.field,
                self.describe(),
                ms_text(self.span_ms + every)
            ));
        }
        Ok(Plan { span, offset, times: ask.times })
    }
}

/// Milliseconds as humantime text (`7days`, `1h`).
pub(crate) fn ms_text(ms: i64) -> String {
    let d = std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_duration(d).to_string()
}

/// What `history(...)` asks for: the span ending `offset` before the current bucket, and
/// `times` such spans, each a further `offset` back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ask {
    pub(crate) span_ms: i64,
    pub(crate) offset_ms: i64,
    pub(crate) times: i64,
}

/// An [`Ask`] in buckets.
#[derive(Debug, Clone, Copy)]
struct Plan {
    span: i64,
    offset: i64,
    times: i64,
}

thread_local! {
    /// The keys of what `history(...)` returns (see [`Summary::to_dynamic`]).
    static SUMMARY_MAP: rhai::Map = {
        // Inserted one by one: `collect` would bring in a sort of its own (code size).
        let mut m = rhai::Map::new();
        for k in ["count", "avg", "min", "max", "stddev"] {
            m.insert(k.into(), Dynamic::UNIT);
        }
        m
    };
}

/// Readings summed up in f64: count, mean, sum of squared deviations (Welford; merged with
/// Chan's formula), min, max.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    pub count: u64,
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// One reading.
    pub fn of(v: f64) -> Summary {
        Summary { count: 1, mean: v, m2: 0.0, min: v, max: v }
    }

    /// A history roll-up (what the agent seeds with).
    pub fn of_rollup(r: &Rollup) -> Summary {
        if r.count == 0 {
            return Summary::default();
        }
        let n = r.count as f64;
        Summary { count: r.count, mean: r.sum / n, m2: (r.sumsq - r.sum * r.sum / n).max(0.0), min: r.min, max: r.max }
    }

    /// Folds in one reading.
    pub fn fold(&mut self, v: f64) {
        self.merge(&Summary::of(v));
    }

    /// Folds in the readings of `o`.
    pub fn merge(&mut self, o: &Summary) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *o;
            return;
        }
        let (na, nb) = (self.count as f64, o.count as f64);
        let n = na + nb;
        let d = o.mean - self.mean;
        self.mean += d * nb / n;
        self.m2 += o.m2 + d * d * na * nb / n;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.count += o.count;
    }

    /// The sample standard deviation (n - 1), 0 for one reading; `None` for none.
    pub fn stddev(&self) -> Option<f64> {
        match self.count {
            0 => None,
            1 => Some(0.0),
            n => Some((self.m2 / (n - 1) as f64).max(0.0).sqrt()),
        }
    }

    /// The mean, `None` for no reading.
    pub fn avg(&self) -> Option<f64> {
        (self.count > 0).then_some(self.mean)
    }

    /// What `history(...)` returns: `#{count, avg, min, max, stddev}`, all but `count` `()`
    /// when there is no reading.
    pub(crate) fn to_dynamic(self) -> Dynamic {
        let f = |x: Option<f64>| x.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT);
        let some = self.count > 0;
        // A template's keys cloned, then its values set in place (as Rhai builds a map
        // literal): a fifth of the instructions of inserting five keys, with every call.
        let mut m = SUMMARY_MAP.with(Clone::clone);
        for (k, v) in m.iter_mut() {
            *v = match k.as_str() {
                "count" => Dynamic::from_int(i64::try_from(self.count).unwrap_or(i64::MAX)),
                "avg" => f(self.avg()),
                "min" => f(some.then_some(self.min)),
                "max" => f(some.then_some(self.max)),
                _ => f(self.stddev()),
            };
        }
        Dynamic::from_map(m)
    }
}

/// A rule's field whose past started empty at this load or reload (a new rule, a new
/// field, a changed span or resolution): the agent may seed it from the history it keeps
/// ([`crate::Engine::past_wanted`], [`crate::Engine::seed_past`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastWant {
    pub rule: Arc<str>,
    pub field: Arc<str>,
    pub span_ms: i64,
    pub every_ms: i64,
}

/// What one [`crate::Engine::seed_past`] did with the roll-ups it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seeded {
    /// Merged into a bucket.
    pub merged: usize,
    /// Left out: not aligned to their period, outside the span kept (or in the future),
    /// in a bucket that already holds readings of the rule's own, or not finite.
    pub ignored: usize,
}

/// Seeding that could not be done at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedError {
    #[error("no rule named `{0}`")]
    NoRule(String),
    #[error("rule `{rule}` keeps no past of `{field}`")]
    NoField { rule: String, field: String },
    #[error("roll-ups of {period_ms} ms do not divide the {every_ms} ms buckets of `{field}`")]
    Period { field: String, period_ms: i64, every_ms: i64 },
    #[error("rule `{rule}` refused the key `{key}` (its key limit)")]
    Refused { rule: String, key: String },
}

/// Merges history roll-ups (`(start, roll-up)`, each of `period_ms`, a divisor of the
/// bucket width) into `f`, at processing time `now`. A bucket that already holds readings
/// is left alone (what the rule saw itself wins, and seeding twice adds nothing); the
/// roll-ups of one bucket must come in one call.
pub(crate) fn seed(f: &mut FieldPast, spec: &PastSpec, period_ms: i64, rollups: &[(i64, Rollup)], now: i64) -> Seeded {
    let n = spec.buckets();
    let current = now.div_euclid(spec.every_ms);
    let mut buckets: std::collections::BTreeMap<i64, (Summary, usize)> = std::collections::BTreeMap::new();
    let mut done = Seeded::default();
    for (start, r) in rollups {
        let j = start.div_euclid(spec.every_ms);
        let sane = [r.sum, r.sumsq, r.min, r.max].iter().all(|v| v.is_finite())
            && r.min.abs() <= MAX_READING
            && r.max.abs() <= MAX_READING
            && r.min <= r.max;
        let fits = start.rem_euclid(period_ms) == 0 && r.count > 0 && sane && j <= current && j >= current - n as i64;
        if !fits || f.has(n, j) {
            done.ignored += 1;
            continue;
        }
        let b = buckets.entry(j).or_default();
        b.0.merge(&Summary::of_rollup(r));
        b.1 += 1;
    }
    for (j, (s, k)) in buckets {
        match f.place(n, j, &s) {
            Ok(_) => done.merged += k,
            Err(_) => done.ignored += k,
        }
    }
    done
}

/// One key's past: one [`FieldPast`] per declared field, in the order of the rule's specs.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct KeyPast {
    /// Index for index with the rule's `past`; shorter (or empty) means nothing yet.
    pub(crate) fields: Vec<FieldPast>,
}

impl KeyPast {
    pub(crate) fn new(fields: usize) -> KeyPast {
        KeyPast { fields: vec![FieldPast::default(); fields] }
    }

    /// The field at `idx`, created (with those before it) if need be.
    pub(crate) fn field_mut(&mut self, idx: usize) -> &mut FieldPast {
        if self.fields.len() <= idx {
            self.fields.resize_with(idx + 1, FieldPast::default);
        }
        &mut self.fields[idx]
    }

    /// `history(field, ...)` at event time `at`: the readings of the asked spans. An unknown
    /// field, or an ask the declaration cannot answer, is an error (the rule's fault).
    pub(crate) fn history(&self, specs: &[PastSpec], field: &str, ask: Ask, at: i64) -> Result<Summary, String> {
        let Some(idx) = specs.iter().position(|s| &*s.field == field) else {
            let kept: Vec<&str> = specs.iter().map(|s| &*s.field).collect();
            return Err(format!("history: `past` keeps no `{field}` (it keeps: {})", kept.join(", ")));
        };
        let spec = &specs[idx];
        let plan = spec.plan(ask)?;
        let Some(f) = self.fields.get(idx) else { return Ok(Summary::default()) };
        let current = at.div_euclid(spec.every_ms);
        // The 2-argument form is offset 0, once: the span up to the current bucket.
        let ranges = (1..=plan.times).map(|k| {
            let end = current - plan.offset * k;
            (end - plan.span + 1, end)
        });
        Ok(f.summarize(spec.buckets(), ranges))
    }
}

/// A rule's past: per key, within the rule's key limit.
#[derive(Debug)]
pub(crate) struct RulePast {
    /// The declaration each key's fields follow, index for index (reconciled on reload).
    pub(crate) specs: Arc<[PastSpec]>,
    /// Each key's past. Bounded like the kind's keys (same `max_keys`, same `on_full`): a
    /// flood of junk keys cannot grow it, whatever the kind keeps.
    pub(crate) keys: Keyed<KeyPast>,
    /// Per field: its past started empty at this load or reload (a new rule, a new field,
    /// a new span or resolution), so the agent may seed it (see `Engine::past_wanted`).
    /// Cleared when state of the field is imported or the agent says it seeded it.
    pub(crate) wanted: Vec<bool>,
}

impl RulePast {
    pub(crate) fn new(specs: Arc<[PastSpec]>, limit: KeyLimit) -> RulePast {
        let wanted = vec![true; specs.len()];
        RulePast { specs, keys: Keyed::new(limit), wanted }
    }

    /// The rule was reloaded with `specs`: fields whose span and resolution stay keep their
    /// past (and whether it is wanted); others start empty, wanted.
    pub(crate) fn reconcile(&mut self, specs: Arc<[PastSpec]>, limit: KeyLimit) {
        self.keys.set_limit(limit);
        let from: Vec<Option<usize>> =
            specs.iter().map(|new| self.specs.iter().position(|old| old.same_shape(new))).collect();
        if from.iter().enumerate().all(|(i, f)| *f == Some(i)) && specs.len() == self.specs.len() {
            self.specs = specs;
            return;
        }
        self.wanted = from.iter().map(|f| f.is_none_or(|j| self.wanted.get(j).copied().unwrap_or(true))).collect();
        let names: Vec<Arc<str>> = self.keys.keys().cloned().collect();
        for key in names {
            if let Some(kp) = self.keys.get_mut(&key) {
                let mut old = std::mem::take(&mut kp.fields);
                kp.fields = from
                    .iter()
                    .map(|f| f.and_then(|j| old.get_mut(j).map(std::mem::take)).unwrap_or_default())
                    .collect();
            }
        }
        self.specs = specs;
    }

    /// The entry of `key`, created when new within the key limit (evicted keys are appended
    /// to `evicted`); a sighting of the key. `None`: refused (the rule is full and refuses,
    /// or the key is too long).
    pub(crate) fn entry(
        &mut self,
        key: &str,
        now: i64,
        evicted: &mut Vec<Arc<str>>,
    ) -> Option<(Arc<str>, &mut KeyPast)> {
        if !self.keys.contains_key(key) {
            if key.len() > MAX_KEY_BYTES {
                self.keys.count_refused(now);
                return None;
            }
            if !self.keys.make_room(&|_| false, evicted, now) {
                return None;
            }
            self.keys.insert(Arc::from(key), KeyPast::new(self.specs.len()));
        }
        let k = self.keys.saw(key)?;
        let v = self.keys.get_mut(key)?;
        Some((k, v))
    }

    /// The index of `field` in the declaration.
    pub(crate) fn field_index(&self, field: &str) -> Option<usize> {
        self.specs.iter().position(|s| &*s.field == field)
    }

    /// Heap and inline bytes of one key's past, an estimate: its fields and rings, and the
    /// key with its map entry (allocator overhead aside).
    pub(crate) fn key_bytes(key: &str, kp: &KeyPast) -> usize {
        size_of::<KeyPast>()
            + kp.fields.capacity() * size_of::<FieldPast>()
            + kp.fields.iter().map(FieldPast::heap_bytes).sum::<usize>()
            + key.len()
            + 2 * size_of::<usize>()
            + size_of::<Arc<str>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const D: i64 = 24 * H;

    fn spec(span_ms: i64, every_ms: i64) -> PastSpec {
        PastSpec { field: "t".into(), span_ms, every_ms }
    }

    fn ask(span_ms: i64, offset_ms: i64, times: i64) -> Ask {
        Ask { span_ms, offset_ms, times }
    }

    #[test]
    fn summaries_merge_as_if_folded_one_by_one() {
        let vs = [21.5, 22.0, 19.25, 30.0, 21.5, -4.0];
        let mut one = Summary::default();
        vs.iter().for_each(|v| one.fold(*v));
        let mut a = Summary::default();
        vs[..2].iter().for_each(|v| a.fold(*v));
        let mut b = Summary::default();
        vs[2..].iter().for_each(|v| b.fold(*v));
        a.merge(&b);
        let mean = vs.iter().sum::<f64>() / 6.0;
        let var = vs.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 5.0;
        for s in [one, a] {
            assert_eq!((s.count, s.min, s.max), (6, -4.0, 30.0));
            assert!((s.mean - mean).abs() < 1e-12);
            assert!((s.stddev().unwrap_or(f64::NAN) - var.sqrt()).abs() < 1e-12);
        }
        let mut r = Rollup::of(vs[0]);
        vs[1..].iter().for_each(|v| r.fold(*v));
        let from = Summary::of_rollup(&r);
        assert_eq!((from.count, from.min, from.max), (6, -4.0, 30.0));
        assert!((from.stddev().unwrap_or(f64::NAN) - var.sqrt()).abs() < 1e-9);
        assert_eq!(Summary::default().stddev(), None);
        assert_eq!(Summary::of(3.0).stddev(), Some(0.0));
    }

    #[test]
    fn asks_are_checked_against_the_declaration() {
        let s = spec(7 * D, H);
        assert!(s.plan(ask(7 * D, 0, 1)).is_ok());
        assert!(s.plan(ask(H, 7 * D, 1)).is_ok(), "the same hour a week ago: 168 back");
        assert!(s.plan(ask(H, D, 7)).is_ok(), "the same hour on each of the last 7 days");
        assert!(s.plan(ask(7 * D + H, 0, 1)).is_ok(), "the whole span and the current bucket");
        let too_far = s.plan(ask(H, D, 8)).expect_err("reaches 8 days back");
        assert!(too_far.contains("at most 7days 1h back"), "{too_far}");
        assert!(s.plan(ask(8 * D, 0, 1)).is_err());
        let not_whole = s.plan(ask(30 * 60_000, 0, 1)).expect_err("half a bucket");
        assert!(not_whole.contains("not a whole number of `1h` buckets"), "{not_whole}");
        assert!(s.plan(ask(2 * H, H, 3)).expect_err("overlapping").contains("overlap"));
        assert!(s.plan(ask(H, D, 0)).is_err());
    }

    #[test]
    fn unknown_fields_are_named_with_what_is_kept() {
        let specs = [spec(D, H)];
        let e = KeyPast::default().history(&specs, "humidity", ask(H, 0, 1), 0).expect_err("not declared");
        assert_eq!(e, "history: `past` keeps no `humidity` (it keeps: t)");
        let none = KeyPast::default().history(&specs, "t", ask(H, 0, 1), 0);
        assert_eq!(none.map(|s| s.count), Ok(0));
    }

    #[test]
    fn a_reload_keeps_fields_of_the_same_shape_only() {
        let limit = KeyLimit { max: 10, on_full: crate::rule::OnFull::EvictOldest };
        let a = PastSpec { field: "a".into(), span_ms: D, every_ms: H };
        let b = PastSpec { field: "b".into(), span_ms: D, every_ms: H };
        let mut p = RulePast::new(vec![a.clone(), b.clone()].into(), limit);
        p.wanted = vec![false, false];
        let mut evicted = Vec::new();
        let (_, kp) = p.entry("k", 0, &mut evicted).expect("room");
        kp.field_mut(0).place(24, 5, &Summary::of(1.0)).expect("placed");
        kp.field_mut(1).place(24, 5, &Summary::of(2.0)).expect("placed");
        // `b` gets a new resolution, `c` is new, and the order changes.
        let b2 = PastSpec { every_ms: 2 * H, ..b };
        let c = PastSpec { field: "c".into(), span_ms: D, every_ms: H };
        p.reconcile(vec![c, b2, a].into(), limit);
        assert_eq!(p.wanted, [true, true, false]);
        let kp = p.keys.get("k").expect("kept");
        let count = |i: usize| kp.fields[i].summarize(24, [(0, 10)]).count;
        assert_eq!((count(0), count(1), count(2)), (0, 0, 1));
    }
}
