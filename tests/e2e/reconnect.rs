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
