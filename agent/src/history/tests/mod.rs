//! The history log's tests: round trips against a reference fold, replays and merges, the
//! budget and retention, export and import (here); torn and damaged files (`faults`); the
//! size of a day of 1 000 series (`size`); rules' pasts seeded from the log (`seed`).

mod faults;
mod seed;
mod size;

use super::segment::SegmentId;
use super::*;
use edgewatch_engine::history::{HistoryConfig, Recorder};
use std::collections::BTreeMap;
use std::sync::Arc;

/// 2026-12-04T00:00:00Z.
const DAY0: i64 = 1_796_342_400_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;

/// A deterministic stream of numbers (splitmix64).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// In `0..n`.
    fn below(&mut self, n: u64) -> i64 {
        (self.next() % n) as i64
    }
}

fn closed(key: &str, field: &str, resolution: Resolution, start: i64, opened: i64, rollup: Rollup) -> Closed {
    Closed { key: Arc::from(key), field: Arc::from(field), resolution, start, opened, rollup }
}

fn all(dir: &std::path::Path, key: &str, field: &str, res: Resolution) -> Vec<(i64, Rollup)> {
    read(dir, key, field, res, i64::MIN, i64::MAX).expect("read")
}

/// The segment files' names and lengths, as the directory has them.
fn files(dir: &std::path::Path) -> BTreeMap<String, u64> {
    std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().expect("meta").len()))
        .collect()
}

type Reference = BTreeMap<(String, String, Resolution), BTreeMap<i64, Rollup>>;

/// Readings of 12 series from 22:00 to 01:10 (fine and coarse slices and a day boundary),
/// every 5-9 s, two-decimal values and now and then one that is not; fed through the
/// engine's recorder, appended as it closes periods. Returns the reference folded directly.
fn record_stream(log: &mut HistoryLog, noise: &mut Noise) -> Reference {
    let cfg = HistoryConfig::default();
    let mut recorder = Recorder::new();
    let mut out = edgewatch_engine::Outputs::default();
    let mut reference = Reference::new();
    let series: Vec<(String, Arc<str>)> = (0..4)
        .flat_map(|d| ["temp", "humidity", "volts"].map(move |f| (format!("plant/dev-{d:02}"), Arc::from(f))))
        .collect();
    let (from, to) = (DAY0 - 2 * HOUR, DAY0 + HOUR + 10 * MIN);
    let mut next: Vec<i64> = series.iter().map(|_| from + noise.below(9_000)).collect();
    let mut values: Vec<i64> = series.iter().map(|_| 2_000 + noise.below(500)).collect();
    while let Some((i, &time)) = next.iter().enumerate().min_by_key(|(_, t)| **t) {
        if time >= to {
            break;
        }
        values[i] += noise.below(41) - 20;
        let v = if noise.below(50) == 0 { values[i] as f64 / 3.0 } else { values[i] as f64 / 100.0 };
        let now = time;
        let (key, field) = &series[i];
        recorder.fold(&cfg, 0, key, field, time, v, now, &mut out).expect("folded");
        for res in Resolution::ALL {
            let period = if res == Resolution::Fine { cfg.fine_ms } else { cfg.coarse_ms };
            let start = time.div_euclid(period) * period;
            let periods = reference.entry((key.clone(), field.to_string(), res)).or_default();
            periods.entry(start).and_modify(|r| r.fold(v)).or_insert_with(|| Rollup::of(v));
        }
        recorder.close_due(&cfg, 0, now, &mut out);
        if out.closed.len() >= 20 {
            log.append(&out.closed, now).expect("append");
            out.clear();
        }
        next[i] = time + 5_000 + noise.below(4_000);
    }
    recorder.close_due(&cfg, 0, to + 2 * HOUR, &mut out);
    log.append(&out.closed, to + 2 * HOUR).expect("append");
    reference
}

fn assert_reads(dir: &std::path::Path, reference: &Reference) {
    for ((key, field, res), periods) in reference {
        let expected: Vec<(i64, Rollup)> = periods.iter().map(|(s, r)| (*s, *r)).collect();
        assert_eq!(all(dir, key, field, *res), expected, "{key} {field} {res:?}");
    }
}

#[test]
fn reads_back_exactly_what_a_reference_fold_computes() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (mut log, recovery) = HistoryLog::open(tmp.path(), HistoryLimits::default()).expect("open");
    assert!(recovery.is_clean());
    let reference = record_stream(&mut log, &mut Noise(7));
    assert_reads(tmp.path(), &reference);
    let fine = &reference[&("plant/dev-00".to_owned(), "temp".to_owned(), Resolution::Fine)];
    assert_eq!(fine.len(), 190, "22:00 to 01:10, a period a minute");
    // A range: periods starting in it, both ends as documented.
    let some =
        read(tmp.path(), "plant/dev-00", "temp", Resolution::Fine, DAY0 - 5 * MIN, DAY0 + 5 * MIN).expect("read");
    assert_eq!(some.iter().map(|(s, _)| (s - DAY0) / MIN).collect::<Vec<_>>(), (-5..5).collect::<Vec<_>>());
    let names: Vec<(String, String)> = reference.keys().map(|(k, f, _)| (k.clone(), f.clone())).collect();
    let mut names = names;
    names.dedup();
    assert_eq!(series(tmp.path()).expect("series"), names);
    // Both days' coarse files, the hours' fine files; usage agrees with the directory.
    let on_disk = files(tmp.path());
    assert!(on_disk.contains_key("coarse-20261203.seg") && on_disk.contains_key("coarse-20261204.seg"), "{on_disk:?}");
    assert!(
        on_disk.contains_key("fine-20261203T22.seg") && on_disk.contains_key("fine-20261204T01.seg"),
        "{on_disk:?}"
    );
    let usage = log.usage();
    assert_eq!((usage.files, usage.bytes), (on_disk.len() as u64, on_disk.values().sum()));
    assert_eq!((usage.oldest_fine, usage.oldest_coarse), (Some(DAY0 - 2 * HOUR), Some(DAY0 - 2 * HOUR)));
    // Reopened, the writer carries on in the same files.
    drop(log);
    let (mut log, recovery) = HistoryLog::open(tmp.path(), HistoryLimits::default()).expect("reopen");
    assert!(recovery.is_clean());
    let r = Rollup::of(1.5);
    log.append(&[closed("plant/dev-00", "temp", Resolution::Fine, DAY0 + HOUR + 20 * MIN, DAY0, r)], DAY0 + 2 * HOUR)
        .expect("append");
    assert_eq!(files(tmp.path()).len(), on_disk.len());
    assert_eq!(all(tmp.path(), "plant/dev-00", "temp", Resolution::Fine).last(), Some(&(DAY0 + HOUR + 20 * MIN, r)));
}

#[test]
fn a_replayed_record_reads_once_and_a_reopened_period_merges_in_opened_order() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (mut log, _) = HistoryLog::open(tmp.path(), HistoryLimits::default()).expect("open");
    let (start, opened) = (DAY0 + 10 * MIN, DAY0 + 10 * MIN + 1_234);
    let mut r = Rollup::of(20.5);
    r.fold(21.0);
    let c = closed("d", "t", Resolution::Fine, start, opened, r);
    log.append(std::slice::from_ref(&c), start + MIN).expect("append");
    // The crash replay, after a restart: the same record again.
    drop(log);
    let (mut log, _) = HistoryLog::open(tmp.path(), HistoryLimits::default()).expect("reopen");
    log.append(std::slice::from_ref(&c), start + MIN).expect("append");
    assert_eq!(all(tmp.path(), "d", "t", Resolution::Fine), vec![(start, r)]);
    // The last of equal `opened` wins.
    let mut later = r;
    later.fold(22.0);
    log.append(&[closed("d", "t", Resolution::Fine, start, opened, later)], start + MIN).expect("append");
    assert_eq!(all(tmp.path(), "d", "t", Resolution::Fine), vec![(start, later)]);
    // The clock jumped back: the period was opened earlier too, and written after.
    let earlier = Rollup::of(10.0);
    log.append(&[closed("d", "t", Resolution::Fine, start, opened - 50_000, earlier)], start + MIN).expect("append");
    let mut merged = earlier;
    merged.merge(&later);
    assert_eq!(all(tmp.path(), "d", "t", Resolution::Fine), vec![(start, merged)]);
    assert_eq!((merged.count, merged.first, merged.last), (4, 10.0, 22.0));
}

/// Fine roll-ups of `n` series at minutes `0..m` of hour `h`.
fn hour(h: i64, n: usize, m: i64) -> Vec<Closed> {
    let mut out = Vec::new();
    for minute in 0..m {
        for s in 0..n {
            let start = DAY0 + h * HOUR + minute * MIN;
            out.push(closed(&format!("dev-{s}"), "t", Resolution::Fine, start, start + 900, Rollup::of(21.37)));
        }
    }
    out
}

#[test]
fn the_budget_evicts_the_oldest_segments_first_and_the_total_stays_under_it() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let limits = HistoryLimits { max_bytes: 8_000, ..HistoryLimits::default() };
    let (mut log, _) = HistoryLog::open(tmp.path(), limits).expect("open");
    let mut evicted = Removed::default();
    for h in 0..24 {
        let done = log.append(&hour(h, 5, 10), DAY0 + h * HOUR + 11 * MIN).expect("append");
        assert_eq!((done.records, done.dropped, done.expired), (50, 0, Removed::default()));
        evicted.files += done.evicted.files;
        evicted.bytes += done.evicted.bytes;
        evicted.records += done.evicted.records;
        let on_disk = files(tmp.path());
        let usage = log.usage();
        assert!(usage.bytes <= limits.max_bytes, "{usage:?}");
        assert_eq!((usage.files, usage.bytes), (on_disk.len() as u64, on_disk.values().sum()));
    }
    // What is left is the newest hours, without a gap; the rest went, and was counted.
    let kept: Vec<String> = files(tmp.path()).into_keys().collect();
    let newest: Vec<String> =
        (24 - kept.len() as i64..24).map(|h| SegmentId::of(Resolution::Fine, DAY0 + h * HOUR).file_name()).collect();
    assert_eq!(kept, newest);
    assert!(kept.len() >= 2 && evicted.files == 24 - kept.len() as u64, "{kept:?} {evicted:?}");
    assert_eq!(evicted.records, 50 * evicted.files);
    assert_eq!(log.usage().oldest_fine, Some(DAY0 + (24 - kept.len() as i64) * HOUR));
    // Roll-ups older than anything kept are what goes when there is no room.
    let full = log.usage().bytes;
    let done = log.append(&hour(0, 5, 10), DAY0 + 24 * HOUR).expect("append");
    assert_eq!((done.records, done.dropped, done.evicted.files), (0, 50, 0), "{full} bytes: {done:?}");
}

#[test]
fn retention_deletes_whole_segments_past_it() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let limits =
        HistoryLimits { fine_retention_ms: 2 * HOUR, coarse_retention_ms: 24 * HOUR, ..HistoryLimits::default() };
    let (mut log, _) = HistoryLog::open(tmp.path(), limits).expect("open");
    let coarse = closed("dev-0", "t", Resolution::Coarse, DAY0 - 2 * HOUR, DAY0 - 2 * HOUR, Rollup::of(1.0));
    log.append(&[coarse], DAY0 - HOUR).expect("append");
    for h in 0..5 {
        log.append(&hour(h, 2, 3), DAY0 + h * HOUR + 30 * MIN).expect("append");
    }
    // At 04:30, fine slices that ended by 02:30 are gone: 00:00 and 01:00.
    let names: Vec<String> = files(tmp.path()).into_keys().collect();
    assert_eq!(names, ["coarse-20261203.seg", "fine-20261204T02.seg", "fine-20261204T03.seg", "fine-20261204T04.seg"]);
    // The next day: the coarse day ended more than 24 h ago.
    let done = log.append(&hour(25, 1, 1), DAY0 + 25 * HOUR).expect("append");
    assert_eq!((done.expired.files, done.expired.records), (4, 1 + 3 * 6));
    assert_eq!(files(tmp.path()).into_keys().collect::<Vec<_>>(), ["fine-20261205T01.seg"]);
    // Too old to keep: not written at all.
    let done = log.append(&hour(0, 1, 1), DAY0 + 25 * HOUR).expect("append");
    assert_eq!((done.records, done.too_old), (0, 1));
    assert_eq!(files(tmp.path()).len(), 1);
}

#[test]
fn export_then_import_into_an_empty_directory_reads_the_same() {
    let (a, b) = (tempfile::tempdir().expect("temp dir"), tempfile::tempdir().expect("temp dir"));
    let (mut log, _) = HistoryLog::open(a.path(), HistoryLimits::default()).expect("open");
    let reference = record_stream(&mut log, &mut Noise(11));
    // A replay and a reopened period, which an export keeps apart as they are.
    let c = closed("plant/dev-01", "temp", Resolution::Fine, DAY0, DAY0 - 7_000, Rollup::of(-3.25));
    log.append(&[c.clone(), c], DAY0 + 2 * HOUR).expect("append");
    let mut exported = Vec::new();
    let lines = export(a.path(), &mut exported).expect("export");
    assert_eq!(lines as usize, exported.iter().filter(|b| **b == b'\n').count());
    let imported = import(b.path(), HistoryLimits::default(), exported.as_slice()).expect("import");
    assert_eq!(imported, lines);
    for (key, field, res) in reference.keys() {
        assert_eq!(all(b.path(), key, field, *res), all(a.path(), key, field, *res), "{key} {field} {res:?}");
    }
    let mut again = Vec::new();
    export(b.path(), &mut again).expect("export");
    assert_eq!(String::from_utf8_lossy(&again), String::from_utf8_lossy(&exported));
    // A bad line is named.
    let bad = b"\n{\"key\":\"k\",\"field\":\"f\",\"res\":\"hourly\",\"start\":0,\"opened\":0,\"count\":1,\"sum\":1,\"sumsq\":1,\"min\":1,\"max\":1,\"first\":1,\"last\":1}\n";
    let err = import(b.path(), HistoryLimits::default(), bad.as_slice()).expect_err("bad resolution");
    assert!(matches!(err, HistoryError::Import { line: 2, .. }), "{err}");
}

#[test]
fn segment_names_round_trip_and_other_names_are_left_alone() {
    for id in [
        SegmentId::of(Resolution::Fine, DAY0 + 13 * HOUR + 59 * MIN),
        SegmentId::of(Resolution::Coarse, DAY0 + 13 * HOUR),
        SegmentId { part: 3, ..SegmentId::of(Resolution::Fine, 0) },
    ] {
        assert_eq!(SegmentId::parse(&id.file_name()), Some(id), "{}", id.file_name());
    }
    assert_eq!(SegmentId::of(Resolution::Fine, DAY0 + 13 * HOUR + 1).file_name(), "fine-20261204T13.seg");
    assert_eq!(SegmentId::of(Resolution::Coarse, DAY0 + 13 * HOUR).file_name(), "coarse-20261204.seg");
    for name in [
        "fine-20261204.seg",
        "coarse-20261204T05.seg",
        "fine-20261204T13.0.seg",
        "fine-2026120xT13.seg",
        "x.seg",
        "fine-20261204T13.seg.tmp",
    ] {
        assert_eq!(SegmentId::parse(name), None, "{name}");
    }
}

#[test]
fn time_arguments_are_durations_before_now_or_utc_times() {
    let now = DAY0 + 12 * HOUR;
    assert_eq!(parse_when("7d", now), Ok(now - 7 * 24 * HOUR));
    assert_eq!(parse_when("90m", now), Ok(now - 90 * MIN));
    assert_eq!(parse_when("2026-12-04T10:00:00Z", now), Ok(DAY0 + 10 * HOUR));
    assert_eq!(parse_when("2026-12-04", now), Ok(DAY0));
    assert!(parse_when("yesterday", now).is_err());
    assert!(parse_when("0", now).is_err() && parse_when("20261204", now).is_err(), "a number without a unit");
    assert_eq!(parse_range("2h", None, now), Ok((now - 2 * HOUR, now)));
    assert!(parse_range("1h", Some("2h"), now).expect_err("backwards").contains("before"));
    assert_eq!(parse_resolution("1h"), Ok(Resolution::Coarse));
    assert!(parse_resolution("5m").is_err());
    let mut out = Vec::new();
    let mut r = Rollup::of(20.0);
    r.fold(22.0);
    write_rows(&mut out, &[(DAY0, r)], Format::Csv).expect("rows");
    let text = String::from_utf8(out).expect("utf-8");
    assert_eq!(
        text,
        format!(
            "start,count,avg,min,max,stddev,first,last\n2026-12-04T00:00:00.000Z,2,21,20,22,{},20,22\n",
            2f64.sqrt()
        )
    );
}
