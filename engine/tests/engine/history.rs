//! History: readings folded into roll-ups per series, closed once per period, exactly what a
//! direct computation gives, across a restart too.

use crate::support::H;
use edgewatch_engine::history::{Closed, HistoryConfig, Remember, Resolution, Rollup, Skip};
use edgewatch_engine::{EngineConfig, Outputs, Tables, Timestamp, TopicPattern, Touched};
use std::collections::BTreeMap;

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
/// A Monday, 00:00 UTC: periods align to it.
const T0: i64 = 1_764_547_200_000;

fn config(max_series: usize) -> EngineConfig {
    EngineConfig {
        history: HistoryConfig {
            remember: vec![Remember {
                source: "sensors/#".into(),
                pattern: TopicPattern::parse("sensors/{device}/temperature").expect("a valid pattern"),
                fields: vec!["temperature".into()],
            }],
            max_series,
            ..HistoryConfig::default()
        },
        ..EngineConfig::default()
    }
}

/// A deterministic stream: (time, device, value), 3 devices, irregular gaps (some longer than
/// a fine period), two-decimal readings, over a little more than two hours.
fn stream() -> Vec<(i64, String, f64)> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut t = T0 + 17_000;
    let mut v = Vec::new();
    while t < T0 + 2 * HOUR + 10 * MIN {
        let device = format!("t-{}", next() % 3);
        let value = 2000.0 + (next() % 500) as f64;
        v.push((t, device, value / 100.0));
        t += if next() % 50 == 0 { 3 * MIN } else { 1_000 + (next() % 9_000) as i64 };
    }
    v
}

/// The roll-ups computed directly: (device, resolution, start) -> roll-up.
fn reference(readings: &[(i64, String, f64)]) -> BTreeMap<(String, Resolution, i64), Rollup> {
    let mut m: BTreeMap<_, Rollup> = BTreeMap::new();
    for (t, d, v) in readings {
        for (res, p) in [(Resolution::Fine, MIN), (Resolution::Coarse, HOUR)] {
            m.entry((d.clone(), res, t - t.rem_euclid(p))).and_modify(|r| r.fold(*v)).or_insert(Rollup::of(*v));
        }
    }
    m
}

fn closed_map(closed: &[Closed]) -> BTreeMap<(String, Resolution, i64), Rollup> {
    let mut m = BTreeMap::new();
    for c in closed {
        assert_eq!(&*c.field, "temperature");
        let old = m.insert((c.key.to_string(), c.resolution, c.start), c.rollup);
        assert!(old.is_none(), "closed twice: {c:?}");
    }
    m
}

fn send_reading(h: &mut H, t: i64, device: &str, value: f64) {
    h.send(t, &format!("sensors/{device}/temperature"), &format!("{{\"value\": {value}}}"));
}

#[test]
fn closed_rollups_equal_a_direct_computation() {
    let readings = stream();
    let mut h = H::with("", Tables::new(), config(100));
    for (t, d, v) in &readings {
        send_reading(&mut h, *t, d, *v);
    }
    // Nothing of the last periods closed before their end...
    let last = readings.last().map(|r| r.0).unwrap_or(T0);
    assert!(h.closed.iter().all(|c| c.start + MIN <= last || c.resolution == Resolution::Coarse));
    // ...and everything once processing time passes them.
    h.tick(last + 2 * HOUR);
    assert_eq!(closed_map(&h.closed), reference(&readings));
    assert!(h.engine.next_deadline().is_none(), "no open roll-up is left to close");
    assert!(h.skipped.is_empty());
}

/// A store as the agent keeps one: the latest export of everything touched.
fn persist(h: &H, out: &Outputs, store: &mut BTreeMap<String, (Touched, Option<Vec<u8>>)>) {
    for t in &out.touched {
        store.insert(format!("{t:?}"), (t.clone(), h.engine.export(t)));
    }
}

#[test]
fn a_restart_mid_period_loses_and_repeats_nothing() {
    let readings = stream();
    let crash_at = readings.len() / 2 + 7;
    let mut h = H::with("", Tables::new(), config(100));
    h.record_touched = true;
    let mut store = BTreeMap::new();
    for (i, (t, d, v)) in readings.iter().enumerate() {
        send_reading(&mut h, *t, d, *v);
        let out = Outputs { touched: std::mem::take(&mut h.touched), ..Outputs::default() };
        persist(&h, &out, &mut store);
        if i == crash_at {
            let closed = std::mem::take(&mut h.closed);
            h = H::with("", Tables::new(), config(100));
            h.record_touched = true;
            h.closed = closed;
            for (t, bytes) in store.values() {
                if let Some(bytes) = bytes {
                    h.engine.import(t, bytes).expect("saved series import");
                }
            }
            assert!(store.keys().any(|k| k.starts_with("Series")), "open roll-ups are saved state");
        }
    }
    h.tick(readings.last().map_or(T0, |r| r.0) + 2 * HOUR);
    assert_eq!(closed_map(&h.closed), reference(&readings));
}

#[test]
fn rules_remember_by_their_key_and_a_series_is_fed_once_per_event() {
    let rules = r#"
        rule("hot", #{ on: "plant/{line}/{device}", key: |e| e.line, when: |e| e.value > 90, remember: "temperature" });
        rule("warm", #{ on: "plant/{line}/{device}", key: |e| e.line, when: |e| e.value > 50, remember: ["temperature", "rpm"] });
    "#;
    let mut h = H::with(rules, Tables::new(), EngineConfig::default());
    h.send(T0 + 1_000, "plant/l1/m-1", r#"{"temperature": 20.5, "rpm": 1200}"#);
    h.send(T0 + 2_000, "plant/l1/m-2", r#"{"temperature": 21.5, "rpm": "fast"}"#);
    h.tick(T0 + 2 * HOUR);
    let fine: Vec<_> = h.closed.iter().filter(|c| c.resolution == Resolution::Fine).collect();
    assert_eq!(fine.len(), 2, "{fine:?}");
    let t = fine.iter().find(|c| &*c.field == "temperature").expect("temperature kept");
    assert_eq!((&*t.key, t.rollup.count, t.rollup.sum), ("l1", 2, 42.0), "folded once per event, by the rule's key");
    let rpm = fine.iter().find(|c| &*c.field == "rpm").expect("rpm kept");
    assert_eq!(rpm.rollup.count, 1);
    assert_eq!(h.skipped, vec![("warm".to_owned(), Skip::NotNumeric)]);
}

#[test]
fn bad_readings_are_counted_and_never_folded() {
    let mut cfg = config(2);
    cfg.time_field = Some("ts".into());
    cfg.lateness_ms = 0;
    let mut h = H::with("", Tables::new(), cfg);
    let now = T0 + 10 * MIN;
    let send = |h: &mut H, d: &str, body: &str| h.send(now, &format!("sensors/{d}/temperature"), body);
    send(&mut h, "a", &format!(r#"{{"value": 20.0, "ts": {now}}}"#));
    send(&mut h, "a", &format!(r#"{{"value": "hot", "ts": {now}}}"#));
    send(&mut h, "a", &format!(r#"{{"ts": {now}}}"#));
    // JSON has no NaN, but a plain payload or a wire frame may carry one.
    let mut nan = edgewatch_engine::Map::new();
    nan.insert("value".into(), edgewatch_engine::Dynamic::from_float(f64::NAN));
    nan.insert("ts".into(), edgewatch_engine::Dynamic::from_int(now));
    let e = edgewatch_engine::Event::new("sensors/a/temperature", nan.into(), b"nan", Timestamp(now));
    h.engine.process(e, Timestamp(now), &mut h.out);
    h.tick(now);
    send(&mut h, "b", &format!(r#"{{"value": 20.0, "ts": {now}}}"#));
    send(&mut h, "c", &format!(r#"{{"value": 20.0, "ts": {now}}}"#));
    // Last: it moves the watermark an hour ahead.
    send(&mut h, "a", &format!(r#"{{"value": 20.0, "ts": {}}}"#, now + HOUR));
    let why: Vec<Skip> = h.skipped.iter().map(|s| s.1).collect();
    assert_eq!(why, [Skip::NotNumeric, Skip::Missing, Skip::NonFinite, Skip::Full, Skip::OutOfRange]);
    assert!(h.skipped.iter().all(|s| s.0 == "sensors/#"));
    h.tick(now + 2 * HOUR);
    let a = h.closed.iter().find(|c| &*c.key == "a" && c.resolution == Resolution::Fine).expect("a kept");
    assert_eq!(a.rollup, Rollup::of(20.0));
}

#[test]
fn a_clock_that_jumps_back_reopens_the_period_without_mixing() {
    let mut h = H::with("", Tables::new(), config(10));
    send_reading(&mut h, T0 + 5 * MIN + 1_000, "a", 1.0);
    send_reading(&mut h, T0 + 5 * MIN + 2_000, "a", 2.0);
    // The gateway's clock goes back two minutes.
    send_reading(&mut h, T0 + 3 * MIN + 10_000, "a", 3.0);
    send_reading(&mut h, T0 + 5 * MIN + 5_000, "a", 4.0);
    h.tick(T0 + 3 * HOUR);
    let fine: Vec<_> = h.closed.iter().filter(|c| c.resolution == Resolution::Fine).collect();
    let at = |start: i64| -> Vec<(u64, f64)> {
        fine.iter().filter(|c| c.start == start).map(|c| (c.rollup.count, c.rollup.sum)).collect()
    };
    assert_eq!(at(T0 + 3 * MIN), [(1, 3.0)]);
    // Two records for the fifth minute, told apart by when they were opened: a reader merges them.
    assert_eq!(at(T0 + 5 * MIN), [(2, 3.0), (1, 4.0)]);
    let fifth: Vec<i64> = fine.iter().filter(|c| c.start == T0 + 5 * MIN).map(|c| c.opened).collect();
    assert_ne!(fifth[0], fifth[1]);
}

#[test]
fn open_periods_survive_a_reload_even_of_the_rule_that_remembered_them() {
    let src = r#"rule("hot", #{ on: "s/{device}/t", when: |e| e.value > 90, remember: "t" });"#;
    let mut h = H::new(src);
    h.send(T0 + 1_000, "s/a/t", "20");
    h.send(T0 + 2_000, "s/a/t", "22");
    // The rule goes; what it remembered this minute is kept and closes on time.
    let (other, errors) = edgewatch_engine::RuleSet::compile(
        h.engine.sandbox(),
        [("r.rhai", r#"rule("cold", #{ on: "s/{device}/t", when: |e| e.value < 0 });"#)],
    );
    assert!(errors.is_empty(), "{errors:?}");
    h.engine.reload(other, Timestamp(T0 + 3_000));
    h.send(T0 + 4_000, "s/a/t", "24");
    h.tick(T0 + HOUR + MIN);
    let fine: Vec<_> = h.closed.iter().filter(|c| c.resolution == Resolution::Fine).collect();
    assert_eq!(fine.len(), 1, "{fine:?}");
    assert_eq!(
        (fine[0].rollup.count, fine[0].rollup.sum),
        (2, 42.0),
        "the two readings before the reload, not the one after"
    );
}
