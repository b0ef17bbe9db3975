use crate::support::H;
use edgewatch_engine::{EngineConfig, Tables};

#[test]
fn a_rule_reacts_to_another_rules_output_with_bounded_depth() {
    let src = r#"
        rule("hot", #{ on: "s/{device}/t", when: |e| e.value > 80, emit: |e| #{ t: e.value } });
        rule("hot-twice", #{
            on: "gw/events/hot",
            window: #{ count: 2, tumbling: true, value: |e| e.payload.data.t },
            emit: |e| #{ readings: e.window.count, max: e.window.max },
        });
        // A loop: feeds itself until the depth limit stops it.
        rule("echo", #{ on: ["gw/events/echo", "s/loop/t"] });
    "#;
    let config = EngineConfig { chain_prefix: Some("gw/events".into()), max_chain_depth: 3, ..EngineConfig::default() };
    let mut h = H::with(src, Tables::new(), config);
    assert_eq!(h.send(1, "s/a/t", "85").len(), 1);
    let o = h.send(2, "s/a/t", "90");
    assert_eq!(o.len(), 2);
    assert_eq!(o[1].0, "hot-twice");
    assert_eq!(o[1].1, "a", "the chained event's subject is its key");
    assert_eq!(o[1].3, serde_json::json!({"readings": 2, "max": 90.0}));
    let o = h.send(3, "s/loop/t", "1");
    assert_eq!(o.len(), 4, "the original plus three levels of feedback");
}
