use crate::support::H;

const SRC: &str = r#"
rule("hot", #{
    on: "s/{device}/t",
    when: |e| e.value > 80,
    clear: |e| e.value < 75,
    emit: |e| #{ t: e.value },
    emit_clear: |e| #{ cleared_at: e.value },
});
rule("edge", #{
    on: "s/{device}/t",
    when: |e| e.value > 90,
    emit_clear: |e| #{ back: e.value },
});
"#;

#[test]
fn fires_once_per_crossing_with_hysteresis() {
    let mut h = H::new(SRC);
    assert!(h.send(1, "s/a/t", "70").is_empty());
    let fired = h.send(2, "s/a/t", "85");
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].3, serde_json::json!({"t": 85}));
    assert!(h.send(3, "s/a/t", "86").is_empty(), "no alert per message");
    assert!(h.send(4, "s/a/t", "78").is_empty(), "inside the hysteresis band: still active");
    assert!(h.send(5, "s/a/t", "82").is_empty(), "not re-armed yet");
    let cleared = h.send(6, "s/a/t", "74");
    assert_eq!(cleared[0].3, serde_json::json!({"cleared_at": 74}));
    assert_eq!(h.send(7, "s/a/t", "81").len(), 1, "re-armed");
}

#[test]
fn without_clear_it_re_arms_when_the_condition_stops_holding() {
    let mut h = H::new(SRC);
    let o = h.send(1, "s/b/t", "95");
    assert_eq!(o.iter().map(|o| o.0.as_str()).collect::<Vec<_>>(), ["hot", "edge"]);
    assert!(h.send(2, "s/b/t", "96").is_empty());
    let o = h.send(3, "s/b/t", "89");
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].0, "edge");
    assert_eq!(o[0].3, serde_json::json!({"back": 89}));
}

#[test]
fn keys_are_independent() {
    let mut h = H::new(SRC);
    assert_eq!(h.send(1, "s/a/t", "85").len(), 1);
    assert_eq!(h.send(2, "s/b/t", "85").len(), 1);
    assert!(h.send(3, "s/a/t", "85").is_empty());
}
