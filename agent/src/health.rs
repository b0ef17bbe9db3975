//! The agent's connection state, kept once: the two MQTT connection tasks write it, and
//! `/healthz`, the metrics, the engine loop (the retained `online` status, the drop report)
//! and readiness waits (tests, the demo) read it. A module of its own so that the agent and
//! the metrics listener both use it without importing each other.

use crate::telemetry::Stats;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// One of the agent's two broker connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Where sensor messages come from.
    Source,
    /// Where events go.
    Upstream,
}

impl Link {
    /// Its name in logs, metrics labels and `/healthz`.
    pub fn name(self) -> &'static str {
        match self {
            Link::Source => "source",
            Link::Upstream => "upstream",
        }
    }
}

/// Connection state, as a value: what `/healthz` reports and readiness waits look at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Connected to the source broker.
    pub source_connected: bool,
    /// Connected to the source broker and every subscription acknowledged.
    pub source_subscribed: bool,
    /// Connected to the upstream broker.
    pub upstream_connected: bool,
    /// Upstream connections so far: each new one republishes the retained `online` status
    /// (the broker may have published the last will meanwhile).
    pub upstream_sessions: u64,
}

impl Readiness {
    /// Both sides are up.
    pub fn is_ready(&self) -> bool {
        self.source_subscribed && self.upstream_connected
    }

    /// Whether `link` is connected.
    pub fn connected(&self, link: Link) -> bool {
        match link {
            Link::Source => self.source_connected,
            Link::Upstream => self.upstream_connected,
        }
    }
}

/// The writer's side: each change updates the state and its counters together.
#[derive(Debug, Clone)]
pub struct Health {
    state: Arc<watch::Sender<Readiness>>,
    /// Connection counters (connects, failures, disconnects, last error) live with the others.
    stats: Arc<Stats>,
}

impl Health {
    /// Nothing connected yet.
    pub fn new(stats: Arc<Stats>) -> Health {
        Health { state: Arc::new(watch::Sender::new(Readiness::default())), stats }
    }

    /// A live view of the state.
    pub fn subscribe(&self) -> watch::Receiver<Readiness> {
        self.state.subscribe()
    }

    /// The state now.
    pub fn now(&self) -> Readiness {
        *self.state.borrow()
    }

    /// `link` connected (a first connection or a reconnect).
    pub(crate) fn connected(&self, link: Link) {
        self.stats.connected(link.name());
        self.state.send_modify(|r| match link {
            Link::Source => r.source_connected = true,
            Link::Upstream => {
                r.upstream_connected = true;
                r.upstream_sessions += 1;
            }
        });
    }

    /// Every sensor subscription is acknowledged.
    pub(crate) fn subscribed(&self) {
        self.state.send_modify(|r| r.source_subscribed = true);
    }

    /// `link` failed: a disconnect if it was up, else a failed attempt.
    pub(crate) fn disconnected(&self, link: Link, error: &str, retry_in: Duration) {
        let was_up = self.now().connected(link);
        self.state.send_modify(|r| match link {
            Link::Source => {
                r.source_connected = false;
                r.source_subscribed = false;
            }
            Link::Upstream => r.upstream_connected = false,
        });
        self.stats.disconnected(link.name(), error, retry_in, was_up);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn state_and_counters_change_together() {
        let stats = Arc::new(Stats::new(Vec::new()));
        let health = Health::new(stats.clone());
        let mut seen = health.subscribe();
        health.disconnected(Link::Source, "refused", Duration::from_millis(200));
        health.connected(Link::Source);
        health.subscribed();
        assert!(health.now().source_subscribed);
        assert!(!health.now().is_ready());
        health.connected(Link::Upstream);
        assert!(seen.has_changed().unwrap_or(false));
        assert!(seen.borrow_and_update().is_ready());
        assert_eq!(health.now().upstream_sessions, 1);
        health.disconnected(Link::Source, "reset", Duration::from_millis(200));
        let r = health.now();
        assert!(!r.source_connected && !r.source_subscribed && r.upstream_connected);
        let source = stats.detail.connection("source");
        assert_eq!(source.connects.load(Relaxed), 1);
        assert_eq!(source.failures.load(Relaxed), 2);
        assert_eq!(source.disconnects.load(Relaxed), 1, "the refused attempt was not a disconnect");
        assert_eq!(stats.failed_attempts.load(Relaxed), 1);
        health.connected(Link::Upstream);
        assert_eq!(health.now().upstream_sessions, 2);
    }

    /// Issue 14: the summary said "disconnects: 16" for one upstream outage, counting every
    /// failed retry. A disconnect is a connection that was up going down; attempts that
    /// fail are counted apart.
    #[test]
    fn an_outage_is_one_disconnect_and_its_failed_retries_are_counted_apart() {
        let stats = Arc::new(Stats::new(Vec::new()));
        let health = Health::new(stats.clone());
        // The source broker is down at start: failed attempts, no disconnect.
        health.disconnected(Link::Source, "refused", Duration::from_millis(200));
        health.connected(Link::Source);
        health.connected(Link::Upstream);
        // One upstream outage: the connection drops, then 15 retries fail, then it is back.
        health.disconnected(Link::Upstream, "reset", Duration::from_millis(200));
        for _ in 0..15 {
            health.disconnected(Link::Upstream, "refused", Duration::from_secs(1));
        }
        health.connected(Link::Upstream);
        // A second, short one.
        health.disconnected(Link::Upstream, "reset", Duration::from_millis(200));
        health.connected(Link::Upstream);
        let s = stats.snapshot();
        assert_eq!((s.disconnects, s.failed_attempts), (2, 16));
        let summary = s.to_string();
        assert!(summary.contains("disconnects: 2, failed connection attempts: 16"), "{summary}");
        let upstream = stats.detail.connection("upstream");
        assert_eq!((upstream.disconnects.load(Relaxed), upstream.failures.load(Relaxed)), (2, 17));
        assert_eq!(stats.detail.connection("source").disconnects.load(Relaxed), 0);
    }
}
