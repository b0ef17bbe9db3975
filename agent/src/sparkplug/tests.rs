//! A session of pysparkplug's edge node (the payloads in `agent/tests/fixtures/sparkplug/`), and
//! the refusals that must leave the state as it was.

use super::proto::{Metric, MetricValue, Payload, datatype as dt};
use super::*;
use prost::Message;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/sparkplug/{name}.bin", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const NODE: &str = "spBv1.0/plant1/NBIRTH/gw1";
const MOTOR: &str = "spBv1.0/plant1/DDATA/gw1/motor1";

/// Applies a fixture on its topic (the message type is the fixture's).
fn apply(s: &mut Sessions, name: &str, now: u64) -> Result<Outcome, SparkplugError> {
    let topic = match name.trim_end_matches("_again") {
        "nbirth" => NODE.to_owned(),
        "ndeath" => "spBv1.0/plant1/NDEATH/gw1".to_owned(),
        "ncmd_rebirth" => "spBv1.0/plant1/NCMD/gw1".to_owned(),
        "dbirth" => "spBv1.0/plant1/DBIRTH/gw1/motor1".to_owned(),
        "ddeath" => "spBv1.0/plant1/DDEATH/gw1/motor1".to_owned(),
        _ => MOTOR.to_owned(),
    };
    s.apply(&topic, &fixture(name), now, &Limits::default())
}

fn update(outcome: Result<Outcome, SparkplugError>) -> Update {
    match outcome {
        Ok(Outcome::Update(u)) => u,
        other => panic!("expected an update, got {other:?}"),
    }
}

/// What the sessions know of `metric`, after `u`, of `u`'s node or device.
fn known(s: &Sessions, u: &Update, metric: &str) -> Known {
    let (metrics, _) = s.metrics(&u.group, &u.node, u.device.as_deref()).expect("a known node or device");
    metrics.get(metric).unwrap_or_else(|| panic!("{metric} not in {metrics:?}")).clone()
}

fn value(s: &Sessions, u: &Update, metric: &str) -> Value {
    known(s, u, metric).value
}

fn names(list: &[&str]) -> Vec<rhai::ImmutableString> {
    list.iter().map(|n| rhai::ImmutableString::from(*n)).collect()
}

#[test]
fn a_session_of_an_independent_edge_node_reads_as_its_metrics_say() {
    let mut s = Sessions::default();
    let birth = update(apply(&mut s, "nbirth", 1_000));
    assert_eq!((birth.kind, birth.seq, birth.device.as_deref()), (Kind::NBirth, Some(0), None));
    assert_eq!(value(&s, &birth, "Properties/Firmware"), Value::Text("1.2.3".into()));
    assert_eq!(value(&s, &birth, "bdSeq"), Value::Int(0));
    assert_eq!(birth.liveness, vec![Liveness { device: None, alive: true, downtime: None }]);

    let device = update(apply(&mut s, "dbirth", 1_000));
    assert_eq!(device.gap, None);
    assert_eq!(known(&s, &device, "Motor/Speed").datatype, dt::DOUBLE);
    assert_eq!(device.liveness, vec![Liveness { device: Some("motor1".into()), alive: true, downtime: None }]);

    let speed = update(apply(&mut s, "ddata", 1_000));
    assert_eq!(speed.changed, names(&["Motor/Speed"]));
    assert_eq!(value(&s, &speed, "Motor/Speed"), Value::Float(1500.5));
    assert_eq!(value(&s, &speed, "Motor/Current"), Value::Float(0.0), "the birth's value, still the last known");

    // Another metric, in another message: both are known now.
    let current = update(apply(&mut s, "ddata_current", 1_000));
    assert_eq!(
        (value(&s, &current, "Motor/Speed"), value(&s, &current, "Motor/Current")),
        (Value::Float(1500.5), Value::Float(12.25))
    );
    assert_eq!(known(&s, &current, "Motor/Current").timestamp, Some(1_796_512_551_649), "the metric's own time");

    // By alias only, with no datatype: both come from the birth.
    let by_alias = update(apply(&mut s, "ddata_alias_only", 1_000));
    assert_eq!(by_alias.changed, names(&["Motor/Speed"]));
    assert_eq!(value(&s, &by_alias, "Motor/Speed"), Value::Float(1501.0));
    assert_eq!(by_alias.gap, None, "seq 0..4 in order");

    let gone = update(apply(&mut s, "ddeath", 1_000));
    assert_eq!(gone.liveness, vec![Liveness { device: Some("motor1".into()), alive: false, downtime: None }]);
    let (motor, alive) = s.metrics("plant1", "gw1", Some("motor1")).expect("kept");
    assert!(!alive && motor.iter().all(|(_, k)| k.stale), "a dead device's values are not current");
    let refused = apply(&mut s, "ddata", 1_000).expect_err("no data from a dead device");
    assert_eq!(refused.reason(), "sparkplug_birth");
    assert_eq!(refused.rebirth(), Some(("plant1", "gw1")));

    assert_eq!(apply(&mut s, "ncmd_rebirth", 1_000), Ok(Outcome::Ignored("command")));
}

#[test]
fn a_death_takes_the_node_and_its_devices_and_a_rebirth_brings_them_back_with_the_downtime() {
    let mut s = Sessions::default();
    for name in ["nbirth", "dbirth", "ddata"] {
        update(apply(&mut s, name, 0));
    }
    // The will is stamped when its session connected; the death is dated by its arrival, a
    // minute later here, and the rebirth comes 30 s after that.
    let stamped = Payload::decode(fixture("ndeath").as_slice()).expect("decodes").timestamp.expect("stamped");
    let died = stamped + 60_000;
    let death = update(apply(&mut s, "ndeath", died));
    assert_eq!(death.kind, Kind::NDeath);
    assert_eq!(
        death.liveness,
        vec![
            Liveness { device: None, alive: false, downtime: None },
            Liveness { device: Some("motor1".into()), alive: false, downtime: None },
        ]
    );
    let (motor, alive) = s.metrics("plant1", "gw1", Some("motor1")).expect("kept");
    assert!(!alive && motor.get("Motor/Speed").expect("known").stale);
    assert_eq!(motor.get("Motor/Speed").expect("known").value, Value::Float(1500.5), "kept, marked stale");
    let again = update(apply(&mut s, "nbirth_again", died + 30_000));
    assert_eq!(again.liveness, vec![Liveness { device: None, alive: true, downtime: Some(30_000) }]);
    let device = update(apply(&mut s, "dbirth_again", died + 31_000));
    assert_eq!(device.liveness, vec![Liveness { device: Some("motor1".into()), alive: true, downtime: Some(31_000) }]);
    let (motor, alive) = s.metrics("plant1", "gw1", Some("motor1")).expect("kept");
    assert!(alive && motor.iter().all(|(_, k)| !k.stale));
    // The first session's will, delivered late, is not this session's death (bdSeq 0, not 1).
    assert_eq!(apply(&mut s, "ndeath", died + 32_000), Ok(Outcome::Ignored("stale_death")));
    assert!(s.metrics("plant1", "gw1", None).expect("known").1, "still alive");
    let death = update(apply(&mut s, "ndeath_again", died + 33_000));
    assert_eq!(death.liveness.len(), 2);
}

#[test]
fn sequence_numbers_wrap_and_gaps_are_reported() {
    let mut s = Sessions::default();
    update(apply(&mut s, "nbirth", 0));
    update(apply(&mut s, "dbirth", 0));
    let data = |seq: u64| {
        let metric = Metric { alias: Some(10), value: Some(MetricValue::DoubleValue(1.0)), ..Metric::default() };
        Payload { timestamp: Some(1), metrics: vec![metric], seq: Some(seq) }.encode_to_vec()
    };
    let limits = Limits::default();
    for seq in 2..=255 {
        let u = update(s.apply(MOTOR, &data(seq), 0, &limits));
        assert_eq!(u.gap, None, "seq {seq}");
    }
    assert_eq!(update(s.apply(MOTOR, &data(0), 0, &limits)).gap, None, "255 wraps to 0");
    assert_eq!(update(s.apply(MOTOR, &data(3), 0, &limits)).gap, Some(Gap { expected: 1, got: 3 }));
    assert_eq!(update(s.apply(MOTOR, &data(4), 0, &limits)).gap, None, "counted from the last one seen");
}

#[test]
fn bad_messages_are_refused_with_their_reason_and_change_nothing() {
    let mut s = Sessions::default();
    update(apply(&mut s, "nbirth", 0));
    update(apply(&mut s, "dbirth", 0));
    let before = s.clone();
    let limits = Limits::default();
    let metric = |name: Option<&str>, alias: Option<u64>, datatype: Option<u32>, value: MetricValue| Metric {
        name: name.map(str::to_owned),
        alias,
        datatype,
        value: Some(value),
        ..Metric::default()
    };
    let payload =
        |metrics: Vec<Metric>, seq: u64| Payload { timestamp: Some(1), metrics, seq: Some(seq) }.encode_to_vec();
    let double = MetricValue::DoubleValue(2.0);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (MOTOR, payload(vec![metric(None, Some(99), None, double.clone())], 2), "sparkplug_alias"),
        (MOTOR, payload(vec![metric(None, None, None, double.clone())], 2), "sparkplug_alias"),
        (
            MOTOR,
            payload(vec![metric(Some("Motor/Torque"), None, Some(dt::DOUBLE), double.clone())], 2),
            "sparkplug_alias",
        ),
        (
            MOTOR,
            payload(vec![metric(None, Some(10), None, MetricValue::StringValue("fast".into()))], 2),
            "sparkplug_type",
        ),
        // The first metric is fine, the second is not: neither is applied.
        (
            MOTOR,
            payload(
                vec![metric(None, Some(10), None, double.clone()), metric(None, Some(77), None, double.clone())],
                2,
            ),
            "sparkplug_alias",
        ),
        (
            "spBv1.0/plant1/DBIRTH/gw1/motor1",
            payload(
                vec![
                    metric(Some("A"), Some(1), Some(dt::DOUBLE), double.clone()),
                    metric(Some("B"), Some(1), Some(dt::DOUBLE), double.clone()),
                ],
                2,
            ),
            "sparkplug_alias",
        ),
        (
            "spBv1.0/plant1/DBIRTH/gw1/motor1",
            payload(vec![metric(None, Some(1), Some(dt::DOUBLE), double.clone())], 2),
            "sparkplug_alias",
        ),
        (
            "spBv1.0/plant1/DBIRTH/gw1/motor1",
            payload(
                vec![
                    metric(Some("A"), Some(1), Some(dt::DOUBLE), double.clone()),
                    metric(Some("A"), Some(2), Some(dt::DOUBLE), double.clone()),
                ],
                2,
            ),
            "sparkplug_alias",
        ),
        (
            "spBv1.0/plant1/DBIRTH/gw1/motor1",
            payload(vec![metric(Some("A"), Some(1), Some(16), MetricValue::BytesValue(vec![1]))], 2),
            "sparkplug_type",
        ),
        (MOTOR, vec![0x12, 0xff, 0x01], "sparkplug_protobuf"),
        (MOTOR, fixture("ddata")[..20].to_vec(), "sparkplug_protobuf"),
        ("spBv1.0/plant1/DDATA/gw1", fixture("ddata"), "sparkplug_topic"),
        ("sensors/t1", fixture("ddata"), "sparkplug_topic"),
        ("spBv1.0/plant1/DDATA/gw1/pump9", fixture("ddata"), "sparkplug_birth"),
        ("spBv1.0/plant1/NDATA/gw7", fixture("ddata"), "sparkplug_birth"),
        ("spBv1.0/plant1/DBIRTH/gw7/motor1", fixture("dbirth"), "sparkplug_birth"),
    ];
    for (topic, bytes, reason) in cases {
        let refused = s.apply(topic, &bytes, 0, &limits).expect_err(topic);
        assert_eq!(refused.reason(), reason, "{topic}: {refused}");
        assert!(!refused.to_string().is_empty());
        assert_eq!(s, before, "{topic} ({reason}) changed the state");
    }
    // Too much: metrics in one message, devices, nodes.
    let small = Limits { max_nodes: 1, max_devices: 1, max_metrics: 2, max_name_bytes: 8 };
    let many = payload(vec![metric(None, Some(10), None, double.clone()); 3], 2);
    assert_eq!(s.apply(MOTOR, &many, 0, &small).map_err(|e| e.reason()), Err("sparkplug_limit"));
    let other = s.apply("spBv1.0/plant1/DBIRTH/gw1/motor2", &fixture("dbirth"), 0, &small);
    assert_eq!(other.map_err(|e| e.reason()), Err("sparkplug_limit"));
    let node = s.apply("spBv1.0/plant1/NBIRTH/gw2", &fixture("nbirth"), 0, &small);
    assert_eq!(node.map_err(|e| e.reason()), Err("sparkplug_limit"));
    let long = s.apply("spBv1.0/plant1/DDATA/gw1/a-long-device-name", &fixture("ddata"), 0, &small);
    assert_eq!(long.map_err(|e| e.reason()), Err("sparkplug_limit"));
    assert_eq!(s, before);
}

#[test]
fn sessions_survive_a_round_trip_through_their_serialized_form() {
    let mut s = Sessions::default();
    for name in ["nbirth", "dbirth", "ddata", "ddata_current"] {
        update(apply(&mut s, name, 0));
    }
    let bytes = serde_json::to_vec(&s).expect("serializes");
    let mut back: Sessions = serde_json::from_slice(&bytes).expect("deserializes");
    assert_eq!(back, s);
    // Aliases learned before the restart still resolve after it.
    let u = update(apply(&mut back, "ddata_alias_only", 0));
    assert_eq!(value(&back, &u, "Motor/Speed"), Value::Float(1501.0));
    assert_eq!(u.gap, None);
}

/// What rules see: the last known value of every metric by name, what changed, the key, and
/// Sparkplug's own fields under `sparkplug`.
#[test]
fn rules_see_every_metric_by_name_what_changed_and_the_topic_levels() {
    let mut s = Sessions::default();
    for name in ["nbirth", "dbirth", "ddata"] {
        update(apply(&mut s, name, 0));
    }
    let u = update(apply(&mut s, "ddata_current", 0));
    let (metrics, alive) = s.metrics(&u.group, &u.node, u.device.as_deref()).expect("known");
    let p = serde_json::to_value(event::payload(&u, metrics, alive)).expect("serializes");
    assert_eq!(p["device"], "plant1/gw1/motor1", "the key names the device across groups");
    assert_eq!(p["metrics"]["Motor/Speed"], 1500.5, "from the message before");
    assert_eq!(p["metrics"]["Motor/Current"], 12.25);
    let changed = serde_json::json!({"Motor/Current": 1_796_512_551_649u64});
    assert_eq!(p["changed"], changed, "what this message carried, with the metric's own time");
    assert_eq!(p["stale"], false);
    assert!(p.get("types").is_none(), "types come with births");
    assert_eq!(
        p["sparkplug"],
        serde_json::json!({"group": "plant1", "node": "gw1", "device": "motor1", "type": "DDATA", "seq": 3, "timestamp": 1_796_512_551_650u64})
    );
    assert!(p.get("seq").is_none(), "Sparkplug's seq is not a sensor's sequence number");
    assert_eq!(p["timestamp"], 1_796_512_551_649u64, "the newest metric's time: `engine.time_field`'s");
    // A death: the same values, marked stale; one event for the node, one per device with it.
    let death = update(apply(&mut s, "ndeath", 0));
    let all: Vec<serde_json::Value> =
        event::payloads(&death, &s).into_iter().map(|p| serde_json::to_value(p).expect("serializes")).collect();
    assert_eq!(all.len(), 2);
    let p = &all[0];
    assert_eq!((p["device"].as_str(), p["stale"].as_bool()), (Some("plant1/gw1"), Some(true)));
    assert_eq!(p["metrics"]["Properties/Firmware"], "1.2.3", "kept");
    assert_eq!(p["sparkplug"]["device"], serde_json::Value::Null);
    let d = &all[1];
    assert_eq!((d["device"].as_str(), d["stale"].as_bool()), (Some("plant1/gw1/motor1"), Some(true)));
    assert_eq!((d["sparkplug"]["type"].as_str(), d["sparkplug"]["device"].as_str()), (Some("NDEATH"), Some("motor1")));
    assert_eq!(d["metrics"]["Motor/Current"], 12.25, "its last values, stale");
    // A birth declares the types, and the values are current again.
    let birth = update(apply(&mut s, "nbirth_again", 0));
    let (metrics, alive) = s.metrics(&birth.group, &birth.node, None).expect("known");
    let p = serde_json::to_value(event::payload(&birth, metrics, alive)).expect("serializes");
    assert_eq!(
        (p["types"]["bdSeq"].as_str(), p["types"]["Properties/Firmware"].as_str()),
        (Some("Int64"), Some("String"))
    );
    assert_eq!(p["stale"], false);
}

#[test]
fn a_gap_is_in_the_event_for_rules() {
    let mut s = Sessions::default();
    update(apply(&mut s, "nbirth", 0));
    update(apply(&mut s, "dbirth", 0));
    // ddata_current has seq 3: the DDATA with seq 2 was lost.
    let u = update(apply(&mut s, "ddata_current", 0));
    let p = serde_json::to_value(&event::payloads(&u, &s)[0]).expect("serializes");
    assert_eq!(p["sparkplug"]["gap"], serde_json::json!({"expected": 2, "got": 3}));
}

/// What the agent writes with each batch: only the parts a message changed, one record each (a
/// node's own part, and each device's), from which a restarted agent resolves the same aliases.
#[test]
fn each_changed_part_is_written_once_and_restores_alone() {
    let part =
        |device: Option<&str>| Part { group: "plant1".into(), node: "gw1".into(), device: device.map(Into::into) };
    let mut s = Sessions::default();
    for name in ["nbirth", "dbirth"] {
        update(apply(&mut s, name, 0));
    }
    s.take_changed();
    update(apply(&mut s, "ddata", 0));
    let changed: Vec<Part> = s.take_changed().into_iter().collect();
    assert_eq!(changed, [part(None), part(Some("motor1"))], "its node's seq and its device's values");
    assert!(s.take_changed().is_empty(), "taken");
    assert!(apply(&mut s, "ncmd_rebirth", 0).is_ok());
    let data = Payload { timestamp: Some(1), metrics: vec![], seq: Some(9) }.encode_to_vec();
    s.apply("spBv1.0/plant1/NDATA/other", &data, 0, &Limits::default()).expect_err("never born");
    assert!(s.take_changed().is_empty(), "refusals and commands change nothing");
    update(apply(&mut s, "nbirth_again", 0));
    assert_eq!(s.take_changed().len(), 2, "a node's birth clears its devices' aliases");

    let mut restarted = Sessions::default();
    assert!(restarted.import(&part(Some("motor1")), b"{}").is_err(), "a device before its node");
    for p in [part(None), part(Some("motor1"))] {
        restarted.import(&p, &s.export(&p).expect("known")).expect("restores");
    }
    assert_eq!(restarted, s);
    assert_eq!(s.export(&part(Some("nope"))), None);
    update(apply(&mut restarted, "dbirth_again", 0));
    let u = update(apply(&mut restarted, "ddata_alias_only", 0));
    assert_eq!(value(&restarted, &u, "Motor/Speed"), Value::Float(1501.0));
    assert!(restarted.import(&part(None), b"{").is_err(), "a damaged record is an error");
    // A node's own part again (a later batch) keeps the devices restored before.
    restarted.import(&part(None), &s.export(&part(None)).expect("known")).expect("restores");
    assert!(restarted.metrics("plant1", "gw1", Some("motor1")).is_some());
}

/// Sparkplug puts a value's quality in the metric's `Quality` property (OPC UA's codes, as
/// Ignition sends them): rules and the console see the last one per metric.
#[test]
fn a_quality_property_goes_with_its_value() {
    use super::proto::{PropertyKind, PropertySet, PropertyValue};
    let mut s = Sessions::default();
    update(apply(&mut s, "nbirth", 0));
    update(apply(&mut s, "dbirth", 0));
    let with_quality = |code: u32| {
        let metric = Metric {
            alias: Some(10),
            value: Some(MetricValue::DoubleValue(7.0)),
            properties: Some(
                PropertySet {
                    keys: vec!["engUnit".into(), edgewatch_sparkplug::QUALITY.into()],
                    values: vec![
                        PropertyValue {
                            value: Some(PropertyKind::StringValue("rpm".into())),
                            ..PropertyValue::default()
                        },
                        PropertyValue {
                            r#type: Some(3),
                            value: Some(PropertyKind::IntValue(code)),
                            ..PropertyValue::default()
                        },
                    ],
                }
                .encode_to_vec(),
            ),
            ..Metric::default()
        };
        Payload { timestamp: Some(1), metrics: vec![metric], seq: Some(2) }.encode_to_vec()
    };
    let u = update(s.apply(MOTOR, &with_quality(0), 0, &Limits::default()));
    assert_eq!(known(&s, &u, "Motor/Speed").quality, Some(0), "bad");
    assert_eq!(known(&s, &u, "Motor/Current").quality, None, "never sent");
    let p = serde_json::to_value(&event::payloads(&u, &s)[0]).expect("serializes");
    assert_eq!(p["quality"], serde_json::json!({"Motor/Speed": 0}));
    let view = event::view(&s, "plant1/gw1/motor1").expect("known");
    assert_eq!((view["metrics"][0]["quality"].as_i64(), view["metrics"][1]["quality"].is_null()), (Some(0), true));
    // Without a quality, the payload has no `quality` at all.
    let plain = update(apply(&mut s, "nbirth_again", 0));
    let p = serde_json::to_value(&event::payloads(&plain, &s)[0]).expect("serializes");
    assert!(p.get("quality").is_none(), "{p}");
    // A negative Int32 is read as the edge node meant it.
    assert_eq!(Metric { properties: with_quality_set(u32::MAX), ..Metric::default() }.quality(), Some(-1));
}

fn with_quality_set(code: u32) -> Option<Vec<u8>> {
    use super::proto::{PropertyKind, PropertySet, PropertyValue};
    let set = PropertySet {
        keys: vec![edgewatch_sparkplug::QUALITY.into()],
        values: vec![PropertyValue { value: Some(PropertyKind::IntValue(code)), ..PropertyValue::default() }],
    };
    Some(set.encode_to_vec())
}
