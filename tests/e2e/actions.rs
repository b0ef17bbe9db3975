//! Rules that act: actions delivered to a real HTTP server (the webhook receiver of
//! `edgewatch_e2e::webhook`) and published as device commands on a real broker.

use crate::agent;
use edgewatch_e2e::{Broker, Publisher, Reply, RunningAgent, Subscriber, TomlValue, WAIT, Webhook, wait_metric};
use std::collections::BTreeMap;
use std::time::Duration;

const PAGED: &str = r#"
rule("hot", #{
    on: "strict/{device}/t",
    when: |e| e.payload.v > 80,
    clear: |e| e.payload.v < 75,
    notify: "pager",
});
"#;

/// Sends one hot reading (an event) for each device, in this order.
async fn heat(sensor: &mut Publisher, devices: &[&str]) {
    for d in devices {
        sensor.publish(&format!("strict/{d}/t"), r#"{"v": 90}"#).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gets_every_action_in_order_once_per_key_through_errors_and_retry_after() {
    let broker = Broker::embedded();
    let hook = Webhook::start().await;
    // Two server errors, then "come back in a second", then all is well.
    hook.script([Reply::status(503), Reply::status(500), Reply::retry_after(429, "1")]);
    let metrics = edgewatch::broker::free_port().expect("port");
    let cfg = agent(broker.addr(), "3.1.1")
        .set("agent.metrics_listen", metrics)
        .sink(
            "pager",
            "http",
            &[
                ("url", hook.url("/hook").into()),
                ("headers", TomlValue::raw(r#"{ Authorization = "Bearer s3cret" }"#)),
                ("retry", TomlValue::raw(r#"{ min_wait = "50ms", max_wait = "200ms" }"#)),
            ],
        )
        .to_string();
    let agent = RunningAgent::start(&cfg, &[("hot.rhai", PAGED)]).await;
    let mut sensor = Publisher::connect(broker.addr(), "sensor").await;
    heat(&mut sensor, &["t-1", "t-2", "t-3"]).await;

    let seen =
        hook.wait_for("three actions accepted", WAIT, |r| r.iter().filter(|r| r.answered == 200).count() == 3).await;
    // Every attempt at one action carries the same key; each action has its own.
    let mut by_key: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    for r in &seen {
        by_key.entry(r.key.clone().expect("Idempotency-Key")).or_default().push(r.answered);
    }
    assert_eq!(by_key.len(), 3, "{by_key:?}");
    assert!(by_key.values().all(|answers| answers.iter().filter(|a| **a == 200).count() == 1), "{by_key:?}");
    // The first action took every failure (in order: one action at a time), then went.
    assert_eq!(seen.iter().map(|r| r.answered).collect::<Vec<_>>(), [503, 500, 429, 200, 200, 200]);
    let subjects: Vec<&str> =
        seen.iter().filter(|r| r.answered == 200).map(|r| r.body["subject"].as_str().unwrap_or("?")).collect();
    assert_eq!(subjects, ["t-1", "t-2", "t-3"], "in the order the events happened");
    // Retry-After: 1 was honoured.
    assert!(seen[3].at.duration_since(seen[2].at) >= Duration::from_millis(950), "{:?}", seen[3].at - seen[2].at);
    // The CloudEvents HTTP binding, structured mode; the configured header sent as it is.
    let first = &seen[0];
    assert_eq!(first.content_type.as_deref(), Some("application/cloudevents+json"));
    assert_eq!((first.body["specversion"].as_str(), first.body["type"].as_str()), (Some("1.0"), Some("edgewatch.hot")));
    assert_eq!(first.path, "/hook");
    assert!(first.headers.iter().any(|(k, v)| k == "authorization" && v == "Bearer s3cret"));
    // With its lineage, as upstream: the input that caused it, and the rule's version.
    let input = edgewatch_engine::EventId::from_content("strict/t-1/t", br#"{"v": 90}"#).0;
    let causes = edgewatch_engine::Causes::decode(first.body["edgewatchcauses"].as_str().unwrap_or("?"));
    assert!(causes.is_ok_and(|c| c.count == 1 && c.first[0].is(input)), "{}", first.body);
    assert!(first.body["edgewatchrule"].as_str().is_some_and(|v| v.contains("hot.rhai#")), "{}", first.body);
    wait_metric(metrics, "edgewatch_actions_sent_total{sink=\"pager\"}", WAIT, |v| v == 3.0).await;
    wait_metric(metrics, "edgewatch_actions_retried_total{sink=\"pager\"}", WAIT, |v| v == 3.0).await;
    wait_metric(metrics, "edgewatch_action_queue_depth{sink=\"pager\"}", WAIT, |v| v == 0.0).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_action_is_given_up_at_once_reported_upstream_and_the_next_goes() {
    let broker = Broker::embedded();
    let hook = Webhook::start().await;
    hook.script([Reply::status(400)]);
    let cfg = agent(broker.addr(), "3.1.1").sink("pager", "http", &[("url", hook.url("/").into())]).to_string();
    let mut upstream = Subscriber::connect(broker.addr(), "cloud", "edgewatch/gw-test/agent/events").await;
    let agent = RunningAgent::start(&cfg, &[("hot.rhai", PAGED)]).await;
    let mut sensor = Publisher::connect(broker.addr(), "sensor").await;
    heat(&mut sensor, &["t-1", "t-2"]).await;
    let seen = hook.wait_for("the second action", WAIT, |r| r.iter().any(|r| r.answered == 200)).await;
    assert_eq!(seen.iter().map(|r| r.answered).collect::<Vec<_>>(), [400, 200], "a 400 is not tried again");
    assert_eq!(hook.connections(), 1, "one connection, kept open between actions");
    let failed = loop {
        let ev = upstream.next().await.json();
        if ev["type"] == "edgewatch.agent.action_failed" {
            break ev;
        }
    };
    let data = &failed["data"];
    assert_eq!(
        (data["sink"].as_str(), data["key"].as_str(), data["rule"].as_str()),
        (Some("pager"), Some("t-1"), Some("hot"))
    );
    assert_eq!(data["event"], seen[0].body["id"], "names the event");
    assert_eq!(data["action"].as_str(), seen[0].key.as_deref(), "and the action");
    assert!(data["error"].as_str().unwrap_or("").contains("HTTP 400"), "{data}");
    agent.stop().await;
}

const COMMANDS: &str = r#"
rule("overheat", #{
    on: "strict/{device}/t",
    key: |e| e.payload.id,
    when: |e| e.payload.v > 80,
    clear: |e| e.payload.v < 75,
    act: #{ sink: "heaters", data: |ev| #{ heater: ev.subject, on: false } },
});
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_command_reaches_its_topic_and_a_hostile_id_cannot_redirect_it() {
    let broker = Broker::embedded();
    let cfg = agent(broker.addr(), "3.1.1")
        .sink("heaters", "mqtt", &[("topic", "devices/{key}/cmd".into()), ("qos", 1.into())])
        .to_string();
    let mut devices = Subscriber::connect(broker.addr(), "devices", "devices/#").await;
    let agent = RunningAgent::start(&cfg, &[("overheat.rhai", COMMANDS)]).await;
    let mut sensor = Publisher::connect(broker.addr(), "sensor").await;
    let ids = ["h-1", "h-2/../h-9", "+", "#"];
    for id in ids {
        sensor.publish("strict/x/t", serde_json::json!({ "id": id, "v": 90 }).to_string()).await;
    }
    let mut got = Vec::new();
    for _ in ids {
        let m = devices.next().await;
        got.push((m.topic.clone(), m.json()));
    }
    let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, ["devices/h-1/cmd", "devices/h-2%2F..%2Fh-9/cmd", "devices/%2B/cmd", "devices/%23/cmd"]);
    // The body the rule shaped, as it is: what a device's firmware reads.
    assert_eq!(got[0].1, serde_json::json!({ "heater": "h-1", "on": false }));
    assert_eq!(got[1].1["heater"], "h-2/../h-9", "the id itself is data, unchanged");
    assert!(devices.next_within(Duration::from_millis(300)).await.is_none(), "one command per event");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_sink_logs_and_counts_and_sends_nothing() {
    let broker = Broker::embedded();
    let hook = Webhook::start().await;
    let metrics = edgewatch::broker::free_port().expect("port");
    let cfg = agent(broker.addr(), "3.1.1")
        .set("agent.metrics_listen", metrics)
        .sink("pager", "http", &[("url", hook.url("/").into()), ("dry_run", true.into())])
        .to_string();
    let agent = RunningAgent::start(&cfg, &[("hot.rhai", PAGED)]).await;
    let mut sensor = Publisher::connect(broker.addr(), "sensor").await;
    heat(&mut sensor, &["t-1", "t-2"]).await;
    wait_metric(metrics, "edgewatch_actions_dry_run_total{sink=\"pager\"}", WAIT, |v| v == 2.0).await;
    wait_metric(metrics, "edgewatch_actions_sent_total{sink=\"pager\"}", WAIT, |v| v == 0.0).await;
    assert!(hook.requests().is_empty(), "nothing sent");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sinks_rate_limit_holds_a_burst_back_and_sends_it_later() {
    let broker = Broker::embedded();
    let hook = Webhook::start().await;
    let cfg = agent(broker.addr(), "3.1.1")
        .sink(
            "pager",
            "http",
            &[("url", hook.url("/").into()), ("rate", TomlValue::raw("{ burst = 3, per_second = 5.0 }"))],
        )
        .to_string();
    let agent = RunningAgent::start(&cfg, &[("hot.rhai", PAGED)]).await;
    let mut sensor = Publisher::connect(broker.addr(), "sensor").await;
    let devices: Vec<String> = (0..10).map(|i| format!("t-{i}")).collect();
    heat(&mut sensor, &devices.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let seen = hook.wait_for("all ten, in the end", WAIT, |r| r.len() == 10).await;
    // Three at once, then one every 200 ms: the tenth no sooner than 7 × 200 ms after the first.
    let spread = seen[9].at.duration_since(seen[0].at);
    assert!(spread >= Duration::from_millis(7 * 200 - 50), "a burst of 10 went out within {spread:?}");
    let subjects: Vec<&str> = seen.iter().map(|r| r.body["subject"].as_str().unwrap_or("?")).collect();
    assert_eq!(subjects, devices.iter().map(String::as_str).collect::<Vec<_>>(), "held back, not reordered or lost");
    agent.stop().await;
}

const RATE_LIMITED: &str = r#"
rule("hot", #{
    on: "strict/{device}/t",
    when: |e| e.payload.v > 80,
    notify: "pager",
    every: "1h",
});
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_100_detections_gives_one_page_while_every_event_goes_upstream() {
    let broker = Broker::embedded();
    let hook = Webhook::start().await;
    let cfg = agent(broker.addr(), "3.1.1").sink("pager", "http", &[("url", hook.url("/").into())]).to_string();
    let mut upstream = Subscriber::connect(broker.addr(), "cloud", "edgewatch/gw-test/events/#").await;
    let agent = RunningAgent::start(&cfg, &[("hot.rhai", RATE_LIMITED)]).await;
    let mut sensor = Publisher::connect(broker.addr(), "sensor").await;
    for i in 0..100 {
        sensor.publish("strict/t-1/t", format!(r#"{{"v": 90, "n": {i}}}"#)).await;
    }
    for _ in 0..100 {
        assert_eq!(upstream.next().await.json()["subject"], "t-1", "every event goes upstream");
    }
    hook.wait_for("the first page", WAIT, |r| !r.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hook.requests().len(), 1, "at most one page per key per hour; the rest are folded");
    agent.stop().await;
}

const ESCALATING: &str = r#"
rule("overheat", #{
    on: "strict/{device}/t",
    when: |e| e.payload.v > 80,
    clear: |e| e.payload.v < 75,
    notify: "pager",
    escalate: #{ after: "1s", to: "oncall" },
});
"#;

/// Sends an alarm command on the control topic and returns the reply.
async fn command(sensor: &mut Publisher, replies: &mut Subscriber, body: serde_json::Value) -> serde_json::Value {
    sensor.publish("edgewatch/gw-test/control/alarms", body.to_string()).await;
    replies.next().await.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledge_and_snooze_over_mqtt_through_a_restart_and_escalation_once() {
    let broker = Broker::embedded();
    let hook = Webhook::start().await;
    let cfg = agent(broker.addr(), "3.1.1")
        .set("alarms.control_topic", true)
        .sink("pager", "http", &[("url", hook.url("/pager").into())])
        .sink("oncall", "http", &[("url", hook.url("/oncall").into())])
        .to_string();
    let mut replies = Subscriber::connect(broker.addr(), "operator", "edgewatch/gw-test/control/alarms/reply").await;
    let mut transitions = Subscriber::connect(broker.addr(), "audit", "edgewatch/gw-test/alarms").await;
    let agent = RunningAgent::start(&cfg, &[("overheat.rhai", ESCALATING)]).await;
    let mut sensor = Publisher::connect(broker.addr(), "sensor").await;

    // t-3 is snoozed before anything happens, and the snooze outlives a restart.
    let reply = command(&mut sensor, &mut replies, serde_json::json!({"rule": "overheat", "key": "t-3", "action": "snooze", "for": "1h", "by": "op-7", "id": "r1"})).await;
    assert_eq!((reply["ok"].as_bool(), reply["id"].as_str()), (Some(true), Some("r1")), "{reply}");
    let snoozed = transitions.next().await.json();
    assert_eq!(
        (snoozed["type"].as_str(), snoozed["data"]["by"].as_str()),
        (Some("edgewatch.alarm.snoozed"), Some("op-7"))
    );
    let bad = command(
        &mut sensor,
        &mut replies,
        serde_json::json!({"rule": "nope", "key": "t-1", "action": "ack", "id": "r2"}),
    )
    .await;
    assert_eq!(bad["ok"], false, "{bad}");
    let agent = agent.restart().await;

    let mut upstream = Subscriber::connect(broker.addr(), "cloud", "edgewatch/gw-test/events/#").await;
    for d in ["t-1", "t-2", "t-3"] {
        sensor.publish(&format!("strict/{d}/t"), r#"{"v": 90}"#).await;
    }
    // Upstream always gets the events, with their alarm state.
    for _ in 0..3 {
        let ev = upstream.next().await.json();
        assert_eq!(ev["alarmstate"], "unacknowledged", "{ev}");
    }
    let pages = hook.wait_for("two pages", WAIT, |r| r.iter().filter(|r| r.path == "/pager").count() == 2).await;
    let paged: Vec<&str> =
        pages.iter().filter(|r| r.path == "/pager").map(|r| r.body["subject"].as_str().unwrap_or("?")).collect();
    assert_eq!(paged, ["t-1", "t-2"], "t-3 is snoozed");
    // t-1 is acknowledged at once; t-2 is not, and is escalated, once.
    let reply = command(
        &mut sensor,
        &mut replies,
        serde_json::json!({"rule": "overheat", "key": "t-1", "action": "ack", "by": "op-7"}),
    )
    .await;
    assert_eq!((reply["ok"].as_bool(), reply["alarmstate"].as_str()), (Some(true), Some("acknowledged")), "{reply}");
    hook.wait_for("an escalation", WAIT, |r| r.iter().any(|r| r.path == "/oncall")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let oncall: Vec<_> = hook.requests().into_iter().filter(|r| r.path == "/oncall").collect();
    assert_eq!(oncall.len(), 1, "one level, sent once: {oncall:#?}");
    assert_eq!(oncall[0].body["subject"], "t-2");
    let pages: Vec<_> = hook.requests().into_iter().filter(|r| r.path == "/pager").collect();
    assert_eq!(pages.len(), 2, "no page for the snoozed t-3, even after the restart");
    // Each send has its own key: the escalation's differs from the first page's.
    assert_ne!(oncall[0].key, pages[1].key);
    // The audit trail (issue 20): every command, applied or refused, as sent and with what
    // came of it, across the restart.
    let audit = edgewatch::audit::read(&edgewatch::audit::dir_in(&agent.dir.path().join("state")), i64::MIN)
        .expect("the audit trail reads");
    let commands: Vec<_> = audit
        .iter()
        .filter(|e| e.kind == "alarm_command")
        .map(|e| {
            let c = &e.data["command"];
            (c["action"].as_str(), c["key"].as_str(), c["by"].as_str(), e.data["outcome"]["ok"].as_bool())
        })
        .collect();
    assert_eq!(
        commands,
        [
            (Some("snooze"), Some("t-3"), Some("op-7"), Some(true)),
            (Some("ack"), Some("t-1"), None, Some(false)),
            (Some("ack"), Some("t-1"), Some("op-7"), Some(true)),
        ],
        "{audit:#?}"
    );
    assert_eq!(audit.iter().filter(|e| e.kind == "start").count(), 2, "a start before and after the restart");
    agent.stop().await;
}

const HUBS: &str = r#"
rule("hub-offline", #{ on: "other/{device}/hb", heartbeat: #{ timeout: "2s" }, notify: "pager" });
rule("offline", #{
    on: "sensors/{device}/t",
    heartbeat: #{ timeout: "1s" },
    notify: "pager",
    inhibit: #{ by: "hub-offline", parent: "devices.hub", hold: "4s" },
});
"#;

/// Who the webhook was told about so far, as `rule/key/status`.
fn told(hook: &Webhook) -> Vec<String> {
    hook.requests()
        .iter()
        .map(|r| {
            let ty = r.body["type"].as_str().unwrap_or("?").trim_start_matches("edgewatch.");
            format!(
                "{ty}/{}/{}",
                r.body["subject"].as_str().unwrap_or("?"),
                r.body["data"]["status"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dark_hub_with_20_sensors_is_one_page_and_back_with_2_dead_it_is_2_pages() {
    let broker = Broker::embedded();
    let hook = Webhook::start().await;
    let cfg = agent(broker.addr(), "3.1.1")
        .set("alarms.control_topic", true)
        .sink("pager", "http", &[("url", hook.url("/pager").into())])
        .to_string();
    let sensors: Vec<String> = (1..=20).map(|i| format!("s-{i:02}")).collect();
    let mut table = "device,hub\n".to_owned();
    for s in &sensors {
        table.push_str(&format!("{s},hub-2\n"));
    }
    let mut transitions = Subscriber::connect(broker.addr(), "audit", "edgewatch/gw-test/alarms").await;
    let agent = RunningAgent::start(&cfg, &[("hubs.rhai", HUBS), ("tables/devices.csv", &table)]).await;
    let mut fleet = Publisher::connect(broker.addr(), "fleet").await;
    fleet.publish("other/hub-2/hb", "1").await;
    for s in &sensors {
        fleet.publish(&format!("sensors/{s}/t"), "20").await;
    }
    // Then the hub goes dark, and its sensors with it: they time out first, the hub within
    // their hold. Twenty notifications are inhibited; one page, the hub's.
    let mut inhibited = 0;
    while inhibited < 20 {
        let t = transitions.next().await.json();
        if t["type"] == "edgewatch.alarm.inhibited" {
            assert_eq!(t["data"]["cause"], "hub-offline/hub-2", "{t}");
            inhibited += 1;
        }
    }
    assert_eq!(told(&hook), ["hub-offline/hub-2/missing"]);
    // The hub comes back with 18 of its sensors; s-07 and s-13 stay dead.
    let alive: Vec<&String> = sensors.iter().filter(|s| *s != "s-07" && *s != "s-13").collect();
    let keep_alive = async {
        loop {
            fleet.publish("other/hub-2/hb", "1").await;
            for s in &alive {
                fleet.publish(&format!("sensors/{s}/t"), "20").await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let two = hook.wait_for("the 2 sensors still dead", WAIT, |r| r.iter().filter(|r| r.path == "/pager").count() >= 4);
    tokio::select! {
        _ = keep_alive => unreachable!("keeps publishing"),
        _ = two => {}
    }
    let mut pages = told(&hook);
    pages.sort();
    assert_eq!(
        pages,
        ["hub-offline/hub-2/missing", "hub-offline/hub-2/recovered", "offline/s-07/missing", "offline/s-13/missing"]
    );
    agent.stop().await;
}
