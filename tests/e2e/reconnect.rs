//! A broker that is down at start is retried with backoff, not a crash or a hot loop.

use crate::{OVERHEAT, config};
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
