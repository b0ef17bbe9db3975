//! The `[journal]` section: raw, then checked.
//!
//! ```toml
//! [journal]
//! enabled = false   # keep the raw inputs for `edgewatch backtest` and `journal export`
//! max_mb = 64       # all segments together; the oldest go first
//! max_age = "24h"   # segments whose every input is older are deleted
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
        let bad = |key: &str, m: &str| Err((format!("journal.{key}"), m.to_owned()));
        if self.max_mb == 0 || self.max_mb > 1 << 20 {
            return bad("max_mb", "must be between 1 and 1048576");
        }
        if self.max_age < Duration::from_secs(60) {
            return bad("max_age", "must be at least 1m");
        }
        let limits = JournalLimits {
            max_bytes: self.max_mb << 20,
            max_age_ms: i64::try_from(self.max_age.as_millis()).unwrap_or(i64::MAX),
        };
        Ok(self.enabled.then_some(limits))
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
    }
}
