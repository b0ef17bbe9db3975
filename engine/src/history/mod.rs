//! The past, kept small: per-series roll-ups at two resolutions.
//!
//! ```text
//! event (after dedup and reordering) ─▶ which series it feeds: the `remember` of the
//!   subscriptions (HistoryConfig::remember) and of the rules whose pattern matched, by key
//!   ─▶ Recorder::fold: the open fine and coarse roll-ups of (key, field) ─▶ Touched::Series
//! processing time passes a period's end (+ lateness) ─▶ Recorder::close_due ─▶ Closed
//!   ─▶ Outputs::closed ─▶ the agent writes them to its history log, once each
//! ```
//!
//! The open roll-ups are engine state like any other (exported, imported, snapshotted); a
//! closed one leaves the engine for good. The engine never reads history back from disk:
//! the agent may hand some in to seed a rule's span (see `past`).
//!
//! - [`rollup`]: [`Rollup`] and its compact encoding.
//! - `recorder`: [`Recorder`], the open roll-ups and their closing.

mod recorder;
pub mod rollup;

pub use recorder::{Open, Recorder, SeriesState};
pub use rollup::{Rollup, RollupError};

use crate::topic::TopicPattern;
use std::sync::Arc;

/// Which of the two resolutions a roll-up is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resolution {
    Fine,
    Coarse,
}

impl Resolution {
    pub const ALL: [Resolution; 2] = [Resolution::Fine, Resolution::Coarse];

    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Fine => "fine",
            Resolution::Coarse => "coarse",
        }
    }
}

/// A roll-up whose period is over: written once by the agent, never changed again.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    /// The series' key (usually the device).
    pub key: Arc<str>,
    /// The field.
    pub field: Arc<str>,
    pub resolution: Resolution,
    /// Start of the period, ms since the epoch (event time), a multiple of the resolution.
    pub start: i64,
    /// Processing time at which this roll-up was opened. A restart after a crash may close
    /// the same open roll-up again (restored from state), with the same `opened`: a reader
    /// keeps the last record of a (series, resolution, start, opened) and merges records
    /// with different `opened` (a clock that jumped back reopened the period).
    pub opened: i64,
    pub rollup: Rollup,
}

/// Series fed by every event whose topic matches, whatever the rules: `remember` of a
/// subscription in the agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remember {
    /// Who asked, for the skip counts (the subscription's filter).
    pub source: Arc<str>,
    pub pattern: TopicPattern,
    pub fields: Vec<Arc<str>>,
}

/// How history is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// The fine period, ms (default one minute).
    pub fine_ms: i64,
    /// The coarse period, ms, a multiple of `fine_ms` (default one hour).
    pub coarse_ms: i64,
    /// Readings timed more than this ahead of processing time are not folded (counted).
    pub max_future_ms: i64,
    /// Readings timed more than this before processing time are not folded (counted).
    pub max_past_ms: i64,
    /// Most series with an open roll-up; readings of further series are counted, not kept.
    pub max_series: usize,
    /// Series from the configuration (rules add theirs with `remember`).
    pub remember: Vec<Remember>,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            fine_ms: 60_000,
            coarse_ms: 3_600_000,
            max_future_ms: 5 * 60_000,
            max_past_ms: 3_600_000,
            max_series: 20_000,
            remember: Vec::new(),
        }
    }
}

/// Why a reading was not folded into history; counted per source (subscription filter or
/// rule name), never a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Skip {
    /// The field is not in the payload.
    Missing,
    /// The field is there but not a number.
    NotNumeric,
    /// NaN or an infinity (for a rule's `past`, also beyond ±10^15: see `past::MAX_READING`).
    NonFinite,
    /// Timed too far ahead of, or behind, processing time (for a rule's `past`: older than
    /// the span it keeps).
    OutOfRange,
    /// `max_series` series are open already.
    Full,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Missing => "missing",
            Skip::NotNumeric => "not_numeric",
            Skip::NonFinite => "non_finite",
            Skip::OutOfRange => "out_of_range",
            Skip::Full => "full",
        }
    }
}
