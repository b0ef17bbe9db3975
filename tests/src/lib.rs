//! Helpers for the end-to-end tests: real brokers, a real agent, real MQTT clients.
//!
//! - [`Broker`]: rumqttd embedded in the test process, or a Mosquitto child process
//!   ([`mosquitto`]: the workspace's one Mosquitto launcher).
//! - [`RunningAgent`]: an `edgewatch` agent on a temp dir, with its rules written as files.
//! - [`Subscriber`] and a publishing client: plain rumqttc clients, as a sensor and a cloud
//!   would use.
//! - [`Webhook`] (`webhook`): a real HTTP server that records requests and answers from a script.
//! - [`AgentToml`] (`config`): agent configurations built in code, with the key paths the
//!   agent's own errors name, instead of TOML written by hand in each test.
//!
//! Mosquitto tests skip (saying why) when `mosquitto` is not installed, unless
//! `EDGEWATCH_REQUIRE_MOSQUITTO=1`, in which case they fail.

pub mod browser;
pub mod cloudevents;
pub mod config;
pub mod mosquitto;
pub mod pki;
pub mod schemathesis;
pub mod sparkplug;
pub mod webhook;

pub use config::{AgentToml, TomlValue};

/// Whether a peer the tests need is there: `missing` says what is not. Missing, it skips the
/// test (saying why), unless the environment variable `required` is set: then it fails.
pub fn peer_available(missing: Option<String>, required: &str) -> bool {
    if let Some(missing) = &missing {
        assert!(std::env::var_os(required).is_none(), "{required} is set, but {missing}");
        eprintln!("skipped: {missing}");
    }
    missing.is_none()
}

/// Whether `program args` runs and succeeds (a peer's version check).
pub fn runs(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
pub use mosquitto::{Log, Mosquitto, MosquittoError};
pub use webhook::{Reply, Webhook};

use edgewatch::broker::EmbeddedBroker;
use edgewatch::telemetry::{Snapshot, Stats};
use edgewatch::{Agent, Config, Readiness};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// How long any one wait in a test may take before it is a failure.
pub const WAIT: Duration = Duration::from_secs(15);

/// A broker to test against.
#[derive(Debug)]
pub enum Broker {
    /// rumqttd, inside this process.
    Embedded(EmbeddedBroker),
    /// A `mosquitto` process, killed on drop.
    Mosquitto(Mosquitto),
}

impl Broker {
    /// rumqttd on free ports.
    pub fn embedded() -> Broker {
        Broker::Embedded(EmbeddedBroker::start().expect("embedded broker starts"))
    }

    /// Mosquitto on a free port, or `None` (with the reason printed) when it is not installed
    /// and not required.
    pub fn mosquitto() -> Option<Broker> {
        Mosquitto::start().map(Broker::Mosquitto)
    }

    /// Every broker available here: rumqttd always, Mosquitto when installed.
    pub fn all() -> Vec<Broker> {
        let mut v = vec![Broker::embedded()];
        v.extend(Broker::mosquitto());
        v
    }

    /// The MQTT 3.1.1 address.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Broker::Embedded(b) => b.v4,
            Broker::Mosquitto(m) => m.addr,
        }
    }

    /// The MQTT 5 address (Mosquitto serves both versions on one port).
    pub fn addr_v5(&self) -> SocketAddr {
        match self {
            Broker::Embedded(b) => b.v5,
            Broker::Mosquitto(m) => m.addr,
        }
    }

    /// A name for assertion messages.
    pub fn name(&self) -> &'static str {
        match self {
            Broker::Embedded(_) => "rumqttd",
            Broker::Mosquitto(_) => "mosquitto",
        }
    }
}

/// An agent running in this process, on its own temp dir.
#[derive(Debug)]
pub struct RunningAgent {
    pub stats: Arc<Stats>,
    ready: watch::Receiver<Readiness>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<Snapshot, edgewatch::AgentError>>>,
    pub dir: tempfile::TempDir,
    /// The completed configuration, for [`RunningAgent::restart`].
    config: String,
    /// Asks the agent to reload its rules, as SIGHUP does for the binary.
    reload: mpsc::Sender<edgewatch::reload::Trigger>,
}

impl RunningAgent {
    /// Writes `rules` (file name, source) into a rules directory, completes `config_toml`
    /// (which may use `{rules}` and `{state}`), starts the agent, and waits until it is
    /// connected and subscribed.
    pub async fn start(config_toml: &str, rules: &[(&str, &str)]) -> RunningAgent {
        let agent = RunningAgent::spawn(config_toml, rules).await;
        agent.wait_ready().await;
        agent
    }

    /// Starts an agent on an existing rules directory (the shipped `rules/`, say).
    pub async fn start_with_rules_dir(config_toml: &str, rules_dir: &Path) -> RunningAgent {
        let agent = RunningAgent::spawn_in(config_toml, None, Some(rules_dir)).await;
        agent.wait_ready().await;
        agent
    }

    /// Like [`RunningAgent::start`], without waiting for readiness.
    pub async fn spawn(config_toml: &str, rules: &[(&str, &str)]) -> RunningAgent {
        RunningAgent::spawn_in(config_toml, Some(rules), None).await
    }

    async fn spawn_in(config_toml: &str, rules: Option<&[(&str, &str)]>, existing: Option<&Path>) -> RunningAgent {
        let dir = tempfile::tempdir().expect("temp dir");
        let rules_dir = existing.map(Path::to_owned).unwrap_or_else(|| dir.path().join("rules"));
        if let Some(rules) = rules {
            std::fs::create_dir_all(&rules_dir).expect("rules dir");
            for (name, text) in rules {
                let path = rules_dir.join(name);
                // `tables/devices.csv` and the like: the folder first.
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).expect("rules subdir");
                }
                std::fs::write(path, text).expect("write rule");
            }
        }
        let text = config_toml
            .replace("{rules}", &toml_path(&rules_dir))
            .replace("{state}", &toml_path(&dir.path().join("state")));
        RunningAgent::launch(text, dir).await
    }

    async fn launch(text: String, dir: tempfile::TempDir) -> RunningAgent {
        let config = Config::from_toml(&text, "test.toml", std::iter::empty()).expect("test config is valid");
        let agent = Agent::new(config).await.expect("agent starts");
        let stats = agent.stats();
        let ready = agent.readiness();
        let (reload, reloads) = mpsc::channel(1);
        let stop = CancellationToken::new();
        let task = tokio::spawn(agent.run(stop.clone(), reloads));
        RunningAgent { stats, ready, stop, task: Some(task), dir, config: text, reload }
    }

    /// Stops the agent cleanly and starts a new one on the same configuration, rules and
    /// state (and so the same broker sessions), waiting until it is ready.
    pub async fn restart(mut self) -> RunningAgent {
        self.stop.cancel();
        let task = self.task.take().expect("running");
        tokio::time::timeout(WAIT, task).await.expect("agent stops in time").expect("task").expect("agent ran");
        let agent = RunningAgent::launch(self.config, self.dir).await;
        agent.wait_ready().await;
        agent
    }

    /// Its connection state now.
    pub fn readiness(&self) -> Readiness {
        *self.ready.borrow()
    }

    /// Waits until the agent is connected on both sides and subscribed.
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.clone();
        let waited = tokio::time::timeout(WAIT, ready.wait_for(|r| r.is_ready())).await;
        let state = *self.ready.borrow();
        waited.unwrap_or_else(|_| panic!("agent not ready in time: {state:?}")).expect("agent still running");
    }

    /// Asks the agent to rescan its rules, as SIGHUP does for the binary.
    pub async fn request_reload(&self) {
        self.reload.send(edgewatch::reload::Trigger::Signal).await.expect("agent takes reload requests");
    }

    /// Waits until the agent is subscribed to the sensor topics (its upstream may be down).
    pub async fn wait_source_subscribed(&self) {
        let mut ready = self.ready.clone();
        let waited = tokio::time::timeout(WAIT, ready.wait_for(|r| r.source_subscribed)).await;
        waited.unwrap_or_else(|_| panic!("agent not subscribed in time")).expect("agent still running");
    }

    /// Stops the agent and returns its final counters.
    pub async fn stop(mut self) -> Snapshot {
        self.stop.cancel();
        let task = self.task.take().expect("running");
        tokio::time::timeout(WAIT, task).await.expect("agent stops in time").expect("task").expect("agent ran")
    }

    /// Waits until `cond` holds for the live counters (fails after [`WAIT`]).
    pub async fn wait_for_stats(&self, what: &str, cond: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let poll = async {
            loop {
                let s = self.stats.snapshot();
                if cond(&s) {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        match tokio::time::timeout(WAIT, poll).await {
            Ok(s) => s,
            Err(_) => panic!("timed out waiting for {what}; counters: {}", self.stats.snapshot()),
        }
    }
}

/// A path as a TOML string literal.
pub fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// A message received by a [`Subscriber`].
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Received {
    /// The payload as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("payload on {} is not JSON ({e}): {:?}", self.topic, self.payload))
    }
}

/// An MQTT client subscribed to one filter, as an upstream consumer would be.
#[derive(Debug)]
pub struct Subscriber {
    rx: mpsc::UnboundedReceiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Connects to `addr`, subscribes to `filter` at QoS 1, and returns once the broker
    /// acknowledged the subscription.
    pub async fn connect(addr: SocketAddr, client_id: &str, filter: &str) -> Subscriber {
        Subscriber::connect_with(addr, client_id, filter, false).await
    }

    /// The same with a persistent session: a broker that keeps sessions queues messages for
    /// this subscriber while it is away (and across its own restarts, with persistence on).
    pub async fn connect_with(addr: SocketAddr, client_id: &str, filter: &str, persistent: bool) -> Subscriber {
        let mut o = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        o.set_clean_session(!persistent);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let (subscribed_tx, subscribed_rx) = oneshot::channel();
        let filter = filter.to_owned();
        let task = tokio::spawn(async move {
            let mut subscribed = Some(subscribed_tx);
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        client.try_subscribe(filter.clone(), rumqttc::QoS::AtLeastOnce).expect("subscribe queued");
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        if let Some(s) = subscribed.take() {
                            let _ = s.send(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let _ = tx.send(Received { topic: p.topic, payload: p.payload.to_vec() });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(WAIT, subscribed_rx).await.expect("subscribed in time").expect("subscriber alive");
        Subscriber { rx, task }
    }

    /// The next message, or a panic after [`WAIT`].
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(WAIT, self.rx.recv()).await.expect("a message arrives in time").expect("subscriber alive")
    }

    /// The next message within `d`, if any.
    pub async fn next_within(&mut self, d: Duration) -> Option<Received> {
        tokio::time::timeout(d, self.rx.recv()).await.ok().flatten()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A publishing client, as a sensor would be.
#[derive(Debug)]
pub struct Publisher {
    client: rumqttc::AsyncClient,
    acks: mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Connects to `addr` and waits for the CONNACK.
    pub async fn connect(addr: SocketAddr, client_id: &str) -> Publisher {
        let mut o = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 64);
        let (ack_tx, acks) = mpsc::unbounded_channel();
        let (connected_tx, connected_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut connected = Some(connected_tx);
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        if let Some(c) = connected.take() {
                            let _ = c.send(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_) | rumqttc::Packet::PubComp(_))) => {
                        let _ = ack_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(WAIT, connected_rx).await.expect("connected in time").expect("publisher alive");
        Publisher { client, acks, task }
    }

    /// Publishes at QoS 1 without waiting for the PUBACK (see [`Publisher::wait_acks`]).
    pub fn publish_no_wait(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        let mut payload = Some(payload.into());
        loop {
            match self.client.try_publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.take().unwrap_or_default()) {
                Ok(()) => return,
                Err(rumqttc::ClientError::TryRequest(rumqttc::Request::Publish(p))) => {
                    payload = Some(p.payload.to_vec());
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => panic!("publish not queued: {e}"),
            }
        }
    }

    /// Waits for `n` PUBACKs.
    pub async fn wait_acks(&mut self, n: usize) {
        for _ in 0..n {
            tokio::time::timeout(WAIT * 4, self.acks.recv()).await.expect("PUBACK in time").expect("publisher alive");
        }
    }

    /// Publishes at QoS 1 and waits for the broker's PUBACK.
    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.publish_qos(topic, payload, 1).await;
    }

    /// Publishes at `qos` and waits for the broker's PUBACK (QoS 1) or PUBCOMP (QoS 2); at
    /// QoS 0, only until the client has taken it.
    pub async fn publish_qos(&mut self, topic: &str, payload: impl Into<Vec<u8>>, qos: u8) {
        let q = match qos {
            0 => rumqttc::QoS::AtMostOnce,
            1 => rumqttc::QoS::AtLeastOnce,
            _ => rumqttc::QoS::ExactlyOnce,
        };
        self.client.publish(topic, q, false, payload.into()).await.expect("publish queued");
        if qos > 0 {
            tokio::time::timeout(WAIT, self.acks.recv()).await.expect("acknowledged in time").expect("publisher alive");
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A plain HTTP/1.0 GET on loopback: (status code, body). Enough for `/metrics` and `/healthz`.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    try_http_get(addr, path).await.unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// The same, with an error instead of a panic (nothing listening yet, say).
pub async fn try_http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    try_http(addr, "GET", path, &[], b"").await
}

/// One plain HTTP/1.0 request on loopback, with headers and a body: (status code, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    try_http(addr, method, path, headers, body).await.unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

/// [`http`], with an error instead of a panic.
pub async fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let (status, _, body) = try_http_full(addr, method, path, headers, body).await?;
    Ok((status, body))
}

/// [`http`] with the response's head too (its status line and headers, as sent).
pub async fn try_http_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String, String)> {
    use std::fmt::Write as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let timed_out = |_| std::io::Error::from(std::io::ErrorKind::TimedOut);
    let mut stream = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr)).await.map_err(timed_out)??;
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if !body.is_empty() || method == "POST" {
        let _ = write!(head, "Content-Length: {}\r\n", body.len());
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await.map_err(timed_out)??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, head.to_owned(), body.to_owned()))
}

/// Waits until the agent serving `/healthz` on `addr` (a separate process, say) is ready:
/// connected on both sides, every subscription acknowledged. Panics after [`WAIT`].
pub async fn wait_healthy(addr: SocketAddr) {
    let mut last = None;
    let poll = async {
        loop {
            let answer = try_http_get(addr, "/healthz").await;
            if matches!(answer, Ok((200, _))) {
                return;
            }
            last = Some(answer);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    if tokio::time::timeout(WAIT, poll).await.is_err() {
        panic!("agent at {addr} not healthy in time; last answer: {last:?}");
    }
}

/// Waits until the sample `sample` on the agent's `/metrics` at `addr` satisfies `cond`, and
/// returns its value. Panics after `within`.
pub async fn wait_metric(addr: SocketAddr, sample: &str, within: Duration, cond: impl Fn(f64) -> bool) -> f64 {
    let mut last = None;
    let poll = async {
        loop {
            let value = match try_http_get(addr, "/metrics").await {
                Ok((200, page)) => metric(&page, sample),
                _ => None,
            };
            if let Some(v) = value.filter(|v| cond(*v)) {
                return v;
            }
            last = value;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    match tokio::time::timeout(within, poll).await {
        Ok(v) => v,
        Err(_) => panic!("`{sample}` at {addr} never got there; last value {last:?}"),
    }
}

/// The value of the sample `name{labels}` (exactly as written) in a Prometheus text page.
pub fn metric(page: &str, sample: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.split_whitespace().next()?.parse().ok())
}
