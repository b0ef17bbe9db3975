//! The console's JSON API (`/api/v1/...`), on its own listener (`[console]`), so that the
//! metrics listener keeps its behaviour.
//!
//! ```text
//! HTTP request ─▶ serve (bounded connections, header timeout) ─▶ router ─▶ api handler
//!   ├─ auth::Tokens::check (Bearer header: read or write token) ─▶ 401 / 403
//!   ├─ what the engine holds (rules, devices, alarms; alarm commands) ─▶ Query ─▶ engine loop
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

mod api;
pub mod auth;
pub mod backtest;
pub mod feed;

pub use api::OPENAPI;

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
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Most connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 32;
/// A client must send its request headers within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

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
    let listener = std::net::TcpListener::bind(addr).map_err(|source| ListenError { addr, source })?;
    listener.set_nonblocking(true).map_err(|source| ListenError { addr, source })?;
    Ok(listener)
}

/// Serves the console until `stop`: at most [`MAX_CONNECTIONS`] at once, each with
/// [`HEADER_TIMEOUT`] to send its request (and its TLS handshake, with `tls`); at `stop` each
/// connection finishes its response.
pub async fn serve(
    listener: std::net::TcpListener,
    api: Arc<Api>,
    mut tls: Option<crate::tls::ServerTls>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = ?listener.local_addr().ok(), scheme, "Serving the console.");
    let router = api::router(api);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            () = stop.cancelled() => break,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let (stream, _peer) = tokio::select! {
            () = stop.cancelled() => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(error) => {
                    // Out of descriptors, or a connection reset before it was accepted.
                    tracing::warn!(%error, "Console connection not accepted.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // A renewed certificate applies from the next connection on.
        if let Some(fresh) = tls.as_ref().and_then(crate::tls::ServerTls::reloaded) {
            tls = Some(fresh);
        }
        let acceptor = tls.as_ref().map(|t| tokio_rustls::TlsAcceptor::from(t.rustls.clone()));
        let (router, stop) = (router.clone(), stop.clone());
        tokio::spawn(async move {
            match acceptor {
                None => connection(stream, router, stop).await,
                Some(acceptor) => match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => connection(tls, router, stop).await,
                    Ok(Err(error)) => tracing::debug!(%error, "Console TLS handshake failed."),
                    Err(_) => tracing::debug!("Console TLS handshake timed out."),
                },
            }
            drop(slot);
        });
    }
    Ok(())
}

/// One connection, HTTP/1.1, until the client closes it or the agent stops.
async fn connection<IO>(io: IO, router: axum::Router, stop: CancellationToken)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    let service = hyper_util::service::TowerToHyperService::new(router);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}
