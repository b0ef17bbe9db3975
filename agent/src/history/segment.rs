//! One segment file: its name, its frame bodies (the format is in the parent's `//!`), and
//! [`scan`], the one reader of a file: for the writer's recovery at open and for every read.
//!
//! Frames and the torn-or-damaged judgement are [`crate::frames`]'s: a torn tail is cut off
//! by the writer and silently skipped by readers; damage is reported, and the file is read
//! no further (the writer goes on in a new part).

use super::{HistoryError, Resolution, Rollup};
pub(crate) use crate::frames::End;
use crate::frames::put as put_frame;
use edgewatch_engine::Timestamp;
use edgewatch_engine::history::rollup::{get_varint, put_varint, unzigzag, zigzag};
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
    crate::frames::list(dir, SegmentId::parse).map_err(HistoryError::io(dir))
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
    // One copy for every caller (the binary's size), not one per closure.
    scan_dyn(path, id, &mut each)
}

fn scan_dyn(path: &Path, id: &SegmentId, each: &mut dyn FnMut(&Series, &Record)) -> std::io::Result<Scan> {
    let (mut series, mut n, mut oldest) = (Vec::new(), 0u64, None::<i64>);
    let (mut records, mut slice_start) = (Vec::new(), None);
    let frames = crate::frames::scan(
        path,
        MAX_FRAME,
        false,
        |body| {
            match slice_start {
                None => header(body, id).map(|start| slice_start = Some(start))?,
                Some(start) => data(body, start..id.slice_end(), &mut series, &mut records)?,
            }
            for r in records.drain(..) {
                n += 1;
                oldest = Some(oldest.map_or(r.start, |o| o.min(r.start)));
                if let Some(s) = series.get(r.series as usize) {
                    each(s, &r);
                }
            }
            Ok(())
        },
        |_, _| {},
    )?;
    Ok(Scan { series, records: n, oldest, good: frames.good, len: frames.len, end: frames.end })
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
