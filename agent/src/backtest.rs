//! `edgewatch backtest`: a candidate rule set and a baseline over the same inputs, side by
//! side, under virtual time; what each would have emitted, and where they differ.
//!
//! ```text
//! inputs (journal segments or a recording, streamed) ─▶ replay::feed ─▶ baseline engine  ─┐
//!                                                    └─▶ replay::feed ─▶ candidate engine ─┴▶ Compare ─▶ Report
//! ```
//!
//! Both engines start from the same state (empty, or a state export) and never touch the
//! running agent's: they live in this process's memory, and the journal is only read. Each
//! input goes through both before the next, and their events of that input are matched per
//! rule (same key, time and data): what is left unmatched is a difference. Memory is the two
//! engines' plus a bounded tally per rule, whatever the number of inputs.

use crate::replay::{Input, feed};
use edgewatch_engine::{Composite, Engine, Outputs};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Keys listed per rule; past this, differing keys are only counted.
pub const MAX_KEYS: usize = 1000;

/// Which rule set an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Baseline,
    Candidate,
}

/// An event one side emitted and the other did not.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub side: Side,
    pub t: i64,
    pub key: String,
    pub data: Value,
}

/// A key whose events differ, with how many of each side's were unmatched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeyDiff {
    pub key: String,
    pub only_baseline: u64,
    pub only_candidate: u64,
}

/// What one rule did on each side.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RuleReport {
    pub rule: String,
    /// `same`, `differs`, `added` (candidate only) or `removed` (baseline only).
    pub status: &'static str,
    pub baseline: u64,
    pub candidate: u64,
    /// Events emitted by both, identical.
    pub same: u64,
    pub only_baseline: u64,
    pub only_candidate: u64,
    pub faults_baseline: u64,
    pub faults_candidate: u64,
    /// The first differing events, in input order (at most `show`).
    pub first_differences: Vec<Difference>,
    /// The keys that differ, most differences first (at most [`MAX_KEYS`]).
    pub keys: Vec<KeyDiff>,
    /// Differing keys beyond [`MAX_KEYS`], counted only.
    pub more_keys: u64,
}

/// The whole comparison.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Messages run (clock steps and the sensor link's ups and downs are not counted).
    pub inputs: u64,
    /// Arrival times of the first and last message.
    pub first: Option<i64>,
    pub last: Option<i64>,
    pub identical: bool,
    pub rules: Vec<RuleReport>,
}

#[derive(Debug, Default)]
struct Tally {
    baseline: u64,
    candidate: u64,
    same: u64,
    only: [u64; 2],
    faults: [u64; 2],
    first: Vec<Difference>,
    keys: HashMap<String, [u64; 2]>,
    more_keys: u64,
}

/// Two engines over the same inputs, and the tally of what they emitted.
#[derive(Debug)]
pub struct Backtest {
    baseline: Engine,
    candidate: Engine,
    outs: [Outputs; 2],
    tallies: BTreeMap<Arc<str>, Tally>,
    /// Rule names of each side, for `added` and `removed`.
    names: [Vec<Arc<str>>; 2],
    show: usize,
    inputs: u64,
    first: Option<i64>,
    last: Option<i64>,
}

/// What makes two events the same: key, time and data.
fn same(a: &Composite, b: &Composite) -> bool {
    a.key == b.key && a.time == b.time && a.data_json() == b.data_json()
}

impl Backtest {
    /// `show`: how many differing events to keep per rule.
    pub fn new(baseline: Engine, candidate: Engine, show: usize) -> Backtest {
        let names = [&baseline, &candidate].map(|e| e.rules().iter().map(|r| r.name.clone()).collect());
        Backtest {
            baseline,
            candidate,
            outs: Default::default(),
            tallies: BTreeMap::new(),
            names,
            show,
            inputs: 0,
            first: None,
            last: None,
        }
    }

    /// Runs one input at `t` through both engines and compares what they emitted.
    pub fn step(&mut self, t: i64, input: Input<'_>) {
        if matches!(input, Input::Message { .. }) {
            self.inputs += 1;
            self.first.get_or_insert(t);
            self.last = Some(t);
        }
        let [b, c] = &mut self.outs;
        feed(&mut self.baseline, t, input, b);
        feed(&mut self.candidate, t, input, c);
        self.compare();
    }

    fn compare(&mut self) {
        let [b, c] = &self.outs;
        for (side, out) in [b, c].into_iter().enumerate() {
            for f in &out.faults {
                self.tallies.entry(f.rule.clone()).or_default().faults[side] += 1;
            }
        }
        let mut matched = vec![false; c.events.len()];
        let mut unmatched_b = Vec::new();
        for eb in &b.events {
            let tally = self.tallies.entry(eb.rule.clone()).or_default();
            tally.baseline += 1;
            let twin =
                c.events.iter().enumerate().position(|(i, ec)| !matched[i] && ec.rule == eb.rule && same(eb, ec));
            match twin {
                Some(i) => {
                    matched[i] = true;
                    tally.same += 1;
                }
                None => unmatched_b.push(eb),
            }
        }
        for ec in &c.events {
            self.tallies.entry(ec.rule.clone()).or_default().candidate += 1;
        }
        let unmatched_c = c.events.iter().enumerate().filter(|(i, _)| !matched[*i]).map(|(_, e)| e);
        let diffs =
            unmatched_b.into_iter().map(|e| (Side::Baseline, e)).chain(unmatched_c.map(|e| (Side::Candidate, e)));
        for (side, e) in diffs {
            let tally = self.tallies.entry(e.rule.clone()).or_default();
            let s = side as usize;
            tally.only[s] += 1;
            if tally.first.len() < self.show {
                tally.first.push(Difference { side, t: e.time.millis(), key: e.key.to_string(), data: e.data_json() });
            }
            let room = tally.keys.len() < MAX_KEYS;
            match tally.keys.get_mut(&*e.key) {
                Some(k) => k[s] += 1,
                None if room => {
                    let mut k = [0; 2];
                    k[s] = 1;
                    tally.keys.insert(e.key.to_string(), k);
                }
                None => tally.more_keys += 1,
            }
        }
    }

    /// Moves both clocks on to `t` (the end of the range: timers due by then fire) and
    /// returns the report.
    pub fn finish(mut self, t: Option<i64>) -> Report {
        if let Some(t) = t {
            self.step(t, Input::Clock);
        }
        let mut rules: Vec<Arc<str>> = self.names.iter().flatten().cloned().collect();
        rules.extend(self.tallies.keys().cloned());
        rules.sort();
        rules.dedup();
        let mut report =
            Report { inputs: self.inputs, first: self.first, last: self.last, identical: true, rules: vec![] };
        for name in rules {
            let t = self.tallies.remove(&name).unwrap_or_default();
            let (in_b, in_c) = (self.names[0].contains(&name), self.names[1].contains(&name));
            let status = match (in_b, in_c) {
                (true, false) => "removed",
                (false, true) => "added",
                _ if t.only == [0, 0] => "same",
                _ => "differs",
            };
            report.identical &= status == "same";
            let mut keys: Vec<KeyDiff> =
                t.keys.into_iter().map(|(key, [b, c])| KeyDiff { key, only_baseline: b, only_candidate: c }).collect();
            keys.sort_by(|a, b| {
                (b.only_baseline + b.only_candidate).cmp(&(a.only_baseline + a.only_candidate)).then(a.key.cmp(&b.key))
            });
            report.rules.push(RuleReport {
                rule: name.to_string(),
                status,
                baseline: t.baseline,
                candidate: t.candidate,
                same: t.same,
                only_baseline: t.only[0],
                only_candidate: t.only[1],
                faults_baseline: t.faults[0],
                faults_candidate: t.faults[1],
                first_differences: t.first,
                keys,
                more_keys: t.more_keys,
            });
        }
        report
    }
}

/// Runs the journal's inputs of `range` through `bt`, each decoded as the agent decoded it
/// (the subscription's format, `limits`), then moves the clocks on to the range's end.
///
/// Sparkplug B messages are read against sessions that start empty at `range`'s start: data
/// from a node whose birth is before the range is refused (`sparkplug_birth`), on both sides.
pub fn run_journal(
    mut bt: Backtest,
    dir: &std::path::Path,
    range: (i64, i64),
    (limits, sparkplug): (&crate::decode::DecodeLimits, &crate::sparkplug::Limits),
) -> Result<(Report, crate::journal::ReadReport), crate::journal::JournalError> {
    use crate::journal::Entry;
    let mut reader = crate::replay::Reader::new(*sparkplug);
    let read = crate::journal::read(dir, range, |entry| match entry {
        Entry::Message { t, format: crate::decode::Format::Sparkplug, topic, payload } => {
            reader.sparkplug(t, topic, payload, |input| bt.step(t, input));
        }
        Entry::Message { t, format, topic, payload } => {
            let value = crate::decode::decode_with(format, payload, limits).map_err(|e| e.reason().to_owned());
            bt.step(t, Input::Message { topic, raw: payload, value: &value });
        }
        Entry::LinkDown { t } => bt.step(t, Input::LinkDown),
        Entry::LinkUp { t } => bt.step(t, Input::LinkUp),
        // The event log's records: never in the input journal.
        Entry::Event { .. } | Entry::Published { .. } | Entry::Acked { .. } => {}
    })?;
    Ok((bt.finish(Some(range.1)), read))
}

impl Report {
    /// The report for people: a row per rule, then the first differences.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let when = |t: Option<i64>| t.map_or("-".to_owned(), |t| edgewatch_engine::Timestamp(t).to_rfc3339());
        let mut out = format!("{} inputs, {} .. {}\n", self.inputs, when(self.first), when(self.last));
        let width = self.rules.iter().map(|r| r.rule.len()).max().unwrap_or(4).max(4);
        let _ = writeln!(
            out,
            "{:width$}  {:>8}  {:>8}  {:>9}  {:>8}  {:>8}  {:>8}  {:>9}  keys differing",
            "rule", "status", "baseline", "candidate", "same", "-only", "+only", "faults"
        );
        for r in &self.rules {
            let mut keys: Vec<&str> = r.keys.iter().take(5).map(|k| k.key.as_str()).collect();
            let more = r.keys.len().saturating_sub(5) as u64 + r.more_keys;
            let more = if more > 0 { format!(" (+{more})") } else { String::new() };
            if keys.is_empty() {
                keys.push("-");
            }
            let _ = writeln!(
                out,
                "{:width$}  {:>8}  {:>8}  {:>9}  {:>8}  {:>8}  {:>8}  {:>9}  {}{more}",
                r.rule,
                r.status,
                r.baseline,
                r.candidate,
                r.same,
                r.only_baseline,
                r.only_candidate,
                format!("{}/{}", r.faults_baseline, r.faults_candidate),
                keys.join(", ")
            );
        }
        let differing: Vec<&RuleReport> = self.rules.iter().filter(|r| !r.first_differences.is_empty()).collect();
        if !differing.is_empty() {
            out.push_str("\nfirst differences (- baseline only, + candidate only):\n");
            for r in differing {
                for d in &r.first_differences {
                    let sign = if d.side == Side::Baseline { '-' } else { '+' };
                    let _ = writeln!(out, "{sign} {}  {}  {}  {}", when(Some(d.t)), r.rule, d.key, d.data);
                }
            }
        }
        out.push_str(if self.identical { "\nno difference\n" } else { "\nthe candidate differs\n" });
        out
    }
}
