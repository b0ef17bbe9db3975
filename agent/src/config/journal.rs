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

/// `[journal]` and `[event_log]` as written: one type (and one parser) for both; a key left
/// out takes its section's default when checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJournal {
    /// Default: off for the journal, on for the event log (`edgewatch trace` needs it).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// All segments together, in MiB. Default: 64 for the journal; 16 for the event log,
    /// about 30 000 events.
    #[serde(default)]
    pub max_mb: Option<u64>,
    /// Default: a day for the journal (yesterday's traffic, for a backtest of today's edit); a
    /// week for the event log (time to ask about last weekend's alarm).
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
}

impl RawJournal {
    /// The journal's limits; `None` when it is off. Checked either way, so that turning it on
    /// later is not when a typo shows.
    pub(super) fn validate(&self) -> Result<Option<JournalLimits>, Invalid> {
        let d = JournalLimits::default();
        self.checked("journal", (false, d.max_bytes >> 20, Duration::from_millis(d.max_age_ms.unsigned_abs())))
    }

    /// The event log's limits; `None` when it is off.
    pub(super) fn validate_event_log(&self) -> Result<Option<JournalLimits>, Invalid> {
        self.checked("event_log", (true, 16, Duration::from_secs(7 * 24 * 3600)))
    }

    /// The limits of a log of the journal's format, with its `section`'s defaults, checked.
    fn checked(&self, section: &str, defaults: (bool, u64, Duration)) -> Result<Option<JournalLimits>, Invalid> {
        let bad = |key: &str, m: &str| Err((format!("{section}.{key}"), m.to_owned()));
        let max_mb = self.max_mb.unwrap_or(defaults.1);
        let max_age = self.max_age.unwrap_or(defaults.2);
        if max_mb == 0 || max_mb > 1 << 20 {
            return bad("max_mb", "must be between 1 and 1048576");
        }
        if max_age < Duration::from_secs(60) {
            return bad("max_age", "must be at least 1m");
        }
        let limits = JournalLimits {
            max_bytes: max_mb << 20,
            max_age_ms: i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX),
        };
        Ok(self.enabled.unwrap_or(defaults.0).then_some(limits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_limits_name_their_key_and_each_section_has_its_defaults() {
        assert_eq!(RawJournal::default().validate().expect("valid"), None, "the journal is off by default");
        let on = RawJournal { enabled: Some(true), ..RawJournal::default() }.validate().expect("valid");
        assert_eq!(on, Some(JournalLimits::default()));
        let e = RawJournal { max_mb: Some(0), ..RawJournal::default() }.validate().expect_err("invalid");
        assert_eq!(e.0, "journal.max_mb");
        let short = RawJournal { max_age: Some(Duration::from_secs(5)), ..RawJournal::default() };
        assert_eq!(short.validate().expect_err("invalid").0, "journal.max_age");
        let on = RawJournal::default().validate_event_log().expect("valid").expect("the event log is on by default");
        assert_eq!((on.max_bytes, on.max_age_ms), (16 << 20, 7 * 24 * 3_600_000));
        let written: RawJournal = toml::from_str("max_mb = 32").expect("parses");
        let on = written.validate_event_log().expect("valid").expect("on when not turned off");
        assert_eq!((on.max_bytes, on.max_age_ms), (32 << 20, 7 * 24 * 3_600_000), "the event log's age default");
        assert_eq!(short.validate_event_log().expect_err("invalid").0, "event_log.max_age");
    }
}
