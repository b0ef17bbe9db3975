//! firmware-sim drives the agent through a real broker; every injected overheat reading,
//! and nothing else, becomes an event.

use crate::{OVERHEAT, config};
use edgewatch_e2e::{Broker, RunningAgent, Subscriber};
use firmware_sim::{FaultType, Kind, RunOptions, Scenario, SimOptions, Simulation};
use std::time::Duration;

/// Six sensors t-000 .. t-005; t-002 overheats (91 °C) from 0.3 s for 0.4 s, t-004 sends one
/// malformed payload at 0.5 s.
fn fleet(format: &str) -> Scenario {
    Scenario::from_toml(&format!(
        r#"
name = "fleet"
[[groups]]
name = "fleet"
count = 6
id = "t-{{index:03}}"
format = "{format}"
reading_interval = "100ms"
heartbeat_interval = "250ms"
[[groups.channels]]
name = "temperature"
[[faults]]
fault = "overheat"
device = "t-002"
start = "300ms"
duration = "400ms"
value = 91.0
[[faults]]
fault = "malformed"
device = "t-004"
start = "500ms"
"#
    ))
    .expect("valid fleet")
}

async fn run_fleet(format: &str) {
    let broker = Broker::embedded();
    let addr = broker.addr();
    let agent = RunningAgent::start(&config(addr, "3.1.1"), &[("overheat.rhai", OVERHEAT)]).await;
    let mut upstream = Subscriber::connect(addr, "cloud", "edgewatch/gw-test/events/#").await;
    let scenario = fleet(format);
    let sim = SimOptions { duration: Some(Duration::from_millis(1200)), ..SimOptions::default() };
    // Ground truth from the same seeded schedule.
    let truth = Simulation::new(&scenario, sim.clone()).expect("valid fleet").run_to_end().expect("has an end");
    let hot = |p: &firmware_sim::Publish| p.kind == Kind::Reading && p.faults.contains(FaultType::Overheat);
    let expected_hot = truth.iter().filter_map(|e| e.publish()).filter(|p| hot(p)).count();
    assert!(expected_hot >= 3, "the scenario injects overheats");

    let opts = RunOptions { port: addr.port(), client_id: "fleet".into(), qos: 1, ..RunOptions::default() };
    let report =
        firmware_sim::run_scenario(&scenario, sim, &opts, std::future::pending()).await.expect("simulator runs");
    assert_eq!(report.stats.published as usize, truth.len());

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
    run_fleet("json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postcard_fleet_overheat_is_detected_exactly() {
    run_fleet("postcard").await;
}
