//! The agent's connection state: what `/healthz`, the metrics and readiness waits (tests,
//! the demo) read. The MQTT tasks write it; a module of its own so that the agent and the
//! metrics listener both use it without importing each other.

/// Connection state, for readiness checks (`/healthz`, tests, the demo).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Connected to the source broker and every subscription acknowledged.
    pub source_subscribed: bool,
    /// Connected to the upstream broker.
    pub upstream_connected: bool,
}

impl Readiness {
    /// Both sides are up.
    pub fn is_ready(&self) -> bool {
        self.source_subscribed && self.upstream_connected
    }
}
