//! The event log: the recent composite events as they were sent, with when each was handed
//! to the upstream connection and when the broker acknowledged it, in segment files under
//! `<state_dir>/events/`, bounded in bytes and in age. `edgewatch trace` reads it, while
//! the agent runs too; the console's event feed is to read the same files.
//!
//! ```text
//! Step::collect ─▶ EventLog::event (outbox seq, id, topic, the CloudEvent) ─┐ one buffer,
//! Upstream::pump ─▶ EventLog::published(seq)   (composite events only)    ├▶ handed to the
//! Upstream::run, PUBACK ─▶ EventLog::acked(seq)                           ┘  journal's writer
//!                                          thread at each batch and at housekeeping
//!   ─▶ <seq>-<created>.jnl, the oldest deleted past event_log.max_mb or max_age (counted)
//! find (any process) ◀─ the files
//! ```
//!
//! One segment log, not two: the files, frames, writer thread and budget are the input
//! journal's (`crate::journal`), with record kinds of their own. Like the journal it is a
//! record, not part of durability: written to the OS within a fraction of a second, never
//! fsync'd, and skipped (counted) rather than ever slowing the agent down. An event whose
//! batch a crash lost is queued again after the restart, with the same id: the newest
//! record of an id is the one that counts.

use crate::journal::{Entry, Journal, JournalCounts, JournalError, JournalLimits};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The event log's directory under a state directory.
pub fn dir_in(state_dir: &Path) -> PathBuf {
    state_dir.join("events")
}

/// The agent's handle: shared by the engine loop (events) and the upstream side
/// (publications, acknowledgements). Records are written by the log's own thread.
#[derive(Debug, Clone)]
pub struct EventLog {
    journal: Arc<Mutex<Journal>>,
}

impl EventLog {
    /// Opens the log in `dir` and starts its thread.
    pub fn start(dir: &Path, limits: JournalLimits, counts: Arc<JournalCounts>) -> Result<EventLog, JournalError> {
        let (journal, recovered) = Journal::start_named(dir, limits, counts, "event log")?;
        tracing::info!(dir = %dir.display(), segments = recovered.segments, bytes = recovered.bytes, "Event log open.");
        Ok(EventLog { journal: Arc::new(Mutex::new(journal)) })
    }

    fn with(&self, f: impl FnOnce(&mut Journal)) {
        // Every record is pushed whole: a panic elsewhere leaves the buffer consistent.
        f(&mut self.journal.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    /// A composite event queued as outbox entry `seq` (handed to the thread with the batch,
    /// [`EventLog::hand_over`]).
    pub fn event(&self, t: i64, seq: u64, id: u128, topic: &str, body: &[u8]) {
        self.with(|j| j.record(&Entry::Event { t, seq, id, topic, body }));
    }

    /// Outbox entry `seq` went to the upstream connection.
    pub fn published(&self, t: i64, seq: u64) {
        self.with(|j| j.record(&Entry::Published { t, seq }));
    }

    /// The broker acknowledged outbox entry `seq`.
    pub fn acked(&self, t: i64, seq: u64) {
        self.with(|j| j.record(&Entry::Acked { t, seq }));
    }

    /// Hands what is held to the thread: at each batch, and when idle at the engine loop's
    /// housekeeping (every second or so), so that a record costs no thread wake-up of its
    /// own. Dropping the last handle hands over the rest.
    pub fn hand_over(&self) {
        self.with(Journal::hand_over);
    }
}

/// One event found in the log.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Logged {
    /// When it was queued upstream (wall clock, ms).
    pub queued: i64,
    pub seq: u64,
    pub topic: String,
    /// The CloudEvent as sent.
    pub event: serde_json::Value,
    /// When it went to the upstream connection, and when the broker acknowledged it, as far
    /// as the log knows (`None`: not yet, or the agent stopped first).
    pub published: Option<i64>,
    pub acked: Option<i64>,
}

/// What [`find`] found, and the damage it read past.
#[derive(Debug, Default)]
pub struct Found {
    pub event: Option<Logged>,
    pub damaged: Vec<String>,
}

/// The newest record of the event whose id `is` accepts (a full id, or the first 64 bits
/// of one: a lineage reference), with its publication and acknowledgement: those of its
/// outbox entry after it, up to the next event queued with the same seq (an agent without
/// durable state counts from 0 again after a restart).
pub fn find(dir: &Path, is: impl Fn(u128) -> bool) -> Result<Found, JournalError> {
    let mut found: Option<Logged> = None;
    // The found event's seq has been given to another event since.
    let mut reused = false;
    let report = crate::journal::read(dir, (i64::MIN, i64::MAX), |e| match e {
        Entry::Event { t, seq, id, topic, body } => {
            if is(id) {
                let event = serde_json::from_slice(body).unwrap_or_else(|_| String::from_utf8_lossy(body).into());
                found = Some(Logged { queued: t, seq, topic: topic.to_owned(), event, published: None, acked: None });
                reused = false;
            } else if found.as_ref().is_some_and(|f| f.seq == seq) {
                reused = true;
            }
        }
        Entry::Published { t, seq } | Entry::Acked { t, seq } => {
            let Some(f) = found.as_mut().filter(|f| f.seq == seq && !reused) else { return };
            let slot = if matches!(e, Entry::Published { .. }) { &mut f.published } else { &mut f.acked };
            slot.get_or_insert(t);
        }
        _ => {}
    })?;
    Ok(Found { event: found, damaged: report.damaged })
}

/// Where a reader of [`recent`] stopped: the queue time and outbox seq of the last event
/// it was given, written `<ms>-<seq>`. Events after it are newer (or queued in the same
/// millisecond with a later seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub queued: i64,
    pub seq: u64,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.queued, self.seq)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Cursor, String> {
        let bad = || {
            format!("`{}` is not a cursor (`<ms>-<seq>`, as `next` gave it)", s.chars().take(40).collect::<String>())
        };
        let (t, seq) = s.split_once('-').ok_or_else(bad)?;
        Ok(Cursor { queued: t.parse().map_err(|_| bad())?, seq: seq.parse().map_err(|_| bad())? })
    }
}

/// What [`recent`] found: events oldest first, and the cursor to ask for the next ones.
#[derive(Debug, Default)]
pub struct Page {
    pub events: Vec<Logged>,
    /// The last event's cursor (the one given when there is none).
    pub next: Option<Cursor>,
    pub damaged: Vec<String>,
}

/// The events `keep` accepts, with their publication and acknowledgement: without `after`
/// the newest `limit`; with it, the first `limit` after it (a reader following the log asks
/// again with the page's `next`). One pass over the files (16 MiB by default).
pub fn recent(
    dir: &Path,
    after: Option<Cursor>,
    keep: impl Fn(&serde_json::Value) -> bool,
    limit: usize,
) -> Result<Page, JournalError> {
    use std::collections::{HashMap, VecDeque};
    // Kept events with serial numbers; seq -> serial of the newest event queued with it.
    let mut kept: VecDeque<(u64, Logged)> = VecDeque::new();
    let mut by_seq: HashMap<u64, u64> = HashMap::new();
    let mut serial = 0u64;
    let report = crate::journal::read(dir, (i64::MIN, i64::MAX), |e| match e {
        Entry::Event { t, seq, topic, body, .. } => {
            // A seq given to another event: publications from now on are that one's.
            by_seq.remove(&seq);
            if after.is_some_and(|a| Cursor { queued: t, seq } <= a) || (after.is_some() && kept.len() >= limit) {
                return;
            }
            let event = serde_json::from_slice(body).unwrap_or_else(|_| String::from_utf8_lossy(body).into());
            if !keep(&event) {
                return;
            }
            serial += 1;
            by_seq.insert(seq, serial);
            kept.push_back((
                serial,
                Logged { queued: t, seq, topic: topic.to_owned(), event, published: None, acked: None },
            ));
            if kept.len() > limit {
                kept.pop_front();
            }
        }
        Entry::Published { t, seq } | Entry::Acked { t, seq } => {
            let (Some(&s), Some(&(first, _))) = (by_seq.get(&seq), kept.front()) else { return };
            let Some((_, f)) = s.checked_sub(first).and_then(|i| kept.get_mut(i as usize)) else { return };
            let slot = if matches!(e, Entry::Published { .. }) { &mut f.published } else { &mut f.acked };
            slot.get_or_insert(t);
        }
        _ => {}
    })?;
    let events: Vec<Logged> = kept.into_iter().map(|(_, l)| l).collect();
    let next = events.last().map(|l| Cursor { queued: l.queued, seq: l.seq }).or(after);
    Ok(Page { events, next, damaged: report.damaged })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_found_with_its_publication_and_acknowledgement_and_a_reused_seq_is_not_taken_for_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let limits = JournalLimits { max_bytes: 1 << 20, max_age_ms: 3_600_000 };
        let (mut log, _) = crate::journal::JournalLog::open(dir.path(), limits).expect("opens");
        let bodies: Vec<String> = (0..4).map(|id| format!(r#"{{"id":"{id}","type":"edgewatch.hot"}}"#)).collect();
        let body = |id: usize| bodies[id].as_bytes();
        let now = 1_733_400_000_000;
        let records = [
            Entry::Event { t: now, seq: 7, id: 1, topic: "gw/events/hot/a", body: body(1) },
            Entry::Event { t: now + 1, seq: 8, id: 2, topic: "gw/events/hot/b", body: body(2) },
            Entry::Published { t: now + 2, seq: 7 },
            Entry::Published { t: now + 3, seq: 8 },
            Entry::Acked { t: now + 4, seq: 7 },
            // A restart without durable state: seq 8 again, for another event.
            Entry::Event { t: now + 5, seq: 8, id: 3, topic: "gw/events/hot/c", body: body(3) },
            Entry::Acked { t: now + 6, seq: 8 },
        ];
        for r in &records {
            log.append(r, now).expect("appends");
        }
        log.flush().expect("flushes");
        let one = find(dir.path(), |id| id == 1).expect("reads").event.expect("found");
        assert_eq!((one.seq, one.published, one.acked), (7, Some(now + 2), Some(now + 4)));
        assert_eq!(one.event["type"], "edgewatch.hot");
        let two = find(dir.path(), |id| id == 2).expect("reads").event.expect("found");
        assert_eq!((two.published, two.acked), (Some(now + 3), None), "the ack was the next event's");
        let three = find(dir.path(), |id| id == 3).expect("reads").event.expect("found");
        assert_eq!((three.queued, three.published, three.acked), (now + 5, None, Some(now + 6)));
        assert!(find(dir.path(), |id| id == 4).expect("reads").event.is_none());

        // The console's feed: the newest first page, then what follows a cursor, filtered.
        let all = recent(dir.path(), None, |_| true, 10).expect("reads");
        let seqs: Vec<_> = all.events.iter().map(|l| (l.seq, l.published, l.acked)).collect();
        assert_eq!(seqs, [(7, Some(now + 2), Some(now + 4)), (8, Some(now + 3), None), (8, None, Some(now + 6))]);
        assert_eq!(all.next, Some(Cursor { queued: now + 5, seq: 8 }));
        let newest = recent(dir.path(), None, |_| true, 1).expect("reads");
        assert_eq!(newest.events.iter().map(|l| l.event["id"].clone()).collect::<Vec<_>>(), ["3"]);
        assert_eq!(newest.events[0].acked, Some(now + 6));
        let after: Cursor = format!("{}-7", now).parse().expect("a cursor");
        let page = recent(dir.path(), Some(after), |_| true, 1).expect("reads");
        assert_eq!(page.events.iter().map(|l| l.event["id"].clone()).collect::<Vec<_>>(), ["2"]);
        assert_eq!(page.events[0].published, Some(now + 3));
        let page = recent(dir.path(), page.next, |_| true, 5).expect("reads");
        assert_eq!(page.events.iter().map(|l| l.event["id"].clone()).collect::<Vec<_>>(), ["3"]);
        let end = recent(dir.path(), page.next, |_| true, 5).expect("reads");
        assert!(end.events.is_empty());
        assert_eq!(end.next, page.next, "nothing new: ask again with the same cursor");
        let only = recent(dir.path(), None, |e| e["id"] == "1", 5).expect("reads");
        assert_eq!(only.events.len(), 1);
        for bad in ["", "12", "a-1", "1-b", "-1-2"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad}");
        }
    }
}
