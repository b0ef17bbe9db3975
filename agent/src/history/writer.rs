//! [`HistoryLog`]: the one writer of a history directory (one per agent). It knows every
//! segment's size without listing the directory again, so the budget is exact; it appends
//! one frame per segment touched and fsyncs before returning; it deletes whole files, for
//! age at every append and for room when an append would pass the budget.

use super::segment::{self, DataBody, End, FRAME_TARGET, LATEST_START, SegmentId, Series};
use super::{Appended, Closed, Damage, HistoryError, HistoryLimits, Recovery, Removed, Resolution, Usage};
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The writer of a history directory.
#[derive(Debug)]
pub struct HistoryLog {
    /// The history directory (`<state_dir>/history`).
    dir: PathBuf,
    limits: HistoryLimits,
    /// Every segment file, oldest slice first: the order retention and the budget delete in.
    segments: BTreeMap<SegmentId, Segment>,
    /// The segments' lengths together, kept exact as files grow and go: what the budget is
    /// checked against at every append, without listing the directory.
    bytes: u64,
    /// fsync at every append. Off only in tests that write a simulated day (1 440 fsyncs).
    pub(super) durable: bool,
}

#[derive(Debug)]
struct Segment {
    /// Its length on disk: where the next frame goes.
    bytes: u64,
    /// Records in it (a replayed one twice): what deleting it loses, for the report.
    records: u64,
    /// Its earliest period start, for [`HistoryLog::usage`].
    oldest: Option<i64>,
    /// Its series' ids, so a frame defines only series the file lacks. Kept from the scan
    /// at open for the newest segment of each resolution, else read at its first append.
    ids: Option<HashMap<Series, u32>>,
    /// A frame before its end is bad: readers stop there, so nothing is appended to it and
    /// its slice continues in a new part.
    damaged: bool,
}

/// One append's bytes for one segment.
#[derive(Debug)]
struct Plan<'a> {
    id: SegmentId,
    /// Header (a new file) and data frames.
    bytes: Vec<u8>,
    /// Series the frames define, in id order.
    defined: Vec<Series>,
    group: Vec<&'a Closed>,
}

impl HistoryLog {
    /// Opens (creating) the directory; cuts torn tails off and notes damaged files.
    pub fn open(dir: &Path, limits: HistoryLimits) -> Result<(HistoryLog, Recovery), HistoryError> {
        limits.check()?;
        std::fs::create_dir_all(dir).map_err(HistoryError::io(dir))?;
        let mut log = HistoryLog { dir: dir.to_path_buf(), limits, segments: BTreeMap::new(), bytes: 0, durable: true };
        let mut recovery = Recovery::default();
        let mut newest: [Option<(SegmentId, Vec<Series>)>; 2] = [None, None];
        let mut removed = false;
        for (id, path) in segment::list(dir)? {
            let scan = segment::scan(&path, &id, |_, _| {}).map_err(HistoryError::io(&path))?;
            let mut bytes = scan.len;
            if scan.end == End::Torn {
                recovery.truncated_files += 1;
                recovery.truncated_bytes += scan.len - scan.good;
                tracing::debug!(path = %path.display(), cut = scan.len - scan.good, "Torn tail of a history segment cut off.");
                bytes = scan.good;
                if bytes > 0 {
                    let file = std::fs::OpenOptions::new().write(true).open(&path).map_err(HistoryError::io(&path))?;
                    file.set_len(bytes).and_then(|()| file.sync_all()).map_err(HistoryError::io(&path))?;
                }
            }
            let damaged = if let End::Damaged { at, why } = scan.end {
                recovery.damaged.push(Damage { path: path.clone(), at, why });
                true
            } else {
                false
            };
            if bytes == 0 {
                // Created, then cut short before its header was whole.
                std::fs::remove_file(&path).map_err(HistoryError::io(&path))?;
                removed = true;
                continue;
            }
            if !damaged {
                newest[id.res as usize] = Some((id, scan.series));
            }
            log.bytes += bytes;
            let seg = Segment { bytes, records: scan.records, oldest: scan.oldest, ids: None, damaged };
            log.segments.insert(id, seg);
        }
        for (id, series) in newest.into_iter().flatten() {
            if let Some(seg) = log.segments.get_mut(&id) {
                seg.ids = Some(series.into_iter().zip(0..).collect());
            }
        }
        if removed {
            sync_dir(dir)?;
        }
        Ok((log, recovery))
    }

    /// Writes each roll-up once (in as many files as slices they fall in), fsync'd before
    /// returning. Deletes segments whose slice ended more than the retention before
    /// `now_ms`, and the oldest ones while the append would pass `max_bytes`.
    pub fn append(&mut self, closed: &[Closed], now_ms: i64) -> Result<Appended, HistoryError> {
        self.write(closed, Some(now_ms))
    }

    /// [`HistoryLog::append`]; `now: None` applies no retention (an import of old history).
    pub(super) fn write(&mut self, closed: &[Closed], now: Option<i64>) -> Result<Appended, HistoryError> {
        let mut done = Appended::default();
        let limits = self.limits;
        let cutoff = |res: Resolution| now.map_or(i64::MIN, |n| n.saturating_sub(limits.retention(res)));
        let expired: Vec<SegmentId> =
            self.segments.keys().filter(|id| id.slice_end() <= cutoff(id.res)).copied().collect();
        for id in &expired {
            add(&mut done.expired, self.remove(id)?);
        }
        let mut groups: BTreeMap<(i64, Resolution), Vec<&Closed>> = BTreeMap::new();
        for c in closed {
            if !(0..=LATEST_START).contains(&c.start) {
                done.out_of_range += 1;
                continue;
            }
            let id = SegmentId::of(c.resolution, c.start);
            if id.slice_end() <= cutoff(id.res) {
                done.too_old += 1;
                continue;
            }
            groups.entry((id.slice_start, id.res)).or_default().push(c);
        }
        let mut plans = Vec::with_capacity(groups.len());
        for ((slice_start, res), group) in groups {
            plans.push(self.plan(slice_start, res, group)?);
        }
        plans.sort_by_key(|p| p.id);
        // The budget: delete the oldest segment, or drop the oldest of this append's data
        // when it is older still, until the append fits.
        let mut removed = !expired.is_empty();
        while self.bytes + plans.iter().map(|p| p.bytes.len() as u64).sum::<u64>() > limits.max_bytes {
            let oldest = self.segments.keys().next().copied();
            match (oldest, plans.first().map(|p| p.id)) {
                (Some(seg), Some(plan)) if plan.slice_start < seg.slice_start => {
                    done.dropped += plans.remove(0).group.len() as u64;
                }
                (Some(seg), _) => {
                    add(&mut done.evicted, self.remove(&seg)?);
                    removed = true;
                    if let Some(i) = plans.iter().position(|p| p.id == seg) {
                        let p = plans.remove(i);
                        plans.insert(i, self.plan(seg.slice_start, seg.res, p.group)?);
                    }
                }
                (None, _) => done.dropped += plans.remove(0).group.len() as u64,
            }
        }
        let mut created = false;
        for plan in plans {
            created |= !self.segments.contains_key(&plan.id);
            self.write_plan(plan, &mut done)?;
        }
        if self.durable && (created || removed) {
            sync_dir(&self.dir)?;
        }
        Ok(done)
    }

    /// Disk use now.
    pub fn usage(&self) -> Usage {
        let mut u = Usage { bytes: self.bytes, files: self.segments.len() as u64, ..Usage::default() };
        for (id, seg) in &self.segments {
            let oldest = match id.res {
                Resolution::Fine => &mut u.oldest_fine,
                Resolution::Coarse => &mut u.oldest_coarse,
            };
            if let Some(o) = seg.oldest {
                *oldest = Some(oldest.map_or(o, |x| x.min(o)));
            }
        }
        u
    }

    /// The frames for `group` in the segment its slice is appended to now.
    fn plan<'a>(
        &mut self,
        slice_start: i64,
        res: Resolution,
        group: Vec<&'a Closed>,
    ) -> Result<Plan<'a>, HistoryError> {
        let id = self.target(slice_start, res)?;
        let empty = HashMap::new();
        let known = self.segments.get(&id).and_then(|s| s.ids.as_ref()).unwrap_or(&empty);
        let mut bytes = Vec::new();
        if !self.segments.contains_key(&id) {
            segment::put_header(&mut bytes, &id);
        }
        // Starts are stored in units of the period; any start not on it (another
        // configuration's) makes the frame's unit their greatest common divisor.
        let unit = group.iter().fold(self.limits.period(res), |g, c| gcd(g, c.start - slice_start));
        let (mut fresh, mut defined) = (HashMap::new(), Vec::new());
        let mut body = DataBody::default();
        for c in &group {
            let series = (Arc::clone(&c.key), Arc::clone(&c.field));
            let id = match known.get(&series).or_else(|| fresh.get(&series)) {
                Some(id) => *id,
                None => {
                    let id = (known.len() + fresh.len()) as u32;
                    body.define(&c.key, &c.field);
                    defined.push(series.clone());
                    fresh.insert(series, id);
                    id
                }
            };
            body.record(id, ((c.start - slice_start) / unit) as u64, c.start, c.opened, &c.rollup);
            if body.len() > FRAME_TARGET {
                body.finish(unit, &mut bytes);
            }
        }
        if !body.is_empty() {
            body.finish(unit, &mut bytes);
        }
        Ok(Plan { id, bytes, defined, group })
    }

    /// The segment a slice's records go to: its last part, unless damaged (then a new one).
    fn target(&mut self, slice_start: i64, res: Resolution) -> Result<SegmentId, HistoryError> {
        let first = SegmentId { slice_start, res, part: 0 };
        let last = self.segments.range(first..=SegmentId { part: u32::MAX, ..first }).next_back();
        let Some((&id, seg)) = last else { return Ok(first) };
        if !seg.damaged && seg.ids.is_none() {
            let path = self.dir.join(id.file_name());
            let scan = segment::scan(&path, &id, |_, _| {}).map_err(HistoryError::io(&path))?;
            if let Some(seg) = self.segments.get_mut(&id) {
                // Changed since open (a write that failed and could not be undone): damaged.
                seg.damaged = scan.end != End::Clean || scan.len != seg.bytes;
                seg.ids = Some(scan.series.into_iter().zip(0..).collect());
            }
        }
        match self.segments.get(&id) {
            Some(seg) if seg.damaged => Ok(SegmentId { part: id.part.saturating_add(1), ..id }),
            _ => Ok(id),
        }
    }

    fn write_plan(&mut self, plan: Plan<'_>, done: &mut Appended) -> Result<(), HistoryError> {
        let path = self.dir.join(plan.id.file_name());
        let io = HistoryError::io(&path);
        let before = self.segments.get(&plan.id).map(|s| s.bytes);
        let mut file = std::fs::OpenOptions::new().append(true).create(true).open(&path).map_err(io)?;
        let written = file.write_all(&plan.bytes).and_then(|()| if self.durable { file.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            // Undo, so the file ends with a sound frame; if that fails too, the next
            // append's scan finds the file changed and moves on to a new part.
            let _ = match before {
                Some(len) => file.set_len(len),
                None => std::fs::remove_file(&path),
            };
            return Err(HistoryError::io(&path)(e));
        }
        let n = plan.bytes.len() as u64;
        let seg = self.segments.entry(plan.id).or_insert_with(|| Segment {
            bytes: 0,
            records: 0,
            oldest: None,
            ids: Some(HashMap::new()),
            damaged: false,
        });
        seg.bytes += n;
        seg.records += plan.group.len() as u64;
        for c in &plan.group {
            seg.oldest = Some(seg.oldest.map_or(c.start, |o| o.min(c.start)));
        }
        if let Some(ids) = &mut seg.ids {
            let next = ids.len() as u32;
            ids.extend(plan.defined.into_iter().zip(next..));
        }
        self.bytes += n;
        done.records += plan.group.len() as u64;
        done.bytes += n;
        Ok(())
    }

    fn remove(&mut self, id: &SegmentId) -> Result<Removed, HistoryError> {
        let Some(seg) = self.segments.remove(id) else { return Ok(Removed::default()) };
        let path = self.dir.join(id.file_name());
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                self.segments.insert(*id, seg);
                return Err(HistoryError::io(&path)(e));
            }
            _ => {}
        }
        self.bytes -= seg.bytes;
        Ok(Removed { files: 1, bytes: seg.bytes, records: seg.records })
    }
}

fn add(total: &mut Removed, r: Removed) {
    total.files += r.files;
    total.bytes += r.bytes;
    total.records += r.records;
}

fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.abs()
}

/// Makes a file's creation or removal durable.
fn sync_dir(dir: &Path) -> Result<(), HistoryError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(HistoryError::io(dir))
}
