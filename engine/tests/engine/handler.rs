use crate::support::{H, keys};
use serde_json::json;

#[test]
fn on_event_keeps_per_key_state_emits_and_sets_timers() {
    let src = r#"
        rule("door-left-open", #{
            on: "doors/{device}/+",
            state: #{ opens: 0 },
            on_event: |e| {
                if e.levels[2] == "open" {
                    this.opens += 1;
                    after("30s", "still-open", #{ since: e.time });
                } else if e.levels[2] == "closed" {
                    cancel("still-open");
                }
                if this.opens == 3 { emit(#{ opens: this.opens }); }
            },
            on_timer: |name, data| emit(#{ timer: name, since: data.since, opens: this.opens }),
        });
    "#;
    let mut h = H::new(src);
    h.send(0, "doors/a/open", "1");
    h.send(10_000, "doors/a/closed", "1");
    assert!(h.tick(60_000).is_empty(), "cancelled");
    h.send(70_000, "doors/a/open", "1");
    let o = h.tick(100_000);
    assert_eq!(
        o,
        vec![(
            "door-left-open".into(),
            "a".into(),
            100_000,
            json!({"timer": "still-open", "since": 70_000, "opens": 2})
        )]
    );
    let o = h.send(110_000, "doors/a/open", "1");
    assert_eq!(o[0].3, json!({"opens": 3}));
    assert!(h.send(110_000, "doors/b/open", "1").is_empty(), "state is per key");
    assert_eq!(keys(&h.tick(200_000)), ["a", "b"]);
}

#[test]
fn emit_outside_a_handler_is_a_fault() {
    let src = r#"rule("r", #{ on: "x", when: |e| { emit(1); true } });"#;
    let mut h = H::new(src);
    assert!(h.send(0, "x", "1").is_empty());
    assert!(h.faults[0].contains("on_event"), "{:?}", h.faults);
}
