//! A device id from a payload cannot hijack the upstream topic: with a per-key event
//! topic template, ids holding `/`, `+`, `#`, `$` or control characters stay inside their
//! one level, through a real broker.

use crate::config;
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
    let cfg = config(broker.addr(), "3.1.1")
        .replace("[limits]\n", "[upstream]\nevent_topic = \"alerts/{agent}/{key}/{rule}\"\n[limits]\n");
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
