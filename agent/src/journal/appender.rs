//! The journal's appender ([`JournalLog`], a plain struct): recovery at open, rotation, and
//! the byte and age budget.

use super::segment::{self, Segment};
use super::{Entry, JournalError, JournalLimits};
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bytes buffered before they are handed to the OS regardless of [`super::FLUSH_EVERY`].
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
