//! What the engine produces: composite events, and faults of rules that failed.

pub use crate::event::CompositeId;
use crate::event::{Event, EventId};
use crate::time::Timestamp;
use rhai::{Dynamic, Map};
use std::fmt;
use std::sync::Arc;

/// A detected situation: the output of a rule, on its way upstream.
#[derive(Debug, Clone)]
pub struct Composite {
    /// Deterministic id: a function of the rule, the key and the triggering input.
    pub id: CompositeId,
    /// The input (message, or timer) that caused it.
    pub input: EventId,
    /// Name of the rule that produced it.
    pub rule: Arc<str>,
    /// The key the rule tracks, usually the device; the CloudEvents `subject`.
    pub key: String,
    /// Event time of the triggering input.
    pub time: Timestamp,
    /// What the rule's `emit` returned (or the triggering payload when it has no `emit`).
    pub data: Dynamic,
    /// The alarm's condition for this rule and key right after this event; `None` for rules
    /// that keep no alarm. The agent sends it as the CloudEvents attribute `alarmstate`.
    pub alarm: Option<crate::alarm::Condition>,
    /// The inputs that caused it (and the parent event of a chained one): the CloudEvents
    /// attributes `edgewatchcauses` and `edgewatchparent`.
    pub causes: crate::lineage::Causes,
}

impl Composite {
    /// The payload as JSON.
    pub fn data_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.data).unwrap_or(serde_json::Value::Null)
    }

    /// The composite as an event on `topic`, for chaining: a CloudEvents-like map (`type`,
    /// `id`, `subject`, `time`, `data`) whose id is the composite's, so a chained output's
    /// id still derives from the original input.
    pub(crate) fn to_event(&self, topic: String) -> Event {
        let (time, id) = (self.time, EventId(self.id.0));
        Event { topic, payload: Dynamic::from_map(self.as_map()), time, id, arrived: time.millis(), chained: true }
    }

    /// The composite as rules see it (chained events, `act`'s `data`): `type`, `id`,
    /// `subject`, `time`, `data`.
    pub(crate) fn as_map(&self) -> Map {
        let mut m = Map::new();
        m.insert("type".into(), format!("edgewatch.{}", self.rule).into());
        m.insert("id".into(), self.id.to_string().into());
        m.insert("subject".into(), self.key.clone().into());
        m.insert("time".into(), Dynamic::from_int(self.time.millis()));
        m.insert("data".into(), self.data.clone());
        m
    }
}

/// A composite event on its way to a sink besides upstream (`notify`, `act`).
#[derive(Debug, Clone)]
pub struct Action {
    /// The composite event it is about (its id, rule, key and time).
    pub event: CompositeId,
    pub rule: Arc<str>,
    pub key: String,
    pub time: Timestamp,
    /// The configured sink's name.
    pub sink: Arc<str>,
    /// The body the rule shaped (`act`'s `data`), or `None`: the sink's default body.
    pub data: Option<Dynamic>,
    /// Notifications the rate limit (`every`) folded into this one ("and 7 more"); part of
    /// the action's identity, so a folded send has its own idempotency key.
    pub folded: u32,
    /// 0 for the first notification, `n` for escalation level `n`; part of the action's
    /// identity, so each level is delivered once.
    pub level: u8,
    /// The event's data when the event itself is not among this step's outputs: a
    /// notification `inhibit` held, sent later. `None` otherwise.
    pub event_data: Option<Dynamic>,
}

/// A transition of one rule and key's alarm, to be published
/// (`edgewatch.alarm.activated|cleared|acknowledged|snoozed|unsnoozed|disabled|enabled|inhibited`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmTransition {
    pub rule: Arc<str>,
    pub key: String,
    pub change: crate::alarm::Change,
    /// The alarm's condition after the change.
    pub condition: crate::alarm::Condition,
    pub time: Timestamp,
    /// What caused it when no person did: for `inhibited`, the parent's alarm, as
    /// `rule/key`.
    pub cause: Option<String>,
}

impl Action {
    /// The shaped body as JSON, if the rule shaped one.
    pub fn data_json(&self) -> Option<serde_json::Value> {
        self.data.as_ref().map(|d| serde_json::to_value(d).unwrap_or(serde_json::Value::Null))
    }
}

/// A rule that failed on an event: it becomes an error report, never a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFault {
    /// The rule that failed.
    pub rule: Arc<str>,
    /// Where: `file:line:col`.
    pub location: String,
    /// What went wrong.
    pub message: String,
    /// The rule failed too often in a row and is now disabled until it is reloaded.
    pub disabled: bool,
}

impl fmt::Display for RuleFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: rule `{}`: {}", self.location, self.rule, self.message)?;
        if self.disabled {
            f.write_str(" (rule disabled)")?;
        }
        Ok(())
    }
}

/// A rule ran into its key limit: since `since` it refused `refused` new keys and evicted
/// `evicted` old ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLimitReport {
    pub rule: Arc<str>,
    /// The rule's limit.
    pub max_keys: usize,
    /// What it does at the limit.
    pub on_full: crate::OnFull,
    pub refused: u64,
    pub evicted: u64,
    /// Processing time of the first refusal or eviction this report covers.
    pub since: Timestamp,
}

impl fmt::Display for KeyLimitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rule `{}` tracks its maximum of {} keys (on_full = \"{}\"): {} new keys refused, {} evicted since {}",
            self.rule,
            self.max_keys,
            self.on_full.as_str(),
            self.refused,
            self.evicted,
            self.since.to_rfc3339()
        )
    }
}

/// Everything one call of [`crate::Engine::process`] produced. Reused between calls so the
/// hot path does not allocate a fresh vector per event.
#[derive(Debug, Default)]
pub struct Outputs {
    /// Composite events, in the order the rules produced them.
    pub events: Vec<Composite>,
    /// The events' actions (`notify`, `act`), in the same order: each follows its event.
    pub actions: Vec<Action>,
    /// Alarm transitions (commands, activation and clearing, snoozes running out), in order.
    pub alarm_changes: Vec<AlarmTransition>,
    /// Rules that failed on this input.
    pub faults: Vec<RuleFault>,
    /// How many rules listened to the input (whether or not they emitted).
    pub matched: usize,
    /// Inputs dropped as duplicates (same device and sequence number, or same id).
    pub duplicates: usize,
    /// Inputs older than the allowed lateness: not processed, returned for dead-lettering.
    pub late: Vec<crate::Event>,
    /// New keys refused: a rule that refuses tracks its maximum already, or the key is
    /// longer than 256 bytes.
    pub keys_refused: usize,
    /// Keys forgotten to make room for new ones (rules with `on_full: "evict_oldest"`).
    pub keys_evicted: usize,
    /// Rules that refused or evicted keys, at most one report per rule per
    /// [`crate::EngineConfig::key_report_interval_ms`]: publish these, not every refusal.
    pub key_limits: Vec<KeyLimitReport>,
    /// Partial sequence matches dropped because a key had its maximum already.
    pub partials_dropped: usize,
    /// State that changed (or went away) and should be persisted: export each with
    /// [`crate::Engine::export`]. May name the same state more than once.
    pub touched: Vec<Touched>,
    /// Rules that read `e.value` of this input and found none (`()`: a plain payload that is
    /// not there, no `value` field, no field named like the topic's last level), once per
    /// rule and input. Such a rule cannot fire on the input, and would otherwise say nothing.
    /// Read in predicates (`when`, `clear`, ...) that did not hold, and as the default value
    /// of stuck-sensor rules.
    pub value_missing: Vec<Arc<str>>,
    /// Roll-ups whose period ended: to be written to history once each.
    pub closed: Vec<crate::history::Closed>,
    /// Readings not folded into history, and why, by who asked (subscription filter or
    /// rule name). Counted, never a fault.
    pub history_skipped: Vec<(Arc<str>, crate::history::Skip)>,
}

/// A piece of engine state that changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Touched {
    /// A rule's state for one key.
    Rule { rule: Arc<str>, key: Arc<str> },
    /// The duplicate-detection window of one device.
    Dedup(Arc<str>),
    /// An event held for reordering (gone once released).
    Held(Arc<str>),
    /// The event-time watermark: older input is late.
    Watermark,
    /// The open roll-ups of one history series.
    Series { key: Arc<str>, field: Arc<str> },
    /// The closed buckets of a rule's past (`past`) for one key: changes when a bucket
    /// closes (once per bucket width), or a late reading lands in a closed one.
    Past { rule: Arc<str>, key: Arc<str> },
    /// The open buckets (one per field) of a rule's past for one key: changes with every
    /// reading, and stays small.
    PastOpen { rule: Arc<str>, key: Arc<str> },
}

impl Touched {
    /// Whether the engine saves this piece as raw bytes rather than text: a history
    /// series' open roll-ups and a past's open buckets, written with every reading (see
    /// [`crate::history::SeriesState::encode`] and `KeyPast::save_open`). A store that
    /// carries state as text (a snapshot) encodes these; the engine still reads the text
    /// earlier versions saved in their place.
    pub fn raw(&self) -> bool {
        matches!(self, Touched::Series { .. } | Touched::PastOpen { .. })
    }
}

impl Outputs {
    /// Empties both lists, keeping their capacity.
    pub fn clear(&mut self) {
        self.events.clear();
        self.actions.clear();
        self.alarm_changes.clear();
        self.faults.clear();
        self.matched = 0;
        self.duplicates = 0;
        self.late.clear();
        self.keys_refused = 0;
        self.keys_evicted = 0;
        self.key_limits.clear();
        self.partials_dropped = 0;
        self.touched.clear();
        self.value_missing.clear();
        self.closed.clear();
        self.history_skipped.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinguish_inputs() {
        let a = CompositeId::derive("overheat", "t-01", EventId(7), 0);
        assert_eq!(a, CompositeId::derive("overheat", "t-01", EventId(7), 0));
        assert_ne!(a, CompositeId::derive("overheat", "t-01", EventId(8), 0));
        assert_ne!(a, CompositeId::derive("overheat", "t-02", EventId(7), 0));
        assert_ne!(a, CompositeId::derive("overheat", "t-01", EventId(7), 1));
        // No ambiguity between rule and key boundaries.
        assert_ne!(CompositeId::derive("ab", "c", EventId(1), 0), CompositeId::derive("a", "bc", EventId(1), 0));
        let s = a.to_string();
        assert_eq!(s.len(), 36);
        assert_eq!(s.matches('-').count(), 4);
    }

    /// Issue 14: ids looked like UUIDs but had arbitrary version and variant nibbles
    /// (`...-424c-7589-...`), which strict parsers reject. They are RFC 9562 version 8
    /// (custom) UUIDs: `xxxxxxxx-xxxx-8xxx-[89ab]xxx-xxxxxxxxxxxx`.
    #[test]
    fn ids_are_rfc9562_version_8_uuids() {
        for i in 0..2_000u32 {
            let id = CompositeId::derive("overheat", &format!("t-{i}"), EventId(u128::from(i) << 64 | 7), i % 3);
            let s = id.to_string();
            let groups: Vec<&str> = s.split('-').collect();
            assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{s}");
            assert!(s.chars().all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{s}");
            assert!(groups[2].starts_with('8'), "version 8: {s}");
            assert!(groups[3].starts_with(['8', '9', 'a', 'b']), "variant 10xx: {s}");
            assert_eq!((id.0 >> 76) & 0xf, 8, "the bits agree with the text: {s}");
        }
    }
}
