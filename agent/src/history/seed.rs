//! Seeding rules' pasts from history: the hand-over that keeps the engine pure.
//!
//! ```text
//! load / reload ─▶ Engine::past_wanted (fields whose past started empty)
//!   ─▶ read_field: the roll-ups of that field, every key, over the span (one pass)
//!   ─▶ Engine::seed_past per key ─▶ Engine::past_seeded (never asked again)
//! ```
//!
//! The coarse resolution is used when it divides the rule's bucket width (it reaches
//! furthest back), else the fine one; a width neither divides is not seeded. A series is
//! handed to the rule under the key it was kept by (the device, for subscriptions), so a
//! rule keyed the same way starts with its history.

use super::{HistoryLimits, Resolution, read_field};
use edgewatch_engine::{Engine, Outputs, Timestamp};
use std::path::Path;

/// What seeding did, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SeedReport {
    /// Rule fields asked for.
    pub fields: usize,
    /// Keys seeded.
    pub keys: usize,
    /// Roll-ups merged into buckets; left out (outside the span, already filled, ...).
    pub merged: usize,
    pub ignored: usize,
}

/// Seeds every past the engine wants from the history in `dir`, at processing time `now`;
/// what changes is named in `out.touched`, for the caller to persist.
pub fn seed(engine: &mut Engine, dir: &Path, limits: &HistoryLimits, now: Timestamp, out: &mut Outputs) -> SeedReport {
    let mut report = SeedReport::default();
    for want in engine.past_wanted() {
        report.fields += 1;
        let res = [Resolution::Coarse, Resolution::Fine].into_iter().find(|r| want.every_ms % limits.period(*r) == 0);
        if let Some(res) = res {
            let since = now.millis().saturating_sub(want.span_ms + want.every_ms);
            match read_field(dir, &want.field, res, since, now.millis().saturating_add(1)) {
                Ok(by_key) => {
                    for (key, rollups) in &by_key {
                        match engine.seed_past(&want.rule, key, &want.field, limits.period(res), rollups, now, out) {
                            Ok(s) => {
                                report.keys += usize::from(s.merged > 0);
                                report.merged += s.merged;
                                report.ignored += s.ignored;
                            }
                            Err(error) => {
                                tracing::warn!(rule = %want.rule, %key, %error, "Past not seeded for this key.")
                            }
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(rule = %want.rule, field = %want.field, %error, "History unreadable; past not seeded.")
                }
            }
        }
        engine.past_seeded(&want.rule, &want.field);
    }
    if report.fields > 0 {
        tracing::info!(
            fields = report.fields,
            keys = report.keys,
            merged = report.merged,
            ignored = report.ignored,
            "Rules' pasts seeded from history."
        );
    }
    report
}
