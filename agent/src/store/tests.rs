use super::*;
use edgewatch_engine::Touched;

fn entry(i: usize) -> OutboxEntry {
    OutboxEntry {
        topic: format!("t/{i}"),
        payload: format!("payload {i}").into(),
        qos: 1,
        retain: false,
        traced: false,
    }
}

/// The poison-message bookkeeping: a start after a crash is told apart from one after a
/// clean stop, and delivery counts come and go with batches.
#[tokio::test]
async fn a_clean_stop_is_told_apart_from_a_crash_and_delivery_counts_come_and_go() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Store::open(dir.path(), 1 << 20, 1 << 20).expect("opens");
    assert!(s.take_clean_stop().expect("reads"), "a store that never ran follows no crash");
    let mut b = Batch::default();
    s.mark_alive(&mut b, 1000);
    s.commit(b).await.expect("commits");
    assert!(!s.take_clean_stop().expect("reads"), "ran, and never stopped cleanly: a crash");
    let mut b = Batch::default();
    s.mark_clean_stop(&mut b);
    s.commit(b).await.expect("commits");
    assert!(s.take_clean_stop().expect("reads"), "a clean stop");
    assert!(!s.take_clean_stop().expect("reads"), "the mark is taken: a crash of this run is seen by the next");

    assert_eq!(s.deliveries(7), 0);
    let mut b = Batch::default();
    s.count_delivery(&mut b, 7, 2);
    s.commit(b).await.expect("commits");
    assert_eq!((s.deliveries(7), s.deliveries(8)), (2, 0));
    let mut b = Batch::default();
    s.forget_delivery(&mut b, 7);
    s.commit(b).await.expect("commits");
    assert_eq!(s.deliveries(7), 0);
    assert!(s.load_state().expect("loads").is_empty(), "delivery counts are not rule state");
}

#[tokio::test]
async fn a_rules_past_is_stored_under_names_that_come_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Store::open(dir.path(), 1 << 20, 1 << 20).expect("opens");
    let names = [
        Touched::Past { rule: "r".into(), key: "k\u{0}x".into() },
        Touched::PastOpen { rule: "r".into(), key: "c/x".into() },
        Touched::Rule { rule: "r".into(), key: "c/x".into() },
    ];
    let mut b = Batch::default();
    for (i, t) in names.iter().enumerate() {
        s.put_state(&mut b, t, Some(i.to_string().into_bytes()));
    }
    s.commit(b).await.expect("commits");
    let mut state = s.load_state().expect("loads");
    state.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(state.into_iter().map(|(t, _)| t).collect::<Vec<_>>(), names);
}

/// A history series' open roll-ups and a past's open buckets are raw bytes: a snapshot carries them
/// as base64 text and a
/// restore (and `backtest --state`) brings back the same bytes; the one text piece of an
/// earlier version comes back decoded, as the engine reads it either way.
#[tokio::test]
async fn raw_pieces_ride_a_snapshot_as_text_and_come_back_as_they_were() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Store::open(dir.path(), 1 << 20, 1 << 20).expect("opens");
    let fine = Touched::Series { key: "plant/dev-07".into(), field: "temperature".into() };
    let raw: Vec<u8> = vec![4, 0x80, 0xff, 0, 1, 0x7f, b'{', 0xc3];
    let mut b = Batch::default();
    s.put_state(&mut b, &fine, Some(raw.clone()));
    let open = Touched::PastOpen { rule: "r".into(), key: "plant/dev-07".into() };
    s.put_state(&mut b, &open, Some(vec![8, 1, b't', 0xfe]));
    s.put_state(&mut b, &Touched::Rule { rule: "r".into(), key: "k".into() }, Some(b"{\"a\":1}".to_vec()));
    s.commit(b).await.expect("commits");
    let snap = s.snapshot(1).expect("snapshot");
    let text = |k: &str| snap.state.iter().find(|(key, _)| key.starts_with(k)).map(|(_, v)| v.clone());
    assert_eq!(text("r/").as_deref(), Some("BID/AAF/e8M"), "base64, not lossy text");
    assert_eq!(text("s/").as_deref(), Some("{\"a\":1}"), "other state as it is");
    let mut from_snapshot = snap.engine_state();
    from_snapshot.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
    let mut saved = s.load_state().expect("loads");
    saved.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
    assert_eq!(from_snapshot, saved);
    assert!(saved.contains(&(fine.clone(), raw.clone())));
    assert!(saved.contains(&(open, vec![8, 1, b't', 0xfe])), "a past's open buckets too");
    let other = tempfile::tempdir().expect("temp dir");
    let t = Store::open(other.path(), 1 << 20, 1 << 20).expect("opens");
    t.restore(&snap).await.expect("restores");
    let mut restored = t.load_state().expect("loads");
    restored.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
    assert_eq!(restored, saved);
    // An earlier version's one piece (base64 text already) goes as it is and comes back
    // decoded; its JSON stays JSON.
    let legacy = Snapshot {
        state: vec![("r/a\0t".into(), "AQ".into()), ("r/b\0t".into(), "{\"f\":null,\"c\":null}".into())],
        ..Snapshot::default()
    };
    let values: Vec<Vec<u8>> = legacy.engine_state().into_iter().map(|(_, v)| v).collect();
    assert_eq!(values, [vec![1], b"{\"f\":null,\"c\":null}".to_vec()]);
}

#[tokio::test]
async fn state_and_outbox_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let s = Store::open(dir.path(), 1 << 20, 1 << 20).expect("opens");
        let mut b = Batch::default();
        s.put_state(&mut b, &Touched::Rule { rule: "r".into(), key: "k\u{1}x".into() }, Some(b"{\"a\":1}".to_vec()));
        s.put_state(&mut b, &Touched::Dedup("seq:d".into()), Some(b"{}".to_vec()));
        for i in 0..3 {
            s.push_outbox(&mut b, entry(i));
        }
        s.mark_alive(&mut b, 1234);
        s.commit(b).await.expect("commits");
        s.ack_outbox(0);
        // The deletion goes with the next batch, even an empty one.
        s.commit(Batch::default()).await.expect("commits");
    }
    let s = reopen(|| Store::open(dir.path(), 1 << 20, 1 << 20));
    let state = s.load_state().expect("loads");
    assert_eq!(state.len(), 2);
    assert!(
        state.iter().any(|(t, v)| *t == Touched::Rule { rule: "r".into(), key: "k\u{1}x".into() } && v == b"{\"a\":1}")
    );
    let out = s.outbox_from(0, 10).expect("reads");
    assert_eq!(out.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(out[0].1, entry(1));
    assert_eq!(s.last_alive(), Some(1234));
    // New entries continue the sequence.
    let mut b = Batch::default();
    s.push_outbox(&mut b, entry(9));
    s.commit(b).await.expect("commits");
    assert_eq!(s.outbox_from(0, 10).expect("reads").last().map(|x| x.0), Some(3));
}

/// The publisher's view (memory, or disk past the cache) against a model, through random
/// interleavings of batches, reads, acks in order (QoS 1) and out of order (QoS 0 behind
/// QoS 1), drops for space, and a reopen.
#[tokio::test]
async fn the_outbox_reads_the_same_from_memory_and_from_disk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for cap in [0u64, 400, 1 << 20] {
        let _ = std::fs::remove_dir_all(dir.path().join("db"));
        let s = Store::open_with_cache(dir.path(), 1 << 20, Book::new(3000, cap)).expect("opens");
        // The model: every entry pushed, by seq; which are acked; the publisher's cursor.
        let mut model: Vec<OutboxEntry> = Vec::new();
        let mut acked = std::collections::BTreeSet::new();
        let mut cursor = 0u64;
        let mut inflight: std::collections::VecDeque<u64> = Default::default();
        for round in 0..300 {
            let mut b = Batch::default();
            for _ in 0..next(6) {
                let i = model.len();
                let mut e = entry(i);
                e.qos = u8::from(next(3) != 0);
                let mut p = e.payload.to_vec();
                p.resize(10 + next(60) as usize, b'x');
                e.payload = p.into();
                s.push_outbox(&mut b, e.clone());
                model.push(e);
            }
            // The publisher reads (and the broker acknowledges) before or after the batch
            // is written: entries acknowledged before it never reach the disk.
            let before = next(2) == 0;
            for phase in [true, false] {
                if phase != before {
                    s.apply(std::mem::take(&mut b)).expect("applies");
                    continue;
                }
                let got = s.outbox_from(cursor, 1 + next(5) as usize).expect("reads");
                for (seq, e) in got {
                    assert!(seq >= cursor, "cap {cap} round {round}: {seq} before the cursor {cursor}");
                    assert_eq!(e, model[seq as usize], "cap {cap} round {round}: seq {seq}");
                    cursor = seq + 1;
                    if e.qos == 0 {
                        s.ack_outbox(seq);
                        acked.insert(seq);
                    } else {
                        inflight.push_back(seq);
                    }
                }
                for _ in 0..next(2) {
                    if let Some(seq) = inflight.pop_front() {
                        s.ack_outbox(seq);
                        acked.insert(seq);
                    }
                }
            }
        }
        s.commit(Batch::default()).await.expect("commits");
        let dropped = s.take_dropped();
        let (depth, _) = s.outbox_depth();
        assert!(dropped > 0, "cap {cap}: 3000 bytes should have overflowed");
        // What the publisher can read is exactly what was never acknowledged nor dropped.
        let left = read_all(&s);
        assert_eq!(left.len(), depth, "cap {cap}");
        for (seq, e) in &left {
            assert!(!acked.contains(seq), "cap {cap}: acked {seq} still there");
            assert_eq!(*e, model[*seq as usize]);
        }
        // And so is what is on disk (acknowledged entries were deleted with the last batch).
        let on_disk: Vec<u64> =
            s.db.scan_prefix(b"o/").keys().map(|k| outbox::seq_of(&k.expect("reads")).expect("a seq")).collect();
        assert_eq!(on_disk, left.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), "cap {cap}");
        // Memory holds no more than the cap, and the counts are true.
        s.book().assert_consistent();
        // A reopen reads back the same.
        drop(s);
        let s = reopen(|| Store::open_with_cache(dir.path(), 1 << 20, Book::new(3000, cap)));
        assert_eq!(read_all(&s), left, "cap {cap}: after a reopen");
        assert_eq!(s.outbox_depth().0, depth, "cap {cap}: after a reopen");
        s.book().assert_consistent();
    }
}

/// Everything the publisher can read, reading on from where each read ended (a read stops
/// where memory ends and disk begins).
fn read_all(s: &Store) -> Vec<(u64, OutboxEntry)> {
    let mut all: Vec<(u64, OutboxEntry)> = Vec::new();
    loop {
        let from = all.last().map_or(0, |(seq, _)| seq + 1);
        let got = s.outbox_from(from, 7).expect("reads");
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}

/// sled's background flusher may hold the file lock a moment after the last handle is
/// dropped (seen on a loaded machine): retry, as a restarted process would not need.
fn reopen(open: impl Fn() -> Result<Store, StoreError>) -> Store {
    let mut tries = 0;
    loop {
        match open() {
            Ok(s) => break s,
            Err(StoreError::Locked { .. }) if tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("reopens: {e}"),
        }
    }
}

#[tokio::test]
async fn a_full_outbox_drops_the_oldest_and_counts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Store::open(dir.path(), 1 << 20, 200).expect("opens");
    let mut b = Batch::default();
    for i in 0..10 {
        s.push_outbox(&mut b, entry(i));
    }
    s.commit(b).await.expect("commits");
    let (n, bytes) = s.outbox_depth();
    assert!(bytes <= 200 && n < 10, "{n} entries, {bytes} bytes");
    assert_eq!(s.take_dropped(), 10 - n as u64);
    assert_eq!(s.outbox_from(0, 100).expect("reads").last().map(|e| e.1.topic.clone()), Some("t/9".into()));
}

#[tokio::test]
async fn an_unreadable_database_is_moved_aside_and_the_snapshot_restored() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let s = Store::open(dir.path(), 1 << 20, 1 << 20).expect("opens");
        let mut b = Batch::default();
        s.put_state(&mut b, &Touched::Dedup("seq:d".into()), Some(b"{\"max\":1,\"seen\":1}".to_vec()));
        s.push_outbox(&mut b, entry(1));
        s.commit(b).await.expect("commits");
        s.write_snapshot_file(&s.snapshot(42).expect("snapshot")).expect("written");
    }
    // Wreck every file of the database.
    for f in walk(&dir.path().join("db")) {
        std::fs::write(&f, b"\xde\xad\xbe\xef garbage").expect("overwrite");
    }
    let (s, opened) = open_or_recover(dir.path(), 1 << 20, 1 << 20).await.expect("still opens");
    match opened {
        Opened::Recovered { snapshot, quarantined, .. } => {
            assert_eq!(snapshot, Ok(42));
            assert!(quarantined.exists());
        }
        Opened::Clean => panic!("the wrecked database opened as if clean"),
    }
    assert_eq!(s.load_state().expect("loads").len(), 1);
    assert_eq!(s.outbox_depth().0, 1);
    // A restore is a restart: the snapshot's alive mark (its time, in older files) is the
    // new database's.
    assert_eq!(s.last_alive(), Some(42));
}

#[tokio::test]
async fn a_restored_snapshot_brings_its_alive_mark_unless_the_store_has_a_later_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Store::open(dir.path(), 1 << 20, 1 << 20).expect("opens");
    let snap = |alive_ms| Snapshot { schema: SCHEMA_VERSION, taken_ms: 900, alive_ms, ..Snapshot::default() };
    s.restore(&snap(Some(500))).await.expect("restores");
    assert_eq!(s.last_alive(), Some(500));
    s.restore(&snap(None)).await.expect("restores");
    assert_eq!(s.last_alive(), Some(900));
    s.restore(&snap(Some(700))).await.expect("restores");
    assert_eq!(s.last_alive(), Some(900));
}

/// Issue 14 C: the alive mark goes with commits that write anyway, never on its own.
#[tokio::test]
async fn an_alive_mark_rides_only_with_a_batch_that_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Store::open(dir.path(), 1 << 20, 1 << 20).expect("opens");
    let mut b = Batch::default();
    b.alive_at(100);
    assert!(!s.apply(b).expect("applies").wrote, "an alive mark alone is no write");
    assert_eq!(s.last_alive(), None);
    let mut b = Batch::default();
    s.put_state(&mut b, &Touched::Dedup("seq:d".into()), Some(b"{}".to_vec()));
    b.alive_at(200);
    assert!(s.apply(b).expect("applies").wrote);
    assert_eq!(s.last_alive(), Some(200));
    // An event acknowledged upstream before its batch is applied is never written: nor is
    // the mark.
    let mut b = Batch::default();
    s.push_outbox(&mut b, entry(1));
    let (seq, _) = s.outbox_from(0, 1).expect("reads")[0].clone();
    s.ack_outbox(seq);
    b.alive_at(300);
    assert!(!s.apply(b).expect("applies").wrote);
    assert_eq!(s.last_alive(), Some(200));
}

/// Found with issue 14: a database another process held (a second agent on the same state
/// directory) was taken for damaged, moved aside under the running agent, and replaced by
/// the snapshot.
#[tokio::test]
async fn a_database_another_process_holds_is_not_moved_aside() {
    let dir = tempfile::tempdir().expect("temp dir");
    let _running = Store::open(dir.path(), 1 << 20, 1 << 20).expect("opens");
    match open_or_recover(dir.path(), 1 << 20, 1 << 20).await {
        Err(StoreError::Locked { .. }) => {}
        Err(e) => panic!("another error: {e}"),
        Ok((_, opened)) => panic!("opened a held database: {opened:?}"),
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("state dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["db"], "nothing moved aside");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { v.extend(walk(&p)) } else { v.push(p) }
    }
    v
}

/// The state journal (`journal.rs`): whatever the batches, folds and reopens, the state read
/// back is the last value written to each key, and a removal removes.
mod journal {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn key(i: u8) -> Touched {
        Touched::Rule { rule: "r".into(), key: format!("k{i}").into() }
    }

    fn set_limit(s: &Store, limit: usize) {
        s.journal.lock().expect("journal").set_limit(limit);
    }

    fn read(s: &Store) -> BTreeMap<String, Vec<u8>> {
        let name = |t: Touched| match t {
            Touched::Rule { key, .. } => key.to_string(),
            other => panic!("unexpected {other:?}"),
        };
        s.load_state().expect("loads").into_iter().map(|(t, v)| (name(t), v)).collect()
    }

    proptest! {
        #[test]
        fn a_record_reads_back_as_written_and_garbage_is_an_error(
            changes in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..30), prop::option::of(prop::collection::vec(any::<u8>(), 0..200))), 0..20),
            garbage in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let record = super::super::journal::encode(&changes);
            let back = super::super::journal::decode(1, &record).expect("decodes");
            let back: Vec<_> = back.into_iter().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect();
            prop_assert_eq!(back, changes);
            let _ = super::super::journal::decode(2, &garbage);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn state_read_back_is_the_last_written_whatever_the_folding(
            batches in prop::collection::vec(
                (prop::collection::vec((0u8..6, prop::option::of(prop::collection::vec(any::<u8>(), 0..40))), 0..5), any::<bool>()),
                1..40,
            ),
            limit in 0usize..300,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let dir = tempfile::tempdir().expect("temp dir");
            let open = || { let s = reopen(|| Store::open(dir.path(), 1 << 20, 1 << 20)); set_limit(&s, limit); s };
            let mut s = open();
            let mut model = BTreeMap::new();
            for (changes, reopen_after) in batches {
                let mut b = Batch::default();
                let mut seen = std::collections::HashSet::new();
                for (k, v) in changes {
                    // One change per key and batch, as the engine loop gives them.
                    if !seen.insert(k) { continue; }
                    match &v {
                        Some(v) => model.insert(format!("k{k}"), v.clone()),
                        None => model.remove(&format!("k{k}")),
                    };
                    s.put_state(&mut b, &key(k), v);
                }
                rt.block_on(s.commit(b)).expect("commits");
                prop_assert_eq!(&read(&s), &model);
                let (_, bytes) = s.journal.lock().expect("journal").size();
                prop_assert!(bytes <= limit + 6 * 60, "{bytes} bytes held, limit {limit}");
                if reopen_after {
                    drop(s);
                    s = open();
                    prop_assert_eq!(&read(&s), &model);
                }
            }
        }
    }

    /// A key written with every batch stays in the journal; one that stopped changing is
    /// folded into place, and a removal is folded as a removal.
    #[tokio::test]
    async fn a_busy_key_stays_in_the_journal_and_a_quiet_one_is_folded_into_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = Store::open(dir.path(), 1 << 20, 1 << 20).expect("opens");
        set_limit(&s, 200);
        let in_place = |t: &Touched| s.db.get(super::super::state::state_key(t)).expect("reads");
        let mut b = Batch::default();
        s.put_state(&mut b, &key(9), Some(b"quiet".to_vec()));
        s.put_state(&mut b, &key(8), Some(b"removed later".to_vec()));
        s.commit(b).await.expect("commits");
        let mut b = Batch::default();
        s.put_state(&mut b, &key(8), None);
        s.commit(b).await.expect("commits");
        for i in 0..50u32 {
            let mut b = Batch::default();
            s.put_state(&mut b, &key(1), Some(format!("busy {i}").into_bytes()));
            s.commit(b).await.expect("commits");
        }
        assert_eq!(in_place(&key(9)).as_deref(), Some(b"quiet".as_slice()), "folded into place");
        assert_eq!(in_place(&key(8)), None);
        assert_eq!(in_place(&key(1)), None, "never written in place while it kept changing");
        let (records, bytes) = s.journal.lock().expect("journal").size();
        assert!(bytes <= 200 && records < 50, "{records} records, {bytes} bytes");
        let state = read(&s);
        assert_eq!(state.get("k1").map(Vec::as_slice), Some(b"busy 49".as_slice()));
        assert_eq!(state.get("k9").map(Vec::as_slice), Some(b"quiet".as_slice()));
        assert!(!state.contains_key("k8"));
        // A rule's closed past buckets go in place at once, never through the journal.
        let closed = Touched::Past { rule: "r".into(), key: "k".into() };
        let mut b = Batch::default();
        s.put_state(&mut b, &closed, Some(b"buckets".to_vec()));
        s.commit(b).await.expect("commits");
        assert_eq!(in_place(&closed).as_deref(), Some(b"buckets".as_slice()));
        assert_eq!(s.journal.lock().expect("journal").size(), (records, bytes), "the journal did not grow");
        // A snapshot carries the journal's state too.
        let snap = s.snapshot(1).expect("snapshot");
        assert!(snap.state.iter().any(|(k, v)| k == "s/r\u{0}k1" && v == "busy 49"), "{:?}", snap.state);
    }
}
