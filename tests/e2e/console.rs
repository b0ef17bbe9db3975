//! The console's JSON API against a running agent on a real broker: what a person would ask
//! of it (which devices are missing, which rule is broken and where, what fired, how a value
//! moved), the alarm commands and reload behind the write token, a 401 or 403 from every
//! endpoint without the right token; then Schemathesis, which nobody here wrote, generates
//! requests for every operation of the OpenAPI document and checks every answer against it.

use crate::agent;
use edgewatch_e2e::{Broker, Publisher, RunningAgent, http, schemathesis, try_http_full};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

const ALIVE: &str = r#"rule("alive", #{ on: "sensors/{device}/temperature", heartbeat: #{ timeout: "2s" }, remember: "temperature" });"#;
const HOT: &str = r#"rule("hot", #{ on: "sensors/{device}/temperature", when: |e| e.value > 80.0, clear: |e| e.value < 70.0, notify: "pager" });"#;
/// An edit of `hot.rhai` that does not compile: its previous version keeps running.
const BROKEN: &str = r#"rule("hot", #{ on: "sensors/{device}/temperature", when: |e| e.value > , notify: "pager" });"#;

const READ: &str = "read-token-0123456789abcdef";
const WRITE: &str = "write-token-0123456789abcdef";
/// Generous: the test waits for a change and asserts it, not its timing.
const DEADLINE: Duration = Duration::from_secs(30);

struct Console {
    addr: SocketAddr,
    /// Every path asked, as the document names it, to check that the test covers it.
    asked: BTreeSet<String>,
    /// Every answer, to check that none holds a secret.
    answers: String,
}

impl Console {
    async fn call(&mut self, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
        let (status, body) = http(self.addr, method, path, &headers, body.as_bytes()).await;
        self.answers.push_str(&body);
        let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {path}: {status} {body:?}: {e}"));
        (status, json)
    }

    async fn get(&mut self, documented: &str, path: &str) -> Value {
        self.asked.insert(format!("GET {documented}"));
        let (status, body) = self.call("GET", path, Some(READ), "").await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn post(&mut self, documented: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
        self.asked.insert(format!("POST {documented}"));
        self.call("POST", path, token, body).await
    }

    /// Asks `path` until `done` accepts the answer.
    async fn wait(&mut self, documented: &str, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let seen = async {
            loop {
                let body = self.get(documented, path).await;
                if done(&body) {
                    return body;
                }
                last = body;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        match tokio::time::timeout(DEADLINE, seen).await {
            Ok(body) => body,
            Err(_) => panic!("{what}: not seen in {DEADLINE:?}; last answer: {last}"),
        }
    }
}

/// A client of the live stream, reading its frames as they come.
struct Stream {
    reader: tokio::io::BufReader<tokio::net::TcpStream>,
}

impl Stream {
    /// Opens `/api/v1/stream` with `token`; the status and, on 200, the stream.
    async fn open(addr: SocketAddr, token: &str) -> (u16, Option<Stream>) {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connects");
        let head = format!("GET /api/v1/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n");
        tcp.write_all(head.as_bytes()).await.expect("writes");
        let mut reader = tokio::io::BufReader::new(tcp);
        let mut status = String::new();
        reader.read_line(&mut status).await.expect("reads");
        let code = status.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        // The headers, to the blank line.
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.expect("reads");
            if line.trim().is_empty() {
                break;
            }
        }
        (code, (code == 200).then_some(Stream { reader }))
    }

    /// The next frame of `kind` whose data `want` accepts, skipping others.
    async fn next(&mut self, kind: &str, want: impl Fn(&Value) -> bool) -> Value {
        use tokio::io::AsyncBufReadExt;
        let read = async {
            let mut event = String::new();
            loop {
                let mut line = String::new();
                if self.reader.read_line(&mut line).await.expect("reads") == 0 {
                    panic!("the stream ended waiting for `{kind}`");
                }
                // Chunked transfer: the chunk sizes are lines of their own, skipped here.
                if let Some(e) = line.strip_prefix("event: ") {
                    event = e.trim().to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    let data: Value = serde_json::from_str(d.trim()).expect("data is JSON");
                    if event == kind && want(&data) {
                        return data;
                    }
                }
            }
        };
        tokio::time::timeout(DEADLINE, read).await.unwrap_or_else(|_| panic!("no `{kind}` frame in {DEADLINE:?}"))
    }
}

fn device<'a>(devices: &'a Value, key: &str) -> &'a Value {
    devices["devices"].as_array().and_then(|d| d.iter().find(|d| d["key"] == key)).unwrap_or(&Value::Null)
}

/// An agent with the console on, both tokens in files, and history periods of a second.
async fn start(broker: &Broker) -> (RunningAgent, SocketAddr, tempfile::TempDir) {
    let tokens = tempfile::tempdir().expect("temp dir");
    let (read, write) = (tokens.path().join("read"), tokens.path().join("write"));
    std::fs::write(&read, format!("{READ}\n")).expect("writes");
    std::fs::write(&write, WRITE).expect("writes");
    let addr = edgewatch::broker::free_port().expect("port");
    let cfg = agent(broker.addr(), "3.1.1")
        .set("console.listen", addr)
        .set("console.read_token_file", &read)
        .set("console.write_token_file", &write)
        .set("history.fine", "1s")
        .set("history.coarse", "2s")
        .sink("pager", "mqtt", &[("topic", "pager/{key}".into())])
        .sink(
            "hook",
            "http",
            &[
                ("url", "http://127.0.0.1:9/hook/url-secret-0123".into()),
                ("headers", edgewatch_e2e::TomlValue::raw(r#"{ Authorization = "Bearer sink-secret-4567" }"#)),
            ],
        )
        .to_string();
    let agent = RunningAgent::start(&cfg, &[("alive.rhai", ALIVE), ("hot.rhai", HOT)]).await;
    (agent, addr, tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_devices_rules_events_and_history_and_takes_commands_with_the_write_token() {
    let broker = Broker::embedded();
    let (agent, addr, _tokens) = start(&broker).await;
    let mut c = Console { addr, asked: BTreeSet::new(), answers: String::new() };
    c.asked.insert("GET /api/v1/stream".into());
    let (_, live) = Stream::open(addr, READ).await;
    let mut live = live.expect("the stream opens with the read token");
    live.next("hello", |_| true).await;
    let mut sensor = Publisher::connect(broker.addr(), "sensor").await;
    sensor.publish("sensors/t-1/temperature", r#"{"temperature": 90}"#).await;
    // Told as it happens: t-1's event, and its alarm.
    let hot = live.next("event", |e| e["rule"] == "hot").await;
    assert_eq!((hot["key"].as_str(), hot["event"]["type"].as_str()), (Some("t-1"), Some("edgewatch.hot")), "{hot}");
    live.next("alarm", |a| a["change"] == "activated" && a["data"]["key"] == "t-1").await;
    sensor.publish("sensors/t-2/temperature", r#"{"temperature": 20}"#).await;

    // Both up; then t-2 falls silent while t-1 keeps talking, and turns missing.
    c.wait("/api/v1/devices", "/api/v1/devices", "two devices up", |d| d["counts"]["up"] == 2).await;
    let beat = tokio::spawn(async move {
        loop {
            sensor.publish("sensors/t-1/temperature", r#"{"temperature": 91}"#).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let devices =
        c.wait("/api/v1/devices", "/api/v1/devices", "t-2 missing", |d| device(d, "t-2")["state"] == "missing").await;
    assert_eq!(
        (devices["counts"]["missing"].as_u64(), devices["counts"]["up"].as_u64()),
        (Some(1), Some(1)),
        "{devices}"
    );
    let t2 = device(&devices, "t-2");
    assert!(t2["last_seen"].is_string() && t2["missing_since"].is_string() && t2["downtime_ms"].is_u64(), "{t2}");
    assert_eq!(device(&devices, "t-1")["active_alarms"], 1, "hot is active for t-1: {devices}");
    let only = c.get("/api/v1/devices", "/api/v1/devices?state=missing").await;
    assert_eq!(only["devices"].as_array().map(|d| d.len()), Some(1), "{only}");
    let (status, _) = c.call("GET", "/api/v1/devices?state=asleep", Some(READ), "").await;
    assert_eq!(status, 400);

    // The event feed: t-1's event, then nothing after its cursor, then the next one only.
    let first =
        c.wait("/api/v1/events", "/api/v1/events?rule=hot", "hot's event", |e| e["events"][0].is_object()).await;
    assert_eq!(first["events"][0]["event"]["subject"], "t-1", "{first}");
    assert_eq!(first["events"][0]["event"]["type"], "edgewatch.hot");
    let next = first["next"].as_str().expect("a cursor").to_owned();
    let after = c.get("/api/v1/events", &format!("/api/v1/events?rule=hot&since={next}")).await;
    assert_eq!(after["events"], serde_json::json!([]), "nothing new yet");
    let mut sensor = Publisher::connect(broker.addr(), "sensor-2").await;
    sensor.publish("sensors/t-3/temperature", r#"{"temperature": 95}"#).await;
    let path = format!("/api/v1/events?rule=hot&since={next}");
    let newer = c.wait("/api/v1/events", &path, "t-3's event", |e| e["events"][0].is_object()).await;
    let subjects: Vec<&Value> =
        newer["events"].as_array().expect("events").iter().map(|e| &e["event"]["subject"]).collect();
    assert_eq!(subjects, ["t-3"], "only what came after the cursor");

    // Rules: kinds, keys, counts; then a broken edit shows where it is broken.
    let rules = c.get("/api/v1/rules", "/api/v1/rules").await;
    let hot = c.get("/api/v1/rules/{name}", "/api/v1/rules/hot").await;
    assert_eq!((hot["kind"].as_str(), hot["status"].as_str()), (Some("threshold"), Some("running")), "{hot}");
    assert!(hot["events_last_hour"].as_u64() >= Some(2) && hot["last_event"].is_string(), "{hot}");
    assert_eq!(hot["hash"].as_str().map(str::len), Some(16), "{hot}");
    assert_eq!(rules["rules"].as_array().map(|r| r.len()), Some(2), "{rules}");
    assert_eq!(rules["rules"][0]["file"].as_str().map(|f| f.ends_with("alive.rhai")), Some(true), "{rules}");
    let (status, _) = c.call("GET", "/api/v1/rules/nobody", Some(READ), "").await;
    assert_eq!(status, 404);
    std::fs::write(agent.dir.path().join("rules/hot.rhai"), BROKEN).expect("edits");
    let (status, body) = c.post("/api/v1/reload", "/api/v1/reload", Some(WRITE), r#"{"by": "console-test"}"#).await;
    assert_eq!(status, 202, "{body}");
    live.next("rules", |r| r["errors"] == 1).await;
    let broken = c.wait("/api/v1/rules/{name}", "/api/v1/rules/hot", "the error", |r| r["status"] == "error").await;
    let error = broken["error"].as_str().expect("error text");
    assert!(error.contains("hot.rhai:1:"), "file:line:col: {error}");

    // Alarms: hot is active for t-1; acknowledged with the write token only.
    let alarms = c.get("/api/v1/alarms", "/api/v1/alarms").await;
    let t1 = alarms["alarms"].as_array().and_then(|a| a.iter().find(|a| a["key"] == "t-1")).cloned().expect("t-1");
    assert_eq!((t1["rule"].as_str(), t1["state"].as_str()), (Some("hot"), Some("unacknowledged")), "{alarms}");
    let ack = r#"{"action": "ack", "by": "operator-7"}"#;
    let cmd = "/api/v1/alarms/{rule}/{key}";
    assert_eq!(c.post(cmd, "/api/v1/alarms/hot/t-1", Some(READ), ack).await.0, 403);
    assert_eq!(c.post(cmd, "/api/v1/alarms/hot/t-1", None, ack).await.0, 401);
    let (status, body) = c.post(cmd, "/api/v1/alarms/hot/t-1", Some(WRITE), ack).await;
    assert_eq!((status, body["alarmstate"].as_str()), (200, Some("acknowledged")), "{body}");
    let acked = live.next("alarm", |a| a["change"] == "acknowledged").await;
    assert_eq!(acked["data"]["by"], "operator-7", "{acked}");
    let (status, body) = c.post(cmd, "/api/v1/alarms/hot/t-1", Some(WRITE), ack).await;
    assert_eq!(status, 409, "acknowledged already: {body}");
    assert_eq!(c.post(cmd, "/api/v1/alarms/nope/t-1", Some(WRITE), ack).await.0, 404);
    let (status, body) = c.post(cmd, "/api/v1/alarms/hot/t-1", Some(WRITE), r#"{"action": "reboot"}"#).await;
    assert!(status == 400 && body["error"].as_str().is_some_and(|e| e.contains("reboot")), "{body}");
    let snooze = r#"{"action": "snooze", "for": "30m"}"#;
    assert_eq!(c.post(cmd, "/api/v1/alarms/hot/t-3", Some(WRITE), snooze).await.0, 200);
    let alarms = c.get("/api/v1/alarms", "/api/v1/alarms").await;
    let state = |key: &str| alarms["alarms"].as_array().and_then(|a| a.iter().find(|a| a["key"] == key)).cloned();
    assert_eq!(state("t-1").map(|a| a["state"].clone()), Some("acknowledged".into()), "{alarms}");
    assert!(state("t-3").is_some_and(|a| a["snoozed_until"].is_string()), "{alarms}");

    // A backtest needs the `edgewatch` program run from a configuration file (tests/cli
    // runs one); an agent inside this test binary says so.
    let (status, body) = c.post("/api/v1/backtest", "/api/v1/backtest", Some(WRITE), r#"{"rules": ""}"#).await;
    assert!(status == 409 && body["error"].as_str().is_some_and(|e| e.contains("--config")), "{body}");

    // History: the closed one-second roll-ups of t-1's temperature.
    let path = "/api/v1/history/t-1/temperature?since=1h&resolution=fine";
    let history = c.wait("/api/v1/history/{key}/{field}", path, "roll-ups", |h| h["points"][0].is_object()).await;
    let point = &history["points"][0];
    assert!(point["count"].as_u64() >= Some(1) && point["max"].as_f64() >= Some(90.0), "{history}");
    let (status, _) = c.call("GET", "/api/v1/history/t-1/temperature?resolution=2m", Some(READ), "").await;
    assert_eq!(status, 400);

    // A device's page: its states, alarms, events and remembered fields.
    let t1 = c.get("/api/v1/devices/{key}", "/api/v1/devices/t-1").await;
    assert_eq!(t1["history_fields"], serde_json::json!(["temperature"]), "{t1}");
    assert!(t1["events"][0]["event"]["subject"] == "t-1" && t1["alarms"][0]["rule"] == "hot", "{t1}");
    let (status, _) = c.call("GET", "/api/v1/devices/nobody", Some(READ), "").await;
    assert_eq!(status, 404);

    // Dead letters, with their reasons.
    sensor.publish("strict/t-1", "not json").await;
    let letters = c.wait("/api/v1/deadletters", "/api/v1/deadletters", "a dead letter", |d| d["total"] == 1).await;
    assert_eq!(letters["deadletters"][0]["topic"], "strict/t-1", "{letters}");
    assert!(letters["deadletters"][0]["reason"].is_string(), "{letters}");
    beat.abort();

    // Every endpoint: 401 without a token or with a wrong one (saying how to send one), 403
    // for a write with the read token; the document itself is open.
    let doc: Value = serde_json::from_str(&edgewatch::console::openapi()).expect("the document is JSON");
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("operations").keys() {
            let method = method.to_uppercase();
            documented.insert(format!("{method} {path}"));
            if path.ends_with("openapi.json") {
                continue;
            }
            let concrete = path
                .replace("{name}", "hot")
                .replace("{key}", "t-1")
                .replace("{rule}", "hot")
                .replace("{field}", "temperature");
            for token in [None, Some("Bearer not-a-token-at-all")] {
                let headers: Vec<(&str, &str)> = token.iter().map(|t| ("Authorization", *t)).collect();
                let (status, head, _) =
                    try_http_full(addr, &method, &concrete, &headers, b"{}").await.expect("answers");
                assert_eq!(status, 401, "{method} {concrete} with {token:?}");
                assert!(head.to_lowercase().contains("www-authenticate: bearer"), "{head}");
            }
            if method == "POST" {
                assert_eq!(c.call(&method, &concrete, Some(READ), "{}").await.0, 403, "{method} {concrete}");
            }
        }
    }
    // At most 16 live streams: this one and 15 more; the 17th is refused.
    let mut more = Vec::new();
    for _ in 0..15 {
        more.push(Stream::open(addr, WRITE).await.1.expect("room for it"));
    }
    assert_eq!(Stream::open(addr, READ).await.0, 429);
    drop(more);
    let (status, head, body) = try_http_full(addr, "GET", "/api/v1/openapi.json", &[], b"").await.expect("answers");
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).expect("JSON"), doc);
    assert!(head.to_lowercase().contains("x-content-type-options: nosniff"), "{head}");
    // The page's assets are stored gzip-compressed: sent so to a browser, inflated for curl.
    let (status, head, plain) = try_http_full(addr, "GET", "/app.js", &[], b"").await.expect("answers");
    assert_eq!(status, 200);
    assert!(plain.contains("EventSource") || plain.contains("fetch("), "the script as text");
    assert!(!head.to_lowercase().contains("content-encoding"), "{head}");
    let gzip = [("accept-encoding", "gzip, deflate, br")];
    let (status, head, packed) = try_http_full(addr, "GET", "/app.js", &gzip, b"").await.expect("answers");
    assert_eq!(status, 200);
    let head = head.to_lowercase();
    assert!(head.contains("content-encoding: gzip") && head.contains("vary: accept-encoding"), "{head}");
    let length = |head: &str| -> usize {
        let line = head.lines().find_map(|l| l.strip_prefix("content-length:")).expect("a length");
        line.trim().parse().expect("a number")
    };
    assert!(length(&head) < plain.len() / 2, "compressed: {} of {} bytes", length(&head), plain.len());
    assert!(!packed.contains("fetch("), "not the text");
    let (status, _) = c.call("GET", "/api/v1/nothing-here", Some(READ), "").await;
    assert_eq!(status, 404);
    documented.remove("GET /api/v1/openapi.json");
    assert_eq!(c.asked, documented, "every documented operation is exercised here");
    // No answer holds a secret: neither token, nor a sink's URL or header.
    for secret in [READ, WRITE, "url-secret-0123", "sink-secret-4567"] {
        assert!(!c.answers.contains(secret), "`{secret}` is in an answer");
    }
    assert!(c.answers.len() > 10_000, "the answers were kept: {} bytes", c.answers.len());
    agent.stop().await;
}

/// Schemathesis: every operation, with generated valid and invalid input, checked against
/// the document (no 5xx, documented statuses and bodies, invalid input and missing tokens
/// refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_every_answer_as_documented_and_no_server_error() {
    if !schemathesis::available() {
        return;
    }
    let broker = Broker::embedded();
    let (agent, addr, _tokens) = start(&broker).await;
    let mut sensor = Publisher::connect(broker.addr(), "sensor").await;
    for (device, t) in [("t-1", 90), ("t-2", 20), ("t-3", 85)] {
        sensor.publish(&format!("sensors/{device}/temperature"), format!(r#"{{"temperature": {t}}}"#)).await;
    }
    sensor.publish("strict/t-1", "not json").await;
    agent.wait_for_stats("the dead letter", |s| s.dead_letters == 1).await;
    let base = format!("http://{addr}");
    let bearer = format!("Bearer {WRITE}");
    let result = tokio::task::spawn_blocking(move || schemathesis::run(&base, &[("Authorization", &bearer)], 40))
        .await
        .expect("runs");
    if let Err(report) = result {
        panic!("schemathesis found problems:\n{report}");
    }
    agent.stop().await;
}

/// The page in headless Chromium: a device turning missing, a broken rule's position, a new
/// event, a chart with points, an acknowledgement refused then accepted; and the screenshot
/// the README shows (saved to `target/console.png`; `EDGEWATCH_SCREENSHOT` names another path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sees_devices_go_missing_rules_break_events_arrive_and_acknowledges_an_alarm() {
    if !edgewatch_e2e::browser::available() {
        return;
    }
    let broker = Broker::embedded();
    let (agent, addr, _tokens) = start(&broker).await;
    let mut sensor = Publisher::connect(broker.addr(), "sensor").await;
    for key in ["t-1", "t-2", "t-4", "t-5"] {
        sensor.publish(&format!("sensors/{key}/temperature"), r#"{"temperature": 90}"#).await;
    }
    let mut c = Console { addr, asked: BTreeSet::new(), answers: String::new() };
    c.wait("/api/v1/alarms", "/api/v1/alarms", "t-1's alarm", |a| {
        a["alarms"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    std::fs::write(agent.dir.path().join("rules/hot.rhai"), BROKEN).expect("edits");
    assert_eq!(c.post("/api/v1/reload", "/api/v1/reload", Some(WRITE), "").await.0, 202);
    // t-1 (hot), t-4 and t-5 keep talking (t-2 falls silent); t-3 runs hot and cool: new events.
    let talk = tokio::spawn(async move {
        for i in 0u32.. {
            for (key, base) in [("t-1", 85), ("t-4", 20), ("t-5", 40)] {
                sensor
                    .publish(&format!("sensors/{key}/temperature"), format!(r#"{{"temperature": {}}}"#, base + i % 10))
                    .await;
            }
            let t3 = if i % 2 == 0 { 95 } else { 50 };
            sensor.publish("sensors/t-3/temperature", format!(r#"{{"temperature": {t3}}}"#)).await;
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    });
    let screenshot = std::env::var("EDGEWATCH_SCREENSHOT").unwrap_or_else(|_| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console.png").display().to_string()
    });
    let env = [
        ("CONSOLE_URL", format!("http://{addr}/")),
        ("READ_TOKEN", READ.to_owned()),
        ("WRITE_TOKEN", WRITE.to_owned()),
        ("SCREENSHOT", screenshot.clone()),
    ];
    let result =
        tokio::task::spawn_blocking(move || edgewatch_e2e::browser::run("console.mjs", &env)).await.expect("runs");
    talk.abort();
    let report = result.unwrap_or_else(|report| panic!("the browser did not see it:\n{report}"));
    assert!(report["passed"].as_array().is_some_and(|p| p.len() >= 10), "{report}");
    assert!(std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 10_000), "a screenshot at {screenshot}");
    agent.stop().await;
}

/// HTTPS: the console serves its page and API over TLS with the configured certificate, a
/// client that trusts the CA reads them, and plain HTTP on that port gets no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_speaks_https_with_the_configured_certificate() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let broker = Broker::embedded();
    let pki = tempfile::tempdir().expect("temp dir");
    let ca = edgewatch_e2e::pki::Ca::new(pki.path(), "console-ca");
    let server = ca.server("console");
    let addr = edgewatch::broker::free_port().expect("port");
    let cfg = agent(broker.addr(), "3.1.1")
        .set("console.listen", addr)
        .set("console.tls_cert_file", &server.cert)
        .set("console.tls_key_file", &server.key)
        .to_string();
    let agent = RunningAgent::start(&cfg, &[("alive.rhai", ALIVE)]).await;
    let client =
        edgewatch::tls::TlsFiles { ca_file: Some(ca.cert.clone()), client_auth: None }.load().expect("client TLS");
    let connector = tokio_rustls::TlsConnector::from(client.rustls.clone());
    let get = |path: &'static str| {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connects");
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("a name");
            let mut tls = connector.connect(name, tcp).await.expect("the handshake succeeds with the CA");
            let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
            tls.write_all(req.as_bytes()).await.expect("writes");
            let mut answer = Vec::new();
            let _ = tls.read_to_end(&mut answer).await;
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    let rules = get("/api/v1/rules").await;
    assert!(rules.starts_with("HTTP/1.0 200") && rules.contains("\"alive\""), "{rules}");
    assert!(get("/").await.contains("Edgewatch console"));
    // Plain HTTP to the TLS port: no HTTP answer.
    let plain = edgewatch_e2e::try_http_get(addr, "/api/v1/rules").await;
    assert!(!matches!(plain, Ok((200, _))), "{plain:?}");
    agent.stop().await;
}
