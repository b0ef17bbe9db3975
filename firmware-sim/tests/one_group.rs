//! One group of identical temperature sensors, the fleet `firmware-sim`'s flags describe
//! and the first API (`Fleet`, retired) ran: schedule, payloads and the simple faults.
//! Moved here from `fleet.rs` when the demo and the binary moved to scenarios.

use std::time::Duration;

use edgewatch_wire::{Body, decode};
use firmware_sim::{Emission, FaultType, Kind, Scenario, ScenarioError, SimOptions, Simulation};
use serde_json::{Value, json};

/// `devices` sensors `t-000` ..: a reading a second on `sensors/{device}/temperature`, a
/// heartbeat every 5 s, then `extra` (more group keys, then `[[faults]]` tables).
fn fleet(devices: usize, format: &str, group_extra: &str, faults: &str) -> Scenario {
    let signal = if group_extra.contains("[[groups.channels]]") {
        String::new()
    } else {
        "[[groups.channels]]\nname = \"temperature\"\n\
         signal = { model = \"sine\", base = 22.0, amplitude = 3.0, period = \"10m\", noise = 0.2 }\n"
            .to_owned()
    };
    let text = format!(
        "name = \"fleet\"\n[[groups]]\nname = \"fleet\"\nkind = \"sensor\"\ncount = {devices}\nid = \"t-{{index:03}}\"\n\
         format = \"{format}\"\n{group_extra}\n{signal}\n{faults}"
    );
    Scenario::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

const DEFAULTS: &str = "reading_interval = \"1s\"\nheartbeat_interval = \"5s\"\n\
                        reading_topic = \"sensors/{device}/{channel}\"\nheartbeat_topic = \"sensors/{device}/heartbeat\"\n";

fn small(format: &str) -> Scenario {
    fleet(3, format, DEFAULTS, "")
}

fn sim(scenario: &Scenario, seed: u64) -> Simulation {
    Simulation::new(scenario, SimOptions { seed, ..SimOptions::default() }).expect("builds")
}

/// Every message published before `end`.
fn until(scenario: &Scenario, seed: u64, end: Duration) -> Vec<Emission> {
    sim(scenario, seed).poll_until(end).into_iter().filter(|e| e.publish().is_some()).collect()
}

fn kind(e: &Emission) -> Kind {
    e.publish().expect("a publish").kind
}

fn payload(e: &Emission) -> &[u8] {
    &e.publish().expect("a publish").payload
}

fn topic(e: &Emission) -> &str {
    &e.publish().expect("a publish").topic
}

fn overheated(e: &Emission) -> bool {
    e.publish().is_some_and(|p| p.kind == Kind::Reading && p.faults.contains(FaultType::Overheat))
}

fn json_of(e: &Emission) -> Value {
    serde_json::from_slice(payload(e)).expect("valid JSON")
}

#[test]
fn same_seed_same_bytes() {
    let faults = "[[faults]]\nfault = \"malformed\"\ndevice = \"t-001\"\nstart = \"3500ms\"\n\
                  [[faults]]\nfault = \"overheat\"\ndevice = \"t-002\"\nstart = \"2s\"\nduration = \"3s\"\nvalue = 90.0\n";
    for format in ["json", "postcard"] {
        let scenario = fleet(3, format, DEFAULTS, faults);
        let a = until(&scenario, 42, Duration::from_secs(60));
        // Polling in different steps must not change anything either.
        let mut s = sim(&scenario, 42);
        let (mut b, mut t) = (Vec::new(), Duration::ZERO);
        while t < Duration::from_secs(60) {
            s.poll(t, &mut b);
            t += Duration::from_millis(333);
        }
        b.retain(|e| e.at < Duration::from_secs(60) && e.publish().is_some());
        assert_eq!(a.len(), 3 * 60 + 3 * 12 + 1);
        assert_eq!(a, b);
        // And a different seed changes the values.
        let other = until(&small(format), 7, Duration::from_secs(60));
        assert_ne!(a.iter().map(payload).collect::<Vec<_>>(), other.iter().map(payload).collect::<Vec<_>>());
    }
}

#[test]
fn a_device_does_not_depend_on_fleet_size() {
    // Device 0's readings are the same in a fleet of 1 and a fleet of 50 (device 0 is never
    // staggered).
    let one = until(&fleet(1, "json", DEFAULTS, ""), 42, Duration::from_secs(10));
    let many: Vec<Emission> = until(&fleet(50, "json", DEFAULTS, ""), 42, Duration::from_secs(10))
        .into_iter()
        .filter(|e| e.device == 0)
        .collect();
    assert_eq!(one, many);
}

#[test]
fn schedule_order_is_time_then_device_then_job() {
    let group = DEFAULTS.replace("heartbeat_interval = \"5s\"", "heartbeat_interval = \"2s\"");
    let msgs = until(&fleet(4, "json", &group, ""), 42, Duration::from_secs(4));
    let keys: Vec<(Duration, usize, Kind)> = msgs.iter().map(|e| (e.at, e.device, kind(e))).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    let ms = Duration::from_millis;
    assert_eq!(
        keys[..6],
        [
            (ms(0), 0, Kind::Reading),
            (ms(0), 0, Kind::Heartbeat),
            (ms(250), 1, Kind::Reading),
            (ms(500), 1, Kind::Heartbeat),
            (ms(500), 2, Kind::Reading),
            (ms(750), 3, Kind::Reading),
        ]
    );
    // 4 devices × 4 readings + 4 devices × 2 heartbeats in [0, 4 s).
    assert_eq!(msgs.len(), 16 + 8);
}

#[test]
fn next_due_and_poll_agree() {
    let mut s = sim(&small("json"), 42);
    let mut out = Vec::new();
    for _ in 0..50 {
        let due = s.next_due().expect("periodic fleets never run dry");
        out.clear();
        if let Some(before) = due.checked_sub(Duration::from_nanos(1)) {
            s.poll(before, &mut out);
            assert!(out.is_empty(), "nothing before next_due");
        }
        s.poll(due, &mut out);
        assert!(!out.is_empty());
        assert!(out.iter().all(|e| e.at == due));
        assert!(s.next_due() > Some(due));
    }
}

#[test]
fn stagger_spreads_ten_thousand_devices() {
    let group = DEFAULTS.replace("heartbeat_interval = \"5s\"\n", "");
    let mut s = sim(&fleet(10_000, "json", &group, ""), 42);
    let mut out = Vec::new();
    s.poll(Duration::ZERO, &mut out);
    assert_eq!(out.len(), 1, "only device 0 fires at t=0");
    s.poll(Duration::from_millis(100), &mut out);
    assert_eq!(out.len(), 1001);
    s.poll(Duration::from_millis(999), &mut out);
    assert_eq!(out.len(), 9991);
    out.clear();
    // A poll costs what is due, not the fleet size: one more device's reading.
    s.poll(Duration::from_micros(999_100), &mut out);
    assert_eq!(out.len(), 1);
}

#[test]
fn json_shape_is_exact() {
    let group = format!(
        "{DEFAULTS}[[groups.channels]]\nname = \"temperature\"\nsignal = {{ model = \"constant\", value = 23.5 }}\n"
    );
    let msgs = until(&fleet(3, "json", &group, ""), 42, Duration::from_secs(2));
    let reading = msgs.iter().find(|e| e.device == 1 && kind(e) == Kind::Reading).expect("device 1 reads");
    assert_eq!(topic(reading), "sensors/t-001/temperature");
    assert_eq!(reading.at, Duration::from_nanos(333_333_333));
    assert_eq!(
        std::str::from_utf8(payload(reading)).expect("UTF-8"),
        r#"{"device":"t-001","seq":0,"ts":1732170000333,"kind":"reading","temperature":23.5}"#
    );
    let hb = msgs.iter().find(|e| e.device == 1 && kind(e) == Kind::Heartbeat).expect("device 1 beats");
    assert_eq!(topic(hb), "sensors/t-001/heartbeat");
    assert_eq!(json_of(hb), json!({"device":"t-001","seq":2,"ts":1732170001666_u64,"kind":"heartbeat","uptime_s":1}));
}

#[test]
fn postcard_frames_decode_to_the_json_values() {
    let faults =
        "[[faults]]\nfault = \"overheat\"\ndevice = \"t-000\"\nstart = \"3s\"\nduration = \"2s\"\nvalue = 85.0\n";
    let js = until(&fleet(3, "json", DEFAULTS, faults), 42, Duration::from_secs(20));
    let pc = until(&fleet(3, "postcard", DEFAULTS, faults), 42, Duration::from_secs(20));
    assert_eq!(js.len(), pc.len());
    for (j, p) in js.iter().zip(&pc) {
        assert_eq!((topic(j), j.at, kind(j)), (topic(p), p.at, kind(p)));
        let msg = decode(payload(p)).expect("valid frame");
        assert_eq!(msg.device.as_str(), format!("t-{:03}", p.device));
        // The postcard frame, mapped to JSON, equals the JSON payload.
        assert_eq!(serde_json::to_value(msg.json()).expect("serializes"), json_of(j));
        if let Body::Reading(samples) = &msg.body {
            assert_eq!(samples.len(), 1);
            assert_eq!(samples[0].channel.as_str(), "temperature");
        }
    }
}

#[test]
fn overheat_span_is_honoured() {
    let (start, duration) = (Duration::from_secs(3), Duration::from_secs(2));
    let faults =
        "[[faults]]\nfault = \"overheat\"\ndevice = \"t-001\"\nstart = \"3s\"\nduration = \"2s\"\nvalue = 85.0\n";
    let mut s = sim(&fleet(3, "postcard", DEFAULTS, faults), 42);
    let msgs = s.poll_until(Duration::from_secs(10));
    let mut hot = 0;
    for e in msgs.iter().filter(|e| kind(e) == Kind::Reading) {
        let Ok(msg) = decode(payload(e)) else { panic!("bad frame") };
        let Body::Reading(samples) = msg.body else { panic!("not a reading") };
        let inside = e.device == 1 && e.at >= start && e.at < start + duration;
        assert_eq!(overheated(e), inside);
        assert_eq!(samples[0].value == 85.0, inside, "{e:?}");
        hot += usize::from(inside);
    }
    // Device 1 reads at 0.333 s + k: 3.333 and 4.333 fall inside [3 s, 5 s).
    assert_eq!(hot, 2);
    assert_eq!(s.stats().shaped, 2);
}

#[test]
fn silence_span_is_honoured_and_seq_resumes() {
    let faults = "[[faults]]\nfault = \"silence\"\ndevice = \"t-000\"\nstart = \"2s\"\nduration = \"5s\"\n";
    let mut s = sim(&fleet(3, "json", DEFAULTS, faults), 42);
    let msgs = s.poll_until(Duration::from_secs(10));
    let dev0: Vec<(Duration, u64)> =
        msgs.iter().filter(|e| e.device == 0).map(|e| (e.at, json_of(e)["seq"].as_u64().expect("seq"))).collect();
    assert!(dev0.iter().all(|(at, _)| *at < Duration::from_secs(2) || *at >= Duration::from_secs(7)));
    let seqs: Vec<u64> = dev0.iter().map(|(_, s)| *s).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    // Readings at 2..=6 and the heartbeat at 5 were held back.
    assert_eq!(s.stats().withheld, 6);
    // Other devices are untouched: 10 readings + 2 heartbeats each.
    assert_eq!(msgs.iter().filter(|e| e.device == 1).count(), 12);
}

#[test]
fn malformed_fault_sends_one_bad_payload() {
    let at = Duration::from_millis(4200);
    let faults = "[[faults]]\nfault = \"malformed\"\ndevice = \"t-002\"\nstart = \"4200ms\"\n";
    for format in ["json", "postcard"] {
        let msgs = until(&fleet(3, format, DEFAULTS, faults), 42, Duration::from_secs(10));
        let bad: Vec<&Emission> = msgs.iter().filter(|e| kind(e) == Kind::Malformed).collect();
        assert_eq!(bad.len(), 1);
        assert_eq!((bad[0].device, bad[0].at), (2, at));
        assert_eq!(topic(bad[0]), "sensors/t-002/temperature");
        assert!(bad[0].publish().is_some_and(|p| p.faults.contains(FaultType::Malformed)));
        assert!(decode(payload(bad[0])).is_err());
        assert!(serde_json::from_slice::<Value>(payload(bad[0])).is_err());
        // Every other payload is well-formed.
        for e in msgs.iter().filter(|e| kind(e) != Kind::Malformed) {
            match format {
                "json" => assert!(serde_json::from_slice::<Value>(payload(e)).is_ok()),
                _ => assert!(decode(payload(e)).is_ok()),
            }
        }
    }
}

#[test]
fn heartbeats_can_be_off_and_topics_can_be_bare() {
    let group = "reading_interval = \"1s\"\nreading_topic = \"{device}/{channel}\"\n";
    let msgs = until(&fleet(3, "json", group, ""), 42, Duration::from_secs(5));
    assert!(msgs.iter().all(|e| kind(e) == Kind::Reading));
    assert_eq!(topic(&msgs[0]), "t-000/temperature");
}

#[test]
fn invalid_fleets_are_refused() {
    // Refused by validation (`Invalid`, naming the key), not by the TOML parser.
    let refused = |devices: usize, id: &str, group: &str, channel: &str, faults: &str| {
        let text = format!(
            "name = \"fleet\"\n[[groups]]\nname = \"fleet\"\nkind = \"sensor\"\ncount = {devices}\nid = \"{id}\"\n{group}\n\
             [[groups.channels]]\n{channel}\n{faults}"
        );
        let e = Scenario::from_toml(&text).expect_err(&format!("should be refused:\n{text}"));
        assert!(matches!(e, ScenarioError::Invalid { .. }), "{e}\n{text}");
    };
    let (id, temperature) = ("t-{index:03}", "name = \"temperature\"");
    refused(0, id, DEFAULTS, temperature, "");
    refused(3, id, &DEFAULTS.replace("\"1s\"", "\"0s\""), temperature, "");
    refused(3, id, &DEFAULTS.replace("\"5s\"", "\"0s\""), temperature, "");
    refused(3, "a-very-long-prefix-for-an-id-xyz-{index:03}", DEFAULTS, temperature, "");
    refused(3, "a/b{index:03}", DEFAULTS, temperature, "");
    refused(3, id, &DEFAULTS.replace("sensors/{device}/{channel}", "s/#/{device}/{channel}"), temperature, "");
    for channel in ["kind", "", "a-channel-too-long", "heartbeat"] {
        refused(3, id, DEFAULTS, &format!("name = \"{channel}\""), "");
    }
    let fault = "[[faults]]\nfault = \"malformed\"\ndevice = \"t-020\"\nstart = \"0s\"\n";
    refused(3, id, DEFAULTS, temperature, fault);
    refused(3, id, DEFAULTS, "name = \"temperature\"\nsignal = { model = \"constant\", value = inf }", "");
}

#[test]
fn payload_format_parses() {
    use firmware_sim::PayloadFormat;
    assert_eq!("JSON".parse(), Ok(PayloadFormat::Json));
    assert_eq!("postcard".parse(), Ok(PayloadFormat::Postcard));
    assert!("cbor".parse::<PayloadFormat>().is_err());
    assert_eq!(PayloadFormat::Postcard.to_string(), "postcard");
}
