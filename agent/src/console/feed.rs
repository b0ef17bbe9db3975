//! The live stream's source (`GET /api/v1/stream`): what the engine loop tells whoever
//! watches, as Server-Sent Events frames.
//!
//! ```text
//! engine loop ─ Teller::tell (only while someone watches: one atomic load otherwise)
//!   ─ frames gathered for up to 50 ms ─ Teller::flush (or past 64 KiB)
//!   ─▶ broadcast ring of 256 chunks ─▶ each stream client's receiver ─▶ its HTTP body
//! ```
//!
//! Frames: `event` (a composite event as sent upstream), `device` (a heartbeat key's state
//! changed), `alarm` (an alarm transition), `rules` (the rules' status changed). A client that
//! falls more than the ring behind misses frames and is told how many (`lagged`), so it can
//! read the state again; the engine loop never waits for a client. Frames go out gathered, at
//! most 50 ms after they were told: one wake-up of each client per chunk, not per event (at
//! 8 000 events/s, per event cost 10 clients 20% more CPU per message, docs/benchmarks.md).

use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Relaxed};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Chunks (a batch's frames each) a client may fall behind before it misses some.
const RING: usize = 256;
/// A chunk goes out once it holds this much, whatever the time.
const MAX_CHUNK: usize = 64 * 1024;
/// Frames wait at most this long, gathered into one chunk: a person sees no delay, and under
/// load each client is woken 20 times a second, not once per batch.
pub const GATHER: Duration = Duration::from_millis(50);

/// The stream's sender, shared by the engine loop and the console.
#[derive(Debug)]
pub struct Feed {
    /// Chunks as `Bytes`: each client's body shares them, no copy per client.
    tx: broadcast::Sender<Bytes>,
    /// Stream clients connected: the engine loop builds frames only when there is one.
    watchers: AtomicUsize,
}

impl Default for Feed {
    fn default() -> Self {
        Feed { tx: broadcast::Sender::new(RING), watchers: AtomicUsize::new(0) }
    }
}

impl Feed {
    /// Someone is watching: worth building frames for.
    #[inline]
    pub fn watched(&self) -> bool {
        self.watchers.load(Relaxed) > 0
    }

    /// Sends a chunk of frames.
    fn send(&self, chunk: Bytes) {
        // No receiver is not an error: the last client left since `watched`.
        let _ = self.tx.send(chunk);
    }

    /// A new client, unless `max` are connected already.
    pub fn watch(self: &Arc<Self>, max: usize) -> Option<Watch> {
        let mut n = self.watchers.load(Relaxed);
        loop {
            if n >= max {
                return None;
            }
            match self.watchers.compare_exchange_weak(n, n + 1, AcqRel, Relaxed) {
                Ok(_) => return Some(Watch { rx: self.tx.subscribe(), feed: self.clone() }),
                Err(now) => n = now,
            }
        }
    }
}

/// The engine loop's side of the feed: gathers a batch's frames and sends them as one chunk.
#[derive(Debug)]
pub struct Teller {
    feed: Arc<Feed>,
    /// Frames since the last flush.
    frames: String,
    /// When the oldest of them was told.
    since: Option<Instant>,
}

impl Teller {
    pub fn new(feed: Arc<Feed>) -> Teller {
        Teller { feed, frames: String::new(), since: None }
    }

    /// Someone is watching: worth building frames for.
    #[inline]
    pub fn watched(&self) -> bool {
        self.feed.watched()
    }

    /// One frame: `kind` and its JSON `data` (one line).
    pub fn tell(&mut self, kind: &str, data: &str) {
        for part in ["event: ", kind, "\ndata: ", data, "\n\n"] {
            self.frames.push_str(part);
        }
        self.told();
    }

    /// An `event` frame: `{"rule", "key", "event"}`, with `event` the CloudEvent as sent
    /// (JSON text), written straight into the batch's frames.
    pub fn event(&mut self, rule: &str, key: &str, event: &str) {
        self.frames.push_str("event: event\ndata: {\"rule\":");
        quote(&mut self.frames, rule);
        self.frames.push_str(",\"key\":");
        quote(&mut self.frames, key);
        for part in [",\"event\":", event, "}\n\n"] {
            self.frames.push_str(part);
        }
        self.told();
    }

    fn told(&mut self) {
        self.since.get_or_insert_with(Instant::now);
        if self.frames.len() >= MAX_CHUNK {
            self.flush();
        }
    }

    /// When the frames told must go out: [`GATHER`] after the oldest (`None`: none waits).
    pub fn due(&self) -> Option<Instant> {
        self.since.map(|t| t + GATHER)
    }

    /// Sends the frames whose time has come (the engine loop calls it after each input and
    /// when it wakes).
    pub fn flush_due(&mut self, now: Instant) {
        if self.due().is_some_and(|d| now >= d) {
            self.flush();
        }
    }

    /// Sends what was told since the last flush.
    pub fn flush(&mut self) {
        self.since = None;
        if !self.frames.is_empty() {
            let chunk = std::mem::take(&mut self.frames);
            if self.feed.watched() {
                self.feed.send(Bytes::from(chunk));
            }
        }
    }
}

/// `s` as a JSON string: as it is when nothing in it needs escaping (rule names and keys
/// seldom do), else escaped by serde_json.
fn quote(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        for part in ["\"", s, "\""] {
            out.push_str(part);
        }
    } else {
        out.push_str(&serde_json::Value::from(s).to_string());
    }
}

/// One client's place in the stream; counted out when dropped.
#[derive(Debug)]
pub struct Watch {
    pub rx: broadcast::Receiver<Bytes>,
    feed: Arc<Feed>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.feed.watchers.fetch_sub(1, AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_reach_watchers_a_batch_at_a_time_a_slow_one_is_told_what_it_missed_and_the_count_follows_clients() {
        let feed = Arc::new(Feed::default());
        let mut teller = Teller::new(feed.clone());
        assert!(!teller.watched());
        teller.tell("event", "{}");
        teller.flush();
        let mut fast = feed.watch(2).expect("room");
        let mut slow = feed.watch(2).expect("room");
        assert!(feed.watch(2).is_none(), "at most two");
        assert!(teller.watched());
        teller.tell("alarm", r#"{"rule":"hot"}"#);
        teller.tell("event", "{}");
        assert!(fast.rx.try_recv().is_err(), "nothing before the batch is flushed");
        let due = teller.due().expect("frames wait");
        teller.flush_due(due - Duration::from_millis(1));
        assert!(fast.rx.try_recv().is_err(), "not yet due");
        teller.flush_due(due);
        assert_eq!(teller.due(), None);
        let chunk = fast.rx.try_recv().expect("a chunk");
        assert_eq!(&chunk[..], b"event: alarm\ndata: {\"rule\":\"hot\"}\n\nevent: event\ndata: {}\n\n");
        teller.event("hot", "t-\"1", r#"{"id":"x"}"#);
        teller.flush();
        let chunk = fast.rx.try_recv().expect("a chunk");
        let data = std::str::from_utf8(&chunk).expect("text").strip_prefix("event: event\ndata: ").expect("a frame");
        let data: serde_json::Value = serde_json::from_str(data.trim()).expect("JSON");
        assert_eq!(data, serde_json::json!({ "rule": "hot", "key": "t-\"1", "event": { "id": "x" } }));
        assert!(fast.rx.try_recv().is_err(), "one chunk for the batch");
        // A batch past 64 KiB goes out at once.
        let big = "x".repeat(MAX_CHUNK);
        teller.tell("event", &big);
        assert!(fast.rx.try_recv().is_ok_and(|c| c.len() > MAX_CHUNK));
        for i in 0..RING + 10 {
            teller.tell("event", &i.to_string());
            teller.flush();
        }
        match slow.rx.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 13),
            other => panic!("{other:?}"),
        }
        drop(fast);
        drop(slow);
        assert!(!feed.watched(), "both gone");
        assert!(feed.watch(2).is_some());
    }
}
