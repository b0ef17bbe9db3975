//! Compiled rules and the rule set the engine runs.

use crate::detect::anomaly::Params;
use crate::func::Func;
use crate::past::PastSpec;
use crate::topic::TopicPattern;
use rhai::{AST, Dynamic};
use std::fmt;
use std::sync::Arc;

/// Where a rule was declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The rule file, as the loader named it.
    pub file: Arc<str>,
    /// Line of the `rule(...)` call.
    pub line: usize,
    /// Column of the `rule(...)` call.
    pub col: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// What a rule does with a new key when it already tracks its maximum (`on_full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnFull {
    /// The new key is not tracked (its events are ignored by this rule), and counted: the
    /// keys already tracked are kept. The default of heartbeat rules, whose keys are the
    /// fleet being watched: the least recently seen device is exactly the one that went
    /// silent, so evicting it would hide the absence the rule exists to report.
    Refuse,
    /// The key seen least recently is forgotten to make room, and counted. The default of
    /// every other kind: a source that invents a new id per message cycles through its
    /// own junk keys while devices that keep reporting stay, and nothing is locked out for
    /// good once the junk stops.
    EvictOldest,
}

impl OnFull {
    /// As written in a rule: `"refuse"` or `"evict_oldest"`.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFull::Refuse => "refuse",
            OnFull::EvictOldest => "evict_oldest",
        }
    }
}

/// A window's extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extent {
    /// The last `ms` milliseconds of event time.
    Time(i64),
    /// The last `n` events.
    Count(usize),
}

#[derive(Debug, Clone)]
pub(crate) struct WindowSpec {
    pub(crate) extent: Extent,
    /// Tumbling (consecutive, non-overlapping) rather than sliding.
    pub(crate) tumbling: bool,
    /// Which events enter the window; absent means all.
    pub(crate) filter: Option<Func>,
    /// The number aggregated; absent means `e.value`.
    pub(crate) value: Option<Func>,
    /// Most events one key's window holds; older ones are dropped (and counted).
    pub(crate) max_events: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub(crate) name: rhai::ImmutableString,
    pub(crate) when: Func,
    /// How many matching events this step needs.
    pub(crate) times: u32,
    /// A negated step: the sequence fails if it matches while active.
    pub(crate) absent: bool,
}

/// The timeout of a `sparkplug: true` heartbeat that names none: the longest one kept (49
/// days), so that only deaths make its keys missing.
pub(crate) const NO_TIMEOUT_MS: i64 = u32::MAX as i64;

#[derive(Debug, Clone)]
pub(crate) struct HeartbeatSpec {
    pub(crate) timeout_ms: i64,
    /// Per-message timeout, from the payload.
    pub(crate) timeout_of: Option<Func>,
    /// Registry of expected devices: a lookup table whose keys are this rule's keys.
    pub(crate) expected: Option<String>,
    /// Column of `expected` holding a per-device timeout (ms or duration text).
    pub(crate) timeout_column: Option<String>,
    /// Start-up grace before a never-seen expected device is reported missing.
    pub(crate) grace_ms: i64,
    /// A message that means "gone now" (a last-will `offline`).
    pub(crate) offline: Option<Func>,
    /// Follow Sparkplug B sessions (`sparkplug: true`): an NDEATH or DDEATH, as the agent
    /// hands it over (`payload.sparkplug.type`), means "gone now" with reason `death`. Without
    /// a `timeout`, silence alone never makes such a key missing ([`NO_TIMEOUT_MS`]).
    pub(crate) sparkplug: bool,
    /// Flap suppression: more than `max` transitions within `window_ms` are reported once.
    pub(crate) flap: Option<(i64, u32)>,
}

/// An anomaly detector per key.
#[derive(Debug, Clone)]
pub(crate) struct AnomalySpec {
    /// The number judged; absent means `e.value`.
    pub(crate) value: Option<Func>,
    /// The detector's settings (learning, sensitivity, the daily profile).
    pub(crate) params: Params,
    /// Emit the score of every reading (`report: "every"`), not one event per episode.
    pub(crate) every: bool,
    /// Judge each reading against the same hour of past days or weeks, from the rule's `past`.
    pub(crate) baseline: Option<Baseline>,
}

/// `baseline: "daily"` or `"weekly"`: where the rule's `past` holds the expected value.
#[derive(Debug, Clone)]
pub(crate) struct Baseline {
    /// The `past` field read.
    pub(crate) field: Arc<str>,
    /// Its bucket width: the span of each look back.
    pub(crate) every_ms: i64,
    /// A day or a week.
    pub(crate) period_ms: i64,
    /// How many periods back it looks: as many as `past` holds.
    pub(crate) times: i64,
}

/// A forecast: the trend of a value and the threshold it must not cross.
#[derive(Debug, Clone)]
pub(crate) struct ForecastSpec {
    /// The number forecast; absent means `e.value`.
    pub(crate) value: Option<Func>,
    /// How far back the fit looks: a reading this old weighs e^-3 (5%) of a new one.
    pub(crate) window_ms: i64,
    /// The value warned about.
    pub(crate) threshold: f64,
    /// Warn about falling below `threshold` (else rising above it).
    pub(crate) below: bool,
    /// How far ahead a crossing is warned about.
    pub(crate) horizon_ms: i64,
    /// Least probability that the line is past the threshold at the horizon.
    pub(crate) confidence: f64,
    /// History a key's fit needs before it predicts anything.
    pub(crate) learn_ms: i64,
}

/// What a rule does with the events it listens to. The engine evaluates each kind natively;
/// Rhai is called only for the rule's predicates and payload builders.
#[derive(Debug, Clone)]
pub(crate) enum RuleKind {
    /// Every matching event for which `when` holds emits.
    Filter { when: Option<Func> },
    /// Fires once when `when` starts to hold; re-arms when `clear` holds (default: `when` does not).
    Threshold { when: Func, clear: Option<Func>, emit_clear: Option<Func> },
    /// Aggregates over a window; `when` sees `e.window`. Sliding windows fire on the edge
    /// (like a threshold); tumbling windows are judged once per closed window.
    Window { spec: WindowSpec, when: Option<Func>, clear: Option<Func> },
    /// A value that has not changed (beyond `tolerance`) for `for_ms`.
    Stuck { for_ms: i64, tolerance: f64, value: Option<Func> },
    /// Ordered steps within `within_ms`, with repetition and negation.
    Sequence { steps: Vec<Step>, within_ms: i64, max_partial: usize },
    /// Absence of expected messages, with missing and recovered events. `when` picks the
    /// messages that count as signs of life (default: all it listens to).
    Heartbeat { spec: HeartbeatSpec, when: Option<Func> },
    /// Departures from what is normal for the key: spikes, dips, level shifts, drifts, a
    /// broken daily pattern.
    Anomaly { spec: AnomalySpec },
    /// A value predicted to cross a threshold within a horizon.
    Forecast { spec: ForecastSpec },
    /// `on_event` (and `on_timer`) with per-key state, `emit(...)` and `after(...)`.
    Handler { on_event: Func, on_timer: Option<Func>, init: Dynamic },
}

impl RuleKind {
    /// A short name of the kind, for listings.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            RuleKind::Filter { .. } => "filter",
            RuleKind::Threshold { .. } => "threshold",
            RuleKind::Window { .. } => "window",
            RuleKind::Stuck { .. } => "stuck",
            RuleKind::Sequence { .. } => "sequence",
            RuleKind::Heartbeat { .. } => "heartbeat",
            RuleKind::Anomaly { .. } => "anomaly",
            RuleKind::Forecast { .. } => "forecast",
            RuleKind::Handler { .. } => "handler",
        }
    }
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique across the rule set; names the composite events (`edgewatch.<name>`).
    pub name: Arc<str>,
    /// Where it was declared, for error messages.
    pub origin: Origin,
    /// Free text from the rule's `description`.
    pub description: Option<String>,
    /// Topics it listens to.
    pub patterns: Vec<TopicPattern>,
    /// Derives the key from an event; absent means the default key (see [`crate::Engine`]).
    pub(crate) key: Option<Func>,
    /// Builds the composite event's data; absent means a kind-specific default.
    pub(crate) emit: Option<Func>,
    pub(crate) kind: RuleKind,
    /// Most keys this rule tracks; absent: the engine's `max_keys_per_rule`.
    pub(crate) max_keys: Option<usize>,
    /// What happens to a new key when the rule is full: as declared, else the kind's
    /// default (decided when the rule is declared; see [`OnFull`]).
    pub(crate) on_full: OnFull,
    /// Fields of each key this rule tracks that are kept in history (`remember`).
    pub remember: Vec<Arc<str>>,
    /// Fields whose past this rule keeps per key, for `history(...)` (`past`): shared with
    /// the call context for the length of each call, hence an `Arc`.
    pub past: Arc<[PastSpec]>,
    /// Where its events are also sent, beside upstream (`notify`, `act`): sinks by name,
    /// each with the closure that shapes the body, if any.
    pub actions: Vec<ActionSpec>,
    /// At most one notification per key per this many ms (`every`); the rest are folded into
    /// the next one. `None`: no rate limit.
    pub every_ms: Option<i64>,
    /// Who else hears of an alarm nobody acknowledges (`escalate`), level by level.
    pub escalate: Vec<Escalation>,
    /// Holds the rule's notifications for a key back while another rule's alarm is active
    /// for the key's parent (`inhibit`): one page for a dead hub, not one per sensor.
    pub inhibit: Option<Inhibit>,
    /// The compiled file the rule's closures live in; shared by all rules of the file.
    pub(crate) ast: Arc<AST>,
}

/// One escalation level: still unacknowledged `after_ms` after activation, the activation
/// event also goes to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    pub after_ms: i64,
    pub to: Vec<Arc<str>>,
}

/// `inhibit: #{ by: "hub-offline", parent: "devices.hub", hold: "2m" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inhibit {
    /// The rule whose alarm, active for the parent, holds this rule's notifications back.
    pub by: Arc<str>,
    /// The lookup table and column that give a key's parent.
    pub table: Arc<str>,
    pub column: Arc<str>,
    /// How long each notification waits before it goes (ms), so that a parent alarm forming
    /// within it still holds it back: sensors often time out before their hub does. After
    /// the parent clears, the notifications it held wait as long again, for the children
    /// that come back with it.
    pub hold_ms: i64,
}

/// One sink a rule's events go to.
#[derive(Debug, Clone)]
pub struct ActionSpec {
    /// The sink's name, as configured (`[[sinks]] name = ...`).
    pub sink: Arc<str>,
    /// Shapes the body from the event (`act: #{ sink, data: |ev| ... }`); absent: the sink's
    /// default body (`notify`).
    pub(crate) data: Option<Func>,
}

impl ActionSpec {
    /// Whether the rule shapes this sink's body itself.
    pub fn shapes_body(&self) -> bool {
        self.data.is_some()
    }
}

impl Rule {
    /// Every sink the rule names (`notify`, `act`), so a configuration can check them all.
    pub fn sinks(&self) -> impl Iterator<Item = &str> {
        self.actions.iter().map(|a| &*a.sink).chain(self.escalate.iter().flat_map(|e| e.to.iter().map(|s| &**s)))
    }

    /// Whether the rule keeps an alarm per key (it notifies or acts).
    pub(crate) fn keeps_alarms(&self) -> bool {
        !self.actions.is_empty()
    }

    /// When escalation level `level` (1-based) goes, after the activation; `None` past the
    /// last.
    fn escalation_after(&self, level: u8) -> Option<i64> {
        self.escalate.get(usize::from(level).checked_sub(1)?).map(|e| e.after_ms)
    }

    /// When a key's next escalation level falls due, if one will: not while its first
    /// notification is held (`inhibit`), and counted from when that went.
    pub(crate) fn escalation_at(&self, slot: &crate::keyalarm::KeyAlarm) -> Option<(i64, u8)> {
        if slot.held.is_some() {
            return None;
        }
        slot.alarm.escalation_at(|level| self.escalation_after(level).map(|after| after.saturating_add(slot.late_ms)))
    }

    /// The next time a key's alarm changes by itself under this rule (a snooze ends, folded
    /// notifications, an escalation or a held notification fall due), to arm its timer.
    pub(crate) fn alarm_deadline(&self, slot: &crate::keyalarm::KeyAlarm) -> Option<i64> {
        let escalation = self.escalation_at(slot).map(|(at, _)| at);
        let held = slot.held.as_ref().and_then(|h| h.due);
        [slot.alarm.next_deadline(self.every_ms, |_| None), escalation, held].into_iter().flatten().min()
    }

    /// The names its `key` closure may read fields by (see `Func::names_read`); `None`
    /// without one (the key is then the `{device}` level, else the payload's `device`).
    /// For the agent's privacy check: a key made of a rotating pseudonym would change daily.
    pub fn key_reads(&self) -> Option<std::collections::BTreeSet<String>> {
        self.key.as_ref().map(|k| k.names_read(&self.ast))
    }

    /// The kind of rule, as a word (`filter`, `window`, `heartbeat`, ...).
    pub fn kind(&self) -> &'static str {
        self.kind.name()
    }

    /// Does this rule listen to `topic`?
    pub fn listens_to(&self, topic: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(topic))
    }

    /// What happens to a new key when this rule tracks its maximum already.
    pub fn on_full(&self) -> OnFull {
        self.on_full
    }

    /// Most keys this rule tracks, given the engine-wide default.
    pub fn max_keys(&self, default: usize) -> usize {
        self.max_keys.unwrap_or(default)
    }

    /// The lookup table this rule expects its keys from, if any.
    pub fn expected_table(&self) -> Option<&str> {
        match &self.kind {
            RuleKind::Heartbeat { spec, .. } => spec.expected.as_deref(),
            _ => None,
        }
    }
}

/// All rules the engine runs, in load order (files sorted by name, rules in file order).
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
}

impl RuleSet {
    /// Rules whose `inhibit` cannot work in this set, with where they are declared: `by`
    /// names no rule, or one that keeps no alarm (it neither notifies nor acts), or `parent`
    /// names a table that is not loaded. Such a rule runs, and is never inhibited.
    pub fn inhibit_problems(&self, tables: &crate::tables::Tables) -> Vec<(Origin, String)> {
        let mut out = Vec::new();
        for r in self.as_slice() {
            let Some(i) = &r.inhibit else { continue };
            let problem = match self.as_slice().iter().find(|p| p.name == i.by) {
                None => Some(format!("`inhibit.by` names no rule: `{}`", i.by)),
                Some(p) if !p.keeps_alarms() => {
                    Some(format!("`inhibit.by`: rule `{}` keeps no alarm (it needs `notify` or `act`)", i.by))
                }
                Some(_) if !tables.contains_key(&*i.table) => {
                    Some(format!("`inhibit.parent`: no lookup table `{}` is loaded", i.table))
                }
                Some(_) => None,
            };
            if let Some(problem) = problem {
                out.push((
                    r.origin.clone(),
                    format!("rule `{}`: {problem}; its notifications are not inhibited", r.name),
                ));
            }
        }
        out
    }

    /// A rule set of already compiled rules (the reloader keeps each file's last good
    /// version and assembles them). Names must be unique; later duplicates are dropped and
    /// returned.
    pub fn from_rules(rules: impl IntoIterator<Item = Arc<Rule>>) -> (RuleSet, Vec<Arc<Rule>>) {
        let mut set = RuleSet::default();
        let mut dropped = Vec::new();
        for r in rules {
            if set.get(&r.name).is_some() {
                dropped.push(r);
            } else {
                set.rules.push(r);
            }
        }
        (set, dropped)
    }

    /// The rules for which `keep` holds, in the same order.
    pub fn filtered(&self, keep: impl Fn(&Rule) -> bool) -> RuleSet {
        RuleSet { rules: self.rules.iter().filter(|r| keep(r)).cloned().collect() }
    }

    /// The rules, in evaluation order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Rule>> {
        self.rules.iter()
    }

    /// The rule with this name.
    pub fn get(&self, name: &str) -> Option<&Arc<Rule>> {
        self.rules.iter().find(|r| &*r.name == name)
    }

    pub(crate) fn as_slice(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Are there none?
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The MQTT filters that cover every rule's topics, deduplicated.
    pub fn mqtt_filters(&self) -> Vec<String> {
        let mut v: Vec<String> = self.rules.iter().flat_map(|r| r.patterns.iter().map(|p| p.mqtt_filter())).collect();
        v.sort();
        v.dedup();
        v
    }
}
