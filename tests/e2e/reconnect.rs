//! A broker that is down at start is retried with backoff, not a crash or a hot loop.

use crate::{OVERHEAT, agent, config};
use edgewatch::broker::{EmbeddedBroker, free_port};
use edgewatch_e2e::{Publisher, RunningAgent, Subscriber};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_at_start_is_retried_until_it_comes_up() {
    let v4 = free_port().expect("port");
    let v5 = free_port().expect("port");
    let agent = RunningAgent::spawn(&config(v4, "3.1.1"), &[("overheat.rhai", OVERHEAT)]).await;
    agent.wait_for_stats("connection failures", |s| s.failed_attempts >= 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let snapshot = agent.stats.snapshot();
    let failures = snapshot.failed_attempts;
    assert_eq!(snapshot.disconnects, 0, "never connected, so never disconnected: {snapshot}");
    // Two connections retrying from 200 ms with doubling delays: a handful of attempts, not
    // the thousands a retry loop without backoff would make.
    assert!(failures < 40, "{failures} connection attempts in about a second: no backoff?");

    let broker =
        tokio::task::spawn_blocking(move || EmbeddedBroker::start_on(v4, v5)).await.expect("join").expect("broker");
    agent.wait_ready().await;
    let mut upstream = Subscriber::connect(broker.v4, "cloud", "edgewatch/gw-test/events/#").await;
    let mut sensor = Publisher::connect(broker.v4, "sensor").await;
    sensor.publish("sensors/t-05/temperature", "88").await;
    assert_eq!(upstream.next().await.json()["subject"], "t-05");
    agent.stop().await;
}

/// Issue 14: a broker that accepts each connection (CONNACK) and drops it at once got a
/// reconnect about every 100 ms, for ever, because each CONNACK reset the backoff. The delay
/// must keep growing until a connection has stayed up for a while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_accepts_then_drops_each_connection_is_not_hammered() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let broker = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                // Reads the CONNECT, accepts it (CONNACK, session not present), and hangs up.
                if socket.read(&mut buf).await.unwrap_or(0) > 0 {
                    let _ = socket.write_all(&[0x20, 0x02, 0x00, 0x00]).await;
                }
            });
        }
    });
    let agent = RunningAgent::spawn(&config(addr, "3.1.1"), &[("overheat.rhai", OVERHEAT)]).await;
    agent.wait_for_stats("the first dropped connections", |s| s.disconnects >= 2).await;
    let before = accepted.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = accepted.load(Ordering::SeqCst) - before;
    // Two connections (source and upstream), each from 200 ms doubling to 400, 800, 1600,
    // 3200 ms: a handful of connections in 4 s. Resetting on each CONNACK made about 40. A
    // slow machine only makes fewer.
    assert!(during <= 16, "{during} connections accepted in 4 s: the backoff was reset by each CONNACK");
    assert!(during >= 1, "the agent keeps trying");
    agent.stop().await;
    broker.abort();
}

/// Durability off (`state.durable = false`): events flow as with the durable outbox, and
/// through an upstream outage the in-memory outbox holds at most `state.max_outbox_mb`,
/// dropping the oldest events and saying so upstream when the link returns (issue 15: it
/// used to grow without bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_memory_outbox_is_bounded_through_an_upstream_outage() {
    use std::sync::atomic::Ordering::Relaxed;
    const READINGS: usize = 4000;
    let source = edgewatch_e2e::Broker::embedded();
    let (up_v4, up_v5) = (free_port().expect("port"), free_port().expect("port"));
    let toml = agent(source.addr(), "3.1.1")
        .set("state.durable", false)
        .set("state.max_outbox_mb", 1)
        .set("upstream.broker.url", format!("mqtt://{up_v4}"))
        .set("upstream.broker.reconnect_min", Duration::from_secs(2))
        .set("upstream.broker.reconnect_max", Duration::from_secs(2))
        .to_string();
    let agent = RunningAgent::spawn(&toml, &[("overheat.rhai", OVERHEAT)]).await;
    let mut sensor = Publisher::connect(source.addr(), "sensor").await;
    // Subscribed to the sensors before the readings: the source side is up on its own.
    agent.wait_source_subscribed().await;
    for i in 0..READINGS {
        sensor.publish_no_wait(&format!("sensors/t-{:04}/temperature", i % 500), "99");
    }
    sensor.wait_acks(READINGS).await;
    let s = agent.wait_for_stats("every reading processed", |s| s.events as usize == READINGS).await;
    // About 450 bytes an event: 1 MiB holds some 2 300 of the 4 000.
    let dropped = agent.stats.outbox_dropped.load(Relaxed);
    assert!(dropped > 0 && (dropped as usize) < READINGS, "{dropped} dropped of {READINGS}; {s}");

    let upstream =
        tokio::task::spawn_blocking(move || EmbeddedBroker::start_on(up_v4, up_v5)).await.expect("join").expect("up");
    let mut cloud = Subscriber::connect(upstream.v4, "cloud", "edgewatch/gw-test/#").await;
    // Delivery is at least once: count distinct events.
    let mut events = std::collections::HashSet::new();
    let report = loop {
        let m = cloud.next().await;
        if m.topic.ends_with("/agent/events") {
            let ev = m.json();
            if ev["type"] == "edgewatch.agent.dropped" {
                break ev;
            }
        } else if m.topic.contains("/events/") {
            events.insert(m.json()["id"].as_str().unwrap_or_default().to_owned());
        }
    };
    // Every drop in one report: those of the outage, and any the `online` status (queued on
    // reconnecting, into the full outbox) caused.
    assert_eq!(report["data"]["dropped"], agent.stats.outbox_dropped.load(Relaxed), "{report}");
    let arrived = events.len();
    assert!(arrived <= READINGS - dropped as usize, "{arrived} distinct events arrived, {dropped} were dropped");
    agent.stop().await;
}
