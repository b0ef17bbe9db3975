//! Sparkplug B over a real broker: an edge node's session (payloads recorded from
//! pysparkplug, `agent/tests/fixtures/sparkplug/`) through the agent, which decodes it against
//! births it keeps across a restart, asks for a rebirth when it cannot, reports deaths as
//! absence, and publishes its own STATE as a primary host application. The same with a live
//! pysparkplug edge node on Mosquitto: `interop`.

use crate::agent;
use edgewatch::sparkplug::proto::{Metric, MetricValue, Payload, datatype};
use edgewatch_e2e::{Broker, Publisher, Received, RunningAgent, Subscriber};
use prost::Message;
use std::time::Duration;

mod interop;

/// What the tests' rules report: every device's liveness, and each DDATA's two metrics.
pub const RULES: &str = r#"
rule("spb-alive", #{ on: "spBv1.0/#", heartbeat: #{ sparkplug: true } });
rule("motor", #{
    on: "spBv1.0/+/DDATA/+/+",
    when: |e| e.payload.sparkplug.type == "DDATA",
    emit: |e| #{
        speed: e.payload.metrics["Motor/Speed"],
        current: e.payload.metrics["Motor/Current"],
        changed: e.payload.changed.keys(),
        stale: e.payload.stale,
    },
});
"#;

/// The agent as a Sparkplug host application `edgewatch-test`, rebirth requests on.
pub fn host(addr: std::net::SocketAddr) -> edgewatch_e2e::AgentToml {
    agent(addr, "3.1.1")
        .subscribe_with("spBv1.0/#", &[("format", "sparkplug".into())])
        .set("sparkplug.rebirth", true)
        .set("sparkplug.host_id", "edgewatch-test")
}

/// [`host`] as TOML text.
pub fn config(addr: std::net::SocketAddr) -> String {
    host(addr).to_string()
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../agent/tests/fixtures/sparkplug/{name}.bin", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The next event of rule `rule` (on its topic), skipping others (their order between rules
/// is not fixed).
pub async fn next_of(events: &mut Subscriber, rule: &str) -> serde_json::Value {
    let topic = format!("edgewatch/gw-test/events/{rule}");
    loop {
        let ev = events.next().await;
        if ev.topic == topic {
            return ev.json();
        }
    }
}

/// The metric values of a Sparkplug payload the agent published, by name.
fn metrics_of(received: &Received) -> Vec<(String, Option<u32>, Option<MetricValue>)> {
    let p = Payload::decode(received.payload.as_slice()).expect("the agent publishes Sparkplug B");
    assert!(p.timestamp.is_some() && p.seq.is_none(), "a command has a timestamp and no seq: {p:?}");
    p.metrics.into_iter().map(|m| (m.name.unwrap_or_default(), m.datatype, m.value)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_node_is_followed_across_a_restart_asked_to_rebirth_and_its_death_is_absence() {
    let broker = Broker::embedded();
    let addr = broker.addr();
    let token = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(token.path(), "read-token-0123456789abcdef").expect("writes");
    let console = edgewatch::broker::free_port().expect("port");
    let cfg = host(addr).set("console.listen", console).set("console.read_token_file", token.path()).to_string();
    let agent = RunningAgent::start(&cfg, &[("spb.rhai", RULES)]).await;
    // What the console's API says of the motor: alive or not, and its metrics, stale or not.
    let motor = || async move {
        let auth = [("Authorization", "Bearer read-token-0123456789abcdef")];
        let (status, body) =
            edgewatch_e2e::http(console, "GET", "/api/v1/devices/plant1%2Fgw1%2Fmotor1", &auth, b"").await;
        assert_eq!(status, 200, "{body}");
        let d: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let stale: Vec<bool> =
            d["sparkplug"]["metrics"].as_array().expect("metrics").iter().map(|m| m["stale"] == true).collect();
        (d["sparkplug"]["alive"].as_bool(), stale, d["sparkplug"]["metrics"][1].clone())
    };
    let mut state = Subscriber::connect(addr, "watcher", "spBv1.0/STATE/+").await;
    let mut events = Subscriber::connect(addr, "cloud", "edgewatch/gw-test/events/#").await;
    let mut dead = Subscriber::connect(addr, "dead-letters", "edgewatch/gw-test/deadletter").await;
    let mut commands = Subscriber::connect(addr, "node-commands", "spBv1.0/plant1/NCMD/gw1").await;
    let mut node = Publisher::connect(addr, "gw1").await;

    // The primary host's STATE: retained, so a node that connects later sees it.
    let online = state.next().await;
    assert_eq!(online.topic, "spBv1.0/STATE/edgewatch-test");
    assert_eq!(online.json()["online"], true);
    assert!(online.json()["timestamp"].as_u64().is_some_and(|t| t > 1_700_000_000_000));

    for (topic, name) in [
        ("spBv1.0/plant1/NBIRTH/gw1", "nbirth"),
        ("spBv1.0/plant1/DBIRTH/gw1/motor1", "dbirth"),
        ("spBv1.0/plant1/DDATA/gw1/motor1", "ddata"),
        ("spBv1.0/plant1/DDATA/gw1/motor1", "ddata_current"),
    ] {
        node.publish(topic, fixture(name)).await;
    }
    let speed = next_of(&mut events, "motor").await;
    assert_eq!(speed["subject"], "plant1/gw1/motor1");
    assert_eq!((speed["data"]["speed"].as_f64(), speed["data"]["current"].as_f64()), (Some(1500.5), Some(0.0)));
    let current = next_of(&mut events, "motor").await;
    assert_eq!((current["data"]["speed"].as_f64(), current["data"]["current"].as_f64()), (Some(1500.5), Some(12.25)));
    assert_eq!(current["data"]["changed"], serde_json::json!(["Motor/Current"]));
    let (alive, stale, metric) = motor().await;
    assert_eq!((alive, stale), (Some(true), vec![false, false]));
    assert_eq!((metric["name"].as_str(), metric["value"].as_f64()), (Some("Motor/Current"), Some(12.25)), "{metric}");
    assert_eq!(metric["datatype"], "Float");

    // A restart keeps what the births taught: alias-only data still reads.
    let agent = agent.restart().await;
    node.publish("spBv1.0/plant1/DDATA/gw1/motor1", fixture("ddata_alias_only")).await;
    let after = next_of(&mut events, "motor").await;
    assert_eq!((after["data"]["speed"].as_f64(), after["data"]["current"].as_f64()), (Some(1501.0), Some(12.25)));

    // An alias no birth declared: dead-lettered, and the node is asked to rebirth.
    let unknown = Metric { alias: Some(99), value: Some(MetricValue::DoubleValue(1.0)), ..Metric::default() };
    let bad = Payload { timestamp: Some(1), metrics: vec![unknown], seq: Some(5) }.encode_to_vec();
    node.publish("spBv1.0/plant1/DDATA/gw1/motor1", bad.clone()).await;
    let letter = dead.next().await.json();
    assert_eq!(letter["reason"], "sparkplug_alias", "{letter}");
    let request = commands.next().await;
    let rebirth = (Some(datatype::BOOLEAN), Some(MetricValue::BooleanValue(true)));
    assert_eq!(metrics_of(&request), [("Node Control/Rebirth".to_owned(), rebirth.0, rebirth.1)]);
    // Asked once per interval, however many such messages follow.
    node.publish("spBv1.0/plant1/DDATA/gw1/motor1", bad).await;
    assert_eq!(dead.next().await.json()["reason"], "sparkplug_alias");
    assert!(commands.next_within(Duration::from_millis(500)).await.is_none(), "rate-limited");

    // The node's will: it and its device are missing at once, with reason `death`.
    node.publish("spBv1.0/plant1/NDEATH/gw1", fixture("ndeath")).await;
    let mut gone = [next_of(&mut events, "spb-alive").await, next_of(&mut events, "spb-alive").await];
    gone.sort_by_key(|e| e["subject"].as_str().map(str::len));
    for (ev, key) in gone.iter().zip(["plant1/gw1", "plant1/gw1/motor1"]) {
        assert_eq!((ev["subject"].as_str(), ev["data"]["status"].as_str()), (Some(key), Some("missing")), "{ev}");
        assert_eq!(ev["data"]["reason"], "death", "{ev}");
    }
    let (alive, stale, metric) = motor().await;
    assert_eq!((alive, stale), (Some(false), vec![true, true]), "a dead node's values are not current");
    assert_eq!(metric["value"].as_f64(), Some(12.25), "kept");
    // Born again (a new session, bdSeq 1): recovered, with the downtime.
    node.publish("spBv1.0/plant1/NBIRTH/gw1", fixture("nbirth_again")).await;
    let back = next_of(&mut events, "spb-alive").await;
    assert_eq!((back["subject"].as_str(), back["data"]["status"].as_str()), (Some("plant1/gw1"), Some("recovered")));
    assert!(back["data"]["downtime_ms"].as_i64().is_some_and(|d| d >= 0), "{back}");
    node.publish("spBv1.0/plant1/DBIRTH/gw1/motor1", fixture("dbirth_again")).await;
    let back = next_of(&mut events, "spb-alive").await;
    assert_eq!(back["subject"], "plant1/gw1/motor1");
    assert_eq!(back["data"]["status"], "recovered");
    assert_eq!(motor().await.0, Some(true));

    assert_eq!(agent.stats.sparkplug_rebirths.load(std::sync::atomic::Ordering::Relaxed), 1);
    agent.stop().await;
    // A clean stop says `offline` (the will would, after a crash).
    let mut last = state.next().await.json();
    while last["online"] == true {
        last = state.next().await.json();
    }
    assert_eq!(
        (last["online"].as_bool(), last["timestamp"].as_u64()),
        (Some(false), online.json()["timestamp"].as_u64())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seq_gap_not_healed_by_a_birth_asks_for_a_rebirth_after_the_reorder_timeout() {
    let broker = Broker::embedded();
    let addr = broker.addr();
    let config = host(addr).set("sparkplug.reorder_timeout", "300ms").to_string();
    let agent = RunningAgent::start(&config, &[("spb.rhai", RULES)]).await;
    let mut commands = Subscriber::connect(addr, "node-commands", "spBv1.0/plant1/NCMD/+").await;
    let mut node = Publisher::connect(addr, "gw").await;
    let ndata = |seq: u64| Payload { timestamp: Some(1), metrics: vec![], seq: Some(seq) }.encode_to_vec();
    for n in ["gw2", "gw3"] {
        node.publish(&format!("spBv1.0/plant1/NBIRTH/{n}"), fixture("nbirth")).await;
        // seq 1 was lost.
        node.publish(&format!("spBv1.0/plant1/NDATA/{n}"), ndata(2)).await;
    }
    // gw3 is born again within the timeout: nothing to ask of it.
    node.publish("spBv1.0/plant1/NBIRTH/gw3", fixture("nbirth")).await;
    let request = commands.next().await;
    assert_eq!(request.topic, "spBv1.0/plant1/NCMD/gw2");
    assert_eq!(metrics_of(&request)[0].0, "Node Control/Rebirth");
    assert!(commands.next_within(Duration::from_millis(700)).await.is_none(), "gw3 was born again");
    assert_eq!(agent.stats.sparkplug_seq_gaps.load(std::sync::atomic::Ordering::Relaxed), 2);
    agent.stop().await;
}

/// firmware-sim's Sparkplug edge nodes, one fault each, against the agent: what the agent
/// reports is what the simulator's ground truth says a host application should.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_fleets_faults_are_reported_as_its_ground_truth_says() {
    use firmware_sim::sparkplug::{Fault, live};
    let broker = Broker::embedded();
    let addr = broker.addr();
    let cfg = host(addr).set("sparkplug.reorder_timeout", "300ms").to_string();
    let agent = RunningAgent::start(&cfg, &[("spb.rhai", RULES)]).await;
    let mut events = Subscriber::connect(addr, "cloud", "edgewatch/gw-test/events/spb-alive").await;
    let mut dead = Subscriber::connect(addr, "dead-letters", "edgewatch/gw-test/deadletter").await;
    let second = Duration::from_secs(1);
    let fleet = live::Fleet {
        group: "sim".into(),
        nodes: 4,
        devices: 2,
        metrics: vec!["Temperature".into(), "Pressure".into()],
        interval: Duration::from_millis(200),
        down: second,
        faults: [Fault::UnknownAlias, Fault::Kill, Fault::SeqGap, Fault::BdSeqMismatch]
            .into_iter()
            .enumerate()
            .map(|(node, fault)| live::Injected { at: second, node, fault })
            .collect(),
    };
    let ip = addr.ip().to_string();
    let run = tokio::spawn(async move {
        live::run(&fleet, (&ip, addr.port()), Duration::from_secs(4), std::future::pending()).await
    });
    let report = run.await.expect("joins").expect("the fleet ran");
    let expect: Vec<(&str, &str)> = report.truth.iter().map(|t| (t.node.as_str(), t.expect)).collect();
    assert_eq!(expect.len(), 4, "{:?}", report.truth);
    assert!(expect.contains(&("sim/gw-000", "refused")) && expect.contains(&("sim/gw-001", "death")));
    assert!(expect.contains(&("sim/gw-002", "gap")) && expect.contains(&("sim/gw-003", "ignored")));

    // What the heartbeat rule said of each node and device, in order.
    let mut said: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    while let Some(ev) = events.next_within(Duration::from_millis(500)).await {
        let ev = ev.json();
        let status =
            format!("{}:{}", ev["data"]["status"].as_str().unwrap_or("?"), ev["data"]["reason"].as_str().unwrap_or(""));
        said.entry(ev["subject"].as_str().unwrap_or("?").to_owned()).or_default().push(status);
    }
    // Every node says goodbye at the end (a clean NDEATH: one `missing` each). Before that, the
    // killed node and its devices died and came back with their births; the goodbye with
    // another session's bdSeq was ignored, so that node, like the others, died only at the end.
    let died_at_the_end = ["missing:death"];
    let killed = ["missing:death", "recovered:", "missing:death"];
    for node in 0..4 {
        for device in [None, Some(0), Some(1)] {
            let key = match device {
                None => format!("sim/gw-{node:03}"),
                Some(d) => format!("sim/gw-{node:03}/dev-{d:02}"),
            };
            let got: Vec<&str> = said.get(&key).map(|s| s.iter().map(String::as_str).collect()).unwrap_or_default();
            let want: &[&str] = if node == 1 { &killed } else { &died_at_the_end };
            assert_eq!(got, want, "{key}: {said:?}");
        }
    }
    // The unknown alias was refused, and the rebirth it asked for answered; the gap asked for one too.
    let letter = dead.next().await.json();
    assert_eq!(
        (letter["reason"].as_str(), letter["topic"].as_str()),
        (Some("sparkplug_alias"), Some("spBv1.0/sim/DDATA/gw-000/dev-00"))
    );
    assert!(report.rebirths >= 2, "answered: {}", report.rebirths);
    assert!(agent.stats.sparkplug_seq_gaps.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert!(agent.stats.sparkplug_ignored.load(std::sync::atomic::Ordering::Relaxed) >= 1, "the mismatched NDEATH");
    agent.stop().await;
}
