//! `/metrics` and `/healthz` of a running agent, against a real broker.

use crate::{OVERHEAT, agent};
use edgewatch_e2e::{Broker, Publisher, RunningAgent, Subscriber, http_get, metric};

/// The usual agent on `addr`, serving `/metrics` and `/healthz` on `listen`.
fn with_metrics(addr: std::net::SocketAddr, listen: std::net::SocketAddr) -> String {
    agent(addr, "3.1.1").set("agent.metrics_listen", listen).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened_and_health_says_ready() {
    let broker = Broker::embedded();
    let listen = edgewatch::broker::free_port().expect("port");
    let beat = r#"rule("beat", #{ on: "sensors/{device}/heartbeat", heartbeat: #{ timeout: "1h" } });"#;
    let agent =
        RunningAgent::start(&with_metrics(broker.addr(), listen), &[("o.rhai", OVERHEAT), ("beat.rhai", beat)]).await;
    let mut upstream = Subscriber::connect(broker.addr(), "cloud", "edgewatch/gw-test/events/#").await;
    let mut sensor = Publisher::connect(broker.addr(), "sensor").await;

    let (code, body) = http_get(listen, "/healthz").await;
    assert_eq!(code, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("health is JSON");
    assert_eq!(health["status"], "ready");
    assert_eq!(health["rules"], 2);
    assert_eq!(health["source"]["connection"]["connected"], true);

    sensor.publish("sensors/t-1/temperature", "91").await;
    sensor.publish("sensors/t-1/temperature", "20").await;
    sensor.publish("strict/t-1/temperature", "{not json").await;
    for device in ["h-1", "h-2", "h-3"] {
        sensor.publish(&format!("sensors/{device}/heartbeat"), "1").await;
    }
    upstream.next().await;
    agent.wait_for_stats("six messages", |s| s.processed + s.decode_errors >= 6).await;
    // Keys per rule are refreshed once a second: wait for the three devices to show, for
    // the uptime (whole seconds) to tick, and for upstream to acknowledge all that was sent.
    let keys = r#"edgewatch_tracked_keys{rule="beat"}"#;
    let settled = |page: &str| {
        metric(page, keys) == Some(3.0)
            && metric(page, "edgewatch_uptime_seconds").is_some_and(|s| s >= 1.0)
            && metric(page, "edgewatch_outbox_events") == Some(0.0)
            && metric(page, "edgewatch_events_acked_total") == metric(page, "edgewatch_events_published_total")
    };
    let page = tokio::time::timeout(edgewatch_e2e::WAIT, async {
        loop {
            let (_, page) = http_get(listen, "/metrics").await;
            if settled(&page) {
                return page;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("three heartbeat keys tracked, uptime counting, everything acknowledged");
    assert!(page.contains(keys));

    let (code, page) = http_get(listen, "/metrics").await;
    assert_eq!(code, 200);
    let m = |s: &str| metric(&page, s).unwrap_or_else(|| panic!("`{s}` missing from\n{page}"));
    assert_eq!(m(r#"edgewatch_messages_received_total{subscription="sensors/#"}"#), 5.0);
    assert_eq!(m(r#"edgewatch_messages_received_total{subscription="strict/#"}"#), 1.0);
    assert_eq!(m(r#"edgewatch_decode_errors_total{reason="json"}"#), 1.0);
    // Five decoded (two readings, three heartbeats), one dead-lettered, nothing else.
    assert_eq!(m("edgewatch_messages_processed_total"), 5.0);
    assert_eq!(m("edgewatch_dead_letters_total"), 1.0);
    assert_eq!(m("edgewatch_messages_unmatched_total"), 0.0);
    assert_eq!(m("edgewatch_duplicates_total"), 0.0);
    assert_eq!(m("edgewatch_late_total"), 0.0);
    assert_eq!(m(r#"edgewatch_events_total{rule="overheat"}"#), 1.0);
    assert_eq!(m(r#"edgewatch_rule_errors_total{rule="overheat"}"#), 0.0);
    assert_eq!(m(r#"edgewatch_rule_disabled{rule="overheat"}"#), 0.0);
    assert_eq!(m("edgewatch_rule_file_errors_total"), 0.0);
    assert_eq!((m("edgewatch_reloads_total"), m("edgewatch_reload_errors_total")), (0.0, 0.0));
    // The event and the status messages (online, rules) went out, and all were acknowledged.
    let published = m("edgewatch_events_published_total");
    assert!(published > m(r#"edgewatch_events_total{rule="overheat"}"#), "events and status: {published}");
    assert_eq!(m("edgewatch_events_acked_total"), published);
    assert_eq!((m("edgewatch_outbox_events"), m("edgewatch_outbox_bytes")), (0.0, 0.0));
    assert_eq!(m("edgewatch_outbox_dropped_total"), 0.0);
    assert!(m("edgewatch_uptime_seconds") >= 1.0);
    assert_eq!(m("edgewatch_engine_seconds_count"), 5.0, "one engine pass per decoded message");
    assert!(m("edgewatch_commit_latency_seconds_count") >= 6.0, "every message committed");
    assert!(m("edgewatch_flush_seconds_count") >= 1.0);
    assert_eq!(m("edgewatch_rules_loaded"), 2.0);
    assert_eq!(m("edgewatch_keys_refused_total"), 0.0);
    assert_eq!(m("edgewatch_keys_evicted_total"), 0.0);
    assert_eq!(m(r#"edgewatch_connected{connection="source"}"#), 1.0);
    assert_eq!(m(r#"edgewatch_connected{connection="upstream"}"#), 1.0);
    assert!(m(r#"edgewatch_connects_total{connection="source"}"#) >= 1.0);
    assert!(m(r#"edgewatch_connects_total{connection="upstream"}"#) >= 1.0);
    assert_eq!(m(r#"edgewatch_connection_failures_total{connection="source"}"#), 0.0);
    assert_eq!(m(r#"edgewatch_connection_failures_total{connection="upstream"}"#), 0.0);
    assert!(m("edgewatch_state_disk_bytes") > 0.0, "durable state on disk");
    assert!(m("edgewatch_queue_depth") >= 0.0);
    assert!(page.contains(r#"edgewatch_build_info{version=""#), "{page}");
    assert!(page.trim_end().ends_with("# EOF"), "OpenMetrics pages end with # EOF");

    let (code, _) = http_get(listen, "/nope").await;
    assert_eq!(code, 404);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_unavailable_while_the_broker_is_unreachable() {
    // Nothing listens here.
    let dead = edgewatch::broker::free_port().expect("port");
    let listen = edgewatch::broker::free_port().expect("port");
    let agent = RunningAgent::spawn(&with_metrics(dead, listen), &[("o.rhai", OVERHEAT)]).await;
    let failures = || agent.stats.detail.connection("source").failures.load(std::sync::atomic::Ordering::Relaxed);
    agent.wait_for_stats("two failed connections", |_| failures() >= 2).await;
    let (code, body) = http_get(listen, "/healthz").await;
    assert_eq!(code, 503, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(health["status"], "not ready");
    let error = health["source"]["connection"]["last_error"].as_str().expect("the failure is reported");
    assert!(!error.is_empty());
    let (_, page) = http_get(listen, "/metrics").await;
    assert!(metric(&page, r#"edgewatch_connection_failures_total{connection="source"}"#).unwrap_or(0.0) >= 2.0);
    assert_eq!(metric(&page, r#"edgewatch_connected{connection="source"}"#), Some(0.0));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_metrics_port_refuses_to_start_and_names_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = taken.local_addr().expect("addr");
    let broker = Broker::embedded();
    let dir = tempfile::tempdir().expect("tmp");
    let text = agent(broker.addr(), "3.1.1").set("agent.metrics_listen", listen).dirs_in(dir.path()).to_string();
    std::fs::create_dir_all(dir.path().join("rules")).expect("rules dir");
    let config = edgewatch::Config::from_toml(&text, "t.toml", std::iter::empty()).expect("valid");
    let error = edgewatch::Agent::new(config).await.expect_err("port is taken").to_string();
    assert!(error.contains("agent.metrics_listen") && error.contains(&listen.to_string()), "{error}");
}

/// Issue 14: a rule whose `e.value` is `()` for every message (`{"temp": 90}` on
/// `.../temperature`: no `value` field, none named `temperature`) never fired and showed
/// nothing. Each such message is counted for the rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_reading_a_value_the_messages_do_not_have_is_counted() {
    let broker = Broker::embedded();
    let listen = edgewatch::broker::free_port().expect("port");
    let agent = RunningAgent::start(&with_metrics(broker.addr(), listen), &[("o.rhai", OVERHEAT)]).await;
    let mut status = Subscriber::connect(broker.addr(), "status-reader", "edgewatch/gw-test/status/rules").await;
    let mut sensor = Publisher::connect(broker.addr(), "sensor").await;
    sensor.publish("sensors/t-1/temperature", r#"{"temp": 90}"#).await;
    sensor.publish("sensors/t-2/temperature", r#"{"temp": 95}"#).await;
    sensor.publish("sensors/t-3/temperature", r#"{"temperature": 20}"#).await;
    agent.wait_for_stats("three messages", |s| s.processed >= 3).await;
    let sample = r#"edgewatch_rule_value_missing_total{rule="overheat"}"#;
    let n = edgewatch_e2e::wait_metric(listen, sample, edgewatch_e2e::WAIT, |v| v >= 2.0).await;
    assert_eq!(n, 2.0, "the two messages without a value, not the one with");
    // The retained rules status says so too, published again when it first happens.
    let missing = |doc: &serde_json::Value| {
        doc["rules"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == "overheat"))
            .map(|r| r["value_missing"].clone())
    };
    loop {
        let doc = status.next().await.json();
        if missing(&doc).and_then(|m| m.as_u64()).is_some_and(|m| m >= 1) {
            break;
        }
    }
    let stats = agent.stop().await;
    assert_eq!(stats.events, 0, "{stats}");
}
