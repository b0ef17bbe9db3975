//! Bad input is counted, dead-lettered with its reason, and never stops the agent.

use crate::{OVERHEAT, agent, config};
use edgewatch_e2e::{Broker, Publisher, RunningAgent, Subscriber, TomlValue, WAIT, wait_metric};

const FRAGILE: &str = r#"
// Fails on payloads without a `limit` field.
rule("fragile", #{
    on: "sensors/{device}/pressure",
    when: |e| e.value > e.payload.limit.max,
});
"#;

const BROKEN: &str = "rule(\"broken\", #{\n    on: \"sensors/#\",\n    when: |e| e.value > ,\n});\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_unmatched_and_failing_input_is_survived() {
    for broker in Broker::all() {
        let label = broker.name();
        let addr = broker.addr();
        let rules = [("overheat.rhai", OVERHEAT), ("fragile.rhai", FRAGILE), ("broken.rhai", BROKEN)];
        let agent = RunningAgent::start(&config(addr, "3.1.1"), &rules).await;
        assert_eq!(agent.stats.snapshot().rule_file_errors, 1, "{label}: the broken file is reported, the others load");
        let mut dead = Subscriber::connect(addr, "dead-letter-reader", "edgewatch/gw-test/deadletter").await;
        let mut upstream = Subscriber::connect(addr, "cloud", "edgewatch/gw-test/events/#").await;
        let mut sensor = Publisher::connect(addr, "sensor").await;

        sensor.publish("strict/t-01/temperature", "{not json").await;
        let letter = dead.next().await.json();
        assert_eq!(letter["reason"], "json", "{label}: {letter}");
        assert_eq!(letter["topic"], "strict/t-01/temperature", "{label}");
        assert_eq!(letter["payload_prefix"], "{not json", "{label}");

        sensor.publish("sensors/t-01/temperature", vec![b'9'; 2000]).await;
        let letter = dead.next().await.json();
        assert_eq!(letter["reason"], "too_large", "{label}: {letter}");
        assert_eq!(letter["size"], 2000, "{label}");

        sensor.publish("sensors/t-01/temperature", vec![0xff, 0xfe, 0x00]).await;
        let letter = dead.next().await.json();
        assert_eq!(letter["reason"], "not_utf8", "{label}: {letter}");

        sensor.publish("other/thing", "1").await;
        sensor.publish("sensors/t-01/pressure", r#"{"pressure": 3}"#).await;

        // Still alive and still correct.
        sensor.publish("sensors/t-01/temperature", "99").await;
        let ev = upstream.next().await.json();
        assert_eq!(ev["subject"], "t-01", "{label}");

        let s = agent.wait_for_stats("the last event to be counted", |s| s.events == 1).await;
        assert_eq!((s.received, s.decode_errors, s.oversized), (6, 3, 1), "{label}: {s}");
        assert_eq!(s.dead_letters, 3, "{label}: {s}");
        assert_eq!(s.unmatched, 1, "{label}: `other/thing` matches no rule; {s}");
        assert_eq!(s.rule_faults, 1, "{label}: `fragile` failed once; {s}");
        agent.stop().await;
    }
}

/// Payloads over the depth and string limits, and of the wrong shape, are dead-lettered with
/// their own reasons and counted; the next good message is processed as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_deep_too_long_and_wrong_types_are_dead_lettered_with_their_reason() {
    for broker in Broker::all() {
        let label = broker.name();
        let addr = broker.addr();
        let toml = agent(addr, "3.1.1").set("limits.max_json_depth", 8).set("limits.max_string_bytes", 64).to_string();
        let agent = RunningAgent::start(&toml, &[("overheat.rhai", OVERHEAT)]).await;
        let mut dead = Subscriber::connect(addr, "dead-letter-reader", "edgewatch/gw-test/deadletter").await;
        let mut upstream = Subscriber::connect(addr, "cloud", "edgewatch/gw-test/events/#").await;
        let mut sensor = Publisher::connect(addr, "sensor").await;

        let deep = format!("{}85{}", r#"{"v":"#.repeat(9), "}".repeat(9));
        let long = format!(r#"{{"temperature": 85, "note": "{}"}}"#, "x".repeat(65));
        let cases: [(&str, &[u8], &str); 5] = [
            ("sensors/t-01/temperature", deep.as_bytes(), "too_deep"),
            ("sensors/t-01/temperature", long.as_bytes(), "string_too_long"),
            ("strict/t-01/temperature", b"[85, 86]", "wrong_type"),
            ("sensors/t-01/temperature", br#"{"device": 7, "temperature": 85}"#, "wrong_type"),
            ("sensors/t-01/temperature", br#"{"seq": "1", "temperature": 85}"#, "wrong_type"),
        ];
        for (topic, payload, reason) in cases {
            sensor.publish(topic, payload).await;
            let letter = dead.next().await.json();
            assert_eq!(letter["reason"], reason, "{label}: {letter}");
            assert_eq!(letter["topic"], topic, "{label}: {letter}");
            assert_eq!(letter["size"], payload.len(), "{label}: {letter}");
        }
        // Just inside the limits: an ordinary event.
        let fine = format!(
            r#"{{"temperature": 85, "note": "{}", "nested": {}1{}}}"#,
            "x".repeat(64),
            r#"{"v":"#.repeat(7),
            "}".repeat(7)
        );
        sensor.publish("sensors/t-01/temperature", fine).await;
        let ev = upstream.next().await.json();
        assert_eq!((ev["subject"].as_str(), ev["data"]["celsius"].as_i64()), (Some("t-01"), Some(85)), "{label}: {ev}");

        let s = agent.wait_for_stats("the event to be counted", |s| s.events == 1).await;
        assert_eq!((s.received, s.decode_errors, s.dead_letters, s.processed), (6, 5, 5, 1), "{label}: {s}");
        agent.stop().await;
    }
}

/// Bad postcard frames on a `format = "wire"` subscription (truncated, another version,
/// bytes after the message, JSON text where a frame belongs) are dead-lettered with reason
/// `wire` and counted by it; the next good frame is processed as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_wire_frames_are_dead_lettered_with_reason_wire() {
    const FRAMES: &str = r#"
rule("hot_frame", #{
    on: "frames/{device}/temperature",
    when: |e| e.value > 80.0,
    emit: |e| #{ device: e.device, celsius: e.value },
});
"#;
    let frame = |device: &str, seq: u32, celsius: f32| {
        let msg = edgewatch_wire::Message::reading(device, seq, 0, &[("temperature", celsius)]).expect("fits");
        let mut buf = [0u8; edgewatch_wire::MAX_FRAME_LEN];
        edgewatch_wire::encode(&msg, &mut buf).expect("encodes").to_vec()
    };
    for broker in Broker::all() {
        let label = broker.name();
        let addr = broker.addr();
        let toml = agent(addr, "3.1.1").subscribe_with("frames/#", &[("format", "wire".into())]).to_string();
        let agent = RunningAgent::start(&toml, &[("frames.rhai", FRAMES)]).await;
        let mut dead = Subscriber::connect(addr, "dead-letter-reader", "edgewatch/gw-test/deadletter").await;
        let mut upstream = Subscriber::connect(addr, "cloud", "edgewatch/gw-test/events/#").await;
        let mut sensor = Publisher::connect(addr, "sensor").await;

        let good = frame("w-1", 1, 91.0);
        let mut other_version = good.clone();
        other_version[0] = edgewatch_wire::VERSION + 1;
        let mut trailing = good.clone();
        trailing.push(0);
        let cases: [(&str, Vec<u8>, &str); 4] = [
            ("truncated", good[..good.len() - 2].to_vec(), "malformed"),
            ("another version", other_version, "version"),
            ("trailing bytes", trailing, "trailing"),
            ("JSON text", br#"{"temperature": 91}"#.to_vec(), "version"),
        ];
        for (what, payload, error) in &cases {
            sensor.publish("frames/w-1/temperature", payload.clone()).await;
            let letter = dead.next().await.json();
            assert_eq!(letter["reason"], "wire", "{label}, {what}: {letter}");
            assert_eq!(letter["topic"], "frames/w-1/temperature", "{label}, {what}: {letter}");
            assert_eq!(letter["size"], payload.len(), "{label}, {what}: {letter}");
            let message = letter["error"].as_str().unwrap_or_default();
            assert!(message.contains("wire frame") && message.contains(error), "{label}, {what}: {letter}");
        }
        // The device's next frame, well formed: an ordinary event.
        sensor.publish("frames/w-1/temperature", frame("w-1", 2, 92.5)).await;
        let ev = upstream.next().await.json();
        assert_eq!(
            (ev["subject"].as_str(), ev["data"]["celsius"].as_f64()),
            (Some("w-1"), Some(92.5)),
            "{label}: {ev}"
        );

        let s = agent.wait_for_stats("the event to be counted", |s| s.events == 1).await;
        assert_eq!((s.received, s.decode_errors, s.dead_letters, s.processed), (5, 4, 4, 1), "{label}: {s}");
        let by_reason = agent.stats.detail.decode_errors_by_reason.lock().expect("lock").clone();
        assert_eq!(by_reason.get("wire"), Some(&4), "{label}: {by_reason:?}");
        assert_eq!(by_reason.values().sum::<u64>(), 4, "{label}: only `wire`; {by_reason:?}");
        agent.stop().await;
    }
}

/// A sensor that invents a new device id per message: the rule stays within its key limit,
/// evicts the least recently seen keys, and the agent reports it once (not per message) on
/// `<prefix>/agent/events`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_new_device_ids_is_bounded_and_reported_once() {
    const HOT: &str = r#"
rule("hot", #{
    on: "sensors/{device}/temperature",
    when: |e| e.value > 80.0,
    clear: |e| e.value < 70.0,
    max_keys: 3,
});
"#;
    let broker = Broker::embedded();
    let addr = broker.addr();
    let agent = RunningAgent::start(&config(addr, "3.1.1"), &[("hot.rhai", HOT)]).await;
    // One subscriber for everything the agent publishes: what it sends in order arrives in order.
    let mut cloud = Subscriber::connect(addr, "cloud", "edgewatch/gw-test/#").await;
    let mut sensor = Publisher::connect(addr, "sensor").await;
    for i in 0..20 {
        sensor.publish(&format!("sensors/junk-{i}/temperature"), "20").await;
    }
    sensor.publish("sensors/t-01/temperature", "99").await;
    let mut reports = Vec::new();
    loop {
        let m = cloud.next().await;
        if m.topic.ends_with("/agent/events") {
            let ev = m.json();
            if ev["type"] == "edgewatch.agent.key_limit" {
                reports.push(ev);
            }
        }
        if m.topic.ends_with("/events/hot") {
            assert_eq!(m.json()["subject"], "t-01", "a new device still works");
            break;
        }
    }
    assert_eq!(reports.len(), 1, "one report per rule per interval, not one per message: {reports:?}");
    let data = &reports[0]["data"];
    assert_eq!((data["rule"].as_str(), data["max_keys"].as_u64()), (Some("hot"), Some(3)), "{data}");
    assert_eq!(data["on_full"], "evict_oldest", "{data}");
    assert_eq!(data["evicted"], 1, "the first eviction is reported at once: {data}");
    assert_eq!(agent.stats.keys_evicted.load(std::sync::atomic::Ordering::Relaxed), 18);
    agent.stop().await;
}

/// Issue 14, item 1: one 1 MB message (the agent's limit here is 1 KiB, its client's 65 KiB
/// more) used to fail the connection; at QoS 1 and 2 the persistent session redelivered it
/// on every reconnect and wedged the agent for good. It must be a dead letter: counted,
/// reported with its topic and size (the payload not kept), acknowledged, and the
/// connection stays up. Both brokers, both protocol versions, every QoS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_client_limit_is_a_dead_letter_not_a_disconnect() {
    const BIG: usize = 1_000_000;
    for protocol in ["3.1.1", "5"] {
        for broker in Broker::all() {
            let addr = if protocol == "5" { broker.addr_v5() } else { broker.addr() };
            let label = format!("{} MQTT {protocol}", broker.name());
            // The sensor topics at QoS 2, so that each QoS is delivered as published.
            let toml = agent(addr, protocol).set("subscriptions[0].qos", 2).to_string();
            let mut agent = RunningAgent::start(&toml, &[("overheat.rhai", OVERHEAT)]).await;
            let mut dead =
                Subscriber::connect(broker.addr(), "dead-letter-reader", "edgewatch/gw-test/deadletter").await;
            let mut upstream = Subscriber::connect(broker.addr(), "cloud", "edgewatch/gw-test/events/#").await;
            let mut sensor = Publisher::connect(broker.addr(), "sensor").await;
            for qos in 0..=2u8 {
                let topic = format!("sensors/big-{qos}/temperature");
                sensor.publish_qos(&topic, vec![b'9'; BIG], qos).await;
                sensor.publish_qos("sensors/t-01/temperature", "99", qos).await;
                let letter = dead.next().await.json();
                assert_eq!(letter["reason"], "too_large", "{label} QoS {qos}: {letter}");
                assert_eq!(letter["topic"], topic.as_str(), "{label} QoS {qos}");
                assert_eq!(letter["size"], BIG, "{label} QoS {qos}: the payload's size");
                assert_eq!(letter["payload_prefix"], "", "{label} QoS {qos}: the payload is not kept");
                let ev = upstream.next().await.json();
                assert_eq!(ev["subject"], "t-01", "{label} QoS {qos}: the reading after it is processed");
            }
            let s = agent.wait_for_stats("three oversized messages counted", |s| s.oversized == 3).await;
            assert_eq!((s.received, s.decode_errors, s.dead_letters, s.events), (6, 3, 3, 3), "{label}: {s}");
            assert_eq!(s.disconnects, 0, "{label}: the connection stayed up; {s}");
            // Acknowledged: a new run on the same session and state is not handed them again.
            // After the restart rumqttd resends the PUBREL of the last QoS 2 message, which the
            // new process never saw: rumqttc used to fail the connection on it, again and again.
            agent = agent.restart().await;
            sensor.publish("sensors/t-02/temperature", "99").await;
            // Events not yet acknowledged upstream at the stop go again (at least once).
            while upstream.next().await.json()["subject"] != "t-02" {}
            let s = agent.wait_for_stats("the reading after the restart", |s| s.events == 1).await;
            assert_eq!((s.received, s.oversized), (1, 0), "{label}: nothing redelivered after the restart; {s}");
            agent.stop().await;
        }
    }
}

/// A payload that breaks its subscription's schema is dead-lettered with reason `schema`, the
/// field and the expectation, counted per subscription and version, and no rule sees it; the
/// version field chooses the shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_breaks_its_schema_is_dead_lettered_with_its_field_and_rules_never_see_it() {
    let broker = Broker::embedded();
    let addr = broker.addr();
    let metrics = edgewatch::broker::free_port().expect("port");
    let field = |text: &str| TomlValue::raw(text);
    let toml = agent(addr, "3.1.1")
        .set("agent.metrics_listen", metrics)
        .set("subscriptions[1].schema", "reading")
        .set("schemas.reading.version_field", "schema_version")
        .set("schemas.reading.default_version", "1")
        .set("schemas.reading.versions.1.fields.temperature", field(r#"{ type = "number", min = -40, max = 125 }"#))
        .set("schemas.reading.versions.2.fields.celsius", field(r#"{ type = "number", min = -40, max = 125 }"#))
        .set("schemas.reading.versions.2.fields.state", field(r#"{ type = "enum", values = ["ok", "fault"] }"#))
        .to_string();
    let rule =
        r#"rule("hot", #{ on: "strict/{device}/t", when: |e| (e.payload.temperature ?? e.payload.celsius) > 80 });"#;
    let agent = RunningAgent::start(&toml, &[("hot.rhai", rule)]).await;
    let mut dead = Subscriber::connect(addr, "dead-letter-reader", "edgewatch/gw-test/deadletter").await;
    let mut upstream = Subscriber::connect(addr, "cloud", "edgewatch/gw-test/events/#").await;
    let mut sensor = Publisher::connect(addr, "sensor").await;
    let cases = [
        (r#"{"temperature": "85C"}"#, r#"temperature: expected number in [-40, 125], got "85C" (schema version 1)"#),
        (r#"{"temperature": 900}"#, "temperature: expected number in [-40, 125], got 900 (schema version 1)"),
        (
            r#"{"schema_version": 2, "celsius": 90, "state": "on"}"#,
            r#"state: expected one of "ok", "fault", got "on" (schema version 2)"#,
        ),
        (r#"{"schema_version": 7, "celsius": 90}"#, "schema_version: expected one of the versions 1, 2, got 7"),
    ];
    for (payload, error) in cases {
        sensor.publish("strict/t-01/t", payload).await;
        let letter = dead.next().await.json();
        assert_eq!((letter["reason"].as_str(), letter["error"].as_str()), (Some("schema"), Some(error)), "{letter}");
    }
    // Valid ones of both versions are events, and only they.
    sensor.publish("strict/t-01/t", r#"{"temperature": 85}"#).await;
    sensor.publish("strict/t-02/t", r#"{"schema_version": "2", "celsius": 95, "state": "fault"}"#).await;
    for subject in ["t-01", "t-02"] {
        assert_eq!(upstream.next().await.json()["subject"], subject);
    }
    let rejected = |v: &str| format!("edgewatch_schema_rejected_total{{subscription=\"strict/#\",version=\"{v}\"}}");
    wait_metric(metrics, &rejected("1"), WAIT, |n| n == 2.0).await;
    wait_metric(metrics, &rejected("2"), WAIT, |n| n == 1.0).await;
    wait_metric(metrics, &rejected(""), WAIT, |n| n == 1.0).await;
    wait_metric(metrics, "edgewatch_decode_errors_total{reason=\"schema\"}", WAIT, |n| n == 4.0).await;
    // Another subscription has no schema: anything shaped goes.
    sensor.publish("sensors/t-03/t", r#"{"temperature": "85C"}"#).await;
    let s = agent.wait_for_stats("the last message to be processed", |s| s.processed == 3).await;
    assert_eq!((s.dead_letters, s.events), (4, 2), "{s}");
    agent.stop().await;
}
