//! Torn and damaged segment files.

use super::*;
use std::io::Write as _;

/// Five appends of one series, a frame each, in one fine file; the file and its length
/// after each append.
fn five_frames(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u64>) {
    let (mut log, _) = HistoryLog::open(dir, HistoryLimits::default()).expect("open");
    let mut lens = Vec::new();
    for m in 0..5 {
        let start = DAY0 + m * MIN;
        log.append(&[closed("dev", "t", Resolution::Fine, start, start + 5, Rollup::of(m as f64))], start + MIN)
            .expect("append");
        lens.push(log.usage().bytes);
    }
    (dir.join("fine-20261204T00.seg"), lens)
}

fn minutes(dir: &std::path::Path) -> Vec<i64> {
    all(dir, "dev", "t", Resolution::Fine).iter().map(|(s, _)| (s - DAY0) / MIN).collect()
}

fn set_len(path: &std::path::Path, len: u64) {
    std::fs::OpenOptions::new().write(true).open(path).and_then(|f| f.set_len(len)).expect("truncate");
}

#[test]
fn a_torn_tail_is_cut_off_at_open_and_everything_before_it_reads_back() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (path, lens) = five_frames(tmp.path());
    set_len(&path, lens[4] - 3);
    // A reader (while the writer would be mid-append) stops before the torn frame, quietly.
    assert_eq!(minutes(tmp.path()), [0, 1, 2, 3]);
    let (mut log, recovery) = HistoryLog::open(tmp.path(), HistoryLimits::default()).expect("open");
    assert_eq!((recovery.truncated_files, recovery.truncated_bytes), (1, lens[4] - 3 - lens[3]));
    assert!(recovery.damaged.is_empty());
    assert_eq!(std::fs::metadata(&path).expect("meta").len(), lens[3]);
    assert_eq!(log.usage().bytes, lens[3]);
    // The writer carries on after the last sound frame.
    let start = DAY0 + 4 * MIN;
    log.append(&[closed("dev", "t", Resolution::Fine, start, start, Rollup::of(9.0))], start + MIN).expect("append");
    assert_eq!(minutes(tmp.path()), [0, 1, 2, 3, 4]);
}

#[test]
fn garbage_after_the_last_frame_is_cut_off_at_open() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (path, lens) = five_frames(tmp.path());
    let mut noise = Noise(3);
    let garbage: Vec<u8> = (0..37).map(|_| noise.next() as u8).collect();
    std::fs::OpenOptions::new().append(true).open(&path).and_then(|mut f| f.write_all(&garbage)).expect("garbage");
    let (_log, recovery) = HistoryLog::open(tmp.path(), HistoryLimits::default()).expect("open");
    assert_eq!((recovery.truncated_files, recovery.truncated_bytes, recovery.damaged.len()), (1, 37, 0));
    assert_eq!(std::fs::metadata(&path).expect("meta").len(), lens[4]);
    assert_eq!(minutes(tmp.path()), [0, 1, 2, 3, 4]);
}

#[test]
fn a_file_cut_short_in_its_header_is_removed_at_open() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (path, _) = five_frames(tmp.path());
    set_len(&path, 5);
    let (log, recovery) = HistoryLog::open(tmp.path(), HistoryLimits::default()).expect("open");
    assert_eq!((recovery.truncated_files, recovery.truncated_bytes), (1, 5));
    assert!(!path.exists());
    assert_eq!(log.usage(), Usage::default());
}

#[test]
fn a_flipped_byte_in_a_middle_frame_is_reported_and_the_file_read_up_to_it() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (path, lens) = five_frames(tmp.path());
    let mut bytes = std::fs::read(&path).expect("read");
    // In the body of the third append's frame.
    bytes[lens[1] as usize + 8 + 3] ^= 0x10;
    std::fs::write(&path, &bytes).expect("write");
    let (mut log, recovery) = HistoryLog::open(tmp.path(), HistoryLimits::default()).expect("open");
    assert_eq!(recovery.truncated_files, 0);
    assert_eq!(recovery.damaged, [Damage { path: path.clone(), at: lens[1], why: "checksum mismatch" }]);
    assert_eq!(std::fs::metadata(&path).expect("meta").len(), lens[4], "damage is never cut off");
    assert_eq!(minutes(tmp.path()), [0, 1]);
    // The slice goes on in a new part, which readers read after the first.
    let start = DAY0 + 7 * MIN;
    log.append(&[closed("dev", "t", Resolution::Fine, start, start, Rollup::of(7.0))], start + MIN).expect("append");
    assert!(tmp.path().join("fine-20261204T00.1.seg").exists());
    assert_eq!(minutes(tmp.path()), [0, 1, 7]);
    assert_eq!(log.usage().bytes, files(tmp.path()).values().sum::<u64>());
}

#[test]
fn a_damaged_length_in_a_middle_frame_is_reported_not_cut_off() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (path, lens) = five_frames(tmp.path());
    let mut bytes = std::fs::read(&path).expect("read");
    // The second append's frame now claims to run past the end of the file.
    bytes[lens[0] as usize + 1] = 0xff;
    std::fs::write(&path, &bytes).expect("write");
    let (_log, recovery) = HistoryLog::open(tmp.path(), HistoryLimits::default()).expect("open");
    assert_eq!(recovery.truncated_files, 0);
    assert_eq!(
        recovery.damaged.iter().map(|d| (d.at, d.why)).collect::<Vec<_>>(),
        [(lens[0], "frame length past the end of the file")]
    );
    assert_eq!(std::fs::metadata(&path).expect("meta").len(), lens[4]);
    assert_eq!(minutes(tmp.path()), [0]);
}

#[test]
fn a_damaged_file_leaves_the_others_readable() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (path, _) = five_frames(tmp.path());
    let (mut log, _) = HistoryLog::open(tmp.path(), HistoryLimits::default()).expect("open");
    let start = DAY0 + HOUR;
    log.append(&[closed("dev", "t", Resolution::Fine, start, start, Rollup::of(1.0))], start + MIN).expect("append");
    std::fs::write(&path, b"not a segment, but long enough to hold frames").expect("write");
    assert_eq!(minutes(tmp.path()), [60]);
    assert_eq!(series(tmp.path()).expect("series"), [("dev".to_owned(), "t".to_owned())]);
}
