//! What each fault does to the schedule, checked under virtual time through the public API.

use std::time::Duration;

use firmware_sim::{Action, Emission, FaultType, Kind, Scenario, SimOptions, Simulation, record_line, record_lines};
use serde_json::Value;

const START_MS: u64 = 1_700_000_000_000;

/// Two JSON sensors `s-0`, `s-1` (readings every 1 s, heartbeats every 2 s; s-1 staggered by
/// half an interval), plus `extra` TOML (more groups, faults).
fn sensors(extra: &str) -> String {
    format!(
        r#"
[[groups]]
name = "s"
count = 2
id = "s-{{index}}"
reading_interval = "1s"
heartbeat_interval = "2s"
[[groups.channels]]
name = "temperature"
signal = {{ model = "sine", base = 22.0, amplitude = 1.0, period = "10m", noise = 0.3 }}
{extra}
"#
    )
}

fn run(text: &str, secs: u64) -> (Vec<Emission>, Simulation) {
    let scenario = Scenario::from_toml(text).unwrap_or_else(|e| panic!("{e}"));
    let opts = SimOptions { seed: 3, start_ms: START_MS, duration: Some(Duration::from_secs(secs)) };
    let mut sim = Simulation::new(&scenario, opts).expect("builds");
    let out = sim.run_to_end().expect("has an end");
    (out, sim)
}

/// `(virtual seconds, kind, payload JSON, faults)` of one device's published messages.
fn of(emissions: &[Emission], device: &str) -> Vec<(f64, Kind, Value, Vec<FaultType>)> {
    emissions
        .iter()
        .filter_map(|e| {
            let p = e.publish()?;
            let v: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
            let from_device = v["device"] == device || p.topic.split('/').nth(1) == Some(device);
            from_device.then(|| (e.at.as_secs_f64(), p.kind, v, p.faults.iter().collect()))
        })
        .collect()
}

fn seqs(msgs: &[(f64, Kind, Value, Vec<FaultType>)]) -> Vec<u64> {
    msgs.iter().filter_map(|m| m.2["seq"].as_u64()).collect()
}

#[test]
fn silence_withholds_everything_and_seq_resumes() {
    let (out, sim) =
        run(&sensors("[[faults]]\nfault = \"silence\"\ndevice = \"s-0\"\nstart = \"3s\"\nduration = \"4s\""), 10);
    let msgs = of(&out, "s-0");
    assert!(msgs.iter().all(|m| m.0 < 3.0 || m.0 >= 7.0), "{msgs:?}");
    let s = seqs(&msgs);
    assert_eq!(s, (0..s.len() as u64).collect::<Vec<_>>(), "no gaps: nothing was sent");
    // Readings at 3..=6 and heartbeats at 4 and 6.
    assert_eq!(sim.stats().withheld, 6);
    assert_eq!(sim.truth()[0].messages, 6);
}

#[test]
fn heartbeat_loss_keeps_readings() {
    let (out, _) = run(
        &sensors("[[faults]]\nfault = \"heartbeat_loss\"\ndevice = \"s-0\"\nstart = \"3s\"\nduration = \"4s\""),
        10,
    );
    let msgs = of(&out, "s-0");
    let beats: Vec<f64> = msgs.iter().filter(|m| m.1 == Kind::Heartbeat).map(|m| m.0).collect();
    assert_eq!(beats, [0.0, 2.0, 8.0]);
    assert_eq!(msgs.iter().filter(|m| m.1 == Kind::Reading).count(), 10);
}

#[test]
fn flap_by_silence_goes_and_comes_back() {
    let (out, sim) = run(
        &sensors(
            "[[faults]]\nfault = \"flap\"\ndevice = \"s-0\"\nstart = \"2s\"\nperiod = \"4s\"\ndown = \"2s\"\ncount = 2",
        ),
        12,
    );
    let readings: Vec<f64> = of(&out, "s-0").iter().filter(|m| m.1 == Kind::Reading).map(|m| m.0).collect();
    assert_eq!(readings, [0.0, 1.0, 4.0, 5.0, 8.0, 9.0, 10.0, 11.0]);
    let t = &sim.truth()[0];
    assert_eq!((t.start_ms - START_MS, t.end_ms - START_MS), (2000, 10_000));
}

const WIRELESS: &str = r#"
[[groups]]
name = "w"
count = 1
id = "w-1"
reading_interval = "1s"
heartbeat_interval = "2s"
own_connection = true
"#;

#[test]
fn own_connections_say_online_and_disconnects_leave_a_will() {
    let text = format!(
        "{WIRELESS}[[faults]]\nfault = \"disconnect\"\ndevice = \"w-1\"\nstart = \"3500ms\"\nduration = \"3s\""
    );
    let (out, sim) = run(&text, 10);
    let actions: Vec<(u128, String)> = out
        .iter()
        .filter(|e| !matches!(e.publish(), Some(p) if p.kind != Kind::Status))
        .map(|e| {
            let what = match &e.action {
                Action::Connect => "connect".to_owned(),
                Action::Drop { will_topic } => format!("drop {will_topic}"),
                Action::Publish(p) => format!("{} {}", p.topic, String::from_utf8_lossy(&p.payload)),
            };
            (e.at.as_millis(), what)
        })
        .collect();
    assert_eq!(
        actions,
        [
            (0, "connect".to_owned()),
            (0, "sensors/w-1/status online".to_owned()),
            (3500, "drop sensors/w-1/status".to_owned()),
            (6500, "connect".to_owned()),
            (6500, "sensors/w-1/status online".to_owned()),
        ]
    );
    // Nothing from the device while it is away.
    assert!(of(&out, "w-1").iter().all(|m| m.0 < 3.5 || m.0 >= 6.5));
    let record = record_lines(&out);
    assert!(record.contains(&format!(r#"{{"t":{},"topic":"sensors/w-1/status","text":"offline"}}"#, START_MS + 3500)));
    assert!(record.starts_with(&format!(r#"{{"t":{START_MS},"topic":"sensors/w-1/status","text":"online"}}"#)));
    assert_eq!((sim.stats().connects, sim.stats().drops), (2, 1));
}

#[test]
fn flap_by_disconnect_drops_and_reconnects_each_cycle() {
    let text = format!(
        "{WIRELESS}[[faults]]\nfault = \"flap\"\ndevice = \"w-1\"\nstart = \"2s\"\nperiod = \"3s\"\ndown = \"1s\"\ncount = 3\nvia = \"disconnect\""
    );
    let (out, _) = run(&text, 20);
    let events: Vec<(u128, bool)> = out
        .iter()
        .filter_map(|e| match e.action {
            Action::Drop { .. } => Some((e.at.as_millis(), false)),
            Action::Connect => Some((e.at.as_millis(), true)),
            Action::Publish(_) => None,
        })
        .collect();
    assert_eq!(
        events,
        [(0, true), (2000, false), (3000, true), (5000, false), (6000, true), (8000, false), (9000, true)]
    );
}

const CLIMATE: &str = r#"
[[groups]]
name = "c"
count = 1
id = "c-1"
reading_interval = "1s"
[[groups.channels]]
name = "temperature"
signal = { model = "constant", value = 21.0 }
[[groups.channels]]
name = "humidity"
signal = { model = "random_walk", start = 40.0, step = 1.0, min = 0.0, max = 100.0 }
"#;

#[test]
fn overheat_spike_and_stuck_bend_one_channel() {
    let text = format!(
        "{CLIMATE}
[[faults]]
fault = \"overheat\"
device = \"c-1\"
start = \"2s\"
duration = \"2s\"
value = 90.0
[[faults]]
fault = \"spike\"
device = \"c-1\"
start = \"5500ms\"
value = -5.0
count = 2
channel = \"humidity\"
[[faults]]
fault = \"stuck\"
device = \"c-1\"
start = \"8s\"
duration = \"3s\"
channel = \"humidity\"
"
    );
    let (out, sim) = run(&text, 13);
    let msgs = of(&out, "c-1");
    let temps: Vec<f64> = msgs.iter().filter_map(|m| m.2["temperature"].as_f64()).collect();
    assert_eq!(temps, [21.0, 21.0, 90.0, 90.0, 21.0, 21.0, 21.0, 21.0, 21.0, 21.0, 21.0, 21.0, 21.0]);
    let hum: Vec<f64> = msgs.iter().filter_map(|m| m.2["humidity"].as_f64()).collect();
    assert_eq!(&hum[6..8], [-5.0, -5.0], "spike: the two readings from 5.5 s");
    assert!(hum[8..11].iter().all(|h| *h == hum[8]), "stuck 8..11 s: {hum:?}");
    assert_ne!(hum[11], hum[8], "moves again after");
    // Each channel is its own message on its own topic.
    assert!(out.iter().filter_map(|e| e.publish()).any(|p| &*p.topic == "sensors/c-1/humidity"));
    let truth = sim.truth();
    assert_eq!(truth[1].channel.as_deref(), Some("humidity"));
    assert_eq!(truth[1].end_ms - START_MS, 7000);
    assert_eq!(truth[2].messages, 3);
}

#[test]
fn combined_topic_carries_every_channel() {
    let text = CLIMATE
        .replace("count = 1\n", "count = 1\nreading_topic = \"sensors/{device}/climate\"\nformat = \"postcard\"\n");
    let (out, _) = run(&text, 3);
    assert_eq!(out.len(), 3);
    for e in &out {
        let p = e.publish().expect("publish");
        assert_eq!(&*p.topic, "sensors/c-1/climate");
        let msg = edgewatch_wire::decode(&p.payload).expect("a frame");
        let edgewatch_wire::Body::Reading(samples) = msg.body else { panic!("a reading") };
        let names: Vec<&str> = samples.iter().map(|s| s.channel.as_str()).collect();
        assert_eq!(names, ["temperature", "humidity"]);
    }
    assert!(record_line(&out[0]).is_some_and(|l| l.contains(r#""hex":"01"#)));
}

#[test]
fn duplicate_sends_the_same_bytes_twice() {
    let (out, sim) = run(
        &sensors(
            "[[faults]]\nfault = \"duplicate\"\ndevice = \"s-1\"\nstart = \"2s\"\ncount = 2\nmessages = \"reading\"",
        ),
        6,
    );
    let msgs = of(&out, "s-1");
    let readings: Vec<&(f64, Kind, Value, Vec<FaultType>)> = msgs.iter().filter(|m| m.1 == Kind::Reading).collect();
    let times: Vec<f64> = readings.iter().map(|m| m.0).collect();
    assert_eq!(times, [0.5, 1.5, 2.5, 2.5, 3.5, 3.5, 4.5, 5.5]);
    assert_eq!(readings[2].2, readings[3].2, "same payload, same seq");
    assert_eq!(readings[3].3, [FaultType::Duplicate]);
    assert_eq!(sim.truth()[0].messages, 2);
}

#[test]
fn reorder_swaps_with_the_next_message() {
    let (out, _) = run(&sensors("[[faults]]\nfault = \"reorder\"\ndevice = \"s-0\"\nstart = \"2s\"\ncount = 1"), 6);
    let msgs = of(&out, "s-0");
    // At 2 s the reading (seq 3) and heartbeat (seq 4) are due; the reading is held until
    // the heartbeat has gone.
    let order: Vec<(f64, u64)> = msgs.iter().map(|m| (m.0, m.2["seq"].as_u64().unwrap_or(99))).collect();
    assert_eq!(&order[..6], [(0.0, 0), (0.0, 1), (1.0, 2), (2.0, 4), (2.0, 3), (3.0, 5)]);
    assert_eq!(msgs[4].3, [FaultType::Reorder]);
}

#[test]
fn late_messages_keep_their_ts_and_arrive_later() {
    let (out, sim) = run(
        &sensors("[[faults]]\nfault = \"late\"\ndevice = \"s-0\"\nstart = \"2s\"\nduration = \"2s\"\ndelay = \"5s\""),
        10,
    );
    let late: Vec<(&Emission, Value)> = out
        .iter()
        .filter_map(|e| {
            let p = e.publish()?;
            p.faults.contains(FaultType::Late).then(|| (e, serde_json::from_slice(&p.payload).unwrap_or(Value::Null)))
        })
        .collect();
    // Reading 2, heartbeat 2, reading 3: delivered at 7, 7, 8 s with their own ts.
    let seen: Vec<(u64, u64)> =
        late.iter().map(|(e, v)| (e.time_ms - START_MS, v["ts"].as_u64().unwrap_or(0) - START_MS)).collect();
    assert_eq!(seen, [(7000, 2000), (7000, 2000), (8000, 3000)]);
    // Emissions stay in time order.
    assert!(out.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(sim.truth()[0].messages, 3);
}

#[test]
fn malformed_and_burst_at_start() {
    let (out, _) = run(
        &sensors(
            "[[faults]]\nfault = \"malformed\"\ndevice = \"s-0\"\nstart = \"1500ms\"\ncount = 2\n\
             [[faults]]\nfault = \"burst\"\ndevice = \"s-1\"\nstart = \"3s\"\ncount = 5",
        ),
        5,
    );
    let bad: Vec<&Emission> = out.iter().filter(|e| e.publish().is_some_and(|p| p.kind == Kind::Malformed)).collect();
    assert_eq!(bad.len(), 2);
    assert!(bad.iter().all(|e| e.at == Duration::from_millis(1500)));
    assert!(bad.iter().all(|e| record_line(e).is_some_and(|l| l.contains("\"hex\""))));
    let burst: Vec<u64> = of(&out, "s-1")
        .iter()
        .filter(|m| m.3.contains(&FaultType::Burst))
        .map(|m| {
            assert_eq!(m.0, 3.0);
            m.2["seq"].as_u64().unwrap_or(0)
        })
        .collect();
    assert_eq!(burst.len(), 5);
    assert!(burst.windows(2).all(|w| w[1] == w[0] + 1), "each takes its own seq: {burst:?}");
}

#[test]
fn clock_skew_shifts_ts_only() {
    let (out, _) = run(
        &sensors(
            "[[faults]]\nfault = \"clock_skew\"\ndevice = \"s-0\"\nstart = \"2s\"\nduration = \"2s\"\noffset = \"-1m\"",
        ),
        6,
    );
    for e in out.iter().filter(|e| e.device == 0) {
        let Some(p) = e.publish() else { continue };
        let v: Value = serde_json::from_slice(&p.payload).expect("JSON");
        let ts = v["ts"].as_u64().expect("ts");
        let skewed = (2.0..4.0).contains(&e.at.as_secs_f64());
        assert_eq!(ts + if skewed { 60_000 } else { 0 }, e.time_ms, "{v}");
        assert_eq!(p.faults.contains(FaultType::ClockSkew), skewed);
    }
}

const DOORS: &str = r#"
[[groups]]
name = "doors"
kind = "door"
count = 2
id = "door-{number}"
cycle = "7s"
jitter = "1s"
open_delay = "1s"
"#;

/// `(seconds, kind)` of a door's badge reads and openings.
fn door(out: &[Emission], id: &str) -> Vec<(f64, Kind)> {
    of(out, id).into_iter().map(|m| (m.0, m.1)).collect()
}

/// Openings not followed by a badge read at that door within 10 s (the shipped door-forced rule).
fn unanswered(events: &[(f64, Kind)]) -> Vec<f64> {
    events
        .iter()
        .enumerate()
        .filter(|(i, (t, k))| {
            *k == Kind::Open && !events[i + 1..].iter().any(|(u, k)| *k == Kind::Badge && *u <= t + 10.0)
        })
        .map(|(_, (t, _))| *t)
        .collect()
}

#[test]
fn doors_read_a_badge_then_open_and_leave_nothing_unanswered() {
    let (out, _) = run(DOORS, 120);
    for id in ["door-1", "door-2"] {
        let events = door(&out, id);
        assert!(events.len() > 25, "{id}: {events:?}");
        assert_eq!(events[0].1, Kind::Badge);
        for w in events.windows(2) {
            match (w[0].1, w[1].1) {
                (Kind::Badge, Kind::Open) => assert!((w[1].0 - w[0].0 - 1.0).abs() < 1e-9, "{w:?}"),
                (Kind::Open, Kind::Badge) => assert!((5.0..=7.0).contains(&(w[1].0 - w[0].0)), "{w:?}"),
                // The last badge read of the run is not followed by an opening.
                _ => panic!("{id}: {w:?}"),
            }
        }
        assert_eq!(events.last().map(|e| e.1), Some(Kind::Badge), "{id} ends on a badge read");
        assert!(unanswered(&events).is_empty(), "{id}");
    }
    // JSON events with the codes of the docs.
    let first = out[0].publish().expect("publish");
    let v: Value = serde_json::from_slice(&first.payload).expect("JSON");
    assert_eq!((v["kind"].as_str(), v["code"].as_u64()), (Some("event"), Some(u64::from(firmware_sim::BADGE_CODE))));
}

#[test]
fn a_forced_door_is_the_only_unanswered_opening() {
    for start in ["20s", "20500ms", "21s", "24s", "26s"] {
        let text = format!("{DOORS}[[faults]]\nfault = \"forced_door\"\ndevice = \"door-2\"\nstart = \"{start}\"");
        let (out, sim) = run(&text, 60);
        let events = door(&out, "door-2");
        let forced: Vec<&Emission> =
            out.iter().filter(|e| e.publish().is_some_and(|p| p.faults.contains(FaultType::ForcedDoor))).collect();
        assert_eq!(forced.len(), 1);
        let at = forced[0].at.as_secs_f64();
        assert_eq!(unanswered(&events), [at], "start {start}: {events:?}");
        // No badge read in the 15 s after it.
        assert!(!events.iter().any(|(t, k)| *k == Kind::Badge && *t >= at && *t < at + 15.0));
        assert!(unanswered(&door(&out, "door-1")).is_empty());
        let t = &sim.truth()[0];
        assert_eq!((t.end_ms - t.start_ms, t.device.as_str()), (15_000, "door-2"));
    }
}

#[test]
fn faults_after_the_end_are_not_in_the_truth_and_spans_are_cut() {
    let (_, sim) = run(
        &sensors(
            "[[faults]]\nfault = \"silence\"\ndevice = \"s-0\"\nstart = \"8s\"\nduration = \"10s\"\n\
             [[faults]]\nfault = \"silence\"\ndevice = \"s-1\"\nstart = \"30s\"\nduration = \"10s\"",
        ),
        10,
    );
    let truth = sim.truth();
    assert_eq!(truth.len(), 1);
    assert_eq!(truth[0].end_ms - START_MS, 10_000);
    assert_eq!(sim.truth_at(Duration::from_secs(9))[0].end_ms - START_MS, 9_000);
}

#[test]
fn late_messages_are_lost_with_a_dropped_connection() {
    let text = format!(
        "{WIRELESS}[[faults]]\nfault = \"late\"\ndevice = \"w-1\"\nstart = \"1s\"\nduration = \"1s\"\ndelay = \"3s\"\n\
         [[faults]]\nfault = \"disconnect\"\ndevice = \"w-1\"\nstart = \"3500ms\"\nduration = \"2s\""
    );
    let (out, sim) = run(&text, 8);
    // The reading made at 1 s would arrive at 4 s, while the device is away: lost.
    assert!(!out.iter().any(|e| e.publish().is_some_and(|p| p.faults.contains(FaultType::Late))));
    let truth = sim.truth();
    assert_eq!(truth[0].messages, 1, "the late fault held one reading");
    // 3.5 .. 5.5 s: readings at 4 and 5, the heartbeat at 4, and the late reading.
    assert_eq!(truth[1].messages, 4);
}
