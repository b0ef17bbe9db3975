//! `/metrics` (Prometheus text format) and `/healthz`, on an opt-in listen address.
//!
//! Nothing here sits on the hot path: the pipeline bumps plain atomics in [`Stats`], and
//! this module reads them when scraped, through a collector on a registry of this agent's
//! own (no global recorder, so several agents in one process, as in the tests, keep
//! their numbers apart). The families themselves, encoded, are in `families`.
//!
//! `/healthz` answers 200 once the rules are loaded and both brokers are connected (and
//! the sensor subscriptions acknowledged), 503 otherwise; either way the body says what
//! is up and what is not, with the latest connection error.

mod families;

use crate::health::{Link, Readiness};
use crate::telemetry::Stats;
use families::AgentCollector;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::watch;

/// Why the metrics listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr} (`agent.metrics_listen`): {source}")]
pub struct ListenError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Reads the outbox: (events waiting, their bytes).
pub type OutboxGauge = Box<dyn Fn() -> (u64, u64) + Send + Sync>;
/// Reads the database size on disk, if there is one.
pub type DiskGauge = Box<dyn Fn() -> Option<u64> + Send + Sync>;

/// Everything a scrape reads.
pub struct Sources {
    pub stats: Arc<Stats>,
    pub ready: watch::Receiver<Readiness>,
    pub outbox: OutboxGauge,
    pub disk: DiskGauge,
    /// The sinks' queues and counters (`[[sinks]]`).
    pub sinks: Arc<crate::sinks::Sinks>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

impl Sources {
    /// Ready means: rules loaded, sensor subscriptions acknowledged, upstream connected.
    pub fn health(&self) -> (bool, serde_json::Value) {
        let r = *self.ready.borrow();
        let d = &self.stats.detail;
        let conn = |link: Link| {
            let c = d.connection(link.name());
            serde_json::json!({
                "connected": r.connected(link),
                "connects": c.connects.load(Relaxed),
                "failures": c.failures.load(Relaxed),
                "disconnects": c.disconnects.load(Relaxed),
                "last_error": c.last_error.lock().ok().and_then(|e| e.clone()),
            })
        };
        let rules = d.rules_loaded.load(Relaxed);
        // An empty rules directory is a deliberate setup (nothing fires, but it runs); the
        // rules count as loaded once the first scan ran, which `Agent::new` did.
        let ready = r.is_ready();
        let body = serde_json::json!({
            "status": if ready { "ready" } else { "not ready" },
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": d.started.elapsed().as_secs(),
            "rules": rules,
            "source": { "subscribed": r.source_subscribed, "connection": conn(Link::Source) },
            "upstream": { "connected": r.upstream_connected, "connection": conn(Link::Upstream) },
        });
        (ready, body)
    }
}

/// Renders the metrics text for `sources`.
pub fn render(sources: &Arc<Sources>) -> String {
    let mut registry = Registry::with_prefix("edgewatch");
    registry.register_collector(Box::new(AgentCollector(sources.clone())));
    let mut out = String::with_capacity(8 * 1024);
    if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!(%error, "Metrics not rendered.");
    }
    out
}

/// Binds `addr` now, so a taken port refuses to start rather than failing later.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ListenError> {
    crate::server::bind(addr).map_err(|source| ListenError { addr, source })
}

impl crate::server::Handler for Sources {
    fn handle(self: Arc<Self>, request: crate::server::Request) -> crate::server::Reply {
        use crate::server::respond;
        let answer = match (request.method() == hyper::Method::GET, request.uri().path()) {
            (true, "/metrics") => {
                respond(200, "application/openmetrics-text; version=1.0.0; charset=utf-8", render(&self))
            }
            (true, "/healthz") => {
                let (ready, body) = self.health();
                respond(if ready { 200 } else { 503 }, "application/json", body.to_string())
            }
            (false, "/metrics" | "/healthz") => respond(405, "text/plain", "GET only\n"),
            _ => respond(404, "text/plain", "/metrics or /healthz\n"),
        };
        Box::pin(std::future::ready(answer))
    }
}

/// Serves `/metrics` and `/healthz` until `stop`.
pub async fn serve(
    listener: std::net::TcpListener,
    sources: Arc<Sources>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), std::io::Error> {
    crate::server::serve(listener, sources, None, stop, "metrics").await
}
