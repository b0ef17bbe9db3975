//! firmware-sim drives the agent through a real broker; every injected overheat reading,
//! and nothing else, becomes an event.

use crate::{OVERHEAT, config};
use edgewatch_e2e::{Broker, RunningAgent, Subscriber};
use firmware_sim::{Fault, Fleet, FleetConfig, PayloadFormat, PublishOptions};
use std::time::Duration;

async fn run_fleet(format: PayloadFormat) {
    let broker = Broker::embedded();
    let addr = broker.addr();
    let agent = RunningAgent::start(&config(addr, "3.1.1"), &[("overheat.rhai", OVERHEAT)]).await;
    let mut upstream = Subscriber::connect(addr, "cloud", "edgewatch/gw-test/events/#").await;
    let fleet_config = FleetConfig {
        devices: 6,
        reading_interval: Duration::from_millis(100),
        heartbeat_interval: Some(Duration::from_millis(250)),
        format,
        faults: vec![
            Fault::Overheat {
                device: 2,
                start: Duration::from_millis(300),
                duration: Duration::from_millis(400),
                value: 91.0,
            },
            Fault::Malformed { device: 4, at: Duration::from_millis(500) },
        ],
        ..FleetConfig::default()
    };
    let duration = Duration::from_millis(1200);
    // Ground truth from the same seeded schedule.
    let truth = Fleet::new(fleet_config.clone()).expect("valid fleet").poll_until(duration);
    let expected_hot = truth.iter().filter(|m| m.overheated).count();
    assert!(expected_hot >= 3, "the scenario injects overheats");

    let opts =
        PublishOptions { port: addr.port(), client_id: "fleet".into(), qos: 1, duration, ..PublishOptions::default() };
    let published = firmware_sim::run(Fleet::new(fleet_config).expect("valid fleet"), opts, std::future::pending())
        .await
        .expect("simulator runs");
    assert_eq!(published.published as usize, truth.len());

    for _ in 0..expected_hot {
        let ev = upstream.next().await.json();
        assert_eq!(ev["subject"], "t-002", "only the overheating device fires: {ev}");
        assert_eq!(ev["data"]["celsius"], 91.0);
    }
    assert!(upstream.next_within(Duration::from_millis(500)).await.is_none(), "no event without a fault");
    let s = agent.wait_for_stats("every message", |s| s.received as usize == truth.len()).await;
    assert_eq!(s.decode_errors, 1, "the one malformed payload: {s}");
    assert_eq!(s.events as usize, expected_hot, "{s}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_fleet_overheat_is_detected_exactly() {
    run_fleet(PayloadFormat::Json).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postcard_fleet_overheat_is_detected_exactly() {
    run_fleet(PayloadFormat::Postcard).await;
}
