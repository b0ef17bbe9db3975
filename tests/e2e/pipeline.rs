//! Sensor message on a real broker -> rule -> CloudEvent upstream, for every broker and
//! both protocol versions.

use crate::{OVERHEAT, agent, config};
use edgewatch_e2e::{Broker, Publisher, RunningAgent, Subscriber};
use std::net::SocketAddr;
use std::time::Duration;

/// The agent speaks `protocol` to `agent_addr`; the test's own clients use MQTT 3.1.1 on the
/// broker's 3.1.1 listener (rumqttd serves each version on its own port, one router behind).
async fn scenario(broker: &Broker, agent_addr: SocketAddr, protocol: &str) {
    let label = format!("{} / MQTT {protocol}", broker.name());
    let addr = broker.addr();
    let agent = RunningAgent::start(&config(agent_addr, protocol), &[("overheat.rhai", OVERHEAT)]).await;
    let mut upstream = Subscriber::connect(addr, &format!("cloud-{protocol}"), "edgewatch/gw-test/events/#").await;
    let mut sensor = Publisher::connect(addr, &format!("sensor-{protocol}")).await;

    // JSON object.
    sensor.publish("sensors/t-01/temperature", r#"{"temperature": 85.5}"#).await;
    let got = upstream.next().await;
    assert_eq!(got.topic, "edgewatch/gw-test/events/overheat", "{label}");
    let ev = got.json();
    assert_eq!(ev["specversion"], "1.0", "{label}");
    assert_eq!(ev["source"], "edgewatch/gw-test", "{label}");
    assert_eq!(ev["type"], "edgewatch.overheat", "{label}");
    assert_eq!(ev["subject"], "t-01", "{label}");
    assert_eq!(ev["datacontenttype"], "application/json", "{label}");
    assert_eq!(ev["data"], serde_json::json!({"device": "t-01", "celsius": 85.5}), "{label}");
    let id = ev["id"].as_str().expect("id is a string").to_owned();
    assert_eq!(id.len(), 36, "{label}: UUID-shaped id, got {id}");
    let time = ev["time"].as_str().expect("time is a string");
    let t = humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("{label}: time {time} is not RFC 3339: {e}"));
    let age = std::time::SystemTime::now().duration_since(t).unwrap_or_default();
    assert!(age < Duration::from_secs(60), "{label}: event time {time} is the arrival time");

    // A cool reading emits nothing: the next event upstream is the following hot one.
    sensor.publish("sensors/t-01/temperature", r#"{"temperature": 20.0}"#).await;
    // A plain scalar payload.
    sensor.publish("sensors/t-02/temperature", "90").await;
    let ev = upstream.next().await.json();
    assert_eq!(ev["subject"], "t-02", "{label}: the cool reading must not have fired");
    assert_eq!(ev["data"]["celsius"], 90, "{label}");

    // A postcard frame from constrained firmware.
    let msg = edgewatch_wire::Message::reading("t-03", 7, 0, &[("temperature", 95.0)]).expect("fits");
    let mut buf = [0u8; edgewatch_wire::MAX_FRAME_LEN];
    let frame = edgewatch_wire::encode(&msg, &mut buf).expect("encodes").to_vec();
    sensor.publish("sensors/t-03/temperature", frame).await;
    let ev = upstream.next().await.json();
    assert_eq!(ev["subject"], "t-03", "{label}");
    assert_eq!(ev["data"]["celsius"], 95.0, "{label}");

    // The same input again: the same id, so a consumer can deduplicate.
    sensor.publish("sensors/t-01/temperature", r#"{"temperature": 85.5}"#).await;
    let again = upstream.next().await.json();
    assert_eq!(again["id"], id.as_str(), "{label}: deterministic ids");

    let stats = agent.stop().await;
    assert_eq!(stats.received, 5, "{label}: {stats}");
    assert_eq!(stats.events, 4, "{label}: {stats}");
    assert_eq!(
        stats.acked, stats.published,
        "{label}: everything published (events, status) acknowledged before stopping; {stats}"
    );
    assert!(stats.published > stats.events, "{label}: events plus the status messages; {stats}");
    assert_eq!(stats.decode_errors + stats.rule_faults, 0, "{label}: {stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_events_arrive_upstream_as_cloudevents_mqtt_3_1_1() {
    for broker in Broker::all() {
        scenario(&broker, broker.addr(), "3.1.1").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_events_arrive_upstream_as_cloudevents_mqtt_5() {
    for broker in Broker::all() {
        scenario(&broker, broker.addr_v5(), "5").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_can_be_another_broker() {
    let Some(cloud) = Broker::mosquitto() else { return };
    let gateway = Broker::embedded();
    let text = agent(gateway.addr(), "3.1.1")
        .set("upstream.topic_prefix", "site-7/gw")
        .set("upstream.broker.url", format!("mqtt://{}", cloud.addr()))
        .to_string();
    let agent = RunningAgent::start(&text, &[("overheat.rhai", OVERHEAT)]).await;
    let mut upstream = Subscriber::connect(cloud.addr(), "cloud", "site-7/gw/events/#").await;
    let mut sensor = Publisher::connect(gateway.addr(), "sensor").await;
    sensor.publish("sensors/t-09/temperature", "81.5").await;
    let got = upstream.next().await;
    assert_eq!(got.topic, "site-7/gw/events/overheat");
    assert_eq!(got.json()["subject"], "t-09");
    agent.stop().await;
}
