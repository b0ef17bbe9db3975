//! `notify` and `act`: an event's actions follow it, shaped per sink.

use crate::support::H;
use edgewatch_engine::{RuleSet, Sandbox};
use serde_json::json;

const SRC: &str = r#"
rule("hot", #{
    on: "s/{device}/t",
    when: |e| e.value > 80,
    clear: |e| e.value < 75,
    notify: ["pager", "chat"],
    act: #{ sink: "heaters", data: |ev| #{ heater: ev.subject, on: false, because: ev.data.value } },
});
rule("quiet", #{ on: "s/{device}/t", when: |e| e.value > 1000 });
rule("picky", #{
    on: "s/{device}/t",
    when: |e| e.value > 90,
    act: [
        #{ sink: "valves", data: |ev| if ev.data.value > 95 { #{ close: true } } else { () } },
        #{ sink: "broken", data: |ev| ev.data.nothing.there },
    ],
});
"#;

#[test]
fn an_event_goes_to_every_sink_its_rule_names_shaped_by_act() {
    let mut h = H::new(SRC);
    assert!(h.send(1, "s/a/t", r#"{"value": 70}"#).is_empty());
    assert!(h.actions.is_empty(), "no event, no action");
    let events = h.send(2, "s/a/t", r#"{"value": 85}"#);
    assert_eq!(events.len(), 1);
    let sinks: Vec<&str> = h.actions.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(sinks, ["pager", "chat", "heaters"]);
    assert!(h.actions.iter().all(|a| a.1 == "hot" && a.2 == "a"));
    assert_eq!((&h.actions[0].3, &h.actions[1].3), (&None, &None), "notify: the sink's default body");
    assert_eq!(h.actions[2].3, Some(json!({"heater": "a", "on": false, "because": 85})));
    // All three are about the same event, and say which.
    assert!(h.actions.iter().all(|a| a.4 == h.actions[0].4) && h.actions[0].4.len() == 36);
    // Hysteresis holds back the event, and so its actions.
    h.actions.clear();
    assert!(h.send(3, "s/a/t", r#"{"value": 86}"#).is_empty());
    assert!(h.actions.is_empty());
}

#[test]
fn a_body_of_unit_sends_nothing_and_a_failing_one_is_a_fault_for_that_sink_only() {
    let mut h = H::new(SRC);
    h.send(1, "s/b/t", r#"{"value": 92}"#);
    let picky: Vec<&str> = h.actions.iter().filter(|a| a.1 == "picky").map(|a| a.0.as_str()).collect();
    assert_eq!(picky, Vec::<&str>::new(), "92: valves declined with (), broken failed");
    assert!(h.faults.iter().any(|f| f.contains("picky")), "{:?}", h.faults);
    let mut h = H::new(SRC);
    h.send(1, "s/c/t", r#"{"value": 99}"#);
    let picky: Vec<_> = h.actions.iter().filter(|a| a.1 == "picky").collect();
    assert_eq!(picky.len(), 1);
    assert_eq!((picky[0].0.as_str(), &picky[0].3), ("valves", &Some(json!({"close": true}))));
}

#[test]
fn sink_names_are_checked_where_the_rule_is_declared() {
    let sandbox = Sandbox::default();
    for (src, want) in [
        (r#"rule("x", #{ on: "a/b", notify: "pa ger" });"#, "sink name `pa ger`"),
        (r#"rule("x", #{ on: "a/b", notify: ["p", "p"] });"#, "named twice"),
        (r#"rule("x", #{ on: "a/b", notify: 3 });"#, "by string"),
        (r#"rule("x", #{ on: "a/b", act: #{ data: |ev| 1 } });"#, "`act` needs `sink`"),
        (r#"rule("x", #{ on: "a/b", act: #{ sink: "v", data: 2 } });"#, "must be a function"),
        (r#"rule("x", #{ on: "a/b", act: #{ sink: "v", body: |ev| 1 } });"#, "body"),
    ] {
        let (_, errors) = RuleSet::compile(&sandbox, [("t.rhai", src)]);
        let text = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        assert!(text.contains(want) && text.contains("t.rhai:1:"), "{src}: {text}");
    }
    let (set, errors) = RuleSet::compile(&sandbox, [("t.rhai", SRC)]);
    assert!(errors.is_empty(), "{errors:?}");
    let hot = set.get("hot").expect("hot");
    let names: Vec<&str> = hot.actions.iter().map(|a| &*a.sink).collect();
    assert_eq!(names, ["pager", "chat", "heaters"]);
    assert!(!hot.actions[0].shapes_body() && hot.actions[2].shapes_body());
}
