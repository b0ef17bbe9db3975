//! The live stream's source (`GET /api/v1/stream`): what the engine loop tells whoever
//! watches, as Server-Sent Events frames.
//!
//! ```text
//! engine loop ─ Feed::send (only while someone watches: one atomic load otherwise)
//!   ─▶ broadcast ring of 256 frames ─▶ each stream client's receiver ─▶ its HTTP body
//! ```
//!
//! Frames: `event` (a composite event as sent upstream), `device` (a heartbeat key's state
//! changed), `alarm` (an alarm transition), `rules` (the rules' status changed). A client that
//! falls more than the ring behind misses frames and is told how many (`lagged`), so it can
//! read the state again; the engine loop never waits for a client.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Relaxed};
use tokio::sync::broadcast;

/// Frames a client may fall behind before it misses some.
const RING: usize = 256;

/// The stream's sender, shared by the engine loop and the console.
#[derive(Debug)]
pub struct Feed {
    tx: broadcast::Sender<Arc<str>>,
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

    /// Sends one frame: `kind` and its JSON `data` (one line).
    pub fn send(&self, kind: &str, data: &str) {
        // No receiver is not an error: the last client left since `watched`.
        let _ = self.tx.send(format!("event: {kind}\ndata: {data}\n\n").into());
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

/// One client's place in the stream; counted out when dropped.
#[derive(Debug)]
pub struct Watch {
    pub rx: broadcast::Receiver<Arc<str>>,
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
    fn frames_reach_watchers_a_slow_one_is_told_what_it_missed_and_the_count_follows_clients() {
        let feed = Arc::new(Feed::default());
        assert!(!feed.watched());
        feed.send("event", "{}");
        let mut fast = feed.watch(2).expect("room");
        let mut slow = feed.watch(2).expect("room");
        assert!(feed.watch(2).is_none(), "at most two");
        assert!(feed.watched());
        feed.send("alarm", r#"{"rule":"hot"}"#);
        assert_eq!(&*fast.rx.try_recv().expect("a frame"), "event: alarm\ndata: {\"rule\":\"hot\"}\n\n");
        for i in 0..RING + 10 {
            feed.send("event", &i.to_string());
        }
        match slow.rx.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 11),
            other => panic!("{other:?}"),
        }
        drop(fast);
        drop(slow);
        assert!(!feed.watched(), "both gone");
        assert!(feed.watch(2).is_some());
    }
}
