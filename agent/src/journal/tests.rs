//! The journal on real files in a temp dir: round trip, a torn tail, damage, the byte and age
//! budgets, the thread, and the export in the replay format.

use super::*;
use crate::decode::Format;
use std::sync::atomic::Ordering::Relaxed;

const T0: i64 = 1_780_000_000_000;

fn msg(t: i64, i: usize) -> (i64, String, Vec<u8>) {
    (t, format!("sensors/d-{:03}/temperature", i % 7), format!("{{\"temperature\":{i}}}").into_bytes())
}

fn append_all(log: &mut JournalLog, msgs: &[(i64, String, Vec<u8>)]) -> Appended {
    let mut total = Appended::default();
    for (t, topic, payload) in msgs {
        let a = log.append(&Entry::Message { t: *t, format: Format::Json, topic, payload }, *t).expect("append");
        assert!(a.written);
        total.evicted_segments += a.evicted_segments;
        total.evicted_bytes += a.evicted_bytes;
    }
    log.flush().expect("flush");
    total
}

/// Every record of the journal as (t, topic, payload); links as topic `<down>`/`<up>`.
fn read_back(dir: &Path, range: (i64, i64)) -> (Vec<(i64, String, Vec<u8>)>, ReadReport) {
    let mut got = Vec::new();
    let report = read(dir, range, |e| match e {
        Entry::Message { t, topic, payload, .. } => got.push((t, topic.to_owned(), payload.to_vec())),
        Entry::LinkDown { t } => got.push((t, "<down>".into(), vec![])),
        Entry::LinkUp { t } => got.push((t, "<up>".into(), vec![])),
        Entry::Event { t, seq, topic, body, .. } => got.push((t, format!("<event {seq}> {topic}"), body.to_vec())),
        Entry::Published { t, seq } => got.push((t, format!("<published {seq}>"), vec![])),
        Entry::Acked { t, seq } => got.push((t, format!("<acked {seq}>"), vec![])),
    })
    .expect("read");
    (got, report)
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    segment::list(dir).expect("list").into_iter().map(|s| s.path).collect()
}

#[test]
fn records_come_back_in_order_within_the_asked_range() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut log, recovered) = JournalLog::open(tmp.path(), JournalLimits::default()).expect("open");
    assert_eq!(recovered, Default::default());
    let msgs: Vec<_> = (0..100).map(|i| msg(T0 + i as i64 * 1000, i)).collect();
    append_all(&mut log, &msgs[..50]);
    log.append(&Entry::LinkDown { t: T0 + 49_500 }, T0 + 49_500).expect("down");
    log.append(&Entry::LinkUp { t: T0 + 49_600 }, T0 + 49_600).expect("up");
    append_all(&mut log, &msgs[50..]);
    let (got, report) = read_back(tmp.path(), (0, i64::MAX));
    assert_eq!(got.len(), 102);
    assert_eq!(got[..50], msgs[..50]);
    assert_eq!((got[50].1.as_str(), got[51].1.as_str()), ("<down>", "<up>"));
    assert_eq!(got[52..], msgs[50..]);
    assert_eq!((report.first, report.last, report.damaged.len()), (Some(T0), Some(T0 + 99_000), 0));
    // A range: [since, until).
    let (got, _) = read_back(tmp.path(), (T0 + 10_000, T0 + 20_000));
    assert_eq!(got, msgs[10..20]);
    // The file on disk is exactly what the log counts.
    let on_disk: u64 = segments(tmp.path()).iter().map(|p| std::fs::metadata(p).expect("meta").len()).sum();
    assert_eq!(on_disk, log.bytes());
}

#[test]
fn a_torn_last_record_is_cut_at_open_and_nothing_else_is_lost() {
    let tmp = tempfile::tempdir().expect("tmp");
    let msgs: Vec<_> = (0..20).map(|i| msg(T0 + i as i64, i)).collect();
    {
        let (mut log, _) = JournalLog::open(tmp.path(), JournalLimits::default()).expect("open");
        append_all(&mut log, &msgs);
    }
    // The process died in the middle of writing a 21st record.
    let seg = segments(tmp.path()).pop().expect("a segment");
    let mut partial = Vec::new();
    let mut scratch = Vec::new();
    let extra = msg(T0 + 20, 20);
    segment::put_entry(
        &mut partial,
        &mut scratch,
        &Entry::Message { t: extra.0, format: Format::Json, topic: &extra.1, payload: &extra.2 },
    );
    partial.truncate(partial.len() - 5);
    let mut bytes = std::fs::read(&seg).expect("read");
    bytes.extend_from_slice(&partial);
    std::fs::write(&seg, &bytes).expect("write");
    // Readers skip the torn tail silently (it may be a write under way).
    let (got, report) = read_back(tmp.path(), (0, i64::MAX));
    assert_eq!((got.len(), report.damaged.len()), (20, 0));
    // The writer cuts it off, and goes on in a new segment.
    let (mut log, recovered) = JournalLog::open(tmp.path(), JournalLimits::default()).expect("reopen");
    assert_eq!(recovered.torn, partial.len() as u64);
    let more: Vec<_> = (21..30).map(|i| msg(T0 + i as i64, i)).collect();
    append_all(&mut log, &more);
    let (got, report) = read_back(tmp.path(), (0, i64::MAX));
    assert_eq!(report.damaged, Vec::<String>::new());
    assert_eq!(got, [msgs, more].concat());
    assert_eq!(segments(tmp.path()).len(), 2);
}

#[test]
fn a_damaged_stretch_is_reported_with_its_segment_and_offset_and_the_rest_is_read() {
    let tmp = tempfile::tempdir().expect("tmp");
    let msgs: Vec<_> = (0..30).map(|i| msg(T0 + i as i64, i)).collect();
    let (mut log, _) = JournalLog::open(tmp.path(), JournalLimits::default()).expect("open");
    append_all(&mut log, &msgs);
    let seg = segments(tmp.path()).pop().expect("a segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&seg, &bytes).expect("write");
    let (got, report) = read_back(tmp.path(), (0, i64::MAX));
    assert_eq!(got.len(), 29, "one record lost, the others read");
    assert_eq!(report.damaged.len(), 1);
    assert!(
        report.damaged[0].contains(&seg.display().to_string()) && report.damaged[0].contains("offset"),
        "{:?}",
        report.damaged
    );
    assert!(got.iter().all(|m| msgs.contains(m)));
    // Foreign bytes in the journal directory under a segment's name: reported, not fatal.
    std::fs::write(tmp.path().join(segment::Segment::name(99, T0)), b"garbage, not a journal at all".repeat(4))
        .expect("write");
    let (got, report) = read_back(tmp.path(), (0, i64::MAX));
    assert_eq!((got.len(), report.damaged.len()), (29, 2));
}

#[test]
fn the_byte_budget_deletes_the_oldest_segments_and_is_never_exceeded() {
    let tmp = tempfile::tempdir().expect("tmp");
    let limits = JournalLimits { max_bytes: 256 << 10, max_age_ms: i64::MAX / 2 };
    let (mut log, _) = JournalLog::open(tmp.path(), limits).expect("open");
    let msgs: Vec<_> = (0..20_000).map(|i| msg(T0 + i as i64, i)).collect();
    let mut evicted = Appended::default();
    for chunk in msgs.chunks(1000) {
        let a = append_all(&mut log, chunk);
        evicted.evicted_segments += a.evicted_segments;
        evicted.evicted_bytes += a.evicted_bytes;
        let on_disk: u64 = segments(tmp.path()).iter().map(|p| std::fs::metadata(p).expect("meta").len()).sum();
        assert!(on_disk <= limits.max_bytes, "{on_disk} bytes on disk");
        assert_eq!(on_disk, log.bytes());
    }
    assert!(evicted.evicted_segments > 10, "{evicted:?}");
    // What is left is the newest records, without a gap.
    let (got, _) = read_back(tmp.path(), (0, i64::MAX));
    assert!(got.len() > 3000, "{}", got.len());
    assert_eq!(got[..], msgs[msgs.len() - got.len()..]);
}

#[test]
fn segments_older_than_the_age_limit_are_deleted() {
    let tmp = tempfile::tempdir().expect("tmp");
    let limits = JournalLimits { max_bytes: 64 << 20, max_age_ms: 10 * 60_000 };
    let (mut log, _) = JournalLog::open(tmp.path(), limits).expect("open");
    // One record a minute for an hour: a segment a minute (max_age / 24 is under a minute).
    let msgs: Vec<_> = (0..60).map(|i| msg(T0 + i as i64 * 60_000, i)).collect();
    let evicted = append_all(&mut log, &msgs);
    assert!(evicted.evicted_segments >= 45, "{evicted:?}");
    let (got, _) = read_back(tmp.path(), (0, i64::MAX));
    let oldest = got.first().expect("some left").0;
    assert!(oldest >= T0 + 59 * 60_000 - limits.max_age_ms - 60_000, "{oldest}");
    // Idle: the thread's expiry call deletes the rest once they are old.
    let a = log.expire(T0 + 3 * 3_600_000).expect("expire");
    assert!(a.evicted_segments >= 9, "{a:?}");
}

#[test]
fn the_thread_writes_every_input_it_is_handed_before_it_stops() {
    let tmp = tempfile::tempdir().expect("tmp");
    let counts = std::sync::Arc::new(JournalCounts::default());
    let (mut journal, _) = Journal::start(tmp.path(), JournalLimits::default(), counts.clone()).expect("start");
    for i in 0..1000 {
        let (t, topic, payload) = msg(T0 + i, i as usize);
        journal.message(t, Format::Auto, &topic, &payload);
        if i % 100 == 99 {
            journal.hand_over();
        }
    }
    journal.link(T0 + 1000, false);
    drop(journal);
    let written = counts.written.load(Relaxed);
    let skipped = counts.skipped.load(Relaxed);
    assert_eq!((written, skipped), (1001, 0), "a queue of 128 chunks holds 11");
    let (got, _) = read_back(tmp.path(), (0, i64::MAX));
    assert_eq!(got.len() as u64, written);
    assert_eq!(
        counts.bytes.load(Relaxed),
        segments(tmp.path()).iter().map(|p| std::fs::metadata(p).expect("m").len()).sum::<u64>()
    );
}

#[test]
fn the_export_is_a_recording_that_replay_reads_back_the_same() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut log, _) = JournalLog::open(tmp.path(), JournalLimits::default()).expect("open");
    let inputs: [(Format, &str, &[u8]); 6] = [
        (Format::Auto, "sensors/a/temperature", b"{\"temperature\": 21.5}"),
        (Format::Json, "sensors/a/pretty", b"{\n  \"temperature\": 22\n}"),
        (Format::Auto, "sensors/a/status", b"online"),
        (Format::Scalar, "sensors/a/level", b"42"),
        (Format::Postcard, "sensors/a/wire", &[0x01, 0xff, 0x00, 0x80]),
        (Format::Sparkplug, "spBv1.0/p/NDATA/gw", &[0x18, 0x07]),
    ];
    for (i, (format, topic, payload)) in inputs.iter().enumerate() {
        log.append(&Entry::Message { t: T0 + i as i64, format: *format, topic, payload }, T0).expect("append");
    }
    log.flush().expect("flush");
    let mut out = Vec::new();
    let report = export(tmp.path(), (0, T0 + 60_000), &mut out).expect("export");
    assert_eq!(report.records, 6);
    let text = String::from_utf8(out).expect("utf-8");
    assert_eq!(text.lines().count(), 7, "{text}");
    assert!(text.lines().last().is_some_and(|l| l == format!("{{\"t\":{}}}", T0 + 60_000)), "{text}");
    let recording = crate::replay::parse(&text, "export").expect("replay reads it");
    let messages: Vec<_> = recording.iter().filter_map(|r| r.message.as_ref()).collect();
    assert_eq!(messages.len(), 6);
    for ((_, topic, raw), (_, got_topic, got_raw, _)) in
        inputs.iter().zip(messages.iter().map(|(a, b, c)| ((), a, b, c)))
    {
        assert_eq!(topic, got_topic);
        if *topic != "sensors/a/pretty" && *topic != "sensors/a/temperature" {
            assert_eq!(raw, got_raw, "{topic}: bytes kept");
        }
    }
    assert!(
        text.contains("\"text\":\"online\"")
            && text.contains("\"hex\":\"01ff0080\"")
            && text.contains("\"hex\":\"1807\""),
        "{text}"
    );
}

#[test]
fn a_record_costs_17_bytes_besides_its_topic_and_payload() {
    let (mut frame, mut scratch) = (Vec::new(), Vec::new());
    let topic = "sensors/t-00001/temperature";
    let payload = br#"{"device":"t-00001","seq":3,"kind":"reading","temperature":30.5}"#;
    let now = 1_796_342_400_000; // 2026-12-05
    segment::put_entry(&mut frame, &mut scratch, &Entry::Message { t: now, format: Format::Json, topic, payload });
    assert_eq!(frame.len(), 17 + topic.len() + payload.len());
}
