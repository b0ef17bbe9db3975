//! A webhook's HTTP/1.1 client: POST one body, read the status and `Retry-After`.
//!
//! hyper's client connection over tokio's TCP (and tokio-rustls for https), kept open between
//! actions and opened again after any failure. A sink sends one action at a time, in order,
//! so it needs one connection, not a pool: the pooled clients (hyper-util's, reqwest, ureq)
//! cost 150–590 KB more in the gateway binary (docs/design/actions.md).

use crate::config::HttpSink;
use crate::tls::TlsFiles;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Most of an answer's body read (and thrown away) before the connection is reused.
const MAX_ANSWER: usize = 64 * 1024;

/// What the receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
}

/// Why a webhook could not be set up, or a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("bad URL: {0}")]
    Url(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(String),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One webhook's client.
pub struct HttpClient {
    host: String,
    port: u16,
    /// `Host` header and request target.
    authority: String,
    path: String,
    /// Present for https: certificate checks are always on.
    tls: Option<tokio_rustls::TlsConnector>,
    /// Configured headers (values are secrets: never logged).
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    /// The open connection, if the last request left one.
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").field("authority", &self.authority).field("path", &self.path).finish()
    }
}

impl HttpClient {
    /// Parses the URL and reads the CA file (the system's roots without one).
    pub fn new(sink: &HttpSink) -> Result<HttpClient, HttpError> {
        let uri: hyper::Uri = sink.url.parse().map_err(|e| HttpError::Url(format!("{e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(HttpError::Url("must start with http:// or https://".into())),
        };
        let host = uri.host().ok_or_else(|| HttpError::Url("no host".into()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_else(|| host.clone());
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let tls = if https {
            let files = TlsFiles { ca_file: sink.ca_file.clone(), client_auth: None };
            Some(tokio_rustls::TlsConnector::from(files.load()?.rustls))
        } else {
            None
        };
        let mut headers = Vec::with_capacity(sink.headers.len());
        for (name, value) in &sink.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| HttpError::Url(format!("header: {e}")))?;
            let mut value =
                HeaderValue::from_str(value).map_err(|_| HttpError::Url(format!("header {name}: bad value")))?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        Ok(HttpClient { host, port, authority, path, tls, headers, timeout: sink.timeout, conn: None })
    }

    /// POSTs `body` (`content_type`) with `Idempotency-Key: key`; the whole exchange, the
    /// connection included, within the sink's timeout.
    pub async fn post(&mut self, body: Bytes, content_type: &'static str, key: &str) -> Result<Answer, HttpError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.exchange(body, content_type, key)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(HttpError::Timeout(timeout))
            }
        }
    }

    async fn exchange(&mut self, body: Bytes, content_type: &'static str, key: &str) -> Result<Answer, HttpError> {
        let io_err = |e: &dyn std::fmt::Display| HttpError::Io(e.to_string());
        let reused = match self.conn.take() {
            Some(mut c) => c.ready().await.is_ok().then_some(c),
            None => None,
        };
        let mut conn = match reused {
            Some(c) => c,
            None => self.connect().await?,
        };
        let mut request = hyper::Request::post(self.path.as_str())
            .header(hyper::header::HOST, self.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header(hyper::header::USER_AGENT, concat!("edgewatch/", env!("CARGO_PKG_VERSION")))
            .header("idempotency-key", key)
            .body(Full::new(body))
            .map_err(|e| io_err(&e))?;
        request.headers_mut().extend(self.headers.iter().cloned());
        let answer = conn.send_request(request).await.map_err(|e| io_err(&e))?;
        let status = answer.status().as_u16();
        let retry_after =
            answer.headers().get(hyper::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        // Read the answer to its end (bounded) so the connection can carry the next request.
        let whole = http_body_util::Limited::new(answer.into_body(), MAX_ANSWER).collect().await.is_ok();
        if whole {
            self.conn = Some(conn);
        }
        Ok(Answer { status, retry_after })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, HttpError> {
        let io_err = |e: &dyn std::fmt::Display| HttpError::Io(format!("{}:{}: {e}", self.host, self.port));
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|e| io_err(&e))?;
        tcp.set_nodelay(true).map_err(|e| io_err(&e))?;
        let io: Box<dyn Io> = match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone()).map_err(|e| io_err(&e))?;
                Box::new(tls.connect(name, tcp).await.map_err(|e| io_err(&e))?)
            }
            None => Box::new(tcp),
        };
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| io_err(&e))?;
        // Drives the connection until it closes (the sender dropped, or the peer).
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "Webhook connection closed.");
            }
        });
        Ok(sender)
    }
}
