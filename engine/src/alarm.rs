//! The alarm lifecycle of one rule and key: ISA-18.2's basic model, plus shelving (snooze
//! until a time) and out of service (disabled for the key), and what they let through to
//! notifications (rate limits with folding, escalation).
//!
//! ```text
//!            activate                       acknowledge
//!  Normal ─────────────▶ Unacknowledged ────────────────▶ Acknowledged
//!    ▲                     │        ▲                          │
//!    │ acknowledge   clear │        │ activate                 │ clear
//!    │                     ▼        │                          ▼
//!    └──────────── ReturnedUnacknowledged              Normal ◀─┘
//!
//!  any state: shelve until T (notifications held until T, or unshelve) ·
//!             disable / enable (out of service: notifications held)
//! ```
//!
//! The lifecycle governs notifications only: the rule's events upstream always flow, and
//! carry the condition. A plain struct with time as an argument, tested here; the caller
//! keeps one per rule and key with the rule's state, and publishes every [`Change`].

use serde::{Deserialize, Serialize};

/// Where an alarm is in ISA-18.2's basic model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    #[default]
    Normal,
    /// Active, and nobody has acknowledged it.
    Unacknowledged,
    /// Active and acknowledged.
    Acknowledged,
    /// Back to normal, but nobody acknowledged it while it was active.
    ReturnedUnacknowledged,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Normal => "normal",
            Condition::Unacknowledged => "unacknowledged",
            Condition::Acknowledged => "acknowledged",
            Condition::ReturnedUnacknowledged => "returned_unacknowledged",
        }
    }

    pub fn is_active(self) -> bool {
        matches!(self, Condition::Unacknowledged | Condition::Acknowledged)
    }
}

/// What a person (or a program) asks of an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Acknowledge,
    /// Hold notifications back until this time (ms).
    Shelve {
        until: i64,
    },
    Unshelve,
    /// Out of service: hold notifications back until enabled again.
    Disable,
    Enable,
}

/// Why a command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("nothing to acknowledge: the alarm is {0}")]
    NothingToAcknowledge(&'static str),
    #[error("a snooze must end in the future")]
    ShelveInThePast,
    #[error("the alarm is not snoozed")]
    NotShelved,
    #[error("the alarm is out of service already")]
    AlreadyDisabled,
    #[error("the alarm is in service already")]
    AlreadyEnabled,
}

/// A transition worth publishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Activated,
    Cleared {
        to: Condition,
    },
    Acknowledged {
        to: Condition,
    },
    Shelved {
        until: i64,
    },
    /// By command, or because the snooze ran out.
    Unshelved,
    Disabled,
    Enabled,
    /// A notification was held back because the parent's alarm is active (`inhibit`).
    Inhibited,
}

/// Whether a notification of this alarm goes out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    /// Send it, saying how many were held back by the rate limit since the last one ("and 7
    /// more").
    Send {
        folded: u32,
    },
    Held(Held),
}

/// Why a notification was held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    Shelved,
    OutOfService,
    /// Within the rate limit of the last one sent: counted, and folded into the next.
    RateLimited,
}

/// One rule and key's alarm.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    pub condition: Condition,
    /// When the current activation began (ms); `None` unless active or returned
    /// unacknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Notifications held back until then (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shelved_until: Option<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub out_of_service: bool,
    /// Escalation levels already sent for the current activation.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub escalated: u8,
    /// When the last notification went out (ms), for the rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sent: Option<i64>,
    /// Notifications held back by the rate limit since the last one sent.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub folded: u32,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

impl Alarm {
    /// The rule's condition became true (the situation it detects began) at `now`.
    pub fn activate(&mut self, now: i64) -> Option<Change> {
        match self.condition {
            Condition::Normal | Condition::ReturnedUnacknowledged => {
                self.condition = Condition::Unacknowledged;
                self.since = Some(now);
                self.escalated = 0;
                Some(Change::Activated)
            }
            Condition::Unacknowledged | Condition::Acknowledged => None,
        }
    }

    /// The rule's condition cleared at `now`.
    pub fn clear(&mut self, _now: i64) -> Option<Change> {
        let to = match self.condition {
            Condition::Unacknowledged => Condition::ReturnedUnacknowledged,
            Condition::Acknowledged => Condition::Normal,
            Condition::Normal | Condition::ReturnedUnacknowledged => return None,
        };
        self.condition = to;
        if to == Condition::Normal {
            self.since = None;
        }
        Some(Change::Cleared { to })
    }

    /// Applies a command at `now`.
    pub fn command(&mut self, command: Command, now: i64) -> Result<Change, CommandError> {
        match command {
            Command::Acknowledge => {
                let to = match self.condition {
                    Condition::Unacknowledged => Condition::Acknowledged,
                    Condition::ReturnedUnacknowledged => Condition::Normal,
                    other => return Err(CommandError::NothingToAcknowledge(other.as_str())),
                };
                self.condition = to;
                if to == Condition::Normal {
                    self.since = None;
                }
                Ok(Change::Acknowledged { to })
            }
            Command::Shelve { until } if until <= now => Err(CommandError::ShelveInThePast),
            Command::Shelve { until } => {
                self.shelved_until = Some(until);
                Ok(Change::Shelved { until })
            }
            Command::Unshelve => match self.shelved_until.take() {
                Some(_) => Ok(Change::Unshelved),
                None => Err(CommandError::NotShelved),
            },
            Command::Disable if self.out_of_service => Err(CommandError::AlreadyDisabled),
            Command::Disable => {
                self.out_of_service = true;
                Ok(Change::Disabled)
            }
            Command::Enable if !self.out_of_service => Err(CommandError::AlreadyEnabled),
            Command::Enable => {
                self.out_of_service = false;
                Ok(Change::Enabled)
            }
        }
    }

    /// Ends a snooze whose time has come; the caller asks at [`Alarm::next_deadline`].
    pub fn expire(&mut self, now: i64) -> Option<Change> {
        match self.shelved_until {
            Some(until) if until <= now => {
                self.shelved_until = None;
                Some(Change::Unshelved)
            }
            _ => None,
        }
    }

    /// Whether a notification goes out at `now`, with at most one per `every_ms` (none: no
    /// rate limit). Counts what the rate limit holds back; shelved and out-of-service
    /// notifications are not counted for later (they are not wanted at all).
    pub fn notify(&mut self, now: i64, every_ms: Option<i64>) -> Notify {
        if self.out_of_service {
            return Notify::Held(Held::OutOfService);
        }
        if self.shelved_until.is_some_and(|until| now < until) {
            return Notify::Held(Held::Shelved);
        }
        if let (Some(every), Some(last)) = (every_ms, self.last_sent) {
            if now >= last && now - last < every {
                self.folded = self.folded.saturating_add(1);
                return Notify::Held(Held::RateLimited);
            }
        }
        self.last_sent = Some(now);
        Notify::Send { folded: std::mem::take(&mut self.folded) }
    }

    /// Notifications the rate limit held back whose window has ended with nothing new to
    /// carry them: the caller sends one "and N more" for them. `None` when there are none, or
    /// the window is still open.
    pub fn folded_due(&mut self, now: i64, every_ms: i64) -> Option<u32> {
        let last = self.last_sent?;
        if self.folded == 0 || now - last < every_ms || self.out_of_service {
            return None;
        }
        self.last_sent = Some(now);
        Some(std::mem::take(&mut self.folded))
    }

    /// When the next escalation level falls due, and which level it is, given when each
    /// level goes after the activation (`after_ms(level)`, 1-based; `None` past the last).
    /// Only an unacknowledged alarm escalates, and not while snoozed or out of service: a
    /// snoozed alarm that nobody acknowledged escalates when the snooze ends.
    pub fn escalation_at(&self, after_ms: impl Fn(u8) -> Option<i64>) -> Option<(i64, u8)> {
        if self.condition != Condition::Unacknowledged || self.out_of_service {
            return None;
        }
        let next = self.escalated.checked_add(1)?;
        let at = self.since?.saturating_add(after_ms(next)?);
        Some((self.shelved_until.map_or(at, |until| at.max(until)), next))
    }

    pub fn escalated_to(&mut self, level: u8) {
        self.escalated = self.escalated.max(level);
    }

    /// The next time something changes by itself: a snooze ends, a folded notification or
    /// an escalation level (see [`Alarm::escalation_at`]) falls due.
    pub fn next_deadline(&self, every_ms: Option<i64>, after_ms: impl Fn(u8) -> Option<i64>) -> Option<i64> {
        let shelve = self.shelved_until;
        let escalation = self.escalation_at(after_ms).map(|(at, _)| at);
        let fold =
            every_ms.and_then(|every| (self.folded > 0).then(|| self.last_sent.map(|l| l.saturating_add(every)))?);
        [shelve, escalation, fold].into_iter().flatten().min()
    }

    /// Nothing to remember: normal, in service, not snoozed, nothing folded. Such an alarm
    /// need not be kept.
    pub fn is_idle(&self) -> bool {
        self.condition == Condition::Normal && self.shelved_until.is_none() && !self.out_of_service && self.folded == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn the_basic_model_of_isa_18_2() {
        let mut a = Alarm::default();
        assert_eq!(a.command(Command::Acknowledge, 0), Err(CommandError::NothingToAcknowledge("normal")));
        assert_eq!(a.activate(1000), Some(Change::Activated));
        assert_eq!(a.activate(2000), None, "active already");
        assert_eq!((a.condition, a.since), (Condition::Unacknowledged, Some(1000)));
        // Cleared before anyone looked: it stays to be acknowledged.
        assert_eq!(a.clear(3000), Some(Change::Cleared { to: Condition::ReturnedUnacknowledged }));
        assert_eq!(a.clear(3500), None);
        // It comes back before the acknowledgement: active and unacknowledged, from now.
        assert_eq!(a.activate(4000), Some(Change::Activated));
        assert_eq!(a.since, Some(4000));
        assert_eq!(a.command(Command::Acknowledge, 5000), Ok(Change::Acknowledged { to: Condition::Acknowledged }));
        assert_eq!(a.command(Command::Acknowledge, 5000), Err(CommandError::NothingToAcknowledge("acknowledged")));
        assert_eq!(a.clear(6000), Some(Change::Cleared { to: Condition::Normal }));
        assert!(a.is_idle());
        // Returned unacknowledged, then acknowledged: normal.
        a.activate(7000);
        a.clear(8000);
        assert_eq!(a.command(Command::Acknowledge, 9000), Ok(Change::Acknowledged { to: Condition::Normal }));
        assert_eq!((a.condition, a.since), (Condition::Normal, None));
    }

    #[test]
    fn a_snooze_and_out_of_service_hold_notifications_back_not_the_condition() {
        let mut a = Alarm::default();
        assert_eq!(a.command(Command::Shelve { until: 0 }, 10), Err(CommandError::ShelveInThePast));
        assert_eq!(a.command(Command::Shelve { until: 30 * MIN }, 0), Ok(Change::Shelved { until: 30 * MIN }));
        a.activate(MIN);
        assert_eq!(a.condition, Condition::Unacknowledged, "the condition is still followed");
        assert_eq!(a.notify(MIN, None), Notify::Held(Held::Shelved));
        assert_eq!(a.next_deadline(None, |_| None), Some(30 * MIN));
        assert_eq!(a.expire(29 * MIN), None);
        assert_eq!(a.expire(30 * MIN), Some(Change::Unshelved));
        assert_eq!(a.notify(30 * MIN, None), Notify::Send { folded: 0 });
        assert_eq!(a.command(Command::Unshelve, 31 * MIN), Err(CommandError::NotShelved));
        assert_eq!(a.command(Command::Disable, 31 * MIN), Ok(Change::Disabled));
        assert_eq!(a.command(Command::Disable, 31 * MIN), Err(CommandError::AlreadyDisabled));
        assert_eq!(a.notify(32 * MIN, None), Notify::Held(Held::OutOfService));
        assert!(!a.is_idle());
        assert_eq!(a.command(Command::Enable, 33 * MIN), Ok(Change::Enabled));
        assert_eq!(a.notify(33 * MIN, None), Notify::Send { folded: 0 });
    }

    #[test]
    fn the_rate_limit_folds_what_it_holds_into_the_next_notification() {
        let mut a = Alarm::default();
        let every = Some(10 * MIN);
        assert_eq!(a.notify(0, every), Notify::Send { folded: 0 });
        for i in 1..=7 {
            assert_eq!(a.notify(i * MIN, every), Notify::Held(Held::RateLimited));
        }
        assert_eq!(a.next_deadline(every, |_| None), Some(10 * MIN));
        // The next one after the window carries "and 7 more".
        assert_eq!(a.notify(10 * MIN, every), Notify::Send { folded: 7 });
        // Held ones with nothing after them go out on their own when the window ends.
        assert_eq!(a.notify(11 * MIN, every), Notify::Held(Held::RateLimited));
        assert_eq!(a.folded_due(15 * MIN, 10 * MIN), None);
        assert_eq!(a.folded_due(20 * MIN, 10 * MIN), Some(1));
        assert_eq!(a.folded_due(40 * MIN, 10 * MIN), None);
    }

    #[test]
    fn escalation_goes_once_per_level_while_nobody_acknowledges() {
        let mut a = Alarm::default();
        // Level n goes n × 15 minutes after the activation; there are two.
        let after = |level: u8| (level <= 2).then(|| i64::from(level) * 15 * MIN);
        let due = |a: &Alarm, now: i64| a.escalation_at(after).filter(|&(at, _)| at <= now).map(|(_, level)| level);
        a.activate(0);
        assert_eq!(due(&a, 14 * MIN), None);
        assert_eq!(a.next_deadline(None, after), Some(15 * MIN));
        assert_eq!(due(&a, 15 * MIN), Some(1));
        a.escalated_to(1);
        assert_eq!(due(&a, 16 * MIN), None, "once per level");
        assert_eq!(due(&a, 30 * MIN), Some(2));
        a.escalated_to(2);
        assert_eq!(due(&a, 60 * MIN), None, "no level beyond the last");
        // Acknowledged: nothing more, and a new activation starts again from level 1.
        a.command(Command::Acknowledge, 61 * MIN).expect("ack");
        assert_eq!(due(&a, 90 * MIN), None);
        a.clear(91 * MIN);
        a.activate(100 * MIN);
        assert_eq!(due(&a, 115 * MIN), Some(1));
    }

    #[test]
    fn a_snoozed_or_out_of_service_alarm_does_not_escalate_until_it_is_back() {
        let after = |level: u8| (level == 1).then_some(15 * MIN);
        let mut a = Alarm::default();
        a.command(Command::Shelve { until: 60 * MIN }, 0).expect("snooze");
        a.activate(MIN);
        // Held until the snooze ends; then, still unacknowledged, it escalates.
        assert_eq!(a.escalation_at(after), Some((60 * MIN, 1)));
        assert_eq!(a.next_deadline(None, after), Some(60 * MIN));
        a.expire(60 * MIN);
        assert_eq!(a.escalation_at(after), Some((16 * MIN, 1)), "due since 16 minutes: goes at once");
        a.command(Command::Disable, 61 * MIN).expect("disable");
        assert_eq!(a.escalation_at(after), None);
        assert_eq!(a.next_deadline(None, after), None);
        a.command(Command::Enable, 62 * MIN).expect("enable");
        assert_eq!(a.escalation_at(after), Some((16 * MIN, 1)));
    }

    #[test]
    fn an_alarm_survives_being_saved_and_read_back() {
        let mut a = Alarm::default();
        a.activate(1000);
        a.command(Command::Shelve { until: 5000 }, 2000).expect("shelve");
        a.notify(1500, Some(MIN));
        let text = serde_json::to_string(&a).expect("saves");
        assert_eq!(serde_json::from_str::<Alarm>(&text).expect("reads"), a);
        assert_eq!(serde_json::to_string(&Alarm::default()).expect("saves"), r#"{"condition":"normal"}"#);
    }
}
