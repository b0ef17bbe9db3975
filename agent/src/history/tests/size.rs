//! What a day of history costs on disk, measured with the real encoding. The numbers are in
//! docs/operations.md ("History"); run with `--nocapture` to see them.

use super::*;
use crate::history::segment::{COARSE_SLICE_MS, FINE_SLICE_MS};

const SERIES: usize = 1_000;
const DAY: i64 = 24 * HOUR;

#[test]
fn a_day_of_1000_series_fits_the_bounds_and_the_defaults_hold_1000_series() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let limits = HistoryLimits::default();
    let (mut log, _) = HistoryLog::open(tmp.path(), limits).expect("open");
    log.durable = false;
    let mut noise = Noise(16);
    // A temperature near 21.37, two decimals, a reading every 10 s at each sensor's phase.
    let phase: Vec<i64> = (0..SERIES).map(|_| noise.below(10_000)).collect();
    let base: Vec<i64> = (0..SERIES).map(|_| 2_137 + noise.below(400) - 200).collect();
    let mut value = base.clone();
    let keys: Vec<Arc<str>> = (0..SERIES).map(|s| Arc::from(format!("site-3/gw-1/sensor-{s:04}"))).collect();
    let field: Arc<str> = Arc::from("temperature");
    let mut coarse: Vec<Option<(i64, Rollup)>> = vec![None; SERIES];
    let mut batch = Vec::new();
    for minute in 0..24 * 60 {
        let start = DAY0 + minute * MIN;
        for s in 0..SERIES {
            let mut fine: Option<(i64, Rollup)> = None;
            for k in 0..6 {
                value[s] = (value[s] + noise.below(7) - 3).clamp(base[s] - 150, base[s] + 150);
                let v = value[s] as f64 / 100.0;
                // Opened when the first reading arrives, a few ms after it was taken.
                let arrived = start + phase[s] + k * 10_000 + 3 + noise.below(200);
                for slot in [&mut fine, &mut coarse[s]] {
                    match slot {
                        Some((_, r)) => r.fold(v),
                        None => *slot = Some((arrived, Rollup::of(v))),
                    }
                }
            }
            if let Some((opened, rollup)) = fine {
                let (key, field) = (Arc::clone(&keys[s]), Arc::clone(&field));
                batch.push(Closed { key, field, resolution: Resolution::Fine, start, opened, rollup });
            }
            if (minute + 1) % 60 == 0 {
                if let Some((opened, rollup)) = coarse[s].take() {
                    let (key, field) = (Arc::clone(&keys[s]), Arc::clone(&field));
                    let start = start - 59 * MIN;
                    batch.push(Closed { key, field, resolution: Resolution::Coarse, start, opened, rollup });
                }
            }
        }
        let done = log.append(&batch, start + MIN + 1_000).expect("append");
        assert_eq!(done.records, batch.len() as u64);
        batch.clear();
    }
    let on_disk = files(tmp.path());
    let bytes = |prefix: &str| on_disk.iter().filter(|(n, _)| n.starts_with(prefix)).map(|(_, b)| b).sum::<u64>();
    let (fine, coarse) = (bytes("fine-") as f64 / SERIES as f64, bytes("coarse-") as f64 / SERIES as f64);
    // At most a retention plus one slice of each is on disk.
    let kept = |per_day: f64, retention: i64, slice: i64| per_day * (retention + slice) as f64 / DAY as f64;
    let need =
        kept(fine, limits.fine_retention_ms, FINE_SLICE_MS) + kept(coarse, limits.coarse_retention_ms, COARSE_SLICE_MS);
    let fit = limits.max_bytes as f64 / need;
    println!(
        "history, per series per day: fine (1 min) {fine:.0} B ({:.1} B a record), coarse (1 h) {coarse:.0} B",
        fine / 1440.0
    );
    println!(
        "at the defaults (fine {} h, coarse {} days): {:.0} KB per series; {} MiB hold {fit:.0} series; 10 000 series need {:.0} MiB",
        limits.fine_retention_ms / HOUR,
        limits.coarse_retention_ms / DAY,
        need / 1e3,
        limits.max_bytes >> 20,
        need * 1e4 / f64::from(1 << 20),
    );
    println!(
        "the proposal (fine 48 h, coarse 90 days) needs {:.0} KB per series: {:.0} series fit",
        (kept(fine, 48 * HOUR, FINE_SLICE_MS) + kept(coarse, 90 * DAY, COARSE_SLICE_MS)) / 1e3,
        limits.max_bytes as f64 / (kept(fine, 48 * HOUR, FINE_SLICE_MS) + kept(coarse, 90 * DAY, COARSE_SLICE_MS)),
    );
    assert!(fine < 45_000.0 && coarse < 1_000.0, "fine {fine} B, coarse {coarse} B per series per day");
    assert!(fit >= SERIES as f64, "the defaults hold {fit:.0} series, not {SERIES}");
    // And it reads back.
    let day = all(tmp.path(), "site-3/gw-1/sensor-0042", "temperature", Resolution::Coarse);
    assert_eq!((day.len(), day.iter().map(|(_, r)| r.count).sum::<u64>()), (24, 8_640));
}
