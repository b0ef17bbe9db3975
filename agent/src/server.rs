//! The agent's HTTP listeners, `/metrics` and `/healthz` and the console: one small server
//! over hyper's HTTP/1 connection.
//!
//! ```text
//! TcpListener ─ accept (at most MAX_CONNECTIONS at once) ─▶ [TLS handshake] ─▶ hyper http1
//!   (headers within HEADER_TIMEOUT) ─▶ Handler::handle(request) ─▶ response; at `stop` each
//!   connection finishes the response it is writing, and long ones (a live stream) end
//! ```
//!
//! Each listener routes with a `match` on the method and path in its handler. Hand-written on
//! purpose: a dozen fixed paths, where a routing framework's per-handler instantiations cost
//! about 200 KB of the gateway binary (docs/benchmarks.md, "The console").

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Most connections served at once per listener; more wait to be accepted.
const MAX_CONNECTIONS: usize = 32;
/// A client must send its request headers (and finish its TLS handshake) within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A response body: whole, or streamed (the console's live stream).
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;
pub type Request = hyper::Request<Incoming>;
pub type Response = hyper::Response<Body>;

/// A whole response.
pub fn respond(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Response {
    let mut r = hyper::Response::new(http_body_util::Full::new(body.into()).boxed_unsync());
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    r
}

/// A request body, read whole up to `max` bytes; `None` beyond (or when the client left).
pub async fn body(request: Request, max: usize) -> Option<Bytes> {
    http_body_util::Limited::new(request.into_body(), max).collect().await.ok().map(|c| c.to_bytes())
}

/// A response to come.
pub type Reply = Pin<Box<dyn Future<Output = Response> + Send>>;

/// What a listener answers. Called through `dyn`, like the connection's stream below: hyper's
/// connection code is then built once for every listener, plain or TLS, not once per
/// listener and kind of stream (about 60 KB of the gateway binary).
pub trait Handler: Send + Sync + 'static {
    fn handle(self: Arc<Self>, request: Request) -> Reply;
}

/// A connection's stream: TCP, or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Binds `addr` now, so a taken port refuses to start rather than failing later.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves `handler` on `listener` until `stop` (`what` names the listener in logs), with TLS
/// when `tls` is given; a renewed certificate applies from the next connection on.
pub async fn serve(
    listener: std::net::TcpListener,
    handler: Arc<dyn Handler>,
    mut tls: Option<crate::tls::ServerTls>,
    stop: CancellationToken,
    what: &'static str,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = ?listener.local_addr().ok(), scheme, what, "Listening.");
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
                    tracing::warn!(%error, what, "Connection not accepted.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if let Some(fresh) = tls.as_ref().and_then(crate::tls::ServerTls::reloaded) {
            tls = Some(fresh);
        }
        let acceptor = tls.as_ref().map(|t| tokio_rustls::TlsAcceptor::from(t.rustls.clone()));
        let (handler, stop) = (handler.clone(), stop.clone());
        tokio::spawn(async move {
            match acceptor {
                None => connection(Box::new(stream), handler, stop).await,
                Some(acceptor) => match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => connection(Box::new(tls), handler, stop).await,
                    Ok(Err(error)) => tracing::debug!(%error, what, "TLS handshake failed."),
                    Err(_) => tracing::debug!(what, "TLS handshake timed out."),
                },
            }
            drop(slot);
        });
    }
    Ok(())
}

/// One connection, until the client closes it or the agent stops.
async fn connection(io: Box<dyn Io>, handler: Arc<dyn Handler>, stop: CancellationToken) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let service = hyper::service::service_fn(move |request| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler.handle(request).await) }
    });
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
