//! The anomaly scenario (`config/scenarios/anomaly.toml`): firmware-sim gives 12 sensors a
//! daily temperature wave and a battery, and after two clean days injects a drift, a level
//! shift, a spike, a broken daily pattern, a noise burst and a battery decline, one each on
//! its own sensor. The shipped rules (`rules/`, among them `temperature-anomaly` and
//! `battery-forecast`) run over the recording through the agent's replay path, its decoder
//! and engine under virtual time: four days of readings a minute take seconds here, where a
//! live broker would take four days. The events are scored against the simulator's truth:
//! every fault reported within its stated latency, nothing on the clean sensors, and nothing
//! on a faulty sensor outside its fault.

use firmware_sim::{DEFAULT_START_MS, FaultKind, Scenario, SimOptions, Simulation, record_lines};
use std::path::Path;

const HOUR: i64 = 3_600_000;

/// What a fault must produce: which rule, which `kind` of anomaly (none for forecasts), and
/// the latest acceptable time.
#[derive(Debug)]
struct Expected {
    fault: String,
    device: String,
    rule: &'static str,
    kind: Option<&'static str>,
    from_ms: i64,
    by_ms: i64,
    /// Events on the device are part of this fault until then (its end, plus the settling
    /// of what its end changed).
    until_ms: i64,
    detected_ms: Option<i64>,
}

/// The battery level the forecast rule warns about.
const BATTERY_MIN: f64 = 3.3;

#[test]
fn every_injected_anomaly_is_reported_in_time_and_clean_sensors_stay_quiet() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scenario = Scenario::load(root.join("config/scenarios/anomaly.toml")).expect("scenario");
    let opts = SimOptions { seed: 7, start_ms: DEFAULT_START_MS, duration: scenario.duration() };
    let mut sim = Simulation::new(&scenario, opts).expect("simulation");
    let emissions = sim.run_to_end().expect("the scenario has a duration");
    let recording = edgewatch::replay::parse(&record_lines(&emissions), "anomaly.jsonl").expect("the recording parses");
    let mut engine = edgewatch::replay::engine_for(&root.join("rules"), edgewatch::replay::default_engine_config())
        .expect("the shipped rules load");
    let lines = edgewatch::replay::run(&mut engine, &recording, false);
    let truth = sim.truth();
    let start = i64::try_from(DEFAULT_START_MS).expect("fits");
    let ms = |u: u64| i64::try_from(u).unwrap_or(i64::MAX);

    let faults: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("fault").is_some()).collect();
    assert!(faults.is_empty(), "rule faults: {faults:?}");

    // Ground truth -> expected events, with the latency each fault is allowed.
    let mut expected = Vec::new();
    for t in &truth {
        let (from, end) = (ms(t.start_ms), ms(t.end_ms));
        let e = |rule, kind, by_ms, until_ms| Expected {
            fault: t.fault().to_string(),
            device: t.device.clone(),
            rule,
            kind,
            from_ms: from,
            by_ms,
            until_ms,
            detected_ms: None,
        };
        expected.push(match &t.kind {
            // Out of a ±3° daily range at 0.25°/h: within 12 h, and its episodes may go on
            // while it lasts, and for half a day after (the way back is a move too).
            FaultKind::Drift { .. } => e("temperature-anomaly", Some("drift"), from + 12 * HOUR, end + 12 * HOUR),
            // Sudden ones are named by the three readings after them (a reading a minute).
            FaultKind::LevelShift { .. } => {
                e("temperature-anomaly", Some("level_shift"), from + HOUR / 6, end + 12 * HOUR)
            }
            FaultKind::Spike { .. } => e("temperature-anomaly", Some("spike"), from + HOUR / 6, end + HOUR),
            FaultKind::NoiseBurst { .. } => e("temperature-anomaly", Some("noise"), from + HOUR / 2, end + HOUR),
            // The wrong value for the hour: within 6 h, whatever the hour it starts at.
            FaultKind::PatternBreak { .. } => {
                e("temperature-anomaly", Some("seasonal"), from + 6 * HOUR, end + 12 * HOUR)
            }
            // Warned at least 6 h before the battery reaches the minimum.
            FaultKind::BatteryDecline { rate, .. } => {
                let level = f64::from(t.from.expect("the decline's starting level"));
                let crossing = from + ((level - BATTERY_MIN) / f64::from(*rate) * HOUR as f64) as i64;
                e("battery-forecast", None, crossing - 6 * HOUR, end + 12 * HOUR)
            }
            other => panic!("the scenario injects only value faults, not {other:?}"),
        });
    }
    assert_eq!(expected.len(), 6, "one of each: {expected:#?}");

    // Match the events of the two rules to the faults; anything else is a false alarm.
    let mut false_alarms = Vec::new();
    let mut repeats = 0;
    for ev in &lines {
        let rule = ev["rule"].as_str().unwrap_or("");
        if !matches!(rule, "temperature-anomaly" | "battery-forecast") {
            continue;
        }
        let (key, time) = (ev["key"].as_str().unwrap_or("?"), ev["t"].as_i64().unwrap_or(0));
        let kind = ev["data"]["kind"].as_str();
        let at = format!("{rule} {key} {kind:?} at +{:.2} h", (time - start) as f64 / HOUR as f64);
        match expected.iter_mut().find(|x| x.rule == rule && x.device == key && time >= x.from_ms && time <= x.until_ms)
        {
            Some(x) if x.detected_ms.is_none() => {
                x.detected_ms = Some(time);
                if x.kind.is_some() && x.kind != kind {
                    false_alarms.push(format!("{at}: the wrong kind for a {}", x.fault));
                }
            }
            Some(_) => repeats += 1,
            None => false_alarms.push(at),
        }
    }

    println!("| fault | device | rule | expected by | detected | latency |");
    println!("|---|---|---|---|---|---|");
    let rel = |t: i64| format!("+{:.2} h", (t - start) as f64 / HOUR as f64);
    for x in &expected {
        println!(
            "| {} | {} | {} {} | {} | {} | {} |",
            x.fault,
            x.device,
            x.rule,
            x.kind.unwrap_or(""),
            rel(x.by_ms),
            x.detected_ms.map(rel).unwrap_or_else(|| "MISSED".into()),
            x.detected_ms.map(|d| format!("{:.2} h", (d - x.from_ms) as f64 / HOUR as f64)).unwrap_or_default()
        );
    }
    println!("later episodes of the same faults: {repeats}");

    let missed: Vec<&Expected> = expected.iter().filter(|x| x.detected_ms.is_none()).collect();
    assert!(missed.is_empty(), "missed: {missed:#?}");
    let late: Vec<&Expected> = expected.iter().filter(|x| x.detected_ms.is_some_and(|d| d > x.by_ms)).collect();
    assert!(late.is_empty(), "reported too late: {late:#?}");
    assert!(false_alarms.is_empty(), "false alarms: {false_alarms:#?}");
}
