use crate::support::{H, keys};
use serde_json::json;

#[test]
fn n_matching_events_within_t_fires_on_the_edge_and_re_arms() {
    let src = r#"
        rule("overheat", #{
            on: "s/{device}/t",
            window: #{ size: "60s", filter: |e| e.value > 80 },
            when: |e| e.window.count >= 3,
            clear: |e| e.window.count == 0,
        });
    "#;
    let mut h = H::new(src);
    assert!(h.send(0, "s/a/t", "85").is_empty());
    assert!(h.send(10_000, "s/a/t", "70").is_empty(), "not matching: not counted");
    assert!(h.send(20_000, "s/a/t", "90").is_empty());
    let o = h.send(30_000, "s/a/t", "95");
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].3["count"], 3);
    assert_eq!(o[0].3["max"], 95.0);
    assert!(h.send(40_000, "s/a/t", "99").is_empty(), "still active");
    // The first reading leaves the window at 60 s; the count drops below 3 but `clear` wants 0.
    assert!(h.send(61_000, "s/a/t", "99").is_empty());
    // Quiet long enough that every hot reading left the window: re-armed.
    assert!(h.send(200_000, "s/a/t", "20").is_empty());
    assert!(h.send(201_000, "s/a/t", "85").is_empty());
    assert!(h.send(202_000, "s/a/t", "85").is_empty());
    assert_eq!(h.send(203_000, "s/a/t", "85").len(), 1);
}

#[test]
fn sliding_aggregates_are_exact() {
    let src = r#"rule("agg", #{ on: "s/{device}/v", window: #{ size: "10s" } });"#;
    let mut h = H::new(src);
    h.send(0, "s/a/v", "4");
    h.send(1_000, "s/a/v", "1");
    h.send(2_000, "s/a/v", "3");
    let o = h.send(3_000, "s/a/v", "2");
    assert_eq!(
        o[0].3,
        json!({"count": 4, "sum": 10.0, "avg": 2.5, "min": 1.0, "max": 4.0, "first": 4.0, "last": 2.0,
               "rate": -2.0 / 3.0, "span_ms": 3000})
    );
    // At 10 s the first reading (t=0) leaves: max drops to 3.
    let o = h.send(10_000, "s/a/v", "0");
    assert_eq!(
        (o[0].3["count"].clone(), o[0].3["max"].clone(), o[0].3["min"].clone()),
        (json!(4), json!(3.0), json!(0.0))
    );
}

#[test]
fn count_windows_keep_the_last_n() {
    let src = r#"rule("last3", #{ on: "s/{device}/v", window: #{ count: 3 }, emit: |e| e.window.avg });"#;
    let mut h = H::new(src);
    let avgs: Vec<f64> = [3, 6, 9, 12]
        .iter()
        .enumerate()
        .map(|(i, v)| h.send(i as i64, "s/a/v", &v.to_string())[0].3.as_f64().expect("number"))
        .collect();
    assert_eq!(avgs, [3.0, 4.5, 6.0, 9.0]);
}

#[test]
fn tumbling_windows_close_on_the_next_window_or_a_timer() {
    let src = r#"
        rule("per-minute", #{
            on: "s/{device}/v",
            window: #{ size: "1m", tumbling: true },
            emit: |e| #{ n: e.window.count, avg: e.window.avg, start: e.window.start, end: e.window.end },
        });
    "#;
    let mut h = H::new(src);
    assert!(h.send(1_000, "s/a/v", "1").is_empty());
    assert!(h.send(59_000, "s/a/v", "3").is_empty());
    // An event of the next minute closes the first.
    let o = h.send(61_000, "s/a/v", "10");
    assert_eq!(
        o,
        vec![("per-minute".into(), "a".into(), 60_000, json!({"n": 2, "avg": 2.0, "start": 0, "end": 60_000}))]
    );
    // No more events: the timer closes the second window at its end.
    assert!(h.tick(119_999).is_empty());
    let o = h.tick(120_000);
    assert_eq!(o[0].3, json!({"n": 1, "avg": 10.0, "start": 60_000, "end": 120_000}));
    assert!(h.tick(500_000).is_empty(), "empty windows say nothing");
}

#[test]
fn tumbling_count_windows_emit_every_n() {
    let src =
        r#"rule("batch", #{ on: "s/{device}/v", window: #{ count: 2, tumbling: true }, emit: |e| e.window.sum });"#;
    let mut h = H::new(src);
    let outs: Vec<_> = (1..=5).flat_map(|i| h.send(i, "s/a/v", &i.to_string())).map(|o| o.3).collect();
    assert_eq!(outs, [json!(3.0), json!(7.0)]);
}

#[test]
fn stuck_sensor_fires_once_and_re_arms_on_change() {
    let src = r#"rule("stuck", #{ on: "s/{device}/v", stuck: #{ unchanged: "10m", tolerance: 0.05 } });"#;
    let mut h = H::new(src);
    let minute = 60_000;
    for i in 0..10 {
        assert!(h.send(i * minute, "s/a/v", "21.5").is_empty(), "minute {i}");
    }
    let o = h.send(10 * minute, "s/a/v", "21.52");
    assert_eq!(keys(&o), ["a"]);
    assert_eq!(o[0].3["for_ms"], 10 * minute);
    assert!(h.send(11 * minute, "s/a/v", "21.5").is_empty(), "once");
    assert!(h.send(12 * minute, "s/a/v", "25").is_empty(), "moved: re-armed");
    assert!(h.send(22 * minute, "s/a/v", "25").len() == 1, "stuck again after another 10 minutes");
}

#[test]
fn a_non_numeric_value_is_a_fault_not_a_crash() {
    let src = r#"rule("w", #{ on: "s/{device}/v", window: #{ size: "1m" } });"#;
    let mut h = H::new(src);
    assert!(h.send(1, "s/a/v", r#""text""#).is_empty());
    assert!(h.faults[0].contains("must be a number"), "{:?}", h.faults);
}

#[test]
fn variance_and_stddev_are_the_sample_ones_for_integers_and_floats() {
    let src = r#"
        rule("spread", #{
            on: "s/{device}/v",
            window: #{ count: 8 },
            emit: |e| #{ n: e.window.count, variance: e.window.variance, sd: e.window.stddev },
        });
    "#;
    for spelling in ["", ".0"] {
        let mut h = H::new(src);
        let first = h.send(0, "s/a/v", &format!("2{spelling}"));
        assert_eq!(first[0].3, json!({"n": 1, "variance": null, "sd": null}), "one reading has no spread");
        let mut last = Vec::new();
        for (i, v) in [4, 4, 4, 5, 5, 7, 9].into_iter().enumerate() {
            last = h.send(1_000 * (i as i64 + 1), "s/a/v", &format!("{v}{spelling}"));
        }
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, squared deviations 32, over n - 1 = 7.
        let var = last[0].3["variance"].as_f64().unwrap_or(f64::NAN);
        let sd = last[0].3["sd"].as_f64().unwrap_or(f64::NAN);
        assert!((var - 32.0 / 7.0).abs() < 1e-12, "{spelling}: {var}");
        assert!((sd - (32.0f64 / 7.0).sqrt()).abs() < 1e-12, "{spelling}: {sd}");
        assert!(h.faults.is_empty(), "{:?}", h.faults);
    }
}

#[test]
fn window_before_is_the_window_without_the_current_event() {
    let src = r#"
        rule("spike", #{
            on: "s/{device}/v",
            window: #{ count: 5 },
            when: |e| e.window.before.count >= 4
                && abs(e.value - e.window.before.avg) > 3 * e.window.before.stddev,
            clear: |e| true,
            emit: |e| #{ value: e.value, before: e.window.before.count, now: e.window.count,
                         before_max: e.window.before.max, max: e.window.max },
        });
    "#;
    for spelling in ["", ".0"] {
        let mut h = H::new(src);
        for (i, v) in ["10", "11", "9", "10", "10"].into_iter().enumerate() {
            assert!(h.send(i as i64, "s/a/v", &format!("{v}{spelling}")).is_empty(), "{v}{spelling}");
        }
        let o = h.send(10, "s/a/v", &format!("30{spelling}"));
        assert_eq!(o.len(), 1, "{spelling}: {:?}", h.faults);
        // Before: the five readings 10, 11, 9, 10, 10; now: the last five, 30 included.
        assert_eq!(o[0].3["before"], json!(5));
        assert_eq!(o[0].3["now"], json!(5));
        assert_eq!(o[0].3["before_max"], json!(11.0));
        assert_eq!(o[0].3["max"], json!(30.0));
    }
}

#[test]
fn a_time_window_before_drops_what_left_at_the_current_time() {
    let src = r#"
        rule("b", #{
            on: "s/{device}/v",
            window: #{ size: "10s" },
            emit: |e| #{ before: e.window.before.count, sum_before: e.window.before.sum, now: e.window.count },
        });
    "#;
    let mut h = H::new(src);
    let o = h.send(0, "s/a/v", "1");
    assert_eq!(o[0].3, json!({"before": 0, "sum_before": 0.0, "now": 1}));
    h.send(5_000, "s/a/v", "2");
    let o = h.send(12_000, "s/a/v", "4");
    assert_eq!(o[0].3, json!({"before": 1, "sum_before": 2.0, "now": 2}), "the reading at 0 s left");
}

#[test]
fn a_simple_comparison_on_stddev_holds_as_rhai_says() {
    // `e.window.stddev > 1.0` is evaluated natively; below two readings it is `()`, and the
    // comparison does not hold (as in Rhai), without a fault.
    let src = r#"
        rule("wobbly", #{
            on: "s/{device}/v",
            window: #{ count: 3 },
            when: |e| e.window.stddev > 1.0,
            emit: |e| #{ sd: e.window.stddev },
        });
    "#;
    let mut h = H::new(src);
    assert!(h.send(0, "s/a/v", "1").is_empty());
    assert!(h.send(1, "s/a/v", "1").is_empty());
    let o = h.send(2, "s/a/v", "5");
    assert_eq!(o.len(), 1);
    let sd = o[0].3["sd"].as_f64().unwrap_or(f64::NAN);
    assert!((sd - (16.0f64 / 3.0).sqrt()).abs() < 1e-12, "{sd}");
    assert!(h.faults.is_empty(), "{:?}", h.faults);
}
