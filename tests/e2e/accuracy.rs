//! The accuracy scenario: firmware-sim injects heartbeat losses, overheats and a forced door
//! (and noise that must not alarm) into a real broker; the agent runs the shipped rules; its
//! events are scored against the simulator's ground truth. Real time: about a minute.

use crate::config;
use edgewatch_e2e::{Broker, RunningAgent, Subscriber};
use firmware_sim::{FaultKind, RunOptions, Scenario, SimOptions};
use std::path::Path;
use std::time::Duration;

/// An event the agent must raise for a fault: rule, key, status (heartbeats), and the
/// latest acceptable time (ms since the epoch).
#[derive(Debug)]
struct Expected {
    fault: String,
    rule: &'static str,
    key: String,
    status: Option<&'static str>,
    from_ms: i64,
    by_ms: i64,
    detected_ms: Option<i64>,
}

/// Slack on every detection deadline, for delivery through the broker and a busy machine (the
/// times compared are wall-clock ones; the engine's own timing is exact under virtual time).
const SLACK_MS: i64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_injected_fault_is_detected_in_time_and_nothing_else_alarms() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scenario = Scenario::load(root.join("config/scenarios/accuracy.toml")).expect("scenario");
    let broker = Broker::embedded();
    let addr = broker.addr();
    let agent = RunningAgent::start_with_rules_dir(&config(addr, "3.1.1"), &root.join("rules")).await;
    let mut upstream = Subscriber::connect(addr, "cloud", "edgewatch/gw-test/events/#").await;

    let start_ms = u64::try_from(edgewatch_engine::Timestamp::from_system_time(std::time::SystemTime::now()).millis())
        .expect("after 1970");
    let opts = RunOptions {
        host: addr.ip().to_string(),
        port: addr.port(),
        client_id: "fleet".into(),
        qos: 1,
        ..RunOptions::default()
    };
    let sim = SimOptions { seed: 7, start_ms, duration: None };
    let runner =
        tokio::spawn(async move { firmware_sim::run_scenario(&scenario, sim, &opts, std::future::pending()).await });

    let mut received: Vec<serde_json::Value> = Vec::new();
    while !runner.is_finished() {
        if let Some(m) = upstream.next_within(Duration::from_millis(200)).await {
            received.push(m.json());
        }
    }
    let report = runner.await.expect("joined").expect("scenario ran");
    let end_ms = i64::try_from(start_ms).unwrap_or(0) + 60_000;
    // The last events in flight: until nothing has come for longer than the slack.
    while let Some(m) = upstream.next_within(Duration::from_millis(SLACK_MS as u64 + 500)).await {
        received.push(m.json());
    }
    let stats = agent.stop().await;

    // Ground truth -> expected events.
    let ms = |u: u64| i64::try_from(u).unwrap_or(i64::MAX);
    let mut expected: Vec<Expected> = Vec::new();
    let mut noise = Vec::new();
    for t in &report.truth {
        let (start, end) = (ms(t.start_ms), ms(t.end_ms));
        let e = |rule, status, from_ms, by_ms| Expected {
            fault: format!("{:?}", t.kind).split([' ', '{']).next().unwrap_or("?").to_lowercase(),
            rule,
            key: t.device.clone(),
            status,
            from_ms,
            by_ms,
            detected_ms: None,
        };
        match &t.kind {
            // Three readings a second apart are needed.
            FaultKind::Overheat { .. } => expected.push(e("overheat", None, start, start + 3_000 + SLACK_MS)),
            FaultKind::Silence { .. } => {
                let timeout = if t.device.as_str() < "t-020" { 10_000 } else { 30_000 };
                expected.push(e("offline", Some("missing"), start, start + timeout + SLACK_MS));
                // Back at its first heartbeat after the silence (every 2 s).
                expected.push(e("offline", Some("recovered"), end, end + 2_000 + SLACK_MS));
            }
            FaultKind::ForcedDoor { .. } => expected.push(e("door-forced", None, start, start + 10_000 + SLACK_MS)),
            other => noise.push(format!("{other:?} on {}", t.device)),
        }
    }
    assert!(expected.len() >= 7, "the scenario injects faults: {expected:#?}");

    // Match every event of the run to an expected one; anything left over is a false alarm.
    let mut false_alarms = Vec::new();
    for ev in received.iter().filter(|ev| ev["time"].as_str().is_some()) {
        let time = ev["time"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .map(|t| edgewatch_engine::Timestamp::from_system_time(t).millis());
        let Some(time) = time.filter(|t| *t <= end_ms) else { continue };
        let rule = ev["type"].as_str().and_then(|t| t.strip_prefix("edgewatch.")).unwrap_or("?");
        let key = ev["subject"].as_str().unwrap_or("?");
        let status = ev["data"]["status"].as_str();
        let slot = expected.iter_mut().find(|x| {
            x.detected_ms.is_none() && x.rule == rule && x.key == key && x.status == status && time >= x.from_ms
        });
        match slot {
            Some(x) => x.detected_ms = Some(time),
            None => {
                false_alarms.push(format!("{rule} {key} {status:?} at +{:.2}s", (time - ms(start_ms)) as f64 / 1000.0))
            }
        }
    }

    println!("| fault | rule | key | expected by | detected | latency from the fault |");
    println!("|---|---|---|---|---|---|");
    let rel = |t: i64| format!("+{:.2}s", (t - ms(start_ms)) as f64 / 1000.0);
    for x in &expected {
        let name = format!("{} {}", x.rule, x.status.unwrap_or(""));
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            x.fault,
            name.trim(),
            x.key,
            rel(x.by_ms),
            x.detected_ms.map(rel).unwrap_or_else(|| "MISSED".into()),
            x.detected_ms.map(|d| format!("{:.2}s", (d - x.from_ms) as f64 / 1000.0)).unwrap_or_default()
        );
    }
    println!("noise injected (must not alarm): {noise:?}");
    println!("agent: {stats}");

    let missed: Vec<&Expected> = expected.iter().filter(|x| x.detected_ms.is_none()).collect();
    assert!(missed.is_empty(), "missed: {missed:#?}");
    let late: Vec<&Expected> = expected.iter().filter(|x| x.detected_ms.is_some_and(|d| d > x.by_ms)).collect();
    assert!(late.is_empty(), "detected too late: {late:#?}");
    assert!(false_alarms.is_empty(), "false alarms: {false_alarms:?}");
    assert_eq!(stats.decode_errors, 1, "the malformed payload is counted: {stats}");
    assert_eq!(stats.duplicates, 1, "the duplicate is dropped: {stats}");
}
