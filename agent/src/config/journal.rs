//! The `[journal]` and `[event_log]` sections (two logs of one format): raw, then checked.
//!
//! ```toml
//! [journal]
//! enabled = false   # keep the raw inputs for `edgewatch backtest` and `journal export`
//! max_mb = 64       # all segments together; the oldest go first
//! max_age = "24h"   # segments whose every input is older are deleted
//!
//! [event_log]
//! enabled = true    # the recent composite events, for `edgewatch trace`
//! max_mb = 16
//! max_age = "7d"
//! ```

use super::Invalid;
use crate::journal::JournalLimits;
use serde::Deserialize;
use std::time::Duration;

/// `[journal]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJournal {
    #[serde(default)]
    pub enabled: bool,
    /// All segments together, in MiB.
    #[serde(default = "default_max_mb")]
    pub max_mb: u64,
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for RawJournal {
    fn default() -> Self {
        RawJournal { enabled: false, max_mb: default_max_mb(), max_age: default_max_age() }
    }
}

fn default_max_mb() -> u64 {
    JournalLimits::default().max_bytes >> 20
}

/// Yesterday's traffic, for a backtest of today's edit.
fn default_max_age() -> Duration {
    Duration::from_millis(JournalLimits::default().max_age_ms.unsigned_abs())
}

impl RawJournal {
    /// The journal's limits; `None` when it is off. Checked either way, so that turning it on
    /// later is not when a typo shows.
    pub(super) fn validate(&self) -> Result<Option<JournalLimits>, Invalid> {
        checked("journal", self.enabled, self.max_mb, self.max_age)
    }
}

/// The limits of a log of the journal's format, checked, named after its `section`.
fn checked(section: &str, enabled: bool, max_mb: u64, max_age: Duration) -> Result<Option<JournalLimits>, Invalid> {
    let bad = |key: &str, m: &str| Err((format!("{section}.{key}"), m.to_owned()));
    if max_mb == 0 || max_mb > 1 << 20 {
        return bad("max_mb", "must be between 1 and 1048576");
    }
    if max_age < Duration::from_secs(60) {
        return bad("max_age", "must be at least 1m");
    }
    let limits =
        JournalLimits { max_bytes: max_mb << 20, max_age_ms: i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX) };
    Ok(enabled.then_some(limits))
}

/// `[event_log]` as written: on by default, as `edgewatch trace` needs it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEventLog {
    #[serde(default = "on")]
    pub enabled: bool,
    /// All segments together, in MiB: about 25 000 events of 600 bytes.
    #[serde(default = "default_event_mb")]
    pub max_mb: u64,
    /// A week: time to ask about last weekend's alarm.
    #[serde(default = "default_event_age", with = "humantime_serde")]
    pub max_age: Duration,
}

fn on() -> bool {
    true
}

fn default_event_mb() -> u64 {
    16
}

fn default_event_age() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

impl Default for RawEventLog {
    fn default() -> Self {
        RawEventLog { enabled: true, max_mb: default_event_mb(), max_age: default_event_age() }
    }
}

impl RawEventLog {
    /// The event log's limits; `None` when it is off.
    pub(super) fn validate(&self) -> Result<Option<JournalLimits>, Invalid> {
        checked("event_log", self.enabled, self.max_mb, self.max_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_limits_name_their_key_and_the_default_is_off() {
        assert_eq!(RawJournal::default().validate().expect("valid"), None);
        let on = RawJournal { enabled: true, ..RawJournal::default() }.validate().expect("valid");
        assert_eq!(on, Some(JournalLimits::default()));
        let e = RawJournal { max_mb: 0, ..RawJournal::default() }.validate().expect_err("invalid");
        assert_eq!(e.0, "journal.max_mb");
        let e =
            RawJournal { max_age: Duration::from_secs(5), ..RawJournal::default() }.validate().expect_err("invalid");
        assert_eq!(e.0, "journal.max_age");
        let on = RawEventLog::default().validate().expect("valid").expect("on by default");
        assert_eq!((on.max_bytes, on.max_age_ms), (16 << 20, 7 * 24 * 3_600_000));
        let e = RawEventLog { max_mb: 0, ..RawEventLog::default() }.validate().expect_err("invalid");
        assert_eq!(e.0, "event_log.max_mb");
    }
}
