//! Reading a history directory, from any process and while the agent writes: [`read`] one
//! series, [`series`], and [`export`] / [`import`] as JSON lines.
//!
//! Every reader applies the same rule: the last record of a (series, resolution, start,
//! opened) wins (a replay after a crash), and records of one period with different
//! `opened` are merged in `opened` order (a clock that jumped back).

use super::segment::{self, End, Record, SegmentId, Series};
use super::{Closed, HistoryError, HistoryLimits, HistoryLog, Resolution, Rollup};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

/// The roll-ups of `key`'s `field` at `res` whose period starts in `since_ms..until_ms`,
/// by start.
pub fn read(
    dir: &Path,
    key: &str,
    field: &str,
    res: Resolution,
    since_ms: i64,
    until_ms: i64,
) -> Result<Vec<(i64, Rollup)>, HistoryError> {
    let mut periods: BTreeMap<i64, Vec<(i64, Rollup)>> = BTreeMap::new();
    for (id, path) in segment::list(dir)? {
        if id.res != res || id.slice_start >= until_ms || id.slice_end() <= since_ms {
            continue;
        }
        scan(&path, &id, |(k, f), r| {
            if &**k == key && &**f == field && (since_ms..until_ms).contains(&r.start) {
                keep(periods.entry(r.start).or_default(), r);
            }
        })?;
    }
    Ok(periods.into_iter().filter_map(|(start, records)| Some((start, merged(records)?))).collect())
}

/// The records of one period: (opened, roll-up).
type Records = Vec<(i64, Rollup)>;

/// Roll-ups by key, each key's by start.
pub type ByKey = BTreeMap<Arc<str>, Vec<(i64, Rollup)>>;

/// The roll-ups of `field` of every key at `res` whose period starts in
/// `since_ms..until_ms`, by key then start: one pass over the files, for seeding a rule's
/// past (reading key by key would scan every file once per key).
pub fn read_field(
    dir: &Path,
    field: &str,
    res: Resolution,
    since_ms: i64,
    until_ms: i64,
) -> Result<ByKey, HistoryError> {
    // (key, start) -> the records of that period, (opened, roll-up).
    let mut periods: BTreeMap<(Arc<str>, i64), Records> = BTreeMap::new();
    for (id, path) in segment::list(dir)? {
        if id.res != res || id.slice_start >= until_ms || id.slice_end() <= since_ms {
            continue;
        }
        scan(&path, &id, |(k, f), r| {
            if &**f == field && (since_ms..until_ms).contains(&r.start) {
                keep(periods.entry((Arc::clone(k), r.start)).or_default(), r);
            }
        })?;
    }
    let mut by_key = ByKey::new();
    for ((key, start), records) in periods {
        if let Some(r) = merged(records) {
            by_key.entry(key).or_default().push((start, r));
        }
    }
    Ok(by_key)
}

/// Every series with history, sorted.
pub fn series(dir: &Path) -> Result<Vec<(String, String)>, HistoryError> {
    let mut all = BTreeSet::new();
    for (id, path) in segment::list(dir)? {
        if let Some(s) = scan(&path, &id, |_, _| {})? {
            all.extend(s.into_iter().map(|(k, f)| (k.to_string(), f.to_string())));
        }
    }
    Ok(all.into_iter().collect())
}

/// Writes every record as a JSON line (replays counted once; records of one period with
/// different `opened` kept apart, so an import reads the same); returns how many.
pub fn export(dir: &Path, out: &mut impl std::io::Write) -> Result<u64, HistoryError> {
    let segments = segment::list(dir)?;
    let mut lines = 0;
    // The parts of a slice are adjacent in the list: one slice at a time.
    for slice in segments.chunk_by(|(a, _), (b, _)| (a.slice_start, a.res) == (b.slice_start, b.res)) {
        let mut records: BTreeMap<(Arc<str>, Arc<str>, i64, i64), Rollup> = BTreeMap::new();
        for (id, path) in slice {
            scan(path, id, |(k, f), r| {
                records.insert((Arc::clone(k), Arc::clone(f), r.start, r.opened), r.rollup);
            })?;
        }
        let res = slice[0].0.res.as_str();
        for ((key, field, start, opened), r) in records {
            let line = Line::new(&key, &field, res, start, opened, &r);
            serde_json::to_writer(&mut *out, &line)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(HistoryError::Output)?;
            lines += 1;
        }
    }
    Ok(lines)
}

/// Appends the records of an [`export`] to the history in `dir` (no retention is applied:
/// the agent's next append does that; the budget is); returns how many were written. With
/// the agent stopped: a second writer of a directory would miscount its bytes.
pub fn import(dir: &Path, limits: HistoryLimits, input: impl std::io::BufRead) -> Result<u64, HistoryError> {
    const BATCH: usize = 50_000;
    let (mut log, _) = HistoryLog::open(dir, limits)?;
    let (mut batch, mut written) = (Vec::with_capacity(BATCH), 0);
    for (n, text) in input.lines().enumerate() {
        let bad = |message: String| HistoryError::Import { line: n as u64 + 1, message };
        let text = text.map_err(|e| bad(e.to_string()))?;
        if text.trim().is_empty() {
            continue;
        }
        let line: Line<'_> = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let resolution = match &*line.res {
            "fine" => Resolution::Fine,
            "coarse" => Resolution::Coarse,
            other => return Err(bad(format!("unknown resolution `{other}` (fine, coarse)"))),
        };
        if line.count == 0 {
            return Err(bad("count 0: a roll-up holds at least one reading".into()));
        }
        let rollup = line.rollup();
        let (key, field) = (Arc::from(line.key), Arc::from(line.field));
        batch.push(Closed { key, field, resolution, start: line.start, opened: line.opened, rollup });
        if batch.len() == BATCH {
            written += log.write(&batch, None)?.records;
            batch.clear();
        }
    }
    written += log.write(&batch, None)?.records;
    Ok(written)
}

/// A line of an export: `{"key", "field", "res", "start", "opened", "count", "sum",
/// "sumsq", "min", "max", "first", "last"}` (times in ms since the epoch).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    field: Cow<'a, str>,
    #[serde(borrow)]
    res: Cow<'a, str>,
    start: i64,
    opened: i64,
    count: u64,
    sum: f64,
    sumsq: f64,
    min: f64,
    max: f64,
    first: f64,
    last: f64,
}

impl<'a> Line<'a> {
    fn new(key: &'a str, field: &'a str, res: &'a str, start: i64, opened: i64, r: &Rollup) -> Line<'a> {
        let Rollup { count, sum, sumsq, min, max, first, last } = *r;
        let (key, field, res) = (Cow::Borrowed(key), Cow::Borrowed(field), Cow::Borrowed(res));
        Line { key, field, res, start, opened, count, sum, sumsq, min, max, first, last }
    }

    fn rollup(&self) -> Rollup {
        let Line { count, sum, sumsq, min, max, first, last, .. } = *self;
        Rollup { count, sum, sumsq, min, max, first, last }
    }
}

/// Scans one file for a reader: a file deleted meanwhile (evicted) is skipped, damage is
/// logged and the file read up to it, a torn tail (being written) is not read. The file's
/// series, or `None` if it is gone.
fn scan(path: &Path, id: &SegmentId, each: impl FnMut(&Series, &Record)) -> Result<Option<Vec<Series>>, HistoryError> {
    match segment::scan(path, id, each) {
        Ok(s) => {
            if let End::Damaged { at, why } = s.end {
                tracing::warn!(path = %path.display(), at, why, "History segment damaged; read up to the damage.");
            }
            Ok(Some(s.series))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(HistoryError::io(path)(e)),
    }
}

/// Adds a record of a period: replaces one with the same `opened`.
fn keep(records: &mut Vec<(i64, Rollup)>, r: &Record) {
    match records.iter_mut().find(|(opened, _)| *opened == r.opened) {
        Some(slot) => slot.1 = r.rollup,
        None => records.push((r.opened, r.rollup)),
    }
}

/// One roll-up of a period's records, merged in `opened` order.
fn merged(mut records: Vec<(i64, Rollup)>) -> Option<Rollup> {
    records.sort_by_key(|(opened, _)| *opened);
    records.into_iter().map(|(_, r)| r).reduce(|mut total, r| {
        total.merge(&r);
        total
    })
}
