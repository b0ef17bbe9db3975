use crate::support::H;
use edgewatch_engine::{EngineConfig, Tables};

const COUNT: &str = r#"rule("n", #{ on: "s/{device}/v", window: #{ count: 100 }, emit: |e| e.window.count });"#;

#[test]
fn duplicates_by_device_and_sequence_are_dropped_and_counted() {
    let mut h = H::new(COUNT);
    assert_eq!(h.send(1, "s/a/v", r#"{"device":"a","seq":1,"value":1}"#)[0].3, 1);
    assert!(h.send(2, "s/a/v", r#"{"device":"a","seq":1,"value":1}"#).is_empty());
    assert_eq!(h.engine.stats().rules[0].2, 1);
    assert_eq!(h.send(3, "s/a/v", r#"{"device":"a","seq":2,"value":1}"#)[0].3, 2);
}

#[test]
fn out_of_order_within_lateness_is_reordered_and_later_is_late() {
    let src = r#"rule("seq", #{ on: "s/{device}/v", window: #{ count: 10 }, emit: |e| e.window.last });"#;
    let config = EngineConfig { time_field: Some("ts".into()), lateness_ms: 5_000, ..EngineConfig::default() };
    let mut h = H::with(src, Tables::new(), config);
    let send = |h: &mut H, ts: i64, v: i64| h.send(ts, "s/a/v", &format!(r#"{{"ts":{ts},"value":{v}}}"#));
    assert!(send(&mut h, 10_000, 1).is_empty(), "held for lateness");
    assert!(send(&mut h, 8_000, 0).is_empty(), "earlier, still in time");
    // 16 s releases everything up to 11 s, in event-time order: 0 then 1.
    let o = send(&mut h, 16_000, 2);
    assert_eq!(o.iter().map(|x| x.3.clone()).collect::<Vec<_>>(), [serde_json::json!(0.0), serde_json::json!(1.0)]);
    let late = h.send(17_000, "s/a/v", r#"{"ts":9000,"value":9}"#);
    assert!(late.is_empty());
    // A tick releases what waited long enough in processing time.
    let o = h.tick(30_000);
    assert_eq!(o.len(), 1);
}

#[test]
fn late_events_are_returned_for_dead_lettering() {
    let config = EngineConfig { time_field: Some("ts".into()), lateness_ms: 0, ..EngineConfig::default() };
    let mut h = H::with(COUNT, Tables::new(), config);
    h.send(10, "s/a/v", r#"{"ts":10000,"value":1}"#);
    h.engine.process(
        edgewatch_engine::Event::new(
            "s/a/v",
            serde_json::from_str(r#"{"ts":5000,"value":1}"#).expect("json"),
            b"x",
            edgewatch_engine::Timestamp(11),
        ),
        edgewatch_engine::Timestamp(11),
        &mut h.out,
    );
    assert_eq!(h.out.late.len(), 1);
    assert!(h.out.events.is_empty());
}

#[test]
fn a_rule_that_keeps_failing_is_disabled_and_the_others_run() {
    let src = r#"
        rule("bad", #{ on: "s/#", when: |e| e.payload.nope.deeper });
        rule("good", #{ on: "s/#" });
    "#;
    let mut h = H::new(src);
    for t in 0..12 {
        // Failing for more than one key: a single device cannot get a rule disabled.
        let topic = if t % 2 == 0 { "s/x" } else { "s/y" };
        assert_eq!(h.send(t, topic, "1").len(), 1, "good still fires at {t}");
    }
    assert_eq!(h.faults.len(), 11, "10 failures, then one `disabled` report, then silence: {:?}", h.faults);
    assert!(h.faults[10].contains("rule disabled"));
    assert!(h.engine.stats().rules[0].3, "bad is disabled");
}

#[test]
fn ids_longer_than_256_bytes_are_processed_but_not_remembered_for_deduplication() {
    let mut h = H::new(r#"rule("all", #{ on: "s/#", key: |e| "k" });"#);
    let long = "d".repeat(257);
    for _ in 0..3 {
        assert_eq!(h.send(0, "s/x", &format!(r#"{{"device": "{long}", "seq": 1}}"#)).len(), 1);
    }
    let short = "d".repeat(256);
    assert_eq!(h.send(0, "s/x", &format!(r#"{{"device": "{short}", "seq": 1}}"#)).len(), 1);
    assert!(h.send(0, "s/x", &format!(r#"{{"device": "{short}", "seq": 1}}"#)).is_empty(), "a duplicate");
}
