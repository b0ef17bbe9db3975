//! The journal's appender ([`JournalLog`], a plain struct: recovery at open, rotation, the
//! byte and age budget) and its thread ([`Journal`], the handle the engine loop holds).

use super::segment::{self, Segment};
use super::{Entry, FLUSH_EVERY, JournalCounts, JournalError, JournalLimits, QUEUE};
use crate::decode::Format;
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};

/// Bytes buffered before they are handed to the OS regardless of [`FLUSH_EVERY`].
const BUFFER: usize = 64 << 10;

/// What opening the journal found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub segments: usize,
    pub bytes: u64,
    /// Bytes of a torn last record cut off the newest segment.
    pub torn: u64,
}

/// What an append did besides writing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// `false`: the record alone is larger than the whole budget; it was skipped.
    pub written: bool,
    pub evicted_segments: u64,
    pub evicted_bytes: u64,
}

#[derive(Debug)]
struct Open {
    seg: Segment,
    file: std::fs::File,
    /// Bytes in the file and in the buffer.
    bytes: u64,
}

/// The appender: one open segment at a time, the closed ones oldest first.
#[derive(Debug)]
pub struct JournalLog {
    dir: PathBuf,
    limits: JournalLimits,
    /// Closed segments, oldest first, with their sizes.
    closed: VecDeque<(Segment, u64)>,
    open: Option<Open>,
    next_seq: u64,
    /// All segments' bytes, the buffer's included: what the budget holds to.
    bytes: u64,
    /// Frames not yet handed to the OS.
    buf: Vec<u8>,
    /// A record's body and frame, being built (kept for their capacity).
    scratch: Vec<u8>,
    frame: Vec<u8>,
}

impl JournalLog {
    /// Opens the journal in `dir` (made if missing), cutting a torn last record off the
    /// newest segment. Appends go to a new segment.
    pub fn open(dir: &Path, limits: JournalLimits) -> Result<(JournalLog, Recovered), JournalError> {
        std::fs::create_dir_all(dir).map_err(JournalError::io(dir))?;
        let mut closed = VecDeque::new();
        let mut recovered = Recovered::default();
        let segments = segment::list(dir)?;
        let newest = segments.last().map(|s| s.seq);
        for seg in segments {
            let mut len = std::fs::metadata(&seg.path).map_err(JournalError::io(&seg.path))?.len();
            if Some(seg.seq) == newest {
                let scanned = segment::scan(&seg.path, |_| {}, |_, _| {}).map_err(JournalError::io(&seg.path))?;
                if segment::torn(&scanned) {
                    let file = std::fs::OpenOptions::new().write(true).open(&seg.path);
                    file.and_then(|f| f.set_len(scanned.good)).map_err(JournalError::io(&seg.path))?;
                    recovered.torn = len - scanned.good;
                    len = scanned.good;
                }
            }
            recovered.segments += 1;
            recovered.bytes += len;
            closed.push_back((seg, len));
        }
        let next_seq = newest.map_or(1, |s| s + 1);
        let log = JournalLog {
            dir: dir.to_owned(),
            limits,
            closed,
            open: None,
            next_seq,
            bytes: recovered.bytes,
            buf: Vec::with_capacity(BUFFER),
            scratch: Vec::new(),
            frame: Vec::new(),
        };
        Ok((log, recovered))
    }

    /// Bytes on disk (and buffered).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends one record at wall-clock time `now` (see [`JournalLog::append_frames`]).
    pub fn append(&mut self, entry: &Entry<'_>, now: i64) -> Result<Appended, JournalError> {
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        segment::put_entry(&mut frame, &mut self.scratch, entry);
        let done = self.append_frames(&frame, now);
        self.frame = frame;
        done
    }

    /// Appends whole record frames (as [`Frames`] encodes them) at wall-clock time `now`: in
    /// a new segment when the open one is full or old, after deleting the oldest segments the
    /// budget needs. Frames larger than half the budget together are skipped.
    pub fn append_frames(&mut self, frames: &[u8], now: i64) -> Result<Appended, JournalError> {
        let len = frames.len() as u64;
        let mut done = Appended::default();
        if len > self.limits.max_bytes / 2 {
            return Ok(done);
        }
        let rotate = match &self.open {
            None => true,
            Some(o) => {
                let age = now.saturating_sub(o.seg.created);
                o.bytes + len > self.limits.segment_bytes() || !(0..self.limits.segment_ms()).contains(&age)
            }
        };
        if rotate {
            self.close()?;
        }
        self.expire_into(now, &mut done);
        while self.bytes + len + 64 > self.limits.max_bytes && !self.closed.is_empty() {
            self.evict_oldest(&mut done)?;
        }
        if self.open.is_none() {
            self.open_new(now)?;
        }
        self.buf.extend_from_slice(frames);
        self.bytes += len;
        if let Some(o) = &mut self.open {
            o.bytes += len;
        }
        if self.buf.len() >= BUFFER {
            self.flush()?;
        }
        done.written = true;
        Ok(done)
    }

    /// Deletes the segments whose every record is older than `journal.max_age` at `now`.
    pub fn expire(&mut self, now: i64) -> Result<Appended, JournalError> {
        let mut done = Appended::default();
        self.expire_into(now, &mut done);
        Ok(done)
    }

    fn expire_into(&mut self, now: i64, done: &mut Appended) {
        let cutoff = now.saturating_sub(self.limits.max_age_ms);
        // A segment's records all came before the next segment was opened.
        loop {
            let next_created = self.closed.get(1).map(|(s, _)| s.created).or(self.open.as_ref().map(|o| o.seg.created));
            match (self.closed.front(), next_created) {
                (Some(_), Some(next)) if next <= cutoff => {
                    if self.evict_oldest(done).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    fn evict_oldest(&mut self, done: &mut Appended) -> Result<(), JournalError> {
        let Some((seg, len)) = self.closed.pop_front() else { return Ok(()) };
        match std::fs::remove_file(&seg.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                self.closed.push_front((seg.clone(), len));
                return Err(JournalError::io(&seg.path)(e));
            }
        }
        self.bytes -= len;
        done.evicted_segments += 1;
        done.evicted_bytes += len;
        Ok(())
    }

    fn open_new(&mut self, now: i64) -> Result<(), JournalError> {
        let seg = Segment { seq: self.next_seq, created: now, path: self.dir.join(Segment::name(self.next_seq, now)) };
        self.next_seq += 1;
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&seg.path)
            .map_err(JournalError::io(&seg.path))?;
        let mut head = Vec::new();
        segment::put_header(&mut head, now);
        self.buf.splice(0..0, head.iter().copied());
        self.bytes += head.len() as u64;
        self.open = Some(Open { seg, file, bytes: head.len() as u64 });
        Ok(())
    }

    /// Closes the open segment, after writing what is buffered.
    fn close(&mut self) -> Result<(), JournalError> {
        let flushed = self.flush();
        if let Some(o) = self.open.take() {
            self.closed.push_back((o.seg, o.bytes));
        }
        flushed
    }

    /// Hands what is buffered to the OS. On an error the segment is given up (what was cut
    /// short in it is a torn tail to readers) and the next append begins a new one; the
    /// buffered records are lost.
    pub fn flush(&mut self) -> Result<(), JournalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(o) = &mut self.open else {
            self.buf.clear();
            return Ok(());
        };
        let result = o.file.write_all(&self.buf);
        self.buf.clear();
        if let Err(e) = result {
            let o = self.open.take().expect("open: checked above");
            // The file's real size counts from now on.
            let len = std::fs::metadata(&o.seg.path).map(|m| m.len()).unwrap_or(0);
            self.bytes = self.bytes - o.bytes + len;
            let path = o.seg.path.clone();
            self.closed.push_back((o.seg, len));
            return Err(JournalError::io(&path)(e));
        }
        Ok(())
    }
}

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
