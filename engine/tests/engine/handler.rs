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

#[test]
fn a_handler_that_fails_halfway_leaves_no_trace() {
    // Changes `this`, emits and sets a timer, then fails on a reading of 0: the call is rolled
    // back whole, and the next call sees the state as it was.
    let src = r#"
        rule("ratio", #{
            on: "s/{device}/v",
            state: #{ n: 0, seen: [] },
            on_event: |e| {
                this.n += 1;
                this.seen.push(e.value);
                emit(#{ n: this.n });
                after("10s", "t");
                if e.value == 0 { throw "zero"; }
            },
            on_timer: |name, data| emit(#{ timer: name, n: this.n, seen: this.seen }),
        });
    "#;
    let mut h = H::new(src);
    assert_eq!(h.send(0, "s/a/v", "5"), vec![("ratio".into(), "a".into(), 0, json!({"n": 1}))]);
    assert!(h.tick(20_000).len() == 1, "the timer of a good call fires");
    assert!(h.send(30_000, "s/a/v", "0").is_empty(), "a failed call emits nothing");
    assert_eq!(h.faults.len(), 1, "{:?}", h.faults);
    assert!(h.faults[0].contains("zero"), "{:?}", h.faults);
    assert!(h.tick(60_000).is_empty(), "nor sets a timer");
    let o = h.send(70_000, "s/a/v", "7");
    assert_eq!(o[0].3, json!({"n": 2}), "`this` as before the failed call");
    let o = h.tick(80_000);
    assert_eq!(o[0].3, json!({"timer": "t", "n": 2, "seen": [5, 7]}));
}

#[test]
fn a_timer_handler_that_fails_is_rolled_back_too() {
    let src = r#"
        rule("r", #{
            on: "s/{device}/v",
            state: #{ n: 0 },
            on_event: |e| { after("1s", "t"); emit(#{ n: this.n }); },
            on_timer: |name, data| { this.n += 10; throw "no"; },
        });
    "#;
    let mut h = H::new(src);
    h.send(0, "s/a/v", "1");
    assert!(h.tick(5_000).is_empty());
    assert_eq!(h.faults.len(), 1, "{:?}", h.faults);
    assert_eq!(h.send(6_000, "s/a/v", "1")[0].3, json!({"n": 0}));
}

#[test]
fn a_handler_that_leaves_this_not_a_map_is_rolled_back() {
    let src = r#"
        rule("r", #{
            on: "s/{device}/v",
            state: #{ n: 0 },
            on_event: |e| { this.n += 1; emit(#{ n: this.n }); if e.value == 0 { this = 5; } },
        });
    "#;
    let mut h = H::new(src);
    assert_eq!(h.send(0, "s/a/v", "1")[0].3, json!({"n": 1}));
    assert!(h.send(1, "s/a/v", "0").is_empty(), "the call is dropped whole");
    assert!(h.faults[0].contains("`this` must stay an object map, but became i64; call rolled back"), "{:?}", h.faults);
    assert_eq!(h.send(2, "s/a/v", "1")[0].3, json!({"n": 2}));
}
