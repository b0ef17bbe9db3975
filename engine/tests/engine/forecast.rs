//! The `forecast` kind: a warning before a value crosses a threshold, once, re-armed when the
//! crossing leaves the horizon.

use crate::support::H;
use edgewatch_engine::{RuleSet, Sandbox};
use std::sync::Arc;

const H_MS: i64 = 3_600_000;

const BATTERY: &str = r#"
rule("low-soon", #{
    on: "s/{device}/battery",
    forecast: #{ below: 3.3, horizon: "24h", window: "12h", learn: "2h" },
});
"#;

fn compile_error(src: &str) -> String {
    let sandbox = Arc::new(Sandbox::default());
    let (_, errors) = RuleSet::compile(&sandbox, [("f.rhai", src)]);
    errors.first().map(|e| e.to_string()).unwrap_or_default()
}

#[test]
fn a_falling_value_is_warned_about_once_with_when_and_how_sure() {
    let mut h = H::new(BATTERY);
    let mut outs = Vec::new();
    // 3.9 V falling by 0.02 V an hour, a reading every 15 minutes: 3.3 V at 30 h.
    for i in 0..(40 * 4) {
        let t = i * H_MS / 4;
        outs.extend(h.send(t, "s/a/battery", &format!("{:.4}", 3.9 - 0.02 * i as f64 / 4.0)));
    }
    assert_eq!(outs.len(), 1, "once: {outs:?}");
    let (rule, key, t, data) = &outs[0];
    assert_eq!((rule.as_str(), key.as_str()), ("low-soon", "a"));
    // Within the horizon from 6 h on (the reading then, or the next one: the crossing is 24 h
    // away to within rounding); learnt from 2 h.
    assert!(*t == 6 * H_MS || *t == 6 * H_MS + H_MS / 4, "{t} {data}");
    assert_eq!(data["direction"], "below");
    assert_eq!(data["threshold"], 3.3);
    let in_ms = data["in_ms"].as_i64().expect("in_ms");
    assert_eq!(t + in_ms, 30 * H_MS, "3.3 V at 30 h: {data}");
    assert_eq!(data["crossing"].as_i64(), Some(t + in_ms));
    assert!((data["slope_per_hour"].as_f64().expect("slope") + 0.02).abs() < 1e-9, "{data}");
    assert!(data["confidence"].as_f64().expect("confidence") > 0.99, "{data}");
}

#[test]
fn it_re_arms_when_the_crossing_leaves_the_horizon_and_warns_again() {
    let mut h = H::new(BATTERY);
    let mut fired = Vec::new();
    let mut t = 0;
    let mut v = 3.9;
    // Falling, then a new battery (flat at 4.1 V for a day), then falling fast.
    for (hours, slope) in [(8, -0.02), (24, 0.0), (16, -0.05)] {
        if slope == 0.0 {
            v = 4.1;
        }
        for _ in 0..hours * 4 {
            fired.extend(h.send(t, "s/a/battery", &format!("{v:.4}")).into_iter().map(|o| o.2 / H_MS));
            t += H_MS / 4;
            v += slope / 4.0;
        }
    }
    assert_eq!(fired.len(), 2, "warned, re-armed by the new battery, warned again: {fired:?}");
    assert!(fired[0] < 8 && fired[1] >= 32, "{fired:?}");
}

#[test]
fn a_steady_or_rising_value_is_never_warned_about_and_non_numbers_are_skipped() {
    let mut h = H::new(BATTERY);
    let mut outs = Vec::new();
    for i in 0..(48 * 4) {
        let ripple = if i % 3 == 0 { 0.02 } else { -0.01 };
        outs.extend(h.send(i * H_MS / 4, "s/a/battery", &format!("{:.4}", 3.6 + ripple)));
        outs.extend(h.send(i * H_MS / 4, "s/b/battery", &format!("{:.4}", 3.4 + 0.001 * i as f64)));
        outs.extend(h.send(i * H_MS / 4 + 1, "s/a/battery", r#"{"status": "charging"}"#));
    }
    assert!(outs.is_empty(), "{outs:?}");
    assert!(h.faults.is_empty(), "{:?}", h.faults);
}

#[test]
fn above_warns_of_a_rise_and_emit_sees_the_forecast() {
    let mut h = H::new(
        r#"rule("fill", #{
            on: "tank/{device}/level",
            forecast: #{ above: 90, horizon: "2h", window: "1h", value: |e| e.payload.pct },
            emit: |e| #{ tank: e.device, minutes: e.forecast.in_ms / 60000 },
        });"#,
    );
    let mut outs = Vec::new();
    // 50% rising 10% an hour: 90% in 4 h; warned from 2 h before, once learnt (30 min).
    for i in 0..(5 * 60) {
        outs.extend(h.send(i * 60_000, "tank/t1/level", &format!(r#"{{"pct": {:.3}}}"#, 50.0 + i as f64 / 6.0)));
    }
    assert_eq!(outs.len(), 1, "{outs:?}");
    // 2 h ahead from 2 h on: that reading or the next, by rounding.
    let (t, minutes) = (outs[0].2, outs[0].3["minutes"].as_i64().expect("minutes"));
    assert!(t == 2 * H_MS || t == 2 * H_MS + 60_000, "{outs:?}");
    // Whole minutes, rounded down by the integer division.
    assert!((4 * H_MS - (t + minutes * 60_000)).abs() <= 60_000, "{outs:?}");
    assert_eq!(outs[0].3["tank"], "t1");
}

#[test]
fn bad_declarations_say_what_is_wrong() {
    let rule = |f: &str| format!(r#"rule("f", #{{ on: "s/{{device}}", forecast: #{{ {f} }} }});"#);
    for (body, says) in [
        (r#"horizon: "1h""#, "exactly one of `below` or `above`"),
        (r#"below: 1, above: 2, horizon: "1h""#, "exactly one of `below` or `above`"),
        ("below: 1", "needs `horizon`"),
        (r#"below: "low", horizon: "1h""#, "`forecast.below` must be a number"),
        (r#"below: 1, horizon: "soon""#, "`forecast.horizon`"),
        (r#"below: 1, horizon: "1h", confidence: 2"#, "`forecast.confidence` must be a number from 0 to 1"),
        (r#"below: 1, horizon: "1h", slope: 2"#, "unknown key `forecast.slope`"),
    ] {
        let err = compile_error(&rule(body));
        assert!(err.contains(says), "{body}: {err}");
        assert!(err.contains("f.rhai:1:"), "{err}");
    }
}
