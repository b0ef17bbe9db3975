//! One segment file: its name, its frames and their bodies (the format is in the parent's
//! `//!`), and [`scan`], the one reader of a file: for the writer's recovery at open and
//! for every read.
//!
//! A bad frame is told apart as follows. At the end of the file (nothing sound after it) it
//! is a write cut short: [`End::Torn`], cut off by the writer, silently skipped by readers
//! (the writer may be in the middle of it). With a sound frame somewhere after it, it is
//! damage: [`End::Damaged`], reported, and the file is read no further.

use super::{HistoryError, Resolution, Rollup};
use edgewatch_engine::Timestamp;
use edgewatch_engine::history::rollup::{get_varint, put_varint, unzigzag, zigzag};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Fine segments hold an hour of period starts each: retention and the budget delete in
/// steps of ~1.7 MB at 1 000 series, and a file's series definitions are ~1 % of it.
pub(crate) const FINE_SLICE_MS: i64 = 3_600_000;
/// Coarse segments hold a day.
pub(crate) const COARSE_SLICE_MS: i64 = 86_400_000;
/// The latest period start a file can be named for (9999-12-31T23:59:59.999Z).
pub(crate) const LATEST_START: i64 = 253_402_300_799_999;
/// A writer starts a new frame once a body passes this (a minute of 20 000 series is ~1 MB).
pub(crate) const FRAME_TARGET: usize = 8 << 20;
/// No sound frame is longer: a longer length is torn or damaged.
const MAX_FRAME: u32 = 64 << 20;
const MAGIC: &[u8; 6] = b"EWHIST";
const VERSION: u8 = 1;

/// A series: key and field.
pub(crate) type Series = (Arc<str>, Arc<str>);

pub(crate) fn slice_ms(res: Resolution) -> i64 {
    match res {
        Resolution::Fine => FINE_SLICE_MS,
        Resolution::Coarse => COARSE_SLICE_MS,
    }
}

/// A segment file: its slice of period starts, resolution, and part (a slice continues in a
/// new part when its file is damaged). Ordered oldest slice first, fine before coarse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SegmentId {
    pub slice_start: i64,
    pub res: Resolution,
    pub part: u32,
}

impl SegmentId {
    /// The first part of the slice holding `start` (which must be in 0..=LATEST_START).
    pub fn of(res: Resolution, start: i64) -> SegmentId {
        let s = slice_ms(res);
        SegmentId { slice_start: start.div_euclid(s) * s, res, part: 0 }
    }

    pub fn slice_end(&self) -> i64 {
        self.slice_start + slice_ms(self.res)
    }

    /// `fine-20261204T13.seg`, `coarse-20261204.seg`, `fine-20261204T13.1.seg`.
    pub fn file_name(&self) -> String {
        let t = Timestamp(self.slice_start).to_rfc3339(); // 2026-12-04T13:00:00.000Z
        let date: String = t.get(..10).unwrap_or_default().chars().filter(|c| *c != '-').collect();
        let stem = match self.res {
            Resolution::Fine => format!("fine-{date}T{}", t.get(11..13).unwrap_or_default()),
            Resolution::Coarse => format!("coarse-{date}"),
        };
        match self.part {
            0 => format!("{stem}.seg"),
            n => format!("{stem}.{n}.seg"),
        }
    }

    /// The segment a file name names; `None` for any other name (left alone).
    pub fn parse(name: &str) -> Option<SegmentId> {
        let stem = name.strip_suffix(".seg")?;
        let (stem, part) = match stem.split_once('.') {
            Some((s, p)) => (s, p.parse().ok()?),
            None => (stem, 0),
        };
        let (res, date, hour) = match stem.split_once('-')? {
            ("fine", when) => {
                let (date, hour) = when.split_once('T')?;
                (Resolution::Fine, date, hour)
            }
            ("coarse", date) => (Resolution::Coarse, date, "00"),
            _ => return None,
        };
        if date.len() != 8 || hour.len() != 2 || !date.bytes().chain(hour.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let text = format!("{}-{}-{}T{hour}:00:00Z", &date[..4], &date[4..6], &date[6..]);
        let t = humantime::parse_rfc3339(&text).ok()?;
        let ms = i64::try_from(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()?;
        let id = SegmentId { slice_start: ms, res, part };
        // Canonical names only: one name per segment (no `.0`, no `T05` on a coarse file).
        (id.file_name() == name).then_some(id)
    }
}

/// The segment files in `dir`, oldest first; none if it does not exist.
pub(crate) fn list(dir: &Path) -> Result<Vec<(SegmentId, PathBuf)>, HistoryError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(HistoryError::io(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(HistoryError::io(dir))?;
        if let Some(id) = entry.file_name().to_str().and_then(SegmentId::parse) {
            out.push((id, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Appends `body` as a frame.
pub(crate) fn put_frame(out: &mut Vec<u8>, body: &[u8]) {
    // The writer keeps bodies under FRAME_TARGET plus one record: far below 4 GiB.
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
}

/// The header frame of a new file.
pub(crate) fn put_header(out: &mut Vec<u8>, id: &SegmentId) {
    let mut body = MAGIC.to_vec();
    body.push(VERSION);
    body.push(res_byte(id.res));
    put_varint(&mut body, id.slice_start as u64);
    put_varint(&mut body, slice_ms(id.res) as u64);
    put_frame(out, &body);
}

fn res_byte(res: Resolution) -> u8 {
    match res {
        Resolution::Fine => 0,
        Resolution::Coarse => 1,
    }
}

/// The body of a data frame, being built.
#[derive(Debug, Default)]
pub(crate) struct DataBody {
    defs: Vec<u8>,
    n_defs: u64,
    records: Vec<u8>,
    n_records: u64,
}

impl DataBody {
    /// Defines the next series id of the file.
    pub fn define(&mut self, key: &str, field: &str) {
        for s in [key, field] {
            put_varint(&mut self.defs, s.len() as u64);
            self.defs.extend_from_slice(s.as_bytes());
        }
        self.n_defs += 1;
    }

    /// A record; `index` is (start - slice start) / unit.
    pub fn record(&mut self, series: u32, index: u64, start: i64, opened: i64, rollup: &Rollup) {
        put_varint(&mut self.records, u64::from(series));
        put_varint(&mut self.records, index);
        put_varint(&mut self.records, zigzag(opened.wrapping_sub(start)));
        rollup.encode(&mut self.records);
        self.n_records += 1;
    }

    pub fn len(&self) -> usize {
        self.defs.len() + self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.n_records == 0
    }

    /// Appends the frame and empties the body.
    pub fn finish(&mut self, unit: i64, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(self.len() + 16);
        put_varint(&mut body, unit as u64);
        put_varint(&mut body, self.n_defs);
        body.append(&mut self.defs);
        put_varint(&mut body, self.n_records);
        body.append(&mut self.records);
        put_frame(out, &body);
        *self = DataBody::default();
    }
}

/// A record as read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Record {
    pub series: u32,
    pub start: i64,
    pub opened: i64,
    pub rollup: Rollup,
}

/// Where a scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Clean,
    /// A bad frame with nothing sound after it: a write cut short (or under way).
    Torn,
    /// A bad frame at `at` with a sound frame after it.
    Damaged {
        at: u64,
        why: &'static str,
    },
}

/// What a scan of one file found.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Series by id.
    pub series: Vec<Series>,
    pub records: u64,
    pub oldest: Option<i64>,
    /// Bytes of sound frames from the start.
    pub good: u64,
    /// The file's length when the scan began.
    pub len: u64,
    pub end: End,
}

/// Reads the file of segment `id` frame by frame, handing each record and its series to
/// `each`, up to the first bad frame. Reads no further than the length the file had when
/// the scan began, so a frame being appended meanwhile is not seen.
pub(crate) fn scan(path: &Path, id: &SegmentId, mut each: impl FnMut(&Series, &Record)) -> std::io::Result<Scan> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut input = std::io::BufReader::with_capacity(1 << 16, (&mut file).take(len));
    let mut scan = Scan { series: Vec::new(), records: 0, oldest: None, good: 0, len, end: End::Clean };
    let (mut body, mut records, mut slice_start) = (Vec::new(), Vec::new(), None);
    let bad = loop {
        let remaining = len - scan.good;
        if remaining == 0 {
            break None;
        }
        let mut head = [0u8; 8];
        if remaining < 8 {
            break Some("frame header cut short");
        }
        match input.read_exact(&mut head) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Some("file cut while read"),
            read => read?,
        }
        let blen = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if blen > MAX_FRAME || 8 + u64::from(blen) > remaining {
            break Some("frame length past the end of the file");
        }
        body.resize(blen as usize, 0);
        match input.read_exact(&mut body) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Some("file cut while read"),
            read => read?,
        }
        if crc32fast::hash(&body) != crc {
            break Some("checksum mismatch");
        }
        let parsed = match slice_start {
            None => header(&body, id).map(|start| slice_start = Some(start)),
            Some(start) => data(&body, start..id.slice_end(), &mut scan.series, &mut records),
        };
        if let Err(why) = parsed {
            // The checksum held: not a cut-short write, whatever follows.
            scan.end = End::Damaged { at: scan.good, why };
            return Ok(scan);
        }
        for r in records.drain(..) {
            scan.records += 1;
            scan.oldest = Some(scan.oldest.map_or(r.start, |o| o.min(r.start)));
            if let Some(s) = scan.series.get(r.series as usize) {
                each(s, &r);
            }
        }
        scan.good += 8 + u64::from(blen);
    };
    if let Some(why) = bad {
        drop(input);
        file.seek(SeekFrom::Start(scan.good))?;
        let mut rest = Vec::new();
        file.take(len - scan.good).read_to_end(&mut rest)?;
        scan.end = if sound_frame_in(&rest) { End::Damaged { at: scan.good, why } } else { End::Torn };
    }
    Ok(scan)
}

/// Is there a sound frame at some offset past the first byte of `rest`? Only called on a
/// bad frame; a CRC-32 that matches by chance is a 1 in 4 billion event per offset tried.
fn sound_frame_in(rest: &[u8]) -> bool {
    (1..rest.len().saturating_sub(8)).any(|at| {
        let word = |o: usize| u32::from_le_bytes([rest[o], rest[o + 1], rest[o + 2], rest[o + 3]]);
        let blen = word(at) as usize;
        let body = at + 8;
        blen > 0 && blen <= rest.len() - body && crc32fast::hash(&rest[body..body + blen]) == word(at + 4)
    })
}

/// Checks a header against the segment its file name names; its slice start.
fn header(body: &[u8], id: &SegmentId) -> Result<i64, &'static str> {
    let rest = body.strip_prefix(MAGIC.as_slice()).ok_or("not a history segment")?;
    match rest {
        [VERSION, res, ..] if *res == res_byte(id.res) => {
            let mut at = 2;
            let start = get_varint(rest, &mut at).map_err(|_| "bad header")?;
            let slice = get_varint(rest, &mut at).map_err(|_| "bad header")?;
            if start != id.slice_start as u64 || slice != slice_ms(id.res) as u64 || at != rest.len() {
                return Err("header names another slice than the file name");
            }
            Ok(id.slice_start)
        }
        [VERSION, ..] => Err("header names another resolution than the file name"),
        _ => Err("unknown segment version"),
    }
}

/// Parses a data body of the slice `slice`: its definitions are appended to `series`, its
/// records to `out`; nothing is appended if it does not parse.
fn data(
    body: &[u8],
    slice: std::ops::Range<i64>,
    series: &mut Vec<Series>,
    out: &mut Vec<Record>,
) -> Result<(), &'static str> {
    let mut at = 0;
    let varint = |at: &mut usize| get_varint(body, at).map_err(|_| "bad varint");
    let unit = i64::try_from(varint(&mut at)?).ok().filter(|u| *u > 0).ok_or("bad unit")?;
    let n_defs = varint(&mut at)?;
    let mut defs = Vec::new();
    for _ in 0..n_defs {
        let mut text = || -> Result<Arc<str>, &'static str> {
            let n = usize::try_from(varint(&mut at)?).map_err(|_| "bad length")?;
            let bytes = body.get(at..at.saturating_add(n)).ok_or("definition cut short")?;
            at += n;
            std::str::from_utf8(bytes).map(Arc::from).map_err(|_| "series name not UTF-8")
        };
        defs.push((text()?, text()?));
    }
    let known = series.len() + defs.len();
    let n_records = varint(&mut at)?;
    let first = out.len();
    for _ in 0..n_records {
        let id = u32::try_from(varint(&mut at)?).ok().filter(|id| (*id as usize) < known);
        let Some(id) = id else {
            out.truncate(first);
            return Err("record of an undefined series");
        };
        let index = i64::try_from(varint(&mut at)?).ok();
        let start = index.and_then(|i| i.checked_mul(unit)).and_then(|o| o.checked_add(slice.start));
        let start = start.filter(|s| slice.contains(s));
        let delta = unzigzag(varint(&mut at)?);
        let decoded = Rollup::decode(body.get(at..).unwrap_or_default());
        let (Some(start), Some(opened), Ok((rollup, used))) =
            (start, start.and_then(|s| s.checked_add(delta)), decoded)
        else {
            out.truncate(first);
            return Err("bad record");
        };
        at += used;
        out.push(Record { series: id, start, opened, rollup });
    }
    if at != body.len() {
        out.truncate(first);
        return Err("bytes after the records");
    }
    series.extend(defs);
    Ok(())
}
