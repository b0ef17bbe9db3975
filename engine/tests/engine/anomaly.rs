//! The `anomaly` kind: a detector per key, one event per episode, or every reading's score.

use crate::support::H;
use edgewatch_engine::{RuleSet, Sandbox, Touched};
use std::sync::Arc;

const MIN: i64 = 60_000;

/// A day-long wave around 20 °C with a deterministic ripple, a reading a minute.
fn normal(i: i64) -> f64 {
    20.0 + 2.0 * (i as f64 * std::f64::consts::TAU / 1_440.0).sin() + 0.1 * ((i * 7919) % 13 - 6) as f64 / 6.0
}

const RULE: &str = r#"
rule("odd", #{
    on: "s/{device}/t",
    anomaly: #{ learn: 1440 },
    emit: |e| #{ device: e.device, kind: e.anomaly.kind, score: e.anomaly.score, since: e.anomaly.since,
                 observed: e.anomaly.observed, expected: e.anomaly.expected, band: e.anomaly.band },
});
"#;

/// Readings `from..to` of the wave for device `d`, with `f` applied; the events.
fn feed(h: &mut H, d: &str, from: i64, to: i64, f: impl Fn(i64, f64) -> f64) -> Vec<crate::support::Out> {
    let topic = format!("s/{d}/t");
    (from..to).flat_map(|i| h.send(i * MIN, &topic, &format!("{:.4}", f(i, normal(i))))).collect()
}

#[test]
fn a_spike_is_one_event_with_what_was_expected_and_since_when() {
    let mut h = H::new(RULE);
    assert!(feed(&mut h, "a", 0, 4 * 1_440, |_, x| x).is_empty(), "four clean days");
    let spike = 4 * 1_440 + 100;
    let outs = feed(&mut h, "a", 4 * 1_440, 5 * 1_440, |i, x| if i == spike { x + 10.0 } else { x });
    assert_eq!(outs.len(), 1, "{outs:?}");
    let (rule, key, t, data) = &outs[0];
    assert_eq!((rule.as_str(), key.as_str(), data["device"].as_str()), ("odd", "a", Some("a")));
    // Told from a level shift by the three readings after it.
    assert_eq!((data["kind"].as_str(), *t), (Some("spike"), (spike + 3) * MIN));
    assert_eq!(data["since"].as_i64(), Some(spike * MIN));
    let observed = data["observed"].as_f64().expect("observed");
    assert!((observed - (normal(spike) + 10.0)).abs() < 1e-3, "{data}");
    let band: Vec<f64> = data["band"].as_array().expect("band").iter().filter_map(|v| v.as_f64()).collect();
    let expected = data["expected"].as_f64().expect("expected");
    assert!(band.len() == 2 && band[0] < expected && expected < band[1] && band[1] < observed, "{data}");
    assert!(data["score"].as_f64().is_some_and(|s| s > 0.0 && s <= 1.0), "{data}");
}

#[test]
fn each_key_learns_its_own_normal() {
    let mut h = H::new(RULE);
    // b runs 50 degrees hotter than a: normal for b, unheard of for a.
    for i in 0..4 * 1_440 {
        h.send(i * MIN, "s/a/t", &format!("{:.4}", normal(i)));
        h.send(i * MIN, "s/b/t", &format!("{:.4}", normal(i) + 50.0));
    }
    let i = 4 * 1_440;
    let mut outs = h.send(i * MIN, "s/a/t", &format!("{:.4}", normal(i) + 50.0));
    outs.extend(h.send(i * MIN, "s/b/t", &format!("{:.4}", normal(i) + 50.0)));
    for j in i + 1..i + 10 {
        outs.extend(h.send(j * MIN, "s/a/t", &format!("{:.4}", normal(j) + 50.0)));
        outs.extend(h.send(j * MIN, "s/b/t", &format!("{:.4}", normal(j) + 50.0)));
    }
    assert_eq!(outs.len(), 1, "{outs:?}");
    assert_eq!((outs[0].1.as_str(), outs[0].3["kind"].as_str()), ("a", Some("level_shift")));
}

#[test]
fn report_every_gives_each_readings_score_and_learning_first() {
    let mut h = H::new(r#"rule("score", #{ on: "s/{device}/t", anomaly: #{ report: "every", learn: 20 } });"#);
    let outs = feed(&mut h, "a", 0, 1_500, |_, x| x);
    assert_eq!(outs.len(), 1_500, "one per reading");
    assert!(outs[..20].iter().all(|o| o.3["learning"] == true && o.3["score"] == 0.0), "{outs:?}");
    assert!(outs[20..].iter().all(|o| o.3["learning"] == false), "{outs:?}");
    for o in &outs {
        for field in ["score", "observed", "expected", "band", "kind"] {
            assert!(!o.3[field].is_null(), "{field} in {}", o.3);
        }
    }
    // A reading far out scores (past any rest period of the early, still novel moves).
    let out = h.send(1_500 * MIN, "s/a/t", "90");
    assert!(out[0].3["score"].as_f64().is_some_and(|s| s >= 0.3), "{out:?}");
}

#[test]
fn a_detector_saved_and_restored_judges_as_if_never_stopped() {
    let mut h = H::new(RULE);
    feed(&mut h, "a", 0, 4 * 1_440, |_, x| x);
    let saved = h.engine.export_all();
    let state = saved.iter().find(|(t, _)| matches!(t, Touched::Rule { rule, .. } if &**rule == "odd")).expect("saved");
    assert!(state.1.len() <= 2_048, "{} bytes", state.1.len());
    let mut back = H::new(RULE);
    for (what, bytes) in &saved {
        back.engine.import(what, bytes).expect("imports");
    }
    let step = |i: i64, x: f64| if i >= 4 * 1_440 + 50 { x + 6.0 } else { x };
    let a = feed(&mut h, "a", 4 * 1_440, 5 * 1_440, step);
    let b = feed(&mut back, "a", 4 * 1_440, 5 * 1_440, step);
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

#[test]
fn the_daily_profile_catches_the_right_value_at_the_wrong_hour() {
    let daily = RULE.replace("learn: 1440", "learn: 1440, daily: true");
    let late = |i: i64, _: f64| normal(i - 720);
    let mut plain = H::new(RULE);
    let mut profiled = H::new(&daily);
    feed(&mut plain, "a", 0, 4 * 1_440, |_, x| x);
    feed(&mut profiled, "a", 0, 4 * 1_440, |_, x| x);
    assert!(feed(&mut plain, "a", 4 * 1_440, 5 * 1_440, late).is_empty());
    let outs = feed(&mut profiled, "a", 4 * 1_440, 5 * 1_440, late);
    assert_eq!(outs.first().and_then(|o| o.3["kind"].as_str()), Some("seasonal"), "{outs:?}");
}

#[test]
fn a_weekly_baseline_from_the_past_knows_weekends_from_weekdays() {
    // An office: 21 degrees on weekdays, 12 at weekends, a reading an hour. 1970-01-01 was a
    // Thursday, so day d is a weekend day when (d + 4) % 7 is 0 or 6.
    let office = |h: i64| {
        let weekend = matches!((h / 24 + 4) % 7, 0 | 6);
        (if weekend { 12.0 } else { 21.0 }) + 0.2 * ((h * 7919) % 5 - 2) as f64
    };
    let src = |baseline: &str| {
        format!(
            r#"rule("odd", #{{ on: "s/{{device}}/t", past: #{{ t: "28d by 1h" }},
                anomaly: #{{ learn: 48{baseline} }} }});"#
        )
    };
    let four_weeks = 28 * 24;
    // The fifth week's Monday (day 32 is a Monday) is left unheated: 12 degrees, a weekend's value.
    let cold_monday = |h: i64| if h / 24 == 32 { 12.0 + 0.2 * ((h * 7919) % 5 - 2) as f64 } else { office(h) };
    let run = |src: &str| {
        let mut h = H::new(src);
        let mut outs = Vec::new();
        for i in 0..four_weeks + 7 * 24 {
            outs.extend(h.send(i * 3_600_000, "s/a/t", &format!("{:.3}", cold_monday(i))));
        }
        (outs, h.faults)
    };
    let (plain, faults) = run(&src(""));
    assert!(faults.is_empty(), "{faults:?}");
    assert!(plain.iter().all(|o| o.2 / 86_400_000 != 32), "without a baseline a weekend's value is normal: {plain:?}");
    let (weekly, faults) = run(&src(r#", baseline: "weekly""#));
    assert!(faults.is_empty(), "{faults:?}");
    let monday: Vec<_> = weekly.iter().filter(|o| o.2 / 86_400_000 == 32).collect();
    assert_eq!(monday.first().map(|o| o.3["kind"].as_str()), Some(Some("seasonal")), "{weekly:?}");
    // The first two weekends are new (the baseline needs three weeks of that hour); after
    // that, weekends are normal.
    assert!(
        weekly.iter().all(|o| o.2 / 86_400_000 == 32 || o.2 / 86_400_000 < 14),
        "weekends are normal with the baseline: {weekly:?}"
    );
}

#[test]
fn bad_declarations_say_what_is_wrong() {
    let sandbox = Arc::new(Sandbox::default());
    let (_, errors) = RuleSet::compile(
        &sandbox,
        [(
            "a.rhai",
            r#"rule("a", #{ on: "s/{device}", past: #{ t: "3d by 1h" }, anomaly: #{ baseline: "weekly" } });"#,
        )],
    );
    let err = errors.first().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("needs `past.t` to span at least two weeks"), "{err}");
    for (body, says) in [
        ("sensitivity: 2", "`anomaly.sensitivity` must be a number from 0 to 1"),
        (r#"report: "some""#, "`anomaly.report` must be \"episodes\" or \"every\""),
        ("learn: 0", "`anomaly.learn` must be a whole number above zero"),
        (r#"daily: "yes""#, "`anomaly.daily` must be true or false"),
        ("window: 5", "unknown key `anomaly.window`"),
        (r#"baseline: "daily""#, "`anomaly.baseline` reads the rule's `past`"),
        (r#"baseline: "hourly""#, "`anomaly.baseline` must be \"daily\" or \"weekly\""),
    ] {
        let src = format!(r#"rule("a", #{{ on: "s/{{device}}", anomaly: #{{ {body} }} }});"#);
        let (_, errors) = RuleSet::compile(&sandbox, [("a.rhai", src.as_str())]);
        let err = errors.first().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(says) && err.contains("a.rhai:1:"), "{body}: {err}");
    }
}
