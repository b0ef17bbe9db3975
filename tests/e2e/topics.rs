//! A device id from a payload cannot hijack the upstream topic: with a per-key event
//! topic template, ids holding `/`, `+`, `#`, `$` or control characters stay inside their
//! one level, through a real broker.

use crate::agent;
use edgewatch_e2e::{Broker, Publisher, RunningAgent, Subscriber};

const BY_PAYLOAD_ID: &str = r#"
rule("alarm", #{
    on: "strict/{device}/alarm",
    key: |e| e.payload.id,
    when: |e| e.payload.v > 1,
});
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_device_ids_stay_in_their_topic_level() {
    let broker = Broker::embedded();
    let cfg = agent(broker.addr(), "3.1.1").set("upstream.event_topic", "alerts/{agent}/{key}/{rule}").to_string();
    let agent = RunningAgent::start(&cfg, &[("alarm.rhai", BY_PAYLOAD_ID)]).await;
    // `$` only matters at the start of a topic, so `$SYS` in the middle stays as it is.
    let mut alerts = Subscriber::connect(broker.addr(), "cloud", "alerts/#").await;
    let mut sensor = Publisher::connect(broker.addr(), "sensor").await;
    let ids = ["a/b", "+", "#", "$SYS", "../gw-other", "x\u{0}y\u{1b}z", "", "normal"];
    for id in ids {
        let payload = serde_json::json!({ "id": id, "v": 5 }).to_string();
        sensor.publish("strict/d-1/alarm", payload).await;
    }
    let mut topics = Vec::new();
    for _ in ids {
        let got = alerts.next().await;
        assert_eq!(got.json()["type"], "edgewatch.alarm");
        topics.push((got.json()["subject"].as_str().unwrap_or("?").to_owned(), got.topic));
    }
    for (subject, topic) in &topics {
        let levels: Vec<&str> = topic.split('/').collect();
        assert_eq!(levels.len(), 4, "`{subject}` gave {topic}");
        assert_eq!((levels[0], levels[1], levels[3]), ("alerts", "gw-test", "alarm"), "`{subject}` gave {topic}");
        assert!(!topic.contains(['+', '#']) && !topic.chars().any(char::is_control), "{topic}");
    }
    let topic_of = |id: &str| topics.iter().find(|(s, _)| s == id).map(|(_, t)| t.as_str()).expect("event for id");
    assert_eq!(topic_of("a/b"), "alerts/gw-test/a%2Fb/alarm");
    assert_eq!(topic_of("+"), "alerts/gw-test/%2B/alarm");
    assert_eq!(topic_of("#"), "alerts/gw-test/%23/alarm");
    assert_eq!(topic_of("../gw-other"), "alerts/gw-test/..%2Fgw-other/alarm");
    assert_eq!(topic_of(""), "alerts/gw-test/_/alarm");
    assert_eq!(topic_of("normal"), "alerts/gw-test/normal/alarm");
    agent.stop().await;
}

/// A bridge that mounts a site's sensors under `site-a/`: with `strip_prefix` the rules
/// written for `sensors/...` see the topic without it, and a second subscription without
/// the option keeps its topics as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stripped_prefix_lets_the_same_rules_read_a_mounted_tree() {
    let broker = Broker::embedded();
    let cfg = agent(broker.addr(), "3.1.1")
        .subscribe_with("site-a/sensors/#", &[("strip_prefix", "site-a/".into())])
        .to_string();
    let agent = RunningAgent::start(&cfg, &[("overheat.rhai", crate::OVERHEAT)]).await;
    let mut events = Subscriber::connect(broker.addr(), "cloud", "edgewatch/gw-test/events/#").await;
    let mut sensor = Publisher::connect(broker.addr(), "sensor").await;
    sensor.publish("site-a/sensors/t-1/temperature", "91.5").await;
    sensor.publish("sensors/t-2/temperature", "92.5").await;
    // Not stripped: no subscription with the option covers `site-b/`, and `sensors/#` does not match it.
    sensor.publish("site-b/sensors/t-3/temperature", "93.5").await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let e = events.next().await.json();
        seen.push((e["subject"].as_str().unwrap_or("?").to_owned(), e["data"]["celsius"].as_f64().unwrap_or(0.0)));
    }
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(seen, vec![("t-1".to_owned(), 91.5), ("t-2".to_owned(), 92.5)]);
    assert!(events.next_within(std::time::Duration::from_millis(500)).await.is_none());
    agent.stop().await;
}
