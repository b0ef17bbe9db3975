//! The shipped scenario files: they parse, validate, are repeatable, and the accuracy
//! scenario injects exactly what its comments promise.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use firmware_sim::{
    Action, Emission, FaultType, Kind, Scenario, ScenarioError, SimOptions, Simulation, record_lines, truth_lines,
};
use serde_json::Value;

fn scenarios_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/scenarios")
}

fn load(name: &str) -> Scenario {
    Scenario::load(scenarios_dir().join(name)).expect("valid scenario")
}

fn generate(scenario: &Scenario, seed: u64) -> (Vec<Emission>, Simulation) {
    let opts = SimOptions { seed, ..SimOptions::default() };
    let mut sim = Simulation::new(scenario, opts).expect("builds");
    let out = sim.run_to_end().expect("the shipped scenarios have a duration");
    (out, sim)
}

#[test]
fn every_scenario_file_parses_validates_and_runs() {
    let mut seen = 0;
    for entry in std::fs::read_dir(scenarios_dir()).expect("config/scenarios exists") {
        let path = entry.expect("readable").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        assert_eq!(scenario.name(), stem, "{}: `name` should match the file name", path.display());
        assert!(scenario.duration().is_some(), "{}: give the scenario a duration", path.display());
        let (emissions, sim) = generate(&scenario, 1);
        assert!(!emissions.is_empty());
        assert_eq!(sim.stats().encode_errors, 0, "{}", path.display());
        // Every fault of the timeline starts within the run, and shows up in the truth.
        assert_eq!(sim.truth().len(), scenario.faults().len(), "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 2, "demo.toml and accuracy.toml at least");
}

#[test]
fn same_seed_same_record_and_truth_byte_for_byte() {
    for name in ["accuracy.toml", "catalogue.toml"] {
        let scenario = load(name);
        let (a, sim_a) = generate(&scenario, 7);
        // Sliced differently: poll in odd steps.
        let mut sim_b = Simulation::new(&scenario, SimOptions { seed: 7, ..SimOptions::default() }).expect("builds");
        let mut b = Vec::new();
        let mut t = Duration::ZERO;
        while t < Duration::from_secs(200) {
            sim_b.poll(t, &mut b);
            t += Duration::from_millis(777);
        }
        assert_eq!(record_lines(&a), record_lines(&b), "{name}");
        assert_eq!(truth_lines(&sim_a.truth()), truth_lines(&sim_b.truth()), "{name}");
        let (c, _) = generate(&scenario, 8);
        assert_ne!(record_lines(&a), record_lines(&c), "{name}: another seed, other values");
    }
}

#[test]
fn scenario_text_and_file_agree() {
    let path = scenarios_dir().join("demo.toml");
    let text = std::fs::read_to_string(&path).expect("readable");
    let from_text = Scenario::from_toml(&text).expect("valid");
    assert_eq!(from_text.spec(), load("demo.toml").spec());
}

fn json(e: &Emission) -> Option<(Kind, &str, Value)> {
    let p = e.publish()?;
    Some((p.kind, &*p.topic, serde_json::from_slice(&p.payload).ok()?))
}

/// What the accuracy scenario's comments promise, checked on the generated schedule with
/// the logic of the shipped rules.
#[test]
fn accuracy_scenario_injects_what_it_documents() {
    let scenario = load("accuracy.toml");
    let ids: Vec<String> = (0..30).map(|i| format!("t-{i:03}")).chain((1..=4).map(|i| format!("door-{i}"))).collect();
    assert_eq!(scenario.device_ids(), ids);
    let start_ms = 1_800_000_000_000;
    let opts = SimOptions { seed: 7, start_ms, duration: None };
    let mut sim = Simulation::new(&scenario, opts).expect("builds");
    let emissions = sim.run_to_end().expect("60 s");
    let sec = |e: &Emission| e.at.as_secs_f64();

    // Topics: temperature, heartbeat, badge, open; nothing else (no battery, no status).
    let mut topics: BTreeMap<String, usize> = BTreeMap::new();
    for e in &emissions {
        let p = e.publish().expect("no own connections here");
        let leaf = p.topic.rsplit('/').next().unwrap_or_default().to_owned();
        *topics.entry(leaf).or_default() += 1;
    }
    assert_eq!(topics.keys().collect::<Vec<_>>(), ["badge", "heartbeat", "open", "temperature"]);

    // Overheat rule (3 readings > 80 within 60 s, per device): fires for t-003 and t-024 only.
    let mut hot: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut last_value: BTreeMap<String, f64> = BTreeMap::new();
    let mut changed: BTreeMap<String, bool> = BTreeMap::new();
    for e in &emissions {
        let Some((Kind::Reading, _, v)) = json(e) else { continue };
        let device = v["device"].as_str().expect("device").to_owned();
        let value = v["temperature"].as_f64().expect("a number");
        if value > 80.0 {
            hot.entry(device.clone()).or_default().push(sec(e));
        } else {
            assert!((20.0..24.0).contains(&value), "{device}: {value} is near 22 degrees");
        }
        if let Some(prev) = last_value.insert(device.clone(), value) {
            *changed.entry(device).or_default() |= prev != value;
        }
    }
    let fired: BTreeMap<&str, f64> =
        hot.iter().filter(|(_, t)| t.len() >= 3).map(|(d, t)| (d.as_str(), t[2])).collect();
    assert_eq!(fired.keys().copied().collect::<Vec<_>>(), ["t-003", "t-024"]);
    assert!((fired["t-003"] - 12.1).abs() < 1e-6, "{fired:?}");
    assert!((fired["t-024"] - 32.8).abs() < 1e-6, "{fired:?}");
    assert_eq!(hot["t-003"].len(), 6);
    assert_eq!(hot["t-016"].len(), 1, "the spike is one reading");
    assert!(changed.values().all(|c| *c), "no value is stuck");

    // Offline rule (10 s heartbeat timeout for t-000..t-019): gaps > 10 s only for t-007, t-012.
    let mut beats: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for e in &emissions {
        if let Some((Kind::Heartbeat, _, v)) = json(e) {
            beats.entry(v["device"].as_str().expect("device").to_owned()).or_default().push(sec(e));
        }
    }
    assert_eq!(beats.len(), 30);
    let mut gaps = Vec::new();
    for (device, times) in &beats {
        for w in times.windows(2) {
            if w[1] - w[0] > 10.0 {
                gaps.push((device.as_str(), w[0] + 10.0, w[1]));
            }
        }
    }
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    let gaps: Vec<(&str, f64, f64)> = gaps.into_iter().map(|(d, a, b)| (d, round(a), round(b))).collect();
    assert_eq!(gaps, [("t-007", 24.467, 42.467), ("t-012", 34.8, 50.8)]);

    // Door-forced rule (an opening with no badge read at that door within 10 s): door-3 at 30 s.
    let mut door_events: BTreeMap<String, Vec<(f64, Kind)>> = BTreeMap::new();
    for e in &emissions {
        if let Some((kind @ (Kind::Badge | Kind::Open), _, v)) = json(e) {
            door_events.entry(v["device"].as_str().expect("device").to_owned()).or_default().push((sec(e), kind));
        }
    }
    let mut forced = Vec::new();
    for (door, events) in &door_events {
        for (i, (t, kind)) in events.iter().enumerate() {
            let answered = events[i + 1..].iter().any(|(u, k)| *k == Kind::Badge && *u <= t + 10.0);
            if *kind == Kind::Open && !answered {
                forced.push((door.as_str(), *t + 10.0));
            }
        }
    }
    assert_eq!(forced, [("door-3", 30.0)]);

    // The duplicate repeats bytes and seq; the malformed payload parses as nothing.
    let dup: Vec<&Emission> =
        emissions.iter().filter(|e| e.publish().is_some_and(|p| p.faults.contains(FaultType::Duplicate))).collect();
    assert_eq!(dup.len(), 1);
    let original =
        emissions.iter().filter(|e| e.publish().map(|p| &p.payload) == dup[0].publish().map(|p| &p.payload)).count();
    assert_eq!(original, 2, "sent twice, byte for byte");
    let bad: Vec<&Emission> =
        emissions.iter().filter(|e| e.publish().is_some_and(|p| p.kind == Kind::Malformed)).collect();
    assert_eq!(bad.len(), 1);
    assert!(bad[0].publish().is_some_and(|p| serde_json::from_slice::<Value>(&p.payload).is_err()));

    // The truth names each fault with absolute times.
    let truth = sim.truth();
    let listed: Vec<(&str, &str, u64, u64)> = truth
        .iter()
        .map(|t| (t.fault().name(), t.device.as_str(), t.start_ms - start_ms, t.end_ms - start_ms))
        .collect();
    assert_eq!(
        listed,
        [
            ("overheat", "t-003", 10_000, 16_000),
            ("silence", "t-007", 15_000, 42_000),
            ("forced_door", "door-3", 20_000, 35_000),
            ("silence", "t-012", 25_000, 50_000),
            ("overheat", "t-024", 30_000, 36_000),
            ("duplicate", "t-010", 5_000, 5_333),
            ("malformed", "t-011", 8_000, 8_000),
            ("spike", "t-016", 40_000, 40_533),
        ]
    );
    assert!(emissions.iter().all(|e| matches!(e.action, Action::Publish(_))));
}

fn invalid(text: &str) -> (String, String) {
    match Scenario::from_toml(text) {
        Err(ScenarioError::Invalid { origin, path, message }) => {
            assert_eq!(origin, "<scenario>");
            (path, message)
        }
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

const GROUP: &str = r#"
[[groups]]
name = "t"
count = 3
id = "t-{index}"
heartbeat_interval = "2s"
"#;

#[test]
fn errors_name_the_key_path() {
    let (path, message) = invalid(&format!("{GROUP}colour = \"red\""));
    assert_eq!(path, "groups[0].colour", "{message}");
    let (path, message) = invalid("[[groups]]\nname = \"t\"\ncount = 1\nreading_interval = \"soon\"");
    assert_eq!(path, "groups[0].reading_interval", "{message}");
    let (path, message) =
        invalid(&format!("{GROUP}[[groups.channels]]\nname = \"t\"\nsignal = {{ model = \"sine\" }}"));
    // A missing key is named itself, not only its table.
    assert_eq!(path, "groups[0].channels[0].signal.base", "{message}");
    let (path, message) = invalid(&format!("{GROUP}[[faults]]\nfault = \"melt\"\ndevice = \"t-1\"\nstart = \"1s\""));
    assert_eq!(path, "faults[0].fault");
    assert!(message.contains("overheat"), "lists the kinds: {message}");
    let (path, message) =
        invalid(&format!("{GROUP}[[faults]]\nfault = \"silence\"\ndevice = \"t-1\"\nstart = \"1s\"\nvalue = 3.0"));
    assert_eq!((path.as_str(), message.contains("does not take")), ("faults[0].value", true), "{message}");
    let (path, message) = invalid(&format!(
        "{GROUP}[[faults]]\nfault = \"silence\"\ndevice = \"t-9\"\nstart = \"1s\"\nduration = \"1s\""
    ));
    assert_eq!(path, "faults[0].device", "{message}");
    let (path, _) = invalid(&format!(
        "{GROUP}[[faults]]\nfault = \"overheat\"\ngroup = \"t\"\nindex = 7\nstart = \"1s\"\nduration = \"1s\"\nvalue = 90.0"
    ));
    assert_eq!(path, "faults[0].index");
    let (path, message) = invalid(&format!(
        "{GROUP}[[faults]]\nfault = \"overheat\"\ndevice = \"t-1\"\nstart = \"1s\"\nduration = \"1s\""
    ));
    assert_eq!(path, "faults[0].value", "{message}");
    let (path, message) = invalid(&format!(
        "{GROUP}[[faults]]\nfault = \"disconnect\"\ndevice = \"t-1\"\nstart = \"1s\"\nduration = \"1s\""
    ));
    assert!(path == "faults[0]" && message.contains("own connection"), "{path}: {message}");
    let (path, message) =
        invalid(&format!("{GROUP}[[faults]]\nfault = \"forced_door\"\ndevice = \"t-1\"\nstart = \"1s\""));
    assert!(path == "faults[0]" && message.contains("door"), "{path}: {message}");
    let (path, _) = invalid(&format!("{GROUP}cycle = \"5s\""));
    assert_eq!(path, "groups[0].cycle");
    let (path, message) = invalid("[[groups]]\nname = \"t\"\ncount = 2\nid = \"same\"");
    assert_eq!(path, "groups[0].id", "{message}");
    let (path, message) = invalid(
        "[[groups]]\nname = \"a\"\ncount = 2\nid = \"x-{index}\"\n[[groups]]\nname = \"b\"\ncount = 2\nid = \"x-{index}\"",
    );
    assert!(path == "groups[1].id" && message.contains("twice"), "{path}: {message}");
    let (path, message) =
        invalid("[[groups]]\nname = \"t\"\ncount = 1\nid = \"a-very-long-device-id-that-does-not-fit\"");
    assert!(path == "groups[0].id" && message.contains("wire"), "{path}: {message}");
    let (path, message) = invalid(
        "[[groups]]\nname = \"t\"\ncount = 1\nheartbeat_interval = \"1s\"\nreading_topic = \"s/{device}\"\nheartbeat_topic = \"s/{device}\"",
    );
    assert!(path == "groups[0].reading_topic" && message.contains("heartbeat_topic"), "{path}: {message}");
    let (path, _) = invalid("[[groups]]\nname = \"t\"\ncount = 1\nreading_topic = \"s/+/{device}\"");
    assert_eq!(path, "groups[0].reading_topic");
    let (path, message) = invalid("[[groups]]\nname = \"w\"\ncount = 1001\nown_connection = true");
    assert!(path == "groups[0].own_connection" && message.contains("1000"), "{path}: {message}");
    assert!(matches!(Scenario::from_toml("groups = ["), Err(ScenarioError::Syntax { .. })));
    let (path, _) = invalid("");
    assert_eq!(path, "groups");
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "[[groups]]\nname = \"t\"\ncount = 0\n").expect("writes");
    let err = Scenario::load(&path).expect_err("count 0").to_string();
    assert!(err.starts_with(&path.display().to_string()), "{err}");
    assert!(err.contains("groups[0].count"), "{err}");
    let err = Scenario::load(dir.path().join("missing.toml")).expect_err("no file").to_string();
    assert!(err.contains("cannot read"), "{err}");
}

/// What `edgewatch demo` does to demo.toml: fewer devices, its own topic tree, a shorter run.
#[test]
fn a_scenario_file_can_be_resized_prefixed_and_stretched() {
    let mut spec = load("demo.toml").spec().clone();
    spec.resize("temperature", 5);
    spec.prefix_topics("edgewatch-demo/abc");
    spec.stretch(Duration::from_secs(4));
    let scenario = Scenario::new(spec).expect("still valid");
    assert_eq!(scenario.device_count(), 5);
    assert_eq!(scenario.duration(), Some(Duration::from_secs(4)));
    // t-007 is gone, so is its silence; t-003's overheat keeps its share of the run.
    let faults = scenario.faults();
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert_eq!(faults[0].start, Duration::from_millis(800));
    assert_eq!(faults[0].kind.span(), Duration::from_secs(2));
    let (emissions, _) = generate(&scenario, 1);
    let topics: Vec<&str> = emissions.iter().filter_map(|e| e.publish()).map(|p| &*p.topic).collect();
    assert!(topics.contains(&"edgewatch-demo/abc/sensors/t-004/temperature"), "{topics:?}");
    assert!(topics.iter().all(|t| t.starts_with("edgewatch-demo/abc/sensors/")));
}

/// What the anomaly scenario's header table promises: two clean days, one fault of each
/// value kind on its own device from the hour it says, six devices never touched, and the
/// battery below 3.3 V at about 92 h.
#[test]
fn anomaly_scenario_injects_what_it_documents() {
    let scenario = load("anomaly.toml");
    let ids: Vec<String> = (0..12).map(|i| format!("a-{i:03}")).collect();
    assert_eq!(scenario.device_ids(), ids);
    assert_eq!(scenario.duration(), Some(Duration::from_secs(4 * 86_400)));
    let (emissions, sim) = generate(&scenario, 7);
    let hours = |e: &Emission| e.at.as_secs_f64() / 3600.0;
    assert_eq!(emissions.len(), 12 * 4 * 1440 * 2, "two channels a minute for four days");

    let planned: Vec<(String, FaultType, u64)> = sim
        .truth()
        .into_iter()
        .map(|t| (t.device.clone(), t.fault(), (t.start_ms - SimOptions::default().start_ms) / 3_600_000))
        .collect();
    let want = [
        ("a-001", FaultType::Drift, 50),
        ("a-003", FaultType::LevelShift, 54),
        ("a-005", FaultType::Spike, 58),
        ("a-007", FaultType::PatternBreak, 60),
        ("a-009", FaultType::NoiseBurst, 66),
        ("a-011", FaultType::BatteryDecline, 72),
    ];
    assert_eq!(planned, want.map(|(d, f, h)| (d.to_owned(), f, h)));

    let mut faulted: BTreeMap<String, f64> = BTreeMap::new();
    let mut below_3_3 = None;
    for e in &emissions {
        let Some((Kind::Reading, _, v)) = json(e) else { panic!("only readings: {e:?}") };
        let device = v["device"].as_str().expect("device").to_owned();
        if let Some(volts) = v["battery"].as_f64() {
            if device == "a-011" && volts < 3.3 && below_3_3.is_none() {
                below_3_3 = Some(hours(e));
            }
            if device != "a-011" {
                assert!((3.89..=3.91).contains(&volts), "{device}: {volts} V");
            }
        }
        if e.publish().is_some_and(|p| !p.faults.is_empty()) {
            faulted.entry(device).or_insert_with(|| hours(e));
        }
    }
    // Faulted devices, and the hour of their first faulted reading (each reads 5 s per index
    // past the minute, so the first is within a minute of the fault's start).
    let first: Vec<(&str, u64)> = faulted.iter().map(|(d, h)| (d.as_str(), h.floor() as u64)).collect();
    assert_eq!(first, want.map(|(d, _, h)| (d, h)), "nothing before 48 h, and the clean devices never");
    let crossing = below_3_3.expect("a-011's battery runs down");
    assert!((91.8..92.4).contains(&crossing), "{crossing} h, about 72 + (3.9 - 3.3) / 0.03 = 92");
}
