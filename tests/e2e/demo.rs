//! `edgewatch demo` on a broker shared with production (what the packages do: they have no
//! embedded broker, and the demo runs on the gateway's Mosquitto): it shows events, keeps
//! every message inside its private topic tree, and leaves nothing retained behind.

use edgewatch::demo::{DemoOptions, run};
use edgewatch_e2e::{Broker, Subscriber};
use std::time::Duration;

/// The demo on the broker at `url`, with the built-in rules.
fn on(url: &str, duration: Duration, devices: usize) -> DemoOptions {
    DemoOptions { broker: Some(url.to_owned()), duration, devices, rules: None, seed: 7, console: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_on_a_shared_broker_stays_in_its_own_topic_tree() {
    for broker in Broker::all() {
        let addr = broker.addr();
        // What an agent in production on the same broker would see: everything.
        let mut spy = Subscriber::connect(addr, "spy", "#").await;
        let opts = on(&format!("mqtt://{addr}"), Duration::from_secs(4), 5);
        let mut out = Vec::new();
        let summary = run(opts, &mut out, std::future::pending())
            .await
            .unwrap_or_else(|e| panic!("{}: demo failed: {e}", broker.name()));
        let out = String::from_utf8_lossy(&out);
        assert!(summary.received_upstream > 0, "{}: {out}", broker.name());
        assert!(out.lines().any(|l| l.contains("overheat") && l.contains("t-003")), "{}: {out}", broker.name());

        let mut trees = std::collections::BTreeSet::new();
        // The demo's cooling rule acted: the overheating device, and only it, got its fan
        // command, with the body the rule shaped.
        let devices: Vec<&str> = summary.commands.iter().map(|c| c.topic.rsplit('/').nth(1).unwrap_or("?")).collect();
        assert_eq!(devices, ["t-003"], "{}: {out}", broker.name());
        let body: serde_json::Value = serde_json::from_str(&summary.commands[0].payload).expect("JSON command");
        assert_eq!(body, serde_json::json!({ "fan": "on", "device": "t-003", "because": "overheat" }));
        assert!(out.lines().any(|l| l.contains("command to") && l.contains("t-003")), "{}: {out}", broker.name());
        let (mut sensors, mut events, mut commands) = (0, 0, 0);
        while let Some(m) = spy.next_within(Duration::from_millis(300)).await {
            let mut levels = m.topic.splitn(4, '/');
            let (root, nonce, kind) = (levels.next(), levels.next(), levels.next());
            assert_eq!(
                root,
                Some("edgewatch-demo"),
                "{}: the demo published outside its tree: {}",
                broker.name(),
                m.topic
            );
            trees.insert(nonce.unwrap_or("").to_owned());
            sensors += usize::from(kind == Some("sensors"));
            events += usize::from(kind == Some("events"));
            commands += usize::from(kind == Some("devices"));
        }
        assert_eq!(trees.len(), 1, "{}: one tree per run: {trees:?}", broker.name());
        assert!(
            sensors as u64 >= summary.published,
            "{}: {sensors} of {} readings seen",
            broker.name(),
            summary.published
        );
        assert_eq!(events as u64, summary.received_upstream, "{}", broker.name());
        assert_eq!(commands, summary.commands.len(), "{}: every command the spy saw reached the fleet", broker.name());

        // A late subscriber gets nothing retained from the demo (its status was cleared).
        let mut late = Subscriber::connect(addr, "late", "edgewatch-demo/#").await;
        if let Some(m) = late.next_within(Duration::from_secs(1)).await {
            panic!("{}: the demo left {} retained: {:?}", broker.name(), m.topic, String::from_utf8_lossy(&m.payload));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_says_when_no_broker_listens() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = free.local_addr().expect("addr");
    drop(free);
    let opts = on(&format!("mqtt://{addr}"), Duration::from_secs(1), 1);
    let error = run(opts, &mut Vec::new(), std::future::pending()).await.expect_err("nothing listens").to_string();
    assert!(error.contains(&format!("no MQTT broker at mqtt://{addr}")), "{error}");
    let opts = on("mqtts://x:1", Duration::from_secs(1), 1);
    let error = run(opts, &mut Vec::new(), std::future::pending()).await.expect_err("not plain MQTT").to_string();
    assert!(error.contains("plain mqtt://host:port"), "{error}");
}

/// The demo serves the console while it runs and says where: a first-time user watches the
/// fleet in a browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_the_console_while_it_runs() {
    let broker = Broker::embedded();
    let console = edgewatch::broker::free_port().expect("port");
    let opts =
        DemoOptions { console: Some(console), ..on(&format!("mqtt://{}", broker.addr()), Duration::from_secs(4), 5) };
    let demo = tokio::spawn(async move {
        let mut out = Vec::new();
        let summary = run(opts, &mut out, std::future::pending()).await.map(|_| ());
        (summary, String::from_utf8_lossy(&out).into_owned())
    });
    // The fleet's devices show up in the console's API while the demo runs.
    let seen = async {
        loop {
            if let Ok((200, body)) = edgewatch_e2e::try_http_get(console, "/api/v1/devices").await {
                let d: serde_json::Value = serde_json::from_str(&body).expect("JSON");
                if d["total"].as_u64() >= Some(5) {
                    return d;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let devices =
        tokio::time::timeout(Duration::from_secs(20), seen).await.expect("the console answers during the demo");
    assert!(devices["devices"][0]["key"].is_string(), "{devices}");
    let page = edgewatch_e2e::try_http_get(console, "/").await.expect("the page");
    assert!(page.0 == 200 && page.1.contains("Edgewatch console"), "{page:?}");
    let (result, out) = demo.await.expect("the demo ends");
    result.unwrap_or_else(|e| panic!("demo failed: {e}\n{out}"));
    assert!(out.contains(&format!("console: http://{console}/")), "{out}");
}
