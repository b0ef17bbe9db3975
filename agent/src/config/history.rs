//! The `[history]` section and the subscriptions' `remember`: raw, then checked.
//!
//! ```toml
//! [history]
//! fine = "1m"              # the fine period
//! coarse = "1h"            # the coarse period, a multiple of `fine`
//! fine_retention = "36h"   # how long each is kept on disk
//! coarse_retention = "60d"
//! max_mb = 128             # all history files together; the oldest go first
//! ```
//! The engine gets the periods, the time bounds and what to remember
//! ([`edgewatch_engine::history::HistoryConfig`]); the history log gets the disk's limits
//! ([`HistoryLimits`], whose defaults are the ones here).

use super::Invalid;
use super::Subscription;
use crate::history::HistoryLimits;
use edgewatch_engine::TopicPattern;
use edgewatch_engine::history::{HistoryConfig, Remember};
use serde::Deserialize;
use std::time::Duration;

/// `[history]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHistory {
    #[serde(default = "default_fine", with = "humantime_serde")]
    pub fine: Duration,
    #[serde(default = "default_coarse", with = "humantime_serde")]
    pub coarse: Duration,
    #[serde(default = "default_fine_retention", with = "humantime_serde")]
    pub fine_retention: Duration,
    #[serde(default = "default_coarse_retention", with = "humantime_serde")]
    pub coarse_retention: Duration,
    /// All history files together, in MiB.
    #[serde(default = "default_max_mb")]
    pub max_mb: u64,
    /// Readings timed further ahead of the gateway's clock are not kept (counted).
    #[serde(default = "default_max_future", with = "humantime_serde")]
    pub max_future: Duration,
    /// Readings timed further behind the gateway's clock are not kept (counted).
    #[serde(default = "default_max_past", with = "humantime_serde")]
    pub max_past: Duration,
    /// Most series with a period open at once.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
}

impl Default for RawHistory {
    fn default() -> Self {
        RawHistory {
            fine: default_fine(),
            coarse: default_coarse(),
            fine_retention: default_fine_retention(),
            coarse_retention: default_coarse_retention(),
            max_mb: default_max_mb(),
            max_future: default_max_future(),
            max_past: default_max_past(),
            max_series: default_max_series(),
        }
    }
}

/// A minute: a chart of the last hours at a resolution people read.
fn default_fine() -> Duration {
    Duration::from_secs(60)
}
/// An hour: hour-of-day baselines over weeks.
fn default_coarse() -> Duration {
    Duration::from_secs(3600)
}
/// "The same time yesterday" at the fine resolution, and the log's own default.
fn default_fine_retention() -> Duration {
    Duration::from_millis(HistoryLimits::default().fine_retention_ms.unsigned_abs())
}
/// Eight weeks of hour-of-day baselines.
fn default_coarse_retention() -> Duration {
    Duration::from_millis(HistoryLimits::default().coarse_retention_ms.unsigned_abs())
}
/// Holds ~1 280 series at the default retention (measured: docs/operations.md, "History").
fn default_max_mb() -> u64 {
    HistoryLimits::default().max_bytes >> 20
}
fn default_max_future() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_max_past() -> Duration {
    Duration::from_secs(3600)
}
/// Twice the 10 000 devices a gateway benchmark runs.
fn default_max_series() -> usize {
    20_000
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl RawHistory {
    /// Checks the section; `remember` comes from the subscriptions (see [`remembered`]).
    pub(super) fn validate(&self, remember: Vec<Remember>) -> Result<(HistoryConfig, HistoryLimits), Invalid> {
        let bad = |key: &str, m: &str| Err((format!("history.{key}"), m.to_owned()));
        let (fine, coarse) = (ms(self.fine), ms(self.coarse));
        if fine < 1_000 {
            return bad("fine", "must be at least 1s");
        }
        if coarse <= fine || coarse % fine != 0 {
            return bad("coarse", "must be a whole multiple of `fine`, and longer");
        }
        if coarse > 7 * 24 * 3_600_000 {
            return bad("coarse", "must be at most 7 days");
        }
        if self.fine_retention < self.fine {
            return bad("fine_retention", "must be at least `fine`");
        }
        if self.coarse_retention < self.coarse {
            return bad("coarse_retention", "must be at least `coarse`");
        }
        if self.max_mb == 0 {
            return bad("max_mb", "must be at least 1");
        }
        if self.max_series == 0 {
            return bad("max_series", "must be at least 1");
        }
        let engine = HistoryConfig {
            fine_ms: fine,
            coarse_ms: coarse,
            max_future_ms: ms(self.max_future),
            max_past_ms: ms(self.max_past),
            max_series: self.max_series,
            remember,
        };
        let disk = HistoryLimits {
            max_bytes: self.max_mb.saturating_mul(1024 * 1024),
            fine_ms: fine,
            coarse_ms: coarse,
            fine_retention_ms: ms(self.fine_retention),
            coarse_retention_ms: ms(self.coarse_retention),
        };
        Ok((engine, disk))
    }
}

/// The series a subscription remembers, as the engine matches them: its filter as the rules
/// see topics (after `strip_prefix`), with the first level it leaves open (`+`, or the level
/// `#` starts at) named `{device}`, which keys the series.
pub(super) fn remembered(path: &str, sub: &Subscription, fields: &[String]) -> Result<Option<Remember>, Invalid> {
    if fields.is_empty() {
        return Ok(None);
    }
    let mut seen: Vec<std::sync::Arc<str>> = Vec::with_capacity(fields.len());
    for f in fields {
        if f.is_empty() || f.chars().any(char::is_control) {
            return Err((format!("{path}.remember"), "field names must be non-empty text".into()));
        }
        if seen.iter().any(|s| **s == **f) {
            return Err((format!("{path}.remember"), format!("`{f}` is listed twice")));
        }
        seen.push(f.as_str().into());
    }
    let seen_by_rules = sub.filter.get(sub.strip_prefix.len()..).unwrap_or("");
    let mut named = false;
    let levels: Vec<&str> = seen_by_rules
        .split('/')
        .map(|l| match l {
            "+" if !named => {
                named = true;
                "{device}"
            }
            "#" if !named => {
                named = true;
                "{device}/#"
            }
            other => other,
        })
        .collect();
    let pattern = TopicPattern::parse(&levels.join("/")).map_err(|e| (format!("{path}.topic"), e.to_string()))?;
    Ok(Some(Remember { source: sub.filter.as_str().into(), pattern, fields: seen }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Format;

    fn sub(filter: &str, strip: &str) -> Subscription {
        Subscription {
            filter: filter.into(),
            pattern: TopicPattern::parse(filter).expect("valid filter"),
            qos: 1,
            format: Format::Auto,
            strip_prefix: strip.into(),
            schema: None,
            privacy: None,
        }
    }

    #[test]
    fn the_first_open_level_is_the_device() {
        let r = remembered("s", &sub("site/sensors/+/temperature", "site/"), &["temperature".into()])
            .expect("valid")
            .expect("remembers");
        let mut device = None;
        assert!(r.pattern.matches_with("sensors/t-01/temperature", |n, v| if n == "device" {
            device = Some(v.to_owned())
        }));
        assert_eq!(device.as_deref(), Some("t-01"));
        let r = remembered("s", &sub("sensors/#", ""), &["temperature".into()]).expect("valid").expect("remembers");
        assert!(r.pattern.matches("sensors/t-01/temperature"));
        assert!(r.pattern.matches("sensors/t-01"));
        assert_eq!(&*r.source, "sensors/#");
        assert!(remembered("s", &sub("sensors/#", ""), &[]).expect("valid").is_none());
        let e = remembered("subscriptions[0]", &sub("a/#", ""), &["x".into(), "x".into()]).expect_err("invalid");
        assert_eq!(e.0, "subscriptions[0].remember");
    }

    #[test]
    fn bad_periods_name_their_key() {
        let h = RawHistory { coarse: Duration::from_secs(90), ..RawHistory::default() };
        assert_eq!(h.validate(vec![]).expect_err("invalid").0, "history.coarse");
        let h = RawHistory { fine_retention: Duration::from_secs(1), ..RawHistory::default() };
        assert_eq!(h.validate(vec![]).expect_err("invalid").0, "history.fine_retention");
        let (engine, disk) = RawHistory::default().validate(vec![]).expect("valid");
        assert_eq!((engine.fine_ms, engine.coarse_ms, disk.max_bytes), (60_000, 3_600_000, 128 << 20));
    }
}
