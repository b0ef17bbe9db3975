//! State survives a restart: what the engine names as touched, exported and imported into a
//! fresh engine, continues exactly where the old one stopped.

use crate::support::{H, Out};
use edgewatch_engine::{EngineConfig, Outputs, Tables, Timestamp, Touched};
use proptest::prelude::*;
use std::collections::BTreeMap;

const RULES: &str = r#"
rule("hot3", #{
    on: "s/{device}/t",
    window: #{ size: "10s", filter: |e| e.value > 50 },
    when: |e| e.window.count >= 3,
});
rule("per5s", #{ on: "s/{device}/t", window: #{ size: "5s", tumbling: true }, emit: |e| e.window.count });
rule("up-down", #{
    on: "s/{device}/t",
    sequence: [ #{ name: "up", when: |e| e.value > 80 }, #{ name: "no-down", when: |e| e.value < 20, absent: true } ],
    within: "4s",
});
rule("edge", #{ on: "s/{device}/t", when: |e| e.value > 90, clear: |e| e.value < 10 });
rule("alive", #{ on: "s/{device}/t", heartbeat: #{ timeout: "3s" } });
rule("count", #{
    on: "s/{device}/t",
    state: #{ n: 0 },
    on_event: |e| { this.n += 1; if this.n % 5 == 0 { emit(this.n); } after("2s", "quiet"); },
    on_timer: |name, data| emit(#{ quiet: this.n }),
});
"#;

/// A store as the agent keeps one: the latest export of everything touched.
fn persist(h: &H, out: &Outputs, store: &mut BTreeMap<String, (Touched, Option<Vec<u8>>)>) {
    for t in &out.touched {
        store.insert(format!("{t:?}"), (t.clone(), h.engine.export(t)));
    }
}

fn fresh() -> H {
    H::with(RULES, Tables::new(), CONFIG.with(|c| c.borrow().clone()))
}

thread_local! {
    static CONFIG: std::cell::RefCell<EngineConfig> = std::cell::RefCell::new(EngineConfig::default());
}

/// Feeds (device, gap, value) steps; after step `crash_at` the engine is replaced by a new
/// one that imports the store. Returns every output.
fn run(steps: &[(u8, i64, i64)], crash_at: Option<usize>) -> Vec<Out> {
    let mut h = fresh();
    let mut store = BTreeMap::new();
    let mut all = Vec::new();
    let mut t = 0;
    for (i, (d, gap, v)) in steps.iter().enumerate() {
        t += gap;
        h.engine.tick(Timestamp(t), &mut h.out);
        persist(&h, &h.out, &mut store);
        all.extend(h.take());
        let json = if CONFIG.with(|c| c.borrow().time_field.is_some()) {
            // Payload-timed, a little out of order: held for the lateness, then released.
            format!(r#"{{"ts":{},"value":{v}}}"#, t - (i as i64 % 3) * 300)
        } else {
            v.to_string()
        };
        h.engine.process(
            edgewatch_engine::Event::new(
                format!("s/d{d}/t"),
                serde_json::from_str(&json).expect("json"),
                json.as_bytes(),
                Timestamp(t),
            ),
            Timestamp(t),
            &mut h.out,
        );
        persist(&h, &h.out, &mut store);
        all.extend(h.take());
        if crash_at == Some(i) {
            h = fresh();
            for (what, bytes) in store.values() {
                if let Some(bytes) = bytes {
                    h.engine.import(what, bytes).expect("imports");
                }
            }
        }
    }
    h.engine.tick(Timestamp(t + 60_000), &mut h.out);
    all.extend(h.take());
    all
}

fn steps() -> impl Strategy<Value = Vec<(u8, i64, i64)>> {
    prop::collection::vec((0u8..3, 1i64..1_500, 0i64..100), 2..50)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn a_restart_from_persisted_state_changes_nothing(s in steps(), at in any::<prop::sample::Index>()) {
        let crash = at.index(s.len());
        prop_assert_eq!(run(&s, None), run(&s, Some(crash)));
    }

    #[test]
    fn events_held_for_lateness_survive_a_restart(s in steps(), at in any::<prop::sample::Index>()) {
        CONFIG.with(|c| *c.borrow_mut() = EngineConfig { time_field: Some("ts".into()), lateness_ms: 1_000, ..EngineConfig::default() });
        let crash = at.index(s.len());
        let (a, b) = (run(&s, None), run(&s, Some(crash)));
        CONFIG.with(|c| *c.borrow_mut() = EngineConfig::default());
        prop_assert_eq!(a, b);
    }
}

#[test]
fn after_a_long_stop_every_device_gets_a_full_timeout_instead_of_a_storm() {
    let src = r#"rule("offline", #{ on: "hb/{device}", heartbeat: #{ timeout: "30s" } });"#;
    let mut h = H::new(src);
    for d in ["a", "b", "c"] {
        h.send(0, &format!("hb/{d}"), "1");
    }
    let saved = h.engine.export_all();
    // The agent was down for two minutes: every deadline passed meanwhile.
    let mut h = H::new(src);
    for (what, bytes) in &saved {
        h.engine.import(what, bytes).expect("imports");
    }
    let mut out = Outputs::default();
    h.engine.grace_after_restart(Timestamp(120_000), &mut out);
    assert_eq!(out.touched.len(), 3, "the moved deadlines are to be persisted");
    assert!(h.tick(120_000).is_empty(), "no storm at restart");
    h.send(125_000, "hb/a", "1");
    let missing = h.tick(150_000);
    assert_eq!(
        missing.iter().map(|o| o.1.as_str()).collect::<Vec<_>>(),
        ["b", "c"],
        "the really silent ones, one timeout later"
    );
    assert_eq!(missing[0].3["last_seen"], "1970-01-01T00:00:00.000Z");
}

#[test]
fn absence_pauses_while_the_sensor_link_is_down() {
    let src = r#"rule("offline", #{ on: "hb/{device}", heartbeat: #{ timeout: "30s" } });"#;
    let mut h = H::new(src);
    h.send(0, "hb/a", "1");
    h.engine.pause_absence(Timestamp(10_000));
    assert!(h.tick(60_000).is_empty(), "link down: silence means nothing");
    let mut out = Outputs::default();
    h.engine.resume_absence(Timestamp(70_000), &mut out);
    // 60 s paused: the deadline moved from 30 s to 90 s.
    assert!(h.tick(89_999).is_empty());
    assert_eq!(h.tick(90_000).len(), 1);
}

#[test]
fn state_of_a_rule_that_changed_kind_is_refused() {
    let mut h = H::new(r#"rule("r", #{ on: "s/{device}", when: |e| e.value > 1, clear: |e| e.value < 0 });"#);
    h.send(0, "s/a", "5");
    let saved = h.engine.export_all();
    assert_eq!(saved.len(), 1);
    let mut other = H::new(r#"rule("r", #{ on: "s/{device}", window: #{ count: 3 } });"#);
    let err = other.engine.import(&saved[0].0, &saved[0].1).expect_err("kind changed");
    assert!(err.to_string().contains("does not fit a window rule"), "{err}");
}

#[test]
fn the_watermark_survives_a_restart_so_late_stays_late() {
    let config = EngineConfig { time_field: Some("ts".into()), lateness_ms: 1_000, ..EngineConfig::default() };
    let src = r#"rule("all", #{ on: "s/{device}" });"#;
    let mut h = H::with(src, Tables::new(), config.clone());
    h.send(1, "s/a", r#"{"ts": 10000, "value": 1}"#);
    h.send(2, "s/a", r#"{"ts": 12000, "value": 1}"#);
    let saved = h.engine.export_all();
    let mut h = H::with(src, Tables::new(), config);
    for (what, bytes) in &saved {
        h.engine.import(what, bytes).expect("imports");
    }
    h.engine.process(
        edgewatch_engine::Event::new(
            "s/a",
            serde_json::from_str(r#"{"ts": 5000, "value": 1}"#).expect("json"),
            b"x",
            Timestamp(3),
        ),
        Timestamp(3),
        &mut h.out,
    );
    assert_eq!(h.out.late.len(), 1, "older than the watermark before the restart: still late");
}

/// One rule of every kind, all listening to the same topic.
const EVERY_KIND: &str = r#"
rule("filter", #{ on: "s/{device}", when: |e| e.value > 1 });
rule("threshold", #{ on: "s/{device}", when: |e| e.value > 1, clear: |e| e.value < 0 });
rule("window", #{ on: "s/{device}", window: #{ size: "10s", tumbling: true } });
rule("stuck", #{ on: "s/{device}", stuck: #{ unchanged: "1m" } });
rule("sequence", #{
    on: "s/{device}",
    sequence: [ #{ when: |e| e.value > 1 }, #{ when: |e| e.value > 100 } ],
    within: "1m",
});
rule("heartbeat", #{ on: "s/{device}", heartbeat: #{ timeout: "30s" } });
rule("anomaly", #{ on: "s/{device}", anomaly: #{} });
rule("forecast", #{ on: "s/{device}", forecast: #{ below: 0, horizon: "1d" } });
rule("handler", #{
    on: "s/{device}",
    state: #{ n: 0 },
    on_event: |e| { this.n += 1; after("5s", "quiet"); },
    on_timer: |name, data| emit(#{ quiet: this.n }),
});
"#;

#[test]
fn every_kind_exports_imports_into_a_fresh_engine_and_exports_the_same_state() {
    let mut h = H::new(EVERY_KIND);
    h.send(0, "s/a", "5");
    h.send(1_000, "s/a", "5");
    let saved = h.engine.export_all();
    let rules: Vec<&str> = saved
        .iter()
        .filter_map(|(t, _)| match t {
            Touched::Rule { rule, key } if &**key == "a" => Some(&**rule),
            _ => None,
        })
        .collect();
    assert_eq!(
        rules,
        ["anomaly", "forecast", "handler", "heartbeat", "sequence", "stuck", "threshold", "window"],
        "a filter keeps nothing"
    );
    for (t, bytes) in &saved {
        if let Touched::Rule { rule, .. } = t {
            let v: serde_json::Value = serde_json::from_slice(bytes).expect("saved state is JSON");
            assert_eq!(v["kind"], **rule, "saved state is tagged with its kind");
        }
    }
    // The stored format is what earlier versions wrote.
    let threshold = saved.iter().find(|(t, _)| matches!(t, Touched::Rule { rule, .. } if &**rule == "threshold"));
    assert_eq!(threshold.map(|(_, b)| b.as_slice()), Some(&br#"{"kind":"threshold","active":true}"#[..]));

    let mut back = H::new(EVERY_KIND);
    for (what, bytes) in &saved {
        back.engine.import(what, bytes).expect("imports");
    }
    // The same state comes out again, but for which timer entry a heartbeat key has pending:
    // the original's is from the first message, a restored key arms one at its deadline.
    let comparable = |all: Vec<(Touched, Vec<u8>)>| -> Vec<(Touched, serde_json::Value)> {
        all.into_iter()
            .map(|(t, bytes)| {
                let mut v: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
                if let Some(m) = v.as_object_mut().filter(|m| m["kind"] == "heartbeat") {
                    m.remove("timer_at");
                }
                (t, v)
            })
            .collect()
    };
    assert_eq!(comparable(back.engine.export_all()), comparable(saved.clone()));
    // Timers were re-armed: the window closes, the handler's timer and the heartbeat fire,
    // the sequence times out, in both engines alike.
    let mut fired = 0;
    for t in [6_000, 10_000, 31_000, 61_000, 120_000] {
        let out = h.tick(t);
        fired += out.len();
        assert_eq!(out, back.tick(t), "at {t}");
    }
    assert!(fired >= 3, "the handler's timer, the window's close and the heartbeat fired: {fired}");
    assert_eq!(back.engine.stats().timers, h.engine.stats().timers);

    // State saved by one kind is refused by every other.
    for (what, bytes) in &saved {
        let Touched::Rule { rule, key } = what else { continue };
        for other in rules.iter().filter(|o| **o != &**rule) {
            let there = Touched::Rule { rule: (*other).into(), key: key.clone() };
            let err = back.engine.import(&there, bytes).expect_err("another kind");
            assert!(err.to_string().contains(&format!("does not fit a {other} rule")), "{err}");
        }
    }
}
