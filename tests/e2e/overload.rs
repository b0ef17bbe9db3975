//! Overload must slow the agent down, never stop it: a flood far beyond tiny internal
//! queues, through a broker with a large in-flight window, is processed to the last message.
//! (Regression: acks waiting on the source connection's request queue, which the source task
//! drains only while it is not itself waiting for room in the engine's queue, once closed a
//! wait cycle that stopped the agent for good.)

use crate::{OVERHEAT, agent};
use edgewatch_e2e::{Mosquitto, Publisher, RunningAgent, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_every_queue_is_processed_to_the_last_message() {
    let Some(broker) =
        Mosquitto::start_configured(None, None, "max_inflight_messages 1000\nmax_queued_messages 100000")
    else {
        return;
    };
    let cfg = agent(broker.addr, "3.1.1").set("limits.queue_capacity", 4).set("state.max_batch", 2).to_string();
    let agent = RunningAgent::start(&cfg, &[("overheat.rhai", OVERHEAT)]).await;
    let mut sensor = Publisher::connect(broker.addr, "flood").await;
    const N: u64 = 4000;
    for i in 0..N {
        sensor.publish_no_wait(&format!("sensors/t-{}/temperature", i % 50), format!("{}", 20 + i % 70));
    }
    sensor.wait_acks(N as usize).await;
    // Slow is allowed (two messages per disk flush here, on whatever disk CI has); stopping is
    // not: fail only when nothing moves for the usual wait.
    loop {
        let s = agent.stats.snapshot();
        if s.processed >= N {
            assert_eq!(s.processed, N, "{s}");
            break;
        }
        let moved = async {
            while agent.stats.snapshot().processed == s.processed {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(WAIT, moved)
            .await
            .unwrap_or_else(|_| panic!("stuck at {} of {N} messages: {s}", s.processed));
    }
    agent.stop().await;
}
