//! The input journal: the raw inputs the agent processed, with their topic, payload and
//! arrival time, in append-only segment files under `<state_dir>/journal/`, bounded in bytes
//! and in age. `edgewatch backtest` and `edgewatch journal export` read it, while the agent
//! runs.
//!
//! ```text
//! Step::process ─▶ Journal::message (the record's frame, encoded into a chunk)
//!   ─▶ Journal::hand_over at each batch (try_send: a full queue skips the chunk, counted)
//!   ─▶ the journal thread ─▶ JournalLog::append_frames ─▶ <seq>-<created>.jnl, a frame a record
//!   ─▶ a new segment past journal.max_mb / 16 or an hour; the oldest deleted past
//!      journal.max_mb or journal.max_age (counted)
//! read / export / backtest (any process) ◀─ the segment files
//! ```
//!
//! Files rather than sled, like history: their size is exact, eviction is deleting a file,
//! and other processes read them while the agent writes. The journal is a record for
//! backtests, not part of durability: it is written to the OS within [`FLUSH_EVERY`] and
//! never fsync'd, so a SIGKILL loses what was still queued or buffered (under a fraction of
//! a second) and at most a torn last record, and a power cut what the kernel had not
//! written back. It never holds up processing: the engine loop encodes each input and hands
//! the batch's chunk to a bounded queue and goes on; when the disk is slow or full, inputs
//! are skipped and counted.
//!
//! # Format (published in docs/operations.md, "Input journal")
//! ```text
//! file     <seq>-<created>.jnl: seq counts up from 1 (10 digits), created is the wall
//!          clock (ms since the epoch) when the file was opened
//! frame    u32 LE body length, u32 LE CRC-32 (IEEE) of the body, body (crate::frames)
//! header   the first frame: "EWJRNL", version 1, varint created (ms)
//! record   every later frame: kind (0 message, 1 sensor link down, 2 link up),
//!          zigzag varint arrival time (ms since the epoch); a message then has its
//!          format (0 auto, 1 json, 2 scalar, 3 postcard), varint topic length, topic
//!          UTF-8 (as rules see it), and the payload: the rest of the body
//!          The event log (`crate::events`) uses the same files with kinds 3 (an event:
//!          varint outbox seq, 16 bytes id LE, varint topic length, topic, the CloudEvent:
//!          the rest), 4 (published: varint seq) and 5 (acknowledged: varint seq)
//! ```
//!
//! # Layout
//! - this file: the record, limits, errors, counts;
//! - `segment`: a file's name, header and records, and the scan of one file;
//! - `appender`: [`JournalLog`], the appender (recovery, rotation, the budget);
//! - `writer`: [`Journal`], its thread and the engine loop's handle;
//! - `read`: [`read`] for any process, and [`export`] in the replay format.

mod appender;
mod read;
mod segment;
mod writer;

pub use appender::{Appended, JournalLog, Recovered};
pub(crate) use read::message_line;
pub use read::{ExportError, ReadReport, export, read};
pub use writer::{CHUNK, Frames, Journal};

use crate::decode::Format;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// The journal directory under a state directory.
pub fn dir_in(state_dir: &Path) -> PathBuf {
    state_dir.join("journal")
}

/// How often the journal thread hands what it has to the OS when inputs keep coming (and
/// once the queue is empty): what a SIGKILL can lose, besides the queue.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Chunks of inputs waiting for the journal thread: one per batch of the engine loop, at most
/// [`CHUNK`] bytes each (at most 8 MiB in all). At 10k msg/s in batches of ~50, seconds of
/// inputs: a disk that stalls longer costs skipped inputs (counted), never a delayed one.
pub const QUEUE: usize = 128;

/// How much journal is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalLimits {
    /// Most bytes of all segment files together, exactly (headers included).
    pub max_bytes: u64,
    /// Segments whose every record is older than this are deleted (ms).
    pub max_age_ms: i64,
}

impl JournalLimits {
    /// A segment is closed, and a new one begun, past this size: the budget deletes in steps
    /// of 1/16 of itself, between 64 KiB and 16 MiB.
    pub fn segment_bytes(&self) -> u64 {
        (self.max_bytes / 16).clamp(64 << 10, 16 << 20)
    }

    /// ... or past this age: age retention deletes in steps of an hour at most (a 24th of
    /// `max_age` when that is shorter, and at least a minute).
    pub fn segment_ms(&self) -> i64 {
        (self.max_age_ms / 24).clamp(60_000, 3_600_000)
    }
}

impl Default for JournalLimits {
    /// 64 MiB and a day: a day at ~8 msg/s of 60-byte readings, or an hour at ~200 msg/s
    /// (docs/operations.md, "Input journal", has the bytes per message).
    fn default() -> Self {
        JournalLimits { max_bytes: 64 << 20, max_age_ms: 24 * 3_600_000 }
    }
}

/// One journaled input, as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    Message {
        t: i64,
        format: Format,
        topic: &'a str,
        payload: &'a [u8],
    },
    LinkDown {
        t: i64,
    },
    LinkUp {
        t: i64,
    },
    /// The event log's records (`crate::events`), in files of the same format: a composite
    /// event queued upstream as outbox entry `seq`, its id, topic and CloudEvent as sent;
    Event {
        t: i64,
        seq: u64,
        id: u128,
        topic: &'a str,
        body: &'a [u8],
    },
    /// outbox entry `seq` handed to the upstream connection;
    Published {
        t: i64,
        seq: u64,
    },
    /// and acknowledged by the upstream broker (at QoS 0: handed over).
    Acked {
        t: i64,
        seq: u64,
    },
}

impl Entry<'_> {
    /// Its arrival time, ms since the epoch.
    pub fn t(&self) -> i64 {
        match *self {
            Entry::Message { t, .. } | Entry::LinkDown { t } | Entry::LinkUp { t } => t,
            Entry::Event { t, .. } | Entry::Published { t, .. } | Entry::Acked { t, .. } => t,
        }
    }
}

/// A journal that cannot be opened, written or read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl JournalError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
        move |source| JournalError::Io { path: path.display().to_string(), source }
    }
}

/// What the journal did, for `/metrics` and the log.
#[derive(Debug, Default)]
pub struct JournalCounts {
    /// Inputs written.
    pub written: AtomicU64,
    /// Inputs not journaled: the queue was full (a slow disk), or the disk refused them.
    pub skipped: AtomicU64,
    /// Segments deleted to stay within `journal.max_mb` or `journal.max_age`, and their bytes.
    pub evicted_segments: AtomicU64,
    pub evicted_bytes: AtomicU64,
    /// Bytes of journal on disk.
    pub bytes: AtomicU64,
}

#[cfg(test)]
mod tests;
