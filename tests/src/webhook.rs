//! A real HTTP server in the test process, standing in for a webhook receiver (a pager, a
//! chat service): it records every request and answers from a script (then 200), and can go
//! away (listener and open connections closed) and come back on the same port.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// One answer: a status and, maybe, a `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply { status, retry_after: None }
    }

    pub fn retry_after(status: u16, value: &str) -> Reply {
        Reply { status, retry_after: Some(value.to_owned()) }
    }
}

/// A request as received, and what it was answered.
#[derive(Debug, Clone)]
pub struct Request {
    pub at: Instant,
    pub path: String,
    /// The `Idempotency-Key` header.
    pub key: Option<String>,
    pub content_type: Option<String>,
    /// Every header, names lowercase.
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
    pub answered: u16,
}

#[derive(Debug, Default)]
struct Script {
    next: VecDeque<Reply>,
    received: Vec<Request>,
    /// Connections accepted.
    connections: usize,
}

/// The receiver; see the module documentation.
#[derive(Debug)]
pub struct Webhook {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    tasks: JoinSet<()>,
}

impl Webhook {
    /// Listening on a free port of 127.0.0.1.
    pub async fn start() -> Webhook {
        Webhook::start_on("127.0.0.1:0".parse().expect("addr"), Arc::default()).await
    }

    async fn start_on(addr: SocketAddr, script: Arc<Mutex<Script>>) -> Webhook {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("webhook listens");
        let addr = listener.local_addr().expect("local addr");
        let mut tasks = JoinSet::new();
        let shared = script.clone();
        tasks.spawn(async move {
            // Connections are tasks of their own, aborted with the listener's at `stop`.
            let mut conns = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                lock(&shared).connections += 1;
                let script = shared.clone();
                conns.spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let script = script.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(req, &script).await) }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Webhook { addr, script, tasks }
    }

    /// The URL of `path` on it.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next answers, in order; 200 after them.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.script).next.extend(replies);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.script).received.clone()
    }

    /// How many connections it accepted.
    pub fn connections(&self) -> usize {
        lock(&self.script).connections
    }

    /// Waits until `cond` holds for the requests so far; `within` only bounds a test that would
    /// otherwise hang (like the suite's `WAIT`), it is not a timing goal.
    pub async fn wait_for(&self, what: &str, within: Duration, cond: impl Fn(&[Request]) -> bool) -> Vec<Request> {
        let poll = async {
            loop {
                let seen = self.requests();
                if cond(&seen) {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        match tokio::time::timeout(within, poll).await {
            Ok(seen) => seen,
            Err(_) => panic!("webhook: {what} never seen; got {:#?}", self.requests()),
        }
    }

    /// Goes away: the listener and every open connection closed.
    pub async fn stop(mut self) -> Gone {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        Gone { addr: self.addr, script: self.script }
    }
}

/// A receiver that went away, to come back on the same port with its record.
#[derive(Debug)]
pub struct Gone {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
}

impl Gone {
    pub async fn restart(self) -> Webhook {
        Webhook::start_on(self.addr, self.script).await
    }
}

fn lock(script: &Mutex<Script>) -> std::sync::MutexGuard<'_, Script> {
    script.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn answer(req: hyper::Request<hyper::body::Incoming>, script: &Mutex<Script>) -> hyper::Response<Full<Bytes>> {
    let at = Instant::now();
    let path = req.uri().path().to_owned();
    let headers: Vec<(String, String)> =
        req.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect();
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let (key, content_type) = (header("idempotency-key"), header("content-type"));
    let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    let reply = {
        let mut s = lock(script);
        let reply = s.next.pop_front().unwrap_or(Reply::status(200));
        s.received.push(Request { at, path, key, content_type, headers, body, answered: reply.status });
        reply
    };
    let mut response = hyper::Response::builder().status(reply.status);
    if let Some(v) = &reply.retry_after {
        response = response.header("retry-after", v.as_str());
    }
    response.body(Full::new(Bytes::new())).expect("response")
}
