//! The bookkeeping alone, as a state machine: each test drives [`Book`] through pushes,
//! reads, acknowledgements and applied batches, and checks what it says (rumqttc's
//! `state.rs` tests are the model). The sled side is tested in `store`.

use super::*;
use crate::store::Batch;
use std::collections::BTreeMap;

fn entry(i: u64, payload_len: usize) -> OutboxEntry {
    OutboxEntry {
        topic: format!("t/{i:03}"),
        payload: vec![b'x'; payload_len].into(),
        qos: 1,
        retain: false,
        traced: false,
    }
}

fn seqs(read: Read) -> Vec<u64> {
    match read {
        Read::Entries(v) => v.into_iter().map(|(s, _)| s).collect(),
        Read::Disk => panic!("read from disk, expected memory"),
    }
}

/// Pushes `n` entries of `payload_len` bytes; panics if one of them drops a written entry.
fn fill(book: &mut Book, n: u64, payload_len: usize) {
    for i in 0..n {
        book.push(entry(i, payload_len), |seq| panic!("deleted {seq}"));
    }
}

#[test]
fn sequence_numbers_start_at_zero_and_increase() {
    let mut book = Book::in_memory(1 << 20);
    for i in 0..5 {
        assert_eq!(book.push(entry(i, 10), |_| {}), i);
    }
    assert_eq!(book.depth(), (5, 5 * entry(0, 10).size()));
    book.assert_consistent();
}

#[test]
fn events_come_out_in_order_from_any_point_and_go_when_acknowledged() {
    let mut book = Book::in_memory(1 << 20);
    fill(&mut book, 10, 10);
    assert_eq!(seqs(book.next(3, 4)), [3, 4, 5, 6]);
    book.ack(4);
    book.ack(0);
    book.ack(42);
    assert_eq!(seqs(book.next(3, 4)), [3, 5, 6, 7]);
    assert_eq!(seqs(book.next(0, 2)), [1, 2]);
    assert_eq!(book.depth().0, 8);
    assert_eq!(book.next(3, 1), Read::Entries(vec![(3, entry(3, 10))]));
    assert_eq!(seqs(book.next(10, 5)), Vec::<u64>::new(), "nothing past the end");
    assert_eq!(seqs(book.next(3, 0)), Vec::<u64>::new(), "nothing asked");
    book.assert_consistent();
}

#[test]
fn acknowledging_twice_or_an_unknown_event_changes_nothing() {
    let mut book = Book::in_memory(1 << 20);
    fill(&mut book, 3, 10);
    book.ack(1);
    let depth = book.depth();
    book.ack(1);
    book.ack(99);
    assert_eq!(book.depth(), depth);
    assert!(!book.has_acked(), "nothing was written: nothing to delete");
    book.assert_consistent();
}

/// Issue 15: the in-memory outbox ignored `state.max_outbox_mb` and grew without bound
/// through an upstream outage.
#[test]
fn past_its_bound_the_oldest_events_are_dropped_and_counted() {
    let one = entry(0, 100).size();
    let mut book = Book::in_memory(one * 5);
    for i in 0..12 {
        book.push(entry(i, 100), |seq| panic!("deleted {seq}: nothing was written"));
        assert!(book.depth().1 <= one * 5, "over the bound after {i}");
    }
    assert_eq!(book.take_dropped(), 7);
    assert_eq!(book.take_dropped(), 0, "counted once");
    assert_eq!(seqs(book.next(0, 100)), [7, 8, 9, 10, 11], "the newest stay, in order");
    // Acknowledging makes room again.
    book.ack(7);
    book.push(entry(12, 100), |_| {});
    assert_eq!(book.take_dropped(), 0);
    // An event larger than the whole bound is kept alone rather than lost.
    book.push(entry(13, 10_000), |_| {});
    assert_eq!(seqs(book.next(0, 100)), [13]);
    assert_eq!(book.take_dropped(), 5);
    book.assert_consistent();
}

#[test]
fn dropping_a_written_event_asks_for_its_deletion_and_an_unwritten_one_does_not() {
    let one = entry(0, 10).size();
    let mut book = Book::new(one * 3, 1 << 20);
    fill(&mut book, 3, 10);
    // The batch holding 0 and 1 is applied; 2 is not yet.
    assert!(book.mark_written(0) && book.mark_written(1));
    let mut deleted = Vec::new();
    book.push(entry(3, 10), |seq| deleted.push(seq));
    book.push(entry(4, 10), |seq| deleted.push(seq));
    book.push(entry(5, 10), |seq| deleted.push(seq));
    assert_eq!(deleted, [0, 1], "2 was never written");
    assert_eq!(book.take_dropped(), 3);
    assert!(!book.mark_written(2), "dropped before its batch was applied: not written at all");
    assert!(book.mark_written(3));
    book.assert_consistent();
}

#[test]
fn a_written_event_acknowledged_is_deleted_with_the_next_batch_an_unwritten_one_never_written() {
    let mut book = Book::new(1 << 20, 1 << 20);
    fill(&mut book, 3, 10);
    // 0 is acknowledged before its batch is applied: never written.
    book.ack(0);
    assert!(!book.mark_written(0));
    assert!(book.mark_written(1) && book.mark_written(2));
    assert!(!book.has_acked());
    book.ack(2);
    assert!(book.has_acked());
    assert_eq!(book.take_acked(), [2]);
    assert!(!book.has_acked(), "taken");
    // The batch deleting it failed: the deletion goes with the next one.
    book.return_acked(vec![2]);
    assert_eq!(book.take_acked(), [2]);
    book.assert_consistent();
}

#[test]
fn a_batch_that_failed_leaves_its_events_unwritten() {
    let mut book = Book::new(1 << 20, 1 << 20);
    fill(&mut book, 2, 10);
    assert!(book.mark_written(0) && book.mark_written(1));
    book.unmark_written(0);
    book.unmark_written(1);
    book.ack(0);
    book.ack(1);
    assert!(!book.has_acked(), "not on disk: nothing to delete");
}

/// QoS 0 events are acknowledged when sent, QoS 1 ones when the broker answers: a QoS 0
/// event is acknowledged before the QoS 1 event before it. The order stays, and nothing
/// acknowledged is read again.
#[test]
fn a_qos0_event_acknowledged_before_an_older_qos1_one_is_gone_and_the_order_stays() {
    let mut book = Book::new(1 << 20, 1 << 20);
    fill(&mut book, 4, 10);
    for seq in 0..4 {
        book.mark_written(seq);
    }
    // 0 and 2 QoS 1 in flight, 1 and 3 QoS 0: acknowledged at once.
    book.ack(1);
    book.ack(3);
    assert_eq!(seqs(book.next(0, 10)), [0, 2]);
    assert_eq!(book.depth().0, 2);
    book.ack(2);
    book.ack(0);
    assert_eq!(seqs(book.next(0, 10)), Vec::<u64>::new());
    assert_eq!(book.take_acked(), [1, 3, 2, 0], "every written one is deleted");
    // The sequence goes on after them.
    assert_eq!(book.push(entry(4, 10), |_| {}), 4);
    book.assert_consistent();
}

#[test]
fn in_memory_everything_stays_readable_however_large() {
    let mut book = Book::in_memory(u64::MAX);
    fill(&mut book, 1000, 10_000);
    assert_eq!(seqs(book.next(0, usize::MAX)).len(), 1000);
    assert_eq!(seqs(book.next(999, 5)), [999]);
    book.assert_consistent();
}

/// Durably, past the cache (a long upstream outage), entries wait on disk only: the
/// publisher is sent to disk for them, and to memory again once the cache drained.
#[test]
fn past_the_cache_entries_are_read_back_from_disk() {
    let one = entry(0, 10).size();
    let mut book = Book::new(1 << 20, one * 3);
    fill(&mut book, 6, 10);
    // 0..3 fit; from 3 on, not (and nothing more is cached until the cache empties).
    assert_eq!(seqs(book.next(0, 10)), [0, 1, 2], "stops before the first uncached one");
    assert_eq!(seqs(book.next(3, 10)), Vec::<u64>::new(), "not written yet: nothing to read");
    for seq in 0..6 {
        book.mark_written(seq);
    }
    assert_eq!(book.next(3, 10), Read::Disk);
    assert_eq!(book.next(5, 10), Read::Disk);
    // The cache empties: new entries are cached again, while 3..6 are still on disk only.
    for seq in 0..3 {
        book.ack(seq);
    }
    book.push(entry(6, 10), |_| {});
    assert_eq!(book.next(3, 10), Read::Disk);
    assert_eq!(seqs(book.next(6, 10)), [6]);
    for seq in 3..6 {
        assert!(book.is_live(seq));
        book.ack(seq);
        assert!(!book.is_live(seq), "acknowledged: a read from disk skips it");
    }
    assert_eq!(seqs(book.next(0, 10)), [6]);
    book.assert_consistent();
}

#[test]
fn a_cache_of_nothing_sends_every_read_to_disk() {
    let mut book = Book::new(1 << 20, 0);
    fill(&mut book, 3, 10);
    assert_eq!(seqs(book.next(0, 10)), Vec::<u64>::new(), "not written yet");
    book.mark_written(0);
    assert_eq!(book.next(0, 10), Read::Disk);
    book.assert_consistent();
}

/// What an earlier run left is read at open: cached while it fits, counted, bounded, and
/// the sequence goes on after it (gaps where entries were acknowledged are fine).
#[test]
fn entries_an_earlier_run_left_are_cached_counted_and_continued() {
    let one = entry(0, 10).size();
    let mut book = Book::new(one * 3, one * 2);
    for seq in [2, 5, 6, 9] {
        book.recovered(seq, Some(entry(seq, 10)), 999);
    }
    assert_eq!(book.take_dropped(), 1, "over the bound: the oldest goes");
    assert_eq!(book.depth(), (3, one * 3), "counted by the entry, not its length on disk");
    assert_eq!(seqs(book.next(0, 10)), [5], "6 did not fit (2 was still there)");
    assert_eq!(book.next(6, 10), Read::Disk, "past the cache");
    assert_eq!(book.push(entry(10, 10), |_| {}), 10);
    // One that cannot be decoded counts by its length on disk, and is read from there.
    let mut book = Book::new(1 << 20, 1 << 20);
    book.recovered(0, None, 500);
    assert_eq!(book.depth(), (1, 500));
    assert_eq!(book.next(0, 10), Read::Disk);
    book.ack(0);
    assert_eq!(book.take_acked(), [0]);
    book.assert_consistent();
}

/// The facade in memory: the agent's view, no store.
#[test]
fn the_memory_outbox_is_the_book() {
    let outbox = Outbox::memory(entry(0, 10).size() * 2);
    let mut batch = Batch::default();
    for i in 0..3 {
        outbox.push(&mut batch, entry(i, 10));
    }
    assert!(batch.is_empty(), "nothing goes to disk");
    assert_eq!(outbox.next(0, 10).iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(outbox.take_dropped(), 1);
    outbox.acked(1);
    assert_eq!(outbox.depth().0, 1);
    assert!(!outbox.has_acked() && outbox.store().is_none() && outbox.size_on_disk().is_none());
}

/// The bookkeeping against a model through random pushes, reads, acks in and out of order,
/// applied batches and drops: the same whatever the cache (all, some, none).
#[test]
fn the_book_agrees_with_a_model_whatever_its_cache() {
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for cap in [0, 300, u64::MAX] {
        let mut book = Book::new(2000, cap);
        // The model: seq -> (entry, written); what the disk holds; deletions asked for.
        let mut live: BTreeMap<u64, (OutboxEntry, bool)> = BTreeMap::new();
        let mut disk: BTreeMap<u64, OutboxEntry> = BTreeMap::new();
        let mut dropped = 0;
        for round in 0..2000 {
            match next(5) {
                0 | 1 => {
                    let e = entry(round, next(80) as usize);
                    let seq = book.push(e.clone(), |seq| {
                        assert!(disk.remove(&seq).is_some(), "cap {cap}: deletes {seq}, not on disk");
                    });
                    live.insert(seq, (e, false));
                    let mut bytes: u64 = live.values().map(|(e, _)| e.size()).sum();
                    while bytes > 2000 && live.len() > 1 {
                        let Some((_, (old, _))) = live.pop_first() else { break };
                        bytes -= old.size();
                        dropped += 1;
                    }
                }
                2 => {
                    // A batch is applied: every live entry is written.
                    for (seq, (e, written)) in live.iter_mut() {
                        assert!(book.mark_written(*seq));
                        *written = true;
                        disk.insert(*seq, e.clone());
                    }
                }
                3 => {
                    // Ack the oldest (QoS 1 in order), or a newer one (QoS 0 behind QoS 1).
                    let pick = match next(3) {
                        0 => live.keys().next().copied(),
                        1 => live.keys().last().copied(),
                        _ => live.keys().nth(next(live.len() as u64 + 1) as usize).copied(),
                    };
                    if let Some(seq) = pick {
                        book.ack(seq);
                        live.remove(&seq);
                    }
                    for seq in book.take_acked() {
                        assert!(disk.remove(&seq).is_some(), "cap {cap}: deletes {seq}, not on disk");
                    }
                }
                _ => {
                    // Read as the publisher does: memory, else disk filtered by `is_live`.
                    let from = live.keys().next().copied().unwrap_or(0);
                    let got: Vec<(u64, OutboxEntry)> = match book.next(from, 5) {
                        Read::Entries(v) => v,
                        Read::Disk => disk
                            .range(from..)
                            .filter(|(seq, _)| book.is_live(**seq))
                            .take(5)
                            .map(|(s, e)| (*s, e.clone()))
                            .collect(),
                    };
                    let want: Vec<(u64, OutboxEntry)> =
                        live.iter().take(got.len()).map(|(s, (e, _))| (*s, e.clone())).collect();
                    assert_eq!(got, want, "cap {cap} round {round}: a prefix of what waits, in order");
                    if cap == u64::MAX {
                        assert_eq!(got.len(), live.len().min(5), "cap {cap}: in memory, all of it");
                    }
                }
            }
            assert_eq!(book.depth().0, live.len(), "cap {cap} round {round}");
            book.assert_consistent();
        }
        assert_eq!(book.take_dropped(), dropped, "cap {cap}");
    }
}

/// The store encodes an entry for the disk only when it must: one the cache keeps is encoded
/// at apply time if still waiting; one past the cache is handed back at once.
#[test]
fn an_entry_past_the_cache_is_handed_back_and_a_cached_one_is_kept() {
    let one = entry(0, 10).size();
    let mut book = Book::new(u64::MAX, one);
    let (first, back) = book.push_uncached(entry(0, 10), |_| {});
    assert!(back.is_none(), "fits the cache");
    assert_eq!(book.cached(first), Some(&entry(0, 10)));
    let (second, back) = book.push_uncached(entry(1, 10), |_| {});
    assert_eq!(back, Some(entry(1, 10)), "no room: the caller keeps it");
    assert_eq!(book.cached(second), None);
    book.ack(first);
    assert_eq!(book.cached(first), None, "acknowledged: nothing to encode");
}
