//! The journal's thread ([`Journal`], the handle the engine loop holds): records encoded
//! where the inputs are ([`Frames`]), handed over in chunks, written by the appender
//! ([`super::appender::JournalLog`]) on a thread of its own.

use super::appender::{Appended, JournalLog, Recovered};
use super::segment;
use super::{Entry, FLUSH_EVERY, JournalCounts, JournalError, JournalLimits, QUEUE};
use crate::decode::Format;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};

/// Record frames, encoded where the inputs are (the engine loop), so that the journal
/// costs the engine loop a copy and a checksum per input, and a hand-over per batch: no
/// allocation and no thread wake-up per input.
#[derive(Debug, Default)]
pub struct Frames {
    buf: Vec<u8>,
    scratch: Vec<u8>,
    records: u64,
}

impl Frames {
    pub fn push(&mut self, entry: &Entry<'_>) {
        segment::put_entry(&mut self.buf, &mut self.scratch, entry);
        self.records += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.buf.len()
    }
}

/// A chunk of frames on its way to the journal thread, and how many records it holds.
#[derive(Debug)]
struct Chunk {
    frames: Vec<u8>,
    records: u64,
}

/// The engine loop's handle on the journal: inputs are encoded into a chunk, and each chunk
/// goes to a bounded queue at the end of a batch ([`Journal::hand_over`]) or past
/// [`CHUNK`] bytes; a thread of its own writes them. Dropping it hands over what it holds and
/// stops the thread after it has written the queue.
#[derive(Debug)]
pub struct Journal {
    pending: Frames,
    tx: Option<SyncSender<Chunk>>,
    thread: Option<std::thread::JoinHandle<()>>,
    counts: Arc<JournalCounts>,
    /// What its messages call it: `journal`, `event log`.
    name: &'static str,
}

/// A chunk is handed over once it holds this much, batch or not.
pub const CHUNK: usize = 64 << 10;

impl Journal {
    /// Opens the journal in `dir` and starts its thread.
    pub fn start(
        dir: &Path,
        limits: JournalLimits,
        counts: Arc<JournalCounts>,
    ) -> Result<(Journal, Recovered), JournalError> {
        Journal::start_named(dir, limits, counts, "journal")
    }

    /// Opens a log of this format in `dir` (the input journal, the event log) and starts its
    /// thread; `name` is what its messages call it.
    pub fn start_named(
        dir: &Path,
        limits: JournalLimits,
        counts: Arc<JournalCounts>,
        name: &'static str,
    ) -> Result<(Journal, Recovered), JournalError> {
        let (log, recovered) = JournalLog::open(dir, limits)?;
        counts.bytes.store(log.bytes(), Relaxed);
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let thread_counts = counts.clone();
        let thread = std::thread::Builder::new()
            .name(format!("edgewatch-{}", name.replace(' ', "-")))
            .spawn(move || write_loop(log, &rx, &thread_counts, name))
            .map_err(JournalError::io(dir))?;
        Ok((Journal { pending: Frames::default(), tx: Some(tx), thread: Some(thread), counts, name }, recovered))
    }

    /// Journals a message.
    pub fn message(&mut self, t: i64, format: Format, topic: &str, payload: &[u8]) {
        self.record(&Entry::Message { t, format, topic, payload });
    }

    /// Journals the sensor link going down or up (absence detection pauses meanwhile).
    pub fn link(&mut self, t: i64, up: bool) {
        self.record(&if up { Entry::LinkUp { t } } else { Entry::LinkDown { t } });
    }

    /// Adds a record to the chunk being built.
    pub fn record(&mut self, entry: &Entry<'_>) {
        self.pending.push(entry);
        if self.pending.len() >= CHUNK {
            self.hand_over();
        }
    }

    /// Hands what is held to the journal thread, unless its queue is full (the inputs in it
    /// are then skipped, counted).
    pub fn hand_over(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let chunk = Chunk { frames: std::mem::take(&mut self.pending.buf), records: self.pending.records };
        self.pending.records = 0;
        let Some(tx) = &self.tx else { return };
        match tx.try_send(chunk) {
            Ok(()) => {}
            Err(TrySendError::Full(c)) | Err(TrySendError::Disconnected(c)) => {
                if self.counts.skipped.fetch_add(c.records, Relaxed) == 0 {
                    let log = self.name;
                    tracing::warn!(queue = QUEUE, log, "Log behind: records skipped from it (counted).");
                }
                // Its buffer is reused.
                self.pending.buf = c.frames;
                self.pending.buf.clear();
            }
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.hand_over();
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn wall_clock() -> i64 {
    crate::wall_clock().millis()
}

/// The journal thread: writes what the queue brings, hands it to the OS at least every
/// [`FLUSH_EVERY`], and applies the age limit when idle.
fn write_loop(mut log: JournalLog, rx: &Receiver<Chunk>, counts: &JournalCounts, name: &'static str) {
    let mut last_flush = std::time::Instant::now();
    let mut failing = false;
    let mut note = |result: Result<Appended, JournalError>, records: u64, log: &JournalLog| {
        match result {
            Ok(a) => {
                counts.written.fetch_add(records * u64::from(a.written), Relaxed);
                counts.skipped.fetch_add(records * u64::from(!a.written), Relaxed);
                if a.evicted_segments > 0 {
                    counts.evicted_segments.fetch_add(a.evicted_segments, Relaxed);
                    if counts.evicted_bytes.fetch_add(a.evicted_bytes, Relaxed) == 0 {
                        tracing::info!(
                            log = name,
                            segments = a.evicted_segments,
                            bytes = a.evicted_bytes,
                            "Log full or old: the oldest segments go first from now on (counted)."
                        );
                    }
                }
                failing = false;
            }
            Err(error) => {
                counts.skipped.fetch_add(records, Relaxed);
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(%error, log = name, "Log not written: records skipped until the disk takes them again.");
                }
            }
        }
        counts.bytes.store(log.bytes(), Relaxed);
    };
    let flushed = Appended { written: true, ..Appended::default() };
    loop {
        match rx.recv_timeout(FLUSH_EVERY) {
            Ok(chunk) => {
                let result = log.append_frames(&chunk.frames, wall_clock());
                note(result, chunk.records, &log);
                if last_flush.elapsed() >= FLUSH_EVERY {
                    note(log.flush().map(|()| flushed), 0, &log);
                    last_flush = std::time::Instant::now();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let result = log.flush().and_then(|()| log.expire(wall_clock()));
                note(result.map(|a| Appended { written: true, ..a }), 0, &log);
                last_flush = std::time::Instant::now();
            }
            Err(RecvTimeoutError::Disconnected) => {
                note(log.flush().map(|()| flushed), 0, &log);
                return;
            }
        }
    }
}
