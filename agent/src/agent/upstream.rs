//! The way out: outbox entries handed to the upstream connection in order, at most
//! [`PUBLISH_WINDOW`] unacknowledged, and deleted from the outbox on PUBACK.
//!
//! ```text
//!  engine loop, committer ──pump()──▶ Window ──try_publish──▶ rumqttc request queue ──▶ broker
//!  upstream task: poll() ──PUBACK──▶ Window (oldest in flight) ──▶ Outbox::acked ──pump()
//! ```
//!
//! Whoever makes more sendable (the engine loop queuing events, the committer writing a
//! batch, a PUBACK freeing room, a reconnect) calls [`Upstream::pump`], which never waits:
//! no publisher task, and no wake-up per event. The one task here polls the connection.
//! The session is persistent, so rumqttc itself resends what is in flight after a reconnect;
//! on a new session (or after a restart) the outbox is sent again from the oldest entry not
//! acknowledged, with the same ids.

use super::reports::wall_clock;
use crate::health::{Health, Link};
use crate::mqtt::{self, Client, Incoming};
use crate::outbox::Outbox;
use crate::telemetry::Stats;
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most events handed to the upstream connection and not yet acknowledged. It bounds upstream
/// throughput to the window over the broker's PUBACK round trip, which grows under load: 64
/// capped the agent near 11k events/s on a loaded loopback broker.
pub(super) const PUBLISH_WINDOW: usize = 1024;

/// Which outbox entries are in flight, and which is next: the publishing state machine.
/// QoS 1 PUBACKs come in the order the publishes went out (MQTT 3.1.1 §4.6), so each
/// acknowledges the oldest in flight.
#[derive(Debug)]
pub(super) struct Window {
    cap: usize,
    /// QoS 1 entries handed to the client and not yet acknowledged, oldest first, and
    /// whether the event log follows them (composite events).
    inflight: VecDeque<(u64, bool)>,
    /// The next outbox sequence number to hand to the client.
    next: u64,
    /// Handed to the client only while connected: what it holds across a disconnect is resent
    /// by the client itself (same session) or from the outbox (new session).
    up: bool,
}

impl Window {
    pub fn new(cap: usize) -> Window {
        Window { cap, inflight: VecDeque::new(), next: 0, up: false }
    }

    /// How many more entries may be handed out now, from [`Window::next`].
    pub fn room(&self) -> usize {
        if self.up { self.cap.saturating_sub(self.inflight.len()) } else { 0 }
    }

    pub fn next(&self) -> u64 {
        self.next
    }

    /// Entry `seq` was handed to the client. A QoS 0 one is done at once: returns it, to be
    /// removed from the outbox.
    pub fn handed(&mut self, seq: u64, qos: u8, traced: bool) -> Option<u64> {
        self.next = seq + 1;
        if qos == 0 {
            return Some(seq);
        }
        self.inflight.push_back((seq, traced));
        None
    }

    /// A PUBACK: the oldest entry in flight is delivered (and whether it is traced).
    pub fn puback(&mut self) -> Option<(u64, bool)> {
        self.inflight.pop_front()
    }

    /// Connected. A new session dropped what the client had in flight (rumqttc clears its
    /// pending publishes then): those entries go again, from the oldest.
    pub fn connected(&mut self, session_present: bool) {
        self.up = true;
        if !session_present {
            if let Some((oldest, _)) = self.inflight.front() {
                tracing::info!(from = *oldest, "New upstream session: resending the events in flight.");
                self.next = self.next.min(*oldest);
            }
            self.inflight.clear();
        }
    }

    pub fn disconnected(&mut self) {
        self.up = false;
    }
}

/// The handle that sends: shared by the engine loop, the committer and the upstream task.
#[derive(Debug, Clone)]
pub(super) struct Upstream {
    client: Client,
    outbox: Outbox,
    window: Arc<Mutex<Window>>,
    stats: Arc<Stats>,
    /// Where composite events' publications and acknowledgements are recorded.
    events: Option<crate::events::EventLog>,
}

impl Upstream {
    pub fn new(client: Client, outbox: Outbox, stats: Arc<Stats>, events: Option<crate::events::EventLog>) -> Upstream {
        let window = Arc::new(Mutex::new(Window::new(PUBLISH_WINDOW)));
        Upstream { client, outbox, window, stats, events }
    }

    fn window(&self) -> MutexGuard<'_, Window> {
        // Every change to the window is one step: a panic elsewhere leaves it consistent.
        self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands waiting entries to the connection, as many as the window has room for. Never
    /// waits: a full request queue leaves the rest for the next pump (a PUBACK, a commit).
    pub fn pump(&self) {
        let mut w = self.window();
        loop {
            let room = w.room();
            if room == 0 {
                return;
            }
            let entries = self.outbox.next(w.next(), room.min(256));
            if entries.is_empty() {
                return;
            }
            for (seq, entry) in entries {
                let (qos, traced) = (entry.qos, entry.traced);
                if let Err(error) = self.client.try_publish(entry.topic, qos, entry.retain, entry.payload) {
                    // Full (the connection is behind) or closed (stopping): sent later, or by the
                    // next run.
                    tracing::debug!(%error, seq, "Event not handed to the upstream connection yet.");
                    return;
                }
                self.stats.published.fetch_add(1, Relaxed);
                let log = self.events.as_ref().filter(|_| traced);
                if let Some(log) = log {
                    log.published(wall_clock().millis(), seq);
                }
                if let Some(done) = w.handed(seq, qos, traced) {
                    self.outbox.acked(done);
                    if let Some(log) = log {
                        log.acked(wall_clock().millis(), done);
                    }
                }
            }
        }
    }

    /// Polls the upstream connection until `stop` (the engine loop is done) and then until
    /// the outbox is empty or `drain` has passed, then says goodbye.
    pub async fn run(self, mut conn: mqtt::Connection, health: Health, stop: CancellationToken, drain: Duration) {
        let mut deadline: Option<Instant> = None;
        loop {
            if stop.is_cancelled() {
                let at = *deadline.get_or_insert_with(|| Instant::now() + drain);
                let waiting = self.outbox.depth().0;
                if waiting == 0 {
                    break;
                }
                if Instant::now() >= at {
                    tracing::warn!(
                        waiting,
                        "Stopping with events not yet acknowledged upstream; they stay in the outbox."
                    );
                    break;
                }
            }
            let incoming = match deadline {
                None => tokio::select! {
                    () = stop.cancelled() => {
                        self.pump();
                        continue;
                    }
                    incoming = conn.poll() => incoming,
                },
                Some(at) => tokio::select! {
                    () = tokio::time::sleep_until(at) => continue,
                    incoming = conn.poll() => incoming,
                },
            };
            match incoming {
                Incoming::Connected { session_present } => {
                    self.window().connected(session_present);
                    tracing::info!(connection = "upstream", "Connected to the upstream broker.");
                    // The engine loop publishes `online` on each new session.
                    health.connected(Link::Upstream);
                    self.pump();
                }
                Incoming::PubAck => {
                    let seq = self.window().puback();
                    if let Some((seq, traced)) = seq {
                        if let Some(log) = self.events.as_ref().filter(|_| traced) {
                            log.acked(wall_clock().millis(), seq);
                        }
                        self.outbox.acked(seq);
                        self.stats.acked.fetch_add(1, Relaxed);
                        self.pump();
                    }
                }
                Incoming::Disconnected { error, retry_in } => {
                    self.window().disconnected();
                    health.disconnected(Link::Upstream, &error, retry_in);
                }
                Incoming::Publish { .. }
                | Incoming::TooLarge { .. }
                | Incoming::Unroutable { .. }
                | Incoming::SubAck => {}
            }
        }
        conn.close(&self.client, Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_handed_out_while_disconnected_or_past_the_window() {
        let mut w = Window::new(2);
        assert_eq!(w.room(), 0, "not connected yet");
        w.connected(false);
        assert_eq!(w.room(), 2);
        assert_eq!(w.handed(0, 1, false), None);
        assert_eq!(w.handed(1, 1, false), None);
        assert_eq!(w.room(), 0, "window full");
        assert_eq!(w.puback(), Some((0, false)), "the oldest is acknowledged first");
        assert_eq!(w.room(), 1);
        w.disconnected();
        assert_eq!(w.room(), 0);
    }

    #[test]
    fn qos_0_entries_are_done_when_handed_out_and_take_no_room() {
        let mut w = Window::new(1);
        w.connected(false);
        assert_eq!(w.handed(0, 0, false), Some(0));
        assert_eq!(w.room(), 1);
        assert_eq!(w.next(), 1);
        assert_eq!(w.puback(), None, "nothing in flight");
    }

    #[test]
    fn a_new_session_resends_from_the_oldest_in_flight_and_a_resumed_one_does_not() {
        let mut w = Window::new(10);
        w.connected(false);
        for seq in 0..5 {
            w.handed(seq, 1, false);
        }
        assert_eq!(w.puback(), Some((0, false)));
        w.disconnected();
        // The broker kept the session: rumqttc resends what is in flight itself.
        w.connected(true);
        assert_eq!(w.next(), 5);
        assert_eq!(w.puback(), Some((1, false)));
        w.disconnected();
        // A new session: 2, 3 and 4 were lost with the old one.
        w.connected(false);
        assert_eq!(w.next(), 2);
        assert_eq!(w.room(), 10);
        assert_eq!(w.puback(), None);
    }
}
