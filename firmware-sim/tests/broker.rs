//! A scenario run against a real broker (Mosquitto, when installed): what arrives is what
//! the recording says, last wills included, and the live recording and truth equal the pure
//! ones. Set `EDGEWATCH_REQUIRE_MOSQUITTO=1` to make a missing Mosquitto a failure.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgewatch_e2e::Mosquitto;
use firmware_sim::{RunOptions, Scenario, SimOptions, Simulation, record_lines, truth_lines};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::Value;

const SCENARIO: &str = r#"
duration = "4s"

[[groups]]
name = "t"
count = 3
id = "t-{index:03}"
reading_interval = "500ms"
heartbeat_interval = "1s"

[[groups]]
name = "w"
count = 2
id = "w-{number}"
format = "postcard"
reading_interval = "1s"
own_connection = true

[[groups]]
name = "doors"
kind = "door"
count = 1
id = "door-1"
cycle = "1500ms"
jitter = "200ms"
open_delay = "500ms"

[[faults]]
fault = "disconnect"
device = "w-2"
start = "1750ms"
duration = "1s"

[[faults]]
fault = "overheat"
device = "t-001"
start = "1s"
duration = "2s"
value = 90.0

[[faults]]
fault = "malformed"
device = "t-002"
start = "2s"
"#;

/// Mosquitto with an unbounded queue (the run may outpace the observer), or `None` (the
/// test skips, saying why) when it is not installed and not required.
fn broker() -> Option<Mosquitto> {
    Mosquitto::start_configured(None, None, "max_queued_messages 0")
}

type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Subscribes to everything; returns once the subscription is in place.
async fn subscribe_all(port: u16) -> (Received, tokio::task::JoinHandle<()>) {
    let mut opts = MqttOptions::new("observer", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    client.subscribe("#", QoS::AtLeastOnce).await.expect("queued");
    let received: Received = Arc::default();
    let sink = received.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let _client = client;
        let mut ready = Some(ready_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    if let Ok(mut r) = sink.lock() {
                        r.push((p.topic.clone(), p.payload.to_vec()));
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("observer lost the broker: {e}"),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(15), ready_rx).await.expect("SubAck in time").expect("observer runs");
    (received, task)
}

/// `(topic, payload bytes)` of each recording line.
fn recorded(record: &str) -> Vec<(String, Vec<u8>)> {
    record
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("JSON line");
            let topic = v["topic"].as_str().expect("topic").to_owned();
            let bytes = if let Some(p) = v.get("payload") {
                serde_json::to_vec(p).expect("serializes")
            } else if let Some(t) = v["text"].as_str() {
                t.as_bytes().to_vec()
            } else {
                let hex = v["hex"].as_str().expect("hex");
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits")).collect()
            };
            (topic, bytes)
        })
        .collect()
}

/// Normalizes JSON payloads (key order) so bytes from the wire and from the record compare.
fn normalized(list: Vec<(String, Vec<u8>)>) -> BTreeMap<(String, Vec<u8>), usize> {
    let mut out = BTreeMap::new();
    for (topic, bytes) in list {
        let bytes = match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) if v.is_object() => serde_json::to_vec(&v).unwrap_or(bytes),
            _ => bytes,
        };
        *out.entry((topic, bytes)).or_insert(0) += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_reaches_mosquitto_as_recorded() {
    let Some(broker) = broker() else { return };
    let scenario = Scenario::from_toml(SCENARIO).expect("valid");
    let sim_opts = SimOptions { seed: 9, start_ms: 1_750_000_000_000, duration: None };
    let mut pure = Simulation::new(&scenario, sim_opts.clone()).expect("builds");
    let pure_record = record_lines(&pure.run_to_end().expect("4 s"));
    let pure_truth = truth_lines(&pure.truth());

    let (received, observer) = subscribe_all(broker.addr.port()).await;
    let run = RunOptions {
        port: broker.addr.port(),
        client_id: "sim-test".into(),
        qos: 1,
        speed: 2.0,
        ..RunOptions::default()
    };
    let mut record: Vec<u8> = Vec::new();
    let sim = Simulation::new(&scenario, sim_opts).expect("builds");
    let report =
        firmware_sim::run_simulation(sim, &run, Some(&mut record), std::future::pending()).await.expect("runs");
    let record = String::from_utf8(record).expect("UTF-8");
    assert_eq!(record, pure_record, "the live recording is the pure one");
    assert_eq!(truth_lines(&report.truth), pure_truth);
    assert_eq!(report.stats.drops, 1);
    assert_eq!(report.stats.dropped, 0);

    let expected = normalized(recorded(&record));
    let total: usize = expected.values().sum();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let n = received.lock().map(|r| r.len()).unwrap_or(0);
        if n >= total || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = normalized(received.lock().map(|r| r.clone()).unwrap_or_default());
    assert_eq!(got, expected, "every recorded message, the last will included, and nothing else");
    assert!(got.contains_key(&("sensors/w-2/status".to_owned(), b"offline".to_vec())), "the broker sent the will");
    observer.abort();
}
