//! History on disk: the roll-ups the engine closed ([`Closed`]), kept in append-only
//! segment files under `<state_dir>/history/`, bounded in bytes and in age.
//!
//! ```text
//! Outputs::closed ─▶ HistoryLog::append (before the batch is committed to sled; fsync'd)
//!   ─▶ one frame per segment touched: <res>-<slice>.seg, a file per resolution per slice
//!   ─▶ retention and the byte budget delete whole files, oldest slice first
//! read / series / export (any process, while the agent runs) ◀─ the segment files
//! ```
//!
//! Files rather than sled: their size is exact, eviction is deleting a file, they survive
//! a damaged database, and other processes read them while the agent writes.
//!
//! A record may be written twice: a crash after the append and before the sled commit
//! closes the same open roll-up again after the restart, with the same `opened` stamp.
//! Readers keep the last record of a (series, resolution, start, opened) and merge
//! ([`Rollup::merge`], in `opened` order) the records of a period that differ in `opened`
//! (a clock that jumped back reopened it).
//!
//! # Format (published in docs/operations.md, "History")
//! ```text
//! file     fine-YYYYMMDDTHH.seg (a UTC hour of period starts), coarse-YYYYMMDD.seg (a UTC
//!          day); a slice continues in <name>.1.seg, .2 ... when a file is damaged
//! frame    u32 LE body length, u32 LE CRC-32 (IEEE) of the body, body
//! header   the first frame: "EWHIST", version 1, resolution (0 fine, 1 coarse),
//!          varint slice start (ms), varint slice length (ms)
//! data     every later frame (one per append per file; split past 8 MiB):
//!          varint unit (ms), varint n, n × series definition
//!          (varint length, key UTF-8, varint length, field UTF-8; ids count from 0 per
//!          file), varint m, m × record (varint series id, varint (start - slice start) /
//!          unit, zigzag varint opened - start, Rollup::encode)
//! ```
//!
//! # Layout
//! - this file: limits, errors, and what the writer reports;
//! - `segment`: a file's name, its frames and their bodies, and the scan that reads them;
//! - `writer`: [`HistoryLog`], the appender: recovery at open, retention, the budget;
//! - `read`: [`read`], [`series`], [`export`], [`import`]: for any process;
//! - `show`: the `edgewatch history` command's arguments and rows;
//! - `seed`: [`seed`], rules' pasts filled from history at a load or reload.

mod read;
mod seed;
mod segment;
mod show;
mod writer;

pub use read::{export, import, read, read_field, series};
pub use seed::{SeedReport, seed};
pub use show::{Format, Row, parse_range, parse_resolution, parse_when, show, write_rows};
pub use writer::HistoryLog;

pub use edgewatch_engine::history::{Closed, Resolution, Rollup};
use std::path::{Path, PathBuf};

/// The history directory under a state directory.
pub fn dir_in(state_dir: &Path) -> PathBuf {
    state_dir.join("history")
}

/// How much history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most bytes of all segment files together, exactly (headers included).
    pub max_bytes: u64,
    /// The engine's fine period (ms): the unit records' starts are stored in.
    pub fine_ms: i64,
    /// The engine's coarse period (ms).
    pub coarse_ms: i64,
    /// Fine segments whose whole slice (an hour) is older than this are deleted.
    pub fine_retention_ms: i64,
    /// Coarse segments whose whole slice (a day) is older than this are deleted.
    pub coarse_retention_ms: i64,
}

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

impl Default for HistoryLimits {
    /// Measured (docs/operations.md, "History"): 1 000 series take ~61 MB of fine roll-ups
    /// (36 h plus the hour being written) and ~43 MB of coarse ones (60 days plus a day):
    /// 128 MiB holds ~1 280 series, room for faster sensors and longer names. 48 h and 90
    /// days would hold ~920.
    fn default() -> Self {
        HistoryLimits {
            max_bytes: 128 << 20,
            fine_ms: 60_000,
            coarse_ms: HOUR_MS,
            fine_retention_ms: 36 * HOUR_MS,
            coarse_retention_ms: 60 * DAY_MS,
        }
    }
}

impl HistoryLimits {
    /// Every number positive.
    pub fn check(&self) -> Result<(), HistoryError> {
        let bad = [
            (self.max_bytes == 0, "max_bytes must be positive"),
            (self.fine_ms <= 0 || self.coarse_ms <= 0, "periods must be positive"),
            (self.fine_retention_ms <= 0 || self.coarse_retention_ms <= 0, "retentions must be positive"),
        ];
        match bad.iter().find(|(is, _)| *is) {
            Some((_, why)) => Err(HistoryError::Limits(why)),
            None => Ok(()),
        }
    }

    pub(crate) fn period(&self, res: Resolution) -> i64 {
        match res {
            Resolution::Fine => self.fine_ms,
            Resolution::Coarse => self.coarse_ms,
        }
    }

    pub(crate) fn retention(&self, res: Resolution) -> i64 {
        match res {
            Resolution::Fine => self.fine_retention_ms,
            Resolution::Coarse => self.coarse_retention_ms,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("history limits: {0}")]
    Limits(&'static str),
    /// Writing an export or rows failed.
    #[error("history output: {0}")]
    Output(std::io::Error),
    #[error("history import, line {line}: {message}")]
    Import { line: u64, message: String },
}

impl HistoryError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HistoryError + '_ {
        move |source| HistoryError::Io { path: path.to_path_buf(), source }
    }
}

/// What [`HistoryLog::open`] found and repaired. Never fatal: report it once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Files whose tail was a torn or corrupt frame (a write cut short), cut back to their
    /// last sound frame; files left empty are removed.
    pub truncated_files: u64,
    pub truncated_bytes: u64,
    /// Files with a bad frame before their end: read up to it, never appended to again.
    pub damaged: Vec<Damage>,
}

impl Recovery {
    pub fn is_clean(&self) -> bool {
        self.truncated_files == 0 && self.damaged.is_empty()
    }
}

/// A segment file with a bad frame before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub path: PathBuf,
    /// Offset of the first bad frame: what comes before it is read.
    pub at: u64,
    pub why: &'static str,
}

/// Whole segment files deleted, and what they held.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub files: u64,
    pub bytes: u64,
    /// Records in them (a replayed record counts twice).
    pub records: u64,
}

/// What one [`HistoryLog::append`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Records written.
    pub records: u64,
    /// Bytes written (frames, and headers of new files).
    pub bytes: u64,
    /// Deleted for room: the byte budget was reached.
    pub evicted: Removed,
    /// Deleted for age: their slice ended more than the retention ago.
    pub expired: Removed,
    /// Not written: their slice is past the retention already.
    pub too_old: u64,
    /// Not written: a start before 1970 or after 9999 (a file could not be named).
    pub out_of_range: u64,
    /// Not written: they did not fit the budget even with every other file deleted.
    pub dropped: u64,
}

/// Disk use, as [`HistoryLog::usage`] reports it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub files: u64,
    /// Earliest period start kept at each resolution.
    pub oldest_fine: Option<i64>,
    pub oldest_coarse: Option<i64>,
}

#[cfg(test)]
mod tests;
