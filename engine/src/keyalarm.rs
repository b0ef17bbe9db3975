//! One rule and key's alarm as the engine keeps it: the lifecycle ([`crate::alarm::Alarm`])
//! plus what later sends need (the events they are about, a notification `inhibit` holds).
//! Saved with the rule's state for the key (`persist`), kept per rule in the run-time state,
//! read by the kinds, the rule (deadlines) and `notices`.

use crate::output::CompositeId;
use crate::time::Timestamp;

/// One key's alarm, and what a folded send later needs to know.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct KeyAlarm {
    #[serde(flatten)]
    pub(crate) alarm: crate::alarm::Alarm,
    /// The last event whose notification the rate limit folded (its id, as high and low
    /// halves since JSON numbers stop at 64 bits, and its time): the "and N more" sent when
    /// the window ends is about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) folded_event: Option<EventRef>,
    /// The event that activated the alarm (same form): escalations resend it. `None` until
    /// that event is emitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) activation_event: Option<EventRef>,
    /// A notification held back by `inhibit`: waiting out the rule's hold, or its parent's
    /// alarm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) held: Option<HeldNotice>,
    /// How long after the activation its held notification went (ms): escalation counts
    /// from then, so a sensor released after an hour-long hub outage is not escalated at once.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) late_ms: i64,
    /// The activation's notification never went (it was held, then the alarm cleared): the
    /// clearing's does not go either. Nobody hears "t-7 is back" of a t-7 they never heard
    /// was gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) unannounced: bool,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl KeyAlarm {
    /// Nothing worth keeping: an idle alarm and no held notification.
    pub(crate) fn is_idle(&self) -> bool {
        self.alarm.is_idle() && self.held.is_none() && !self.unannounced
    }
}

/// An event as an alarm saves it: its id as high and low halves (JSON numbers stop at 64
/// bits) and its time.
pub(crate) type EventRef = (u64, u64, i64);

pub(crate) fn event_ref(id: CompositeId, time: Timestamp) -> EventRef {
    ((id.0 >> 64) as u64, id.0 as u64, time.millis())
}

/// The id and time of a saved [`EventRef`].
pub(crate) fn event_of((hi, lo, time): EventRef) -> (CompositeId, Timestamp) {
    (CompositeId((u128::from(hi) << 64) | u128::from(lo)), Timestamp(time))
}

/// A notification `inhibit` holds: saved with the alarm, so a restart does not lose it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct HeldNotice {
    /// The event it is about (id halves and time, as in [`KeyAlarm::activation_event`]).
    pub(crate) event: EventRef,
    /// When the hold ends (ms); `None`: inhibited, until the parent's alarm clears.
    pub(crate) due: Option<i64>,
    /// Notifications folded into it ("and N more"), including later events of the key that
    /// came while it was held.
    pub(crate) folded: u32,
    /// Each sink's body: `None` for the sink's default, else the body `act` shaped.
    pub(crate) sends: Vec<(String, Option<serde_json::Value>)>,
    /// The event's data: the sinks' default bodies carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) data: Option<serde_json::Value>,
}

/// The timer tag of alarm deadlines (a snooze ends, folded notifications fall due); the
/// kinds use small tags.
pub(crate) const ALARM_TAG: u32 = 0xff;
