//! Alarm commands on the control topic (`[alarms] control_topic = true`:
//! `<prefix>/control/alarms`), as plain values: a request read from a payload, and the reply
//! and transition event written back.
//!
//! ```text
//! {"rule":"overheat","key":"t-003","action":"snooze","for":"30m","by":"operator-7","note":"...","id":"r-1"}
//!   ─▶ Request ─▶ Engine::alarm_command ─▶ reply on <prefix>/control/alarms/reply
//!                                        └▶ edgewatch.alarm.snoozed upstream (who, when, until)
//! ```
//!
//! `by` and `note` are what the sender says: the broker does not tell the agent who
//! published (docs/security.md). Every field is bounded, and a bad request gets a reply
//! saying what is wrong with it, never a crash or a silent drop.

use edgewatch_engine::alarm::{Change, Command, Condition};
use serde::Deserialize;
use std::time::Duration;

/// Longest `rule`, `key`, `by` or `id` accepted, in bytes.
pub const MAX_FIELD: usize = 256;
/// Longest `note`, in bytes.
pub const MAX_NOTE: usize = 1024;
/// Longest snooze: a forgotten one ends within a month.
pub const MAX_SNOOZE: Duration = Duration::from_secs(31 * 24 * 3600);

/// A command for one rule and key's alarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The sender's request id, echoed in the reply.
    pub id: Option<String>,
    pub rule: String,
    pub key: String,
    pub command: Command,
    pub by: Option<String>,
    pub note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    id: Option<String>,
    rule: String,
    key: String,
    action: String,
    #[serde(rename = "for")]
    duration: Option<String>,
    by: Option<String>,
    note: Option<String>,
}

/// Why a request was refused, as the reply says it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("not a command: {0}")]
    Malformed(String),
    #[error("`{0}` is longer than {1} bytes")]
    TooLong(&'static str, usize),
    #[error("unknown action `{0}` (ack, snooze, unsnooze, disable, enable)")]
    UnknownAction(String),
    #[error("snooze needs `for`, a duration such as \"30m\"")]
    NoDuration,
    #[error("`for`: {0}")]
    BadDuration(String),
}

impl Request {
    /// Reads a control message received at `now_ms`.
    pub fn parse(payload: &[u8], now_ms: i64) -> Result<Request, (Option<String>, RequestError)> {
        let raw: Raw = serde_json::from_slice(payload).map_err(|e| (None, RequestError::Malformed(e.to_string())))?;
        let id = raw.id.clone();
        let fail = |e| (id.clone(), e);
        for (name, value, max) in [
            ("id", raw.id.as_deref(), MAX_FIELD),
            ("rule", Some(raw.rule.as_str()), MAX_FIELD),
            ("key", Some(raw.key.as_str()), MAX_FIELD),
            ("by", raw.by.as_deref(), MAX_FIELD),
            ("note", raw.note.as_deref(), MAX_NOTE),
        ] {
            if value.is_some_and(|v| v.len() > max) {
                return Err(fail(RequestError::TooLong(name, max)));
            }
        }
        let command = match raw.action.as_str() {
            "ack" | "acknowledge" => Command::Acknowledge,
            "snooze" | "shelve" => {
                let text = raw.duration.as_deref().ok_or_else(|| fail(RequestError::NoDuration))?;
                let d = humantime::parse_duration(text).map_err(|e| fail(RequestError::BadDuration(e.to_string())))?;
                if d.is_zero() || d > MAX_SNOOZE {
                    return Err(fail(RequestError::BadDuration(format!(
                        "must be more than 0 and at most {}",
                        humantime::format_duration(MAX_SNOOZE)
                    ))));
                }
                Command::Shelve { until: now_ms.saturating_add(d.as_millis() as i64) }
            }
            "unsnooze" | "unshelve" => Command::Unshelve,
            "disable" => Command::Disable,
            "enable" => Command::Enable,
            other => {
                let mut shown = other.to_owned();
                shown.truncate(32);
                return Err(fail(RequestError::UnknownAction(shown)));
            }
        };
        Ok(Request { id, rule: raw.rule, key: raw.key, command, by: raw.by, note: raw.note })
    }
}

/// Why a valid request changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Engine(#[from] edgewatch_engine::AlarmCommandError),
    #[error("nothing changed")]
    NothingChanged,
}

/// The reply to a request: `ok` and the alarm's state, or the error.
pub fn reply(id: Option<&str>, result: Result<Condition, String>) -> serde_json::Value {
    match result {
        Ok(state) => serde_json::json!({ "id": id, "ok": true, "alarmstate": state.as_str() }),
        Err(error) => serde_json::json!({ "id": id, "ok": false, "error": error }),
    }
}

/// The word for a transition, as in its event type (`edgewatch.alarm.<word>`).
pub fn change_word(change: &Change) -> &'static str {
    match change {
        Change::Activated => "activated",
        Change::Cleared { .. } => "cleared",
        Change::Acknowledged { .. } => "acknowledged",
        Change::Shelved { .. } => "snoozed",
        Change::Unshelved => "unsnoozed",
        Change::Disabled => "disabled",
        Change::Enabled => "enabled",
        Change::Inhibited => "inhibited",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_with_bounds_and_bad_ones_say_why() {
        let r =
            Request::parse(br#"{"rule":"hot","key":"t-3","action":"snooze","for":"30m","by":"op-7","id":"r1"}"#, 1_000)
                .expect("valid");
        assert_eq!(r.command, Command::Shelve { until: 1_000 + 30 * 60 * 1000 });
        assert_eq!(
            (r.rule.as_str(), r.key.as_str(), r.by.as_deref(), r.id.as_deref()),
            ("hot", "t-3", Some("op-7"), Some("r1"))
        );
        let ack = Request::parse(br#"{"rule":"hot","key":"t-3","action":"ack"}"#, 0).expect("ack");
        assert_eq!(ack.command, Command::Acknowledge);
        for (payload, want) in [
            (&br#"{"rule":"hot"}"#[..], "not a command"),
            (br#"{"rule":"hot","key":"k","action":"ack","extra":1}"#, "not a command"),
            (br#"{"rule":"hot","key":"k","action":"reboot","id":"x"}"#, "unknown action `reboot`"),
            (br#"{"rule":"hot","key":"k","action":"snooze"}"#, "needs `for`"),
            (br#"{"rule":"hot","key":"k","action":"snooze","for":"soon"}"#, "`for`"),
            (br#"{"rule":"hot","key":"k","action":"snooze","for":"400d"}"#, "at most"),
            (b"\xff\x00", "not a command"),
        ] {
            let (_, e) = Request::parse(payload, 0).expect_err(&String::from_utf8_lossy(payload));
            assert!(e.to_string().contains(want), "{e}");
        }
        let long = format!(r#"{{"rule":"hot","key":"{}","action":"ack","id":"r9"}}"#, "k".repeat(300));
        let (id, e) = Request::parse(long.as_bytes(), 0).expect_err("too long");
        assert_eq!((id.as_deref(), e), (Some("r9"), RequestError::TooLong("key", MAX_FIELD)));
        assert_eq!(reply(Some("r9"), Err("nope".into()))["ok"], false);
        assert_eq!(reply(None, Ok(Condition::Acknowledged))["alarmstate"], "acknowledged");
    }
}
