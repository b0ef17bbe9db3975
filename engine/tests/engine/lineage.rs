//! Lineage: every composite event names the inputs that caused it (bounded), and a chained
//! one its parent.

use crate::support::H;
use edgewatch_engine::{Causes, EngineConfig, EventId, Ref, Tables};

/// The reference of the JSON input `json` sent on `topic` at `t` (the harness's arrival).
fn r(topic: &str, json: &str, t: i64) -> Ref {
    Ref { id: (EventId::from_content(topic, json.as_bytes()).0 >> 64) as u64, at: t }
}

fn last(h: &H) -> Causes {
    h.causes.last().expect("an event").1.clone()
}

#[test]
fn a_threshold_event_names_its_input() {
    let mut h = H::new(r#"rule("hot", #{ on: "s/{device}/t", when: |e| e.value > 80 });"#);
    h.send(1_000, "s/a/t", "85");
    assert_eq!(last(&h), Causes::one(r("s/a/t", "85", 1_000)));
    assert_eq!(
        last(&h).encode(),
        format!("n=1;{}@1000", &format!("{:032x}", EventId::from_content("s/a/t", b"85").0)[..16])
    );
}

#[test]
fn a_window_of_thousands_names_its_first_and_last_three_and_counts_all_also_after_a_restart() {
    let src = r#"rule("avg", #{ on: "s/{device}/t", window: #{ count: 1000 }, when: |e| e.window.avg > 50 });"#;
    let mut h = H::new(src);
    let input = |i: i64| (format!("{}", i % 40), 10 * i);
    for i in 0..1500 {
        let (v, t) = input(i);
        h.send(t, "s/a/t", &v);
    }
    assert!(h.causes.is_empty(), "the average stays under 50");
    // A restart: the window's inputs come back with it.
    let saved = h.engine.export_all();
    let mut h = H::new(src);
    for (what, bytes) in &saved {
        h.engine.import(what, bytes).expect("imports");
    }
    for i in 1500..1600 {
        h.send(10 * i, "s/a/t", "1000");
    }
    let c = &h.causes[0].1;
    assert_eq!(c.count, 1000);
    let refs: Vec<Ref> = c.refs().copied().collect();
    assert_eq!(refs.len(), 6);
    let at = |i: i64| {
        let (v, t) = if i < 1500 { input(i) } else { ("1000".to_string(), 10 * i) };
        r("s/a/t", &v, t)
    };
    // The last ref is the input that fired: input number n.
    let n = refs[5].at / 10 + 1;
    assert!(n > 1500, "fired after the restart");
    assert_eq!(c.first, [at(n - 1000), at(n - 999), at(n - 998)]);
    assert_eq!(c.last, [at(n - 3), at(n - 2), at(n - 1)]);
    assert!(c.encode().contains(",...,"), "{}", c.encode());
}

#[test]
fn a_sequence_names_the_input_of_each_step_and_a_stuck_value_its_run() {
    let src = r#"
        rule("open-then-alarm", #{
            on: "door/{device}/+",
            sequence: [
                #{ name: "open", when: |e| e.payload.state == "open" },
                #{ name: "alarm", when: |e| e.payload.state == "alarm" },
            ],
            within: "1m",
        });
    "#;
    let mut h = H::new(src);
    let (open, noise, alarm) = (r#"{"state":"open"}"#, r#"{"state":"idle"}"#, r#"{"state":"alarm"}"#);
    h.send(1_000, "door/d1/s", open);
    h.send(2_000, "door/d1/s", noise);
    h.send(3_000, "door/d1/s", alarm);
    let c = last(&h);
    assert_eq!((c.count, c.first.clone()), (2, vec![r("door/d1/s", open, 1_000), r("door/d1/s", alarm, 3_000)]));

    let mut h = H::new(r#"rule("stuck", #{ on: "s/{device}", stuck: #{ unchanged: "1m" } });"#);
    for i in 0..=12 {
        h.send(i * 10_000, "s/a", &format!("{{\"value\": 5, \"n\": {i}}}"));
    }
    let c = last(&h);
    let at = |i: i64| r("s/a", &format!("{{\"value\": 5, \"n\": {i}}}"), i * 10_000);
    assert_eq!(c.count, 7, "the readings from the first unchanged one to the one that fired");
    assert_eq!((c.first.clone(), c.last.clone()), (vec![at(0), at(1), at(2)], vec![at(4), at(5), at(6)]));
}

#[test]
fn a_missing_heartbeat_names_the_last_input_before_the_silence() {
    let src = r#"rule("offline", #{ on: "hb/{device}", heartbeat: #{ timeout: "30s" } });"#;
    let mut h = H::new(src);
    h.send(0, "hb/a", "1");
    h.send(10_000, "hb/a", "2");
    assert_eq!(h.tick(41_000).len(), 1);
    assert_eq!(last(&h), Causes::one(r("hb/a", "2", 10_000)));
    // It comes back: the input that ended the silence.
    h.send(50_000, "hb/a", "3");
    assert_eq!(last(&h), Causes::one(r("hb/a", "3", 50_000)));
}

#[test]
fn a_chained_event_names_its_parent_and_the_events_it_saw() {
    let src = r#"
        rule("hot", #{ on: "s/{device}/t", when: |e| e.value > 80, clear: |e| e.value < 70 });
        rule("hot-twice", #{
            on: "gw/events/hot",
            window: #{ count: 2, tumbling: true, value: |e| 1 },
        });
    "#;
    let config = EngineConfig { chain_prefix: Some("gw/events".into()), ..EngineConfig::default() };
    let mut h = H::with(src, Tables::new(), config);
    h.send(1_000, "s/a/t", "85");
    h.send(2_000, "s/a/t", "60");
    h.send(3_000, "s/a/t", "90");
    let ids: Vec<_> = h.causes.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 3, "hot, hot, and hot-twice");
    let (first_hot, second_hot) = (ids[0], ids[1]);
    let c = last(&h);
    assert_eq!(c.parent, Some(second_hot));
    let refs: Vec<Ref> = c.refs().copied().collect();
    assert!(refs[0].is(first_hot.0) && refs[1].is(second_hot.0), "{c:?}");
    assert_eq!(h.causes[0].1.parent, None, "an event of a message has no parent");
}

#[test]
fn a_reordered_input_keeps_its_arrival_time() {
    let src = r#"rule("any", #{ on: "s/{device}/v" });"#;
    let config = EngineConfig { time_field: Some("ts".into()), lateness_ms: 5_000, ..EngineConfig::default() };
    let mut h = H::with(src, Tables::new(), config);
    let body = r#"{"ts":1000,"value":1}"#;
    h.send(2_000, "s/a/v", body);
    assert!(h.causes.is_empty(), "held");
    h.tick(60_000);
    assert_eq!(last(&h), Causes::one(r("s/a/v", body, 2_000)), "arrived at 2 s, released at 60 s");
}
