//! A live pysparkplug edge node on Mosquitto: an implementation nobody here wrote, on the
//! broker gateways run. Its data reads with the values it sent, an alias it never declared
//! makes the agent ask for a rebirth, which it answers; its death by SIGKILL (its will) makes
//! the node and its device missing, and a new process's births recover them.

use super::{RULES, config, next_of};
use edgewatch_e2e::sparkplug::{self, EdgeNode};
use edgewatch_e2e::{Broker, RunningAgent, Subscriber};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pysparkplug_edge_node_on_mosquitto() {
    let Some(broker) = Broker::mosquitto() else { return };
    if !sparkplug::available() {
        return;
    }
    let addr = broker.addr();
    let agent = RunningAgent::start(&config(addr), &[("spb.rhai", RULES)]).await;
    let mut events = Subscriber::connect(addr, "cloud", "edgewatch/gw-test/events/#").await;
    let mut dead = Subscriber::connect(addr, "dead-letters", "edgewatch/gw-test/deadletter").await;
    let mut node = block(|| EdgeNode::start(addr));
    block(|| node.send("speed 1500.5"));
    let ev = next_of(&mut events, "motor").await;
    assert_eq!(ev["subject"], "plant1/gw1/motor1", "{ev}");
    assert_eq!((ev["data"]["speed"].as_f64(), ev["data"]["current"].as_f64()), (Some(1500.5), Some(0.0)), "{ev}");
    block(|| node.send("current 12.25"));
    let ev = next_of(&mut events, "motor").await;
    assert_eq!((ev["data"]["speed"].as_f64(), ev["data"]["current"].as_f64()), (Some(1500.5), Some(12.25)), "{ev}");
    assert_eq!(ev["data"]["changed"], serde_json::json!(["Motor/Current"]), "alias only, resolved: {ev}");

    // An alias it never declared: dead-lettered; the agent's rebirth request is answered.
    block(|| node.send("unknown"));
    assert_eq!(dead.next().await.json()["reason"], "sparkplug_alias");
    block(|| node.expect("reborn"));
    block(|| node.send("current 13.5"));
    let ev = next_of(&mut events, "motor").await;
    // The rebirth declared the node's current values (pysparkplug keeps those its API sent).
    assert_eq!((ev["data"]["speed"].as_f64(), ev["data"]["current"].as_f64()), (Some(1500.5), Some(13.5)), "{ev}");

    // SIGKILL: Mosquitto publishes its will, an NDEATH with the session's bdSeq.
    block(|| node.kill());
    let mut gone = [next_of(&mut events, "spb-alive").await, next_of(&mut events, "spb-alive").await];
    gone.sort_by_key(|e| e["subject"].as_str().map(str::len));
    for (ev, key) in gone.iter().zip(["plant1/gw1", "plant1/gw1/motor1"]) {
        assert_eq!((ev["subject"].as_str(), ev["data"]["status"].as_str()), (Some(key), Some("missing")), "{ev}");
        assert_eq!(ev["data"]["reason"], "death", "{ev}");
    }
    // A new process: new births, both recovered.
    let again = block(|| EdgeNode::start(addr));
    let mut back = [next_of(&mut events, "spb-alive").await, next_of(&mut events, "spb-alive").await];
    back.sort_by_key(|e| e["subject"].as_str().map(str::len));
    for (ev, key) in back.iter().zip(["plant1/gw1", "plant1/gw1/motor1"]) {
        assert_eq!((ev["subject"].as_str(), ev["data"]["status"].as_str()), (Some(key), Some("recovered")), "{ev}");
        assert!(ev["data"]["downtime_ms"].as_i64().is_some_and(|d| d >= 0), "{ev}");
    }
    drop(again);
    agent.stop().await;
}

/// The edge node's calls wait on its process: off the runtime's async threads.
fn block<R>(f: impl FnOnce() -> R) -> R {
    tokio::task::block_in_place(f)
}
