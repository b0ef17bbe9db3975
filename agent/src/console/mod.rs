//! The console: a page for people (`/`) and its JSON API (`/api/v1/...`), on its own listener
//! (`[console]`), so that the metrics listener keeps its behaviour (docs/console.md).
//!
//! ```text
//! HTTP request ─▶ crate::server (bounded connections, header timeout, TLS) ─▶ route ─▶ live, api (operations)
//!   ├─ auth::Tokens::check (Bearer header: read or write token) ─▶ 401 / 403
//!   ├─ what the engine holds (rules, devices, alarms; alarm commands: live) ─▶ Query ─▶ engine loop
//!   │     (Input::Query, answered between two inputs, on a oneshot)
//!   ├─ events ─▶ events::recent (the event log's files)      history ─▶ history::read
//!   ├─ dead letters, counts ─▶ Stats                           reload ─▶ the reloader's trigger
//!   ├─ backtest ─▶ `edgewatch backtest` in a child process with its own limits (backtest)
//!   ├─ stream ─▶ Server-Sent Events from the engine loop (feed)
//!   ├─ /, /app.js, /app.css: the page (assets/, embedded)
//!   └─ /api/v1/openapi.json: the document every response is tested against
//! ```
//!
//! Nothing here is on the path of a message: a query waits its turn in the engine loop's
//! queue like a message would, and costs the loop only while it is answered. Every answer is
//! bounded (pages of events, a capped history range, a hundred dead letters).

mod answer;
mod api;
pub mod auth;
pub mod backtest;
pub mod feed;
mod live;
mod route;

pub use route::openapi;

use crate::alarms::{Refused, Request};
use crate::reload::Trigger;
use crate::telemetry::Stats;
use auth::Tokens;
use edgewatch_engine::alarm::Condition;
use edgewatch_engine::{AlarmView, DeviceView, RuleView};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// A question for the engine loop, answered between two inputs.
#[derive(Debug)]
pub enum Query {
    /// Every rule with its keys and alarms, and the rules' status document.
    Rules(oneshot::Sender<RulesNow>),
    /// Heartbeat keys and alarms: all of them, or one key's.
    Devices { key: Option<String>, reply: oneshot::Sender<DevicesNow> },
    /// An alarm command, as the control topic's (`command` as sent, for the audit trail):
    /// the alarm's state after it, or why not.
    Alarm { request: Request, command: serde_json::Value, reply: oneshot::Sender<Result<Condition, Refused>> },
}

/// The rules as the engine loop has them.
#[derive(Debug)]
pub struct RulesNow {
    pub rules: Vec<RuleView>,
    /// The rules' status document (files, hashes, load times, errors).
    pub status: serde_json::Value,
}

/// Heartbeat keys and alarms as the engine loop has them.
#[derive(Debug)]
pub struct DevicesNow {
    pub devices: Vec<DeviceView>,
    pub alarms: Vec<AlarmView>,
    /// Wall-clock ms when asked: downtimes are counted to it.
    pub now: i64,
    /// For one key that names a Sparkplug B node or device: alive or not, and its metrics'
    /// last known values (stale after a death).
    pub sparkplug: Option<serde_json::Value>,
}

/// Hands a query to the engine loop, waiting while its queue is full; `false` when the loop
/// is gone (the agent is stopping).
pub type Ask = Arc<dyn Fn(Query) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// What the API reads and whom it asks.
pub struct Api {
    pub tokens: Tokens,
    pub ask: Ask,
    pub stats: Arc<Stats>,
    /// `<state_dir>/history`.
    pub history_dir: PathBuf,
    /// `<state_dir>/events`, when the event log is on.
    pub events_dir: Option<PathBuf>,
    /// Where `POST /api/v1/reload` goes: the reloader, as the control topic's request does.
    pub reload: mpsc::Sender<Trigger>,
    /// What the engine loop tells the live stream's clients.
    pub feed: Arc<feed::Feed>,
    /// The agent is stopping: live streams end, so their connections close.
    pub stop: CancellationToken,
    /// Runs `POST /api/v1/backtest` (`None`: the agent did not start from a configuration
    /// file, or is not the `edgewatch` program).
    pub backtester: Option<backtest::Backtester>,
    /// One backtest at a time.
    pub backtests: Arc<Semaphore>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("history_dir", &self.history_dir).finish_non_exhaustive()
    }
}

/// Why the console could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for the console on {addr} (`console.listen`): {source}")]
pub struct ListenError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Binds `addr` now, so a taken port refuses to start rather than failing later.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ListenError> {
    crate::server::bind(addr).map_err(|source| ListenError { addr, source })
}

/// Serves the console until `stop` (HTTPS with `tls`).
pub async fn serve(
    listener: std::net::TcpListener,
    api: Arc<Api>,
    tls: Option<crate::tls::ServerTls>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    crate::server::serve(listener, api, tls, stop, "console").await
}
